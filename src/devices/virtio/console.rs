//! virtio-console (`--console virtio`): the guest's hvc0 on rvvmm's console, one port.
//! Queue 0 (receiveq) carries input to the guest, queue 1 (transmitq) its output.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{device_id, drain_queue, read_config_bytes, QueueOutcome, VirtioDevice};
use crate::console::Console;

const RX: usize = 0;
const TX: usize = 1;

/// The console device.
pub struct VirtioConsole {
    console: Arc<dyn Console>,
    input_evt: EventFd,
    memory: Option<GuestMemoryMmap>,
    queues: Vec<Queue>,
}

impl VirtioConsole {
    /// A console device on `console`.
    pub fn new(console: Arc<dyn Console>) -> std::io::Result<Self> {
        Ok(VirtioConsole {
            console,
            input_evt: EventFd::new(EFD_NONBLOCK)?,
            memory: None,
            queues: Vec::new(),
        })
    }

    /// Signalled when console input arrives.
    pub fn input_evt(&self) -> std::io::Result<EventFd> {
        self.input_evt.try_clone()
    }

    fn transmit(&mut self) -> QueueOutcome {
        let (Some(memory), Some(queue)) = (self.memory.as_ref(), self.queues.get_mut(TX)) else {
            return QueueOutcome::Idle;
        };
        let console = &self.console;
        drain_queue(queue, memory, |chain| {
            if let Ok(mut reader) = chain.reader(memory) {
                let mut buf = [0u8; 4096];
                while let Ok(n) = reader.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    console.write(&buf[..n]);
                }
            }
            0
        })
    }

    fn receive(&mut self) -> QueueOutcome {
        let (Some(memory), Some(queue)) = (self.memory.as_ref(), self.queues.get_mut(RX)) else {
            return QueueOutcome::Idle;
        };
        let mut used = false;
        loop {
            let mut buf = [0u8; 4096];
            // Only take input when a buffer waits for it: otherwise it stays queued.
            let Some(chain) = queue.pop_descriptor_chain(memory) else {
                break;
            };
            let head = chain.head_index();
            let mut written = 0;
            if let Ok(mut writer) = chain.writer(memory) {
                let room = writer.available_bytes().min(buf.len());
                let n = self.console.read(&mut buf[..room]);
                if n == 0 {
                    queue.go_to_previous_position();
                    break;
                }
                if writer.write_all(&buf[..n]).is_ok() {
                    written = n as u32;
                }
            }
            if queue.add_used(memory, head, written).is_err() {
                return QueueOutcome::Broken;
            }
            used = true;
        }
        QueueOutcome::used_if(used)
    }
}

impl VirtioDevice for VirtioConsole {
    fn device_type(&self) -> u32 {
        device_id::CONSOLE
    }

    fn name(&self) -> &'static str {
        "console"
    }

    fn features(&self) -> u64 {
        0
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[64, 64]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // cols, rows, max_nr_ports, emerg_wr: all zero (one port, no size).
        read_config_bytes(&[0u8; 12], offset, data);
    }

    fn queue_states(&self) -> Vec<(usize, virtio_queue::QueueState)> {
        self.queues.iter().map(|q| q.state()).enumerate().collect()
    }

    fn activate(&mut self, memory: GuestMemoryMmap, queues: Vec<Queue>, _features: u64) {
        self.memory = Some(memory);
        self.queues = queues;
    }

    fn process_queue(&mut self, index: usize) -> QueueOutcome {
        match index {
            TX => self.transmit(),
            RX => self.receive(),
            _ => QueueOutcome::Idle,
        }
    }

    fn event_fd(&self) -> Option<RawFd> {
        Some(self.input_evt.as_raw_fd())
    }

    fn process_event(&mut self) -> QueueOutcome {
        let _ = self.input_evt.read();
        self.receive()
    }

    fn reset(&mut self) {
        self.memory = None;
        self.queues.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::BufferConsole;
    use crate::devices::virtio::testing::*;
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn output_and_input() {
        let console = Arc::new(BufferConsole::default());
        let mut dev = VirtioConsole::new(console.clone()).unwrap();
        let mem = memory();
        // Both queues share the test ring addresses; use one at a time.
        dev.activate(mem.clone(), vec![queue(), queue()], 0);
        mem.write_slice(b"hvc0 says hi\n", GuestAddress(DATA))
            .unwrap();
        publish(&mem, &[(DATA, 13, 0, 0)], &[0]);
        assert_eq!(dev.process_queue(TX), QueueOutcome::Used);
        assert_eq!(console.output_string(), "hvc0 says hi\n");

        let mem = memory();
        dev.activate(mem.clone(), vec![queue(), queue()], 0);
        publish(&mem, &[(DATA, 64, F_WRITE, 0)], &[0]);
        assert_eq!(
            dev.process_event(),
            QueueOutcome::Idle,
            "no input: the buffer stays"
        );
        console.type_in(b"ls\n");
        assert_eq!(dev.process_event(), QueueOutcome::Used);
        assert_eq!(used(&mem).1, vec![(0, 3)]);
    }
}

//! virtio-rng (`--rng`): fills the guest's buffers from the host's getrandom(2).

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestMemoryMmap};

use super::{device_id, drain_queue, QueueOutcome, VirtioDevice};

/// Most bytes one request gets (the driver asks again for more).
const MAX_REQUEST: usize = 64 * 1024;

/// The entropy device.
#[derive(Default)]
pub struct Rng {
    memory: Option<GuestMemoryMmap>,
    queue: Option<Queue>,
}

impl Rng {
    /// A new entropy device.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Fills `buf` from getrandom(2); returns how many bytes it got.
fn getrandom(buf: &mut [u8]) -> usize {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n = unsafe { libc::getrandom(buf[done..].as_mut_ptr().cast(), buf.len() - done, 0) };
        if n <= 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        done += n as usize;
    }
    done
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        device_id::RNG
    }

    fn name(&self) -> &'static str {
        "rng"
    }

    fn features(&self) -> u64 {
        0
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[256]
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn queue_states(&self) -> Vec<(usize, virtio_queue::QueueState)> {
        self.queue.iter().map(|q| (0, q.state())).collect()
    }

    fn activate(&mut self, memory: GuestMemoryMmap, mut queues: Vec<Queue>, _features: u64) {
        self.queue = queues.drain(..).next().filter(|q| q.ready());
        self.memory = Some(memory);
    }

    fn process_queue(&mut self, _index: usize) -> QueueOutcome {
        let (Some(queue), Some(memory)) = (self.queue.as_mut(), self.memory.as_ref()) else {
            return QueueOutcome::Idle;
        };
        let mut buf = vec![0u8; MAX_REQUEST];
        drain_queue(queue, memory, |chain| {
            let mut written = 0u32;
            for desc in chain.writable() {
                let want = (desc.len() as usize).min(MAX_REQUEST - written as usize);
                if want == 0 {
                    break;
                }
                let got = getrandom(&mut buf[..want]);
                if memory.write_slice(&buf[..got], desc.addr()).is_err() {
                    // Outside guest RAM: give the guest what was written so far.
                    break;
                }
                written += got as u32;
            }
            written
        })
    }

    fn reset(&mut self) {
        self.queue = None;
        self.memory = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::testing::*;
    use vm_memory::GuestAddress;

    fn active() -> (Rng, GuestMemoryMmap) {
        let mem = memory();
        let mut rng = Rng::new();
        rng.activate(mem.clone(), vec![queue()], 0);
        (rng, mem)
    }

    #[test]
    fn fills_writable_buffers() {
        let (mut rng, mem) = active();
        publish(
            &mem,
            &[
                (DATA, 16, F_WRITE | F_NEXT, 1),
                (DATA + 0x100, 48, F_WRITE, 0),
            ],
            &[0],
        );
        assert_eq!(rng.process_queue(0), QueueOutcome::Used);
        assert_eq!(used(&mem), (1, vec![(0, 64)]));
        let mut got = [0u8; 48];
        mem.read_slice(&mut got, GuestAddress(DATA + 0x100))
            .unwrap();
        assert_ne!(got, [0u8; 48]);
    }

    #[test]
    fn hostile_chains_get_zero_bytes_not_a_panic() {
        let (mut rng, mem) = active();
        publish(
            &mem,
            &[
                (0x1000, 64, F_WRITE, 0),        // outside RAM
                (DATA, 16, F_WRITE | F_NEXT, 1), // a loop: 1 -> 1 -> ...
                (DATA, 16, F_WRITE | F_NEXT, 1),
                (DATA, u32::MAX, F_WRITE, 0), // absurd length: bounded
                (DATA, 32, 0, 0),             // read-only: nothing to fill
            ],
            &[0, 1, 3, 4],
        );
        assert_eq!(rng.process_queue(0), QueueOutcome::Used);
        let (idx, entries) = used(&mem);
        assert_eq!(idx, 4);
        assert_eq!(entries[0], (0, 0));
        assert!(entries[1].1 <= 16 * u32::from(SIZE));
        assert_eq!(entries[2], (3, MAX_REQUEST as u32));
        assert_eq!(entries[3], (4, 0));
    }

    #[test]
    fn a_runaway_avail_index_breaks_the_queue() {
        let (mut rng, mem) = active();
        mem.write_obj(1000u16, GuestAddress(AVAIL + 2)).unwrap();
        assert_eq!(rng.process_queue(0), QueueOutcome::Broken);
    }
}

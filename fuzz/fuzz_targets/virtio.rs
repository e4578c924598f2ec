//! A hostile driver against each virtio device through the virtio-mmio transport: register
//! reads and writes in any order, guest RAM written with anything (descriptor tables, rings,
//! headers), queue notifications, the device's own events (a tap frame arriving), and a
//! save/restore of the transport. The first byte picks the device: virtio-rng, virtio-blk on a
//! temporary 64 KiB file, virtio-net on a backend fed from the input, virtio-console,
//! virtio-vsock on a temporary socket (its guest-initiated connections find no listener).
#![no_main]

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use rvvmm::console::BufferConsole;
use rvvmm::devices::virtio::block::Block;
use rvvmm::devices::virtio::console::VirtioConsole;
use rvvmm::devices::virtio::mmio::{MmioTransport, SharedTransport};
use rvvmm::devices::virtio::net::{Net, NetBackend};
use rvvmm::devices::virtio::rng::Rng;
use rvvmm::devices::virtio::vsock::{Vsock, VsockListener};
use rvvmm::devices::virtio::VirtioDevice;
use rvvmm::devices::BusDevice;
use rvvmm::interrupts::CountingInterrupt;
use rvvmm_fuzz::{memory, Input, RAM_BASE};
use vm_memory::{Bytes, GuestAddress};

/// A tap that delivers the frames the input holds and swallows what the device sends.
struct FakeTap {
    frames: Arc<Mutex<VecDeque<Vec<u8>>>>,
}

impl NetBackend for FakeTap {
    fn raw_fd(&self) -> RawFd {
        -1
    }

    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.frames.lock().unwrap().pop_front() {
            Some(frame) => {
                let n = frame.len().min(buf.len());
                buf[..n].copy_from_slice(&frame[..n]);
                Ok(n)
            }
            None => Err(std::io::ErrorKind::WouldBlock.into()),
        }
    }

    fn send(&mut self, frame: &[u8]) -> std::io::Result<usize> {
        Ok(frame.len())
    }
}

fn vsock_listener() -> &'static VsockListener {
    static SOCKET: OnceLock<VsockListener> = OnceLock::new();
    SOCKET.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("rvvmm-fuzz-vsock-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        VsockListener::bind(&path).expect("a temporary vsock socket")
    })
}

fn disk() -> &'static std::path::Path {
    static DISK: OnceLock<std::path::PathBuf> = OnceLock::new();
    DISK.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("rvvmm-fuzz-disk-{}", std::process::id()));
        std::fs::write(&path, vec![0u8; 64 << 10]).expect("a temporary disk");
        path
    })
}

/// The Linux driver's bring-up with the queues at RAM offsets from the input: the fuzzer then
/// spends its effort on what is in the rings rather than on finding the sequence.
fn bring_up(t: &SharedTransport, input: &mut Input, queues: u32) {
    let w = |off: u64, v: u32| {
        let _ = t.write(off, &v.to_le_bytes());
    };
    w(0x70, 1);
    w(0x70, 3);
    for sel in 0..2 {
        w(0x14, sel);
        let mut f = [0u8; 4];
        t.read(0x10, &mut f);
        w(0x24, sel);
        w(0x20, u32::from_le_bytes(f) & input.u32());
    }
    w(0x70, 11);
    for q in 0..queues {
        w(0x30, q);
        w(0x38, 1 << (input.u8() % 9));
        for reg in [0x80, 0x90, 0xa0] {
            let addr = RAM_BASE + u64::from(input.u16());
            w(reg, addr as u32);
            w(reg + 4, (addr >> 32) as u32);
        }
        w(0x44, 1);
    }
    w(0x70, 15);
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mem = memory();
    let frames = Arc::new(Mutex::new(VecDeque::new()));
    let console = Arc::new(BufferConsole::default());
    let device: Box<dyn VirtioDevice> = match input.u8() % 5 {
        0 => Box::new(Rng::new()),
        1 => match Block::open(disk(), false) {
            Ok(b) => Box::new(b),
            Err(_) => return,
        },
        2 => Box::new(Net::new(
            Box::new(FakeTap {
                frames: frames.clone(),
            }),
            [0x52, 0x54, 0, 0x12, 0x34, 0x56],
        )),
        3 => match VirtioConsole::new(console.clone()) {
            Ok(c) => Box::new(c),
            Err(_) => return,
        },
        _ => match Vsock::new(3, vsock_listener()) {
            Ok(v) => Box::new(v),
            Err(_) => return,
        },
    };
    let queues = device.queue_max_sizes().len() as u32;
    let irq = Arc::new(CountingInterrupt::default());
    let Ok(transport) = MmioTransport::new(device, mem.clone(), irq) else {
        return;
    };
    let t = SharedTransport::new(transport);
    let mut ops = 0;
    while !input.done() && ops < 256 {
        ops += 1;
        match input.u8() % 8 {
            0 => {
                let off = u64::from(input.u16() & 0x1ff);
                let width = input.width();
                let v = input.u64().to_le_bytes();
                let _ = t.write(off, &v[..width]);
            }
            1 => {
                let off = u64::from(input.u16() & 0x1ff);
                let mut buf = [0u8; 8];
                let width = input.width();
                t.read(off, &mut buf[..width]);
            }
            2 | 3 => {
                let at = u64::from(input.u16());
                let len = usize::from(input.u8());
                let bytes = input.bytes(len);
                let _ = mem.write_slice(bytes, GuestAddress(RAM_BASE + at));
            }
            4 => {
                let q = usize::from(input.u8()) % (queues as usize + 1);
                t.lock().process_queue(q);
            }
            5 => {
                let len = usize::from(input.u16() & 0x7ff);
                frames.lock().unwrap().push_back(input.bytes(len).to_vec());
                t.lock().process_event();
            }
            6 => bring_up(&t, &mut input, queues),
            _ => {
                let saved = t.lock().save();
                let _ = t.lock().restore(&saved);
            }
        }
    }
});

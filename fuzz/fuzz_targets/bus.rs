//! Guest loads and stores of every width to the MMIO bus as a vCPU makes them: the user-space
//! PLIC (two harts), the UART (with console input arriving), the test device, the finisher,
//! and the holes between them; the UART's and PLIC's state saved and restored midway.
#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use rvvmm::arch::riscv64::layout::*;
use rvvmm::console::BufferConsole;
use rvvmm::devices::finisher::Finisher;
use rvvmm::devices::plic::Plic;
use rvvmm::devices::testdev::TestDev;
use rvvmm::devices::uart::Uart;
use rvvmm::devices::Bus;
use rvvmm::hypervisor::InterruptLine;
use rvvmm_fuzz::Input;

#[derive(Default)]
struct Line(AtomicU64);

impl InterruptLine for Line {
    fn set_level(&self, _level: bool) -> rvvmm::hypervisor::Result<()> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

const BASES: [u64; 5] = [
    PLIC_BASE,
    UART_BASE,
    TESTDEV_BASE,
    FINISHER_BASE,
    0x2000_0000,
];

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let console = Arc::new(BufferConsole::default());
    let lines: Vec<Arc<dyn InterruptLine>> =
        vec![Arc::new(Line::default()), Arc::new(Line::default())];
    let plic = Arc::new(Plic::new(lines));
    let uart = Arc::new(Uart::new(console.clone(), plic.clone(), 10, true));
    let mut bus = Bus::new();
    bus.insert(PLIC_BASE, PLIC_SIZE, plic.clone()).unwrap();
    bus.insert(UART_BASE, UART_SIZE, uart.clone()).unwrap();
    bus.insert(TESTDEV_BASE, TESTDEV_SIZE, Arc::new(TestDev::default()))
        .unwrap();
    bus.insert(FINISHER_BASE, FINISHER_SIZE, Arc::new(Finisher))
        .unwrap();
    let mut ops = 0;
    while !input.done() && ops < 512 {
        ops += 1;
        let op = input.u8();
        let base = BASES[usize::from(op >> 3) % BASES.len()];
        // The PLIC's registers spread over 6 MiB: its contexts at 0x20_0000 + 0x1000 * n.
        let off = if base == PLIC_BASE && op & 4 != 0 {
            0x20_0000 + u64::from(input.u16())
        } else {
            u64::from(input.u16())
        };
        let width = input.width();
        match op & 3 {
            0 => {
                let v = input.u64().to_le_bytes();
                let _ = bus.write(base + off, &v[..width]);
            }
            1 => {
                let mut buf = [0u8; 8];
                bus.read(base + off, &mut buf[..width]);
            }
            2 => {
                let len = usize::from(input.u8() & 31);
                console.type_in(input.bytes(len));
                uart.pull_input();
            }
            _ => {
                if let Ok(state) = serde_json::to_vec(&uart.save()) {
                    let _ = uart.restore(&serde_json::from_slice(&state).unwrap());
                }
                let _ = plic.restore(&plic.save());
            }
        }
    }
});

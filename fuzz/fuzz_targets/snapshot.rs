//! A snapshot's state file as `--restore` and `vm.restore` read it: the raw file (header,
//! checksums, section table), and sections with right checksums but any content (the input
//! split at 0xff bytes into the sections rvvmm writes), decoded into the machine's state, each
//! virtio transport's state restored into a transport, the UART's and PLIC's into theirs.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use rvvmm::console::BufferConsole;
use rvvmm::devices::plic::Plic;
use rvvmm::devices::uart::Uart;
use rvvmm::devices::virtio::mmio::MmioTransport;
use rvvmm::devices::virtio::rng::Rng;
use rvvmm::interrupts::CountingInterrupt;
use rvvmm::snapshot::{IrqchipState, SavedMachine, Sections};

const NAMES: [&str; 6] = ["config", "vcpus", "irqchip", "uart", "virtio", "memory"];

fuzz_target!(|data: &[u8]| {
    let _ = Sections::decode(data);
    let mut sections = Sections::default();
    for (name, part) in NAMES.iter().zip(data.split(|&b| b == 0xff)) {
        sections.put_raw(name, part.to_vec());
    }
    let Ok(sections) = Sections::decode(&sections.encode()) else {
        return;
    };
    let _ = sections.get::<rvvmm::config::json::VmConfigJson>("config");
    let Ok(saved) = SavedMachine::get(&sections) else {
        return;
    };
    for (_, state) in &saved.virtio {
        let irq = Arc::new(CountingInterrupt::default());
        if let Ok(mut t) = MmioTransport::new(Box::new(Rng::new()), rvvmm_fuzz::memory(), irq) {
            let _ = t.restore(state);
        }
    }
    let console = Arc::new(BufferConsole::default());
    let plic = Arc::new(Plic::new(Vec::new()));
    let _ = Uart::new(console, plic.clone(), 10, true).restore(&saved.uart);
    if let IrqchipState::Plic(state) = &saved.irqchip {
        let _ = plic.restore(state);
    }
});

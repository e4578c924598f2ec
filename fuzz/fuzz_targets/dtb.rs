//! A user's `--dtb`: parsed, patched for a VM (cpus, memory, initrd, cmdline, virtio slots,
//! both irqchips), written back and grown to the size the guest gets. Seeds: QEMU's dtbs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvvmm::arch::riscv64::fdt::tree::Tree;
use rvvmm::arch::riscv64::fdt::{patch::patch_fdt, with_room, FdtConfig};
use rvvmm::arch::riscv64::regs::VcpuIsa;
use rvvmm::interrupts::IrqMode;

fuzz_target!(|data: &[u8]| {
    let Ok(tree) = Tree::parse(data) else {
        return;
    };
    let knobs = data.last().copied().unwrap_or(0);
    let config = FdtConfig {
        irqchip: if knobs & 1 == 0 {
            IrqMode::Plic
        } else {
            IrqMode::Aia {
                num_ids: 255,
                num_sources: 95,
            }
        },
        num_cpus: 1 + u32::from(knobs >> 4),
        isa: VcpuIsa {
            base: 0x1129,
            extensions: vec!["zicbom", "zicboz"],
            satp_mode: 10,
            timebase_frequency: 10_000_000,
            zicbom_block_size: 64,
            zicboz_block_size: 64,
        },
        ram_size: 256 << 20,
        cmdline: Some("console=ttyS0".into()),
        initrd: (knobs & 2 != 0).then_some((0x8800_0000, 0x8810_0000)),
        testdev: knobs & 4 != 0,
        virtio: vec![(0x1000_1000, 1), (0x1000_2000, 2)],
        boot_count: 1,
    };
    let mut patched = tree.clone();
    if patch_fdt(&mut patched, &config).is_ok() {
        if let Ok(blob) = patched.to_blob() {
            let _ = with_room(blob);
        }
    }
    let _ = rvvmm::arch::riscv64::fdt::patch::memory_size(&tree);
    let _ = rvvmm::arch::riscv64::fdt::patch::cpu_count(&tree);
});

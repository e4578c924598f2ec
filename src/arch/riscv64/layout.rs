//! The guest-physical memory map: QEMU `virt`'s addresses, so a dtb dumped from QEMU fits.
//!
//! ```text
//!   0x0000_0000 ┌──────────────────────────────┐
//!               │ (unmapped)                   │
//!   0x0010_0000 ├──────────────────────────────┤ sifive,test0 finisher (4 KiB)
//!   0x0c00_0000 ├──────────────────────────────┤ PLIC (with --irqchip plic)
//!   0x0d00_0000 ├──────────────────────────────┤ APLIC, supervisor level (with --irqchip aia; in KVM)
//!   0x1000_0000 ├──────────────────────────────┤ ns16550a UART (256 B, irq 10)
//!   0x1000_1000 ├──────────────────────────────┤ virtio-mmio slots 0..7 (4 KiB each, irqs 1..8)
//!   0x1008_0000 ├──────────────────────────────┤ rvvmm test device (4 KiB, only with --testdev)
//!   0x2800_0000 ├──────────────────────────────┤ IMSIC files, one 4 KiB page a hart (AIA; in KVM)
//!   0x8000_0000 ├──────────────────────────────┤ RAM (--memory bytes)
//!               │ kernel: RAM + 2 MiB (flat; a Linux Image at +text_offset; an ELF where it says)
//!               │ ...                          │
//!               │ dtb: last 2 MiB-aligned block│
//!   RAM end     └──────────────────────────────┘
//! ```

/// Start of guest RAM.
pub const RAM_BASE: u64 = 0x8000_0000;
/// Largest guest RAM rvvmm maps: RAM must end below 2^39 (Sv39 reaches every byte).
pub const RAM_MAX: u64 = (1 << 39) - RAM_BASE;
/// Smallest guest RAM: room for a flat binary and the dtb block.
pub const RAM_MIN: u64 = 4 << 20;
/// The sifive,test0 finisher (QEMU virt `VIRT_TEST`).
pub const FINISHER_BASE: u64 = 0x10_0000;
/// Size of the finisher's window.
pub const FINISHER_SIZE: u64 = 0x1000;
/// The PLIC (QEMU virt `VIRT_PLIC`).
pub const PLIC_BASE: u64 = 0x0c00_0000;
/// Size of the PLIC's window as QEMU virt describes it.
pub const PLIC_SIZE: u64 = 0x60_0000;
/// Interrupt sources the PLIC has (1..=PLIC_NDEV; 0 means "none"), as on QEMU virt.
pub const PLIC_NDEV: u32 = 95;
/// The supervisor-level APLIC of QEMU virt's AIA machine (`VIRT_APLIC_S`).
pub const APLIC_BASE: u64 = 0x0d00_0000;
/// Size of the APLIC's window (KVM_DEV_RISCV_APLIC_SIZE).
pub const APLIC_SIZE: u64 = 0x4000;
/// Hart 0's supervisor IMSIC interrupt file (QEMU virt `VIRT_IMSIC_S`); hart h is at
/// `IMSIC_BASE + h * IMSIC_STRIDE`.
pub const IMSIC_BASE: u64 = 0x2800_0000;
/// Size of one IMSIC interrupt file.
pub const IMSIC_STRIDE: u64 = 0x1000;

/// The ns16550a UART (QEMU virt `VIRT_UART0`).
pub const UART_BASE: u64 = 0x1000_0000;
/// Size of the UART's window.
pub const UART_SIZE: u64 = 0x100;
/// The UART's PLIC interrupt source.
pub const UART_IRQ: u32 = 10;
/// The first virtio-mmio slot (QEMU virt `VIRT_VIRTIO`); slot i is at `VIRTIO_BASE + i * VIRTIO_SIZE`.
pub const VIRTIO_BASE: u64 = 0x1000_1000;
/// Size of one virtio-mmio slot.
pub const VIRTIO_SIZE: u64 = 0x1000;
/// Interrupt source of virtio-mmio slot 0; slot i uses `VIRTIO_IRQ_BASE + i`.
pub const VIRTIO_IRQ_BASE: u32 = 1;

/// Base address and interrupt of virtio-mmio slot `slot`.
pub fn virtio_slot(slot: usize) -> (u64, u32) {
    (
        VIRTIO_BASE + slot as u64 * VIRTIO_SIZE,
        VIRTIO_IRQ_BASE + slot as u32,
    )
}

/// rvvmm's MMIO test device (not on QEMU virt; a free spot between the virtio-mmio slots and
/// fw-cfg at 0x1010_0000).
pub const TESTDEV_BASE: u64 = 0x1008_0000;
/// Size of the test device.
pub const TESTDEV_SIZE: u64 = 0x1000;
/// Room reserved for the dtb at the top of RAM.
pub const FDT_MAX_SIZE: u64 = 0x1_0000;
/// Alignment of the dtb block (Linux asks for 8 bytes; 2 MiB keeps it out of huge pages).
pub const FDT_ALIGN: u64 = 2 << 20;

/// Where the dtb goes for `ram_size` bytes of RAM: the start of the last 2 MiB-aligned block
/// that fits it, as QEMU places it.
pub fn fdt_addr(ram_size: u64) -> u64 {
    let end = RAM_BASE + ram_size;
    (end - FDT_MAX_SIZE) & !(FDT_ALIGN - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdt_sits_in_the_last_aligned_block() {
        assert_eq!(fdt_addr(128 << 20), 0x8000_0000 + (126 << 20));
        assert_eq!(fdt_addr(RAM_MIN), 0x8000_0000 + (2 << 20));
        // Always inside RAM, with FDT_MAX_SIZE to spare.
        for mib in [4u64, 5, 64, 100, 2048] {
            let size = mib << 20;
            let addr = fdt_addr(size);
            assert!(addr >= RAM_BASE && addr + FDT_MAX_SIZE <= RAM_BASE + size);
        }
    }
}

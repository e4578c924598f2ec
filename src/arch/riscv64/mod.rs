//! The RISC-V guest: memory map, ONE_REG register IDs, device tree.
pub mod fdt;
pub mod layout;
pub mod regs;

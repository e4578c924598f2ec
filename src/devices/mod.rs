//! Devices on the MMIO bus, one a file.
pub mod bus;
pub mod finisher;
pub mod plic;
pub mod testdev;
pub mod uart;
pub mod virtio;

pub use bus::{Bus, BusDevice, BusError};

/// A wired interrupt controller as devices see it: rvvmm's PLIC, or KVM's in-kernel AIA.
pub trait IrqChip: Send + Sync {
    /// Asserts source `irq` once (an edge).
    fn trigger(&self, irq: u32);
    /// Whether sources are level-sensitive lines (then devices drive [`IrqChip::set_level`]).
    fn level_sensitive(&self) -> bool {
        false
    }
    /// Drives level-sensitive source `irq`.
    fn set_level(&self, irq: u32, level: bool) {
        if level {
            self.trigger(irq);
        }
    }
}

//! Devices on the MMIO bus, one a file.
pub mod bus;
pub mod finisher;
pub mod plic;
pub mod testdev;
pub mod uart;
pub mod virtio;

pub use bus::{Bus, BusDevice, BusError};

/// A device's counters, for `vm.counters`: name -> value (Cloud Hypervisor's names where it
/// has them).
pub trait Counted: Send + Sync {
    /// The counters now.
    fn counters(&self) -> std::collections::BTreeMap<&'static str, u64>;
}

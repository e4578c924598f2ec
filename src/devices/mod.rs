//! Devices on the MMIO bus, one a file.
pub mod bus;
pub mod finisher;
pub mod plic;
pub mod testdev;
pub mod uart;
pub mod virtio;

pub use bus::{Bus, BusDevice, BusError};

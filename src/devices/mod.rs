//! Devices on the MMIO bus, one a file.
pub mod bus;
pub mod finisher;
pub mod testdev;

pub use bus::{Bus, BusDevice, BusError};

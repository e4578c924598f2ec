//! The MMIO bus: guest-physical ranges mapped to devices.
//!
//! As in Firecracker's and Cloud Hypervisor's `Bus`, insertion rejects empty and overlapping
//! ranges and lookup finds the last range starting at or below the address. The ranges live in
//! one sorted vector rather than their BTreeMap: a VM has a handful of devices, fixed before
//! its vCPUs start, and a lookup then reads one contiguous table (in the nested lab every page
//! an exit touches costs a software-TLB refill in QEMU after each KVM_RUN).
//! The bus checks that an access lies wholly inside the device's range, so a device only sees
//! offsets it owns. An access no device claims is never fatal: a read returns 0, a write is
//! dropped, and both are logged at debug level, rate-limited.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::control::{Flow, CONTINUE};

/// A device on the bus. Accesses are 1, 2, 4 or 8 bytes, little-endian in `data`.
pub trait BusDevice: Send + Sync {
    /// Guest load at `offset` from the device's base; fill `data`.
    fn read(&self, offset: u64, data: &mut [u8]);
    /// Guest store at `offset` from the device's base. A store that stops the VM (a power-off
    /// register) returns `Break(request)`: the storing vCPU then never re-enters the guest.
    fn write(&self, offset: u64, data: &[u8]) -> Flow;
}

/// Errors building the bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// A device asked for zero bytes.
    #[error("device range at {0:#x} is empty")]
    ZeroSized(u64),
    /// Two devices asked for overlapping ranges.
    #[error("device range {base:#x}+{len:#x} overlaps the device at {other:#x}")]
    Overlap {
        /// Base of the new range.
        base: u64,
        /// Length of the new range.
        len: u64,
        /// Base of the range already there.
        other: u64,
    },
}

struct Entry {
    base: u64,
    len: u64,
    device: Arc<dyn BusDevice>,
}

/// Log the first this many unclaimed accesses, then one in every `UNCLAIMED_LOG_EVERY`.
const UNCLAIMED_LOG_FIRST: u64 = 8;
const UNCLAIMED_LOG_EVERY: u64 = 4096;

/// Zeroes an access's bytes with fixed-size stores for the widths an exit has: a variable
/// `fill` is a call to memset, one more page on the exit path.
#[inline]
fn zero(data: &mut [u8]) {
    match data.len() {
        1 => data.copy_from_slice(&[0; 1]),
        2 => data.copy_from_slice(&[0; 2]),
        4 => data.copy_from_slice(&[0; 4]),
        8 => data.copy_from_slice(&[0; 8]),
        _ => data.fill(0),
    }
}

/// The MMIO bus.
#[derive(Default)]
pub struct Bus {
    /// Sorted by base; ranges never overlap.
    devices: Vec<Entry>,
    unclaimed: AtomicU64,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `device` at [base, base + len).
    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        device: Arc<dyn BusDevice>,
    ) -> Result<(), BusError> {
        if len == 0 {
            return Err(BusError::ZeroSized(base));
        }
        let end = base.checked_add(len - 1).ok_or(BusError::Overlap {
            base,
            len,
            other: base,
        })?;
        // The first range starting after `end` is where the new one goes; only the range
        // before it can overlap.
        let at = self.devices.partition_point(|e| e.base <= end);
        if let Some(prev) = at.checked_sub(1).map(|i| &self.devices[i]) {
            if prev.base + (prev.len - 1) >= base {
                return Err(BusError::Overlap {
                    base,
                    len,
                    other: prev.base,
                });
            }
        }
        self.devices.insert(at, Entry { base, len, device });
        Ok(())
    }

    #[inline]
    fn find(&self, addr: u64, len: usize) -> Option<(u64, &Arc<dyn BusDevice>)> {
        let at = self.devices.partition_point(|e| e.base <= addr);
        let entry = &self.devices[at.checked_sub(1)?];
        let offset = addr - entry.base;
        (offset.checked_add(len as u64)? <= entry.len).then_some((offset, &entry.device))
    }

    /// A guest load of `data.len()` bytes at `addr`. Returns whether a device claimed it.
    #[inline]
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((offset, device)) => {
                device.read(offset, data);
                true
            }
            None => {
                zero(data);
                self.log_unclaimed("read", addr, data.len(), &[]);
                false
            }
        }
    }

    /// A guest store of `data` at `addr`: what the device that claims it answers (an
    /// unclaimed store is dropped, and the guest goes on).
    #[inline]
    pub fn write(&self, addr: u64, data: &[u8]) -> Flow {
        match self.find(addr, data.len()) {
            Some((offset, device)) => device.write(offset, data),
            None => {
                self.log_unclaimed("write", addr, data.len(), data);
                CONTINUE
            }
        }
    }

    /// How many accesses no device claimed.
    pub fn unclaimed(&self) -> u64 {
        self.unclaimed.load(Ordering::Relaxed)
    }

    #[inline]
    fn log_unclaimed(&self, what: &str, addr: u64, len: usize, written: &[u8]) {
        let n = self.unclaimed.fetch_add(1, Ordering::Relaxed);
        if n < UNCLAIMED_LOG_FIRST || n.is_multiple_of(UNCLAIMED_LOG_EVERY) {
            Self::log_unclaimed_slow(what, addr, len, written, n);
        }
    }

    /// The logging itself, out of the exit path's pages.
    #[cold]
    #[inline(never)]
    fn log_unclaimed_slow(what: &str, addr: u64, len: usize, written: &[u8], n: u64) {
        if log::log_enabled!(log::Level::Debug) {
            let mut bytes = [0u8; 8];
            let k = written.len().min(8);
            bytes[..k].copy_from_slice(&written[..k]);
            let value = u64::from_le_bytes(bytes);
            log::debug!(
                "unclaimed MMIO {what} of {len} bytes at {addr:#x} (value {value:#x}; {} so far)",
                n + 1
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(bool, u64, Vec<u8>)>>);

    impl BusDevice for Recorder {
        fn read(&self, offset: u64, data: &mut [u8]) {
            for (i, b) in data.iter_mut().enumerate() {
                *b = offset as u8 + i as u8;
            }
            self.0.lock().unwrap().push((false, offset, data.to_vec()));
        }
        fn write(&self, offset: u64, data: &[u8]) -> Flow {
            self.0.lock().unwrap().push((true, offset, data.to_vec()));
            CONTINUE
        }
    }

    #[test]
    fn overlapping_and_empty_ranges_are_rejected() {
        let dev: Arc<dyn BusDevice> = Arc::new(Recorder::default());
        let mut bus = Bus::new();
        bus.insert(0x1000, 0x100, dev.clone()).unwrap();
        assert_eq!(
            bus.insert(0x2000, 0, dev.clone()),
            Err(BusError::ZeroSized(0x2000))
        );
        for (base, len) in [
            (0x1000, 0x100),
            (0x10ff, 1),
            (0xf00, 0x101),
            (0x1080, 0x10),
            (0, 0x2000),
        ] {
            assert!(
                matches!(
                    bus.insert(base, len, dev.clone()),
                    Err(BusError::Overlap { other: 0x1000, .. })
                ),
                "{base:#x}+{len:#x}"
            );
        }
        assert!(bus.insert(u64::MAX, 2, dev.clone()).is_err());
        // Neighbours on both sides fit.
        bus.insert(0x1100, 0x100, dev.clone()).unwrap();
        bus.insert(0xf00, 0x100, dev).unwrap();
    }

    #[test]
    fn every_width_reaches_the_device_at_its_offset() {
        let dev = Arc::new(Recorder::default());
        let mut bus = Bus::new();
        bus.insert(0x1000, 0x100, dev.clone()).unwrap();
        for width in [1usize, 2, 4, 8] {
            let mut data = vec![0u8; width];
            assert!(bus.read(0x1010, &mut data));
            assert_eq!(data[0], 0x10);
            assert_eq!(data[width - 1], 0x10 + width as u8 - 1);
            assert_eq!(bus.write(0x10f8, &vec![0xab; width]), CONTINUE);
        }
        assert_eq!(bus.unclaimed(), 0);
        let log = dev.0.lock().unwrap();
        assert_eq!(log.len(), 8);
        assert!(log.iter().all(|(_, off, _)| *off == 0x10 || *off == 0xf8));
    }

    #[test]
    fn unclaimed_accesses_read_zero_and_are_counted() {
        let dev = Arc::new(Recorder::default());
        let mut bus = Bus::new();
        bus.insert(0x1000, 0x100, dev.clone()).unwrap();
        let mut data = [0xffu8; 8];
        assert!(!bus.read(0x2000, &mut data));
        assert_eq!(data, [0; 8]);
        assert_eq!(bus.write(0x0, &[1, 2, 3, 4]), CONTINUE);
        // Straddling the device's end is not the device's.
        assert!(!bus.read(0x10fc, &mut data));
        assert_eq!(bus.write(0x10ff, &[1, 2]), CONTINUE);
        assert_eq!(bus.unclaimed(), 4);
        assert!(dev.0.lock().unwrap().is_empty());
    }
}

//! rvvmm's MMIO test device (`--testdev`): 4 KiB of byte-addressed registers that read back
//! what was written, so a test guest can check loads and stores of every width and their
//! little-endian composition through the whole exit path. Like kvm-unit-tests' testdev, it
//! exists for testing the VMM and is off unless asked for. Its last 8 bytes also trip the
//! seccomp filter (see [`SECCOMP_TRIP`]).

use std::sync::Mutex;

use crate::arch::riscv64::layout::TESTDEV_SIZE;
use crate::control::{Flow, CONTINUE};
use crate::devices::BusDevice;

/// Offset of the seccomp trip register: writing [`SECCOMP_TRIP_MAGIC`] there (8 bytes) has the
/// vCPU thread make a system call no seccomp filter allows, so a test sees the filter stop
/// rvvmm (the register otherwise reads back like the rest).
pub const SECCOMP_TRIP: u64 = TESTDEV_SIZE - 8;
/// "SECCOMP!" in little-endian ASCII.
pub const SECCOMP_TRIP_MAGIC: u64 = u64::from_le_bytes(*b"SECCOMP!");

/// The test device.
pub struct TestDev {
    regs: Mutex<[u8; TESTDEV_SIZE as usize]>,
}

impl Default for TestDev {
    fn default() -> Self {
        TestDev {
            regs: Mutex::new([0; TESTDEV_SIZE as usize]),
        }
    }
}

impl BusDevice for TestDev {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let regs = self.regs.lock().unwrap_or_else(|e| e.into_inner());
        let start = offset as usize;
        // The bus only passes accesses inside the device's range.
        if let Some(src) = regs.get(start..start + data.len()) {
            data.copy_from_slice(src);
        }
    }

    fn write(&self, offset: u64, data: &[u8]) -> Flow {
        if offset == SECCOMP_TRIP && data == SECCOMP_TRIP_MAGIC.to_le_bytes() {
            crate::seccomp::trip();
        }
        let mut regs = self.regs.lock().unwrap_or_else(|e| e.into_inner());
        let start = offset as usize;
        if let Some(dst) = regs.get_mut(start..start + data.len()) {
            dst.copy_from_slice(data);
        }
        CONTINUE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_writes_of_any_width() {
        let dev = TestDev::default();
        assert_eq!(
            dev.write(8, &0x1122_3344_5566_7788u64.to_le_bytes()),
            CONTINUE
        );
        assert_eq!(dev.write(8, &[0xaa]), CONTINUE);
        let mut half = [0u8; 2];
        dev.read(8, &mut half);
        assert_eq!(u16::from_le_bytes(half), 0x77aa);
        let mut word = [0u8; 4];
        dev.read(12, &mut word);
        assert_eq!(u32::from_le_bytes(word), 0x1122_3344);
        // Out of range (the bus prevents it; the device still does not panic).
        assert_eq!(dev.write(TESTDEV_SIZE - 1, &[1, 2]), CONTINUE);
        dev.read(TESTDEV_SIZE, &mut word);
    }
}

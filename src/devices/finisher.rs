//! The SiFive test finisher (`sifive,test0`) as on QEMU virt: one 32-bit register at offset 0.
//! Writing `0x5555` powers off, `0x7777` reboots, `(code << 16) | 0x3333` exits with `code`.
//! Linux drives it through the syscon-poweroff and syscon-reboot nodes.

use std::sync::Arc;

use crate::control::{ExitRequest, VmControl};
use crate::devices::BusDevice;

const FINISHER_FAIL: u32 = 0x3333;
const FINISHER_PASS: u32 = 0x5555;
const FINISHER_RESET: u32 = 0x7777;

/// The finisher.
pub struct Finisher {
    control: Arc<VmControl>,
}

impl Finisher {
    /// A finisher that stops the VM through `control`.
    pub fn new(control: Arc<VmControl>) -> Self {
        Finisher { control }
    }
}

impl BusDevice for Finisher {
    fn read(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        if offset != 0 || data.len() != 4 {
            log::debug!(
                "finisher: ignored {}-byte write at offset {offset:#x}",
                data.len()
            );
            return;
        }
        let value = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        match value & 0xffff {
            FINISHER_PASS => self.control.request(ExitRequest::Shutdown),
            FINISHER_RESET => self.control.request(ExitRequest::Reboot),
            FINISHER_FAIL => self
                .control
                .request(ExitRequest::Exit((value >> 16) as i32)),
            _ => log::debug!("finisher: ignored value {value:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(value: u32) -> Option<ExitRequest> {
        let control = Arc::new(VmControl::default());
        Finisher::new(control.clone()).write(0, &value.to_le_bytes());
        control.should_stop().then(|| control.wait())
    }

    #[test]
    fn finisher_codes() {
        assert_eq!(write(0x5555), Some(ExitRequest::Shutdown));
        assert_eq!(write(0x7777), Some(ExitRequest::Reboot));
        assert_eq!(write(0x002a_3333), Some(ExitRequest::Exit(42)));
        assert_eq!(write(0x1234), None);
    }

    #[test]
    fn other_widths_and_offsets_are_ignored() {
        let control = Arc::new(VmControl::default());
        let finisher = Finisher::new(control.clone());
        finisher.write(0, &[0x55, 0x55]);
        finisher.write(4, &0x5555u32.to_le_bytes());
        finisher.write(0, &0x5555u64.to_le_bytes());
        assert!(!control.should_stop());
        let mut data = [0xff; 4];
        finisher.read(0, &mut data);
        assert_eq!(data, [0; 4]);
    }
}

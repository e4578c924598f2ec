//! The SiFive test finisher (`sifive,test0`) as on QEMU virt: one 32-bit register at offset 0.
//! Writing `0x5555` powers off, `0x7777` reboots, `(code << 16) | 0x3333` exits with `code`.
//! Linux drives it through the syscon-poweroff and syscon-reboot nodes.
//!
//! The stop is the store's answer ([`Flow`]), not a flag set on the side: the vCPU that wrote
//! it leaves its loop before it re-enters the guest, so the guest runs no instruction after
//! the store (as in QEMU, where the write ends the machine at once).

use crate::control::{Flow, GuestStop, CONTINUE};
use crate::devices::BusDevice;

const FINISHER_FAIL: u32 = 0x3333;
const FINISHER_PASS: u32 = 0x5555;
const FINISHER_RESET: u32 = 0x7777;

/// The finisher.
#[derive(Debug, Default)]
pub struct Finisher;

impl BusDevice for Finisher {
    fn read(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&self, offset: u64, data: &[u8]) -> Flow {
        if offset != 0 || data.len() != 4 {
            log::debug!(
                "finisher: ignored {}-byte write at offset {offset:#x}",
                data.len()
            );
            return CONTINUE;
        }
        let value = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        let request = match value & 0xffff {
            FINISHER_PASS => GuestStop::Shutdown,
            FINISHER_RESET => GuestStop::Reboot,
            FINISHER_FAIL => GuestStop::Exit((value >> 16) as i32),
            _ => {
                log::debug!("finisher: ignored value {value:#x}");
                return CONTINUE;
            }
        };
        Flow::Break(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(value: u32) -> Flow {
        Finisher.write(0, &value.to_le_bytes())
    }

    #[test]
    fn finisher_codes() {
        assert_eq!(write(0x5555), Flow::Break(GuestStop::Shutdown));
        assert_eq!(write(0x7777), Flow::Break(GuestStop::Reboot));
        assert_eq!(write(0x002a_3333), Flow::Break(GuestStop::Exit(42)));
        assert_eq!(write(0x1234), CONTINUE);
    }

    #[test]
    fn other_widths_and_offsets_are_ignored() {
        assert_eq!(Finisher.write(0, &[0x55, 0x55]), CONTINUE);
        assert_eq!(Finisher.write(4, &0x5555u32.to_le_bytes()), CONTINUE);
        assert_eq!(Finisher.write(0, &0x5555u64.to_le_bytes()), CONTINUE);
        let mut data = [0xff; 4];
        Finisher.read(0, &mut data);
        assert_eq!(data, [0; 4]);
    }
}

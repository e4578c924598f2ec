//! The in-kernel AIA's state, through KVM's device attributes (`KVM_DEV_RISCV_AIA_GRP_APLIC`:
//! an APLIC register by its offset; `KVM_DEV_RISCV_AIA_GRP_IMSIC`: an IMSIC register of a hart
//! by its iselect number). Which registers hold state follows the AIA specification and KVM's
//! `aia_aplic.c` / `aia_imsic.c`: per source its `sourcecfg` and `target`, the pending and
//! enable bits, `domaincfg`; per hart `eidelivery`, `eithreshold` and the `eip`/`eie` arrays
//! (on RV64 only the even iselect numbers exist).

use serde::{Deserialize, Serialize};

use crate::hypervisor::{HypervisorError, VmBackend};

const GRP_APLIC: u32 = 3;
const GRP_IMSIC: u32 = 4;
const ISEL_BITS: u32 = 12;

const DOMAINCFG: u64 = 0x0000;
const SOURCECFG_BASE: u64 = 0x0004;
const SETIP_BASE: u64 = 0x1c00;
const CLRIP_BASE: u64 = 0x1d00;
const SETIE_BASE: u64 = 0x1e00;
const CLRIE_BASE: u64 = 0x1f00;
const TARGET_BASE: u64 = 0x3004;

const EIDELIVERY: u64 = 0x70;
const EITHRESHOLD: u64 = 0x72;
const EIP0: u64 = 0x80;
const EIE0: u64 = 0xc0;

/// The AIA's registers: APLIC (offset, value) and IMSIC (hart, iselect, value), each in the
/// order they are written back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AiaState {
    /// APLIC registers by offset.
    pub aplic: Vec<(u64, u32)>,
    /// IMSIC registers by hart and iselect.
    pub imsic: Vec<(u32, u64, u64)>,
}

/// The APLIC registers that hold state, in restore order: each source's mode and target
/// before the enables and the pending bits (a pending bit of a source whose mode is not set
/// would be dropped), `domaincfg` (its enable) last.
fn aplic_offsets(sources: u32) -> Vec<u64> {
    let words = u64::from(sources + 1).div_ceil(32);
    let per_source = |base: u64| (0..u64::from(sources)).map(move |i| base + 4 * i);
    per_source(SOURCECFG_BASE)
        .chain(per_source(TARGET_BASE))
        .chain((0..words).map(|w| SETIE_BASE + 4 * w))
        .chain((0..words).map(|w| SETIP_BASE + 4 * w))
        .chain([DOMAINCFG])
        .collect()
}

/// One hart's IMSIC registers in restore order: enables, pending, threshold, delivery.
fn imsic_isels(ids: u32) -> Vec<u64> {
    // eip/eie hold one bit per identity 0..=ids; on RV64 each even iselect is 64 of them.
    let words = u64::from(ids + 1).div_ceil(64);
    (0..words)
        .map(|w| EIE0 + 2 * w)
        .chain((0..words).map(|w| EIP0 + 2 * w))
        .chain([EITHRESHOLD, EIDELIVERY])
        .collect()
}

fn imsic_attr(hart: u32, isel: u64) -> u64 {
    (u64::from(hart) << ISEL_BITS) | isel
}

/// Reads the AIA of `vm`: `sources` wired sources, `harts` IMSIC files of `ids` identities.
pub fn save<V: VmBackend>(
    vm: &V,
    sources: u32,
    harts: u32,
    ids: u32,
) -> Result<AiaState, HypervisorError> {
    let mut state = AiaState::default();
    for offset in aplic_offsets(sources) {
        state
            .aplic
            .push((offset, vm.aia_attr(GRP_APLIC, offset)? as u32));
    }
    for hart in 0..harts {
        for isel in imsic_isels(ids) {
            let value = vm.aia_attr(GRP_IMSIC, imsic_attr(hart, isel))?;
            state.imsic.push((hart, isel, value));
        }
    }
    Ok(state)
}

/// Writes a saved AIA into `vm`'s (created, initialised, its vCPUs restored).
pub fn restore<V: VmBackend>(vm: &V, state: &AiaState) -> Result<(), HypervisorError> {
    for &(offset, value) in &state.aplic {
        vm.set_aia_attr(GRP_APLIC, offset, u64::from(value))?;
    }
    for &(hart, isel, value) in &state.imsic {
        vm.set_aia_attr(GRP_IMSIC, imsic_attr(hart, isel), value)?;
    }
    Ok(())
}

/// Puts `vm`'s AIA back as it was created, for a reboot that keeps the VM: the APLIC
/// disabled, every source inactive with no target, enable and pending bits cleared (through
/// the clear registers: a write of 0 to a set register changes nothing), and each of `harts`
/// IMSIC files (`ids` identities) empty, as a reset vCPU's file should already be.
pub fn reset<V: VmBackend>(
    vm: &V,
    sources: u32,
    harts: u32,
    ids: u32,
) -> Result<(), HypervisorError> {
    let words = u64::from(sources + 1).div_ceil(32);
    let per_source = |base: u64| (0..u64::from(sources)).map(move |i| (base + 4 * i, 0));
    let writes = [(DOMAINCFG, 0)]
        .into_iter()
        .chain(per_source(SOURCECFG_BASE))
        .chain(per_source(TARGET_BASE))
        .chain((0..words).map(|w| (CLRIE_BASE + 4 * w, u64::from(u32::MAX))))
        .chain((0..words).map(|w| (CLRIP_BASE + 4 * w, u64::from(u32::MAX))));
    for (offset, value) in writes {
        vm.set_aia_attr(GRP_APLIC, offset, value)?;
    }
    for hart in 0..harts {
        for isel in imsic_isels(ids) {
            vm.set_aia_attr(GRP_IMSIC, imsic_attr(hart, isel), 0)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reset_clears_through_the_clear_registers_and_empties_each_imsic() {
        use crate::hypervisor::scripted::ScriptedVm;
        let vm = ScriptedVm::new().with_aia();
        let config = crate::hypervisor::AiaConfig {
            num_sources: 95,
            aplic_addr: 0xc00_0000,
            imsic_addrs: vec![0x2800_0000, 0x2800_1000],
        };
        vm.create_aia(&config).unwrap();
        // What a boot left: enabled, a source active and pending, an IMSIC identity pending.
        vm.set_aia_attr(GRP_APLIC, DOMAINCFG, 0x100).unwrap();
        vm.set_aia_attr(GRP_APLIC, SOURCECFG_BASE, 6).unwrap();
        vm.set_aia_attr(GRP_IMSIC, imsic_attr(1, EIP0), 0x2)
            .unwrap();
        reset(&vm, 95, 2, 255).unwrap();
        let attrs = vm.aia_attrs.lock().unwrap();
        assert_eq!(attrs[&(GRP_APLIC, DOMAINCFG)], 0);
        assert_eq!(attrs[&(GRP_APLIC, SOURCECFG_BASE)], 0);
        assert_eq!(attrs[&(GRP_APLIC, TARGET_BASE + 4 * 94)], 0);
        for w in 0..3 {
            assert_eq!(attrs[&(GRP_APLIC, CLRIE_BASE + 4 * w)], 0xffff_ffff);
            assert_eq!(attrs[&(GRP_APLIC, CLRIP_BASE + 4 * w)], 0xffff_ffff);
        }
        assert!(!attrs.contains_key(&(GRP_APLIC, CLRIP_BASE + 12)));
        for hart in 0..2 {
            for isel in imsic_isels(255) {
                assert_eq!(attrs[&(GRP_IMSIC, imsic_attr(hart, isel))], 0);
            }
        }
    }

    #[test]
    fn the_register_lists_follow_the_spec() {
        let aplic = aplic_offsets(95);
        assert_eq!(aplic.len(), 95 + 95 + 3 + 3 + 1);
        assert_eq!(aplic[0], 0x4, "sourcecfg[1]");
        assert_eq!(aplic[95], 0x3004, "target[1]");
        assert_eq!(*aplic.last().unwrap(), DOMAINCFG);
        let imsic = imsic_isels(255);
        assert_eq!(
            imsic,
            [0xc0, 0xc2, 0xc4, 0xc6, 0x80, 0x82, 0x84, 0x86, 0x72, 0x70]
        );
        assert_eq!(imsic_attr(1, 0x70), 0x1070);
    }
}

//! A vCPU's state for a snapshot: every register KVM lists for it (`KVM_GET_REG_LIST`: the
//! GPRs and pc, the guest CSRs and the AIA CSRs, F/D, the vector state when the vCPU has V,
//! the timer, the ISA and SBI extension registers, the SBI extensions' own state such as STA's
//! shared memory) and its mp_state. Asking KVM for the list rather than naming registers here
//! means a register a newer kernel adds is saved without a change to rvvmm.
//!
//! Restoring writes them back in an order KVM accepts: the configuration and the extension
//! switches first (they decide which other registers exist), the timer last (its `state`
//! starts it, and `time` sets the guest's clock to where it was: guest time continues from the
//! snapshot, it does not jump).

use serde::{Deserialize, Serialize};

use super::{Vcpu, VcpuError};
use crate::arch::riscv64::regs::{
    ISA_EXTS, ISA_LETTERS, SBI_EXTS, TYPE_ISA_EXT, TYPE_SBI_EXT, TYPE_TIMER,
};
use crate::hypervisor::{MpState, VcpuBackend};

/// One register: its ONE_REG ID and its bytes (little-endian), as hex in the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reg {
    /// The ONE_REG ID.
    pub id: u64,
    /// The value's bytes, hex.
    pub value: String,
}

/// A vCPU's saved state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuState {
    /// The vCPU's index (its hart ID).
    pub index: u32,
    /// Whether the hart was stopped (HSM) when saved.
    pub stopped: bool,
    /// Every register KVM listed.
    pub regs: Vec<Reg>,
}

impl VcpuState {
    /// How many of its registers are SBI extensions' state (`KVM_REG_RISCV_SBI_STATE`): in
    /// all, and of those FWFT's (subtype 1, Linux 6.18: a register set per feature KVM can
    /// control on this host; STA's shared memory, subtype 0, came in 6.8).
    pub fn sbi_state_regs(&self) -> (usize, usize) {
        let sbi = self.regs.iter().filter(|r| reg_type(r.id) == SBI_STATE);
        let fwft = sbi
            .clone()
            .filter(|r| r.id & 0x00ff_0000 == 1 << 16)
            .count();
        (sbi.count(), fwft)
    }
}

/// `KVM_REG_RISCV_SBI_STATE`.
const SBI_STATE: u64 = 10 << 24;

/// The register type of an ID (`KVM_REG_RISCV_TYPE_MASK`).
fn reg_type(id: u64) -> u64 {
    id & 0xff00_0000
}

/// Where a register goes in the restore order (see the module's text).
fn restore_rank(id: u64) -> u8 {
    match reg_type(id) >> 24 {
        1 => 0,     // CONFIG
        7 | 8 => 1, // ISA_EXT, SBI_EXT
        4 => 3,     // TIMER: last
        _ => 2,     // CORE, CSR, FP, VECTOR, SBI state
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The name of an ISA or SBI extension register, for messages.
fn extension_name(id: u64) -> Option<String> {
    let index = id & 0xffff;
    let table: Vec<&(u64, &str)> = match reg_type(id) {
        TYPE_ISA_EXT => ISA_LETTERS.iter().chain(ISA_EXTS).collect(),
        TYPE_SBI_EXT => SBI_EXTS.iter().collect(),
        _ => return None,
    };
    table
        .into_iter()
        .find(|(i, _)| *i == index)
        .map(|(_, n)| n.to_string())
        .or_else(|| Some(format!("extension #{index}")))
}

impl<B: VcpuBackend> Vcpu<B> {
    /// Reads the vCPU's whole state. The vCPU must be out of `KVM_RUN` (paused, or not run).
    pub fn save_state(&mut self) -> Result<VcpuState, Box<VcpuError>> {
        let vcpu = self.id;
        let fail = |what: String| Box::new(VcpuError::State { vcpu, what });
        self.backend
            .complete_pending()
            .map_err(|e| fail(format!("cannot complete its last exit: {e}")))?;
        self.pending = super::Pending::None;
        let ids = self
            .backend
            .reg_list()
            .map_err(|e| fail(format!("cannot list its registers: {e}")))?;
        let mut regs = Vec::with_capacity(ids.len());
        for id in ids {
            let bytes = self
                .backend
                .get_reg_bytes(id)
                .map_err(|e| fail(format!("cannot read register {id:#x}: {e}")))?;
            regs.push(Reg {
                id,
                value: hex(&bytes),
            });
        }
        let stopped = self.backend.mp_state().map_err(self.err())? == MpState::Stopped;
        Ok(VcpuState {
            index: self.id,
            stopped,
            regs,
        })
    }

    /// Writes a saved state into this vCPU (created and set up, never run). A register whose
    /// value already matches is left alone (read-only ones such as the timebase must match); an
    /// ISA or SBI extension this host's KVM cannot give is an error naming it.
    pub fn restore_state(&mut self, state: &VcpuState) -> Result<(), Box<VcpuError>> {
        let vcpu = self.id;
        let fail = |what: String| Box::new(VcpuError::State { vcpu, what });
        let mut regs: Vec<&Reg> = state.regs.iter().collect();
        regs.sort_by_key(|r| (restore_rank(r.id), r.id & 0x00ff_ffff));
        // Timer registers in index order: frequency, time, compare, state.
        for reg in regs {
            let bytes = unhex(&reg.value)
                .ok_or_else(|| fail(format!("register {:#x} is not hex", reg.id)))?;
            if bytes.len() != crate::hypervisor::reg_size(reg.id) {
                return Err(fail(format!(
                    "register {:#x} has {} bytes, its ID says {}",
                    reg.id,
                    bytes.len(),
                    crate::hypervisor::reg_size(reg.id)
                )));
            }
            if self.backend.get_reg_bytes(reg.id).ok().as_deref() == Some(&bytes[..]) {
                continue;
            }
            if let Err(e) = self.backend.set_reg_bytes(reg.id, &bytes) {
                return Err(fail(match extension_name(reg.id) {
                    Some(name) if bytes.first() == Some(&1) => format!(
                        "the snapshot's vCPU had {name}, which this host's KVM cannot give ({e})"
                    ),
                    Some(name) => format!("cannot switch {name} as the snapshot had it: {e}"),
                    None if reg_type(reg.id) == TYPE_TIMER => {
                        format!("cannot restore timer register {:#x}: {e}", reg.id)
                    }
                    None => format!("cannot restore register {:#x}: {e}", reg.id),
                }));
            }
        }
        let mp_state = if state.stopped {
            MpState::Stopped
        } else {
            MpState::Runnable
        };
        self.backend.set_mp_state(mp_state).map_err(self.err())?;
        self.stopped = state.stopped;
        self.off_path = self.stopped;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::arch::riscv64::regs::{a, isa_ext, PC};
    use crate::console::BufferConsole;
    use crate::hypervisor::scripted::ScriptedVm;
    use crate::hypervisor::VmBackend;
    use crate::sbi::{Sbi, SbiContext};
    use crate::vcpu::VcpuConfig;

    #[test]
    fn sbi_extension_state_is_counted_by_register_type() {
        let reg = |id: u64| Reg {
            id,
            value: "00".into(),
        };
        let state = VcpuState {
            index: 0,
            stopped: false,
            // STA's shmem_lo, a FWFT feature's value (subtype 1), pc, an SBI_EXT switch.
            regs: vec![
                reg(0x8030_0000_0a00_0000),
                reg(0x8030_0000_0a01_0002),
                reg(PC),
                reg(0x8030_0000_0800_0009),
            ],
        };
        assert_eq!(state.sbi_state_regs(), (2, 1));
    }

    fn vcpu(vm: &ScriptedVm) -> Vcpu<crate::hypervisor::scripted::ScriptedVcpu> {
        let memory = vm_memory::GuestMemoryMmap::<()>::from_ranges(&[(
            vm_memory::GuestAddress(0x8000_0000),
            1 << 20,
        )])
        .unwrap();
        let sbi = Sbi::new(SbiContext {
            memory,
            console: std::sync::Arc::new(BufferConsole::default()),
        });
        let config = VcpuConfig {
            hart_id: 0,
            dtb_addr: 0x8000_0000,
        };
        Vcpu::new(0, config, vm.create_vcpu(0).unwrap(), sbi).unwrap()
    }

    #[test]
    fn a_state_goes_back_into_a_fresh_vcpu() {
        let vm = ScriptedVm::new().with_reg(isa_ext(13), 1);
        let mut from = vcpu(&vm);
        from.set_entry(0x8020_0000).unwrap();
        from.set_gpr(5, 77).unwrap();
        let state = from.save_state().unwrap();
        let mut to = vcpu(&ScriptedVm::new());
        to.restore_state(&state).unwrap();
        assert_eq!(to.backend.get_reg(PC).unwrap(), 0x8020_0000);
        assert_eq!(to.backend.get_reg(a(5)).unwrap(), 77);
        assert_eq!(to.save_state().unwrap(), state);
    }

    #[test]
    fn a_host_that_lacks_an_extension_is_named() {
        let vm = ScriptedVm::new().with_reg(isa_ext(13), 1);
        let state = vcpu(&vm).save_state().unwrap();
        let lacking = ScriptedVm::new().with_fixed_reg(isa_ext(13));
        let e = vcpu(&lacking)
            .restore_state(&state)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("vCPU 0: the snapshot's vCPU had zbb, which this host's KVM cannot give"),
            "{e}"
        );
        let mut broken = state.clone();
        broken.regs[0].value = "xyz".into();
        let e = vcpu(&vm).restore_state(&broken).unwrap_err().to_string();
        assert!(e.contains("is not hex"), "{e}");
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(
            unhex(&hex(&[0, 1, 0xab, 0xff])),
            Some(vec![0, 1, 0xab, 0xff])
        );
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn the_restore_order_puts_config_first_and_the_timer_last() {
        let config = 0x8030_0000_0100_0000;
        let isa_ext = 0x8030_0000_0700_0008;
        let core = 0x8030_0000_0200_0000;
        let timer_state = 0x8030_0000_0400_0003;
        let mut ids = [timer_state, core, isa_ext, config];
        ids.sort_by_key(|id| restore_rank(*id));
        assert_eq!(ids, [config, isa_ext, core, timer_state]);
        assert_eq!(extension_name(isa_ext).as_deref(), Some("sstc"));
        assert_eq!(
            extension_name(0x8030_0000_0800_0009).as_deref(),
            Some("dbcn")
        );
    }
}

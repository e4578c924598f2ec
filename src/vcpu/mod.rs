//! A RISC-V vCPU with riscv_vcpu's lifecycle: `new` → `setup` → `set_entry` → `run`.
//!
//! [`Vcpu`] sits on a [`VcpuBackend`] (KVM on riscv64, a script in tests), turns each raw exit
//! into one [`ExitReason`], and answers the SBI calls it can answer alone (DBCN, unknown
//! extensions) without bothering the VMM.

mod exit;
pub mod extensions;
pub mod runner;
pub mod state;

pub use exit::{ExitReason, SRST_REASON_SYSTEM_FAILURE};

use crate::arch::riscv64::regs::{self, VcpuIsa, ISA_EXTS};
use crate::hypervisor::{HypervisorError, MpState, RawExit, VcpuBackend};
use crate::sbi::{Sbi, SbiOutcome};
use extensions::{Kind, Toggles};

/// `KVM_SYSTEM_EVENT_SHUTDOWN`.
const SYSTEM_EVENT_SHUTDOWN: u32 = 1;
/// `KVM_SYSTEM_EVENT_RESET`.
const SYSTEM_EVENT_RESET: u32 = 2;
/// `KVM_SYSTEM_EVENT_SUSPEND`.
const SYSTEM_EVENT_SUSPEND: u32 = 5;

/// Errors of the vCPU layer.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// The hypervisor refused an operation.
    #[error("vCPU {vcpu}: {source}")]
    Hypervisor {
        /// vCPU index.
        vcpu: u32,
        /// The hypervisor's error.
        #[source]
        source: HypervisorError,
    },
    /// KVM could not handle a guest trap.
    #[error("hart {vcpu}: KVM could not handle the guest's trap at pc {pc:#x} ({source}); the host's kernel log (dmesg) has its cause and address. {hint}")]
    GuestTrap {
        /// vCPU index.
        vcpu: u32,
        /// The guest's pc.
        pc: u64,
        /// What usually causes KVM_RUN's error, for the user to check.
        hint: &'static str,
        /// KVM_RUN's error.
        #[source]
        source: HypervisorError,
    },
    /// A snapshot's vCPU state could not be saved or restored.
    #[error("vCPU {vcpu}: {what}")]
    State {
        /// vCPU index.
        vcpu: u32,
        /// What failed.
        what: String,
    },
    /// An extension asked off stays on.
    #[error("vCPU {vcpu}: {source}")]
    Extension {
        /// vCPU index.
        vcpu: u32,
        /// Which, and what could be switched off.
        #[source]
        source: extensions::CannotDisable,
    },
    /// `set_gpr` takes a0..a7 only.
    #[error("vCPU {vcpu}: set_gpr index {index} is not one of a0..a7")]
    BadGpr {
        /// vCPU index.
        vcpu: u32,
        /// The index asked for.
        index: usize,
    },
    /// The guest touched memory KVM could not back.
    #[error("hart {vcpu}: guest memory at {addr:#x} (+{size:#x}) could not be provided")]
    MemoryFault {
        /// vCPU index.
        vcpu: u32,
        /// Guest-physical address.
        addr: u64,
        /// Size of the range.
        size: u64,
    },
    /// KVM could not enter or continue the guest.
    #[error("hart {vcpu}: KVM could not run the guest (reason {reason:#x}){}", crate::hypervisor::uapi::fail_entry_hint(*reason).map(|h| format!(": {h}")).unwrap_or_default())]
    FailEntry {
        /// vCPU index.
        vcpu: u32,
        /// KVM's reason code (`KVM_EXIT_FAIL_ENTRY`'s; bit 0 on Linux 6.19+: no IMSIC
        /// guest file).
        reason: u64,
    },
    /// KVM reported an MMIO access of a width no bus supports.
    #[error("vCPU {vcpu}: MMIO access of {width} bytes at {addr:#x}")]
    BadMmioWidth {
        /// vCPU index.
        vcpu: u32,
        /// Address.
        addr: u64,
        /// Width.
        width: u8,
    },
}

/// Result type of the vCPU layer. The error is boxed so that the `Result<ExitReason>` the exit
/// path returns on every exit stays the size of the exit itself (the error enum grew with
/// this layer's variants; a larger, differently laid out Result is what LLVM had started
/// moving with memcpy calls).
pub type Result<T> = std::result::Result<T, Box<VcpuError>>;

/// What `new` needs besides the vCPU index (riscv_vcpu's `VCpuConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VcpuConfig {
    /// The hart ID the guest sees in a0.
    pub hart_id: u64,
    /// Guest-physical address of the device tree, passed in a1.
    pub dtb_addr: u64,
}

/// What the vCPU is waiting for the VMM to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    None,
    Sbi,
    MmioRead(u8),
}

/// The low `width` bytes of a u64 (`width` is 1, 2, 4 or 8, as `check_width` ensures).
fn width_mask(width: u8) -> u64 {
    u64::MAX >> (64 - 8 * u32::from(width))
}

/// One RISC-V vCPU.
pub struct Vcpu<B: VcpuBackend> {
    id: u32,
    config: VcpuConfig,
    backend: B,
    sbi: Sbi,
    pending: Pending,
    stopped: bool,
    /// The exit a hart that was started made on its way back (returned after its `CpuUp`).
    stashed: Option<RawExit>,
    /// `stopped` or `stashed`: the one flag `run` tests before entering the guest.
    off_path: bool,
    /// The last exit suspended the system: the vCPU thread sleeps before it runs on.
    suspend: bool,
    /// The guest has SBI SUSP (KVM forwards it, and it was not switched off).
    has_susp: bool,
    isa: VcpuIsa,
}

impl<B: VcpuBackend> Vcpu<B> {
    /// Takes a freshly created backend vCPU; sets a0 = hart ID and a1 = dtb address.
    pub fn new(vcpu_id: u32, config: VcpuConfig, backend: B, sbi: Sbi) -> Result<Self> {
        let mut vcpu = Vcpu {
            id: vcpu_id,
            config,
            backend,
            sbi,
            pending: Pending::None,
            stopped: false,
            stashed: None,
            off_path: false,
            suspend: false,
            has_susp: false,
            isa: VcpuIsa::default(),
        };
        vcpu.set_reg(regs::a(0), config.hart_id)?;
        vcpu.set_reg(regs::a(1), config.dtb_addr)?;
        Ok(vcpu)
    }

    /// Enables the SBI extensions rvvmm handles (DBCN), reads what the vCPU offers (ISA,
    /// paging mode, timebase) and whether it starts stopped.
    pub fn setup(&mut self) -> Result<()> {
        self.setup_with(&Toggles::default())
    }

    /// [`Self::setup`], with the extensions `off` names switched off first (so that what the
    /// vCPU then reports, and the device tree lists, is what the guest has).
    pub fn setup_with(&mut self, off: &Toggles) -> Result<()> {
        let vcpu = self.id;
        let failed = |source| Box::new(VcpuError::Extension { vcpu, source });
        // KVM keeps DBCN off until the VMM turns it on: on first, so that switching it off
        // is like switching off any other.
        self.set_reg(regs::sbi_ext(regs::SBI_EXT_DBCN), 1)?;
        // SUSP likewise, where KVM has it (6.14 and later; older kernels do not know the
        // register, and their guests see the extension absent).
        if self
            .backend
            .set_reg(regs::sbi_ext(regs::SBI_EXT_SUSP), 1)
            .is_err()
        {
            log::debug!("vCPU {vcpu}: KVM has no SBI SUSP (Linux 6.14 or later has it)");
        }
        extensions::switch_off(&mut self.backend, Kind::Sbi, &off.sbi).map_err(failed)?;
        extensions::switch_off(&mut self.backend, Kind::Isa, &off.isa).map_err(failed)?;
        self.has_susp = self
            .backend
            .get_reg(regs::sbi_ext(regs::SBI_EXT_SUSP))
            .is_ok_and(|on| on == 1);
        let mut isa = VcpuIsa {
            base: self.get_reg(regs::CONFIG_ISA)?,
            timebase_frequency: self.get_reg(regs::TIMER_FREQUENCY)?,
            // Older kernels lack satp_mode; fall back to Sv39, which every RV64 MMU has.
            satp_mode: self.get_reg(regs::CONFIG_SATP_MODE).unwrap_or(0),
            ..Default::default()
        };
        for (id, name) in ISA_EXTS {
            // A register the kernel does not know reads as an error: the vCPU lacks it.
            if self.backend.get_reg(regs::isa_ext(*id)).unwrap_or(0) == 1 {
                isa.extensions.push(name);
            }
        }
        if isa.extensions.contains(&"zicbom") {
            isa.zicbom_block_size = self.get_reg(regs::CONFIG_ZICBOM_BLOCK_SIZE)?;
        }
        if isa.extensions.contains(&"zicboz") {
            isa.zicboz_block_size = self.get_reg(regs::CONFIG_ZICBOZ_BLOCK_SIZE)?;
        }
        if isa.extensions.contains(&"smstateen") {
            // As Cloud Hypervisor does since its PR #8258, from running on real AIA hardware
            // (openRuyi Creek): with Smstateen offered, the guest's sstateen0 starts at 0 and
            // its IMSIC setup trapped there; all ones leaves every state enabled, as on a hart
            // without Smstateen. QEMU's CPU in the lab has no Smstateen, so this is untested
            // there; a KVM that refuses the write leaves the reset value (logged).
            if let Err(e) = self.backend.set_reg(regs::CSR_SSTATEEN0, u64::MAX) {
                log::debug!("vCPU {vcpu}: sstateen0 left as it was: {e}");
            }
        }
        log::debug!("vCPU {}: {}", self.id, isa.isa_string());
        self.isa = isa;
        self.stopped = self.backend.mp_state().map_err(self.err())? == MpState::Stopped;
        self.off_path = self.stopped;
        Ok(())
    }

    /// Resets the vCPU in place for a reboot ([`VcpuBackend::reset`]: the hypervisor's reset,
    /// which keeps the ISA and SBI extensions set up at creation), then as [`Self::new`] left
    /// it: a0 = hart ID, a1 = dtb address, hart 0 runnable and the others stopped. The exit
    /// the last boot ended on is completed first.
    pub fn reset(&mut self) -> Result<()> {
        // First let KVM finish the exit that ended the boot (a finisher store is an MMIO
        // write): otherwise the next KVM_RUN would complete it on the reset vCPU, stepping
        // its pc past the guest's first instruction.
        self.backend.complete_pending().map_err(self.err())?;
        self.backend.reset().map_err(self.err())?;
        self.set_reg(regs::a(0), self.config.hart_id)?;
        self.set_reg(regs::a(1), self.config.dtb_addr)?;
        let state = if self.id == 0 {
            MpState::Runnable
        } else {
            MpState::Stopped
        };
        self.backend.set_mp_state(state).map_err(self.err())?;
        self.pending = Pending::None;
        self.stopped = state == MpState::Stopped;
        self.stashed = None;
        self.off_path = self.stopped;
        self.suspend = false;
        Ok(())
    }

    /// Sets the guest's first instruction.
    pub fn set_entry(&mut self, entry: u64) -> Result<()> {
        self.set_reg(regs::PC, entry)
    }

    /// Sets `a<index>` (0..=7). Right after an SBI exit, a0 and a1 are the call's return pair.
    pub fn set_gpr(&mut self, index: usize, value: u64) -> Result<()> {
        if index > 7 {
            return Err(VcpuError::BadGpr {
                vcpu: self.id,
                index,
            }
            .into());
        }
        if self.pending == Pending::Sbi && index < 2 {
            // KVM copies ret[0..2] into a0/a1 on the next KVM_RUN, overwriting a ONE_REG write.
            self.backend.set_sbi_return(index, value);
            return Ok(());
        }
        self.set_reg(regs::a(index as u64), value)
    }

    /// Answers the pending `MmioRead` with `value` (its low `width` bytes, little-endian).
    pub fn complete_mmio_read(&mut self, value: u64) {
        if let Pending::MmioRead(width) = self.pending {
            // Bytes past the width are zero, though KVM copies only `width` of them.
            self.backend
                .set_mmio_read_data((value & width_mask(width)).to_le_bytes(), width);
        }
    }

    /// Runs the guest until an exit the VMM must see.
    pub fn run(&mut self) -> Result<ExitReason> {
        self.pending = Pending::None;
        if self.off_path {
            return self.run_off_path();
        }
        // `?` then the decode's own `Ok`: a match building the Result here had LLVM copy the
        // 72-byte exit with a memcpy call on every exit (seen in the riscv64 build).
        let raw = self.backend.run().map_err(|e| self.run_failed(e))?;
        self.decode(raw)
    }

    /// A stopped hart, or the exit a started hart came back with.
    #[cold]
    #[inline(never)]
    fn run_off_path(&mut self) -> Result<ExitReason> {
        if let Some(raw) = self.stashed.take() {
            self.off_path = self.stopped;
            return self.decode(raw);
        }
        self.run_stopped()
    }

    /// The vCPU's external interrupt line (for the user-space PLIC).
    pub fn interrupt_line(&self) -> Result<std::sync::Arc<dyn crate::hypervisor::InterruptLine>> {
        self.backend.interrupt_line().map_err(self.err())
    }

    /// The vCPU index.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The configuration given to `new`.
    pub fn config(&self) -> VcpuConfig {
        self.config
    }

    /// What `setup` read from the hypervisor.
    pub fn isa(&self) -> &VcpuIsa {
        &self.isa
    }

    /// Whether the vCPU is powered off (waiting for SBI HSM hart_start).
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Whether the guest has SBI SUSP (system suspend), as set up.
    pub fn has_system_suspend(&self) -> bool {
        self.has_susp
    }

    /// Whether the last exit suspended the system ([`ExitReason::Halt`]); clears it.
    pub fn take_suspend(&mut self) -> bool {
        std::mem::take(&mut self.suspend)
    }

    // Always inlined into `run`, and so into the vCPU loop: out of line it is one more page on
    // every exit (LLVM outlined it once `run_off_path` called it too).
    #[inline(always)]
    fn decode(&mut self, raw: RawExit) -> Result<ExitReason> {
        Ok(match raw {
            RawExit::Sbi(call) => match self.sbi.dispatch(&call) {
                SbiOutcome::Return { error, value } => {
                    self.backend.set_sbi_return(0, error as u64);
                    self.backend.set_sbi_return(1, value);
                    ExitReason::Nothing
                }
                SbiOutcome::Hypercall { nr, args } => {
                    self.pending = Pending::Sbi;
                    ExitReason::Hypercall { nr, args }
                }
                SbiOutcome::Suspend => {
                    self.suspend = true;
                    ExitReason::Halt
                }
            },
            RawExit::MmioRead { addr, len } => {
                self.check_width(addr, len)?;
                self.pending = Pending::MmioRead(len);
                ExitReason::MmioRead { addr, width: len }
            }
            RawExit::MmioWrite { addr, len, data } => {
                self.check_width(addr, len)?;
                // Bytes past `len` are not the guest's: masked off (no variable-length copy).
                ExitReason::MmioWrite {
                    addr,
                    width: len,
                    data: u64::from_le_bytes(data) & width_mask(len),
                }
            }
            RawExit::SystemEvent { kind, data } => match kind {
                SYSTEM_EVENT_SHUTDOWN => ExitReason::SystemDown { reason: data },
                SYSTEM_EVENT_RESET => ExitReason::SystemReset { reason: data },
                SYSTEM_EVENT_SUSPEND => {
                    self.suspend = true;
                    ExitReason::Halt
                }
                other => ExitReason::FailEntry {
                    reason: u64::from(other),
                },
            },
            RawExit::Interrupted => {
                if self.backend.mp_state().map_err(self.err())? == MpState::Stopped {
                    self.stopped = true;
                    self.off_path = true;
                    ExitReason::CpuDown
                } else {
                    ExitReason::ExternalInterrupt
                }
            }
            RawExit::MemoryFault { gpa, size } => ExitReason::NestedPageFault { addr: gpa, size },
            RawExit::FailEntry { reason } => ExitReason::FailEntry { reason },
            RawExit::InternalError => ExitReason::FailEntry { reason: 0 },
            RawExit::Other(reason) => ExitReason::FailEntry {
                reason: u64::from(reason),
            },
        })
    }

    /// A stopped hart waits inside KVM_RUN, as KVM intends: KVM sleeps its thread until
    /// another hart starts it (SBI HSM hart_start) or a signal kicks it, so a stopped hart
    /// costs the host nothing. Started, it runs guest code at once; rvvmm learns of it when
    /// KVM_RUN first returns, reports `CpuUp`, and hands back the exit that brought the thread
    /// out on the next `run`. Kicked while still stopped: `Nothing` (the VMM then looks at its
    /// requests, as after any cold exit).
    fn run_stopped(&mut self) -> Result<ExitReason> {
        let raw = self.backend.run().map_err(self.err())?;
        if self.backend.mp_state().map_err(self.err())? == MpState::Stopped {
            return Ok(ExitReason::Nothing);
        }
        self.stopped = false;
        if raw != RawExit::Interrupted {
            self.stashed = Some(raw);
        }
        self.off_path = self.stashed.is_some();
        Ok(ExitReason::CpuUp {
            target_cpu: self.config.hart_id,
            entry: None,
            arg: None,
        })
    }

    fn check_width(&self, addr: u64, width: u8) -> Result<()> {
        match width {
            1 | 2 | 4 | 8 => Ok(()),
            _ => Err(VcpuError::BadMmioWidth {
                vcpu: self.id,
                addr,
                width,
            }
            .into()),
        }
    }

    /// KVM_RUN failed: KVM met a guest trap it cannot handle or deliver (an instruction fetch
    /// from no memory, an MMIO access it cannot decode or that is misaligned). Says where the
    /// guest was, which is what a user can act on; the host's log has KVM's own dump.
    #[cold]
    #[inline(never)]
    fn run_failed(&self, source: HypervisorError) -> Box<VcpuError> {
        if !matches!(source, HypervisorError::Ioctl { .. }) {
            return self.err()(source);
        }
        // What KVM RISC-V (6.12) returns, measured in the lab (case mmio_misaligned_and_fp):
        // EIO for an MMIO load or store not aligned to its size, EOPNOTSUPP for an access it
        // cannot decode (FP, vector) or a fetch from no memory.
        let hint = match &source {
            HypervisorError::Ioctl { source: e, .. } if e.raw_os_error() == Some(libc::EIO) => {
                "KVM refuses an MMIO access that is not aligned to its size: does the guest access a device with a misaligned load or store?"
            }
            _ => "KVM emulates only integer loads and stores to devices: does the guest use FP or vector instructions on MMIO, or is it linked for another address than it was loaded at (flat binaries go to 0x80200000, --load-addr moves them)?",
        };
        match self.backend.get_reg(regs::PC) {
            Ok(pc) => Box::new(VcpuError::GuestTrap {
                vcpu: self.id,
                pc,
                hint,
                source,
            }),
            Err(_) => self.err()(source),
        }
    }

    fn err(&self) -> impl FnOnce(HypervisorError) -> Box<VcpuError> {
        let vcpu = self.id;
        move |source| Box::new(VcpuError::Hypervisor { vcpu, source })
    }

    fn get_reg(&self, id: u64) -> Result<u64> {
        self.backend.get_reg(id).map_err(self.err())
    }

    fn set_reg(&mut self, id: u64, value: u64) -> Result<()> {
        let err = self.err();
        self.backend.set_reg(id, value).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use vm_memory::{GuestAddress, GuestMemoryMmap};

    use super::*;
    use crate::console::BufferConsole;
    use crate::hypervisor::scripted::{Event, Record, ScriptedVcpu, ScriptedVm, Step};
    use crate::hypervisor::{SbiCall, VmBackend};
    use crate::sbi::{SbiContext, SBI_ERR_NOT_SUPPORTED};

    const CONFIG: VcpuConfig = VcpuConfig {
        hart_id: 3,
        dtb_addr: 0x8fe0_0000,
    };

    fn vcpu(initial: MpState, steps: Vec<Step>) -> (Vcpu<ScriptedVcpu>, Arc<Mutex<Record>>) {
        let vm = ScriptedVm::new()
            .with_reg(regs::CONFIG_ISA, 0x112d)
            .with_reg(regs::TIMER_FREQUENCY, 10_000_000)
            .with_reg(regs::isa_ext(8), 1)
            .with_reg(regs::isa_ext(20), 1)
            .script(3, initial, steps);
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0x8000_0000), 1 << 20)]).unwrap();
        let sbi = Sbi::new(SbiContext {
            memory,
            console: Arc::new(BufferConsole::default()),
        });
        let backend = vm.create_vcpu(3).unwrap();
        let record = vm.record(3).unwrap();
        let mut vcpu = Vcpu::new(3, CONFIG, backend, sbi).unwrap();
        vcpu.setup().unwrap();
        (vcpu, record)
    }

    fn exit(e: RawExit) -> Step {
        Step::Exit(e)
    }

    #[test]
    fn lifecycle_sets_boot_registers_and_reads_the_isa() {
        let (mut vcpu, record) = vcpu(MpState::Runnable, vec![]);
        vcpu.set_entry(0x8020_0000).unwrap();
        let regs_now = record.lock().unwrap().regs.clone();
        assert_eq!(regs_now[&regs::a(0)], 3);
        assert_eq!(regs_now[&regs::a(1)], 0x8fe0_0000);
        assert_eq!(regs_now[&regs::PC], 0x8020_0000);
        assert_eq!(
            regs_now[&regs::sbi_ext(regs::SBI_EXT_DBCN)],
            1,
            "DBCN enabled"
        );
        assert_eq!(vcpu.isa().isa_string(), "rv64imafdc_zicsr_sstc");
        assert_eq!(vcpu.isa().timebase_frequency, 10_000_000);
        assert!(!vcpu.is_stopped());
    }

    #[test]
    fn sstateen0_is_opened_only_where_the_vcpu_has_smstateen() {
        let (_, record) = vcpu(MpState::Runnable, vec![]);
        assert!(!record
            .lock()
            .unwrap()
            .regs
            .contains_key(&regs::CSR_SSTATEEN0));
        let vm = ScriptedVm::new()
            .with_reg(regs::CONFIG_ISA, 0x112d)
            .with_reg(regs::isa_ext(23), 1);
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0x8000_0000), 1 << 20)]).unwrap();
        let sbi = Sbi::new(SbiContext {
            memory,
            console: Arc::new(BufferConsole::default()),
        });
        let mut vcpu = Vcpu::new(0, CONFIG, vm.create_vcpu(0).unwrap(), sbi).unwrap();
        vcpu.setup().unwrap();
        let record = vm.record(0).unwrap();
        assert_eq!(record.lock().unwrap().regs[&regs::CSR_SSTATEEN0], u64::MAX);
    }

    #[test]
    fn a_reset_vcpu_is_as_new_hart_0_runs_the_others_wait() {
        for (hart, stopped) in [(0, false), (1, true)] {
            let vm = ScriptedVm::new().with_vcpu_reset();
            let memory =
                GuestMemoryMmap::from_ranges(&[(GuestAddress(0x8000_0000), 1 << 20)]).unwrap();
            let sbi = Sbi::new(SbiContext {
                memory,
                console: Arc::new(BufferConsole::default()),
            });
            let mut vcpu = Vcpu::new(hart, CONFIG, vm.create_vcpu(hart).unwrap(), sbi).unwrap();
            vcpu.setup().unwrap();
            vcpu.reset().unwrap();
            let record = vm.record(hart).unwrap();
            let events = record.lock().unwrap().events.clone();
            let at = events.iter().position(|e| *e == Event::Reset).unwrap();
            assert_eq!(
                events[at + 1..],
                [
                    Event::SetReg(regs::a(0), 3),
                    Event::SetReg(regs::a(1), 0x8fe0_0000)
                ]
            );
            assert_eq!(vcpu.is_stopped(), stopped);
        }
        // Without the hypervisor's reset, an error (the caller then makes a new VM).
        let (mut vcpu, _) = vcpu(MpState::Runnable, vec![]);
        assert!(vcpu.reset().is_err());
    }

    #[test]
    fn mmio_write_data_is_cut_to_its_width() {
        let exits = [1u8, 2, 4, 8].map(|len| {
            Step::Exit(RawExit::MmioWrite {
                addr: 0x1000_0000,
                len,
                data: [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88],
            })
        });
        let (mut vcpu, _) = vcpu(MpState::Runnable, exits.to_vec());
        for (width, data) in [
            (1, 0x11),
            (2, 0x2211),
            (4, 0x4433_2211),
            (8, 0x8877_6655_4433_2211),
        ] {
            assert_eq!(
                vcpu.run().unwrap(),
                ExitReason::MmioWrite {
                    addr: 0x1000_0000,
                    width,
                    data
                }
            );
        }
    }

    #[test]
    fn set_gpr_takes_a0_to_a7_only() {
        let (mut vcpu, record) = vcpu(MpState::Runnable, vec![]);
        vcpu.set_gpr(7, 0x77).unwrap();
        assert_eq!(record.lock().unwrap().regs[&regs::a(7)], 0x77);
        assert!(matches!(
            vcpu.set_gpr(8, 0).map_err(|e| *e),
            Err(VcpuError::BadGpr { index: 8, .. })
        ));
    }

    #[test]
    fn every_raw_exit_maps_to_its_reason() {
        let call = SbiCall {
            eid: 0x0848_5643,
            fid: 9,
            args: [1, 2, 3, 4, 5, 6],
        };
        let cases = [
            (
                RawExit::Sbi(call),
                ExitReason::Hypercall {
                    nr: 9,
                    args: [1, 2, 3, 4, 5, 6],
                },
            ),
            (
                RawExit::Sbi(SbiCall {
                    eid: 0x0900_0001,
                    fid: 0,
                    args: [0; 6],
                }),
                ExitReason::Nothing,
            ),
            (
                RawExit::MmioRead {
                    addr: 0x1000,
                    len: 4,
                },
                ExitReason::MmioRead {
                    addr: 0x1000,
                    width: 4,
                },
            ),
            (
                RawExit::MmioWrite {
                    addr: 0x1000,
                    len: 2,
                    data: [0x34, 0x12, 0xff, 0xff, 0, 0, 0, 0],
                },
                ExitReason::MmioWrite {
                    addr: 0x1000,
                    width: 2,
                    data: 0x1234,
                },
            ),
            (
                RawExit::SystemEvent { kind: 1, data: 0 },
                ExitReason::SystemDown { reason: 0 },
            ),
            (
                RawExit::SystemEvent { kind: 1, data: 1 },
                ExitReason::SystemDown { reason: 1 },
            ),
            (
                RawExit::SystemEvent { kind: 2, data: 0 },
                ExitReason::SystemReset { reason: 0 },
            ),
            (RawExit::SystemEvent { kind: 5, data: 0 }, ExitReason::Halt),
            (
                RawExit::SystemEvent { kind: 3, data: 0 },
                ExitReason::FailEntry { reason: 3 },
            ),
            (RawExit::Interrupted, ExitReason::ExternalInterrupt),
            (
                RawExit::MemoryFault {
                    gpa: 0x9000_0000,
                    size: 4096,
                },
                ExitReason::NestedPageFault {
                    addr: 0x9000_0000,
                    size: 4096,
                },
            ),
            (
                RawExit::FailEntry { reason: 7 },
                ExitReason::FailEntry { reason: 7 },
            ),
            (RawExit::InternalError, ExitReason::FailEntry { reason: 0 }),
            (RawExit::Other(99), ExitReason::FailEntry { reason: 99 }),
        ];
        let (mut vcpu, _) = vcpu(
            MpState::Runnable,
            cases.iter().map(|(raw, _)| exit(*raw)).collect(),
        );
        for (raw, want) in cases {
            assert_eq!(vcpu.run().unwrap(), want, "{raw:?}");
        }
    }

    #[test]
    fn sbi_answers_reach_the_return_registers() {
        let hvc = SbiCall {
            eid: 0x0848_5643,
            fid: 0,
            args: [0; 6],
        };
        let unknown = SbiCall {
            eid: 0x0800_0000,
            fid: 0,
            args: [0; 6],
        };
        let (mut vcpu, record) = vcpu(
            MpState::Runnable,
            vec![exit(RawExit::Sbi(unknown)), exit(RawExit::Sbi(hvc))],
        );
        assert_eq!(vcpu.run().unwrap(), ExitReason::Nothing);
        assert_eq!(
            vcpu.run().unwrap(),
            ExitReason::Hypercall {
                nr: 0,
                args: [0; 6]
            }
        );
        vcpu.set_gpr(0, 0).unwrap();
        vcpu.set_gpr(1, 42).unwrap();
        let events = record.lock().unwrap().events.clone();
        let returns: Vec<_> = events
            .iter()
            .filter(|e| matches!(e, Event::SbiReturn(..)))
            .cloned()
            .collect();
        assert_eq!(
            returns,
            vec![
                Event::SbiReturn(0, SBI_ERR_NOT_SUPPORTED as u64),
                Event::SbiReturn(1, 0),
                Event::SbiReturn(0, 0),
                Event::SbiReturn(1, 42)
            ]
        );
    }

    #[test]
    fn mmio_reads_complete_with_exactly_width_bytes() {
        let (mut vcpu, record) = vcpu(
            MpState::Runnable,
            vec![exit(RawExit::MmioRead { addr: 0x10, len: 2 })],
        );
        vcpu.run().unwrap();
        vcpu.complete_mmio_read(0xaabb_ccdd);
        assert!(record
            .lock()
            .unwrap()
            .events
            .contains(&Event::MmioData(vec![0xdd, 0xcc])));
    }

    #[test]
    fn odd_mmio_widths_are_errors() {
        let (mut vcpu, _) = vcpu(
            MpState::Runnable,
            vec![exit(RawExit::MmioRead { addr: 0x10, len: 3 })],
        );
        assert!(matches!(
            vcpu.run().map_err(|e| *e),
            Err(VcpuError::BadMmioWidth { width: 3, .. })
        ));
    }

    #[test]
    fn stopped_vcpus_surface_cpu_up_and_cpu_down() {
        let mmio = RawExit::MmioRead { addr: 0x10, len: 4 };
        let (mut vcpu, record) = vcpu(
            MpState::Stopped,
            vec![
                exit(RawExit::Interrupted),
                exit(mmio),
                exit(RawExit::Interrupted),
                exit(RawExit::Interrupted),
            ],
        );
        let runs = |r: &Arc<Mutex<Record>>| {
            r.lock()
                .unwrap()
                .events
                .iter()
                .filter(|e| **e == Event::Run)
                .count()
        };
        assert!(vcpu.is_stopped());
        // Stopped: it waits in KVM_RUN; a kick while still stopped is nothing to report.
        assert_eq!(vcpu.run().unwrap(), ExitReason::Nothing);
        assert!(vcpu.is_stopped());
        assert_eq!(runs(&record), 1);
        // Another hart's HSM hart_start: the thread comes back with the hart's first exit,
        // reported after the `CpuUp`, without another KVM_RUN.
        vcpu.backend.force_mp_state(MpState::Runnable);
        assert_eq!(
            vcpu.run().unwrap(),
            ExitReason::CpuUp {
                target_cpu: 3,
                entry: None,
                arg: None
            }
        );
        assert!(!vcpu.is_stopped());
        assert_eq!(
            vcpu.run().unwrap(),
            ExitReason::MmioRead {
                addr: 0x10,
                width: 4
            }
        );
        assert_eq!(runs(&record), 2);
        // A kick on the running hart is an external interrupt.
        assert_eq!(vcpu.run().unwrap(), ExitReason::ExternalInterrupt);
        // HSM hart_stop parks it in KVM_RUN; a kick returns EINTR and mp_state says STOPPED.
        vcpu.backend.force_mp_state(MpState::Stopped);
        assert_eq!(vcpu.run().unwrap(), ExitReason::CpuDown);
        assert!(vcpu.is_stopped());
    }

    #[test]
    fn a_kick_on_a_running_vcpu_is_an_external_interrupt() {
        let (mut vcpu, _) = vcpu(MpState::Runnable, vec![exit(RawExit::Interrupted)]);
        assert_eq!(vcpu.run().unwrap(), ExitReason::ExternalInterrupt);
        assert!(!vcpu.is_stopped());
    }
}

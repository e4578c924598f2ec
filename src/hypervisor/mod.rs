//! The seam between rvvmm and the hypervisor.
//!
//! Everything above this module (the vCPU lifecycle, exit decoding, SBI and MMIO dispatch,
//! devices, the VMM) talks to two small traits, [`VmBackend`] and [`VcpuBackend`]. On a riscv64
//! host they are implemented by `kvm` (built for riscv64 only), the only code in rvvmm that
//! issues KVM ioctls. On every host they are also implemented by [`scripted`], which replays a
//! list of exits so the rest of rvvmm can be unit-tested on x86_64.
//!
//! A backend reports each exit as a [`RawExit`]: the KVM exit, decoded and copied out of the
//! shared `kvm_run` page, with no borrow on the vCPU. The mapping from `RawExit` to the public
//! taxonomy ([`crate::vcpu::ExitReason`]) is pure and lives above this seam.

#[cfg(target_arch = "riscv64")]
pub mod kvm;
/// The test double (and, where there is no KVM to run on, the type `rvvmm` names for a VM it
/// cannot make).
#[cfg(any(test, feature = "testing", not(target_arch = "riscv64")))]
pub mod scripted;
pub mod uapi;

use vm_memory::GuestMemoryMmap;

/// Errors of the hypervisor layer.
#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    /// /dev/kvm is missing or cannot be opened.
    #[error("cannot open /dev/kvm: {0} (rvvmm needs a riscv64 Linux host with the H extension and kvm.ko loaded)")]
    OpenKvm(#[source] std::io::Error),
    /// The host's KVM lacks something rvvmm needs.
    #[error("KVM on this host lacks {0}")]
    MissingCapability(&'static str),
    /// A KVM ioctl failed.
    #[error("KVM {op} failed: {source}")]
    Ioctl {
        /// What rvvmm was doing.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// This build of rvvmm has no KVM backend.
    #[error("rvvmm runs guests only on a riscv64 host with KVM; this build is for {0}")]
    Unsupported(&'static str),
    /// A scripted vCPU ran out of exits (tests only).
    #[error("scripted vCPU {0} has no more exits")]
    ScriptEnded(u32),
}

/// Result type of the hypervisor layer.
pub type Result<T> = std::result::Result<T, HypervisorError>;

/// An SBI call that KVM forwarded to user space (`KVM_EXIT_RISCV_SBI`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SbiCall {
    /// Extension ID (guest a7).
    pub eid: u64,
    /// Function ID (guest a6).
    pub fid: u64,
    /// Arguments (guest a0..a5).
    pub args: [u64; 6],
}

/// A KVM exit, decoded and copied out of `kvm_run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawExit {
    /// `KVM_EXIT_RISCV_SBI`: an SBI call for user space. Answer with [`VcpuBackend::set_sbi_return`].
    Sbi(SbiCall),
    /// `KVM_EXIT_MMIO`, read of `len` bytes. Answer with [`VcpuBackend::set_mmio_read_data`].
    MmioRead {
        /// Guest-physical address.
        addr: u64,
        /// Access width in bytes (1, 2, 4 or 8).
        len: u8,
    },
    /// `KVM_EXIT_MMIO`, write of `len` bytes (little-endian in `data`).
    MmioWrite {
        /// Guest-physical address.
        addr: u64,
        /// The bytes written; only the first `len` count.
        data: [u8; 8],
        /// Access width in bytes (1, 2, 4 or 8).
        len: u8,
    },
    /// `KVM_EXIT_SYSTEM_EVENT` with its type and first data word (the SRST reason).
    SystemEvent {
        /// `KVM_SYSTEM_EVENT_*`.
        kind: u32,
        /// `data[0]` when the kernel gave one, else 0.
        data: u64,
    },
    /// `KVM_RUN` returned `EINTR` (`KVM_EXIT_INTR`): a signal kicked the vCPU thread.
    Interrupted,
    /// `KVM_EXIT_MEMORY_FAULT`: the guest touched memory KVM could not back.
    MemoryFault {
        /// Guest-physical address.
        gpa: u64,
        /// Size of the faulting range.
        size: u64,
    },
    /// `KVM_EXIT_FAIL_ENTRY`: KVM could not enter the guest.
    FailEntry {
        /// `hardware_entry_failure_reason`.
        reason: u64,
    },
    /// `KVM_EXIT_INTERNAL_ERROR`.
    InternalError,
    /// Any other exit reason.
    Other(u32),
}

/// The multiprocessor state of a vCPU (RISC-V KVM knows only these two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MpState {
    /// The vCPU runs (or waits in WFI) when `KVM_RUN` is called.
    Runnable,
    /// The vCPU is powered off (secondary harts at creation, or after SBI HSM hart_stop).
    Stopped,
}

/// Where the in-kernel AIA goes and how many wired sources it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AiaConfig {
    /// Wired interrupt sources of the APLIC (1..=num_sources).
    pub num_sources: u32,
    /// Guest-physical address of the APLIC.
    pub aplic_addr: u64,
    /// Guest-physical address of each hart's IMSIC interrupt file.
    pub imsic_addrs: Vec<u64>,
}

/// What an in-kernel AIA has, read back from the hypervisor: what the guest is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AiaGeometry {
    /// Interrupt identities per IMSIC file.
    pub ids: u32,
    /// Wired sources of the APLIC.
    pub sources: u32,
}

/// A VM: the memory map and the factory of vCPUs.
pub trait VmBackend: Send + Sync {
    /// The vCPU type this VM creates.
    type Vcpu: VcpuBackend;

    /// Registers every region of `memory` as guest RAM. The caller keeps `memory` alive for as
    /// long as this VM exists.
    fn map_memory(&self, memory: &GuestMemoryMmap) -> Result<()>;

    /// Creates vCPU number `index` (KVM's vcpu_id, equal to the hart ID in rvvmm).
    fn create_vcpu(&self, index: u32) -> Result<Self::Vcpu>;

    /// Whether the hypervisor can emulate an AIA (APLIC + IMSICs) in the kernel.
    fn has_in_kernel_aia(&self) -> bool;

    /// Creates the in-kernel AIA; call once every vCPU exists. Returns what it has, as the
    /// hypervisor reports it once initialised.
    fn create_aia(&self, config: &AiaConfig) -> Result<AiaGeometry>;

    /// Sets wired interrupt `irq` of the in-kernel irqchip to `level` (KVM_IRQ_LINE).
    fn set_irq_line(&self, irq: u32, level: bool) -> Result<()>;

    /// Makes a guest 32-bit write of `data` to `addr` signal `evt` in the kernel, with no exit
    /// (KVM_IOEVENTFD). Without it the write exits as MMIO and the device signals `evt` itself.
    fn register_ioevent(
        &self,
        evt: &vmm_sys_util::eventfd::EventFd,
        addr: u64,
        data: u32,
    ) -> Result<()>;
    /// Undoes [`VmBackend::register_ioevent`] (the same `evt`, `addr` and `data`): a reboot
    /// that keeps the VM builds new devices, whose notify addresses are the old ones.
    fn unregister_ioevent(
        &self,
        evt: &vmm_sys_util::eventfd::EventFd,
        addr: u64,
        data: u32,
    ) -> Result<()>;
    /// Lets [`VcpuBackend::reset`] reset this VM's vCPUs in place, where the hypervisor can
    /// (KVM: `KVM_CAP_RISCV_MP_STATE_RESET`, Linux 6.16). Returns whether it can; call before
    /// any vCPU runs.
    fn enable_vcpu_reset(&self) -> bool {
        false
    }
    /// Reads a register of the in-kernel AIA through its device attributes: group
    /// `KVM_DEV_RISCV_AIA_GRP_APLIC` (3) takes an APLIC register offset and holds a u32, group
    /// `KVM_DEV_RISCV_AIA_GRP_IMSIC` (4) takes `vcpu << 12 | iselect` and holds a u64.
    fn aia_attr(&self, group: u32, attr: u64) -> Result<u64>;
    /// Writes a register of the in-kernel AIA (see [`VmBackend::aia_attr`]).
    fn set_aia_attr(&self, group: u32, attr: u64, value: u64) -> Result<()>;
}

/// A vCPU's supervisor external interrupt line, usable from any thread while the vCPU runs
/// (KVM_INTERRUPT is an asynchronous vCPU ioctl).
pub trait InterruptLine: Send + Sync {
    /// Raises (`true`) or lowers (`false`) the line.
    fn set_level(&self, level: bool) -> Result<()>;
}

/// A vCPU as the hypervisor sees it: registers by ONE_REG ID, runs, and completes exits.
pub trait VcpuBackend: Send + 'static {
    /// The vCPU's external interrupt line, for a user-space interrupt controller.
    fn interrupt_line(&self) -> Result<std::sync::Arc<dyn InterruptLine>>;
    /// Reads a 64-bit register by its ONE_REG ID ([`crate::arch::riscv64::regs`]).
    fn get_reg(&self, id: u64) -> Result<u64>;
    /// Writes a 64-bit register by its ONE_REG ID.
    fn set_reg(&mut self, id: u64, value: u64) -> Result<()>;
    /// Enters the guest until the next exit.
    fn run(&mut self) -> Result<RawExit>;
    /// Sets `ret[index]` (0: a0, the SBI error; 1: a1, the value) of the pending SBI exit.
    fn set_sbi_return(&mut self, index: usize, value: u64);
    /// Fills the data of the pending MMIO read exit: the guest gets the first `len` bytes
    /// (whole arrays, so no variable-length copy on the exit path).
    fn set_mmio_read_data(&mut self, data: [u8; 8], len: u8);
    /// The vCPU's multiprocessor state.
    fn mp_state(&mut self) -> Result<MpState>;
    /// Lets KVM apply the answer to the last exit (an MMIO read's data, an SBI call's return
    /// values and pc step) without entering the guest: `KVM_RUN` with `immediate_exit` set.
    /// Before a snapshot, so that the registers saved are those after the answered exit.
    fn complete_pending(&mut self) -> Result<()> {
        Err(HypervisorError::MissingCapability(
            "snapshots in this backend",
        ))
    }
    /// Sets the vCPU's multiprocessor state (a restore).
    fn set_mp_state(&mut self, _state: MpState) -> Result<()> {
        Err(HypervisorError::MissingCapability(
            "snapshots in this backend",
        ))
    }
    /// Resets the vCPU to its state at creation (registers, CSRs, timer, FP/vector state, its
    /// IMSIC file), keeping its mp_state and the ISA and SBI extensions it was set up with:
    /// `KVM_SET_MP_STATE` with `KVM_MP_STATE_INIT_RECEIVED`, on a VM where
    /// [`VmBackend::enable_vcpu_reset`] said yes.
    fn reset(&mut self) -> Result<()> {
        Err(HypervisorError::MissingCapability(
            "KVM_CAP_RISCV_MP_STATE_RESET (Linux 6.16)",
        ))
    }
    /// Every register ID the vCPU has (`KVM_GET_REG_LIST`): what a snapshot saves.
    fn reg_list(&self) -> Result<Vec<u64>> {
        Err(HypervisorError::MissingCapability(
            "snapshots in this backend",
        ))
    }
    /// Reads a register of any size (the size is in its ID: `1 << ((id >> 52) & 0xf)` bytes).
    fn get_reg_bytes(&self, _id: u64) -> Result<Vec<u8>> {
        Err(HypervisorError::MissingCapability(
            "snapshots in this backend",
        ))
    }
    /// Writes a register of any size.
    fn set_reg_bytes(&mut self, _id: u64, _bytes: &[u8]) -> Result<()> {
        Err(HypervisorError::MissingCapability(
            "snapshots in this backend",
        ))
    }
}

/// The size in bytes of the register `id` names (`KVM_REG_SIZE`).
pub fn reg_size(id: u64) -> usize {
    1 << ((id >> 52) & 0xf)
}

//! The exit-reason taxonomy: what [`super::Vcpu::run`] returns.
//!
//! It mirrors the `riscv_vcpu` library of the ArceOS hypervisor, a bare-metal RISC-V vCPU that
//! sees every trap itself. rvvmm runs on KVM, which handles many of those traps in the kernel, so
//! each variant says where it comes from on KVM 6.12:
//!
//! | variant            | KVM source                                                                  |
//! |--------------------|-----------------------------------------------------------------------------|
//! | `Nothing`          | a forwarded SBI call that rvvmm answered itself: DBCN (console), and unknown |
//! |                    | experimental/vendor EIDs (answered `SBI_ERR_NOT_SUPPORTED`); also a stopped  |
//! |                    | hart's `KVM_RUN` that a kick ended while it stayed stopped                  |
//! | `Hypercall`        | `KVM_EXIT_RISCV_SBI` with EID 0x0848_5643 (rvvmm's hypercall ABI); FID = nr  |
//! | `MmioRead/Write`   | `KVM_EXIT_MMIO`: a guest load/store to a guest-physical address with no     |
//! |                    | memory slot (KVM's stage-2 fault handler forwards it)                       |
//! | `ExternalInterrupt`| `KVM_RUN` returned `EINTR` (`KVM_EXIT_INTR`): a host signal kicked the vCPU  |
//! | `NestedPageFault`  | `KVM_EXIT_MEMORY_FAULT` (KVM could not back a guest page)                   |
//! | `Halt`             | SBI SUSP system_suspend, forwarded as `KVM_EXIT_RISCV_SBI` (Linux 6.14+, once |
//! |                    | rvvmm enables it; KVM has checked it and queued the vCPU's reset to the     |
//! |                    | resume address), or `KVM_EXIT_SYSTEM_EVENT` / `SUSPEND`. The vCPU thread    |
//! |                    | sleeps until a wake-up, then runs on. WFI and HSM hart_suspend are handled  |
//! |                    | in the kernel, which sleeps the vCPU inside `KVM_RUN`; no exit reaches user |
//! |                    | space, so rvvmm cannot surface them                                         |
//! | `CpuUp`            | HSM hart_start is handled in the kernel. A stopped hart's thread waits in    |
//! |                    | `KVM_RUN`, where KVM sleeps it (no cost); once another hart starts it, it    |
//! |                    | runs guest code at once, and rvvmm reports `CpuUp` when that `KVM_RUN` first |
//! |                    | returns, before the exit that brought it back (handed out by the next run).  |
//! |                    | So `CpuUp` lags the start by the started hart's first exit to user space:    |
//! |                    | the hart itself is not delayed. Start address and opaque argument stay in   |
//! |                    | KVM's reset context, which no ioctl reads: `entry` and `arg` are `None`      |
//! | `CpuDown`          | HSM hart_stop is handled in the kernel, which parks the vCPU in `KVM_RUN`.  |
//! |                    | rvvmm sees it when a kick returns `EINTR` and mp_state reads STOPPED (a hart |
//! |                    | Linux takes offline is only reported once its thread is kicked)             |
//! | `SystemDown`       | `KVM_EXIT_SYSTEM_EVENT` / `SHUTDOWN` (SBI SRST shutdown); `reason` is the SRST|
//! |                    | reason (0 none, 1 system failure)                                           |
//! | `SystemReset`      | `KVM_EXIT_SYSTEM_EVENT` / `RESET` (SRST cold or warm reboot); not in        |
//! |                    | riscv_vcpu, which has no reboot                                             |
//! | `FailEntry`        | `KVM_EXIT_FAIL_ENTRY`, `KVM_EXIT_INTERNAL_ERROR`, or any exit reason rvvmm   |
//! |                    | does not know                                                               |

/// One exit of a vCPU, as the VMM's loop sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// Handled inside `run`; run again.
    Nothing,
    /// A guest hypercall: answer with `set_gpr(0, error)` and `set_gpr(1, value)`.
    Hypercall {
        /// Hypercall number (the SBI FID).
        nr: u64,
        /// a0..a5.
        args: [u64; 6],
    },
    /// A guest load from an unmapped address: answer with `complete_mmio_read`.
    MmioRead {
        /// Guest-physical address.
        addr: u64,
        /// Bytes: 1, 2, 4 or 8.
        width: u8,
    },
    /// A guest store to an unmapped address.
    MmioWrite {
        /// Guest-physical address.
        addr: u64,
        /// Bytes: 1, 2, 4 or 8.
        width: u8,
        /// The value stored, zero-extended.
        data: u64,
    },
    /// The host interrupted the vCPU (a signal).
    ExternalInterrupt,
    /// The guest touched memory that could not be provided.
    NestedPageFault {
        /// Guest-physical address.
        addr: u64,
        /// Size of the range.
        size: u64,
    },
    /// The guest asked to suspend the system.
    Halt,
    /// This vCPU was started by another hart (SBI HSM hart_start).
    CpuUp {
        /// The hart that came up (this vCPU).
        target_cpu: u64,
        /// Start address, when the hypervisor reveals it (KVM does not).
        entry: Option<u64>,
        /// Opaque argument, when the hypervisor reveals it (KVM does not).
        arg: Option<u64>,
    },
    /// This vCPU was stopped (SBI HSM hart_stop).
    CpuDown,
    /// The guest powered the system off (SBI SRST shutdown).
    SystemDown {
        /// SRST reset reason: 0 none, 1 system failure, others vendor-defined.
        reason: u64,
    },
    /// The guest rebooted the system (SBI SRST cold or warm reboot).
    SystemReset {
        /// SRST reset reason.
        reason: u64,
    },
    /// The hypervisor could not enter or continue the guest.
    FailEntry {
        /// The hypervisor's reason code (for an unknown KVM exit: the exit reason number).
        reason: u64,
    },
}

/// SRST reset reason "system failure".
pub const SRST_REASON_SYSTEM_FAILURE: u64 = 1;

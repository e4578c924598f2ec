//! SBI System Suspend (SUSP, EID 0x53555350): the guest suspends the whole system to RAM.
//!
//! KVM (Linux 6.14 and later) checks the call itself: sleep type SUSPEND_TO_RAM, a resume
//! address inside guest memory, a caller in S-mode, every other hart stopped. Only a call that
//! passes reaches user space, as a forwarded SBI call (`KVM_EXIT_RISCV_SBI`), and KVM has
//! already queued a reset of the calling vCPU to the resume address with a0 = hart ID and
//! a1 = the opaque value, applied at its next `KVM_RUN`. So the VMM's part is the suspend
//! itself: keep the system asleep until a wake-up event, then run the vCPU again. KVM keeps
//! the extension off until the VMM turns it on ([`crate::arch::riscv64::regs::SBI_EXT_SUSP`]);
//! on a kernel without it the register is unknown and the guest sees the extension absent.

use super::{SbiContext, SbiOutcome, SBI_ERR_NOT_SUPPORTED};
use crate::hypervisor::SbiCall;

/// The extension ID ("SUSP").
pub const EID: u64 = 0x5355_5350;
/// `sbi_system_suspend`.
pub const FID_SYSTEM_SUSPEND: u64 = 0;

/// A forwarded SUSP call: `system_suspend` suspends; no other function reaches user space.
pub fn handle(_: &SbiContext, call: &SbiCall) -> SbiOutcome {
    match call.fid {
        FID_SYSTEM_SUSPEND => SbiOutcome::Suspend,
        _ => SbiOutcome::error(SBI_ERR_NOT_SUPPORTED),
    }
}

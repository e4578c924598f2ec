//! rvvmm's hypercall ABI.
//!
//! ArceOS's riscv_vcpu uses EID 0x485643 ("HVC"). KVM 6.12 answers that EID itself
//! (`SBI_ERR_NOT_SUPPORTED`) and never forwards it, so rvvmm places the same letters in the SBI
//! experimental range, which KVM forwards: EID 0x0848_5643. FID (a6) is the hypercall number,
//! a0..a5 its arguments; the embedder answers a0 = SBI error, a1 = value, or stops the VM.

use std::ops::ControlFlow;

use super::{SbiContext, SbiOutcome, SBI_ERR_NOT_SUPPORTED};
use crate::control::GuestStop;
use crate::hypervisor::SbiCall;

/// The answer to a hypercall: `Continue((error, value))` returns to the guest with a0 = SBI
/// error and a1 = value; `Break(stop)` stops the VM, and the calling vCPU never re-enters
/// the guest.
pub type Answer = ControlFlow<GuestStop, (i64, u64)>;

/// The hypercall extension ID.
pub const EID: u64 = 0x0848_5643;
/// Hypercall 0: returns the ABI version in a1.
pub const NR_ABI_VERSION: u64 = 0;
/// The ABI version rvvmm implements.
pub const ABI_VERSION: u64 = 1;

/// Hands the call to the embedder.
#[inline(always)]
pub fn handle(_ctx: &SbiContext, call: &SbiCall) -> SbiOutcome {
    SbiOutcome::Hypercall {
        nr: call.fid,
        args: call.args,
    }
}

/// The answers of the `rvvmm` command. The vCPU loop logs each call at debug level, from a
/// level it read once, so that an answer reads no shared static.
pub fn answer(nr: u64, _args: &[u64; 6]) -> Answer {
    match nr {
        NR_ABI_VERSION => Answer::Continue((0, ABI_VERSION)),
        _ => Answer::Continue((SBI_ERR_NOT_SUPPORTED, 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{call, context};
    use super::*;

    #[test]
    fn hypercalls_reach_the_embedder_with_all_args() {
        let ctx = context(Default::default());
        let args = [1, 2, 3, 4, 5, u64::MAX];
        assert_eq!(
            handle(&ctx, &call(EID, 7, &args)),
            SbiOutcome::Hypercall { nr: 7, args }
        );
        assert_eq!(answer(0, &args), Answer::Continue((0, ABI_VERSION)));
        assert_eq!(
            answer(1, &args),
            Answer::Continue((SBI_ERR_NOT_SUPPORTED, 0))
        );
    }
}

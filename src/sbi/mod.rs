//! SBI calls that KVM forwards to user space, dispatched by extension ID.
//!
//! KVM 6.12 handles BASE, TIME, IPI, RFENCE, HSM, SRST, PMU in the kernel. It forwards DBCN
//! (once rvvmm enables it), SUSP (6.14 and later, once enabled), the experimental range (0x0800_0000..=0x08FF_FFFF) and the vendor
//! range (0x0900_0000..=0x09FF_FFFF). [`HANDLERS`] lists the extensions this module answers, one
//! entry each; [`Sbi::dispatch`] matches the same EIDs directly (a test keeps the two equal);
//! anything else gets `SBI_ERR_NOT_SUPPORTED`.

pub mod dbcn;
pub mod hypercall;
pub mod susp;

use std::collections::HashSet;
use std::sync::Arc;

use vm_memory::GuestMemoryMmap;

use crate::console::Console;
use crate::hypervisor::SbiCall;

/// `SBI_SUCCESS`.
pub const SBI_SUCCESS: i64 = 0;
/// `SBI_ERR_FAILED`.
pub const SBI_ERR_FAILED: i64 = -1;
/// `SBI_ERR_NOT_SUPPORTED`.
pub const SBI_ERR_NOT_SUPPORTED: i64 = -2;
/// `SBI_ERR_INVALID_PARAM`.
pub const SBI_ERR_INVALID_PARAM: i64 = -3;

/// What the vCPU does with a forwarded call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SbiOutcome {
    /// Answered here: a0 = error, a1 = value.
    Return {
        /// SBI error code.
        error: i64,
        /// Return value.
        value: u64,
    },
    /// A hypercall for the embedder ([`crate::vcpu::ExitReason::Hypercall`]).
    Hypercall {
        /// Hypercall number.
        nr: u64,
        /// a0..a5.
        args: [u64; 6],
    },
    /// The guest suspends the system ([`susp`]; [`crate::vcpu::ExitReason::Halt`]): no
    /// return values, KVM resets the vCPU to the resume address.
    Suspend,
}

impl SbiOutcome {
    /// A plain error return.
    pub const fn error(error: i64) -> Self {
        SbiOutcome::Return { error, value: 0 }
    }

    /// A successful return of `value`.
    pub const fn ok(value: u64) -> Self {
        SbiOutcome::Return {
            error: SBI_SUCCESS,
            value,
        }
    }
}

/// What SBI handlers may touch: guest RAM and the host console.
pub struct SbiContext {
    /// Guest RAM, for buffers passed by physical address.
    pub memory: GuestMemoryMmap,
    /// The host console.
    pub console: Arc<dyn Console>,
}

type Handler = fn(&SbiContext, &SbiCall) -> SbiOutcome;

/// Extension ID, name, handler.
pub const HANDLERS: &[(u64, &str, Handler)] = &[
    (dbcn::EID, "DBCN", dbcn::handle),
    (hypercall::EID, "rvvmm hypercall", hypercall::handle),
    (susp::EID, "SUSP", susp::handle),
];

/// How many distinct unknown EIDs are remembered for "logged once" (bounded: a guest cannot
/// grow rvvmm's memory by calling many EIDs).
const MAX_LOGGED_EIDS: usize = 64;

/// The per-vCPU SBI dispatcher.
pub struct Sbi {
    ctx: SbiContext,
    logged: HashSet<u64>,
}

impl Sbi {
    /// A dispatcher over `ctx`.
    pub fn new(ctx: SbiContext) -> Self {
        Sbi {
            ctx,
            logged: HashSet::new(),
        }
    }

    /// Answers one forwarded call. Always inlined into the vCPU loop (seen in the riscv64
    /// build: once the loop grew, LLVM called it out of line, one more page on every SBI exit).
    #[inline(always)]
    pub fn dispatch(&mut self, call: &SbiCall) -> SbiOutcome {
        // A match, not a walk of HANDLERS through function pointers: the handlers inline into
        // the vCPU loop (no indirect call and no table read on the exit path; in the nested lab
        // every extra page an exit touches costs ~0.35 us, as QEMU refills its software TLB
        // after each KVM_RUN). A test checks the match against HANDLERS.
        match call.eid {
            dbcn::EID => return dbcn::handle(&self.ctx, call),
            hypercall::EID => return hypercall::handle(&self.ctx, call),
            susp::EID => return susp::handle(&self.ctx, call),
            _ => {}
        }
        self.unsupported(call)
    }

    /// An extension rvvmm does not answer: logged once per EID (a bounded set).
    #[cold]
    #[inline(never)]
    fn unsupported(&mut self, call: &SbiCall) -> SbiOutcome {
        if self.logged.len() < MAX_LOGGED_EIDS && self.logged.insert(call.eid) {
            log::warn!(
                "guest called unsupported SBI extension {:#x} (fid {}); answering SBI_ERR_NOT_SUPPORTED",
                call.eid,
                call.fid
            );
        }
        SbiOutcome::error(SBI_ERR_NOT_SUPPORTED)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::console::BufferConsole;
    use vm_memory::GuestAddress;

    pub fn context(console: Arc<BufferConsole>) -> SbiContext {
        let memory =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0x8000_0000), 0x10_0000)]).unwrap();
        SbiContext { memory, console }
    }

    pub fn call(eid: u64, fid: u64, args: &[u64]) -> SbiCall {
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        SbiCall { eid, fid, args: a }
    }

    #[test]
    fn dispatch_answers_every_extension_of_the_table() {
        let mut sbi = Sbi::new(context(Arc::default()));
        for (eid, name, handler) in HANDLERS {
            // FID 2: DBCN's write_byte, hypercall number 2; FID 0: SUSP's system_suspend.
            let fid = if *eid == susp::EID { 0 } else { 2 };
            let c = call(*eid, fid, &[u64::from(b'x'), 0]);
            assert_eq!(sbi.dispatch(&c), handler(&sbi.ctx, &c), "{name}");
            assert_ne!(
                sbi.dispatch(&c),
                SbiOutcome::error(SBI_ERR_NOT_SUPPORTED),
                "{name} reached its handler"
            );
        }
    }

    #[test]
    fn unknown_extensions_are_not_supported() {
        let mut sbi = Sbi::new(context(Arc::default()));
        for eid in [0x0800_0000, 0x0900_1234, 0x10, 0x4442_4300] {
            assert_eq!(
                sbi.dispatch(&call(eid, 0, &[])),
                SbiOutcome::error(SBI_ERR_NOT_SUPPORTED)
            );
        }
        // Thousands of distinct EIDs: the log memory stays bounded.
        for eid in 0..10_000 {
            sbi.dispatch(&call(0x0900_0000 + eid, 0, &[]));
        }
        assert!(sbi.logged.len() <= MAX_LOGGED_EIDS);
    }
}

//! SBI Debug Console extension (DBCN, EID 0x4442434E), SBI spec v2.0 chapter 12.
//!
//! KVM forwards DBCN to user space once rvvmm enables it through ONE_REG (off by default).
//! Guest buffers are passed by physical address; each is checked to lie wholly inside guest RAM,
//! and one call moves at most [`MAX_CHUNK`] bytes (the spec lets the implementation move fewer
//! bytes than asked and report how many), so a huge `num_bytes` never makes a huge allocation.

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::{SbiContext, SbiOutcome, SBI_ERR_FAILED, SBI_ERR_INVALID_PARAM, SBI_ERR_NOT_SUPPORTED};
use crate::hypervisor::SbiCall;

/// The DBCN extension ID ("DBCN").
pub const EID: u64 = 0x4442_434E;
/// `sbi_debug_console_write(num_bytes, base_addr_lo, base_addr_hi)`.
pub const FID_CONSOLE_WRITE: u64 = 0;
/// `sbi_debug_console_read(num_bytes, base_addr_lo, base_addr_hi)`.
pub const FID_CONSOLE_READ: u64 = 1;
/// `sbi_debug_console_write_byte(byte)`.
pub const FID_CONSOLE_WRITE_BYTE: u64 = 2;
/// The most bytes one call moves.
pub const MAX_CHUNK: usize = 4096;

/// Answers one DBCN call. Inlined into the vCPU loop (see `Sbi::dispatch`).
#[inline(always)]
pub fn handle(ctx: &SbiContext, call: &SbiCall) -> SbiOutcome {
    match call.fid {
        FID_CONSOLE_WRITE => console_write(ctx, call.args),
        FID_CONSOLE_READ => console_read(ctx, call.args),
        FID_CONSOLE_WRITE_BYTE => {
            ctx.console.write(&[call.args[0] as u8]);
            SbiOutcome::ok(0)
        }
        _ => SbiOutcome::error(SBI_ERR_NOT_SUPPORTED),
    }
}

/// The guest buffer of a write or read: (address, bytes to move now), or the SBI error.
fn guest_buffer(ctx: &SbiContext, args: [u64; 6]) -> Result<(GuestAddress, usize), i64> {
    let [num_bytes, lo, hi, ..] = args;
    // On RV64 the address is a0 = base_addr_lo alone; a set base_addr_hi means an address
    // at or above 2^64, which no guest RAM has.
    if hi != 0 {
        return Err(SBI_ERR_INVALID_PARAM);
    }
    let base = GuestAddress(lo);
    let whole = usize::try_from(num_bytes).map_err(|_| SBI_ERR_INVALID_PARAM)?;
    if !ctx.memory.check_range(base, whole) {
        return Err(SBI_ERR_INVALID_PARAM);
    }
    Ok((base, whole.min(MAX_CHUNK)))
}

/// Runs `io(base, len)` on the guest buffer of a write or read: zero bytes succeed at once
/// (whatever the address, as the spec says), a bad buffer is `SBI_ERR_INVALID_PARAM`, and
/// `io` returns the bytes moved or `None` on a guest memory error.
fn with_buffer<F>(ctx: &SbiContext, args: [u64; 6], io: F) -> SbiOutcome
where
    F: FnOnce(GuestAddress, usize) -> Option<usize>,
{
    if args[0] == 0 {
        return SbiOutcome::ok(0);
    }
    match guest_buffer(ctx, args) {
        Ok((base, len)) => match io(base, len) {
            Some(n) => SbiOutcome::ok(n as u64),
            None => SbiOutcome::error(SBI_ERR_FAILED),
        },
        Err(e) => SbiOutcome::error(e),
    }
}

fn console_write(ctx: &SbiContext, args: [u64; 6]) -> SbiOutcome {
    with_buffer(ctx, args, |base, len| {
        let mut buf = [0u8; MAX_CHUNK];
        ctx.memory.read_slice(&mut buf[..len], base).ok()?;
        ctx.console.write(&buf[..len]);
        Some(len)
    })
}

fn console_read(ctx: &SbiContext, args: [u64; 6]) -> SbiOutcome {
    with_buffer(ctx, args, |base, len| {
        let mut buf = [0u8; MAX_CHUNK];
        let n = ctx.console.read(&mut buf[..len]);
        ctx.memory.write_slice(&buf[..n], base).ok()?;
        Some(n)
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::tests::{call, context};
    use super::*;
    use crate::console::BufferConsole;

    const RAM: u64 = 0x8000_0000;
    const RAM_END: u64 = RAM + 0x10_0000;

    #[test]
    fn write_copies_guest_bytes_to_the_console() {
        let console = Arc::new(BufferConsole::default());
        let ctx = context(console.clone());
        ctx.memory
            .write_slice(b"hello", GuestAddress(RAM + 16))
            .unwrap();
        assert_eq!(
            handle(&ctx, &call(EID, 0, &[5, RAM + 16, 0])),
            SbiOutcome::ok(5)
        );
        assert_eq!(
            handle(&ctx, &call(EID, 2, &[b'!' as u64 | 0xff00])),
            SbiOutcome::ok(0)
        );
        assert_eq!(console.output_string(), "hello!");
    }

    #[test]
    fn write_rejects_buffers_outside_ram() {
        let console = Arc::new(BufferConsole::default());
        let ctx = context(console.clone());
        let bad = SbiOutcome::error(SBI_ERR_INVALID_PARAM);
        for args in [
            [4, 0x1000, 0],       // below RAM
            [4, RAM_END - 2, 0],  // straddles the end
            [4, RAM_END, 0],      // just past it
            [4, RAM, 1],          // base_addr_hi set
            [u64::MAX, RAM, 0],   // absurd length
            [4, u64::MAX - 1, 0], // wraps around
        ] {
            assert_eq!(handle(&ctx, &call(EID, 0, &args)), bad, "{args:x?}");
            assert_eq!(handle(&ctx, &call(EID, 1, &args)), bad, "{args:x?}");
        }
        assert!(console.output_string().is_empty());
    }

    #[test]
    fn zero_bytes_succeed_without_checking_the_address() {
        let ctx = context(Default::default());
        assert_eq!(handle(&ctx, &call(EID, 0, &[0, 0, 0])), SbiOutcome::ok(0));
        assert_eq!(handle(&ctx, &call(EID, 1, &[0, 0, 0])), SbiOutcome::ok(0));
    }

    #[test]
    fn huge_writes_are_moved_in_bounded_chunks() {
        let console = Arc::new(BufferConsole::default());
        let ctx = context(console.clone());
        assert_eq!(
            handle(&ctx, &call(EID, 0, &[0x10_0000, RAM, 0])),
            SbiOutcome::ok(MAX_CHUNK as u64)
        );
        assert_eq!(console.output.lock().unwrap().len(), MAX_CHUNK);
    }

    #[test]
    fn read_fills_guest_memory_and_never_blocks() {
        let console = Arc::new(BufferConsole::default());
        let ctx = context(console.clone());
        assert_eq!(handle(&ctx, &call(EID, 1, &[8, RAM, 0])), SbiOutcome::ok(0));
        console.input.lock().unwrap().extend(b"abc");
        assert_eq!(
            handle(&ctx, &call(EID, 1, &[8, RAM + 8, 0])),
            SbiOutcome::ok(3)
        );
        let mut got = [0u8; 3];
        ctx.memory
            .read_slice(&mut got, GuestAddress(RAM + 8))
            .unwrap();
        assert_eq!(&got, b"abc");
    }

    #[test]
    fn unknown_functions_are_not_supported() {
        let ctx = context(Default::default());
        assert_eq!(
            handle(&ctx, &call(EID, 3, &[])),
            SbiOutcome::error(SBI_ERR_NOT_SUPPORTED)
        );
    }
}

//! SBI calls KVM forwards to rvvmm, with any registers: DBCN (console write/read by guest
//! physical address and length, write byte), rvvmm's hypercall, and unknown extensions.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use rvvmm::console::BufferConsole;
use rvvmm::hypervisor::SbiCall;
use rvvmm::sbi::{Sbi, SbiContext};
use rvvmm_fuzz::{memory, Input, RAM_BASE};

const EIDS: [u64; 3] = [0x4442_434E, 0x0848_5643, 0x10];

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let console = Arc::new(BufferConsole::default());
    console.type_in(input.bytes(16));
    let mut sbi = Sbi::new(SbiContext {
        memory: memory(),
        console: console.clone(),
    });
    let mut calls = 0;
    while !input.done() && calls < 64 {
        calls += 1;
        let pick = input.u8();
        let eid = match EIDS.get(usize::from(pick & 3)) {
            Some(&eid) => eid,
            None => input.u64(),
        };
        let fid = u64::from(input.u8() & 7);
        let mut args = [0u64; 6];
        for (i, arg) in args.iter_mut().enumerate() {
            let v = input.u32();
            // Addresses near RAM are what the handlers check most; half the time the
            // argument is one, else the raw value.
            *arg = if i > 0 && pick & 0x80 != 0 {
                RAM_BASE.wrapping_add(u64::from(v & 0x1_ffff))
            } else {
                u64::from(v)
            };
        }
        let _ = sbi.dispatch(&SbiCall { eid, fid, args });
    }
    assert!(console.output.lock().unwrap().len() <= calls * 0x2_0000);
});

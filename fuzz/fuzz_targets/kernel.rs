//! A `--kernel` file: classified (Linux Image header, ELF, flat), placed for a RAM size, checked
//! against the room below the dtb, and loaded into guest RAM. Seeds: the Debian Image's header,
//! the lab's bare-metal ELF and flat guests.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use rvvmm::loader::Kernel;

fuzz_target!(|data: &[u8]| {
    // The loader reads files (bounded, regular files only): one per process, rewritten.
    let path = std::env::temp_dir().join(format!("rvvmm-fuzz-kernel-{}", std::process::id()));
    let Ok(mut file) = std::fs::File::create(&path) else {
        return;
    };
    if file.write_all(data).is_err() {
        return;
    }
    drop(file);
    let Ok(kernel) = Kernel::read(&path) else {
        return;
    };
    let _ = (kernel.load_addr(), kernel.entry(), kernel.footprint());
    let ram = u64::from(data.first().copied().unwrap_or(0)) << 20;
    let _ = kernel.check_fits(ram.max(4 << 20));
    let kernel = match data.get(1) {
        Some(b) if b & 1 == 1 => match kernel.at(0x8000_0000 + (u64::from(*b) << 12)) {
            Ok(k) => k,
            Err(_) => return,
        },
        _ => kernel,
    };
    if kernel.check_fits(rvvmm_fuzz::RAM_SIZE as u64).is_ok() {
        let _ = kernel.load(&rvvmm_fuzz::memory());
    }
});

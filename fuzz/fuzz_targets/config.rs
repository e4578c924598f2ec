//! What a user types or writes: the command line (split at NUL bytes into arguments, then the
//! VM description it makes, resolved) and a `--config` / `vm.create` JSON document. Seeds: the
//! README's examples.
#![no_main]

use clap::Parser;
use libfuzzer_sys::fuzz_target;
use rvvmm::config::cli::Args;
use rvvmm::config::{json, Source};

fuzz_target!(|data: &[u8]| {
    let (kind, rest) = data.split_first().unwrap_or((&0, &[]));
    if kind & 1 == 0 {
        if let Ok((config, _)) = json::parse(rest, Source::File) {
            if let Ok(resolved) = config.resolve() {
                let _ = serde_json::to_vec(&json::VmConfigJson::new(&config, &resolved));
            }
        }
        return;
    }
    let args = std::iter::once("rvvmm".to_string()).chain(
        rest.split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned()),
    );
    if let Ok(args) = Args::try_parse_from(args) {
        if let Ok(Some((config, _))) = args.vm_config() {
            let _ = config.resolve();
        }
    }
});

//! rvvmm's own tooling: the nested RISC-V KVM lab and the test entry point.
//!
//! ```text
//! cargo xtask test            x86 unit tests, then the lab in both irqchip modes
//! cargo xtask lab [--mode plic|aia|both] [--case NAME]...
//! cargo xtask demo            boot L1 once and run the hello guest on real KVM
//! ```
//!
//! The lab: x86_64 host → QEMU 10 (TCG, `-cpu rv64` has H) in a Debian trixie chroot →
//! Debian's riscv64 6.12 kernel in a busybox initramfs with kvm.ko → rvvmm → test guests.
//! Everything it needs is installed or fetched here and cached (see [`paths::cache_dir`]).

mod cpio;
mod host;
mod lab;
mod paths;
mod plan;

use std::process::ExitCode;

use lab::Mode;

const USAGE: &str =
    "usage: cargo xtask <test | lab [--mode plic|aia|both] [--case NAME]... | demo>";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("lab") => {
            parse_lab_args(&args[1..]).and_then(|(modes, cases)| lab::run(&modes, &cases))
        }
        Some("demo") => lab::demo(),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// x86 unit and integration tests, then the nested lab in both modes.
fn test() -> Result<bool, String> {
    host::run_visible(host::cargo().args(["test", "--workspace"]))?;
    lab::run(&[Mode::Plic, Mode::Aia], &[])
}

fn parse_lab_args(args: &[String]) -> Result<(Vec<Mode>, Vec<String>), String> {
    let mut modes = vec![Mode::Plic, Mode::Aia];
    let mut cases = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--mode" => {
                modes = match it.next().map(String::as_str) {
                    Some("plic") => vec![Mode::Plic],
                    Some("aia") => vec![Mode::Aia],
                    Some("both") => vec![Mode::Plic, Mode::Aia],
                    other => return Err(format!("--mode takes plic, aia or both, not {other:?}")),
                }
            }
            "--case" => cases.push(it.next().ok_or("--case takes a case name")?.clone()),
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    Ok((modes, cases))
}

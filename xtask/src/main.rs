//! rvvmm's own tooling: the nested RISC-V KVM lab and the test entry point.
//!
//! ```text
//! cargo xtask test            x86 unit tests, then the lab in both irqchip modes
//! cargo xtask lab [--mode plic|aia|both] [--case NAME]...
//! cargo xtask demo            boot L1 once and run the hello guest on real KVM
//! cargo xtask bench [--mode M] [--reps N] [--lkvm PATH] [--only PARTS] [--baseline REV]
//!                             rvvmm's overhead against a bare KVM loop and kvmtool
//! ```
//!
//! The lab: x86_64 host → QEMU 10 (TCG, `-cpu rv64` has H) in a Debian trixie chroot →
//! Debian's riscv64 6.12 kernel in a busybox initramfs with kvm.ko → rvvmm → test guests.
//! Everything it needs is installed or fetched here and cached (see [`paths::cache_dir`]).

mod bench;
mod cpio;
mod host;
mod lab;
mod mode;
mod paths;
mod plan;

use std::process::ExitCode;

use mode::Mode;

const USAGE: &str =
    "usage: cargo xtask <test | lab [--mode plic|aia|both] [--case NAME]... | demo \
     | bench [--mode plic|aia|both] [--reps N] [--lkvm PATH] [--only exits,boot,blk,startup,idle] \
     [--baseline REV]>";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("lab") => {
            parse_lab_args(&args[1..]).and_then(|(modes, cases)| lab::run(&modes, &cases))
        }
        Some("demo") => lab::demo(),
        Some("bench") => parse_bench_args(&args[1..]).and_then(|o| bench::run(&o)),
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

/// x86 unit and integration tests, the nested lab in both modes, and a short benchmark (one
/// repetition, so it cannot rot; it fails only when it gets no numbers, never on their values).
fn test() -> Result<bool, String> {
    host::run_visible(host::cargo().args(["test", "--workspace"]))?;
    let bench_ok = bench::run(&bench::Options {
        modes: vec![Mode::Aia],
        reps: 1,
        lkvm: None,
        only: Vec::new(),
        baseline: None,
    })?;
    let lab_ok = lab::run(&[Mode::Plic, Mode::Aia], &[])?;
    Ok(bench_ok && lab_ok)
}

fn parse_bench_args(args: &[String]) -> Result<bench::Options, String> {
    let mut opts = bench::Options {
        modes: vec![Mode::Plic, Mode::Aia],
        reps: 5,
        lkvm: None,
        only: Vec::new(),
        baseline: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--mode" => opts.modes = parse_mode(it.next())?,
            "--reps" => {
                opts.reps = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n >= 1)
                    .ok_or("--reps takes a number of at least 1")?
            }
            "--lkvm" => opts.lkvm = Some(it.next().ok_or("--lkvm takes a path")?.into()),
            "--baseline" => {
                opts.baseline = Some(it.next().ok_or("--baseline takes a git revision")?.clone())
            }
            "--only" => {
                let parts = it.next().ok_or("--only takes a list of parts")?;
                for part in parts.split(',') {
                    if !bench::PARTS.contains(&part) {
                        return Err(format!(
                            "--only takes parts among {}, not {part:?}",
                            bench::PARTS.join(",")
                        ));
                    }
                    opts.only.push(part.to_string());
                }
            }
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    Ok(opts)
}

fn parse_mode(arg: Option<&String>) -> Result<Vec<Mode>, String> {
    match arg.map(String::as_str) {
        Some("plic") => Ok(vec![Mode::Plic]),
        Some("aia") => Ok(vec![Mode::Aia]),
        Some("both") => Ok(vec![Mode::Plic, Mode::Aia]),
        other => Err(format!("--mode takes plic, aia or both, not {other:?}")),
    }
}

fn parse_lab_args(args: &[String]) -> Result<(Vec<Mode>, Vec<String>), String> {
    let mut modes = vec![Mode::Plic, Mode::Aia];
    let mut cases = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--mode" => modes = parse_mode(it.next())?,
            "--case" => cases.push(it.next().ok_or("--case takes a case name")?.clone()),
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    Ok((modes, cases))
}

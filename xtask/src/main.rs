//! rvvmm's own tooling: the nested RISC-V KVM lab and the test entry point.
//!
//! ```text
//! cargo xtask test            unit tests, then the lab: natively on a riscv64 host whose
//!                             /dev/kvm works, else nested (QEMU) in both irqchip modes
//! cargo xtask lab [--kernel stable|newest|both] [--mode plic|aia|both] [--case NAME]...
//! cargo xtask lab --native [--rvvmm PATH --guests DIR [--l2 DIR]] [--case NAME]...
//!                             the plan on this riscv64 host's KVM (prebuilt artifacts: no
//!                             cargo needed)
//! cargo xtask image           the riscv64 container image (Dockerfile), built and checked
//! cargo xtask demo [--shell | --hello]
//!                             boot L1 once and run the README's first command there: Linux
//!                             from QEMU's dtb (--shell: its shell on this terminal; --hello:
//!                             the bare-metal hello guest, the quick check)
//! cargo xtask bench [--kernel K] [--mode M] [--reps N] [--lkvm PATH] [--only PARTS]
//!                   [--baseline REV]
//!                             rvvmm's overhead against a bare KVM loop and kvmtool
//! cargo xtask fuzz [--time SECONDS] [TARGET]...
//!                             the fuzz targets (fuzz/), coverage-guided, each for SECONDS
//! ```
//!
//! The lab: x86_64 host → QEMU 10 (TCG, `-cpu rv64` has H) in a Debian trixie chroot →
//! Debian's riscv64 kernel (stable's 6.12, pinned, or unstable's newest: [`kernel`]) in a busybox
//! initramfs with kvm.ko → rvvmm → test guests.
//! Everything it needs is installed or fetched here and cached (see [`paths::cache_dir`]).

mod bench;
mod chart;
mod cpio;
mod fuzz;
mod host;
mod image;
mod io_bench;
mod kernel;
mod lab;
mod mode;
mod native;
mod paths;
mod plan;
mod progress;
mod uboot_diff;

use std::process::ExitCode;

use kernel::Kernel;
use mode::Mode;

const USAGE: &str = "usage: cargo xtask <test | lab [--kernel stable|newest|both] [--mode plic|aia|both] [--case NAME]... \
     | lab --native [--rvvmm PATH --guests DIR [--l2 DIR]] [--case NAME]... | demo [--shell | --hello] | image \
     | bench [--kernel stable|newest|both] [--mode plic|aia|both] [--reps N] [--lkvm PATH] [--only exits,boot,blk,startup,idle,snapshot,uboot] \
     [--baseline REV] | fuzz [--time SECONDS] [TARGET]...>";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("lab") => parse_lab_args(&args[1..]).and_then(|lab| match lab {
            Lab::Nested(kernels, modes, cases) => lab::run(&kernels, &modes, &cases),
            Lab::Native(opts) => native::run(&opts),
            Lab::NativeBuilt(cases) => lab::prepare_native(cases).and_then(|o| native::run(&o)),
        }),
        Some("demo") => match args.get(1..).unwrap_or_default() {
            [] => lab::demo(lab::Demo::Linux),
            [flag] if flag == "--shell" => lab::demo(lab::Demo::Shell),
            [flag] if flag == "--hello" => lab::demo(lab::Demo::Hello),
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        },
        Some("image") => image::run(),
        Some("bench") => parse_bench_args(&args[1..]).and_then(|o| bench::run(&o)),
        Some("fuzz") => fuzz::parse_args(&args[1..]).and_then(|(s, t)| fuzz::run(s, &t)),
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

/// Seconds each fuzz target runs in `cargo xtask test`.
const CI_FUZZ_SECONDS: u64 = 6;

/// The unit and integration tests, a short run of every fuzz target, then the lab: on a riscv64 host whose /dev/kvm works, the
/// plan natively on it; elsewhere the riscv64 test executables under qemu-user (where their
/// KVM tests skip), a short benchmark (one repetition, so it cannot rot; it fails only when it
/// gets no numbers, never on their values) and the nested lab in both modes.
fn test() -> Result<bool, String> {
    let unusable = native::kvm_unusable();
    match &unusable {
        None => println!(
            "xtask test: native: this riscv64 host's /dev/kvm works: cargo test, then the lab plan on it (no QEMU)"
        ),
        Some(why) => println!(
            "xtask test: nested lab, since {why}: cargo test, {}then the plan in QEMU (TCG) with kvm.ko inside",
            if cfg!(target_arch = "riscv64") {
                ""
            } else {
                "the riscv64 tests under qemu-user, the riscv64 image, "
            }
        ),
    }
    let mut stages = Stages::default();
    host::run_visible(host::cargo().args(["test", "--workspace"]))?;
    stages.done("cargo test");
    // Every fuzz target for a short while (CI's run; `cargo xtask fuzz --time 600` runs long).
    if !fuzz::run(CI_FUZZ_SECONDS, &[])? {
        return Ok(false);
    }
    stages.done("fuzz (build and runs)");
    if unusable.is_none() {
        return lab::prepare_native(Vec::new()).and_then(|o| native::run(&o));
    }
    if !cfg!(target_arch = "riscv64") {
        host::ensure_tools()?;
        host::ensure_riscv64_binfmt()?;
        println!(
            "xtask test: rvvmm's tests built for {} and run under qemu-user",
            host::RISCV_TARGET
        );
        host::run_visible(host::cargo().args([
            "test",
            "--package",
            "rvvmm",
            "--target",
            host::RISCV_TARGET,
        ]))?;
        stages.done("riscv64 tests under qemu-user");
        if !image::run()? {
            return Ok(false);
        }
        stages.done("riscv64 image");
    }
    if std::env::var("RVVMM_NESTED_LAB").as_deref() == Ok("off") {
        println!("xtask test: RVVMM_NESTED_LAB=off: no lab on this host");
        return Ok(true);
    }
    let bench_ok = bench::run(&bench::Options {
        modes: vec![Mode::Aia],
        kernels: vec![Kernel::Stable],
        reps: 1,
        lkvm: None,
        only: Vec::new(),
        baseline: None,
        quick: true,
    })?;
    stages.done("bench (quick)");
    let lab_ok = lab::run(
        &[Kernel::Stable, Kernel::Newest],
        &[Mode::Plic, Mode::Aia],
        &[],
    )?;
    stages.done("lab");
    stages.summary();
    Ok(bench_ok && lab_ok)
}

/// The seconds each stage of `cargo xtask test` took, said as each ends and once at the end
/// (CI's time limit is the sum: this says where it goes).
struct Stages {
    last: std::time::Instant,
    done: Vec<(&'static str, u64)>,
}

impl Default for Stages {
    fn default() -> Self {
        Stages {
            last: std::time::Instant::now(),
            done: Vec::new(),
        }
    }
}

impl Stages {
    fn done(&mut self, what: &'static str) {
        let secs = self.last.elapsed().as_secs();
        self.last = std::time::Instant::now();
        println!("xtask test: {what}: {secs} s");
        self.done.push((what, secs));
    }

    fn summary(&self) {
        let parts: Vec<String> = self
            .done
            .iter()
            .map(|(w, s)| format!("{w} {s} s"))
            .collect();
        println!("xtask test: stages: {}", parts.join(", "));
    }
}

fn parse_bench_args(args: &[String]) -> Result<bench::Options, String> {
    let mut opts = bench::Options {
        modes: vec![Mode::Plic, Mode::Aia],
        kernels: vec![Kernel::Stable],
        reps: 5,
        lkvm: None,
        only: Vec::new(),
        baseline: None,
        quick: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--mode" => opts.modes = parse_mode(it.next())?,
            "--kernel" => opts.kernels = Kernel::parse(it.next())?,
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

/// What `cargo xtask lab` was asked to do.
enum Lab {
    /// The nested lab on these kernels, in these modes, these cases (all when empty).
    Nested(Vec<Kernel>, Vec<Mode>, Vec<String>),
    /// The plan natively, with prebuilt artifacts.
    Native(native::Options),
    /// The plan natively, with artifacts built here first.
    NativeBuilt(Vec<String>),
}

fn parse_lab_args(args: &[String]) -> Result<Lab, String> {
    let mut modes = vec![Mode::Plic, Mode::Aia];
    let mut kernels = vec![Kernel::Stable];
    let mut cases = Vec::new();
    let (mut native, mut rvvmm, mut guests, mut l2) = (false, None, None, None);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut path = |what: &str| -> Result<std::path::PathBuf, String> {
            Ok(it.next().ok_or(format!("{arg} takes {what}"))?.into())
        };
        match arg.as_str() {
            "--mode" => modes = parse_mode(it.next())?,
            "--kernel" => kernels = Kernel::parse(it.next())?,
            "--case" => cases.push(it.next().ok_or("--case takes a case name")?.clone()),
            "--native" => native = true,
            "--rvvmm" => rvvmm = Some(path("a path")?),
            "--guests" => guests = Some(path("a directory")?),
            "--l2" => l2 = Some(path("a directory")?),
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    match (native, rvvmm, guests) {
        (false, None, None) if l2.is_none() => Ok(Lab::Nested(kernels, modes, cases)),
        (true, None, None) if l2.is_none() => Ok(Lab::NativeBuilt(cases)),
        (true, Some(rvvmm), Some(guests)) => Ok(Lab::Native(native::Options {
            rvvmm,
            guests,
            l2,
            cases,
        })),
        _ => Err(format!(
            "--rvvmm, --guests and --l2 go with --native, and --rvvmm with --guests; {USAGE}"
        )),
    }
}

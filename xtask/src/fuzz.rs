//! `cargo xtask fuzz [--time SECONDS] [TARGET]...`: rvvmm's fuzz targets (`fuzz/`), built
//! with LLVM's sanitizer coverage and linked with libFuzzer (libfuzzer-sys), then each run for
//! a bounded time from its seed corpus. Coverage-guided on the stable toolchain: the
//! instrumentation is rustc's stable `-C passes=sancov-module` and LLVM flags (cargo-fuzz's
//! default, AddressSanitizer, needs a nightly compiler this machine cannot install; Rust's own
//! bounds checks and the debug assertions turned on below catch what ASan would in safe code).
//!
//! Seeds live in `fuzz/corpus/TARGET` (in the repository); what a run finds goes to
//! `target/fuzz/corpus/TARGET`, a crash to `target/fuzz/artifacts/TARGET/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::host;
use crate::paths;

/// The targets, each a binary of the fuzz crate.
pub const TARGETS: &[&str] = &[
    "dtb", "kernel", "config", "virtio", "bus", "sbi", "api", "snapshot",
];

/// Seconds each target runs by default (CI's short run).
pub const DEFAULT_SECONDS: u64 = 20;

const RUSTFLAGS: &str = "--cfg fuzzing -Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    -Cdebug-assertions -Coverflow-checks";

/// What one run of a target did.
struct Stats {
    runs: u64,
    seconds: u64,
    cov: u64,
    corpus: u64,
}

/// Parses `cargo xtask fuzz` arguments: `--time SECONDS`, then target names (none: all).
pub fn parse_args(args: &[String]) -> Result<(u64, Vec<String>), String> {
    let mut seconds = DEFAULT_SECONDS;
    let mut targets = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--time" => {
                seconds = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&s| s > 0)
                    .ok_or("--time takes a number of seconds")?;
            }
            t if TARGETS.contains(&t) => targets.push(t.to_string()),
            other => {
                return Err(format!(
                    "no fuzz target is named {other:?} (targets: {})",
                    TARGETS.join(" ")
                ))
            }
        }
    }
    Ok((seconds, targets))
}

/// Builds the targets and runs each for `seconds`; false if any crashed.
pub fn run(seconds: u64, only: &[String]) -> Result<bool, String> {
    let root = paths::root();
    let out = root.join("target/fuzz");
    let triple = host_triple();
    println!("fuzz: building the targets with sanitizer coverage ({triple}, release)");
    host::run_visible(
        host::cargo()
            .args(["build", "--release", "--bins", "--target", &triple])
            .arg("--manifest-path")
            .arg(root.join("fuzz/Cargo.toml"))
            .env("CARGO_TARGET_DIR", &out)
            .env("RUSTFLAGS", RUSTFLAGS),
    )?;
    let bin_dir = out.join(&triple).join("release");
    let mut ok = true;
    for target in TARGETS
        .iter()
        .filter(|t| only.is_empty() || only.iter().any(|o| o == *t))
    {
        let seeds = root.join("fuzz/corpus").join(target);
        let corpus = out.join("corpus").join(target);
        let artifacts = out.join("artifacts").join(target);
        for dir in [&corpus, &artifacts] {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let output = Command::new(bin_dir.join(target))
            .arg(format!("-max_total_time={seconds}"))
            .args(["-rss_limit_mb=2048", "-timeout=10", "-print_final_stats=1"])
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg(&corpus)
            .arg(existing(&seeds))
            .output()
            .map_err(|e| format!("cannot run fuzz target {target}: {e}"))?;
        let log = String::from_utf8_lossy(&output.stderr);
        match (output.status.success(), stats(&log)) {
            (true, Some(s)) => println!(
                "fuzz {target:<9} ok: {} runs in {} s ({}/s), coverage {} edges, corpus {} inputs",
                s.runs,
                s.seconds,
                s.runs / s.seconds.max(1),
                s.cov,
                s.corpus
            ),
            _ => {
                ok = false;
                println!(
                    "fuzz {target:<9} FAILED ({}); its last lines:",
                    output.status
                );
                let lines: Vec<&str> = log.lines().collect();
                for line in &lines[lines.len().saturating_sub(40)..] {
                    println!("  {line}");
                }
                println!("  (the input that failed is in {})", artifacts.display());
            }
        }
    }
    Ok(ok)
}

/// The Rust target triple of this host.
fn host_triple() -> String {
    match std::env::consts::ARCH {
        "riscv64" => host::RISCV_TARGET.to_string(),
        arch => format!("{arch}-unknown-linux-gnu"),
    }
}

/// `dir` if it exists, else an empty directory under target/ (libFuzzer wants a directory).
fn existing(dir: &Path) -> PathBuf {
    if dir.is_dir() {
        return dir.to_owned();
    }
    let empty = paths::root().join("target/fuzz/no-seeds");
    let _ = std::fs::create_dir_all(&empty);
    empty
}

/// The figures of libFuzzer's last status line (`#N DONE cov: C ft: F corp: K/...`) and its
/// final stats (`stat::number_of_executed_units`, `stat::...`, "Done N runs in S second(s)").
fn stats(log: &str) -> Option<Stats> {
    let field = |line: &str, key: &str| -> Option<u64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .find(|s| !s.is_empty())?
            .parse()
            .ok()
    };
    let done = log.lines().rev().find(|l| l.starts_with("Done "))?;
    let status = log.lines().rev().find(|l| l.contains(" cov: "))?;
    Some(Stats {
        runs: field(done, "Done ")?,
        seconds: field(done, " in ")?,
        cov: field(status, " cov: ")?,
        corpus: field(status, " corp: ").unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzers_summary() {
        let log = "#2\tINITED cov: 120 ft: 130 corp: 2/40b exec/s: 0 rss: 30Mb\n\
                   #524288\tpulse  cov: 611 ft: 1500 corp: 90/3Kb lim: 4096 exec/s: 26214 rss: 60Mb\n\
                   #600000\tDONE   cov: 615 ft: 1520 corp: 93/3417b lim: 4096 exec/s: 30000 rss: 61Mb\n\
                   stat::number_of_executed_units: 600000\n\
                   Done 600000 runs in 20 second(s)\n";
        let s = stats(log).unwrap();
        assert_eq!((s.runs, s.seconds, s.cov, s.corpus), (600000, 20, 615, 93));
        assert!(stats("#1 INITED cov: 3\n").is_none());
    }

    #[test]
    fn arguments() {
        let args = |a: &[&str]| parse_args(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(args(&[]).unwrap(), (DEFAULT_SECONDS, vec![]));
        assert_eq!(
            args(&["--time", "600", "dtb"]).unwrap(),
            (600, vec!["dtb".to_string()])
        );
        assert!(args(&["--time", "0"]).is_err());
        assert!(args(&["nope"]).is_err());
    }
}

//! Running host commands, and installing what the lab needs on a fresh Debian machine.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::progress::Step;

/// Debian packages the lab needs, with a command each provides on PATH, or an absolute path of a
/// file it installs (to see whether it is there).
const PACKAGES: &[(&str, &str)] = &[
    ("debootstrap", "debootstrap"),
    ("xz-utils", "xz"),
    ("curl", "curl"),
    ("device-tree-compiler", "dtc"),
    ("e2fsprogs", "mkfs.ext4"),
];

/// The riscv64 compiler, on an x86_64 (or other) host: Debian's cross toolchain.
const CROSS_PACKAGES: &[(&str, &str)] = &[
    ("gcc-riscv64-linux-gnu", "riscv64-linux-gnu-gcc"),
    // The riscv64 C library the static rvvmm links against: only a Recommends of the cross
    // gcc, so `--no-install-recommends` leaves it out (then `ld: cannot find crt1.o`).
    (
        "libc6-dev-riscv64-cross",
        "/usr/riscv64-linux-gnu/lib/crt1.o",
    ),
    ("binutils-riscv64-linux-gnu", "riscv64-linux-gnu-objcopy"),
    // The riscv64 test executables run under qemu-user (binfmt), where KVM tests skip.
    ("qemu-user-static", "qemu-riscv64-static"),
];

/// The same on a riscv64 host: its own compiler, which Debian also names by the triplet.
const NATIVE_PACKAGES: &[(&str, &str)] = &[
    ("gcc", "riscv64-linux-gnu-gcc"),
    ("libc6-dev", "/usr/lib/riscv64-linux-gnu/crt1.o"),
    ("binutils", "riscv64-linux-gnu-objcopy"),
];

/// The Rust target rvvmm is cross-built for.
pub const RISCV_TARGET: &str = "riscv64gc-unknown-linux-gnu";

/// `cargo`, as the one running this xtask.
pub fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` with its output shown; fails unless it exits 0.
pub fn run_visible(cmd: &mut Command) -> Result<(), String> {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {}: {e}", describe(cmd)))?;
    if !status.success() {
        return Err(format!("{} failed ({status})", describe(cmd)));
    }
    Ok(())
}

/// Runs `cmd` quietly; on failure, its output is part of the error.
pub fn run_quiet(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", describe(cmd)))?;
    if !out.status.success() {
        let tail: String = String::from_utf8_lossy(&out.stderr)
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        return Err(format!(
            "{} failed ({}):\n{tail}",
            describe(cmd),
            out.status
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `program` is on PATH.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// Installs the Debian packages and the Rust target the lab needs, if missing.
pub fn ensure_tools() -> Result<(), String> {
    let compiler = if cfg!(target_arch = "riscv64") {
        NATIVE_PACKAGES
    } else {
        CROSS_PACKAGES
    };
    let missing: Vec<&str> = PACKAGES
        .iter()
        .chain(compiler)
        .filter(|(_, what)| {
            if what.starts_with('/') {
                !Path::new(what).is_file()
            } else {
                !have(what)
            }
        })
        .map(|(pkg, _)| *pkg)
        .collect();
    if !missing.is_empty() {
        let mut step = Step::start(format!("lab: installing {}", missing.join(" ")));
        step.at("apt-get update");
        run_quiet(Command::new("apt-get").args(["update", "-q"]))?;
        step.at("apt-get install");
        run_quiet(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
        step.done("");
    }
    let installed = run_quiet(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if !installed.lines().any(|l| l.trim() == RISCV_TARGET) {
        let step = Step::start(format!("lab: adding the Rust target {RISCV_TARGET}"));
        run_quiet(Command::new("rustup").args(["target", "add", RISCV_TARGET]))?;
        step.done("");
    }
    Ok(())
}

/// Lets this x86 (or other) host run riscv64 executables through qemu-user: binfmt_misc
/// mounted and qemu-riscv64 registered (from qemu-user-static's own binfmt.d entry), so that
/// `cargo test --target riscv64gc-unknown-linux-gnu` runs its test executables and the
/// executables they start.
pub fn ensure_riscv64_binfmt() -> Result<(), String> {
    let dir = Path::new("/proc/sys/fs/binfmt_misc");
    if !dir.join("register").exists() {
        run_quiet(
            Command::new("mount")
                .args(["-t", "binfmt_misc", "binfmt_misc"])
                .arg(dir),
        )
        .map_err(|e| format!("cannot mount binfmt_misc (root needed): {e}"))?;
    }
    let entry = dir.join("qemu-riscv64");
    if std::fs::read_to_string(&entry).is_ok_and(|s| s.starts_with("enabled")) {
        return Ok(());
    }
    let conf = "/usr/lib/binfmt.d/qemu-riscv64.conf";
    let line = std::fs::read_to_string(conf).map_err(|e| format!("{conf}: {e}"))?;
    std::fs::write(dir.join("register"), line.trim_end())
        .map_err(|e| format!("cannot register qemu-riscv64 with binfmt_misc: {e}"))
}

/// The Debian mirror this machine's apt uses (`RVVMM_DEBIAN_MIRROR` overrides it), so the lab
/// fetches from wherever the machine is allowed to.
pub fn debian_mirror() -> Result<String, String> {
    if let Ok(m) = std::env::var("RVVMM_DEBIAN_MIRROR") {
        return Ok(m.trim_end_matches('/').to_string());
    }
    let mut texts = Vec::new();
    for dir in ["/etc/apt/sources.list.d"] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            for p in paths {
                let name = p.to_string_lossy();
                if name.ends_with(".sources") || name.ends_with(".list") {
                    texts.push(std::fs::read_to_string(&p).unwrap_or_default());
                }
            }
        }
    }
    texts.push(std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default());
    texts
        .iter()
        .find_map(|t| mirror_in(t))
        .ok_or_else(|| "cannot find a Debian mirror in /etc/apt; set RVVMM_DEBIAN_MIRROR".into())
}

/// The first Debian archive URI (not the security archive) in an apt sources text.
fn mirror_in(text: &str) -> Option<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.split_whitespace())
        .map(|w| w.trim_start_matches("URIs:"))
        .filter(|w| w.starts_with("http://") || w.starts_with("https://"))
        .map(|w| w.trim_end_matches('/'))
        .find(|w| w.ends_with("/debian"))
        .map(String::from)
}

/// Downloads `url` to `dest` (through a temporary file, so a broken download leaves nothing),
/// showing the bytes as they come.
pub fn download(url: &str, dest: &Path) -> Result<(), String> {
    let part = dest.with_extension("part");
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    let step = Step::bytes(format!("lab: fetching {name}"));
    let mut cmd = Command::new("curl");
    cmd.args(["-fsSL", "--retry", "3", "-o"])
        .arg(&part)
        .arg(url);
    let mut child = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", describe(&cmd)))?;
    let size = || std::fs::metadata(&part).map_or(0, |m| m.len());
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        step.moved(size());
        std::thread::sleep(Duration::from_millis(200));
    };
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let _ = std::fs::remove_file(&part);
        return Err(format!(
            "{} failed ({status}): {}",
            describe(&cmd),
            err.trim()
        ));
    }
    let got = size();
    std::fs::rename(&part, dest).map_err(|e| format!("cannot move {}: {e}", part.display()))?;
    step.done(&format!("{:.1} MiB", got as f64 / (1 << 20) as f64));
    Ok(())
}

/// Decodes a base64 dtb and decompiles it with dtc; returns the source.
pub fn dtc_decompile(base64: &str) -> Result<String, String> {
    let dir = std::env::temp_dir().join(format!("rvvmm-dtc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let b64 = dir.join("dtb.b64");
    let dtb = dir.join("out.dtb");
    std::fs::write(&b64, base64).map_err(|e| e.to_string())?;
    let decoded = Command::new("base64")
        .arg("-d")
        .arg(&b64)
        .output()
        .map_err(|e| format!("cannot run base64: {e}"))?;
    if !decoded.status.success() || decoded.stdout.is_empty() {
        return Err("the base64 text does not decode".into());
    }
    std::fs::write(&dtb, &decoded.stdout).map_err(|e| e.to_string())?;
    run_quiet(
        Command::new("dtc")
            .args(["-I", "dtb", "-O", "dts"])
            .arg(&dtb),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_debian_archive_in_deb822_and_one_line_sources() {
        let deb822 = "Types: deb\n# http://snapshot/x/debian\nURIs: http://mirror.example/debian\nSuites: bookworm\n\nTypes: deb\nURIs: http://mirror.example/debian-security\n";
        assert_eq!(
            mirror_in(deb822).as_deref(),
            Some("http://mirror.example/debian")
        );
        let list = "deb http://sec.example/debian-security bookworm-security main\ndeb [arch=amd64] https://m.example/debian/ bookworm main\n";
        assert_eq!(mirror_in(list).as_deref(), Some("https://m.example/debian"));
        assert_eq!(
            mirror_in("deb https://packages.example/apt stable main"),
            None
        );
    }
}

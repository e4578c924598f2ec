//! The lab's plan run natively: on a riscv64 host whose /dev/kvm opens, the same cases
//! (plan.rs) and the same judge as the nested lab, run directly on the host, each with its
//! time limit, no QEMU.
//!
//! In the nested lab a case finds its files at L1's root (`/rvvmm`, `/guests/hello.bin`,
//! `/l2/Image`, ...). Here they live under a directory of the run's own (links to the
//! artifacts given), and every case command and expected text is rebased onto it, so no
//! chroot is needed. A case that names a file the run does not have (a Linux case without
//! `--l2`, say) is skipped, visibly, with the file it needs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::mode::Mode;
use crate::plan::{self, Case};

/// What `cargo xtask lab --native` runs with.
pub struct Options {
    /// rvvmm, built for this host.
    pub rvvmm: PathBuf,
    /// The bare-metal guests: `NAME.bin` (and `hello.elf`).
    pub guests: PathBuf,
    /// The Linux guest's files (`Image`, `initrd.cpio`, disks, dtbs), if there are.
    pub l2: Option<PathBuf>,
    /// The cases to run (all when empty).
    pub cases: Vec<String>,
}

/// The files of L1's root that a case may name: each stands at the start of a word.
/// (`/rvvmm` covers `/rvvmm-timing` too.)
const ROOT_NAMES: &[&str] = &[
    "/rvvmm",
    "/guests/",
    "/l2/",
    "/cases/",
    "/bare-kvm",
    "/exec-timer",
    "/lkvm",
];

/// Characters after which a path starts a word in a case's shell text.
const WORD_START: &[char] = &[
    ' ', '\t', '\n', '\'', '"', '(', '=', ';', '|', '&', '<', '>', '`',
];

/// Characters that end a path in a case's shell text.
const WORD_END: &[char] = &[
    ' ', '\t', '\n', '\'', '"', ')', ';', '|', '&', '<', '>', '`', ',', ':',
];

/// Why this host cannot run the plan natively, if it cannot.
pub fn kvm_unusable() -> Option<String> {
    if !cfg!(target_arch = "riscv64") {
        return Some(format!("this is a {} host", std::env::consts::ARCH));
    }
    match fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Some("this host has no /dev/kvm (no H extension, or kvm.ko not loaded)".into())
        }
        Err(e) => Some(format!("/dev/kvm exists but cannot be opened: {e}")),
    }
}

/// The irqchip mode the host's KVM gives its guests: the in-kernel AIA when the host has
/// IMSICs (a `riscv,imsics` node in its device tree), else rvvmm's PLIC.
fn host_mode() -> Mode {
    fn has_imsics(dir: &Path, depth: u32) -> bool {
        if fs::read(dir.join("compatible"))
            .is_ok_and(|c| c.windows(12).any(|w| w == b"riscv,imsics"))
        {
            return true;
        }
        depth < 6
            && fs::read_dir(dir).is_ok_and(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .any(|e| has_imsics(&e.path(), depth + 1))
            })
    }
    if has_imsics(Path::new("/proc/device-tree"), 0) {
        Mode::Aia
    } else {
        Mode::Plic
    }
}

/// `text` with every root file name at the start of a word moved under `root`.
pub fn rebase(text: &str, root: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut prev = '\n';
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if WORD_START.contains(&prev) && ROOT_NAMES.iter().any(|n| rest.starts_with(n)) {
            out.push_str(root);
        }
        out.push(c);
        prev = c;
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// The root files `cmd` names (`/guests/hello.bin`, `/l2/Image`, ...), besides the cases'.
pub fn named_files(cmd: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut prev = '\n';
    for (i, c) in cmd.char_indices() {
        let rest = &cmd[i..];
        if WORD_START.contains(&prev)
            && ROOT_NAMES.iter().any(|n| rest.starts_with(n))
            && !rest.starts_with("/cases/")
        {
            let end = rest.find(WORD_END).unwrap_or(rest.len());
            let path = rest[..end].to_string();
            if !path.contains('$') && !path.contains('*') && !found.contains(&path) {
                found.push(path);
            }
        }
        prev = c;
    }
    found
}

/// A case rebased onto `root`: its command and every text it expects or rejects.
fn rebased(c: &Case, root: &str) -> Case {
    let texts = |t: &[&str]| -> &'static [&'static str] {
        Box::leak(
            t.iter()
                .map(|s| plan::leak(rebase(s, root)))
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        )
    };
    Case {
        cmd: plan::leak(rebase(c.cmd, root)),
        expect: texts(c.expect),
        expect_plic: texts(c.expect_plic),
        expect_aia: texts(c.expect_aia),
        reject: texts(c.reject),
        ..c.clone()
    }
}

/// What L1's init sets up before its plan, done here where it is missing: /tmp, the tun
/// device, 160 reserved huge pages (raised, never lowered) and hugetlbfs at /dev/hugepages.
const PRELUDE: &str = "mkdir -p /tmp\n\
    [ -e /dev/net/tun ] || modprobe tun 2>/dev/null\n\
    [ \"$(cat /proc/sys/vm/nr_hugepages)\" -ge 160 ] || echo 160 > /proc/sys/vm/nr_hugepages 2>/dev/null\n\
    mkdir -p /dev/hugepages 2>/dev/null; grep -q ' /dev/hugepages ' /proc/mounts || mount -t hugetlbfs none /dev/hugepages 2>/dev/null\n\
    echo \"@@LAB kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) harts, $(grep -m1 ^isa /proc/cpuinfo)\"\n";

/// Runs the plan's cases (or `opts.cases`) natively; prints a line per case and a summary.
pub fn run(opts: &Options) -> Result<bool, String> {
    if let Some(why) = kvm_unusable() {
        return Err(format!("cannot run the lab natively: {why}"));
    }
    let mode = host_mode();
    let label = format!("native-{}", mode.name());
    let root = std::env::temp_dir().join(format!("rvvmm-native-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(root.join("cases")).map_err(|e| format!("{}: {e}", root.display()))?;
    let link = |target: &Path, name: &str| -> Result<(), String> {
        let target = fs::canonicalize(target).map_err(|e| format!("{}: {e}", target.display()))?;
        std::os::unix::fs::symlink(&target, root.join(name)).map_err(|e| e.to_string())
    };
    link(&opts.rvvmm, "rvvmm")?;
    link(&opts.guests, "guests")?;
    if let Some(l2) = &opts.l2 {
        link(l2, "l2")?;
    }
    let root_text = root.display().to_string();
    let mut cases = Vec::new();
    let mut skipped = 0;
    // This host's kernel, whose KVM the cases meet.
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_string())
        .unwrap_or_default();
    for c in plan::cases() {
        if !opts.cases.is_empty() && !opts.cases.iter().any(|o| o == c.name) {
            continue;
        }
        if let Some(why) = c.needs.skip_on(&release) {
            println!("lab[{label}] {:<18} skipped ({why})", c.name);
            skipped += 1;
            continue;
        }
        let missing: Vec<String> = named_files(c.cmd)
            .into_iter()
            .filter(|p| !root.join(p.trim_start_matches('/')).exists())
            .collect();
        if !missing.is_empty() {
            println!(
                "lab[{label}] {:<18} skipped (needs {})",
                c.name,
                missing.join(" ")
            );
            skipped += 1;
            continue;
        }
        let c = rebased(&c, &root_text);
        fs::write(
            root.join(format!("cases/{}.sh", c.name)),
            plan::case_script(&c),
        )
        .map_err(|e| e.to_string())?;
        if let Some(stdin) = c.stdin {
            fs::write(root.join(format!("cases/{}.stdin", c.name)), stdin)
                .map_err(|e| e.to_string())?;
        }
        cases.push(c);
    }
    if cases.is_empty() && opts.cases.is_empty() {
        return Err("no case can run with the files given".into());
    }
    let out = root.join("case.out").display().to_string();
    let script = format!(
        "{PRELUDE}{}",
        rebase(&plan::runner(&cases, &out), &root_text)
    );
    eprintln!(
        "lab[{label}]: {} cases run on this host's KVM, files under {}",
        cases.len(),
        root.display()
    );
    let started = std::time::Instant::now();
    let out = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run sh: {e}"))?;
    let log = String::from_utf8_lossy(&out.stdout).into_owned();
    let _ = fs::write(root.join("console.log"), &log);
    if let Some(header) = log.lines().find(|l| l.starts_with("@@LAB ")) {
        println!("lab[{label}] host: {}", header.trim_start_matches("@@LAB "));
    }
    let (passed, failed) = plan::report(&cases, &label, mode, &log);
    println!(
        "lab[{label}] all cases: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!("lab: {passed} passed, {failed} failed, {skipped} skipped (native)");
    if failed == 0 {
        let _ = fs::remove_dir_all(&root);
    }
    Ok(failed == 0 && !cases.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_files_are_rebased_only_at_the_start_of_a_word() {
        let cmd = "/rvvmm --kernel /guests/hello.bin --dtb /l2/virt.dtb > /tmp/rvvmm.out; x=/l2/Image '/rvvmm-timing' /tmp/l2/x";
        assert_eq!(
            rebase(cmd, "/R"),
            "/R/rvvmm --kernel /R/guests/hello.bin --dtb /R/l2/virt.dtb > /tmp/rvvmm.out; x=/R/l2/Image '/R/rvvmm-timing' /tmp/l2/x"
        );
        assert_eq!(
            named_files(cmd),
            [
                "/rvvmm",
                "/guests/hello.bin",
                "/l2/virt.dtb",
                "/l2/Image",
                "/rvvmm-timing"
            ]
        );
        assert_eq!(
            rebase("--dtb: /guests/hello.bin: not a device tree", "/R"),
            "--dtb: /R/guests/hello.bin: not a device tree"
        );
    }

    #[test]
    fn every_plan_case_names_only_files_the_lab_provides() {
        let known = [
            "/rvvmm",
            "/rvvmm-timing",
            "/rvvmm-base-timing",
            "/bare-kvm",
            "/exec-timer",
            "/lkvm",
        ];
        for c in plan::cases() {
            for f in named_files(c.cmd) {
                assert!(
                    known.contains(&f.as_str())
                        || f.starts_with("/guests/")
                        || f.starts_with("/l2/"),
                    "{}: {f}",
                    c.name
                );
            }
        }
    }
}

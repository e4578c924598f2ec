//! The bench's `uboot` part (with `--lkvm`): Debian's U-Boot under rvvmm and under kvmtool in
//! the same L1 boot, the same binary, disk, RAM and session typed at its prompt, and the error
//! lines of each run side by side. rvvmm's goal: no error line that kvmtool's run lacks.

use std::collections::BTreeSet;

use crate::plan::{self, Case};

/// kvmtool running the same U-Boot: flat at RAM + 2 MiB (kvmtool's place for a kernel), the
/// boot disk on virtio-mmio as rvvmm's, the same 512 MiB and one vCPU. `-p ''`: kvmtool
/// (b48735e) with `--nodefaults` and no command line dies of a segmentation fault before the
/// guest's first instruction (seen in the lab; its riscv FDT code reads the missing string).
/// `/on-pty`: kvmtool reads console input only from a tty.
fn lkvm_uboot(lkvm_flags: &str) -> String {
    format!(
        "/on-pty /lkvm run {lkvm_flags} --virtio-transport mmio -k /l2/u-boot.bin -m 512 -c 1 -d /l2/boot-disk.img,ro -p ''"
    )
}

/// The sessions: name, the console file of VMM `$tag`, the script of each VMM. `prompt` and
/// `efi` are the lab cases' sessions; `extlinux` is U-Boot's autoboot with nothing typed.
fn sessions(lkvm_flags: &str) -> Vec<(&'static str, &'static str, String, String)> {
    let lkvm = lkvm_uboot(lkvm_flags);
    let extlinux = |vmm: &str, tag: &str| {
        format!(
            "timeout 200 {vmm} < /dev/null > /tmp/ux-{tag}.out 2>&1; echo \"@@UX {tag} status $?\""
        )
    };
    vec![
        (
            "prompt",
            "/tmp/ub-$v.out",
            plan::uboot_session(plan::UBOOT_RVVMM, "rvvmm"),
            plan::uboot_session(&lkvm, "lkvm"),
        ),
        (
            "extlinux",
            "/tmp/ux-$v.out",
            extlinux(plan::UBOOT_RVVMM, "rvvmm"),
            extlinux(&lkvm, "lkvm"),
        ),
        (
            "efi",
            "/tmp/ue-$v.out",
            plan::uboot_efi_session(plan::UBOOT_RVVMM, "rvvmm"),
            plan::uboot_efi_session(&lkvm, "lkvm"),
        ),
    ]
}

/// Each session under rvvmm, then under kvmtool; every console line printed as
/// `@@UBO session vmm line`.
pub fn case(lkvm_flags: &str) -> Case {
    // L1's init mounts no devpts; on-pty needs one.
    let mut script = String::from(
        "mkdir -p /dev/pts; grep -q ' /dev/pts ' /proc/mounts || mount -t devpts devpts /dev/pts\n",
    );
    for (name, out, rvvmm, lkvm) in sessions(lkvm_flags) {
        script.push_str(&format!(
            "for v in rvvmm lkvm; do\n\
             if [ $v = rvvmm ]; then\n{rvvmm}\nelse\n{lkvm}\nfi\n\
             tr -d '\\r' < {out} | sed \"s/^/@@UBO {name} $v /\"\n\
             done\n"
        ));
    }
    Case {
        timeout: 1800,
        ..plan::case("bench_uboot", plan::leak(script), 0, &[])
    }
}

/// Words that make a console line an error line (matched in lower case).
const ERROR_WORDS: &[&str] = &[
    "error",
    "fail",
    "missing",
    "cannot",
    "can't",
    "unable",
    "not found",
    "warning",
    "invalid",
    "unknown",
    "bad ",
    "no rng",
    "timed out",
    "timeout",
    "unsupported",
    "not supported",
];

/// `line` with every number (decimal, `0x` hex, or a hex word with a digit in it) made `#`,
/// so that addresses and sizes that differ between the VMMs (their dtb and load addresses) do
/// not make two equal messages differ.
fn normalised(line: &str) -> String {
    let is_number = |w: &str| {
        let hex = w.strip_prefix("0x").unwrap_or(w);
        !hex.is_empty()
            && hex.chars().all(|c| c.is_ascii_hexdigit())
            && (w.starts_with("0x") || hex.chars().any(|c| c.is_ascii_digit()))
    };
    let mut out = String::new();
    let mut word = String::new();
    for c in line.trim().chars().chain(std::iter::once('\n')) {
        if c.is_ascii_alphanumeric() {
            word.push(c);
            continue;
        }
        out.push_str(if is_number(&word) { "#" } else { &word });
        word.clear();
        if c != '\n' {
            out.push(c);
        }
    }
    out
}

fn is_error(line: &str) -> bool {
    let l = line.to_ascii_lowercase();
    ERROR_WORDS.iter().any(|w| l.contains(w))
}

/// One VMM's run of a session in `output`: its console lines, the firmware's error lines
/// (U-Boot's, GRUB's, the EFI stub's: everything before Linux's first line, normalised), and
/// whether Linux started. Linux's own lines are the Linux lab cases' business, and differ
/// with each VMM's devices.
struct Run {
    lines: usize,
    errors: BTreeSet<String>,
    linux: bool,
}

fn run(output: &str, session: &str, vmm: &str) -> Run {
    let prefix = format!("@@UBO {session} {vmm} ");
    let lines: Vec<&str> = output
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .collect();
    let firmware = lines
        .iter()
        .position(|l| l.contains("Linux version "))
        .unwrap_or(lines.len());
    Run {
        lines: lines.len(),
        errors: lines[..firmware]
            .iter()
            .filter(|l| is_error(l))
            .map(|l| normalised(l))
            .collect(),
        linux: firmware < lines.len(),
    }
}

/// Prints each session's comparison; false if a run printed nothing or rvvmm's has an error
/// line kvmtool's lacks.
pub fn report(label: &str, output: &str) -> bool {
    let mut ok = true;
    let yes = |b: bool| if b { "yes" } else { "no" };
    for session in ["prompt", "extlinux", "efi"] {
        let (rv, lk) = (run(output, session, "rvvmm"), run(output, session, "lkvm"));
        let only: Vec<&String> = rv.errors.difference(&lk.errors).collect();
        println!(
            "bench[{label}] U-Boot {session}: rvvmm {} console lines, {} distinct firmware error lines, Linux started: {}; \
             kvmtool {} lines, {}, Linux started: {}; error lines only rvvmm's run has: {}",
            rv.lines,
            rv.errors.len(),
            yes(rv.linux),
            lk.lines,
            lk.errors.len(),
            yes(lk.linux),
            only.len()
        );
        for l in &only {
            println!("bench[{label}]   rvvmm only: {l}");
        }
        for l in lk.errors.difference(&rv.errors) {
            println!("bench[{label}]   kvmtool only: {l}");
        }
        for l in rv.errors.intersection(&lk.errors) {
            println!("bench[{label}]   both: {l}");
        }
        ok &= rv.lines > 0 && lk.lines > 0 && only.is_empty();
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_sizes_do_not_make_lines_differ() {
        assert_eq!(
            normalised("Failed to load 0x8fe00000 (1234 bytes)"),
            normalised("Failed to load 0xbfe00000 (99 bytes)")
        );
        assert_ne!(
            normalised("Failed to load '/'"),
            normalised("No RNG device")
        );
        assert_eq!(normalised("  No RNG device\t"), "No RNG device");
    }

    #[test]
    fn only_rvvmm_error_lines_fail_the_comparison() {
        let out = "@@UBO prompt rvvmm U-Boot\n@@UBO prompt rvvmm No RNG device\n\
                   @@UBO prompt lkvm U-Boot\n@@UBO prompt lkvm No RNG device\n\
                   @@UBO extlinux rvvmm x\n@@UBO extlinux lkvm x\n\
                   @@UBO efi rvvmm Error: bad 0x10\n@@UBO efi rvvmm Linux version 6\n\
                   @@UBO efi rvvmm Linux's warning\n@@UBO efi lkvm ok\n";
        assert!(!report("t", out));
        let fixed = out.replace("Error: bad 0x10", "fine");
        assert!(report("t", &fixed));
        // A VMM that printed nothing is no comparison.
        assert!(!report("t", "@@UBO prompt rvvmm U-Boot\n"));
    }
}

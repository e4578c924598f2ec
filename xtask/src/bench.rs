//! `cargo xtask bench`: rvvmm's overhead, measured side by side with a floor in one L1 boot.
//!
//! Nested absolute times mean little, so every figure is a ratio of two things measured in the
//! same boot, interleaved (the order alternates each repetition), with medians:
//! - per exit kind: rvvmm against `bare-kvm` (the least a VMM can do) on the very same guest,
//!   which times N exits itself with the time CSR. rvvmm runs with bare-kvm's 64 MiB of RAM
//!   and `--irqchip plic`, as bare-kvm has no in-kernel irqchip: KVM's AIA makes every guest
//!   entry dearer (the in-kernel SBI control measured 1.135x with it), which is not rvvmm's
//!   exit path;
//! - Linux boot to init and power-off: rvvmm against kvmtool, when given one (`--lkvm PATH`);
//! - virtio-blk sequential read of a 256 MiB file: the L2 guest's `dd` through rvvmm against
//!   L1's `dd` of the same file;
//! - rvvmm's own memory (peak RSS minus resident guest RAM) and its startup (to the first exit).

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

use crate::chart;
use crate::io_bench;
use crate::lab;
use crate::mode::Mode;
use crate::paths;
use crate::plan::{self, median, Case};
use crate::uboot_diff;

/// Exit kinds, as the bench guests name them.
const KINDS: &[&str] = &[
    "hypercall",
    "mmio_read",
    "mmio_write",
    "dbcn_write_byte",
    "sbi_in_kernel",
];
/// Exits each bench guest times (its -DN default).
const EXITS_PER_RUN: f64 = 20_000.0;
/// QEMU virt's timebase: 10 MHz, so one tick is 100 ns.
const NS_PER_TICK: f64 = 100.0;
/// The Linux boot both VMMs run.
const BOOT_ARGS_MEM_MIB: u32 = 256;

/// Options of `cargo xtask bench`.
pub struct Options {
    /// Modes to boot L1 in.
    pub modes: Vec<Mode>,
    /// Kernels to boot L1 (and L2) with: each in each mode.
    pub kernels: Vec<crate::kernel::Kernel>,
    /// Repetitions of every measurement.
    pub reps: usize,
    /// A riscv64 kvmtool binary.
    pub lkvm: Option<PathBuf>,
    /// Parts to run (`PARTS`); empty: all.
    pub only: Vec<String>,
    /// A git revision whose measuring build is timed beside this one (user ns per exit).
    pub baseline: Option<String>,
    /// CI's run (`cargo xtask test`): every part, but the idle part on [`IDLE_QUICK`] only.
    pub quick: bool,
}

/// The benchmark's parts, for `--only`.
pub const PARTS: &[&str] = &[
    "exits", "boot", "blk", "io", "fs", "vsock", "startup", "idle", "snapshot", "uboot",
];

/// A shell loop running `body` for `$v` = each of `vmms` in each repetition `$r`, the order
/// reversed every other repetition so that none always runs first.
pub(crate) fn interleaved(reps: usize, vmms: &[&str], body: &str) -> String {
    let odd = vmms.join(" ");
    let even = vmms.iter().rev().copied().collect::<Vec<_>>().join(" ");
    format!(
        "for r in $(seq 1 {reps}); do\n\
         if [ $((r % 2)) -eq 1 ]; then order='{odd}'; else order='{even}'; fi\n\
         for v in $order; do\n{body}\ndone\ndone"
    )
}

/// A benchmark case: a script with an hour's time limit, judged only by its numbers.
fn bench_case(name: &'static str, script: String) -> Case {
    Case {
        timeout: 3600,
        ..plan::case(name, plan::leak(script), 0, &[])
    }
}

/// Per exit kind, the bench guest under `bare-kvm`, rvvmm, rvvmm with `--seccomp false`
/// (`nosec`: the filters run in the kernel on every KVM_RUN, which the user-space timing
/// cannot see), `bare-kvm --seccomp-floor` (`baresec`: under a filter that allows
/// everything, what seccomp itself costs an exit) and the measuring builds, interleaved.
fn exits_case(reps: usize, baseline: bool) -> Case {
    let mut script = String::from("for r in $(seq 1 ");
    let _ = write!(script, "{reps}); do\nfor k in {}; do\n", KINDS.join(" "));
    let base = if baseline { " base_t" } else { "" };
    let _ = writeln!(
        script,
        "if [ $((r % 2)) -eq 1 ]; then order='bare rvvmm nosec baresec bare_t rvvmm_t{base}'; else order='{} rvvmm_t bare_t baresec nosec rvvmm bare'; fi",
        base.trim()
    );
    script.push_str(
        "for v in $order; do\n\
         rv=\"--irqchip plic --memory 64M --kernel /guests/bench_$k.bin\"\n\
         case $v in\n\
         bare) out=$(/bare-kvm /guests/bench_$k.bin 2>&1 | grep BENCH);;\n\
         baresec) out=$(/bare-kvm --seccomp-floor /guests/bench_$k.bin 2>&1 | grep BENCH);;\n\
         bare_t) out=$(/bare-kvm --timing /guests/bench_$k.bin 2>&1 | grep -E 'BENCH|EXIT-TIMING' | tr '\\n' ' ');;\n\
         rvvmm) out=$(RUST_LOG=rvvmm=info /rvvmm $rv 2>&1 | grep -E 'BENCH|first guest exit' | tr '\\n' ' ');;\n\
         nosec) out=$(/rvvmm $rv --seccomp false 2>&1 | grep BENCH);;\n\
         base_t) out=$(RUST_LOG=rvvmm=info /rvvmm-base-timing $rv 2>&1 | grep -E 'BENCH|EXIT-TIMING' | tr '\\n' ' ');;\n\
         *) out=$(RUST_LOG=rvvmm=info /rvvmm-timing $rv 2>&1 | grep -E 'BENCH|EXIT-TIMING' | tr '\\n' ' ');;\n\
         esac\n\
         echo \"@@S $v $k $r $out\"\n\
         done\ndone\ndone",
    );
    bench_case("bench_exits", script)
}

fn boot_case(reps: usize, lkvm: bool) -> Case {
    let rvvmm = format!(
        "RUST_LOG=rvvmm=info /rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --memory {BOOT_ARGS_MEM_MIB}M --cmdline 'console=ttyS0 quiet'"
    );
    let lkvm_cmd = format!(
        "/lkvm run {LKVM_FLAGS} -k /l2/Image -i /l2/initrd.cpio -m {BOOT_ARGS_MEM_MIB} -c 1 -p 'console=ttyS0 quiet'"
    );
    let body = format!(
        "t0=$(cut -d' ' -f1 /proc/uptime)\n\
         case $v in rvvmm) {rvvmm} > /tmp/boot.out 2>&1;; rvvmm_huge) {rvvmm} --hugepages > /tmp/boot.out 2>&1;; lkvm) {lkvm_cmd} > /tmp/boot.out 2>&1;; *) {lkvm_cmd} --hugetlbfs /dev/hugepages > /tmp/boot.out 2>&1;; esac\n\
         rc=$?; t1=$(cut -d' ' -f1 /proc/uptime)\n\
         grep -E 'first guest exit|memory: peak|init reached' /tmp/boot.out | sed \"s/^/@@L $v $r /\"\n\
         echo \"@@BOOT $v $r rc=$rc wall=$(awk \"BEGIN {{ print $t1 - $t0 }}\")\""
    );
    let mut vmms = vec!["rvvmm", "rvvmm_huge"];
    if lkvm {
        vmms.extend(["lkvm", "lkvm_huge"]);
    }
    bench_case("bench_boot", interleaved(reps, &vmms, &body))
}

/// kvmtool with the devices rvvmm has in these runs: a serial console, no network (its default
/// is a user-mode virtio-net), no 9p root, no added command line.
const LKVM_FLAGS: &str = "--console serial --network mode=none --nodefaults";
/// Runs of the startup guest per repetition.
const STARTUP_RUNS: usize = 10;

/// Each VMM on a guest whose first instruction writes one byte and which then powers off,
/// timed by `exec-timer` (xtask/exec-timer): exec to that byte (startup to the guest's first
/// instruction, plus one exit) and exec to exit. The VMMs take turns run by run, the order
/// reversed each run, rather than ten runs each in a row: in the lab a run's place in a
/// sequence moved it by about 2 ms (the same rvvmm command read 15.4 ms among ten of its own
/// and 13.6 ms between runs of other commands), as much as the differences measured.
fn startup_case(reps: usize, lkvm: bool) -> Case {
    let vmms: &[&str] = if lkvm {
        &["bare", "rvvmm", "lkvm"]
    } else {
        &["bare", "rvvmm"]
    };
    // Each run its own turn of `interleaved`; the sample's repetition from the run's number.
    let body = format!(
        "case $v in rvvmm) /exec-timer /rvvmm --kernel /guests/bench_startup.bin --memory 256M --cmdline quiet;; \
         bare) /exec-timer /bare-kvm /guests/bench_startup_flat.bin;; \
         *) /exec-timer /lkvm run {LKVM_FLAGS} -k /guests/bench_startup.bin -m 256 -c 1 -p quiet;; esac | sed \"s/^EXEC/@@EXEC $v $(((r - 1) / {STARTUP_RUNS} + 1))/\""
    );
    bench_case(
        "bench_startup",
        interleaved(reps * STARTUP_RUNS, vmms, &body),
    )
}

/// Seconds of idle guest each idle sample measures.
const IDLE_S: u32 = 10;

/// The idle guests: name, vCPUs, how the VMMs run it. `bare`: a bare-metal guest whose hart 0
/// waits in wfi and never starts the others; `linux`: Linux idle at its shell prompt (input
/// from a FIFO that stays open), `maxcpus=1` keeping the other harts stopped.
const IDLE_GUESTS: &[(&str, u32, &str)] = &[
    ("bare", 1, ""),
    ("bare", 2, ""),
    ("bare", 8, ""),
    ("linux", 1, ""),
    ("linux", 2, ""),
    ("linux", 8, ""),
    ("linux_maxcpus1", 8, "maxcpus=1"),
];

/// The idle guests CI's quick run measures: the widest of each kind (the Linux guests with 2
/// and 8 running vCPUs take minutes to boot nested).
const IDLE_QUICK: &[&str] = &["idle_bare_8", "idle_linux_maxcpus1_8"];

/// The idle guests a run measures.
fn idle_guests(quick: bool) -> impl Iterator<Item = &'static (&'static str, u32, &'static str)> {
    IDLE_GUESTS
        .iter()
        .filter(move |(g, c, _)| !quick || IDLE_QUICK.contains(&format!("idle_{g}_{c}").as_str()))
}

/// The VMM's CPU time (utime + stime of every thread, in 10 ms ticks) over [`IDLE_S`] seconds
/// of an idle guest, once it has settled, for rvvmm and (with `--lkvm`) kvmtool: lines
/// `@@IDLE vmm guest cpus rep ticks=N`.
fn idle_case(reps: usize, lkvm: bool, quick: bool) -> Case {
    let mut body = String::from(
        "mkfifo /tmp/idle.in 2>/dev/null; ( sleep 100000 ) > /tmp/idle.in & feeder=$!\n",
    );
    for (guest, cpus, extra) in idle_guests(quick) {
        let (rv, lk) = if guest.starts_with("linux") {
            (
                format!("/rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --cpus {cpus} --memory 256M --cmdline 'console=ttyS0 quiet rvvmm.test=shell {extra}'"),
                format!("/lkvm run {LKVM_FLAGS} -k /l2/Image -i /l2/initrd.cpio -m 256 -c {cpus} -p 'console=ttyS0 quiet rvvmm.test=shell {extra}'"),
            )
        } else {
            (
                format!("/rvvmm --kernel /guests/idle.bin --cpus {cpus} --memory 64M"),
                format!("/lkvm run {LKVM_FLAGS} -k /guests/idle.bin -m 64 -c {cpus} -p quiet"),
            )
        };
        let _ = write!(
            body,
            "case $v in rvvmm) {rv} < /tmp/idle.in > /tmp/idle.out 2>&1 & ;; *) {lk} < /tmp/idle.in > /tmp/idle.out 2>&1 & ;; esac\n\
             pid=$!\n\
             for i in $(seq 1 600); do grep -q -E '@@L2 shell ready|idle: hart 0' /tmp/idle.out && break; sleep 0.2; done\n\
             sleep 2; t0=$(awk '{{ print $14 + $15 }}' /proc/$pid/stat); sleep {IDLE_S}; t1=$(awk '{{ print $14 + $15 }}' /proc/$pid/stat)\n\
             kill -TERM $pid 2>/dev/null; sleep 1; kill -KILL $pid 2>/dev/null; wait $pid 2>/dev/null\n\
             echo \"@@IDLE $v {guest} {cpus} $r ticks=$((t1 - t0))\"\n"
        );
    }
    body.push_str("kill $feeder");
    let vmms: &[&str] = if lkvm { &["rvvmm", "lkvm"] } else { &["rvvmm"] };
    bench_case("bench_idle", interleaved(reps, vmms, &body))
}

/// A 256 MiB Linux guest at its shell, as a user meets it: booted cold, or restored from a
/// snapshot taken of it at its shell once per L1 boot (the snapshot's write time is timed
/// there). Each run types one command and is timed from exec to the answer on the console:
/// `@@SNAPB cold|restore rep ms=N` (and `restore_ms=N` from rvvmm's own log for a restore).
fn snapshot_case(reps: usize) -> Case {
    let shell = "/rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --memory 256M --cmdline 'console=ttyS0 quiet rvvmm.test=shell'";
    let prep = format!(
        r#"rm -rf /tmp/bsnap /tmp/bsnap.sock /tmp/bprep.in; mkfifo /tmp/bprep.in
( for i in $(seq 1 600); do grep -q '@@L2 shell ready' /tmp/bprep.out 2>/dev/null && break; sleep 0.2; done; sleep 1
  R='/rvvmm remote --api-socket /tmp/bsnap.sock'; $R pause; $R snapshot file:///tmp/bsnap; $R shutdown-vmm ) > /tmp/bprep.in &
RUST_LOG=rvvmm=info {shell} --api-socket /tmp/bsnap.sock < /tmp/bprep.in > /tmp/bprep.out 2>&1
wait
grep -o 'written to /tmp/bsnap in [0-9]* ms' /tmp/bprep.out | sed 's/^/@@SNAPB write /'
grep -o '256 MiB RAM ([0-9]* MiB of data)' /tmp/bprep.out | sed 's/^/@@SNAPB data /'
"#
    );
    let body = format!(
        r#"rm -f /tmp/bs.in /tmp/bs.out; mkfifo /tmp/bs.in; : > /tmp/bs.out
t0=$(cut -d' ' -f1 /proc/uptime)
( if [ $v = cold ]; then for i in $(seq 1 1200); do grep -q '@@L2 shell ready' /tmp/bs.out && break; sleep 0.05; done; fi
  echo 'echo answer-$((6*7))'
  for i in $(seq 1 1200); do grep -q answer-42 /tmp/bs.out && break; sleep 0.05; done
  t1=$(cut -d' ' -f1 /proc/uptime)
  echo "@@SNAPB $v $r ms=$(awk "BEGIN {{ print ($t1 - $t0) * 1000 }}")" >&2
  echo 'poweroff -f' ) > /tmp/bs.in 2>>/tmp/bs.report &
case $v in
  cold) RUST_LOG=rvvmm=info {shell} < /tmp/bs.in > /tmp/bs.out 2>&1;;
  *) RUST_LOG=rvvmm=info /rvvmm --restore source_url=file:///tmp/bsnap,resume=on < /tmp/bs.in > /tmp/bs.out 2>&1;;
esac
wait
grep -o 'restored in [0-9]* ms' /tmp/bs.out | sed "s/^/@@SNAPB restore_log $r /""#
    );
    let script = format!(
        "{prep}: > /tmp/bs.report\n{}\ncat /tmp/bs.report",
        interleaved(reps, &["cold", "restore"], &body)
    );
    bench_case("bench_snapshot", script)
}

/// The `@@SNAPB` lines of [`snapshot_case`].
fn snapshot_samples(output: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    let number = |text: &str, after: &str| -> Option<f64> {
        text.split(after)
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    for l in output.lines() {
        let Some(rest) = l.strip_prefix("@@SNAPB ") else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let (kind, second) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
        let (vmm, what, rep, value) = match kind {
            "cold" | "restore" => (
                kind,
                "to_shell_answer_ms",
                second.parse().unwrap_or(0),
                number(rest, "ms="),
            ),
            "restore_log" => (
                "restore",
                "restore_ms",
                second.parse().unwrap_or(0),
                number(rest, "restored in "),
            ),
            "write" => ("snapshot", "write_ms", 0, number(rest, " in ")),
            "data" => ("snapshot", "data_mib", 0, number(rest, "(")),
            _ => continue,
        };
        if let Some(value) = value {
            samples.push(Sample {
                vmm: vmm.into(),
                what: what.into(),
                rep,
                value,
            });
        }
    }
    samples
}

/// `@@IDLE vmm guest cpus rep ticks=N` lines, as CPU seconds per [`IDLE_S`] seconds.
fn idle_samples(output: &str) -> Vec<Sample> {
    output
        .lines()
        .filter_map(|l| {
            let mut f = l.strip_prefix("@@IDLE ")?.split_whitespace();
            let (vmm, guest, cpus) = (f.next()?, f.next()?, f.next()?);
            let rep = f.next()?.parse().ok()?;
            let ticks: f64 = f.next()?.strip_prefix("ticks=")?.parse().ok()?;
            Some(Sample {
                vmm: vmm.into(),
                what: format!("idle_{guest}_{cpus}"),
                rep,
                value: ticks / 100.0,
            })
        })
        .collect()
}

/// `@@EXEC vmm rep first_output_us=N exit_us=N rc=N` lines: a run that failed or printed
/// nothing gives no sample.
fn startup_samples(output: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for l in output.lines() {
        let Some(rest) = l.strip_prefix("@@EXEC ") else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let (Some(vmm), Some(Ok(rep))) = (f.next(), f.next().map(str::parse)) else {
            continue;
        };
        let field = |name: &str| {
            rest.split(&format!("{name}="))
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        };
        if field("rc") != Some(0.0) {
            continue;
        }
        for (what, name) in [
            ("first_output_ms", "first_output_us"),
            ("exec_to_exit_ms", "exit_us"),
        ] {
            if let Some(us) = field(name).filter(|us| *us >= 0.0) {
                samples.push(Sample {
                    vmm: vmm.into(),
                    what: what.into(),
                    rep,
                    value: us / 1000.0,
                });
            }
        }
    }
    samples
}

/// The file the virtio-blk throughput is measured on, in MiB.
const BLK_MIB: u64 = 256;

/// virtio-blk sequential read of a file in L1's RAM: the guest's `dd` of the whole disk
/// through rvvmm (and, with `lkvm`, through kvmtool: the same guest, RAM, vCPU and file, its
/// disk on virtio-mmio as rvvmm's), against `dd` of the same file directly in L1 (four times
/// over, so that the 10 ms clock of /proc/uptime resolves it).
fn blk_case(reps: usize, lkvm: bool) -> Case {
    let guest = "console=ttyS0 quiet rvvmm.test=blk-read";
    let body = format!(
        "case $v in\n\
         direct) t0=$(cut -d' ' -f1 /proc/uptime); for i in 1 2 3 4; do dd if=/tmp/blk.img of=/dev/null bs=1M 2>/dev/null; done; t1=$(cut -d' ' -f1 /proc/uptime)\n\
         echo \"@@BLK direct $r $(awk \"BEGIN {{ print ($t1 - $t0) / 4 }}\")\";;\n\
         rvvmm) /rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --memory 256M --disk /tmp/blk.img,readonly --cmdline '{guest}' > /tmp/blk.out 2>&1;;\n\
         lkvm) /lkvm run {LKVM_FLAGS} --virtio-transport mmio -k /l2/Image -i /l2/initrd.cpio -m 256 -c 1 -d /tmp/blk.img,ro -p '{guest}' > /tmp/blk.out 2>&1;;\n\
         esac\n\
         [ $v = direct ] || sed -n \"s/.*@@L2 blk \\([a-z]*\\) read {} bytes in \\([0-9.]*\\) s.*/@@BLK ${{v}}_\\1 $r \\2/p\" /tmp/blk.out",
        BLK_MIB << 20
    );
    let mut vmms = vec!["direct", "rvvmm"];
    if lkvm {
        vmms.push("lkvm");
    }
    let script = format!(
        "dd if=/dev/urandom of=/tmp/blk.img bs=1M count={BLK_MIB} 2>/dev/null\n{}\nrm -f /tmp/blk.img",
        interleaved(reps, &vmms, &body)
    );
    bench_case("bench_blk", script)
}

/// virtio-fs beside virtio-blk: one guest with the same 256 MiB file as its disk and in the
/// directory L1's virtiofsd shares, read through each alternately (see l2-init's fs-read).
fn fs_case(reps: usize, mib: u64) -> Case {
    let body = format!(
        "{start}/rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --memory 256M --disk /tmp/fsb/blk.img,readonly --fs tag=fsb,socket=/tmp/fsb.sock --cmdline 'console=ttyS0 quiet rvvmm.test=fs-read rvvmm.fs_tag=fsb' > /tmp/fsb.out 2>&1
         wait $vfsd
         grep -o '@@L2 fsread [a-z]* [0-9.]*' /tmp/fsb.out | sed \"s/@@L2 fsread /@@FSB $r /\"",
        start = plan::start_virtiofsd("/tmp/fsb", "/tmp/fsb.sock")
    );
    let script = format!(
        "mkdir -p /tmp/fsb; dd if=/dev/urandom of=/tmp/fsb/blk.img bs=1M count={mib} 2>/dev/null
{}
rm -rf /tmp/fsb",
        interleaved(reps, &["rvvmm"], &body)
    );
    bench_case("bench_fs", script)
}

/// The file of the fs part in CI's quick run (a smoke run; `--reps` runs read [`BLK_MIB`]).
const FS_QUICK_MIB: u64 = 64;

/// `@@FSB rep device seconds` lines, as MiB/s of the `mib` MiB file.
fn fs_samples(output: &str, mib: u64) -> Vec<Sample> {
    output
        .lines()
        .filter_map(|l| {
            let mut f = l.strip_prefix("@@FSB ")?.split_whitespace();
            let rep = f.next()?.parse().ok()?;
            let dev = f.next()?;
            let secs: f64 = f.next()?.parse().ok().filter(|s: &f64| *s > 0.0)?;
            Some(Sample {
                vmm: "rvvmm".into(),
                what: format!("{dev}_read_mib_s"),
                rep,
                value: mib as f64 / secs,
            })
        })
        .collect()
}

/// Bytes each way of the vsock and TCP throughput runs, and round trips of the latency runs.
const VSOCK_BYTES: u64 = 10 << 20;
const VSOCK_RTTS: u32 = 100;

/// virtio-vsock beside a tap + TCP connection in the same boot: 10 MiB each way at once
/// through rvvmm's hybrid socket and through TCP over the tap (the guest echoes both), and
/// one-byte round trips (median of 100); the order alternates between repetitions.
fn vsock_case(reps: usize) -> Case {
    let body = format!(
        "rm -f /tmp/vb.sock
         /rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --memory 256M --net tap=tap4 --vsock cid=3,socket=/tmp/vb.sock --cmdline 'console=ttyS0 quiet rvvmm.test=vsock-bench' > /tmp/vb.out 2>&1 &
         pid=$!
         for i in $(seq 1 900); do grep -q '@@L2 io listeners up' /tmp/vb.out && break; sleep 0.2; done
         if [ $((r % 2)) -eq 1 ]; then order='vsock tcp'; else order='tcp vsock'; fi
         for k in $order; do
         case $k in
         vsock) /vsock-tool hybrid /tmp/vb.sock 5000 {VSOCK_BYTES}; /vsock-tool hybrid-rtt /tmp/vb.sock 5000 {VSOCK_RTTS};;
         tcp) /vsock-tool tcp 10.0.4.2:5001 {VSOCK_BYTES}; /vsock-tool tcp-rtt 10.0.4.2:5001 {VSOCK_RTTS};;
         esac | sed \"s/^/@@VB $r /\"
         done
         wait $pid"
    );
    let script = format!(
        "tunctl -t tap4 >/dev/null && ifconfig tap4 10.0.4.1 netmask 255.255.255.0 up
{}
ip link delete tap4",
        interleaved(reps, &["rvvmm"], &body)
    );
    bench_case("bench_vsock", script)
}

/// `@@VB rep @@VSOCK|@@TCP sent ... in S s (...)` and `... round trip median U us ...` lines.
fn vsock_samples(output: &str) -> Vec<Sample> {
    output
        .lines()
        .filter_map(|l| {
            let mut f = l.strip_prefix("@@VB ")?.split_whitespace();
            let rep = f.next()?.parse().ok()?;
            let how = match f.next()? {
                "@@VSOCK" => "vsock",
                "@@TCP" => "tcp",
                _ => return None,
            };
            let rest: Vec<&str> = f.collect();
            let (what, value) = if rest.first() == Some(&"sent") {
                if !l.contains(", intact") {
                    return None;
                }
                let at = rest.iter().position(|w| *w == "in")?;
                let secs: f64 = rest.get(at + 1)?.parse().ok().filter(|s: &f64| *s > 0.0)?;
                ("mib_s", VSOCK_BYTES as f64 / 1048576.0 / secs)
            } else if rest.first() == Some(&"round") {
                ("rtt_us", rest.get(3)?.parse().ok()?)
            } else {
                return None;
            };
            Some(Sample {
                vmm: "rvvmm".into(),
                what: format!("{how}_{what}"),
                rep,
                value,
            })
        })
        .collect()
}

/// `@@BLK vmm rep seconds` lines, as MiB/s (a run without a time gives no sample).
fn blk_samples(output: &str) -> Vec<Sample> {
    output
        .lines()
        .filter_map(|l| {
            let mut f = l.strip_prefix("@@BLK ")?.split_whitespace();
            let (vmm, rep) = (f.next()?, f.next()?.parse().ok()?);
            let secs: f64 = f.next()?.parse().ok().filter(|s: &f64| *s > 0.0)?;
            Some(Sample {
                vmm: vmm.into(),
                what: "blk_read_mib_s".into(),
                rep,
                value: BLK_MIB as f64 / secs,
            })
        })
        .collect()
}

/// One sample.
pub(crate) struct Sample {
    pub(crate) vmm: String,
    pub(crate) what: String,
    pub(crate) rep: usize,
    pub(crate) value: f64,
}

fn exit_samples(output: &str) -> Vec<Sample> {
    output
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("@@S ")?;
            let mut f = rest.split_whitespace();
            let (vmm, kind, rep) = (f.next()?, f.next()?, f.next()?.parse().ok()?);
            let ticks: f64 = rest
                .split("ticks=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            // A measuring build's run gives only its user-space time per exit: the rdtime
            // around KVM_RUN it adds makes its guest-timed figure no sample of the real thing.
            if let Some(measuring) = vmm.strip_suffix("_t") {
                return Some(exit_timing(rest).map_or_else(Vec::new, |ns| {
                    vec![Sample {
                        vmm: measuring.into(),
                        what: format!("{kind}_user"),
                        rep,
                        value: ns,
                    }]
                }));
            }
            let mut found = vec![Sample {
                vmm: vmm.into(),
                what: kind.into(),
                rep,
                value: ticks * NS_PER_TICK / EXITS_PER_RUN,
            }];
            if let Some(us) = first_exit_us(rest) {
                found.push(Sample {
                    vmm: vmm.into(),
                    what: "startup_us".into(),
                    rep,
                    value: us,
                });
            }
            Some(found)
        })
        .flatten()
        .collect()
}

/// "EXIT-TIMING exits=N user_ticks=T" in `line` (the `exit-timing` build's and `bare-kvm
/// --timing`'s report), as nanoseconds spent in user space per exit.
fn exit_timing(line: &str) -> Option<f64> {
    let rest = line.split("EXIT-TIMING ").nth(1)?;
    let field = |name: &str| -> Option<f64> {
        rest.split(name)
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let (exits, ticks) = (field("exits=")?, field("user_ticks=")?);
    // Under half the timed exits: the kind's exits stay in the kernel (sbi_in_kernel), and
    // the few left are the guest's output and power-off, no figure of an exit kind.
    (exits >= EXITS_PER_RUN / 2.0).then(|| ticks * NS_PER_TICK / exits)
}

/// "first guest exit N us after rvvmm started" in `line`.
fn first_exit_us(line: &str) -> Option<f64> {
    line.split("first guest exit ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn boot_samples(output: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for l in output.lines() {
        if let Some(rest) = l.strip_prefix("@@BOOT ") {
            let mut f = rest.split_whitespace();
            let (Some(vmm), Some(rep)) = (f.next(), f.next().and_then(|r| r.parse().ok())) else {
                continue;
            };
            let boot_ok = rest.contains(" rc=0 ")
                && output.lines().any(|x| {
                    x.starts_with(&format!("@@L {vmm} {rep} ")) && x.contains("init reached")
                });
            if let (true, Some(wall)) = (
                boot_ok,
                rest.split("wall=")
                    .nth(1)
                    .and_then(|w| w.trim().parse().ok()),
            ) {
                samples.push(Sample {
                    vmm: vmm.into(),
                    what: "boot_s".into(),
                    rep,
                    value: wall,
                });
            }
        } else if let Some(rest) = l.strip_prefix("@@L rvvmm ") {
            let rep = rest
                .split_whitespace()
                .next()
                .and_then(|r| r.parse().ok())
                .unwrap_or(0);
            if let Some(us) = first_exit_us(rest) {
                samples.push(Sample {
                    vmm: "rvvmm".into(),
                    what: "linux_first_exit_us".into(),
                    rep,
                    value: us,
                });
            }
            if let Some(kib) = rest
                .split("rvvmm's own ")
                .nth(1)
                .and_then(|x| x.split_whitespace().next()?.parse::<f64>().ok())
            {
                samples.push(Sample {
                    vmm: "rvvmm".into(),
                    what: "own_memory_kib".into(),
                    rep,
                    value: kib,
                });
            }
        }
    }
    samples
}

pub(crate) fn med(samples: &[Sample], vmm: &str, what: &str) -> Option<f64> {
    let mut v: Vec<f64> = samples
        .iter()
        .filter(|s| s.vmm == vmm && s.what == what)
        .map(|s| s.value)
        .collect();
    median(&mut v)
}

/// Runs the benchmark; prints the table; writes target/bench/bench.json.
pub fn run(opts: &Options) -> Result<bool, String> {
    let mut prepared = lab::prepare(&opts.kernels)?;
    if let Some(rev) = &opts.baseline {
        prepared.baseline_timing = Some(lab::build_baseline(rev)?);
    }
    if let Some(path) = &opts.lkvm {
        prepared.lkvm = Some(
            fs::read(path).map_err(|e| format!("cannot read --lkvm {}: {e}", path.display()))?,
        );
    }
    let want = |part: &str| opts.only.is_empty() || opts.only.iter().any(|p| p == part);
    let fs_mib = if opts.quick { FS_QUICK_MIB } else { BLK_MIB };
    let cases: Vec<Case> = [
        ("exits", exits_case(opts.reps, opts.baseline.is_some())),
        ("boot", boot_case(opts.reps, opts.lkvm.is_some())),
        ("blk", blk_case(opts.reps, opts.lkvm.is_some())),
        (
            "io",
            io_bench::case(opts.reps, opts.lkvm.is_some(), opts.quick),
        ),
        ("fs", fs_case(opts.reps, fs_mib)),
        ("vsock", vsock_case(opts.reps)),
        ("startup", startup_case(opts.reps, opts.lkvm.is_some())),
        (
            "idle",
            idle_case(opts.reps, opts.lkvm.is_some(), opts.quick),
        ),
        ("snapshot", snapshot_case(opts.reps)),
        ("uboot", uboot_diff::case(LKVM_FLAGS)),
    ]
    .into_iter()
    // U-Boot's runs are a comparison with kvmtool: without one they measure nothing.
    .filter(|(part, _)| want(part) && (*part != "uboot" || opts.lkvm.is_some()))
    .map(|(_, case)| case)
    .collect();
    let commit = crate::host::run_quiet(
        std::process::Command::new("git")
            .args(["-C"])
            .arg(paths::root())
            .args(["rev-parse", "--short", "HEAD"]),
    )
    .map(|s| s.trim().to_string())
    .unwrap_or_else(|_| "unknown".into());
    let mut json = format!(
        "{{\n  \"commit\": \"{commit}\",\n  \"baseline\": \"{}\",\n  \"qemu\": \"{}\",\n  \"reps\": {},\n  \"exits_per_run\": {},\n  \"modes\": [\n",
        opts.baseline.as_deref().unwrap_or(""),
        prepared.qemu_version(),
        opts.reps,
        EXITS_PER_RUN
    );
    let mut complete = true;
    let mut panels = Vec::new();
    let runs: Vec<(&lab::KernelFiles, Mode)> = prepared
        .kernels
        .iter()
        .flat_map(|k| opts.modes.iter().map(move |&m| (k, m)))
        .collect();
    for (ri, &(k, mode)) in runs.iter().enumerate() {
        let label = k.label(mode);
        let log = lab::boot_l1(&prepared, k, mode, &cases)?;
        let kernel = log
            .lines()
            .find_map(|l| l.strip_prefix("@@LAB kernel "))
            .and_then(|l| l.split(',').next())
            .unwrap_or("unknown")
            .to_string();
        let ran = plan::parse_log(&log);
        let output = |name: &str| {
            ran.iter()
                .find(|(n, _)| n == name)
                .map(|(_, r)| r.output.clone())
                .unwrap_or_default()
        };
        let mut samples = exit_samples(&output("bench_exits"));
        samples.extend(boot_samples(&output("bench_boot")));
        samples.extend(blk_samples(&output("bench_blk")));
        samples.extend(io_bench::samples(&output("bench_io")));
        samples.extend(fs_samples(&output("bench_fs"), fs_mib));
        samples.extend(vsock_samples(&output("bench_vsock")));
        samples.extend(startup_samples(&output("bench_startup")));
        samples.extend(idle_samples(&output("bench_idle")));
        samples.extend(snapshot_samples(&output("bench_snapshot")));

        println!(
            "bench[{}] L1 kernel {kernel}, {}, {} repetitions, interleaved",
            label,
            prepared.qemu_version(),
            opts.reps
        );
        let mut rows = Vec::new();
        let boot = med(&samples, "rvvmm", "boot_s");
        let lkvm_boot = med(&samples, "lkvm", "boot_s");
        let huge_boot = med(&samples, "rvvmm_huge", "boot_s");
        let lkvm_huge_boot = med(&samples, "lkvm_huge", "boot_s");
        let blk = (
            med(&samples, "direct", "blk_read_mib_s"),
            med(&samples, "rvvmm_warm", "blk_read_mib_s"),
            med(&samples, "rvvmm_cold", "blk_read_mib_s"),
        );
        let blk_guest_floor = med(&samples, "rvvmm_incache", "blk_read_mib_s");
        let startup = (
            med(&samples, "rvvmm", "first_output_ms"),
            med(&samples, "lkvm", "first_output_ms"),
            med(&samples, "rvvmm", "exec_to_exit_ms"),
            med(&samples, "lkvm", "exec_to_exit_ms"),
        );
        let startup_floor = (
            med(&samples, "bare", "first_output_ms"),
            med(&samples, "bare", "exec_to_exit_ms"),
        );
        if want("exits") {
            let base_header = match &opts.baseline {
                Some(rev) => format!(" {:>14}", format!("{rev} user ns")),
                None => String::new(),
            };
            println!(
                "bench[{}] {:<18} {:>12} {:>12} {:>8} {:>14} {:>8} {:>15} {:>8} {:>14} {:>14}{base_header}",
                label,
                "exit kind",
                "bare ns",
                "rvvmm ns",
                "ratio",
                "no-seccomp ns",
                "ratio",
                "bare+seccomp ns",
                "rvvmm/it",
                "bare user ns",
                "rvvmm user ns"
            );
            let show = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.0}"));
            let json = |v: Option<f64>| v.map_or_else(|| "null".to_string(), |v| format!("{v:.1}"));
            for kind in KINDS {
                let (bare, rv) = (med(&samples, "bare", kind), med(&samples, "rvvmm", kind));
                let user = format!("{kind}_user");
                let (bare_user, rv_user) =
                    (med(&samples, "bare", &user), med(&samples, "rvvmm", &user));
                let base_user = med(&samples, "base", &user);
                let base_cell = if opts.baseline.is_some() {
                    format!(" {:>14}", show(base_user))
                } else {
                    String::new()
                };
                let nosec = med(&samples, "nosec", kind);
                let baresec = med(&samples, "baresec", kind);
                match (bare, rv) {
                    (Some(b), Some(r)) => {
                        println!(
                            "bench[{}] {:<18} {:>12.0} {:>12.0} {:>8.3} {:>14} {:>8} {:>15} {:>8} {:>14} {:>14}{base_cell}",
                            label,
                            kind,
                            b,
                            r,
                            r / b,
                            show(nosec),
                            nosec.map_or_else(|| "-".into(), |n| format!("{:.3}", n / b)),
                            show(baresec),
                            baresec.map_or_else(|| "-".into(), |f| format!("{:.3}", r / f)),
                            show(bare_user),
                            show(rv_user)
                        );
                        rows.push(format!("{{\"kind\": \"{kind}\", \"bare_ns\": {b:.1}, \"rvvmm_ns\": {r:.1}, \"ratio\": {:.4}, \"rvvmm_no_seccomp_ns\": {}, \"bare_seccomp_floor_ns\": {}, \"bare_user_ns\": {}, \"rvvmm_user_ns\": {}, \"baseline_user_ns\": {}}}", r / b, json(nosec), json(baresec), json(bare_user), json(rv_user), json(base_user)));
                    }
                    _ => {
                        println!("bench[{}] {:<18} missing samples", label, kind);
                        complete = false;
                    }
                }
            }
        }
        if want("boot") {
            match (boot, lkvm_boot) {
                (Some(b), Some(l)) => println!("bench[{}] linux boot to init + power-off: rvvmm {b:.2} s, kvmtool {l:.2} s, ratio {:.3}", label, b / l),
                (Some(b), None) => println!("bench[{}] linux boot to init + power-off: rvvmm {b:.2} s (no --lkvm given: no kvmtool ratio)", label),
                _ => {
                    println!("bench[{}] linux boot: missing samples", label);
                    complete = false;
                }
            }
            match (huge_boot, boot, lkvm_huge_boot) {
                (Some(h), Some(b), l) => println!(
                    "bench[{}] linux boot in 2 MiB huge pages: rvvmm --hugepages {h:.2} s (ratio to rvvmm without {:.3}){}",
                    label,
                    h / b,
                    l.map(|l| format!(", kvmtool --hugetlbfs {l:.2} s, ratio {:.3}", h / l))
                        .unwrap_or_default()
                ),
                _ => {
                    println!("bench[{}] linux boot with --hugepages: missing samples", label);
                    complete = false;
                }
            }
        }
        if want("blk") {
            match blk {
                (Some(d), Some(w), Some(c)) => println!(
                    "bench[{}] virtio-blk sequential read of {BLK_MIB} MiB: direct (L1 dd of the file) {d:.1} MiB/s; \
                     rvvmm (L2 dd of /dev/vda) warm {w:.1} MiB/s, ratio {:.3}; cold (first touch of guest RAM) {c:.1} MiB/s, ratio {:.3}",
                    label,
                    w / d,
                    c / d
                ),
                _ => {
                    println!("bench[{}] virtio-blk read: missing samples", label);
                    complete = false;
                }
            }
            let (lkvm_warm, lkvm_cold) = (
                med(&samples, "lkvm_warm", "blk_read_mib_s"),
                med(&samples, "lkvm_cold", "blk_read_mib_s"),
            );
            if let (Some(w), Some(c), Some(lw), Some(lc)) = (blk.1, blk.2, lkvm_warm, lkvm_cold) {
                println!(
                    "bench[{}] virtio-blk sequential read, against kvmtool (same guest, file, RAM and vCPU; virtio-mmio): \
                     warm rvvmm {w:.1} MiB/s, kvmtool {lw:.1} MiB/s, ratio {:.3}; cold rvvmm {c:.1} MiB/s, kvmtool {lc:.1} MiB/s, ratio {:.3}",
                    label,
                    w / lw,
                    c / lc
                );
            } else if opts.lkvm.is_some() {
                println!(
                    "bench[{}] virtio-blk read under kvmtool: missing samples",
                    label
                );
                complete = false;
            }
            if let (Some(f), Some(w)) = (blk_guest_floor, blk.1) {
                println!(
                    "bench[{}] virtio-blk against the guest's own floor (L2 dd of a file already in its RAM: \
                     the copy every warm pass also makes) {f:.1} MiB/s: warm / floor {:.3}",
                    label,
                    w / f
                );
            }
        }
        if want("io") {
            complete &= io_bench::report(&label, &samples, &output("bench_io"));
        }
        if want("fs") {
            match (
                med(&samples, "rvvmm", "fs_read_mib_s"),
                med(&samples, "rvvmm", "blk_read_mib_s"),
            ) {
                (Some(fs), Some(blk)) => println!(
                    "bench[{}] virtio-fs beside virtio-blk (the same {fs_mib} MiB file, one guest, page cache dropped before each read): \
                     virtio-fs (virtiofsd in L1) {fs:.1} MiB/s, virtio-blk {blk:.1} MiB/s, ratio fs/blk {:.3}",
                    label,
                    fs / blk
                ),
                _ => {
                    println!("bench[{}] virtio-fs read: missing samples", label);
                    complete = false;
                }
            }
        }
        if want("vsock") {
            let m = |what: &str| med(&samples, "rvvmm", what);
            match (m("vsock_mib_s"), m("tcp_mib_s"), m("vsock_rtt_us"), m("tcp_rtt_us")) {
                (Some(vt), Some(tt), Some(vl), Some(tl)) => println!(
                    "bench[{}] virtio-vsock beside tap + TCP (same boot, guest echoes, {} MiB each way at once; median of {VSOCK_RTTS} one-byte round trips): \
                     throughput vsock {vt:.1} MiB/s, TCP {tt:.1} MiB/s, ratio {:.3}; round trip vsock {vl:.0} us, TCP {tl:.0} us, ratio (TCP/vsock) {:.3}",
                    label,
                    VSOCK_BYTES >> 20,
                    vt / tt,
                    tl / vl
                ),
                _ => {
                    println!("bench[{}] virtio-vsock: missing samples", label);
                    complete = false;
                }
            }
        }
        // Own memory comes from the Linux boots, the first exit from the exit guests: each is
        // reported (and missed) with the part that measures it, so `--only` either works.
        if want("boot") {
            match med(&samples, "rvvmm", "own_memory_kib") {
                Some(mem) => println!(
                    "bench[{}] rvvmm's own memory (peak RSS - resident guest RAM, Linux boot): {mem:.0} KiB",
                    label
                ),
                None => complete = false,
            }
        }
        if want("exits") {
            match med(&samples, "rvvmm", "startup_us") {
                Some(start) => println!(
                    "bench[{}] rvvmm start to first guest exit (bench guest, first instruction exits): {start:.0} us",
                    label
                ),
                None => complete = false,
            }
        }
        if want("startup") {
            if let (Some(bf), Some(be), Some(rf), Some(re)) =
                (startup_floor.0, startup_floor.1, startup.0, startup.2)
            {
                println!(
                    "bench[{}] startup floor (bare KVM loop, same guest flat at RAM base): first instruction {bf:.2} ms (rvvmm / floor {:.3}), exit {be:.2} ms (rvvmm / floor {:.3})",
                    label,
                    rf / bf,
                    re / be
                );
            }
            match startup {
                (Some(rf), Some(lf), Some(re), Some(le)) => println!(
                    "bench[{}] startup, exec to the guest's first instruction (its first byte out): rvvmm {rf:.2} ms, kvmtool {lf:.2} ms, ratio {:.3}; exec to exit: rvvmm {re:.2} ms, kvmtool {le:.2} ms, ratio {:.3}",
                    label,
                    rf / lf,
                    re / le
                ),
                (Some(rf), None, Some(re), None) => println!(
                    "bench[{}] startup, exec to the guest's first instruction (its first byte out): rvvmm {rf:.2} ms; exec to exit: rvvmm {re:.2} ms (no --lkvm given: no kvmtool ratio)",
                    label
                ),
                _ => {
                    println!("bench[{}] startup: missing samples (a run failed?)", label);
                    complete = false;
                }
            }
        }
        if want("idle") {
            println!(
                "bench[{}] idle guest, VMM CPU seconds per {IDLE_S} s (utime + stime, all threads):",
                label
            );
            for (guest, cpus, _) in idle_guests(opts.quick) {
                let what = format!("idle_{guest}_{cpus}");
                let (rv, lk) = (med(&samples, "rvvmm", &what), med(&samples, "lkvm", &what));
                match rv {
                    Some(r) => println!(
                        "bench[{}]   {guest:<15} {cpus} vCPU(s): rvvmm {r:.2} s{}",
                        label,
                        lk.map(|l| format!(", kvmtool {l:.2} s"))
                            .unwrap_or_default()
                    ),
                    None => {
                        println!("bench[{}]   {guest} {cpus}: missing samples", label);
                        complete = false;
                    }
                }
            }
        }
        if want("uboot") && opts.lkvm.is_some() {
            complete &= uboot_diff::report(&label, &output("bench_uboot"));
        }
        if want("snapshot") {
            let (cold, restore) = (
                med(&samples, "cold", "to_shell_answer_ms"),
                med(&samples, "restore", "to_shell_answer_ms"),
            );
            let (write, data, restore_log) = (
                med(&samples, "snapshot", "write_ms"),
                med(&samples, "snapshot", "data_mib"),
                med(&samples, "restore", "restore_ms"),
            );
            match (cold, restore, write, restore_log) {
                (Some(c), Some(r), Some(w), Some(rl)) => println!(
                    "bench[{}] snapshot of a 256 MiB Linux guest at its shell ({} MiB of data): written in {w:.0} ms; \
                     restore to running {rl:.0} ms; exec to a shell answer: restored {r:.0} ms, cold boot {c:.0} ms, ratio {:.3}",
                    label,
                    data.map_or_else(|| "?".into(), |d| format!("{d:.0}")),
                    r / c
                ),
                _ => {
                    println!("bench[{}] snapshot: missing samples", label);
                    complete = false;
                }
            }
        }
        panels.push(chart::Panel {
            title: format!(
                "{} mode (L1 -M {}), kernel {kernel}",
                mode.name(),
                mode.machine()
            ),
            rows: chart_rows(&samples, opts.quick),
        });
        let all: Vec<String> = samples
            .iter()
            .map(|s| {
                format!(
                    "{{\"vmm\": \"{}\", \"what\": \"{}\", \"rep\": {}, \"value\": {:.3}}}",
                    s.vmm, s.what, s.rep, s.value
                )
            })
            .collect();
        let opt = |v: Option<f64>| {
            v.map(|x| format!("{x:.3}"))
                .unwrap_or_else(|| "null".into())
        };
        let _ = writeln!(
            json,
            "    {{\"mode\": \"{}\", \"kernel\": \"{}\", \"l1_kernel\": \"{kernel}\", \"exits\": [{}], \"boot_s\": {{\"rvvmm\": {}, \"rvvmm_hugepages\": {}, \"kvmtool\": {}, \"kvmtool_hugetlbfs\": {}}}, \"blk_read_mib_s\": {{\"rvvmm_warm\": {}, \"rvvmm_cold\": {}, \"kvmtool_warm\": {}, \"kvmtool_cold\": {}, \"direct\": {}, \"guest_in_cache\": {}}}, \"first_output_ms\": {{\"bare\": {}, \"rvvmm\": {}, \"kvmtool\": {}}}, \"exec_to_exit_ms\": {{\"bare\": {}, \"rvvmm\": {}, \"kvmtool\": {}}}, \"own_memory_kib\": {}, \"startup_us\": {}, \"samples\": [{}]}}{}",
            mode.name(),
            k.name(),
            rows.join(", "),
            opt(boot),
            opt(huge_boot),
            opt(lkvm_boot),
            opt(lkvm_huge_boot),
            opt(blk.1),
            opt(blk.2),
            opt(med(&samples, "lkvm_warm", "blk_read_mib_s")),
            opt(med(&samples, "lkvm_cold", "blk_read_mib_s")),
            opt(blk.0),
            opt(blk_guest_floor),
            opt(startup_floor.0),
            opt(startup.0),
            opt(startup.1),
            opt(startup_floor.1),
            opt(startup.2),
            opt(startup.3),
            opt(med(&samples, "rvvmm", "own_memory_kib")),
            opt(med(&samples, "rvvmm", "startup_us")),
            all.join(", "),
            if ri + 1 < runs.len() { "," } else { "" }
        );
    }
    json.push_str("  ]\n}\n");
    let dir = paths::root().join("target/bench");
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let path = dir.join("bench.json");
    fs::write(&path, json).map_err(|e| e.to_string())?;
    println!(
        "bench: every sample, median and ratio in {}",
        path.display()
    );
    let svg_path = dir.join("bench.svg");
    let subtitle = format!(
        "commit {commit}, {} repetitions (medians), nested: QEMU TCG on this host, {}; shorter is better",
        opts.reps,
        prepared.qemu_version()
    );
    fs::write(
        &svg_path,
        chart::svg("rvvmm: each VMM / the reference", &subtitle, &panels),
    )
    .map_err(|e| e.to_string())?;
    println!("bench: the chart in {}", svg_path.display());
    Ok(complete)
}

/// The chart's rows for one mode: what each VMM measured, over the row's reference.
fn chart_rows(samples: &[Sample], quick: bool) -> Vec<chart::Row> {
    use chart::{Row, Vmm};
    let m = |vmm: &str, what: &str| med(samples, vmm, what);
    let mut rows: Vec<Option<Row>> = KINDS
        .iter()
        .map(|kind| {
            Row::new(
                format!("exit: {kind}"),
                "ns",
                Vmm::Floor,
                &[
                    (Vmm::Floor, m("bare", kind)),
                    (Vmm::Rvvmm, m("rvvmm", kind)),
                ],
            )
        })
        .collect();
    for (label, what) in [
        ("startup: exec to first instruction", "first_output_ms"),
        ("startup: exec to exit", "exec_to_exit_ms"),
    ] {
        rows.push(Row::new(
            label,
            "ms",
            Vmm::Kvmtool,
            &[
                (Vmm::Floor, m("bare", what)),
                (Vmm::Rvvmm, m("rvvmm", what)),
                (Vmm::Kvmtool, m("lkvm", what)),
            ],
        ));
    }
    for (label, rvvmm, lkvm) in [
        ("Linux boot to init + power-off", "rvvmm", "lkvm"),
        ("Linux boot, 2 MiB huge pages", "rvvmm_huge", "lkvm_huge"),
    ] {
        rows.push(Row::new(
            label,
            "s",
            Vmm::Kvmtool,
            &[
                (Vmm::Rvvmm, m(rvvmm, "boot_s")),
                (Vmm::Kvmtool, m(lkvm, "boot_s")),
            ],
        ));
    }
    // Throughput as time, so that shorter is better here too.
    let read_s = |v: Option<f64>| v.filter(|v| *v > 0.0).map(|v| BLK_MIB as f64 / v);
    // Against kvmtool where it ran, else against L1's own read.
    let lkvm_read = read_s(m("lkvm_warm", "blk_read_mib_s"));
    rows.push(Row::new(
        format!("virtio-blk read of {BLK_MIB} MiB (warm)"),
        "s",
        if lkvm_read.is_some() {
            Vmm::Kvmtool
        } else {
            Vmm::Floor
        },
        &[
            (Vmm::Floor, read_s(m("direct", "blk_read_mib_s"))),
            (Vmm::Rvvmm, read_s(m("rvvmm_warm", "blk_read_mib_s"))),
            (Vmm::Kvmtool, lkvm_read),
        ],
    ));
    for (guest, cpus, _) in idle_guests(quick) {
        let what = format!("idle_{guest}_{cpus}");
        rows.push(Row::new(
            format!("idle {guest}, {cpus} vCPU(s): CPU per {IDLE_S} s"),
            "s",
            Vmm::Kvmtool,
            &[
                (Vmm::Rvvmm, m("rvvmm", &what)),
                (Vmm::Kvmtool, m("lkvm", &what)),
            ],
        ));
    }
    rows.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_is_a_shell_script_that_parses() {
        for lkvm in [false, true] {
            for case in [
                exits_case(2, lkvm),
                boot_case(2, lkvm),
                blk_case(2, lkvm),
                io_bench::case(2, lkvm, !lkvm),
                fs_case(2, FS_QUICK_MIB),
                vsock_case(2),
                startup_case(2, lkvm),
                idle_case(2, lkvm, !lkvm),
                snapshot_case(2),
                uboot_diff::case(LKVM_FLAGS),
            ] {
                plan::shell_parses(&case).unwrap();
            }
        }
    }

    #[test]
    fn the_quick_idle_set_is_part_of_the_full_one() {
        assert_eq!(idle_guests(true).count(), IDLE_QUICK.len());
        assert_eq!(idle_guests(false).count(), IDLE_GUESTS.len());
    }

    #[test]
    fn samples_are_parsed_and_compared() {
        let out = "@@S bare hypercall 1 BENCH kind=hypercall n=20000 ticks=600000\n\
                   @@S rvvmm hypercall 1 [..] first guest exit 1500 us after rvvmm started BENCH kind=hypercall n=20000 ticks=630000 \n\
                   @@S rvvmm mmio_read 1 \n";
        let s = exit_samples(out);
        assert_eq!(s.len(), 3);
        assert_eq!(med(&s, "rvvmm", "startup_us"), Some(1500.0));
        assert_eq!(med(&s, "bare", "hypercall"), Some(3000.0));
        assert_eq!(med(&s, "rvvmm", "hypercall"), Some(3150.0));
        let timed = exit_samples(
            "@@S bare_t mmio_write 1 BENCH kind=mmio_write n=20000 ticks=700000 EXIT-TIMING exits=20040 user_ticks=40080\n\
             @@S rvvmm_t mmio_write 1 [..] INFO  rvvmm::hypervisor::kvm] EXIT-TIMING exits=20050 user_ticks=601500\n\
             @@S rvvmm_t sbi_in_kernel 1 BENCH kind=sbi_in_kernel n=20000 ticks=2 EXIT-TIMING exits=40 user_ticks=900\n",
        );
        assert_eq!(
            timed.len(),
            2,
            "timed runs give no guest-timed sample; few exits no figure"
        );
        assert_eq!(med(&timed, "bare", "mmio_write_user"), Some(200.0));
        assert_eq!(med(&timed, "rvvmm", "mmio_write_user"), Some(3000.0));
        assert_eq!(med(&timed, "rvvmm", "mmio_write"), None);
        let boots = "@@L rvvmm 1 [..] first guest exit 2100 us after rvvmm started\n\
                     @@L rvvmm 1 [..] memory: peak RSS 9000 KiB, guest RAM resident 6000 KiB, rvvmm's own 3000 KiB\n\
                     @@L rvvmm 1 @@L2 init reached, uptime 1.7 s\n\
                     @@BOOT rvvmm 1 rc=0 wall=3.9\n\
                     @@BOOT lkvm 1 rc=0 wall=4.5\n";
        let b = boot_samples(boots);
        assert_eq!(med(&b, "rvvmm", "boot_s"), Some(3.9));
        assert_eq!(
            med(&b, "lkvm", "boot_s"),
            None,
            "kvmtool never reached init"
        );
        assert_eq!(med(&b, "rvvmm", "linux_first_exit_us"), Some(2100.0));
        assert_eq!(med(&b, "rvvmm", "own_memory_kib"), Some(3000.0));
        let blk = blk_samples(
            "@@BLK direct 1 0.5\n@@BLK rvvmm_warm 1 2\n@@BLK rvvmm_cold 2 \n@@BLK lkvm_warm 1 4\n",
        );
        assert_eq!(med(&blk, "lkvm_warm", "blk_read_mib_s"), Some(64.0));
        assert_eq!(med(&blk, "direct", "blk_read_mib_s"), Some(512.0));
        assert_eq!(med(&blk, "rvvmm_warm", "blk_read_mib_s"), Some(128.0));
        assert_eq!(blk.len(), 3, "a run without a time is no sample");
        let fs = fs_samples("@@FSB 1 blk 2\n@@FSB 1 fs 4\n@@FSB 2 fs \n", 256);
        assert_eq!(med(&fs, "rvvmm", "blk_read_mib_s"), Some(128.0));
        assert_eq!(med(&fs, "rvvmm", "fs_read_mib_s"), Some(64.0));
        assert_eq!(fs.len(), 2);
        let vb = vsock_samples(
            "@@VB 1 @@VSOCK sent 10485760 bytes sha256 a, received 10485760 bytes sha256 a in 0.500 s (20.0 MiB/s each way), intact\n\
             @@VB 1 @@VSOCK round trip median 4000 us over 100\n\
             @@VB 1 @@TCP sent 10485760 bytes sha256 a, received 10 bytes sha256 b in 1.000 s (10.0 MiB/s each way), DIFFERENT\n\
             @@VB 1 @@TCP round trip median 2000 us over 100\n",
        );
        assert_eq!(med(&vb, "rvvmm", "vsock_mib_s"), Some(20.0));
        assert_eq!(med(&vb, "rvvmm", "vsock_rtt_us"), Some(4000.0));
        assert_eq!(med(&vb, "rvvmm", "tcp_rtt_us"), Some(2000.0));
        assert_eq!(
            med(&vb, "rvvmm", "tcp_mib_s"),
            None,
            "data that came back wrong is no sample"
        );
        let s = startup_samples(
            "@@EXEC rvvmm 1 first_output_us=8000 exit_us=15000 rc=0\n\
             @@EXEC lkvm 1 first_output_us=-1 exit_us=9000 rc=0\n\
             @@EXEC lkvm 2 first_output_us=9000 exit_us=9000 rc=139\n",
        );
        assert_eq!(med(&s, "rvvmm", "first_output_ms"), Some(8.0));
        assert_eq!(med(&s, "rvvmm", "exec_to_exit_ms"), Some(15.0));
        assert_eq!(
            med(&s, "lkvm", "first_output_ms"),
            None,
            "no byte, or a crash"
        );
        assert_eq!(med(&s, "lkvm", "exec_to_exit_ms"), Some(9.0));
        let c = boot_case(3, true);
        assert!(c.cmd.contains("/lkvm run") && c.cmd.contains("seq 1 3"));
        let c = startup_case(2, false);
        assert!(c.cmd.contains("/bare-kvm /guests/bench_startup_flat.bin"));
        assert!(
            !c.cmd.contains("bare rvvmm lkvm"),
            "no kvmtool without --lkvm"
        );
    }
}

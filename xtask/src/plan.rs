//! The lab's test plan: what runs inside L1, and how its console output is judged.
//!
//! Each case is a shell command run by L1's init with a time limit. Its output is framed by
//! `@@CASE name` / `@@END name rc=N` markers on the serial console, and judged here on the host:
//! exit status, lines that must appear, lines that must not, and optional extra checks.

use crate::mode::Mode;

/// An extra check on a case's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Nothing beyond status and text.
    None,
    /// rvvmm's "VmRSS at start" and "VmRSS at exit" lines differ by at most this many KiB.
    RssGrowthAtMost(u64),
    /// This many `@@RUN n rc=0 wall=S` lines, each boot having reached init; reports medians.
    BootRuns(usize),
    /// The output holds a base64 dtb between `@@DTB` and `@@ENDDTB` that dtc decompiles.
    DtcReadsBack,
    /// Every L2 boot reached init within this many seconds of guest uptime (a lost IPI or
    /// interrupt shows as a boot that crawls through time-outs, not as a failure).
    InitWithin(u32),
    /// The first output line starting with this text goes into the result line.
    Report(&'static str),
    /// These texts appear in this order; lines starting with `@@API ` go into the result line.
    InOrder(&'static [&'static str]),
    /// Every `@@IDLE ... ticks=N` line has N at most this (rvvmm's CPU time, in 10 ms ticks,
    /// over a window of an idle guest); the lines go into the result line.
    IdleTicksAtMost(u64),
}

/// One lab case.
#[derive(Debug, Clone)]
pub struct Case {
    /// Short name, unique.
    pub name: &'static str,
    /// Shell command run in L1 (rvvmm is /rvvmm, guests are /guests/NAME.bin).
    pub cmd: &'static str,
    /// Bytes fed to the command's stdin (else /dev/null).
    pub stdin: Option<&'static str>,
    /// Expected exit status.
    pub rc: i32,
    /// Text that must appear in the output, in any mode.
    pub expect: &'static [&'static str],
    /// Text that must appear only in PLIC mode / only in AIA mode.
    pub expect_plic: &'static [&'static str],
    /// See `expect_plic`.
    pub expect_aia: &'static [&'static str],
    /// Text that must not appear (besides [`ALWAYS_REJECT`]).
    pub reject: &'static [&'static str],
    /// Extra check.
    pub check: Check,
    /// Seconds before the case is killed (a hang fails the case, not the lab).
    pub timeout: u32,
    /// The case exercises nothing of the interrupt controller (its guest takes no interrupt
    /// and no irqchip state is made twice or saved), or proves no interrupt path
    /// ([`ONE_MODE`]): it runs in the first mode of a lab run only.
    pub one_mode: bool,
    /// The L1 kernels (KVM versions) the case runs on.
    pub needs: Needs,
    /// The case exercises rvvmm's own logic (its threads, host files, API, console), which
    /// no KVM version changes: it runs on the first kernel of a lab run only ([`ONE_KERNEL`]).
    pub one_kernel: bool,
    /// On kernels after the first, the case runs in AIA mode only ([`LATER_KERNELS_AIA_ONLY`]).
    pub later_kernels_aia_only: bool,
}

/// Which L1 kernels a case runs on: a case that depends on a KVM feature says which, and
/// which Linux version brought it; on other kernels it is skipped, visibly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Every kernel.
    Any,
    /// KVM of Linux (major, minor) or later, for the named feature.
    Since(u64, u64, &'static str),
    /// KVM older than Linux (major, minor): what a guest sees without the named feature.
    Before(u64, u64, &'static str),
}

impl Needs {
    /// `None` when the case runs on an L1 kernel of `release` (`uname -r`); else why not.
    pub fn skip_on(self, release: &str) -> Option<String> {
        let key = crate::kernel::version_key(release);
        let part = |i: usize| key.get(i).copied().unwrap_or(0);
        let have = (part(0), part(1));
        match self {
            Needs::Any => None,
            Needs::Since(major, minor, what) if have < (major, minor) => Some(format!(
                "needs KVM of Linux {major}.{minor} or later ({what}); this L1 runs {release}"
            )),
            Needs::Before(major, minor, what) if have >= (major, minor) => Some(format!(
                "shows a KVM older than Linux {major}.{minor} (without {what}); this L1 runs {release}"
            )),
            _ => None,
        }
    }
}

pub const fn case(
    name: &'static str,
    cmd: &'static str,
    rc: i32,
    expect: &'static [&'static str],
) -> Case {
    Case {
        name,
        cmd,
        stdin: None,
        rc,
        expect,
        expect_plic: &[],
        expect_aia: &[],
        reject: &[],
        check: Check::None,
        timeout: 120,
        one_mode: false,
        needs: Needs::Any,
        one_kernel: false,
        later_kernels_aia_only: false,
    }
}

/// `c`, run in one mode only (see [`Case::one_mode`]).
pub const fn one_mode(c: Case) -> Case {
    Case {
        one_mode: true,
        ..c
    }
}

/// A case command built at run time, kept for the whole run (cases hold `&'static str`).
pub fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// A Linux guest's shell driven through rvvmm's stdin: `commands` are typed one a second once
/// the L2 init says its shell is ready (or rvvmm has failed, so the feeder never waits forever).
/// `flags` go to rvvmm; `console` is the guest's console device.
fn shell_session(flags: &str, console: &str, commands: &[&str]) -> &'static str {
    let typed: String = commands
        .iter()
        .map(|c| format!("sleep 1; echo '{c}'; "))
        .collect();
    let script = format!(
        "rm -f /tmp/in /tmp/ready; mkfifo /tmp/in\n\
         ( while [ ! -e /tmp/ready ]; do sleep 0.2; done; {typed}) > /tmp/in &\n\
         ( /rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --memory 256M {flags} \
         --cmdline 'console={console} quiet rvvmm.test=shell' < /tmp/in 2>&1 || touch /tmp/ready ) | \
         while IFS= read -r line; do echo \"$line\"; case \"$line\" in *'@@L2 shell ready'*) touch /tmp/ready;; esac; done"
    );
    leak(script)
}

/// 200 runs of a guest that asks to stop through the finisher and then prints `AFTER-STOP`
/// forever: every run must exit 42 and none may print it (a guest that asked to stop never
/// runs another instruction). One summary line, and a line for each run that went wrong.
fn stop_race(guest: &str) -> &'static str {
    leak(format!(
        "ok=0; ran_on=0\n\
         for i in $(seq 1 200); do\n\
         /rvvmm --kernel /guests/{guest}.bin > /tmp/race.out 2>&1; rc=$?\n\
         if [ $rc -eq 42 ]; then ok=$((ok+1)); else echo \"run $i: status $rc\"; fi\n\
         if grep -q AFTER-STOP /tmp/race.out; then ran_on=$((ran_on+1)); echo \"run $i ran on: $(grep -c AFTER-STOP /tmp/race.out) sentinel lines\"; fi\n\
         done\n\
         echo \"{guest}: $ok of 200 runs exited 42, $ran_on ran on after the stop\""
    ))
}

/// A Linux guest started with `--api-socket`, driven by `rvvmm remote` while a disk write runs
/// in it: ping, info, pause (rvvmm's CPU time over 5 s of pause), resume (the write completes,
/// a typed command answers), counters, `vm.shutdown`, then `vmm.shutdown` (status 0).
fn api_session() -> &'static str {
    r#"rm -f /tmp/api.sock /tmp/in /tmp/ready; mkfifo /tmp/in
dd if=/dev/zero of=/tmp/api-disk.img bs=1M count=128 2>/dev/null
R="/rvvmm remote --api-socket /tmp/api.sock"
(
  while [ ! -e /tmp/ready ]; do sleep 0.2; done
  sleep 1
  $R ping | grep -q '"pid"' && echo "@@API ping ok" >&2
  $R info | grep '"state"' >&2
  echo 'dd if=/dev/zero of=/dev/vda bs=1M count=96 conv=fsync 2>&1 | tail -n 1; echo disk-write-done-$((6*7))'
  sleep 0.5
  $R pause && echo "@@API paused" >&2
  $R info | grep '"state"' >&2
  pid=$(pidof rvvmm | tr ' ' '
' | head -n 1)
  t0=$(awk '{ print $14 + $15 }' /proc/$pid/stat)
  sleep 5
  t1=$(awk '{ print $14 + $15 }' /proc/$pid/stat)
  echo "@@API cpu while paused 5 s: $((t1 - t0)) ticks of 10 ms" >&2
  $R pause || echo "@@API second pause refused" >&2
  grep -q disk-write-done-42 /tmp/api.out && echo "@@API the disk write ended before the pause" >&2
  $R resume && echo "@@API resumed" >&2
  $R info | grep '"state"' >&2
  sleep 1
  echo 'echo after-resume-$((6*7))'
  # The shell runs the typed echo only once the dd has ended: wait for both answers.
  for i in $(seq 1 120); do sleep 1; grep -q disk-write-done-42 /tmp/api.out && grep -q after-resume-42 /tmp/api.out && break; done
  grep -q disk-write-done-42 /tmp/api.out && echo "@@API the disk write issued before the pause completed after it" >&2
  grep -q after-resume-42 /tmp/api.out && echo "@@API the shell answered after resume" >&2
  $R counters >&2
  $R shutdown && echo "@@API vm.shutdown done" >&2
  $R info | grep '"state"' >&2
  $R shutdown-vmm && echo "@@API vmm.shutdown done" >&2
) > /tmp/in 2>/tmp/api.feed &
( /rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --memory 256M --disk /tmp/api-disk.img --api-socket /tmp/api.sock --cmdline 'console=ttyS0 quiet rvvmm.test=shell' < /tmp/in; echo "@@API rvvmm status $?" ) 2>&1 | tee /tmp/api.out |   while IFS= read -r line; do case "$line" in *'@@L2 shell ready'*) touch /tmp/ready;; esac; done
wait
echo '--- guest and rvvmm'; cat /tmp/api.out
echo '--- rvvmm remote'; cat /tmp/api.feed"#
}

/// Snapshot and restore of a 2-vCPU Linux guest with a disk, an rng and a tap: a shell counts
/// ticks; the VM is paused, snapshotted and rvvmm is killed (SIGKILL); a fresh rvvmm restores
/// it (paused), resumes it, and the guest shows what it kept: the tick count goes on where it
/// stopped, both harts run a task, the ext4 mounted before the snapshot takes a write, ping
/// over the tap answers, its clock did not go back. Then the same snapshot (and the disk as it
/// was) is restored again and resumes in the same state; damaged snapshots are refused. Each
/// typed power-off waits for the console to drain first (`stty` applies a setting with
/// TCSADRAIN), as the L2 init does: on 7.2 in PLIC mode `poweroff -f` right after an `echo`
/// once lost the echo's line (`ping-42`) in a CI run.
fn snapshot_session() -> &'static str {
    r#"rm -rf /tmp/snap /tmp/snap?.sock /tmp/sin1 /tmp/sin2 /tmp/sin3 /tmp/sready; mkfifo /tmp/sin1 /tmp/sin2 /tmp/sin3
cp /l2/disk.img /tmp/snap-disk.img
tunctl -t tap1 >/dev/null && ifconfig tap1 10.0.3.1 netmask 255.255.255.0 up
(
  while [ ! -e /tmp/sready ]; do sleep 0.2; done
  sleep 1
  echo 'ifconfig lo 127.0.0.1 up; ifconfig eth0 10.0.3.2 netmask 255.255.255.0 up; mkdir -p /mnt; mount -t ext4 /dev/vda /mnt && echo mounted-$((6*7))'
  sleep 1
  echo 'date +%s > /tmp/before; (i=0; while true; do i=$((i+1)); echo tick-$i; sleep 1; done) &'
  sleep 6
  R="/rvvmm remote --api-socket /tmp/snap1.sock"
  $R pause && echo "@@SNAP paused" >&2
  $R snapshot file:///tmp/snap && echo "@@SNAP snapshot taken" >&2
  kill -9 $(pidof rvvmm) && echo "@@SNAP first rvvmm killed" >&2
) > /tmp/sin1 2>/tmp/snap.feed &
( RUST_LOG=rvvmm=info /rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --cpus 2 --memory 256M --disk /tmp/snap-disk.img --rng --net tap=tap1,mac=52:54:00:00:00:03 --api-socket /tmp/snap1.sock --cmdline 'console=ttyS0 quiet rvvmm.test=shell' < /tmp/sin1; echo "@@SNAP first rvvmm status $?" ) 2>&1 | tee /tmp/snap1.out | while IFS= read -r line; do case "$line" in *'@@L2 shell ready'*) touch /tmp/sready;; esac; done
wait
cat /tmp/snap.feed
ls -ls /tmp/snap
cp /tmp/snap-disk.img /tmp/snap-disk-at-snapshot.img
last=$(grep -o 'tick-[0-9]*' /tmp/snap1.out | tail -n 1 | cut -d- -f2)
echo "@@SNAP last tick before the snapshot: $last"

restore() { # $1: fifo, $2: socket, $3: output, $4: commands after resume
  (
    for i in $(seq 1 100); do [ -S $2 ] && break; sleep 0.1; done
    R="/rvvmm remote --api-socket $2"
    $R info | grep '"state"' >&2
    $R resume && echo "@@SNAP resumed" >&2
    sleep 3
    echo "$4"
    # The fifo stays open until the guest has powered off (8 s at most), not a fixed 8 s.
    for i in $(seq 1 80); do grep -q 'reboot: Power down' $3 && break; sleep 0.1; done
  ) > $1 2>>/tmp/snap.feed2 &
  RUST_LOG=rvvmm=info /rvvmm --restore source_url=file:///tmp/snap --api-socket $2 < $1 > $3 2>&1
  echo "@@SNAP restored rvvmm status $?"
  wait
}
: > /tmp/snap.feed2
restore /tmp/sin2 /tmp/snap2.sock /tmp/snap2.out 'echo clock-$(( $(date +%s) >= $(cat /tmp/before) )); echo cpus-$(grep -c ^processor /proc/cpuinfo); taskset -c 1 echo hart1-$((6*7)); taskset -c 0 echo hart0-$((6*7)); echo restored-$((6*7)) > /mnt/after.txt && sync && echo disk-$(cat /mnt/after.txt); cat /mnt/hello.txt; ping -c 2 -W 5 10.0.3.1 >/dev/null && echo ping-$((6*7)); umount /mnt; timeout 5 stty cs8 0<&1 2>/dev/null; poweroff -f'
cat /tmp/snap.feed2
first=$(grep -o 'tick-[0-9]*' /tmp/snap2.out | head -n 1 | cut -d- -f2)
echo "@@SNAP first tick after the restore: $first"
[ -n "$first" ] && [ -n "$last" ] && [ "$first" -gt "$last" ] && [ "$first" -le $((last + 2)) ] && echo "@@SNAP the count went on from $last to $first"
grep -E 'clock-|cpus-|hart[01]-|disk-|ping-|made by the lab|snapshot of|restored in|snapshot RAM' /tmp/snap1.out /tmp/snap2.out | sed 's/^/@@SNAP /'

cp /tmp/snap-disk-at-snapshot.img /tmp/snap-disk.img
: > /tmp/snap.feed2
restore /tmp/sin3 /tmp/snap3.sock /tmp/snap3.out 'echo again-$((6*7)); timeout 5 stty cs8 0<&1 2>/dev/null; poweroff -f'
again=$(grep -o 'tick-[0-9]*' /tmp/snap3.out | head -n 1 | cut -d- -f2)
grep -q again-42 /tmp/snap3.out && [ "$again" = "$first" ] && echo "@@SNAP restored twice: the same first tick $again"

mkdir -p /tmp/bad1 /tmp/bad2
# L1's RAM holds its files: the damaged copies share or cut the 256 MiB memory file, not copy it.
for f in /tmp/snap/*; do case "$f" in */memory.bin) ;; *) cp "$f" /tmp/bad1/; cp "$f" /tmp/bad2/;; esac; done
head -c 1048576 /tmp/snap/memory.bin > /tmp/bad1/memory.bin
ln /tmp/snap/memory.bin /tmp/bad2/memory.bin
/rvvmm --restore source_url=file:///tmp/bad1; echo "@@SNAP truncated RAM: status $?"
printf 'X' | dd of=/tmp/bad2/state.snap bs=1 seek=9 conv=notrunc 2>/dev/null
/rvvmm --restore source_url=file:///tmp/bad2; echo "@@SNAP flipped header byte: status $?"
ifconfig tap1 down; tunctl -d tap1 >/dev/null
echo '--- first rvvmm'; cat /tmp/snap1.out
echo '--- restored rvvmm'; cat /tmp/snap2.out"#
}

/// rvvmm running Debian's U-Boot (`u-boot.bin`, flat, at RAM + 2 MiB) on the lab's boot disk;
/// the U-Boot sessions below append their own flags and redirections.
pub const UBOOT_RVVMM: &str =
    "/rvvmm --kernel /l2/u-boot.bin --memory 512M --disk /l2/boot-disk.img,readonly";

/// U-Boot at its prompt under `vmm` (a command line, e.g. [`UBOOT_RVVMM`]), its console in
/// `/tmp/ub-{tag}.out`: stop the autoboot, scan the virtio-mmio disk, list its partition and
/// files, reset (SBI SRST: rvvmm reboots the guest; kvmtool ends), stop the autoboot again,
/// power off. `@@UB {tag} status N`: the VMM's exit status.
pub fn uboot_session(vmm: &str, tag: &str) -> String {
    format!(
        r#"rm -f /tmp/ub.in /tmp/ub.done; mkfifo /tmp/ub.in; : > /tmp/ub-{tag}.out
until_seen() {{ for i in $(seq 1 600); do [ "$(grep -c "$1" /tmp/ub-{tag}.out)" -ge "$2" ] && return 0; [ -e /tmp/ub.done ] && return 1; sleep 0.1; done; echo "@@UB no '$1' x$2" >&2; }}
(
  until_seen 'Hit any key' 1; printf 'x'; until_seen '=> ' 1
  echo 'virtio scan'; sleep 1; echo 'virtio info'; sleep 1
  echo 'part list virtio 0'; sleep 1; echo 'ls virtio 0:1 /extlinux'; sleep 1
  echo 'reset'
  until_seen 'Hit any key' 2 || exit 0; printf 'x'; sleep 1
  echo 'poweroff'; sleep 5
) > /tmp/ub.in &
{vmm} < /tmp/ub.in > /tmp/ub-{tag}.out 2>&1
echo "@@UB {tag} status $?"; touch /tmp/ub.done
wait"#
    )
}

/// The Debian kernel started as an EFI application under `vmm`, the way an installed Debian
/// boots, its console in `/tmp/ue-{tag}.out`: U-Boot's distro EFI script (`scan_dev_for_efi`,
/// what its autoboot runs on a disk without extlinux) runs its EFI boot manager, which with no
/// Boot#### variable boots the removable-media binary `\EFI\BOOT\BOOTRISCV64.EFI`: GRUB, on
/// the boot disk's second partition (`lab::boot_disk`). GRUB boots the kernel (a PE image: the
/// Linux EFI stub) with the initramfs, which it hands over through the LoadFile2 protocol (the
/// kernel's `efi: ... INITRD=` line). Typed at U-Boot's prompt: only which partition to scan
/// (Debian's build has no `bootmeth` command to put EFI before extlinux). `/l2/bootriscv64.efi`
/// is the same GRUB, named so that a host without grub-mkimage skips the case.
pub fn uboot_efi_session(vmm: &str, tag: &str) -> String {
    format!(
        r#"test -e /l2/bootriscv64.efi || exit 1
rm -f /tmp/ue.in /tmp/ue.done; mkfifo /tmp/ue.in; : > /tmp/ue-{tag}.out
until_seen() {{ for i in $(seq 1 1500); do [ "$(grep -c "$1" /tmp/ue-{tag}.out)" -ge "$2" ] && return 0; [ -e /tmp/ue.done ] && return 1; sleep 0.1; done; echo "@@UE no '$1' x$2" >&2; }}
(
  until_seen 'Hit any key' 1; printf 'x'; until_seen '=> ' 1
  echo 'virtio scan'; sleep 1
  # A line at a time: kvmtool's UART drops what overflows its 64-byte FIFO.
  echo 'setenv devtype virtio'; sleep 1; echo 'setenv devnum 0'; sleep 1; echo 'setenv distro_bootpart 2'; sleep 1
  echo 'run scan_dev_for_efi'
  until_seen '@@L2 powering off' 1; sleep 5
) > /tmp/ue.in &
timeout 260 {vmm} < /tmp/ue.in > /tmp/ue-{tag}.out 2>&1
echo "@@UE {tag} status $?"; touch /tmp/ue.done
wait"#
    )
}

/// rvvmm's hybrid vsock: the host's connection through /tmp/v.sock reaches the guest's echo
/// listener (10 MiB there and back, sha256 of both; then 100 one-byte round trips), the
/// guest's connection to CID 2 port 6000 reaches the host's listener on /tmp/v.sock_6000, and
/// a host client killed with the echo unread in its socket (it never reads) leaves the guest
/// an I/O error while rvvmm runs on and says so.
fn vsock_session() -> &'static str {
    r#"rm -f /tmp/v.sock /tmp/v.sock_6000
timeout 300 /vsock-tool unix-serve /tmp/v.sock_6000 > /tmp/vhost.out 2>&1 &
for i in $(seq 1 50); do [ -S /tmp/v.sock_6000 ] && break; sleep 0.1; done
RUST_LOG=rvvmm=info /rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --memory 256M --vsock cid=3,socket=/tmp/v.sock --timeout 400s --cmdline 'console=ttyS0 quiet rvvmm.test=vsock rvvmm.vsock_conns=3' > /tmp/vs.out 2> /tmp/vs.err &
pid=$!
for i in $(seq 1 900); do grep -q '@@VSOCK listening on port 5000' /tmp/vs.out && break; sleep 0.2; done
timeout 120 /vsock-tool hybrid /tmp/v.sock 5000 10485760; echo "@@VS hybrid status $?"
timeout 60 /vsock-tool hybrid-rtt /tmp/v.sock 5000 100; echo "@@VS rtt status $?"
/vsock-tool hybrid-stall /tmp/v.sock 5000 & victim=$!
sleep 3; kill -9 $victim
wait $pid; echo "@@VS rvvmm status $?"
echo "@@VS socket left behind: $(ls /tmp/v.sock 2>/dev/null)"
# rvvmm's log apart from the guest's console: a log line cannot split a console line.
cat /tmp/vhost.out /tmp/vs.out /tmp/vs.err"#
}

/// vsock across a snapshot: a host connection is open to the guest's echo listener when the
/// VM is snapshotted and the first rvvmm killed; after the restore the guest hears the
/// transport reset (its side of that connection fails at once, instead of waiting forever for
/// a host that is gone), and a new host connection through the restored rvvmm's socket is
/// served.
fn vsock_snapshot_session() -> &'static str {
    r#"rm -rf /tmp/vsnap /tmp/vs1.sock /tmp/vs2.sock /tmp/vv.sock /tmp/vv.sock_6000
timeout 300 /vsock-tool unix-serve /tmp/vv.sock_6000 > /dev/null 2>&1 &
RUST_LOG=rvvmm=info /rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --memory 256M --vsock cid=3,socket=/tmp/vv.sock --api-socket /tmp/vs1.sock --cmdline 'console=ttyS0 quiet rvvmm.test=vsock rvvmm.vsock_conns=3' < /dev/null > /tmp/vsn1.out 2> /tmp/vsn1.err &
pid=$!
for i in $(seq 1 900); do grep -q '@@VSOCK listening on port 5000' /tmp/vsn1.out && break; sleep 0.2; done
timeout 60 /vsock-tool hybrid-rtt /tmp/vv.sock 5000 10; echo "@@VSNAP before: rtt status $?"
# A connection held open and idle across the snapshot: after the restore only rvvmm's
# transport-reset event can end it in the guest (no traffic raises another interrupt).
/vsock-tool hybrid-hold /tmp/vv.sock 5000 > /tmp/held.out 2>&1 & held=$!
for i in $(seq 1 100); do grep -q 'holding' /tmp/held.out && break; sleep 0.1; done
R="/rvvmm remote --api-socket /tmp/vs1.sock"
$R pause && $R snapshot file:///tmp/vsnap && echo "@@VSNAP snapshot taken"
kill -9 $pid $held; wait $pid 2>/dev/null
# The killed rvvmm could not remove its socket: the restored one takes it over.
echo "@@VSNAP left by the killed rvvmm: $(ls /tmp/vv.sock)"
RUST_LOG=rvvmm=info /rvvmm --restore source_url=file:///tmp/vsnap --api-socket /tmp/vs2.sock < /dev/null > /tmp/vsn2.out 2> /tmp/vsn2.err &
pid=$!
for i in $(seq 1 100); do [ -S /tmp/vs2.sock ] && break; sleep 0.1; done
/rvvmm remote --api-socket /tmp/vs2.sock resume && echo "@@VSNAP resumed"
# The guest handles the transport reset in a work item after the resume, resetting every
# connected socket: a connection made before it has run would be reset too. Its sign is the
# held connection's error.
for i in $(seq 1 150); do grep -q '@@VSOCK error' /tmp/vsn2.out && echo "@@VSNAP the held connection was reset in the guest" && break; sleep 0.2; done
timeout 60 /vsock-tool hybrid-rtt /tmp/vv.sock 5000 10; echo "@@VSNAP after: rtt status $?"
for i in $(seq 1 600); do kill -0 $pid 2>/dev/null || break; sleep 0.2; done
kill $pid 2>/dev/null; wait $pid; echo "@@VSNAP restored rvvmm status $?"
echo '--- first rvvmm'; cat /tmp/vsn1.out /tmp/vsn1.err
echo '--- restored rvvmm'; sed 's/^/R: /' /tmp/vsn2.out; cat /tmp/vsn2.err"#
}

/// Starts virtiofsd in L1 on `dir` at `socket` (the shell's `$vfsd` is its pid): Debian's
/// build through its dynamic loader with its libraries in /vfs/lib; no sandbox (L1's root
/// is an initramfs, which a namespace sandbox cannot pivot_root away from).
pub(crate) fn start_virtiofsd(dir: &str, socket: &str) -> String {
    format!(
        "rm -f {socket}
         /vfs/lib/ld-linux-riscv64-lp64d.so.1 --library-path /vfs/lib /vfs/virtiofsd --socket-path={socket} --shared-dir={dir} --sandbox=none --seccomp=none > /tmp/virtiofsd.log 2>&1 &
         vfsd=$!
         for i in $(seq 1 100); do [ -S {socket} ] && break; sleep 0.1; done
         [ -S {socket} ] || {{ echo '@@FS virtiofsd did not start'; cat /tmp/virtiofsd.log; }}
"
    )
}

/// virtio-fs with L1's virtiofsd: L2 mounts the share, runs a static binary from it, reads a
/// 64 MiB file (its sha256 against L1's), writes a file L1 then reads; then the same with
/// guest RAM in huge pages (a hugetlb memfd), before and after a guest reboot.
fn fs_session() -> &'static str {
    leak(format!(
        r#"rm -rf /tmp/share; mkdir -p /tmp/share
cp /bin/busybox /tmp/share/busybox
dd if=/dev/urandom of=/tmp/share/big bs=1M count=64 2>/dev/null
l1sum=$(sha256sum /tmp/share/big | cut -d' ' -f1)
{start}RUST_LOG=rvvmm=info /rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --memory 256M --fs tag=share,socket=/tmp/vfs.sock --cmdline 'console=ttyS0 quiet rvvmm.test=fs rvvmm.fs_tag=share' < /dev/null > /tmp/fs.out 2> /tmp/fs.err
echo "@@FS rvvmm status $?"
l2sum=$(grep -o '@@L2 fs big sha256 [0-9a-f]*' /tmp/fs.out | cut -d' ' -f5)
echo "@@FS sha256 in L1 $l1sum, in L2 $l2sum"
[ -n "$l2sum" ] && [ "$l2sum" = "$l1sum" ] && echo "@@FS the 64 MiB file read in L2 is intact"
echo "@@FS L1 reads what L2 wrote: $(cat /tmp/share/from-l2)"
wait $vfsd; echo "@@FS virtiofsd ended with rvvmm's connection: status $?"
rm -f /tmp/share/big /tmp/share/from-l2
echo $(( $(cat /proc/sys/vm/nr_hugepages) + 128 )) > /proc/sys/vm/nr_hugepages
{start}RUST_LOG=rvvmm=info /rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --memory 256M --hugepages --fs tag=share,socket=/tmp/vfs.sock --cmdline 'console=ttyS0 quiet rvvmm.test=fs rvvmm.fs_tag=share rvvmm.fs_reboot=1' < /dev/null > /tmp/fsh.out 2> /tmp/fsh.err
echo "@@FS hugepages: rvvmm status $?"
echo "@@FS hugepages: L1 reads what L2 wrote: $(cat /tmp/share/from-l2)"
kill $vfsd 2>/dev/null; wait $vfsd
cat /tmp/fs.out /tmp/fs.err; sed 's/^/H: /' /tmp/fsh.out /tmp/fsh.err"#,
        start = start_virtiofsd("/tmp/share", "/tmp/vfs.sock")
    ))
}

/// virtiofsd killed under a mounted share: the guest's next request fails (EIO, not a hang),
/// rvvmm says so once and runs on, and the guest powers off as usual.
fn fs_dead_session() -> &'static str {
    leak(format!(
        r#"rm -rf /tmp/share2; mkdir -p /tmp/share2; echo made-in-L1 > /tmp/share2/before
{start}RUST_LOG=rvvmm=info /rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --memory 256M --fs tag=dying,socket=/tmp/vfs2.sock --cmdline 'console=ttyS0 quiet rvvmm.test=fs-dead rvvmm.fs_tag=dying' < /dev/null > /tmp/fsd.out 2> /tmp/fsd.err &
pid=$!
for i in $(seq 1 900); do grep -q '@@L2 fs ready' /tmp/fsd.out && break; sleep 0.2; done
kill -9 $vfsd; wait $vfsd 2>/dev/null; echo "@@FSD virtiofsd killed"
for i in $(seq 1 600); do kill -0 $pid 2>/dev/null || break; sleep 0.2; done
kill $pid 2>/dev/null; wait $pid; echo "@@FSD rvvmm status $?"
echo "@@FSD lines saying so: $(grep -c 'hung up; the guest' /tmp/fsd.err)"
cat /tmp/fsd.out /tmp/fsd.err"#,
        start = start_virtiofsd("/tmp/share2", "/tmp/vfs2.sock")
    ))
}

/// A guest floods the console (256 KiB through SBI DBCN) while nobody reads rvvmm's stdout (a
/// pipe into `sleep`): rvvmm waits 2 s, then drops the output, and the guest's power-off goes
/// through; rvvmm says so on stderr. Before, the first full pipe held the vCPU forever, and the
/// power-off behind it.
fn flood_session(flags: &str) -> &'static str {
    leak(format!(
        r#"rm -f /tmp/flood.rc /tmp/flood.err
t0=$(cut -d' ' -f1 /proc/uptime)
( /rvvmm {flags} 2>/tmp/flood.err; echo $? > /tmp/flood.rc ) | sleep 200 &
reader=$!
for i in $(seq 1 600); do [ -s /tmp/flood.rc ] && break; sleep 0.2; done
echo "@@FLOOD rvvmm status $(cat /tmp/flood.rc 2>/dev/null) after $(awk "BEGIN {{ print $(cut -d' ' -f1 /proc/uptime) - $t0 }}") s with stdout never read"
cat /tmp/flood.err
kill $reader 2>/dev/null"#
    ))
}

/// rvvmm as a step of someone else's CI: the guest's failure is rvvmm's status (the
/// finisher's code, SRST's system failure), `--timeout` stops a guest that never ends with
/// status 124 in about the time given, and `--serial-log` keeps the console in a file (with
/// `,only`, stdout gets none of it). Bad values: status 2, nothing started.
/// The seccomp filters on real KVM: a vCPU thread tripped into a system call outside its list
/// (the test device's trip register) stops rvvmm with its one line and SIGSYS; under
/// `--seccomp log` the same call goes through and the kernel logs it (`audit: type=1326`,
/// which proves the log below can see a miss); then Linux with two vCPUs, a disk written,
/// virtio-rng, the API socket and a reboot runs under `--seccomp log`, and the kernel logged
/// no call of rvvmm's outside the lists.
fn seccomp_session() -> &'static str {
    // The kernel's ring buffer is read, never cleared (other cases read it): each step counts
    // the audit lines that were there before it.
    r#"seen() { dmesg | grep -c 'type=1326'; }
audit() { dmesg | grep 'type=1326' | tail -n +$(( $2 + 1 )) | sed -n "s/.*\(comm=\"[^\"]*\"\).*\(syscall=[0-9]*\).*/@@AUDIT $1 \1 \2/p"; }
(/rvvmm --kernel /guests/seccomp_trip.bin --testdev; echo "@@SECCOMP enforced: status $?") 2>&1 | sed 's/^/E: /'
n=$(seen)
/rvvmm --kernel /guests/seccomp_trip.bin --testdev --seccomp log; echo "@@SECCOMP logged: status $?"
audit trip $n
n=$(seen)
cp /l2/disk.img /tmp/sc.img
/rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --cpus 2 --memory 256M --disk /tmp/sc.img --rng --api-socket /tmp/sc.sock --seccomp log --cmdline 'console=ttyS0 quiet rvvmm.test=disk-write'; echo "@@SECCOMP linux under log: status $?"
/rvvmm --kernel /guests/reboot.bin --seccomp log; echo "@@SECCOMP reboot under log: status $?"
audit linux $n
echo "@@SECCOMP calls outside the lists: $(( $(seen) - n ))"
rm -f /tmp/sc.img"#
}

fn ci_session() -> &'static str {
    r#"/rvvmm --kernel /guests/finisher.bin --serial-log /tmp/ci1.log,only > /tmp/ci1.out; echo "@@CI finisher: status $?"
sed 's/^/@@CI finisher log: /' /tmp/ci1.log; echo "@@CI finisher stdout: $(wc -c < /tmp/ci1.out) bytes"
/rvvmm --kernel /guests/sysfail.bin > /dev/null 2>&1; echo "@@CI sysfail: status $?"
t0=$(cut -d' ' -f1 /proc/uptime)
/rvvmm --kernel /guests/idle.bin --timeout 5s --serial-log /tmp/ci2.log; rc=$?
echo "@@CI --timeout 5s: status $rc after $(awk "BEGIN { print $(cut -d' ' -f1 /proc/uptime) - $t0 }") s"
sed 's/^/@@CI idle log: /' /tmp/ci2.log
/rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --memory 256M --timeout 300s --serial-log /tmp/ci3.log,only --cmdline 'console=ttyS0 quiet rvvmm.test=exit-code rvvmm.code=3'; echo "@@CI linux: status $?"
grep '@@L2' /tmp/ci3.log | sed 's/^/@@CI linux log: /'
/rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --memory 256M --timeout 300s --serial-log /tmp/ci4.log,only --cmdline 'console=ttyS0 quiet'; echo "@@CI linux poweroff: status $?"
/rvvmm --kernel /guests/idle.bin --timeout 0; echo "@@CI bad timeout: status $?"
/rvvmm --kernel /guests/idle.bin --serial-log /nonexistent/console.log; echo "@@CI unwritable log: status $?""#
}

/// Every lab case, in the order they run.
/// The README's first command (Linux from QEMU's dtb, a busybox initramfs, 2 harts), as the
/// README writes it (one line); `cargo xtask demo` runs it in L1 and so does the lab.
pub const README_COMMAND: &str =
    "rvvmm --kernel Image --dtb virt.dtb --initrd initrd.cpio --cpus 2 --memory 1G --cmdline \"console=ttyS0\"";

/// The lab case that runs [`README_COMMAND`] in L1's /l2 (Image, virt.dtb, initrd.cpio).
pub const README_CASE: &str = "readme_first_command";

/// SBI SUSP forwarded to user space (Linux 6.14).
const SUSP: Needs = Needs::Since(6, 14, "SBI SUSP");
const RESET_IN_PLACE: Needs = Needs::Since(6, 16, "KVM_CAP_RISCV_MP_STATE_RESET");

/// `linux_reboot` and `linux_reboot_in_place`: Linux reboots once, with 2 vCPUs and a
/// virtio-rng it reads on the second boot; no ioeventfd may be refused on the second boot.
/// `path` is the line that says how rvvmm rebooted.
fn linux_reboot(name: &'static str, needs: Needs, path: &'static str) -> Case {
    let expect = vec![
        "@@L2 boot-count 1",
        "@@L2 rebooting",
        "guest rebooted; boot 2",
        path,
        "@@L2 boot-count 2",
        "@@L2 cpus 2",
        "@@L2 second boot: hwrng 16 bytes",
        "@@L2 powering off",
        "@@REBOOT rvvmm status 0, 0 ioeventfd warnings",
    ];
    Case {
        timeout: 300,
        needs,
        ..case(name, LINUX_REBOOT, 0, Vec::leak(expect))
    }
}

const LINUX_REBOOT: &str = "RUST_LOG=rvvmm=info /rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --memory 256M --cpus 2 --rng --cmdline 'console=ttyS0 quiet rvvmm.test=reboot' > /tmp/reboot.out 2>&1; rc=$?\n\
     cat /tmp/reboot.out\n\
     echo \"@@REBOOT rvvmm status $rc, $(grep -c 'ioeventfd' /tmp/reboot.out) ioeventfd warnings\"";

/// The cases that run on the first kernel only: what they prove is rvvmm's, not KVM's (a stop
/// racing the vCPUs, a file or tap failing under a device, the API's and the console's threads,
/// the config, the native runner, and U-Boot's EFI boot through GRUB, whose KVM use is the
/// extlinux boot's), and each repeats a second L1's worth of Linux boots for
/// nothing (about 230 s of the PLIC pass). Every case that meets a KVM interface rvvmm uses
/// (SBI, HSM, MMIO, interrupts, snapshots of vCPU and AIA state, huge pages, seccomp) runs on
/// both kernels.
pub const ONE_KERNEL: &[&str] = &[
    "api_pause_resume_shutdown",
    "native_runner_in_l1",
    "console_stdout_never_read",
    "virtio_console_stdout_never_read",
    "ci_exit_status_timeout_serial_log",
    "sigterm_stops_cleanly",
    "virtio_abuse_then_serve",
    "uboot_efi_boots_linux",
    "stop_race_exit_x200",
    "exits_200k",
    "linux_boot_time_x3",
    "virtio_blk_host_disk_full",
    "virtio_blk_flush_survives_sigkill",
    "virtio_net_tap_deleted",
    "linux_from_config_file",
    "linux_api_create_boot",
    // rvvmm's device models and its dtb handling, with no KVM feature in them: both irqchip
    // modes on the first kernel (the newest kernel's guest drivers met them in the sessions
    // that added them: `cargo xtask lab --kernel newest --case NAME` runs one there).
    "virtio_blk_persists",
    "virtio_blk_readonly",
    "virtio_rng",
    "virtio_console_hvc0",
    "virtio_console_shell",
    "linux_shell_on_uart",
    "linux_qemu_dtb_cpus1",
    "virtio_fs_share",
    "virtio_fs_backend_dies",
    "virtio_net_ping_both_ways",
    "linux_qemu_dtb_smp2",
    "uboot_prompt_virtio_reset_poweroff",
    "uboot_extlinux_boots_linux",
];

/// Cases that meet the interrupt path only on the way to what they prove, which is rvvmm's
/// own handling of something else (a host file, tap or backend failing under a device, a
/// hostile queue, the config and API front ends, boot timing, U-Boot's EFI path): they run in
/// the first mode only (as [`Case::one_mode`]). Every device's interrupts are proven in both
/// modes by the cases that move data through it (virtio_blk_persists, virtio_net_ping_both_ways,
/// virtio_fs_share, virtio_vsock_both_ways, ...). About 170 s of the AIA pass (CI of 78579ec).
pub const ONE_MODE: &[&str] = &[
    "virtio_blk_host_disk_full",
    "virtio_blk_flush_survives_sigkill",
    "virtio_blk_readonly",
    "virtio_net_tap_deleted",
    "virtio_fs_backend_dies",
    "virtio_abuse_then_serve",
    "sigterm_stops_cleanly",
    "linux_boot_time_x3",
    "linux_from_config_file",
    "linux_api_create_boot",
    "uboot_efi_boots_linux",
];

/// Cases that run in both modes on the first kernel, and in AIA mode only on the later ones:
/// what they meet of a newer KVM (vCPU registers and their snapshot, guest memory, SBI and
/// HSM in the kernel, the ISA extensions it offers, seccomp around its ioctls) is the same in
/// both modes, and PLIC mode's own KVM interface (interrupts injected from user space, a
/// suspended or stopped hart woken by them, a vCPU reset in place with a user-space PLIC) is
/// met on the later kernels by the cases that stay in both modes there (linux_irqchip_plic_forced,
/// the suspend cases, linux_reboot_in_place, idle_stopped_harts_cost_nothing,
/// linux_cpu_offline_online, stop_race_reboot_x200, ...). About 90 s of the later kernel's PLIC
/// pass (CI of 78579ec).
pub const LATER_KERNELS_AIA_ONLY: &[&str] = &[
    "snapshot_restore_linux",
    "virtio_vsock_both_ways",
    "virtio_vsock_snapshot_restore",
    "linux_generated_dtb",
    "linux_generated_smp2",
    "linux_hugepages",
    "linux_disable_isa_zicboz",
    "seccomp_filters",
];

pub fn cases() -> Vec<Case> {
    let mut cases = all_cases();
    for c in &mut cases {
        c.one_kernel = ONE_KERNEL.contains(&c.name);
        c.one_mode |= ONE_MODE.contains(&c.name);
        c.later_kernels_aia_only = LATER_KERNELS_AIA_ONLY.contains(&c.name);
    }
    cases
}

fn all_cases() -> Vec<Case> {
    vec![
        Case {
            timeout: 300,
            reject: &["Kernel panic", "FDT creation failed", "Unknown command"],
            ..case(
                "uboot_extlinux_boots_linux",
                "/rvvmm --kernel /l2/u-boot.bin --memory 512M --disk /l2/boot-disk.img,readonly --timeout 200s < /dev/null > /tmp/ubx.out 2>&1; echo \"@@UB rvvmm status $?\"\n\
                 cat /tmp/ubx.out",
                0,
                &[
                    "Found /extlinux/extlinux.conf",
                    "Retrieving file: /Image",
                    "Retrieving file: /initrd.cpio",
                    "Starting kernel",
                    "Linux version ",
                    "@@L2 init reached",
                    "@@L2 cmdline console=ttyS0 earlycon=sbi rvvmm.marker=extlinux",
                    "@@L2 powering off",
                    "@@UB rvvmm status 0",
                ],
            )
        },

        Case {
            timeout: 300,
            reject: &["Kernel panic", "Unknown command", "@@UE no "],
            ..case(
                "uboot_efi_boots_linux",
                leak(format!(
                    "{}\ncat /tmp/ue-rvvmm.out",
                    uboot_efi_session(&format!("{UBOOT_RVVMM} --timeout 250s"), "rvvmm")
                )),
                0,
                &[
                    "Booting: virtio 0",
                    "rvvmm lab: GRUB boots /Image from hd0,msdos1",
                    "efi: EFI v2.10 by Das U-Boot",
                    "INITRD=",
                    "Trying to unpack rootfs image as initramfs",
                    "@@L2 init reached",
                    "@@L2 cmdline BOOT_IMAGE=/Image console=ttyS0 earlycon=sbi rvvmm.marker=efi",
                    "@@L2 powering off",
                    "@@UE rvvmm status 0",
                ],
            )
        },
        Case {
            timeout: 400,
            reject: &["Kernel panic", "the disk write ended before the pause"],
            check: Check::InOrder(&[
                "@@L2 shell ready",
                "--- rvvmm remote",
                "@@API ping ok",
                "\"state\": \"Running\"",
                "@@API paused",
                "\"state\": \"Paused\"",
                "@@API cpu while paused 5 s: ",
                "@@API second pause refused",
                "@@API resumed",
                "\"state\": \"Running\"",
                "@@API the disk write issued before the pause completed after it",
                "@@API the shell answered after resume",
                "\"_serial\": {",
                "\"exits_mmio_write\": ",
                "@@API vm.shutdown done",
                "\"state\": \"Shutdown\"",
                "@@API vmm.shutdown done",
            ]),
            ..case(
                "api_pause_resume_shutdown",
                api_session(),
                0,
                &["@@API rvvmm status 0", "vm.pause: HTTP 405: the VM is paused: cannot pause"],
            )
        },
        Case {
            timeout: 600,
            reject: &["Kernel panic", "Oops", "rcu_sched self-detected stall"],
            check: Check::Report("@@SNAP the count went on"),
            ..case(
                "snapshot_restore_linux",
                snapshot_session(),
                0,
                &[
                    "@@SNAP paused",
                    "@@SNAP snapshot taken",
                    "@@SNAP first rvvmm killed",
                    "\"state\": \"Paused\"",
                    "@@SNAP resumed",
                    "@@SNAP the count went on from",
                    "clock-1",
                    "cpus-2",
                    "hart1-42",
                    "hart0-42",
                    "disk-restored-42",
                    "ping-42",
                    "@@SNAP restored rvvmm status 0",
                    "@@SNAP restored twice: the same first tick",
                    "memory.bin: 1048576 bytes, but the snapshot's RAM is 268435456",
                    "@@SNAP truncated RAM: status 1",
                    "the header's checksum does not match",
                    "@@SNAP flipped header byte: status 1",
                ],
            )
        },
        one_mode(case(
            "hello_elf",
            "/rvvmm --kernel /guests/hello.elf && /rvvmm --kernel /guests/hello.bin --load-addr 0x80000001; echo status=$?",
            0,
            &["Hello from a RISC-V guest on rvvmm!", "--load-addr 0x80000001: is not 4 KiB-aligned", "status=1"],
        )),
        Case {
            timeout: 300,
            reject: &["Unknown command", "FAIL", "rror"],
            ..case(
                "uboot_prompt_virtio_reset_poweroff",
                leak(format!(
                    "{}\ncat /tmp/ub-rvvmm.out",
                    uboot_session(UBOOT_RVVMM, "rvvmm")
                )),
                0,
                &[
                    "U-Boot 2025.01",
                    "Hit any key to stop autoboot",
                    "Device 0: ",
                    "83 Boot",
                    "extlinux.conf",
                    "resetting ...",
                    "poweroff ...",
                    "@@UB rvvmm status 0",
                ],
            )
        },
        Case {
            timeout: 600,
            reject: &["kvm tests skipped", "FAILED", "test result: FAILED"],
            check: Check::Report("@@TESTS kvm: "),
            ..case(
                "cargo_tests_on_kvm",
                "for t in lib kvm scripted_vmm api cli; do\n\
                 RVVMM_BIN=/rvvmm /tests/$t > /tmp/t.out 2>&1; rc=$?\n\
                 grep -E '^test .* FAILED|panicked|kvm tests skipped' /tmp/t.out\n\
                 echo \"@@TESTS $t: $(grep '^test result' /tmp/t.out) status $rc\"\n\
                 done",
                0,
                &[
                    "@@TESTS lib: test result: ok.",
                    "@@TESTS kvm: test result: ok. 9 passed; 0 failed",
                    "@@TESTS scripted_vmm: test result: ok.",
                    "@@TESTS api: test result: ok.",
                    "@@TESTS cli: test result: ok.",
                ],
            )
        },
        Case {
            timeout: 600,
            check: Check::Report("lab: "),
            ..one_mode(case(
                "native_runner_in_l1",
                "/xtask lab --native --rvvmm /rvvmm --guests /guests --l2 /l2 --case hello \
                 --case dbcn --case smp_hsm --case finisher_code --case srst_reboot --case bad_dtb \
                 --case linux_generated_dtb\n\
                 echo \"@@NATIVE status $?\"\n\
                 /xtask lab --native --rvvmm /rvvmm --guests /guests --case hello --case linux_generated_dtb\n\
                 echo \"@@NATIVE without --l2: status $?\"\n\
                 mkdir -p /etc; grep -q ^nobody: /etc/passwd 2>/dev/null || echo 'nobody:x:65534:65534:nobody:/:/bin/sh' >> /etc/passwd\n\
                 mode=$(stat -c %a /dev/kvm); chmod 600 /dev/kvm\n\
                 su -s /bin/sh nobody -c '/xtask lab --native --rvvmm /rvvmm --guests /guests --case hello'\n\
                 echo \"@@NATIVE /dev/kvm closed to the user: status $?\"\n\
                 chmod $mode /dev/kvm",
                0,
                &[
                    "lab[native-",
                    "] linux_generated_dtb ok (rc=0",
                    "lab: 7 passed, 0 failed, 0 skipped (native)",
                    "@@NATIVE status 0",
                    "linux_generated_dtb skipped (needs /l2/Image",
                    "lab: 1 passed, 0 failed, 1 skipped (native)",
                    "@@NATIVE without --l2: status 0",
                    "cannot run the lab natively: /dev/kvm exists but cannot be opened: Permission denied",
                    "@@NATIVE /dev/kvm closed to the user: status 1",
                ],
            ))
        },
        Case {
            timeout: 300,
            check: Check::Report("@@FLOOD rvvmm status"),
            ..one_mode(case(
                "console_stdout_never_read",
                flood_session("--kernel /guests/flood.bin"),
                0,
                &[
                    "@@FLOOD rvvmm status 0 after",
                    "stdout has taken no console output for 2 s: dropping it until it does",
                ],
            ))
        },
        Case {
            timeout: 300,
            check: Check::Report("@@FLOOD rvvmm status"),
            // The same through virtio-console: Linux writes 1 MiB to hvc0 (the device
            // thread's output path) and powers off. Its interrupts are virtio_console_hvc0's.
            ..one_mode(case(
                "virtio_console_stdout_never_read",
                flood_session("--kernel /l2/Image --initrd /l2/initrd.cpio --memory 256M --console virtio --cmdline 'console=hvc0 quiet rvvmm.test=console-flood'"),
                0,
                &[
                    "@@FLOOD rvvmm status 0 after",
                    "stdout has taken no console output for 2 s: dropping it until it does",
                ],
            ))
        },
        Case {
            timeout: 300,
            reject: &["@@AUDIT linux", "E: seccomp_trip: still running"],
            check: Check::Report("@@SECCOMP calls outside the lists"),
            ..case(
                "seccomp_filters",
                seccomp_session(),
                0,
                &[
                    "seccomp_trip: tripping",
                    "rvvmm: seccomp: the vcpu thread made system call 173, which its filter does not allow",
                    "@@SECCOMP enforced: status 159",
                    "@@SECCOMP logged: status 0",
                    "@@AUDIT trip comm=\"vcpu0\" syscall=173",
                    "@@L2 disk written and unmounted",
                    "@@SECCOMP linux under log: status 0",
                    "@@SECCOMP reboot under log: status 0",
                    "@@SECCOMP calls outside the lists: 0",
                ],
            )
        },
        Case {
            timeout: 300,
            check: Check::Report("@@CI --timeout 5s: status 124 after"),
            ..one_mode(case("ci_exit_status_timeout_serial_log", ci_session(), 0, &[
                "@@CI finisher: status 42",
                "@@CI finisher log: finisher: exiting with code 42",
                "@@CI finisher stdout: 0 bytes",
                "@@CI sysfail: status 1",
                "@@CI --timeout 5s: status 124 after",
                "stopping the guest: --timeout 5s has passed",
                "@@CI idle log: idle: hart 0 in wfi",
                "@@CI linux: status 3",
                "@@CI linux log: @@L2 failing with code 3",
                "@@CI linux poweroff: status 0",
                "@@CI bad timeout: status 2",
                "@@CI unwritable log: status 2",
            ]))
        },
        Case {
            timeout: 300,
            ..case(
                "sigterm_stops_cleanly",
                "rm -f /tmp/sigin; mkfifo /tmp/sigin\n\
                 ( sleep 300 ) > /tmp/sigin &\n\
                 feeder=$!\n\
                 /rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --memory 256M --cmdline 'console=ttyS0 quiet rvvmm.test=shell' < /tmp/sigin > /tmp/sig.out 2>&1 &\n\
                 pid=$!\n\
                 for i in $(seq 1 600); do grep -q '@@L2 shell ready' /tmp/sig.out && break; sleep 0.2; done\n\
                 kill -TERM $pid; wait $pid; echo \"rvvmm status $?\"\n\
                 kill $feeder\n\
                 cat /tmp/sig.out",
                0,
                &["@@L2 shell ready", "stopping the VM on SIGTERM", "rvvmm status 0"],
            )
        },
        Case {
            expect_plic: &["riscv-plic"],
            expect_aia: &["AIA available with"],
            ..case(
                "l1_irqchip",
                "ls -l /dev/kvm && dmesg | grep -i -E 'plic|aia' | head -n 8",
                0,
                &["/dev/kvm"],
            )
        },
        one_mode(case(
            "hello",
            "/rvvmm --kernel /guests/hello.bin",
            0,
            &["Hello from a RISC-V guest on rvvmm!"],
        )),
        one_mode(case(
            "boot_regs",
            "/rvvmm --kernel /guests/boot_regs.bin --memory 64M",
            0,
            &["boot_regs: a1=0x0000000083e00000", "PASS boot_regs"],
        )),
        Case {
            stdin: Some("ping"),
            ..one_mode(case(
                "dbcn",
                "/rvvmm --kernel /guests/dbcn.bin",
                0,
                &[
                    "dbcn: write ok",
                    "dbcn: write_byte ok",
                    "dbcn: errors ok",
                    "dbcn: read 'ping'",
                    "PASS dbcn",
                ],
            ))
        },
        one_mode(case(
            "hypercall",
            "RUST_LOG=rvvmm=debug /rvvmm --kernel /guests/hypercall.bin",
            0,
            &[
                "hypercall nr=0 args=[1111, 2222, 3333, 4444, 5555, 6666666666666666]",
                "hypercall nr=7 args=[1, 2, 3, 4, 5, 6]",
                "hypercall: abi version 0x0000000000000001",
                "unsupported SBI extension 0x8000001",
                "unsupported SBI extension 0x9000000",
                "PASS hypercall",
            ],
        )),
        one_mode(case(
            "mmio",
            "RUST_LOG=rvvmm=debug /rvvmm --kernel /guests/mmio.bin --testdev",
            0,
            &[
                "mmio: testdev ok",
                "unclaimed MMIO read of 8 bytes at 0x20000008",
                "unclaimed MMIO write of 4 bytes at 0x20000000",
                "PASS mmio",
            ],
        )),
        Case {
            reject: &["FAILED", "panicked"],
            check: Check::Report("abuse: devices"),
            ..case(
                "virtio_abuse_then_serve",
                "cp /l2/disk.img /tmp/abuse.img; tunctl -t tap9 >/dev/null && ifconfig tap9 up\n\
                 /rvvmm --kernel /guests/virtio_abuse.bin --rng --disk /tmp/abuse.img --net tap=tap9 --console virtio < /dev/null > /tmp/abuse.out 2>&1; echo \"@@ABUSE rvvmm status $?\"\n\
                 grep -v '^\\[' /tmp/abuse.out\n\
                 echo \"@@ABUSE rvvmm log lines: $(grep -c '^\\[' /tmp/abuse.out)\"; grep '^\\[' /tmp/abuse.out | cut -c 29- | sort | uniq -c | sort -rn | head -n 12",
                0,
                &[
                    "abuse: id 4: still serves a good request",
                    "abuse: id 2: still serves a good request",
                    "abuse: id 1: still serves a good request",
                    "abuse: id 3: still serves a good request",
                    "abuse: console still writes",
                    "PASS virtio_abuse",
                    "@@ABUSE rvvmm status 0",
                ],
            )
        },
        one_mode(case(
            "mmio_misaligned_and_fp",
            "for g in lw sw fld; do /rvvmm --kernel /guests/mmio_odd_$g.bin --testdev 2>&1; echo \"@@ODD $g: rvvmm status $?\"; dmesg | grep -i 'kvm' | tail -n 1 | sed \"s/^/@@ODD $g: dmesg: /\"; done",
            0,
            // KVM (6.12) emulates none of these: each ends rvvmm with its one line (status 1).
            &[
                "mmio_odd: misaligned lw from MMIO next",
                "KVM refuses an MMIO access that is not aligned to its size",
                "@@ODD lw: rvvmm status 1",
                "mmio_odd: misaligned sw to MMIO next",
                "@@ODD sw: rvvmm status 1",
                "mmio_odd: fld from MMIO next",
                "KVM emulates only integer loads and stores to devices",
                "@@ODD fld: rvvmm status 1",
            ],
        )),
        one_mode(case(
            "srst_shutdown",
            "/rvvmm --kernel /guests/hello.bin; echo status=$?",
            0,
            &["status=0"],
        )),
        Case {
            check: Check::Report("@@STORM boot 2 -> 100"),
            ..case(
                "reboot_storm_x100",
                // 100 boots of one VM: what boot 2 holds (fds, threads) boot 100 holds too, and
                // rvvmm's own memory (RSS less resident guest RAM, which lives across reboots
                // and which L1's khugepaged may turn into one 2 MiB page mid-storm: +2048 KiB
                // of VmRSS in one CI run) stays within 512 KiB of it.
                "RUST_LOG=rvvmm=info /rvvmm --kernel /guests/reboot_storm.bin > /tmp/storm.out 2>&1; echo \"@@STORM rvvmm status $?\"\n\
                 grep -c 'guest rebooted' /tmp/storm.out | sed 's/^/@@STORM reboots: /'\n\
                 fig() { sed -n \"s/.*guest rebooted; boot $1 (\\([0-9]*\\) open fds, \\([0-9]*\\) threads, VmRSS [0-9]* KiB, own \\([0-9]*\\) KiB, guest RAM resident \\([0-9]*\\) KiB).*/\\1 \\2 \\3 \\4/p\" /tmp/storm.out; }\n\
                 set -- $(fig 2) $(fig 100)\n\
                 echo \"@@STORM boot 2 -> 100: fds $1 -> $5, threads $2 -> $6, own memory $3 -> $7 KiB, guest RAM resident $4 -> $8 KiB\"\n\
                 [ \"$1\" = \"$5\" ] && [ \"$2\" = \"$6\" ] && [ $(( $7 - $3 )) -le 512 ] && echo '@@STORM steady'\n\
                 grep -m 1 'PASS reboot' /tmp/storm.out",
                0,
                &["@@STORM rvvmm status 0", "@@STORM reboots: 99", "@@STORM steady", "PASS reboot"],
            )
        },
        case(
            "srst_reboot",
            "RUST_LOG=rvvmm=info /rvvmm --kernel /guests/reboot.bin",
            0,
            &[
                "reboot: boot 0x0000000000000001",
                "guest rebooted; boot 2",
                "reboot: boot 0x0000000000000002",
                "PASS reboot",
            ],
        ),
        one_mode(case(
            "srst_failure",
            "/rvvmm --kernel /guests/sysfail.bin",
            1,
            &["rvvmm: the guest reported a system failure"],
        )),
        one_mode(case(
            "finisher_code",
            "/rvvmm --kernel /guests/finisher.bin",
            42,
            &["finisher: exiting with code 42"],
        )),
        Case {
            timeout: 600,
            check: Check::Report("stop_race: "),
            ..one_mode(case(
                "stop_race_exit_x200",
                stop_race("stop_race"),
                0,
                &["stop_race: 200 of 200 runs exited 42, 0 ran on after the stop"],
            ))
        },
        Case {
            timeout: 600,
            check: Check::Report("stop_race_reboot: "),
            ..case(
                "stop_race_reboot_x200",
                stop_race("stop_race_reboot"),
                0,
                &["stop_race_reboot: 200 of 200 runs exited 42, 0 ran on after the stop"],
            )
        },
        // SBI SUSP (KVM 6.14+): the bare-metal guest suspends; the timer wakes it, and it
        // resumes at its resume address with its opaque value.
        one_mode(Case {
            needs: SUSP,
            ..case(
                "suspend_bare_wakes_on_timer",
                "RUST_LOG=rvvmm=info /rvvmm --kernel /guests/suspend.bin --suspend-seconds 2",
                0,
                &[
                    "@@SUSP present",
                    "@@SUSP bad sleep type refused",
                    "hart 0 suspended the system (SBI SUSP, suspend to RAM); it wakes on console input, the timer (2 s, --suspend-seconds)",
                    "the guest wakes from its system suspend after 2.",
                    "(the timer); hart 0 resumes",
                    "@@SUSP resumed on hart 0x0000000000000000",
                    "@@SUSP opaque 0x0000000000005a5a",
                    "PASS suspend",
                ],
            )
        }),
        // The API wakes a suspended guest (vm.resume), which sat without CPU until then.
        one_mode(Case {
            needs: SUSP,
            check: Check::IdleTicksAtMost(3),
            ..case(
                "suspend_bare_wakes_on_api_idle_meanwhile",
                "rm -f /tmp/susp.sock /tmp/susp.out
                 ( RUST_LOG=rvvmm=info /rvvmm --kernel /guests/suspend.bin --api-socket /tmp/susp.sock > /tmp/susp.out 2>&1; echo \"@@SUSP rvvmm status $?\" >> /tmp/susp.out ) &
                 for i in $(seq 1 100); do grep -q 'suspended the system' /tmp/susp.out && break; sleep 0.1; done
                 pid=$(pidof rvvmm); sleep 0.5
                 t0=$(awk '{ print $14 + $15 }' /proc/$pid/stat); sleep 3; t1=$(awk '{ print $14 + $15 }' /proc/$pid/stat)
                 echo \"@@IDLE suspended over 3 s: ticks=$((t1 - t0))\"
                 /rvvmm remote --api-socket /tmp/susp.sock resume && echo '@@SUSP vm.resume sent'
                 wait; cat /tmp/susp.out",
                0,
                &[
                    "it wakes on console input, the API's vm.resume",
                    "@@SUSP vm.resume sent",
                    "(a wake-up event); hart 0 resumes",
                    "PASS suspend",
                    "@@SUSP rvvmm status 0",
                ],
            )
        }),
        // Without SBI SUSP in KVM (6.12), or switched off, the guest sees it absent.
        one_mode(Case {
            needs: Needs::Before(6, 14, "SBI SUSP"),
            ..case(
                "suspend_absent_before_6_14",
                "/rvvmm --kernel /guests/suspend.bin",
                0,
                &["@@SUSP absent"],
            )
        }),
        // A flag for a KVM feature this host lacks is a one-line error naming it.
        one_mode(Case {
            needs: Needs::Before(6, 14, "SBI SUSP"),
            ..case(
                "suspend_seconds_needs_kvm_susp",
                "/rvvmm --kernel /guests/suspend.bin --suspend-seconds 1",
                1,
                &["rvvmm: KVM on this host lacks SBI SUSP, which --suspend-seconds is for (Linux 6.14 or later"],
            )
        }),
        one_mode(case(
            "suspend_switched_off_is_absent",
            "/rvvmm --kernel /guests/suspend.bin --disable-sbi susp",
            0,
            &["@@SUSP absent"],
        )),
        // Linux's suspend to RAM with 2 harts (it takes hart 1 offline first, as KVM requires):
        // a key on the console wakes it; its interrupts work after the resume.
        Case {
            needs: SUSP,
            timeout: 300,
            reject: &["Kernel panic", "Oops", "@@L2 suspend to RAM refused"],
            ..case(
                "suspend_linux_wakes_on_console_input",
                "rm -f /tmp/lin.in /tmp/lin.out; mkfifo /tmp/lin.in
                 ( RUST_LOG=rvvmm=info /rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --cpus 2 --memory 256M --cmdline 'console=ttyS0 quiet rvvmm.test=suspend' < /tmp/lin.in > /tmp/lin.out 2>&1; echo \"@@SUSP rvvmm status $?\" >> /tmp/lin.out ) &
                 exec 3>/tmp/lin.in
                 for i in $(seq 1 1200); do grep -q 'suspended the system' /tmp/lin.out && break; sleep 0.1; done
                 sleep 2; echo >&3; echo '@@SUSP a key typed'
                 wait; exec 3>&-; cat /tmp/lin.out",
                0,
                &[
                    "@@L2 sleep states: ",
                    "suspended the system (SBI SUSP",
                    "@@SUSP a key typed",
                    "console input wakes the suspended guest",
                    "@@L2 resumed from suspend to RAM; online cpus 0-1",
                    "@@SUSP rvvmm status 0",
                ],
            )
        },
        Case {
            check: Check::IdleTicksAtMost(5),
            ..case(
                "idle_stopped_harts_cost_nothing",
                "for n in 1 8; do\n\
                 /rvvmm --kernel /guests/idle.bin --cpus $n --memory 64M > /tmp/idle.out 2>&1 &\n\
                 pid=$!; sleep 1\n\
                 t0=$(awk '{ print $14 + $15 }' /proc/$pid/stat); sleep 5; t1=$(awk '{ print $14 + $15 }' /proc/$pid/stat)\n\
                 kill -TERM $pid; wait $pid; rc=$?\n\
                 echo \"@@IDLE cpus=$n over 5 s: ticks=$((t1 - t0)) (status $rc)\"\n\
                 cat /tmp/idle.out\n\
                 done",
                0,
                &["idle: hart 0 in wfi", "(status 0)"],
            )
        },
        Case {
            timeout: 300,
            check: Check::IdleTicksAtMost(2),
            ..case(
                "linux_cpu_offline_online",
                "/rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --cpus 2 --memory 256M --cmdline 'console=ttyS0 quiet rvvmm.test=hotplug rvvmm.offline_s=6' > /tmp/hp.out 2>&1 &\n\
                 pid=$!\n\
                 for i in $(seq 1 600); do grep -q 'cpu1 offline' /tmp/hp.out && break; sleep 0.2; done\n\
                 for t in /proc/$pid/task/*; do [ \"$(cat $t/comm)\" = vcpu1 ] && task=$t; done\n\
                 ticks() { awk '{ print $14 + $15 }' $1/stat; }\n\
                 sleep 1; t0=$(ticks $task); p0=$(ticks /proc/$pid); sleep 3; t1=$(ticks $task); p1=$(ticks /proc/$pid)\n\
                 wait $pid; echo \"rvvmm status $?\"\n\
                 echo \"@@IDLE the offline hart's thread (vcpu1) over 3 s: ticks=$((t1 - t0)) (rvvmm as a whole, its guest's hart 0 included: $((p1 - p0)))\"\n\
                 cat /tmp/hp.out",
                0,
                &[
                    "@@L2 cpu1 offline, online: 0",
                    "@@L2 cpu1 back, online: 0-1",
                    "@@L2 a task on cpu1 ran on cpu 1",
                    "rvvmm status 0",
                ],
            )
        },
        one_mode(case(
            "smp_hsm",
            "RUST_LOG=rvvmm=info /rvvmm --kernel /guests/smp.bin --cpus 2",
            0,
            &[
                "hart 1 started",
                "smp: hello from hart 0x0000000000000001",
                "PASS smp",
            ],
        )),
        Case {
            check: Check::RssGrowthAtMost(256),
            ..one_mode(case(
                "exits_200k",
                "RUST_LOG=rvvmm=info /rvvmm --kernel /guests/exits.bin --testdev",
                0,
                &[
                    "exits: done 0x0000000000030d40",
                    "PASS exits",
                    "VmRSS at exit",
                ],
            ))
        },
        Case {
            reject: &["Oops", "Kernel panic"],
            timeout: 300,
            ..case(
                "linux_generated_dtb",
                "RUST_LOG=rvvmm=info /rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --memory 512M --cmdline 'console=ttyS0 rvvmm.mem_mib=512 rvvmm.marker=generated'",
                0,
                &[
                    "Linux version ",
                    "@@L2 init reached",
                    "@@L2 cpus 1",
                    "@@L2 cmdline console=ttyS0 rvvmm.mem_mib=512 rvvmm.marker=generated",
                    "@@L2 memory ok",
                    "@@L2 boot-count 1",
                    "@@L2 powering off",
                ],
            )
        },
        Case {
            reject: &["Kernel panic"],
            timeout: 300,
            check: Check::InitWithin(30),
            ..case(
                "linux_generated_smp2",
                "/rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --cpus 2 --memory 256M --cmdline 'console=ttyS0 quiet rvvmm.mem_mib=256'",
                0,
                &["@@L2 init reached", "@@L2 cpus 2", "@@L2 memory ok", "@@L2 powering off"],
            )
        },
        Case {
            reject: &["Kernel panic"],
            timeout: 300,
            check: Check::InitWithin(30),
            ..case(
                "linux_hugepages",
                "grep -E 'HugePages_(Total|Free)' /proc/meminfo\n\
                 /rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --hugepages --memory 256M --cmdline 'console=ttyS0 quiet rvvmm.mem_mib=256'\n\
                 /rvvmm --kernel /l2/Image --hugepages --memory 255M; echo status=$?",
                0,
                &["@@L2 init reached", "@@L2 memory ok", "@@L2 powering off", "--memory: with hugepages, RAM must be a multiple of 2 MiB", "status=2"],
            )
        },
        Case {
            reject: &["Kernel panic"],
            timeout: 300,
            check: Check::InitWithin(30),
            ..case(
                "linux_qemu_dtb_smp2",
                "/rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --dtb /l2/virt.dtb --cpus 2 --memory 512M --cmdline 'console=ttyS0 quiet rvvmm.mem_mib=512'",
                0,
                &[
                    "the dtb describes devices rvvmm does not emulate; disabled: ",
                    "/fw-cfg@10100000",
                    "@@L2 init reached",
                    "@@L2 cpus 2",
                    "@@L2 memory ok",
                    "@@L2 powering off",
                ],
            )
        },
        Case {
            reject: &["Kernel panic"],
            timeout: 300,
            // The same path as linux_qemu_dtb_smp2 (which runs in both modes); this one
            // keeps the README's command and the demo honest.
            ..one_mode(case(
                README_CASE,
                leak(format!("cd /l2 && PATH=/:$PATH {README_COMMAND}")),
                0,
                &[
                    "rvvmm guest: Linux ",
                    " riscv64 GNU/Linux",
                    "rvvmm guest: processor\t: 1",
                    "rvvmm guest: isa\t\t: rv64",
                    "rvvmm guest: Mem:",
                    "@@L2 cpus 2",
                    "@@L2 powering off",
                ],
            ))
        },
        Case {
            reject: &["Kernel panic"],
            timeout: 300,
            ..case(
                "linux_qemu_dtb_cpus1",
                "/rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --dtb /l2/virt.dtb --cpus 1 --memory 384M --cmdline 'console=ttyS0 quiet rvvmm.mem_mib=384'",
                0,
                &["@@L2 init reached", "@@L2 cpus 1", "@@L2 memory ok", "@@L2 powering off"],
            )
        },
        Case {
            timeout: 300,
            ..case(
                "linux_shell_on_uart",
                shell_session(
                    "--console uart",
                    "ttyS0",
                    &["echo hello-$((6*7))", "poweroff -f"],
                ),
                0,
                &["@@L2 shell ready", "hello-42"],
            )
        },
        // A Linux reboot, two vCPUs and a virtio-rng read on the second boot: on a VM made
        // anew where KVM cannot reset vCPUs in place, on the same VM where it can (6.16).
        linux_reboot(
            "linux_reboot",
            Needs::Before(6, 16, "KVM_CAP_RISCV_MP_STATE_RESET"),
            "a new VM for the reboot",
        ),
        linux_reboot(
            "linux_reboot_in_place",
            RESET_IN_PLACE,
            "vCPUs reset in place (KVM_CAP_RISCV_MP_STATE_RESET)",
        ),
        Case {
            check: Check::BootRuns(3),
            timeout: 600,
            ..case(
                "linux_boot_time_x3",
                "for i in 1 2 3; do\n\
                 t0=$(cut -d' ' -f1 /proc/uptime)\n\
                 /rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --memory 256M --cmdline 'console=ttyS0 quiet'\n\
                 rc=$?; t1=$(cut -d' ' -f1 /proc/uptime)\n\
                 echo \"@@RUN $i rc=$rc wall=$(awk \"BEGIN { print $t1 - $t0 }\")\"\n\
                 done",
                0,
                &["@@RUN 3 rc=0"],
            )
        },
        Case {
            check: Check::DtcReadsBack,
            ..case(
                "dump_dtb",
                "/rvvmm --kernel /l2/Image --dtb /l2/virt.dtb --cpus 2 --memory 512M --cmdline 'console=ttyS0' --dump-dtb /tmp/out.dtb && echo @@DTB && base64 /tmp/out.dtb && echo @@ENDDTB",
                0,
                &["@@DTB"],
            )
        },
        Case {
            timeout: 600,
            reject: &["FAILED", "Kernel panic"],
            ..case(
                "virtio_blk_persists",
                "cp /l2/disk.img /tmp/disk.img\n\
                 dd if=/dev/urandom of=/tmp/raw.img bs=1M count=16 2>/dev/null\n\
                 r=$(for q in 0 1 2 3; do dd if=/tmp/raw.img bs=64k skip=$((q * 64)) count=64 2>/dev/null | sha256sum | cut -d' ' -f1; done)\n\
                 /rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --memory 256M --disk /tmp/disk.img --disk /tmp/raw.img --cmdline 'console=ttyS0 quiet rvvmm.test=disk-write' > /tmp/bp.out 2>&1; s=$?\n\
                 cat /tmp/bp.out\n\
                 [ \"$(echo $(sed -n 's/.*@@L2 vdb read sha256 //p' /tmp/bp.out | tr -d '\\r'))\" = \"$(echo $r)\" ] && echo '@@BLK four readers at once read the raw disk intact'\n\
                 grep -q \"@@L2 vdb wrote sha256 $(sha256sum /tmp/raw.img | cut -d' ' -f1)\" /tmp/bp.out && echo '@@BLK four writers at once wrote the raw disk intact'\n\
                 rm -f /tmp/raw.img\n\
                 [ $s -eq 0 ] && /rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --memory 256M --disk /tmp/disk.img,readonly --cmdline 'console=ttyS0 quiet rvvmm.test=disk-read'",
                0,
                &[
                    "@@L2 vdb event_idx=1 indirect=1",
                    "@@BLK four readers at once read the raw disk intact",
                    "@@BLK four writers at once wrote the raw disk intact",
                    "@@L2 disk has: made by the lab with mkfs.ext4 -d",
                    "@@L2 discard: 2147483648 max, /mnt: ",
                    "bytes trimmed",
                    "@@L2 disk written and unmounted",
                    "@@L2 disk says: rvvmm was here",
                    "@@L2 serial rvvmm-",
                ],
            )
        },
        Case {
            timeout: 600,
            reject: &["Kernel panic"],
            check: Check::Report("@@FULL warning lines"),
            ..case(
                "virtio_blk_host_disk_full",
                // A 64 MiB sparse image on an 8 MiB tmpfs: the guest's writes past 8 MiB get
                // ENOSPC on the host. The guest sees I/O errors, rvvmm warns (rate-limited, with
                // the count) and powers off normally.
                "mkdir -p /tmp/full && mount -t tmpfs -o size=8m tmpfs /tmp/full && truncate -s 64M /tmp/full/d.img\n\
                 /rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --memory 256M --disk /tmp/full/d.img --cmdline 'console=ttyS0 quiet rvvmm.test=disk-fill' > /tmp/full.out 2>&1; echo \"@@FULL rvvmm status $?\"\n\
                 grep -c 'failed on the host' /tmp/full.out | sed 's/^/@@FULL warning lines: /'\n\
                 cat /tmp/full.out; umount /tmp/full",
                0,
                &[
                    "@@L2 fill: dd status 1",
                    "@@L2 fill: first MiB reads back 1048576 bytes",
                    "@@L2 powering off",
                    "@@FULL rvvmm status 0",
                    "failed on the host: No space left on device (os error 28); it sees an I/O error",
                ],
            )
        },
        Case {
            timeout: 600,
            reject: &["SUCCEEDED", "Kernel panic"],
            ..case(
                "virtio_blk_readonly",
                "/rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --memory 256M --disk /l2/disk.img,readonly --cmdline 'console=ttyS0 quiet rvvmm.test=disk-ro'",
                0,
                &["@@L2 vda ro=1", "@@L2 raw write refused", "@@L2 ro mount reads: made by the lab"],
            )
        },
        Case {
            timeout: 600,
            ..case(
                "virtio_blk_flush_survives_sigkill",
                "cp /l2/disk.img /tmp/kill.img\n\
                 /rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --memory 256M --disk /tmp/kill.img --cmdline 'console=ttyS0 quiet rvvmm.test=disk-sync-then-hang' > /tmp/kill.out 2>&1 &\n\
                 pid=$!\n\
                 for i in $(seq 1 600); do grep -q '@@L2 synced' /tmp/kill.out && break; sleep 0.2; done\n\
                 kill -9 $pid; wait $pid; echo \"rvvmm killed: status $?\"\n\
                 cat /tmp/kill.out\n\
                 /rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --memory 256M --disk /tmp/kill.img --cmdline 'console=ttyS0 quiet rvvmm.test=disk-killed'",
                0,
                &["@@L2 synced", "rvvmm killed: status 137", "@@L2 after SIGKILL the disk says: survives SIGKILL"],
            )
        },
        Case {
            timeout: 600,
            ..case(
                "virtio_rng",
                "/rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --memory 256M --rng --cmdline 'console=ttyS0 quiet rvvmm.test=rng'",
                0,
                &["@@L2 hwrng virtio_rng.0 "],
            )
        },
        Case {
            timeout: 600,
            reject: &["FAILED", "Kernel panic"],
            expect_plic: &["virtio-net at 0x10001000, interrupt 1 (user-space PLIC)"],
            expect_aia: &["virtio-net at 0x10001000, interrupt 1 (AIA, edge)"],
            ..case(
                "virtio_net_ping_both_ways",
                "tunctl -t tap0 >/dev/null && ifconfig tap0 10.0.2.1 netmask 255.255.255.0 up\n\
                 RUST_LOG=rvvmm=info /rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --memory 256M --net tap=tap0,mac=52:54:00:00:00:02 --cmdline 'console=ttyS0 quiet rvvmm.test=net' > /tmp/net.out 2>&1 &\n\
                 pid=$!\n\
                 for i in $(seq 1 900); do grep -q '@@L2 ping to L1' /tmp/net.out && break; sleep 0.2; done\n\
                 ping -c 3 -W 5 10.0.2.2 | sed 's/^/L1: /'\n\
                 timeout 120 /vsock-tool tcp 10.0.2.2:5001 8388608 | sed 's/^/L1: /'\n\
                 wait $pid; echo \"rvvmm status $?\"\n\
                 cat /tmp/net.out",
                0,
                &[
                    "@@L2 eth0 52:54:00:00:00:02",
                    "@@L2 eth0 offloads csum=1 guest_csum=1 guest_tso4=1 guest_tso6=1 host_tso4=1 host_tso6=1 event_idx=1",
                    "@@L2 ping to L1: 3 packets transmitted, 3 packets received",
                    "L1: 3 packets transmitted, 3 packets received",
                    "@@L2 answered 3 pings from L1",
                    "L1: @@TCP sent 8388608 bytes",
                    "each way), intact",
                    "@@L2 tcp: @@TCP echoed 8388608 bytes",
                    "rvvmm status 0",
                ],
            )
        },
        Case {
            timeout: 600,
            reject: &["Kernel panic", "panicked"],
            ..case(
                "virtio_net_tap_deleted",
                // The tap is deleted under a running guest: its frames have nowhere to go,
                // rvvmm says so once and keeps running, and the guest powers off normally.
                "tunctl -t tap7 >/dev/null && ifconfig tap7 10.0.7.1 netmask 255.255.255.0 up\n\
                 RUST_LOG=rvvmm=info /rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --memory 256M --net tap=tap7 --cmdline 'console=ttyS0 quiet rvvmm.test=net-gone' > /tmp/gone.out 2>&1 &\n\
                 pid=$!\n\
                 for i in $(seq 1 900); do grep -q '@@L2 net up' /tmp/gone.out && break; sleep 0.2; done\n\
                 ip link delete tap7 && echo \"@@GONE tap7 deleted: $(ls /sys/class/net | grep -c tap7) left\"\n\
                 wait $pid; echo \"@@GONE rvvmm status $?\"\n\
                 cat /tmp/gone.out",
                0,
                &[
                    "@@L2 ping before: 2 packets transmitted, 2 packets received",
                    "@@GONE tap7 deleted: 0 left",
                    "@@L2 ping after: 3 packets transmitted, 0 packets received",
                    "@@L2 powering off",
                    "@@GONE rvvmm status 0",
                    "virtio-net: cannot read from the tap (File descriptor in bad state (os error 77)); receive stops",
                ],
            )
        },
        Case {
            timeout: 600,
            reject: &["Kernel panic", "panicked", "FAILED"],
            ..case(
                "virtio_fs_share",
                fs_session(),
                0,
                &[
                    "guest RAM is a shared memfd",
                    "virtio-fs at 0x10001000, interrupt 1",
                    "@@L2 fs mounted: share /mnt virtiofs",
                    "@@L2 fs exec (boot 1): ran-from-the-share",
                    "@@L2 fs wrote from-l2",
                    "@@L2 fs unmounted",
                    "@@FS rvvmm status 0",
                    "@@FS the 64 MiB file read in L2 is intact",
                    "@@FS L1 reads what L2 wrote: written-by-l2-42",
                    "@@FS virtiofsd ended with rvvmm's connection: status 0",
                    "@@FS hugepages: rvvmm status 0",
                    "@@FS hugepages: L1 reads what L2 wrote: written-by-l2-42",
                    "H: @@L2 fs exec (boot 1): ran-from-the-share",
                    "H: @@L2 fs rebooting",
                    "H: @@L2 fs exec (boot 2): ran-from-the-share",
                ],
            )
        },
        Case {
            timeout: 600,
            reject: &["Kernel panic", "panicked"],
            ..case(
                "virtio_fs_backend_dies",
                fs_dead_session(),
                0,
                &[
                    "@@L2 fs before: made-in-L1",
                    "@@FSD virtiofsd killed",
                    "@@L2 fs after the backend died: cat: can't open '/mnt/probe-",
                    "Input/output error",
                    "@@L2 powering off",
                    "@@FSD rvvmm status 0",
                    "@@FSD lines saying so: 1",
                ],
            )
        },
        Case {
            timeout: 600,
            reject: &["Kernel panic", "panicked"],
            ..case(
                "virtio_vsock_snapshot_restore",
                vsock_snapshot_session(),
                0,
                &[
                    "@@VSNAP before: rtt status 0",
                    "@@VSNAP snapshot taken",
                    "@@VSNAP left by the killed rvvmm: /tmp/vv.sock",
                    "vsock socket /tmp/vv.sock: removing a stale socket",
                    "@@VSNAP resumed",
                    "@@VSNAP the held connection was reset in the guest",
                    "R: @@VSOCK error: ",
                    "@@VSNAP after: rtt status 0",
                    "R: @@VSOCK echoed 10 bytes",
                    "R: @@L2 powering off",
                    "@@VSNAP restored rvvmm status 0",
                ],
            )
        },
        Case {
            timeout: 600,
            reject: &["Kernel panic", "panicked", "DIFFERENT"],
            ..case(
                "virtio_vsock_both_ways",
                vsock_session(),
                0,
                &[
                    "@@VSOCK host listening on /tmp/v.sock_6000",
                    "@@VSOCK listening on port 5000",
                    "@@VSOCK answer: host heard: hello-from-l2",
                    "@@VSOCK host heard: hello-from-l2",
                    "@@VSOCK sent 10485760 bytes sha256",
                    ", intact",
                    "@@VSOCK echoed 10485760 bytes",
                    "@@VSOCK round trip median",
                    "@@VSOCK error: ",
                    "@@L2 vsock listener status 1",
                    "virtio-vsock: the host end of a connection (guest port 5000, host port ",
                    "@@L2 powering off",
                    "@@VS rvvmm status 0",
                    "@@VS socket left behind: \n",
                ],
            )
        },
        Case {
            timeout: 600,
            ..case(
                "virtio_console_hvc0",
                "/rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --memory 256M --console virtio --cmdline 'console=hvc0 quiet'",
                0,
                &["@@L2 init reached", "@@L2 cmdline console=hvc0 quiet", "@@L2 powering off"],
            )
        },
        Case {
            timeout: 300,
            expect_aia: &["in-kernel AIA: mode", "@@L2 init reached", "@@L2 cpus 2", "@@L2 hwrng virtio_rng.0 ", "status=0"],
            check: Check::InitWithin(30),
            expect_plic: &["has no in-kernel AIA", "status=1"],
            ..case(
                "linux_qemu_aia_dtb",
                "RUST_LOG=rvvmm=info /rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --dtb /l2/virt-aia.dtb --cpus 2 --memory 256M --rng --cmdline 'console=ttyS0 quiet rvvmm.test=rng'; echo status=$?",
                0,
                &[],
            )
        },
        Case {
            timeout: 300,
            expect_aia: &["in-kernel AIA: mode", "@@L2 hwrng virtio_rng.0 ", "APLIC-MSI", "virtio-rng at 0x10001000, interrupt 1 (AIA, edge)", "status=0"],
            expect_plic: &["has no in-kernel AIA", "status=1"],
            ..case(
                "linux_irqchip_aia_generated",
                "RUST_LOG=rvvmm=info /rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --irqchip aia --memory 256M --rng --cmdline 'console=ttyS0 quiet rvvmm.test=rng'; echo status=$?",
                0,
                &[],
            )
        },
        Case {
            timeout: 300,
            expect_aia: &["@@L2 shell ready", "hello-on-aia-42", "APLIC-MSI"],
            expect_plic: &["has no in-kernel AIA"],
            ..case(
                "linux_irqchip_aia_shell",
                shell_session(
                    "--irqchip aia",
                    "ttyS0",
                    &[
                        "echo hello-on-aia-$((6*7))",
                        "grep ttyS /proc/interrupts",
                        "poweroff -f",
                    ],
                ),
                0,
                &[],
            )
        },
        Case {
            timeout: 300,
            ..case(
                "linux_irqchip_plic_forced",
                "/rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --irqchip plic --memory 256M --rng --cmdline 'console=ttyS0 quiet rvvmm.test=rng'",
                0,
                &["@@L2 hwrng virtio_rng.0 ", "@@L2 irq "],
            )
        },
        case("bad_dtb", "/rvvmm --kernel /guests/hello.bin --dtb /guests/hello.bin", 2, &["--dtb: /guests/hello.bin: not a device tree"]),
        case(
            "initrd_too_large",
            "/rvvmm --kernel /guests/hello.bin --initrd /l2/Image --memory 16M",
            1,
            &["raise --memory"],
        ),
        case("memory_too_large", "/rvvmm --kernel /guests/hello.bin --memory 1T", 2, &["more than the 510 GiB"]),
        Case {
            timeout: 300,
            ..case(
                "virtio_console_shell",
                shell_session(
                    "--console virtio",
                    "hvc0",
                    &["echo hello-from-hvc0-$((6*7))", "poweroff -f"],
                ),
                0,
                &["@@L2 shell ready", "hello-from-hvc0-42"],
            )
        },
        case(
            "bad_kernel_path",
            "/rvvmm --kernel /nonexistent.bin",
            2,
            &["rvvmm: --kernel: /nonexistent.bin: No such file or directory"],
        ),
        case("no_kernel_flag", "/rvvmm", 2, &["--kernel <FILE>"]),
        Case {
            check: Check::Report("  --disable-isa can switch off: "),
            ..case(
                "list_extensions",
                "/rvvmm --list-extensions",
                0,
                &["ISA extensions this host's KVM vCPU offers: ", "--disable-isa can switch off: ", "SBI extensions this host's KVM vCPU offers: "],
            )
        },
        case(
            "disable_sbi_dbcn",
            "/rvvmm --kernel /guests/sbi_probe.bin && /rvvmm --kernel /guests/sbi_probe.bin --disable-sbi dbcn",
            0,
            &["sbi_probe: dbcn=1", "sbi_probe: hsm=1", "sbi_probe: dbcn=0", "sbi_probe: srst=1", "sbi_probe: done"],
        ),
        Case {
            // KVM 6.12 can hide Zicboz (henvcfg.CBZE) but has no means to hide Sstc: the guest
            // loses the one, and asking for the other is a one-line error naming what can go.
            reject: &["Kernel panic", "_zicboz"],
            timeout: 300,
            ..case(
                "linux_disable_isa_zicboz",
                "/rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --memory 256M --disable-isa zicboz --cmdline 'console=ttyS0 quiet'\n\
                 /rvvmm --kernel /l2/Image --memory 256M --disable-isa sstc; echo status=$?",
                0,
                &["@@L2 init reached", "@@L2 isa ", "_zicbom_zicntr_", "@@L2 powering off", "KVM on this host cannot switch off sstc (--disable-isa can switch off: ", "status=1"],
            )
        },
        Case {
            reject: &["Kernel panic"],
            timeout: 300,
            check: Check::InitWithin(30),
            ..case(
                "linux_from_config_file",
                "/rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --dtb /l2/virt.dtb --memory 512M --cmdline 'console=ttyS0 quiet rvvmm.mem_mib=512' --print-config > /tmp/vm.json && cat /tmp/vm.json && /rvvmm --config /tmp/vm.json",
                0,
                &["cpus.boot_vcpus = 2  (dtb /l2/virt.dtb)", "memory.size = 536870912  (--memory)", "\"boot_vcpus\": 2", "@@L2 init reached", "@@L2 cpus 2", "@@L2 memory ok", "@@L2 powering off"],
            )
        },
        Case {
            reject: &["Kernel panic"],
            timeout: 300,
            ..case(
                "linux_api_create_boot",
                "rm -f /tmp/create.sock\n\
                 /rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --memory 256M --cpus 2 --cmdline 'console=ttyS0 quiet rvvmm.mem_mib=256' --print-config > /tmp/create.json 2>/dev/null\n\
                 ( /rvvmm --api-socket /tmp/create.sock; echo \"@@API rvvmm status $?\" ) > /tmp/create.out 2>&1 &\n\
                 R=\"/rvvmm remote --api-socket /tmp/create.sock\"\n\
                 for i in $(seq 1 100); do [ -S /tmp/create.sock ] && break; sleep 0.1; done\n\
                 $R info; echo \"@@API info before create: $?\"\n\
                 echo '{\"payload\": {\"kernel\": \"/nonexistent\"}}' > /tmp/bad.json\n\
                 $R create /tmp/bad.json; echo \"@@API bad create: $?\"\n\
                 $R create /tmp/create.json && echo '@@API created'\n\
                 $R info | grep '\"state\"'\n\
                 $R boot && echo '@@API booted'\n\
                 wait\n\
                 cat /tmp/create.out",
                0,
                &["no VM is created", "@@API info before create: 1", "payload.kernel: /nonexistent: No such file", "@@API bad create: 1", "@@API created", "\"state\": \"Created\"", "@@API booted", "@@L2 init reached", "@@L2 cpus 2", "@@L2 memory ok", "@@L2 powering off", "@@API rvvmm status 0"],
            )
        },
        case(
            "kernel_too_large",
            "/rvvmm --kernel /l2/Image --memory 16M",
            1,
            &["raise --memory"],
        ),
    ]
}

/// The L1 shell script that runs `cases`: one file a case (see [`case_script`]) plus this.
/// The runner's script for `cases`: each case's output goes to the file `out` first (a case
/// may itself run a runner, as the native one in L1 does: each needs its own file).
pub fn runner(cases: &[Case], out: &str) -> String {
    runner_then(cases, out, "")
}

/// What L1 does after each case: it ends what the case left running (a case killed at its
/// time limit leaves its background rvvmm behind, holding CPU, RAM and the host's IMSIC guest
/// files) and removes what it left in /tmp (L1's files are its RAM: a 256 MiB snapshot left
/// there slowed every later Linux guest of a pass on 7.2). Only in L1: on a native host the
/// runner must not touch processes or files it did not make.
pub const L1_AFTER_CASE: &str =
    "for p in rvvmm rvvmm-timing rvvmm-base-timing bare-kvm lkvm; do killall -q -9 $p; done
     find /tmp -mindepth 1 -maxdepth 1 ! -name case.out -exec rm -rf {} + 2>/dev/null
";

/// [`runner`], with `after` run after each case.
pub fn runner_then(cases: &[Case], out: &str, after: &str) -> String {
    let mut s = String::new();
    for c in cases {
        let stdin = if c.stdin.is_some() {
            format!("/cases/{}.stdin", c.name)
        } else {
            "/dev/null".into()
        };
        s.push_str(&format!(
            "echo '@@CASE {name}'\ncd /\nt0=$(cut -d' ' -f1 /proc/uptime)\ntimeout -s KILL {t} sh /cases/{name}.sh < {stdin} > {out} 2>&1\nrc=$?\nt1=$(cut -d' ' -f1 /proc/uptime)\ncat {out}\necho\necho \"@@END {name} rc=$rc s=$(awk \"BEGIN {{ print $t1 - $t0 }}\")\"\n",
            name = c.name,
            t = c.timeout,
        ));
        s.push_str(after);
    }
    s
}

/// Judges every case of `cases` on the console `log` of the run that ran them, printing one
/// `lab[LABEL] NAME ok|FAILED (detail)` line each (and a failed case's output); returns how
/// many passed and failed.
pub fn report(cases: &[Case], label: &str, mode: Mode, log: &str) -> (usize, usize) {
    let ran = parse_log(log);
    let (mut passed, mut failed) = (0, 0);
    for c in cases {
        let result = ran.iter().find(|(name, _)| name == c.name).map(|(_, r)| r);
        let verdict = judge(c, mode, result);
        println!(
            "lab[{label}] {:<18} {} ({})",
            verdict.name,
            if verdict.pass { "ok" } else { "FAILED" },
            verdict.detail
        );
        if verdict.pass {
            passed += 1;
        } else {
            failed += 1;
            if let Some(r) = result {
                for line in r.output.lines().take(40) {
                    println!("    | {line}");
                }
            }
        }
    }
    (passed, failed)
}

/// The script of one case.
pub fn case_script(c: &Case) -> String {
    format!("#!/bin/sh\n{}\n", c.cmd)
}

/// The verdict on one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Case name.
    pub name: String,
    /// Passed?
    pub pass: bool,
    /// What was seen (status, and why it failed).
    pub detail: String,
}

/// A case's output and status, cut from the console log.
#[derive(Debug, Clone, PartialEq)]
pub struct Ran {
    /// Output lines.
    pub output: String,
    /// Exit status.
    pub rc: i32,
    /// How long it ran (L1's clock), when the log says.
    pub seconds: Option<f64>,
}

/// Cuts every `@@CASE`..`@@END` block out of the console log. A marker counts wherever it
/// stands in a line: a guest that left a partial line before it (no newline after its last
/// words) cannot hide the end of its case; the text before the marker is the case's output.
pub fn parse_log(log: &str) -> Vec<(String, Ran)> {
    let mut found = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in log.lines() {
        let line = line.trim_end_matches('\r');
        if let Some((_, name)) = line.split_once("@@CASE ") {
            current = Some((name.trim().to_string(), String::new()));
        } else if let Some((before, rest)) = line.split_once("@@END ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().unwrap_or_default();
            let rc = parts
                .next()
                .and_then(|p| p.strip_prefix("rc="))
                .and_then(|v| v.parse().ok());
            let seconds = parts
                .next()
                .and_then(|p| p.strip_prefix("s="))
                .and_then(|v| v.parse().ok());
            if let (Some((open, mut output)), Some(rc)) = (current.take(), rc) {
                if open == name {
                    if !before.is_empty() {
                        output.push_str(before);
                        output.push('\n');
                    }
                    found.push((
                        open,
                        Ran {
                            output,
                            rc,
                            seconds,
                        },
                    ));
                }
            }
        } else if let Some((_, output)) = current.as_mut() {
            output.push_str(line);
            output.push('\n');
        }
    }
    found
}

/// Text that fails every case, whatever else it expects: rvvmm panicking, and the failure
/// words of the lab's guests (resources/guests/lib.c's `fail` prints `FAIL: `; the L2 init
/// prints `@@L2 ... WRONG` / `FAILED`).
pub const ALWAYS_REJECT: &[&str] = &[
    "panicked",
    "RUST_BACKTRACE",
    "FAIL: ",
    "memory WRONG",
    "@@L2 disk mount FAILED",
];

/// Judges `ran` (None: the case never finished) against `c`.
pub fn judge(c: &Case, mode: Mode, ran: Option<&Ran>) -> Verdict {
    let mut problems = Vec::new();
    let mut detail = String::new();
    match ran {
        None => problems.push("no result (L1 hung or died before the case ended)".to_string()),
        Some(ran) => {
            detail = match ran.seconds {
                Some(s) => format!("rc={}, {s:.1} s", ran.rc),
                None => format!("rc={}", ran.rc),
            };
            if ran.rc != c.rc {
                problems.push(format!("exit status {} (expected {})", ran.rc, c.rc));
            }
            let mode_expect = match mode {
                Mode::Plic => c.expect_plic,
                Mode::Aia => c.expect_aia,
            };
            for want in c.expect.iter().chain(mode_expect) {
                if !ran.output.contains(want) {
                    problems.push(format!("missing {want:?}"));
                }
            }
            for bad in ALWAYS_REJECT.iter().chain(c.reject) {
                if ran.output.contains(bad) {
                    problems.push(format!("unexpected {bad:?}"));
                }
            }
            if let Check::RssGrowthAtMost(limit) = c.check {
                match (
                    kib_after(&ran.output, "VmRSS at start: "),
                    kib_after(&ran.output, "VmRSS at exit: "),
                ) {
                    (Some(start), Some(end)) => {
                        detail.push_str(&format!(", VmRSS {start} KiB -> {end} KiB"));
                        if end > start + limit {
                            problems
                                .push(format!("VmRSS grew by {} KiB (limit {limit})", end - start));
                        }
                    }
                    _ => problems.push("no VmRSS lines".into()),
                }
            }
            match c.check {
                Check::BootRuns(n) => boot_runs(&ran.output, n, &mut detail, &mut problems),
                Check::DtcReadsBack => dtc_reads_back(&ran.output, &mut detail, &mut problems),
                Check::InOrder(texts) => {
                    let mut at = 0;
                    for text in texts {
                        match ran.output[at..].find(text) {
                            Some(i) => at += i + text.len(),
                            None => problems.push(format!("{text:?} missing or out of order")),
                        }
                    }
                    for line in ran.output.lines().filter(|l| l.starts_with("@@API ")) {
                        detail.push_str(&format!(", {}", &line[6..]));
                    }
                }
                Check::IdleTicksAtMost(limit) => {
                    let lines: Vec<&str> = ran
                        .output
                        .lines()
                        .filter(|l| l.starts_with("@@IDLE "))
                        .collect();
                    if lines.is_empty() {
                        problems.push("no @@IDLE lines".into());
                    }
                    for line in lines {
                        detail.push_str(&format!(", {}", &line[7..]));
                        let ticks = line
                            .split("ticks=")
                            .nth(1)
                            .and_then(|t| t.split_whitespace().next()?.parse::<u64>().ok());
                        match ticks {
                            Some(t) if t <= limit => {}
                            Some(t) => problems.push(format!("{t} ticks (limit {limit})")),
                            None => problems.push(format!("no ticks in {line:?}")),
                        }
                    }
                }
                Check::Report(prefix) => {
                    if let Some(line) = ran.output.lines().find(|l| l.starts_with(prefix)) {
                        detail.push_str(&format!(", {line}"));
                    }
                }
                Check::InitWithin(limit) => {
                    for up in init_uptimes(&ran.output) {
                        detail.push_str(&format!(", init at uptime {up:.2} s"));
                        if up > f64::from(limit) {
                            problems.push(format!("init reached at {up:.2} s (limit {limit} s)"));
                        }
                    }
                }
                _ => {}
            }
            if let Some(exits) = ran
                .output
                .lines()
                .filter(|l| l.contains(" exits (per hart"))
                .find_map(|l| l.split("after ").nth(1))
            {
                if let Some(n) = exits.split_whitespace().next() {
                    detail.push_str(&format!(", {n} exits"));
                }
            }
        }
    }
    let pass = problems.is_empty();
    if !pass {
        detail.push_str(&format!(": {}", problems.join("; ")));
    }
    Verdict {
        name: c.name.to_string(),
        pass,
        detail,
    }
}

/// The median of `values` (which it sorts).
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// The guest uptime of each `@@L2 init reached` line.
fn init_uptimes(output: &str) -> Vec<f64> {
    output
        .lines()
        .filter_map(|l| l.split("@@L2 init reached, uptime ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

fn boot_runs(output: &str, n: usize, detail: &mut String, problems: &mut Vec<String>) {
    let mut walls: Vec<f64> = output
        .lines()
        .filter(|l| l.starts_with("@@RUN ") && l.contains(" rc=0 "))
        .filter_map(|l| l.split("wall=").nth(1)?.trim().parse().ok())
        .collect();
    let mut uptimes = init_uptimes(output);
    if walls.len() != n || uptimes.len() != n {
        problems.push(format!(
            "{} of {n} boots reached init and powered off",
            walls.len().min(uptimes.len())
        ));
    }
    let walls_text = walls
        .iter()
        .map(|w| format!("{w:.2}"))
        .collect::<Vec<_>>()
        .join(" ");
    if let (Some(wall), Some(up)) = (median(&mut walls), median(&mut uptimes)) {
        detail.push_str(&format!(
            ", boot to init and power-off: median {wall:.2} s wall ({walls_text}); guest uptime at init: median {up:.2} s"
        ));
    }
}

fn dtc_reads_back(output: &str, detail: &mut String, problems: &mut Vec<String>) {
    let b64: String = output
        .lines()
        .skip_while(|l| l.trim() != "@@DTB")
        .skip(1)
        .take_while(|l| l.trim() != "@@ENDDTB")
        .collect();
    match crate::host::dtc_decompile(&b64) {
        Ok(dts) => {
            for want in [
                "riscv,isa = \"rv64",
                "mmu-type = \"riscv,sv",
                "bootargs = \"console=ttyS0\"",
                "rvvmm,boot-count",
            ] {
                if !dts.contains(want) {
                    problems.push(format!("dts lacks {want:?}"));
                }
            }
            if dts.contains("_h_") || dts.contains("imafdch") {
                problems.push("dts still lists the H extension".into());
            }
            if let Some(isa) = dts.lines().find(|l| l.contains("riscv,isa = ")) {
                detail.push_str(&format!(", dtc reads it back; {}", isa.trim()));
            }
        }
        Err(e) => problems.push(format!("dtc cannot read the dumped dtb: {e}")),
    }
}

fn kib_after(output: &str, prefix: &str) -> Option<u64> {
    output
        .lines()
        .find_map(|l| l.split(prefix).nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Whether `sh -n` (L1 runs cases with a POSIX shell: busybox's; here dash) parses the
/// case's command; the shell's complaint if not. A quote in an embedded awk program, say,
/// ends a case at its first line in L1, long after the build.
#[cfg(test)]
pub fn shell_parses(case: &Case) -> Result<(), String> {
    use std::io::Write;
    let mut sh = std::process::Command::new("sh")
        .arg("-n")
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run sh: {e}"))?;
    sh.stdin
        .take()
        .expect("piped")
        .write_all(case.cmd.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = sh.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            case.name,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_is_a_shell_script_that_parses() {
        for case in all_cases() {
            shell_parses(&case).unwrap();
        }
    }

    #[test]
    fn cases_needing_a_kvm_feature_run_on_the_kernels_that_have_it() {
        let susp = Needs::Since(6, 14, "SBI SUSP");
        assert_eq!(susp.skip_on("7.2.13+deb14-riscv64"), None);
        assert_eq!(susp.skip_on("6.14.0"), None);
        let why = susp.skip_on("6.12.107+deb13-riscv64").unwrap();
        assert!(why.contains("Linux 6.14 or later (SBI SUSP)"), "{why}");
        let before = Needs::Before(6, 14, "SBI SUSP");
        assert_eq!(before.skip_on("6.12.107+deb13-riscv64"), None);
        assert!(before.skip_on("7.2.13+deb14-riscv64").is_some());
        assert_eq!(Needs::Any.skip_on("6.1"), None);
        let names: Vec<&str> = cases().iter().map(|c| c.name).collect();
        let unique: std::collections::HashSet<&&str> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "case names are unique");
        for name in ONE_KERNEL
            .iter()
            .chain(ONE_MODE)
            .chain(LATER_KERNELS_AIA_ONLY)
        {
            assert!(
                names.contains(name),
                "ONE_KERNEL, ONE_MODE or LATER_KERNELS_AIA_ONLY names {name}, which the plan lacks"
            );
        }
    }

    /// The demo runs the README's first command as the README writes it (its shell line
    /// continuations joined).
    #[test]
    fn the_demo_runs_the_readmes_first_command() {
        let readme = std::fs::read_to_string(crate::paths::root().join("README.md")).unwrap();
        let joined = readme.replace("\\\n", " ");
        let squeezed = joined
            .split(' ')
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            squeezed.contains(README_COMMAND),
            "README.md lost: {README_COMMAND}"
        );
        let case = cases().into_iter().find(|c| c.name == README_CASE).unwrap();
        assert!(case.cmd.ends_with(README_COMMAND));
    }

    #[test]
    fn names_are_unique_and_shell_safe() {
        let cases = cases();
        let mut names: Vec<_> = cases.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), cases.len());
        assert!(cases.iter().all(|c| c
            .name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')));
    }

    #[test]
    fn log_blocks_are_cut_and_judged() {
        let log = "boot noise\r\n@@CASE hello\r\nHello from a RISC-V guest on rvvmm!\r\n@@END hello rc=0\r\n@@CASE boot_regs\r\nFAIL: x\r\n@@END boot_regs rc=10\r\n@@CASE dbcn\r\n[ kernel oops ]\r\n";
        let ran = parse_log(log);
        assert_eq!(ran.len(), 2);
        let cases = cases();
        let hello = cases.iter().find(|c| c.name == "hello").unwrap();
        assert!(judge(hello, Mode::Aia, Some(&ran[0].1)).pass);
        let regs = cases.iter().find(|c| c.name == "boot_regs").unwrap();
        let v = judge(regs, Mode::Aia, Some(&ran[1].1));
        assert!(!v.pass && v.detail.contains("exit status 10"));
        let dbcn = cases.iter().find(|c| c.name == "dbcn").unwrap();
        assert!(!judge(dbcn, Mode::Plic, None).pass);
    }

    #[test]
    fn a_partial_line_cannot_hide_the_end_and_guest_failure_text_fails() {
        // As seen: the guest ran on after its finisher write and left half a line.
        let log = "@@CASE finisher_code\r\nfinisher: exiting with code 42\r\nFAIL: finisher write returned@@END finisher_code rc=42\r\n@@CASE hello\r\n";
        let ran = parse_log(log);
        assert_eq!(ran.len(), 1, "{ran:?}");
        assert_eq!(ran[0].1.rc, 42);
        assert!(ran[0].1.output.ends_with("FAIL: finisher write returned\n"));
        let cases = cases();
        let finisher = cases.iter().find(|c| c.name == "finisher_code").unwrap();
        let v = judge(finisher, Mode::Aia, Some(&ran[0].1));
        assert!(
            !v.pass && v.detail.contains("unexpected \"FAIL: \""),
            "{v:?}"
        );
        // The runner puts each marker on a line of its own.
        assert!(
            runner(&cases[..1], "/tmp/case.out").contains("cat /tmp/case.out\necho\necho \"@@END")
        );
    }

    #[test]
    fn the_stop_race_cases_count_runs_and_sentinels() {
        let c = cases()
            .into_iter()
            .find(|c| c.name == "stop_race_exit_x200")
            .unwrap();
        assert!(c.cmd.contains("/guests/stop_race.bin") && c.cmd.contains("seq 1 200"));
        let ran = |summary: &str| Ran {
            output: format!("{summary}\n"),
            rc: 0,
            seconds: None,
        };
        let good = "stop_race: 200 of 200 runs exited 42, 0 ran on after the stop";
        assert!(judge(&c, Mode::Plic, Some(&ran(good))).pass);
        let bad = "run 7 ran on: 1 sentinel lines\nstop_race: 200 of 200 runs exited 42, 1 ran on after the stop";
        assert!(!judge(&c, Mode::Plic, Some(&ran(bad))).pass);
    }

    #[test]
    fn rss_growth_is_checked() {
        let c = Case {
            check: Check::RssGrowthAtMost(256),
            ..case("x", "", 0, &[])
        };
        let ran = |end: u64| Ran {
            output: format!("VmRSS at start: 1000 KiB\nVmRSS at exit: {end} KiB after 5 exits\n"),
            rc: 0,
            seconds: None,
        };
        assert!(judge(&c, Mode::Plic, Some(&ran(1200))).pass);
        let v = judge(&c, Mode::Plic, Some(&ran(2000)));
        assert!(!v.pass && v.detail.contains("grew by 1000 KiB"));
    }

    #[test]
    fn boot_runs_report_medians() {
        let c = Case {
            check: Check::BootRuns(3),
            ..case("x", "", 0, &[])
        };
        let out = "@@L2 init reached, uptime 1.50 s\n@@RUN 1 rc=0 wall=4.0\n@@L2 init reached, uptime 1.20 s\n@@RUN 2 rc=0 wall=3.0\n@@L2 init reached, uptime 1.30 s\n@@RUN 3 rc=0 wall=9.5\n";
        let v = judge(
            &c,
            Mode::Aia,
            Some(&Ran {
                output: out.into(),
                rc: 0,
                seconds: None,
            }),
        );
        assert!(v.pass, "{v:?}");
        assert!(
            v.detail.contains("median 4.00 s wall") && v.detail.contains("median 1.30 s"),
            "{}",
            v.detail
        );
        let short = Ran {
            output: "@@RUN 1 rc=0 wall=4.0\n".into(),
            rc: 0,
            seconds: None,
        };
        assert!(!judge(&c, Mode::Aia, Some(&short)).pass);
        assert_eq!(median(&mut [4.0, 1.0]), Some(2.5));
    }

    #[test]
    fn mode_specific_expectations() {
        let c = cases()
            .into_iter()
            .find(|c| c.name == "l1_irqchip")
            .unwrap();
        let ran = Ran {
            output: "/dev/kvm\nriscv-plic: mapped 96 interrupts\n".into(),
            rc: 0,
            seconds: None,
        };
        assert!(judge(&c, Mode::Plic, Some(&ran)).pass);
        assert!(!judge(&c, Mode::Aia, Some(&ran)).pass);
    }
}

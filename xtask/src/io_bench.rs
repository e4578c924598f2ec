//! The bench's `io` part: virtio-blk and virtio-net under rvvmm and (with `--lkvm`) under
//! kvmtool, in the same L1 boot, interleaved: the same kernel, initramfs, disk file, tap, 256
//! MiB of RAM and one vCPU, both on virtio-mmio. L1 drives the guest over TCP (vsock-tool's
//! io-serve in L2, see l2-init's io-bench), so L1 can read the VMM's CPU time around each
//! phase:
//!
//! - virtio-blk sequential read and write, 1 MiB direct I/O in the guest (`O_DIRECT`: no guest
//!   page cache), timed in the guest by `vsock-tool seq`;
//! - 4 KiB random reads (O_DIRECT) at queue depth 1 and 16 (`vsock-tool randread`, 16
//!   threads for 16), with the interrupts the guest took for the disk meanwhile;
//! - TCP throughput L1 -> L2 and L2 -> L1 over the tap, and ping's round trip (median);
//! - the VMM's CPU time (utime + stime of all its threads, which includes the guest's own time
//!   on its vCPU) per GiB moved, for the disk phases and the network phases;
//! - the VMM's own memory: its peak RSS less the resident part of guest RAM (the largest
//!   mapping and its same-named neighbours up to the guest's size: madvise splits rvvmm's),
//!   read from /proc before the guest powers off, and what of it is resident then by kind (the
//!   binary; heap, stacks and buffers);
//! - L1's KVM counts of the guest's exits (debugfs) per read and per ping, by kind.

use crate::bench::{med, Sample};
use crate::plan::{self, Case};

/// The sizes of one run: CI's quick one (rvvmm alone, so it cannot rot) and the measuring one.
struct Sizes {
    disk_mib: u64,
    rand_secs: u64,
    net_mib: u64,
    pings: u32,
}

fn sizes(quick: bool) -> Sizes {
    if quick {
        Sizes {
            disk_mib: 64,
            rand_secs: 2,
            net_mib: 8,
            pings: 20,
        }
    } else {
        Sizes {
            disk_mib: 256,
            rand_secs: 5,
            net_mib: 32,
            pings: 100,
        }
    }
}

/// The guest's command line in both VMMs.
const GUEST: &str = "console=ttyS0 quiet rvvmm.test=io-bench";

/// The case: `reps` interleaved runs of each VMM. Every number comes out as
/// `@@IO vmm rep key value`.
pub fn case(reps: usize, lkvm: bool, quick: bool) -> Case {
    let s = sizes(quick);
    let (mib, secs, net, pings) = (s.disk_mib, s.rand_secs, s.net_mib, s.pings);
    let bytes = net << 20;
    let body = format!(
        r#"case $v in
rvvmm) /rvvmm --kernel /l2/Image --initrd /l2/initrd.cpio --memory 256M --disk /tmp/io.img --net tap=tap5 --cmdline '{GUEST}' > /tmp/io.out 2>&1 & ;;
lkvm) /lkvm run --console serial --nodefaults --virtio-transport mmio -k /l2/Image -i /l2/initrd.cpio -m 256 -c 1 -d /tmp/io.img -n mode=tap,tapif=tap5 -p '{GUEST}' > /tmp/io.out 2>&1 & ;;
esac
pid=$!
for i in $(seq 1 900); do grep -q '@@L2 io serving' /tmp/io.out && break; kill -0 $pid 2>/dev/null || break; sleep 0.2; done
c0=$(cpu)
seq_rate read seqread_mib_s
seq_rate write seqwrite_mib_s
c1=$(cpu)
emit_cpu blk "$(awk "BEGIN {{ print {mib} * 2 / 1024 }}")" "$c0" "$c1"
for q in 1 16; do
  u0=$(cpu)
  k0=$(kvm_stats)
  o=$(timeout $(({secs} + 60)) /vsock-tool io-run $g "/bin/vsock-tool randread /dev/vda $q {secs}")
  k1=$(kvm_stats)
  u1=$(cpu)
  echo "$o" | sed "s/^/@@IO-RAW $v randread /"
  iops=$(echo "$o" | sed -n 's/.* iops=\([0-9.]*\).*/\1/p')
  emit randread${{q}}_iops "$iops"
  reads=$(echo "$o" | sed -n 's/.* reads=\([0-9]*\).*/\1/p'); irqs=$(echo "$o" | sed -n 's/.* irqs=\([0-9]*\).*/\1/p')
  [ -n "$reads" ] && [ -n "$irqs" ] && [ "$reads" -gt 0 ] && emit randread${{q}}_irqs_per_read "$(awk "BEGIN {{ print $irqs / $reads }}")" && emit randread${{q}}_irqs_per_s "$(awk "BEGIN {{ print $irqs / {secs} }}")"
  if [ -n "$reads" ] && [ "$reads" -gt 0 ]; then
    # Where a read's time goes, in CPU us (ticks of 10 ms): the guest, the vCPU thread outside
    # it (L1's KVM and the VMM's exit handling), the VMM's other threads (the device's work).
    emit randread${{q}}_us_per_read "$(echo "$iops" | awk '{{ if ($1 > 0) print 1000000 / $1 }}')"
    emit randread${{q}}_guest_us_per_read "$(echo "$u0 $u1" | awk -v n=$reads '{{ print ($6 - $3) * 10000 / n }}')"
    emit randread${{q}}_vcpu_host_us_per_read "$(echo "$u0 $u1" | awk -v n=$reads '{{ print (($5 - $6) - ($2 - $3)) * 10000 / n }}')"
    emit randread${{q}}_dev_us_per_read "$(echo "$u0 $u1" | awk -v n=$reads '{{ print (($4 - $5) - ($1 - $2)) * 10000 / n }}')"
    i=0
    for stat in exits mmio_exit_user mmio_exit_kernel wfi_exit_stat; do
      i=$((i + 1))
      emit randread${{q}}_${{stat}}_per_read "$(echo "$k0 $k1" | awk -v i=$i -v n=$reads '{{ print ($(i + 4) - $i) / n }}')"
    done
  fi
done
c0=$(cpu)
emit push_mib_s "$(timeout 300 /vsock-tool io-push $g {bytes} | sed -n 's/.* in \([0-9.]*\) s.*/\1/p' | awk '{{ if ($1 > 0) print {net} / $1 }}')"
emit pull_mib_s "$(timeout 300 /vsock-tool io-pull $g {bytes} | sed -n 's/.* in \([0-9.]*\) s.*/\1/p' | awk '{{ if ($1 > 0) print {net} / $1 }}')"
c1=$(cpu)
emit_cpu net "$(awk "BEGIN {{ print {net} * 2 / 1024 }}")" "$c0" "$c1"
k0=$(kvm_stats)
emit ping_us "$(timeout 60 ping -c {pings} -A -W 5 10.0.5.2 | sed -n 's/.*time=\([0-9.]*\) ms.*/\1/p' | sort -n | awk '{{ t[NR] = $1 }} END {{ if (NR > 0) print t[int((NR + 1) / 2)] * 1000 }}')"
k1=$(kvm_stats)
emit ping_exits "$(echo "$k0 $k1" | awk '{{ print ($5 - $1) / {pings} }}')"
emit ping_mmio_exit_user "$(echo "$k0 $k1" | awk '{{ print ($6 - $2) / {pings} }}')"
# Guest RAM is the largest mapping and the mappings touching it of the same name that make up
# the guest's 256 MiB (madvise gives rvvmm's dtb block, its last 2 MiB, a mapping of its own);
# the rest is the VMM's own. What is resident of it now, by kind: the VMM's binary, anonymous
# memory (heap, stacks, buffers); each mapping also as a raw line.
hwm=$(awk '/^VmHWM:/ {{ print $2 }}' /proc/$pid/status)
exe=$(readlink /proc/$pid/exe)
sps=""
for t in /proc/$pid/task/*; do
  sp=$(cut -d' ' -f8 $t/syscall 2>/dev/null)
  echo "@@IO-RAW $v thread $(cat $t/comm) sp $sp"
  sps="$sps $(echo "$sp" | sed -n 's/^0x\([0-9a-f]*\)$/\1/p')"
done
awk -v exe="$exe" -v v=$v -v r=$r -v hwm="$hwm" -v ramkib=262144 -v sps="$sps" '
/^[0-9a-f]+-[0-9a-f]+ / {{ n++; split($1, a, "-"); lo[n] = a[1]; hi[n] = a[2]; name[n] = $6; what[n] = $1 " " $2 " " $6 }}
/^Size:/ {{ sz[n] = $2 }}
/^Rss:/ {{ rss[n] = $2; if (sz[n] > sz[big] + 0) big = n }}
function pad(h) {{ h = sprintf("%16s", h); gsub(/ /, "0", h); return h }}
END {{
  if (!big || hwm == "") exit
  k = split(sps, sp, " ")
  for (i = 1; i <= n; i++) for (j = 1; j <= k; j++) if (pad(lo[i]) <= pad(sp[j]) && pad(sp[j]) < pad(hi[i])) stack[i] = 1
  # The run of touching, same-named mappings around the largest that adds up to the guest
  # size exactly, none of them a thread stack (a stack can touch guest RAM, be as large as a
  # piece, and carry the same VmFlags: glibc marks stacks nh); else the largest alone. (No
  # apostrophe in here: this program is single-quoted in the shell.)
  first = big; last = big
  for (l = big; l >= 1 && l > big - 4; l--) {{
    if (l < big && (hi[l] != lo[l + 1] || name[l] != name[big] || stack[l])) break
    got = 0
    for (i = l; i < big; i++) got += sz[i]
    for (m = big; m <= n && m < big + 4; m++) {{
      if (m > big && (lo[m] != hi[m - 1] || name[m] != name[big] || stack[m])) break
      got += sz[m]
      if (got == ramkib) {{ first = l; last = m }}
    }}
  }}
  for (i = first; i <= last; i++) ram[i] = 1
  for (i = 1; i <= n; i++) {{
    if (ram[i]) {{ guest += rss[i]; print "@@IO-RAW " v " guest RAM " what[i] " " sz[i] " " rss[i]; continue }}
    if (rss[i] == 0) continue
    print "@@IO-RAW " v " mapping " what[i] " " sz[i] " " rss[i]
    if (name[i] == exe) bin += rss[i]
    else if (name[i] == "" || name[i] == "[heap]" || name[i] == "[stack]") anon += rss[i]
  }}
  print "@@IO " v " " r " own_kib " hwm - guest
  print "@@IO " v " " r " own_bin_kib " bin + 0
  print "@@IO " v " " r " own_anon_kib " anon + 0
}}' /proc/$pid/smaps
timeout 10 /vsock-tool io-run $g 'poweroff -f' > /dev/null 2>&1
for i in $(seq 1 100); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
kill -9 $pid 2>/dev/null
wait $pid
grep -E 'eth0|virtio|error|warn|@@L2' /tmp/io.out | tail -20 | sed "s/^/@@IO-LOG $v /""#
    );
    let mut vmms = vec!["rvvmm"];
    if lkvm {
        vmms.push("lkvm");
    }
    let script = format!(
        r#"tunctl -t tap5 >/dev/null && ifconfig tap5 10.0.5.1 netmask 255.255.255.0 up
dd if=/dev/urandom of=/tmp/io.img bs=1M count={mib} 2>/dev/null
g=10.0.5.2:5000
# The VMM's CPU time in ticks: all of it, its vCPU threads' (rvvmm's vcpuN, kvmtool's
# kvm-vcpu-N; the L2 guest's own time is in theirs) and the guest's (stat field 43, KVM's guest
# accounting). The rest is the device and event threads'.
cpu() {{
  vc=0
  for t in /proc/$pid/task/*; do
    case "$(cat $t/comm 2>/dev/null)" in *vcpu*) vc=$((vc + $(awk '{{ print $14 + $15 }}' $t/stat 2>/dev/null || echo 0))) ;; esac
  done
  awk -v vc=$vc '{{ print $14 + $15, vc, $43 }}' /proc/$pid/stat
}}
# emit_cpu blk|net GIB "$c0" "$c1": CPU seconds per GiB moved, all, vCPU threads, guest.
emit_cpu() {{
  emit $1_cpu_s_per_gib "$(echo "$3 $4" | awk -v g=$2 '{{ print ($4 - $1) / 100 / g }}')"
  emit $1_vcpu_cpu_s_per_gib "$(echo "$3 $4" | awk -v g=$2 '{{ print ($5 - $2) / 100 / g }}')"
  emit $1_guest_cpu_s_per_gib "$(echo "$3 $4" | awk -v g=$2 '{{ print ($6 - $3) / 100 / g }}')"
}}
# KVM's own counts of the guest's exits (all VMs: one runs at a time), from L1's debugfs.
mount -t debugfs none /sys/kernel/debug 2>/dev/null
kvm_stats() {{ for f in exits mmio_exit_user mmio_exit_kernel wfi_exit_stat; do cat /sys/kernel/debug/kvm/$f 2>/dev/null || echo 0; done | tr '\n' ' '; }}
emit() {{ [ -n "$2" ] && echo "@@IO $v $r $1 $2"; }}
seq_rate() {{ o=$(timeout 300 /vsock-tool io-run $g "/bin/vsock-tool seq /dev/vda {mib} $1"); echo "$o" | sed "s/^/@@IO-RAW $v $1 /"; emit $2 "$(echo "$o" | sed -n 's/.* secs=\([0-9.]*\).*/\1/p' | awk '{{ if ($1 > 0) print {mib} / $1 }}')"; }}
{}
rm -f /tmp/io.img
ip link delete tap5"#,
        crate::bench::interleaved(reps, &vmms, &body)
    );
    Case {
        timeout: 3600,
        ..plan::case("bench_io", plan::leak(script), 0, &[])
    }
}

/// The `@@IO vmm rep key value` lines, as the bench's samples (`what` is the key).
pub fn samples(output: &str) -> Vec<Sample> {
    output
        .lines()
        .filter_map(|l| {
            let mut f = l.strip_prefix("@@IO ")?.split_whitespace();
            Some(Sample {
                vmm: f.next()?.to_string(),
                rep: f.next()?.parse().ok()?,
                what: f.next()?.to_string(),
                value: f.next()?.parse().ok().filter(|v: &f64| v.is_finite())?,
            })
        })
        .collect()
}

/// Which way a number is better: the ratio printed is rvvmm/kvmtool where more is better,
/// kvmtool/rvvmm where less is, so that above 1 always means rvvmm does better; none for a
/// count that only explains the others.
#[derive(Clone, Copy, PartialEq)]
enum Better {
    More,
    Less,
    Neither,
}

const KEYS: &[(&str, &str, Better)] = &[
    (
        "seqread_mib_s",
        "blk seq read 1M direct, MiB/s",
        Better::More,
    ),
    (
        "seqwrite_mib_s",
        "blk seq write 1M direct, MiB/s",
        Better::More,
    ),
    (
        "randread1_iops",
        "blk 4K random read QD1, IOPS",
        Better::More,
    ),
    (
        "randread16_iops",
        "blk 4K random read QD16, IOPS",
        Better::More,
    ),
    (
        "randread1_us_per_read",
        "time per read QD1 (1 / IOPS), us",
        Better::Less,
    ),
    (
        "randread1_guest_us_per_read",
        "  CPU of it in the guest, us",
        Better::Less,
    ),
    (
        "randread1_vcpu_host_us_per_read",
        "  CPU of it in the vCPU thread out of the guest, us",
        Better::Less,
    ),
    (
        "randread1_dev_us_per_read",
        "  CPU of it in the VMM's other threads, us",
        Better::Less,
    ),
    (
        "randread1_irqs_per_s",
        "guest interrupts/s, blk QD1",
        Better::Neither,
    ),
    (
        "randread1_irqs_per_read",
        "guest interrupts per read, QD1",
        Better::Less,
    ),
    (
        "randread16_irqs_per_read",
        "guest interrupts per read, QD16",
        Better::Less,
    ),
    (
        "randread1_exits_per_read",
        "L2 exits per read, QD1 (L1's KVM counts)",
        Better::Less,
    ),
    (
        "randread1_mmio_exit_user_per_read",
        "  of them MMIO in the VMM, QD1",
        Better::Less,
    ),
    (
        "randread1_mmio_exit_kernel_per_read",
        "  of them MMIO in L1's KVM (ioeventfd), QD1",
        Better::Less,
    ),
    (
        "randread1_wfi_exit_stat_per_read",
        "  of them WFI, QD1",
        Better::Neither,
    ),
    (
        "randread16_exits_per_read",
        "L2 exits per read, QD16",
        Better::Less,
    ),
    (
        "randread16_mmio_exit_user_per_read",
        "  of them MMIO in the VMM, QD16",
        Better::Less,
    ),
    (
        "randread16_mmio_exit_kernel_per_read",
        "  of them MMIO in L1's KVM (ioeventfd), QD16",
        Better::Less,
    ),
    (
        "blk_cpu_s_per_gib",
        "VMM CPU s per GiB, blk seq",
        Better::Less,
    ),
    (
        "blk_vcpu_cpu_s_per_gib",
        "  of it vCPU threads (guest inside)",
        Better::Less,
    ),
    (
        "blk_guest_cpu_s_per_gib",
        "  of it the guest (KVM's guest time)",
        Better::Less,
    ),
    ("push_mib_s", "net TCP L1 -> L2, MiB/s", Better::More),
    ("pull_mib_s", "net TCP L2 -> L1, MiB/s", Better::More),
    ("ping_us", "net ping round trip (median), us", Better::Less),
    ("net_cpu_s_per_gib", "VMM CPU s per GiB, net", Better::Less),
    (
        "net_vcpu_cpu_s_per_gib",
        "  of it vCPU threads (guest inside)",
        Better::Less,
    ),
    (
        "net_guest_cpu_s_per_gib",
        "  of it the guest (KVM's guest time)",
        Better::Less,
    ),
    ("ping_exits", "L2 exits per ping round trip", Better::Less),
    (
        "ping_mmio_exit_user",
        "  of them MMIO in the VMM",
        Better::Less,
    ),
    (
        "own_kib",
        "VMM own memory (peak RSS - guest RAM), KiB",
        Better::Less,
    ),
    (
        "own_bin_kib",
        "  resident now: the VMM's binary, KiB",
        Better::Less,
    ),
    (
        "own_anon_kib",
        "  resident now: heap, stacks, buffers, KiB",
        Better::Less,
    ),
];

/// Prints the table of the part's `samples` (among the bench's): each VMM's medians and the
/// ratio; the case's `output` gives the VMM's last lines when rvvmm missed a number. Returns
/// whether rvvmm gave every number (kvmtool's gaps show as `-`).
pub fn report(label: &str, samples: &[Sample], output: &str) -> bool {
    let med = |vmm: &str, key: &str| med(samples, vmm, key);
    let reps = samples.iter().map(|s| s.rep).max().unwrap_or(0);
    println!(
        "bench[{label}] I/O beside kvmtool (same L1 boot, guest, disk file, tap, 256 MiB, 1 vCPU, virtio-mmio; medians of {reps}; ratio above 1: rvvmm better)"
    );
    println!(
        "bench[{label}]   {:<44} {:>10} {:>10} {:>7}",
        "", "rvvmm", "kvmtool", "ratio"
    );
    let mut complete = true;
    for &(key, what, better) in KEYS {
        let (r, k) = (med("rvvmm", key), med("lkvm", key));
        complete &= r.is_some();
        let ratio = match (r, k, better) {
            (Some(r), Some(k), Better::More) if k > 0.0 => format!("{:.3}", r / k),
            (Some(r), Some(k), Better::Less) if r > 0.0 => format!("{:.3}", k / r),
            _ => "-".into(),
        };
        let show = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
        println!(
            "bench[{label}]   {what:<44} {:>10} {:>10} {ratio:>7}",
            show(r),
            show(k)
        );
    }
    if !complete {
        println!("bench[{label}] I/O: missing rvvmm samples; the VMM's last lines:");
        for l in output.lines().filter(|l| {
            l.starts_with("@@IO-LOG ")
                || l.starts_with("@@IO-RAW ")
                || l.starts_with("@@VSOCK error")
        }) {
            println!("    | {l}");
        }
    }
    complete
}

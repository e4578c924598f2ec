#!/bin/busybox sh
# /init of the L2 Linux guest that the lab boots with rvvmm. It prints @@L2 markers on the
# console (the UART) for the lab to check, then does what rvvmm.test= on the command line asks.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null

arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p"; }

# virtio and ext4 drivers are modules in Debian's kernel. Each insmod costs 0.1-0.8 s nested
# (all of them 1.8 s of an 8 s boot), so load only what this VM's devices need, as udev would:
# virtio-mmio when the device tree has an enabled transport, then each device's driver.
load() {
    for m in "$@"; do
        [ -e /lib/modules/$m.ko ] && insmod /lib/modules/$m.ko 2>/dev/null
    done
}
# (rvvmm and QEMU put the transports under /soc, kvmtool under /smb.)
for node in /proc/device-tree/soc/virtio_mmio@* /proc/device-tree/smb/virtio@*; do
    [ -e "$node/compatible" ] || continue
    [ -e "$node/status" ] && [ "$(tr -d '\0' < "$node/status")" = disabled ] && continue
    load virtio_mmio
    break
done
for id in /sys/bus/virtio/devices/*/device; do
    case "$(cat "$id" 2>/dev/null)" in
    0x0001) load failover net_failover virtio_net ;;
    0x0002) load virtio_blk crc16 crc32c_generic crc32c-cryptoapi mbcache jbd2 ext4 ;;
    0x0004) load virtio-rng ;;
    0x0013) load vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport ;;
    esac
done

# With console=hvc0 the console is virtio-console, a module-loaded transport away: the kernel
# found no /dev/console for init, so attach to hvc0 once it exists.
case " $(cat /proc/cmdline) " in
*" console=hvc0 "*)
    for i in $(seq 1 50); do [ -e /dev/hvc0 ] && break; sleep 0.1; done
    exec </dev/hvc0 >/dev/hvc0 2>&1
    ;;
esac

echo "@@L2 init reached, uptime $(cut -d' ' -f1 /proc/uptime) s"
echo "@@L2 cpus $(grep -c ^processor /proc/cpuinfo)"
echo "@@L2 cmdline $(cat /proc/cmdline)"
echo "@@L2 isa $(grep -m1 ^isa /proc/cpuinfo | cut -d: -f2)"
hex=$(od -An -tx1 /proc/device-tree/chosen/rvvmm,boot-count 2>/dev/null | tr -d ' \n')
boot=${hex:+$((0x$hex))}
echo "@@L2 boot-count ${boot:-none}"

want=$(arg rvvmm.mem_mib)
if [ -n "$want" ]; then
    kib=$(sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo)
    # MemTotal is RAM minus what the kernel keeps for itself (its image, page structures):
    # at most --memory, and less by no more than 100 MiB.
    if [ "$kib" -le $((want * 1024)) ] && [ "$kib" -ge $(((want - 100) * 1024)) ]; then
        echo "@@L2 memory ok: MemTotal ${kib} kB for --memory ${want}M"
    else
        echo "@@L2 memory WRONG: MemTotal ${kib} kB for --memory ${want}M"
    fi
fi

# What a newcomer wants to see of a guest (cargo xtask demo): the kernel, the harts and what
# they offer, the memory.
about() {
    echo "rvvmm guest: $(uname -a)"
    grep -E '^(processor|hart|isa|mmu)' /proc/cpuinfo | sed 's/^/rvvmm guest: /'
    free -m | sed 's/^/rvvmm guest: /'
}

case "$(arg rvvmm.test)" in
"")
    # No test asked: the README's first command, as the demo runs it.
    about
    ;;
interactive)
    # cargo xtask demo --shell: a login-style shell on the console with job control (Ctrl-C
    # reaches the foreground command); leaving it powers the guest off.
    about
    echo "rvvmm guest: a shell on the guest's console; 'exit' or Ctrl-D powers the guest off"
    setsid cttyhack sh -l
    ;;
vsock)
    # virtio-vsock both ways: an echo listener on port 5000 for the host's connections
    # (rvvmm.vsock_conns of them), and a connection to the host's port 6000.
    /bin/vsock-tool listen 5000 "$(arg rvvmm.vsock_conns)" &
    listener=$!
    /bin/vsock-tool connect 2 6000 hello-from-l2
    wait $listener
    echo "@@L2 vsock listener status $?"
    ;;
fs)
    # virtio-fs: the host directory L1's virtiofsd serves, mounted by its tag: a static binary
    # run from it, a big file read back (its sha256 for L1 to compare), a file written for L1.
    mkdir -p /mnt
    if mount -t virtiofs "$(arg rvvmm.fs_tag)" /mnt; then
        echo "@@L2 fs mounted: $(grep virtiofs /proc/mounts)"
        echo "@@L2 fs exec (boot $boot): $(/mnt/busybox echo ran-from-the-share)"
        [ -e /mnt/big ] && echo "@@L2 fs big sha256 $(sha256sum /mnt/big | cut -d' ' -f1)"
        echo "written-by-l2-$((6 * 7))" > /mnt/from-l2 && sync && echo "@@L2 fs wrote from-l2"
        umount /mnt && echo "@@L2 fs unmounted"
    else
        echo "@@L2 fs mount FAILED"
    fi
    # rvvmm.fs_reboot=1: the same again after a reboot (the backend's one connection goes on).
    if [ "$(arg rvvmm.fs_reboot)" = 1 ] && [ "$boot" = 1 ]; then
        echo "@@L2 fs rebooting"
        reboot -f
    fi
    ;;
fs-read)
    # The bench's virtio-fs part: the same 256 MiB file through virtio-blk (/dev/vda) and
    # through virtio-fs, alternately, the guest's page cache dropped before each read; the
    # second read of each is reported (the first touches guest RAM for the first time).
    mkdir -p /mnt
    mount -t virtiofs "$(arg rvvmm.fs_tag)" /mnt || echo "@@L2 fs mount FAILED"
    for pass in 1 2; do
        for dev in blk fs; do
            src=/dev/vda; [ $dev = fs ] && src=/mnt/blk.img
            sync; echo 3 > /proc/sys/vm/drop_caches
            t0=$(cut -d' ' -f1 /proc/uptime)
            dd if=$src of=/dev/null bs=1M 2>/dev/null
            t1=$(cut -d' ' -f1 /proc/uptime)
            [ $pass = 2 ] && echo "@@L2 fsread $dev $(awk "BEGIN { print $t1 - $t0 }")"
        done
    done
    umount /mnt
    ;;
vsock-bench)
    # The bench's vsock part: echo listeners on vsock port 5000 and TCP port 5001 (over the
    # tap), two connections each (throughput, then round trips).
    ifconfig lo 127.0.0.1 up
    ifconfig eth0 10.0.4.2 netmask 255.255.255.0 up
    /bin/vsock-tool listen 5000 2 > /dev/null &
    v=$!
    /bin/vsock-tool tcp-listen 5001 2 > /dev/null &
    t=$!
    sleep 0.5
    echo "@@L2 io listeners up"
    wait $v $t
    ;;
io-bench)
    # The bench's io part: L1 drives the guest over TCP (vsock-tool io-run/io-push/io-pull),
    # so it can time each phase and read the VMM's CPU time around it; L1 powers it off.
    ifconfig lo 127.0.0.1 up
    ifconfig eth0 10.0.5.2 netmask 255.255.255.0 up
    /bin/vsock-tool io-serve 5000 &
    sleep 0.5
    echo "@@L2 io eth0 $(cat /sys/class/net/eth0/address 2>&1) $(cat /sys/class/net/eth0/operstate 2>&1), vda $(cat /sys/block/vda/size 2>&1) sectors"
    echo "@@L2 io serving"
    wait
    ;;
fs-dead)
    # virtio-fs whose backend L1 kills once this says ready: each probe looks up a new name
    # (no cached answer), ENOENT while the backend lives, then the error rvvmm gives.
    mkdir -p /mnt
    mount -t virtiofs "$(arg rvvmm.fs_tag)" /mnt && echo "@@L2 fs before: $(cat /mnt/before)"
    echo "@@L2 fs ready"
    for i in $(seq 1 120); do
        err=$(cat /mnt/probe-$i 2>&1)
        case "$err" in
        *"No such file"*) sleep 0.5 ;;
        *) echo "@@L2 fs after the backend died: $err"; break ;;
        esac
    done
    ;;
console-flood)
    # 1 MiB to the console, whoever reads it (the flood cases leave rvvmm's stdout unread),
    # then power off: the writes must end.
    head -c 1048576 /dev/zero | tr '\0' 'x'
    echo
    ;;
disk-write)
    if [ -b /dev/vdb ]; then
        # The raw second disk: four direct readers at once of 1 MiB requests (in flight
        # together, the ring's events at work; each in two chains of up to 254 segments, in
        # indirect tables), each quarter's sha256 for L1; then four direct writers at once of
        # the guest's own random data, whose sha256 L1 compares with the image.
        echo "@@L2 vdb event_idx=$(cut -c30 /sys/block/vdb/device/features) indirect=$(cut -c29 /sys/block/vdb/device/features)"
        for q in 0 1 2 3; do
            dd if=/dev/vdb bs=1M skip=$((q * 4)) count=4 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1 > /tmp/rq$q &
        done
        wait
        echo "@@L2 vdb read sha256 $(cat /tmp/rq0 /tmp/rq1 /tmp/rq2 /tmp/rq3 | tr '\n' ' ')"
        dd if=/dev/urandom of=/tmp/w bs=1M count=16 2>/dev/null
        for q in 0 1 2 3; do
            dd if=/tmp/w of=/dev/vdb bs=64k skip=$((q * 64)) seek=$((q * 64)) count=64 oflag=direct conv=notrunc 2>/dev/null &
        done
        wait
        echo "@@L2 vdb wrote sha256 $(sha256sum /tmp/w | cut -d' ' -f1)"
        rm -f /tmp/w
    fi
    mkdir -p /mnt
    if mount -t ext4 /dev/vda /mnt; then
        echo "@@L2 disk has: $(cat /mnt/hello.txt)"
        echo "rvvmm was here" > /mnt/written.txt
        sync
        echo "@@L2 discard: $(cat /sys/block/vda/queue/discard_max_bytes) max, $(fstrim -v /mnt 2>&1)"
        umount /mnt && echo "@@L2 disk written and unmounted"
    else
        echo "@@L2 disk mount FAILED"
    fi
    ;;
disk-read)
    mkdir -p /mnt
    mount -t ext4 -o ro /dev/vda /mnt && echo "@@L2 disk says: $(cat /mnt/written.txt)"
    echo "@@L2 serial $(cat /sys/block/vda/serial 2>/dev/null)"
    umount /mnt
    ;;
disk-sync-then-hang)
    mkdir -p /mnt
    mount -t ext4 /dev/vda /mnt
    echo "survives SIGKILL" > /mnt/killed.txt
    sync
    echo "@@L2 synced"
    sleep 600
    ;;
disk-killed)
    mkdir -p /mnt
    mount -t ext4 -o ro /dev/vda /mnt && echo "@@L2 after SIGKILL the disk says: $(cat /mnt/killed.txt)"
    umount /mnt
    ;;
disk-fill)
    # The host's file system fills up under the disk: writes past it fail with an I/O error,
    # the guest goes on (and can still read what was written before).
    dd if=/dev/urandom of=/dev/vda bs=1M count=32 conv=fsync 2>/dev/null
    echo "@@L2 fill: dd status $?"
    echo "@@L2 fill: first MiB reads back $(dd if=/dev/vda bs=1M count=1 2>/dev/null | wc -c) bytes"
    ;;
disk-ro)
    echo "@@L2 vda ro=$(cat /sys/block/vda/ro)"
    if dd if=/dev/zero of=/dev/vda bs=512 count=1 conv=fsync 2>/dev/null; then
        echo "@@L2 raw write to the read-only disk SUCCEEDED"
    else
        echo "@@L2 raw write refused"
    fi
    mkdir -p /mnt
    mount -t ext4 -o ro,noload /dev/vda /mnt && echo "@@L2 ro mount reads: $(cat /mnt/hello.txt)"
    ;;
blk-read)
    # Sequential reads of the whole disk, timed by the guest's clock (the benchmark's
    # virtio-blk throughput): a cold pass (guest RAM never touched: every page faults in once)
    # and a warm one (256M of RAM cannot cache the 256 MiB disk: it is read again).
    q=/sys/block/vda/queue
    echo "@@L2 blk queue read_ahead_kb=$(cat $q/read_ahead_kb) max_sectors_kb=$(cat $q/max_sectors_kb) max_segments=$(cat $q/max_segments)"
    for pass in cold warm; do
        t0=$(cut -d' ' -f1 /proc/uptime)
        dd if=/dev/vda of=/dev/null bs=1M 2>/dev/null
        t1=$(cut -d' ' -f1 /proc/uptime)
        echo "@@L2 blk $pass read $(($(cat /sys/block/vda/size) * 512)) bytes in $(awk "BEGIN { print $t1 - $t0 }") s"
    done
    # The guest's own floor for the same work without the device: dd of a file already in
    # RAM (a 64 MiB file in the initramfs, read four times: the same byte count), which is
    # only the page-cache-to-user copy that every warm pass also does.
    dd if=/dev/zero of=/floor.bin bs=1M count=64 2>/dev/null
    t0=$(cut -d' ' -f1 /proc/uptime)
    for i in 1 2 3 4; do dd if=/floor.bin of=/dev/null bs=1M 2>/dev/null; done
    t1=$(cut -d' ' -f1 /proc/uptime)
    rm -f /floor.bin
    echo "@@L2 blk incache read $((4 * 64 * 1048576)) bytes in $(awk "BEGIN { print $t1 - $t0 }") s"
    ;;
rng)
    grep -E 'virtio|ttyS|serial' /proc/interrupts | sed 's/^/@@L2 irq /'
    echo "@@L2 hwrng $(cat /sys/class/misc/hw_random/rng_current) $(head -c 16 /dev/hwrng | od -An -tx1 | tr -d ' \n')"
    ;;
net)
    # L1 is 10.0.2.1 on its tap; ping it, then answer L1's pings (counted in /proc/net/snmp).
    ifconfig lo 127.0.0.1 up
    ifconfig eth0 10.0.2.2 netmask 255.255.255.0 up
    echo "@@L2 eth0 $(cat /sys/class/net/eth0/address)"
    # The offloads the driver negotiated (virtio feature bits 0, 1, 7, 8, 11, 12) and the
    # ring's event index (bit 29), then an
    # 8 MiB TCP echo with them on (L1 checks both directions' sha256).
    f=$(cat /sys/class/net/eth0/device/features)
    bit() { echo "$f" | cut -c$(($1 + 1)); }
    echo "@@L2 eth0 offloads csum=$(bit 0) guest_csum=$(bit 1) guest_tso4=$(bit 7) guest_tso6=$(bit 8) host_tso4=$(bit 11) host_tso6=$(bit 12) event_idx=$(bit 29)"
    /bin/vsock-tool tcp-listen 5001 1 > /tmp/tcp.out 2>&1 &
    tcp=$!
    echo "@@L2 ping to L1: $(ping -c 3 -W 5 10.0.2.1 | grep 'packets transmitted')"
    echos() { awk '/^Icmp:/ { if (!c) { for (i = 1; i <= NF; i++) if ($i == "InEchos") c = i } else print $c }' /proc/net/snmp; }
    for i in $(seq 1 300); do [ "$(echos)" -ge 3 ] && break; sleep 0.2; done
    echo "@@L2 answered $(echos) pings from L1"
    wait $tcp
    grep '@@TCP echoed' /tmp/tcp.out | sed 's/^/@@L2 tcp: /'
    ;;
net-gone)
    # L1 deletes the tap while the card is up: the guest's sends go nowhere, nothing breaks.
    ifconfig eth0 10.0.7.2 netmask 255.255.255.0 up
    echo "@@L2 ping before: $(ping -c 2 -W 5 10.0.7.1 | grep 'packets transmitted')"
    echo "@@L2 net up"
    sleep 5  # L1 deletes the tap once it sees the line above
    echo "@@L2 ping after: $(ping -c 3 -W 2 10.0.7.1 | grep 'packets transmitted')"
    ;;
exit-code)
    # A failing test, reported as a CI job's initramfs would: the finisher's FAIL with a code
    # (sifive,test0 at 0x100000: (code << 16) | 0x3333), which rvvmm makes its exit status.
    code=$(arg rvvmm.code)
    echo "@@L2 failing with code $code"
    devmem 0x100000 32 $(( (code << 16) | 0x3333 ))
    echo "@@L2 the finisher write did not stop the VM"
    ;;
shell)
    echo "@@L2 shell ready"
    exec sh
    ;;
hotplug)
    # CPU 1 offline: Linux stops its hart (SBI HSM hart_stop); back online: hart_start again.
    echo 0 > /sys/devices/system/cpu/cpu1/online && echo "@@L2 cpu1 offline, online: $(cat /sys/devices/system/cpu/online)"
    sleep "$(arg rvvmm.offline_s)"
    echo 1 > /sys/devices/system/cpu/cpu1/online && echo "@@L2 cpu1 back, online: $(cat /sys/devices/system/cpu/online)"
    echo "@@L2 a task on cpu1 ran on cpu $(taskset -c 1 awk '{ print $39 }' /proc/self/stat)"
    ;;
suspend)
    # System suspend to RAM: Linux takes the other harts offline and calls SBI SUSP; rvvmm
    # keeps the guest asleep until its wake-up (here --suspend-seconds), then Linux resumes.
    echo "@@L2 sleep states: $(cat /sys/power/state 2>&1)"
    t0=$(cut -d' ' -f1 /proc/uptime)
    if echo mem > /sys/power/state; then
        echo "@@L2 resumed from suspend to RAM; online cpus $(cat /sys/devices/system/cpu/online), uptime advanced $(awk "BEGIN { print $(cut -d' ' -f1 /proc/uptime) - $t0 }") s"
    else
        echo "@@L2 suspend to RAM refused"
    fi
    ;;
reboot)
    if [ "$boot" = "1" ]; then
        echo "@@L2 rebooting"
        reboot -f
    fi
    # Devices work after the reboot (an in-place one keeps the VM's interrupt controller and
    # re-registers the queue notifications): with --rng, 16 bytes through the virtio queue.
    if [ -e /dev/hwrng ]; then
        echo "@@L2 second boot: hwrng $(head -c 16 /dev/hwrng | wc -c) bytes"
    else
        echo "@@L2 second boot"
    fi
    ;;
esac
echo "@@L2 powering off"
# poweroff -f does not wait for the console: what the tty has not sent yet is lost (seen on
# 7.2, in PLIC mode, where each 16-byte FIFO load waits for a THRE interrupt). busybox stty
# applies a setting with TCSADRAIN, which returns once the tty has sent everything.
timeout 5 stty cs8 0<&1 2>/dev/null
poweroff -f

#!/bin/busybox sh
# /init of the L2 Linux guest that the lab boots with rvvmm. It prints @@L2 markers on the
# console (the UART) for the lab to check, then does what rvvmm.test= on the command line asks.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null

arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p"; }

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

case "$(arg rvvmm.test)" in
shell)
    echo "@@L2 shell ready"
    exec sh
    ;;
reboot)
    if [ "$boot" = "1" ]; then
        echo "@@L2 rebooting"
        reboot -f
    fi
    echo "@@L2 second boot"
    ;;
esac
echo "@@L2 powering off"
poweroff -f

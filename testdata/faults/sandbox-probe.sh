#!/bin/sh
# sandbox-probe.sh - what a RUN step sees of its sandbox, one "key=value" a line:
# effective capabilities, seccomp mode, masked and read-only paths, whether mount,
# unshare and chroot-style escapes are denied, what ptrace may do (the static
# /ptrace-probe, given $1: the pid of a process outside the step), and its network
# interfaces. Used by builder/tests/faults_sandbox.rs (busybox only).
status() { grep "^$1:" /proc/self/status | cut -f2; }
echo "capeff=$(status CapEff)"
echo "capbnd=$(status CapBnd)"
echo "seccomp=$(status Seccomp)"
# Masked paths read as empty (a /dev/null bind or an empty tmpfs).
for p in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug; do
    [ -e "$p" ] && echo "masked:$p=$(head -c 64 "$p" 2>/dev/null | wc -c)"
done
echo "masked:/sys/firmware=$(ls -A /sys/firmware 2>/dev/null | wc -l)"
# Read-only paths refuse a write.
for p in /proc/sys/kernel/domainname /proc/sysrq-trigger; do
    if (echo x > "$p") 2>/dev/null; then echo "readonly:$p=writable"; else echo "readonly:$p=denied"; fi
done
mkdir -p /tmp/probe-mnt
if mount -t tmpfs probe /tmp/probe-mnt 2>/dev/null; then echo "mount=allowed"; umount /tmp/probe-mnt; else echo "mount=denied"; fi
if unshare -U -r true 2>/dev/null; then echo "unshare-user=allowed"; else echo "unshare-user=denied"; fi
if unshare -m true 2>/dev/null; then echo "unshare-mount=allowed"; else echo "unshare-mount=denied"; fi
if mknod /tmp/probe-sda b 8 0 2>/dev/null && head -c 1 /tmp/probe-sda >/dev/null 2>&1; then echo "blockdev=readable"; else echo "blockdev=denied"; fi
[ -x /ptrace-probe ] && /ptrace-probe "$1"
echo "ifaces=$(ls /sys/class/net | tr '\n' ' ')"

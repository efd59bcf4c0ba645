#!/bin/sh
# Runs inside every test VM (as root) before the requested command. Started by xtask (vm.rs),
# with PF_RUN_DIR (writable, shared with the host), PF_BIN (the helper), PF_REPO, PF_NODE and,
# on cluster nodes, PF_IP and PF_MAC. Leaves the command's exit status in $PF_RUN_DIR/rc and the kernel
# log in $PF_RUN_DIR/dmesg.txt, its output (stdout and stderr) in $PF_RUN_DIR/output.log.
set -u
run=${PF_RUN_DIR:?}
export PATH="$PF_BIN:/usr/sbin:/sbin:$PATH"
grep -q " /sys/kernel/config " /proc/mounts || mount -t configfs none /sys/kernel/config
grep -q " /sys/kernel/debug " /proc/mounts || mount -t debugfs none /sys/kernel/debug 2>/dev/null

# Name the devices by the serial numbers xtask gave them.
for d in /sys/block/*; do
    n=${d##*/}
    s=$(cat "$d/serial" 2>/dev/null || cat "$d/device/serial" 2>/dev/null || true)
    case "$s" in
        pfcache*) PF_CACHE_DEV=/dev/$n ;;
        pfsan*) PF_SAN_DEV=/dev/$n ;;
    esac
done
export PF_CACHE_DEV="${PF_CACHE_DEV:-}" PF_SAN_DEV="${PF_SAN_DEV:-}"

if [ -n "${PF_IP:-}" ]; then
    # virtme-ng's init renames NICs (enp0sN); find ours by the MAC xtask gave it and call it eth0.
    for n in /sys/class/net/*; do
        if [ "$(cat "$n/address")" = "${PF_MAC:?}" ] && [ "${n##*/}" != eth0 ]; then
            ip link set "${n##*/}" down
            ip link set "${n##*/}" name eth0
        fi
    done
    ip link set lo up
    ip addr add "$PF_IP/24" dev eth0
    ip link set eth0 up
fi

if [ -e /proc/lockdep ]; then echo on > "$run/lockdep"; else echo off > "$run/lockdep"; fi
hostname "${PF_NODE:-pf}" 2>/dev/null

# The console loses lines now and then (seen at both ends of a run); keep a reliable copy of the
# command's output on the shared directory, which the host shows when a case fails.
rm -f "$run/output.log" "$run/cmd-rc"
{ "$@"; echo "$?" > "$run/cmd-rc"; } 2>&1 | tee "$run/output.log"
rc=$(cat "$run/cmd-rc" 2>/dev/null || echo 255)
dmesg > "$run/dmesg.txt" 2>&1
echo "$rc" > "$run/rc"
sync
exit "$rc"

#!/bin/sh
# Flush ordering across a power cut. Two null_blk devices with a volatile write cache
# (memory_backed=1, cache_size set) serve as the cache device and as the SAN; powering one off
# throws away whatever it had not flushed, like a disk losing power. pf-flushcheck writes numbered
# blocks through a wb volume (8 writer threads, a flush every 40 ms) and both devices are powered
# off mid-workload; after power-on the volume is created again (offline replay) and every write
# acknowledged before a completed flush must be there (or a later write of its block), nothing
# torn. After `flush` the SAN alone must pass the same check. A control run first shows that the
# power cut does lose unflushed writes on these devices (so the check can fail).
. "$PF_REPO/tests/vm/lib.sh"
set -u
cd /tmp
NB=/sys/kernel/config/nullb
BLOCKS=8192

# nullb NAME SIZE_MB: a memory-backed null_blk with a 64 MiB volatile cache, powered on.
nullb() {
    mkdir "$NB/$1" || fail "mkdir $NB/$1"
    for kv in memory_backed=1 cache_size=64 size=$2 blocksize=4096 power=1; do
        echo "${kv#*=}" > "$NB/$1/${kv%%=*}" || fail "null_blk $1: cannot set $kv"
    done
    udevadm settle
    [ -b "/dev/$1" ] || fail "/dev/$1 did not appear"
}
power() { echo "$2" > "$NB/$1/power" || fail "power $2 for $1"; }

modprobe null_blk nr_devices=0 || fail "modprobe null_blk"
modprobe peerflash || fail "modprobe peerflash"

step "control: unflushed writes on a null_blk with a volatile cache do not survive a power cut"
nullb pfctl 128
pf-flushcheck write /dev/pfctl --blocks $BLOCKS --flush-ms 0 --seconds 3 --log ctl.json ||
    fail "control writes"
power pfctl 0
power pfctl 1
udevadm settle
pf-flushcheck check /dev/pfctl --log ctl.json --all-acked
rc=$?
[ $rc -eq 1 ] || fail "the control check exited $rc: the power cut lost nothing, the test could not fail"
pf-flushcheck check /dev/pfctl --log ctl.json || fail "control: nothing was flushed, nothing may be required"
rmdir $NB/pfctl

# round N CUT_AFTER_S: power cut N through a wb volume.
round() {
    step "round $1: wb writes with flushes, power cut of cache and SAN ${2}s in"
    pf-flushcheck write /dev/pf-v --blocks $BLOCKS --threads 8 --flush-ms 40 --seconds 300 \
        --epoch "$1" --log "w$1.json" --ready "ready$1" > "write$1.log" 2>&1 &
    writer=$!
    i=0
    while [ ! -e "ready$1" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
    [ -e "ready$1" ] || fail "no flush completed in 60 s"
    sleep "$2"
    echo "before the cut: dirty $(cat /sys/block/pf-v/peerflash/dirty_bytes) bytes, checkpoint $(cat /sys/block/pf-v/peerflash/checkpoint_serial), last $(cat /sys/block/pf-v/peerflash/last_serial)"
    power pfcache 0
    power pfsan 0
    wait $writer
    cat "write$1.log"
    grep -q "stopped by: time limit" "write$1.log" && fail "the writer never saw the power cut"
    echo "volume state after the cut: $(cat /sys/block/pf-v/peerflash/state)"
    peerflash remove v || fail "remove the volume whose devices lost power"
    power pfcache 1
    power pfsan 1
    udevadm settle
    peerflash create v --backing /dev/pfsan --cache /dev/pfcache --policy wb ||
        fail "create after the power cut"
    dmesg | grep "to replay" | tail -1
    pf-flushcheck check /dev/pf-v --log "w$1.json" || fail "round $1: flushed writes lost through the volume"
    peerflash flush v --timeout 300 || fail "flush"
    same "$(cat /sys/block/pf-v/peerflash/checkpoint_serial)" "$(cat /sys/block/pf-v/peerflash/last_serial)" "checkpoint after flush"
    pf-flushcheck check /dev/pfsan --log "w$1.json" || fail "round $1: flushed writes missing on the SAN after flush"
}

nullb pfcache 256
nullb pfsan 512
peerflash format-cache /dev/pfcache --segment-kib 256 --force > /dev/null || fail "format-cache"
peerflash create v --backing /dev/pfsan --cache /dev/pfcache --policy wb || fail "create"
round 1 3
# Round 2 keeps everything dirty on flash until the cut: the replay carries all of it.
echo 1 > /sys/block/pf-v/peerflash/destage_paused
round 2 2
same "$(cat /sys/block/pf-v/peerflash/batch_overlaps)" 0 "overlapping destage batches"
peerflash remove v || fail "remove"

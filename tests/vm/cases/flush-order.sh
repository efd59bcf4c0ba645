#!/bin/sh
# Flush ordering across a power cut. Two null_blk devices with a volatile write cache
# (memory_backed=1, cache_size set) serve as the cache device and as the SAN; powering one off
# throws away whatever it had not flushed, like a disk losing power. pf-flushcheck writes numbered
# blocks through a wb volume (8 writer threads, a flush every 40 ms) and both devices are powered
# off mid-workload; after power-on the volume is created again (offline replay) and every write
# acknowledged before a completed flush must be there (or a later write of its block), nothing
# torn. After `flush` the SAN alone must pass the same check. A control run first shows that the
# power cut does lose unflushed writes on these devices (so the check can fail). Then the SAN
# writes a wb flush must also cover: write-through writes made before a switch to wb survive a
# SAN power cut after a flush, and a flush after write-zeroes reaches the SAN (its flush count).
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

step "write-through writes, a switch to wb, a flush, then the SAN loses power: the writes survive"
# The wt writes sit in the SAN's volatile cache; their records on flash are clean (never
# replayed), so only a SAN flush makes them stable.
peerflash create v --backing /dev/pfsan --cache /dev/pfcache --policy wt || fail "create wt"
# The destager's own SAN flushes (it moves the checkpoint past completed writes) stay out.
echo 1 > /sys/block/pf-v/peerflash/destage_paused
dd if=/dev/urandom of=wt.dat bs=1M count=2 status=none
dd if=wt.dat of=/dev/pf-v bs=64k seek=1024 oflag=direct status=none || fail "wt writes"
peerflash set-policy v wb || fail "set-policy wb"
sync /dev/pf-v || fail "fsync of the volume"
power pfsan 0
peerflash remove v || fail "remove the volume whose SAN lost power"
power pfsan 1
udevadm settle
peerflash create v --backing /dev/pfsan --cache /dev/pfcache --policy wb || fail "create after the cut"
dd if=/dev/pf-v bs=64k skip=1024 count=32 iflag=direct status=none | cmp - wt.dat ||
    fail "write-through writes made before a switch to wb and flushed were lost by the SAN's power cut"
echo "ok: the flushed write-through writes survived the SAN's power cut"
peerflash remove v || fail "remove"

step "write-zeroes in wb, then a flush: the flush reaches the SAN"
SAN=$PF_SAN_DEV
SANB=$(basename "$SAN")
[ "$(cat /sys/block/$SANB/queue/write_zeroes_max_bytes)" -gt 0 ] || fail "the SAN has no write-zeroes"
san_flushes() { awk '{ print $16 }' "/sys/block/$SANB/stat"; }
peerflash format-cache "$PF_CACHE_DEV" --force > /dev/null || fail "format-cache"
peerflash create z --backing "$SAN" --cache "$PF_CACHE_DEV" --policy wb || fail "create z"
# The destager's own SAN flushes (after a batch, or when it moves the checkpoint) stay out.
echo 1 > /sys/block/pf-z/peerflash/destage_paused
[ "$(cat /sys/block/pf-z/queue/write_zeroes_max_bytes)" -gt 0 ] || fail "the volume offers no write-zeroes"
dd if=wt.dat of=/dev/pf-z bs=64k count=4 oflag=direct status=none || fail "wb writes"
sync /dev/pf-z || fail "fsync"
f0=$(san_flushes)
sync /dev/pf-z || fail "fsync"
same "$(san_flushes)" "$f0" "SAN flushes for a wb flush with no SAN write since the last"
blkdiscard -z -o 1048576 -l 1048576 /dev/pf-z || fail "write-zeroes"
f1=$(san_flushes)
sync /dev/pf-z || fail "fsync"
f2=$(san_flushes)
[ "$f2" -gt "$f1" ] || fail "a wb flush after write-zeroes did not flush the SAN ($f1 -> $f2)"
echo "ok: the flush after write-zeroes flushed the SAN ($f1 -> $f2)"
echo 0 > /sys/block/pf-z/peerflash/destage_paused
peerflash remove z || fail "remove z"

#!/bin/sh
# One round of the wb crash test (driven by xtask/src/crash.rs): recover what the previous round
# left when its VM was killed, check it, then start a wb fio randwrite that the host kills.
#   round.sh ROUND KILL_AFTER_SECONDS|final
# Round 0 formats the cache. Even rounds pause destaging while they write, so that the next
# round replays everything they wrote. Round R > 0 re-creates the volume (offline replay from flash),
# runs fio verify_only with the verify state round R-1 saved at its kill point (0 errors
# allowed), flushes, and checks that the SAN holds exactly what the volume returns (the region
# just recovered; every region in the final round). Then, unless
# this is the final round, fio writes region R mod 16 (QD16, verify=crc32c, verify_state_save=1) and
# its trigger, at the kill point, saves the verify state and asks the host to kill the VM.
. "$PF_REPO/tests/vm/lib.sh"
set -u
round=$1 kill_after=$2
SAN=$PF_SAN_DEV
CACHE=$PF_CACHE_DEV
DEV=/dev/pf-c
S=/sys/block/pf-c/peerflash
state_dir=$PF_RUN_DIR/state
REGION_MB=96
# Round R writes region R mod REGIONS (the 2 GiB SAN holds 21), so long runs wrap around.
REGIONS=16
cd /tmp

# job R EXTRA...: the fio job of round R on its region. The job runs as a thread (--thread) and
# without disk statistics: in fio 3.33 (Debian 12) the main process reads state the job's process
# allocated after the fork (fio commit 21628ec5 fixed one such case), and once, at the trigger
# (which saves the verify state from the main process), the main process died of SIGSEGV.
job() {
    r=$1
    shift
    fio --name=crash --thread --disk_util=0 --filename=$DEV --rw=randwrite --bs=4k --iodepth=16 --ioengine=libaio \
        --direct=1 --offset=$((r % REGIONS * REGION_MB))M --size=${REGION_MB}M --verify=crc32c \
        --randseed=$((5000 + r)) --aux-path="$state_dir" "$@"
}

modprobe peerflash || fail "modprobe"
if [ "$round" -eq 0 ]; then
    rm -rf "$state_dir"
    mkdir -p "$state_dir"
    peerflash format-cache "$CACHE" --segment-kib 256 --force > /dev/null || fail "format-cache"
fi
peerflash create c --backing "$SAN" --cache "$CACHE" --policy wb || fail "create (round $round)"
if [ "$round" -gt 0 ]; then
    prev=$((round - 1))
    dmesg | grep "to replay" | tail -1
    echo "state after create: $(cat $S/state), dirty $(cat $S/dirty_bytes) bytes"
    job $prev --verify_only --verify_state_load=1 --verify_fatal=1 > verify.log 2>&1
    rc=$?
    grep -E 'err=|read:' verify.log | head -5
    [ $rc -eq 0 ] || { tail -20 verify.log; fail "fio verify_only of round $prev after recovery"; }
    grep -q "err= 0" verify.log || fail "fio reported errors for round $prev"
    peerflash flush c --timeout 600 || fail "flush"
    same "$(cat $S/checkpoint_serial)" "$(cat $S/last_serial)" "checkpoint after flush"
    same "$(cat $S/batch_overlaps)" 0 "overlapping destage batches"
    # The region just recovered; the final round compares every region written.
    from=$((prev % REGIONS)) count=1
    if [ "$kill_after" = final ]; then
        from=0 count=$round
        [ "$count" -gt "$REGIONS" ] && count=$REGIONS
    fi
    vol=$(dd if=$DEV iflag=direct bs=1M skip=$((from * REGION_MB)) count=$((count * REGION_MB)) 2>/dev/null | md5sum)
    san=$(dd if="$SAN" iflag=direct bs=1M skip=$((from * REGION_MB)) count=$((count * REGION_MB)) 2>/dev/null | md5sum)
    same "$san" "$vol" "SAN = volume over $count region(s) from region $from after flush"
    echo "$round" > "$PF_RUN_DIR/verified"
fi
[ "$kill_after" = final ] && exit 0

rm -f "$PF_RUN_DIR/kill-me" "$state_dir"/*
# Even rounds keep every write dirty until the kill (destaging paused: the next round replays
# all of them); odd rounds destage while writing (the kill leaves whatever is in flight).
if [ $((round % 2)) -eq 0 ]; then echo 1 > $S/destage_paused; fi
echo "round $round: writing region $((round % REGIONS)), kill after ${kill_after}s, destage_paused $(cat $S/destage_paused)"
# At the trigger fio saves its verify state (what was acknowledged), then asks for the kill.
# The write rate is capped so that the region takes longer than the latest kill point (12 s) however
# fast the write path gets: 1600 IOPS x 4 KiB fills 96 MiB in 15 s. (Uncapped, a round with
# destaging paused wrote the region in 10 s and ended before an 11 s kill point.)
job "$round" --verify_state_save=1 --do_verify=0 --rate_iops=1600 --trigger-timeout="${kill_after}s" \
    --trigger="touch $PF_RUN_DIR/kill-me; sleep 600" > write.log 2>&1
rc=$?
tail -5 write.log
echo "fio exit status $rc; kernel log, last lines:"
dmesg | tail -8
fail "fio finished before the kill point (round $round)"

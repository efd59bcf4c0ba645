#!/bin/sh
# The cache data path on the QEMU NVMe device (cache) over the SAN disk: fio verify in wb and wt
# (randwrite and randrw, 4k and 64k, QD1 and QD16); after `flush` the checkpoint equals the last
# serial, no destage batch held overlapping writes, and the SAN holds exactly what was written;
# read misses are populated into flash (hits on the second read; a later write wins);
# wb to wt under I/O drains; offline replay: a volume removed with dirty data (run without its
# cache meanwhile, the module reloaded) is refused when created again with the cache (the refusal
# says what a replay would write) and recovered from flash with --replay, served while it replays, and `flush`
# puts exactly the acknowledged data on the SAN; a fresh start drops records the SAN outgrew
# (and a plain attach afterwards does not bring them back); cache device failure: wt bypasses the cache
# without loss, wb with dirty data fails its I/O instead of returning older SAN data.
. "$PF_REPO/tests/vm/lib.sh"
set -u
cd /tmp  # fio writes its verify state files to the working directory
SAN=$PF_SAN_DEV
CACHE=$PF_CACHE_DEV
DEV=/dev/pf-v
S=/sys/block/pf-v/peerflash
val() { cat "$S/$1"; }

modprobe peerflash || fail "modprobe peerflash"
peerflash format-cache "$CACHE" --segment-kib 256 --force > /dev/null || fail "format-cache"

step "wb: fio verify"
peerflash create v --backing "$SAN" --cache "$CACHE" --policy wb || fail "create wb"
same "$(val state)" clean "state of a new volume"
# fio_job RW BS QD N EXTRA...: job N works on the first 8 MiB of its own 32 MiB region.
fio_job() {
    rw=$1 bs=$2 qd=$3 n=$4
    shift 4
    fio --name="$rw-$bs-qd$qd" --filename=$DEV --rw="$rw" --bs="$bs" --iodepth="$qd" \
        --ioengine=libaio --direct=1 --offset=$((n * 32))M --size=8M --verify=crc32c \
        --verify_fatal=1 --randseed=$((1000 + n)) "$@" > fio.log 2>&1
    rc=$?
    grep -E 'err=|IOPS' fio.log
    [ $rc -eq 0 ] || { tail -20 fio.log; fail "fio $rw $bs QD$qd (job $n)"; }
}
run_matrix() {
    base=$1 n=$base
    for rw in randwrite randrw; do
        for bs in 4k 64k; do
            for qd in 1 16; do
                fio_job $rw $bs $qd $n
                n=$((n + 1))
            done
        done
    done
}
run_matrix 0
# Most wb writes start at once and take the fast path (submitted from queue_rq, acknowledged
# from the flash completion); fio verify above read every one of them back.
fw=$(val fast_writes)
[ "$fw" -gt 0 ] || fail "no wb write took the fast path"
echo "fast-path writes after the wb jobs: $fw"
# Large requests are split to fit a segment (256 KiB segments here: 255.5 KiB of room).
same "$(cat /sys/block/pf-v/queue/max_hw_sectors_kb)" 252 "largest request with 256 KiB segments (KiB)"
dd if=/dev/urandom of=big bs=1M count=8 2>/dev/null
dd if=big of=$DEV bs=1M seek=600 oflag=direct 2>/dev/null || fail "1 MiB writes"
same "$(dd if=$DEV bs=1M skip=600 count=8 iflag=direct 2>/dev/null | md5sum)" "$(md5sum < big)" "1 MiB writes read back"
echo "dirty after the wb jobs: $(val dirty_bytes) bytes"
peerflash status v | sed -n '/cache state/,/stats/p'

step "flush: checkpoint at the last serial, no overlapping batch, SAN = volume"
peerflash flush v --timeout 300 || fail "flush"
same "$(val dirty_bytes)" 0 "dirty bytes after flush"
same "$(val checkpoint_serial)" "$(val last_serial)" "checkpoint serial after flush"
same "$(val batch_overlaps)" 0 "destage batches with overlapping writes"
[ "$(val destaged_bytes)" -gt 0 ] || fail "nothing was destaged"
[ "$(val read_hits)" -gt 0 ] || fail "no read was served from flash"
vol_sum=$(dd if=$DEV iflag=direct bs=1M count=256 2>/dev/null | md5sum)
san_sum=$(dd if="$SAN" iflag=direct bs=1M count=256 2>/dev/null | md5sum)
same "$san_sum" "$vol_sum" "SAN content after flush"

step "read misses are kept on flash as clean data (population)"
dd if=/dev/urandom of=cold bs=1M count=4 2>/dev/null
# Data on the SAN that the cache has never seen (nothing of the volume touched this region).
dd if=cold of="$SAN" bs=1M seek=1200 oflag=direct 2>/dev/null || fail "write the SAN directly"
cold_sum=$(md5sum < cold)
m0=$(val read_misses) h0=$(val read_hits) p0=$(val populated_bytes)
same "$(dd if=$DEV iflag=direct bs=64k skip=$((1200 * 16)) count=64 2>/dev/null | md5sum)" "$cold_sum" "first read of SAN-only data"
same $(($(val read_misses) - m0)) 64 "misses of the first read (64 KiB requests)"
same $(($(val populated_bytes) - p0)) 4194304 "bytes populated"
same "$(dd if=$DEV iflag=direct bs=64k skip=$((1200 * 16)) count=64 2>/dev/null | md5sum)" "$cold_sum" "second read"
same $(($(val read_hits) - h0)) 64 "hits of the second read"
# A write after population wins over the populated copy, and reaches the SAN.
dd if=/dev/urandom of=newer bs=1M count=1 2>/dev/null
dd if=newer of=$DEV bs=1M seek=1201 oflag=direct 2>/dev/null || fail "overwrite populated data"
head -c 1048576 cold > expect
cat newer >> expect
tail -c 2097152 cold >> expect
same "$(dd if=$DEV iflag=direct bs=1M skip=1200 count=4 2>/dev/null | md5sum)" "$(md5sum < expect)" "populated data, then overwritten"
peerflash flush v --timeout 120 || fail "flush after population"
same "$(dd if="$SAN" iflag=direct bs=1M skip=1200 count=4 2>/dev/null | md5sum)" "$(md5sum < expect)" "SAN after flush"

step "wb to wt under I/O, then fio verify in wt"
echo 8 > $S/batch_sectors
fio --name=bg --filename=$DEV --rw=randwrite --bs=4k --iodepth=8 --ioengine=libaio --direct=1 \
    --offset=512M --size=16M --time_based --runtime=8 > bg.log 2>&1 &
bg=$!
sleep 3
peerflash set-policy v wt || fail "set-policy wt"
same "$(val policy)" wt "policy after set-policy"
wait $bg || { tail bg.log; fail "background writes while switching to wt"; }
echo 2048 > $S/batch_sectors
peerflash flush v --timeout 300 || fail "flush after the switch"
same "$(val dirty_bytes)" 0 "dirty bytes drained after wb to wt"
fw=$(val fast_writes)
run_matrix 8
same "$(val dirty_bytes)" 0 "wt leaves nothing dirty"
same "$(val fast_writes)" "$fw" "fast-path writes in wt (none: wt writes wait for the SAN)"
peerflash flush v --timeout 60 || fail "flush in wt"
same "$(val checkpoint_serial)" "$(val last_serial)" "checkpoint serial after flush in wt"
peerflash set-policy v wb || fail "set-policy wb"
peerflash remove v || fail "remove"

step "offline replay: remove with dirty data, reload the module, create again"
peerflash create v --backing "$SAN" --cache "$CACHE" --policy wb || fail "create wb again"
# Destaging paused, so that dirty data is left when the volume goes away.
echo 1 > $S/destage_paused
expect_refusal 2 "destaging is paused" peerflash flush v
dd if=/dev/urandom of=pattern bs=1M count=24 2>/dev/null
dd if=pattern of=$DEV bs=64k seek=$((768 * 16)) oflag=direct conv=fsync 2>/dev/null || fail "write the pattern"
dirty=$(val dirty_bytes)
echo "dirty at removal: $dirty bytes"
[ "$dirty" -gt 0 ] || fail "no dirty data left to replay"
peerflash remove v || fail "remove with dirty data"
dmesg | grep "removed with" | tail -1
# Meanwhile the volume runs without its cache (B, in another region).
peerflash create v --backing "$SAN" || fail "create uncached"
dd if=/dev/urandom of=b.dat bs=64k count=4 status=none
dd if=b.dat of=$DEV bs=64k seek=$((1000 * 16)) oflag=direct status=none || fail "write B uncached"
peerflash remove v || fail "remove uncached"
want=$(md5sum < pattern)
got=$(dd if="$SAN" iflag=direct bs=1M skip=768 count=24 2>/dev/null | md5sum)
[ "$got" != "$want" ] || fail "the SAN already held the pattern: nothing to replay"
peerflash inspect "$CACHE" | grep "dirty after checkpoint" | grep -v ": 0 records" || fail "inspect shows no dirty records"
rmmod peerflash || fail "rmmod"
modprobe peerflash || fail "modprobe again"
# Removed with dirty data, the volume may have run without the cache since (it did): its
# records are not replayed unless the operator says so, and the refusal says what they are.
expect_refusal 2 "removed with dirty data" peerflash create v --backing "$SAN" --cache "$CACHE" --policy wb
peerflash create v --backing "$SAN" --cache "$CACHE" --policy wb 2>&1 | grep "dirty records" ||
    fail "the refusal does not say what a replay would write"
peerflash create v --backing "$SAN" --cache "$CACHE" --policy wb --replay || fail "create --replay"
want=$(md5sum < pattern)  # (expect_refusal sets `want`)
dmesg | grep "to replay" | tail -1
st=$(val state)
echo "state after create: $st"
got=$(dd if=$DEV iflag=direct bs=1M skip=768 count=24 2>/dev/null | md5sum)
same "$got" "$want" "data read during replay"
peerflash flush v --timeout 300 || fail "flush the replay"
got=$(dd if="$SAN" iflag=direct bs=1M skip=768 count=24 2>/dev/null | md5sum)
same "$got" "$want" "SAN after the replay"
same "$(val state)" clean "state after the replay"
got=$(dd if=$DEV iflag=direct bs=64k skip=$((1000 * 16)) count=4 2>/dev/null | md5sum)
same "$got" "$(md5sum < b.dat)" "B, written without the cache, after the replay"
peerflash remove v || fail "remove"

step "fresh: records the SAN outgrew are dropped, never replayed"
# What the agent does when the lock record says the SAN holds every acknowledged write (another
# host replayed this volume's replica and wrote on): the records on this flash are stale.
peerflash create v --backing "$SAN" --cache "$CACHE" --policy wb || fail "create wb"
echo 1 > $S/destage_paused
dd if=/dev/urandom of=old.dat bs=64k count=8 status=none
dd if=old.dat of=$DEV bs=64k seek=$((1100 * 16)) oflag=direct status=none || fail "write the old data"
[ "$(val dirty_bytes)" -gt 0 ] || fail "nothing dirty"
peerflash remove v || fail "remove with dirty data"
dd if=/dev/urandom of=new.dat bs=64k count=8 status=none
dd if=new.dat of="$SAN" bs=64k seek=$((1100 * 16)) oflag=direct status=none || fail "newer data on the SAN"
expect_refusal 2 "cannot be used with" peerflash create v --backing "$SAN" --cache "$CACHE" --fresh --replay
# The module refuses the pair too (a fresh start drops what a replay is for).
C=/sys/kernel/config/peerflash/v
mkdir $C && echo "$SAN" > $C/backing && echo "$CACHE" > $C/cache && echo 1 > $C/fresh && echo 1 > $C/replay ||
    fail "configure fresh and replay"
expect_write_refused $C/enable 1
grep -q "set only one" $C/last_error || fail "last_error: $(cat $C/last_error)"
rmdir $C
peerflash create v --backing "$SAN" --cache "$CACHE" --policy wb --fresh || fail "create --fresh"
dmesg | grep "started fresh" | tail -1 | grep -q " 8 records" || fail "the kernel log does not say 8 records were dropped"
same "$(val dirty_bytes)" 0 "dirty bytes after a fresh start"
# Removed at once (a read would populate the cache and move the checkpoint on by itself): the
# checkpoint the fresh start moved past the dropped records is on flash, so a plain attach does
# not bring them back.
peerflash remove v || fail "remove"
peerflash create v --backing "$SAN" --cache "$CACHE" --policy wb || fail "create again"
dmesg | grep "scanned" | tail -1 | grep -q "(0 to replay" || fail "the plain attach replays: $(dmesg | grep scanned | tail -1)"
same "$(val dirty_bytes)" 0 "dirty bytes after a plain attach"
got=$(dd if=$DEV iflag=direct bs=64k skip=$((1100 * 16)) count=8 2>/dev/null | md5sum)
same "$got" "$(md5sum < new.dat)" "the volume after a plain attach"
peerflash remove v || fail "remove"

step "cache device failure"
# The cache device behind device-mapper, so that it can be made to fail.
size=$(blockdev --getsz "$CACHE")
echo "0 $size linear $CACHE 0" | dmsetup create pfc --noudevsync || fail "dmsetup create"
dmsetup mknodes pfc
peerflash format-cache /dev/mapper/pfc --segment-kib 256 --force > /dev/null || fail "format dm cache"
fail_cache() {
    echo "0 $size error" | dmsetup load pfc && dmsetup suspend --noflush pfc && dmsetup resume pfc \
        || fail "make the cache device fail"
}
heal_cache() {
    echo "0 $size linear $CACHE 0" | dmsetup load pfc && dmsetup suspend --noflush pfc && dmsetup resume pfc \
        || fail "heal the cache device"
}
peerflash create v --backing "$SAN" --cache /dev/mapper/pfc --policy wt || fail "create wt on dm"
fio_job randwrite 4k 16 20
fail_cache
fio_job randwrite 4k 16 21
same "$(val state)" degraded "wt state after the cache device failed"
[ "$(val cache_errors)" -gt 0 ] || fail "no cache error counted"
fio_job randwrite 4k 1 20 --verify_only=1
peerflash remove v || fail "remove wt"
heal_cache
peerflash format-cache /dev/mapper/pfc --segment-kib 256 --force > /dev/null || fail "format again"
peerflash create v --backing "$SAN" --cache /dev/mapper/pfc --policy wb || fail "create wb on dm"
echo 1 > $S/destage_paused
dd if=/dev/urandom of=pattern2 bs=1M count=8 2>/dev/null
dd if=pattern2 of=$DEV bs=64k seek=$((900 * 16)) oflag=direct 2>/dev/null || fail "write pattern2"
[ "$(val dirty_bytes)" -gt 0 ] || fail "no dirty data before the failure"
fail_cache
if dd if=$DEV iflag=direct bs=1M skip=900 count=8 of=readback 2>/dev/null; then
    fail "a read of dirty blocks succeeded after the cache device failed"
fi
same "$(val state)" failed "wb state after the cache device failed with dirty data"
echo "ok: reads of dirty data fail instead of returning older SAN data"
heal_cache
peerflash remove v || fail "remove the failed volume"
# Removed with its dirty data on flash, replayed only when asked.
expect_refusal 2 "removed with dirty data" peerflash create v --backing "$SAN" --cache /dev/mapper/pfc --policy wb
peerflash create v --backing "$SAN" --cache /dev/mapper/pfc --policy wb --replay || fail "create after healing"
peerflash flush v --timeout 300 || fail "flush after healing"
got=$(dd if="$SAN" iflag=direct bs=1M skip=900 count=8 2>/dev/null | md5sum)
same "$got" "$(md5sum < pattern2)" "SAN after the healed cache replayed"
peerflash remove v || fail "remove"
dmsetup remove pfc || fail "dmsetup remove"

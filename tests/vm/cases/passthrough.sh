#!/bin/sh
# A volume passes everything through to its backing device: fio verify at 4k/64k, QD1/QD16,
# the device's geometry, write cache and FUA advertised, flush/FUA/discard/write-zeroes reach the
# backing device, backing I/O errors reach the caller, and the backing device holds exactly the
# bytes written through the volume once the volume is removed.
. "$PF_REPO/tests/vm/lib.sh"
set -u
cd /tmp  # fio writes its verify state files to the working directory
SAN=$PF_SAN_DEV
DEV=/dev/pf-vol
C=/sys/kernel/config/peerflash/vol

step "load and create"
modprobe peerflash || fail "modprobe peerflash"
peerflash create vol --backing "$SAN" || fail "create"
[ -b "$DEV" ] || fail "$DEV is missing"

step "geometry and advertised features"
same "$(blockdev --getsize64 $DEV)" "$(blockdev --getsize64 $SAN)" "size in bytes"
same "$(blockdev --getss $DEV)" "$(blockdev --getss $SAN)" "logical block size"
same "$(blockdev --getpbsz $DEV)" "$(blockdev --getpbsz $SAN)" "physical block size"
same "$(cat /sys/block/pf-vol/queue/write_cache)" "write back" "write cache"
same "$(cat /sys/block/pf-vol/queue/fua)" "1" "fua"
same "$(cat /sys/block/pf-vol/queue/max_hw_sectors_kb)" "$(cat /sys/block/${SAN#/dev/}/queue/max_hw_sectors_kb)" "max_hw_sectors_kb"
same "$(cat /sys/block/pf-vol/queue/discard_max_bytes)" "$(cat /sys/block/${SAN#/dev/}/queue/discard_max_bytes)" "discard_max_bytes"

# The four fio jobs, N:BS:QD; job N works in its own 256 MiB region: its first 128 MiB at 64k
# (2048 writes), its first 64 MiB at 4k (16384 writes), each write verified (time under TCG is
# per write).
JOBS="0:4k:1 1:4k:16 2:64k:1 3:64k:16"
# fio_job DEVICE JOB EXTRA...
fio_job() {
    dev=$1 n=${2%%:*} bs=${2#*:}
    qd=${bs#*:} bs=${bs%%:*}
    shift 2
    size=128M
    [ "$bs" = 4k ] && size=64M
    fio --name="v-$bs-qd$qd" --filename="$dev" --rw=randwrite --bs="$bs" --iodepth="$qd" \
        --ioengine=libaio --direct=1 --offset=$((n * 256))M --size=$size --verify=crc32c \
        --verify_fatal=1 --randseed=$((1000 + n)) "$@"
}

step "fio verify through the volume"
for job in $JOBS; do
    fio_job $DEV $job --do_verify=1 --output-format=terse --terse-version=3 > /tmp/fio.out || fail "fio $job"
    echo "ok: fio randwrite+verify bs=$bs QD$qd: $(cut -d';' -f49 /tmp/fio.out) write IOPS"
done
[ "$(stat_of vol errors)" = 0 ] || fail "errors counted during fio"

step "flush, FUA, discard and write-zeroes reach the backing device"
f0=$(stat_of vol flushes); u0=$(stat_of vol fua_writes)
dd if=/dev/urandom of=$DEV bs=4k count=8 seek=$((1100 << 8)) oflag=direct,dsync status=none || fail "dsync write"
dd if=/dev/urandom of=$DEV bs=4k count=8 seek=$((1110 << 8)) conv=fsync status=none || fail "fsync write"
[ "$(stat_of vol fua_writes)" -gt "$u0" ] || fail "no FUA write reached the volume"
[ "$(stat_of vol flushes)" -gt "$f0" ] || fail "no flush reached the volume"
echo "ok: fua_writes $u0 -> $(stat_of vol fua_writes), flushes $f0 -> $(stat_of vol flushes)"
if [ "$(cat /sys/block/pf-vol/queue/discard_max_bytes)" != 0 ]; then
    blkdiscard -o $((1200 << 20)) -l $((1 << 20)) $DEV || fail "discard"
    [ "$(stat_of vol discards)" -gt 0 ] || fail "discard not counted"
    echo "ok: discards $(stat_of vol discards)"
fi
dd if=/dev/urandom of=$DEV bs=1M count=1 seek=1300 oflag=direct status=none
blkdiscard -z -o $((1300 << 20)) -l $((1 << 20)) $DEV || fail "write zeroes"
same "$(dd if=$SAN bs=1M count=1 skip=1300 iflag=direct status=none | tr -d '\0' | wc -c)" 0 "bytes left non-zero on the SAN after write-zeroes"

step "the backing device holds the same bytes after removal"
# Every byte this case wrote, and no more (reading the whole 2 GiB twice cost minutes of TCG time
# for nothing): what fio wrote at the start of each job's 256 MiB region (64 MiB at 4k, 128 MiB at
# 64k), and 1100-1301 MiB, where the flush/FUA/discard/write-zeroes checks wrote. fio verified the
# volume's copy of its regions as it wrote them; equal hashes carry that to the SAN.
REGIONS="0:64 256:64 512:128 768:128 1100:201"
# digest DEVICE: sha256 of DEVICE's REGIONS (offsets and lengths in MiB).
digest() {
    for r in $REGIONS; do
        dd if="$1" bs=1M skip=${r%%:*} count=${r#*:} iflag=direct status=none
    done | sha256sum
}
through=$(digest $DEV)
peerflash remove vol || fail "remove"
[ ! -e $DEV ] || fail "$DEV still exists after remove"
same "$(digest "$SAN")" "$through" "sha256 of the SAN vs. through the volume, over the regions written"

step "backing I/O errors reach the caller"
printf '0 2048 linear %s 0\n2048 2048 error\n' "$SAN" | dmsetup create pfbad --noudevsync || fail "dmsetup create"
dmsetup mknodes pfbad
peerflash create bad --backing /dev/mapper/pfbad || fail "create over dm"
dd if=/dev/pf-bad of=/dev/null bs=4k count=1 iflag=direct status=none || fail "read of a good sector failed"
if dd if=/dev/pf-bad of=/dev/null bs=4k count=1 skip=300 iflag=direct status=none 2>/tmp/err; then
    fail "a read of a failing backing sector succeeded"
fi
grep -q "Input/output error" /tmp/err || fail "read error was not EIO: $(cat /tmp/err)"
if dd if=/dev/zero of=/dev/pf-bad bs=4k count=1 seek=300 oflag=direct status=none 2>/tmp/err; then
    fail "a write to a failing backing sector succeeded"
fi
[ "$(stat_of bad errors)" -ge 2 ] || fail "errors not counted: $(stat_of bad errors)"
echo "ok: EIO on read and write, errors counted: $(stat_of bad errors)"
peerflash remove bad || fail "remove bad"
dmsetup remove pfbad || fail "dmsetup remove"
rmmod peerflash || fail "rmmod"
echo "passthrough: all checks passed"

#!/bin/sh
# Requests of every shape a cache must take without switching itself off or crashing:
#  1. block sizes: a 4Kn cache device (null_blk bs=4096) under a 512-byte SAN gives a 4096-byte
#     volume, so every record stays whole cache blocks: a 512-byte direct read is refused by the
#     block layer, nothing reaches the cache device unaligned, no cache error, fio verify passes;
#     a 4096-byte SAN over a 512-byte cache keeps 4096; a SAN whose size is not a whole number of
#     the cache's blocks is refused at create with the reason.
#  2. pieces: O_DIRECT pwritev/preadv of 127, 128 and 129 sub-page pieces that each cross a page
#     boundary inside a huge page (hugetlbfs): 2N single-page pieces, N multi-page ones. In wb
#     and wt, on cold ranges (read misses populate the cache) and cached ones, the data reads
#     back (vectored and plain), no cache error, and after `flush` the SAN holds it.
. "$PF_REPO/tests/vm/lib.sh"
set -u
cd /tmp
SAN=$PF_SAN_DEV
CACHE=$PF_CACHE_DEV
NB=/sys/kernel/config/nullb
S=/sys/block/pf-v/peerflash
val() { cat "$S/$1"; }
IOV="python3 $PF_REPO/tests/vm/iovec.py"

# nullb NAME SIZE_MB BLOCKSIZE: a memory-backed null_blk, powered on.
nullb() {
    mkdir "$NB/$1" || fail "mkdir $NB/$1"
    for kv in memory_backed=1 size=$2 blocksize=$3 power=1; do
        echo "${kv#*=}" > "$NB/$1/${kv%%=*}" || fail "null_blk $1: cannot set $kv"
    done
    udevadm settle
    [ -b "/dev/$1" ] || fail "/dev/$1 did not appear"
}
fio_verify() {
    fio --name=verify --filename=/dev/pf-v --rw=randwrite --bs="$1" --iodepth=8 --ioengine=libaio \
        --direct=1 --size=16M --verify=crc32c --verify_fatal=1 > fio.log 2>&1 ||
        { tail -20 fio.log; fail "fio verify bs=$1"; }
    grep -E 'err=' fio.log
}

modprobe null_blk nr_devices=0 || fail "modprobe null_blk"
modprobe peerflash || fail "modprobe peerflash"

step "a 4Kn cache under a 512-byte SAN"
nullb c4k 256 4096
same "$(blockdev --getss "$SAN")" 512 "the SAN's logical block size"
peerflash format-cache /dev/c4k --force > /dev/null || fail "format-cache on the 4Kn device"
peerflash create v --backing "$SAN" --cache /dev/c4k --policy wb || fail "create over the 4Kn cache"
same "$(blockdev --getss /dev/pf-v)" 4096 "the volume's logical block size (the cache's)"
if dd if=/dev/pf-v of=/dev/null bs=512 count=1 iflag=direct status=none 2>/dev/null; then
    fail "a 512-byte direct read of a 4096-byte volume was accepted"
fi
dd if=/dev/pf-v of=/dev/null bs=4096 count=1 iflag=direct status=none || fail "a 4 KiB direct read"
same "$(val cache_errors)" 0 "cache errors after small reads"
same "$(val state)" clean "state after small reads"
fio_verify 4k
fio_verify 64k
same "$(val cache_errors)" 0 "cache errors after fio"
peerflash flush v > /dev/null || fail "flush"
same "$(val state)" clean "state after flush"
peerflash remove v || fail "remove"

step "a 4096-byte SAN over a 512-byte cache"
nullb s4k 512 4096
same "$(blockdev --getss "$CACHE")" 512 "the NVMe cache's logical block size"
peerflash format-cache "$CACHE" --force > /dev/null || fail "format-cache"
peerflash create v --backing /dev/s4k --cache "$CACHE" --policy wb || fail "create over the 4 KiB SAN"
same "$(blockdev --getss /dev/pf-v)" 4096 "the volume's logical block size (the SAN's)"
fio_verify 4k
same "$(val cache_errors)" 0 "cache errors"
peerflash flush v > /dev/null || fail "flush"
peerflash remove v || fail "remove"
rmdir "$NB/s4k"

step "a SAN that is not a whole number of the cache's blocks is refused"
truncate -s $((64 * 1048576 + 512)) odd.img
ODD=$(losetup -f --show odd.img) || fail "losetup"
expect_refusal 2 "not a multiple of the cache device's block size" \
    peerflash create v --backing "$ODD" --cache /dev/c4k --policy wb
losetup -d "$ODD"
rmdir "$NB/c4k"

step "page-crossing pieces"
echo 16 > /proc/sys/vm/nr_hugepages
[ "$(cat /proc/sys/vm/nr_hugepages)" -ge 4 ] || fail "no huge pages"
peerflash format-cache "$CACHE" --force > /dev/null || fail "format-cache"
peerflash create v --backing "$SAN" --cache "$CACHE" --policy wb || fail "create"
same "$(blockdev --getss /dev/pf-v)" 512 "the volume's logical block size"
seed=1
for policy in wb wt; do
    peerflash set-policy v $policy || fail "set-policy $policy"
    for n in 127 128 129; do
        # Each case its own 1 MiB past what fio wrote: a cold read first (populates), then write, read, plain read.
        off=$(((64 + seed) * 1048576 + 4096))
        $IOV zero /dev/pf-v $off $n || fail "$policy: cold vectored read of $n pieces"
        $IOV write /dev/pf-v $off $n $seed || fail "$policy: vectored write of $n pieces"
        $IOV read /dev/pf-v $off $n $seed || fail "$policy: vectored read of $n pieces"
        $IOV check /dev/pf-v $off $n $seed || fail "$policy: plain read after $n pieces"
        echo "ok: $policy, $n pieces: written, read back vectored and plain"
        seed=$((seed + 1))
    done
done
same "$(val cache_errors)" 0 "cache errors after page-crossing pieces"
same "$(val state)" clean "state"
[ "$(val populated_bytes)" -gt 0 ] || fail "no cold read was populated"
peerflash flush v > /dev/null || fail "flush"
seed=1
for policy in wb wt; do
    for n in 127 128 129; do
        off=$(((64 + seed) * 1048576 + 4096))
        $IOV check "$SAN" $off $n $seed || fail "the SAN after flush: $policy, $n pieces"
        seed=$((seed + 1))
    done
done
echo "ok: the SAN holds every vectored write"
peerflash remove v || fail "remove"
echo "request-shapes: all checks passed"

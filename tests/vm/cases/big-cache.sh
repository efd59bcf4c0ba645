#!/bin/sh
# A 200 GiB cache device (a sparse QEMU NVMe image) used by one volume that takes all of it:
# the volume's tables fit (kvmalloc), the attach scans only as far as the log went (the slot's
# log limit), fio verify passes; the attach time and the kernel memory the volume takes (slab and
# vmalloc, before and after) are printed for the record. Then the log limit: a volume whose log
# goes past it (256 KiB segments, 1024 of them = 256 MiB per step) extends it on the way, and
# after a restart with everything still dirty the rebuild finds every record, beyond the first
# step too.
# vm: cache_size=200G
. "$PF_REPO/tests/vm/lib.sh"
set -u
cd /tmp
CACHE=$PF_CACHE_DEV
SAN=$PF_SAN_DEV
S=/sys/block/pf-v/peerflash
val() { cat "$S/$1"; }
mem() { awk '/^(Slab|VmallocUsed):/ { printf "%s %s kB  ", $1, $2 }' /proc/meminfo; echo; }
kb() { awk -v k="$1:" '$1 == k { print $2 }' /proc/meminfo; }
ms() { date +%s%3N; }

modprobe peerflash || fail "modprobe peerflash"
same "$(blockdev --getsize64 "$CACHE")" $((200 << 30)) "cache device size"

step "a 200 GiB cache device, one volume taking all of it"
t0=$(ms)
peerflash format-cache "$CACHE" --force || fail "format-cache"
echo "format-cache: $(($(ms) - t0)) ms"
echo "before create: $(mem)"
slab0=$(kb Slab) vm0=$(kb VmallocUsed)
t0=$(ms)
peerflash create v --backing "$SAN" --cache "$CACHE" --policy wb || fail "create with a 200 GiB cache"
echo "create (attach and scan): $(($(ms) - t0)) ms"
echo "after create: $(mem)"
echo "the volume took: slab $(($(kb Slab) - slab0)) kB, vmalloc $(($(kb VmallocUsed) - vm0)) kB"
dmesg | grep "cache slot" | tail -2
fio --name=verify --filename=/dev/pf-v --rw=randwrite --bs=4k --iodepth=16 --ioengine=libaio \
    --direct=1 --size=64M --verify=crc32c --verify_fatal=1 > fio.log 2>&1 ||
    { tail -20 fio.log; fail "fio verify"; }
grep -E 'err=' fio.log
echo "after 64 MiB of writes: $(mem)"
echo "dirty $(val dirty_bytes) bytes, cached $(val cached_bytes) bytes"
peerflash flush v > /dev/null || fail "flush"
peerflash remove v || fail "remove"
t0=$(ms)
peerflash create v --backing "$SAN" --cache "$CACHE" --policy wb || fail "create again"
echo "create again (scan of what the log wrote): $(($(ms) - t0)) ms"
dmesg | grep "cache slot" | tail -1
fio --name=verify --filename=/dev/pf-v --rw=randwrite --bs=4k --iodepth=16 --ioengine=libaio \
    --direct=1 --size=64M --verify=crc32c --verify_only > fio.log 2>&1 ||
    { tail -20 fio.log; fail "fio verify after the re-attach"; }
echo "ok: the data reads back after the re-attach"
peerflash remove v || fail "remove"

step "the log limit moves ahead of the log, and the rebuild scans as far as it went"
peerflash format-cache "$CACHE" --segment-kib 256 --force > /dev/null || fail "format-cache"
peerflash create v --backing "$SAN" --cache "$CACHE" --cache-mib 1024 --policy wb || fail "create"
echo 1 > "$S/destage_paused"
dd if=/dev/urandom of=data bs=1M count=384 status=none
dd if=data of=/dev/pf-v bs=1M oflag=direct status=none || fail "384 MiB of writes"
peerflash inspect "$CACHE" | grep -E "region|records"
peerflash remove v || fail "remove with everything dirty"
# Removed with dirty data: replayed only when asked.
peerflash create v --backing "$SAN" --cache "$CACHE" --policy wb --replay || fail "create again"
scan=$(dmesg | grep "cache slot" | tail -1)
echo "$scan"
# What the rebuild found (the replay starts at once, so dirty_bytes is already going down).
case "$scan" in
    *"$((384 * 1024)) dirty KiB"*) echo "ok: the rebuild found all 384 MiB dirty" ;;
    *) fail "the rebuild did not find all 384 MiB of dirty data" ;;
esac
case "$scan" in
    *"scanned 512 of 1024 MiB"*) echo "ok: the scan stopped at the log limit (2048 of 4096 segments)" ;;
    *) fail "the scan did not stop at the extended log limit" ;;
esac
dd if=/dev/pf-v bs=1M count=384 iflag=direct status=none | cmp - data ||
    fail "the volume lost writes past the first log limit"
peerflash flush v > /dev/null || fail "flush"
dd if="$SAN" bs=1M count=384 iflag=direct status=none | cmp - data || fail "the SAN after flush"
echo "ok: every record was found, beyond the first log limit too"
peerflash remove v || fail "remove"
echo "big-cache: all checks passed"

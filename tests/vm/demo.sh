#!/bin/sh
# The demo (cargo xtask demo): peerflash at work in one VM. It narrates each step.
. "$PF_REPO/tests/vm/lib.sh"
set -u
cd /tmp  # fio writes its verify state files to the working directory
SAN=$PF_SAN_DEV
say() { printf '\n\033[1m# %s\033[0m\n' "$*"; }

say "Devices of this VM: NVMe cache $PF_CACHE_DEV, SAN disk $SAN ($(blockdev --getsize64 $SAN) bytes)"
CACHE=$PF_CACHE_DEV
say "Format the NVMe device as a peerflash cache device and decode it"
echo "\$ peerflash format-cache $CACHE"
peerflash format-cache "$CACHE" || fail "format-cache"
say "Load the module and create volume 'vm1' over the SAN, with a slot on the cache device"
modprobe peerflash || fail "modprobe"
echo "\$ peerflash create vm1 --backing $SAN --cache $CACHE --policy wb"
peerflash create vm1 --backing "$SAN" --cache "$CACHE" --policy wb || fail "create"
echo "\$ peerflash inspect $CACHE"
peerflash inspect "$CACHE"
echo "\$ peerflash status vm1"
peerflash status vm1

say "A VM writes 64 MiB through /dev/pf-vm1 (fio, random 4k and 64k, verified)"
fio --name=demo --filename=/dev/pf-vm1 --rw=randwrite --bsrange=4k-64k --iodepth=16 --ioengine=libaio \
    --direct=1 --size=64M --verify=crc32c --verify_fatal=1 --do_verify=1 --randseed=42 \
    --output-format=terse --terse-version=3 > /tmp/demo.fio || fail "fio"
awk -F';' '{ printf "write: %s KiB/s, %s IOPS; verify read: %s KiB/s\n", $48, $49, $7 }' /tmp/demo.fio
echo "\$ dd ... oflag=direct,dsync; sync  (a FUA write and a flush)"
dd if=/dev/urandom of=/dev/pf-vm1 bs=4k count=4 seek=20000 oflag=direct,dsync status=none
sync /dev/pf-vm1 2>/dev/null || blockdev --flushbufs /dev/pf-vm1
echo "\$ grep . /sys/block/pf-vm1/peerflash/*   (the cache's state, one value per file)"
grep . /sys/block/pf-vm1/peerflash/* | sed 's|/sys/block/pf-vm1/peerflash/||'

say "Offline replay: pause the destager, write 16 MiB, remove the volume with dirty data, reload the module"
echo 1 > /sys/block/pf-vm1/peerflash/destage_paused
dd if=/dev/urandom of=/tmp/pattern bs=1M count=16 status=none
dd if=/tmp/pattern of=/dev/pf-vm1 bs=64k seek=2048 oflag=direct status=none || fail "pattern"
echo "dirty bytes: $(cat /sys/block/pf-vm1/peerflash/dirty_bytes)"
peerflash remove vm1 || fail "remove with dirty data"
rmmod peerflash && modprobe peerflash || fail "reload"
echo "\$ peerflash inspect $CACHE   (the records a replay will destage)"
peerflash inspect "$CACHE" | sed -n '/^volume/,$p'
echo "\$ peerflash create vm1 ...  (removed with dirty data, it may have run without the cache since: refused)"
peerflash create vm1 --backing "$SAN" --cache "$CACHE" --policy wb &&
    fail "a volume removed with dirty data was replayed without being asked"
echo "\$ peerflash create vm1 ... --replay  (the index is rebuilt from flash, the destager replays)"
peerflash create vm1 --backing "$SAN" --cache "$CACHE" --policy wb --replay || fail "create again"
dmesg | grep "to replay" | tail -1 | sed 's/^\[[^]]*\] //'
w=$(dd if=/dev/pf-vm1 bs=64k skip=2048 count=256 iflag=direct status=none | sha256sum | cut -c1-16)
echo "pattern written: $(sha256sum < /tmp/pattern | cut -c1-16)   read back after the crash: $w"
echo "\$ peerflash flush vm1"
peerflash flush vm1 || fail "flush"
echo "\$ peerflash status vm1 --output json"
peerflash status vm1 --output json

say "Remove the volume: the SAN holds exactly what was written"
a=$(dd if=/dev/pf-vm1 bs=1M count=64 iflag=direct status=none | sha256sum | cut -c1-16)
peerflash remove vm1 || fail "remove"
b=$(dd if=$SAN bs=1M count=64 iflag=direct status=none | sha256sum | cut -c1-16)
echo "through the volume: $a   on the SAN afterwards: $b"
[ "$a" = "$b" ] || fail "the SAN differs"
fio --name=demo --filename="$SAN" --rw=randwrite --bsrange=4k-64k --iodepth=16 --ioengine=libaio \
    --direct=1 --size=64M --verify=crc32c --verify_fatal=1 --verify_only --randseed=42 > /dev/null || fail "verify on SAN"
echo "fio verify of the bare SAN: OK"
say "Done: writes acknowledged from flash, destaged to the SAN with checkpoints, recovered after a crash."

#!/bin/sh
# The cache device format on a real (QEMU) NVMe device: the module loads only with a CRC32C that
# passes the check value; format-cache lays out version 1 with the device's block size; inspect
# decodes it; a device in use, an unformatted device and a corrupted superblock are refused;
# several volumes share one cache device, each in the share --cache-mib gives it; without room
# a create is refused with what the idle slots hold, and --force takes them back.
. "$PF_REPO/tests/vm/lib.sh"
set -u
cd /tmp  # fio logs and captured output go here (the checkout may be read-only in the VM)
CACHE=$PF_CACHE_DEV
SAN=$PF_SAN_DEV
[ -n "$CACHE" ] || fail "no cache device"

modprobe peerflash || fail "modprobe peerflash"
dmesg | grep -q "peerflash 0.1.0 loaded (on-flash format 1)" || fail "the module did not report its format version"
echo "ok: the kernel's crc32c passed the check value"

step "format-cache"
peerflash format-cache "$CACHE" --segment-kib 1024 || fail "format-cache"
lbs=$(cat /sys/block/"${CACHE#/dev/}"/queue/logical_block_size)
json=$(peerflash inspect "$CACHE" --output json) || fail "inspect"
echo "$json"
same "$(echo "$json" | grep -c "\"block_size\": $lbs,")" 1 "block size from sysfs"
same "$(echo "$json" | grep -c '"volumes": \[\]')" 1 "no volumes"
same "$(echo "$json" | grep -c '"segment_bytes": 1048576')" 1 "segment size"
peerflash inspect "$CACHE" | grep -q "format version: 1" || fail "human inspect"

step "a device in use is not formatted"
peerflash create v1 --backing "$CACHE" || fail "create over the cache device"
expect_refusal 3 "in use" peerflash format-cache "$CACHE" --force
peerflash remove v1 || fail "remove v1"
peerflash inspect "$CACHE" > /dev/null || fail "the refused format changed the device"

step "a volume attaches the cache device: its slot is made, then found again"
peerflash create v1 --backing "$SAN" --cache "$CACHE" --policy wb || fail "create with a cache"
same "$(cat /sys/kernel/config/peerflash/v1/cache_slot)" 0 "cache slot"
peerflash status v1 | grep -q "policy: wb" || fail "status shows the policy"
json=$(peerflash inspect "$CACHE" --output json) || fail "inspect while attached"
echo "$json"
same "$(echo "$json" | grep -c '"name": "v1"')" 1 "the slot's volume name"
same "$(echo "$json" | grep -c "\"backing\": \"$SAN\"")" 1 "the slot's backing path"
uuid1=$(echo "$json" | sed -n 's/.*"uuid": "\(.*\)",/\1/p' | tail -1)
peerflash remove v1 || fail "remove v1"
peerflash create v1 --backing "$SAN" --cache "$CACHE" --policy wt || fail "re-create with the cache"
uuid2=$(peerflash inspect "$CACHE" --output json | sed -n 's/.*"uuid": "\(.*\)",/\1/p' | tail -1)
same "$uuid2" "$uuid1" "the re-created volume found its slot (uuid)"
same "$(peerflash inspect "$CACHE" --output json | grep -c '"name":')" 1 "still one volume on the cache"
same "$(peerflash inspect "$CACHE" --output json | grep -c '"policy": "wt"')" 1 "the slot records the new policy"
peerflash remove v1 || fail "remove v1 again"

step "several volumes share one cache device, each in its own share"
half=$(($(blockdev --getsz "$SAN") / 2))
dmsetup create pf-sana --table "0 $half linear $SAN 0" || fail "dm linear a"
dmsetup create pf-sanb --table "0 $half linear $SAN $half" || fail "dm linear b"
dmsetup create pf-sanc --table "0 2048 linear $SAN 0" || fail "dm linear c"
udevadm settle
# v1's slot (made above) owns the whole device: start from an empty layout.
peerflash format-cache "$CACHE" --segment-kib 1024 --force > /dev/null || fail "re-format for sharing"
peerflash create va --backing /dev/mapper/pf-sana --cache "$CACHE" --cache-mib 128 --policy wb || fail "create va"
peerflash create vb --backing /dev/mapper/pf-sanb --cache "$CACHE" --cache-mib 96 --policy wb || fail "create vb"
same "$(cat /sys/kernel/config/peerflash/va/cache_slot)" 0 "slot of va"
same "$(cat /sys/kernel/config/peerflash/vb/cache_slot)" 1 "slot of vb"
json=$(peerflash inspect "$CACHE" --output json) || fail "inspect with two volumes"
same "$(echo "$json" | grep -c '"name": "v[ab]"')" 2 "two volumes on the cache"
echo "$json" | tr -d ' \n' | grep -q '"region":\[0,128\]' || fail "va's region is not 128 segments of 1 MiB: $json"
echo "$json" | tr -d ' \n' | grep -q '"region":\[128,96\]' || fail "vb's region is not the next 96 segments: $json"
expect_refusal 1 "more than the largest free run" peerflash create vc --backing /dev/mapper/pf-sanc --cache "$CACHE" --cache-mib 100000
expect_refusal 2 "less than two segments" peerflash create vc --backing /dev/mapper/pf-sanc --cache "$CACHE" --cache-mib 1
for v in a b; do
    fio --name=share-$v --filename=/dev/pf-v$v --rw=randwrite --bs=4k --iodepth=8 --ioengine=libaio \
        --direct=1 --size=24M --verify=crc32c --verify_fatal=1 --randseed=7$v > fio-$v.log 2>&1 &
done
wait %1 || { tail fio-a.log; fail "fio verify on va"; }
wait %2 || { tail fio-b.log; fail "fio verify on vb"; }
for v in a b; do
    peerflash flush v$v --timeout 120 || fail "flush v$v"
    same "$(dd if=/dev/pf-v$v iflag=direct bs=1M count=24 2>/dev/null | md5sum)" \
        "$(dd if=/dev/mapper/pf-san$v iflag=direct bs=1M count=24 2>/dev/null | md5sum)" "SAN of v$v after flush"
done
# The rest of the device (no --cache-mib: the largest free run) goes to a third volume.
peerflash create vc --backing /dev/mapper/pf-sanc --cache "$CACHE" --policy wt || fail "create vc"
peerflash inspect "$CACHE" --output json | grep -q '"free_segments": 0' || fail "vc did not take the rest: $(peerflash inspect "$CACHE")"
peerflash remove vc || fail "remove vc"
peerflash remove vb || fail "remove vb"
peerflash remove va || fail "remove va"
# Found again by name, each in its own region.
peerflash create vb --backing /dev/mapper/pf-sanb --cache "$CACHE" || fail "re-create vb"
same "$(cat /sys/kernel/config/peerflash/vb/cache_slot)" 1 "vb found its slot again"
peerflash remove vb || fail "remove vb again"

step "no room for a new volume: refused with what the idle slots hold, taken back only with --force"
peerflash create va --backing /dev/mapper/pf-sana --cache "$CACHE" || fail "re-create va"
echo 1 > /sys/block/pf-va/peerflash/destage_paused
dd if=/dev/urandom of=/dev/pf-va bs=1M count=4 oflag=direct 2>/dev/null || fail "dirty data on va"
peerflash remove va || fail "remove va with dirty data"
expect_refusal 1 "va (4.0 MiB dirty" peerflash create vd --backing /dev/mapper/pf-sanc --cache "$CACHE" --cache-mib 64
peerflash create vd --backing /dev/mapper/pf-sanc --cache "$CACHE" --cache-mib 64 --force 2> force.err ||
    fail "forced create: $(cat force.err)"
cat force.err
grep -q "took back the slot of volume va on $CACHE: va (4.0 MiB dirty" force.err || fail "the forced create did not say what was lost"
grep -q "volume vb" force.err && fail "vb was taken back though va's room was enough"
same "$(cat /sys/kernel/config/peerflash/vd/cache_slot)" 0 "vd took va's slot"
names=$(peerflash inspect "$CACHE" --output json | sed -n 's/.*"name": "\(.*\)",/\1/p' | sort | tr '\n' ' ')
same "$names" "vb vc vd " "volumes on the cache after the forced create"
peerflash remove vd || fail "remove vd"
dmsetup remove pf-sana && dmsetup remove pf-sanb && dmsetup remove pf-sanc || fail "dmsetup remove"

step "bad cache devices"
expect_refusal 2 "the cache device is the backing device" peerflash create v2 --backing "$SAN" --cache "$SAN"
truncate -s 64M /tmp/blank.img
blank=$(losetup -f --show /tmp/blank.img) || fail "losetup"
expect_refusal 2 "not formatted for peerflash" peerflash create v2 --backing "$SAN" --cache "$blank"
expect_refusal 4 "does not exist" peerflash create v2 --backing "$SAN" --cache /dev/nonexistent
losetup -d "$blank"
same "$(peerflash list)" "" "volumes left"

step "unformatted and corrupted devices"
expect_refusal 2 "no peerflash signature" peerflash inspect "$SAN"
dd if=/dev/urandom of="$CACHE" bs=1 count=4 seek=40 conv=notrunc,fsync 2>/dev/null
expect_refusal 2 "checksum mismatch" peerflash inspect "$CACHE"
peerflash format-cache "$CACHE" || fail "re-format a corrupted device"
peerflash inspect "$CACHE" > /dev/null || fail "inspect after re-format"
rmmod peerflash || fail "rmmod"
echo "cache-format: all checks passed"

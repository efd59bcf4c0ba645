#!/bin/sh
# The cache device format on a real (QEMU) NVMe device: the module loads only with a CRC32C that
# passes the check value; format-cache lays out version 1 with the device's block size; inspect
# decodes it; a device in use, an unformatted device and a corrupted superblock are refused.
. "$PF_REPO/tests/vm/lib.sh"
set -u
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

step "unformatted and corrupted devices"
expect_refusal 2 "no peerflash signature" peerflash inspect "$SAN"
dd if=/dev/urandom of="$CACHE" bs=1 count=4 seek=40 conv=notrunc,fsync 2>/dev/null
expect_refusal 2 "checksum mismatch" peerflash inspect "$CACHE"
peerflash format-cache "$CACHE" || fail "re-format a corrupted device"
peerflash inspect "$CACHE" > /dev/null || fail "inspect after re-format"
rmmod peerflash || fail "rmmod"
echo "cache-format: all checks passed"

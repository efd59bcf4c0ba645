#!/bin/sh
# A cache device that holds well-formed but impossible metadata (what corruption or a crafted
# device can present; `pf-craft` writes it with right checksums) never panics the kernel, never
# makes destaging fail forever and never puts impossible data on the SAN:
#  1. a dirty record past the volume's end and 2. one longer than any request: ignored at attach
#     (counted as invalid, logged), `flush` completes, the SAN keeps its data;
#  3. a torn header with the largest serial: the next serial stays in range;
#  4. both checkpoint copies with the largest serial: the attach is refused (no readable
#     checkpoint), `--replay` attaches from the slot's floor.
# The runner checks the kernel log for any warning, BUG or panic (an overflow check firing).
. "$PF_REPO/tests/vm/lib.sh"
set -u
cd /tmp
CACHE=$PF_CACHE_DEV
SAN=$PF_SAN_DEV
S=/sys/block/pf-v/peerflash
val() { cat "$S/$1"; }
SZ=$(blockdev --getsz "$SAN")
create() { peerflash create v --backing "$SAN" --cache "$CACHE" --policy wb "$@"; }
# attach_ok WHAT: create, flush within a minute, nothing failed
attach_ok() {
    create || fail "$1: create"
    dmesg | grep "cache slot" | tail -1
    peerflash flush v --timeout 60 > /dev/null || fail "$1: flush did not complete"
    same "$(val destage_failures)" 0 "$1: failed destage batches"
    same "$(val san_errors)" 0 "$1: SAN errors"
    dd if="$SAN" bs=4k count=1 iflag=direct status=none | cmp -s - a || fail "$1: the SAN's block 0 changed"
}

modprobe peerflash || fail "modprobe peerflash"
peerflash format-cache "$CACHE" --force > /dev/null || fail "format-cache"
dd if=/dev/urandom of=a bs=4k count=1 status=none
create || fail "create"
dd if=a of=/dev/pf-v bs=4k count=1 oflag=direct status=none || fail "write"
peerflash flush v > /dev/null || fail "flush"
peerflash remove v || fail "remove"

step "1. a dirty record past the volume's end"
pf-craft "$CACHE" --volume v record --segment 5 --serial 5000 --lba $((SZ - 4)) --len 8 || fail "craft"
attach_ok "past the end"
dmesg | grep -q "cannot be its writes" || fail "the impossible record was not reported"
same "$(val state)" clean "state (nothing replayed)"
peerflash remove v || fail "remove"

step "2. a dirty record longer than any request"
pf-craft "$CACHE" --volume v record --segment 6 --serial 5001 --lba 0 --len 1024 || fail "craft"
attach_ok "too long"
dd if=/dev/pf-v bs=4k count=1 iflag=direct status=none | cmp -s - a || fail "block 0 reads the crafted record"
peerflash remove v || fail "remove"

step "3. a torn header with the largest serial"
pf-craft "$CACHE" --volume v record --segment 7 --serial 18446744073709551615 --lba 0 --len 8 --torn ||
    fail "craft"
attach_ok "torn, largest serial"
last=$(val last_serial)
[ "$last" -lt 9223372036854775807 ] || fail "the next serial followed the torn header ($last)"
dd if=a of=/dev/pf-v bs=4k seek=1 count=1 oflag=direct status=none || fail "a write after it"
peerflash flush v > /dev/null || fail "flush"
peerflash remove v || fail "remove"

step "4. both checkpoint copies with the largest serial"
pf-craft "$CACHE" --volume v checkpoint --serial 18446744073709551615 || fail "craft"
expect_refusal 2 "both checkpoint copies" create
create --replay || fail "create --replay"
dmesg | grep "cache slot" | tail -1
peerflash flush v --timeout 60 > /dev/null || fail "flush after --replay"
dd if=/dev/pf-v bs=4k count=1 iflag=direct status=none | cmp -s - a || fail "block 0 after --replay"
peerflash remove v || fail "remove"
echo "crafted-cache: all checks passed"

#!/bin/sh
# The module's SAN-write fence (sysfs lease_ms / fenced), without sanlock: once the lease pushed
# by the agent runs out, nothing more reaches the SAN (destage batches, write-through writes)
# until it is renewed; wb writes to flash go on.
. "$PF_REPO/tests/vm/lib.sh"
set -u
cd /tmp
SAN=$PF_SAN_DEV
CACHE=$PF_CACHE_DEV
DEV=/dev/pf-f
S=/sys/block/pf-f/peerflash
val() { cat "$S/$1"; }

modprobe peerflash || fail "modprobe peerflash"
peerflash format-cache "$CACHE" --force > /dev/null || fail "format-cache"
peerflash create f --backing "$SAN" --cache "$CACHE" --policy wb || fail "create"
same "$(val lease_ms)" 0 "no lease enforced by default"
same "$(val fenced)" 0 "not fenced without a lease"
expect_write_refused "$S/lease_ms" 3600001

step "a lease running out stops destaging"
echo 1 > "$S/destage_paused"
dd if=/dev/urandom of=/tmp/a bs=1M count=4 status=none
dd if=/tmp/a of=$DEV bs=1M count=4 oflag=direct status=none || fail "wb write"
echo 1500 > "$S/lease_ms"
sleep 2
same "$(val fenced)" 1 "fenced once the lease ran out"
same "$(val lease_ms)" 0 "no time left"
before=$(val destaged_bytes)
echo 0 > "$S/destage_paused"
echo 1 > "$S/destage_now"
sleep 3
same "$(val destaged_bytes)" "$before" "nothing destaged while fenced"
[ "$(val dirty_bytes)" -gt 0 ] || fail "dirty data vanished while fenced"
cmp -n 4194304 /tmp/a "$SAN" > /dev/null 2>&1 && fail "the SAN got the data while fenced"
# wb writes still go to flash.
dd if=/tmp/a of=$DEV bs=1M count=1 seek=8 oflag=direct status=none || fail "wb write while fenced"

step "write-through writes wait for the lease"
peerflash set-policy f wt > /dev/null 2>&1 &
dd if=/tmp/a of=$DEV bs=4k count=1 seek=4096 oflag=direct status=none &
ddpid=$!
sleep 3
kill -0 $ddpid 2>/dev/null || fail "a write reached the SAN path while fenced"

step "renewal: everything goes on"
echo 60000 > "$S/lease_ms"
same "$(val fenced)" 0 "not fenced after renewal"
wait $ddpid || fail "the held write failed after renewal"
peerflash flush f --timeout 300 || fail "flush after renewal"
cmp -n 4194304 /tmp/a "$SAN" || fail "SAN differs after renewal and flush"
echo 0 > "$S/lease_ms"
peerflash remove f || fail "remove"

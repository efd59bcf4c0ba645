#!/bin/sh
# A partial cache failure while a write-back write is in flight loses nothing and brings nothing
# old back. The cache device is dm-delay over dm-dust over the NVMe (writes can be made slow,
# chosen blocks unreadable).
#  1. A wb write that waited (behind the copy of its block a read is keeping on the slow cache)
#     is on its way to the slow cache device when a read of a cached block fails: the volume bypasses the
#     cache (nothing dirty), serves the read from the SAN, and the waiting write, finishing
#     after the switch, is written to the SAN before it is acknowledged: it reads back.
#  2. The switch wrote a checkpoint past every serial issued: after a newer write went to the SAN,
#     the device healed and the volume created again, the write's record on flash (it landed)
#     is not replayed over the newer data.
#  3. Read errors only: a clean cached block unreadable on a healthy volume -> bypass, the
#     reader gets the SAN's data, no I/O error.
. "$PF_REPO/tests/vm/lib.sh"
set -u
cd /tmp
CACHE=$PF_CACHE_DEV
SAN=$PF_SAN_DEV
S=/sys/block/pf-v/peerflash
val() { cat "$S/$1"; }
csz=$(blockdev --getsz "$CACHE")
ssz=$(blockdev --getsz "$SAN")
# slow DEV TARGET SECTORS MS: dm-delay DEV over TARGET with writes (and flushes) MS late.
slow() {
    dmsetup suspend "$1" && dmsetup load "$1" --table "0 $3 delay $2 0 0 $2 0 $4" &&
        dmsetup resume "$1" || fail "dm-delay $1: $4 ms"
}
b4k() { dd if="$1" bs=4k skip="$2" count=1 iflag=direct status=none; }
# bad_copy FILE: makes the cache device's copy of FILE's 4 KiB (found by its contents in the
# first 64 MiB of the device) unreadable.
bad_copy() {
    dd if=/dev/mapper/pfdust of=head.img bs=1M count=64 iflag=direct status=none || fail "read the cache device"
    at=$(python3 -c "import sys; d=open('head.img','rb').read(); print(d.find(open(sys.argv[1],'rb').read()))" "$1")
    rm -f head.img
    [ "$at" -ge 0 ] && [ $((at % 512)) -eq 0 ] || fail "no copy of $1 on the cache device ($at)"
    # The 4 KiB dust blocks that hold any of its 8 sectors.
    k=$((at / 4096))
    while [ $k -le $(((at + 4095) / 4096)) ]; do
        dmsetup message pfdust 0 addbadblock $k > /dev/null || fail "addbadblock $k"
        k=$((k + 1))
    done
    dmsetup message pfdust 0 enable || fail "dust enable"
    echo "made the copy of $1 at cache sector $((at / 512)) unreadable"
}

modprobe peerflash || fail "modprobe peerflash"
modprobe dm-dust || fail "modprobe dm-dust"
modprobe dm-delay || fail "modprobe dm-delay"
peerflash format-cache "$CACHE" --force > /dev/null || fail "format-cache"
# 4 KiB dust blocks: dm-dust splits I/O at its block size.
dmsetup create pfdust --table "0 $csz dust $CACHE 0 4096" || fail "dm-dust"
dmsetup create pfcache --table "0 $csz delay /dev/mapper/pfdust 0 0" || fail "dm-delay cache"
dmsetup create pfsan --table "0 $ssz delay $SAN 0 0" || fail "dm-delay SAN"
udevadm settle
for p in p0 p1 p2 q0 q1; do dd if=/dev/urandom of=$p bs=4k count=1 status=none; done

step "1. a wb write in flight to a slow cache when a cached block's read fails"
peerflash create v --backing /dev/mapper/pfsan --cache /dev/mapper/pfcache --policy wb || fail "create"
# B (4 KiB at 8 MiB) holds q1 on the SAN; a read keeps a clean copy on flash.
dd if=q1 of=/dev/mapper/pfsan bs=4k seek=2048 oflag=direct status=none || fail "SAN write"
p0bytes=$(val populated_bytes)
b4k /dev/pf-v 2048 > /dev/null || fail "read B"
same "$(val populated_bytes)" $((p0bytes + 4096)) "B kept on flash"
dd if=p0 of=/dev/pf-v bs=4k count=1 oflag=direct status=none || fail "write p0 to A"
peerflash flush v > /dev/null || fail "flush"
same "$(val state)" clean "state before the fault"
bad_copy q1
reads0=$(stat_of v reads)
slow pfcache /dev/mapper/pfdust "$csz" 6000
t0=$(date +%s.%N)
at() { echo "$1 at +$(echo "$(date +%s.%N) - $t0" | bc) s"; }
# poll WHAT CONDITION: until the shell condition holds (evaluated each time; at most 30 s)
poll() {
    i=0
    until eval "$2"; do
        i=$((i + 1)); [ $i -lt 300 ] || fail "$1 never happened"; sleep 0.1
    done
}
# C (4 KiB at 12 MiB) is cold: a read of it is kept on flash, and while that copy is on its
# way to flash (6 s) a write of C waits for it (the slow path).
(b4k /dev/pf-v 3072 > /dev/null; at "the read of C: rc $?, done") &
reader=$!
poll "the read of C reaching the volume" '[ "$(stat_of v reads)" -gt "$reads0" ]'
sleep 1
(dd if=p1 of=/dev/pf-v bs=4k seek=3072 count=1 oflag=direct status=none; rc=$?; at "write: rc $rc, done"; exit $rc) &
writer=$!
poll "the write waiting" '[ "$(val write_waits)" -ge 1 ]'
at "the write waits"
wait $reader || fail "the read of C"
# The write is on its way to flash now (6 s).
sleep 1.5
kill -0 $writer 2>/dev/null || fail "the write finished before the fault (the test proves nothing)"
at "the fault (the write on its way to flash)"
b4k /dev/pf-v 2048 | cmp -s - q1 || fail "the read of B failed (it must come from the SAN)"
same "$(val state)" degraded "state after the cache read error"
wait $writer || fail "the write in flight at the switch failed"
b4k /dev/pf-v 3072 | cmp -s - p1 || fail "the write acknowledged after the switch is not what C reads"
echo "ok: the write in flight at the switch reads back"
dmesg | grep "cache bypassed: checkpoint" || fail "no checkpoint was written at the switch"
[ "$(val cache_errors)" -ge 1 ] || fail "no cache error counted"

step "2. after healing, the record on flash is not replayed over newer SAN data"
dd if=p2 of=/dev/pf-v bs=4k seek=3072 count=1 oflag=direct status=none || fail "write p2 to C (bypass)"
peerflash remove v || fail "remove"
dmsetup message pfdust 0 disable || fail "dust disable"
dmsetup message pfdust 0 clearbadblocks > /dev/null 2>&1 || :  # none left is fine
slow pfcache /dev/mapper/pfdust "$csz" 0
peerflash create v --backing /dev/mapper/pfsan --cache /dev/mapper/pfcache --policy wb || fail "create again"
dmesg | grep "scanned" | tail -1
b4k /dev/pf-v 3072 | cmp -s - p2 || fail "C lost its newest write: an old record was replayed over it"
echo "ok: C holds the newest write"
same "$(val state)" clean "state after the re-attach (nothing to replay)"
peerflash remove v || fail "remove"

step "3. read errors only"
peerflash format-cache /dev/mapper/pfcache --force > /dev/null || fail "format-cache"
peerflash create v --backing /dev/mapper/pfsan --cache /dev/mapper/pfcache --policy wb || fail "create"
dd if=q0 of=/dev/mapper/pfsan bs=4k seek=4096 oflag=direct status=none || fail "SAN write"
p0bytes=$(val populated_bytes)
b4k /dev/pf-v 4096 > /dev/null || fail "read C"
same "$(val populated_bytes)" $((p0bytes + 4096)) "C kept on flash"
bad_copy q0
b4k /dev/pf-v 4096 | cmp -s - q0 || fail "the read of an unreadable cached block did not return the SAN's data"
same "$(val state)" degraded "state"
dd if=p0 of=/dev/pf-v bs=4k seek=4096 count=1 oflag=direct status=none || fail "a write after the switch"
b4k /dev/mapper/pfsan 4096 | cmp -s - p0 || fail "the SAN lacks a write made while bypassing"
echo "ok: bypassing after read errors, reads and writes go on"
peerflash remove v || fail "remove"
dmsetup remove pfsan pfcache pfdust || fail "dmsetup remove"
echo "cache-faults: all checks passed"

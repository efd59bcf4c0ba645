#!/bin/sh
# Destage turns of a SAN group: two wb volumes on two LUNs of one SAN (halves of the SAN disk
# behind dm-delay, 2 ms per write, so that the SAN's time dominates the emulator's noise) share
# one cache device; volume a destages with 64 SAN writes in flight, volume b with one, so b's
# batches cost much more. Alone (san_group 0), a runs ahead of b (the control: it
# must, or this test could not tell). In one group, the batches alternate: when one volume is
# clean the other is at most one batch behind. Either way the SAN ends with exactly the data.
. "$PF_REPO/tests/vm/lib.sh"
set -u
cd /tmp
SAN=$PF_SAN_DEV
CACHE=$PF_CACHE_DEV
BATCHES=8    # batches per volume and round
RECORDS=512  # 4 KiB records per batch

modprobe peerflash || fail "modprobe peerflash"
modprobe dm-delay || fail "modprobe dm-delay"
sz=$(blockdev --getsz "$SAN")
half=$((sz / 2))
dmsetup create pf-lun-a --table "0 $half delay $SAN 0 0 $SAN 0 2" || fail "dm pf-lun-a"
dmsetup create pf-lun-b --table "0 $half delay $SAN $half 0 $SAN $half 2" || fail "dm pf-lun-b"
udevadm settle
peerflash format-cache "$CACHE" --force > /dev/null || fail "format-cache"
for v in a b; do
    peerflash create $v --backing /dev/mapper/pf-lun-$v --cache "$CACHE" --cache-mib 192 \
        --policy wb > /dev/null || fail "create $v"
done
val() { cat "/sys/block/pf-$1/peerflash/$2"; }
set_all() { echo "$3" > "/sys/block/pf-$1/peerflash/$2" || fail "$2=$3 on $1"; }
expect_write_refused /sys/block/pf-a/peerflash/san_group 65536
for v in a b; do
    set_all $v batch_records $RECORDS
    set_all $v batch_sectors 1048576
done
set_all a destage_concurrency 64
set_all b destage_concurrency 1

# race GROUP SEED: both volumes get BATCHES x RECORDS random 4 KiB writes with destaging
# paused, then destage at once; sets FIRST to "LEAD_BATCHES LAG_BATCHES" at the first sample
# where one volume is clean (the other's batches then); both end clean and checked.
race() {
    for v in a b; do
        set_all $v san_group "$1"
        set_all $v destage_paused 1
    done
    for v in a b; do
        fio --name="w$v" --filename=/dev/pf-$v --rw=randwrite --bs=4k --iodepth=16 \
            --ioengine=libaio --direct=1 --size=$((BATCHES * RECORDS * 4))k --randseed="$2" \
            > "fio-$v.log" 2>&1 || { tail "fio-$v.log"; fail "fio on $v"; }
    done
    a0=$(val a destage_batches)
    b0=$(val b destage_batches)
    set_all a destage_paused 0
    set_all b destage_paused 0
    set_all a destage_now 1
    set_all b destage_now 1
    first=""
    i=0
    while :; do
        i=$((i + 1)); [ $i -lt 3000 ] || fail "destaging did not finish in 10 min"
        da=$(val a dirty_bytes)
        db=$(val b dirty_bytes)
        na=$(($(val a destage_batches) - a0))
        nb=$(($(val b destage_batches) - b0))
        if [ -z "$first" ] && { [ "$da" = 0 ] || [ "$db" = 0 ]; }; then
            if [ "$da" = 0 ]; then first="$na $nb"; else first="$nb $na"; fi
            echo "first clean: batches $na (a) and $nb (b); dirty $da (a) and $db (b) bytes"
        fi
        [ "$da" = 0 ] && [ "$db" = 0 ] && break
        sleep 0.2
    done
    for v in a b; do
        peerflash flush $v --timeout 300 > /dev/null || fail "flush $v"
        dd if=/dev/pf-$v bs=1M count=16 iflag=direct status=none > "vol-$v"
        dd if=/dev/mapper/pf-lun-$v bs=1M count=16 iflag=direct status=none | cmp - "vol-$v" ||
            fail "the SAN of $v differs from the volume"
    done
    FIRST=$first
}

step "control: no group, each volume destages on its own"
w0=$(val b turn_waits)
race 0 11
set -- $FIRST
echo "the first clean volume ran $1 batches, the other $2"
same "$(val b turn_waits)" "$w0" "turn waits without a group"
[ $(($1 - $2)) -ge 3 ] ||
    fail "without turns the cheap volume did not run ahead ($1 vs $2 batches): the test cannot tell turns from no turns"

step "one SAN group: the batches alternate"
race 7 22
set -- $FIRST
echo "the first clean volume ran $1 batches, the other $2"
[ $(($1 - $2)) -le 1 ] || fail "with turns one volume ran ahead ($1 vs $2 batches)"
[ "$(val a turn_waits)" -gt 0 ] && [ "$(val b turn_waits)" -gt 0 ] ||
    fail "no turn waits: a $(val a turn_waits), b $(val b turn_waits)"
echo "turn waits: a $(val a turn_waits), b $(val b turn_waits)"
for v in a b; do
    same "$(val $v batch_overlaps)" 0 "overlapping batch pieces on $v"
    peerflash remove $v > /dev/null || fail "remove $v"
done
echo "destage-turns: every check passed"

#!/bin/sh
# Flow control (Documentation/design.md, "Flow control"): a write-back volume whose share fills
# faster than the destager empties it paces its writers, then writes through at the limit,
# instead of making them wait for room.
#  1. The destager paused, 2x the share written sequentially (64 KiB direct writes, SAN behind
#     dm-delay): every write completes (before flow control they waited for room that never
#     came: this phase never ended), some were paced (`paced_writes`), the rest written through
#     (`flow_writethroughs`), none waited (`write_waits` 0), the fill stayed below the limit, and
#     the data reads back.
#  2. The destager resumed: it measures its bandwidth (`destage_bw`), drains, the state returns to
#     freerun, and the SAN holds the data.
#  3. Bad tunables are refused.
#  4. The same for a wbp volume whose member (host 2) is pf-wire acknowledging without storing
#     (a test double on loopback): paced, then written through at the limit (a block written
#     through has no dirty record, so no member holds one a replay could bring back), none
#     waited, the data reads back; resumed, it drains and its checkpoints reach the member.
. "$PF_REPO/tests/vm/lib.sh"
set -u
cd /tmp
SAN=$PF_SAN_DEV
CACHE=$PF_CACHE_DEV
S=/sys/block/pf-v/peerflash
val() { cat "$S/$1"; }
SHARE_MIB=32

modprobe peerflash || fail "modprobe peerflash"
modprobe dm-delay || fail "modprobe dm-delay"
dmsetup create pfsan --table "0 $(blockdev --getsz "$SAN") delay $SAN 0 0 $SAN 0 2" || fail "dm-delay SAN"
udevadm settle
peerflash format-cache "$CACHE" --force > /dev/null || fail "format-cache"
peerflash create v --backing /dev/mapper/pfsan --cache "$CACHE" --cache-mib $SHARE_MIB --policy wb > /dev/null || fail "create"
same "$(val flow_state)" freerun "flow state of an empty volume"
same "$(val flow_start_pct) $(val flow_limit_pct) $(val flow_max_delay_us)" "50 90 5000" "flow tunables by default"
expect_write_refused $S/flow_start_pct 0
expect_write_refused $S/flow_limit_pct 101
expect_write_refused $S/flow_max_delay_us 1000001
echo 2000 > $S/flow_max_delay_us || fail "flow_max_delay_us"

# fill_past_the_limit WHAT: with the destager paused, twice the share written sequentially (64
# KiB direct writes): they complete, some paced, the rest written through at the limit, none
# waited for room, the fill sampled while they run never past the limit, and the data reads back.
fill_past_the_limit() {
    what=$1
    echo 1 > $S/destage_paused
    dd if=/dev/urandom of=pattern bs=1M count=$((2 * SHARE_MIB)) status=none
    rm -f done dd.rc samples
    # Sample the state while the writes run: the fill must never pass the limit.
    (
        while [ ! -e done ]; do
            echo "$(val flow_state) $(val dirty_bytes)" >> samples
            sleep 0.2
        done
    ) &
    sampler=$!
    # A write waiting for room sleeps where no signal reaches it: the writer is watched, not
    # timed out (without flow control it never finished).
    (dd if=pattern of=/dev/pf-v bs=64k oflag=direct status=none; echo $? > dd.rc) &
    i=0
    until [ -e dd.rc ]; do
        i=$((i + 1)); [ $i -lt 600 ] || { touch done; fail "the $what writes did not complete in 10 min: they waited for room"; }
        sleep 1
    done
    touch done
    wait $sampler
    same "$(cat dd.rc)" 0 "exit status of the $what writes"
    echo "states seen: $(cut -d' ' -f1 samples | sort | uniq -c | tr '\n' ' ')"
    paced=$(val paced_writes)
    through=$(val flow_writethroughs)
    echo "$what: paced $paced writes ($(val paced_us) us in all, last $(val flow_delay_us) us), written through $through"
    [ "$paced" -gt 0 ] || fail "no $what write was paced"
    [ "$through" -gt 0 ] || fail "no $what write was written through at the limit"
    same "$(val write_waits)" 0 "$what writes that waited for room"
    same "$(val flow_state)" writethrough "$what flow state at the limit"
    max_dirty=$(cut -d' ' -f2 samples | sort -n | tail -1)
    limit=$((SHARE_MIB * 1048576 * 90 / 100))
    echo "most dirty bytes sampled: $max_dirty (limit of the log space: $limit)"
    [ "$max_dirty" -le "$limit" ] || fail "$what dirty data passed the limit"
    dd if=/dev/pf-v of=back bs=1M count=$((2 * SHARE_MIB)) iflag=direct status=none || fail "read back ($what)"
    cmp -s pattern back || fail "the $what data read back differs"
    echo "ok: the $what data reads back"
}

step "the destager paused, 2x the share written"
fill_past_the_limit wb

step "the destager resumed: it measures its bandwidth and drains"
echo 0 > $S/destage_paused
peerflash flush v --timeout 300 > /dev/null || fail "flush"
bw=$(val destage_bw)
echo "destage bandwidth measured: $bw bytes/s"
[ "$bw" -gt 0 ] || fail "no destage bandwidth measured"
same "$(val flow_state)" freerun "flow state after the drain"
same "$(val dirty_bytes)" 0 "dirty bytes after the drain"
peerflash remove v || fail "remove"
dd if=/dev/mapper/pfsan of=san bs=1M count=$((2 * SHARE_MIB)) iflag=direct status=none || fail "read the SAN"
cmp -s pattern san || fail "the SAN lacks the data"
echo "ok: the SAN holds the data"

step "wbp: the same with a member, paced, then written through at the limit"
CFS=/sys/kernel/config/peerflash
CLUSTER=00112233445566778899aabbccddeeff
umask 077
od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > /tmp/pf-secret
ip link set lo up
echo 1 > $CFS/host_id && echo $CLUSTER > $CFS/cluster_id && cat /tmp/pf-secret > $CFS/secret &&
    printf '1 127.0.0.1:7790\n2 127.0.0.2:7791\n' > $CFS/hosts && echo 127.0.0.1:7790 > $CFS/listen ||
    fail "peer transport"
pf-wire --cluster $CLUSTER --secret-file /tmp/pf-secret --me 2 serve --listen 127.0.0.2:7791 --client 1 \
    --client-addr 127.0.0.1 --ack-without-storing > member.log 2>&1 &
member=$!
sleep 1
peerflash format-cache "$CACHE" --force > /dev/null || fail "format-cache"
peerflash create v --backing /dev/mapper/pfsan --cache "$CACHE" --cache-mib $SHARE_MIB --policy wbp \
    --replicas '1 1 1 2' > /dev/null || fail "create wbp"
same "$(val policy)" wbp "policy with its member"
# With the destager paused no bandwidth is measured, and paced writes are spaced by the cap; a
# wbp write (its round trip to the member included) takes longer than 2 ms here, so the cap is
# raised for pacing to show.
echo 20000 > $S/flow_max_delay_us || fail "flow_max_delay_us"
fill_past_the_limit wbp
echo 0 > $S/destage_paused
peerflash flush v --timeout 300 > /dev/null || fail "flush (wbp)"
same "$(val flow_state)" freerun "wbp flow state after the drain"
peerflash remove v || fail "remove wbp"
wait $member || fail "the member failed: $(cat member.log)"
cat member.log
grep -q "[1-9][0-9]* checkpoints acknowledged" member.log || fail "no checkpoint reached the member"
dd if=/dev/mapper/pfsan of=san bs=1M count=$((2 * SHARE_MIB)) iflag=direct status=none || fail "read the SAN"
cmp -s pattern san || fail "the SAN lacks the wbp data"
echo "ok: the SAN holds the wbp data"
dmsetup remove pfsan
echo "flow-control: all checks passed"

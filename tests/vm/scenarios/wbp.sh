# Scenario (cargo xtask cluster --nodes 3 --script tests/vm/scenarios/wbp.sh; in `cargo xtask
# test` as cluster-wbp): write-back with peers between the modules of three nodes sharing one SAN.
# test: nodes=3 order=90
# (Last of the 3-node tests on their shared cluster: it kills node0.)
#
# 1. p=2: node0's volume v replicates to hosts 2 and 3 (node1, node2). fio with verify, destaging
#    paused: randwrite 4k QD16 and 64k QD16, randrw 4k QD1 and 64k QD1: every member's replica
#    slot, decoded by `peerflash inspect` on that node, holds the primary's dirty records (same
#    count, bytes and digest of serials, addresses and data); the zero-copy counter is non-zero.
# 2. node2's link is cut during a fio randwrite: node0 declares host 3 lost within the detection
#    bound, writes wait (never acknowledged with fewer copies than the set in force names) until
#    the set without it is put in force (epoch 2), then go on write-through (1 of 2 members);
#    fio verify passes; the longest write stall is reported and bounded.
# 3. p=1: v again with host 2 only (epoch 3); the same four fio runs with verify, and node1's
#    replica holds the primary's dirty records; then fio randwrite with the verify state saved at
#    a trigger, then node0 is killed (power cut) and its cache image deleted: node1's device
#    alone holds every acknowledged write; adopting the replica replays it to the SAN, and fio
#    verify_only on node1 finds 0 errors.
RUN=$PF_CLUSTER_DIR
S=/sys/block/pf-v/peerflash
# peer_timeout_ms for this test: twice the default, so that three TCG VMs on two host cores never
# see a member as lost while it is only slow. A member owing an answer this long is lost; it is
# checked at each idle receive (every 2000 ms, the connection's receive timeout).
TIMEOUT_MS=4000

# json_of FILE EXPR: a field of `peerflash inspect --output json` output (EXPR over `v`, the
# volume or replica of uuid $UUID, or of name v on the primary).
json_of() {
    python3 - "$1" "$2" "${UUID:-}" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
want = sys.argv[3]
vs = [v for v in r["volumes"] if (v["uuid"] == want if want else v["name"] == "v" and v["origin"] == 0)]
v = vs[0]
print(eval(sys.argv[2]))
EOF
}

# fio_verify NAME RW BS QD OFFSET SIZE SEED: fio on node0's /dev/pf-v with verify; prints its
# IOPS and errors, fails on any error.
fio_verify() {
    on 0 "cd /tmp && fio --name=$1 --filename=/dev/pf-v --rw=$2 --bs=$3 --iodepth=$4 --ioengine=libaio --direct=1 --offset=$5 --size=$6 --verify=crc32c --verify_fatal=1 --randseed=$7 > $1.log 2>&1; rc=\$?; echo \"$1 ($2 $3 QD$4 $6):\" \$(grep -E 'err=|IOPS' $1.log | head -3); [ \$rc = 0 ] && grep -q 'err= 0' $1.log" || fail "fio $2 $3 QD$4 verify on wbp ($1)"
}

# same_records NODE...: each NODE's replica of node0's volume v (decoded by `peerflash inspect`
# there) holds the primary's dirty records: same count, bytes and digest of their serials,
# addresses and data. (Not the newest serial: a read miss makes a clean record on the primary
# alone.) Sets UUID to v's uuid.
same_records() {
    on 0 "peerflash inspect \$PF_CACHE_DEV --output json" > "$RUN/primary.json" || fail "inspect on node0"
    UUID=
    UUID=$(json_of "$RUN/primary.json" 'v["uuid"]')
    want=$(json_of "$RUN/primary.json" '(v["dirty_records"], v["dirty_bytes"], v["dirty_digest"])')
    echo "primary (uuid $UUID): dirty records, bytes, digest = $want; newest serial $(json_of "$RUN/primary.json" 'v["last_serial"]')"
    for i in "$@"; do
        on $i "peerflash inspect \$PF_CACHE_DEV --output json" > "$RUN/replica$i.json" || fail "inspect on node$i"
        got=$(json_of "$RUN/replica$i.json" '(v["dirty_records"], v["dirty_bytes"], v["dirty_digest"])')
        origin=$(json_of "$RUN/replica$i.json" 'v["origin"]')
        echo "node$i's replica (origin $origin): $got"
        [ "$origin" = 1 ] || fail "node$i's slot is not a replica of host 1's volume"
        [ "$got" = "$want" ] || fail "node$i's replica holds $got, the primary $want"
    done
}

peers_up 3 "peerflash format-cache \$PF_CACHE_DEV --force > /dev/null && echo \$PF_CACHE_DEV > replica_cache"

step "p=2: fio randwrite 4k/64k QD16 and randrw 4k/64k QD1 with verify, destaging paused"
on 0 "peerflash create v --backing \$PF_SAN_DEV --cache \$PF_CACHE_DEV --cache-mib 192 --policy wbp --replicas '1 1 2 2 3' && echo 1 > $S/destage_paused && echo $TIMEOUT_MS > $S/peer_timeout_ms && cat $S/policy $S/replicas" || fail "create wbp p=2"
fio_verify w4k randwrite 4k 16 0 4M 11
fio_verify w64k randwrite 64k 16 16M 8M 15
fio_verify rw4k randrw 4k 1 24M 2M 16
fio_verify rw64k randrw 64k 1 32M 8M 12
on 0 "peerflash status v | sed -n '/^  policy/,/^  cache state/p'; peerflash status v --output json | python3 -c 'import json, sys; s = json.load(sys.stdin); s = s[0] if isinstance(s, list) else s; r = s[\"replicas\"]; assert r[\"members\"] == [2, 3] and all(p[\"state\"] == \"up\" for p in r[\"peers\"]), r'" || fail "status shows the replica set"
zc=$(on 0 "awk '/^host/ { for (i = 1; i < NF; i++) if (\$i == \"zero_copy\") s += \$(i + 1) } END { print s + 0 }' $S/replicas")
echo "zero-copy WRITE sends: $zc"
[ "$zc" -gt 0 ] || fail "no WRITE went out without a copy"
same_records 1 2

step "a member's link cut during writes: it leaves the set, the volume goes write-through"
# host 3's WRITE count before this phase: the cut waits until this phase's writes reach it.
sent3() { on 0 "awk '/^host 3 / { for (i = 1; i < NF; i++) if (\$i == \"writes\") n = \$(i + 1) } END { print n + 0 }' $S/replicas"; }
before=$(sent3)
on 0 "echo 0 > $S/destage_paused; cd /tmp; rm -f \$PF_RUN_DIR/cut.json; setsid fio --name=cut --filename=/dev/pf-v --rw=randwrite --bs=4k --iodepth=4 --ioengine=libaio --direct=1 --offset=64M --size=8M --verify=crc32c --verify_fatal=1 --randseed=13 --rate_iops=200 --output-format=json --output=\$PF_RUN_DIR/cut.json > /dev/null 2>&1 < /dev/null & echo started" || fail "fio in the background"
# fio takes seconds to start under TCG: cut only once writes have reached host 3.
i=0
until [ "$(sent3)" -ge $((before + 100)) ]; do
    i=$((i + 1))
    [ $i -lt 120 ] || fail "no writes of this phase reached host 3 within 60 s"
    sleep 0.5
done
cut 2
t0=$(date +%s%N)
on 0 "i=0; until grep -q '^host 3 state lost' $S/replicas; do i=\$((i + 1)); [ \$i -lt 200 ] || exit 1; sleep 0.1; done" || fail "host 3 was not declared lost within 20 s"
t1=$(date +%s%N)
detect=$(( (t1 - t0) / 1000000 ))
echo "host 3 declared lost $detect ms after the cut (peer_timeout_ms $TIMEOUT_MS)"
on 0 "peerflash set-replicas v '2 1 2 2' && cat $S/policy $S/replicas" || fail "set-replicas without host 3"
t2=$(date +%s%N)
change=$(( (t2 - t0) / 1000000 ))
echo "set without host 3 in force $change ms after the cut"
policy=$(on 0 "cat $S/policy")
[ "$policy" = wt ] || fail "with 1 of 2 members the volume runs $policy, expected wt"
on 0 "while pgrep -x fio > /dev/null; do sleep 1; done" || fail "waiting for fio"
python3 - "$RUN/node0/run/cut.json" > "$RUN/cut.txt" <<'EOF' || fail "fio across the cut: $(cat "$RUN/cut.txt")"
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
w, r = j["write"], j["read"]
print(j["error"], w["total_ios"], r["total_ios"], int(w["clat_ns"]["max"] / 1e6), int(w["clat_ns"]["mean"] / 1e6))
sys.exit(0 if j["error"] == 0 and r["total_ios"] == w["total_ios"] > 0 else 1)
EOF
read err writes verified max_ms mean_ms < "$RUN/cut.txt"
echo "across the cut: $writes writes, $verified verified, error $err; write latency max $max_ms ms, mean $mean_ms ms"
# Detection: the oldest answer owed is overdue after peer_timeout_ms, seen at the next idle
# receive (every 2000 ms), plus the polling and TCG's slowness.
[ "$detect" -le $((TIMEOUT_MS + 2000 + 2000)) ] || fail "detection took $detect ms (bound $((TIMEOUT_MS + 4000)) ms)"
# No write waits longer than until the set without the lost member is in force (plus a write's
# own time).
bound=$((change + TIMEOUT_MS))
echo "longest write stall $max_ms ms; bound: the set change at $change ms + $TIMEOUT_MS ms"
[ "$max_ms" -le "$bound" ] || fail "a write stalled $max_ms ms (bound $bound ms)"
restore 2

step "p=1: node0 killed during writes; node1's replica alone holds every acknowledged write"
on 0 "peerflash flush v --timeout 600 && peerflash remove v && peerflash create v --backing \$PF_SAN_DEV --cache \$PF_CACHE_DEV --cache-mib 128 --policy wbp --replicas '3 1 1 2' && echo 1 > $S/destage_paused && echo $TIMEOUT_MS > $S/peer_timeout_ms && cat $S/policy $S/replicas" || fail "create wbp p=1"
fio_verify p1w4k randwrite 4k 16 192M 4M 21
fio_verify p1w64k randwrite 64k 16 200M 8M 22
fio_verify p1rw4k randrw 4k 1 208M 2M 23
fio_verify p1rw64k randrw 64k 1 216M 8M 24
same_records 1
on 0 "rm -rf \$PF_RUN_DIR/state \$PF_RUN_DIR/kill-me; mkdir -p \$PF_RUN_DIR/state; cd /tmp; setsid fio --name=crash --filename=/dev/pf-v --rw=randwrite --bs=4k --iodepth=16 --ioengine=libaio --direct=1 --offset=128M --size=32M --verify=crc32c --randseed=14 --aux-path=\$PF_RUN_DIR/state --verify_state_save=1 --do_verify=0 --rate_iops=400 --trigger-timeout=12s --trigger='touch \$PF_RUN_DIR/kill-me; sleep 600' > crash.log 2>&1 < /dev/null & echo started" || fail "fio with a trigger"
on 0 "i=0; until [ -e \$PF_RUN_DIR/kill-me ]; do i=\$((i + 1)); [ \$i -lt 600 ] || exit 1; sleep 0.1; done; grep -c . $S/replicas" || fail "no trigger"
kernel_log_clean 0
kill_node 0
# Its flash is gone for good: nothing of what follows can read it.
rm "$RUN/node0/cache.img" || fail "delete node0's cache image"
echo "node0 killed, its cache image deleted"
on 1 "peerflash inspect \$PF_CACHE_DEV" || fail "inspect on node1"
# node1 still serves the dead primary's connection (and holds its replica open) until it has been
# silent for 30 s: the adoption is retried until then.
on 1 "i=0; until peerflash create v --backing \$PF_SAN_DEV --cache \$PF_CACHE_DEV --adopt-replica 1:$UUID; do i=\$((i + 1)); [ \$i -lt 30 ] || exit 1; sleep 3; done; cat $S/state" || fail "adopt the replica on node1"
on 1 "peerflash flush v --timeout 600 && cd /tmp && fio --name=crash --filename=/dev/pf-v --rw=randwrite --bs=4k --iodepth=16 --ioengine=libaio --direct=1 --offset=128M --size=32M --verify=crc32c --randseed=14 --aux-path=$RUN/node0/run/state --verify_only --verify_state_load=1 --verify_fatal=1 > verify.log 2>&1; rc=\$?; grep -E 'err=|read:' verify.log | head -3; [ \$rc = 0 ] && grep -q 'err= 0' verify.log && grep -q 'read: IOPS' verify.log" || fail "fio verify_only of node0's acknowledged writes on node1"
on 1 "peerflash remove v"
for i in 1 2; do on $i "echo > /sys/kernel/config/peerflash/listen && rmmod peerflash" || fail "node$i: unload"; done
echo "wbp: ok"

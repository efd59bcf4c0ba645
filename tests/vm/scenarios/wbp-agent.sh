# Scenario: a wbp volume run by the agents (cargo xtask test: cluster-wbp-agent).
# test: nodes=3
#
# Three nodes share the SAN (split into vm1's disk and a lock datastore); each runs a sanlock
# daemon and `peerflash agent` with a [peer] section, which configures the module's transport.
# node0 `up`s vm1 (policy wbp, replicas 2, peers node1 and node2): its lock record must hold a
# new generation and the replica set {2, 3} at epoch 1, and the module that set. While a verified
# fio randwrite runs, node2's link is cut: the module declares host 3 lost, the agent writes the
# record with the set without it (epoch 2) and then puts that set in force; the volume runs
# write-through and fio verifies every write. vm1 is then taken down and up again while node2 is
# still cut off: the agent places the set on the peers that answer (epoch 3, host 2 alone; the
# volume starts write-through rather than failing); with the link back, the next run has both
# (epoch 4, wbp). At the end each node is left as booted (nothing loaded or running), for the
# next scenario on the same cluster.
. "$PF_REPO/tests/vm/wbp-agent/cluster.sh"

# record_set: "EPOCH MEMBERS" of vm1's lock record, read on node0.
record_set() {
    on 0 "$NODE record" > "$RUN/record.json" || fail "lock status"
    python3 -c 'import json, sys; r = json.load(open(sys.argv[1]))[0]["record"]; print(r["replica_epoch"], ",".join(map(str, r["replica_set"])))' "$RUN/record.json"
}

# expect_set WANT: vm1's lock record holds WANT ("EPOCH MEMBERS", members comma-separated).
expect_set() {
    set=$(record_set)
    echo "lock record: epoch and members $set"
    [ "$set" = "$1" ] || fail "the record holds '$set', expected '$1' (epoch, members)"
}

agents_up

step "up: the agent records the operator's placement, then the module runs it"
on 0 "$NODE up" || fail "up vm1"
expect_set "1 2,3"
on 0 "grep -q '^epoch 1 gen [0-9]* wanted 2 members 2 3$' $S/replicas" || fail "the module runs another set"

step "a member's link cut during writes: the agent writes the record without it, then the module"
on 0 "cd /tmp; rm -f \$PF_RUN_DIR/cut.json; setsid fio --name=cut --filename=/dev/pf-vm1 --rw=randwrite --bs=4k --iodepth=4 --ioengine=libaio --direct=1 --size=8M --verify=crc32c --verify_fatal=1 --randseed=21 --rate_iops=100 --output-format=json --output=\$PF_RUN_DIR/cut.json > /dev/null 2>&1 < /dev/null & echo started" || fail "fio"
# fio takes seconds to start under TCG: cut only once writes have reached both members.
on 0 "i=0; until awk '/^host 3 / { for (i = 1; i < NF; i++) if (\$i == \"writes\") n = \$(i + 1) } END { exit !(n >= 100) }' $S/replicas; do i=\$((i + 1)); [ \$i -lt 300 ] || exit 1; sleep 0.2; done; cat $S/replicas" || fail "no writes reached host 3 within 60 s"
cut 2
t0=$(date +%s)
on 0 "i=0; until [ \"\$(cat $S/policy)\" = wt ]; do i=\$((i + 1)); [ \$i -lt 300 ] || exit 1; sleep 0.2; done; cat $S/replicas" || fail "the volume did not go write-through within 60 s"
echo "write-through $(( $(date +%s) - t0 )) s after the cut"
expect_set "2 2"
on 0 "grep 'lost' \$PF_RUN_DIR/agent.log" || fail "the agent did not say what it changed"
on 0 "while pgrep -x fio > /dev/null; do sleep 1; done" || fail "waiting for fio"
python3 - "$RUN/node0/run/cut.json" <<'EOF' || fail "fio across the cut"
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
w, r = j["write"], j["read"]
print("across the cut:", w["total_ios"], "writes,", r["total_ios"], "verified, error", j["error"], "; longest write", int(w["clat_ns"]["max"] / 1e6), "ms")
sys.exit(0 if j["error"] == 0 and r["total_ios"] == w["total_ios"] > 0 else 1)
EOF

step "down and up while node2 is cut off: the set is placed on the peers that answer"
on 0 "$NODE down && $NODE up" || fail "down and up vm1 with node2 cut off"
expect_set "3 2"
on 0 "cat $S/policy | grep -qx wt && grep 'do not answer' \$PF_RUN_DIR/agent.log" || fail "vm1 does not run write-through, or the agent did not say why"
restore 2
on 0 "$NODE down && $NODE up" || fail "down and up vm1 with node2 back"
expect_set "4 2,3"
on 0 "cat $S/policy | grep -qx wbp" || fail "vm1 does not run wbp with both members back"
# The nodes as booted for the next scenario on this cluster: vm1 down (clean), agents and
# sanlock stopped, the SAN split removed, the module unloaded.
on 0 "$NODE down" || fail "down vm1 at the end"
for i in 0 1 2; do
    on $i "$NODE stop" || fail "node$i: stop"
done
echo "wbp-agent: ok"

# Scenario: online replay by a peer (cargo xtask test: cluster-wbp-peer-replay).
# test: nodes=3 order=95
#
# The agents of tests/vm/wbp-agent/node.sh on three nodes; node0 `up`s vm1 (wbp, replicas on
# node1 and node2) and writes 4 MiB of 4k random writes (verify state saved) with destaging
# paused, so that every acknowledged write is only on node0's flash and its members' replicas.
# node0 is killed. Nobody asks anything: once node0's lease can be taken, a member's agent
# adopts its replica, replays it to the SAN and records vm1 clean (online replay by a peer).
# Then the other member `up`s vm1: its own replica is obsolete (it takes its room, records
# dropped), its set is the member that replayed (never itself), whose slot of vm1 that member
# takes over at ATTACH; fio verifies, with node0's saved state, every write node0 acknowledged. (Run after cluster-wbp,
# which kills node0: node0 is booted again first.)
. "$PF_REPO/tests/vm/wbp-agent/cluster.sh"
running 0 || start_node 0 || fail "boot node0"
# field F of vm1's lock record (JSON), read on node I.
record() {
    on "$1" "$NODE record" > "$RUN/record.json" || fail "lock status on node$1"
    python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[0]["record"][sys.argv[2]])' "$RUN/record.json" "$2"
}
agents_up

step "node0 runs vm1 and acknowledges writes that only its flash and its members hold"
on 0 "$NODE up && echo 1 > $S/destage_paused" || fail "up vm1 on node0"
uuid=$(record 0 volume_uuid)
echo "vm1's uuid in its lock record: $uuid"
[ -n "$uuid" ] || fail "the record holds no volume uuid"
on 0 "rm -rf \$PF_RUN_DIR/state; mkdir -p \$PF_RUN_DIR/state; cd /tmp; fio --name=pr --filename=/dev/pf-vm1 --rw=randwrite --bs=4k --iodepth=4 --ioengine=libaio --direct=1 --size=4M --verify=crc32c --randseed=31 --aux-path=\$PF_RUN_DIR/state --verify_state_save=1 --do_verify=0 > pr.log 2>&1 || { cat pr.log; exit 1; }; grep -q 'err= 0' pr.log" || fail "fio on node0"
# The agent copies the last serial into the record every second.
i=0
until [ "$(record 0 pending_writes)" -gt 0 ]; do
    i=$((i + 1))
    [ $i -lt 30 ] || fail "the record does not show node0's pending writes"
    sleep 1
done
echo "pending writes in the record: $(record 0 pending_writes)"
kernel_log_clean 0
kill_node 0
t0=$(date +%s)
echo "node0 killed"

step "a member's agent replays its replica to the SAN, unasked"
# sanlock lets another host take node0's lease once node0 has been silent for
# host_dead_seconds (8 x io_timeout 2 s + 60 s).
i=0
until [ "$(record 1 state)" = clean ]; do
    i=$((i + 1))
    [ $i -lt 100 ] || fail "vm1 is not clean 300 s after node0 was killed: $(cat "$RUN/record.json")"
    sleep 3
done
echo "vm1 recorded clean $(( $(date +%s) - t0 )) s after node0 was killed, by host $(record 1 owner)"
on 1 "grep 'online replay by a peer' \$PF_RUN_DIR/agent.log" > "$RUN/said.txt"
on 2 "grep 'online replay by a peer' \$PF_RUN_DIR/agent.log" >> "$RUN/said.txt"
cat "$RUN/said.txt"
grep -q "replaying from this host's replica of host 1" "$RUN/said.txt" || fail "no member's agent says it replayed node0's writes"

# The other member runs vm1: its own replica is obsolete (it takes its room, records dropped),
# and its set is the member that replayed, whose slot of vm1 it takes over at ATTACH.
case "$(record 1 owner)" in
    node1) r=1 o=2 ;;
    node2) r=2 o=1 ;;
    *) fail "vm1 was replayed by $(record 1 owner), not by a member" ;;
esac
step "node$o (the member that did not replay) runs vm1: every write node0 acknowledged reads back"
on $o "$NODE up" || fail "up vm1 on node$o"
set=$(record $o replica_set)
echo "vm1's replica set on node$o: $set"
[ "$set" = "[$((r + 1))]" ] || fail "node$o placed vm1's replicas on $set (expected node$r alone: never itself)"
on $o "grep 'obsolete replica' \$PF_RUN_DIR/agent.log" || fail "node$o's agent did not take the room of its obsolete replica"
rm -rf "$RUN/node$o/run/state" && cp -r "$RUN/node0/run/state" "$RUN/node$o/run/state" || fail "copy the verify state"
on $o "cd /tmp; fio --name=pr --filename=/dev/pf-vm1 --rw=randwrite --bs=4k --iodepth=4 --ioengine=libaio --direct=1 --size=4M --verify=crc32c --randseed=31 --aux-path=\$PF_RUN_DIR/state --verify_only --verify_state_load=1 --verify_fatal=1 > verify.log 2>&1; rc=\$?; grep -E 'err=|read:' verify.log | head -3; [ \$rc = 0 ] && grep -q 'err= 0' verify.log && grep -q 'read: IOPS' verify.log" ||
    fail "fio verify_only of node0's acknowledged writes on node$o"
on $o "$NODE down" || fail "down vm1 on node$o"
for i in 1 2; do
    on $i "$NODE stop" || fail "node$i: stop"
done
echo "wbp-peer-replay: ok"

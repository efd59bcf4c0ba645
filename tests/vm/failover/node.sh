#!/bin/sh
# Guest side of the two-node failover scenario (driven by xtask/src/failover.rs on each node):
#   node.sh start NODE       modprobe, dm-linear SAN split (volume disk + lock datastore), the
#                            cluster file, a sanlock daemon (no watchdog) and `peerflash agent`
#   node.sh init             `peerflash lock init` (once, on one node)
#   node.sh write            format the cache, `peerflash up vm1`, pause destaging, fio writes
#                            (verify state saved in the shared run dir), show the lock record
#   node.sh refused          `peerflash up vm1 --wait-secs 0` must be refused, vm1 absent
#   node.sh up-bg            format the cache, `peerflash up vm1` in the background (it waits
#                            for the other node's replay)
#   node.sh wait-up SECS     wait for that `up` to finish and succeed
#   node.sh verify STATEDIR  fio verify_only of vm1 with another node's saved verify state
#   node.sh status           the lock record
. "$PF_REPO/tests/vm/lib.sh"
set -u
CFG=$PF_RUN_DIR/cluster.toml
export SANLOCK_RUN_DIR=/tmp/sanlock
export PEERFLASH_AGENT_SOCKET=/tmp/pf-agent.sock
LOCK_SECTORS=131072 # 64 MiB at the end of the SAN disk: the lock datastore
cd /tmp

job() {
    fio --name=failover --filename=/dev/pf-vm1 --rw=randwrite --bs=4k --iodepth=16 \
        --ioengine=libaio --direct=1 --size=32M --verify=crc32c --randseed=4242 "$@"
}

case $1 in
start)
    node=$2
    modprobe peerflash || fail "modprobe"
    san_split $LOCK_SECTORS
    cat > "$CFG" <<EOF
cluster = "failover"

[datastore]
device = "/dev/mapper/pf-locks"
size_mib = 64
io_timeout = 2

[[host]]
name = "node0"
address = "192.0.2.11:7790"
id = 1

[[host]]
name = "node1"
address = "192.0.2.12:7790"
id = 2

[[volume]]
name = "vm1"
backing = "/dev/mapper/pf-san"
policy = "wb"
lock_slot = 0
san_group = 3
cache = { node0 = "$PF_CACHE_DEV", node1 = "$PF_CACHE_DEV" }
EOF
    peerflash config check "$CFG" || fail "config check"
    sanlock_up "$node"
    ;;
agent)
    node=$2
    setsid peerflash agent --config "$CFG" --host "$node" > "$PF_RUN_DIR/agent.log" 2>&1 < /dev/null &
    echo "agent started"
    ;;
wait-agent)
    i=0
    while [ ! -S "$PEERFLASH_AGENT_SOCKET" ]; do
        i=$((i + 1))
        [ $i -lt "$2" ] || { cat "$PF_RUN_DIR/agent.log"; fail "agent not ready after $2 s"; }
        sleep 1
    done
    cat "$PF_RUN_DIR/agent.log"
    ;;
init)
    peerflash lock init --config "$CFG" || fail "lock init"
    ;;
write)
    peerflash format-cache "$PF_CACHE_DEV" --force > /dev/null || fail "format-cache"
    peerflash up vm1 --wait-secs 0 || fail "up vm1"
    same "$(cat /sys/block/pf-vm1/peerflash/san_group)" 3 "SAN group set by the agent"
    echo 1 > /sys/block/pf-vm1/peerflash/destage_paused
    mkdir -p "$PF_RUN_DIR/state"
    job --verify_state_save=1 --do_verify=0 --aux-path="$PF_RUN_DIR/state" > write.log 2>&1 ||
        { tail -20 write.log; fail "fio write"; }
    grep -E "write:" write.log | head -2
    sleep 2 # one agent tick: the record gets the last serial
    echo "dirty $(cat /sys/block/pf-vm1/peerflash/dirty_bytes) bytes"
    peerflash lock status --config "$CFG" vm1
    ;;
refused)
    expect_refusal 3 "" peerflash up vm1 --wait-secs 0
    [ ! -e /dev/pf-vm1 ] || fail "vm1 runs here while node0 holds its data"
    dd if=/dev/mapper/pf-san of=/dev/null bs=4k count=1 iflag=direct status=none ||
        fail "the SAN itself is readable"
    peerflash lock status --config "$CFG" vm1
    ;;
up-bg)
    rm -f "$PF_RUN_DIR/up.rc"
    peerflash format-cache "$PF_CACHE_DEV" --force > /dev/null || fail "format-cache"
    (peerflash up vm1 --wait-secs 900 > "$PF_RUN_DIR/up.log" 2>&1; echo $? > "$PF_RUN_DIR/up.rc") \
        < /dev/null > /dev/null 2>&1 &
    echo "up started"
    ;;
wait-up)
    i=0
    while [ ! -e "$PF_RUN_DIR/up.rc" ]; do
        i=$((i + 1)); [ $i -lt "$2" ] || { cat "$PF_RUN_DIR/up.log"; fail "up not done after $2 s"; }
        sleep 1
    done
    cat "$PF_RUN_DIR/up.log"
    same "$(cat "$PF_RUN_DIR/up.rc")" 0 "up exit status"
    ;;
verify)
    job --verify_only --verify_state_load=1 --verify_fatal=1 --aux-path="$2" > verify.log 2>&1
    rc=$?
    grep -E 'err=|read:' verify.log | head -3
    [ $rc -eq 0 ] || { tail -20 verify.log; fail "fio verify_only"; }
    grep -q "err= 0" verify.log || fail "fio reported errors"
    peerflash lock status --config "$CFG" vm1
    ;;
status)
    peerflash lock status --config "$CFG" vm1
    ;;
*)
    fail "unknown step $1"
    ;;
esac

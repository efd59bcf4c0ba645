#!/bin/sh
# Guest side of the cluster-wbp-agent scenario (tests/vm/scenarios/wbp-agent.sh), one step per
# call on one node:
#   node.sh start NODE     modprobe, dm-linear SAN split (vm1's disk + a 64 MiB lock datastore),
#                          the cache device formatted, the cluster file with [peer] (a root-only
#                          secret file from the node's run directory) and a sanlock daemon
#   node.sh init           `peerflash lock init` (once, on one node)
#   node.sh agent NODE     `peerflash agent` (which configures and starts the peer transport)
#   node.sh up             `peerflash up vm1` (wbp, replicas on node1 and node2)
#   node.sh down           `peerflash down vm1`
#   node.sh record         vm1's lock record as JSON
#   node.sh stop           the agent and sanlock stopped, the SAN split removed, the module
#                          unloaded (vm1 must be down)
. "$PF_REPO/tests/vm/lib.sh"
set -u
CFG=$PF_RUN_DIR/cluster.toml
export SANLOCK_RUN_DIR=/tmp/sanlock
export PEERFLASH_AGENT_SOCKET=/tmp/pf-agent.sock
LOCK_SECTORS=131072
cd /tmp

case $1 in
start)
    node=$2
    modprobe peerflash || fail "modprobe"
    san_split $LOCK_SECTORS
    peerflash format-cache "$PF_CACHE_DEV" --force > /dev/null || fail "format-cache"
    mkdir -p /etc/peerflash
    cp "$PF_RUN_DIR/secret" /etc/peerflash/cluster.secret
    chmod 600 /etc/peerflash/cluster.secret
    cat > "$CFG" <<EOF
cluster = "wbp-agent"

[datastore]
device = "/dev/mapper/pf-locks"
size_mib = 64
io_timeout = 2

[peer]
cluster_id = "5eed0000000000000000000000000002"
secret_file = "/etc/peerflash/cluster.secret"
replica_cache = "$PF_CACHE_DEV"

[[host]]
name = "node0"
address = "192.0.2.11:7790"
id = 1

[[host]]
name = "node1"
address = "192.0.2.12:7790"
id = 2

[[host]]
name = "node2"
address = "192.0.2.13:7790"
id = 3

[[volume]]
name = "vm1"
backing = "/dev/mapper/pf-san"
policy = "wbp"
replicas = 2
peers = ["node1", "node2"]
lock_slot = 0
cache = { node0 = "$PF_CACHE_DEV", node1 = "$PF_CACHE_DEV", node2 = "$PF_CACHE_DEV" }
EOF
    peerflash config check "$CFG" > /dev/null || fail "config check"
    sanlock_up "$node"
    ;;
agent)
    node=$2
    setsid peerflash agent --config "$CFG" --host "$node" > "$PF_RUN_DIR/agent.log" 2>&1 < /dev/null &
    i=0
    while [ ! -S "$PEERFLASH_AGENT_SOCKET" ] || [ -z "$(cat /sys/kernel/config/peerflash/listen)" ]; do
        i=$((i + 1))
        [ $i -lt 120 ] || { cat "$PF_RUN_DIR/agent.log"; fail "agent not ready after 120 s"; }
        sleep 1
    done
    echo "$node: agent up, listening on $(cat /sys/kernel/config/peerflash/listen)"
    ;;
init)
    peerflash lock init --config "$CFG" || fail "lock init"
    ;;
up)
    peerflash up vm1 --wait-secs 0 || { cat "$PF_RUN_DIR/agent.log"; fail "up vm1"; }
    # Three TCG VMs on two host cores: twice the default, so a slow member is never taken for
    # a lost one (as in cluster-wbp).
    echo 4000 > /sys/block/pf-vm1/peerflash/peer_timeout_ms
    cat /sys/block/pf-vm1/peerflash/policy /sys/block/pf-vm1/peerflash/replicas
    ;;
down)
    peerflash down vm1 || { cat "$PF_RUN_DIR/agent.log"; fail "down vm1"; }
    ;;
record)
    peerflash lock status --config "$CFG" vm1 --output json
    ;;
stop)
    # vm1 is down and there is no watchdog: nothing to wait for (sanlock does not leave while
    # it holds a lockspace).
    pkill -9 -x peerflash
    pkill -9 -x sanlock
    i=0
    while pgrep -x peerflash > /dev/null || pgrep -x sanlock > /dev/null; do
        i=$((i + 1)); [ $i -lt 100 ] || fail "the agent or sanlock did not stop"; sleep 0.2
    done
    dmsetup remove pf-san && dmsetup remove pf-locks || fail "remove the SAN split"
    echo > /sys/kernel/config/peerflash/listen
    rmmod peerflash || fail "rmmod peerflash: $(ls /sys/kernel/config/peerflash)"
    echo "stopped"
    ;;
*)
    fail "unknown step $1"
    ;;
esac

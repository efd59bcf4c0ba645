#!/bin/sh
# Sourced by the host-side scenarios that run tests/vm/wbp-agent/node.sh on three nodes
# (wbp-agent.sh, wbp-peer-replay.sh), after tests/vm/cluster-lib.sh.
NODE="sh $PF_REPO/tests/vm/wbp-agent/node.sh"
RUN=$PF_CLUSTER_DIR
S=/sys/block/pf-vm1/peerflash

# agents_up: a fresh cluster secret in every node's run directory; each node started (module,
# SAN split, cache device, configuration, sanlock), the lockspace initialised, every agent up.
agents_up() {
    od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$RUN/secret"
    for i in 0 1 2; do cp "$RUN/secret" "$RUN/node$i/run/secret" || fail "secret for node$i"; done
    for i in 0 1 2; do
        on $i "$NODE start node$i" || fail "node$i: start"
    done
    on 0 "$NODE init" || fail "lock init"
    for i in 0 1 2; do
        on $i "$NODE agent node$i" || fail "node$i: agent"
    done
}

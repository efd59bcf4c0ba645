#!/bin/sh
# Runs on every cluster node (started through guest-init.sh): executes the command files the host
# drops into the node's run directory (shared over 9p), so a test can drive nodes mid-scenario
# even while their network is cut. Protocol (see xtask/src/cluster.rs):
#   host writes cmd-N.sh (atomically, by rename); the agent runs it and leaves out-N, then rc-N.
#   host writes `stop`: the agent exits.
set -u
ctl=${PF_RUN_DIR:?}
echo up > "$ctl/ready"
while [ ! -e "$ctl/stop" ]; do
    for f in "$ctl"/cmd-*.sh; do
        [ -e "$f" ] || continue
        id=${f##*/cmd-}
        id=${id%.sh}
        mv "$f" "$ctl/run-$id.sh"
        sh "$ctl/run-$id.sh" > "$ctl/out-$id.tmp" 2>&1
        echo $? > "$ctl/rc-$id.tmp"
        mv "$ctl/out-$id.tmp" "$ctl/out-$id"
        mv "$ctl/rc-$id.tmp" "$ctl/rc-$id"
    done
    sleep 0.2
done

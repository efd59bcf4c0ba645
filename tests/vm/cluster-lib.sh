#!/bin/sh
# Sourced by the host-side scenario scripts of `cargo xtask cluster --script FILE`
# (xtask/src/scenario.rs): each function asks xtask to act on the cluster through a request file
# in $PF_CTL and waits for its answer. Nodes are numbered from 0.
_pf_seq=0
_pf_req() {
    _pf_seq=$((_pf_seq + 1))
    printf '%s\n' "$*" > "$PF_CTL/tmp-req"
    mv "$PF_CTL/tmp-req" "$PF_CTL/req-$_pf_seq"
    while [ ! -e "$PF_CTL/rc-$_pf_seq" ]; do sleep 0.1; done
    cat "$PF_CTL/out-$_pf_seq"
    return "$(cat "$PF_CTL/rc-$_pf_seq")"
}
# on I CMD...: runs CMD (one sh script) on node I; its output and exit status.
on() {
    n=$1
    shift
    printf '%s\n' "$*" > "$PF_CTL/body-$((_pf_seq + 1))"
    _pf_req on "$n"
}
kill_node() { _pf_req kill "$1"; }
start_node() { _pf_req start "$1"; }
freeze() { _pf_req freeze "$1"; }
thaw() { _pf_req thaw "$1"; }
cut() { _pf_req cut "$1"; }
restore() { _pf_req restore "$1"; }
netem() { n=$1; shift; _pf_req netem "$n" "$@"; }
node_ip() { echo "192.0.2.$((11 + $1))"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "--- $*"; }

#!/bin/sh
# Sourced by the host-side scenario scripts of `cargo xtask cluster --script FILE`
# (xtask/src/scenario.rs): each function asks xtask to act on the cluster through a request file
# in $PF_CTL and waits for its answer. Nodes are numbered from 0.
# The request number lives in a file, not a variable, so that requests made in subshells
# (`out=$(on 1 ...)`) are numbered too. Requests are one at a time (the script runs them in order).
_pf_next() {
    n=$(($(cat "$PF_CTL/seq" 2>/dev/null || echo 0) + 1))
    echo $n > "$PF_CTL/seq"
    echo $n
}
# _pf_req N VERB ARGS...: request N; prints its output, returns its exit status.
_pf_req() {
    id=$1
    shift
    printf '%s\n' "$*" > "$PF_CTL/tmp-req"
    mv "$PF_CTL/tmp-req" "$PF_CTL/req-$id"
    while [ ! -e "$PF_CTL/rc-$id" ]; do sleep 0.1; done
    cat "$PF_CTL/out-$id"
    return "$(cat "$PF_CTL/rc-$id")"
}
# on I CMD...: runs CMD (one sh script) on node I; its output and exit status.
on() {
    n=$1
    shift
    id=$(_pf_next)
    printf '%s\n' "$*" > "$PF_CTL/body-$id"
    _pf_req $id on "$n"
}
kill_node() { _pf_req "$(_pf_next)" kill "$1"; }
start_node() { _pf_req "$(_pf_next)" start "$1"; }
running() { _pf_req "$(_pf_next)" running "$1"; }
freeze() { _pf_req "$(_pf_next)" freeze "$1"; }
thaw() { _pf_req "$(_pf_next)" thaw "$1"; }
cut() { _pf_req "$(_pf_next)" cut "$1"; }
restore() { _pf_req "$(_pf_next)" restore "$1"; }
netem() { n=$1; shift; _pf_req "$(_pf_next)" netem "$n" "$@"; }
node_ip() { echo "192.0.2.$((11 + $1))"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
# kernel_log_clean I: node I's kernel log so far shows no warning, bug or lockdep report (for a
# node about to be killed: the harness checks the log of a node only when it powers off cleanly).
kernel_log_clean() {
    _kl=$(on "$1" "dmesg | grep -E 'WARNING:|BUG:|Oops|possible recursive locking|possible circular locking|inconsistent lock state|INFO: task|general protection fault'")
    [ -z "$_kl" ] || fail "node$1's kernel log before it is killed: $_kl"
}
step() { echo "--- $*"; }
# peers_up N [CMD]: loads the module on nodes 0..N-1 and makes node I host I+1 of one cluster
# (its id, a secret fresh for the run, the host table), listening on its address; CMD (sh, run
# in /sys/kernel/config/peerflash) follows on each node.
peers_up() {
    _pu_n=$1
    _pu_cmd=${2:-true}
    _pu_secret=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
    _pu_hosts=""
    _pu_i=0
    while [ $_pu_i -lt $_pu_n ]; do
        _pu_hosts="$_pu_hosts$((_pu_i + 1)) $(node_ip $_pu_i):7790\n"
        _pu_i=$((_pu_i + 1))
    done
    _pu_i=0
    while [ $_pu_i -lt $_pu_n ]; do
        on $_pu_i "modprobe peerflash && cd /sys/kernel/config/peerflash && echo $((_pu_i + 1)) > host_id && echo 0f1e2d3c4b5a69788796a5b4c3d2e1f0 > cluster_id && echo $_pu_secret > secret && printf '$_pu_hosts' > hosts && echo $(node_ip $_pu_i):7790 > listen && $_pu_cmd" ||
            fail "node$_pu_i: peer setup"
        _pu_i=$((_pu_i + 1))
    done
}

#!/bin/sh
# Helpers for the VM test cases (sourced). A case passes when it exits 0.
# fail WHY: the case fails; the kernel log's last lines go with it (a failure in CI is often
# seen only in the output's tail).
fail() {
    echo "FAIL: $*" >&2
    if [ -r /dev/kmsg ]; then
        echo "kernel log, last lines:" >&2
        dmesg 2>/dev/null | tail -15 | sed 's/^/  | /' >&2
    fi
    exit 1
}
step() { echo "--- [$(cut -d" " -f1 /proc/uptime) s] $*"; }
same() { [ "$1" = "$2" ] || fail "$3: got '$1', expected '$2'"; echo "ok: $3 = $1"; }
# stat_of VOLUME KEY: a counter from the volume's stats attribute.
stat_of() { awk -v k="$2" '$1 == k { print $2 }' "/sys/kernel/config/peerflash/$1/stats"; }
# expect_refusal CODE TEXT CMD...: CMD must fail with exit status CODE and say TEXT.
expect_refusal() {
    code=$1 want=$2
    shift 2
    out=$("$@" 2>&1)
    rc=$?
    [ "$rc" -eq "$code" ] || fail "'$*' exited $rc (expected $code): $out"
    case "$out" in
        *"$want"*) echo "refused as expected: $out" ;;
        *) fail "'$*' said '$out', expected it to say '$want'" ;;
    esac
}
# expect_write_refused FILE VALUE: writing VALUE to a configfs attribute must fail.
expect_write_refused() {
    if (printf '%s\n' "$2" > "$1") 2>/dev/null; then fail "writing '$2' to $1 was accepted"; fi
    echo "refused as expected: '$2' > $1"
}
# san_split LOCK_SECTORS: dm-linear devices over the SAN disk: pf-san (the volumes' disk) and
# pf-locks (its last LOCK_SECTORS sectors, the lock datastore).
san_split() {
    sz=$(blockdev --getsz "$PF_SAN_DEV")
    dmsetup create pf-san --table "0 $((sz - $1)) linear $PF_SAN_DEV 0" || fail "dm pf-san"
    dmsetup create pf-locks --table "0 $1 linear $PF_SAN_DEV $((sz - $1))" || fail "dm pf-locks"
    udevadm settle
}
# sanlock_up NODE: a sanlock daemon (no watchdog) named NODE, its socket in $SANLOCK_RUN_DIR.
sanlock_up() {
    mkdir -p "$SANLOCK_RUN_DIR"
    SANLOCK_PRIVILEGED=0 setsid sanlock daemon -D -w 0 -h 0 -l 0 -U root -G root -e "$1" \
        > "$PF_RUN_DIR/sanlock.log" 2>&1 < /dev/null &
    i=0
    while [ ! -S "$SANLOCK_RUN_DIR/sanlock.sock" ]; do
        i=$((i + 1)); [ $i -lt 100 ] || fail "sanlock daemon did not start"; sleep 0.2
    done
    echo "sanlock daemon up"
}

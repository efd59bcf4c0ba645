#!/bin/sh
# Helpers for the VM test cases (sourced). A case passes when it exits 0.
fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "--- $*"; }
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

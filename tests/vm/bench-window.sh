#!/bin/sh
# One instruction-counting window of `cargo xtask bench --cluster --count-insns`, run in the
# background on a node: bench-window.sh DELAY SECS NAME DEV sleeps DELAY seconds, then marks the
# start (pf-mark 1), waits SECS seconds, marks the end (pf-mark 2) and appends
# "NAME WRITES0 WRITES1 T0 T1" (DEV's completed writes and the guest's clock at both ends) to
# $PF_RUN_DIR/bench/windows.txt. Timed inside the guest: a busy node answers its control commands
# late, so the window does not wait for one.
set -u
delay=$1 secs=$2 name=$3 dev=$4
stat=/sys/class/block/$(basename "$(readlink -f "$dev")")/stat
sleep "$delay"
w0=$(awk '{ print $5 }' "$stat"); t0=$(date +%s.%N)
pf-mark 1
sleep "$secs"
pf-mark 2
w1=$(awk '{ print $5 }' "$stat"); t1=$(date +%s.%N)
echo "$name $w0 $w1 $t0 $t1" >> "$PF_RUN_DIR/bench/windows.txt"

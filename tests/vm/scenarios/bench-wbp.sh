# The cluster benchmark (cargo xtask bench --cluster; xtask/src/bench_cluster.rs reads what it
# leaves in node0's run directory): on node0, 4k random writes (fio, libaio, direct) at QD1 and
# QD16 on
#   nvme   the raw NVMe cache device
#   san    the SAN disk behind dm-delay (3 ms per write, reads undelayed)
#   wt, wb, wbp1 (replica on host 2), wbp2 (replicas on hosts 2 and 3): peerflash volumes over
#          the delayed SAN
# beside the 4 KiB TCP round trip from node0 to node1 (a userspace echo over the same network).
# fio's JSON goes to $PF_RUN_DIR/bench/CONFIG-qdN.json of node0, the round trip to
# $PF_RUN_DIR/bench/rtt.txt (mean and p50 in microseconds). PF_BENCH_SECS: seconds per run.
SECS=${PF_BENCH_SECS:-8}
# PF_BENCH_MARK=1 (`--cluster --count-insns`): every node's QEMU counts guest instructions (a TCG
# plugin); each run gets a window on every node, marked by pf-mark, with the writes of the
# node's device (node0: the device under test; node1, node2: their cache devices, which take the
# replica records) and the guest's clock at both ends in $PF_RUN_DIR/bench/windows.txt.
MARK=${PF_BENCH_MARK:-0}
peers_up 3
on_all() { for i in 0 1 2; do on $i "$1" || fail "node$i: $1"; done; }
# A window on node I (tests/vm/bench-window.sh, in the background): window I DELAY NAME DEV.
window() { on $1 "setsid sh \$PF_REPO/tests/vm/bench-window.sh $2 $((SECS - 5)) $3 $4 > /dev/null 2>&1 < /dev/null & echo started" > /dev/null || fail "node$1: window"; }
windows_done=0
if [ "$MARK" = 1 ]; then
    [ "$SECS" -ge 10 ] || fail "counting instructions needs PF_BENCH_SECS of at least 10"
    # Every node: the marker's own cost (two back to back), then an idle 2 s.
    on_all "mkdir -p \$PF_RUN_DIR/bench && rm -f \$PF_RUN_DIR/bench/windows.txt && pf-mark 1 && pf-mark 2 && pf-mark 1 && sleep 2 && pf-mark 2"
fi
for i in 1 2; do
    on $i "peerflash format-cache \$PF_CACHE_DEV --force > /dev/null && echo \$PF_CACHE_DEV > /sys/kernel/config/peerflash/replica_cache" || fail "node$i: replica cache"
done

# run CONFIG DEV: fio at QD1 and QD16 on DEV (node0); with MARK=1, fio in the background and a
# window on every node from 3 s into the run to 2 s before its end.
run() {
    if [ "$MARK" = 1 ]; then
        for qd in 1 16; do
            # The members' windows are started first, while they are idle, and timed to open
            # with node0's, 3 s into fio's run; each lasts SECS - 5 s.
            window 1 4 "$1-qd$qd" "\$PF_CACHE_DEV"
            window 2 4 "$1-qd$qd" "\$PF_CACHE_DEV"
            on 0 "setsid fio --name=$1-qd$qd --filename=$2 --rw=randwrite --bs=4k --ioengine=libaio --direct=1 --iodepth=$qd --size=1G --runtime=$SECS --time_based --ramp_time=1 --randrepeat=0 --norandommap --lat_percentiles=1 --output-format=json --output=\$PF_RUN_DIR/bench/$1-qd$qd.json > /dev/null 2>&1 < /dev/null & echo started" > /dev/null || fail "fio on $1 at QD$qd"
            window 0 3 "$1-qd$qd" "$2"
            on 0 "while pgrep -x fio > /dev/null; do sleep 0.5; done; sed -n 's/.*\"iops\" : \\([0-9]*\\).*/\\1/p' \$PF_RUN_DIR/bench/$1-qd$qd.json | sed -n 2p" > /tmp/pf-bench-iops.$$ || fail "fio on $1 at QD$qd"
            echo "$1 QD$qd: $(cat /tmp/pf-bench-iops.$$) write IOPS"
            windows_done=$((windows_done + 1))
            for i in 0 1 2; do
                on $i "i=0; until [ \"\$(grep -c . \$PF_RUN_DIR/bench/windows.txt 2>/dev/null)\" = $windows_done ]; do i=\$((i + 1)); [ \$i -lt 120 ] || exit 1; sleep 0.5; done" || fail "node$i: the window of $1 at QD$qd did not end"
            done
        done
        rm -f /tmp/pf-bench-iops.$$
        return
    fi
    for qd in 1 16; do
        on 0 "fio --name=$1-qd$qd --filename=$2 --rw=randwrite --bs=4k --ioengine=libaio --direct=1 --iodepth=$qd --size=1G --runtime=$SECS --time_based --ramp_time=1 --randrepeat=0 --norandommap --lat_percentiles=1 --output-format=json --output=\$PF_RUN_DIR/bench/$1-qd$qd.json > /dev/null 2>&1 && sed -n 's/.*\"iops\" : \\([0-9]*\\).*/\\1/p' \$PF_RUN_DIR/bench/$1-qd$qd.json | sed -n 2p" > /tmp/pf-bench-iops.$$ || fail "fio on $1 at QD$qd"
        echo "$1 QD$qd: $(cat /tmp/pf-bench-iops.$$) write IOPS"
    done
    rm -f /tmp/pf-bench-iops.$$
}

on 0 "rm -rf \$PF_RUN_DIR/bench && mkdir -p \$PF_RUN_DIR/bench && modprobe dm-delay && dmsetup create pf-bench-san --table \"0 \$(blockdev --getsz \$PF_SAN_DEV) delay \$PF_SAN_DEV 0 0 \$PF_SAN_DEV 0 3\" && udevadm settle" || fail "node0: dm-delay"

step "4 KiB TCP round trip node0 -> node1"
on 1 "setsid python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((\"$(node_ip 1)\", 7800)); s.listen(1)
c, _ = s.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while True:
    b = b\"\"
    while len(b) < 4096:
        x = c.recv(4096 - len(b))
        if not x: raise SystemExit
        b += x
    c.sendall(b)
' > /dev/null 2>&1 < /dev/null & sleep 2; echo echo server up" || fail "echo server"
on 0 "python3 -c '
import socket, time
c = socket.create_connection((\"$(node_ip 1)\", 7800)); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
m = bytes(4096); t = []
for i in range(1100):
    a = time.perf_counter(); c.sendall(m); n = 0
    while n < 4096: n += len(c.recv(4096 - n))
    t.append(time.perf_counter() - a)
t = sorted(t[100:]); print(int(sum(t) / len(t) * 1e6), int(t[len(t) // 2] * 1e6))
' > \$PF_RUN_DIR/bench/rtt.txt && cat \$PF_RUN_DIR/bench/rtt.txt" || fail "round trip"

step "the modules' own round trip node0 -> node1: 200 authenticated pings (a 56-byte frame each way)"
on 0 "echo '2 200' > /sys/kernel/config/peerflash/probe && cat /sys/kernel/config/peerflash/probe | tee \$PF_RUN_DIR/bench/probe.txt" || fail "probe"

step "raw NVMe"
run nvme "\$PF_CACHE_DEV"
step "raw SAN (dm-delay 3 ms writes)"
run san /dev/mapper/pf-bench-san

# A fresh cache for each configuration; the replicas of earlier runs stay on the members' devices
# (another uuid each time), so their replica caches hold four volumes' regions at most.
for config in wt wb wbp1 wbp2; do
    case $config in
        wt) args="--policy wt" ;;
        wb) args="--policy wb" ;;
        wbp1) args="--policy wbp --replicas '1 1 1 2'" ;;
        wbp2) args="--policy wbp --replicas '1 1 2 2 3'" ;;
    esac
    step "peerflash $config"
    on 0 "peerflash format-cache \$PF_CACHE_DEV --force > /dev/null && peerflash create bench --backing /dev/mapper/pf-bench-san --cache \$PF_CACHE_DEV --cache-mib 112 $args && cat /sys/block/pf-bench/peerflash/policy" || fail "create $config"
    run "$config" /dev/pf-bench
    on 0 "S=/sys/block/pf-bench/peerflash; echo \"$config: state \$(cat \$S/state), dirty \$(cat \$S/dirty_bytes) bytes, write waits \$(cat \$S/write_waits)\"; cat \$S/replicas; peerflash remove bench" || fail "remove $config"
done
echo "bench done"

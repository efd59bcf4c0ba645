#!/bin/sh
# `cargo xtask bench`, guest side: 4k random writes (fio, libaio, direct) at QD1 and QD16 on the
# same two devices, one configuration after the other in this one VM run:
#   san        the SAN disk behind dm-delay (3 ms per write, reads undelayed)
#   nvme       the raw NVMe cache device
#   pf-wt      peerflash wt volume (NVMe cache over the delayed SAN)
#   pf-wb      peerflash wb volume
#   pf-wb-lazy peerflash wb volume with destage_delay_ms 30000 and the largest batches: no
#              destaging during the run, as dm-writecache (writeback from 50% full) and bcache
#              (writeback_delay 30 s) do
#   writecache dm-writecache (ssd mode) over the delayed SAN
#   bcache     bcache in writeback mode over the delayed SAN
# Each run leaves fio's JSON in $PF_RUN_DIR/bench/CONFIG-qdN.json; xtask/src/bench.rs turns them
# into the table, the JSON summary and the chart. PF_BENCH_SECS sets the seconds per run.
. "$PF_REPO/tests/vm/lib.sh"
set -u
SAN=$PF_SAN_DEV
NVME=$PF_CACHE_DEV
SECS=${PF_BENCH_SECS:-8}
PROFILE=${PF_BENCH_PROFILE:-0}
# PF_BENCH_MARK=1 (`--count-insns`): pf-mark at the ends of each window, for the QEMU plugin that
# counts guest instructions.
MARK=${PF_BENCH_MARK:-0}
[ "$SECS" -ge 4 ] || fail "PF_BENCH_SECS must be at least 4"
if [ "$PROFILE" = 1 ]; then command -v perf > /dev/null || fail "PF_BENCH_PROFILE=1 needs perf"; fi
OUT=$PF_RUN_DIR/bench
DELAYED=/dev/mapper/pf-bench-san
rm -rf "$OUT"
mkdir -p "$OUT"
cd /tmp

# ticks: busy and all jiffies of every CPU so far (/proc/stat: user nice system idle iowait irq
# softirq steal).
ticks() { awk '$1 == "cpu" { print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9 }' /proc/stat; }
# writes DEV: writes completed on DEV so far.
writes() { awk '{ print $5 }' "/sys/class/block/$(basename "$(readlink -f "$1")")/stat"; }
# mark 1|2: the start or end of a window for the instruction counts (with PF_BENCH_MARK=1).
mark() { if [ "$MARK" = 1 ]; then pf-mark "$1" || fail "pf-mark $1"; fi; }
# run CONFIG DEV: fio at QD1 and QD16 on DEV. In a window from 2 s into the run to 1 s before its
# end: the CPU time of the whole guest and the writes DEV completed, for the CPU cost of a write
# ($OUT/CONFIG-qdN.cpu: busy ticks, all ticks, ticks per second, writes); with PF_BENCH_PROFILE=1
# a perf profile of that window too ($OUT/CONFIG-qdN.prof: samples per symbol).
run() {
    for qd in 1 16; do
        fio --name="$1-qd$qd" --filename="$2" --rw=randwrite --bs=4k --ioengine=libaio \
            --direct=1 --iodepth=$qd --size=1G --runtime="$SECS" --time_based --ramp_time=1 \
            --randrepeat=0 --norandommap --lat_percentiles=1 --output-format=json \
            --output="$OUT/$1-qd$qd.json" > /dev/null 2>&1 &
        fio_pid=$!
        sleep 2
        t0=$(ticks); mark 1; w0=$(writes "$2")
        if [ "$PROFILE" = 1 ]; then
            perf record -a -e cpu-clock -F 1000 -o /tmp/bench-prof.data -- sleep $((SECS - 2)) \
                > /dev/null 2>&1 || fail "perf record"
        else
            sleep $((SECS - 2))
        fi
        w1=$(writes "$2"); mark 2; t1=$(ticks)
        wait $fio_pid || fail "fio on $1 at QD$qd"
        echo "$t0 $t1 $w0 $w1" | awk -v hz="$(getconf CLK_TCK)" \
            '{ print $3 - $1, $4 - $2, hz, $6 - $5 }' > "$OUT/$1-qd$qd.cpu"
        if [ "$PROFILE" = 1 ]; then
            perf report -i /tmp/bench-prof.data --sort sym --stdio 2> /dev/null |
                awk '/%/ && !/^#/ { print $1, $NF }' > "$OUT/$1-qd$qd.prof"
        fi
        iops=$(sed -n 's/.*"iops" : \([0-9]*\).*/\1/p' "$OUT/$1-qd$qd.json" | sed -n 2p)
        echo "$1 QD$qd: ${iops:-?} write IOPS"
    done
}
# wipe DEV: forget whatever the previous configuration left on DEV.
wipe() {
    wipefs -a -q "$1" 2>/dev/null
    dd if=/dev/zero of="$1" bs=1M count=4 oflag=direct 2>/dev/null || fail "cannot zero $1"
}

if [ "$MARK" = 1 ]; then
    # The windows xtask reads first: the marker's own cost, then an idle 2 s.
    mark 1; mark 2
    mark 1; sleep 2; mark 2
fi
modprobe dm-delay || fail "modprobe dm-delay"
modprobe dm-writecache || fail "modprobe dm-writecache"
modprobe bcache || fail "modprobe bcache"
modprobe peerflash || fail "modprobe peerflash"
sectors=$(blockdev --getsz "$SAN")
# Reads undelayed, writes 3 ms later: a SAN whose writes are slow next to flash.
dmsetup create pf-bench-san --table "0 $sectors delay $SAN 0 0 $SAN 0 3" || fail "dm-delay"
udevadm settle

step "raw SAN (dm-delay 3 ms writes)"
run san "$DELAYED"

step "raw NVMe"
run nvme "$NVME"

for config in wt wb wb-lazy; do
    policy=${config%-lazy}
    step "peerflash $config"
    wipe "$NVME"
    peerflash format-cache "$NVME" --force > /dev/null || fail "format-cache"
    peerflash create bench --backing "$DELAYED" --cache "$NVME" --policy $policy ||
        fail "create $policy volume"
    S=/sys/block/pf-bench/peerflash
    if [ "$config" = wb-lazy ]; then
        # Batches may grow to 512 MiB: only the 30 s delay starts one.
        echo 30000 > $S/destage_delay_ms
        echo 65536 > $S/batch_records
        echo 1048576 > $S/batch_sectors
    fi
    run pf-$config /dev/pf-bench
    echo "pf-$config: state $(cat $S/state), dirty $(cat $S/dirty_bytes) bytes, destaged $(cat $S/destaged_bytes) bytes, write waits $(cat $S/write_waits)"
    peerflash remove bench || fail "remove $config volume"
done

step "dm-writecache (ssd mode)"
wipe "$NVME"
dmsetup create pf-bench-wc --table "0 $sectors writecache s $DELAYED $NVME 4096 0" ||
    fail "dm-writecache"
udevadm settle
run writecache /dev/mapper/pf-bench-wc
# udev may still be probing the device fio just closed (EBUSY): settle and retry.
i=0
until udevadm settle && dmsetup remove pf-bench-wc 2>/dev/null; do
    i=$((i + 1)); [ $i -lt 20 ] || fail "remove dm-writecache"; sleep 1
done

step "bcache (writeback)"
wipe "$NVME"
wipe "$DELAYED"
make-bcache --wipe-bcache --writeback -C "$NVME" -B "$DELAYED" > /dev/null || fail "make-bcache"
for d in "$NVME" "$DELAYED"; do echo "$d" > /sys/fs/bcache/register 2>/dev/null; done
udevadm settle
i=0
while [ ! -b /dev/bcache0 ] && [ $i -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
[ -b /dev/bcache0 ] || fail "bcache0 did not appear"
B=/sys/block/bcache0/bcache
same "$(cat $B/cache_mode | grep -o '\[[a-z-]*\]')" "[writeback]" "bcache cache mode"
# Never bypass the cache because it looks congested: measure bcache's own write path.
for f in /sys/fs/bcache/*/congested_read_threshold_us /sys/fs/bcache/*/congested_write_threshold_us; do
    echo 0 > "$f"
done
run bcache /dev/bcache0
echo "bcache: state $(cat $B/state), dirty $(cat $B/dirty_data)"
echo "bench done"

#!/bin/sh
# `cargo xtask bench --sustained`, guest side: sustained 4k random writes that outrun the SAN.
# The SAN disk is throttled by QEMU (PF_SUSTAINED_SAN_IOPS write IOPS, xtask sets it) and sits
# behind dm-delay (3 ms per write), so destaging is slower than flash. Each cache gets a share
# of PF_SUSTAINED_SHARE_MIB of the NVMe device; fio writes 3x that share at QD1 and at QD16 with
# per-second IOPS and latency logs, a sampler records the cache's fill every second, and after
# fio the time until the cache is clean is measured. In one run, one after the other:
#   san         the raw SAN (throttled, delayed), PF_SUSTAINED_SAN_SECS per depth
#   pf-wb       peerflash wb with flow control (its defaults)
#   writecache  dm-writecache (ssd mode) on a share-sized piece of the NVMe device
#   bcache      bcache writeback on a share-sized piece of the NVMe device
# Files in $PF_RUN_DIR/sustained: CONFIG-qdN.json (fio), CONFIG-qdN_iops.1.log and
# CONFIG-qdN_lat.1.log (fio's per-second logs), CONFIG-qdN.fill ("ms percent"), CONFIG-qdN.clean
# (ms to clean, dirty bytes at the end of the writes, dirty bytes left after at most 5 min),
# CONFIG-qdN.counters (peerflash's; dm-writecache's writes that waited on its free list).
. "$PF_REPO/tests/vm/lib.sh"
set -u
SAN=$PF_SAN_DEV
NVME=$PF_CACHE_DEV
SHARE_MIB=${PF_SUSTAINED_SHARE_MIB:-64}
SAN_SECS=${PF_SUSTAINED_SAN_SECS:-20}
OUT=$PF_RUN_DIR/sustained
DELAYED=/dev/mapper/pf-sus-san
rm -rf "$OUT"
mkdir -p "$OUT"
cd /tmp

modprobe dm-delay || fail "modprobe dm-delay"
modprobe dm-writecache || fail "modprobe dm-writecache"
modprobe bcache || fail "modprobe bcache"
modprobe peerflash || fail "modprobe peerflash"
sectors=$(blockdev --getsz "$SAN")
dmsetup create pf-sus-san --table "0 $sectors delay $SAN 0 0 $SAN 0 3" || fail "dm-delay"
udevadm settle
PIECE=/dev/mapper/pf-sus-nvme
now_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }

# fill_of CONFIG: percent of the cache's share in use now.
fill_of() {
    case $1 in
        pf-wb) awk -v s=$((SHARE_MIB * 1048576)) '{ printf "%.2f\n", $1 * 100 / s }' /sys/block/pf-sus/peerflash/dirty_bytes ;;
        # status: error, blocks, free blocks, blocks under writeback, ...
        writecache) dmsetup status pf-sus-wc | awk '{ printf "%.2f\n", ($5 - $6) * 100 / $5 }' ;;
        bcache) cat /sys/fs/bcache/*-*/cache_available_percent | awk '{ printf "%d\n", 100 - $1 }' ;;
    esac
}
# dirty_of CONFIG: bytes not yet on the SAN.
dirty_of() {
    case $1 in
        pf-wb) cat /sys/block/pf-sus/peerflash/dirty_bytes ;;
        # blocks in use (written back blocks go back to the free list)
        writecache) dmsetup status pf-sus-wc | awk '{ print ($5 - $6) * 4096 }' ;;
        bcache) awk '{ v = $1; u = substr(v, length(v)); n = v + 0;
                       if (u == "k") n *= 1024; else if (u == "M") n *= 1048576; else if (u == "G") n *= 1073741824;
                       printf "%d\n", n }' /sys/block/bcache0/bcache/dirty_data ;;
    esac
}
# clean CONFIG: starts the cache's writeback of everything now.
clean() {
    case $1 in
        pf-wb) echo 1 > /sys/block/pf-sus/peerflash/destage_now ;;
        # writes everything back before it returns
        writecache) dmsetup message pf-sus-wc 0 flush ;;
        bcache) echo 0 > /sys/block/bcache0/bcache/writeback_percent ;;
    esac
}

# write CONFIG DEV QD: fio writes 3x the share at QD, sampling the fill each second, then the
# time until the cache is clean.
write() {
    base="$OUT/$1-qd$3"
    (
        t0=$(now_ms)
        while [ ! -e /tmp/fio-done ]; do
            echo "$(($(now_ms) - t0)) $(fill_of "$1")" >> "$base.fill"
            sleep 1
        done
    ) &
    sampler=$!
    rm -f /tmp/fio-done
    fio --name="$1-qd$3" --filename="$2" --rw=randwrite --bs=4k --ioengine=libaio --direct=1 \
        --iodepth="$3" --size=1G --io_size=$((3 * SHARE_MIB))m --randrepeat=0 --norandommap \
        --lat_percentiles=1 --write_iops_log="$base" --write_lat_log="$base" \
        --log_avg_msec=1000 --log_max_value=1 --output-format=json --output="$base.json" \
        > /dev/null 2>&1 || fail "fio on $1 at QD$3"
    touch /tmp/fio-done
    wait $sampler
    dirty=$(dirty_of "$1")
    t0=$(now_ms)
    clean "$1"
    i=0
    # At most 5 min: a cache still dirty then is reported with what it had left.
    until [ "$(dirty_of "$1")" -eq 0 ] || [ $i -ge 3000 ]; do
        i=$((i + 1))
        sleep 0.1
    done
    echo "$(($(now_ms) - t0)) $dirty $(dirty_of "$1")" > "$base.clean"
    iops=$(sed -n 's/.*"iops" : \([0-9]*\).*/\1/p' "$base.json" | sed -n 2p)
    echo "$1 QD$3: ${iops:-?} write IOPS, $dirty dirty bytes at the end, clean in $(cut -d' ' -f1 "$base.clean") ms"
}

step "raw SAN (throttled, dm-delay 3 ms writes)"
for qd in 1 16; do
    base="$OUT/san-qd$qd"
    fio --name="san-qd$qd" --filename="$DELAYED" --rw=randwrite --bs=4k --ioengine=libaio \
        --direct=1 --iodepth=$qd --size=1G --runtime="$SAN_SECS" --time_based --randrepeat=0 \
        --norandommap --lat_percentiles=1 --write_iops_log="$base" --write_lat_log="$base" \
        --log_avg_msec=1000 --log_max_value=1 --output-format=json --output="$base.json" \
        > /dev/null 2>&1 || fail "fio on the SAN at QD$qd"
    echo "san QD$qd: $(sed -n 's/.*"iops" : \([0-9]*\).*/\1/p' "$base.json" | sed -n 2p) write IOPS"
done

for qd in 1 16; do
    step "peerflash wb, QD$qd"
    wipefs -a -q "$NVME" 2>/dev/null
    peerflash format-cache "$NVME" --force > /dev/null || fail "format-cache"
    peerflash create sus --backing "$DELAYED" --cache "$NVME" --cache-mib "$SHARE_MIB" --policy wb > /dev/null ||
        fail "create the wb volume"
    S=/sys/block/pf-sus/peerflash
    write pf-wb /dev/pf-sus $qd
    for f in write_waits paced_writes paced_us flow_writethroughs destage_bw destaged_bytes destage_batches; do
        echo "$f $(cat $S/$f)"
    done > "$OUT/pf-wb-qd$qd.counters"
    cat "$OUT/pf-wb-qd$qd.counters" | tr '\n' ' '; echo
    peerflash remove sus || fail "remove the wb volume"
done

# A share-sized piece of the NVMe device for dm-writecache and bcache (peerflash's share is its
# --cache-mib on the whole device, which must not be held by another user).
dmsetup create pf-sus-nvme --table "0 $((SHARE_MIB * 2048)) linear $NVME 0" || fail "dm-linear"
udevadm settle
for qd in 1 16; do
    step "dm-writecache (ssd mode), QD$qd"
    dd if=/dev/zero of=$PIECE bs=1M count=4 oflag=direct 2>/dev/null
    dmsetup create pf-sus-wc --table "0 $sectors writecache s $DELAYED $PIECE 4096 0" || fail "dm-writecache"
    udevadm settle
    write writecache /dev/mapper/pf-sus-wc $qd
    # status field 12: writes that waited on the free list (dm-writecache's write waits)
    dmsetup status pf-sus-wc | awk '{ print "freelist_waits", $15 }' > "$OUT/writecache-qd$qd.counters"
    i=0
    until udevadm settle && dmsetup remove pf-sus-wc 2>/dev/null; do
        i=$((i + 1)); [ $i -lt 20 ] || fail "remove dm-writecache"; sleep 1
    done
done

for qd in 1 16; do
    step "bcache (writeback), QD$qd"
    wipefs -a -q $PIECE 2>/dev/null
    dd if=/dev/zero of=$PIECE bs=1M count=4 oflag=direct 2>/dev/null
    dd if=/dev/zero of=$DELAYED bs=1M count=4 oflag=direct 2>/dev/null
    # 64 KiB buckets: 1024 of them in the share (bcache wants many more than 128).
    make-bcache --wipe-bcache --writeback --bucket 64k -C $PIECE -B "$DELAYED" > /dev/null || fail "make-bcache"
    udevadm settle
    for d in $PIECE "$DELAYED"; do echo "$d" > /sys/fs/bcache/register 2>/dev/null || echo "register $d: already or refused"; done
    udevadm settle
    i=0
    while ! ls -d /sys/fs/bcache/*-* > /dev/null 2>&1 && [ $i -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
    ls -d /sys/fs/bcache/*-* > /dev/null 2>&1 || { dmesg | grep -i bcache | tail -5; fail "bcache's cache set did not register"; }
    i=0
    while [ ! -b /dev/bcache0 ] && [ $i -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
    [ -b /dev/bcache0 ] || fail "bcache0 did not appear"
    same "$(grep -o '\[[a-z-]*\]' /sys/block/bcache0/bcache/cache_mode)" "[writeback]" "bcache cache mode"
    same "$(cat /sys/block/bcache0/bcache/state)" clean "bcache attached to its cache set"
    for f in /sys/fs/bcache/*-*/congested_read_threshold_us /sys/fs/bcache/*-*/congested_write_threshold_us; do
        [ -e "$f" ] && echo 0 > "$f"
    done
    write bcache /dev/bcache0 $qd
    # Take bcache apart for the next run.
    echo 1 > /sys/block/bcache0/bcache/stop
    for s in /sys/fs/bcache/*-*; do [ -e "$s/stop" ] && echo 1 > "$s/stop"; done
    i=0
    while [ -b /dev/bcache0 ] && [ $i -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
    sleep 1
done
echo "sustained bench done"

#!/bin/sh
# The module's SAN-write fence (sysfs lease_ms / fenced) and the agent's persistent leases.
#  1. sysfs alone: past the pushed lease nothing more reaches the SAN: write-through writes wait,
#     the destager stops; write-back writes to flash go on; a renewal releases everything. A
#     lease running out in the middle of a slow batch (SAN writes 1 s late, one at a time)
#     abandons the batch: no SAN write is started after the fence, the records stay dirty.
#  2. with sanlock and the agent: the agent pushes its lease into the module; frozen (SIGSTOP),
#     it dies of its own fence timer and the module fences itself at the same deadline (no
#     destaging after it while writes to flash go on); a restarted agent takes the lease back
#     (this host's orphan), the fence lifts, `down` puts exactly the volume's data on the SAN.
. "$PF_REPO/tests/vm/lib.sh"
set -u
cd /tmp
SAN=$PF_SAN_DEV
CACHE=$PF_CACHE_DEV

modprobe peerflash || fail "modprobe peerflash"
peerflash format-cache "$CACHE" --force > /dev/null || fail "format-cache"

S=/sys/block/pf-f/peerflash
val() { cat "$S/$1"; }
# san_region MIB_OFFSET MIB_COUNT: that part of the SAN, read directly.
san_region() { dd if="$SAN" bs=1M skip="$1" count="$2" iflag=direct status=none; }

step "defaults and bad values"
peerflash create f --backing "$SAN" --cache "$CACHE" --policy wt || fail "create"
same "$(val lease_ms)" 0 "no lease enforced by default"
same "$(val fenced)" 0 "not fenced without a lease"
expect_write_refused "$S/lease_ms" 3600001
expect_write_refused "$S/lease_ms" soon
expect_write_refused "$S/lease_ms" -5
dd if=/dev/urandom of=/tmp/a bs=1M count=4 status=none

step "write-through writes wait for the lease"
echo 1000 > "$S/lease_ms"
sleep 1.5
same "$(val fenced)" 1 "fenced once the lease ran out"
same "$(val lease_ms)" 0 "no time left"
# Background jobs never hold the case's output open (the VM ends when it closes), and are
# stopped when the case ends, whichever way.
trap 'touch /tmp/stop-writer; kill ${WRITER:-} ${AGENT:-} ${ddpid:-} 2>/dev/null' EXIT
dd if=/tmp/a of=/dev/pf-f bs=4k count=1 oflag=direct status=none > /dev/null 2>&1 < /dev/null &
ddpid=$!
sleep 3
kill -0 $ddpid 2>/dev/null || fail "a write-through write completed while fenced"
san_region 0 1 | cmp -s -n 4096 - /tmp/a && fail "the SAN got a write-through write while fenced"
echo 60000 > "$S/lease_ms"
same "$(val fenced)" 0 "not fenced after the renewal"
wait $ddpid || fail "the held write failed after the renewal"
san_region 0 1 | cmp -n 4096 - /tmp/a || fail "the SAN lacks the write-through write"

step "a lease running out stops destaging; write-back writes go on"
peerflash set-policy f wb > /dev/null || fail "set-policy wb"
echo 1 > "$S/destage_paused"
dd if=/tmp/a of=/dev/pf-f bs=1M seek=4 count=4 oflag=direct status=none || fail "wb write"
echo 1000 > "$S/lease_ms"
sleep 1.5
same "$(val fenced)" 1 "fenced once the lease ran out"
before=$(val destaged_bytes)
echo 0 > "$S/destage_paused"
echo 1 > "$S/destage_now"
sleep 3
same "$(val destaged_bytes)" "$before" "bytes destaged while fenced (none more)"
[ "$(val dirty_bytes)" -ge 4194304 ] || fail "dirty data left the cache while fenced"
san_region 4 4 | cmp -s - /tmp/a && fail "the SAN got the data while fenced"
timeout 60 dd if=/tmp/a of=/dev/pf-f bs=1M seek=12 count=1 oflag=direct status=none ||
    fail "a write-back write while fenced"
echo 60000 > "$S/lease_ms"
peerflash flush f --timeout 300 > /dev/null || fail "flush after the renewal"
san_region 4 4 | cmp - /tmp/a || fail "the SAN differs after the renewal and flush"
echo 0 > "$S/lease_ms"
same "$(val fenced)" 0 "not enforced again"
peerflash remove f > /dev/null || fail "remove"

step "a lease running out in the middle of a batch: no SAN write is started after it"
# The SAN behind dm-delay (writes 1 s late), one write at a time: a batch of 64 scattered
# blocks takes a minute; the lease runs out a few seconds in.
sz=$(blockdev --getsz "$SAN")
dmsetup create pf-slow --table "0 $sz delay $SAN 0 0 $SAN 0 1000" || fail "dm-delay"
udevadm settle
# Writes completed on the SAN disk itself: a write the destager starts reaches it 1 s later.
SANB=$(basename "$SAN")
san_writes() { awk '{ print $5 }' "/sys/block/$SANB/stat"; }
peerflash format-cache "$CACHE" --force > /dev/null || fail "format-cache"
peerflash create d --backing /dev/mapper/pf-slow --cache "$CACHE" --policy wb || fail "create d"
D=/sys/block/pf-d/peerflash
echo 1 > "$D/destage_paused"
echo 1 > "$D/destage_concurrency"
i=0
while [ $i -lt 64 ]; do
    dd if=/tmp/a of=/dev/pf-d bs=4k seek=$((i * 16)) skip=$i count=1 oflag=direct status=none ||
        fail "wb write $i"
    i=$((i + 1))
done
same "$(cat $D/dirty_bytes)" 262144 "dirty bytes before the batch"
w0=$(san_writes)
echo 4500 > "$D/lease_ms"
echo 0 > "$D/destage_paused"
echo 1 > "$D/destage_now"
i=0
while [ "$(cat $D/fenced)" != 1 ]; do
    i=$((i + 1)); [ $i -lt 100 ] || fail "never fenced"; sleep 0.1
done
# Every write started before the deadline is on the SAN disk 1 s after it.
sleep 1.3
at=$(san_writes)
echo "fenced; $((at - w0)) SAN writes of the batch 1.3 s later"
[ "$at" -gt "$w0" ] || fail "the batch had not started when the lease ran out (the test proves nothing)"
sleep 4
after=$(san_writes)
[ "$after" -eq "$at" ] || fail "$((after - at)) SAN writes were started after the lease ran out"
echo "ok: no SAN write in the next 4 s fenced"
[ "$(cat $D/destaged_bytes)" -eq 0 ] || fail "a batch was completed across the fence"
same "$(cat $D/fenced_batches)" 1 "batches abandoned at the fence"
[ "$(cat $D/dirty_bytes)" -eq 262144 ] || fail "records of the abandoned batch left the dirty set"
# Renewed for a minute; 32 writes at a time, the batch takes seconds (one at a time it would
# outlast the renewal and be abandoned again).
echo 32 > "$D/destage_concurrency"
echo 60000 > "$D/lease_ms"
peerflash flush d --timeout 120 > /dev/null || fail "flush after the renewal"
i=0
while [ $i -lt 64 ]; do
    dd if=/dev/mapper/pf-slow bs=4k skip=$((i * 16)) count=1 iflag=direct status=none |
        cmp -s -n 4096 - /tmp/a 0 $((i * 4096)) || fail "the SAN lacks block $i after the flush"
    i=$((i + 1))
done
echo "ok: the SAN holds all 64 blocks after the renewal"
echo 0 > "$D/lease_ms"
peerflash remove d > /dev/null || fail "remove d"
dmsetup remove pf-slow || fail "remove dm-delay"

step "the agent's lease in the module; the agent frozen past its deadline"
LOCK_SECTORS=131072 # 64 MiB at the end of the SAN disk: the lock datastore
sz=$(blockdev --getsz "$SAN")
dmsetup create pf-san --table "0 $((sz - LOCK_SECTORS)) linear $SAN 0" || fail "dm pf-san"
dmsetup create pf-locks --table "0 $LOCK_SECTORS linear $SAN $((sz - LOCK_SECTORS))" || fail "dm pf-locks"
udevadm settle
CFG=/tmp/cluster.toml
cat > "$CFG" <<EOF
cluster = "fence"

[datastore]
device = "/dev/mapper/pf-locks"
size_mib = 64
io_timeout = 2

[[host]]
name = "h1"
address = "192.0.2.11:7790"
id = 1

[[volume]]
name = "vm1"
backing = "/dev/mapper/pf-san"
policy = "wb"
lock_slot = 0
cache = { h1 = "$CACHE" }
EOF
peerflash config check "$CFG" > /dev/null || fail "config check"
export SANLOCK_RUN_DIR=/tmp/sanlock PEERFLASH_AGENT_SOCKET=/tmp/pf-agent.sock
mkdir -p "$SANLOCK_RUN_DIR"
SANLOCK_PRIVILEGED=0 setsid sanlock daemon -D -w 0 -h 0 -l 0 -U root -G root -e h1 \
    > /tmp/sanlock.log 2>&1 < /dev/null &
i=0
while [ ! -S "$SANLOCK_RUN_DIR/sanlock.sock" ]; do
    i=$((i + 1)); [ $i -lt 100 ] || fail "sanlock daemon did not start"; sleep 0.2
done
peerflash lock init --config "$CFG" > /dev/null || fail "lock init"
peerflash format-cache "$CACHE" --force > /dev/null || fail "format-cache"
start_agent() {
    rm -f "$PEERFLASH_AGENT_SOCKET"
    peerflash agent --config "$CFG" --host h1 > "/tmp/agent$1.log" 2>&1 < /dev/null &
    AGENT=$!
    i=0
    while [ ! -S "$PEERFLASH_AGENT_SOCKET" ]; do
        i=$((i + 1)); [ $i -lt 120 ] || { cat "/tmp/agent$1.log"; fail "agent not ready"; }
        sleep 1
    done
}
# alive PID: the process exists and is not a zombie.
alive() { [ -e "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }
start_agent 1
peerflash up vm1 --wait-secs 0 || fail "up vm1"
S=/sys/block/pf-vm1/peerflash
sleep 2
ms=$(val lease_ms)
echo "lease pushed by the agent: $ms ms left"
# sanlock io_timeout 2: host_dead 76 s, the fence margin 6 s: 70 s after the host's last renewal
# as its daemon reports it (under emulation that report can be several seconds old).
[ "$ms" -gt 40000 ] && [ "$ms" -le 70000 ] || fail "lease_ms $ms outside (40000, 70000]"
same "$(val fenced)" 0 "not fenced under a live agent"

# A writer keeps writing to flash all along (64 KiB each 0.2 s over the first 16 MiB).
(
    n=0
    while [ ! -e /tmp/stop-writer ]; do
        dd if=/dev/urandom of=/dev/pf-vm1 bs=64k seek=$((n % 256)) count=1 oflag=direct \
            status=none || { echo "writer: write $n failed" > /tmp/writer.err; exit 1; }
        n=$((n + 1))
        sleep 0.2
    done
) > /dev/null 2>&1 < /dev/null &
WRITER=$!
sleep 3
ms=$(val lease_ms)
t0=$(cut -d' ' -f1 /proc/uptime)
kill -STOP $AGENT
echo "agent frozen at uptime $t0 with $ms ms of lease left"
t_fence=""
t_dead=""
i=0
while [ -z "$t_fence" ] || [ -z "$t_dead" ]; do
    i=$((i + 1)); [ $i -lt 400 ] || fail "no fence 100 s after the agent froze (fenced=$(val fenced))"
    now=$(cut -d' ' -f1 /proc/uptime)
    [ -z "$t_fence" ] && [ "$(val fenced)" = 1 ] && t_fence=$now
    [ -z "$t_dead" ] && ! alive $AGENT && t_dead=$now
    sleep 0.25
done
wait $AGENT 2>/dev/null
# calc EXPR: awk arithmetic (1/0 for comparisons).
calc() { awk "BEGIN { print ($1) }"; }
fence_after=$(calc "$t_fence - $t0")
dead_after=$(calc "$t_dead - $t0")
echo "module fenced ${fence_after} s after the freeze; agent dead (own timer) after ${dead_after} s"
# The deadline is at most 70 s after the last renewal the agent saw (before the freeze); it is
# the one the module showed at the freeze unless the agent saw a renewal in the last instant
# before it: one renewal period (4 s) later, or a little more when that renewal came late
# (under emulation sanlock's renewals drift by a second or more: seen 5.6 s once, with the
# agent's own timer agreeing to the sample). One push per second, sampling every 0.25 s.
lo=$(calc "$ms / 1000 - 1.5")
hi=$(calc "$ms / 1000 + 6.5")
[ "$(calc "$fence_after >= $lo && $fence_after <= $hi && $fence_after <= 71")" = 1 ] ||
    fail "fenced ${fence_after} s after the freeze, expected $lo..$hi s (and at most 71 s)"
# The module is never fenced later than the agent dies (give or take a push's latency and the
# sampling); it may be earlier by what the agent saw after its last push: a renewal report
# (one renewal period, 4 s) within its last push interval (1 s).
[ "$(calc "$fence_after <= $dead_after + 1 && $dead_after - $fence_after <= 6")" = 1 ] ||
    fail "the module fenced at $fence_after s, the agent died at $dead_after s"
sleep 1
d0=$(val destaged_bytes)
w0=$(stat_of vm1 write_bytes)
sleep 5
same "$(val destaged_bytes)" "$d0" "bytes destaged after the fence (none more)"
[ "$(stat_of vm1 write_bytes)" -gt "$w0" ] || fail "writes to flash stopped while fenced"
[ -e /tmp/writer.err ] && fail "$(cat /tmp/writer.err)"
touch /tmp/stop-writer
wait $WRITER || fail "the writer failed"
dd if=/dev/pf-vm1 of=/tmp/vol bs=1M count=16 iflag=direct status=none || fail "read vm1"

step "the restarted agent takes its lease back"
start_agent 2
cat /tmp/agent2.log
grep -q "still runs here: taking its lease back" /tmp/agent2.log || fail "the agent did not adopt vm1"
sleep 2
same "$(val fenced)" 0 "not fenced under the new agent"
# As at the start: up to 70 s after the last renewal the daemon reported.
[ "$(val lease_ms)" -gt 40000 ] || fail "lease_ms $(val lease_ms) after the adoption"
peerflash down vm1 || fail "down vm1"
[ ! -e /dev/pf-vm1 ] || fail "vm1 still exists after down"
dd if=/dev/mapper/pf-san bs=1M count=16 iflag=direct status=none | cmp - /tmp/vol ||
    fail "the SAN differs from what the volume held"
peerflash lock status --config "$CFG" vm1 | tee /tmp/status
grep -q "state: clean" /tmp/status || fail "vm1's record is not clean after down"
kill $AGENT
wait $AGENT 2>/dev/null # 143: it was killed
echo "lease-fence: every check passed"

#!/bin/sh
# The peer transport and its authentication, on loopback in one VM: the module listens as host 1
# (127.0.0.1), pf-wire (a userspace peer on the core's codec) plays hosts 2 and 3 (127.0.0.2/3).
#  - the listener needs host id, cluster id and secret; the secret reads back only as "set";
#  - a peer with the secret completes the handshake and gets authenticated pings answered;
#  - the module dials a peer (probe): handshake from its side, the round trip measured;
#  - refused, with nothing answered: a wrong secret, an unknown host, a known host from another
#    address, a replayed handshake, the listener's own proof reflected, a ping with one byte
#    flipped, a ping replayed; junk connections (rate-limited) crash nothing, leak no memory,
#    and a genuine peer is served afterwards;
#  - replicas: ATTACH is refused without a replica cache device; with one, a primary's writes
#    (pf-wire as host 2) land in a replica slot in the on-flash format (`peerflash inspect`: the
#    primary's uuid and serials, origin 2, checksums valid), a re-attach finds the same slot by
#    (origin, uuid) and goes on after its records, a checkpoint is persisted and leaves only the
#    records after it dirty (one of another epoch is stale: not persisted, not acknowledged, the
#    connection ends), another host's replica of the same uuid gets its own slot, a local
#    volume of the same name never attaches to a replica slot, and a write flipped in transit
#    cuts the connection with nothing written;
#  - the secret appears in no attribute and no kernel log line; stopping the listener ends the
#    served connections and the module unloads.
. "$PF_REPO/tests/vm/lib.sh"
set -u
CFS=/sys/kernel/config/peerflash
ps() { awk -v k="$1" '$1 == k { print $2 }' "$CFS/peer_stats"; }
CLUSTER=00112233445566778899aabbccddeeff
SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
umask 077
echo "$SECRET" > /tmp/pf-secret
WRONG=/tmp/pf-wrong
od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > $WRONG
W="pf-wire --cluster $CLUSTER --secret-file /tmp/pf-secret"
ip link set lo up

modprobe peerflash || fail "modprobe peerflash"
step "the listener needs an identity; bad values are refused"
expect_write_refused $CFS/listen 127.0.0.1:7790
expect_write_refused $CFS/host_id 0
expect_write_refused $CFS/cluster_id 1234
expect_write_refused $CFS/secret 00
expect_write_refused $CFS/secret "$(printf '0%.0s' $(seq 64))"
expect_write_refused $CFS/hosts "1 127.0.0.1"
same "$(cat $CFS/secret)" unset "secret before it is set"
echo 1 > $CFS/host_id || fail "host_id"
echo $CLUSTER > $CFS/cluster_id || fail "cluster_id"
cat /tmp/pf-secret > $CFS/secret || fail "secret"
printf '1 127.0.0.1:7790\n2 127.0.0.2:7791\n3 127.0.0.3:7792\n' > $CFS/hosts || fail "hosts"
same "$(cat $CFS/secret)" set "secret once set"
same "$(cat $CFS/cluster_id)" $CLUSTER "cluster_id"
same "$(cat $CFS/hosts | wc -l)" 3 "hosts"
expect_write_refused $CFS/listen 127.0.0.1:0
echo 127.0.0.1:7790 > $CFS/listen || fail "listen"
same "$(cat $CFS/listen)" 127.0.0.1:7790 "listen"
expect_write_refused $CFS/host_id 5

step "a peer with the secret: handshake and authenticated pings"
out=$($W --me 2 ping --to 127.0.0.1:7790 --server 1 --from 127.0.0.2 --count 200) || fail "ping: $out"
echo "$out"
same "$(ps pings_answered)" 200 "pings answered"
same "$(ps handshakes)" 1 "handshakes"
same "$(ps auth_failures)" 0 "auth failures"

step "the module dials a peer and measures the round trip"
$W --me 2 serve --listen 127.0.0.2:7791 --client 1 --client-addr 127.0.0.1 --connections 1 > /tmp/serve.log 2>&1 &
srv=$!
sleep 1
echo "2 200" > $CFS/probe || fail "probe of host 2"
wait $srv || fail "the userspace peer failed: $(cat /tmp/serve.log)"
cat /tmp/serve.log
grep -q "served host 1: 200 pings" /tmp/serve.log || fail "the peer did not see 200 pings"
echo "probe: $(cat $CFS/probe)"
case "$(cat $CFS/probe)" in "pings 200 mean_us "*) ;; *) fail "probe result: $(cat $CFS/probe)" ;; esac
expect_write_refused $CFS/probe "3 10"
expect_write_refused $CFS/probe "9 10"
step "the helper shows the transport, and refuses a probe of a host that does not answer"
peerflash peers || fail "peerflash peers"
peerflash peers --output json > /tmp/peers.json || fail "peerflash peers --output json"
python3 -c "import json; d = json.load(open('/tmp/peers.json')); assert d['host_id'] == 1 and d['listen'] == '127.0.0.1:7790' and d['secret'] == 'set' and d['counters']['pings_answered'] == '200', d" || fail "peers json: $(cat /tmp/peers.json)"
expect_refusal 2 "the probe of host 3 failed" peerflash probe 3 --count 2

# attack KIND COUNTER FROM PF-WIRE-ARGS...: the attack must be refused and move COUNTER, and no
# ping is answered beyond the EXTRA genuine ones the attack starts with.
attack() {
    kind=$1 counter=$2 from=$3
    shift 3
    before=$(ps $counter)
    answered=$(ps pings_answered)
    out=$("$@" attack --to 127.0.0.1:7790 --server 1 --from $from --kind $kind) || fail "$kind: $out"
    echo "$kind: $out"
    [ "$(ps $counter)" -gt "$before" ] || fail "$kind: $counter did not move"
    same "$(ps pings_answered)" $((answered + ${EXTRA:-0})) "$kind: pings answered"
    echo "last refusal: $(awk '$1 == "last_refusal" { $1 = ""; print }' $CFS/peer_stats)"
}
step "refused: a wrong secret"
attack wrong-secret auth_failures 127.0.0.2 pf-wire --cluster $CLUSTER --secret-file $WRONG --me 2
step "refused: an unknown host id (from a host's address)"
attack impostor auth_failures 127.0.0.2 $W --me 9
step "closed unread: a connection from an address that is no host's"
attack impostor strangers 127.0.0.9 $W --me 2
step "refused: a known host id from another host's address"
attack impostor auth_failures 127.0.0.2 $W --me 3
step "refused: a replayed handshake"
attack replay auth_failures 127.0.0.2 $W --me 2
step "refused: the listener's proof reflected as the client's"
attack reflect auth_failures 127.0.0.2 $W --me 2
step "refused: a ping with one byte flipped (after one genuine ping)"
EXTRA=1 attack flip frames_refused 127.0.0.2 $W --me 2
step "refused: a ping replayed (after two genuine pings)"
EXTRA=2 attack replay-frame frames_refused 127.0.0.2 $W --me 2

step "junk connections: no crash, no memory growth, then a genuine peer is served"
sync; echo 3 > /proc/sys/vm/drop_caches
slab0=$(awk '/^Slab:/ { print $2 }' /proc/meminfo)
out=$($W --me 2 attack --to 127.0.0.1:7790 --server 1 --kind junk --count 2000 --from 127.0.0.2) || fail "junk: $out"
echo "$out"
sleep 3
sync; echo 3 > /proc/sys/vm/drop_caches
slab1=$(awk '/^Slab:/ { print $2 }' /proc/meminfo)
echo "slab: $slab0 kB before, $slab1 kB after; accepted $(ps accepted), rate_limited $(ps rate_limited), auth_failures $(ps auth_failures)"
[ "$slab1" -lt $((slab0 + 2048)) ] || fail "slab grew by $((slab1 - slab0)) kB over the junk"
[ "$(ps rate_limited)" -gt 0 ] || fail "no junk connection was rate-limited"
out=$($W --me 2 ping --to 127.0.0.1:7790 --server 1 --from 127.0.0.2 --count 10) || fail "ping after the junk: $out"
same "$(ps served)" 0 "connections served after the clients left"

step "replicas: ATTACH is refused while this host holds no replicas"
U=0123456789abcdef0123456789abcdef
SZ=$(blockdev --getsz "$PF_SAN_DEV")
R="--to 127.0.0.1:7790 --server 1 --uuid $U --volume-sectors $SZ"
out=$($W --me 2 replicate $R --from 127.0.0.2 --count 1 2>&1) && fail "a replica attached without a replica cache: $out"
echo "$out"
case "$out" in *"errno -19"*) ;; *) fail "expected ENODEV: $out" ;; esac
expect_write_refused $CFS/replica_cache relative/path
peerflash format-cache "$PF_CACHE_DEV" --force > /dev/null || fail "format-cache"
echo "$PF_CACHE_DEV" > $CFS/replica_cache || fail "replica_cache"
same "$(cat $CFS/replica_cache)" "$PF_CACHE_DEV" "replica_cache"
# replica_check ORIGIN RECORDS LAST DIRTY CHECKPOINT VOLUMES: what inspect finds in ORIGIN's slot
replica_check() {
    peerflash inspect "$PF_CACHE_DEV" --output json > /tmp/insp.json || fail "inspect"
    python3 - "$U" "$@" <<'PY' || fail "inspect of the replica: $(cat /tmp/insp.json)"
import json, sys
u, origin, records, last, dirty, cp, volumes = sys.argv[1], *map(int, sys.argv[2:])
d = json.load(open('/tmp/insp.json'))
assert len(d['volumes']) == volumes, ('volumes', len(d['volumes']))
v = [v for v in d['volumes'] if v['origin'] == origin]
assert len(v) == 1, ('slots of origin', origin, v)
v = v[0]
got = (v['uuid'].replace('-', ''), v['records'], v['last_serial'], v['dirty_records'], v['checkpoint'], v['torn'], v['invalid'])
want = (u, records, last, dirty, cp, 0, 0)
assert got == want, (got, want)
print('replica of host %d: %d records, last serial %d, %d dirty after checkpoint %d' % (origin, records, last, dirty, cp))
PY
}
step "replicas: a primary's writes land in a replica slot of this host's cache device"
out=$($W --me 2 replicate $R --from 127.0.0.2 --count 40) || fail "replicate: $out"
echo "$out"
same "$(ps replica_writes)" 40 "replica writes"
same "$(ps replicas_attached)" 1 "replicas attached"
replica_check 2 40 40 40 0 1
peerflash inspect "$PF_CACHE_DEV" | grep -q "replica of host 2's volume, epoch 1" || fail "human inspect shows no replica"
step "replicas: found again by origin and uuid; a checkpoint leaves only what follows it dirty"
out=$($W --me 2 replicate $R --from 127.0.0.2 --first 41 --count 10 --checkpoint 30) || fail "replicate again: $out"
echo "$out"
replica_check 2 50 50 20 30 1
same "$(ps replica_checkpoints)" 1 "replica checkpoints"
step "refused: a stale checkpoint (another epoch) is neither persisted nor acknowledged"
out=$($W --me 2 replicate $R --from 127.0.0.2 --first 51 --count 0 --checkpoint 45 --checkpoint-epoch 0) || fail "stale checkpoint: $out"
echo "$out"
replica_check 2 50 50 20 30 1
same "$(ps replica_checkpoints)" 1 "replica checkpoints after the stale one"
step "replicas: another host's volume of the same uuid has its own slot"
out=$($W --me 3 replicate $R --from 127.0.0.3 --count 2) || fail "replicate from host 3: $out"
replica_check 3 2 2 2 0 2
step "replicas: a local volume of the replica's name never attaches to the replica slot"
peerflash create pf-wire-volume --backing "$PF_SAN_DEV" --cache "$PF_CACHE_DEV" --policy wb --cache-mib 8 > /dev/null || fail "create a local volume"
peerflash remove pf-wire-volume > /dev/null || fail "remove the local volume"
replica_check 2 50 50 20 30 3
step "refused: a replica write flipped in transit cuts the connection, nothing written"
before=$(ps frames_refused)
out=$($W --me 2 replicate $R --from 127.0.0.2 --first 51 --count 3 --flip) || fail "flip: $out"
echo "$out"
[ "$(ps frames_refused)" -gt "$before" ] || fail "the flipped write was not refused"
replica_check 2 52 52 22 30 3
sleep 1
same "$(ps served)" 0 "connections served after the primaries left"

step "a replica adopted when its primary's flash is gone: its records after the checkpoint replayed to the SAN"
out=$(peerflash create lost --backing "$PF_SAN_DEV" --cache "$PF_CACHE_DEV" --adopt-replica 9:$U 2>&1) && fail "adopted a replica that does not exist: $out"
case "$out" in *"no replica slot"*) echo "refused as expected: $out" ;; *) fail "adopt of no replica: $out" ;; esac
dd if=/dev/zero of="$PF_SAN_DEV" bs=1M count=64 oflag=direct status=none
peerflash create lost --backing "$PF_SAN_DEV" --cache "$PF_CACHE_DEV" --adopt-replica 2:$U > /dev/null || fail "adopt the replica"
dmesg | grep "cache slot" | tail -2
peerflash flush lost --timeout 60 || fail "flush of the adopted replica"
same "$(cat /sys/block/pf-lost/peerflash/destaged_bytes)" $((22 * 4096)) "bytes the replay destaged"
peerflash remove lost > /dev/null || fail "remove"
echo 3 > /proc/sys/vm/drop_caches
python3 - "$PF_SAN_DEV" "$SZ" <<'PY' || fail "the SAN does not hold the replica's writes"
import sys
dev, vs = sys.argv[1], int(sys.argv[2])
f = open(dev, 'rb', buffering=0)
bad = []
for serial in range(1, 53):
    lba = (serial * 8 * 3) % (vs - 8)
    lba -= lba % 8
    f.seek(lba * 512)
    got = f.read(4096)
    want = bytes(((serial * 31 + i // 512 * 7) & 0xff) for i in range(4096))
    # Serials after the checkpoint (30) are replayed; those it covers were never on this SAN.
    if (got == want) != (serial > 30):
        bad.append(serial)
        if len(bad) == 1:
            print('serial', serial, 'lba', lba, 'got', got[:8].hex(), got[512:520].hex(), 'want', want[:8].hex(), want[512:520].hex(), 'zeros', got.count(0))
assert not bad, ('serials wrong on the SAN', bad)
print('the SAN holds the 22 writes after the checkpoint, and none it covers')
PY

step "the secret is in no attribute and no log"
for f in $CFS/*; do
    [ -f "$f" ] || continue
    grep -qi "$SECRET" "$f" && fail "$f shows the secret"
done
dmesg | grep -qi "$SECRET" && fail "the kernel log holds the secret"
dmesg | grep -c "peer connection from" | sed 's/^/refusals logged: /'

step "a served connection ends when the listener stops; the module unloads"
$W --me 2 ping --to 127.0.0.1:7790 --server 1 --from 127.0.0.2 --count 1 > /dev/null || fail "ping"
echo > $CFS/listen || fail "stop listening"
same "$(cat $CFS/listen)" "" "listen after stop"
if $W --me 2 ping --to 127.0.0.1:7790 --server 1 --from 127.0.0.2 --count 1 > /dev/null 2>&1; then fail "served after the listener stopped"; fi
echo 127.0.0.1:7790 > $CFS/listen || fail "listen again on the same port"
echo > $CFS/listen
rmmod peerflash || fail "rmmod"
echo "peer-auth: ok"

# Scenario (cargo xtask cluster --nodes 3 --script tests/vm/scenarios/peer-links.sh): the peer
# transport between the modules of three nodes. Each node listens as host i+1 with the same
# cluster id, secret and host table; every node dials every other (authenticated pings, the
# round trip measured); a cut link and a frozen node make a dial fail within its bound, and
# both are reachable again once restored.
peers_up 3 "cat listen"

step "every node dials every other: handshake and 50 authenticated pings"
for i in 0 1 2; do
    for j in 0 1 2; do
        [ $i = $j ] && continue
        out=$(on $i "echo '$((j + 1)) 50' > /sys/kernel/config/peerflash/probe && cat /sys/kernel/config/peerflash/probe") || fail "node$i -> node$j: $out"
        echo "node$i -> node$j: $out"
    done
done
for i in 0 1 2; do
    on $i "grep -E '^(handshakes|auth_failures|pings_answered) ' /sys/kernel/config/peerflash/peer_stats | tr '\n' ' '; echo"
done

# bounded NODE FROM: a probe of NODE from node FROM must fail, within 10 s.
bounded() {
    t0=$(date +%s)
    if on $2 "echo '$(($1 + 1)) 5' > /sys/kernel/config/peerflash/probe" > /dev/null 2>&1; then fail "node$2 reached node$1"; fi
    t=$(( $(date +%s) - t0 ))
    echo "node$2 -> node$1 failed after $t s"
    [ $t -le 10 ] || fail "the dial took $t s to fail (bound 10 s)"
}
step "a cut link: the dial fails within its bound; restored, it works"
cut 2
bounded 2 0
restore 2
sleep 2
on 0 "echo '3 10' > /sys/kernel/config/peerflash/probe" || fail "node0 -> node2 after the link was restored"

step "a frozen node: the dial fails within its bound; thawed, it works"
freeze 1
bounded 1 0
thaw 1
sleep 2
on 0 "echo '2 10' > /sys/kernel/config/peerflash/probe" || fail "node0 -> node1 after the thaw"
for i in 0 1 2; do on $i "echo > /sys/kernel/config/peerflash/listen && rmmod peerflash" || fail "node$i: unload"; done
echo "peer-links: ok"

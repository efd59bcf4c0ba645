#!/bin/sh
# Every bad input is refused with a clear message (and the documented exit code); nothing is
# left behind; module unload is refused while volumes exist. The runner checks the kernel log
# for warnings and lockdep reports afterwards.
. "$PF_REPO/tests/vm/lib.sh"
set -u
SAN=$PF_SAN_DEV
CFS=/sys/kernel/config/peerflash

modprobe peerflash || fail "modprobe peerflash"

step "nonexistent path"
expect_refusal 4 "does not exist" peerflash create v1 --backing /dev/nonexistent
step "not a block device"
expect_refusal 2 "is not a block device" peerflash create v1 --backing /etc/hostname
step "the kernel refuses the same without the helper, and says why"
mkdir $CFS/raw || fail "mkdir"
echo /etc/hostname > $CFS/raw/backing
expect_write_refused $CFS/raw/enable 1
same "$(cat $CFS/raw/last_error)" "the backing path is not a block device" "last_error"
echo /dev/nonexistent > $CFS/raw/backing
expect_write_refused $CFS/raw/enable 1
same "$(cat $CFS/raw/last_error)" "the backing device does not exist" "last_error"
rmdir $CFS/raw
step "zero-size device"
losetup -d /dev/loop0 2>/dev/null
same "$(blockdev --getsize64 /dev/loop0)" 0 "size of an unbound loop device"
expect_refusal 2 "size 0" peerflash create v1 --backing /dev/loop0
step "backing device already in use"
peerflash create v1 --backing "$SAN" || fail "create v1"
expect_refusal 3 "in use" peerflash create v2 --backing "$SAN"
step "a volume's own device as backing"
expect_refusal 2 "is a peerflash volume" peerflash create v3 --backing /dev/pf-v1
step "duplicate name"
expect_refusal 3 "already exists" peerflash create v1 --backing /dev/loop1
step "bad names"
expect_refusal 2 "invalid volume name" peerflash create "a/b" --backing "$SAN"
expect_refusal 2 "invalid volume name" peerflash create --backing "$SAN" -- "-x"
expect_refusal 2 "invalid volume name" peerflash create "0123456789012345678901234567890" --backing "$SAN"
if mkdir "$CFS/bad name" 2>/dev/null; then fail "the kernel accepted a volume named 'bad name'"; fi
step "invalid attribute values"
expect_write_refused $CFS/v1/enable banana
same "$(cat $CFS/v1/last_error)" "expected one of 0, 1, y, n, yes, no, on, off, true, false" "last_error"
expect_write_refused $CFS/v1/backing /dev/loop1
same "$(cat $CFS/v1/last_error)" "the backing device of an enabled volume cannot change" "last_error"
mkdir $CFS/v4
expect_write_refused $CFS/v4/backing relative/path
same "$(cat $CFS/v4/last_error)" "the path must be absolute" "last_error"
expect_write_refused $CFS/v4/enable 1
same "$(cat $CFS/v4/last_error)" "no backing device set (write its path to \`backing\` first)" "last_error"
rmdir $CFS/v4
step "removing a volume that is open"
sleep 60 < /dev/pf-v1 &
holder=$!
sleep 1
same "$(peerflash status v1 --output json | grep -c '"openers": 1')" 1 "openers in status json"
expect_refusal 3 "is open" peerflash remove v1
[ -b /dev/pf-v1 ] || fail "the open volume disappeared"
step "unloading with volumes present"
if rmmod peerflash 2>/dev/null; then fail "rmmod succeeded with volumes present"; fi
echo "refused as expected: rmmod with volumes present"
kill $holder
wait $holder 2>/dev/null
peerflash remove v1 || fail "remove after close"
expect_refusal 4 "does not exist" peerflash remove v1
expect_refusal 4 "does not exist" peerflash status v1
step "rmdir of an enabled volume tears it down (forced removal)"
peerflash create v5 --backing "$SAN" || fail "create v5"
rmdir $CFS/v5 || fail "rmdir of an enabled volume"
[ ! -e /dev/pf-v5 ] || fail "/dev/pf-v5 survived its rmdir"
peerflash create v6 --backing "$SAN" || fail "the backing device was not released by the rmdir"
peerflash remove v6 || fail "remove v6"
same "$(peerflash list)" "" "volumes left"
rmmod peerflash || fail "rmmod after removing everything"
expect_refusal 5 "not loaded" peerflash list
echo "bad-input: all checks passed"

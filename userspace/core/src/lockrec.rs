//! The lock record of a volume on the shared datastore (Documentation/cluster-locks.md).
//!
//! Each volume has a sanlock resource lease on the datastore and, next to it, a record area that
//! holds two copies of its lock record. Only the lease holder writes the record (it alternates the
//! copies, so a torn write leaves the other one intact); any host reads it without the lease,
//! which is the read-only copy hosts poll to watch a replay. The record says who owns the volume,
//! the generation of that ownership, the volume's last checkpoint and policy, whether writes
//! acknowledged by its owner are still waiting on that owner's flash, and (wbp) the volume's
//! replica set and its epoch: the hosts whose flash holds a copy of every dirty record, the one
//! authority on which replica a replay may use (Documentation/wire-protocol.md).
//!
//! One metadata block of [`META_BYTES`], little-endian, CRC32C over all but the last four bytes,
//! canonical (non-zero reserved bytes or unknown codes are refused). Decoding never panics.

use super::format::{
    check_meta, pad, put, seal_meta, unpad, Crc32c, FormatError, Le, META_BYTES, NAME_BYTES,
};

/// Magic of a lock record.
pub const LOCK_MAGIC: [u8; 8] = *b"PFLOCKRC";
pub use super::policy::Policy;
use super::replication::{ReplicaSet, MAX_MEMBERS};

/// Version of the lock record layout.
pub const LOCK_VERSION: u32 = 1;
/// Bytes of a host name field.
pub const HOST_BYTES: usize = 32;

/// What the volume's data is doing, as its last owner recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockState {
    /// Nothing acknowledged is waiting on any host's flash: any host may run the volume.
    Clean,
    /// The owner runs the volume (with a write-back policy, its flash may hold dirty data).
    Running,
    /// The owner is replaying dirty data from its flash to the SAN after a crash.
    Replaying,
    /// Acknowledged writes are still only on the flash of host `owner_id`; only that host can
    /// put them on the SAN. Other hosts must wait until the state is `Clean`.
    Pending,
}

impl LockState {
    /// The name shown by the helper.
    pub fn name(self) -> &'static str {
        match self {
            LockState::Clean => "clean",
            LockState::Running => "running",
            LockState::Replaying => "replaying",
            LockState::Pending => "pending",
        }
    }

    fn code(self) -> u8 {
        match self {
            LockState::Clean => 0,
            LockState::Running => 1,
            LockState::Replaying => 2,
            LockState::Pending => 3,
        }
    }

    fn from_code(c: u8) -> Option<LockState> {
        match c {
            0 => Some(LockState::Clean),
            1 => Some(LockState::Running),
            2 => Some(LockState::Replaying),
            3 => Some(LockState::Pending),
            _ => None,
        }
    }
}

/// A volume's lock record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockRecord {
    /// Volume name, NUL-padded.
    pub volume: [u8; NAME_BYTES],
    /// sanlock host id of the host the state refers to (0: none).
    pub owner_id: u64,
    /// Name of that host, NUL-padded.
    pub owner_name: [u8; HOST_BYTES],
    /// Ownership generation: each acquisition of the lease by a host increments it.
    pub generation: u64,
    /// Write sequence of the record (copy `seq % 2` holds it); the valid copy with the highest
    /// sequence is current.
    pub seq: u64,
    /// The volume's identity on its owner's cache device (zero when unknown).
    pub volume_uuid: [u8; 16],
    /// Last checkpoint serial: every write up to it is on the SAN.
    pub checkpoint: u64,
    /// Last serial the owner handed out (writes above the checkpoint are pending).
    pub last_serial: u64,
    /// Policy.
    pub policy: Policy,
    /// State.
    pub state: LockState,
    /// The replica set in force and its epoch (wbp; empty at epoch 0 otherwise).
    pub replicas: ReplicaSet,
}

/// Where the replica set is in a lock record: epoch u64, member count u8, 3 zero bytes, then
/// [`MAX_MEMBERS`] host ids u32 (unused ones zero).
const SET_AT: usize = 72 + NAME_BYTES + HOST_BYTES;
const SET_END: usize = SET_AT + 8 + 4 + 4 * MAX_MEMBERS;

impl LockRecord {
    /// A first record for `volume` (no owner yet, clean).
    pub fn new(volume: &[u8], policy: Policy) -> LockRecord {
        LockRecord {
            volume: pad(volume),
            owner_id: 0,
            owner_name: [0; HOST_BYTES],
            generation: 0,
            seq: 0,
            volume_uuid: [0; 16],
            checkpoint: 0,
            last_serial: 0,
            policy,
            state: LockState::Clean,
            replicas: ReplicaSet::default(),
        }
    }

    /// The volume name.
    pub fn volume_name(&self) -> &[u8] {
        unpad(&self.volume)
    }

    /// The owner's host name.
    pub fn owner_name_bytes(&self) -> &[u8] {
        unpad(&self.owner_name)
    }

    /// Sets the owner's host name (cut at [`HOST_BYTES`]).
    pub fn set_owner_name(&mut self, name: &[u8]) {
        self.owner_name = pad(name);
    }

    /// Writes acknowledged but not yet on the SAN, as far as the record knows.
    pub fn pending_writes(&self) -> u64 {
        self.last_serial.saturating_sub(self.checkpoint)
    }

    /// Copy (0 or 1) that record write number `seq` goes to.
    pub fn copy_for(seq: u64) -> usize {
        (seq & 1) as usize
    }

    /// Encodes into `buf` (at least [`META_BYTES`]).
    pub fn encode(&self, buf: &mut [u8], crc: Crc32c) {
        seal_meta(buf, &LOCK_MAGIC, crc, |b| {
            put(b, 8, &LOCK_VERSION.to_le_bytes());
            put(b, 12, &[self.policy.code(), self.state.code()]);
            put(b, 16, &self.owner_id.to_le_bytes());
            put(b, 24, &self.generation.to_le_bytes());
            put(b, 32, &self.seq.to_le_bytes());
            put(b, 40, &self.checkpoint.to_le_bytes());
            put(b, 48, &self.last_serial.to_le_bytes());
            put(b, 56, &self.volume_uuid);
            put(b, 72, &self.volume);
            put(b, 72 + NAME_BYTES, &self.owner_name);
            put(b, SET_AT, &self.replicas.epoch.to_le_bytes());
            let members = self.replicas.members();
            put(b, SET_AT + 8, &[members.len() as u8]);
            for (i, m) in members.iter().enumerate() {
                put(b, SET_AT + 12 + 4 * i, &m.to_le_bytes());
            }
        });
    }

    /// Decodes one copy.
    pub fn decode(buf: &[u8], crc: Crc32c) -> Result<LockRecord, FormatError> {
        check_meta(buf, &LOCK_MAGIC, crc)?;
        let r = Le(buf);
        let version = r.u32(8);
        if version != LOCK_VERSION {
            return Err(FormatError::BadVersion(version));
        }
        let count = usize::from(r.u8(SET_AT + 8));
        let zero = |from: usize, to: usize| buf.get(from..to).is_some_and(|b| b.iter().all(|&x| x == 0));
        let reserved_zero = r.u16(14) == 0
            && zero(SET_AT + 9, SET_AT + 12)
            && zero(SET_AT + 12 + 4 * count.min(MAX_MEMBERS), SET_END)
            && zero(SET_END, META_BYTES - 4);
        if !reserved_zero {
            return Err(FormatError::Inconsistent(
                "non-zero reserved bytes in a lock record",
            ));
        }
        let policy = Policy::from_code(r.u8(12))
            .ok_or(FormatError::Inconsistent("unknown policy in a lock record"))?;
        let state = LockState::from_code(r.u8(13))
            .ok_or(FormatError::Inconsistent("unknown state in a lock record"))?;
        let mut members = [0u32; MAX_MEMBERS];
        for (i, m) in members.iter_mut().enumerate() {
            *m = r.u32(SET_AT + 12 + 4 * i);
        }
        let replicas = members
            .get(..count)
            .and_then(|m| ReplicaSet::new(r.u64(SET_AT), m))
            .ok_or(FormatError::Inconsistent("a replica set that is not one (count, zero or repeated hosts)"))?;
        let rec = LockRecord {
            volume: r.bytes(72),
            owner_id: r.u64(16),
            owner_name: r.bytes(72 + NAME_BYTES),
            generation: r.u64(24),
            seq: r.u64(32),
            volume_uuid: r.bytes(56),
            checkpoint: r.u64(40),
            last_serial: r.u64(48),
            policy,
            state,
            replicas,
        };
        if rec.volume_name().is_empty() {
            return Err(FormatError::Inconsistent(
                "lock record without a volume name",
            ));
        }
        if rec.volume != pad::<NAME_BYTES>(rec.volume_name())
            || rec.owner_name != pad::<HOST_BYTES>(rec.owner_name_bytes())
        {
            return Err(FormatError::Inconsistent(
                "bytes after the NUL of a name in a lock record",
            ));
        }
        Ok(rec)
    }

    /// The current record from the two copies of `volume`'s record area: the valid copy of that
    /// volume with the highest sequence (a copy of another volume is ignored).
    pub fn newest(a: &[u8], b: &[u8], volume: &[u8], crc: Crc32c) -> Option<LockRecord> {
        let ok = |buf: &[u8]| {
            LockRecord::decode(buf, crc)
                .ok()
                .filter(|r| r.volume_name() == volume)
        };
        match (ok(a), ok(b)) {
            (Some(x), Some(y)) => Some(if y.seq > x.seq { y } else { x }),
            (x, y) => x.or(y),
        }
    }
}

/// What a host that wants to run a volume does, given the volume's lock record (read under the
/// lease).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartDecision {
    /// Nothing acknowledged waits anywhere else: run the volume here.
    Proceed,
    /// This host owned the volume and did not leave it clean: its own flash holds what is
    /// pending, so creating the volume here replays it.
    ReplayHere,
    /// Host `owner_id` ran this wbp volume and did not leave it clean, and it is gone (this host
    /// holds the lease); this host is a member of the recorded replica set, so its replica of
    /// the volume (`volume_uuid`) holds every write the owner acknowledged (the ack rule): it
    /// replays them to the SAN itself (online replay by a peer), if the replica is of the
    /// recorded set's epoch (`replication::replica_may_replay`).
    ReplayReplica { owner_id: u64 },
    /// Host `owner_id` may hold acknowledged writes on its flash that the SAN lacks: the volume
    /// must not run anywhere else until that host has replayed them (the record turns clean).
    WaitFor { owner_id: u64 },
}

/// The decision of host `me` about a volume whose record is `rec`.
pub fn start_decision(rec: &LockRecord, me: u64) -> StartDecision {
    match rec.state {
        LockState::Clean => StartDecision::Proceed,
        _ if rec.owner_id == me => StartDecision::ReplayHere,
        // Write-through acknowledges only what is on the SAN: a dead owner leaves nothing behind.
        _ if rec.policy == Policy::WriteThrough => StartDecision::Proceed,
        _ if rec.owner_id == 0 => StartDecision::Proceed,
        _ if rec.policy == Policy::WriteBackPeers
            && rec.volume_uuid != [0; 16]
            && u32::try_from(me).is_ok_and(|m| rec.replicas.contains(m)) =>
        {
            StartDecision::ReplayReplica {
                owner_id: rec.owner_id,
            }
        }
        _ => StartDecision::WaitFor {
            owner_id: rec.owner_id,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn crc(c: u32, b: &[u8]) -> u32 {
        crc32c::crc32c_append(c, b)
    }

    fn sample() -> LockRecord {
        let mut r = LockRecord::new(b"vm1", Policy::WriteBack);
        r.owner_id = 2;
        r.set_owner_name(b"hostb");
        r.generation = 7;
        r.seq = 9;
        r.volume_uuid = [5; 16];
        r.checkpoint = 100;
        r.last_serial = 130;
        r.state = LockState::Running;
        r.replicas = ReplicaSet::new(4, &[3, 1]).unwrap();
        r
    }

    #[test]
    fn round_trip() {
        let r = sample();
        let mut buf = [0u8; 4096];
        r.encode(&mut buf, crc);
        assert_eq!(LockRecord::decode(&buf, crc), Ok(r));
        assert_eq!(r.pending_writes(), 30);
        assert_eq!(r.owner_name_bytes(), b"hostb");
    }

    #[test]
    fn newest_copy_wins_and_other_volumes_are_ignored() {
        let mut a = [0u8; 512];
        let mut b = [0u8; 512];
        let mut r = sample();
        r.encode(&mut a, crc);
        r.seq += 1;
        r.checkpoint = 120;
        r.encode(&mut b, crc);
        assert_eq!(
            LockRecord::newest(&a, &b, b"vm1", crc).map(|x| x.checkpoint),
            Some(120)
        );
        assert_eq!(
            LockRecord::newest(&b, &a, b"vm1", crc).map(|x| x.checkpoint),
            Some(120)
        );
        // A torn newer copy: the older one is current.
        b[100] ^= 1;
        assert_eq!(
            LockRecord::newest(&a, &b, b"vm1", crc).map(|x| x.checkpoint),
            Some(100)
        );
        assert_eq!(LockRecord::newest(&a, &b, b"vm2", crc), None);
        assert_eq!(LockRecord::newest(&[0; 512], &[0; 512], b"vm1", crc), None);
    }

    #[test]
    fn refuses_unknown_codes_and_reserved_bytes() {
        let mut buf = [0u8; 512];
        let reseal = |buf: &mut [u8; 512], at: usize, v: u8| {
            buf[at] = v;
            let sum = crc(0, &buf[..508]);
            buf[508..].copy_from_slice(&sum.to_le_bytes());
        };
        for (at, v) in [(12, 3), (13, 4), (14, 1), (300, 1), (8, 2)] {
            sample().encode(&mut buf, crc);
            reseal(&mut buf, at, v);
            assert!(
                LockRecord::decode(&buf, crc).is_err(),
                "byte {at} = {v} accepted"
            );
        }
        // A name with bytes after its NUL is not canonical.
        sample().encode(&mut buf, crc);
        reseal(&mut buf, 72 + 10, b'x');
        assert!(LockRecord::decode(&buf, crc).is_err());
        // A replica set that is not one: 4 members, a zero or repeated member, a host id past
        // the count, a non-zero pad byte.
        for (at, v) in [(SET_AT + 8, 4), (SET_AT + 12, 0), (SET_AT + 12, 1), (SET_AT + 20, 2), (SET_AT + 9, 1)] {
            sample().encode(&mut buf, crc);
            reseal(&mut buf, at, v);
            assert!(LockRecord::decode(&buf, crc).is_err(), "replica set byte {at} = {v} accepted");
        }
        // One member fewer is a valid (other) set.
        sample().encode(&mut buf, crc);
        reseal(&mut buf, SET_AT + 8, 1);
        reseal(&mut buf, SET_AT + 16, 0);
        assert_eq!(LockRecord::decode(&buf, crc).map(|r| r.replicas.members().to_vec()), Ok(vec![3]));
    }

    #[test]
    fn start_decisions() {
        let mut r = sample(); // wb, running, owner 2
        assert_eq!(
            start_decision(&r, 3),
            StartDecision::WaitFor { owner_id: 2 }
        );
        assert_eq!(start_decision(&r, 2), StartDecision::ReplayHere);
        r.state = LockState::Pending;
        assert_eq!(
            start_decision(&r, 3),
            StartDecision::WaitFor { owner_id: 2 }
        );
        r.state = LockState::Replaying;
        assert_eq!(
            start_decision(&r, 3),
            StartDecision::WaitFor { owner_id: 2 }
        );
        r.policy = Policy::WriteBackPeers;
        // The set is {3, 1}: a member replays its replica, any other host waits.
        assert_eq!(
            start_decision(&r, 3),
            StartDecision::ReplayReplica { owner_id: 2 }
        );
        assert_eq!(
            start_decision(&r, 1),
            StartDecision::ReplayReplica { owner_id: 2 }
        );
        assert_eq!(
            start_decision(&r, 4),
            StartDecision::WaitFor { owner_id: 2 }
        );
        // A member id beyond the set's range is no member.
        assert_eq!(
            start_decision(&r, (1 << 32) | 3),
            StartDecision::WaitFor { owner_id: 2 }
        );
        // Without the volume's uuid its replica cannot be found: wait for the owner.
        let mut no_uuid = r;
        no_uuid.volume_uuid = [0; 16];
        assert_eq!(
            start_decision(&no_uuid, 3),
            StartDecision::WaitFor { owner_id: 2 }
        );
        // The set left host 3 (a later epoch without it): its replica may lack writes.
        let mut left = r;
        left.replicas = ReplicaSet::new(5, &[1]).unwrap();
        assert_eq!(
            start_decision(&left, 3),
            StartDecision::WaitFor { owner_id: 2 }
        );
        // The owner itself replays its own flash, whatever the set.
        assert_eq!(start_decision(&r, 2), StartDecision::ReplayHere);
        r.policy = Policy::WriteThrough;
        assert_eq!(start_decision(&r, 3), StartDecision::Proceed);
        r.policy = Policy::WriteBack;
        r.state = LockState::Clean;
        assert_eq!(start_decision(&r, 3), StartDecision::Proceed);
        assert_eq!(start_decision(&r, 2), StartDecision::Proceed);
    }

    proptest! {
        #[test]
        fn any_bit_flip_is_detected(bit in 0usize..(512 * 8)) {
            let mut buf = [0u8; 512];
            sample().encode(&mut buf, crc);
            buf[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(LockRecord::decode(&buf, crc).is_err());
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = LockRecord::decode(&bytes, crc);
        }

        #[test]
        fn fields_round_trip(owner in any::<u64>(), generation in any::<u64>(), seq in any::<u64>(),
                             cp in any::<u64>(), last in any::<u64>(), p in 0u8..3, s in 0u8..4,
                             name in "[a-z][a-z0-9-]{0,27}", host in "[a-z]{0,31}",
                             epoch in any::<u64>(), members in proptest::sample::subsequence(vec![1u32, 2, 7, 2000], 0..=3)) {
            let mut r = LockRecord::new(name.as_bytes(), Policy::from_code(p).unwrap());
            r.owner_id = owner;
            r.generation = generation;
            r.seq = seq;
            r.checkpoint = cp;
            r.last_serial = last;
            r.state = LockState::from_code(s).unwrap();
            r.set_owner_name(host.as_bytes());
            r.replicas = ReplicaSet::new(epoch, &members).unwrap();
            let mut buf = [0u8; 512];
            r.encode(&mut buf, crc);
            prop_assert_eq!(LockRecord::decode(&buf, crc), Ok(r));
        }
    }
}

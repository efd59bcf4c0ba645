//! The replication rules of write-back with peers (wbp), Documentation/design.md "Replication":
//! the volume's replica set and its epoch, when a write may complete, the lowest checkpoint the
//! members hold, when a SAN write that is not a logged record may go, which replica a replay may
//! use, and the effective policy. The module applies them; `tests/replication.rs` checks them
//! against a model of acknowledged writes under random schedules of acks, losses, checkpoints,
//! discards and crashes.

use super::policy::Policy;

/// Most peers a volume's replica set holds.
pub const MAX_MEMBERS: usize = 3;

/// The volume's replica set: the host ids that hold a copy of every dirty record, and the epoch
/// that numbers the set's versions. The set in force is the one the lock record holds (written by
/// the lease holder's agent): a write completes only with the acks of its members, and a member
/// leaves only by a record written with the set without it at a higher epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplicaSet {
    /// Numbers the versions of the set; every change increments it.
    pub epoch: u64,
    members: [u32; MAX_MEMBERS],
    count: u8,
}

impl ReplicaSet {
    /// A set of `members` (host ids, non-zero, distinct) at `epoch`; `None` if it is not one.
    pub fn new(epoch: u64, members: &[u32]) -> Option<ReplicaSet> {
        if members.len() > MAX_MEMBERS {
            return None;
        }
        let mut s = ReplicaSet { epoch, ..ReplicaSet::default() };
        for &m in members {
            if m == 0 || s.contains(m) {
                return None;
            }
            *s.members.get_mut(usize::from(s.count))? = m;
            s.count += 1;
        }
        Some(s)
    }

    /// The member host ids.
    pub fn members(&self) -> &[u32] {
        self.members.get(..usize::from(self.count)).unwrap_or(&[])
    }

    /// Whether `host` is a member.
    pub fn contains(&self, host: u32) -> bool {
        self.members().contains(&host)
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// Whether it has no members.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The next version without `host` (the same set if it is not a member; `None` if the
    /// epoch would overflow).
    pub fn without(&self, host: u32) -> Option<ReplicaSet> {
        let mut rest = [0u32; MAX_MEMBERS];
        let mut n = 0;
        for &m in self.members().iter().filter(|&&m| m != host) {
            *rest.get_mut(n)? = m;
            n += 1;
        }
        ReplicaSet::new(self.epoch.checked_add(1)?, rest.get(..n)?)
    }
}

/// Whether a wbp write may complete: it is on local flash and every member of the set in force
/// (`durable`, the lock record's) has acknowledged it from its own flash. `acked(host)` says
/// whether `host` acknowledged this write. A member that was lost still counts until a set
/// without it is durable: the ack waits rather than going out with fewer copies than recorded.
pub fn write_may_complete(local_done: bool, durable: &ReplicaSet, acked: impl Fn(u32) -> bool) -> bool {
    local_done && durable.members().iter().all(|&m| acked(m))
}

/// The lowest checkpoint every member has acknowledged (`checkpoint_of(host)`), never above the
/// primary's own `local` checkpoint; with no members, `local`.
pub fn members_checkpoint(local: u64, durable: &ReplicaSet, checkpoint_of: impl Fn(u32) -> u64) -> u64 {
    durable.members().iter().map(|&m| checkpoint_of(m)).fold(local, u64::min)
}

/// Whether a SAN write that is not a logged record (a write-through write while the cache is
/// degraded, a discard, a write-zeroes) may go: every record overlapping its range (the newest
/// of them is `newest_overlap`, 0 if none) must be below both the primary's checkpoint and the
/// members' ([`members_checkpoint`]), or a replay of a replica would later bring the old data back
/// over it.
pub fn unlogged_san_write_may_go(newest_overlap: u64, local_checkpoint: u64, members_checkpoint: u64) -> bool {
    newest_overlap <= local_checkpoint.min(members_checkpoint)
}

/// Whether a replica may be replayed to the SAN by a host that holds the lease: only a slot of
/// the set in force (its epoch is the lock record's and its host a member), and only records
/// above the newest checkpoint known (the slot's and the record's).
pub fn replica_may_replay(slot_epoch: u64, host: u32, durable: &ReplicaSet) -> bool {
    slot_epoch == durable.epoch && durable.contains(host)
}

/// The first serial a replay applies: the records above every checkpoint known.
pub fn replay_from(slot_checkpoint: u64, record_checkpoint: u64) -> u64 {
    slot_checkpoint.max(record_checkpoint).saturating_add(1)
}

/// Whether a peer evicts on a CHECKPOINT of (`gen`, `epoch`): only one from the ownership and the
/// set its replica serves (an older one is stale: ignored).
pub fn checkpoint_applies(gen: u64, epoch: u64, replica_gen: u64, replica_epoch: u64) -> bool {
    gen == replica_gen && epoch == replica_epoch
}

/// The policy a volume runs with: wbp with fewer members than `wanted` runs write-through
/// (writes still go to the members it has); every other policy is what was asked.
pub fn effective_policy(requested: Policy, durable: &ReplicaSet, wanted: usize) -> Policy {
    match requested {
        Policy::WriteBackPeers if durable.len() < wanted.max(1) => Policy::WriteThrough,
        p => p,
    }
}

/// What a volume's `replicas` attribute holds (Documentation/control-interface.md): the replica
/// set in force (the lock record's epoch and members), the generation of this host's ownership
/// of the volume, and how many members the volume asks for (`replicas` of the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetConfig {
    /// The set in force.
    pub set: ReplicaSet,
    /// The lock record's ownership generation (sent in ATTACH and CHECKPOINT).
    pub gen: u64,
    /// Members asked for, 1..=[`MAX_MEMBERS`].
    pub wanted: usize,
}

/// Why a `replicas` value or change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetError {
    /// Not `EPOCH GEN WANTED HOST...` in decimal.
    Syntax,
    /// WANTED is not 1..=3, or more hosts than 3.
    Count,
    /// A host id is 0, repeated, or this host's own.
    Member,
    /// A change that does not raise the epoch, changes the generation or the count asked for.
    NotNewer,
    /// A change that adds a member: a new member must first receive the dirty records
    /// (resynchronisation, not built).
    Adds,
}

impl SetError {
    /// A short human explanation.
    pub fn describe(&self) -> &'static str {
        match self {
            SetError::Syntax => "expected EPOCH GEN WANTED HOST... (decimal numbers)",
            SetError::Count => "WANTED is 1 to 3 and at most 3 hosts are given",
            SetError::Member => "a host id is 0, repeated or this host's own",
            SetError::NotNewer => "a change of the set must raise the epoch and keep GEN and WANTED",
            SetError::Adds => "a running volume's set can only lose members (resynchronising a new member is not built)",
        }
    }
}

/// Parses a `replicas` value, `EPOCH GEN WANTED HOST...` (blank-separated decimal numbers),
/// for host `me` (never a member of its own set).
pub fn parse_set_config(text: &[u8], me: u32) -> Result<SetConfig, SetError> {
    let mut nums = [0u64; 3 + MAX_MEMBERS];
    let mut n = 0;
    for word in text.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty()) {
        let slot = nums.get_mut(n).ok_or(SetError::Count)?;
        *slot = super::attr::parse_u64(word).map_err(|_| SetError::Syntax)?;
        n += 1;
    }
    let [epoch, gen, wanted, ..] = nums;
    if n < 3 {
        return Err(SetError::Syntax);
    }
    let wanted = usize::try_from(wanted).map_err(|_| SetError::Count)?;
    if wanted == 0 || wanted > MAX_MEMBERS {
        return Err(SetError::Count);
    }
    let mut members = [0u32; MAX_MEMBERS];
    let hosts = nums.get(3..n).unwrap_or(&[]);
    for (m, &h) in members.iter_mut().zip(hosts) {
        *m = u32::try_from(h).map_err(|_| SetError::Member)?;
        if *m == me {
            return Err(SetError::Member);
        }
    }
    let set = ReplicaSet::new(epoch, members.get(..hosts.len()).unwrap_or(&[])).ok_or(SetError::Member)?;
    Ok(SetConfig { set, gen, wanted })
}

/// Whether a running volume may go from `old` to `new`: a higher epoch, the same generation and
/// count asked for, and no member added (a member only leaves; adding one needs a
/// resynchronisation of the dirty records, which is not built).
pub fn set_change_ok(old: &SetConfig, new: &SetConfig) -> Result<(), SetError> {
    if new.set.epoch <= old.set.epoch || new.gen != old.gen || new.wanted != old.wanted {
        return Err(SetError::NotNewer);
    }
    if new.set.members().iter().any(|&m| !old.set.contains(m)) {
        return Err(SetError::Adds);
    }
    Ok(())
}

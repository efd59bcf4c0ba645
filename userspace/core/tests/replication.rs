//! A randomized model test of the replication rules (`peerflash_core::replication`): a primary
//! with up to three peers runs a random schedule of writes, local flash completions, peer
//! receives and acks (some never arrive), peer losses, lock record writes by the agent,
//! destaging with checkpoints sent to the members (some acks lost), discards and write-through
//! writes; then it crashes. Every replay the rules allow (from the primary's own flash, or, with
//! that flash lost, from any member's replica) must leave on the SAN, sector by sector, the newest
//! acknowledged operation or one issued after it, never older data.

use peerflash_core::policy::Policy;
use peerflash_core::replication::*;
use proptest::prelude::*;

const SECTORS: usize = 8;
const HOSTS: [u32; 3] = [1, 2, 3];

#[derive(Debug, Clone)]
enum Ev {
    /// A VM write of sectors lba..lba+len.
    Write(u8, u8),
    /// The local flash write of the k-th oldest record not yet on flash completes.
    LocalDone(u8),
    /// Peer h writes the k-th oldest record it has not got to its flash.
    PeerStore(u8, u8),
    /// Peer h's ack of its k-th stored, unacknowledged record reaches the primary.
    PeerAck(u8, u8),
    /// Peer h is lost (no ack or ping in time, or it crashed): the primary asks for a set without it.
    Lose(u8),
    /// The agent writes the lock record with the set the primary asked for.
    Record,
    /// The destager writes the completed records after the checkpoint to the SAN, then
    /// persists the checkpoint and sends it to the members.
    Destage,
    /// Peer h persists the last checkpoint it was sent (evicting what it covers).
    PeerCheckpoint(u8),
    /// Peer h's checkpoint ack reaches the primary.
    CheckpointAck(u8),
    /// A VM discard of sectors lba..lba+len (a SAN write that is not a logged record).
    Discard(u8, u8),
}

fn event() -> impl Strategy<Value = Ev> {
    let h = 0u8..3;
    prop_oneof![
        4 => (0u8..SECTORS as u8, 1u8..5).prop_map(|(l, n)| Ev::Write(l, n)),
        4 => (0u8..4).prop_map(Ev::LocalDone),
        4 => (h.clone(), 0u8..3).prop_map(|(h, k)| Ev::PeerStore(h, k)),
        4 => (h.clone(), 0u8..3).prop_map(|(h, k)| Ev::PeerAck(h, k)),
        1 => h.clone().prop_map(Ev::Lose),
        2 => Just(Ev::Record),
        2 => Just(Ev::Destage),
        2 => h.clone().prop_map(Ev::PeerCheckpoint),
        2 => h.prop_map(Ev::CheckpointAck),
        2 => (0u8..SECTORS as u8, 1u8..5).prop_map(|(l, n)| Ev::Discard(l, n)),
    ]
}

#[derive(Debug, Clone, Copy)]
struct Rec {
    serial: u64,
    lba: usize,
    len: usize,
    /// What the record writes: the id of its operation.
    value: u32,
}

#[derive(Debug, Default, Clone)]
struct Peer {
    connected: bool,
    /// The epoch of the set the replica was attached under.
    epoch: u64,
    /// Records sent to it, not yet on its flash.
    inbox: Vec<Rec>,
    /// Records on its flash (the replica slot).
    slot: Vec<Rec>,
    /// Serials stored but whose ack has not reached the primary.
    unacked: Vec<u64>,
    /// Checkpoint sent (with the epoch it was sent under) and not yet persisted; checkpoint
    /// persisted in the slot.
    sent_checkpoint: (u64, u64),
    checkpoint: u64,
}

/// An operation the VM issued, in issue order.
#[derive(Debug, Clone)]
struct Op {
    lba: usize,
    len: usize,
    value: u32,
    completed: bool,
}

struct Model {
    wanted: usize,
    durable: ReplicaSet,
    asked: Option<ReplicaSet>,
    san: [u32; SECTORS],
    /// The primary's log: records and whether each is on its flash.
    log: Vec<(Rec, bool)>,
    /// Hosts whose ack each serial has.
    acks: Vec<(u64, Vec<u32>)>,
    checkpoint: u64,
    peer_checkpoint: [u64; 3],
    peers: [Peer; 3],
    ops: Vec<Op>,
    next_serial: u64,
}

impl Model {
    fn new(p: usize) -> Model {
        let members = &HOSTS[..p];
        let durable = ReplicaSet::new(1, members).unwrap();
        let mut peers: [Peer; 3] = Default::default();
        for (i, peer) in peers.iter_mut().enumerate() {
            peer.connected = i < p;
            peer.epoch = 1;
        }
        Model {
            wanted: p,
            durable,
            asked: None,
            san: [0; SECTORS],
            log: Vec::new(),
            acks: Vec::new(),
            checkpoint: 0,
            peer_checkpoint: [0; 3],
            peers,
            ops: Vec::new(),
            next_serial: 1,
        }
    }

    fn op_index(&self, value: u32) -> usize {
        value as usize - 1
    }

    fn new_op(&mut self, lba: usize, len: usize) -> u32 {
        let len = len.min(SECTORS - lba);
        self.ops.push(Op { lba, len, value: self.ops.len() as u32 + 1, completed: false });
        self.ops.len() as u32
    }

    fn members_checkpoint(&self) -> u64 {
        members_checkpoint(self.checkpoint, &self.durable, |h| self.peer_checkpoint[h as usize - 1])
    }

    /// The newest logged serial overlapping lba..lba+len.
    fn newest_overlap(&self, lba: usize, len: usize) -> u64 {
        self.log
            .iter()
            .filter(|(r, _)| r.lba < lba + len && lba < r.lba + r.len)
            .map(|(r, _)| r.serial)
            .max()
            .unwrap_or(0)
    }

    /// A SAN write that is not a logged record, if the rule lets it go now (else the VM's request
    /// waits: in the model, it is issued at a later event or never).
    fn unlogged(&mut self, lba: usize, len: usize) {
        let len = len.min(SECTORS - lba);
        if !unlogged_san_write_may_go(self.newest_overlap(lba, len), self.checkpoint, self.members_checkpoint()) {
            return;
        }
        let v = self.new_op(lba, len);
        self.san[lba..lba + len].fill(v);
        let i = self.op_index(v);
        self.ops[i].completed = true;
    }

    fn step(&mut self, ev: &Ev) {
        match *ev {
            Ev::Write(lba, len) => {
                let (lba, len) = (lba as usize, len as usize);
                if effective_policy(Policy::WriteBackPeers, &self.durable, self.wanted) == Policy::WriteThrough {
                    self.unlogged(lba, len);
                    return;
                }
                let value = self.new_op(lba, len);
                let len = len.min(SECTORS - lba);
                let rec = Rec { serial: self.next_serial, lba, len, value };
                self.next_serial += 1;
                self.log.push((rec, false));
                self.acks.push((rec.serial, Vec::new()));
                for &m in self.durable.members() {
                    let p = &mut self.peers[m as usize - 1];
                    if p.connected {
                        p.inbox.push(rec);
                    }
                }
            }
            Ev::LocalDone(k) => {
                if let Some((_, done)) = self.log.iter_mut().filter(|(_, d)| !*d).nth(k as usize) {
                    *done = true;
                }
            }
            Ev::PeerStore(h, k) => {
                let p = &mut self.peers[h as usize];
                if p.connected && (k as usize) < p.inbox.len() {
                    let r = p.inbox.remove(k as usize);
                    p.slot.push(r);
                    p.unacked.push(r.serial);
                }
            }
            Ev::PeerAck(h, k) => {
                let p = &mut self.peers[h as usize];
                if p.connected && (k as usize) < p.unacked.len() {
                    let s = p.unacked.remove(k as usize);
                    if let Some((_, hosts)) = self.acks.iter_mut().find(|(x, _)| *x == s) {
                        hosts.push(u32::from(h) + 1);
                    }
                }
            }
            Ev::Lose(h) => {
                let host = u32::from(h) + 1;
                let p = &mut self.peers[h as usize];
                p.connected = false;
                p.inbox.clear();
                p.unacked.clear();
                let base = self.asked.unwrap_or(self.durable);
                if base.contains(host) {
                    self.asked = base.without(host);
                }
            }
            Ev::Record => {
                if let Some(s) = self.asked.take() {
                    self.durable = s;
                    // The primary tells the members left the new epoch (their replicas serve it).
                    for &m in s.members() {
                        self.peers[m as usize - 1].epoch = s.epoch;
                    }
                }
            }
            Ev::Destage => {
                // The completed records after the checkpoint, in serial order, up to the first one
                // that has not completed (the checkpoint never passes an incomplete write).
                let mut c = self.checkpoint;
                while let Some(&(r, _)) = self.log.iter().find(|(r, _)| r.serial == c + 1) {
                    if !self.ops[self.op_index(r.value)].completed {
                        break;
                    }
                    self.san[r.lba..r.lba + r.len].fill(r.value);
                    c = r.serial;
                }
                self.checkpoint = c;
                for &m in self.durable.members() {
                    let p = &mut self.peers[m as usize - 1];
                    if p.connected {
                        p.sent_checkpoint = (c, self.durable.epoch);
                    }
                }
            }
            Ev::PeerCheckpoint(h) => {
                let p = &mut self.peers[h as usize];
                let (c, epoch) = p.sent_checkpoint;
                if p.connected && checkpoint_applies(1, epoch, 1, p.epoch) {
                    p.checkpoint = p.checkpoint.max(c);
                    let c = p.checkpoint;
                    p.slot.retain(|r| r.serial > c);
                }
            }
            Ev::CheckpointAck(h) => {
                let p = &self.peers[h as usize];
                if p.connected {
                    self.peer_checkpoint[h as usize] = p.checkpoint;
                }
            }
            Ev::Discard(lba, len) => self.unlogged(lba as usize, len as usize),
        }
        // Completions: every write the rule lets complete now is acknowledged to the VM.
        for (r, done) in &self.log {
            let acked = &self.acks.iter().find(|(s, _)| *s == r.serial).expect("acks of every record").1;
            if write_may_complete(*done, &self.durable, |h| acked.contains(&h)) {
                let i = self.op_index(r.value);
                self.ops[i].completed = true;
            }
        }
        // A member joins the set only through the next issue's rejoin: the set only shrinks here,
        // and peers outside it get nothing more.
        for (i, p) in self.peers.iter_mut().enumerate() {
            if !self.durable.contains(i as u32 + 1) {
                p.connected = false;
            }
        }
    }

    /// Checks a SAN image against the acknowledged operations, sector by sector.
    fn check(&self, san: &[u32; SECTORS], what: &str) -> Result<(), TestCaseError> {
        for (s, &got) in san.iter().enumerate() {
            let touching: Vec<&Op> = self.ops.iter().filter(|o| o.lba <= s && s < o.lba + o.len).collect();
            let last_done = touching.iter().rposition(|o| o.completed);
            let allowed: Vec<u32> = match last_done {
                Some(i) => touching[i..].iter().map(|o| o.value).collect(),
                None => core::iter::once(0).chain(touching.iter().map(|o| o.value)).collect(),
            };
            prop_assert!(
                allowed.contains(&got),
                "{}: sector {} holds op {} but the newest acknowledged one is {:?} (allowed {:?})",
                what, s, got, last_done.map(|i| touching[i].value), allowed
            );
        }
        Ok(())
    }

    /// Replays records above `from` in serial order onto a copy of the SAN.
    fn replay(&self, records: impl Iterator<Item = Rec>, from: u64) -> [u32; SECTORS] {
        let mut san = self.san;
        let mut recs: Vec<Rec> = records.filter(|r| r.serial >= from).collect();
        recs.sort_by_key(|r| r.serial);
        for r in recs {
            san[r.lba..r.lba + r.len].fill(r.value);
        }
        san
    }

    /// The primary crashes. Its flash survives: offline replay of its own log. Or its flash is
    /// lost: the lease winner replays its replica, and any member the rules allow could be it.
    fn crash_checks(&self) -> Result<(), TestCaseError> {
        let own = self.replay(self.log.iter().filter(|(_, d)| *d).map(|(r, _)| *r), self.checkpoint + 1);
        self.check(&own, "replay of the primary's flash")?;
        if self.durable.is_empty() {
            // Only the primary's flash holds dirty data (the volume ran write-through since the
            // set emptied): losing it too is a second failure, outside the guarantee.
            return Ok(());
        }
        for &m in self.durable.members() {
            let p = &self.peers[m as usize - 1];
            if replica_may_replay(p.epoch, m, &self.durable) {
                let san = self.replay(p.slot.iter().copied(), replay_from(p.checkpoint, 0));
                self.check(&san, &format!("replay of host {m}'s replica"))?;
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// For p = 1, 2, 3 and any schedule, a crash of the primary at its end loses no acknowledged
    /// operation and brings back no overwritten data, whichever replay the rules allow.
    #[test]
    fn replays_keep_every_acknowledged_write(p in 1usize..=3, events in proptest::collection::vec(event(), 0..60)) {
        let mut m = Model::new(p);
        for e in &events {
            m.step(e);
        }
        m.crash_checks()?;
    }
}

#[test]
fn replica_sets() {
    let s = ReplicaSet::new(4, &[2, 3]).unwrap();
    assert_eq!(s.members(), &[2, 3]);
    assert!(ReplicaSet::new(1, &[2, 2]).is_none());
    assert!(ReplicaSet::new(1, &[0]).is_none());
    assert!(ReplicaSet::new(1, &[1, 2, 3, 4]).is_none());
    let t = s.without(2).unwrap();
    assert_eq!((t.epoch, t.members()), (5, &[3][..]));
    assert_eq!(s.without(9).unwrap().members(), s.members());
    assert!(ReplicaSet::new(u64::MAX, &[1]).unwrap().without(1).is_none());
    assert_eq!(effective_policy(Policy::WriteBackPeers, &t, 2), Policy::WriteThrough);
    assert_eq!(effective_policy(Policy::WriteBackPeers, &s, 2), Policy::WriteBackPeers);
    assert_eq!(effective_policy(Policy::WriteBackPeers, &ReplicaSet::default(), 0), Policy::WriteThrough);
    assert_eq!(effective_policy(Policy::WriteBack, &t, 2), Policy::WriteBack);
    assert!(!replica_may_replay(4, 2, &t));
    assert!(replica_may_replay(5, 3, &t));
    assert_eq!(replay_from(7, 9), 10);
    assert_eq!(members_checkpoint(9, &s, u64::from), 2);
    assert_eq!(members_checkpoint(9, &ReplicaSet::default(), |_| 0), 9);
}

/// The schedule of the I5 rule's failure, written out: a write acknowledged and destaged, its
/// checkpoint not yet persisted by the member, then a discard of the same sectors, then the
/// primary's flash is lost. The member's replay must not bring the write back over the discard.
#[test]
fn a_discard_waits_for_the_members_checkpoint() {
    let mut m = Model::new(1);
    for e in [Ev::Write(0, 2), Ev::LocalDone(0), Ev::PeerStore(0, 0), Ev::PeerAck(0, 0), Ev::Destage, Ev::Discard(0, 2)] {
        m.step(&e);
    }
    m.crash_checks().unwrap();
    // Once the member persisted and acknowledged the checkpoint, the discard goes.
    for e in [Ev::PeerCheckpoint(0), Ev::CheckpointAck(0), Ev::Discard(0, 2)] {
        m.step(&e);
    }
    assert!(m.ops.last().is_some_and(|o| o.completed && o.len == 2), "the discard went once the member held the checkpoint");
    m.crash_checks().unwrap();
}

/// The `replicas` attribute: what parses, what is refused, and which changes a running volume
/// may make.
#[test]
fn set_configs_parse_and_change_only_by_losing_members() {
    use peerflash_core::replication::{parse_set_config, set_change_ok, SetConfig, SetError};
    let c = parse_set_config(b"3 7 2 2 3\n", 1).unwrap();
    assert_eq!((c.set.epoch, c.gen, c.wanted, c.set.members()), (3, 7, 2, &[2u32, 3][..]));
    assert_eq!(parse_set_config(b"0 1 1", 1).unwrap().set.members(), &[] as &[u32]);
    for (bad, why) in [
        (&b""[..], SetError::Syntax),
        (b"1 2", SetError::Syntax),
        (b"1 x 1 2", SetError::Syntax),
        (b"1 1 0 2", SetError::Count),
        (b"1 1 4 2", SetError::Count),
        (b"1 1 3 2 3 4 5", SetError::Count),
        (b"1 1 2 2 2", SetError::Member),
        (b"1 1 2 0", SetError::Member),
        (b"1 1 2 1", SetError::Member),
        (b"1 1 1 4294967296", SetError::Member),
    ] {
        assert_eq!(parse_set_config(bad, 1), Err(why), "{:?}", core::str::from_utf8(bad));
    }
    let old: SetConfig = parse_set_config(b"3 7 2 2 3", 1).unwrap();
    let ok = |t: &[u8]| set_change_ok(&old, &parse_set_config(t, 1).unwrap());
    assert_eq!(ok(b"4 7 2 3"), Ok(()));
    assert_eq!(ok(b"4 7 2"), Ok(()));
    assert_eq!(ok(b"3 7 2 3"), Err(SetError::NotNewer));
    assert_eq!(ok(b"4 8 2 3"), Err(SetError::NotNewer));
    assert_eq!(ok(b"4 7 1 3"), Err(SetError::NotNewer));
    assert_eq!(ok(b"4 7 2 3 4"), Err(SetError::Adds));
}

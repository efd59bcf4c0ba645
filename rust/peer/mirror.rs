// SPDX-License-Identifier: GPL-2.0

//! The primary's side of write-back with peers (wbp): a volume's replica set on the peer hosts,
//! each member a data connection that carries the volume's records (WRITE), flushes (FLUSH)
//! and checkpoints (CHECKPOINT) in order, and a thread that receives the member's answers, in
//! the same order, and counts them on the tickets of the requests that wait for them.
//!
//! The rules are `pfcore::replication`'s: a write completes when it is on local flash and every
//! member of the set in force acknowledged it from its flash (`write_may_complete`); a member
//! that stops answering (no answer within `timeout_ms` of the oldest thing it owes, or of a ping)
//! is *lost*: it is sent nothing more, but it still counts, so what waits for it keeps waiting,
//! until a set without it is in force (written to the lock record by the agent, then to the
//! volume's `replicas` attribute, [`Mirror::change_set`]). Nothing is ever acknowledged with
//! fewer copies than the set in force names.
//!
//! Locks: `Member::tx` (the sending half, held across one message's send, so that messages go
//! out in the order of the member's queue) is taken before `Member::queue` (what the member
//! owes, its state and credit); `Mirror::set` is taken before either to choose the members and
//! released before any send; `Acks::lock` is a leaf, taken only to wait on or notify `Acks::cv`.

use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use kernel::new_mutex;
use kernel::prelude::*;
use kernel::sync::{new_condvar, Arc, CondVar, Mutex};
use kernel::time::{Instant, Monotonic};

use super::link::{Link, LinkError, LinkRx, LinkTx, CONTROL_PAYLOAD};
use super::node::{bump, Node};
use crate::blk::request::RequestData;
use crate::blk::thread::{should_stop, Thread};
use crate::cache::peers::{Replicas, Ticket};
use crate::pfcore::replication::SetConfig;
use crate::pfcore::wire::{Attach, Msg, Role, WriteHead, NAME_BYTES};

/// Longest a waiter sleeps before it looks again, in ms.
const WAIT_SLICE_MS: u32 = 20;
/// Longest wait for a member's answer to the first ATTACH (it scans a replica it finds again).
const ATTACH_WAIT_MS: u32 = 120_000;
/// Entries a member's queue holds without allocating (the volume's queue depth and a few more).
const QUEUE_RESERVE: usize = 160;

/// What a volume tells its members about itself (the ATTACH).
#[derive(Clone, Copy)]
pub(crate) struct VolumeIdent {
    pub(crate) uuid: [u8; 16],
    pub(crate) name: [u8; NAME_BYTES],
    pub(crate) sectors: u64,
    pub(crate) block_size: u32,
    pub(crate) region_bytes: u64,
}

/// The condition every waiter of a mirror sleeps on.
#[pin_data]
struct Acks {
    #[pin]
    lock: Mutex<()>,
    #[pin]
    cv: CondVar,
    /// The volume is closing: waiters give up.
    closing: AtomicBool,
    /// A member that owes an answer this long is lost (`peer_timeout_ms`).
    timeout_ms: AtomicU32,
    /// Members of the set that are lost.
    lost: AtomicU32,
}

impl Acks {
    fn notify(&self) {
        // Taken so that a waiter between its check and its sleep does not miss the wake-up.
        drop(self.lock.lock());
        self.cv.notify_all();
    }
}

/// What a member owes: the answer to one message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    Write(u64),
    Flush(u64),
    Checkpoint(u64),
    Ping(u64),
    /// The same replica at a new epoch.
    Attach,
}

struct Owed {
    expect: Expect,
    ticket: Option<Arc<Ticket>>,
    /// Bytes of a WRITE's data (counted against the member's credit).
    bytes: u64,
    /// When it was sent (ms since the mirror began).
    sent_ms: u64,
}

/// A member's connection state, shown in sysfs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemberState {
    /// Connected: messages are sent and answered.
    Up,
    /// Stopped answering, or its connection failed: sent nothing, still counted until a set
    /// without it is in force.
    Lost,
}

impl MemberState {
    pub(crate) fn name(self) -> &'static str {
        match self {
            MemberState::Up => "up",
            MemberState::Lost => "lost",
        }
    }
}

struct Queue {
    owed: KVec<Owed>,
    state: MemberState,
    /// Left the set: nothing waits for it any more.
    removed: bool,
    /// Bytes of WRITE data sent and not yet answered.
    outstanding: u64,
    /// The member's last grant: bytes it may hold unanswered.
    credit: u64,
}

/// Counters of one member.
#[derive(Default)]
pub(crate) struct MemberStats {
    pub(crate) writes: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) zero_copy: AtomicU64,
    pub(crate) acked_serial: AtomicU64,
    pub(crate) sent_serial: AtomicU64,
    pub(crate) checkpoint: AtomicU64,
    pub(crate) last_answer_ms: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) nacks: AtomicU64,
    pub(crate) lost_at_ms: AtomicU64,
}

/// One member of the replica set.
#[pin_data]
pub(crate) struct Member {
    pub(crate) host: u32,
    #[pin]
    tx: Mutex<Option<LinkTx>>,
    #[pin]
    queue: Mutex<Queue>,
    /// The receiving half, until the member's thread takes it.
    #[pin]
    rx: Mutex<Option<LinkRx>>,
    acks: Arc<Acks>,
    born: Instant<Monotonic>,
    pub(crate) stats: MemberStats,
}

/// The volume's replica set on its peers.
#[pin_data(PinnedDrop)]
pub(crate) struct Mirror {
    #[pin]
    set: Mutex<MirrorSet>,
    acks: Arc<Acks>,
    ident: VolumeIdent,
    /// This host's id (the replicas' origin).
    owner: u32,
    born: Instant<Monotonic>,
    next_id: AtomicU64,
}

struct MirrorSet {
    config: SetConfig,
    members: KVec<(Arc<Member>, Thread<Member>)>,
}

fn ms_since(born: Instant<Monotonic>) -> u64 {
    u64::try_from((Instant::<Monotonic>::now() - born).as_millis()).unwrap_or(u64::MAX)
}

/// Why a mirror could not start: a member that could not be reached or refused the replica.
pub(crate) type StartRefusal = (&'static str, u32, Error);

impl Mirror {
    /// Dials every member of `cfg`'s set, opens the volume's replica on each (ATTACH) and
    /// starts their receiving threads; waits at most `timeout_ms` per step.
    pub(crate) fn start(node: &Node, ident: VolumeIdent, cfg: SetConfig, timeout_ms: u32) -> Result<Arc<Mirror>, StartRefusal> {
        let acks = Arc::pin_init(
            try_pin_init!(Acks {
                lock <- new_mutex!(()),
                cv <- new_condvar!(),
                closing: AtomicBool::new(false),
                timeout_ms: AtomicU32::new(timeout_ms),
                lost: AtomicU32::new(0),
            }),
            GFP_KERNEL,
        )
        .map_err(|e| ("out of memory", 0, e.into()))?;
        let born = Instant::<Monotonic>::now();
        let mut members: KVec<(Arc<Member>, Thread<Member>)> = KVec::new();
        let mut opened = || -> Result<(), StartRefusal> {
            for &host in cfg.set.members() {
                members.reserve(1, GFP_KERNEL).map_err(|e| ("out of memory", host, e.into()))?;
                let m = Member::open(node, &ident, &cfg, host, acks.clone(), born, timeout_ms)?;
                let t = match Thread::spawn(c"pf-mirror", m.clone(), receive) {
                    Ok(t) => t,
                    Err(e) => {
                        m.end();
                        return Err(("cannot start a member's thread", host, e));
                    }
                };
                // Room was reserved: the push cannot fail.
                let _ = members.push((m, t), GFP_KERNEL);
            }
            Ok(())
        };
        if let Err(r) = opened() {
            // Sockets first (their threads' receives return), then the threads are stopped.
            for (m, _) in members.iter() {
                m.end();
            }
            return Err(r);
        }
        Arc::pin_init(
            try_pin_init!(Mirror {
                set <- new_mutex!(MirrorSet { config: cfg, members }),
                acks,
                ident,
                owner: node.snapshot().host,
                born,
                next_id: AtomicU64::new(1),
            }),
            GFP_KERNEL,
        )
        .map_err(|e| ("out of memory", 0, e))
    }

    /// Sets how long an answer may be owed before its member is lost.
    fn set_timeout_ms(&self, ms: u32) {
        self.acks.timeout_ms.store(ms, Ordering::Relaxed);
    }

    fn members(&self) -> Result<KVec<Arc<Member>>> {
        let g = self.set.lock();
        let mut v = KVec::with_capacity(g.members.len(), GFP_KERNEL)?;
        for (m, _) in g.members.iter() {
            v.push(m.clone(), GFP_KERNEL)?;
        }
        Ok(v)
    }

    /// Sends write record `head` with request `rq`'s data to every member, counting each on
    /// `t`. A member that cannot be sent to is lost, and still counted.
    fn send_write_to_all(&self, t: &Arc<Ticket>, rq: &dyn RequestData, head: WriteHead) -> Result {
        let members = self.members()?;
        t.count(members.len());
        let bytes = u64::from(head.sectors) * 512;
        for m in members.iter() {
            m.wait_credit(bytes);
            m.send(Expect::Write(head.serial), Some(t.clone()), bytes, |tx| {
                tx.send_write(&head, rq)?;
                bump(&m.stats.zero_copy);
                Ok(())
            });
            m.stats.sent_serial.fetch_max(head.serial, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Waits until every member counted on `t` answered (or left the set). `Err(EIO)`: the
    /// volume is closing and the members' copies are not known.
    fn wait_acks(&self, t: &Ticket) -> Result {
        self.wait_for(t, false)
    }

    /// As [`Mirror::wait`]; with `or_lost`, gives up (`ETIMEDOUT`) once a member is lost
    /// rather than waiting for a set without it.
    fn wait_for(&self, t: &Ticket, or_lost: bool) -> Result {
        let mut g = self.acks.lock.lock();
        loop {
            if t.done() {
                return Ok(());
            }
            if self.acks.closing.load(Ordering::Acquire) {
                return Err(EIO);
            }
            if or_lost && self.acks.lost.load(Ordering::Acquire) != 0 {
                return Err(ETIMEDOUT);
            }
            let _ = self.acks.cv.wait_interruptible_timeout(&mut g, kernel::time::msecs_to_jiffies(WAIT_SLICE_MS));
        }
    }

    /// Sends one control message (`make` builds it from an id and the set in force) to every
    /// member and waits for every answer. Queued under the set lock, so that no message of
    /// an old epoch follows a set change's ATTACH on a member's connection.
    fn to_all(&self, expect: impl Fn(u64) -> Expect, make: impl Fn(u64, &SetConfig) -> Msg<'static>) -> Result {
        let t = Ticket::new()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let g = self.set.lock();
            t.count(g.members.len());
            let msg = make(id, &g.config);
            for (m, _) in g.members.iter() {
                m.send(expect(id), Some(t.clone()), 0, |tx| tx.send(&msg));
            }
        }
        self.wait_acks(&t)
    }

    /// Makes every write the members acknowledged stable on their flash (a PREFLUSH).
    fn flush_all(&self) -> Result {
        self.to_all(Expect::Flush, |id, _| Msg::Flush { id })
    }

    /// Has every member persist checkpoint `serial` (they evict what it covers); returns once
    /// all did.
    fn checkpoint_all(&self, serial: u64) -> Result {
        self.to_all(move |_| Expect::Checkpoint(serial), move |_, c| Msg::Checkpoint { gen: c.gen, epoch: c.set.epoch, serial })
    }

    /// Puts set `new` in force (checked by the caller with `replication::set_change_ok`): the
    /// members it no longer names are ended and what waited for them is released; the others
    /// record the new epoch in their replica slots (an ATTACH of the same replica), which this
    /// waits for. A member that does not answer is lost (and needs another change).
    fn change_set_to(&self, new: SetConfig) -> Result {
        let mut gone = KVec::new();
        let t = Ticket::new()?;
        {
            let mut g = self.set.lock();
            g.config = new;
            let mut i = 0;
            while i < g.members.len() {
                if new.set.contains(g.members[i].0.host) {
                    i += 1;
                } else if let Ok(x) = g.members.remove(i) {
                    // Dropped (its thread stopped) outside the lock.
                    let _ = gone.push(x, GFP_KERNEL);
                }
            }
            // Under the set lock, so that no CHECKPOINT of the new epoch is queued before it.
            t.count(g.members.len());
            let attach = self.attach_msg(&new);
            for (m, _) in g.members.iter() {
                m.send(Expect::Attach, Some(t.clone()), 0, |tx| tx.send(&Msg::Attach(attach)));
            }
        }
        for (m, th) in gone {
            m.end();
            drop(th);
            m.release_all();
            pr_info!("replica host {} left the set (epoch {})\n", m.host, new.set.epoch);
        }
        self.acks.notify();
        self.wait_for(&t, true)
    }

    fn attach_msg(&self, cfg: &SetConfig) -> Attach {
        let i = &self.ident;
        Attach {
            uuid: i.uuid,
            owner: self.owner,
            block_size: i.block_size,
            gen: cfg.gen,
            epoch: cfg.set.epoch,
            region_bytes: i.region_bytes,
            name: i.name,
            sectors: i.sectors,
        }
    }

    /// Ends the mirror: every waiter gives up, every member is closed (DETACH is not sent: the
    /// replica stays, it may hold writes the SAN lacks).
    fn close_all(&self) {
        self.acks.closing.store(true, Ordering::Release);
        self.acks.notify();
        let members = core::mem::take(&mut self.set.lock().members);
        for (m, t) in members {
            m.end();
            drop(t);
        }
    }

    /// Writes the set and each member's state for sysfs.
    fn show_set(&self, w: &mut dyn Write) -> core::fmt::Result {
        let now = ms_since(self.born);
        let g = self.set.lock();
        let c = &g.config;
        write!(w, "epoch {} gen {} wanted {} members", c.set.epoch, c.gen, c.wanted)?;
        for &h in c.set.members() {
            write!(w, " {h}")?;
        }
        writeln!(w)?;
        for (m, _) in g.members.iter() {
            let (state, owed, outstanding, credit) = {
                let q = m.queue.lock();
                (q.state, q.owed.len(), q.outstanding, q.credit)
            };
            let s = &m.stats;
            let last = s.last_answer_ms.load(Ordering::Relaxed);
            let sent = s.sent_serial.load(Ordering::Relaxed);
            let acked = s.acked_serial.load(Ordering::Relaxed);
            writeln!(
                w,
                "host {} state {} owed {} lag_bytes {} lag_serials {} last_answer_ms_ago {} credit {} writes {} bytes {} zero_copy {} checkpoint {} timeouts {} nacks {}",
                m.host,
                state.name(),
                owed,
                outstanding,
                sent.saturating_sub(acked),
                now.saturating_sub(last),
                credit,
                s.writes.load(Ordering::Relaxed),
                s.bytes.load(Ordering::Relaxed),
                s.zero_copy.load(Ordering::Relaxed),
                s.checkpoint.load(Ordering::Relaxed),
                s.timeouts.load(Ordering::Relaxed),
                s.nacks.load(Ordering::Relaxed),
            )?;
        }
        Ok(())
    }
}

impl Replicas for Mirror {
    fn send_write(&self, t: &Arc<Ticket>, rq: &dyn RequestData, head: WriteHead) -> Result {
        self.send_write_to_all(t, rq, head)
    }

    fn wait(&self, t: &Ticket) -> Result {
        self.wait_acks(t)
    }

    fn flush(&self) -> Result {
        self.flush_all()
    }

    fn checkpoint(&self, serial: u64) -> Result {
        self.checkpoint_all(serial)
    }

    fn change_set(&self, new: SetConfig) -> Result {
        self.change_set_to(new)
    }

    fn set_timeout(&self, ms: u32) {
        self.set_timeout_ms(ms)
    }

    fn show(&self, w: &mut dyn Write) -> core::fmt::Result {
        self.show_set(w)
    }

    fn close(&self) {
        self.close_all()
    }
}

#[pinned_drop]
impl PinnedDrop for Mirror {
    fn drop(self: Pin<&mut Self>) {
        self.close_all();
    }
}

impl Member {
    /// Dials `host`, authenticates and opens the volume's replica there.
    fn open(
        node: &Node,
        ident: &VolumeIdent,
        cfg: &SetConfig,
        host: u32,
        acks: Arc<Acks>,
        born: Instant<Monotonic>,
        timeout_ms: u32,
    ) -> Result<Arc<Member>, StartRefusal> {
        let ncfg = node.snapshot();
        let why = |e: LinkError| -> StartRefusal {
            let err = match e.errno() {
                0 => ECONNREFUSED,
                n => Error::from_errno(n),
            };
            ("cannot reach or authenticate a replica host", host, err)
        };
        let mut link = Link::dial(&ncfg, host, Role::Data, timeout_ms).map_err(why)?;
        bump(&node.counters.handshakes);
        let attach = Attach {
            uuid: ident.uuid,
            owner: ncfg.host,
            block_size: ident.block_size,
            gen: cfg.gen,
            epoch: cfg.set.epoch,
            region_bytes: ident.region_bytes,
            name: ident.name,
            sectors: ident.sectors,
        };
        link.send(&Msg::Attach(attach), 0).map_err(why)?;
        let mut buf = [0u8; CONTROL_PAYLOAD];
        // A replica found again is scanned before the answer (seconds for a large region): the
        // answer may take longer than one receive timeout.
        let mut waited = 0u32;
        let credit = loop {
            match link.recv(&mut buf) {
                Err(LinkError::Idle) if waited < ATTACH_WAIT_MS => {
                    waited = waited.saturating_add(timeout_ms.max(1));
                }
                Err(e) => return Err(why(e)),
                Ok((_, Msg::AttachOk(ok))) if ok.uuid == ident.uuid && ok.gen == cfg.gen => break ok.credit,
                Ok((_, Msg::AttachRefuse(r))) => {
                    return Err(("a replica host refused the replica", host, peer_errno(r.errno)));
                }
                Ok(_) => return Err(("a replica host answered the ATTACH wrongly", host, EPROTO)),
            }
        };
        let (tx, rx) = link.split();
        let mut owed = KVec::new();
        owed.reserve(QUEUE_RESERVE, GFP_KERNEL).map_err(|e| ("out of memory", host, e.into()))?;
        Arc::pin_init(
            try_pin_init!(Member {
                host,
                tx <- new_mutex!(Some(tx)),
                queue <- new_mutex!(Queue { owed, state: MemberState::Up, removed: false, outstanding: 0, credit }),
                rx <- new_mutex!(Some(rx)),
                acks,
                born,
                stats: MemberStats::default(),
            }),
            GFP_KERNEL,
        )
        .map_err(|e| ("out of memory", host, e))
    }

    fn now_ms(&self) -> u64 {
        ms_since(self.born)
    }

    /// Waits while sending `bytes` more would pass the member's credit (and something is
    /// outstanding: with nothing outstanding a write goes, and the member refuses it if it has
    /// no room).
    fn wait_credit(&self, bytes: u64) {
        loop {
            {
                let q = self.queue.lock();
                if q.state != MemberState::Up || q.removed || q.outstanding == 0 || q.outstanding.saturating_add(bytes) <= q.credit {
                    return;
                }
            }
            if self.acks.closing.load(Ordering::Acquire) {
                return;
            }
            let mut g = self.acks.lock.lock();
            let _ = self.acks.cv.wait_interruptible_timeout(&mut g, kernel::time::msecs_to_jiffies(WAIT_SLICE_MS));
        }
    }

    /// Queues what the member will owe for a message and sends the message with `send`, in
    /// queue order. A removed member counts nothing; a lost one is sent nothing but stays
    /// counted; a failed send makes it lost.
    fn send(&self, expect: Expect, ticket: Option<Arc<Ticket>>, bytes: u64, send: impl FnOnce(&mut LinkTx) -> Result<(), LinkError>) {
        let mut tx = self.tx.lock();
        {
            let mut q = self.queue.lock();
            if q.removed {
                drop(q);
                drop(tx);
                if let Some(t) = ticket {
                    t.release();
                }
                self.acks.notify();
                return;
            }
            let owed = Owed { expect, ticket, bytes, sent_ms: self.now_ms() };
            if q.owed.push(owed, GFP_KERNEL).is_err() {
                // No memory to remember it: nothing will count it (the member is lost and only
                // its removal releases the ticket, so the waiters wait, as for a lost member).
                drop(q);
                drop(tx);
                self.lose("no memory to queue a message");
                return;
            }
            if q.state != MemberState::Up {
                return;
            }
            q.outstanding = q.outstanding.saturating_add(bytes);
        }
        let failed = match &mut *tx {
            Some(t) => send(t).is_err(),
            None => true,
        };
        if failed {
            drop(tx);
            self.lose("its connection failed while sending");
        } else if bytes > 0 {
            bump(&self.stats.writes);
            self.stats.bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// The member stopped answering or its connection broke: it is sent nothing more and its
    /// socket is shut down; what it owes stays counted until a set without it is in force.
    fn lose(&self, why: &str) {
        let mut q = self.queue.lock();
        if q.state == MemberState::Lost || q.removed {
            return;
        }
        q.state = MemberState::Lost;
        self.acks.lost.fetch_add(1, Ordering::AcqRel);
        drop(q);
        self.stats.lost_at_ms.store(self.now_ms(), Ordering::Relaxed);
        if let Some(tx) = self.tx.lock().as_ref() {
            tx.sock.shutdown();
        }
        pr_warn!("replica host {} is lost: {}; writes wait until a set without it is in force\n", self.host, why);
        self.acks.notify();
    }

    /// Shuts the connection down (its thread's receive returns).
    fn end(&self) {
        if let Some(tx) = self.tx.lock().as_ref() {
            tx.sock.shutdown();
        }
    }

    /// The member left the set: whatever it owes is no longer waited for.
    fn release_all(&self) {
        let owed = {
            let mut q = self.queue.lock();
            if q.state == MemberState::Lost && !q.removed {
                self.acks.lost.fetch_sub(1, Ordering::AcqRel);
            }
            q.removed = true;
            q.outstanding = 0;
            core::mem::take(&mut q.owed)
        };
        for o in owed.iter() {
            if let Some(t) = &o.ticket {
                t.release();
            }
        }
        self.acks.notify();
    }

    /// An answer arrived: it must be for the oldest thing owed.
    fn answered(&self, got: Expect, credit: Option<u64>) -> Result<(), &'static str> {
        let o = {
            let mut q = self.queue.lock();
            if q.owed.is_empty() {
                return Err("an answer to nothing sent");
            }
            let o = q.owed.remove(0).map_err(|_| "an answer to nothing sent")?;
            if o.expect != got {
                return Err("an answer out of order");
            }
            q.outstanding = q.outstanding.saturating_sub(o.bytes);
            if let Some(c) = credit {
                q.credit = c;
            }
            o
        };
        self.stats.last_answer_ms.store(self.now_ms(), Ordering::Relaxed);
        match got {
            Expect::Write(s) => {
                self.stats.acked_serial.fetch_max(s, Ordering::Relaxed);
            }
            Expect::Checkpoint(s) => {
                self.stats.checkpoint.fetch_max(s, Ordering::Relaxed);
            }
            _ => {}
        }
        if let Some(t) = &o.ticket {
            t.release();
        }
        self.acks.notify();
        Ok(())
    }

    /// Whether the oldest thing owed has waited longer than the timeout.
    fn overdue(&self) -> bool {
        let q = self.queue.lock();
        let limit = u64::from(self.acks.timeout_ms.load(Ordering::Relaxed));
        q.owed.first().is_some_and(|o| self.now_ms().saturating_sub(o.sent_ms) > limit)
    }

    fn owes_nothing(&self) -> bool {
        self.queue.lock().owed.is_empty()
    }
}

/// A member's receiving thread: matches each answer to what the member owes, pings when the
/// connection is idle, and declares the member lost when an answer is overdue, wrong or the
/// connection fails. After that it only waits to be stopped.
fn receive(m: &Member) {
    let Some(mut rx) = m.rx.lock().take() else {
        return;
    };
    let mut buf = [0u8; CONTROL_PAYLOAD];
    let mut ping = 0u64;
    while !should_stop() {
        let answer = match rx.recv(&mut buf) {
            Err(LinkError::Idle) => {
                if m.overdue() {
                    bump(&m.stats.timeouts);
                    m.lose("no answer within the timeout");
                    break;
                }
                if m.owes_nothing() {
                    ping += 1;
                    let stamp = ping;
                    m.send(Expect::Ping(stamp), None, 0, |tx| tx.send(&Msg::Ping { stamp }));
                }
                continue;
            }
            Err(e) => {
                if !should_stop() {
                    m.lose(e.describe());
                }
                break;
            }
            Ok((_, msg)) => msg,
        };
        let r = match answer {
            Msg::WriteAck { serial, credit } => m.answered(Expect::Write(serial), Some(credit)),
            Msg::WriteNack { serial, errno } => {
                bump(&m.stats.nacks);
                pr_warn!("replica host {} refused write {} (errno {})\n", m.host, serial, errno);
                Err("it refused a write")
            }
            Msg::FlushAck { id, errno: 0 } => m.answered(Expect::Flush(id), None),
            Msg::FlushAck { .. } => Err("its flush failed"),
            Msg::CheckpointAck { serial, .. } => m.answered(Expect::Checkpoint(serial), None),
            Msg::PingAck { stamp } => m.answered(Expect::Ping(stamp), None),
            Msg::AttachOk(ok) => m.answered(Expect::Attach, Some(ok.credit)),
            Msg::AttachRefuse(_) => Err("it refused the replica set's new epoch"),
            _ => Err("an unexpected message"),
        };
        if let Err(why) = r {
            m.lose(why);
            break;
        }
        if m.overdue() {
            bump(&m.stats.timeouts);
            m.lose("no answer within the timeout");
            break;
        }
    }
    // Lost or stopping: nothing more is read; the thread waits to be stopped.
    while !should_stop() {
        crate::blk::thread::nap(100);
    }
    drop(rx);
}

/// An `Error` of a peer's (negative) errno; `EIO` for a number that is not one.
fn peer_errno(e: i32) -> Error {
    if (-4095..0).contains(&e) {
        Error::from_errno(e)
    } else {
        EIO
    }
}

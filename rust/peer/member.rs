// SPDX-License-Identifier: GPL-2.0

//! One member of a wbp volume's replica set, as the primary sees it: the data connection to the
//! member's host (its sending half, used in the order of the member's queue), what the member
//! owes (one answer per message, in order), its state (up, or lost: sent nothing more but still
//! counted) and credit, and the thread that receives its answers and counts them on the tickets
//! of the requests that wait for them. The set of members is `mirror`'s.
//!
//! Locks: `Member::tx` (the sending half, held across one message's send, so that messages go
//! out in the order of the member's queue) is taken before `Member::queue` (what the member
//! owes, its state and credit); `Acks::lock` is a leaf, taken only to wait on or notify
//! `Acks::cv`.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use kernel::new_mutex;
use kernel::prelude::*;
use kernel::sync::{new_condvar, Arc, CondVar, Mutex};
use kernel::time::{Instant, Monotonic};

use super::link::{Link, LinkError, LinkRx, LinkTx, CONTROL_PAYLOAD};
use super::node::{bump, Node};
use crate::blk::thread::should_stop;
use crate::cache::peers::Ticket;
use crate::pfcore::replication::SetConfig;
use crate::pfcore::wire::{Attach, Msg, Role, NAME_BYTES};

/// Longest a waiter sleeps before it looks again, in ms.
pub(super) const WAIT_SLICE_MS: u32 = 20;
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
pub(super) struct Acks {
    #[pin]
    pub(super) lock: Mutex<()>,
    #[pin]
    pub(super) cv: CondVar,
    /// The volume is closing: waiters give up.
    pub(super) closing: AtomicBool,
    /// A member that owes an answer this long is lost (`peer_timeout_ms`).
    pub(super) timeout_ms: AtomicU32,
    /// Members of the set that are lost.
    pub(super) lost: AtomicU32,
}

impl Acks {
    pub(super) fn new(timeout_ms: u32) -> Result<Arc<Acks>> {
        Arc::pin_init(
            try_pin_init!(Acks {
                lock <- new_mutex!(()),
                cv <- new_condvar!(),
                closing: AtomicBool::new(false),
                timeout_ms: AtomicU32::new(timeout_ms),
                lost: AtomicU32::new(0),
            }),
            GFP_KERNEL,
        )
    }

    pub(super) fn notify(&self) {
        // Taken so that a waiter between its check and its sleep does not miss the wake-up.
        drop(self.lock.lock());
        self.cv.notify_all();
    }
}

/// What a member owes: the answer to one message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Expect {
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

pub(super) fn ms_since(born: Instant<Monotonic>) -> u64 {
    u64::try_from((Instant::<Monotonic>::now() - born).as_millis()).unwrap_or(u64::MAX)
}

/// Why a mirror could not start: a member that could not be reached or refused the replica.
pub(crate) type StartRefusal = (&'static str, u32, Error);

impl Member {
    /// Dials `host`, authenticates and opens the volume's replica there.
    pub(super) fn open(
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
    pub(super) fn wait_credit(&self, bytes: u64) {
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
    pub(super) fn send(&self, expect: Expect, ticket: Option<Arc<Ticket>>, bytes: u64, send: impl FnOnce(&mut LinkTx) -> Result<(), LinkError>) {
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
    pub(super) fn end(&self) {
        if let Some(tx) = self.tx.lock().as_ref() {
            tx.sock.shutdown();
        }
    }

    /// The member left the set: whatever it owes is no longer waited for.
    pub(super) fn release_all(&self) {
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

    /// For sysfs: its state, answers owed, WRITE bytes unanswered and credit.
    pub(super) fn snapshot(&self) -> (MemberState, usize, u64, u64) {
        let q = self.queue.lock();
        (q.state, q.owed.len(), q.outstanding, q.credit)
    }
}

/// A member's receiving thread: matches each answer to what the member owes, pings when the
/// connection is idle, and declares the member lost when an answer is overdue, wrong or the
/// connection fails. After that it only waits to be stopped.
pub(super) fn receive(m: &Member) {
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


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
//! Each member (`member`) is a connection with its queue of answers owed and its receiving thread.
//!
//! Locks: `Mirror::set` is taken before a member's locks (`Member::tx`, then `Member::queue`,
//! see `member`): a WRITE is sent after the set lock is released, but control messages
//! (FLUSH, CHECKPOINT, a set change's ATTACH) are queued under it, so that no message of an old
//! epoch follows a set change's ATTACH on a member's connection. `Acks::lock` is a leaf.

use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};

use kernel::new_mutex;
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};
use kernel::time::{Instant, Monotonic};

use super::member::{ms_since, receive, Acks, Expect, Member, StartRefusal, VolumeIdent, WAIT_SLICE_MS};
use super::node::{bump, Node};
use crate::blk::request::RequestData;
use crate::blk::thread::Thread;
use crate::cache::peers::{Replicas, Ticket};
use crate::pfcore::replication::SetConfig;
use crate::pfcore::wire::{Attach, Msg, WriteHead};

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

impl Mirror {
    /// Dials every member of `cfg`'s set, opens the volume's replica on each (ATTACH) and
    /// starts their receiving threads; waits at most `timeout_ms` per step.
    pub(crate) fn start(node: &Node, ident: VolumeIdent, cfg: SetConfig, timeout_ms: u32) -> Result<Arc<Mirror>, StartRefusal> {
        let acks = Acks::new(timeout_ms).map_err(|e| ("out of memory", 0, e))?;
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
            let (state, owed, outstanding, credit) = m.snapshot();
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


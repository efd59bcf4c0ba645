// SPDX-License-Identifier: GPL-2.0

//! A write with a cache: logged on flash (wb: dirty; wt: a clean copy, with the SAN write in
//! parallel), after waiting for room, for writes in flight on its blocks and, in wt, for older
//! dirty data of its blocks to be destaged.

use core::sync::atomic::Ordering;

use kernel::prelude::*;

use kernel::sync::Arc;

use crate::blk::dir::Dir;
use super::peers::{self, Replicas, Ticket};
use crate::blk::io::{Bio, IoSet};
use crate::blk::request::{Handler, Request};
use crate::pfcore::admission::{admit_write, Admit};
use crate::pfcore::flow::FlowDecision;
use crate::pfcore::policy::Policy;
use crate::pfcore::format::{RecordHeader, RECORD_DIRTY};
use crate::pfcore::mode::Mode;

use super::cache::{Backend, Cache, InFlightOp, MAX_REQUEST_SECTORS};
use super::state::Rec;
use super::stats::bump;

/// A write with its room in the log and its serial.
struct Placed<'a> {
    op: InFlightOp<'a>,
    seg: usize,
    /// Offset of its record in the segment, in sectors.
    off: u64,
    /// Write-through.
    wt: bool,
    /// wbp: the replica set its record goes to; it completes once every member has it.
    peers: Option<Arc<dyn Replicas>>,
}

/// How a record's writes went: to flash, to the SAN (write-through), to the members (wbp).
struct Outcome {
    flash: Result,
    san: Result,
    peers: Result,
}

/// How [`Cache::place_write`] left a write.
enum Start<'a> {
    /// Placed in the log.
    Placed(Placed<'a>),
    /// Done without the cache (bypassing, sent to the SAN; failed, refused).
    Done(Result),
}

/// How [`Cache::record_write`] left a write.
enum Recorded {
    Done(Result),
    /// The cache failed under it: start again from admission.
    Again,
}

impl Cache {
    /// A write: logged on flash (wb: dirty; wt: a clean copy, with the SAN write in parallel).
    /// In steps: admission and room in the log, the record's I/O, the result recorded.
    pub(crate) fn write<H: Handler>(&self, b: &Backend<'_>, rq: &Request<H>) -> Result {
        let p = match self.place_write(b, rq)? {
            Start::Placed(p) => p,
            Start::Done(r) => return r,
        };
        let io = self.write_record(b, rq, &p);
        match self.record_write(rq, p, io) {
            Recorded::Done(r) => r,
            // The cache failed under the write: through the top of the path again (bypassing:
            // after the switch's checkpoint; failed: it fails).
            Recorded::Again => self.write(b, rq),
        }
    }

    /// Waits until the write may start (`pfcore::admission`) and takes its room in the log and
    /// its serial; or, bypassing, sends it to the SAN.
    fn place_write<H: Handler>(&self, b: &Backend<'_>, rq: &Request<H>) -> Result<Start<'_>> {
        let (lba, len) = (rq.sector(), rq.sectors());
        let len32 = u32::try_from(len).map_err(|_| EINVAL)?;
        let footprint = RecordHeader::footprint(len32, self.sb.block_size);
        if len32 == 0 || len32 > MAX_REQUEST_SECTORS || footprint > u64::from(self.sb.segment_sectors) {
            // The queue limits keep requests below this; never wait for room that cannot exist.
            return Err(EINVAL);
        }
        let mut g = self.lock();
        // Flow control (write-back): paced once (its delay slept), or written through at the
        // limit (`super::flow`).
        let mut paced = false;
        // `write_waits` counts writes that waited, once each (a wait is re-checked every
        // `WAIT_SLICE_MS`).
        let mut waited = false;
        let mut count_wait = || {
            if !core::mem::replace(&mut waited, true) {
                bump(&self.counters.write_waits, 1);
            }
        };
        loop {
            let wt = g.policy == Policy::WriteThrough;
            match admit_write(&self.write_view(&g, lba, len)) {
                Admit::Fail => return Ok(Start::Done(Err(EIO))),
                Admit::SettleFloor => {
                    // Nothing more goes to the SAN before the switch's checkpoint is written.
                    g = self.settle_floor(g);
                    continue;
                }
                Admit::WaitLease { counted } => {
                    // Fenced: the lease may be another host's by now; wait for its renewal (its
                    // store notifies `changed`).
                    if counted {
                        count_wait();
                    }
                    self.wait_changed(&mut g);
                    continue;
                }
                Admit::ToSan => {
                    drop(g);
                    return Ok(Start::Done(self.san_request(b, rq)));
                }
                Admit::Place => {
                    if !paced {
                        match self.flow_admit(&mut g, len) {
                            FlowDecision::Go => {}
                            FlowDecision::Delay(ns) => {
                                paced = true;
                                drop(g);
                                self.flow_sleep(ns);
                                g = self.lock();
                                // Everything may have changed meanwhile: admission again.
                                continue;
                            }
                            // At the limit: straight to the SAN, needing no room in the log (the
                            // cache forgets any clean copy of its blocks), unless the lease is
                            // out or anything in flight or older dirty data on its blocks would
                            // have to go first (then it is written back, as before).
                            FlowDecision::WriteThrough => {
                                if self.san_direct_ready(&g, lba, len) {
                                    let op = self.begin_san_direct(&mut g, lba, len)?;
                                    drop(g);
                                    self.flow_wrote_through();
                                    let r = self.san_request(b, rq);
                                    // Its drop ends it (and notifies).
                                    drop(op);
                                    return Ok(Start::Done(r));
                                }
                            }
                        }
                    }
                    // wbp: the members in force when it is placed (none left: the volume runs
                    // write-through, `effective_policy`, so a wbp write always has some).
                    let peers = if g.policy == Policy::WriteBackPeers {
                        match self.peers() {
                            Some(m) => Some(m),
                            None => return Ok(Start::Done(Err(EIO))),
                        }
                    } else {
                        None
                    };
                    if let Some((seg, off)) = g.place(footprint)? {
                        g.reserve_record(seg)?;
                        let op = self.begin_op(&mut g, lba, len, wt, Some(seg))?;
                        if !wt {
                            g.wb_submitted = g.wb_submitted.max(op.serial());
                        }
                        drop(g);
                        return Ok(Start::Placed(Placed { op, seg, off, wt, peers }));
                    }
                }
                Admit::Blocked => {}
            }
            if g.log_at_limit {
                // The log's next segment is past the slot's log limit: move it on.
                drop(g);
                if let Err(e) = self.extend_log() {
                    bump(&self.counters.cache_errors, 1);
                    pr_err!("cannot write the slot to extend the log ({:?})\n", e);
                    g = self.lock();
                    g.cache_failed();
                    self.changed.notify_all();
                    // Bypass (through its checkpoint) or failed: the loop says.
                    continue;
                }
                g = self.lock();
                continue;
            }
            count_wait();
            // Room (or the SAN copy of older dirty data) is what is missing: destage now.
            g.drain = true;
            self.work.notify_all();
            self.wait_changed(&mut g);
        }
    }

    /// The record's I/O: the header block and data to flash at the placed spot and, in
    /// parallel, in write-through the data to the SAN, in wbp the record to every member of
    /// the replica set. `Err`: the record could not be built (no memory, or data the record bio
    /// cannot hold): nothing was written, an error for this request only. `Ok`: how the writes
    /// went.
    fn write_record<H: Handler>(&self, b: &Backend<'_>, rq: &Request<H>, p: &Placed<'_>) -> Result<Outcome> {
        let (lba, len) = (rq.sector(), rq.sectors());
        let (serial, seg, off, wt) = (p.op.serial(), p.seg, p.off, p.wt);
        let at = self.seg_sector(seg) + off;
        let flags = if wt { 0 } else { RECORD_DIRTY };
        let hb = self.header_block(rq, flags, serial)?;
        // Taken before any I/O: without it nothing is written.
        let ticket = match &p.peers {
            Some(_) => Some(Ticket::new()?),
            None => None,
        };
        pin_init::stack_pin_init!(let flash_io = IoSet::new());
        pin_init::stack_pin_init!(let san_io = IoSet::new());
        let dir = if rq.is_fua() { Dir::WriteFua } else { Dir::Write };
        let mut bio = Bio::new(&self.dev, at, rq.record_vecs(), dir, b.bioset)?;
        bio.add_buf(&hb, 0, hb.len())?;
        bio.add_request_data(rq)?;
        flash_io.as_ref().submit(bio);
        let mut san = Ok(());
        if wt {
            let mut bios = KVec::new();
            san = Bio::clone_request(rq, 0, len, b.san, lba, b.bioset, &mut bios);
            for bio in bios {
                san_io.as_ref().submit(bio);
            }
        }
        // The members get the record while the flash writes it (FUA stays FUA on theirs).
        let mut peers = Ok(());
        if let (Some(m), Some(t)) = (&p.peers, &ticket) {
            let sectors = u32::try_from(len).map_err(|_| EINVAL);
            peers = sectors.and_then(|n| m.send_write(t, rq, peers::write_head(serial, lba, n, rq.is_fua())));
        }
        let f = flash_io.as_ref().wait();
        let s = san_io.as_ref().wait().and(san);
        if wt && s.is_ok() {
            self.san_unflushed.store(true, Ordering::Release);
        }
        // The ack rule (`replication::write_may_complete`): every member of the set in force
        // acknowledged it from its flash, or left the set by a durable change.
        if let (Some(m), Some(t), true) = (&p.peers, &ticket, peers.is_ok()) {
            peers = m.wait(t);
        }
        Ok(Outcome { flash: f, san: s, peers })
    }

    /// Records how the write went: ends its in-flight mark, indexes its record (or forgets its
    /// range), and treats a failed flash write as a cache failure.
    fn record_write<H: Handler>(&self, rq: &Request<H>, p: Placed<'_>, result: Result<Outcome>) -> Recorded {
        let (lba, len) = (rq.sector(), rq.sectors());
        let Placed { op, seg, off, wt, .. } = p;
        let serial = op.serial();
        let flash = self.seg_sector(seg) + off + self.sb.block_sectors();
        let mut g = self.lock();
        op.end(&mut g);
        let rec = Rec { serial, lba, len };
        // The destager is woken when a full batch is ready; younger, smaller ones wait for its
        // timer (`destage_delay_ms`).
        let wake = !wt && g.dirty_sectors >= self.tunables.batch_sectors.load(Ordering::Relaxed);
        let (result, peers) = match result {
            Ok(o) => ((o.flash, o.san), o.peers),
            Err(e) => {
                drop(g);
                self.changed.notify_all();
                pr_warn!("a write of {} sectors at {} could not become a record ({:?}); it fails\n", len, lba, e);
                return Recorded::Done(Err(e));
            }
        };
        if !wt && g.mode != Mode::Normal {
            // The cache failed while this write-back write was in flight: it is not
            // acknowledged from flash. Bypassing, it goes to the SAN (after the switch's
            // checkpoint, which keeps its record, if it landed, from ever being replayed);
            // failed, it fails.
            drop(g);
            self.changed.notify_all();
            return Recorded::Again;
        }
        let out = match result {
            (Ok(()), Ok(())) => match g.add_record(seg, rec, flash, !wt) {
                Ok(()) => {
                    if !wt && g.dirty_since_ms.is_none() {
                        g.dirty_since_ms = Some(self.now_ms());
                    }
                    // Its record is on flash and indexed (a restart replays it), but the
                    // members' copies are not known (the volume is closing): not acknowledged.
                    peers.map_err(|_| EIO)
                }
                Err(e) if wt => {
                    // No memory to index it: the SAN has the data and the range held no dirty
                    // data (a write-through write waits for it to be destaged); forget it.
                    let _ = g.invalidate(lba, len);
                    Err(e)
                }
                Err(e) => {
                    // No memory to index a write-back write: it is on flash (a restart replays
                    // it) but cannot be served, and the older data of its range must not be
                    // either: the volume fails its I/O (as for a fast-path write, `reap`).
                    pr_err!("no memory to index a write ({:?}): the volume fails its I/O\n", e);
                    g.mode = Mode::Failed;
                    Err(EIO)
                }
            },
            (Err(e), _) if !wt => {
                bump(&self.counters.cache_errors, 1);
                g.cache_failed();
                if g.mode == Mode::Bypass {
                    drop(g);
                    self.changed.notify_all();
                    pr_err!("cache device write failed ({:?}); no dirty data: bypassing the cache\n", e);
                    // Through the top of the path: after the switch's checkpoint.
                    return Recorded::Again;
                }
                pr_err!("cache device write failed ({:?}) with dirty data: the volume fails its I/O\n", e);
                Err(EIO)
            }
            (Err(_), Ok(())) => {
                // Write-through: the SAN has the data; stop using the cache.
                bump(&self.counters.cache_errors, 1);
                let _ = g.invalidate(lba, len);
                g.cache_failed();
                Ok(())
            }
            (_, Err(e)) => {
                // The SAN write failed: what the SAN holds for the range is unknown.
                let _ = g.invalidate(lba, len);
                Err(e)
            }
        };
        drop(g);
        self.changed.notify_all();
        if wake {
            self.work.notify_all();
        }
        Recorded::Done(out)
    }
}

// SPDX-License-Identifier: GPL-2.0

//! The fast path of a write-back write: submitted to flash from `queue_rq`, acknowledged from
//! its completion, indexed by the next holder of the state lock.

use kernel::prelude::*;

use crate::blk::request::{Handler, Op, Request};
use crate::blk::thread::{self, WorkQueue};
use crate::pfcore::admission::{admit_write, Admit};
use crate::pfcore::policy::Policy;
use crate::pfcore::format::{RecordHeader, RECORD_DIRTY, RECORD_HEADER_BYTES};
use crate::pfcore::mode::Mode;

use super::cache::{Backend, Cache, MAX_REQUEST_SECTORS};
use super::early::EarlyWrite;
use super::state::Rec;
use super::stats::bump;

// A record header fits the part of a request's header page that `set_head` writes.
const _: () = assert!(RECORD_HEADER_BYTES <= crate::blk::request::HEAD_BYTES);

impl Cache {
    /// The fast path of a write-back write, called from `queue_rq`. When the write can start
    /// at once (the volume is write-back and healthy, nothing that goes to the SAN is in flight
    /// on its blocks, the log has room, a fast-path slot is free), it is submitted to flash here
    /// and acknowledged from the flash write's completion; the next holder of the state lock
    /// indexes it ([`Cache::lock`]). Otherwise the request is given back for the worker
    /// ([`Cache::write`]), which may wait.
    pub(crate) fn write_now<H: Handler>(&self, b: &Backend<'_>, wq: &WorkQueue, rq: Request<H>) -> Option<Request<H>> {
        if rq.op() != Op::Write || rq.in_flush_seq() {
            return Some(rq);
        }
        let (lba, len) = (rq.sector(), rq.sectors());
        let Ok(len32) = u32::try_from(len) else {
            return Some(rq);
        };
        let footprint = RecordHeader::footprint(len32, self.sb.block_size);
        if len32 == 0 || len32 > MAX_REQUEST_SECTORS || footprint > u64::from(self.sb.segment_sectors) {
            return Some(rq);
        }
        let Some(token) = self.early.take() else {
            return Some(rq);
        };
        let _noio = thread::NoIo::enter();
        let mut g = self.lock();
        // Write-back and nothing in its way: the worker's path would place it at once too.
        // Flow control pacing or writing through: the worker decides (it may sleep).
        let ready = g.policy == Policy::WriteBack
            && admit_write(&self.write_view(&g, lba, len)) == Admit::Place
            && self.flow_free(&mut g);
        // No room, or an error making room (no memory): the worker waits for room, or reports
        // the error when it meets it again.
        let placed = if ready { g.place(footprint).ok().flatten() } else { None };
        let placed = placed.filter(|&(seg, _)| g.reserve_record(seg).is_ok());
        let started = placed.and_then(|(seg, off)| g.begin_as(lba, len, false, true).ok().map(|s| (s, seg, off)));
        let Some((serial, seg, off)) = started else {
            drop(g);
            self.early.put(token);
            return Some(rq);
        };
        g.hold(seg, 1);
        g.wb_submitted = g.wb_submitted.max(serial);
        drop(g);

        let at = self.seg_sector(seg) + off;
        let rec = Rec { serial, lba, len };
        self.early.set(token, &EarlyWrite { seg, flash: at + self.sb.block_sectors(), rec });
        let block = self.sb.block_size as usize;
        let r = match self.header_bytes(&rq, RECORD_DIRTY, serial).and_then(|h| rq.set_head(&h)) {
            Ok(()) => rq.write_async(&self.dev, at, block, b.bioset, wq, token),
            Err(e) => Err((rq, e)),
        };
        let Err((rq, _)) = r else {
            bump(&self.counters.fast_writes, 1);
            return None;
        };
        // Not submitted (no memory for its bio): undo, and let the worker try again.
        let mut g = self.lock();
        g.end(serial);
        g.hold(seg, -1);
        drop(g);
        self.early.put(token);
        self.changed.notify_all();
        Some(rq)
    }

    /// Fast-path write `token` completed on flash (from its completion: any context).
    pub(crate) fn write_acked(&self, token: usize) {
        self.early.mark_done(token);
        // Waiters for a write in flight on their blocks look again (and index it).
        self.changed.notify_all();
    }

    /// Fast-path write `token` failed on flash (process context): it was not acknowledged;
    /// the cache device is treated as failed. The caller hands the request to the worker's
    /// path again ([`Cache::write`]): bypassing, it goes to the SAN; failed, it fails.
    pub(crate) fn fast_write_failed(&self, token: usize, err: Error) {
        let e = self.early.get(token);
        self.early.put(token);
        let mut g = self.lock();
        if let Some(e) = e {
            g.end(e.rec.serial);
            g.hold(e.seg, -1);
        }
        bump(&self.counters.cache_errors, 1);
        g.cache_failed();
        let mode = g.mode;
        drop(g);
        self.changed.notify_all();
        let now = if mode == Mode::Bypass { "bypassing the cache" } else { "failing its I/O" };
        pr_err!("cache device write failed ({:?}); the volume is now {}\n", err, now);
    }
}

// SPDX-License-Identifier: GPL-2.0

//! What the state lock protects: the log head, the in-flight set, the destage queue, the
//! per-segment records, the counts, the mode; and the rules that change them together.

use kernel::prelude::*;
use kernel::rbtree::RBTree;

use crate::blk::GFP_IO_PATH;
use crate::pfcore::destage::{self, LogHead};
use crate::pfcore::extent::{self, Delta, Extent};
use crate::pfcore::flow::{self, Flow};
use crate::pfcore::policy::Policy;
use crate::pfcore::inflight::{self, InFlight};
use crate::pfcore::mode::{self, AtFailure, Fallback, Mode};

use super::index::Index;

/// A record in the log, as the segment that holds it and the destage queue remember it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rec {
    pub(super) serial: u64,
    pub(super) lba: u64,
    pub(super) len: u64,
}

/// A segment of the volume's region.
#[derive(Default)]
pub(super) struct Seg {
    /// Records written into it since it was last reused (to drop them from the index on reuse).
    /// Grows with `kvrealloc` (never a high-order allocation that can fail); room for every
    /// record being written into the segment is reserved before it is submitted
    /// ([`State::reserve_record`]), so indexing one never fails for it.
    pub(super) recs: KVVec<Rec>,
    /// Highest serial of a dirty record in it (0: none).
    pub(super) max_dirty: u64,
    /// Writes and reads in flight on it: it is not reused while any is.
    pub(super) users: u32,
}

/// Everything the data path and the destager share, under [`Cache::state`].
pub(super) struct State {
    pub(super) index: Index,
    /// One entry per segment of the region (40 bytes each: a 200 GiB region of 1 MiB segments
    /// is 8 MiB, so `kvmalloc`ed).
    pub(super) segs: KVVec<Seg>,
    pub(super) head: LogHead,
    pub(super) next_serial: u64,
    pub(super) checkpoint: u64,
    pub(super) checkpoint_seq: u64,
    /// Dirty records by serial: the destage queue.
    pub(super) dirty_q: RBTree<u64, Rec>,
    pub(super) inflight: KVec<InFlight>,
    pub(super) cached_sectors: u64,
    pub(super) dirty_sectors: u64,
    pub(super) policy: Policy,
    pub(super) mode: Mode,
    /// Serial of the newest record the rebuild found to replay (0: none).
    pub(super) replay_until: u64,
    /// Consecutive failed destage batches (0: the last one succeeded).
    pub(super) destage_failures: u32,
    /// Start of the destage delay clock (ms since the cache opened): when the destage queue
    /// went from empty to non-empty, or when the last batch ended with data left.
    pub(super) dirty_since_ms: Option<u64>,
    /// Destage everything dirty now, without waiting for `destage_delay_ms` (set by
    /// `destage_now`, by writers waiting for room, by a replay); cleared when nothing is dirty.
    pub(super) drain: bool,
    /// The log writes only segments below this (the slot's `log_limit`, persisted before the
    /// log goes past it: [`Cache::extend_log`]); the region's size when not recorded.
    pub(super) log_limit: u64,
    /// The log waits for [`Cache::extend_log`] to enter its next segment.
    pub(super) log_at_limit: bool,
    /// Highest serial of a dirty (write-back) record submitted to flash.
    pub(super) wb_submitted: u64,
    /// Bypassing, the checkpoint that must be on flash before SAN writes go on (`None`: none
    /// is needed, or it is written).
    pub(super) floor: Option<Floor>,
    /// Log space of the dirty records (data and header block each), in sectors: the fill that
    /// flow control looks at (`super::flow`). Space comes back when the destager's checkpoint
    /// passes them.
    pub(super) dirty_log_sectors: u64,
    /// Sectors of a record's header block.
    pub(super) head_sectors: u64,
    /// Flow control's measured destage bandwidth and token bucket.
    pub(super) flow: Flow,
}

impl State {
    pub(super) fn account(&mut self, d: Delta) {
        self.cached_sectors = self.cached_sectors.saturating_add_signed(d.cached);
        self.dirty_sectors = self.dirty_sectors.saturating_add_signed(d.dirty);
    }

    pub(super) fn overlaps_dirty(&self, lba: u64, len: u64) -> bool {
        let mut found = false;
        extent::walk(&self.index, lba, lba.saturating_add(len), |_, _, e| {
            found |= e.is_some_and(|e| e.dirty);
        });
        found
    }

    /// Whether an operation in flight overlaps `[lba, lba + len)` (`san_only`: only those that
    /// go to the SAN directly).
    pub(super) fn overlaps_inflight(&self, lba: u64, len: u64, san_only: bool) -> bool {
        inflight::overlaps(&self.inflight, lba, len, san_only)
    }

    pub(super) fn begin(&mut self, lba: u64, len: u64, san: bool) -> Result<u64> {
        self.begin_as(lba, len, san, false)
    }

    pub(super) fn begin_as(&mut self, lba: u64, len: u64, san: bool, early: bool) -> Result<u64> {
        let serial = self.next_serial;
        self.inflight.push(InFlight { serial, lba, len, san, early }, GFP_IO_PATH)?;
        self.next_serial += 1;
        Ok(serial)
    }

    pub(super) fn end(&mut self, serial: u64) {
        if let Some(i) = self.inflight.iter().position(|i| i.serial == serial) {
            let _ = self.inflight.remove(i);
        }
    }

    /// The highest serial below every operation still in flight.
    pub(super) fn safe_serial(&self) -> u64 {
        inflight::safe_serial(&self.inflight, self.next_serial)
    }

    /// A dirty record is on the SAN (the destager's checkpoint passed it): it leaves the
    /// destage queue and its log space counts as free.
    pub(super) fn destaged(&mut self, r: &Rec) {
        if self.dirty_q.remove(&r.serial).is_some() {
            self.dirty_log_sectors = self.dirty_log_sectors.saturating_sub(self.head_sectors.saturating_add(r.len));
        }
    }

    /// The share's fill for flow control: the dirty records' log space over the volume's region
    /// (its share of the cache device), in parts per `flow::ONE`.
    pub(super) fn fill(&self) -> u64 {
        flow::fill(self.dirty_log_sectors, (self.segs.len() as u64).saturating_mul(self.head.segment_sectors))
    }

    /// Drops the index entries of segment `s` (clean by now) so that it can be written again.
    pub(super) fn reuse(&mut self, s: usize) -> Result {
        let recs = match self.segs.get_mut(s) {
            Some(seg) => {
                seg.max_dirty = 0;
                core::mem::take(&mut seg.recs)
            }
            None => return Err(EINVAL),
        };
        for r in recs.iter() {
            let d = extent::remove_record(&mut self.index, r.lba, r.len, r.serial)?;
            self.account(d);
        }
        Ok(())
    }

    /// Room for a record of `footprint` sectors: `(segment, offset in it)`, or `None` until the
    /// destager has freed the next segment.
    pub(super) fn place(&mut self, footprint: u64) -> Result<Option<(usize, u64)>> {
        if let Some(off) = self.head.take(footprint) {
            return Ok(Some((self.head.segment as usize, off)));
        }
        let next = self.head.next_segment() as usize;
        if next as u64 >= self.log_limit {
            self.log_at_limit = true;
            return Ok(None);
        }
        let free = self
            .segs
            .get(next)
            .is_some_and(|s| s.users == 0 && destage::segment_reusable(s.max_dirty, self.checkpoint));
        if !free {
            return Ok(None);
        }
        self.reuse(next)?;
        self.head.advance();
        Ok(self.head.take(footprint).map(|off| (self.head.segment as usize, off)))
    }

    /// Room in segment `seg`'s record list for one more record besides those in flight on it
    /// (each holds the segment), so that indexing it cannot fail for lack of it.
    pub(super) fn reserve_record(&mut self, seg: usize) -> Result {
        let s = self.segs.get_mut(seg).ok_or(EINVAL)?;
        s.recs.reserve(s.users as usize + 1, GFP_IO_PATH)?;
        Ok(())
    }

    pub(super) fn hold(&mut self, seg: usize, by: i32) {
        if let Some(s) = self.segs.get_mut(seg) {
            s.users = s.users.saturating_add_signed(by);
        }
    }

    /// Adds a completed record to its segment, the destage queue (if dirty) and the index.
    pub(super) fn add_record(&mut self, seg: usize, rec: Rec, flash: u64, dirty: bool) -> Result {
        let s = self.segs.get_mut(seg).ok_or(EINVAL)?;
        s.recs.push(rec, GFP_IO_PATH)?;
        if dirty {
            s.max_dirty = s.max_dirty.max(rec.serial);
            self.dirty_q.try_create_and_insert(rec.serial, rec, GFP_IO_PATH)?;
            self.dirty_log_sectors = self.dirty_log_sectors.saturating_add(self.head_sectors.saturating_add(rec.len));
        }
        let d = extent::apply(
            &mut self.index,
            Extent { lba: rec.lba, len: rec.len, flash, serial: rec.serial, dirty },
        )?;
        self.account(d);
        Ok(())
    }

    /// Forgets whatever the cache holds for `[lba, lba + len)` (clean data only).
    pub(super) fn invalidate(&mut self, lba: u64, len: u64) -> Result {
        let d = extent::invalidate(&mut self.index, lba, lba.saturating_add(len))?;
        self.account(d);
        Ok(())
    }

    /// The cache device failed: bypass it if it holds no acknowledged write the SAN lacks,
    /// else fail the volume. Write-back writes still in flight to flash are not acknowledged:
    /// they are written to the SAN when they come back ([`Cache::write`]). A record of
    /// one may have landed (even one whose write reported an error): before anything more
    /// goes to the SAN, a checkpoint past every serial issued so far is written
    /// ([`Cache::settle_floor`]), so that no replay after the device is healed brings those
    /// records back over newer SAN data; if that write fails too, the volume fails.
    pub(super) fn cache_failed(&mut self) {
        if self.mode != Mode::Normal {
            return;
        }
        let at = AtFailure {
            dirty_sectors: self.dirty_sectors,
            queued: !self.dirty_q.is_empty(),
            early_in_flight: inflight::any_early(&self.inflight),
            wb_submitted: self.wb_submitted,
            checkpoint: self.checkpoint,
            last_serial: self.next_serial.saturating_sub(1),
        };
        match mode::on_cache_failure(&at) {
            Fallback::Bypass { floor } => {
                self.mode = Mode::Bypass;
                self.index.tree = RBTree::new();
                self.cached_sectors = 0;
                self.floor = floor.map(|serial| Floor { serial, writing: false });
            }
            Fallback::Fail => self.mode = Mode::Failed,
        }
    }
}

/// A checkpoint a switch to bypass must write before the SAN takes more writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Floor {
    /// Every serial issued before the switch.
    pub(super) serial: u64,
    /// Someone is writing it (the others wait).
    pub(super) writing: bool,
}

/// The pieces of a request or batch: `(first sector, sectors, flash sector if held on flash)`.
pub(super) type Pieces = KVec<(u64, u64, Option<u64>)>;

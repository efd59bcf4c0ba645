// SPDX-License-Identifier: GPL-2.0

//! The cache data path of a volume with a cache device: the write log on flash, the index, the
//! destager, the rebuild after a restart. The rules are the shared core's (`pfcore::extent`,
//! `pfcore::destage`, `pfcore::format`); this file holds the state and the I/O.
//! Documentation/design.md "Cache data path" explains the design.
//!
//! A write-back write that can start at once is submitted to flash from `queue_rq` and
//! acknowledged from the flash write's completion ([`Volume::write_now`]). Every other request
//! runs in process context on the volume's workqueue
//! ([`crate::blk::request::Request::defer`]) and waits for its own I/O, so requests proceed
//! concurrently up to the queue depth.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kernel::prelude::*;
use kernel::rbtree::RBTree;
use kernel::sync::{new_condvar, new_mutex, CondVar, Mutex};

use crate::blk::bdev::BlockDev;
use crate::blk::bioset::BioSet;
use crate::blk::io::{self, Bio, Dir, IoSet, PageBuf};
use crate::blk::disk::Handler;
use crate::blk::request::{Op, Request};
use crate::blk::thread::{self, WorkQueue};
use crate::blk::GFP_IO_PATH;
use crate::cache::{Attached, Refusal};
use crate::crc::crc32c;
use crate::pfcore::destage::{self, BatchLimits, LogHead};
use crate::pfcore::extent::{self, Delta, Extent, ExtentMap};
use crate::pfcore::format::{self, Checkpoint, Policy, RecordHeader, Slot, Superblock, RECORD_DIRTY, RECORD_HEADER_BYTES};
use crate::pfcore::rebuild;
use crate::turns::Turn;
use crate::volume::Volume;

/// Largest request with a cache, in sectors: a record (header block plus data pages) must fit
/// in one bio of at most `BIO_MAX_VECS` pages; the rebuild refuses longer records.
pub(crate) const MAX_REQUEST_SECTORS: u32 = rebuild::MAX_RECORD_SECTORS;

/// What the volume does with its cache device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Using the cache.
    Normal,
    /// The cache device failed while holding no dirty data: everything goes to the SAN.
    Bypass,
    /// The cache device failed while holding dirty data: every request fails (the SAN holds
    /// older data for those blocks, which must never be returned).
    Failed,
}

/// The index entry of an extent (the key is its first sector).
#[derive(Debug, Clone, Copy)]
struct Val {
    len: u64,
    flash: u64,
    serial: u64,
    dirty: bool,
}

/// A volume's index: non-overlapping extents on the kernel's red-black tree.
struct Index {
    tree: RBTree<u64, Val>,
}

fn ext(lba: u64, v: &Val) -> Extent {
    Extent { lba, len: v.len, flash: v.flash, serial: v.serial, dirty: v.dirty }
}

impl ExtentMap for Index {
    type Error = Error;

    fn first_overlapping(&self, start: u64, end: u64) -> Option<Extent> {
        // Extents do not overlap, so only the last one starting at or before `start` can cover
        // `start`; otherwise the first one starting after it.
        let after = match self.tree.cursor_lower_bound(&start) {
            Some(c) => {
                if let Some((k, v)) = c.peek_prev() {
                    if k + v.len > start {
                        return Some(ext(*k, v));
                    }
                }
                let (k, v) = c.current();
                Some(ext(*k, v))
            }
            None => {
                let c = self.tree.cursor_back()?;
                let (k, v) = c.current();
                Some(ext(*k, v))
            }
        };
        after.filter(|e| e.overlaps(start, end))
    }

    fn remove(&mut self, lba: u64) {
        self.tree.remove(&lba);
    }

    fn insert(&mut self, e: Extent) -> Result {
        let v = Val { len: e.len, flash: e.flash, serial: e.serial, dirty: e.dirty };
        self.tree.try_create_and_insert(e.lba, v, GFP_IO_PATH)?;
        Ok(())
    }
}

/// A record in the log, as the segment that holds it and the destage queue remember it.
#[derive(Debug, Clone, Copy)]
struct Rec {
    serial: u64,
    lba: u64,
    len: u64,
}

/// A segment of the volume's region.
#[derive(Default)]
struct Seg {
    /// Records written into it since it was last reused (to drop them from the index on reuse).
    /// Grows with `kvrealloc` (never a high-order allocation that can fail); room for every
    /// record being written into the segment is reserved before it is submitted
    /// ([`State::reserve_record`]), so indexing one never fails for it.
    recs: KVVec<Rec>,
    /// Highest serial of a dirty record in it (0: none).
    max_dirty: u64,
    /// Writes and reads in flight on it: it is not reused while any is.
    users: u32,
}

/// An operation in flight that others must not overtake.
#[derive(Debug, Clone, Copy)]
struct Inflight {
    serial: u64,
    lba: u64,
    len: u64,
    /// Goes to the SAN directly (write-through, discard, write-zeroes).
    san: bool,
    /// A write-back write of the fast path ([`Volume::write_now`]): acknowledged when its flash
    /// write completes, indexed afterwards by [`Cache::lock`].
    early: bool,
}

/// Everything the data path and the destager share, under [`Cache::state`].
struct State {
    index: Index,
    /// One entry per segment of the region (40 bytes each: a 200 GiB region of 1 MiB segments
    /// is 8 MiB, so `kvmalloc`ed).
    segs: KVVec<Seg>,
    head: LogHead,
    next_serial: u64,
    checkpoint: u64,
    checkpoint_seq: u64,
    /// Dirty records by serial: the destage queue.
    dirty_q: RBTree<u64, Rec>,
    inflight: KVec<Inflight>,
    cached_sectors: u64,
    dirty_sectors: u64,
    policy: Policy,
    mode: Mode,
    /// Serial of the newest record the rebuild found to replay (0: none).
    replay_until: u64,
    /// Consecutive failed destage batches (0: the last one succeeded).
    destage_failures: u32,
    /// Start of the destage delay clock (ms since the cache opened): when the destage queue
    /// went from empty to non-empty, or when the last batch ended with data left.
    dirty_since_ms: Option<u64>,
    /// Destage everything dirty now, without waiting for `destage_delay_ms` (set by
    /// `destage_now`, by writers waiting for room, by a replay); cleared when nothing is dirty.
    drain: bool,
    /// The log writes only segments below this (the slot's `log_limit`, persisted before the
    /// log goes past it: [`Cache::extend_log`]); the region's size when not recorded.
    log_limit: u64,
    /// The log waits for [`Cache::extend_log`] to enter its next segment.
    log_at_limit: bool,
    /// Highest serial of a dirty (write-back) record submitted to flash.
    wb_submitted: u64,
    /// Bypassing, the checkpoint that must be on flash before SAN writes go on (`None`: none
    /// is needed, or it is written).
    floor: Option<Floor>,
}

impl State {
    fn account(&mut self, d: Delta) {
        self.cached_sectors = self.cached_sectors.saturating_add_signed(d.cached);
        self.dirty_sectors = self.dirty_sectors.saturating_add_signed(d.dirty);
    }

    fn overlaps_dirty(&self, lba: u64, len: u64) -> bool {
        let mut found = false;
        extent::walk(&self.index, lba, lba.saturating_add(len), |_, _, e| {
            found |= e.is_some_and(|e| e.dirty);
        });
        found
    }

    /// Whether an operation in flight overlaps `[lba, lba + len)` (`san_only`: only those that
    /// go to the SAN directly).
    fn overlaps_inflight(&self, lba: u64, len: u64, san_only: bool) -> bool {
        let end = lba.saturating_add(len);
        self.inflight
            .iter()
            .any(|i| (i.san || !san_only) && i.lba < end && lba < i.lba.saturating_add(i.len))
    }

    fn begin(&mut self, lba: u64, len: u64, san: bool) -> Result<u64> {
        self.begin_as(lba, len, san, false)
    }

    fn begin_as(&mut self, lba: u64, len: u64, san: bool, early: bool) -> Result<u64> {
        let serial = self.next_serial;
        self.inflight.push(Inflight { serial, lba, len, san, early }, GFP_IO_PATH)?;
        self.next_serial += 1;
        Ok(serial)
    }

    fn end(&mut self, serial: u64) {
        if let Some(i) = self.inflight.iter().position(|i| i.serial == serial) {
            let _ = self.inflight.remove(i);
        }
    }

    /// The highest serial below every operation still in flight.
    fn safe_serial(&self) -> u64 {
        self.inflight
            .iter()
            .map(|i| i.serial - 1)
            .min()
            .unwrap_or(self.next_serial - 1)
    }

    /// Drops the index entries of segment `s` (clean by now) so that it can be written again.
    fn reuse(&mut self, s: usize) -> Result {
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
    fn place(&mut self, footprint: u64) -> Result<Option<(usize, u64)>> {
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
    fn reserve_record(&mut self, seg: usize) -> Result {
        let s = self.segs.get_mut(seg).ok_or(EINVAL)?;
        s.recs.reserve(s.users as usize + 1, GFP_IO_PATH)?;
        Ok(())
    }

    fn hold(&mut self, seg: usize, by: i32) {
        if let Some(s) = self.segs.get_mut(seg) {
            s.users = s.users.saturating_add_signed(by);
        }
    }

    /// Adds a completed record to its segment, the destage queue (if dirty) and the index.
    fn add_record(&mut self, seg: usize, rec: Rec, flash: u64, dirty: bool) -> Result {
        let s = self.segs.get_mut(seg).ok_or(EINVAL)?;
        s.recs.push(rec, GFP_IO_PATH)?;
        if dirty {
            s.max_dirty = s.max_dirty.max(rec.serial);
            self.dirty_q.try_create_and_insert(rec.serial, rec, GFP_IO_PATH)?;
        }
        let d = extent::apply(
            &mut self.index,
            Extent { lba: rec.lba, len: rec.len, flash, serial: rec.serial, dirty },
        )?;
        self.account(d);
        Ok(())
    }

    /// Forgets whatever the cache holds for `[lba, lba + len)` (clean data only).
    fn invalidate(&mut self, lba: u64, len: u64) -> Result {
        let d = extent::invalidate(&mut self.index, lba, lba.saturating_add(len))?;
        self.account(d);
        Ok(())
    }

    /// The cache device failed: bypass it if it holds no acknowledged write the SAN lacks,
    /// else fail the volume. Write-back writes still in flight to flash are not acknowledged:
    /// they are written to the SAN when they come back ([`Volume::cache_write`]). A record of
    /// one may have landed (even one whose write reported an error): before anything more
    /// goes to the SAN, a checkpoint past every serial issued so far is written
    /// ([`Cache::settle_floor`]), so that no replay after the device is healed brings those
    /// records back over newer SAN data; if that write fails too, the volume fails.
    fn cache_failed(&mut self) {
        if self.mode != Mode::Normal {
            return;
        }
        // A fast-path write in flight may have been acknowledged already (its flash write
        // completed, its indexing not done yet): it counts as dirty data.
        let early = self.inflight.iter().any(|i| i.early);
        if self.dirty_sectors == 0 && self.dirty_q.is_empty() && !early {
            self.mode = Mode::Bypass;
            self.index.tree = RBTree::new();
            self.cached_sectors = 0;
            if self.wb_submitted > self.checkpoint {
                self.floor = Some(Floor { serial: self.next_serial - 1, writing: false });
            }
        } else {
            self.mode = Mode::Failed;
        }
    }
}

/// A checkpoint a switch to bypass must write before the SAN takes more writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Floor {
    /// Every serial issued before the switch.
    serial: u64,
    /// Someone is writing it (the others wait).
    writing: bool,
}

/// Longest a waiter for [`Cache::changed`] sleeps before it looks again, in ms.
const WAIT_SLICE_MS: u32 = 20;

/// Fast-path writes in flight or acknowledged and not indexed yet ([`Volume::write_now`]).
const EARLY_SLOTS: usize = crate::blk::disk::QUEUE_DEPTH as usize;
const EARLY_WORDS: usize = EARLY_SLOTS.div_ceil(64);

// A record header fits the part of a request's header page that `set_head` writes.
const _: () = assert!(RECORD_HEADER_BYTES <= crate::blk::request::HEAD_BYTES);

/// What the indexing of a fast-path write needs.
#[derive(Debug, Clone, Copy)]
struct EarlyWrite {
    seg: usize,
    flash: u64,
    rec: Rec,
}

/// One fast-path write's slot: written by its submitter before the write is submitted, read by
/// whoever indexes it after its completion set its `done` bit.
#[derive(Default)]
struct EarlySlot {
    seg: AtomicU64,
    flash: AtomicU64,
    serial: AtomicU64,
    lba: AtomicU64,
    len: AtomicU64,
}

/// The slots of fast-path writes, handed out and collected without a lock: a write's
/// completion runs in interrupt context, where [`Cache::state`] (a mutex) cannot be taken, and
/// only sets the slot's `done` bit; the next holder of the lock indexes it ([`Cache::lock`]).
/// A slot is free (its bit set in `free`), then owned by one write (submitted), then done
/// (its bit set in `done`), then free again once indexed.
struct Early {
    slots: KVec<EarlySlot>,
    free: [AtomicU64; EARLY_WORDS],
    done: [AtomicU64; EARLY_WORDS],
}

impl Early {
    fn new() -> Result<Self> {
        let mut slots = KVec::with_capacity(EARLY_SLOTS, GFP_KERNEL)?;
        for _ in 0..EARLY_SLOTS {
            slots.push(EarlySlot::default(), GFP_KERNEL)?;
        }
        let free = core::array::from_fn(|w| {
            let n = EARLY_SLOTS.saturating_sub(w * 64).min(64);
            AtomicU64::new(if n == 64 { u64::MAX } else { (1u64 << n) - 1 })
        });
        Ok(Self { slots, free, done: core::array::from_fn(|_| AtomicU64::new(0)) })
    }

    /// A free slot, if any.
    fn take(&self) -> Option<usize> {
        for (w, word) in self.free.iter().enumerate() {
            let mut cur = word.load(Ordering::Acquire);
            while cur != 0 {
                let bit = cur.trailing_zeros() as usize;
                match word.compare_exchange_weak(cur, cur & !(1u64 << bit), Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return Some(w * 64 + bit),
                    Err(now) => cur = now,
                }
            }
        }
        None
    }

    /// Gives slot `t` back.
    fn put(&self, t: usize) {
        if let Some(word) = self.free.get(t / 64) {
            word.fetch_or(1u64 << (t % 64), Ordering::AcqRel);
        }
    }

    fn set(&self, t: usize, w: &EarlyWrite) {
        if let Some(s) = self.slots.get(t) {
            s.seg.store(w.seg as u64, Ordering::Release);
            s.flash.store(w.flash, Ordering::Release);
            s.serial.store(w.rec.serial, Ordering::Release);
            s.lba.store(w.rec.lba, Ordering::Release);
            s.len.store(w.rec.len, Ordering::Release);
        }
    }

    fn get(&self, t: usize) -> Option<EarlyWrite> {
        let s = self.slots.get(t)?;
        Some(EarlyWrite {
            seg: s.seg.load(Ordering::Acquire) as usize,
            flash: s.flash.load(Ordering::Acquire),
            rec: Rec {
                serial: s.serial.load(Ordering::Acquire),
                lba: s.lba.load(Ordering::Acquire),
                len: s.len.load(Ordering::Acquire),
            },
        })
    }

    /// Slot `t`'s write completed on flash (any context).
    fn mark_done(&self, t: usize) {
        if let Some(word) = self.done.get(t / 64) {
            word.fetch_or(1u64 << (t % 64), Ordering::AcqRel);
        }
    }

    /// Takes the done bits of word `w`.
    fn take_done(&self, w: usize) -> u64 {
        self.done.get(w).map_or(0, |word| word.swap(0, Ordering::AcqRel))
    }
}

/// Counters of the cache, shown in sysfs.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) read_hits: AtomicU64,
    /// Bytes read from the SAN on a miss and kept on flash as clean data.
    pub(crate) populated_bytes: AtomicU64,
    pub(crate) read_misses: AtomicU64,
    pub(crate) destaged_bytes: AtomicU64,
    pub(crate) destage_batches: AtomicU64,
    pub(crate) batch_overlaps: AtomicU64,
    pub(crate) san_errors: AtomicU64,
    pub(crate) cache_errors: AtomicU64,
    pub(crate) write_waits: AtomicU64,
    /// Batches that waited for another volume's destage turn (SAN groups).
    pub(crate) turn_waits: AtomicU64,
    /// Writes that took the fast path (acknowledged from their flash completion).
    pub(crate) fast_writes: AtomicU64,
    /// Destage batches abandoned because the lease ran out while they ran.
    pub(crate) fenced_batches: AtomicU64,
}

fn bump(c: &AtomicU64, by: u64) {
    c.fetch_add(by, Ordering::Relaxed);
}

/// Tunables (sysfs).
pub(crate) struct Tunables {
    /// Most sectors per destage batch.
    pub(crate) batch_sectors: AtomicU64,
    /// Most records per destage batch.
    pub(crate) batch_records: AtomicU64,
    /// Most SAN writes of a batch in flight at once.
    pub(crate) destage_concurrency: AtomicU64,
    /// Non-zero: the destager does nothing (maintenance windows, tests); writes wait when the
    /// region is full of dirty data.
    pub(crate) destage_paused: AtomicU64,
    /// Dirty data younger than this waits for more to join its batch, unless a full batch is
    /// ready or a drain was asked for: fewer, fuller batches (one SAN flush and one checkpoint
    /// each) instead of one per write.
    pub(crate) destage_delay_ms: AtomicU64,
    /// Non-zero: a read wholly missed is kept on flash as clean data (population).
    pub(crate) read_populate: AtomicU64,
    /// Non-zero: the volume's SAN group; its destager takes turns with the other volumes of
    /// the group (`crate::turns`).
    pub(crate) san_group: AtomicU64,
}

/// Destage rate over a window of about a second.
#[derive(Default)]
struct Rate {
    window_start_ms: AtomicU64,
    window_bytes: AtomicU64,
    bytes_per_sec: AtomicU64,
}

/// The files of `/sys/block/pf-NAME/peerflash/` (Documentation/control-interface.md), in the
/// order [`Cache::sysfs_show`] and [`Cache::sysfs_store`] number them.
pub(crate) const SYSFS: &[(&CStr, bool)] = &[
    (c"state", false),
    (c"policy", false),
    (c"dirty_bytes", false),
    (c"cached_bytes", false),
    (c"last_serial", false),
    (c"checkpoint_serial", false),
    (c"destage_rate", false),
    (c"destaged_bytes", false),
    (c"read_hits", false),
    (c"read_misses", false),
    (c"cache_errors", false),
    (c"san_errors", false),
    (c"batch_overlaps", false),
    (c"write_waits", false),
    (c"batch_sectors", true),
    (c"batch_records", true),
    (c"destage_concurrency", true),
    (c"destage_failures", false),
    (c"destage_paused", true),
    (c"destage_delay_ms", true),
    (c"destage_now", true),
    (c"destage_batches", false),
    (c"read_populate", true),
    (c"populated_bytes", false),
    (c"lease_ms", true),
    (c"fenced", false),
    (c"san_group", true),
    (c"turn_waits", false),
    (c"fast_writes", false),
    (c"fenced_batches", false),
];

/// The file `state` of a volume without a cache.
pub(crate) const STATE_NO_CACHE: &str = "uncached";

/// A volume's cache: its device, slot and state.
///
/// Lock order: `slot` or `checkpoints` (never both), then `state`, which is a leaf. `state` is
/// never held across I/O: the data path and the destager take it to plan and to record results;
/// waits on `changed` and `work` release it. `slot` and `checkpoints` are held across the one
/// block write they order.
#[pin_data]
pub(crate) struct Cache {
    dev: BlockDev,
    sb: Superblock,
    slot_index: u32,
    uuid: [u8; 16],
    first_segment: u64,
    /// Taken through [`Cache::lock`], which first indexes the fast-path writes that finished.
    #[pin]
    state: Mutex<State>,
    /// Fast-path writes (lock-free; see [`Early`]).
    early: Early,
    /// Notified when space is freed, an operation ends or a batch is checkpointed.
    #[pin]
    changed: CondVar,
    /// Wakes the destager.
    #[pin]
    work: CondVar,
    /// The slot as last written (policy changes rewrite it).
    #[pin]
    slot: Mutex<Slot>,
    /// Serialises checkpoint writes (the destager's and a switch to bypass's), so that a seq
    /// is used once and the last written is the newest. Taken before `state`.
    #[pin]
    checkpoints: Mutex<()>,
    pub(crate) counters: Counters,
    pub(crate) tunables: Tunables,
    rate: Rate,
    born: kernel::time::Instant<kernel::time::Monotonic>,
    /// SAN-write fence: the lease deadline the agent pushes (`lease_ms`), in ms since `born`;
    /// 0 when no lease is enforced (a volume run without the agent). Past it, nothing is
    /// written to the SAN (destage batches, write-through writes, discards, bypass writes)
    /// until the lease is renewed: another host may own the volume by then.
    lease_until_ms: AtomicU64,
    /// A SAN write of the data path completed since the last SAN flush (write-through writes,
    /// discards, write-zeroes, requests passed to the SAN while bypassing): the next flush
    /// must flush the SAN too, whatever the policy is by then. Set before the write is
    /// acknowledged, taken by the flush before it flushes.
    san_unflushed: AtomicBool,
    /// This volume's destager in the turns of its SAN group.
    destager_id: u64,
    /// The slot is this volume's while the cache lives (a forced attach of another volume
    /// never takes it back).
    _claim: crate::cache::SlotClaim,
}

/// What sysfs shows of the cache state.
pub(crate) struct Snapshot {
    pub(crate) mode: Mode,
    pub(crate) policy: Policy,
    pub(crate) replaying: bool,
    pub(crate) dirty_bytes: u64,
    pub(crate) cached_bytes: u64,
    pub(crate) last_serial: u64,
    pub(crate) checkpoint: u64,
    pub(crate) destage_failures: u32,
}

impl Snapshot {
    /// The volume state word.
    pub(crate) fn state(&self) -> &'static str {
        match self.mode {
            Mode::Failed => "failed",
            Mode::Bypass => "degraded",
            Mode::Normal if self.replaying => "replaying",
            Mode::Normal if self.dirty_bytes > 0 => "dirty",
            Mode::Normal => "clean",
        }
    }
}

/// How the destager reads a batch from the log (`destage::plan_reads`): at most 1 MiB a read
/// (one bio of `BIO_MAX_VECS` pages), skipping at most 32 KiB of headers and superseded data
/// between two pieces.
const LOG_READ_LIMITS: destage::ReadLimits = destage::ReadLimits { max_sectors: 2048, max_gap: 64 };

/// The pieces of a request or batch: `(first sector, sectors, flash sector if held on flash)`.
type Pieces = KVec<(u64, u64, Option<u64>)>;

impl Cache {
    fn seg_of(&self, flash: u64) -> usize {
        let rel = flash.saturating_sub(self.sb.data_start) / u64::from(self.sb.segment_sectors);
        rel.saturating_sub(self.first_segment) as usize
    }

    fn seg_sector(&self, seg: usize) -> u64 {
        self.sb.segment_sector(self.first_segment + seg as u64)
    }

    /// Opens the cache of an attached slot: reads the checkpoint, scans the region and rebuilds
    /// the index of the writes after the checkpoint (they are replayed by the destager), with
    /// the attach rules of `pfcore::rebuild` (`replay`: the operator asks for a replay from the
    /// slot's floor when no checkpoint copy is readable). A slot this attach made is cleared
    /// again when the open fails, so that a refused volume keeps no room on the device.
    pub(crate) fn open(a: Attached, replay: bool) -> Result<impl PinInit<Self, Error>, Refusal> {
        let Attached { dev, sb, slot_index, mut slot, claim, created, .. } = a;
        let st = match Self::rebuild(&dev, &sb, slot_index, &slot, replay) {
            Ok(st) => st,
            Err(r) => {
                if created {
                    if let Ok(zero) = KVec::from_elem(0u8, sb.block_size as usize, GFP_KERNEL) {
                        if dev.write_sync(sb.slot_sector(slot_index), &zero).is_err() {
                            pr_warn!("cache slot {}: cannot clear the slot of a failed attach\n", slot_index);
                        }
                    }
                }
                return Err(r);
            }
        };
        // The floor follows the checkpoint: should both checkpoint copies become unreadable
        // later, a replay starts from here, not from 0.
        if slot.serial_floor < st.checkpoint || slot.closed_dirty != 0 {
            let mut s = slot;
            s.serial_floor = s.serial_floor.max(st.checkpoint);
            // Running again (its records replayed, if asked): a crash from here replays.
            s.closed_dirty = 0;
            s.closed_at = 0;
            s.generation = s.generation.wrapping_add(1);
            let mut block = KVec::from_elem(0u8, sb.block_size as usize, GFP_KERNEL).map_err(|_| ("out of memory", ENOMEM))?;
            s.encode(&mut block, crc32c);
            dev.write_sync(sb.slot_sector(slot_index), &block).map_err(|e| ("cannot write the volume's slot", e))?;
            slot = s;
        }
        let early = Early::new().map_err(|e| ("out of memory", e))?;
        Ok(try_pin_init!(Self {
            dev,
            sb,
            slot_index,
            uuid: slot.uuid,
            first_segment: slot.first_segment,
            state <- new_mutex!(st),
            early,
            changed <- new_condvar!(),
            work <- new_condvar!(),
            slot <- new_mutex!(slot),
            checkpoints <- new_mutex!(()),
            counters: Counters::default(),
            tunables: Tunables {
                batch_sectors: AtomicU64::new(2048),
                batch_records: AtomicU64::new(256),
                destage_concurrency: AtomicU64::new(32),
                destage_paused: AtomicU64::new(0),
                destage_delay_ms: AtomicU64::new(1000),
                read_populate: AtomicU64::new(1),
                san_group: AtomicU64::new(0),
            },
            rate: Rate::default(),
            born: kernel::time::Instant::now(),
            lease_until_ms: AtomicU64::new(0),
            san_unflushed: AtomicBool::new(false),
            destager_id: crate::turns::new_id(),
            _claim: claim,
        }))
    }

    /// Reads the checkpoint copies and scans the slot's region: the state of the volume's
    /// cache after a restart (`pfcore::rebuild`'s rules decide what is replayed).
    fn rebuild(dev: &BlockDev, sb: &Superblock, slot_index: u32, slot: &Slot, replay: bool) -> Result<State, Refusal> {
        let io = |e| ("cannot read the volume's records on the cache device", e);
        fn oom<E>(_: E) -> Refusal {
            ("out of memory for the volume's cache tables", ENOMEM)
        }
        let bs = sb.block_size as usize;
        let mut block = KVec::from_elem(0u8, bs, GFP_KERNEL).map_err(oom)?;
        // An unreadable copy is no copy.
        let mut cps = [None, None];
        for (copy, cp) in cps.iter_mut().enumerate() {
            if dev.read_sync(sb.checkpoint_sector(slot_index, copy as u32), &mut block).is_ok() {
                *cp = Checkpoint::decode(&block, &slot.uuid, crc32c);
            }
        }
        let checkpoint = rebuild::start(cps, slot.serial_floor, replay).map_err(|e| (e.describe(), EINVAL))?;
        let checkpoint_seq = Checkpoint::newest(cps[0], cps[1]).map_or(0, |c| c.seq);
        let n = usize::try_from(slot.segments).map_err(|_| ("the volume's slot is damaged", EINVAL))?;
        let mut segs = KVVec::with_capacity(n, GFP_KERNEL).map_err(oom)?;
        for _ in 0..n {
            segs.push(Seg::default(), GFP_KERNEL).map_err(oom)?;
        }
        let seg_sectors = u64::from(sb.segment_sectors);
        let mut scan = rebuild::Scan::new(checkpoint);
        let mut st = State {
            index: Index { tree: RBTree::new() },
            segs,
            // Full, so that the first write moves to the next segment through the reuse check
            // (a slot has at least two segments).
            head: LogHead {
                segments: slot.segments,
                segment_sectors: seg_sectors,
                segment: slot.segments.saturating_sub(1),
                offset: seg_sectors,
            },
            next_serial: scan.next_serial(),
            checkpoint,
            checkpoint_seq,
            dirty_q: RBTree::new(),
            inflight: KVec::new(),
            cached_sectors: 0,
            dirty_sectors: 0,
            policy: slot.policy,
            mode: Mode::Normal,
            replay_until: 0,
            destage_failures: 0,
            dirty_since_ms: None,
            drain: false,
            log_limit: slot.scan_segments(),
            log_at_limit: false,
            wb_submitted: 0,
            floor: None,
        };

        // The scan: every segment the log may have written read whole, every record checked.
        let bounds = rebuild::Bounds { backing_sectors: slot.backing_sectors, max_len: MAX_REQUEST_SECTORS };
        let start = kernel::time::Instant::<kernel::time::Monotonic>::now();
        let seg_bytes = seg_sectors as usize * 512;
        let pages = PageBuf::new(seg_bytes).map_err(oom)?;
        let mut buf = KVVec::from_elem(0u8, seg_bytes, GFP_KERNEL).map_err(oom)?;
        let bset = KBox::pin_init(BioSet::new(), GFP_KERNEL).map_err(oom)?;
        let mut failed: Result = Ok(());
        let scanned = slot.scan_segments() as usize;
        for s in 0..scanned {
            let base = sb.segment_sector(slot.first_segment + s as u64);
            let mut bios = KVec::new();
            let chunk = 256 * kernel::page::PAGE_SIZE;
            let mut off = 0;
            while off < seg_bytes {
                let len = chunk.min(seg_bytes - off);
                let mut b = Bio::new(dev, base + (off / 512) as u64, 256, Dir::Read, &bset).map_err(oom)?;
                b.add_buf(&pages, off, len).map_err(oom)?;
                bios.push(b, GFP_KERNEL).map_err(oom)?;
                off += len;
            }
            io::run(bios).map_err(io)?;
            pages.read(0, &mut buf).map_err(io)?;
            format::scan_segment(&buf, sb.block_size, crc32c, |at, found| {
                if let Some(h) = scan.note(s as u64, found, &slot.uuid, &bounds) {
                    let rec = Rec { serial: h.serial, lba: h.lba, len: u64::from(h.len) };
                    let flash = base + at + sb.block_sectors();
                    if let Err(e) = st.add_record(s, rec, flash, true) {
                        failed = Err(e);
                    }
                }
            });
            failed.map_err(oom)?;
        }
        if let Some(s) = scan.max_seg {
            st.head.segment = s;
        }
        rebuild::may_replay(slot.closed_dirty, scan.replay, replay).map_err(|e| {
            pr_warn!(
                "cache slot {}: {} records ({} KiB) to replay, left when the volume was removed with dirty data\n",
                slot_index,
                scan.replay,
                scan.replay_sectors / 2
            );
            (e.describe(), EINVAL)
        })?;
        st.next_serial = scan.next_serial();
        st.replay_until = scan.replay_until;
        // A replay starts at once (the volume is "replaying" until it is done).
        st.drain = !st.dirty_q.is_empty();
        let ms = start.elapsed().as_millis();
        pr_info!(
            "cache slot {}: scanned {} of {} MiB in {} ms: {} valid records ({} to replay, {} dirty KiB), {} torn, {} invalid; checkpoint {}, next serial {}\n",
            slot_index,
            (scanned as u64 * seg_sectors) >> 11,
            (n as u64 * seg_sectors) >> 11,
            ms,
            scan.valid,
            scan.replay,
            st.dirty_sectors / 2,
            scan.torn,
            scan.invalid,
            checkpoint,
            st.next_serial
        );
        if scan.invalid > 0 {
            pr_warn!(
                "cache slot {}: {} records carry the volume's uuid but cannot be its writes (past its end, too long, or an impossible serial): ignored\n",
                slot_index,
                scan.invalid
            );
        }
        Ok(st)
    }

    /// Takes [`Cache::state`], after indexing the fast-path writes that finished: whoever
    /// holds the lock sees every acknowledged write in the index.
    fn lock(&self) -> kernel::sync::MutexGuard<'_, State> {
        let mut g = self.state.lock();
        self.reap(&mut g);
        g
    }

    /// Waits on `changed` (releasing the lock), then indexes what finished meanwhile.
    ///
    /// The wait is bounded ([`WAIT_SLICE_MS`]) and callers look again after it: a fast-path
    /// write's completion notifies `changed` without the lock (interrupt context), so its
    /// wake-up can fall between a waiter's look and its sleep; and a writer held by a pause or a
    /// fence does not sleep uninterruptibly for minutes (no hung-task reports).
    fn wait_changed(&self, g: &mut kernel::sync::MutexGuard<'_, State>) {
        let _ = self.changed.wait_interruptible_timeout(g, kernel::time::msecs_to_jiffies(WAIT_SLICE_MS));
        self.reap(g);
    }

    /// Indexes every fast-path write whose flash write completed (its done bit is set before it
    /// is acknowledged).
    fn reap(&self, g: &mut State) {
        // Indexing allocates; the lock may be taken outside the data path (sysfs).
        let _noio = thread::NoIo::enter();
        let mut reaped = false;
        for w in 0..EARLY_WORDS {
            let mut bits = self.early.take_done(w);
            while bits != 0 {
                let t = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let Some(e) = self.early.get(t) else {
                    continue;
                };
                self.early.put(t);
                reaped = true;
                if let Err(err) = g.add_record(e.seg, e.rec, e.flash, true) {
                    // No memory to index an acknowledged write: it is on flash (a restart
                    // replays it) but cannot be served, and older data must never be: fail
                    // the volume's I/O. It stays in flight, so no checkpoint passes it.
                    pr_err!("no memory to index an acknowledged write ({:?}): the volume fails its I/O\n", err);
                    g.mode = Mode::Failed;
                    continue;
                }
                g.end(e.rec.serial);
                g.hold(e.seg, -1);
                if g.dirty_since_ms.is_none() {
                    g.dirty_since_ms = Some(self.now_ms());
                }
            }
        }
        if reaped {
            // The destager is woken when a full batch is ready; younger, smaller ones wait
            // for its timer (`destage_delay_ms`).
            if g.dirty_sectors >= self.tunables.batch_sectors.load(Ordering::Relaxed) {
                self.work.notify_all();
            }
            self.changed.notify_all();
        }
    }

    /// Fast-path write `token` completed on flash (from its completion: any context).
    pub(crate) fn write_acked(&self, token: usize) {
        self.early.mark_done(token);
        // Waiters for a write in flight on their blocks look again (and index it).
        self.changed.notify_all();
    }

    /// The state shown in sysfs.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let g = self.lock();
        Snapshot {
            mode: g.mode,
            policy: g.policy,
            replaying: g.replay_until > g.checkpoint,
            dirty_bytes: g.dirty_sectors * 512,
            cached_bytes: g.cached_sectors * 512,
            last_serial: g.next_serial - 1,
            checkpoint: g.checkpoint,
            destage_failures: g.destage_failures,
        }
    }

    /// Largest request with this cache, in sectors: a record (header block and data) must fit in
    /// one segment and in one bio; a multiple of 4 KiB.
    pub(crate) fn max_request_sectors(&self) -> u32 {
        let room = self.sb.segment_sectors.saturating_sub(self.sb.block_sectors() as u32);
        (room.min(MAX_REQUEST_SECTORS) / 8 * 8).max(8)
    }

    /// The cache device's block size in bytes (a record is a whole number of them).
    pub(crate) fn block_size(&self) -> u32 {
        self.sb.block_size
    }

    /// Rewrites the slot under `slot`'s lock with `change` applied (generation bumped); the
    /// copy in memory changes only once the block is written.
    fn rewrite_slot(&self, slot: &mut Slot, change: impl FnOnce(&mut Slot)) -> Result {
        let mut s = *slot;
        change(&mut s);
        s.generation = s.generation.wrapping_add(1);
        let mut block = KVec::from_elem(0u8, self.sb.block_size as usize, GFP_IO_PATH)?;
        s.encode(&mut block, crc32c);
        self.dev.write_sync(self.sb.slot_sector(self.slot_index), &block)?;
        *slot = s;
        Ok(())
    }

    /// The volume is being removed (its disk is gone, its destager stopped). With dirty data
    /// left, the slot says so (`closed_dirty`, `closed_at`): the volume may run without this cache
    /// before it is created with it again, so its records are then replayed only when asked
    /// (`pfcore::rebuild::may_replay`).
    pub(crate) fn close(&self) {
        let (records, bytes, last) = {
            let g = self.lock();
            (g.dirty_q.iter().count(), g.dirty_sectors * 512, g.next_serial - 1)
        };
        if records == 0 {
            return;
        }
        let mut slot = self.slot.lock();
        let written = self.rewrite_slot(&mut slot, |s| {
            s.closed_dirty = last.max(1);
            s.closed_at = crate::blk::clock::real_seconds();
        });
        match written {
            Ok(()) => {
                pr_info!(
                    "cache slot {}: removed with {} dirty records ({} bytes) not on the SAN; a create replays them only when asked (replay=1)\n",
                    self.slot_index,
                    records,
                    bytes
                );
            }
            Err(e) => pr_warn!(
                "cache slot {}: removed with {} dirty records, and the slot cannot say so ({:?}): a create replays them\n",
                self.slot_index,
                records,
                e
            ),
        }
    }

    /// Moves the slot's `log_limit` past the log's next segment (one slot write), so that the
    /// log may enter it; called without the state lock by a writer the limit stopped.
    fn extend_log(&self) -> Result {
        let next = self.lock().head.next_segment();
        let mut slot = self.slot.lock();
        if let Some(limit) = slot.log_limit_for(next) {
            self.rewrite_slot(&mut slot, |s| s.log_limit = limit)?;
        }
        let limit = slot.scan_segments();
        drop(slot);
        let mut g = self.lock();
        g.log_limit = g.log_limit.max(limit);
        g.log_at_limit = false;
        Ok(())
    }

    /// Writes checkpoint `serial` as the next checkpoint block (the copy its seq picks) and
    /// counts it in `checkpoint_seq`; the caller raises the checkpoint. `when_normal`: only while
    /// the cache is in use (the destager's: once a switch to bypass wrote its own checkpoint, an
    /// older batch's must not take its place). Returns whether it was written.
    fn write_checkpoint(&self, serial: u64, when_normal: bool) -> Result<bool> {
        let _order = self.checkpoints.lock();
        let seq = {
            let g = self.lock();
            if when_normal && g.mode != Mode::Normal {
                return Ok(false);
            }
            g.checkpoint_seq.saturating_add(1)
        };
        let cp = Checkpoint { uuid: self.uuid, serial, seq };
        let mut block = KVec::from_elem(0u8, self.sb.block_size as usize, GFP_IO_PATH)?;
        cp.encode(&mut block, crc32c);
        self.dev.write_sync(self.sb.checkpoint_sector(self.slot_index, Checkpoint::copy_for(seq)), &block)?;
        self.lock().checkpoint_seq = seq;
        Ok(true)
    }

    /// Bypassing with a checkpoint still to write ([`State::floor`]): writes it (or waits for
    /// whoever writes it), then the SAN may take writes again; if it cannot be written, the
    /// volume fails. Takes and gives back the state lock.
    fn settle_floor<'a>(&'a self, mut g: kernel::sync::MutexGuard<'a, State>) -> kernel::sync::MutexGuard<'a, State> {
        let Some(f) = g.floor else {
            return g;
        };
        if f.writing {
            self.wait_changed(&mut g);
            return g;
        }
        g.floor = Some(Floor { writing: true, ..f });
        drop(g);
        let r = self.write_checkpoint(f.serial, false);
        let mut g = self.lock();
        g.floor = None;
        match r {
            Ok(_) => {
                g.checkpoint = g.checkpoint.max(f.serial);
                pr_warn!("cache bypassed: checkpoint {} written, so no record on the cache device is replayed over what the SAN gets from now on\n", f.serial);
            }
            Err(e) => {
                g.mode = Mode::Failed;
                pr_err!("cache bypassed, but its checkpoint cannot be written ({:?}): records on the cache device could be replayed over newer SAN data; the volume fails its I/O\n", e);
            }
        }
        self.changed.notify_all();
        g
    }

    /// The slot number on the cache device.
    pub(crate) fn slot_index(&self) -> u32 {
        self.slot_index
    }

    /// Changes the write policy: wt to wb at once; wb to wt at once for new writes, while the
    /// destager drains what is dirty (a write-through write over dirty data waits for it).
    pub(crate) fn set_policy(&self, p: Policy) -> Result {
        let mut slot = self.slot.lock();
        if slot.policy != p {
            self.rewrite_slot(&mut slot, |s| s.policy = p)?;
        }
        self.lock().policy = p;
        self.changed.notify_all();
        self.work.notify_all();
        Ok(())
    }

    /// The header block of the record of `rq`'s data (its checksum covers the data).
    fn header_block(&self, rq: &Request<Volume>, flags: u8, serial: u64) -> Result<PageBuf> {
        let head = self.header_bytes(rq, flags, serial)?;
        let b = PageBuf::new(self.sb.block_size as usize)?;
        b.write(0, &head)?;
        Ok(b)
    }

    /// The encoded record header of `rq`'s data (its checksum covers the data).
    fn header_bytes(&self, rq: &Request<Volume>, flags: u8, serial: u64) -> Result<[u8; RECORD_HEADER_BYTES]> {
        let mut h = RecordHeader {
            flags,
            origin: 0,
            len: u32::try_from(rq.sectors()).map_err(|_| EINVAL)?,
            uuid: self.uuid,
            serial,
            lba: rq.sector(),
            crc: 0,
        };
        let mut sum = h.checksum(core::iter::empty(), crc32c);
        rq.for_each_data(|d| sum = crc32c(sum, d));
        h.crc = sum;
        let mut head = [0u8; RECORD_HEADER_BYTES];
        h.encode(&mut head);
        Ok(head)
    }

    /// Whether SAN writes are allowed now (no lease enforced, or the lease still valid).
    fn san_writes_allowed(&self) -> bool {
        let until = self.lease_until_ms.load(Ordering::Acquire);
        until == 0 || self.now_ms() < until
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(0)
    }

    fn note_destaged(&self, bytes: u64) {
        let now = self.now_ms();
        let r = &self.rate;
        let total = r.window_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let start = r.window_start_ms.load(Ordering::Relaxed);
        if now.saturating_sub(start) >= 1000 {
            r.bytes_per_sec.store(total * 1000 / (now - start), Ordering::Relaxed);
            r.window_start_ms.store(now, Ordering::Relaxed);
            r.window_bytes.store(0, Ordering::Relaxed);
        }
    }

    fn destage_rate(&self) -> u64 {
        let r = &self.rate;
        let idle = self.now_ms().saturating_sub(r.window_start_ms.load(Ordering::Relaxed));
        if idle >= 2000 {
            // No window closed lately: what the open window holds over its length.
            r.window_bytes.load(Ordering::Relaxed) * 1000 / idle
        } else {
            r.bytes_per_sec.load(Ordering::Relaxed)
        }
    }

    /// Shows sysfs file `i` of [`SYSFS`].
    pub(crate) fn sysfs_show(&self, i: usize, w: &mut kernel::str::Formatter<'_>) -> Result {
        use core::fmt::Write;
        let s = self.snapshot();
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let v = match i {
            0 => return w.write_fmt(fmt!("{}\n", s.state())).map_err(|_| EINVAL),
            1 => return w.write_fmt(fmt!("{}\n", s.policy.name())).map_err(|_| EINVAL),
            2 => s.dirty_bytes,
            3 => s.cached_bytes,
            4 => s.last_serial,
            5 => s.checkpoint,
            6 => self.destage_rate(),
            7 => l(&c.destaged_bytes),
            8 => l(&c.read_hits),
            9 => l(&c.read_misses),
            10 => l(&c.cache_errors),
            11 => l(&c.san_errors),
            12 => l(&c.batch_overlaps),
            13 => l(&c.write_waits),
            14 => l(&self.tunables.batch_sectors),
            15 => l(&self.tunables.batch_records),
            16 => l(&self.tunables.destage_concurrency),
            17 => u64::from(s.destage_failures),
            18 => l(&self.tunables.destage_paused),
            19 => l(&self.tunables.destage_delay_ms),
            20 => u64::from(self.lock().drain),
            21 => l(&c.destage_batches),
            22 => l(&self.tunables.read_populate),
            23 => l(&c.populated_bytes),
            24 => {
                let until = self.lease_until_ms.load(Ordering::Acquire);
                if until == 0 { 0 } else { until.saturating_sub(self.now_ms()) }
            }
            25 => u64::from(!self.san_writes_allowed()),
            26 => l(&self.tunables.san_group),
            27 => l(&c.turn_waits),
            28 => l(&c.fast_writes),
            29 => l(&c.fenced_batches),
            _ => return Err(EINVAL),
        };
        w.write_fmt(fmt!("{v}\n")).map_err(|_| EINVAL)
    }

    /// Stores a tunable (sysfs file `i` of [`SYSFS`]).
    pub(crate) fn sysfs_store(&self, i: usize, val: &[u8]) -> Result {
        let (t, lo, hi) = match i {
            14 => (&self.tunables.batch_sectors, 8, 1 << 20),
            15 => (&self.tunables.batch_records, 1, 1 << 16),
            16 => (&self.tunables.destage_concurrency, 1, 1024),
            18 => (&self.tunables.destage_paused, 0, 1),
            19 => (&self.tunables.destage_delay_ms, 0, 3_600_000),
            22 => (&self.tunables.read_populate, 0, 1),
            26 => (&self.tunables.san_group, 0, 65535),
            24 => {
                // Validity from now in ms; 0 stops enforcing (the volume runs without a lease).
                let ms = crate::pfcore::attr::parse_u64(val).map_err(|_| EINVAL)?;
                if ms > 3_600_000 {
                    return Err(ERANGE);
                }
                let until = if ms == 0 { 0 } else { self.now_ms().saturating_add(ms).max(1) };
                self.lease_until_ms.store(until, Ordering::Release);
                self.changed.notify_all();
                self.work.notify_all();
                return Ok(());
            }
            20 => {
                // Only 1: a drain ends by itself when nothing is dirty.
                if crate::pfcore::attr::parse_u64(val).map_err(|_| EINVAL)? != 1 {
                    return Err(EINVAL);
                }
                self.lock().drain = true;
                self.work.notify_all();
                return Ok(());
            }
            _ => return Err(EACCES),
        };
        let n = crate::pfcore::attr::parse_u64(val).map_err(|_| EINVAL)?;
        if !(lo..=hi).contains(&n) {
            return Err(ERANGE);
        }
        t.store(n, Ordering::Relaxed);
        self.work.notify_all();
        Ok(())
    }
}

/// Request handling with a cache (called from `queue_rq` for the fast path, from
/// [`Volume::process`] for the rest).
impl Volume {
    /// The fast path of a write-back write, called from `queue_rq`. When the write can start
    /// at once (the volume is write-back and healthy, nothing that goes to the SAN is in flight
    /// on its blocks, the log has room, a fast-path slot is free), it is submitted to flash here
    /// and acknowledged from the flash write's completion; the next holder of the state lock
    /// indexes it ([`Cache::lock`]). Otherwise the request is given back for the worker
    /// ([`Volume::cache_write`]), which may wait.
    pub(crate) fn write_now(&self, c: &Cache, wq: &WorkQueue, rq: Request<Self>) -> Option<Request<Self>> {
        if rq.op() != Op::Write || rq.in_flush_seq() {
            return Some(rq);
        }
        let (lba, len) = (rq.sector(), rq.sectors());
        let Ok(len32) = u32::try_from(len) else {
            return Some(rq);
        };
        let footprint = RecordHeader::footprint(len32, c.sb.block_size);
        if len32 == 0 || len32 > MAX_REQUEST_SECTORS || footprint > u64::from(c.sb.segment_sectors) {
            return Some(rq);
        }
        let Some(token) = c.early.take() else {
            return Some(rq);
        };
        let _noio = thread::NoIo::enter();
        let mut g = c.lock();
        let ready = g.mode == Mode::Normal && g.policy == Policy::WriteBack && !g.overlaps_inflight(lba, len, true);
        // No room, or an error making room (no memory): the worker waits for room, or reports
        // the error when it meets it again.
        let placed = if ready { g.place(footprint).ok().flatten() } else { None };
        let placed = placed.filter(|&(seg, _)| g.reserve_record(seg).is_ok());
        let started = placed.and_then(|(seg, off)| g.begin_as(lba, len, false, true).ok().map(|s| (s, seg, off)));
        let Some((serial, seg, off)) = started else {
            drop(g);
            c.early.put(token);
            return Some(rq);
        };
        g.hold(seg, 1);
        g.wb_submitted = g.wb_submitted.max(serial);
        drop(g);

        let at = c.seg_sector(seg) + off;
        let rec = Rec { serial, lba, len };
        c.early.set(token, &EarlyWrite { seg, flash: at + c.sb.block_sectors(), rec });
        let block = c.sb.block_size as usize;
        let r = match c.header_bytes(&rq, RECORD_DIRTY, serial).and_then(|h| rq.set_head(&h)) {
            Ok(()) => rq.write_async(&c.dev, at, block, &self.bioset, wq, token),
            Err(e) => Err((rq, e)),
        };
        let Err((rq, _)) = r else {
            bump(&c.counters.fast_writes, 1);
            return None;
        };
        // Not submitted (no memory for its bio): undo, and let the worker try again.
        let mut g = c.lock();
        g.end(serial);
        g.hold(seg, -1);
        drop(g);
        c.early.put(token);
        c.changed.notify_all();
        Some(rq)
    }

    /// Fast-path write `token` failed on flash (process context): it was not acknowledged;
    /// the cache device is treated as failed and the request handled as the worker would.
    pub(crate) fn fast_write_failed(&self, c: &Cache, rq: Request<Self>, token: usize, err: Error) {
        let e = c.early.get(token);
        c.early.put(token);
        let mut g = c.lock();
        if let Some(e) = e {
            g.end(e.rec.serial);
            g.hold(e.seg, -1);
        }
        bump(&c.counters.cache_errors, 1);
        g.cache_failed();
        let mode = g.mode;
        drop(g);
        c.changed.notify_all();
        let now = if mode == Mode::Bypass { "bypassing the cache" } else { "failing its I/O" };
        pr_err!("cache device write failed ({:?}); the volume is now {}\n", err, now);
        // Bypass: the write goes to the SAN; failed: it fails.
        self.process(rq);
    }

    /// A write: logged on flash (wb: dirty; wt: a clean copy, with the SAN write in parallel).
    pub(crate) fn cache_write(&self, c: &Cache, rq: &Request<Self>) -> Result {
        let (lba, len) = (rq.sector(), rq.sectors());
        let len32 = u32::try_from(len).map_err(|_| EINVAL)?;
        let footprint = RecordHeader::footprint(len32, c.sb.block_size);
        if len32 == 0 || len32 > MAX_REQUEST_SECTORS || footprint > u64::from(c.sb.segment_sectors) {
            // The queue limits keep requests below this; never wait for room that cannot exist.
            return Err(EINVAL);
        }
        let mut g = c.lock();
        // `write_waits` counts writes that waited, once each (a wait is re-checked every
        // `WAIT_SLICE_MS`).
        let mut waited = false;
        let mut count_wait = |c: &Cache| {
            if !core::mem::replace(&mut waited, true) {
                bump(&c.counters.write_waits, 1);
            }
        };
        let (serial, seg, off, wt) = loop {
            match g.mode {
                Mode::Failed => return Err(EIO),
                Mode::Bypass if g.floor.is_some() => {
                    // Nothing more goes to the SAN before the switch's checkpoint is written.
                    g = c.settle_floor(g);
                    continue;
                }
                Mode::Bypass if !c.san_writes_allowed() => {
                    // Fenced: wait for the lease's renewal (its store notifies `changed`).
                    c.wait_changed(&mut g);
                    continue;
                }
                Mode::Bypass => {
                    drop(g);
                    return self.san_request(c, rq);
                }
                Mode::Normal => {}
            }
            let wt = g.policy == Policy::WriteThrough;
            // A write-through write goes to the SAN now: it waits for older dirty data of its
            // blocks to be destaged first (else a replay could overwrite it) and for any write in
            // flight on its blocks (the SAN and the index must agree on the last one).
            if wt && !c.san_writes_allowed() {
                // Fenced: the lease may be another host's by now; wait for its renewal.
                count_wait(c);
                c.wait_changed(&mut g);
                continue;
            }
            let blocked = g.overlaps_inflight(lba, len, !wt) || (wt && g.overlaps_dirty(lba, len));
            if !blocked {
                if let Some((seg, off)) = g.place(footprint)? {
                    g.reserve_record(seg)?;
                    let serial = g.begin(lba, len, wt)?;
                    g.hold(seg, 1);
                    if !wt {
                        g.wb_submitted = g.wb_submitted.max(serial);
                    }
                    break (serial, seg, off, wt);
                }
            }
            if g.log_at_limit {
                // The log's next segment is past the slot's log limit: move it on.
                drop(g);
                if let Err(e) = c.extend_log() {
                    bump(&c.counters.cache_errors, 1);
                    pr_err!("cannot write the slot to extend the log ({:?})\n", e);
                    g = c.lock();
                    g.cache_failed();
                    c.changed.notify_all();
                    // Bypass (through its checkpoint) or failed: the loop says.
                    continue;
                }
                g = c.lock();
                continue;
            }
            count_wait(c);
            // Room (or the SAN copy of older dirty data) is what is missing: destage now.
            g.drain = true;
            c.work.notify_all();
            c.wait_changed(&mut g);
        };
        drop(g);

        let at = c.seg_sector(seg) + off;
        let flash = at + c.sb.block_sectors();
        let flags = if wt { 0 } else { RECORD_DIRTY };

        // `Err`: the record could not be built (no memory, or data the record bio cannot hold):
        // nothing was written, an error for this request only. `Ok((flash, san))`: how the
        // writes went.
        let result = (|| -> Result<(Result, Result)> {
            let hb = c.header_block(rq, flags, serial)?;
            pin_init::stack_pin_init!(let flash_io = IoSet::new());
            pin_init::stack_pin_init!(let san_io = IoSet::new());
            let dir = if rq.is_fua() { Dir::WriteFua } else { Dir::Write };
            let mut b = Bio::new(&c.dev, at, rq.record_vecs(), dir, &self.bioset)?;
            b.add_buf(&hb, 0, hb.len())?;
            b.add_request_data(rq)?;
            flash_io.as_ref().submit(b);
            let mut san = Ok(());
            if wt {
                let mut bios = KVec::new();
                san = Bio::clone_request(rq, 0, len, &self.backing, lba, &self.bioset, &mut bios);
                for b in bios {
                    san_io.as_ref().submit(b);
                }
            }
            let f = flash_io.as_ref().wait();
            let s = san_io.as_ref().wait().and(san);
            if wt && s.is_ok() {
                c.san_unflushed.store(true, Ordering::Release);
            }
            Ok((f, s))
        })();

        let mut g = c.lock();
        g.end(serial);
        g.hold(seg, -1);
        let rec = Rec { serial, lba, len };
        // The destager is woken when a full batch is ready; younger, smaller ones wait for its
        // timer (`destage_delay_ms`).
        let wake = !wt && g.dirty_sectors >= c.tunables.batch_sectors.load(Ordering::Relaxed);
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                drop(g);
                c.changed.notify_all();
                pr_warn!("a write of {} sectors at {} could not become a record ({:?}); it fails\n", len, lba, e);
                return Err(e);
            }
        };
        if !wt && g.mode != Mode::Normal {
            // The cache failed while this write-back write was in flight: it is not
            // acknowledged from flash. Bypassing, it goes to the SAN (after the switch's
            // checkpoint, which keeps its record, if it landed, from ever being replayed);
            // failed, it fails.
            drop(g);
            c.changed.notify_all();
            return self.cache_write(c, rq);
        }
        let out = match result {
            (Ok(()), Ok(())) => match g.add_record(seg, rec, flash, !wt) {
                Ok(()) => {
                    if !wt && g.dirty_since_ms.is_none() {
                        g.dirty_since_ms = Some(c.now_ms());
                    }
                    Ok(())
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
                bump(&c.counters.cache_errors, 1);
                g.cache_failed();
                if g.mode == Mode::Bypass {
                    drop(g);
                    c.changed.notify_all();
                    pr_err!("cache device write failed ({:?}); no dirty data: bypassing the cache\n", e);
                    // Through the top of the path: after the switch's checkpoint.
                    return self.cache_write(c, rq);
                }
                pr_err!("cache device write failed ({:?}) with dirty data: the volume fails its I/O\n", e);
                Err(EIO)
            }
            (Err(_), Ok(())) => {
                // Write-through: the SAN has the data; stop using the cache.
                bump(&c.counters.cache_errors, 1);
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
        c.changed.notify_all();
        if wake {
            c.work.notify_all();
        }
        out
    }

    /// A read: the parts held on flash from flash, the rest from the SAN.
    pub(crate) fn cache_read(&self, c: &Cache, rq: &Request<Self>) -> Result {
        let (lba, len) = (rq.sector(), rq.sectors());
        let mut pieces = Pieces::new();
        let mut g = c.lock();
        match g.mode {
            Mode::Failed => return Err(EIO),
            Mode::Bypass => {
                drop(g);
                return self.san_request(c, rq);
            }
            Mode::Normal => {}
        }
        let mut err = Ok(());
        extent::walk(&g.index, lba, lba + len, |s, e, x| {
            if err.is_ok() {
                err = pieces.push((s, e - s, x.map(|x| x.flash)), GFP_IO_PATH).map_err(Error::from);
            }
        });
        err?;
        for &(_, _, f) in pieces.iter() {
            if let Some(f) = f {
                g.hold(c.seg_of(f), 1);
            }
        }
        // Population: a read that misses wholly is kept on flash as a clean record, if there is
        // room now (it never waits for any) and no write is in flight on its blocks (that
        // write's data, not the SAN's, is the newest). Its serial is taken now and its blocks
        // are marked in flight: writes that come while it runs wait for it and get higher
        // serials, so the index never prefers its SAN copy over newer data.
        let mut fill = None;
        let whole_miss = pieces.len() == 1 && pieces.iter().all(|p| p.2.is_none());
        if whole_miss
            && c.tunables.read_populate.load(Ordering::Relaxed) != 0
            && !g.overlaps_inflight(lba, len, false)
        {
            let footprint = u32::try_from(len).map(|l| RecordHeader::footprint(l, c.sb.block_size));
            if let Ok(Ok(Some((seg, off)))) = footprint.map(|f| g.place(f)) {
                if let Ok(serial) = g.reserve_record(seg).and_then(|()| g.begin(lba, len, true)) {
                    g.hold(seg, 1);
                    fill = Some((serial, seg, c.seg_sector(seg) + off));
                }
            }
        }
        // A read does not wait for the slot write that lets the log go on; it asks for it
        // after its own I/O, for the next reads to populate.
        let extend = fill.is_none() && g.log_at_limit;
        drop(g);

        let mut flash_bios = KVec::new();
        let mut san_bios = KVec::new();
        let mut built = Ok(());
        for &(s, n, f) in pieces.iter() {
            let r = match f {
                Some(f) => Bio::clone_request(rq, s - lba, n, &c.dev, f, &self.bioset, &mut flash_bios),
                None => Bio::clone_request(rq, s - lba, n, &self.backing, s, &self.bioset, &mut san_bios),
            };
            if r.is_err() {
                built = r;
                break;
            }
        }
        let hit = san_bios.is_empty();
        let (flash_r, san_r) = match built {
            Err(e) => (Ok(()), Err(e)),
            Ok(()) => {
                pin_init::stack_pin_init!(let flash_io = IoSet::new());
                pin_init::stack_pin_init!(let san_io = IoSet::new());
                for b in flash_bios {
                    flash_io.as_ref().submit(b);
                }
                for b in san_bios {
                    san_io.as_ref().submit(b);
                }
                (flash_io.as_ref().wait(), san_io.as_ref().wait())
            }
        };

        let mut g = c.lock();
        for &(_, _, f) in pieces.iter() {
            if let Some(f) = f {
                g.hold(c.seg_of(f), -1);
            }
        }
        let retry_on_san = match flash_r {
            Ok(()) => false,
            Err(e) => {
                bump(&c.counters.cache_errors, 1);
                g.cache_failed();
                let now = if g.mode == Mode::Bypass { "bypassing the cache" } else { "failed" };
                pr_err!("cache device read failed ({:?}); volume now {}\n", e, now);
                true
            }
        };
        let mode = g.mode;
        drop(g);
        if let Some((serial, seg, at)) = fill {
            // Every path ends the in-flight mark (it holds back writes and the checkpoint).
            // Not built (no memory, an odd request): not kept, and not a cache failure.
            let write = match san_r {
                Ok(()) => self.populate(c, rq, serial, at).ok(),
                Err(_) => None,
            };
            let mut g = c.lock();
            g.end(serial);
            g.hold(seg, -1);
            match write {
                Some(Ok(())) => {
                    let rec = Rec { serial, lba, len };
                    if g.add_record(seg, rec, at + c.sb.block_sectors(), false).is_ok() {
                        bump(&c.counters.populated_bytes, len * 512);
                    } else {
                        // No memory to index it: forget it (the SAN has the data).
                        let _ = g.invalidate(lba, len);
                    }
                }
                None => {}
                Some(Err(e)) => {
                    bump(&c.counters.cache_errors, 1);
                    g.cache_failed();
                    pr_err!("cache device write (read population) failed ({:?})\n", e);
                }
            }
        }
        c.changed.notify_all();
        if extend {
            if let Err(e) = c.extend_log() {
                pr_warn!("cannot write the slot to extend the log ({:?})\n", e);
            }
        }
        if retry_on_san {
            // Clean data only (bypass): the SAN has it. Dirty data: the volume has failed.
            return if mode == Mode::Bypass { self.san_request(c, rq) } else { Err(EIO) };
        }
        bump(if hit { &c.counters.read_hits } else { &c.counters.read_misses }, 1);
        san_r
    }

    /// Writes the data a read brought from the SAN to flash at `at` as a clean record: `Err`
    /// when the record could not be built, else how its write went.
    fn populate(&self, c: &Cache, rq: &Request<Self>, serial: u64, at: u64) -> Result<Result> {
        let hb = c.header_block(rq, 0, serial)?;
        let mut b = Bio::new(&c.dev, at, rq.record_vecs(), Dir::Write, &self.bioset)?;
        b.add_buf(&hb, 0, hb.len())?;
        b.add_request_data(rq)?;
        let mut bios = KVec::new();
        bios.push(b, GFP_IO_PATH)?;
        Ok(io::run(bios))
    }

    /// A flush: what the completed writes live on is made stable: the cache device when it
    /// holds acknowledged writes (wb, or dirty data left from wb), the SAN when writes went
    /// there since its last flush (always in wt; in wb after discards, write-zeroes, or
    /// write-through writes made before a switch to wb).
    pub(crate) fn cache_flush(&self, c: &Cache) -> Result {
        let (mode, policy, dirty) = {
            let g = c.lock();
            (g.mode, g.policy, g.dirty_sectors)
        };
        if mode == Mode::Failed {
            return Err(EIO);
        }
        let san_writes = c.san_unflushed.swap(false, Ordering::AcqRel);
        if san_writes || mode == Mode::Bypass || policy == Policy::WriteThrough {
            if let Err(e) = io::flush(&self.backing) {
                c.san_unflushed.store(true, Ordering::Release);
                return Err(e);
            }
        }
        if mode == Mode::Normal && (policy == Policy::WriteBack || dirty > 0) {
            if let Err(e) = io::flush(&c.dev) {
                // What the flash acknowledged may not be stable: the cache has failed (dirty
                // data: the volume fails; none: bypass). The flush fails either way.
                bump(&c.counters.cache_errors, 1);
                let mut g = c.lock();
                g.cache_failed();
                let now = if g.mode == Mode::Bypass { "bypassing the cache" } else { "failing its I/O" };
                drop(g);
                c.changed.notify_all();
                pr_err!("cache device flush failed ({:?}); the volume is now {}\n", e, now);
                return Err(e);
            }
        }
        Ok(())
    }

    /// A discard or write-zeroes: waits for dirty data and writes in flight on its range, then
    /// goes to the SAN; the cache forgets the range.
    pub(crate) fn cache_san_op(&self, c: &Cache, rq: &Request<Self>) -> Result {
        let (lba, len) = (rq.sector(), rq.sectors());
        let mut g = c.lock();
        let serial = loop {
            match g.mode {
                Mode::Failed => return Err(EIO),
                Mode::Bypass if g.floor.is_some() => {
                    // Nothing more goes to the SAN before the switch's checkpoint is written.
                    g = c.settle_floor(g);
                    continue;
                }
                Mode::Bypass if !c.san_writes_allowed() => {
                    // Fenced: wait for the lease's renewal (its store notifies `changed`).
                    c.wait_changed(&mut g);
                    continue;
                }
                Mode::Bypass => {
                    drop(g);
                    return self.san_request(c, rq);
                }
                Mode::Normal => {}
            }
            if !g.overlaps_inflight(lba, len, false)
                && !g.overlaps_dirty(lba, len)
                && c.san_writes_allowed()
            {
                g.invalidate(lba, len)?;
                break g.begin(lba, len, true)?;
            }
            if g.overlaps_dirty(lba, len) {
                // Dirty data of the range goes to the SAN first: now, not on the destage timer.
                g.drain = true;
            }
            c.work.notify_all();
            c.wait_changed(&mut g);
        };
        drop(g);
        let r = self.san_request(c, rq);
        c.lock().end(serial);
        c.changed.notify_all();
        r
    }

    /// The request sent to the SAN as it is; waits for it. A write that completes there is
    /// noted for the next flush ([`Cache::san_unflushed`]).
    fn san_request(&self, c: &Cache, rq: &Request<Self>) -> Result {
        let mut bios = KVec::new();
        Bio::clone_request(rq, 0, rq.sectors(), &self.backing, rq.sector(), &self.bioset, &mut bios)?;
        io::run(bios)?;
        if rq.op() != Op::Read {
            c.san_unflushed.store(true, Ordering::Release);
        }
        Ok(())
    }
}

/// The destager: runs in its own kernel thread while the volume is up.
pub(crate) fn destager(v: &Volume) {
    let Some(c) = v.cache() else {
        return;
    };
    let bset = match KBox::pin_init(BioSet::new(), GFP_KERNEL) {
        Ok(b) => b,
        Err(e) => {
            pr_err!("destager: no bio set ({:?}); the volume's dirty data will wait\n", e);
            return;
        }
    };
    while !thread::should_stop() {
        match destage_once(v, c, &bset) {
            Ok(Next::Again) => {}
            Ok(Next::Sleep(ms)) => {
                let mut g = c.lock();
                if !thread::should_stop() {
                    let ms = u32::try_from(ms.clamp(1, 1000)).unwrap_or(1000);
                    let _ = c.work.wait_interruptible_timeout(&mut g, kernel::time::msecs_to_jiffies(ms));
                }
            }
            Err(e) => {
                bump(&c.counters.san_errors, 1);
                let attempt = {
                    let mut g = c.lock();
                    g.destage_failures = g.destage_failures.saturating_add(1);
                    g.destage_failures
                };
                pr_warn!("destage batch failed ({:?}); retry {} with backoff\n", e, attempt);
                let ms = destage::retry_delay_ms(attempt - 1);
                let mut g = c.lock();
                if !thread::should_stop() {
                    let _ = c.work.wait_interruptible_timeout(&mut g, kernel::time::msecs_to_jiffies(ms as u32));
                }
            }
        }
    }
}

/// What the destager does after [`destage_once`].
enum Next {
    /// Look again at once.
    Again,
    /// Sleep at most this many milliseconds (or until woken).
    Sleep(u64),
}

/// Whether the destager may write to the SAN at all now: the cache is healthy, destaging is not
/// paused and the lease (if enforced) is valid.
fn destager_may_write(c: &Cache, g: &State) -> bool {
    g.mode == Mode::Normal
        && c.tunables.destage_paused.load(Ordering::Relaxed) == 0
        && c.san_writes_allowed()
}

/// Whether the destager would write to the SAN now if a batch were due (then, in a SAN group,
/// it takes a turn first).
fn may_destage(c: &Cache) -> bool {
    let g = c.lock();
    !g.dirty_q.is_empty() && destager_may_write(c, &g)
}

/// Waits for this volume's turn in SAN group `group`; `None` when the thread is asked to stop.
fn take_turn(c: &Cache, group: u64) -> Result<Option<Turn>> {
    let turn = Turn::ask(c.destager_id, group)?;
    let mut waited = false;
    while !turn.try_start() {
        if thread::should_stop() {
            return Ok(None);
        }
        if !waited {
            bump(&c.counters.turn_waits, 1);
            waited = true;
        }
        // The turn is polled: the group's volumes do not know each other's wait queues.
        let mut g = c.lock();
        let _ = c.work.wait_interruptible_timeout(&mut g, kernel::time::msecs_to_jiffies(5));
    }
    Ok(Some(turn))
}

/// Why a destage batch was abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Abandon {
    /// The lease ran out while it ran.
    Fenced,
    /// The cache failed while it ran (a switch to bypass writes its own checkpoint).
    CacheFailed,
}

/// Destages one batch when one is due.
fn destage_once(v: &Volume, c: &Cache, bset: &BioSet) -> Result<Next> {
    let group = c.tunables.san_group.load(Ordering::Relaxed);
    // Held until the batch is done (or found not due).
    let _turn = if group != 0 && may_destage(c) {
        match take_turn(c, group)? {
            Some(t) => Some(t),
            None => return Ok(Next::Again),
        }
    } else {
        None
    };
    let mut recs: KVec<Rec> = KVec::new();
    let mut pieces = Pieces::new();
    let checkpoint = {
        let mut g = c.lock();
        if !destager_may_write(c, &g) {
            // Failed or bypassed cache, paused, or fenced (the lease may be another host's by
            // now); a renewal or a resume wakes us.
            return Ok(Next::Sleep(1000));
        }
        if g.dirty_q.is_empty() {
            g.drain = false;
            g.dirty_since_ms = None;
            // Nothing dirty: every completed write is on the SAN (write-through ones too); move
            // the checkpoint up to what has completed so that it tells the truth.
            let safe = g.safe_serial();
            if safe <= g.checkpoint {
                return Ok(Next::Sleep(1000));
            }
            safe
        } else {
            // Due: a drain, write-through (its dirty data is what is left from wb), a full
            // batch, or data that has waited `destage_delay_ms`.
            let delay = c.tunables.destage_delay_ms.load(Ordering::Relaxed);
            let waited = g.dirty_since_ms.map_or(delay, |t| c.now_ms().saturating_sub(t));
            let full = g.dirty_sectors >= c.tunables.batch_sectors.load(Ordering::Relaxed);
            if !(g.drain || g.policy == Policy::WriteThrough || full || waited >= delay) {
                return Ok(Next::Sleep(delay - waited));
            }
            let limits = BatchLimits {
                max_sectors: c.tunables.batch_sectors.load(Ordering::Relaxed).max(1),
                max_records: c.tunables.batch_records.load(Ordering::Relaxed).max(1) as usize,
            };
            let batch = destage::plan_batch(g.dirty_q.iter().map(|(s, r)| (*s, r.len)), limits, g.safe_serial());
            let Some(checkpoint) = batch.checkpoint else {
                // The oldest dirty write is still in flight: its completion comes soon.
                return Ok(Next::Sleep(10));
            };
            let mut err = Ok(());
            for (serial, r) in g.dirty_q.iter().take(batch.records) {
                recs.push(*r, GFP_IO_PATH)?;
                extent::walk(&g.index, r.lba, r.lba + r.len, |s, e, x| {
                    if let Some(x) = x {
                        if x.serial == *serial && x.dirty && err.is_ok() {
                            err = pieces.push((s, e - s, Some(x.flash)), GFP_IO_PATH).map_err(Error::from);
                        }
                    }
                });
            }
            err?;
            for &(_, _, f) in pieces.iter() {
                if let Some(f) = f {
                    g.hold(c.seg_of(f), 1);
                }
            }
            checkpoint
        }
    };
    pieces.sort_unstable_by_key(|p| p.0);
    let overlaps = destage::count_overlaps(pieces.iter().map(|p| (p.0, p.1)));
    bump(&c.counters.batch_overlaps, overlaps);

    // `Ok(Err(_))`: abandoned (records stay dirty, no checkpoint).
    let io_result = (|| -> Result<core::result::Result<u64, Abandon>> {
        // Read the batch's data from the log in few large reads: pieces in flash order, one
        // buffer per read; then each piece goes to the SAN from its place in its read's buffer.
        pieces.sort_unstable_by_key(|p| p.2);
        let mut plan: KVec<destage::LogRead> = KVec::new();
        let mut err = Ok(());
        destage::plan_reads(pieces.iter().map(|p| (p.2.unwrap_or(0), p.1)), LOG_READ_LIMITS, |r| {
            if err.is_ok() {
                err = plan.push(r, GFP_IO_PATH).map_err(Error::from);
            }
        });
        err?;
        let mut bufs = KVec::with_capacity(plan.len(), GFP_IO_PATH)?;
        for r in plan.iter() {
            bufs.push(PageBuf::new(r.sectors as usize * 512)?, GFP_IO_PATH)?;
        }
        let mut reads = KVec::new();
        for (r, b) in plan.iter().zip(bufs.iter()) {
            let mut bio = Bio::new(&c.dev, r.start, 256, Dir::Read, bset)?;
            bio.add_buf(b, 0, b.len())?;
            reads.push(bio, GFP_IO_PATH)?;
        }
        if let Err(e) = io::run(reads) {
            bump(&c.counters.cache_errors, 1);
            c.lock().cache_failed();
            pr_err!("destager: cache device read failed ({:?})\n", e);
            return Err(e);
        }
        let mut writes = KVec::new();
        let mut bytes = 0u64;
        for (r, b) in plan.iter().zip(bufs.iter()) {
            let mine = pieces.get(r.first..r.first + r.count).ok_or(EINVAL)?;
            for &(lba, n, f) in mine {
                // Within the read by `plan_reads`' rule; checked all the same.
                let off = f.and_then(|f| f.checked_sub(r.start)).ok_or(EINVAL)? as usize * 512;
                let len = n as usize * 512;
                let mut bio = Bio::new(&v.backing, lba, 256, Dir::Write, bset)?;
                bio.add_buf(b, off, len)?;
                writes.push(bio, GFP_IO_PATH)?;
                bytes += len as u64;
            }
        }
        // The writes go out in groups of `destage_concurrency`, one group after another; the
        // lease is checked before each group (a slow SAN, the usual reason a lease runs out,
        // makes a batch outlast it): once it has run out the batch is abandoned, its records
        // stay dirty and no checkpoint is written.
        let group = c.tunables.destage_concurrency.load(Ordering::Relaxed).max(1) as usize;
        let mut groups = KVec::new();
        let mut now = KVec::new();
        for b in writes {
            now.push(b, GFP_IO_PATH)?;
            if now.len() >= group {
                groups.push(core::mem::take(&mut now), GFP_IO_PATH)?;
            }
        }
        if !now.is_empty() {
            groups.push(now, GFP_IO_PATH)?;
        }
        for g in groups.drain_all() {
            if !c.san_writes_allowed() {
                return Ok(Err(Abandon::Fenced));
            }
            io::run(g)?;
        }
        io::flush(&v.backing)?;
        match c.write_checkpoint(checkpoint, true)? {
            true => Ok(Ok(bytes)),
            false => Ok(Err(Abandon::CacheFailed)),
        }
    })();

    let mut g = c.lock();
    for &(_, _, f) in pieces.iter() {
        if let Some(f) = f {
            g.hold(c.seg_of(f), -1);
        }
    }
    let bytes = match io_result {
        Ok(Ok(b)) => b,
        Ok(Err(why)) => {
            drop(g);
            if why == Abandon::Fenced {
                bump(&c.counters.fenced_batches, 1);
                pr_warn!("destager: the lease ran out during a batch; the batch is abandoned (its records stay dirty)\n");
            }
            c.changed.notify_all();
            return Ok(Next::Sleep(1000));
        }
        Err(e) => {
            drop(g);
            c.changed.notify_all();
            return Err(e);
        }
    };
    g.checkpoint = g.checkpoint.max(checkpoint);
    g.destage_failures = 0;
    // What is left (less than a full batch, or the next batch would be due at once) waits for
    // the timer again: no dirty data waits much more than twice `destage_delay_ms`.
    g.dirty_since_ms = Some(c.now_ms());
    for r in recs.iter() {
        g.dirty_q.remove(&r.serial);
        match extent::mark_clean(&mut g.index, r.lba, r.len, r.serial) {
            Ok(d) => g.account(d),
            // No memory to re-insert the clean extent: drop it (the data is on the SAN).
            Err(_) => {
                let _ = extent::remove_record(&mut g.index, r.lba, r.len, r.serial).map(|d| g.account(d));
            }
        }
    }
    drop(g);
    bump(&c.counters.destaged_bytes, bytes);
    bump(&c.counters.destage_batches, 1);
    c.note_destaged(bytes);
    c.changed.notify_all();
    Ok(Next::Again)
}

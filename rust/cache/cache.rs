// SPDX-License-Identifier: GPL-2.0

//! The `Cache` type: a volume's cache device, its slot and the lock over its state; opening
//! it, the slot and checkpoint writes, and the record headers of requests.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kernel::prelude::*;
use kernel::sync::{new_condvar, new_mutex, Arc, CondVar, Mutex};

use crate::blk::bdev::BlockDev;
use crate::blk::bioset::BioSet;
use crate::blk::io::PageBuf;
use crate::blk::request::{Handler, Request};
use crate::blk::thread;
use crate::blk::GFP_IO_PATH;
use crate::klib::crc32c;
use crate::pfcore::admission::WriteView;
use crate::pfcore::format::{Checkpoint, RecordHeader, Superblock, RECORD_HEADER_BYTES};
use crate::pfcore::slot::Slot;
use crate::pfcore::policy::Policy;
use crate::pfcore::rebuild as rules;
use crate::pfcore::mode::{CacheState, Mode};

use super::attach::{Attached, Refusal, SlotClaim};
use super::peers::Replicas;
use super::rebuild;
use super::turns;
use super::early::{Early, EARLY_WORDS};
use super::state::{Floor, Pieces, State};
use super::stats::{Counters, Rate, Tunables};

/// Largest request with a cache, in sectors: a record (header block plus data pages) must fit
/// in one bio of at most `BIO_MAX_VECS` pages; the rebuild refuses longer records.
pub(crate) const MAX_REQUEST_SECTORS: u32 = rules::MAX_RECORD_SECTORS;

/// Longest a waiter for [`Cache::changed`] sleeps before it looks again, in ms.
const WAIT_SLICE_MS: u32 = 20;

/// What a request with a cache uses besides the cache: the volume's backing device (the SAN)
/// and its bio set. The volume owns both and lends them to each call.
pub(crate) struct Backend<'a> {
    pub(crate) san: &'a BlockDev,
    pub(crate) bioset: &'a BioSet,
}

/// A volume's cache: its device, slot and state.
///
/// Lock order: `slot` or `checkpoints` (never both), then `state`, which is a leaf. `state` is
/// never held across I/O: the data path and the destager take it to plan and to record results;
/// waits on `changed` and `work` release it. `slot` and `checkpoints` are held across the one
/// block write they order.
#[pin_data]
pub(crate) struct Cache {
    pub(super) dev: BlockDev,
    pub(super) sb: Superblock,
    pub(super) slot_index: u32,
    pub(super) uuid: [u8; 16],
    pub(super) first_segment: u64,
    /// Taken through [`Cache::lock`], which first indexes the fast-path writes that finished.
    #[pin]
    pub(super) state: Mutex<State>,
    /// Fast-path writes (lock-free; see [`Early`]).
    pub(super) early: Early,
    /// Notified when space is freed, an operation ends or a batch is checkpointed.
    #[pin]
    pub(super) changed: CondVar,
    /// Wakes the destager.
    #[pin]
    pub(super) work: CondVar,
    /// The slot as last written (policy changes rewrite it).
    #[pin]
    pub(super) slot: Mutex<Slot>,
    /// Serialises checkpoint writes (the destager's and a switch to bypass's), so that a seq
    /// is used once and the last written is the newest. Taken before `state`.
    #[pin]
    pub(super) checkpoints: Mutex<()>,
    pub(super) counters: Counters,
    pub(super) tunables: Tunables,
    pub(super) rate: Rate,
    pub(super) born: kernel::time::Instant<kernel::time::Monotonic>,
    /// SAN-write fence: the lease deadline the agent pushes (`lease_ms`), in ms since `born`;
    /// 0 when no lease is enforced (a volume run without the agent). Past it, nothing is
    /// written to the SAN (destage batches, write-through writes, discards, bypass writes)
    /// until the lease is renewed: another host may own the volume by then.
    pub(super) lease_until_ms: AtomicU64,
    /// A SAN write of the data path completed since the last SAN flush (write-through writes,
    /// discards, write-zeroes, requests passed to the SAN while bypassing): the next flush
    /// must flush the SAN too, whatever the policy is by then. Set before the write is
    /// acknowledged, taken by the flush before it flushes.
    pub(super) san_unflushed: AtomicBool,
    /// This volume's destager in the turns of its SAN group.
    pub(super) destager_id: u64,
    /// wbp: the replica set on the peers (none: no members). A leaf (also taken under
    /// `state`): cloned out, never held across I/O or while another lock is taken.
    #[pin]
    pub(super) peers: Mutex<Option<Arc<dyn Replicas>>>,
    /// The slot is this volume's while the cache lives (a forced attach of another volume
    /// never takes it back).
    _claim: SlotClaim,
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
    pub(crate) fn state(&self) -> CacheState {
        CacheState::of(self.mode, self.replaying, self.dirty_bytes)
    }
}

impl Cache {
    pub(super) fn seg_of(&self, flash: u64) -> usize {
        // A superblock's segments are never empty (`Superblock::decode`); checked all the same.
        let rel = flash.saturating_sub(self.sb.data_start).checked_div(u64::from(self.sb.segment_sectors)).unwrap_or(0);
        rel.saturating_sub(self.first_segment) as usize
    }

    pub(super) fn seg_sector(&self, seg: usize) -> u64 {
        self.sb.segment_sector(self.first_segment + seg as u64)
    }

    /// Opens the cache of an attached slot: reads the checkpoint, scans the region and rebuilds
    /// the index of the writes after the checkpoint (they are replayed by the destager), with
    /// the attach rules of `pfcore::rebuild` (`replay`: the operator asks for a replay from the
    /// slot's floor when no checkpoint copy is readable; `fresh`: nothing is replayed, the
    /// checkpoint and the slot's floor move past every record). A slot this attach made is cleared
    /// again when the open fails, so that a refused volume keeps no room on the device.
    pub(crate) fn open(a: Attached, replay: bool, fresh: bool) -> Result<impl PinInit<Self, Error>, Refusal> {
        let Attached { dev, sb, slot_index, mut slot, claim, created, .. } = a;
        let st = match rebuild::state_from_flash(&dev, &sb, slot_index, &slot, replay, fresh) {
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
            tunables: Tunables::default(),
            rate: Rate::default(),
            born: kernel::time::Instant::now(),
            lease_until_ms: AtomicU64::new(0),
            san_unflushed: AtomicBool::new(false),
            destager_id: turns::new_id(),
            peers <- new_mutex!(None),
            _claim: claim,
        }))
    }

    /// Takes [`Cache::state`], after indexing the fast-path writes that finished: whoever
    /// holds the lock sees every acknowledged write in the index.
    pub(super) fn lock(&self) -> kernel::sync::MutexGuard<'_, State> {
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
    pub(super) fn wait_changed(&self, g: &mut kernel::sync::MutexGuard<'_, State>) {
        let _ = self.changed.wait_interruptible_timeout(g, kernel::time::msecs_to_jiffies(WAIT_SLICE_MS));
        self.reap(g);
    }

    /// Indexes every fast-path write whose flash write completed (its done bit is set before it
    /// is acknowledged).
    pub(super) fn reap(&self, g: &mut State) {
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

    /// What a replica of the volume is known by and sized for: its uuid and the bytes of its
    /// region on flash.
    pub(crate) fn replica_ident(&self) -> ([u8; 16], u64) {
        let segs = self.slot.lock().segments;
        (self.uuid, segs.saturating_mul(u64::from(self.sb.segment_sectors)).saturating_mul(512))
    }

    /// The cache device's block size in bytes (a record is a whole number of them).
    pub(crate) fn block_size(&self) -> u32 {
        self.sb.block_size
    }

    /// Rewrites the slot under `slot`'s lock with `change` applied (generation bumped); the
    /// copy in memory changes only once the block is written.
    pub(super) fn rewrite_slot(&self, slot: &mut Slot, change: impl FnOnce(&mut Slot)) -> Result {
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
    pub(super) fn extend_log(&self) -> Result {
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
    pub(super) fn write_checkpoint(&self, serial: u64, when_normal: bool) -> Result<bool> {
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
    pub(super) fn settle_floor<'a>(&'a self, mut g: kernel::sync::MutexGuard<'a, State>) -> kernel::sync::MutexGuard<'a, State> {
        let Some(f) = g.floor else {
            return g;
        };
        if f.writing {
            self.wait_changed(&mut g);
            return g;
        }
        g.floor = Some(Floor { writing: true, ..f });
        drop(g);
        let mut r = self.write_checkpoint(f.serial, false);
        // wbp: the members hold the records the switch covers too; a replay of their replicas
        // must not bring them back over what the SAN gets from now on.
        if r.is_ok() {
            if let Some(m) = self.peers() {
                r = m.checkpoint(f.serial).map(|()| true);
            }
        }
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

    /// Runs with policy `p` without changing the slot's (a wbp volume with fewer members than it
    /// asks for runs write-through: `replication::effective_policy`).
    pub(crate) fn run_as(&self, p: Policy) {
        self.lock().policy = p;
        self.changed.notify_all();
        self.work.notify_all();
    }

    /// Hands the cache the volume's replica set (none: no members).
    pub(crate) fn set_peers(&self, m: Option<Arc<dyn Replicas>>) {
        let old = core::mem::replace(&mut *self.peers.lock(), m);
        // Closed outside the lock: it stops threads.
        if let Some(old) = old {
            old.close();
        }
    }

    /// The volume's replica set, if it has members.
    pub(crate) fn peers(&self) -> Option<Arc<dyn Replicas>> {
        self.peers.lock().clone()
    }

    /// The header block of the record of `rq`'s data (its checksum covers the data).
    pub(super) fn header_block<H: Handler>(&self, rq: &Request<H>, flags: u8, serial: u64) -> Result<PageBuf> {
        let head = self.header_bytes(rq, flags, serial)?;
        let b = PageBuf::new(self.sb.block_size as usize)?;
        b.write(0, &head)?;
        Ok(b)
    }

    /// The encoded record header of `rq`'s data (its checksum covers the data).
    pub(super) fn header_bytes<H: Handler>(&self, rq: &Request<H>, flags: u8, serial: u64) -> Result<[u8; RECORD_HEADER_BYTES]> {
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

    /// What write admission (`pfcore::admission`) looks at for a write of `[lba, lba + len)`;
    /// the index and the in-flight set are searched only where the policy needs them.
    pub(super) fn write_view(&self, g: &State, lba: u64, len: u64) -> WriteView {
        let wt = g.policy == Policy::WriteThrough;
        WriteView {
            mode: g.mode,
            floor_pending: g.floor.is_some(),
            // Write-back in a healthy cache does not look at the lease: no clock read for it
            // on the fast path.
            san_allowed: (wt || g.mode != Mode::Normal) && self.san_writes_allowed(),
            write_through: wt,
            overlaps_san_in_flight: !wt && g.overlaps_inflight(lba, len, true),
            overlaps_in_flight: wt && g.overlaps_inflight(lba, len, false),
            overlaps_dirty: wt && g.overlaps_dirty(lba, len),
        }
    }

    /// Whether SAN writes are allowed now (no lease enforced, or the lease still valid).
    pub(super) fn san_writes_allowed(&self) -> bool {
        let until = self.lease_until_ms.load(Ordering::Acquire);
        until == 0 || self.now_ms() < until
    }

    pub(super) fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(0)
    }

    pub(super) fn now_ns(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_nanos()).unwrap_or(0)
    }

    pub(super) fn note_destaged(&self, bytes: u64) {
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

    pub(super) fn destage_rate(&self) -> u64 {
        let r = &self.rate;
        let idle = self.now_ms().saturating_sub(r.window_start_ms.load(Ordering::Relaxed));
        if idle >= 2000 {
            // No window closed lately: what the open window holds over its length.
            r.window_bytes.load(Ordering::Relaxed) * 1000 / idle
        } else {
            r.bytes_per_sec.load(Ordering::Relaxed)
        }
    }
}

/// Pieces of the index on flash (`(first sector, sectors, flash sector)`) that a read or a
/// destage batch is reading: their segments are not reused while this lives. Made under the
/// state lock ([`Cache::hold_pieces`]); its drop takes the lock to let them go, so it is never
/// dropped while the lock is held.
pub(super) struct HeldPieces<'a> {
    cache: &'a Cache,
    pieces: Pieces,
}

impl HeldPieces<'_> {
    /// Reorders the pieces (the same pieces stay held).
    pub(super) fn sort_by_key<K: Ord>(&mut self, key: impl FnMut(&(u64, u64, Option<u64>)) -> K) {
        self.pieces.sort_unstable_by_key(key);
    }
}

impl core::ops::Deref for HeldPieces<'_> {
    type Target = Pieces;

    fn deref(&self) -> &Pieces {
        &self.pieces
    }
}

impl Drop for HeldPieces<'_> {
    fn drop(&mut self) {
        let mut g = self.cache.lock();
        for &(_, _, f) in self.pieces.iter() {
            if let Some(f) = f {
                g.hold(self.cache.seg_of(f), -1);
            }
        }
    }
}

impl Cache {
    /// Holds the segments of `pieces` (`g` is the state lock) until the value returned drops.
    pub(super) fn hold_pieces(&self, g: &mut State, pieces: Pieces) -> HeldPieces<'_> {
        for &(_, _, f) in pieces.iter() {
            if let Some(f) = f {
                g.hold(self.seg_of(f), 1);
            }
        }
        HeldPieces { cache: self, pieces }
    }
}

/// An operation in flight: its serial in the in-flight set (it holds back overlapping requests
/// and the checkpoint) and, for one that writes a record, the segment it writes into (held).
/// Begun under the state lock ([`Cache::begin_op`]); ended by [`InFlightOp::end`] under the
/// lock, together with what records its result, or else by its drop, which takes the lock (so
/// it is never dropped while the lock is held).
pub(super) struct InFlightOp<'a> {
    cache: &'a Cache,
    serial: u64,
    seg: Option<usize>,
    ended: bool,
}

impl InFlightOp<'_> {
    /// Its serial.
    pub(super) fn serial(&self) -> u64 {
        self.serial
    }

    /// Ends it under the state lock `g` (the caller notifies `changed` once it is done).
    pub(super) fn end(mut self, g: &mut State) {
        g.end(self.serial);
        if let Some(s) = self.seg {
            g.hold(s, -1);
        }
        self.ended = true;
    }
}

impl Drop for InFlightOp<'_> {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let mut g = self.cache.lock();
        g.end(self.serial);
        if let Some(s) = self.seg {
            g.hold(s, -1);
        }
        drop(g);
        self.cache.changed.notify_all();
    }
}

impl Cache {
    /// Begins an operation on `[lba, lba + len)` (`san`: it goes to the SAN directly) under the
    /// state lock `g`, holding `seg` if it writes a record there.
    pub(super) fn begin_op(&self, g: &mut State, lba: u64, len: u64, san: bool, seg: Option<usize>) -> Result<InFlightOp<'_>> {
        let serial = g.begin(lba, len, san)?;
        if let Some(s) = seg {
            g.hold(s, 1);
        }
        Ok(InFlightOp { cache: self, serial, seg, ended: false })
    }
}

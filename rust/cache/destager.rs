// SPDX-License-Identifier: GPL-2.0

//! The destager: in its own kernel thread, it writes dirty data to the SAN in non-overlapping
//! batches (plan, read the log, write the SAN, flush it, checkpoint, record), taking turns with
//! the other volumes of its SAN group.

use core::sync::atomic::Ordering;

use kernel::prelude::*;

use crate::blk::bdev::BlockDev;
use crate::blk::bioset::BioSet;
use crate::blk::dir::Dir;
use crate::blk::io::{self, Bio, PageBuf};
use crate::blk::thread;
use crate::blk::GFP_IO_PATH;
use crate::pfcore::destage::{self, BatchLimits, Due, DueView};
use crate::pfcore::extent;
use crate::pfcore::policy::Policy;
use crate::pfcore::mode::Mode;
use super::turns::Turn;

use super::cache::{Cache, HeldPieces};
use super::state::{Pieces, Rec, State};
use super::stats::bump;

/// How the destager reads a batch from the log (`destage::plan_reads`): at most 1 MiB a read
/// (one bio of `BIO_MAX_VECS` pages), skipping at most 32 KiB of headers and superseded data
/// between two pieces.
const LOG_READ_LIMITS: destage::ReadLimits = destage::ReadLimits { max_sectors: 2048, max_gap: 64 };

/// What the destager does after a look at the queue.
enum Next {
    /// Look again at once.
    Again,
    /// Sleep at most this many milliseconds (or until woken).
    Sleep(u64),
}

/// Why a destage batch was abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Abandon {
    /// The lease ran out while it ran.
    Fenced,
    /// The cache failed while it ran (a switch to bypass writes its own checkpoint).
    CacheFailed,
    /// The volume closed while the members were persisting the checkpoint.
    Closing,
}

/// A batch taken from the destage queue: its records (oldest first), the pieces of the index
/// that are still theirs, and the checkpoint written once they are on the SAN. With nothing
/// dirty, a batch of no records only moves the checkpoint up to what has completed.
struct Batch<'a> {
    recs: KVec<Rec>,
    pieces: HeldPieces<'a>,
    checkpoint: u64,
}

/// The log reads of a batch (`destage::plan_reads`) and their buffers.
struct LogReads {
    plan: KVec<destage::LogRead>,
    bufs: KVec<PageBuf>,
}

impl Cache {
    /// The destager's loop: runs in its own kernel thread while the volume is up, writing to
    /// `san`.
    pub(crate) fn run_destager(&self, san: &BlockDev) {
        let bset = match KBox::pin_init(BioSet::new(), GFP_KERNEL) {
            Ok(b) => b,
            Err(e) => {
                pr_err!("destager: no bio set ({:?}); the volume's dirty data will wait\n", e);
                return;
            }
        };
        while !thread::should_stop() {
            match self.destage_once(san, &bset) {
                Ok(Next::Again) => {}
                Ok(Next::Sleep(ms)) => self.destager_sleep(ms),
                Err(e) => {
                    bump(&self.counters.san_errors, 1);
                    let attempt = {
                        let mut g = self.lock();
                        g.destage_failures = g.destage_failures.saturating_add(1);
                        g.destage_failures
                    };
                    pr_warn!("destage batch failed ({:?}); retry {} with backoff\n", e, attempt);
                    self.destager_sleep(destage::retry_delay_ms(attempt.saturating_sub(1)));
                }
            }
        }
    }

    /// Sleeps at most `ms` (1 ms to 1 s), or until woken through `work`.
    fn destager_sleep(&self, ms: u64) {
        let mut g = self.lock();
        if !thread::should_stop() {
            let ms = u32::try_from(ms.clamp(1, 1000)).unwrap_or(1000);
            let _ = self.work.wait_interruptible_timeout(&mut g, kernel::time::msecs_to_jiffies(ms));
        }
    }

    /// Whether the destager may write to the SAN at all now: the cache is healthy, destaging is
    /// not paused and the lease (if enforced) is valid.
    fn destager_may_write(&self, g: &State) -> bool {
        g.mode == Mode::Normal
            && self.tunables.destage_paused.load(Ordering::Relaxed) == 0
            && self.san_writes_allowed()
    }

    /// In a SAN group, when a batch could run: waits for this volume's turn (held until the
    /// batch is done). `Err(())` when the thread is asked to stop meanwhile.
    fn turn_if_grouped(&self) -> Result<core::result::Result<Option<Turn>, ()>> {
        let group = self.tunables.san_group.load(Ordering::Relaxed);
        let may = group != 0 && {
            let g = self.lock();
            !g.dirty_q.is_empty() && self.destager_may_write(&g)
        };
        if !may {
            return Ok(Ok(None));
        }
        let turn = Turn::ask(self.destager_id, group)?;
        let mut waited = false;
        while !turn.try_start() {
            if thread::should_stop() {
                return Ok(Err(()));
            }
            if !waited {
                bump(&self.counters.turn_waits, 1);
                waited = true;
            }
            // The turn is polled: the group's volumes do not know each other's wait queues.
            let mut g = self.lock();
            let _ = self.work.wait_interruptible_timeout(&mut g, kernel::time::msecs_to_jiffies(5));
        }
        Ok(Ok(Some(turn)))
    }

    /// Destages one batch when one is due: plan, read the log, write the SAN, flush it,
    /// checkpoint, record.
    fn destage_once(&self, san: &BlockDev, bset: &BioSet) -> Result<Next> {
        let Ok(_turn) = self.turn_if_grouped()? else {
            return Ok(Next::Again);
        };
        let batch = match self.plan_batch()? {
            Ok(b) => b,
            Err(sleep) => return Ok(Next::Sleep(sleep)),
        };
        let started = self.now_ns();
        let result = self.write_batch(san, bset, &batch);
        let took_ns = self.now_ns().saturating_sub(started);
        let Batch { recs, pieces, checkpoint } = batch;
        // The segments may be reused once the checkpoint passes the records (`record_batch`).
        drop(pieces);
        self.record_batch(&recs, checkpoint, result, took_ns)
    }

    /// The next batch, if one is due (`Err(ms)`: sleep that long at most). Takes the state lock.
    fn plan_batch(&self) -> Result<core::result::Result<Batch<'_>, u64>> {
        let mut recs: KVec<Rec> = KVec::new();
        let mut pieces = Pieces::new();
        let mut g = self.lock();
        if !self.destager_may_write(&g) {
            // Failed or bypassed cache, paused, or fenced (the lease may be another host's by
            // now); a renewal or a resume wakes us.
            return Ok(Err(1000));
        }
        if g.dirty_q.is_empty() {
            g.drain = false;
            g.dirty_since_ms = None;
            // Nothing dirty: every completed write is on the SAN (write-through ones too); move
            // the checkpoint up to what has completed so that it tells the truth.
            let safe = g.safe_serial();
            if safe <= g.checkpoint {
                return Ok(Err(1000));
            }
            let pieces = self.hold_pieces(&mut g, pieces);
            return Ok(Ok(Batch { recs, pieces, checkpoint: safe }));
        }
        let due = destage::batch_due(&DueView {
            // Flow control pacing (or writing through) the writers: destage without delay.
            drain: g.drain || self.flow_urgent(&g),
            write_through: g.policy == Policy::WriteThrough,
            dirty_sectors: g.dirty_sectors,
            batch_sectors: self.tunables.batch_sectors.load(Ordering::Relaxed),
            waited_ms: g.dirty_since_ms.map(|t| self.now_ms().saturating_sub(t)),
            delay_ms: self.tunables.destage_delay_ms.load(Ordering::Relaxed),
        });
        if let Due::In(ms) = due {
            return Ok(Err(ms));
        }
        let limits = BatchLimits {
            max_sectors: self.tunables.batch_sectors.load(Ordering::Relaxed).max(1),
            max_records: self.tunables.batch_records.load(Ordering::Relaxed).max(1) as usize,
        };
        let batch = destage::plan_batch(g.dirty_q.iter().map(|(s, r)| (*s, r.len)), limits, g.safe_serial());
        let Some(checkpoint) = batch.checkpoint else {
            // The oldest dirty write is still in flight: its completion comes soon.
            return Ok(Err(10));
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
        // Last under the lock: nothing fails while it and the holds are both held (the holds'
        // drop takes the lock). The sorting is done outside it: the data path waits for it.
        let mut pieces = self.hold_pieces(&mut g, pieces);
        drop(g);
        pieces.sort_by_key(|p| p.0);
        bump(&self.counters.batch_overlaps, destage::count_overlaps(pieces.iter().map(|p| (p.0, p.1))));
        // The log is read in flash order.
        pieces.sort_by_key(|p| p.2);
        Ok(Ok(Batch { recs, pieces, checkpoint }))
    }

    /// The batch's I/O: read its data from the log, write it to the SAN in groups, flush the
    /// SAN, write the checkpoint. `Ok(Err(_))`: abandoned (records stay dirty, no checkpoint).
    fn write_batch(&self, san: &BlockDev, bset: &BioSet, b: &Batch<'_>) -> Result<core::result::Result<u64, Abandon>> {
        let reads = self.read_log(bset, &b.pieces)?;
        let (writes, bytes) = Self::san_writes(san, bset, &reads, &b.pieces)?;
        if let Err(why) = self.write_in_groups(writes)? {
            return Ok(Err(why));
        }
        io::flush(san)?;
        if !self.write_checkpoint(b.checkpoint, true)? {
            return Ok(Err(Abandon::CacheFailed));
        }
        // Checkpoints travel: the members persist it and evict what it covers. The checkpoint
        // counts (its records become clean, their segments reusable) only once every member
        // of the set in force has it, so that the members' checkpoint is never below the
        // primary's (`replication::members_checkpoint`): a SAN write that waits for the
        // primary's checkpoint to cover older records waits for theirs too.
        if let Some(m) = self.peers() {
            if m.checkpoint(b.checkpoint).is_err() {
                return Ok(Err(Abandon::Closing));
            }
        }
        Ok(Ok(bytes))
    }

    /// Reads the batch's pieces (in flash order) from the log in few large reads, one buffer a
    /// read. A failed read is a cache failure.
    fn read_log(&self, bset: &BioSet, pieces: &Pieces) -> Result<LogReads> {
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
            let mut bio = Bio::new(&self.dev, r.start, 256, Dir::Read, bset)?;
            bio.add_buf(b, 0, b.len())?;
            reads.push(bio, GFP_IO_PATH)?;
        }
        if let Err(e) = io::run(reads) {
            bump(&self.counters.cache_errors, 1);
            self.lock().cache_failed();
            pr_err!("destager: cache device read failed ({:?})\n", e);
            return Err(e);
        }
        Ok(LogReads { plan, bufs })
    }

    /// The SAN writes of the batch: each piece from its place in its read's buffer; and their
    /// bytes.
    fn san_writes<'a>(san: &BlockDev, bset: &BioSet, reads: &'a LogReads, pieces: &Pieces) -> Result<(KVec<Bio<'a>>, u64)> {
        let mut writes = KVec::new();
        let mut bytes = 0u64;
        for (r, b) in reads.plan.iter().zip(reads.bufs.iter()) {
            let mine = pieces.get(r.first..r.first + r.count).ok_or(EINVAL)?;
            for &(lba, n, f) in mine {
                // Within the read by `plan_reads`' rule; checked all the same.
                let off = f.and_then(|f| f.checked_sub(r.start)).ok_or(EINVAL)? as usize * 512;
                let len = n as usize * 512;
                let mut bio = Bio::new(san, lba, 256, Dir::Write, bset)?;
                bio.add_buf(b, off, len)?;
                writes.push(bio, GFP_IO_PATH)?;
                bytes += len as u64;
            }
        }
        Ok((writes, bytes))
    }

    /// Submits `writes` in groups of `destage_concurrency`, one group after another, checking
    /// the lease before each group (a slow SAN, the usual reason a lease runs out, makes a
    /// batch outlast it): once it has run out, the rest is not written.
    fn write_in_groups(&self, writes: KVec<Bio<'_>>) -> Result<core::result::Result<(), Abandon>> {
        let group = self.tunables.destage_concurrency.load(Ordering::Relaxed).max(1) as usize;
        let mut now = KVec::new();
        let mut left = writes.len();
        for b in writes {
            now.push(b, GFP_IO_PATH)?;
            left -= 1;
            if now.len() >= group || left == 0 {
                if !self.san_writes_allowed() {
                    return Ok(Err(Abandon::Fenced));
                }
                io::run(core::mem::take(&mut now))?;
            }
        }
        Ok(Ok(()))
    }

    /// Records how the batch went: on the SAN, its records become clean and the checkpoint
    /// moves; abandoned or failed, they stay dirty.
    /// `took_ns`: the batch's SAN writes, flush and checkpoint, for flow control's bandwidth.
    fn record_batch(&self, recs: &[Rec], checkpoint: u64, result: Result<core::result::Result<u64, Abandon>>, took_ns: u64) -> Result<Next> {
        let bytes = match result {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(why)) => {
                if why == Abandon::Fenced {
                    bump(&self.counters.fenced_batches, 1);
                    pr_warn!("destager: the lease ran out during a batch; the batch is abandoned (its records stay dirty)\n");
                }
                self.changed.notify_all();
                return Ok(Next::Sleep(1000));
            }
            Err(e) => {
                self.changed.notify_all();
                return Err(e);
            }
        };
        let mut g = self.lock();
        g.checkpoint = g.checkpoint.max(checkpoint);
        g.destage_failures = 0;
        // What is left (less than a full batch, or the next batch would be due at once) waits
        // for the timer again: no dirty data waits much more than twice `destage_delay_ms`.
        g.dirty_since_ms = Some(self.now_ms());
        g.flow.on_batch(bytes, took_ns);
        for r in recs.iter() {
            g.destaged(r);
            match extent::mark_clean(&mut g.index, r.lba, r.len, r.serial) {
                Ok(d) => g.account(d),
                // No memory to re-insert the clean extent: drop it (the data is on the SAN).
                Err(_) => {
                    let _ = extent::remove_record(&mut g.index, r.lba, r.len, r.serial).map(|d| g.account(d));
                }
            }
        }
        drop(g);
        bump(&self.counters.destaged_bytes, bytes);
        bump(&self.counters.destage_batches, 1);
        self.note_destaged(bytes);
        self.changed.notify_all();
        Ok(Next::Again)
    }
}

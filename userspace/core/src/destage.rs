//! Destager rules: batch planning, checkpoints, retry backoff and log space reuse.
//!
//! Each volume keeps its records in serial order (the order of its log). The destager takes a
//! batch from the front: records whose serial is below every write still in flight to flash, in
//! serial order, up to a size cap. What is left of them in the index (the parts no newer write
//! superseded) is written to the SAN concurrently; the parts are disjoint because the index never
//! overlaps. Then the SAN is flushed, and only then the checkpoint (the batch's last serial) is
//! written to flash: every write up to it is on the SAN or superseded by a newer one.

/// Caps on one destage batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most dirty sectors in a batch (a single larger record still goes alone).
    pub max_sectors: u64,
    /// Most records in a batch.
    pub max_records: usize,
}

/// A planned batch: the first `records` records of the queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Batch {
    /// Number of records taken from the front of the queue.
    pub records: usize,
    /// Dirty sectors to write to the SAN.
    pub sectors: u64,
    /// The checkpoint once the batch is on the SAN and the SAN flushed (`None`: nothing to do).
    pub checkpoint: Option<u64>,
}

/// Plans a batch from `queue`: `(serial, dirty sectors left)` of each record in serial order.
/// `safe_serial` is the highest serial below every write still in flight to flash: a record
/// above it may have a lower-serial neighbour not yet in the index, so it must wait.
pub fn plan_batch(
    queue: impl IntoIterator<Item = (u64, u64)>,
    limits: BatchLimits,
    safe_serial: u64,
) -> Batch {
    let mut batch = Batch::default();
    for (serial, sectors) in queue {
        if serial > safe_serial || batch.records >= limits.max_records {
            break;
        }
        if sectors > 0
            && batch.sectors > 0
            && batch.sectors.saturating_add(sectors) > limits.max_sectors
        {
            break;
        }
        batch.records += 1;
        batch.sectors = batch.sectors.saturating_add(sectors);
        batch.checkpoint = Some(serial);
    }
    batch
}

/// Caps on one read of the log while destaging a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Most sectors one read covers (a single larger piece still gets a read of its own).
    pub max_sectors: u64,
    /// Most sectors of the log between two pieces that one read still covers (record headers and
    /// superseded data, read and thrown away).
    pub max_gap: u64,
}

/// One read of the log: `count` pieces from the `first`, all within `sectors` sectors from
/// flash sector `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRead {
    pub start: u64,
    pub sectors: u64,
    pub first: usize,
    pub count: usize,
}

/// Plans the reads of a batch's pieces from the log: `pieces` are `(flash sector, sectors)` in
/// ascending flash order; consecutive pieces share one read while the gap between them is at
/// most `max_gap` and the read stays within `max_sectors`. A batch's records were written one
/// after the other, so a batch of small writes takes a few large reads instead of one per
/// piece. Each read goes to `emit`, in order; every piece is in exactly one read and within it.
pub fn plan_reads(
    pieces: impl IntoIterator<Item = (u64, u64)>,
    limits: ReadLimits,
    mut emit: impl FnMut(LogRead),
) {
    let mut cur: Option<LogRead> = None;
    for (i, (start, len)) in pieces.into_iter().enumerate() {
        let end = start.saturating_add(len);
        if let Some(r) = cur.as_mut() {
            let r_end = r.start.saturating_add(r.sectors);
            let joins = start >= r.start
                && start.saturating_sub(r_end) <= limits.max_gap
                && end.max(r_end) - r.start <= limits.max_sectors;
            if joins {
                r.sectors = end.max(r_end) - r.start;
                r.count += 1;
                continue;
            }
            emit(*r);
        }
        cur = Some(LogRead {
            start,
            sectors: len,
            first: i,
            count: 1,
        });
    }
    if let Some(r) = cur {
        emit(r);
    }
}

/// Counts overlaps among ranges `(start, len)` given in ascending start order: the number of
/// ranges that begin before an earlier one ends. A correct batch has none.
pub fn count_overlaps(ranges: impl IntoIterator<Item = (u64, u64)>) -> u64 {
    let mut reach = 0u64;
    let mut first = true;
    let mut overlaps = 0;
    for (start, len) in ranges {
        if !first && start < reach {
            overlaps += 1;
        }
        first = false;
        reach = reach.max(start.saturating_add(len));
    }
    overlaps
}

/// What decides whether a destage batch is due, read under the state lock (with dirty data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueView {
    /// A drain was asked for (`destage_now`, writers waiting for room, a replay).
    pub drain: bool,
    /// The policy is write-through (its dirty data is what is left from write-back).
    pub write_through: bool,
    pub dirty_sectors: u64,
    /// The tunable `batch_sectors`: a full batch does not wait.
    pub batch_sectors: u64,
    /// How long the oldest dirty data has waited (`None`: unknown, as if it waited the delay).
    pub waited_ms: Option<u64>,
    /// The tunable `destage_delay_ms`.
    pub delay_ms: u64,
}

/// Whether a batch is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Destage now.
    Now,
    /// Not before this many milliseconds (more than 0), unless woken.
    In(u64),
}

/// Due: a drain, write-through, a full batch, or dirty data that has waited the delay; else in
/// what is left of the delay. Fewer, fuller batches (one SAN flush and one checkpoint each)
/// instead of one per write.
pub fn batch_due(v: &DueView) -> Due {
    let waited = v.waited_ms.unwrap_or(v.delay_ms);
    let full = v.dirty_sectors >= v.batch_sectors;
    if v.drain || v.write_through || full || waited >= v.delay_ms {
        Due::Now
    } else {
        Due::In(v.delay_ms - waited)
    }
}

/// Milliseconds to wait before retry number `attempt` (0 = first retry) after a SAN error:
/// 100 ms doubling up to 10 s.
pub fn retry_delay_ms(attempt: u32) -> u64 {
    100u64.saturating_mul(1u64 << attempt.min(7)).min(10_000)
}

/// Whether a segment whose dirty records have serials at most `max_dirty_serial` (0: none) may
/// be reused once the checkpoint is `checkpoint`.
pub fn segment_reusable(max_dirty_serial: u64, checkpoint: u64) -> bool {
    max_dirty_serial <= checkpoint
}

/// The head of a volume's circular log: records are placed one after another inside a segment,
/// never across a segment's end; when one does not fit, the log moves to the next segment
/// (wrapping at the region's end), which the caller must have made free first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogHead {
    /// Segments in the region.
    pub segments: u64,
    /// Sectors per segment.
    pub segment_sectors: u64,
    /// Current segment (0-based within the region).
    pub segment: u64,
    /// Next free sector within the current segment.
    pub offset: u64,
}

impl LogHead {
    /// Where a record of `footprint` sectors goes in the current segment, if it fits there.
    pub fn fits(&self, footprint: u64) -> Option<u64> {
        (footprint > 0 && self.offset.saturating_add(footprint) <= self.segment_sectors)
            .then_some(self.offset)
    }

    /// Takes `footprint` sectors in the current segment; returns their offset in the segment.
    pub fn take(&mut self, footprint: u64) -> Option<u64> {
        let at = self.fits(footprint)?;
        self.offset += footprint;
        Some(at)
    }

    /// The segment after the current one.
    pub fn next_segment(&self) -> u64 {
        if self.segments == 0 {
            0
        } else {
            (self.segment + 1) % self.segments
        }
    }

    /// Moves to the start of the next segment.
    pub fn advance(&mut self) {
        self.segment = self.next_segment();
        self.offset = 0;
    }
}

/// A destager's place in the destage turns of its SAN group (volumes whose backing devices
/// share one SAN, as the operator groups them): the destagers of a group take turns in the
/// order they asked, one batch per turn, so each volume with dirty data gets its share of the
/// SAN's batches whatever its batch cost or concurrency. Entries are kept in asking order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnEntry {
    /// The SAN group (non-zero).
    pub group: u64,
    /// The asking destager (unique while it waits or runs).
    pub id: u64,
    /// Its batch is running.
    pub running: bool,
}

/// Whether destager `id` may run its batch now: at most `per_group` batches of a group run at
/// once, and a waiting destager goes only when every destager of its group that asked before it
/// is running (first come, first served). `false` if `id` has no entry.
pub fn may_start(queue: &[TurnEntry], id: u64, per_group: usize) -> bool {
    let Some(me) = queue.iter().find(|e| e.id == id) else {
        return false;
    };
    if me.running {
        return true;
    }
    let group = queue.iter().filter(|e| e.group == me.group);
    let running = group.clone().filter(|e| e.running).count();
    let ahead = group
        .take_while(|e| e.id != id)
        .filter(|e| !e.running)
        .count();
    running.saturating_add(ahead) < per_group.max(1)
}

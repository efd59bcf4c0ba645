// SPDX-License-Identifier: GPL-2.0

//! The cache's counters, its tunables and the destage rate shown in sysfs.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::pfcore::sysfs::Attr;

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
    /// Flow control: writes delayed, their delays in all (us), the last delay (us), writes
    /// written through at the limit.
    pub(crate) paced_writes: AtomicU64,
    pub(crate) paced_us: AtomicU64,
    pub(crate) flow_delay_us: AtomicU64,
    pub(crate) flow_writethroughs: AtomicU64,
}

pub(super) fn bump(c: &AtomicU64, by: u64) {
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
    /// the group (`super::turns`).
    pub(crate) san_group: AtomicU64,
    /// wbp: a member that owes an answer this long is lost.
    pub(crate) peer_timeout_ms: AtomicU64,
    /// Flow control (`super::flow`): fill where pacing starts, fill where writes go through,
    /// the longest delay of one write.
    pub(crate) flow_start_pct: AtomicU64,
    pub(crate) flow_limit_pct: AtomicU64,
    pub(crate) flow_max_delay_us: AtomicU64,
}

impl Default for Tunables {
    /// The defaults of `pfcore::sysfs::ATTRS`.
    fn default() -> Self {
        let d = |a: Attr| AtomicU64::new(a.default_value());
        Self {
            batch_sectors: d(Attr::BatchSectors),
            batch_records: d(Attr::BatchRecords),
            destage_concurrency: d(Attr::DestageConcurrency),
            destage_paused: d(Attr::DestagePaused),
            destage_delay_ms: d(Attr::DestageDelayMs),
            read_populate: d(Attr::ReadPopulate),
            san_group: d(Attr::SanGroup),
            peer_timeout_ms: d(Attr::PeerTimeoutMs),
            flow_start_pct: d(Attr::FlowStartPct),
            flow_limit_pct: d(Attr::FlowLimitPct),
            flow_max_delay_us: d(Attr::FlowMaxDelayUs),
        }
    }
}

/// Destage rate over a window of about a second.
#[derive(Default)]
pub(super) struct Rate {
    pub(super) window_start_ms: AtomicU64,
    pub(super) window_bytes: AtomicU64,
    pub(super) bytes_per_sec: AtomicU64,
}


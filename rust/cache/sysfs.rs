// SPDX-License-Identifier: GPL-2.0

//! The files of `/sys/block/pf-NAME/peerflash/`: what each shows and what a write to a tunable
//! does. Which files there are, which can be written and what a write may hold is the shared
//! core's table (`pfcore::sysfs`, held to Documentation/control-interface.md by a test).

use core::sync::atomic::{AtomicU64, Ordering};

use kernel::prelude::*;

use crate::pfcore::sysfs::{Attr, StoreError};

use super::cache::Cache;

impl Cache {
    /// Shows sysfs file `a`.
    pub(crate) fn sysfs_show(&self, a: Attr, w: &mut kernel::str::Formatter<'_>) -> Result {
        use core::fmt::Write;
        let s = self.snapshot();
        let c = &self.counters;
        let t = &self.tunables;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let v = match a {
            Attr::State => return w.write_fmt(fmt!("{}\n", s.state().word())).map_err(|_| EINVAL),
            Attr::Policy => return w.write_fmt(fmt!("{}\n", s.policy.name())).map_err(|_| EINVAL),
            Attr::DirtyBytes => s.dirty_bytes,
            Attr::CachedBytes => s.cached_bytes,
            Attr::LastSerial => s.last_serial,
            Attr::CheckpointSerial => s.checkpoint,
            Attr::DestageRate => self.destage_rate(),
            Attr::DestagedBytes => l(&c.destaged_bytes),
            Attr::ReadHits => l(&c.read_hits),
            Attr::ReadMisses => l(&c.read_misses),
            Attr::CacheErrors => l(&c.cache_errors),
            Attr::SanErrors => l(&c.san_errors),
            Attr::BatchOverlaps => l(&c.batch_overlaps),
            Attr::WriteWaits => l(&c.write_waits),
            Attr::BatchSectors => l(&t.batch_sectors),
            Attr::BatchRecords => l(&t.batch_records),
            Attr::DestageConcurrency => l(&t.destage_concurrency),
            Attr::DestageFailures => u64::from(s.destage_failures),
            Attr::DestagePaused => l(&t.destage_paused),
            Attr::DestageDelayMs => l(&t.destage_delay_ms),
            Attr::DestageNow => u64::from(self.lock().drain),
            Attr::DestageBatches => l(&c.destage_batches),
            Attr::ReadPopulate => l(&t.read_populate),
            Attr::PopulatedBytes => l(&c.populated_bytes),
            Attr::LeaseMs => {
                let until = self.lease_until_ms.load(Ordering::Acquire);
                if until == 0 { 0 } else { until.saturating_sub(self.now_ms()) }
            }
            Attr::Fenced => u64::from(!self.san_writes_allowed()),
            Attr::SanGroup => l(&t.san_group),
            Attr::TurnWaits => l(&c.turn_waits),
            Attr::FastWrites => l(&c.fast_writes),
            Attr::FencedBatches => l(&c.fenced_batches),
            Attr::Replicas => {
                return match self.peers() {
                    Some(m) => m.show(w).map_err(|_| EINVAL),
                    None => w.write_str("none\n").map_err(|_| EINVAL),
                };
            }
            Attr::PeerTimeoutMs => l(&t.peer_timeout_ms),
            Attr::FlowState => {
                let st = self.flow_state(&self.lock());
                return w.write_fmt(fmt!("{}\n", st.name())).map_err(|_| EINVAL);
            }
            Attr::FlowDelayUs => l(&c.flow_delay_us),
            Attr::PacedWrites => l(&c.paced_writes),
            Attr::PacedUs => l(&c.paced_us),
            Attr::FlowWritethroughs => l(&c.flow_writethroughs),
            Attr::DestageBw => self.flow_bandwidth(),
            Attr::FlowStartPct => l(&t.flow_start_pct),
            Attr::FlowLimitPct => l(&t.flow_limit_pct),
            Attr::FlowMaxDelayUs => l(&t.flow_max_delay_us),
        };
        w.write_fmt(fmt!("{v}\n")).map_err(|_| EINVAL)
    }

    /// Stores `val` into sysfs file `a`, checked against the table (read only: `EACCES`; not a
    /// number: `EINVAL`; out of range: `ERANGE`).
    pub(crate) fn sysfs_store(&self, a: Attr, val: &[u8]) -> Result {
        let n = a.parse_store(val).map_err(|e| match e {
            StoreError::ReadOnly => EACCES,
            StoreError::NotValid => EINVAL,
            StoreError::OutOfRange => ERANGE,
        })?;
        let t = &self.tunables;
        let tunable = match a {
            Attr::BatchSectors => &t.batch_sectors,
            Attr::BatchRecords => &t.batch_records,
            Attr::DestageConcurrency => &t.destage_concurrency,
            Attr::DestagePaused => &t.destage_paused,
            Attr::DestageDelayMs => &t.destage_delay_ms,
            Attr::ReadPopulate => &t.read_populate,
            Attr::SanGroup => &t.san_group,
            Attr::FlowStartPct => &t.flow_start_pct,
            Attr::FlowLimitPct => &t.flow_limit_pct,
            Attr::FlowMaxDelayUs => &t.flow_max_delay_us,
            Attr::PeerTimeoutMs => {
                t.peer_timeout_ms.store(n, Ordering::Relaxed);
                if let Some(m) = self.peers() {
                    m.set_timeout(u32::try_from(n).unwrap_or(u32::MAX));
                }
                return Ok(());
            }
            Attr::LeaseMs => {
                // Validity from now in ms; 0 stops enforcing (the volume runs without a lease).
                let until = if n == 0 { 0 } else { self.now_ms().saturating_add(n).max(1) };
                self.lease_until_ms.store(until, Ordering::Release);
                self.changed.notify_all();
                self.work.notify_all();
                return Ok(());
            }
            Attr::DestageNow => {
                // A drain ends by itself when nothing is dirty.
                self.lock().drain = true;
                self.work.notify_all();
                return Ok(());
            }
            _ => return Err(EACCES),
        };
        tunable.store(n, Ordering::Relaxed);
        self.work.notify_all();
        Ok(())
    }
}

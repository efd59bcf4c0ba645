// SPDX-License-Identifier: GPL-2.0

//! The files of `/sys/block/pf-NAME/peerflash/`: what each shows and what a write to a tunable
//! does (Documentation/control-interface.md).

use core::sync::atomic::{AtomicU64, Ordering};

use kernel::prelude::*;

use super::cache::Cache;

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

impl Cache {
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

// SPDX-License-Identifier: GPL-2.0

//! A flush with a cache: what the completed writes live on is made stable (the cache device,
//! the SAN, or both).

use core::sync::atomic::Ordering;

use kernel::prelude::*;

use crate::blk::io;
use crate::pfcore::policy::Policy;

use super::cache::{Backend, Cache};
use crate::pfcore::mode::Mode;
use super::stats::bump;

impl Cache {
    /// A flush: what the completed writes live on is made stable: the cache device when it
    /// holds acknowledged writes (wb, or dirty data left from wb), the SAN when writes went
    /// there since its last flush (always in wt; in wb after discards, write-zeroes, or
    /// write-through writes made before a switch to wb).
    pub(crate) fn flush(&self, b: &Backend<'_>) -> Result {
        let (mode, policy, dirty) = {
            let g = self.lock();
            (g.mode, g.policy, g.dirty_sectors)
        };
        if mode == Mode::Failed {
            return Err(EIO);
        }
        let san_writes = self.san_unflushed.swap(false, Ordering::AcqRel);
        if san_writes || mode == Mode::Bypass || policy == Policy::WriteThrough {
            if let Err(e) = io::flush(b.san) {
                self.san_unflushed.store(true, Ordering::Release);
                return Err(e);
            }
        }
        if mode == Mode::Normal && (policy != Policy::WriteThrough || dirty > 0) {
            if let Err(e) = io::flush(&self.dev) {
                // What the flash acknowledged may not be stable: the cache has failed (dirty
                // data: the volume fails; none: bypass). The flush fails either way.
                bump(&self.counters.cache_errors, 1);
                let mut g = self.lock();
                g.cache_failed();
                let now = if g.mode == Mode::Bypass { "bypassing the cache" } else { "failing its I/O" };
                drop(g);
                self.changed.notify_all();
                pr_err!("cache device flush failed ({:?}); the volume is now {}\n", e, now);
                return Err(e);
            }
        }
        // wbp (or dirty data left from it): what the members acknowledged is made stable on
        // their flash too. A member that does not answer is lost, and the flush waits until a
        // set without it is in force.
        if mode == Mode::Normal {
            if let Some(m) = self.peers() {
                m.flush().map_err(|_| EIO)?;
            }
        }
        Ok(())
    }
}

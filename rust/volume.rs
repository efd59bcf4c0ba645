// SPDX-License-Identifier: GPL-2.0

//! A running volume: its backing device and what it does with each request.
//!
//! Without a cache a volume passes every request through to its backing device unchanged
//! (reads, writes with their FUA flag, flushes, discards, write-zeroes). With a cache, a
//! write-back write that can start at once goes to flash from `queue_rq`; other requests are
//! handed to the volume's workqueue; both are handled by the cache wing (`crate::cache`), which
//! is given the backing device and bio set it needs ([`Backend`]).

use core::sync::atomic::{AtomicU64, Ordering};

use kernel::prelude::*;

use crate::blk::bdev::BlockDev;
use crate::blk::bioset::BioSet;
use crate::blk::request::{Handler, Op, Request};
use crate::blk::thread::WorkQueue;
use crate::cache::{Backend, Cache};
use crate::pfcore::mode::CacheState;
use crate::pfcore::sysfs::{self, Attr};

/// I/O counters of a volume, shown by the `stats` attribute.
#[derive(Default)]
pub(crate) struct Stats {
    reads: AtomicU64,
    writes: AtomicU64,
    fua_writes: AtomicU64,
    flushes: AtomicU64,
    discards: AtomicU64,
    write_zeroes: AtomicU64,
    read_bytes: AtomicU64,
    write_bytes: AtomicU64,
    errors: AtomicU64,
}

impl Stats {
    /// `(name, value)` pairs in display order.
    pub(crate) fn snapshot(&self) -> [(&'static str, u64); 9] {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("reads", l(&self.reads)),
            ("writes", l(&self.writes)),
            ("fua_writes", l(&self.fua_writes)),
            ("flushes", l(&self.flushes)),
            ("discards", l(&self.discards)),
            ("write_zeroes", l(&self.write_zeroes)),
            ("read_bytes", l(&self.read_bytes)),
            ("write_bytes", l(&self.write_bytes)),
            ("errors", l(&self.errors)),
        ]
    }
}

fn bump(c: &AtomicU64, by: u64) {
    c.fetch_add(by, Ordering::Relaxed);
}

/// With a cache: the cache and the workqueue its requests run on.
struct Cached {
    cache: Pin<KBox<Cache>>,
    wq: WorkQueue,
}

/// A volume's data path.
#[pin_data]
pub(crate) struct Volume {
    #[pin]
    pub(crate) bioset: BioSet,
    pub(crate) backing: BlockDev,
    stats: Stats,
    cached: Option<Cached>,
}

impl Volume {
    /// A volume over `backing`, with `cache` if given (its requests run on a workqueue named
    /// `wq_name`).
    pub(crate) fn new(backing: BlockDev, cache: Option<Pin<KBox<Cache>>>, wq_name: &CStr) -> Result<impl PinInit<Self, Error>> {
        let cached = match cache {
            Some(cache) => Some(Cached {
                cache,
                wq: WorkQueue::new(wq_name, crate::blk::disk::QUEUE_DEPTH as i32)?,
            }),
            None => None,
        };
        Ok(try_pin_init!(Self { bioset <- BioSet::new(), backing, stats: Stats::default(), cached }))
    }

    /// The cache, if the volume has one.
    pub(crate) fn cache(&self) -> Option<&Cache> {
        self.cached.as_ref().map(|c| &*c.cache)
    }

    /// What the cache's request handlers use of the volume.
    fn backend(&self) -> Backend<'_> {
        Backend { san: &self.backing, bioset: &self.bioset }
    }

    /// The destager's body (its kernel thread's function): runs while the volume is up.
    pub(crate) fn destager(&self) {
        if let Some(c) = self.cache() {
            c.run_destager(&self.backing);
        }
    }

    /// The I/O counters.
    pub(crate) fn stats(&self) -> &Stats {
        &self.stats
    }
}

impl Handler for Volume {
    fn queue_rq(&self, rq: Request<Self>) {
        let s = &self.stats;
        match rq.op() {
            Op::Read => {
                bump(&s.reads, 1);
                bump(&s.read_bytes, u64::from(rq.bytes()));
            }
            Op::Write => {
                bump(&s.writes, 1);
                bump(&s.write_bytes, u64::from(rq.bytes()));
                if rq.is_fua() {
                    bump(&s.fua_writes, 1);
                }
            }
            Op::Flush => bump(&s.flushes, 1),
            Op::Discard => bump(&s.discards, 1),
            Op::WriteZeroes => bump(&s.write_zeroes, 1),
            Op::Other(_) => {
                bump(&s.errors, 1);
                return rq.end(Err(EOPNOTSUPP));
            }
        }
        match &self.cached {
            Some(c) => {
                if let Some(rq) = c.cache.write_now(&self.backend(), &c.wq, rq) {
                    rq.defer(&c.wq);
                }
            }
            None => rq.remap(&self.backing, &self.bioset),
        }
    }

    fn write_acked(&self, token: usize) {
        if let Some(c) = self.cache() {
            c.write_acked(token);
        }
    }

    fn write_failed(&self, rq: Request<Self>, token: usize, err: Error) {
        match self.cache() {
            Some(c) => {
                c.fast_write_failed(token, err);
                self.process(rq);
            }
            None => rq.end(Err(err)),
        }
    }

    fn process(&self, rq: Request<Self>) {
        let Some(c) = self.cache() else {
            return rq.remap(&self.backing, &self.bioset);
        };
        let b = self.backend();
        let r = match rq.op() {
            Op::Read => c.read(&b, &rq),
            Op::Write => c.write(&b, &rq),
            Op::Flush => c.flush(&b),
            Op::Discard | Op::WriteZeroes => c.san_op(&b, &rq),
            Op::Other(_) => Err(EOPNOTSUPP),
        };
        rq.end(r);
    }

    const SYSFS: &'static [(&'static CStr, bool)] = &sysfs::FILES;

    fn sysfs_show(&self, i: usize, w: &mut kernel::str::Formatter<'_>) -> Result {
        let a = Attr::from_index(i).ok_or(EINVAL)?;
        match self.cache() {
            Some(c) => c.sysfs_show(a, w),
            None if a == Attr::State => {
                core::fmt::Write::write_fmt(w, fmt!("{}\n", CacheState::Uncached.word())).map_err(|_| EINVAL)
            }
            None => Err(ENODATA),
        }
    }

    fn sysfs_store(&self, i: usize, val: &[u8]) -> Result {
        let a = Attr::from_index(i).ok_or(EINVAL)?;
        self.cache().ok_or(ENODATA)?.sysfs_store(a, val)
    }

    fn completed(&self, _op: Op, ok: bool) {
        if !ok {
            bump(&self.stats.errors, 1);
        }
    }
}

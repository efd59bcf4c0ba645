// SPDX-License-Identifier: GPL-2.0

//! Requests that go to the SAN as they are: discards and write-zeroes (after the dirty data
//! and writes in flight on their range), and everything while the cache is bypassed.

use core::sync::atomic::Ordering;

use kernel::prelude::*;

use crate::blk::io::{self, Bio};
use crate::blk::request::{Handler, Op, Request};

use super::cache::{Backend, Cache, InFlightOp};
use super::state::State;
use crate::pfcore::mode::Mode;

impl Cache {
    /// A discard or write-zeroes: waits for dirty data and writes in flight on its range, then
    /// goes to the SAN; the cache forgets the range.
    pub(crate) fn san_op<H: Handler>(&self, b: &Backend<'_>, rq: &Request<H>) -> Result {
        let (lba, len) = (rq.sector(), rq.sectors());
        let mut g = self.lock();
        let op = loop {
            match g.mode {
                Mode::Failed => return Err(EIO),
                Mode::Bypass if g.floor.is_some() => {
                    // Nothing more goes to the SAN before the switch's checkpoint is written.
                    g = self.settle_floor(g);
                    continue;
                }
                Mode::Bypass if !self.san_writes_allowed() => {
                    // Fenced: wait for the lease's renewal (its store notifies `changed`).
                    self.wait_changed(&mut g);
                    continue;
                }
                Mode::Bypass => {
                    drop(g);
                    return self.san_request(b, rq);
                }
                Mode::Normal => {}
            }
            if self.san_direct_ready(&g, lba, len) {
                break self.begin_san_direct(&mut g, lba, len)?;
            }
            if g.overlaps_dirty(lba, len) {
                // Dirty data of the range goes to the SAN first: now, not on the destage timer.
                g.drain = true;
            }
            self.work.notify_all();
            self.wait_changed(&mut g);
        };
        drop(g);
        let r = self.san_request(b, rq);
        // Its drop ends it (and notifies).
        drop(op);
        r
    }

    /// Whether an operation on `[lba, lba + len)` may go to the SAN directly now, in normal use:
    /// nothing in flight on the range, no dirty data of it (the SAN must not get it after
    /// newer data, nor a replay older data after it), and the lease valid.
    pub(super) fn san_direct_ready(&self, g: &State, lba: u64, len: u64) -> bool {
        !g.overlaps_inflight(lba, len, false) && !g.overlaps_dirty(lba, len) && self.san_writes_allowed()
    }

    /// Takes `[lba, lba + len)` for an operation that goes to the SAN directly (after
    /// [`Cache::san_direct_ready`]): the cache forgets its clean copies of the range, and the
    /// operation is in flight until the returned op is dropped.
    pub(super) fn begin_san_direct(&self, g: &mut State, lba: u64, len: u64) -> Result<InFlightOp<'_>> {
        g.invalidate(lba, len)?;
        self.begin_op(g, lba, len, true, None)
    }

    /// The request sent to the SAN as it is; waits for it. A write that completes there is
    /// noted for the next flush ([`Cache::san_unflushed`]).
    pub(super) fn san_request<H: Handler>(&self, b: &Backend<'_>, rq: &Request<H>) -> Result {
        let mut bios = KVec::new();
        Bio::clone_request(rq, 0, rq.sectors(), b.san, rq.sector(), b.bioset, &mut bios)?;
        io::run(bios)?;
        if rq.op() != Op::Read {
            self.san_unflushed.store(true, Ordering::Release);
        }
        Ok(())
    }
}

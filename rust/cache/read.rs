// SPDX-License-Identifier: GPL-2.0

//! A read with a cache: the parts held on flash from flash, the rest from the SAN; a read that
//! misses wholly is kept on flash as clean data (population).

use core::sync::atomic::Ordering;

use kernel::prelude::*;

use crate::blk::dir::Dir;
use crate::blk::io::{self, Bio, IoSet};
use crate::blk::request::{Handler, Request};
use crate::blk::GFP_IO_PATH;
use crate::pfcore::extent;
use crate::pfcore::format::RecordHeader;
use crate::pfcore::mode::Mode;

use super::cache::{Backend, Cache, InFlightOp};
use super::state::{Pieces, Rec};
use super::stats::bump;

impl Cache {
    /// A read: the parts held on flash from flash, the rest from the SAN.
    pub(crate) fn read<H: Handler>(&self, b: &Backend<'_>, rq: &Request<H>) -> Result {
        let (lba, len) = (rq.sector(), rq.sectors());
        let mut pieces = Pieces::new();
        let mut g = self.lock();
        match g.mode {
            Mode::Failed => return Err(EIO),
            Mode::Bypass => {
                drop(g);
                return self.san_request(b, rq);
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
        // Nothing below fails before `g` is dropped (the holds' drop takes the lock).
        let pieces = self.hold_pieces(&mut g, pieces);
        // Population: a read that misses wholly is kept on flash as a clean record, if there is
        // room now (it never waits for any) and no write is in flight on its blocks (that
        // write's data, not the SAN's, is the newest). Its serial is taken now and its blocks
        // are marked in flight: writes that come while it runs wait for it and get higher
        // serials, so the index never prefers its SAN copy over newer data.
        let mut fill = None;
        let whole_miss = pieces.len() == 1 && pieces.iter().all(|p| p.2.is_none());
        if whole_miss
            && self.tunables.read_populate.load(Ordering::Relaxed) != 0
            && !g.overlaps_inflight(lba, len, false)
        {
            let footprint = u32::try_from(len).map(|l| RecordHeader::footprint(l, self.sb.block_size));
            if let Ok(Ok(Some((seg, off)))) = footprint.map(|f| g.place(f)) {
                if let Ok(op) = g.reserve_record(seg).and_then(|()| self.begin_op(&mut g, lba, len, true, Some(seg))) {
                    fill = Some((op, seg, self.seg_sector(seg) + off));
                }
            }
        }
        // A read does not wait for the slot write that lets the log go on; it asks for it
        // after its own I/O, for the next reads to populate.
        let extend = fill.is_none() && g.log_at_limit;
        drop(g);

        let (flash_r, san_r, hit) = self.read_pieces(b, rq, &pieces);
        drop(pieces);
        let mut g = self.lock();
        let retry_on_san = match flash_r {
            Ok(()) => false,
            Err(e) => {
                bump(&self.counters.cache_errors, 1);
                g.cache_failed();
                let now = if g.mode == Mode::Bypass { "bypassing the cache" } else { "failed" };
                pr_err!("cache device read failed ({:?}); volume now {}\n", e, now);
                true
            }
        };
        let mode = g.mode;
        drop(g);
        if let Some((op, seg, at)) = fill {
            self.finish_population(b, rq, op, seg, at, san_r.is_ok());
        }
        self.changed.notify_all();
        if extend {
            if let Err(e) = self.extend_log() {
                pr_warn!("cannot write the slot to extend the log ({:?})\n", e);
            }
        }
        if retry_on_san {
            // Clean data only (bypass): the SAN has it. Dirty data: the volume has failed.
            return if mode == Mode::Bypass { self.san_request(b, rq) } else { Err(EIO) };
        }
        bump(if hit { &self.counters.read_hits } else { &self.counters.read_misses }, 1);
        san_r
    }

    /// The read's I/O: each piece from flash or the SAN, waited for together. Returns how the
    /// flash and SAN reads went and whether it was a hit (nothing from the SAN).
    fn read_pieces<H: Handler>(&self, b: &Backend<'_>, rq: &Request<H>, pieces: &Pieces) -> (Result, Result, bool) {
        let lba = rq.sector();
        let mut flash_bios = KVec::new();
        let mut san_bios = KVec::new();
        let mut built = Ok(());
        for &(s, n, f) in pieces.iter() {
            let r = match f {
                Some(f) => Bio::clone_request(rq, s - lba, n, &self.dev, f, b.bioset, &mut flash_bios),
                None => Bio::clone_request(rq, s - lba, n, b.san, s, b.bioset, &mut san_bios),
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
                for bio in flash_bios {
                    flash_io.as_ref().submit(bio);
                }
                for bio in san_bios {
                    san_io.as_ref().submit(bio);
                }
                (flash_io.as_ref().wait(), san_io.as_ref().wait())
            }
        };
        (flash_r, san_r, hit)
    }

    /// Ends a read's population (`op` on segment `seg`, its record at `at`): writes what the
    /// SAN returned (`san_ok`) to flash as a clean record and indexes it.
    fn finish_population<H: Handler>(&self, b: &Backend<'_>, rq: &Request<H>, op: InFlightOp<'_>, seg: usize, at: u64, san_ok: bool) {
        let (lba, len) = (rq.sector(), rq.sectors());
        let serial = op.serial();
        // Every path ends the in-flight mark (it holds back writes and the checkpoint).
        // Not built (no memory, an odd request): not kept, and not a cache failure.
        let write = if san_ok { self.populate(b, rq, serial, at).ok() } else { None };
        let mut g = self.lock();
        op.end(&mut g);
        match write {
            Some(Ok(())) => {
                let rec = Rec { serial, lba, len };
                if g.add_record(seg, rec, at + self.sb.block_sectors(), false).is_ok() {
                    bump(&self.counters.populated_bytes, len * 512);
                } else {
                    // No memory to index it: forget it (the SAN has the data).
                    let _ = g.invalidate(lba, len);
                }
            }
            None => {}
            Some(Err(e)) => {
                bump(&self.counters.cache_errors, 1);
                g.cache_failed();
                pr_err!("cache device write (read population) failed ({:?})\n", e);
            }
        }
    }

    /// Writes the data a read brought from the SAN to flash at `at` as a clean record: `Err`
    /// when the record could not be built, else how its write went.
    fn populate<H: Handler>(&self, b: &Backend<'_>, rq: &Request<H>, serial: u64, at: u64) -> Result<Result> {
        let hb = self.header_block(rq, 0, serial)?;
        let mut bio = Bio::new(&self.dev, at, rq.record_vecs(), Dir::Write, b.bioset)?;
        bio.add_buf(&hb, 0, hb.len())?;
        bio.add_request_data(rq)?;
        let mut bios = KVec::new();
        bios.push(bio, GFP_IO_PATH)?;
        Ok(io::run(bios))
    }
}

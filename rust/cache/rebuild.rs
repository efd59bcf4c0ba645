// SPDX-License-Identifier: GPL-2.0

//! The state of a volume's cache after a restart: the checkpoint copies read and the slot's
//! region scanned, with the attach rules of `pfcore::rebuild` (what is replayed, what refused).

use kernel::prelude::*;
use kernel::rbtree::RBTree;

use crate::blk::bdev::BlockDev;
use crate::blk::bioset::BioSet;
use crate::blk::io::{self, PageBuf};
use crate::klib::crc32c;
use crate::pfcore::destage::LogHead;
use crate::pfcore::flow::Flow;
use crate::pfcore::format::{self, Checkpoint, Superblock};
use crate::pfcore::slot::Slot;
use crate::pfcore::rebuild;
use crate::pfcore::mode::Mode;

use super::attach::Refusal;
use super::index::Index;
use super::state::{Rec, Seg, State};

fn oom<E>(_: E) -> Refusal {
    ("out of memory for the volume's cache tables", ENOMEM)
}

fn io_error(e: Error) -> Refusal {
    ("cannot read the volume's records on the cache device", e)
}

/// Reads the checkpoint copies and scans the slot's region: the state of the volume's
/// cache after a restart (`pfcore::rebuild`'s rules decide what is replayed). `fresh`: the lock
/// record says the SAN holds every acknowledged write, so nothing is replayed and the checkpoint
/// moves past every serial the log holds (`Cache::open` persists it as the slot's floor).
pub(super) fn state_from_flash(dev: &BlockDev, sb: &Superblock, slot_index: u32, slot: &Slot, replay: bool, fresh: bool) -> Result<State, Refusal> {
    let (checkpoint, checkpoint_seq) = read_checkpoint(dev, sb, slot_index, slot, replay || fresh)?;
    let mut st = empty_state(sb, slot, checkpoint, checkpoint_seq)?;
    let mut scan = rebuild::Scan::new(checkpoint);
    let start = kernel::time::Instant::<kernel::time::Monotonic>::now();
    scan_region(dev, sb, slot, &mut scan, &mut st)?;
    if fresh {
        let past = scan.fresh_checkpoint();
        let mut st = empty_state(sb, slot, past, checkpoint_seq)?;
        if let Some(s) = scan.max_seg {
            st.head.segment = s;
        }
        pr_info!(
            "cache slot {}: started fresh: {} records ({} KiB) above checkpoint {} dropped (the SAN holds every acknowledged write); checkpoint {}\n",
            slot_index,
            scan.replay,
            scan.replay_sectors / 2,
            checkpoint,
            past
        );
        return Ok(st);
    }
    if let Some(s) = scan.max_seg {
        st.head.segment = s;
    }
    rebuild::may_replay(slot.closed_dirty, scan.replay, replay).map_err(|e| {
        pr_warn!(
            "cache slot {}: {} records ({} KiB) to replay, left when the volume was removed with dirty data\n",
            slot_index,
            scan.replay,
            scan.replay_sectors / 2
        );
        (e.describe(), EINVAL)
    })?;
    st.next_serial = scan.next_serial();
    st.replay_until = scan.replay_until;
    // A replay starts at once (the volume is "replaying" until it is done).
    st.drain = !st.dirty_q.is_empty();
    let seg_sectors = u64::from(sb.segment_sectors);
    pr_info!(
        "cache slot {}: scanned {} of {} MiB in {} ms: {} valid records ({} to replay, {} dirty KiB), {} torn, {} invalid; checkpoint {}, next serial {}\n",
        slot_index,
        slot.scan_segments().saturating_mul(seg_sectors) >> 11,
        slot.segments.saturating_mul(seg_sectors) >> 11,
        start.elapsed().as_millis(),
        scan.valid,
        scan.replay,
        st.dirty_sectors / 2,
        scan.torn,
        scan.invalid,
        checkpoint,
        st.next_serial
    );
    if scan.invalid > 0 {
        pr_warn!(
            "cache slot {}: {} records carry the volume's uuid but cannot be its writes (past its end, too long, or an impossible serial): ignored\n",
            slot_index,
            scan.invalid
        );
    }
    Ok(st)
}

/// The checkpoint the rebuild starts from and the seq of the newest copy, by the attach rules
/// (`replay`: from the slot's floor when no copy is readable). An unreadable copy is no copy.
pub(crate) fn read_checkpoint(dev: &BlockDev, sb: &Superblock, slot_index: u32, slot: &Slot, replay: bool) -> Result<(u64, u64), Refusal> {
    let mut block = KVec::from_elem(0u8, sb.block_size as usize, GFP_KERNEL).map_err(oom)?;
    let mut cps = [None, None];
    for (copy, cp) in cps.iter_mut().enumerate() {
        if dev.read_sync(sb.checkpoint_sector(slot_index, copy as u32), &mut block).is_ok() {
            *cp = Checkpoint::decode(&block, &slot.uuid, crc32c);
        }
    }
    let checkpoint = rebuild::start(cps, slot.serial_floor, replay).map_err(|e| (e.describe(), EINVAL))?;
    Ok((checkpoint, Checkpoint::newest(cps[0], cps[1]).map_or(0, |c| c.seq)))
}

/// The state of a slot with nothing indexed yet: one entry per segment, the log head full at
/// the last segment (so that the first write moves on through the reuse check; a slot has at
/// least two segments).
fn empty_state(sb: &Superblock, slot: &Slot, checkpoint: u64, checkpoint_seq: u64) -> Result<State, Refusal> {
    let n = usize::try_from(slot.segments).map_err(|_| ("the volume's slot is damaged", EINVAL))?;
    let mut segs = KVVec::with_capacity(n, GFP_KERNEL).map_err(oom)?;
    for _ in 0..n {
        segs.push(Seg::default(), GFP_KERNEL).map_err(oom)?;
    }
    let seg_sectors = u64::from(sb.segment_sectors);
    Ok(State {
        index: Index { tree: RBTree::new() },
        segs,
        head: LogHead {
            segments: slot.segments,
            segment_sectors: seg_sectors,
            segment: slot.segments.saturating_sub(1),
            offset: seg_sectors,
        },
        next_serial: rebuild::Scan::new(checkpoint).next_serial(),
        checkpoint,
        checkpoint_seq,
        dirty_q: RBTree::new(),
        inflight: KVec::new(),
        cached_sectors: 0,
        dirty_sectors: 0,
        policy: slot.policy,
        mode: Mode::Normal,
        replay_until: 0,
        destage_failures: 0,
        dirty_since_ms: None,
        drain: false,
        log_limit: slot.scan_segments(),
        log_at_limit: false,
        wb_submitted: 0,
        floor: None,
        dirty_log_sectors: 0,
        head_sectors: sb.block_sectors(),
        flow: Flow::default(),
    })
}

/// The scan: every segment the log may have written (below the slot's log limit) read whole,
/// every record checked by `scan`'s rules and the valid ones indexed into `st`.
fn scan_region(dev: &BlockDev, sb: &Superblock, slot: &Slot, scan: &mut rebuild::Scan, st: &mut State) -> Result<(), Refusal> {
    let bounds = rebuild::Bounds { backing_sectors: slot.backing_sectors, max_len: rebuild::MAX_RECORD_SECTORS };
    let seg_bytes = sb.segment_sectors as usize * 512;
    let pages = PageBuf::new(seg_bytes).map_err(oom)?;
    let mut buf = KVVec::from_elem(0u8, seg_bytes, GFP_KERNEL).map_err(oom)?;
    let bset = KBox::pin_init(BioSet::new(), GFP_KERNEL).map_err(oom)?;
    let mut failed: Result = Ok(());
    for s in 0..slot.scan_segments() as usize {
        let base = sb.segment_sector(slot.first_segment + s as u64);
        io::read_into(dev, base, &pages, seg_bytes, &bset).map_err(io_error)?;
        pages.read(0, &mut buf).map_err(io_error)?;
        format::scan_segment(&buf, sb.block_size, crc32c, |at, found| {
            if let Some(h) = scan.note(s as u64, found, &slot.uuid, &bounds) {
                let rec = Rec { serial: h.serial, lba: h.lba, len: u64::from(h.len) };
                let flash = base + at + sb.block_sectors();
                if let Err(e) = st.add_record(s, rec, flash, true) {
                    failed = Err(e);
                }
            }
        });
        failed.map_err(oom)?;
    }
    Ok(())
}

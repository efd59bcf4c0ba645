// SPDX-License-Identifier: GPL-2.0

//! Attaching a cache device to a volume: the superblock is checked, the volume's slot found (by
//! name) or made in free space, with the shared format code (`pfcore::format`,
//! Documentation/on-flash-format.md).
//!
//! Several volumes share a cache device: every volume opens it exclusively for one holder,
//! [`CACHE_HOLDER`], which the block layer lets claim a device many times (and nobody else:
//! not a filesystem, not device-mapper, not a volume using it as its backing device). Each volume
//! does its I/O in its own slot's region; the slot table is the only thing they share, and
//! [`SLOT_TABLES`] serialises the attaches that read and write it.
//!
//! [`SLOT_TABLES`] also lists the slots of running volumes ([`SlotClaim`]): when a new volume
//! finds no room and is forced, it takes back slots of volumes that are not running here (their
//! slot block is cleared: their region is free, their records no longer anyone's), never a
//! running one.
//!
//! Lock order: `VolumeConfig::inner` (control/volume.rs), then [`SLOT_TABLES`]; the slot-table I/O
//! runs under it. Nothing else is taken under `SLOT_TABLES`, and a [`SlotClaim`] is dropped
//! (which takes it) only outside it, in process context.

use core::ffi::c_void;

use kernel::prelude::*;

use crate::blk::bdev::BlockDev;
use crate::blk::disk;
use crate::klib::{self, crc32c};
use crate::pfcore::errno::{self, Role};
use crate::pfcore::geometry::GeometryError;
use crate::pfcore::format::{largest_free_run, Checkpoint, FormatError, Superblock, META_BYTES};
use crate::pfcore::slot::{Slot, LOG_LIMIT_STEP};
use crate::pfcore::policy::Policy;

kernel::sync::global_lock! {
    // SAFETY: initialised by `init` in the module initialiser, before configfs exists.
    /// The slots of running volumes, as (cache device number, slot): the slot table lock.
    unsafe(uninit) static SLOT_TABLES: Mutex<KVec<(u32, u32)>> = KVec::new();
}

/// A running volume's hold on its slot: a forced attach never reclaims it. Dropped with the
/// volume's cache.
pub(crate) struct SlotClaim {
    dev: u32,
    slot: u32,
}

impl Drop for SlotClaim {
    fn drop(&mut self) {
        let mut g = SLOT_TABLES.lock();
        if let Some(i) = g.iter().position(|&c| c == (self.dev, self.slot)) {
            let _ = g.remove(i);
        }
    }
}

/// The holder of every cache device open (its address is what matters).
static CACHE_HOLDER: u8 = 0;

/// Initialises the module-wide state of this file.
///
/// # Safety
///
/// Called once, from the module initialiser, before any volume can be enabled.
pub(crate) unsafe fn init() {
    // SAFETY: called once before first use, per this function's contract.
    unsafe { SLOT_TABLES.init() };
}

/// A refusal: why, for `last_error`, and the errno for the writer.
pub(crate) type Refusal = (&'static str, Error);

/// A cache device opened for one volume, with the volume's slot.
pub(crate) struct Attached {
    /// The device, opened exclusively for [`CACHE_HOLDER`].
    pub(crate) dev: BlockDev,
    /// Its superblock.
    pub(crate) sb: Superblock,
    /// The volume's slot number and contents.
    pub(crate) slot_index: u32,
    /// The slot.
    pub(crate) slot: Slot,
    /// Whether the slot was made by this attach (false: an existing one was found).
    pub(crate) created: bool,
    /// The slot is the volume's while this lives.
    pub(crate) claim: SlotClaim,
    /// Slots a forced attach took back to make room (their volumes' data on the cache device
    /// is gone); for a replica, the previous owner's replica of the volume it took over.
    pub(crate) reclaimed: KVec<Slot>,
}

/// What the attach needs to know of the volume.
pub(crate) struct Want<'a> {
    /// Volume name.
    pub(crate) name: &'a [u8],
    /// Backing device path.
    pub(crate) backing_path: &'a [u8],
    /// Backing device size in sectors.
    pub(crate) backing_sectors: u64,
    /// Policy to run with.
    pub(crate) policy: Policy,
    /// MiB a new slot takes (0: the largest free run).
    pub(crate) mib: u64,
    /// Take back slots of volumes not running here when there is no room otherwise.
    pub(crate) force: bool,
    /// Adopt the replica slot of (origin host id, volume uuid) as this volume's slot: the records
    /// a peer held for a primary whose own flash is gone, replayed by the volume's attach.
    pub(crate) adopt: Option<(u16, [u8; 16])>,
    /// With `adopt`: a slot of this name already on the device is cleared first, and the
    /// adopted replica's records are dropped (the lock record says the SAN holds every
    /// acknowledged write: an obsolete replica whose room the volume takes).
    pub(crate) fresh: bool,
}

fn open_refusal(e: Error) -> Refusal {
    (errno::open_refusal(-e.to_errno(), Role::Cache), e)
}

fn format_refusal(e: FormatError) -> Refusal {
    let why = match e {
        FormatError::BadMagic | FormatError::Short => {
            "the cache device is not formatted for peerflash (run `peerflash format-cache`)"
        }
        FormatError::BadVersion(_) => "the cache device has an unsupported on-flash format version",
        FormatError::BadChecksum => "the cache device's superblock is damaged (checksum mismatch)",
        FormatError::Inconsistent(_) => "the cache device's superblock does not match the device",
    };
    (why, EINVAL)
}

/// The superblock of the opened cache device `dev`, checked, and a buffer of one of its blocks.
fn superblock(dev: &BlockDev) -> Result<(Superblock, KVec<u8>), Refusal> {
    let geo = dev.geometry();
    let bs = geo.logical_block_size.max(META_BYTES as u32);
    let mut block = KVec::from_elem(0u8, bs as usize, GFP_KERNEL).map_err(|_| ("out of memory", ENOMEM))?;
    dev.read_sync(0, &mut block).map_err(|e| ("cannot read the cache device's superblock", e))?;
    let sb = Superblock::decode(&block, geo.sectors, crc32c).map_err(format_refusal)?;
    if sb.block_size != bs {
        return Err(("the cache device's block size changed since it was formatted", EINVAL));
    }
    Ok((sb, block))
}

/// Opens the cache device at `path` for the volume `want` (exclusively for [`CACHE_HOLDER`],
/// shared with the other volumes on it), and finds or makes its slot.
pub(crate) fn attach(path: &CStr, backing: &BlockDev, want: &Want<'_>) -> Result<Attached, Refusal> {
    // Before opening: the backing device's exclusive claim would make it look merely busy.
    if backing.is_at(path) {
        return Err(("the cache device is the backing device", EINVAL));
    }
    let holder = core::ptr::addr_of!(CACHE_HOLDER).cast_mut().cast::<c_void>();
    let dev = BlockDev::open(path, holder).map_err(open_refusal)?;
    if dev.same_device(backing) {
        return Err(("the cache device is the backing device", EINVAL));
    }
    if disk::is_ours(&dev) {
        return Err(("the cache device is a peerflash volume", EINVAL));
    }
    let (sb, mut block) = superblock(&dev)?;
    // The volume's blocks become at least the cache device's (`geometry::with_cache_block`):
    // refused here, before any slot is written, when the capacity cannot be a whole number of
    // them.
    if !want.backing_sectors.is_multiple_of(sb.block_sectors()) {
        return Err((GeometryError::CacheUnaligned.describe(), EINVAL));
    }

    let devno = dev.dev_t();
    // From here to the slot write, no other attach may read or change the slot table.
    let mut tables = SLOT_TABLES.lock();
    let scan = scan_slots(&dev, &sb, &tables, |s| s.is_local_named(want.name), &mut block)?;
    if let Some((origin, uuid)) = want.adopt {
        if let Some((j, _)) = scan.mine {
            if !want.fresh {
                return Err(("the cache device already holds a slot of this name: a replica is adopted only by a volume that has none (or with fresh, which clears it)", EEXIST));
            }
            if is_running(&tables, devno, j) {
                return Err(("the slot of this name is running", EBUSY));
            }
            block.fill(0);
            dev.write_sync(sb.slot_sector(j), &block).map_err(|e| ("cannot clear the slot of this name", e))?;
            pr_info!("cache slot {}: cleared (fresh) for the adoption of a replica\n", j);
        }
        let scan = scan_slots(&dev, &sb, &tables, |s| s.is_replica_of(origin, &uuid), &mut block)?;
        let Some((i, s)) = scan.mine else {
            return Err(("the cache device holds no replica slot of that host's volume uuid (see `peerflash inspect`)", ENOENT));
        };
        if s.backing_sectors != want.backing_sectors {
            return Err(("the replica is of a volume of another size than this backing device", EINVAL));
        }
        if is_running(&tables, devno, i) {
            return Err(("the replica is open (its primary's connection holds it)", EBUSY));
        }
        // The slot becomes this host's volume's: same uuid, records and checkpoints, so the
        // attach's rebuild replays its dirty records as after a crash.
        let slot = Slot {
            name: Slot::pack_name(want.name),
            policy: want.policy,
            backing_path: Slot::pack_path(want.backing_path),
            generation: s.generation.wrapping_add(1),
            origin: 0,
            epoch: 0,
            ..s
        };
        block.fill(0);
        slot.encode(&mut block, crc32c);
        dev.write_sync(sb.slot_sector(i), &block).map_err(|e| ("cannot write the adopted slot", e))?;
        pr_info!("cache slot {}: the replica of host {}'s volume is adopted\n", i, origin);
        return Ok(Attached { claim: claim(&mut tables, devno, i)?, dev, sb, slot_index: i, slot, created: false, reclaimed: KVec::new() });
    }

    if let Some((i, s)) = scan.mine {
        if s.backing_sectors != want.backing_sectors {
            return Err((
                "the cache device holds this volume's name for a backing device of another size",
                EINVAL,
            ));
        }
        let mut slot = s;
        if slot.policy != want.policy {
            // The slot records the policy the volume last ran with.
            slot.policy = want.policy;
            slot.generation = slot.generation.wrapping_add(1);
            slot.encode(&mut block, crc32c);
            dev.write_sync(sb.slot_sector(i), &block).map_err(|e| ("cannot write the volume's slot", e))?;
        }
        return Ok(Attached {
            claim: claim(&mut tables, devno, i)?,
            dev,
            sb,
            slot_index: i,
            slot,
            created: false,
            reclaimed: KVec::new(),
        });
    }
    if scan.damaged {
        return Err((
            "a slot of the cache device is damaged and this volume has none: no new slot can be made while the damaged one's region is unknown (see `peerflash inspect`)",
            EIO,
        ));
    }
    let wanted = match want.mib {
        0 => None,
        mib => {
            let n = (mib * 2048).div_ceil(u64::from(sb.segment_sectors));
            if n < 2 {
                return Err(("cache_mib is less than two segments (a volume's log must be able to wrap)", EINVAL));
            }
            Some(n)
        }
    };
    let (index, first, count, reclaimed) = make_room(&dev, &sb, want.force, wanted, scan, &mut block)?;
    let mut uuid = [0u8; 16];
    // May sleep, which is fine here.
    klib::random_bytes(&mut uuid);
    let slot = Slot {
        uuid,
        name: Slot::pack_name(want.name),
        policy: want.policy,
        first_segment: first,
        segments: count,
        backing_sectors: want.backing_sectors,
        serial_floor: 0,
        generation: 1,
        backing_path: Slot::pack_path(want.backing_path),
        log_limit: count.min(LOG_LIMIT_STEP),
        closed_dirty: 0,
        closed_at: 0,
        origin: 0,
        epoch: 0,
    };
    write_new_slot(&dev, &sb, index, &slot, &mut block)?;
    Ok(Attached {
        claim: claim(&mut tables, devno, index)?,
        dev,
        sb,
        slot_index: index,
        slot,
        created: true,
        reclaimed,
    })
}

/// Writes a new slot `slot` at `index`: both checkpoint copies first (serial 0), so a slot always
/// has a readable checkpoint and one whose copies are both unreadable later is damaged, never
/// merely new (`pfcore::rebuild::start`); then the slot block.
fn write_new_slot(dev: &BlockDev, sb: &Superblock, index: u32, slot: &Slot, block: &mut KVec<u8>) -> Result<(), Refusal> {
    let cp = Checkpoint { uuid: slot.uuid, serial: 0, seq: 0 };
    for copy in 0..2 {
        block.fill(0);
        cp.encode(block, crc32c);
        dev.write_sync(sb.checkpoint_sector(index, copy), block)
            .map_err(|e| ("cannot write the slot's checkpoint", e))?;
    }
    block.fill(0);
    slot.encode(block, crc32c);
    dev.write_sync(sb.slot_sector(index), block).map_err(|e| ("cannot write the slot", e))
}

/// Whether slot `slot` of device `dev` is running (in the locked registry `tables`).
fn is_running(tables: &KVec<(u32, u32)>, dev: u32, slot: u32) -> bool {
    tables.iter().any(|&c| c == (dev, slot))
}

/// Registers slot `slot` of device `dev` as running (`tables` is the locked registry).
fn claim(tables: &mut KVec<(u32, u32)>, dev: u32, slot: u32) -> Result<SlotClaim, Refusal> {
    tables.push((dev, slot), GFP_KERNEL).map_err(|_| ("out of memory", ENOMEM))?;
    Ok(SlotClaim { dev, slot })
}

/// What one pass over the slot table found.
struct SlotScan {
    /// The volume's slot, found by name.
    mine: Option<(u32, Slot)>,
    /// The first free slot.
    free: Option<u32>,
    /// The regions of the other volumes' slots, as (first segment, segments).
    used: KVec<(u64, u64)>,
    /// The slots of other volumes of this host that are not running here (a forced attach may
    /// take them back; never a replica slot).
    idle: KVec<(u32, Slot)>,
    /// A slot is damaged (its region is unknown).
    damaged: bool,
}

/// What a replica attach needs to know of the primary's volume (from its ATTACH).
pub(crate) struct ReplicaWant<'a> {
    /// The primary's host id (the records' origin; never 0).
    pub(crate) origin: u16,
    /// The primary's volume uuid.
    pub(crate) uuid: [u8; 16],
    /// The primary's volume name (informational).
    pub(crate) name: &'a [u8],
    /// The volume's size in sectors.
    pub(crate) sectors: u64,
    /// The primary's cache block size (its records' alignment).
    pub(crate) block_size: u32,
    /// The replica set's epoch the primary runs with.
    pub(crate) epoch: u64,
    /// Bytes the replica's region should hold at least.
    pub(crate) region_bytes: u64,
}

/// Opens the cache device numbered `devno` for a peer's replica and finds its replica slot by
/// (origin, uuid), or makes one in free space (never taking another slot back). An existing
/// slot keeps its region; its epoch follows the primary's.
pub(crate) fn attach_replica(devno: u32, want: &ReplicaWant<'_>) -> Result<Attached, Refusal> {
    if want.origin == 0 {
        return Err(("a replica needs its primary's host id", EINVAL));
    }
    let holder = core::ptr::addr_of!(CACHE_HOLDER).cast_mut().cast::<c_void>();
    let dev = BlockDev::open_dev(devno, holder).map_err(open_refusal)?;
    if disk::is_ours(&dev) {
        return Err(("the replica cache device is a peerflash volume", EINVAL));
    }
    let (sb, mut block) = superblock(&dev)?;
    // Records keep the primary's lengths: they must be whole blocks of this device too.
    if want.block_size < sb.block_size || !want.block_size.is_multiple_of(sb.block_size) {
        return Err(("this host's cache blocks are larger than the primary's: its records would not be aligned", EINVAL));
    }
    let devno = dev.dev_t();
    let mut tables = SLOT_TABLES.lock();
    let scan = scan_slots(&dev, &sb, &tables, |s| s.is_replica_of(want.origin, &want.uuid), &mut block)?;
    if let Some((i, s)) = scan.mine {
        if s.backing_sectors != want.sectors {
            return Err(("the replica slot holds this volume for another size", EINVAL));
        }
        if is_running(&tables, devno, i) {
            return Err(("the replica is already open (another connection of the primary holds it)", EBUSY));
        }
        let mut slot = s;
        if slot.epoch != want.epoch {
            slot.epoch = want.epoch;
            slot.generation = slot.generation.wrapping_add(1);
            block.fill(0);
            slot.encode(&mut block, crc32c);
            dev.write_sync(sb.slot_sector(i), &block).map_err(|e| ("cannot write the replica slot", e))?;
        }
        return Ok(Attached { claim: claim(&mut tables, devno, i)?, dev, sb, slot_index: i, slot, created: false, reclaimed: KVec::new() });
    }
    if scan.damaged {
        return Err(("a slot of the cache device is damaged: no replica slot can be made while its region is unknown", EIO));
    }
    let seg_bytes = u64::from(sb.segment_sectors) * 512;
    let wanted = want.region_bytes.div_ceil(seg_bytes).max(2);
    // A slot of the same volume from another origin (same uuid: a previous owner's replica, or
    // this host's own slot of it after an online replay here), not open: when there is no room
    // otherwise it is taken over in place, records and all. The volume runs on
    // `want.origin` now, which it does only once its lock record is clean (every write the
    // previous owner acknowledged is on the SAN), so that replica is obsolete; `Replica::open`
    // scans it and moves its checkpoint past every record it holds, so none of them is ever
    // replayed. With room, it keeps its slot (two hosts' replicas of one uuid stay apart).
    let older = scan_slots(&dev, &sb, &tables, |s| s.uuid == want.uuid && s.origin != want.origin, &mut block)?
        .mine
        .filter(|(i, s)| s.backing_sectors == want.sectors && !is_running(&tables, devno, *i));
    let (index, first, count) = match make_room(&dev, &sb, false, Some(wanted), scan, &mut block) {
        Ok((index, first, count, _)) => (index, first, count),
        Err((_, e)) if e == ENOSPC && older.is_some() => {
            let Some((i, s)) = older else {
                return Err(("no room for the replica", ENOSPC));
            };
            let slot = Slot {
                name: Slot::pack_name(want.name),
                generation: s.generation.wrapping_add(1),
                origin: want.origin,
                epoch: want.epoch,
                ..s
            };
            block.fill(0);
            slot.encode(&mut block, crc32c);
            dev.write_sync(sb.slot_sector(i), &block).map_err(|e| ("cannot write the replica slot", e))?;
            pr_info!(
                "cache slot {}: the replica of host {}'s volume is taken over by host {} (the volume moved there; no room otherwise)\n",
                i,
                s.origin,
                want.origin
            );
            let mut reclaimed = KVec::new();
            reclaimed.push(s, GFP_KERNEL).map_err(|_| ("out of memory", ENOMEM))?;
            return Ok(Attached { claim: claim(&mut tables, devno, i)?, dev, sb, slot_index: i, slot, created: false, reclaimed });
        }
        Err(r) => return Err(r),
    };
    let slot = Slot {
        uuid: want.uuid,
        name: Slot::pack_name(want.name),
        policy: Policy::WriteBack,
        first_segment: first,
        segments: count,
        backing_sectors: want.sectors,
        serial_floor: 0,
        generation: 1,
        backing_path: Slot::pack_path(b""),
        // The replica's log goes round the whole region (no log limit to keep).
        log_limit: count,
        closed_dirty: 0,
        closed_at: 0,
        origin: want.origin,
        epoch: want.epoch,
    };
    write_new_slot(&dev, &sb, index, &slot, &mut block)?;
    Ok(Attached { claim: claim(&mut tables, devno, index)?, dev, sb, slot_index: index, slot, created: true, reclaimed: KVec::new() })
}

/// One pass over the slots of the device (`tables`: the locked registry of running slots;
/// `block`: a buffer of one block).
fn scan_slots(dev: &BlockDev, sb: &Superblock, tables: &KVec<(u32, u32)>, is_mine: impl Fn(&Slot) -> bool, block: &mut KVec<u8>) -> Result<SlotScan, Refusal> {
    let oom = |_| ("out of memory", ENOMEM);
    let devno = dev.dev_t();
    let mut mine: Option<(u32, Slot)> = None;
    let mut free: Option<u32> = None;
    let mut used: KVec<(u64, u64)> = KVec::new();
    let mut idle: KVec<(u32, Slot)> = KVec::new();
    let mut damaged = false;
    for i in 0..sb.max_volumes {
        dev.read_sync(sb.slot_sector(i), block).map_err(|e| ("cannot read the cache device's slot table", e))?;
        match Slot::decode(block, &sb, crc32c) {
            Ok(None) => {
                free.get_or_insert(i);
            }
            // A local volume's by name, and only a slot of this host's volumes
            // (`Slot::is_local_named`); a replica by origin and uuid.
            Ok(Some(s)) if is_mine(&s) => mine = Some((i, s)),
            Ok(Some(s)) => {
                used.push((s.first_segment, s.segments), GFP_KERNEL).map_err(oom)?;
                // A replica slot may hold the only copy of a peer's acknowledged writes: a
                // forced attach never takes it back.
                if !s.is_replica() && !is_running(tables, devno, i) {
                    idle.push((i, s), GFP_KERNEL).map_err(oom)?;
                }
            }
            // Its region is unknown: other volumes attach to their slots, but no new slot is
            // made while it could overlap the damaged one's region.
            Err(_) => damaged = true,
        }
    }

    Ok(SlotScan { mine, free, used, idle, damaged })
}

/// Room for a new slot: a free slot and a free run of `wanted` segments (`None`: the largest
/// run), as (slot, first segment, segments, slots taken back). Without it, a forced attach
/// takes back the slots of volumes not running here, one at a time, in slot order.
fn make_room(dev: &BlockDev, sb: &Superblock, force: bool, wanted: Option<u64>, scan: SlotScan, block: &mut KVec<u8>) -> Result<(u32, u64, u64, KVec<Slot>), Refusal> {
    let mut reclaimed = KVec::new();
    let oom = |_| ("out of memory", ENOMEM);
    let SlotScan { mut free, mut used, mut idle, .. } = scan;
    loop {
        let run = largest_free_run(&mut used, sb.segments);
        match (free, run) {
            (Some(i), Some((first, run))) if wanted.is_none_or(|n| n <= run) => {
                return Ok((i, first, wanted.unwrap_or(run), reclaimed));
            }
            _ => {}
        }
        if !force || idle.is_empty() {
            let why = match (free, run, force) {
                (None, _, false) => "the cache device has no free volume slot (force takes back the slots of volumes not running here, losing their data)",
                (None, _, true) => "the cache device has no free volume slot, and every slot belongs to a running volume",
                (_, None, false) => "no free space on the cache device (other volumes own all of it: give volumes a share with cache_mib, or force takes back the slots of volumes not running here, losing their data)",
                (_, None, true) => "no free space on the cache device, and running volumes own all of it",
                (_, Some(_), false) => "cache_mib is more than the largest free run of the cache device (force takes back the slots of volumes not running here, losing their data)",
                (_, Some(_), true) => "cache_mib is more than the largest free run the cache device can offer with every idle slot taken back",
            };
            return Err((why, ENOSPC));
        }
        let (i, gone) = idle.remove(0).map_err(|_| ("internal error: idle slot list", EINVAL))?;
        block.fill(0);
        dev.write_sync(sb.slot_sector(i), block).map_err(|e| ("cannot clear a slot taken back", e))?;
        if let Some(u) = used.iter().position(|&r| r == (gone.first_segment, gone.segments)) {
            let _ = used.remove(u);
        }
        free = Some(free.map_or(i, |f| f.min(i)));
        reclaimed.push(gone, GFP_KERNEL).map_err(oom)?;
    }
}

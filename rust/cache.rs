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
//! Lock order: `VolumeConfig::inner` (control.rs), then [`SLOT_TABLES`]; the slot-table I/O
//! runs under it. Nothing else is taken under `SLOT_TABLES`.

use core::ffi::c_void;

use kernel::bindings;
use kernel::prelude::*;

use crate::blk::bdev::BlockDev;
use crate::blk::disk::Disk;
use crate::crc::crc32c;
use crate::pfcore::format::{largest_free_run, FormatError, Policy, Slot, Superblock, META_BYTES};
use crate::volume::Volume;

kernel::sync::global_lock! {
    // SAFETY: initialised by `init` in the module initialiser, before configfs exists.
    unsafe(uninit) static SLOT_TABLES: Mutex<()> = ();
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
}

fn open_refusal(e: Error) -> Refusal {
    let why = match e {
        e if e == ENOENT => "the cache device does not exist",
        e if e == ENOTBLK => "the cache path is not a block device",
        e if e == EBUSY => "the cache device is in use (as a backing device, by a mounted filesystem or device-mapper)",
        e if e == EACCES || e == EROFS => "the cache device is read-only",
        e if e == ENXIO || e == ENODEV => "the cache device is not present",
        _ => "cannot open the cache device",
    };
    (why, e)
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
    if Disk::<Volume>::is_ours(&dev) {
        return Err(("the cache device is a peerflash volume", EINVAL));
    }
    let geo = dev.geometry();
    let bs = geo.logical_block_size.max(META_BYTES as u32);
    let mut block = KVec::from_elem(0u8, bs as usize, GFP_KERNEL).map_err(|_| ("out of memory", ENOMEM))?;
    dev.read_sync(0, &mut block).map_err(|e| ("cannot read the cache device's superblock", e))?;
    let sb = Superblock::decode(&block, geo.sectors, crc32c).map_err(format_refusal)?;
    if sb.block_size != bs {
        return Err(("the cache device's block size changed since it was formatted", EINVAL));
    }

    // From here to the slot write, no other attach may read or change the slot table.
    let _tables = SLOT_TABLES.lock();
    // One pass over the slots: ours by name, the first free one, and the segments in use.
    let mut mine: Option<(u32, Slot)> = None;
    let mut free: Option<u32> = None;
    let mut used: KVec<(u64, u64)> = KVec::new();
    for i in 0..sb.max_volumes {
        dev.read_sync(sb.slot_sector(i), &mut block).map_err(|e| ("cannot read the cache device's slot table", e))?;
        match Slot::decode(&block, &sb, crc32c) {
            Ok(None) => {
                free.get_or_insert(i);
            }
            Ok(Some(s)) if s.name_bytes() == want.name => mine = Some((i, s)),
            Ok(Some(s)) => used
                .push((s.first_segment, s.segments), GFP_KERNEL)
                .map_err(|_| ("out of memory", ENOMEM))?,
            Err(_) => return Err(("a slot of the cache device is damaged (see `peerflash inspect`)", EIO)),
        }
    }
    if let Some((i, s)) = mine {
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
        return Ok(Attached { dev, sb, slot_index: i, slot, created: false });
    }
    let Some(index) = free else {
        return Err(("the cache device has no free volume slot", ENOSPC));
    };
    let Some((first, run)) = largest_free_run(&mut used, sb.segments) else {
        return Err((
            "no free space on the cache device (other volumes own all of it; give volumes a share with cache_mib)",
            ENOSPC,
        ));
    };
    let count = match want.mib {
        0 => run,
        mib => {
            let n = (mib * 2048).div_ceil(u64::from(sb.segment_sectors));
            if n < 2 {
                return Err(("cache_mib is less than two segments (a volume's log must be able to wrap)", EINVAL));
            }
            if n > run {
                return Err(("cache_mib is more than the largest free run of the cache device", ENOSPC));
            }
            n
        }
    };
    let mut uuid = [0u8; 16];
    // SAFETY: `uuid` is valid for writes of 16 bytes; get_random_bytes may sleep, which is fine here.
    unsafe { bindings::get_random_bytes(uuid.as_mut_ptr().cast(), uuid.len()) };
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
    };
    slot.encode(&mut block, crc32c);
    dev.write_sync(sb.slot_sector(index), &block).map_err(|e| ("cannot write the volume's slot", e))?;
    Ok(Attached { dev, sb, slot_index: index, slot, created: true })
}

// SPDX-License-Identifier: GPL-2.0

//! Attaching a cache device to a volume: the superblock is checked, the volume's slot found (by
//! name) or made in free space, with the shared format code (`pfcore::format`,
//! Documentation/on-flash-format.md).
//!
//! Today this is the attach step only: the data path still passes everything through to the
//! backing device (issue 3 builds the write-back data path on top of it).

use core::ffi::c_void;

use kernel::bindings;
use kernel::prelude::*;

use crate::blk::bdev::BlockDev;
use crate::blk::disk::Disk;
use crate::crc::crc32c;
use crate::pfcore::format::{largest_free_run, FormatError, Policy, Slot, Superblock, META_BYTES};
use crate::volume::Volume;

/// A refusal: why, for `last_error`, and the errno for the writer.
pub(crate) type Refusal = (&'static str, Error);

/// A cache device opened for one volume, with the volume's slot.
pub(crate) struct Attached {
    /// The device, opened exclusively (by the volume's holder).
    #[allow(dead_code)] // Held for the exclusive open; the cache data path will do I/O on it.
    pub(crate) dev: BlockDev,
    /// Its superblock.
    #[allow(dead_code)] // Used by the cache data path (being built).
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
}

fn open_refusal(e: Error) -> Refusal {
    let why = match e {
        e if e == ENOENT => "the cache device does not exist",
        e if e == ENOTBLK => "the cache path is not a block device",
        e if e == EBUSY => "the cache device is in use (by another volume, a mounted filesystem or device-mapper)",
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

/// Opens the cache device at `path` for the volume `want` (exclusively for `holder`, which also
/// holds `backing`), and finds or makes its slot.
pub(crate) fn attach(path: &CStr, holder: *mut c_void, backing: &BlockDev, want: &Want<'_>) -> Result<Attached, Refusal> {
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
    let Some((first, count)) = largest_free_run(&mut used, sb.segments) else {
        return Err(("no free space on the cache device (other volumes own all of it)", ENOSPC));
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

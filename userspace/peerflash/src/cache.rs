//! Cache device verbs: `format-cache` writes an empty version-1 layout, `inspect` decodes what a
//! cache device holds with the same code the module uses (peerflash-core's `format`, `extent`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use peerflash_core::btree::BTreeIndex;
use peerflash_core::extent::{self, Extent};
use peerflash_core::format::{self, Checkpoint, Found, Superblock};
use peerflash_core::slot::Slot;
use peerflash_core::geometry::SECTOR_SIZE;
use peerflash_core::rebuild;
use serde::Serialize;

use crate::error::VolumeError;

/// The CRC32C the on-flash format uses, from the `crc32c` crate.
pub fn crc(prev: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(prev, data)
}

/// An open cache device (or image file) with its size and logical block size.
pub struct Device {
    file: File,
    /// For a block device: the same device opened with O_DIRECT, which every read goes through.
    /// The module writes the device with bios, around this host's page cache, so buffered
    /// reads could return stale blocks (seen: a slot written by a second volume's attach was
    /// missing from `inspect` while the first volume kept the device open).
    direct: Option<File>,
    /// Size in sectors.
    pub sectors: u64,
    /// Logical block size in bytes (512 for a regular file).
    pub block_size: u32,
}

impl Device {
    /// Opens `path` (read-only unless `write`; for writing exclusively).
    pub fn open(path: &str, write: bool) -> Result<Device> {
        let mut opts = OpenOptions::new();
        opts.read(true).write(write);
        if write {
            // Refuse a device something else holds open exclusively (mounted, in a volume).
            opts.custom_flags(libc::O_EXCL);
        }
        let mut file = opts.open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                VolumeError::NotFound(format!("{path} does not exist")).into()
            }
            _ if e.raw_os_error() == Some(16) => VolumeError::Busy(format!(
                "{path} is in use (mounted, or a volume's cache device)"
            ))
            .into(),
            _ => anyhow::Error::new(e).context(format!("cannot open {path}")),
        })?;
        let meta = file
            .metadata()
            .with_context(|| format!("cannot stat {path}"))?;
        let ft = meta.file_type();
        if !ft.is_block_device() && !ft.is_file() {
            return Err(VolumeError::Invalid(format!(
                "{path} is neither a block device nor a file"
            ))
            .into());
        }
        let bytes = file
            .seek(SeekFrom::End(0))
            .with_context(|| format!("cannot size {path}"))?;
        let (block_size, direct) = if ft.is_block_device() {
            let d = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
                .with_context(|| format!("cannot open {path} for direct reads"))?;
            (sysfs_block_size(meta.rdev()), Some(d))
        } else {
            (512, None)
        };
        Ok(Device {
            file,
            direct,
            sectors: bytes / SECTOR_SIZE,
            block_size,
        })
    }

    /// Reads `buf.len()` bytes at `sector` (from the device itself, not the page cache).
    pub fn read_at(&mut self, sector: u64, buf: &mut [u8]) -> Result<()> {
        if let Some(d) = &self.direct {
            // O_DIRECT wants block-aligned offsets, lengths and memory: read the covering
            // blocks into an aligned buffer and copy out.
            let bs = u64::from(self.block_size.max(512));
            let start = sector * SECTOR_SIZE;
            let first = start / bs * bs;
            let end = (start + buf.len() as u64).div_ceil(bs) * bs;
            let mut bounce = Aligned::new((end - first) as usize, bs as usize)?;
            d.read_exact_at(bounce.as_mut(), first)
                .with_context(|| format!("cannot read sector {sector}"))?;
            let off = (start - first) as usize;
            buf.copy_from_slice(&bounce.as_mut()[off..off + buf.len()]);
            return Ok(());
        }
        self.file.seek(SeekFrom::Start(sector * SECTOR_SIZE))?;
        self.file
            .read_exact(buf)
            .with_context(|| format!("cannot read sector {sector}"))
    }

    /// Writes `buf` at `sector`.
    pub fn write_at(&mut self, sector: u64, buf: &[u8]) -> Result<()> {
        self.file.seek(SeekFrom::Start(sector * SECTOR_SIZE))?;
        self.file
            .write_all(buf)
            .with_context(|| format!("cannot write sector {sector}"))
    }
}

/// A zeroed heap buffer aligned for O_DIRECT.
struct Aligned {
    ptr: std::ptr::NonNull<u8>,
    layout: std::alloc::Layout,
}

impl Aligned {
    fn new(len: usize, align: usize) -> Result<Aligned> {
        let layout = std::alloc::Layout::from_size_align(len.max(1), align)?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = std::ptr::NonNull::new(ptr).context("out of memory")?;
        Ok(Aligned { ptr, layout })
    }

    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` holds `layout.size()` initialised bytes owned by `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// Logical block size of the block device `rdev`, from sysfs.
fn sysfs_block_size(rdev: u64) -> u32 {
    let (major, minor) = (
        ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff),
        (rdev & 0xff) | ((rdev >> 12) & !0xff),
    );
    std::fs::read_to_string(format!(
        "/sys/dev/block/{major}:{minor}/queue/logical_block_size"
    ))
    .ok()
    .and_then(|s| s.trim().parse().ok())
    .unwrap_or(512)
}

fn read_superblock(dev: &mut Device, path: &str) -> Result<Superblock> {
    let mut buf = vec![0u8; format::META_BYTES];
    dev.read_at(0, &mut buf)?;
    Superblock::decode(&buf, dev.sectors, crc).map_err(|e| {
        VolumeError::Invalid(format!(
            "{path} is not a usable peerflash cache device: {}",
            e.describe()
        ))
        .into()
    })
}

/// Formats `path` as an empty cache device. Refuses a device that already holds a peerflash
/// layout with volumes in it, unless `force`.
pub fn format_cache(path: &str, segment_kib: u32, force: bool) -> Result<Superblock> {
    if !format::crc_self_test(crc) {
        bail!("the CRC32C implementation fails its self-test");
    }
    let mut dev = Device::open(path, true)?;
    if let Ok(old) = read_superblock(&mut dev, path) {
        let used = read_slots(&mut dev, &old)?
            .into_iter()
            .filter(|(_, s)| s.is_some())
            .count();
        if used > 0 && !force {
            return Err(VolumeError::Busy(format!(
                "{path} is a peerflash cache device with {used} volume(s); formatting would lose their \
                 cached data (use --force to format anyway)"
            ))
            .into());
        }
    }
    let uuid = *uuid::Uuid::new_v4().as_bytes();
    let sb = Superblock::plan(
        dev.sectors,
        dev.block_size,
        segment_kib.saturating_mul(2),
        uuid,
    )
    .map_err(|e| VolumeError::Invalid(format!("cannot format {path}: {}", e.describe())))?;
    // Clear the slot and checkpoint tables, then write the superblock last.
    let zero = vec![0u8; ((sb.data_start - sb.slot_start) * SECTOR_SIZE) as usize];
    dev.write_at(sb.slot_start, &zero)?;
    let mut block = vec![0u8; sb.block_size as usize];
    sb.encode(&mut block, crc);
    dev.write_at(0, &block)?;
    dev.file
        .sync_all()
        .with_context(|| format!("cannot flush {path}"))?;
    Ok(sb)
}

/// Uuids of the volumes that have a slot on `path` (the slot table only, no scan).
pub fn slot_uuids(path: &str) -> Result<Vec<String>> {
    let mut dev = Device::open(path, false)?;
    let sb = read_superblock(&mut dev, path)?;
    Ok(read_slots(&mut dev, &sb)?
        .into_iter()
        .filter_map(|(_, s)| s.map(|s| uuid::Uuid::from_bytes(s.uuid).to_string()))
        .collect())
}

/// The first slot on `path` that `wanted` picks (the slot table only, no scan).
pub fn find_slot(path: &str, wanted: impl Fn(&Slot) -> bool) -> Result<Option<Slot>> {
    let mut dev = Device::open(path, false)?;
    let sb = read_superblock(&mut dev, path)?;
    Ok(read_slots(&mut dev, &sb)?
        .into_iter()
        .filter_map(|(_, s)| s)
        .find(|s| wanted(s)))
}

fn read_slots(dev: &mut Device, sb: &Superblock) -> Result<Vec<(u32, Option<Slot>)>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; sb.block_size as usize];
    for i in 0..sb.max_volumes {
        dev.read_at(sb.slot_sector(i), &mut buf)?;
        match Slot::decode(&buf, sb, crc) {
            Ok(s) => out.push((i, s)),
            Err(e) => bail!("slot {i} is damaged: {}", e.describe()),
        }
    }
    Ok(out)
}

/// What `inspect` reports of one volume.
#[derive(Debug, Serialize)]
pub struct VolumeReport {
    /// Slot number.
    pub slot: u32,
    /// Volume name.
    pub name: String,
    /// Volume uuid.
    pub uuid: String,
    /// Policy the volume last ran with.
    pub policy: &'static str,
    /// 0: a volume of this host; otherwise a replica slot holding the writes of this host id's
    /// volume (policy wbp).
    pub origin: u16,
    /// Replica slots: the replica-set epoch of the primary's last attach.
    pub epoch: u64,
    /// Backing path recorded when the slot was made.
    pub backing: String,
    /// First segment and number of segments of its region.
    pub region: (u64, u64),
    /// Checkpoint serial (0: none yet; the slot's floor when no copy is readable).
    pub checkpoint: u64,
    /// Whether a checkpoint copy is readable: without one the module refuses to replay the
    /// records unless asked to (`create --replay`), and what a replay would take is counted
    /// from the floor.
    pub checkpoint_readable: bool,
    /// Highest serial found in the log.
    pub last_serial: u64,
    /// Records with a valid checksum.
    pub records: u64,
    /// Records whose checksum fails (torn or corrupted; never served).
    pub torn: u64,
    /// Records with the volume's uuid that it cannot have written (past its end, longer than
    /// any request, an impossible serial): ignored by a replay.
    pub invalid: u64,
    /// Dirty records after the checkpoint (what a replay would destage).
    pub dirty_records: u64,
    /// When the volume was removed with dirty data (seconds since the epoch; 0: it was not, or
    /// it crashed): the module replays its records only with `create --replay`.
    pub removed_dirty_at: u64,
    /// Bytes a replay would write to the SAN (after newer writes supersede older ones).
    pub dirty_bytes: u64,
    /// CRC32C over (serial, lba, length, CRC32C of the data) of every dirty record, in serial
    /// order, as 8 hex digits: equal on a primary and its replicas when they hold the same
    /// records with the same data.
    pub dirty_digest: String,
}

/// What `inspect` reports of a cache device.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Device path.
    pub device: String,
    /// Format version.
    pub version: u32,
    /// Device uuid.
    pub uuid: String,
    /// Metadata block size.
    pub block_size: u32,
    /// Segment size in bytes.
    pub segment_bytes: u64,
    /// Number of segments.
    pub segments: u64,
    /// First sector of the data area (segment 0).
    pub data_start: u64,
    /// Segments not in any volume's region.
    pub free_segments: u64,
    /// Volumes.
    pub volumes: Vec<VolumeReport>,
}

/// Decodes the cache device at `path`. With `progress`, a bar shows the scan.
pub fn inspect(path: &str, progress: bool) -> Result<Report> {
    let mut dev = Device::open(path, false)?;
    let sb = read_superblock(&mut dev, path)?;
    let slots = read_slots(&mut dev, &sb)?;
    let used: u64 = slots
        .iter()
        .filter_map(|(_, s)| s.map(|s| s.segments))
        .sum();
    let to_scan: u64 = slots
        .iter()
        .filter_map(|(_, s)| s.map(|s| s.scan_segments()))
        .sum();
    let bar = if progress {
        ProgressBar::new(to_scan)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("scanning {bar:40} {pos}/{len} segments ({eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut volumes = Vec::new();
    let mut block = vec![0u8; sb.block_size as usize];
    for (i, slot) in slots {
        let Some(slot) = slot else { continue };
        dev.read_at(sb.checkpoint_sector(i, 0), &mut block)?;
        let a = Checkpoint::decode(&block, &slot.uuid, crc);
        dev.read_at(sb.checkpoint_sector(i, 1), &mut block)?;
        let b = Checkpoint::decode(&block, &slot.uuid, crc);
        let checkpoint_readable = rebuild::start([a, b], slot.serial_floor, false).is_ok();
        let checkpoint = rebuild::start([a, b], slot.serial_floor, true).unwrap_or(slot.serial_floor);
        let bounds = rebuild::Bounds {
            backing_sectors: slot.backing_sectors,
            max_len: rebuild::MAX_RECORD_SECTORS,
        };
        let mut r = VolumeReport {
            slot: i,
            name: String::from_utf8_lossy(slot.name_bytes()).into_owned(),
            uuid: uuid::Uuid::from_bytes(slot.uuid).to_string(),
            policy: slot.policy.name(),
            origin: slot.origin,
            epoch: slot.epoch,
            backing: String::from_utf8_lossy(slot.backing_path_bytes()).into_owned(),
            region: (slot.first_segment, slot.segments),
            checkpoint,
            checkpoint_readable,
            removed_dirty_at: if slot.closed_dirty != 0 { slot.closed_at.max(1) } else { 0 },
            last_serial: 0,
            records: 0,
            torn: 0,
            invalid: 0,
            dirty_records: 0,
            dirty_bytes: 0,
            dirty_digest: String::new(),
        };
        let mut digest: Vec<(u64, u64, u32, u32)> = Vec::new();
        let mut index = BTreeIndex::default();
        let mut dirty: i64 = 0;
        let mut seg = vec![0u8; sb.segment_sectors as usize * SECTOR_SIZE as usize];
        // Only where the log may have written (the slot's log limit), as the module scans.
        for s in slot.first_segment..slot.first_segment + slot.scan_segments() {
            let base = sb.segment_sector(s);
            dev.read_at(base, &mut seg)?;
            format::scan_segment(&seg, sb.block_size, crc, |off, found| match found {
                Found::Valid(h) if h.uuid == slot.uuid => {
                    r.records += 1;
                    r.last_serial = r.last_serial.max(h.serial);
                    let verdict = rebuild::judge(&h, &slot.uuid, checkpoint, &bounds);
                    if matches!(verdict, rebuild::Verdict::Invalid(_)) {
                        r.invalid += 1;
                    }
                    if verdict == rebuild::Verdict::Replay {
                        r.dirty_records += 1;
                        let at = (off + sb.block_sectors()) as usize * SECTOR_SIZE as usize;
                        let data = seg.get(at..at + h.len as usize * SECTOR_SIZE as usize).unwrap_or(&[]);
                        digest.push((h.serial, h.lba, h.len, crc32c::crc32c(data)));
                        let e = Extent {
                            lba: h.lba,
                            len: u64::from(h.len),
                            flash: base + off + sb.block_sectors(),
                            serial: h.serial,
                            dirty: true,
                        };
                        let Ok(d) = extent::apply(&mut index, e);
                        dirty += d.dirty;
                    }
                }
                Found::Torn(h) if h.uuid == slot.uuid => r.torn += 1,
                _ => {}
            });
            bar.inc(1);
        }
        r.dirty_bytes = u64::try_from(dirty).unwrap_or(0) * SECTOR_SIZE;
        digest.sort_unstable();
        let sum = digest.iter().fold(0u32, |c, (serial, lba, len, data)| {
            let c = crc32c::crc32c_append(c, &serial.to_le_bytes());
            let c = crc32c::crc32c_append(c, &lba.to_le_bytes());
            let c = crc32c::crc32c_append(c, &len.to_le_bytes());
            crc32c::crc32c_append(c, &data.to_le_bytes())
        });
        r.dirty_digest = format!("{sum:08x}");
        volumes.push(r);
    }
    bar.finish_and_clear();
    Ok(Report {
        device: path.to_string(),
        version: format::VERSION,
        uuid: uuid::Uuid::from_bytes(sb.device_uuid).to_string(),
        block_size: sb.block_size,
        segment_bytes: u64::from(sb.segment_sectors) * SECTOR_SIZE,
        segments: sb.segments,
        data_start: sb.data_start,
        free_segments: sb.segments.saturating_sub(used),
        volumes,
    })
}

impl Report {
    /// The human form: indented `key: value` lines.
    pub fn human(&self) -> String {
        let mut s = format!(
            "cache device {}\n  format version: {}\n  uuid: {}\n  block size: {}\n  segment size: {} KiB\n  \
             segments: {} ({} free) from sector {}\n  volumes: {}\n",
            self.device,
            self.version,
            self.uuid,
            self.block_size,
            self.segment_bytes / 1024,
            self.segments,
            self.free_segments,
            self.data_start,
            self.volumes.len()
        );
        for v in &self.volumes {
            s.push_str(&format!(
                "volume {} (slot {}){}\n  uuid: {}\n  policy: {}\n  backing: {}\n  region: segments {}..{}\n  \
                 checkpoint serial: {}{}\n  last serial: {}\n  records: {} valid, {} torn, {} invalid\n  \
                 dirty after checkpoint: {} records, {} bytes (digest {}){}\n",
                v.name,
                v.slot,
                if v.origin != 0 {
                    format!(", replica of host {}'s volume, epoch {}", v.origin, v.epoch)
                } else {
                    String::new()
                },
                v.uuid,
                v.policy,
                v.backing,
                v.region.0,
                v.region.0 + v.region.1,
                v.checkpoint,
                if v.checkpoint_readable {
                    ""
                } else {
                    " (no checkpoint copy readable: the slot's floor)"
                },
                v.last_serial,
                v.records,
                v.torn,
                v.invalid,
                v.dirty_records,
                v.dirty_bytes,
                v.dirty_digest,
                if v.removed_dirty_at != 0 {
                    format!(
                        "\n  removed with dirty data {} ago: replayed only by `create --replay`",
                        crate::cache::ago(v.removed_dirty_at)
                    )
                } else {
                    String::new()
                }
            ));
        }
        s
    }
}

/// How long ago `unix_secs` was, for people ("3 h 12 min").
pub fn ago(unix_secs: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let d = now.saturating_sub(unix_secs);
    match d {
        0..=119 => format!("{d} s"),
        120..=7199 => format!("{} min", d / 60),
        7200..=172_799 => format!("{} h {} min", d / 3600, d % 3600 / 60),
        _ => format!("{} days", d / 86400),
    }
}

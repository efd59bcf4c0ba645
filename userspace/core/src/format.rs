//! The on-flash format of a peerflash cache device, version 1 (Documentation/on-flash-format.md).
//!
//! One cache device serves several volumes. Its first blocks hold a superblock, a table of volume
//! slots and two checkpoint blocks per slot; the rest is cut into equal segments, and each volume
//! owns a contiguous run of segments (its region), used as a circular log of write records. A
//! record is a header block followed by the data, written as one I/O; a single CRC32C covers the
//! header and the data, so a torn or corrupted record is detected and never served.
//!
//! Every metadata item (superblock, slot, checkpoint, record header) takes one *metadata block*:
//! the cache device's logical block size (512 or 4096 bytes), so that each is written by one
//! atomic device write. Only the first 512 bytes of a metadata block carry data (the rest is zero).
//!
//! All integers are little-endian. Checksums are CRC32C (Castagnoli) with the usual initial value
//! and final inversion; the caller supplies the implementation (the kernel's in the module, the
//! `crc32c` crate in userspace) as a [`Crc32c`] function.
//!
//! Decoding never panics on any input: the fuzz target `format` checks this.

use super::geometry::SECTOR_SIZE;

/// Format version written by this code; a device of another version is refused.
pub const VERSION: u32 = 1;
/// Most volumes one cache device serves.
pub const MAX_VOLUMES: u32 = 64;
/// Bytes of a metadata block that carry data.
pub const META_BYTES: usize = 512;
/// Bytes in a volume name field (names are at most 28 bytes, see `names`).
pub const NAME_BYTES: usize = 32;
/// Bytes in the backing path field of a slot (longer paths are cut, it is informational).
pub const PATH_BYTES: usize = 256;
/// Default segment size: 1 MiB.
pub const DEFAULT_SEGMENT_SECTORS: u32 = 2048;
/// Smallest and largest segment sizes accepted at format time (64 KiB, 64 MiB).
pub const MIN_SEGMENT_SECTORS: u32 = 128;
/// See [`MIN_SEGMENT_SECTORS`].
pub const MAX_SEGMENT_SECTORS: u32 = 131_072;
/// Segments the device must have at least, so that a volume's log can wrap.
pub const MIN_SEGMENTS: u64 = 4;

/// Magic numbers, the first eight bytes of every metadata block.
pub const SUPER_MAGIC: [u8; 8] = *b"PFLASHSB";
/// Magic of a volume slot.
pub const SLOT_MAGIC: [u8; 8] = *b"PFLASHVL";
/// Magic of a checkpoint block.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"PFLASHCP";
/// Magic of a write record header.
pub const RECORD_MAGIC: [u8; 8] = *b"PFLASHWR";

/// Offset of the checksum in every metadata block: it covers bytes `0..CRC_OFFSET`.
const CRC_OFFSET: usize = META_BYTES - 4;
/// Bytes of a record header covered together with the data by the record's checksum.
pub const RECORD_HEADER_BYTES: usize = 64;

/// A CRC32C implementation: `f(crc_so_far, bytes)` returns the CRC32C of everything so far followed
/// by `bytes` (`f(0, b"123456789") == 0xE306_9283`).
pub type Crc32c = fn(u32, &[u8]) -> u32;

/// Checks a [`Crc32c`] implementation against the standard check value; callers refuse to work
/// with one that fails (a wrong checksum would make every record look torn).
pub fn crc_self_test(crc: Crc32c) -> bool {
    crc(0, b"123456789") == 0xE306_9283 && crc(crc(0, b"1234"), b"56789") == 0xE306_9283
}

/// Why a block or record was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatError {
    /// The buffer is shorter than the item.
    Short,
    /// The magic number is not the expected one (unformatted, or another kind of block).
    BadMagic,
    /// The format version is not [`VERSION`].
    BadVersion(u32),
    /// The checksum does not match: torn or corrupted.
    BadChecksum,
    /// The fields contradict each other or the device.
    Inconsistent(&'static str),
}

impl FormatError {
    /// A message for humans.
    pub fn describe(&self) -> &'static str {
        match self {
            FormatError::Short => "the block is shorter than expected",
            FormatError::BadMagic => "no peerflash signature (not a peerflash cache device?)",
            FormatError::BadVersion(_) => "unsupported on-flash format version",
            FormatError::BadChecksum => "checksum mismatch (torn or corrupted)",
            FormatError::Inconsistent(why) => why,
        }
    }
}

/// Little-endian field access within a metadata block; out-of-range reads give zero and
/// out-of-range writes are dropped, so no input can make it panic (callers check lengths first).
pub(crate) struct Le<'a>(pub(crate) &'a [u8]);

impl Le<'_> {
    pub(crate) fn bytes<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some(src) = self.0.get(at..at + N) {
            out.copy_from_slice(src);
        }
        out
    }
    pub(crate) fn u8(&self, at: usize) -> u8 {
        self.bytes::<1>(at)[0]
    }
    pub(crate) fn u16(&self, at: usize) -> u16 {
        u16::from_le_bytes(self.bytes(at))
    }
    pub(crate) fn u32(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.bytes(at))
    }
    pub(crate) fn u64(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.bytes(at))
    }
}

pub(crate) fn put(buf: &mut [u8], at: usize, src: &[u8]) {
    if let Some(dst) = buf.get_mut(at..at + src.len()) {
        dst.copy_from_slice(src);
    }
}

/// `bytes` in a NUL-padded field of `N` bytes (cut at `N`).
pub(crate) fn pad<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    put(&mut out, 0, bytes.get(..bytes.len().min(N)).unwrap_or(&[]));
    out
}

/// A NUL-padded field without its padding.
pub fn unpad(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    field.get(..end).unwrap_or(&[])
}

/// Checks length, magic and the block checksum of a metadata block.
pub(crate) fn check_meta(buf: &[u8], magic: &[u8; 8], crc: Crc32c) -> Result<(), FormatError> {
    let Some(meta) = buf.get(..META_BYTES) else {
        return Err(FormatError::Short);
    };
    if meta.get(..8) != Some(&magic[..]) {
        return Err(FormatError::BadMagic);
    }
    let want = Le(meta).u32(CRC_OFFSET);
    if crc(0, meta.get(..CRC_OFFSET).unwrap_or(&[])) != want {
        return Err(FormatError::BadChecksum);
    }
    Ok(())
}

/// Zeroes `buf`, writes the magic and, once `fill` has put the fields, the checksum.
pub(crate) fn seal_meta(
    buf: &mut [u8],
    magic: &[u8; 8],
    crc: Crc32c,
    fill: impl FnOnce(&mut [u8]),
) {
    buf.iter_mut().for_each(|b| *b = 0);
    put(buf, 0, magic);
    fill(buf);
    let sum = crc(0, buf.get(..CRC_OFFSET).unwrap_or(&[]));
    put(buf, CRC_OFFSET, &sum.to_le_bytes());
}

/// The superblock: block 0 of the cache device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    /// Metadata block size in bytes: the cache device's logical block size (512 or 4096).
    pub block_size: u32,
    /// Identity of this cache device, chosen at format time.
    pub device_uuid: [u8; 16],
    /// Size of the device at format time, in sectors.
    pub total_sectors: u64,
    /// Segment size in sectors.
    pub segment_sectors: u32,
    /// Number of volume slots.
    pub max_volumes: u32,
    /// First sector of the slot table.
    pub slot_start: u64,
    /// First sector of the checkpoint table.
    pub checkpoint_start: u64,
    /// First sector of segment 0.
    pub data_start: u64,
    /// Number of segments.
    pub segments: u64,
}

impl Superblock {
    /// The layout for a device of `total_sectors` with logical block size `block_size`.
    pub fn plan(
        total_sectors: u64,
        block_size: u32,
        segment_sectors: u32,
        device_uuid: [u8; 16],
    ) -> Result<Superblock, FormatError> {
        if block_size != 512 && block_size != 4096 {
            return Err(FormatError::Inconsistent(
                "the cache device's block size must be 512 or 4096",
            ));
        }
        let bs = u64::from(block_size) / SECTOR_SIZE;
        if !(MIN_SEGMENT_SECTORS..=MAX_SEGMENT_SECTORS).contains(&segment_sectors)
            || u64::from(segment_sectors) % bs != 0
            || !segment_sectors.is_power_of_two()
        {
            return Err(FormatError::Inconsistent(
                "the segment size must be a power of two from 64 KiB to 64 MiB",
            ));
        }
        let slot_start = bs;
        let checkpoint_start = slot_start + u64::from(MAX_VOLUMES) * bs;
        let meta_end = checkpoint_start + 2 * u64::from(MAX_VOLUMES) * bs;
        let seg = u64::from(segment_sectors);
        let data_start = meta_end.div_ceil(seg) * seg;
        let segments = total_sectors.saturating_sub(data_start) / seg;
        if segments < MIN_SEGMENTS {
            return Err(FormatError::Inconsistent(
                "the cache device is too small (needs 4 segments after the metadata)",
            ));
        }
        Ok(Superblock {
            block_size,
            device_uuid,
            total_sectors,
            segment_sectors,
            max_volumes: MAX_VOLUMES,
            slot_start,
            checkpoint_start,
            data_start,
            segments,
        })
    }

    /// Sectors per metadata block.
    pub fn block_sectors(&self) -> u64 {
        u64::from(self.block_size) / SECTOR_SIZE
    }

    /// First sector of slot `i`.
    pub fn slot_sector(&self, i: u32) -> u64 {
        self.slot_start + u64::from(i) * self.block_sectors()
    }

    /// First sector of checkpoint copy `copy` (0 or 1) of slot `i`.
    pub fn checkpoint_sector(&self, i: u32, copy: u32) -> u64 {
        self.checkpoint_start + (2 * u64::from(i) + u64::from(copy & 1)) * self.block_sectors()
    }

    /// First sector of segment `s`.
    pub fn segment_sector(&self, s: u64) -> u64 {
        self.data_start + s * u64::from(self.segment_sectors)
    }

    /// Encodes into `buf` (at least [`META_BYTES`]).
    pub fn encode(&self, buf: &mut [u8], crc: Crc32c) {
        seal_meta(buf, &SUPER_MAGIC, crc, |b| {
            put(b, 8, &VERSION.to_le_bytes());
            put(b, 12, &self.block_size.to_le_bytes());
            put(b, 16, &self.device_uuid);
            put(b, 32, &self.total_sectors.to_le_bytes());
            put(b, 40, &self.segment_sectors.to_le_bytes());
            put(b, 44, &self.max_volumes.to_le_bytes());
            put(b, 48, &self.slot_start.to_le_bytes());
            put(b, 56, &self.checkpoint_start.to_le_bytes());
            put(b, 64, &self.data_start.to_le_bytes());
            put(b, 72, &self.segments.to_le_bytes());
        });
    }

    /// Decodes and validates a superblock read from a device of `device_sectors` sectors.
    pub fn decode(buf: &[u8], device_sectors: u64, crc: Crc32c) -> Result<Superblock, FormatError> {
        check_meta(buf, &SUPER_MAGIC, crc)?;
        let r = Le(buf);
        let version = r.u32(8);
        if version != VERSION {
            return Err(FormatError::BadVersion(version));
        }
        let sb = Superblock {
            block_size: r.u32(12),
            device_uuid: r.bytes(16),
            total_sectors: r.u64(32),
            segment_sectors: r.u32(40),
            max_volumes: r.u32(44),
            slot_start: r.u64(48),
            checkpoint_start: r.u64(56),
            data_start: r.u64(64),
            segments: r.u64(72),
        };
        // The layout must be exactly the one `plan` makes: nothing else was ever written.
        let planned = Superblock::plan(
            sb.total_sectors,
            sb.block_size,
            sb.segment_sectors,
            sb.device_uuid,
        )?;
        if planned != sb {
            return Err(FormatError::Inconsistent(
                "the superblock's layout fields do not agree",
            ));
        }
        if sb.total_sectors > device_sectors {
            return Err(FormatError::Inconsistent(
                "the cache device is smaller than when it was formatted",
            ));
        }
        Ok(sb)
    }
}

/// A checkpoint: every write of the volume with a serial at most `serial` is on the SAN (or was
/// superseded by a newer write). Two copies per slot, written alternately; the valid copy with the
/// highest `seq` is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// The volume.
    pub uuid: [u8; 16],
    /// Checkpoint serial.
    pub serial: u64,
    /// Write sequence of this checkpoint block.
    pub seq: u64,
}

impl Checkpoint {
    /// Copy (0 or 1) that checkpoint write number `seq` goes to.
    pub fn copy_for(seq: u64) -> u32 {
        (seq & 1) as u32
    }

    /// Encodes into `buf` (at least [`META_BYTES`]).
    pub fn encode(&self, buf: &mut [u8], crc: Crc32c) {
        seal_meta(buf, &CHECKPOINT_MAGIC, crc, |b| {
            put(b, 8, &self.uuid);
            put(b, 24, &self.serial.to_le_bytes());
            put(b, 32, &self.seq.to_le_bytes());
        });
    }

    /// Decodes one copy; `None` when it is absent, torn or of another volume.
    pub fn decode(buf: &[u8], uuid: &[u8; 16], crc: Crc32c) -> Option<Checkpoint> {
        check_meta(buf, &CHECKPOINT_MAGIC, crc).ok()?;
        let r = Le(buf);
        let cp = Checkpoint {
            uuid: r.bytes(8),
            serial: r.u64(24),
            seq: r.u64(32),
        };
        (cp.uuid == *uuid).then_some(cp)
    }

    /// The current checkpoint from the two copies.
    pub fn newest(a: Option<Checkpoint>, b: Option<Checkpoint>) -> Option<Checkpoint> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.seq > a.seq { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

/// Record flag: the data was not on the SAN when written (a write-back write). Only dirty records
/// are used when the index is rebuilt; clean ones (write-through copies, read population) are not
/// trusted after a restart, since a newer write may have reached the SAN without them.
pub const RECORD_DIRTY: u8 = 1;

/// A write record header: the first metadata block of a record, followed by `len` sectors of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Flags ([`RECORD_DIRTY`]).
    pub flags: u8,
    /// Where the write came from: 0 for this host, a peer's host id for a replica (policy wbp).
    pub origin: u16,
    /// Data length in 512-byte sectors.
    pub len: u32,
    /// The volume.
    pub uuid: [u8; 16],
    /// Serial number of the write within its volume.
    pub serial: u64,
    /// Volume address of the first sector.
    pub lba: u64,
    /// CRC32C of the 60 header bytes before it followed by the data.
    pub crc: u32,
}

impl RecordHeader {
    /// Whether the record holds data that was not yet on the SAN.
    pub fn is_dirty(&self) -> bool {
        self.flags & RECORD_DIRTY != 0
    }

    fn encode_fields(&self, buf: &mut [u8]) {
        put(buf, 0, &RECORD_MAGIC);
        put(buf, 8, &1u16.to_le_bytes());
        put(buf, 10, &[1, self.flags]); // kind 1: write
        put(buf, 12, &self.len.to_le_bytes());
        put(buf, 16, &self.uuid);
        put(buf, 32, &self.serial.to_le_bytes());
        put(buf, 40, &self.lba.to_le_bytes());
        put(buf, 48, &self.origin.to_le_bytes());
    }

    /// The record checksum, computed over the header fields and then each data chunk in order.
    pub fn checksum<'a>(&self, data: impl IntoIterator<Item = &'a [u8]>, crc: Crc32c) -> u32 {
        let mut head = [0u8; RECORD_HEADER_BYTES];
        self.encode_fields(&mut head);
        let mut sum = crc(0, head.get(..RECORD_HEADER_BYTES - 4).unwrap_or(&[]));
        for chunk in data {
            sum = crc(sum, chunk);
        }
        sum
    }

    /// Encodes the header into `buf` (one metadata block, zero-filled past the header); `self.crc`
    /// must already hold [`RecordHeader::checksum`] of the data.
    pub fn encode(&self, buf: &mut [u8]) {
        buf.iter_mut().for_each(|b| *b = 0);
        if buf.len() < RECORD_HEADER_BYTES {
            return;
        }
        self.encode_fields(buf);
        put(buf, RECORD_HEADER_BYTES - 4, &self.crc.to_le_bytes());
    }

    /// Decodes a header block. It is only a candidate until [`RecordHeader::verify`] has checked the
    /// data; `max_len` is the longest record that fits where it was found.
    pub fn decode(buf: &[u8], max_len: u64) -> Result<RecordHeader, FormatError> {
        let Some(head) = buf.get(..RECORD_HEADER_BYTES) else {
            return Err(FormatError::Short);
        };
        if head.get(..8) != Some(&RECORD_MAGIC[..]) {
            return Err(FormatError::BadMagic);
        }
        let r = Le(head);
        let version = r.u16(8);
        if version != 1 || r.u8(10) != 1 {
            return Err(FormatError::BadVersion(u32::from(version)));
        }
        let h = RecordHeader {
            flags: r.u8(11),
            len: r.u32(12),
            uuid: r.bytes(16),
            serial: r.u64(32),
            lba: r.u64(40),
            origin: r.u16(48),
            crc: r.u32(RECORD_HEADER_BYTES - 4),
        };
        // Canonical encoding only: the checksum is computed over the re-encoded fields, so bytes
        // that no field holds must be exactly what `encode` writes.
        if h.flags & !RECORD_DIRTY != 0
            || head
                .get(50..RECORD_HEADER_BYTES - 4)
                .is_none_or(|r| r.iter().any(|&b| b != 0))
        {
            return Err(FormatError::Inconsistent(
                "unknown flags or non-zero reserved bytes",
            ));
        }
        if h.len == 0 || u64::from(h.len) > max_len {
            return Err(FormatError::Inconsistent("record length out of range"));
        }
        if h.serial == 0 {
            return Err(FormatError::Inconsistent("record serial 0"));
        }
        Ok(h)
    }

    /// Whether `data` (the record's `len` sectors) matches the checksum.
    pub fn verify(&self, data: &[u8], crc: Crc32c) -> bool {
        data.len() as u64 == u64::from(self.len) * SECTOR_SIZE
            && self.checksum([data], crc) == self.crc
    }

    /// Sectors the whole record takes on flash with metadata blocks of `block_size` bytes.
    pub fn footprint(len: u32, block_size: u32) -> u64 {
        u64::from(block_size) / SECTOR_SIZE + u64::from(len)
    }
}

/// What a scan found at one place of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A record whose checksum matches.
    Valid(RecordHeader),
    /// A record header whose record fails its checksum (torn or corrupted): never served.
    Torn(RecordHeader),
}

/// Scans one segment's contents (`buf`, read whole) for records, trying every metadata block
/// boundary; calls `visit(sector offset in the segment, what was found)` in order. A valid
/// record is skipped whole; anything else advances one block.
pub fn scan_segment(buf: &[u8], block_size: u32, crc: Crc32c, mut visit: impl FnMut(u64, Found)) {
    let bs = (block_size as usize).max(META_BYTES);
    let mut at = 0usize;
    while at + bs <= buf.len() {
        let room = (buf.len() - at - bs) as u64 / SECTOR_SIZE;
        let mut step = bs;
        if let Ok(h) = RecordHeader::decode(buf.get(at..).unwrap_or(&[]), room) {
            let data_end = at + bs + h.len as usize * SECTOR_SIZE as usize;
            let data = buf.get(at + bs..data_end).unwrap_or(&[]);
            if h.verify(data, crc) {
                visit((at as u64) / SECTOR_SIZE, Found::Valid(h));
                step = data_end - at;
            } else {
                visit((at as u64) / SECTOR_SIZE, Found::Torn(h));
            }
        }
        at += step;
    }
}

/// Whether a valid record found by a scan goes into the rebuilt index of volume `uuid` whose
/// checkpoint is `checkpoint`: only its dirty records written after the checkpoint.
pub fn rebuild_takes(h: &RecordHeader, uuid: &[u8; 16], checkpoint: u64) -> bool {
    h.uuid == *uuid && h.is_dirty() && h.serial > checkpoint
}

/// Where a new volume's region goes: the largest run of segments in `0..segments` that no region
/// in `used` (`(first segment, count)` pairs, sorted here) covers, as `(first, count)`, if it has
/// at least two segments (a log must be able to wrap).
pub fn largest_free_run(used: &mut [(u64, u64)], segments: u64) -> Option<(u64, u64)> {
    used.sort_unstable();
    let mut best: Option<(u64, u64)> = None;
    let mut cursor = 0u64;
    let mut consider = |start: u64, end: u64| {
        let end = end.min(segments);
        if end > start && best.is_none_or(|(_, n)| end - start > n) {
            best = Some((start, end - start));
        }
    };
    for &(first, count) in used.iter() {
        consider(cursor, first);
        cursor = cursor.max(first.saturating_add(count));
    }
    consider(cursor, segments);
    best.filter(|&(_, n)| n >= 2)
}

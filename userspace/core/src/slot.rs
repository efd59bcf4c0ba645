//! Volume slots of the on-flash format (Documentation/on-flash-format.md, "Volume slot"): which
//! volume owns which region of the cache device, a volume of this host or a replica of a peer's.
//! The block layout helpers and the superblock are `format`'s.

use super::format::{check_meta, pad, put, seal_meta, unpad, Crc32c, FormatError, Le, Superblock, META_BYTES, NAME_BYTES, PATH_BYTES, SLOT_MAGIC};
pub use super::policy::Policy;

/// A volume slot: which volume owns which region of the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Identity of the volume, chosen when its slot was made.
    pub uuid: [u8; 16],
    /// Volume name, NUL-padded.
    pub name: [u8; NAME_BYTES],
    /// Policy the volume last ran with.
    pub policy: Policy,
    /// First segment of the volume's region.
    pub first_segment: u64,
    /// Number of segments in the region.
    pub segments: u64,
    /// Size of the backing device when the slot was made, in sectors (identity check).
    pub backing_sectors: u64,
    /// Every serial ever used by this volume in this region is at most this value plus what the
    /// log holds; a re-attach starts above it and above every serial found in the log.
    pub serial_floor: u64,
    /// Bumped on every rewrite of the slot.
    pub generation: u64,
    /// Path of the backing device when the slot was made, NUL-padded (informational).
    pub backing_path: [u8; PATH_BYTES],
    /// The log has written only segments `0..log_limit` of the region (relative); 0: not
    /// recorded (slots of older versions: any segment). It grows before the log enters a
    /// segment at or past it ([`LOG_LIMIT_STEP`] segments at a time) and a rebuild scans only
    /// below it, so attaching a large, little-used region reads little of it.
    pub log_limit: u64,
    /// Non-zero: the volume was removed with dirty data left (the last serial it had issued);
    /// it may have run without this cache since, so its records are replayed only when the
    /// operator asks. 0: removed clean, or never removed (a crash replays by itself).
    pub closed_dirty: u64,
    /// When it was removed with dirty data, in seconds since the Unix epoch (0: unknown).
    pub closed_at: u64,
    /// 0: the slot of a volume of this host. Otherwise a *replica slot* (policy wbp): the host
    /// id of the volume's primary, whose writes this region holds (same records, same serials,
    /// the primary's uuid). A replica slot is found by (origin, uuid), never by name: a volume
    /// of this host never attaches to one by its name ([`Slot::is_local_named`]).
    pub origin: u16,
    /// Replica slots: the replica-set epoch of the primary's last ATTACH (0 for a local slot).
    pub epoch: u64,
}

/// Slot state code of a volume of this host.
const SLOT_LOCAL: u32 = 1;
/// Slot state code of a replica slot (a peer's volume).
const SLOT_REPLICA: u32 = 2;

/// How far [`Slot::log_limit`] moves ahead of the log at a time, in segments: one slot write per
/// this many segments during the log's first lap.
pub const LOG_LIMIT_STEP: u64 = 1024;

impl Slot {
    /// Whether this is a replica slot (a peer's volume, policy wbp).
    pub fn is_replica(&self) -> bool {
        self.origin != 0
    }

    /// Whether this is the slot of this host's volume `name`: a replica slot never is, whatever
    /// its name says (the primary's name is only informational there).
    pub fn is_local_named(&self, name: &[u8]) -> bool {
        !self.is_replica() && self.name_bytes() == name
    }

    /// Whether this is the replica slot of the volume `uuid` of host `origin` (never a local
    /// slot: `origin` 0 matches nothing).
    pub fn is_replica_of(&self, origin: u16, uuid: &[u8; 16]) -> bool {
        origin != 0 && self.origin == origin && &self.uuid == uuid
    }

    /// The segments a rebuild must scan: `0..scan_segments()` of the region.
    pub fn scan_segments(&self) -> u64 {
        if self.log_limit == 0 {
            self.segments
        } else {
            self.log_limit.min(self.segments)
        }
    }

    /// The limit to write before the log enters segment `next` (relative), when it is at or
    /// past the current one: `None` when no write is needed.
    pub fn log_limit_for(&self, next: u64) -> Option<u64> {
        (self.log_limit != 0 && next >= self.log_limit && self.log_limit < self.segments)
            .then(|| next.saturating_add(LOG_LIMIT_STEP).min(self.segments))
    }

    /// The name as bytes, without padding.
    pub fn name_bytes(&self) -> &[u8] {
        unpad(&self.name)
    }

    /// The backing path as bytes, without padding.
    pub fn backing_path_bytes(&self) -> &[u8] {
        unpad(&self.backing_path)
    }

    /// A name field from bytes (cut at [`NAME_BYTES`]).
    pub fn pack_name(name: &[u8]) -> [u8; NAME_BYTES] {
        pad(name)
    }

    /// A path field from bytes (cut at [`PATH_BYTES`]).
    pub fn pack_path(path: &[u8]) -> [u8; PATH_BYTES] {
        pad(path)
    }

    /// Encodes into `buf` (at least [`META_BYTES`]).
    pub fn encode(&self, buf: &mut [u8], crc: Crc32c) {
        seal_meta(buf, &SLOT_MAGIC, crc, |b| {
            let state = if self.is_replica() { SLOT_REPLICA } else { SLOT_LOCAL };
            put(b, 8, &state.to_le_bytes());
            put(b, 12, &[self.policy.code()]);
            put(b, 16, &self.uuid);
            put(b, 32, &self.name);
            put(b, 64, &self.first_segment.to_le_bytes());
            put(b, 72, &self.segments.to_le_bytes());
            put(b, 80, &self.backing_sectors.to_le_bytes());
            put(b, 88, &self.serial_floor.to_le_bytes());
            put(b, 96, &self.generation.to_le_bytes());
            put(b, 104, &self.backing_path);
            put(b, 360, &self.log_limit.to_le_bytes());
            put(b, 368, &self.closed_dirty.to_le_bytes());
            put(b, 376, &self.closed_at.to_le_bytes());
            put(b, 384, &self.origin.to_le_bytes());
            put(b, 392, &self.epoch.to_le_bytes());
        });
    }

    /// Decodes a slot. `Ok(None)` is a free slot (never written, or cleared); an error is a slot
    /// that was written but cannot be trusted.
    pub fn decode(buf: &[u8], sb: &Superblock, crc: Crc32c) -> Result<Option<Slot>, FormatError> {
        let Some(meta) = buf.get(..META_BYTES) else {
            return Err(FormatError::Short);
        };
        if meta.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        check_meta(meta, &SLOT_MAGIC, crc)?;
        let r = Le(meta);
        let origin = r.u16(384);
        let epoch = r.u64(392);
        match r.u32(8) {
            SLOT_LOCAL if origin == 0 && epoch == 0 => {}
            SLOT_LOCAL => return Err(FormatError::Inconsistent("a local slot names an origin host")),
            SLOT_REPLICA if origin != 0 => {}
            SLOT_REPLICA => return Err(FormatError::Inconsistent("a replica slot without an origin host")),
            _ => return Err(FormatError::Inconsistent("unknown slot state")),
        }
        let policy = Policy::from_code(r.u8(12)).ok_or(FormatError::Inconsistent("unknown policy in slot"))?;
        let slot = Slot {
            uuid: r.bytes(16),
            name: r.bytes(32),
            policy,
            first_segment: r.u64(64),
            segments: r.u64(72),
            backing_sectors: r.u64(80),
            serial_floor: r.u64(88),
            generation: r.u64(96),
            backing_path: r.bytes(104),
            log_limit: r.u64(360),
            closed_dirty: r.u64(368),
            closed_at: r.u64(376),
            origin,
            epoch,
        };
        if slot.segments < 2
            || slot
                .first_segment
                .checked_add(slot.segments)
                .is_none_or(|end| end > sb.segments)
        {
            return Err(FormatError::Inconsistent(
                "the slot's region lies outside the data area",
            ));
        }
        Ok(Some(slot))
    }
}

//! The attach rules: what a rebuild of a volume's index may take from its region on flash.
//!
//! Everything here reads values a cache device holds, and a cache device may hold anything (a
//! torn write, a bit flip, a crafted image): every value is checked before it is used, and no
//! arithmetic on it can overflow. The module's `Cache::open` and the helper's `inspect` apply
//! the same rules; a fuzz target builds cache images from its input and runs them.
//!
//! - The starting checkpoint is the newest valid copy, never below the slot's floor. With both
//!   copies unreadable the region's records cannot be judged (old laps' records would look
//!   newer than the SAN): the attach is refused unless the operator asks for a replay from the
//!   floor ([`start`]).
//! - A record is replayed only when it is the volume's, dirty, newer than the checkpoint, and
//!   could have been written by the volume: within the backing device, no longer than the
//!   largest request, with a serial below [`SERIAL_LIMIT`] ([`judge`]).
//! - The next serial is above every serial seen, the checkpoint's included ([`Scan::next_serial`]).
//! - A slot started *fresh* replays nothing: the lock record says the SAN holds every
//!   acknowledged write, so what its log holds is on the SAN already or stale (another host
//!   replayed a replica of it and wrote on). Its checkpoint moves past every serial seen
//!   ([`Scan::fresh_checkpoint`]) and is persisted before the volume runs.

use super::format::{Checkpoint, Found, RecordHeader};

/// Serials are below this (2^63): a volume writing a million records a second takes 290,000
/// years to reach it, so a serial at or above it was never written by a volume, and the
/// arithmetic on serials (`+ 1`) cannot overflow.
pub const SERIAL_LIMIT: u64 = 1 << 63;

/// The longest record a volume writes, in sectors (256 KiB: a record, header block and data,
/// is one bio of at most 256 pages). The module's largest request with a cache.
pub const MAX_RECORD_SECTORS: u32 = 512;

/// What a record must fit to be the volume's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The backing device's size in sectors (the slot's `backing_sectors`).
    pub backing_sectors: u64,
    /// The largest request a volume writes as one record, in sectors.
    pub max_len: u32,
}

/// What the rebuild does with a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A dirty write after the checkpoint: into the index and the destage queue.
    Replay,
    /// Not needed: another volume's, clean, or covered by the checkpoint.
    Skip,
    /// The volume's by its uuid, but impossible for it (`why`): never used.
    Invalid(&'static str),
}

/// Judges a valid (checksummed) record of a scan against volume `uuid` at `checkpoint`.
pub fn judge(h: &RecordHeader, uuid: &[u8; 16], checkpoint: u64, b: &Bounds) -> Verdict {
    if h.uuid != *uuid {
        return Verdict::Skip;
    }
    if h.serial == 0 || h.serial >= SERIAL_LIMIT {
        return Verdict::Invalid("serial out of range");
    }
    if h.len == 0 || h.len > b.max_len {
        return Verdict::Invalid("longer than any request");
    }
    if h.lba.checked_add(u64::from(h.len)).is_none_or(|end| end > b.backing_sectors) {
        return Verdict::Invalid("past the end of the backing device");
    }
    if !h.is_dirty() || h.serial <= checkpoint {
        return Verdict::Skip;
    }
    Verdict::Replay
}

/// Why a rebuild cannot start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartError {
    /// Neither checkpoint copy is readable and valid: the records cannot be judged.
    NoCheckpoint,
    /// The slot's floor is not a serial a volume could have written.
    BadFloor,
    /// The volume was removed with dirty data and may have run without this cache since.
    ClosedDirty,
}

impl StartError {
    /// A short human explanation.
    pub fn describe(&self) -> &'static str {
        match self {
            StartError::NoCheckpoint => {
                "both checkpoint copies of the volume's slot are unreadable: its records on flash \
                 cannot be told from older ones (create with replay to replay them from the slot's floor)"
            }
            StartError::BadFloor => "the volume's slot is damaged (serial floor out of range)",
            StartError::ClosedDirty => {
                "the volume was removed with dirty data not on the SAN, and may have run without \
                 this cache since: create with replay to destage it (only if the SAN holds nothing \
                 newer for it; `peerflash inspect` shows it), or format the cache device to drop it"
            }
        }
    }
}

/// The checkpoint a rebuild starts from: the newest valid copy (a copy whose serial is out of
/// range is not valid), never below `floor`. Without a valid copy: refused, unless `replay` (the
/// operator's choice), which starts from `floor`.
pub fn start(copies: [Option<Checkpoint>; 2], floor: u64, replay: bool) -> Result<u64, StartError> {
    if floor >= SERIAL_LIMIT {
        return Err(StartError::BadFloor);
    }
    let ok = |c: Option<Checkpoint>| c.filter(|c| c.serial < SERIAL_LIMIT);
    match Checkpoint::newest(ok(copies[0]), ok(copies[1])) {
        Some(c) => Ok(c.serial.max(floor)),
        None if replay => Ok(floor),
        None => Err(StartError::NoCheckpoint),
    }
}

/// Whether a scan that found `to_replay` records may replay them: not when the volume was
/// removed with dirty data (the slot's `closed_dirty`), since it may have run without this cache
/// since and its records would overwrite newer SAN data, unless the operator asks (`replay`).
/// After a crash (`closed_dirty` 0) the records are replayed: the volume cannot have run
/// elsewhere without an operator (or the cluster agent, which keeps its own record) knowing.
pub fn may_replay(closed_dirty: u64, to_replay: u64, replay: bool) -> Result<(), StartError> {
    if closed_dirty != 0 && to_replay > 0 && !replay {
        Err(StartError::ClosedDirty)
    } else {
        Ok(())
    }
}

/// What a scan of a region found, gathered segment by segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scan {
    /// The starting checkpoint.
    pub checkpoint: u64,
    /// Highest serial of the volume seen (valid or torn records, below [`SERIAL_LIMIT`]).
    pub max_serial: u64,
    /// The segment that holds it: the log goes on after it.
    pub max_seg: Option<u64>,
    /// Valid records of the volume.
    pub valid: u64,
    /// Headers of the volume whose record fails its checksum.
    pub torn: u64,
    /// Valid records of the volume that it cannot have written ([`Verdict::Invalid`]).
    pub invalid: u64,
    /// Records to replay.
    pub replay: u64,
    /// Sectors of data in them (before overlaps are resolved).
    pub replay_sectors: u64,
    /// Highest serial to replay (0: none).
    pub replay_until: u64,
}

impl Scan {
    /// A scan from `checkpoint` (from [`start`]).
    pub fn new(checkpoint: u64) -> Self {
        Scan { checkpoint, ..Scan::default() }
    }

    /// Notes what was found in segment `seg`; returns the record when it is to be replayed.
    pub fn note(&mut self, seg: u64, found: Found, uuid: &[u8; 16], b: &Bounds) -> Option<RecordHeader> {
        let (h, valid) = match found {
            Found::Valid(h) => (h, true),
            Found::Torn(h) => (h, false),
        };
        if h.uuid != *uuid {
            return None;
        }
        if h.serial < SERIAL_LIMIT && h.serial > self.max_serial {
            self.max_serial = h.serial;
            self.max_seg = Some(seg);
        }
        if !valid {
            self.torn = self.torn.saturating_add(1);
            return None;
        }
        self.valid = self.valid.saturating_add(1);
        match judge(&h, uuid, self.checkpoint, b) {
            Verdict::Replay => {
                self.replay = self.replay.saturating_add(1);
                self.replay_sectors = self.replay_sectors.saturating_add(u64::from(h.len));
                self.replay_until = self.replay_until.max(h.serial);
                Some(h)
            }
            Verdict::Skip => None,
            Verdict::Invalid(_) => {
                self.invalid = self.invalid.saturating_add(1);
                None
            }
        }
    }

    /// The serial the next write gets: above the checkpoint and every serial seen. Both are
    /// below [`SERIAL_LIMIT`], so this cannot overflow.
    pub fn next_serial(&self) -> u64 {
        self.checkpoint.max(self.max_serial).saturating_add(1)
    }

    /// The checkpoint of a slot started fresh: every serial seen (valid or torn) is at or below
    /// it, so no record of the scanned log is replayed, now or after a later crash.
    pub fn fresh_checkpoint(&self) -> u64 {
        self.next_serial().saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: [u8; 16] = [7; 16];
    const B: Bounds = Bounds { backing_sectors: 1000, max_len: 512 };

    fn rec(serial: u64, lba: u64, len: u32, dirty: bool) -> RecordHeader {
        RecordHeader { flags: u8::from(dirty), origin: 0, len, uuid: U, serial, lba, crc: 0 }
    }

    #[test]
    fn judges_records() {
        assert_eq!(judge(&rec(5, 0, 8, true), &U, 4, &B), Verdict::Replay);
        assert_eq!(judge(&rec(4, 0, 8, true), &U, 4, &B), Verdict::Skip, "covered");
        assert_eq!(judge(&rec(5, 0, 8, false), &U, 4, &B), Verdict::Skip, "clean");
        assert_eq!(judge(&rec(5, 0, 8, true), &[1; 16], 4, &B), Verdict::Skip, "another volume");
        assert!(matches!(judge(&rec(5, 992, 9, true), &U, 4, &B), Verdict::Invalid(_)), "past the end");
        assert_eq!(judge(&rec(5, 992, 8, true), &U, 4, &B), Verdict::Replay, "up to the end");
        assert!(matches!(judge(&rec(5, u64::MAX, 8, true), &U, 4, &B), Verdict::Invalid(_)));
        assert!(matches!(judge(&rec(5, 0, 513, true), &U, 4, &B), Verdict::Invalid(_)), "too long");
        assert!(matches!(judge(&rec(SERIAL_LIMIT, 0, 8, true), &U, 4, &B), Verdict::Invalid(_)));
        // Invalid even when covered: a record that cannot be the volume's is counted as such.
        assert!(matches!(judge(&rec(3, 0, 600, false), &U, 4, &B), Verdict::Invalid(_)));
    }

    #[test]
    fn starts_from_the_newest_valid_copy() {
        let cp = |serial, seq| Some(Checkpoint { uuid: U, serial, seq });
        assert_eq!(start([cp(10, 1), cp(12, 2)], 0, false), Ok(12));
        assert_eq!(start([cp(10, 3), cp(12, 2)], 0, false), Ok(10));
        assert_eq!(start([cp(10, 3), None], 11, false), Ok(11), "the floor");
        assert_eq!(start([None, None], 11, false), Err(StartError::NoCheckpoint));
        assert_eq!(start([None, None], 11, true), Ok(11));
        assert_eq!(start([cp(u64::MAX, 9), cp(10, 1)], 0, false), Ok(10), "an impossible copy");
        assert_eq!(start([cp(u64::MAX, 9), None], 0, false), Err(StartError::NoCheckpoint));
        assert_eq!(start([cp(1, 1), None], u64::MAX, true), Err(StartError::BadFloor));
    }

    #[test]
    fn a_volume_removed_dirty_replays_only_when_asked() {
        assert_eq!(may_replay(0, 5, false), Ok(()), "after a crash");
        assert_eq!(may_replay(9, 5, false), Err(StartError::ClosedDirty));
        assert_eq!(may_replay(9, 5, true), Ok(()));
        assert_eq!(may_replay(9, 0, false), Ok(()), "nothing to replay");
    }

    #[test]
    fn a_fresh_start_covers_every_record_seen() {
        let mut s = Scan::new(10);
        let mut noted = Vec::new();
        for (seg, serial) in [(0, 12), (1, 40), (2, 17)] {
            let h = rec(serial, 8, 8, true);
            if s.note(seg, Found::Valid(h), &U, &B).is_some() {
                noted.push(h);
            }
        }
        s.note(3, Found::Torn(rec(55, 8, 8, true)), &U, &B);
        assert_eq!(noted.len(), 3, "all three are above the checkpoint");
        let cp = s.fresh_checkpoint();
        assert_eq!(cp, 55, "torn records too: a later scan must not find one above it");
        for h in noted {
            assert_eq!(judge(&h, &U, cp, &B), Verdict::Skip, "serial {} would be replayed", h.serial);
        }
        assert_eq!(Scan::new(7).fresh_checkpoint(), 7, "an empty log keeps its checkpoint");
    }

    #[test]
    fn next_serial_is_above_everything_seen() {
        let mut s = Scan::new(10);
        assert_eq!(s.next_serial(), 11);
        assert_eq!(s.note(3, Found::Torn(rec(40, 0, 8, true)), &U, &B), None);
        assert_eq!((s.next_serial(), s.max_seg), (41, Some(3)));
        // A torn header with a serial no volume writes moves nothing.
        s.note(4, Found::Torn(rec(u64::MAX, 0, 8, true)), &U, &B);
        assert_eq!((s.next_serial(), s.max_seg), (41, Some(3)));
        assert!(s.note(5, Found::Valid(rec(20, 0, 8, true)), &U, &B).is_some());
        assert_eq!((s.replay, s.replay_until, s.valid, s.torn), (1, 20, 1, 2));
        assert!(s.note(5, Found::Valid(rec(21, 999, 8, true)), &U, &B).is_none());
        assert_eq!(s.invalid, 1);
    }

    proptest::proptest! {
        #[test]
        fn replayed_records_fit_the_volume(serial in proptest::prop_oneof![0u64..1 << 20, proptest::prelude::any::<u64>()],
                                           lba in proptest::prop_oneof![0u64..1 << 21, proptest::prelude::any::<u64>()],
                                           len in 0u32..5000,
                                           checkpoint in 0u64..1 << 19,
                                           backing in 0u64..1 << 20,
                                           max_len in 1u32..4096, dirty: bool) {
            let b = Bounds { backing_sectors: backing, max_len };
            let mut s = Scan::new(checkpoint);
            if let Some(h) = s.note(0, Found::Valid(rec(serial, lba, len, dirty)), &U, &b) {
                proptest::prop_assert!(h.is_dirty());
                proptest::prop_assert!(h.serial > checkpoint && h.serial < SERIAL_LIMIT);
                proptest::prop_assert!(h.len >= 1 && h.len <= max_len);
                proptest::prop_assert!(h.lba + u64::from(h.len) <= backing);
            }
            proptest::prop_assert!(s.next_serial() > s.max_serial);
            proptest::prop_assert!(s.next_serial() > checkpoint);
            proptest::prop_assert!(s.next_serial() <= SERIAL_LIMIT);
        }
    }
}

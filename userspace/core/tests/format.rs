//! On-flash format: round trips, and every torn or corrupted item is refused.

use peerflash_core::format::*;
use peerflash_core::slot::*;
use proptest::prelude::*;

fn crc(prev: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(prev, data)
}

fn sb() -> Superblock {
    Superblock::plan(1 << 21, 512, DEFAULT_SEGMENT_SECTORS, [7; 16]).unwrap()
}

#[test]
fn crc_implementation_passes_self_test() {
    assert!(crc_self_test(crc));
    assert!(!crc_self_test(|_, _| 0));
}

#[test]
fn superblock_layout() {
    let s = sb();
    assert_eq!(s.slot_start, 1);
    assert_eq!(s.checkpoint_start, 65);
    assert_eq!(
        s.data_start, 2048,
        "data starts on a segment boundary after the metadata"
    );
    assert_eq!(s.segments, (1 << 21) / 2048 - 1);
    let big = Superblock::plan(1 << 24, 4096, DEFAULT_SEGMENT_SECTORS, [1; 16]).unwrap();
    assert_eq!(big.slot_start, 8);
    assert_eq!(big.checkpoint_sector(3, 1), big.checkpoint_start + 7 * 8);
    assert!(
        Superblock::plan(4 * 2048, 512, 2048, [0; 16]).is_err(),
        "too small"
    );
    assert!(
        Superblock::plan(1 << 21, 1024, 2048, [0; 16]).is_err(),
        "odd block size"
    );
    assert!(
        Superblock::plan(1 << 21, 512, 3000, [0; 16]).is_err(),
        "segment not a power of two"
    );
}

#[test]
fn superblock_round_trip_and_refusals() {
    let s = sb();
    let mut buf = [0u8; 512];
    s.encode(&mut buf, crc);
    assert_eq!(Superblock::decode(&buf, 1 << 21, crc), Ok(s));
    assert!(matches!(
        Superblock::decode(&buf, (1 << 21) - 1, crc),
        Err(FormatError::Inconsistent(_))
    ));
    let mut bad = buf;
    bad[40] ^= 1;
    assert_eq!(
        Superblock::decode(&bad, 1 << 21, crc),
        Err(FormatError::BadChecksum)
    );
    assert_eq!(
        Superblock::decode(&[0u8; 512], 1 << 21, crc),
        Err(FormatError::BadMagic)
    );
    assert_eq!(
        Superblock::decode(&buf[..100], 1 << 21, crc),
        Err(FormatError::Short)
    );
}

fn slot() -> Slot {
    Slot {
        uuid: [9; 16],
        name: Slot::pack_name(b"vm1"),
        policy: Policy::WriteBack,
        first_segment: 2,
        segments: 10,
        backing_sectors: 1 << 30,
        serial_floor: 77,
        generation: 3,
        backing_path: Slot::pack_path(b"/dev/vda"),
        log_limit: 0,
        closed_dirty: 0,
        closed_at: 0,
        origin: 0,
        epoch: 0,
    }
}

/// A replica slot (a peer's volume) keeps its origin and epoch, is found by (origin, uuid) only,
/// and never matches a local volume by its name; a state that contradicts its origin is refused.
#[test]
fn replica_slot_is_never_a_local_volume() {
    let s = sb();
    let replica = Slot { origin: 3, epoch: 7, ..slot() };
    let mut buf = [0u8; 512];
    replica.encode(&mut buf, crc);
    let back = Slot::decode(&buf, &s, crc).unwrap().unwrap();
    assert_eq!(back, replica);
    assert!(back.is_replica());
    assert!(!back.is_local_named(b"vm1"), "a replica slot matched a local volume by name");
    assert!(back.is_replica_of(3, &[9; 16]));
    assert!(!back.is_replica_of(4, &[9; 16]));
    assert!(!back.is_replica_of(3, &[8; 16]));
    assert!(slot().is_local_named(b"vm1"));
    assert!(!slot().is_replica_of(0, &[9; 16]), "origin 0 names no peer");

    // State 2 (replica) with origin 0, and state 1 (local) with an origin: both refused.
    let reseal = |buf: &mut [u8; 512]| {
        let c = crc(0, &buf[..508]);
        buf[508..512].copy_from_slice(&c.to_le_bytes());
    };
    let mut orphan = buf;
    orphan[384..386].copy_from_slice(&0u16.to_le_bytes());
    reseal(&mut orphan);
    assert!(Slot::decode(&orphan, &s, crc).is_err());
    let mut local = [0u8; 512];
    slot().encode(&mut local, crc);
    local[384..386].copy_from_slice(&5u16.to_le_bytes());
    reseal(&mut local);
    assert!(Slot::decode(&local, &s, crc).is_err());
}

#[test]
fn slot_round_trip() {
    let s = sb();
    let mut buf = [0u8; 512];
    slot().encode(&mut buf, crc);
    let back = Slot::decode(&buf, &s, crc).unwrap().unwrap();
    assert_eq!(back, slot());
    assert_eq!(back.name_bytes(), b"vm1");
    assert_eq!(back.backing_path_bytes(), b"/dev/vda");
    assert_eq!(Slot::decode(&[0u8; 512], &s, crc), Ok(None));
    let mut outside = slot();
    outside.first_segment = s.segments - 1;
    outside.encode(&mut buf, crc);
    assert!(matches!(
        Slot::decode(&buf, &s, crc),
        Err(FormatError::Inconsistent(_))
    ));
}

#[test]
fn checkpoint_copies() {
    let u = [5; 16];
    let mut a = [0u8; 512];
    let mut b = [0u8; 512];
    Checkpoint {
        uuid: u,
        serial: 10,
        seq: 4,
    }
    .encode(&mut a, crc);
    Checkpoint {
        uuid: u,
        serial: 12,
        seq: 5,
    }
    .encode(&mut b, crc);
    let ca = Checkpoint::decode(&a, &u, crc);
    let cb = Checkpoint::decode(&b, &u, crc);
    assert_eq!(Checkpoint::newest(ca, cb).map(|c| c.serial), Some(12));
    // A torn newer copy leaves the older one current.
    b[30] ^= 0xff;
    assert_eq!(Checkpoint::decode(&b, &u, crc), None);
    assert_eq!(
        Checkpoint::newest(ca, Checkpoint::decode(&b, &u, crc)).map(|c| c.serial),
        Some(10)
    );
    // Another volume's checkpoint does not count.
    assert_eq!(Checkpoint::decode(&a, &[6; 16], crc), None);
    assert_eq!(Checkpoint::copy_for(4), 0);
    assert_eq!(Checkpoint::copy_for(5), 1);
}

fn record(data: &[u8]) -> RecordHeader {
    let mut h = RecordHeader {
        flags: RECORD_DIRTY,
        origin: 0,
        len: (data.len() / 512) as u32,
        uuid: [3; 16],
        serial: 42,
        lba: 1000,
        crc: 0,
    };
    h.crc = h.checksum([data], crc);
    h
}

#[test]
fn record_round_trip_and_torn_data() {
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    let h = record(&data);
    let mut block = [0u8; 512];
    h.encode(&mut block);
    let back = RecordHeader::decode(&block, 2047).unwrap();
    assert_eq!(back, h);
    assert!(back.verify(&data, crc));
    assert!(back.is_dirty());
    // The checksum chains over chunks exactly as over the whole.
    assert_eq!(h.checksum([&data[..1000], &data[1000..]], crc), h.crc);
    // A torn write: the tail of the data is old.
    let mut torn = data.clone();
    torn[4000] ^= 1;
    assert!(!back.verify(&torn, crc));
    // A changed header field is caught too (it is inside the checksum).
    let mut moved = back;
    moved.lba += 8;
    assert!(!moved.verify(&data, crc));
    // A record longer than the room where it was found is refused before its data is read.
    assert!(RecordHeader::decode(&block, 7).is_err());
    assert_eq!(RecordHeader::footprint(8, 512), 9);
    assert_eq!(RecordHeader::footprint(8, 4096), 16);
}

proptest! {
    /// Decoders never panic, whatever the bytes.
    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024), sectors in any::<u64>()) {
        let _ = Superblock::decode(&bytes, sectors, crc);
        let _ = Slot::decode(&bytes, &sb(), crc);
        let _ = Checkpoint::decode(&bytes, &[0; 16], crc);
        let _ = RecordHeader::decode(&bytes, sectors);
    }

    /// Any single flipped bit of a record (header or data) is detected.
    #[test]
    fn any_bit_flip_is_detected(bit in 0usize..(512 + 1024) * 8, seed in any::<u8>()) {
        let data: Vec<u8> = (0..1024u32).map(|i| (i as u8).wrapping_mul(seed)).collect();
        let h = record(&data);
        let mut block = [0u8; 512];
        h.encode(&mut block);
        let mut all = block.to_vec();
        all.extend_from_slice(&data);
        all[bit / 8] ^= 1 << (bit % 8);
        let ok = RecordHeader::decode(&all[..512], 100).map(|r| r.verify(&all[512..], crc)).unwrap_or(false);
        // Flips past the 64 header bytes inside the header block are outside the record.
        if !(64..512).contains(&(bit / 8)) {
            prop_assert!(!ok);
        }
    }

    /// Slots and superblocks round-trip for any field values that make sense.
    #[test]
    fn slot_round_trips(first in 0u64..100, n in 2u64..100, floor in any::<u64>(), gen in any::<u64>(), wb in any::<bool>(), limit in any::<u64>(), closed in any::<u64>(), origin in any::<u16>(), epoch in any::<u64>()) {
        let s = sb();
        prop_assume!(first + n <= s.segments);
        let epoch = if origin == 0 { 0 } else { epoch };
        let sl = Slot { first_segment: first, segments: n, serial_floor: floor, generation: gen, log_limit: limit, closed_dirty: closed, closed_at: closed / 3,
            origin, epoch, policy: if wb { Policy::WriteBack } else { Policy::WriteThrough }, ..slot() };
        let mut buf = [0u8; 4096];
        sl.encode(&mut buf, crc);
        prop_assert_eq!(Slot::decode(&buf, &s, crc), Ok(Some(sl)));
    }
}

fn put_record(seg: &mut [u8], at: usize, serial: u64, lba: u64, data: &[u8]) -> usize {
    let mut h = record(data);
    h.serial = serial;
    h.lba = lba;
    h.crc = h.checksum([data], crc);
    h.encode(&mut seg[at..at + 512]);
    seg[at + 512..at + 512 + data.len()].copy_from_slice(data);
    at + 512 + data.len()
}

#[test]
fn scan_finds_valid_and_torn_records() {
    let mut seg = vec![0u8; 64 * 1024];
    let a = vec![1u8; 4096];
    let b = vec![2u8; 1024];
    let next = put_record(&mut seg, 0, 1, 0, &a);
    let torn_at = next;
    let next = put_record(&mut seg, next, 2, 8, &b);
    seg[torn_at + 600] ^= 0xff; // the second record's data is torn
    let _ = put_record(&mut seg, next, 3, 16, &a);
    let mut found = Vec::new();
    scan_segment(&seg, 512, crc, |off, f| found.push((off, f)));
    let summary: Vec<(u64, u64, bool)> = found
        .iter()
        .map(|(off, f)| match f {
            Found::Valid(h) => (*off, h.serial, true),
            Found::Torn(h) => (*off, h.serial, false),
        })
        .collect();
    assert_eq!(summary, vec![(0, 1, true), (9, 2, false), (12, 3, true)]);
    let Found::Valid(h) = found[0].1 else {
        panic!()
    };
    assert!(rebuild_takes(&h, &[3; 16], 0));
    assert!(
        !rebuild_takes(&h, &[3; 16], 1),
        "at or below the checkpoint"
    );
    assert!(!rebuild_takes(&h, &[4; 16], 0), "another volume");
    let clean = RecordHeader { flags: 0, ..h };
    assert!(
        !rebuild_takes(&clean, &[3; 16], 0),
        "clean records are not trusted after restart"
    );
}

#[test]
fn scan_of_a_record_cut_by_the_segment_end_finds_nothing_valid() {
    let mut seg = vec![0u8; 8192];
    let data = vec![9u8; 4096];
    put_record(&mut seg, 0, 1, 0, &data);
    let cut = &seg[..4096];
    let mut valid = 0;
    scan_segment(cut, 512, crc, |_, f| {
        valid += matches!(f, Found::Valid(_)) as u32
    });
    assert_eq!(valid, 0);
}

#[test]
fn regions_go_in_the_largest_free_run() {
    assert_eq!(largest_free_run(&mut [], 10), Some((0, 10)));
    assert_eq!(largest_free_run(&mut [(0, 4)], 10), Some((4, 6)));
    assert_eq!(largest_free_run(&mut [(6, 2), (0, 3)], 10), Some((3, 3)));
    assert_eq!(
        largest_free_run(&mut [(0, 5), (6, 4)], 10),
        None,
        "one free segment is too few"
    );
    assert_eq!(largest_free_run(&mut [(0, 10)], 10), None);
}

proptest! {
    /// The run found never overlaps a used region and nothing larger is free.
    #[test]
    fn free_run_is_free_and_largest(regions in proptest::collection::vec((0u64..50, 1u64..10), 0..6)) {
        let segments = 50;
        let mut used = regions.clone();
        let got = largest_free_run(&mut used, segments);
        let free = |s: u64| regions.iter().all(|&(f, n)| s < f || s >= f + n);
        let mut best = 0;
        let mut run = 0;
        for s in 0..segments {
            run = if free(s) { run + 1 } else { 0 };
            best = best.max(run);
        }
        match got {
            Some((first, n)) => {
                prop_assert!((first..first + n).all(free));
                prop_assert!(first + n <= segments);
                prop_assert_eq!(n, best);
            }
            None => prop_assert!(best < 2),
        }
    }
}

#[test]
fn the_log_limit_grows_ahead_of_the_log() {
    let sl = Slot { segments: 3000, log_limit: 1024, ..slot() };
    assert_eq!(sl.scan_segments(), 1024);
    assert_eq!(sl.log_limit_for(1023), None, "below the limit");
    assert_eq!(sl.log_limit_for(0), None, "a wrap to the start");
    assert_eq!(sl.log_limit_for(1024), Some(2048));
    assert_eq!(sl.log_limit_for(2900), Some(3000), "never past the region");
    let full = Slot { log_limit: 3000, ..sl };
    assert_eq!((full.scan_segments(), full.log_limit_for(2999)), (3000, None));
    let old = Slot { log_limit: 0, ..sl };
    assert_eq!((old.scan_segments(), old.log_limit_for(2999)), (3000, None), "older slots: all, never grows");
    let odd = Slot { log_limit: u64::MAX, ..sl };
    assert_eq!((odd.scan_segments(), odd.log_limit_for(2999)), (3000, None), "a limit past the region is the region");
}

//! Fuzz target for the on-flash parsers: whatever a cache device holds, decoding a superblock,
//! a slot, a checkpoint, a record or a datastore lock record never panics, and a record is accepted only with its data
//! checksum right. Run with `cargo xtask fuzz`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerflash_core::format::*;
use peerflash_core::slot::*;

fn crc(prev: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(prev, data)
}

fuzz_target!(|data: &[u8]| {
    let sectors = data.get(..8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    let sb = Superblock::decode(data, sectors, crc);
    let layout = sb.unwrap_or(Superblock::plan(1 << 21, 512, DEFAULT_SEGMENT_SECTORS, [0; 16]).expect("valid plan"));
    if let Ok(Some(slot)) = Slot::decode(data, &layout, crc) {
        assert!(slot.first_segment + slot.segments <= layout.segments);
        let _ = (slot.name_bytes(), slot.backing_path_bytes());
    }
    let _ = Checkpoint::decode(data, &[0; 16], crc);
    // A lock record of the datastore: decodes, then re-encodes to the same block.
    if let Ok(r) = peerflash_core::lockrec::LockRecord::decode(data, crc) {
        let mut again = [0u8; 512];
        r.encode(&mut again, crc);
        assert_eq!(&again[..], &data[..512]);
    }
    // A record: header block then data, as a scan reads it.
    if let Ok(h) = RecordHeader::decode(data, u64::from(layout.segment_sectors)) {
        let body = data.get(512..).unwrap_or(&[]);
        if h.verify(body, crc) {
            // Only an exact checksum over header and data passes.
            assert_eq!(h.checksum([body], crc), h.crc);
            assert_eq!(body.len() as u64, u64::from(h.len) * 512);
        }
    }
    // A scan of arbitrary segment contents never panics and never reports a record past the end.
    scan_segment(data, 512, crc, |off, found| {
        if let Found::Valid(h) = found {
            assert!((off + 1 + u64::from(h.len)) * 512 <= data.len() as u64);
        }
    });
    round_trip(data);
});

/// Builds a valid record from the input, checks it decodes to itself, then flips one bit of it
/// (chosen by the input) and checks the record is refused.
fn round_trip(data: &[u8]) {
    let field = |at: usize| data.get(at..at + 8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    let sectors = (data.len().saturating_sub(64) / 512).min(64);
    if sectors == 0 {
        return;
    }
    let body = &data[64..64 + sectors * 512];
    let mut h = RecordHeader {
        flags: (field(0) & 1) as u8,
        origin: field(8) as u16,
        len: sectors as u32,
        uuid: [data[16]; 16],
        serial: field(24).max(1),
        lba: field(32),
        crc: 0,
    };
    h.crc = h.checksum([body], crc);
    let mut rec = vec![0u8; 512];
    h.encode(&mut rec);
    let back = RecordHeader::decode(&rec, 64).expect("a valid record decodes");
    assert_eq!(back, h);
    assert!(back.verify(body, crc));
    rec.extend_from_slice(body);
    let bit = field(40) as usize % ((64 + body.len()) * 8);
    let byte = if bit / 8 < 64 { bit / 8 } else { 512 + bit / 8 - 64 };
    rec[byte] ^= 1 << (bit % 8);
    let accepted = RecordHeader::decode(&rec[..512], 64).is_ok_and(|r| r.verify(&rec[512..], crc));
    assert!(!accepted, "a record with bit {bit} flipped was accepted");
}

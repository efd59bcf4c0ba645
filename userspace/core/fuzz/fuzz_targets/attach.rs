//! Fuzz target for the attach rules (`rebuild`): a cache image is built from the input (a slot,
//! two checkpoint copies, segments of raw bytes with records planted in them whose fields,
//! serials and lengths come from the input, their checksums right), then rebuilt as the module's
//! `Cache::open` does. Whatever the image holds, nothing panics, every replayed record lies
//! within the volume, is no longer than a request and newer than the checkpoint, the next
//! serial is above everything, and the destager's rules over the rebuilt index stay in range.
//! Run with `cargo xtask fuzz attach`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerflash_core::btree::BTreeIndex;
use peerflash_core::destage::{self, BatchLimits};
use peerflash_core::extent::{self, Extent, ExtentMap};
use peerflash_core::format::*;
use peerflash_core::slot::*;
use peerflash_core::rebuild::{self, Bounds, Scan, SERIAL_LIMIT};

fn crc(prev: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(prev, data)
}

/// Reads the input front to back; past its end everything is zero.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.bytes())
    }
    fn u8(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }
}

const SEG_SECTORS: usize = 128;

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let uuid = [inp.u8() & 3; 16];
    let backing = inp.u64() % (1 << 40);
    let floor = inp.u64();
    let replay = inp.u8() & 1 == 1;
    // Two checkpoint copies: encoded from the input (any serial, any seq) or absent.
    let mut copies = [None, None];
    for c in copies.iter_mut() {
        let (serial, seq, present) = (inp.u64(), inp.u64(), inp.u8());
        if present & 1 == 1 {
            let mut block = [0u8; 512];
            Checkpoint { uuid: [present >> 6; 16], serial, seq }.encode(&mut block, crc);
            *c = Checkpoint::decode(&block, &uuid, crc);
        }
    }
    let bounds = Bounds { backing_sectors: backing, max_len: rebuild::MAX_RECORD_SECTORS };
    let Ok(checkpoint) = rebuild::start(copies, floor, replay) else {
        return;
    };
    assert!(checkpoint < SERIAL_LIMIT && checkpoint >= floor);
    let mut scan = Scan::new(checkpoint);
    let mut index = BTreeIndex::default();
    let mut replayed: Vec<RecordHeader> = Vec::new();
    for s in 0..3u64 {
        // A segment: raw input bytes, then records planted at input-chosen places.
        let mut seg = vec![0u8; SEG_SECTORS * 512];
        let raw = inp.bytes::<512>();
        seg[..512].copy_from_slice(&raw);
        for _ in 0..(inp.u8() % 4) {
            let at = (inp.u8() as usize % SEG_SECTORS) * 512;
            let len = (inp.u8() as u32 % 16).max(1);
            let h0 = RecordHeader {
                flags: inp.u8() & RECORD_DIRTY,
                origin: 0,
                len,
                uuid: [inp.u8() & 3; 16],
                serial: inp.u64().max(1),
                lba: inp.u64(),
                crc: 0,
            };
            let end = at + 512 + len as usize * 512;
            if end > seg.len() {
                continue;
            }
            let fill = inp.u8();
            seg[at + 512..end].iter_mut().for_each(|b| *b = fill);
            let mut h = h0;
            h.crc = h.checksum([&seg[at + 512..end]], crc);
            h.encode(&mut seg[at..at + 512]);
        }
        scan_segment(&seg, 512, crc, |off, found| {
            if let Some(h) = scan.note(s, found, &uuid, &bounds) {
                assert!(h.is_dirty() && h.uuid == uuid);
                assert!(h.serial > checkpoint && h.serial < SERIAL_LIMIT);
                assert!(h.len >= 1 && h.len <= rebuild::MAX_RECORD_SECTORS);
                assert!(h.lba + u64::from(h.len) <= backing);
                let e = Extent {
                    lba: h.lba,
                    len: u64::from(h.len),
                    flash: s * SEG_SECTORS as u64 + off + 1,
                    serial: h.serial,
                    dirty: true,
                };
                let Ok(_) = extent::apply(&mut index, e);
                replayed.push(h);
            }
        });
    }
    let next = scan.next_serial();
    assert!(next > checkpoint && next <= SERIAL_LIMIT);
    assert!(replayed.iter().all(|h| h.serial < next));
    assert!(scan.max_serial < next);
    // The destager over what was rebuilt: a batch in serial order, then each record marked
    // clean; every extent stays within the volume.
    replayed.sort_by_key(|h| h.serial);
    let batch = destage::plan_batch(
        replayed.iter().map(|h| (h.serial, u64::from(h.len))),
        BatchLimits { max_sectors: 2048, max_records: 256 },
        next - 1,
    );
    for h in replayed.iter().take(batch.records) {
        extent::walk(&index, h.lba, h.lba + u64::from(h.len), |a, b, e| {
            assert!(a < b && b <= backing);
            if let Some(e) = e {
                assert!(e.end() <= backing);
            }
        });
        let Ok(_) = extent::mark_clean(&mut index, h.lba, u64::from(h.len), h.serial);
    }
    let mut at = 0;
    while let Some(e) = index.first_overlapping(at, u64::MAX) {
        assert!(e.end() <= backing && e.lba >= at);
        at = e.end();
    }
});

//! One pure-core operation of the write path, repeated: `write_path OP N`. `cargo xtask bench`
//! runs it under callgrind for two values of N and prints the instructions one operation costs
//! (the difference divided by the difference of N, so start-up costs cancel out), a figure that
//! moves only when the core's code does, without a VM. The operations, each for one 4 KiB write:
//!
//! - `record`: a record header's CRC32C over the header and the data, and its encoding (the
//!   `crc32c` crate here; the module uses the kernel's CRC32C);
//! - `index`: the write's extent put into a volume index of 65536 extents (a `BTreeMap` here;
//!   the module uses the kernel's red-black tree);
//! - `plan`: the write's share of planning a destage batch of 256 records;
//! - `seal`: the tag of a WRITE frame of a wbp write on the primary (ChaCha20-Poly1305, the
//!   `chacha20` and `poly1305` crates here; the module uses the kernel's crypto library);
//! - `open`: the member's check and decoding of that frame;
//! - `hmac`: for comparison, HMAC-SHA256 over the same header and payload (the tag of wire
//!   version 1, and the handshake's MAC).

use std::hint::black_box;

use peerflash_core::btree::BTreeIndex;
use peerflash_core::destage::{plan_batch, BatchLimits};
use peerflash_core::extent::{apply, Extent};
use peerflash_core::format::{RecordHeader, RECORD_DIRTY};
use peerflash_core::mac::{ChaChaPoly, HmacSha256};
use peerflash_core::session::{Mac, Session};
use peerflash_core::wire::{Cmd, Dir, WRITE_FIXED_BYTES};

const DATA: usize = 4096;
/// 1 GiB of 4 KiB blocks, in sectors.
const SPAN_BLOCKS: u64 = 1 << 18;

fn crc(seed: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(seed, data)
}

/// A deterministic pseudo-random sequence (xorshift).
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(op), Some(Ok(n))) = (args.get(1), args.get(2).map(|n| n.parse::<u64>())) else {
        eprintln!("usage: write_path record|index|plan|seal|open|hmac N");
        std::process::exit(2);
    };
    let data = vec![0x5au8; DATA];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    match op.as_str() {
        "record" => {
            let mut block = vec![0u8; 4096];
            for i in 0..n {
                let mut h = RecordHeader { flags: RECORD_DIRTY, origin: 0, len: 8, uuid: [7; 16], serial: i + 1, lba: i * 8, crc: 0 };
                h.crc = h.checksum([&data[..]], crc);
                h.encode(&mut block);
                black_box(&block);
            }
        }
        "index" => {
            let mut index = BTreeIndex::default();
            // A warm index: 65536 extents before the measured ones.
            for s in 0..65536u64 {
                let lba = next(&mut x) % SPAN_BLOCKS * 8;
                let _ = apply(&mut index, Extent { lba, len: 8, flash: s * 8, serial: s + 1, dirty: true });
            }
            for s in 0..n {
                let lba = next(&mut x) % SPAN_BLOCKS * 8;
                let serial = 65537 + s;
                black_box(apply(&mut index, Extent { lba, len: 8, flash: serial * 8, serial, dirty: true }).ok());
            }
        }
        "plan" => {
            let queue: Vec<(u64, u64)> = (1..=256u64).map(|s| (s, 8)).collect();
            let limits = BatchLimits { max_sectors: 4096, max_records: 256 };
            for _ in 0..n.div_ceil(256) {
                black_box(plan_batch(black_box(queue.iter().copied()), limits, u64::MAX));
            }
        }
        "seal" | "open" => {
            let mut primary = Session::new([3; 32], Dir::ToServer);
            let mut member = Session::new([3; 32], Dir::ToClient);
            let mut payload = vec![0u8; WRITE_FIXED_BYTES + DATA];
            payload[WRITE_FIXED_BYTES..].copy_from_slice(&data);
            for i in 0..n {
                payload[..8].copy_from_slice(&(i + 1).to_le_bytes());
                payload[16..20].copy_from_slice(&8u32.to_le_bytes());
                let sealed = primary.seal_fed::<ChaChaPoly>(Cmd::Write, 1, payload.len(), |feed| {
                    feed(&payload[..WRITE_FIXED_BYTES]);
                    feed(&payload[WRITE_FIXED_BYTES..]);
                });
                let Ok((header, tag)) = sealed else {
                    eprintln!("seal failed");
                    std::process::exit(1);
                };
                if op == "open" {
                    black_box(member.open::<ChaChaPoly>(&header, &payload, &tag).is_ok());
                }
                black_box((header, tag));
            }
        }
        "hmac" => {
            let mut frame = vec![0u8; 32 + WRITE_FIXED_BYTES + DATA];
            frame[32 + WRITE_FIXED_BYTES..].copy_from_slice(&data);
            for i in 0..n {
                frame[..8].copy_from_slice(&(i + 1).to_le_bytes());
                let mut m = HmacSha256::new(&[3; 32]);
                m.update(&frame[..32 + WRITE_FIXED_BYTES]);
                m.update(&frame[32 + WRITE_FIXED_BYTES..]);
                black_box(m.finish());
            }
        }
        _ => {
            eprintln!("unknown operation {op}");
            std::process::exit(2);
        }
    }
}

//! `format-cache` and `inspect` on an image file, with records laid out by the shared core the
//! way the module writes them.

use std::io::{Seek, SeekFrom, Write};
use std::process::{Command, Output};

use peerflash_core::format::*;
use peerflash_core::slot::*;

fn crc(prev: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(prev, data)
}

fn peerflash(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peerflash"))
        .args(args)
        .output()
        .expect("run peerflash")
}

fn write_at(path: &std::path::Path, sector: u64, buf: &[u8]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(sector * 512)).unwrap();
    f.write_all(buf).unwrap();
}

fn read_sb(path: &std::path::Path) -> Superblock {
    let bytes = std::fs::read(path).unwrap();
    Superblock::decode(&bytes[..512], bytes.len() as u64 / 512, crc).unwrap()
}

/// Writes a record at `sector`; returns the sector after it.
#[allow(clippy::too_many_arguments)]
fn record(
    path: &std::path::Path,
    sector: u64,
    uuid: [u8; 16],
    serial: u64,
    lba: u64,
    sectors: u32,
    dirty: bool,
    tear: bool,
) -> u64 {
    let data = vec![serial as u8; sectors as usize * 512];
    let mut h = RecordHeader {
        flags: if dirty { RECORD_DIRTY } else { 0 },
        origin: 0,
        len: sectors,
        uuid,
        serial,
        lba,
        crc: 0,
    };
    h.crc = h.checksum([&data[..]], crc);
    let mut block = vec![0u8; 512];
    h.encode(&mut block);
    block.extend_from_slice(&data);
    if tear {
        let n = block.len();
        block[n - 1] ^= 1;
    }
    write_at(path, sector, &block);
    sector + 1 + u64::from(sectors)
}

#[test]
fn format_then_inspect_counts_records_and_dirty_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("cache.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let p = img.to_str().unwrap();

    let out = peerflash(&["format-cache", p, "--segment-kib", "256"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sb = read_sb(&img);
    assert_eq!(sb.segment_sectors, 512);

    // A volume in slot 3 owning segments 2..6, checkpoint at serial 2 (copy 1 newer than copy 0).
    let uuid = [0xab; 16];
    let slot = Slot {
        uuid,
        name: Slot::pack_name(b"vm7"),
        policy: Policy::WriteBack,
        first_segment: 2,
        segments: 4,
        backing_sectors: 1 << 21,
        serial_floor: 0,
        generation: 1,
        backing_path: Slot::pack_path(b"/dev/vda"),
        log_limit: 0,
        closed_dirty: 0,
        closed_at: 0,
        origin: 0,
        epoch: 0,
    };
    let mut block = vec![0u8; 512];
    slot.encode(&mut block, crc);
    write_at(&img, sb.slot_sector(3), &block);
    Checkpoint {
        uuid,
        serial: 1,
        seq: 0,
    }
    .encode(&mut block, crc);
    write_at(&img, sb.checkpoint_sector(3, 0), &block);
    Checkpoint {
        uuid,
        serial: 2,
        seq: 1,
    }
    .encode(&mut block, crc);
    write_at(&img, sb.checkpoint_sector(3, 1), &block);

    let mut at = sb.segment_sector(2);
    at = record(&img, at, uuid, 1, 0, 8, true, false); // destaged (<= checkpoint)
    at = record(&img, at, uuid, 2, 8, 8, true, false); // destaged
    at = record(&img, at, uuid, 3, 100, 16, true, false); // dirty: 100..116
    at = record(&img, at, uuid, 4, 108, 16, true, false); // dirty: 108..124, union 100..124
    at = record(&img, at, uuid, 5, 500, 8, true, true); // torn: never counted as data
    let _ = record(&img, sb.segment_sector(3), uuid, 6, 900, 8, false, false); // clean copy
    let _ = record(&img, at, [0xcd; 16], 7, 0, 8, true, false); // another volume's

    let out = peerflash(&["inspect", p, "--output", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let vol = &v["volumes"][0];
    assert_eq!(vol["name"], "vm7");
    assert_eq!(vol["slot"], 3);
    assert_eq!(vol["checkpoint"], 2);
    assert_eq!(vol["records"], 5);
    assert_eq!(vol["torn"], 1);
    assert_eq!(vol["last_serial"], 6);
    assert_eq!(vol["dirty_records"], 2);
    assert_eq!(vol["dirty_bytes"], 24 * 512);
    assert_eq!(v["free_segments"], sb.segments - 4);

    let human = peerflash(&["inspect", p]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("volume vm7 (slot 3)"), "{text}");
    assert!(
        text.contains("dirty after checkpoint: 2 records, 12288 bytes"),
        "{text}"
    );

    // Formatting over a volume is refused (exit 3) unless forced.
    let again = peerflash(&["format-cache", p]);
    assert_eq!(again.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&again.stderr).contains("1 volume(s)"));
    let forced = peerflash(&["format-cache", p, "--force"]);
    assert!(forced.status.success());
    let empty = peerflash(&["inspect", p, "--output", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&empty.stdout).unwrap();
    assert_eq!(v["volumes"].as_array().map(Vec::len), Some(0));
}

#[test]
fn bad_cache_devices_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("blank.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let p = img.to_str().unwrap();
    let out = peerflash(&["inspect", p]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no peerflash signature"));
    let tiny = dir.path().join("tiny.img");
    std::fs::File::create(&tiny)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let out = peerflash(&["format-cache", tiny.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("too small"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = peerflash(&["inspect", "/nonexistent/cache"]);
    assert_eq!(out.status.code(), Some(4));
    let out = peerflash(&["format-cache", p, "--segment-kib", "100"]);
    assert_eq!(out.status.code(), Some(2));
}

//! `pf-craft`: writes crafted but well-formed metadata into a volume's slot on a peerflash cache
//! device, the way a damaged or hostile device could present it: checkpoint copies with any
//! serial, and records (header with a right checksum and data) with any serial, LBA and length.
//! Only for the `crafted-cache` VM case; it never runs against a device in use.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use peerflash_core::format::{Checkpoint, RecordHeader, Superblock, RECORD_DIRTY};
use peerflash_core::slot::Slot;

fn crc(prev: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(prev, data)
}

#[derive(Parser)]
struct Cli {
    /// The cache device.
    device: String,
    /// The volume whose slot is crafted.
    #[arg(long)]
    volume: String,
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Both checkpoint copies with this serial (and a higher seq than any real one).
    Checkpoint {
        #[arg(long)]
        serial: u64,
    },
    /// A dirty record at `segment` (relative to the slot's region), sector `offset` in it.
    Record {
        #[arg(long)]
        segment: u64,
        #[arg(long, default_value_t = 0)]
        offset: u64,
        #[arg(long)]
        serial: u64,
        #[arg(long)]
        lba: u64,
        /// Data length in sectors (what the header says).
        #[arg(long)]
        len: u32,
        /// Only the header block: the record fails its checksum (torn).
        #[arg(long)]
        torn: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&cli.device)
        .with_context(|| format!("cannot open {}", cli.device))?;
    // A block device's metadata says 0: its end says its size.
    let size = dev.seek(SeekFrom::End(0))?;
    let mut first = vec![0u8; 4096];
    dev.read_exact_at(&mut first, 0).context("cannot read the superblock")?;
    let sb = Superblock::decode(&first, size / 512, crc).map_err(|e| anyhow::anyhow!("{}", e.describe()))?;
    let bs = sb.block_size as usize;
    let mut block = vec![0u8; bs];
    let mut found = None;
    for i in 0..sb.max_volumes {
        dev.read_exact_at(&mut block, sb.slot_sector(i) * 512)?;
        if let Ok(Some(s)) = Slot::decode(&block, &sb, crc) {
            if s.name_bytes() == cli.volume.as_bytes() {
                found = Some((i, s));
            }
        }
    }
    let Some((index, slot)) = found else {
        bail!("no slot of volume {} on {}", cli.volume, cli.device);
    };
    match cli.what {
        What::Checkpoint { serial } => {
            for copy in 0..2u32 {
                block.fill(0);
                let cp = Checkpoint { uuid: slot.uuid, serial, seq: 1 << 40 | u64::from(copy) };
                cp.encode(&mut block, crc);
                dev.write_all_at(&block, sb.checkpoint_sector(index, copy) * 512)?;
            }
        }
        What::Record { segment, offset, serial, lba, len, torn } => {
            if segment >= slot.segments {
                bail!("segment {segment} is outside the slot's region");
            }
            let data = vec![0xa5u8; if torn { 0 } else { len as usize * 512 }];
            let mut h = RecordHeader {
                flags: RECORD_DIRTY,
                origin: 0,
                len,
                uuid: slot.uuid,
                serial,
                lba,
                crc: 0,
            };
            h.crc = h.checksum([&data[..]], crc);
            if torn {
                h.crc ^= 1;
            }
            block.fill(0);
            h.encode(&mut block);
            let at = (sb.segment_sector(slot.first_segment + segment) + offset) * 512;
            dev.write_all_at(&block, at)?;
            dev.write_all_at(&data, at + bs as u64)?;
        }
    }
    dev.sync_all()?;
    println!("crafted slot {index} of {} on {}", cli.volume, cli.device);
    Ok(())
}

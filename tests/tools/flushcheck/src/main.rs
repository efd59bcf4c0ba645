//! `pf-flushcheck`: the guest side of the flush-ordering test (`tests/vm/cases/flush-order.sh`).
//!
//! `write` keeps several threads writing numbered 4 KiB blocks (O_DIRECT, each block owned by
//! one thread, so the writes of one block are ordered) while another thread flushes the device
//! (fdatasync: a PREFLUSH) every few milliseconds. It remembers, for every completed write, its
//! place in the order of completions, and for every completed flush, how many writes had
//! completed before the flush was issued. It runs until an I/O error (the power cut) or its time
//! limit, then saves that record.
//!
//! `check` reads every block back after the power cut and recovery and applies the contract:
//! a block written and acknowledged before a flush that completed must hold that write or a
//! later one of the same block; any other block holds one of its writes or zeros; nothing is
//! torn, garbage, or a generation that was never written.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};

const BLOCK: usize = 4096;
const MAGIC: &[u8; 8] = b"PFFLUSH1";

#[derive(Parser)]
#[command(
    name = "pf-flushcheck",
    about = "Flush-ordering test: write with flushes, check after a power cut"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write numbered blocks with periodic flushes until an I/O error or the time limit.
    Write(WriteOpts),
    /// Check the device against the saved record.
    Check {
        device: PathBuf,
        #[arg(long)]
        log: PathBuf,
        /// Hold every acknowledged write to the contract, flushed or not (the control run: on a
        /// device with a volatile cache and no flushes this must find losses).
        #[arg(long)]
        all_acked: bool,
    },
}

#[derive(clap::Args)]
struct WriteOpts {
    /// Block device to write.
    device: PathBuf,
    /// Number of 4 KiB blocks, from the start of the device.
    #[arg(long, default_value_t = 8192)]
    blocks: u64,
    /// Writer threads (the queue depth).
    #[arg(long, default_value_t = 8)]
    threads: u64,
    /// Milliseconds between flushes; 0 never flushes.
    #[arg(long, default_value_t = 40)]
    flush_ms: u64,
    /// Stop after this many seconds if no error came first.
    #[arg(long, default_value_t = 120)]
    seconds: u64,
    /// Where to save the record of writes and flushes.
    #[arg(long)]
    log: PathBuf,
    /// Written once the first flush has completed (the power cut may come after it).
    #[arg(long)]
    ready: Option<PathBuf>,
    /// Run number, written into every block: blocks of earlier runs count as old content.
    #[arg(long, default_value_t = 1)]
    epoch: u64,
}

/// What `write` saves.
#[derive(Serialize, Deserialize)]
struct Record {
    blocks: u64,
    epoch: u64,
    /// Completed writes: (block, generation, completion order).
    acks: Vec<(u64, u64, u64)>,
    /// Highest generation issued per block (acknowledged or not), for blocks written at all.
    issued: HashMap<u64, u64>,
    /// Every write whose completion order is below this was covered by a completed flush.
    durable_below: u64,
    flushes: u64,
    /// Why writing stopped.
    stopped_by: String,
}

/// Fills `buf` with the content of generation `generation` of block `block` in run `epoch`.
fn fill(buf: &mut [u8], epoch: u64, block: u64, generation: u64) {
    buf[0..8].copy_from_slice(MAGIC);
    buf[8..16].copy_from_slice(&block.to_le_bytes());
    buf[16..24].copy_from_slice(&generation.to_le_bytes());
    buf[24..32].copy_from_slice(&epoch.to_le_bytes());
    let mut x = (block << 24) ^ generation ^ (epoch << 48) ^ 0x9e37_79b9_7f4a_7c15;
    for chunk in buf[32..BLOCK - 4].chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    let crc = crc32c::crc32c(&buf[..BLOCK - 4]);
    buf[BLOCK - 4..].copy_from_slice(&crc.to_le_bytes());
}

enum Content {
    /// Zeros or a block of an earlier run: what was there before this run.
    Old,
    Valid(u64),
    Bad(String),
}

fn decode(buf: &[u8], epoch: u64, block: u64) -> Content {
    if buf.iter().all(|&b| b == 0) {
        return Content::Old;
    }
    let crc = u32::from_le_bytes([
        buf[BLOCK - 4],
        buf[BLOCK - 3],
        buf[BLOCK - 2],
        buf[BLOCK - 1],
    ]);
    if &buf[0..8] != MAGIC || crc32c::crc32c(&buf[..BLOCK - 4]) != crc {
        return Content::Bad("torn or garbage (magic or checksum)".into());
    }
    let mut w = [0u8; 8];
    w.copy_from_slice(&buf[8..16]);
    let found = u64::from_le_bytes(w);
    if found != block {
        return Content::Bad(format!("holds block {found}'s data"));
    }
    // The checksum covers the whole block: a torn write (new header over old data) fails it.
    w.copy_from_slice(&buf[24..32]);
    let found = u64::from_le_bytes(w);
    if found < epoch {
        return Content::Old;
    }
    if found > epoch {
        return Content::Bad(format!("written by run {found}, a later run than {epoch}"));
    }
    w.copy_from_slice(&buf[16..24]);
    Content::Valid(u64::from_le_bytes(w))
}

/// A 4 KiB-aligned buffer for O_DIRECT.
struct Aligned {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl Aligned {
    fn new(len: usize) -> Result<Self> {
        let layout = std::alloc::Layout::from_size_align(len, BLOCK)?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            bail!("out of memory");
        }
        Ok(Aligned { ptr, layout })
    }
    fn buf(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` points to `layout.size()` initialised bytes owned by `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

fn open(device: &Path, write: bool) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_DIRECT)
        .open(device)
        .with_context(|| format!("cannot open {}", device.display()))
}

/// What one writer thread saw: its acknowledged writes and the last generation it issued per block.
type WriterLog = (Vec<(u64, u64, u64)>, HashMap<u64, u64>);

fn write(o: &WriteOpts) -> Result<()> {
    let (device, blocks, threads, flush_ms) = (&o.device, o.blocks, o.threads, o.flush_ms);
    let (seconds, log, ready, epoch) = (o.seconds, &o.log, o.ready.as_deref(), o.epoch);
    if blocks == 0 || threads == 0 {
        bail!("--blocks and --threads must be at least 1");
    }
    let file = open(device, true)?;
    let order = AtomicU64::new(0);
    let durable_below = AtomicU64::new(0);
    let flushes = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let stopped_by = Mutex::new(String::from("time limit"));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let stop_with = |why: String| {
        if !stop.swap(true, Ordering::SeqCst) {
            if let Ok(mut s) = stopped_by.lock() {
                *s = why;
            }
        }
    };
    let results: Vec<WriterLog> = std::thread::scope(|s| {
        let writers: Vec<_> = (0..threads)
            .map(|t| {
                let (file, order, stop, stop_with) = (&file, &order, &stop, &stop_with);
                s.spawn(move || {
                    let mut acks = Vec::new();
                    let mut issued: HashMap<u64, u64> = HashMap::new();
                    let mut buf = match Aligned::new(BLOCK) {
                        Ok(b) => b,
                        Err(e) => {
                            stop_with(format!("writer {t}: {e}"));
                            return (acks, issued);
                        }
                    };
                    let mut rng = 0x2545_f491_4f6c_dd1d_u64 ^ (t + 1).wrapping_mul(0x9e37_79b9);
                    let owned = (blocks - t).div_ceil(threads);
                    while !stop.load(Ordering::SeqCst) {
                        if Instant::now() >= deadline {
                            stop_with("time limit".into());
                            break;
                        }
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        let block = t + (rng % owned) * threads;
                        let generation = issued.get(&block).copied().unwrap_or(0) + 1;
                        issued.insert(block, generation);
                        fill(buf.buf(), epoch, block, generation);
                        match file.write_at(buf.buf(), block * BLOCK as u64) {
                            Ok(n) if n == BLOCK => {
                                let o = order.fetch_add(1, Ordering::SeqCst);
                                acks.push((block, generation, o));
                            }
                            Ok(n) => {
                                stop_with(format!("short write of {n} bytes at block {block}"));
                                break;
                            }
                            Err(e) => {
                                stop_with(format!("write error at block {block}: {e}"));
                                break;
                            }
                        }
                    }
                    (acks, issued)
                })
            })
            .collect();
        if flush_ms > 0 {
            let mut announced = false;
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(flush_ms));
                let before = order.load(Ordering::SeqCst);
                match file.sync_data() {
                    Ok(()) => {
                        durable_below.fetch_max(before, Ordering::SeqCst);
                        flushes.fetch_add(1, Ordering::SeqCst);
                        if !announced && before > 0 {
                            announced = true;
                            if let Some(r) = ready {
                                let _ = std::fs::write(r, "ready\n");
                            }
                        }
                    }
                    Err(e) => stop_with(format!("flush error: {e}")),
                }
            }
        } else if let Some(r) = ready {
            while !stop.load(Ordering::SeqCst) && order.load(Ordering::SeqCst) == 0 {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = std::fs::write(r, "ready\n");
        }
        writers
            .into_iter()
            .map(|w| w.join().unwrap_or_default())
            .collect()
    });
    let mut record = Record {
        blocks,
        epoch,
        acks: Vec::new(),
        issued: HashMap::new(),
        durable_below: durable_below.load(Ordering::SeqCst),
        flushes: flushes.load(Ordering::SeqCst),
        stopped_by: stopped_by.lock().map(|s| s.clone()).unwrap_or_default(),
    };
    for (acks, issued) in results {
        record.acks.extend(acks);
        record.issued.extend(issued);
    }
    let covered = record
        .acks
        .iter()
        .filter(|a| a.2 < record.durable_below)
        .count();
    println!(
        "wrote {} blocks ({} distinct), {} flushes; {} writes covered by a completed flush; stopped by: {}",
        record.acks.len(),
        record.issued.len(),
        record.flushes,
        covered,
        record.stopped_by
    );
    std::fs::write(log, serde_json::to_vec(&record)?)
        .with_context(|| format!("cannot save {}", log.display()))?;
    Ok(())
}

fn check(device: &Path, log: &Path, all_acked: bool) -> Result<bool> {
    let record: Record = serde_json::from_slice(
        &std::fs::read(log).with_context(|| format!("cannot read {}", log.display()))?,
    )
    .context("the write record does not parse")?;
    // The oldest generation each block may hold.
    let mut floor: HashMap<u64, u64> = HashMap::new();
    for &(block, generation, o) in &record.acks {
        if all_acked || o < record.durable_below {
            let f = floor.entry(block).or_insert(0);
            *f = (*f).max(generation);
        }
    }
    let file = open(device, false)?;
    const CHUNK: u64 = 256;
    let mut buf = Aligned::new(CHUNK as usize * BLOCK)?;
    let (mut old, mut at_floor, mut newer, mut lost, mut bad) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut shown = 0;
    let mut first = 0;
    while first < record.blocks {
        let n = CHUNK.min(record.blocks - first);
        let len = n as usize * BLOCK;
        file.read_exact_at(&mut buf.buf()[..len], first * BLOCK as u64)
            .with_context(|| format!("cannot read blocks {first}..{}", first + n))?;
        for i in 0..n {
            let block = first + i;
            let data = &buf.buf()[i as usize * BLOCK..(i as usize + 1) * BLOCK];
            let floor = floor.get(&block).copied().unwrap_or(0);
            let issued = record.issued.get(&block).copied().unwrap_or(0);
            let problem = match decode(data, record.epoch, block) {
                Content::Old if floor == 0 => {
                    old += 1;
                    None
                }
                Content::Old => Some(format!("old content, but generation {floor} was flushed")),
                Content::Valid(g) if g < floor => Some(format!(
                    "generation {g}, but generation {floor} was flushed"
                )),
                Content::Valid(g) if g > issued => Some(format!(
                    "generation {g}, never written (last issued {issued})"
                )),
                Content::Valid(g) => {
                    if g == floor {
                        at_floor += 1;
                    } else {
                        newer += 1;
                    }
                    None
                }
                Content::Bad(why) => {
                    bad += 1;
                    Some(why)
                }
            };
            if let Some(p) = problem {
                lost += 1;
                if shown < 10 {
                    println!("block {block}: {p}");
                    shown += 1;
                }
            }
        }
        first += n;
    }
    println!(
        "checked {} blocks: {} hold the flushed generation, {} a later one, {} what was there before (nothing flushed), {} violate the contract ({} torn or foreign)",
        record.blocks, at_floor, newer, old, lost, bad
    );
    Ok(lost == 0)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Cmd::Write(o) => write(&o).map(|()| true),
        Cmd::Check {
            device,
            log,
            all_acked,
        } => check(&device, &log, all_acked),
    };
    match r {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("pf-flushcheck: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

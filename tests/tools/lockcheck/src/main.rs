//! pf-lockcheck: one "host process" of the lease host tests (tests/lease.rs drives it).
//!
//! - `init`: writes the lockspace and a volume's free lease and first lock record.
//! - `join`: joins the lockspace as a host id (through that host's sanlock daemon).
//! - `contend`: acquires the volume lease again and again; while holding it, checks and bumps an
//!   independent counter (a file holding `holder, value`): the holder must be 0 when it comes in,
//!   stay itself and see exactly its own increments. Any other sight is a violation (exit 5).
//! - `writer`: acquires the lease (retrying), then appends `host seq monotonic_ns` lines to a log
//!   every few milliseconds, only while the lease is valid, forever.
//! - `hold`: acquires the lease once (`--persistent`: as the agent does, surviving the process),
//!   prints `held` and sleeps until killed.
//! - `try`: acquires the lease once (`--persistent`: taking over this host's orphan) and
//!   releases it: exit 0 if it got it, 3 if a host holds it.
//!
//! The sanlock daemon of the host is the one of `SANLOCK_RUN_DIR`.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use peerflash_core::lockrec::{LockRecord, LockState};
use peerflash_core::policy::Policy;
use peerflash_lease::{fence::now_ns, Datastore, Lease, LeaseError};

#[derive(Parser)]
struct Cli {
    #[arg(long)]
    datastore: String,
    #[arg(long, default_value = "pftest")]
    lockspace: String,
    #[arg(long, default_value_t = 1)]
    io_timeout: u32,
    #[arg(long, default_value_t = 0)]
    slot: u32,
    #[arg(long, default_value = "vol1")]
    volume: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Init {
        #[arg(long, default_value_t = 8)]
        max_hosts: u32,
    },
    Join {
        #[arg(long)]
        host_id: u64,
    },
    Contend {
        #[arg(long)]
        host_id: u64,
        #[arg(long)]
        counter: String,
        #[arg(long, default_value_t = 10)]
        cycles: u32,
        #[arg(long, default_value_t = 5)]
        increments: u64,
        #[arg(long, default_value_t = 2)]
        step_ms: u64,
        #[arg(long, default_value_t = 120)]
        give_up_s: u64,
        /// Control run: touch the counter without taking the lease (must be caught).
        #[arg(long)]
        no_lease: bool,
    },
    Writer {
        #[arg(long)]
        host_id: u64,
        #[arg(long)]
        log: String,
        #[arg(long, default_value_t = 20)]
        interval_ms: u64,
    },
    Hold {
        #[arg(long)]
        host_id: u64,
        #[arg(long)]
        persistent: bool,
    },
    Try {
        #[arg(long)]
        host_id: u64,
        #[arg(long)]
        persistent: bool,
    },
}

/// Exit code of `try` when a host holds the lease.
const HELD: u8 = 3;

/// Exit code of a violation of mutual exclusion.
const VIOLATION: u8 = 5;

fn main() -> ExitCode {
    match run() {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("pf-lockcheck: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn acquire_retrying(
    ds: &Datastore,
    host_id: u64,
    slot: u32,
    volume: &str,
    give_up: Duration,
) -> Result<(Lease, u32)> {
    let start = Instant::now();
    let mut tries = 0u32;
    loop {
        match Lease::acquire(ds, host_id, slot, volume) {
            Ok(l) => return Ok((l, tries)),
            Err(LeaseError::Held { .. }) if start.elapsed() < give_up => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10 + u64::from(tries % 7) * 3));
            }
            Err(e) => return Err(e).context("acquire"),
        }
    }
}

fn run() -> Result<u8> {
    let cli = Cli::parse();
    let ds = Datastore::new(&cli.datastore, &cli.lockspace, cli.io_timeout)?;
    match cli.cmd {
        Cmd::Init { max_hosts } => {
            ds.init_lockspace(max_hosts)?;
            ds.init_volume(
                cli.slot,
                &cli.volume,
                &LockRecord::new(cli.volume.as_bytes(), Policy::WriteBack),
                max_hosts,
            )?;
            Ok(0)
        }
        Cmd::Join { host_id } => {
            ds.join(host_id)?;
            Ok(0)
        }
        Cmd::Contend {
            host_id,
            counter,
            cycles,
            increments,
            step_ms,
            give_up_s,
            no_lease,
        } => {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&counter)
                .with_context(|| format!("open {counter}"))?;
            let me = u64::from(std::process::id());
            let read = || -> Result<(u64, u64)> {
                let mut b = [0u8; 16];
                f.read_exact_at(&mut b, 0)?;
                Ok((
                    u64::from_le_bytes(b[..8].try_into()?),
                    u64::from_le_bytes(b[8..].try_into()?),
                ))
            };
            let write = |holder: u64, value: u64| -> Result<()> {
                let mut b = [0u8; 16];
                b[..8].copy_from_slice(&holder.to_le_bytes());
                b[8..].copy_from_slice(&value.to_le_bytes());
                f.write_all_at(&b, 0)?;
                Ok(())
            };
            let mut retries = 0;
            for _ in 0..cycles {
                // The control run (`--no-lease`) does the same without any lease.
                let lease = if no_lease {
                    None
                } else {
                    let (lease, tries) = acquire_retrying(
                        &ds,
                        host_id,
                        cli.slot,
                        &cli.volume,
                        Duration::from_secs(give_up_s),
                    )?;
                    retries += tries;
                    lease.update_record(|r| {
                        r.generation += 1;
                        r.owner_id = host_id;
                        r.set_owner_name(format!("host{host_id}").as_bytes());
                        r.state = LockState::Running;
                    })?;
                    Some(lease)
                };
                let guarded = |holder: u64, value: u64| -> Result<()> {
                    match &lease {
                        Some(l) => l.guarded(|| write(holder, value))?,
                        None => write(holder, value),
                    }
                };
                let generation = lease.as_ref().map_or(0, |l| l.record().generation);
                let (holder, mut value) = read()?;
                if holder != 0 {
                    eprintln!("VIOLATION: host {host_id} pid {me} (generation {generation}) came in while pid {holder} holds the counter");
                    return Ok(VIOLATION);
                }
                guarded(me, value)?;
                for _ in 0..increments {
                    std::thread::sleep(Duration::from_millis(step_ms));
                    let (h, v) = read()?;
                    if h != me || v != value {
                        eprintln!("VIOLATION: host {host_id} pid {me} (generation {generation}) sees holder {h} value {v}, expected {me} {value}");
                        return Ok(VIOLATION);
                    }
                    value += 1;
                    guarded(me, value)?;
                }
                guarded(0, value)?;
                if let Some(lease) = lease {
                    lease.update_record(|r| r.state = LockState::Clean)?;
                    lease.release()?;
                }
            }
            println!("host {host_id} pid {me}: {cycles} cycles, {retries} busy retries");
            Ok(0)
        }
        Cmd::Writer {
            host_id,
            log,
            interval_ms,
        } => {
            let mut out = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .with_context(|| format!("open {log}"))?;
            let (lease, _) = acquire_retrying(
                &ds,
                host_id,
                cli.slot,
                &cli.volume,
                Duration::from_secs(3600),
            )?;
            lease.update_record(|r| {
                r.generation += 1;
                r.owner_id = host_id;
                r.state = LockState::Running;
            })?;
            println!(
                "acquired {} generation {}",
                now_ns(),
                lease.record().generation
            );
            std::io::stdout().flush()?;
            let mut seq = 0u64;
            loop {
                seq += 1;
                match lease.guarded(|| writeln!(out, "{host_id} {seq} {}", now_ns())) {
                    Ok(r) => r?,
                    Err(LeaseError::Expired { .. }) => bail!("lease expired: stopped writing"),
                    Err(e) => return Err(e.into()),
                }
                std::thread::sleep(Duration::from_millis(interval_ms));
            }
        }
        Cmd::Hold {
            host_id,
            persistent,
        } => {
            let _lease = Lease::acquire_as(&ds, host_id, cli.slot, &cli.volume, persistent)?;
            println!("held");
            std::io::stdout().flush()?;
            // Holds the lease until killed.
            loop {
                std::thread::park();
            }
        }
        Cmd::Try {
            host_id,
            persistent,
        } => match Lease::acquire_as(&ds, host_id, cli.slot, &cli.volume, persistent) {
            Ok(lease) => {
                lease.release()?;
                println!("acquired and released");
                Ok(0)
            }
            Err(LeaseError::Held { .. }) => {
                println!("held by a host");
                Ok(HELD)
            }
            Err(e) => Err(e.into()),
        },
    }
}

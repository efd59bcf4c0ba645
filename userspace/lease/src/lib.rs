//! Per-volume leases on the shared datastore (Documentation/cluster-locks.md).
//!
//! The datastore (a shared block device, or a file on a shared filesystem) holds a sanlock
//! lockspace and, per volume slot, a sanlock resource lease and a record area:
//!
//! ```text
//! 0 MiB            lockspace: one delta lease per host id (sanlock)
//! (1 + 2 s) MiB    resource lease of slot s (sanlock Disk Paxos)
//! (2 + 2 s) MiB    lock record of slot s: copy 0 at +0, copy 1 at +4 KiB
//! ```
//!
//! The sanlock daemon of each host holds the host's delta lease; a [`Lease`] is a resource lease
//! acquired through it by one process. sanlock gives ownership without synchronized clocks and
//! without atomic storage operations (Disk Paxos over plain reads and writes). A host whose delta
//! lease is not renewed for `host_dead_seconds` is dead to the others, who may then take its
//! resource leases. Before that can happen, the holder kills itself ([`fence`]): it knows when its
//! delta lease was last renewed and arms a `SIGKILL` timer for the last moment at which the lease
//! is still safely its own.
//!
//! libsanlock_client reads `SANLOCK_RUN_DIR` once per process: a process talks to one daemon.

pub mod fence;
pub mod sanlock;
pub mod testing;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use peerflash_core::lockrec::LockRecord;

pub use fence::Fence;
pub use sanlock::SanlockError;

const MIB: u64 = 1 << 20;
/// Bytes between the two copies of a lock record (the largest logical block size).
pub const RECORD_COPY_STRIDE: u64 = 4096;
/// Most volume slots a datastore holds (it then spans 1 + 2 × 1024 MiB).
pub const MAX_SLOTS: u32 = 1024;
/// Most hosts in a lockspace (sanlock allows 2000; our lockspace area is 1 MiB).
pub const MAX_HOSTS: u32 = 2000;
/// Default sanlock I/O timeout in seconds for the lockspace (sanlock's own default is 10).
pub const DEFAULT_IO_TIMEOUT: u32 = 10;

/// sanlock 3.8's `host_dead_seconds`: a host whose delta lease has not changed for this long is
/// dead to the others (`8 × io_timeout` of renewal failures + 60 s for its watchdog to fire).
pub fn host_dead_seconds(io_timeout: u32) -> u64 {
    8 * u64::from(io_timeout) + 60
}

/// How long before others may consider us dead we stop and kill ourselves: an I/O issued just
/// before the deadline must complete (2 × io_timeout), plus 2 s for the clocks of two hosts
/// running at slightly different rates.
pub fn fence_margin_seconds(io_timeout: u32) -> u64 {
    2 * u64::from(io_timeout) + 2
}

/// Errors of lease operations.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another live host (or another process of this host) holds the lease.
    #[error("volume {volume}: the lease is held by another owner")]
    Held { volume: String },
    /// A sanlock call failed.
    #[error(transparent)]
    Sanlock(#[from] SanlockError),
    /// Reading or writing the datastore failed.
    #[error("{what} {path}: {err}")]
    Io {
        what: &'static str,
        path: PathBuf,
        err: io::Error,
    },
    /// The fence timer could not be armed: holding a lease without it is unsafe.
    #[error("cannot arm the self-fencing timer: {0}")]
    Fence(io::Error),
    /// The lease is no longer safely ours (it was released, or its renewal is overdue).
    #[error("volume {volume}: the lease is no longer valid here; nothing was written")]
    Expired { volume: String },
    /// The local daemon does not know when this host's delta lease was last renewed.
    #[error("lockspace {lockspace}: sanlock reports no renewal for host id {host_id}")]
    NoRenewal { lockspace: String, host_id: u64 },
    /// Bad arguments.
    #[error("{0}")]
    Invalid(String),
}

/// The crc function of the lock records.
fn crc(c: u32, b: &[u8]) -> u32 {
    crc32c::crc32c_append(c, b)
}

/// A 4 KiB-aligned buffer for O_DIRECT record I/O.
#[repr(C, align(4096))]
struct Block([u8; 4096]);

/// The shared datastore of one cluster: its path and lockspace name.
#[derive(Debug, Clone)]
pub struct Datastore {
    /// Path of the shared device or file (the same on every host).
    pub path: PathBuf,
    /// Lockspace name (at most 47 bytes).
    pub lockspace: String,
    /// sanlock I/O timeout of the lockspace, in seconds.
    pub io_timeout: u32,
    /// Offset in bytes of the region peerflash uses (a multiple of 1 MiB).
    pub base: u64,
}

impl Datastore {
    /// A datastore at `path` with lockspace `lockspace`.
    pub fn new(
        path: impl Into<PathBuf>,
        lockspace: &str,
        io_timeout: u32,
    ) -> Result<Datastore, LeaseError> {
        let path = path.into();
        if lockspace.is_empty() || lockspace.len() >= sanlock::NAME_LEN || lockspace.contains(':') {
            return Err(LeaseError::Invalid(format!(
                "lockspace name {lockspace:?}: 1 to {} bytes without ':'",
                sanlock::NAME_LEN - 1
            )));
        }
        if path.as_os_str().len() >= sanlock::PATH_LEN
            || path.to_str().is_none_or(|p| p.contains(':'))
        {
            return Err(LeaseError::Invalid(format!(
                "datastore path {}: too long, not UTF-8 or contains ':'",
                path.display()
            )));
        }
        if !(1..=300).contains(&io_timeout) {
            return Err(LeaseError::Invalid(format!(
                "io timeout {io_timeout}: 1 to 300 seconds"
            )));
        }
        Ok(Datastore {
            path,
            lockspace: lockspace.to_string(),
            io_timeout,
            base: 0,
        })
    }

    /// The same datastore in the region starting `mib` MiB into the device.
    pub fn at_mib(mut self, mib: u64) -> Datastore {
        self.base = mib.saturating_mul(MIB);
        self
    }

    fn path_str(&self) -> &str {
        self.path.to_str().unwrap_or_default()
    }

    /// Bytes the datastore needs for `slots` volume slots.
    pub fn bytes_for(slots: u32) -> u64 {
        MIB * (1 + 2 * u64::from(slots))
    }

    /// Offset of slot `slot`'s resource lease.
    pub fn lease_offset(&self, slot: u32) -> u64 {
        self.base + MIB * (1 + 2 * u64::from(slot))
    }

    /// Offset of slot `slot`'s lock record area.
    pub fn record_offset(&self, slot: u32) -> u64 {
        self.base + MIB * (2 + 2 * u64::from(slot))
    }

    fn lockspace_struct(&self, host_id: u64) -> sanlock::Lockspace {
        sanlock::Lockspace {
            name: sanlock::fill(&self.lockspace),
            host_id,
            flags: 0,
            host_id_disk: sanlock::disk(self.path_str(), self.base),
        }
    }

    fn resource(&self, slot: u32, volume: &str) -> sanlock::Resource {
        sanlock::Resource {
            lockspace_name: sanlock::fill(&self.lockspace),
            name: sanlock::fill(volume),
            lver: 0,
            data64: 0,
            data32: 0,
            unused: 0,
            flags: 0,
            num_disks: 1,
            disk: sanlock::disk(self.path_str(), self.lease_offset(slot)),
        }
    }

    fn check_slot(slot: u32, volume: &str) -> Result<(), LeaseError> {
        if slot >= MAX_SLOTS {
            return Err(LeaseError::Invalid(format!(
                "lock slot {slot}: at most {}",
                MAX_SLOTS - 1
            )));
        }
        if volume.is_empty() || volume.len() >= sanlock::NAME_LEN || volume.contains(':') {
            return Err(LeaseError::Invalid(format!(
                "volume name {volume:?} cannot name a lease"
            )));
        }
        Ok(())
    }

    /// Writes an empty lockspace for `max_hosts` hosts (through the local sanlock daemon).
    pub fn init_lockspace(&self, max_hosts: u32) -> Result<(), LeaseError> {
        if !(1..=MAX_HOSTS).contains(&max_hosts) {
            return Err(LeaseError::Invalid(format!(
                "max hosts {max_hosts}: 1 to {MAX_HOSTS}"
            )));
        }
        sanlock::write_lockspace(&self.lockspace_struct(0), max_hosts, self.io_timeout)?;
        Ok(())
    }

    /// Writes a free lease for `volume` in `slot` and its first lock record (clean, no owner).
    /// Only when no host runs the volume: it forgets the previous owner.
    pub fn init_volume(
        &self,
        slot: u32,
        volume: &str,
        first: &LockRecord,
        max_hosts: u32,
    ) -> Result<(), LeaseError> {
        Self::check_slot(slot, volume)?;
        sanlock::write_resource(&self.resource(slot, volume), max_hosts)?;
        let f = self.open(true)?;
        let mut rec = *first;
        rec.seq = 1;
        write_record_copy(&f, self, slot, &rec)?;
        // Copy 0 gets an invalid block: an old record of another volume must not come back.
        let zero = Block([0; 4096]);
        f.write_all_at(&zero.0, self.record_offset(slot))
            .map_err(|err| LeaseError::Io {
                what: "cannot write the lock record to",
                path: self.path.clone(),
                err,
            })
    }

    /// Joins the lockspace as `host_id` (waits while sanlock acquires the host's delta lease:
    /// `2 × io_timeout` when the id was released cleanly, up to `host_dead_seconds` otherwise).
    pub fn join(&self, host_id: u64) -> Result<(), LeaseError> {
        let ls = self.lockspace_struct(host_id);
        match sanlock::add_lockspace(&ls, self.io_timeout) {
            Err(e) if e.code == -libc::EEXIST => {}
            r => r?,
        }
        // Leases are usable once the daemon reports this host's renewals.
        first_deadline_ns(self, host_id).map(drop)
    }

    fn open(&self, write: bool) -> Result<File, LeaseError> {
        OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
            .open(&self.path)
            .map_err(|err| LeaseError::Io {
                what: "cannot open the datastore",
                path: self.path.clone(),
                err,
            })
    }

    /// The current lock record of `volume` in `slot`, read without the lease (the read-only
    /// copy any host may poll). `None` when neither copy is a valid record of that volume.
    pub fn read_record(&self, slot: u32, volume: &str) -> Result<Option<LockRecord>, LeaseError> {
        Self::check_slot(slot, volume)?;
        let f = self.open(false)?;
        let mut a = Block([0; 4096]);
        let mut b = Block([0; 4096]);
        let base = self.record_offset(slot);
        f.read_exact_at(&mut a.0, base)
            .and_then(|_| f.read_exact_at(&mut b.0, base + RECORD_COPY_STRIDE))
            .map_err(|err| LeaseError::Io {
                what: "cannot read the lock record from",
                path: self.path.clone(),
                err,
            })?;
        Ok(LockRecord::newest(&a.0, &b.0, volume.as_bytes(), crc))
    }
}

fn write_record_copy(
    f: &File,
    ds: &Datastore,
    slot: u32,
    rec: &LockRecord,
) -> Result<(), LeaseError> {
    let mut blk = Block([0; 4096]);
    rec.encode(&mut blk.0, crc);
    let at = ds.record_offset(slot) + RECORD_COPY_STRIDE * LockRecord::copy_for(rec.seq) as u64;
    f.write_all_at(&blk.0, at).map_err(|err| LeaseError::Io {
        what: "cannot write the lock record to",
        path: ds.path.clone(),
        err,
    })
}

/// A volume's resource lease held by this process, with its self-fencing timer.
pub struct Lease {
    ds: Datastore,
    host_id: u64,
    slot: u32,
    volume: String,
    res: sanlock::Resource,
    sock: std::os::fd::OwnedFd,
    fence: Arc<Fence>,
    file: File,
    /// The record as last written or read under the lease; the lock orders record writes.
    record: Mutex<LockRecord>,
    stop: Arc<AtomicBool>,
    refresher: Option<std::thread::JoinHandle<()>>,
}

/// The deadline (ns of `CLOCK_MONOTONIC`) until which the lease is safely ours, from the last
/// renewal of this host's delta lease that the local daemon reports.
fn deadline_ns(ds: &Datastore, host_id: u64) -> Result<u64, LeaseError> {
    let host = sanlock::get_host(&ds.lockspace, host_id)?
        .filter(|h| h.timestamp > 0)
        .ok_or_else(|| LeaseError::NoRenewal {
            lockspace: ds.lockspace.clone(),
            host_id,
        })?;
    let io = if host.io_timeout > 0 {
        host.io_timeout
    } else {
        ds.io_timeout
    };
    let safe = host_dead_seconds(io).saturating_sub(fence_margin_seconds(io));
    Ok(host
        .timestamp
        .saturating_add(safe)
        .saturating_mul(1_000_000_000))
}

/// [`deadline_ns`], waiting up to four renewal periods for the daemon to report a renewal of
/// this host (right after joining it may not have one yet and answers EAGAIN).
fn first_deadline_ns(ds: &Datastore, host_id: u64) -> Result<u64, LeaseError> {
    let start = std::time::Instant::now();
    let patience = Duration::from_secs(8 * u64::from(ds.io_timeout));
    loop {
        match deadline_ns(ds, host_id) {
            Err(LeaseError::NoRenewal { .. }) if start.elapsed() < patience => {}
            Err(LeaseError::Sanlock(e))
                if e.code == -libc::EAGAIN && start.elapsed() < patience => {}
            r => return r,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Lease {
    /// Acquires `volume`'s lease in `slot` for this process, arms the fence and reads the lock
    /// record. [`LeaseError::Held`] when a live owner has it. The host must have joined the
    /// lockspace ([`Datastore::join`]).
    pub fn acquire(
        ds: &Datastore,
        host_id: u64,
        slot: u32,
        volume: &str,
    ) -> Result<Lease, LeaseError> {
        Self::acquire_as(ds, host_id, slot, volume, false)
    }

    /// As [`Lease::acquire`], for a lease that guards I/O issued outside this process (the
    /// kernel's): the lease survives this process. If it dies or drops the lease without
    /// [`Lease::release`], the lease stays held by this host (a sanlock orphan) for as long as
    /// the host renews its delta lease; a later process of this host takes the orphan over by
    /// acquiring it again.
    pub fn acquire_persistent(
        ds: &Datastore,
        host_id: u64,
        slot: u32,
        volume: &str,
    ) -> Result<Lease, LeaseError> {
        Self::acquire_as(ds, host_id, slot, volume, true)
    }

    /// [`Lease::acquire_persistent`] if `persistent`, else [`Lease::acquire`].
    pub fn acquire_as(
        ds: &Datastore,
        host_id: u64,
        slot: u32,
        volume: &str,
        persistent: bool,
    ) -> Result<Lease, LeaseError> {
        Datastore::check_slot(slot, volume)?;
        let fence = Arc::new(Fence::new().map_err(LeaseError::Fence)?);
        let file = ds.open(true)?;
        let sock = sanlock::register()?;
        let mut res = ds.resource(slot, volume);
        let mut flags = 0;
        if persistent {
            res.flags |= sanlock::RES_PERSISTENT;
            flags |= sanlock::ACQUIRE_ORPHAN;
        }
        if let Err(e) = sanlock::acquire(sock.as_raw_fd(), &mut res, flags) {
            let busy = [
                sanlock::ACQUIRE_IDLIVE,
                sanlock::ACQUIRE_OWNED,
                sanlock::ACQUIRE_OTHER,
                sanlock::ACQUIRE_OWNED_RETRY,
                -libc::EEXIST,
                -libc::EAGAIN,
                -libc::EBUSY,
            ];
            return Err(if busy.contains(&e.code) {
                LeaseError::Held {
                    volume: volume.to_string(),
                }
            } else {
                e.into()
            });
        }
        // From here on, dropping `sock` releases the lease (the daemon sees the process go), or
        // orphans it if persistent.
        let deadline = first_deadline_ns(ds, host_id)?;
        fence.arm(deadline).map_err(LeaseError::Fence)?;
        let record = ds.read_record(slot, volume)?.unwrap_or_else(|| {
            LockRecord::new(volume.as_bytes(), peerflash_core::policy::Policy::WriteThrough)
        });
        let stop = Arc::new(AtomicBool::new(false));
        let refresher = {
            let (ds, fence, stop) = (ds.clone(), fence.clone(), stop.clone());
            let period = Duration::from_secs(u64::from(ds.io_timeout).max(1));
            std::thread::Builder::new()
                .name("pf-lease".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        // A renewal we cannot confirm leaves the deadline where it was: the fence
                        // fires at the last safe moment unless a later renewal is seen first.
                        if let Ok(d) = deadline_ns(&ds, host_id) {
                            if d > 0 && !stop.load(Ordering::Acquire) {
                                let _ = fence.arm(d);
                            }
                        }
                        std::thread::park_timeout(period);
                    }
                })
                .map_err(LeaseError::Fence)?
        };
        Ok(Lease {
            ds: ds.clone(),
            host_id,
            slot,
            volume: volume.to_string(),
            res,
            sock,
            fence,
            file,
            record: Mutex::new(record),
            stop,
            refresher: Some(refresher),
        })
    }

    /// Stops the renewal thread (it could re-arm the fence after a revoke otherwise).
    fn stop_refresher(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.refresher.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }

    /// Whether the lease is still safely ours now (gate every write to the volume on it).
    pub fn valid(&self) -> bool {
        self.fence.valid()
    }

    /// Time left before this process kills itself unless the lease is renewed.
    pub fn remaining(&self) -> Duration {
        self.fence.remaining()
    }

    /// The fence (to gate writes in other threads).
    pub fn fence(&self) -> Arc<Fence> {
        self.fence.clone()
    }

    /// The sanlock host id this lease was acquired as.
    pub fn host_id(&self) -> u64 {
        self.host_id
    }

    /// The lock record as known under the lease.
    pub fn record(&self) -> LockRecord {
        *self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the lock record `f` makes of the current one (its sequence is set here), if the
    /// lease is still valid.
    pub fn update_record(&self, f: impl FnOnce(&mut LockRecord)) -> Result<LockRecord, LeaseError> {
        let mut cur = self.record.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = *cur;
        f(&mut next);
        next.seq = cur.seq.wrapping_add(1);
        if !self.valid() {
            return Err(LeaseError::Expired {
                volume: self.volume.clone(),
            });
        }
        write_record_copy(&self.file, &self.ds, self.slot, &next)?;
        *cur = next;
        Ok(next)
    }

    /// Runs `write` only while the lease is valid (checked just before; the fence covers a pause
    /// after the check).
    pub fn guarded<T>(&self, write: impl FnOnce() -> T) -> Result<T, LeaseError> {
        if !self.valid() {
            return Err(LeaseError::Expired {
                volume: self.volume.clone(),
            });
        }
        Ok(write())
    }

    /// Releases the lease: writes stop first, then sanlock releases it, then the fence is
    /// disarmed.
    pub fn release(mut self) -> Result<(), LeaseError> {
        self.stop_refresher();
        self.fence.revoke();
        sanlock::release(self.sock.as_raw_fd(), &mut self.res)?;
        self.fence.disarm().map_err(LeaseError::Fence)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Without `release`: stop writing; closing the socket makes the daemon release the lease
        // (a persistent one becomes this host's orphan).
        self.stop_refresher();
        self.fence.revoke();
    }
}

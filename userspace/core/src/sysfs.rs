//! The files of `/sys/block/pf-NAME/peerflash/`, the one table the module and the helper agree
//! on: each file's name, whether and what it can be written, its default, and one line of what
//! it means. The module's show and store dispatch on [`Attr`], the helper reads the files by
//! [`Attr::name`], and a host test holds Documentation/control-interface.md to this table.

use core::ffi::CStr;

/// A file of the cache's sysfs directory, in directory order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attr {
    State,
    Policy,
    DirtyBytes,
    CachedBytes,
    LastSerial,
    CheckpointSerial,
    DestageRate,
    DestagedBytes,
    ReadHits,
    ReadMisses,
    CacheErrors,
    SanErrors,
    BatchOverlaps,
    WriteWaits,
    BatchSectors,
    BatchRecords,
    DestageConcurrency,
    DestageFailures,
    DestagePaused,
    DestageDelayMs,
    DestageNow,
    DestageBatches,
    ReadPopulate,
    PopulatedBytes,
    LeaseMs,
    Fenced,
    SanGroup,
    TurnWaits,
    FastWrites,
    FencedBatches,
    Replicas,
    PeerTimeoutMs,
    FlowState,
    FlowDelayUs,
    PacedWrites,
    PacedUs,
    FlowWritethroughs,
    DestageBw,
    FlowStartPct,
    FlowLimitPct,
    FlowMaxDelayUs,
}

/// What a write to a file may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read only.
    Read,
    /// A tunable: any value in `min..=max`; `default` when the cache opens.
    Tunable { min: u64, max: u64, default: u64 },
    /// A command: only `1` is accepted (what it does is the file's own).
    Trigger,
}

impl Access {
    /// Whether the file can be written.
    pub const fn writable(self) -> bool {
        !matches!(self, Access::Read)
    }
}

/// One file: its name, access and meaning.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub attr: Attr,
    pub name: &'static CStr,
    pub access: Access,
    /// What it shows, in one line (the start of its row in control-interface.md).
    pub doc: &'static str,
}

const fn ro(attr: Attr, name: &'static CStr, doc: &'static str) -> Spec {
    Spec { attr, name, access: Access::Read, doc }
}

const fn rw(attr: Attr, name: &'static CStr, min: u64, max: u64, default: u64, doc: &'static str) -> Spec {
    Spec { attr, name, access: Access::Tunable { min, max, default }, doc }
}

/// The flow-control law's defaults (`flow.rs`), the defaults of its tunables.
const FLOW: super::flow::FlowTunables = super::flow::FlowTunables::DEFAULT;

/// Number of files.
pub const COUNT: usize = 41;

/// The files, in the order of [`Attr`] (`ATTRS[a as usize].attr == a`, checked by a test).
pub const ATTRS: [Spec; COUNT] = [
    ro(Attr::State, c"state", "the volume's state"),
    ro(Attr::Policy, c"policy", "the write policy"),
    ro(Attr::DirtyBytes, c"dirty_bytes", "bytes on flash not yet on the SAN"),
    ro(Attr::CachedBytes, c"cached_bytes", "bytes the index maps to flash (dirty and clean)"),
    ro(Attr::LastSerial, c"last_serial", "serial of the newest write"),
    ro(Attr::CheckpointSerial, c"checkpoint_serial", "every write up to it is on the SAN (or superseded) and the SAN was flushed"),
    ro(Attr::DestageRate, c"destage_rate", "bytes/s destaged over the last window of about a second"),
    ro(Attr::DestagedBytes, c"destaged_bytes", "bytes written to the SAN by the destager"),
    ro(Attr::ReadHits, c"read_hits", "reads served wholly from flash"),
    ro(Attr::ReadMisses, c"read_misses", "reads that needed the SAN"),
    ro(Attr::CacheErrors, c"cache_errors", "failed cache device I/O"),
    ro(Attr::SanErrors, c"san_errors", "failed destage batches"),
    ro(Attr::BatchOverlaps, c"batch_overlaps", "pieces of destage batches that overlapped another piece of their batch"),
    ro(Attr::WriteWaits, c"write_waits", "writes that waited, counted once each"),
    rw(Attr::BatchSectors, c"batch_sectors", 8, 1 << 20, 2048, "most sectors per destage batch"),
    rw(Attr::BatchRecords, c"batch_records", 1, 1 << 16, 256, "most records per destage batch"),
    rw(Attr::DestageConcurrency, c"destage_concurrency", 1, 1024, 32, "most SAN writes of a batch in flight at once"),
    ro(Attr::DestageFailures, c"destage_failures", "consecutive failed destage batches"),
    rw(Attr::DestagePaused, c"destage_paused", 0, 1, 0, "1: the destager does nothing"),
    rw(Attr::DestageDelayMs, c"destage_delay_ms", 0, 3_600_000, 1000, "dirty data younger than this waits for more to join its batch"),
    Spec { attr: Attr::DestageNow, name: c"destage_now", access: Access::Trigger, doc: "write 1: destage everything dirty now" },
    ro(Attr::DestageBatches, c"destage_batches", "destage batches completed"),
    rw(Attr::ReadPopulate, c"read_populate", 0, 1, 1, "1: a read that misses wholly is kept on flash as clean data"),
    ro(Attr::PopulatedBytes, c"populated_bytes", "bytes read from the SAN on misses and kept on flash"),
    rw(Attr::LeaseMs, c"lease_ms", 0, 3_600_000, 0, "the SAN-write fence"),
    ro(Attr::Fenced, c"fenced", "1 when a lease is enforced and has run out"),
    rw(Attr::SanGroup, c"san_group", 0, 65535, 0, "the volume's SAN group (0: none)"),
    ro(Attr::TurnWaits, c"turn_waits", "batches that waited for another volume's turn in the SAN group"),
    ro(Attr::FastWrites, c"fast_writes", "wb writes that took the fast path"),
    ro(Attr::FencedBatches, c"fenced_batches", "destage batches abandoned because the lease ran out while they ran"),
    ro(Attr::Replicas, c"replicas", "wbp: the replica set in force and each member's state"),
    rw(Attr::PeerTimeoutMs, c"peer_timeout_ms", 200, 60_000, 2000, "wbp: a member that owes an answer this long is lost"),
    ro(Attr::FlowState, c"flow_state", "wb and wbp (wt: always freerun): freerun, paced or writethrough (the flow-control law at the share's current fill)"),
    ro(Attr::FlowDelayUs, c"flow_delay_us", "wb and wbp: the delay of the last paced write"),
    ro(Attr::PacedWrites, c"paced_writes", "wb and wbp: writes delayed by flow control"),
    ro(Attr::PacedUs, c"paced_us", "wb and wbp: microseconds of those delays, in all"),
    ro(Attr::FlowWritethroughs, c"flow_writethroughs", "wb and wbp: writes written through because the share was at flow_limit_pct"),
    ro(Attr::DestageBw, c"destage_bw", "bytes/s the destager measured over its last batches (the paced rate's base)"),
    rw(Attr::FlowStartPct, c"flow_start_pct", 1, 100, FLOW.start_pct as u64, "wb and wbp: fill of the share (log space in use) where pacing starts"),
    rw(Attr::FlowLimitPct, c"flow_limit_pct", 2, 100, FLOW.limit_pct as u64, "wb and wbp: fill where new writes are written through instead of waiting for room"),
    rw(Attr::FlowMaxDelayUs, c"flow_max_delay_us", 0, 1_000_000, FLOW.max_delay_ns / 1000, "wb and wbp: the longest delay of one paced write"),
];

/// `(name, writable)` of every file, in order: what the block layer's sysfs directory is made of.
pub const FILES: [(&CStr, bool); COUNT] = {
    let mut out = [(c"", false); COUNT];
    let mut i = 0;
    while i < COUNT {
        out[i] = (ATTRS[i].name, ATTRS[i].access.writable());
        i += 1;
    }
    out
};

/// Why a value written to a file was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// The file is read only (`EACCES`).
    ReadOnly,
    /// Not a decimal number, or not `1` for a trigger (`EINVAL`).
    NotValid,
    /// Outside the tunable's range (`ERANGE`).
    OutOfRange,
}

impl Attr {
    /// The file at position `i`.
    pub fn from_index(i: usize) -> Option<Attr> {
        ATTRS.get(i).map(|s| s.attr)
    }

    /// The file's entry in [`ATTRS`].
    pub fn spec(self) -> &'static Spec {
        // In range by construction (one entry per variant, in order).
        ATTRS.get(self as usize).unwrap_or(&ATTRS[0])
    }

    /// The file's name.
    pub fn name(self) -> &'static str {
        self.spec().name.to_str().unwrap_or("")
    }

    /// The value a write of `raw` stores, checked against the file's access.
    pub fn parse_store(self, raw: &[u8]) -> Result<u64, StoreError> {
        let access = self.spec().access;
        if access == Access::Read {
            return Err(StoreError::ReadOnly);
        }
        let n = super::attr::parse_u64(raw).map_err(|_| StoreError::NotValid)?;
        self.check(n)
    }

    /// Whether the file accepts the value `n`.
    pub fn check(self, n: u64) -> Result<u64, StoreError> {
        match self.spec().access {
            Access::Tunable { min, max, .. } if (min..=max).contains(&n) => Ok(n),
            Access::Tunable { .. } => Err(StoreError::OutOfRange),
            Access::Trigger if n == 1 => Ok(1),
            Access::Trigger => Err(StoreError::NotValid),
            Access::Read => Err(StoreError::ReadOnly),
        }
    }

    /// The tunable's default (0 for the other files).
    pub fn default_value(self) -> u64 {
        match self.spec().access {
            Access::Tunable { default, .. } => default,
            _ => 0,
        }
    }
}

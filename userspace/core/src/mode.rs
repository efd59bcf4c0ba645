//! What a volume does with its cache device (its mode), the state word sysfs shows for it, and
//! the rule that decides, when the cache device fails, between bypassing it and failing the
//! volume.

/// What the volume does with its cache device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Using the cache.
    Normal,
    /// The cache device failed while holding no dirty data: everything goes to the SAN.
    Bypass,
    /// The cache device failed while holding dirty data: every request fails (the SAN holds
    /// older data for those blocks, which must never be returned).
    Failed,
}

/// The state of a volume's cache, as the sysfs file `state` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheState {
    /// The volume has no cache device.
    Uncached,
    /// Nothing dirty.
    Clean,
    /// Dirty data not yet on the SAN.
    Dirty,
    /// Writes found after the checkpoint at attach are not all destaged yet.
    Replaying,
    /// The cache device failed with no dirty data: every request goes to the SAN.
    Degraded,
    /// The cache device failed holding dirty data: every request fails.
    Failed,
}

impl CacheState {
    /// Every state, for parsers and tests.
    pub const ALL: [CacheState; 6] = [
        CacheState::Uncached,
        CacheState::Clean,
        CacheState::Dirty,
        CacheState::Replaying,
        CacheState::Degraded,
        CacheState::Failed,
    ];

    /// The state of a running cache.
    pub fn of(mode: Mode, replaying: bool, dirty_bytes: u64) -> CacheState {
        match mode {
            Mode::Failed => CacheState::Failed,
            Mode::Bypass => CacheState::Degraded,
            Mode::Normal if replaying => CacheState::Replaying,
            Mode::Normal if dirty_bytes > 0 => CacheState::Dirty,
            Mode::Normal => CacheState::Clean,
        }
    }

    /// The word shown in sysfs.
    pub fn word(self) -> &'static str {
        match self {
            CacheState::Uncached => "uncached",
            CacheState::Clean => "clean",
            CacheState::Dirty => "dirty",
            CacheState::Replaying => "replaying",
            CacheState::Degraded => "degraded",
            CacheState::Failed => "failed",
        }
    }

    /// Parses a word of [`CacheState::word`] (surrounding whitespace allowed).
    pub fn parse(s: &str) -> Option<CacheState> {
        Self::ALL.into_iter().find(|c| c.word() == s.trim())
    }
}

/// What the cache holds when its device fails, as far as the choice between bypass and failure
/// depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtFailure {
    /// Dirty sectors in the index.
    pub dirty_sectors: u64,
    /// Records in the destage queue.
    pub queued: bool,
    /// A fast-path write is in flight: it may have been acknowledged already (its flash write
    /// completed, its indexing not done yet), so it counts as dirty data.
    pub early_in_flight: bool,
    /// Highest serial of a dirty record submitted to flash.
    pub wb_submitted: u64,
    /// The checkpoint.
    pub checkpoint: u64,
    /// The last serial issued.
    pub last_serial: u64,
}

/// The decision on a cache device failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Bypass the cache; `floor`: a checkpoint at that serial must be written before the SAN
    /// takes more writes (a dirty record submitted to flash may have landed; no replay may ever
    /// bring it back over newer SAN data).
    Bypass { floor: Option<u64> },
    /// Fail the volume: it holds acknowledged writes the SAN lacks.
    Fail,
}

/// Bypass when the cache holds no acknowledged write the SAN lacks, else fail.
pub fn on_cache_failure(s: &AtFailure) -> Fallback {
    if s.dirty_sectors > 0 || s.queued || s.early_in_flight {
        return Fallback::Fail;
    }
    let floor = (s.wb_submitted > s.checkpoint).then_some(s.last_serial);
    Fallback::Bypass { floor }
}

//! The write policy of a volume, one type for everything that names it: the module's configfs
//! and sysfs files, the slot on flash, the lock record on the datastore, the helper's command
//! line and the cluster configuration.

/// When a write completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Write-through: a write completes once on the SAN; flash keeps a clean copy.
    WriteThrough,
    /// Write-back: a write completes once stable on flash; the destager writes it to the SAN.
    WriteBack,
    /// Write-back with replicas: a write completes once stable on flash and on every member of
    /// the volume's replica set (`replication.rs`).
    WriteBackPeers,
}

impl Policy {
    /// Every policy, for parsers and tests.
    pub const ALL: [Policy; 3] = [Policy::WriteThrough, Policy::WriteBack, Policy::WriteBackPeers];

    /// The name used in sysfs, configfs, the helper and the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Policy::WriteThrough => "wt",
            Policy::WriteBack => "wb",
            Policy::WriteBackPeers => "wbp",
        }
    }

    /// Parses a name of [`Policy::name`] (surrounding whitespace allowed).
    pub fn parse(s: &[u8]) -> Option<Policy> {
        let s = s.trim_ascii();
        Self::ALL.into_iter().find(|p| p.name().as_bytes() == s)
    }

    /// Whether a write completes before it is on the SAN (wb, wbp): its record stays dirty in
    /// the log until the destager writes it, so the share fills and flow control applies.
    pub fn writes_back(self) -> bool {
        matches!(self, Policy::WriteBack | Policy::WriteBackPeers)
    }

    /// The code on flash and in lock records.
    pub fn code(self) -> u8 {
        match self {
            Policy::WriteThrough => 0,
            Policy::WriteBack => 1,
            Policy::WriteBackPeers => 2,
        }
    }

    /// The policy of a code of [`Policy::code`].
    pub fn from_code(c: u8) -> Option<Policy> {
        Self::ALL.into_iter().find(|p| p.code() == c)
    }
}

impl core::fmt::Display for Policy {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

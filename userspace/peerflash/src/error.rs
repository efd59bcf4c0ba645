//! The helper's failures with a meaning of their own, and the exit codes they map to
//! (documented in Documentation/control-interface.md).

/// Exit codes (documented in Documentation/control-interface.md).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Any failure not listed below.
    pub const FAILURE: u8 = 1;
    /// Bad usage or invalid input refused before anything was changed.
    pub const INVALID: u8 = 2;
    /// The volume or device is busy (open, in use, exists already).
    pub const BUSY: u8 = 3;
    /// The volume or device does not exist.
    pub const NOT_FOUND: u8 = 4;
    /// The peerflash module is not loaded or configfs is not mounted.
    pub const NO_MODULE: u8 = 5;
}

/// Failures with a meaning of their own: each maps to a documented exit code.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// Input refused before anything was changed.
    #[error("{0}")]
    Invalid(String),
    /// The volume or device is busy.
    #[error("{0}")]
    Busy(String),
    /// The volume or device does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The module or configfs is missing.
    #[error("{0}")]
    NoModule(String),
}

impl VolumeError {
    /// The exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            VolumeError::Invalid(_) => exit::INVALID,
            VolumeError::Busy(_) => exit::BUSY,
            VolumeError::NotFound(_) => exit::NOT_FOUND,
            VolumeError::NoModule(_) => exit::NO_MODULE,
        }
    }
}


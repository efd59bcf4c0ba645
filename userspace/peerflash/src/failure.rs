//! The exit code of any failure of the helper (documented in Documentation/control-interface.md),
//! including a failure the agent reported for a verb it ran.

use crate::error::exit;

/// A failure the agent reported, with its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct AgentFailure {
    pub code: u8,
    pub message: String,
}

/// The exit code of a failure (documented in Documentation/control-interface.md).
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<crate::config::Invalid>().is_some() {
        exit::INVALID
    } else if let Some(a) = e.downcast_ref::<AgentFailure>() {
        a.code
    } else if let Some(l) = e.downcast_ref::<peerflash_lease::LeaseError>() {
        match l {
            peerflash_lease::LeaseError::Held { .. } => exit::BUSY,
            peerflash_lease::LeaseError::Invalid(_) => exit::INVALID,
            _ => exit::FAILURE,
        }
    } else {
        e.downcast_ref::<crate::error::VolumeError>()
            .map(crate::error::VolumeError::exit_code)
            .unwrap_or(exit::FAILURE)
    }
}


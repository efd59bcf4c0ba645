// SPDX-License-Identifier: GPL-2.0

//! What a bio does (read, write, write with FUA) and its operation flags.

use kernel::bindings;

use super::ffi;

/// What a bio does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    /// Read.
    Read,
    /// Write (stable only after a later flush).
    Write,
    /// Write that is stable when it completes.
    WriteFua,
}

impl Dir {
    pub(super) fn opf(self) -> bindings::blk_opf_t {
        // SAFETY: the helpers only return constants.
        unsafe {
            match self {
                Dir::Read => ffi::pf_opf_read(),
                Dir::Write => ffi::pf_opf_write(),
                Dir::WriteFua => ffi::pf_opf_write_fua(),
            }
        }
    }
}

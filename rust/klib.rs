// SPDX-License-Identifier: GPL-2.0

//! The thin layer over the kernel library calls the driver needs besides the block layer:
//! CRC32C for the on-flash format, on the kernel's own implementation (`lib/crc`, which uses the
//! CPU's CRC instruction when CONFIG_CRC_OPTIMIZATIONS is set), and random bytes for new volume
//! identities.

use kernel::bindings;
use kernel::ffi::c_void;

extern "C" {
    /// `u32 crc32c(u32 crc, const void *p, size_t len)` from `<linux/crc32.h>`: no inversion at
    /// either end, callable in any context.
    #[link_name = "crc32c"]
    fn kernel_crc32c(crc: u32, p: *const c_void, len: usize) -> u32;
}

/// The CRC32C of everything so far (`prev`, 0 at the start) followed by `data`, in the standard
/// convention (initial value and final inversion), as `pfcore::format::Crc32c` expects.
pub(crate) fn crc32c(prev: u32, data: &[u8]) -> u32 {
    // SAFETY: `data` is valid for reads of `data.len()` bytes for the duration of the call, and
    // crc32c only reads them; it has no other requirement and may run in any context.
    !unsafe { kernel_crc32c(!prev, data.as_ptr().cast(), data.len()) }
}

/// Fills `buf` with random bytes (`get_random_bytes`; may sleep).
pub(crate) fn random_bytes(buf: &mut [u8]) {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call;
    // get_random_bytes has no other requirement.
    unsafe { bindings::get_random_bytes(buf.as_mut_ptr().cast(), buf.len()) };
}

// SPDX-License-Identifier: GPL-2.0

//! The thin layer over the kernel library calls the driver needs besides the block layer:
//! CRC32C for the on-flash format, on the kernel's own implementation (`lib/crc`, which uses the
//! CPU's CRC instruction when CONFIG_CRC_OPTIMIZATIONS is set), HMAC-SHA256 for the peer
//! protocol (the crypto library's, `lib/crypto/sha256.c`, arch-accelerated, no allocation), and
//! random bytes for new volume identities and handshake nonces.

use kernel::bindings;
use kernel::ffi::c_void;

extern "C" {
    /// `hmac_sha256_update` of `<crypto/sha2.h>` (inline; `rust/helpers.c`).
    fn pf_hmac_sha256_update(ctx: *mut bindings::hmac_sha256_ctx, data: *const u8, len: usize);
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

/// HMAC-SHA256 from the kernel's crypto library, for `pfcore::session::Mac`.
pub(crate) struct HmacSha256(bindings::hmac_sha256_ctx);

impl crate::pfcore::session::Mac for HmacSha256 {
    fn new(key: &[u8; 32]) -> Self {
        let mut ctx = bindings::hmac_sha256_ctx::default();
        // SAFETY: `ctx` is a writable context; `key` is valid for reads of 32 bytes; the call
        // only reads the key and initialises the context (any context, no allocation).
        unsafe { bindings::hmac_sha256_init_usingrawkey(&mut ctx, key.as_ptr(), key.len()) };
        HmacSha256(ctx)
    }

    fn update(&mut self, bytes: &[u8]) {
        // SAFETY: the context was initialised by `new`; `bytes` is valid for reads of its length.
        unsafe { pf_hmac_sha256_update(&mut self.0, bytes.as_ptr(), bytes.len()) };
    }

    fn finish(mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        // SAFETY: the context was initialised by `new`; `out` has room for the 32-byte digest.
        // The call zeroises the context (no key material is left in it).
        unsafe { bindings::hmac_sha256_final(&mut self.0, out.as_mut_ptr()) };
        out
    }
}

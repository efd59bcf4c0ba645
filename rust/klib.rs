// SPDX-License-Identifier: GPL-2.0

//! The thin layer over the kernel library calls the driver needs besides the block layer:
//! CRC32C for the on-flash format, on the kernel's own implementation (`lib/crc`, which uses the
//! CPU's CRC instruction when CONFIG_CRC_OPTIMIZATIONS is set), HMAC-SHA256 for the peer
//! protocol's handshake (the crypto library's, `lib/crypto/sha256.c`, arch-accelerated, no
//! allocation), ChaCha20 and Poly1305 for its frame tags (`lib/crypto/chacha-block-generic.c`,
//! `lib/crypto/poly1305.c`, arch-accelerated, no allocation), and random bytes for new volume
//! identities and handshake nonces.

use kernel::bindings;
use kernel::ffi::{c_int, c_uint, c_void};

/// `struct chacha_state` of `<crypto/chacha.h>`: sixteen 32-bit words.
#[repr(C)]
struct ChachaState {
    x: [u32; 16],
}

/// Room for `struct poly1305_desc_ctx` of `<crypto/poly1305.h>`, whose size depends on the
/// architecture's key powers; `rust/helpers.c` asserts at build time that it fits and that its
/// alignment is at most 8.
const POLY1305_CTX_WORDS: usize = 64;
#[repr(C, align(8))]
struct Poly1305Ctx([u64; POLY1305_CTX_WORDS]);

extern "C" {
    /// `hmac_sha256_update` of `<crypto/sha2.h>` (inline; `rust/helpers.c`).
    fn pf_hmac_sha256_update(ctx: *mut bindings::hmac_sha256_ctx, data: *const u8, len: usize);
    /// `u32 crc32c(u32 crc, const void *p, size_t len)` from `<linux/crc32.h>`: no inversion at
    /// either end, callable in any context.
    #[link_name = "crc32c"]
    fn kernel_crc32c(crc: u32, p: *const c_void, len: usize) -> u32;
    /// `void chacha_block_generic(struct chacha_state *state, u8 *out, int nrounds)`: one
    /// 64-byte block of key stream; advances the state's counter word.
    fn chacha_block_generic(state: *mut ChachaState, out: *mut u8, nrounds: c_int);
    /// `void poly1305_init(struct poly1305_desc_ctx *desc, const u8 *key)` (32-byte key).
    fn poly1305_init(desc: *mut Poly1305Ctx, key: *const u8);
    /// `void poly1305_update(struct poly1305_desc_ctx *desc, const u8 *src, unsigned int n)`.
    fn poly1305_update(desc: *mut Poly1305Ctx, src: *const u8, nbytes: c_uint);
    /// `void poly1305_final(struct poly1305_desc_ctx *desc, u8 *digest)` (16 bytes; zeroises
    /// the context).
    fn poly1305_final(desc: *mut Poly1305Ctx, digest: *mut u8);
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

/// ChaCha20 and Poly1305 from the kernel's crypto library, for `pfcore::frame_mac::Poly1305`.
pub(crate) struct ChaChaPoly(Poly1305Ctx);

impl crate::pfcore::frame_mac::Poly1305 for ChaChaPoly {
    fn chacha20_block0(key: &[u8; 32], nonce: &[u8; 12]) -> [u8; 64] {
        // RFC 8439 §2.3: the constants, the key's eight little-endian words, block counter 0,
        // the nonce's three little-endian words (what `chacha_init` does with a 16-byte iv).
        let mut st = ChachaState { x: [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0] };
        for (i, w) in key.as_chunks::<4>().0.iter().enumerate() {
            if let Some(x) = st.x.get_mut(4 + i) {
                *x = u32::from_le_bytes(*w);
            }
        }
        for (i, w) in nonce.as_chunks::<4>().0.iter().enumerate() {
            if let Some(x) = st.x.get_mut(13 + i) {
                *x = u32::from_le_bytes(*w);
            }
        }
        let mut out = [0u8; 64];
        // SAFETY: `st` is a valid `struct chacha_state` (16 words) and `out` has room for the
        // 64-byte block; the call reads and updates the state, writes `out`, no allocation.
        unsafe { chacha_block_generic(&mut st, out.as_mut_ptr(), 20) };
        // The state holds the key: cleared before it goes.
        st.x.fill(0);
        core::hint::black_box(&st);
        out
    }

    fn new(one_time_key: &[u8; 32]) -> Self {
        let mut ctx = Poly1305Ctx([0; POLY1305_CTX_WORDS]);
        // SAFETY: `ctx` has room and alignment for a `struct poly1305_desc_ctx` (checked at build
        // time in rust/helpers.c); `one_time_key` is valid for reads of 32 bytes. The call only
        // initialises the context (any context, no allocation).
        unsafe { poly1305_init(&mut ctx, one_time_key.as_ptr()) };
        ChaChaPoly(ctx)
    }

    fn update(&mut self, bytes: &[u8]) {
        // Pieces are at most a page or a frame payload (1 MiB + 24): they fit an unsigned int;
        // anything longer is fed in parts.
        for part in bytes.chunks(1 << 30) {
            // SAFETY: the context was initialised by `new`; `part` is valid for reads of its
            // length, which fits a `c_uint` (at most 2^30).
            unsafe { poly1305_update(&mut self.0, part.as_ptr(), part.len() as c_uint) };
        }
    }

    fn finish(mut self) -> [u8; 16] {
        let mut out = [0u8; 16];
        // SAFETY: the context was initialised by `new`; `out` has room for the 16-byte tag. The
        // call zeroises the context.
        unsafe { poly1305_final(&mut self.0, out.as_mut_ptr()) };
        out
    }
}

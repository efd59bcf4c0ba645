//! The tag of a frame after the handshake (Documentation/wire-protocol.md, "Frames"): the
//! ChaCha20-Poly1305 AEAD of RFC 8439 under the session key, with the frame's header and payload
//! as the associated data and nothing to encrypt. Its nonce is the frame's direction and
//! sequence number, so no (key, nonce) pair repeats: the session key is new for every connection
//! (`handshake.rs`) and each direction numbers its frames from 1.
//!
//! Why not HMAC-SHA256, which the handshake uses: a WRITE frame carries the data of a write, and
//! its tag is computed by the primary and checked by every member on the path of each
//! acknowledged write. Poly1305 costs a few instructions a byte (about 15x fewer than SHA-256 on
//! CPUs without SHA instructions); measured in `cargo xtask bench` (`core_cost`).
//!
//! The construction is the AEAD's tag with an empty plaintext: a one-time Poly1305 key, the first
//! 32 bytes of ChaCha20 block 0 under (key, nonce); Poly1305 over the associated data, zeros to a
//! multiple of 16 bytes, and the two lengths (associated data, plaintext = 0) as 64-bit
//! little-endian numbers. `tests/wire.rs` checks it against the `chacha20poly1305` crate.

use super::wire::{Dir, TAG_BYTES};

/// ChaCha20 and Poly1305, supplied by the caller: the kernel's crypto library in the module
/// (`rust/klib.rs`), the `chacha20` and `poly1305` crates in userspace (`mac.rs`). Poly1305 is
/// fed in pieces of any length, so a write's pages are read in place.
pub trait Poly1305: Sized {
    /// ChaCha20 block 0 (RFC 8439 §2.3, 20 rounds, block counter 0) of `key` and `nonce`.
    fn chacha20_block0(key: &[u8; 32], nonce: &[u8; 12]) -> [u8; 64];
    /// Starts Poly1305 under a one-time key.
    fn new(one_time_key: &[u8; 32]) -> Self;
    /// Feeds bytes.
    fn update(&mut self, bytes: &[u8]);
    /// The 16-byte tag.
    fn finish(self) -> [u8; 16];
}

/// The 12-byte AEAD nonce of the frame `seq` sent in direction `dir`: the direction's code, three
/// zero bytes, the sequence number (little-endian).
pub fn nonce(dir: Dir, seq: u64) -> [u8; 12] {
    let s = seq.to_le_bytes();
    [dir.code(), 0, 0, 0, s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]
}

/// The tag of one frame, fed in pieces.
pub struct FrameMac<P: Poly1305> {
    poly: P,
    /// Bytes of associated data fed so far.
    len: u64,
}

impl<P: Poly1305> FrameMac<P> {
    /// Starts the tag of the frame `seq` sent in direction `dir` under the session key `key`.
    pub fn new(key: &[u8; 32], dir: Dir, seq: u64) -> Self {
        let mut block = P::chacha20_block0(key, &nonce(dir, seq));
        let mut otk: [u8; 32] = block.first_chunk::<32>().copied().unwrap_or([0; 32]);
        let poly = P::new(&otk);
        // The one-time key is not left on the stack longer than needed.
        block.fill(0);
        otk.fill(0);
        core::hint::black_box((&block, &otk));
        FrameMac { poly, len: 0 }
    }

    /// Feeds associated data (the header, then the payload's pieces).
    pub fn update(&mut self, bytes: &[u8]) {
        self.len = self.len.saturating_add(bytes.len() as u64);
        self.poly.update(bytes);
    }

    /// The tag: the padding and the two lengths, then Poly1305's result.
    pub fn finish(mut self) -> [u8; TAG_BYTES] {
        // `len % 16` is below 16: the cast cannot truncate.
        let pad = (16 - (self.len % 16) as usize) % 16;
        self.poly.update(&[0u8; 16][..pad]);
        self.poly.update(&self.len.to_le_bytes());
        self.poly.update(&0u64.to_le_bytes());
        self.poly.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_differ_by_direction_and_sequence() {
        assert_ne!(nonce(Dir::ToServer, 1), nonce(Dir::ToClient, 1));
        assert_ne!(nonce(Dir::ToServer, 1), nonce(Dir::ToServer, 2));
        assert_eq!(nonce(Dir::ToServer, 0x0102)[4..6], [0x02, 0x01]);
    }
}

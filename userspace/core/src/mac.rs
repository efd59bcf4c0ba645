//! The peer protocol's MACs for userspace (feature `std`): HMAC-SHA256 from the `hmac` and `sha2`
//! crates behind [`session::Mac`](super::session::Mac) (the handshake), ChaCha20 and Poly1305
//! from the `chacha20` and `poly1305` crates behind
//! [`frame_mac::Poly1305`](super::frame_mac::Poly1305) (every later frame). The module uses the
//! kernel's crypto library instead (`rust/klib.rs`); this file is not compiled into it.

use hmac::Mac as _;

/// HMAC-SHA256 from the `hmac` and `sha2` crates.
pub struct HmacSha256(hmac::Hmac<sha2::Sha256>);

impl super::session::Mac for HmacSha256 {
    fn new(key: &[u8; 32]) -> Self {
        // HMAC takes a key of any length: this cannot fail.
        match hmac::Hmac::<sha2::Sha256>::new_from_slice(key) {
            Ok(m) => HmacSha256(m),
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes)
    }

    fn finish(self) -> [u8; 32] {
        self.0.finalize().into_bytes().into()
    }
}

/// ChaCha20 and Poly1305 from the `chacha20` and `poly1305` crates, for
/// [`frame_mac::Poly1305`](super::frame_mac::Poly1305).
pub struct ChaChaPoly {
    poly: poly1305::Poly1305,
    /// Bytes of an unfinished 16-byte block (the crate takes whole blocks until the last).
    buf: [u8; 16],
    used: usize,
}

impl super::frame_mac::Poly1305 for ChaChaPoly {
    fn chacha20_block0(key: &[u8; 32], nonce: &[u8; 12]) -> [u8; 64] {
        use chacha20::cipher::{KeyIvInit, StreamCipher};
        let mut block = [0u8; 64];
        chacha20::ChaCha20::new(key.into(), nonce.into()).apply_keystream(&mut block);
        block
    }

    fn new(one_time_key: &[u8; 32]) -> Self {
        use poly1305::universal_hash::KeyInit;
        ChaChaPoly { poly: poly1305::Poly1305::new(one_time_key.into()), buf: [0; 16], used: 0 }
    }

    fn update(&mut self, mut bytes: &[u8]) {
        use poly1305::universal_hash::UniversalHash;
        if self.used > 0 {
            let take = bytes.len().min(16 - self.used);
            self.buf[self.used..self.used + take].copy_from_slice(&bytes[..take]);
            self.used += take;
            bytes = &bytes[take..];
            if self.used < 16 {
                return;
            }
            self.poly.update(&[self.buf.into()]);
            self.used = 0;
        }
        let (blocks, rest) = bytes.split_at(bytes.len() - bytes.len() % 16);
        for b in blocks.chunks_exact(16) {
            let block: [u8; 16] = b.try_into().unwrap_or([0; 16]);
            self.poly.update(&[block.into()]);
        }
        self.buf[..rest.len()].copy_from_slice(rest);
        self.used = rest.len();
    }

    fn finish(self) -> [u8; 16] {
        // The last, partial block the standard way (1 appended, no zero padding).
        self.poly.compute_unpadded(&self.buf[..self.used]).into()
    }
}

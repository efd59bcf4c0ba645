//! HMAC-SHA256 for userspace (feature `std`): the `hmac` and `sha2` crates behind
//! [`session::Mac`](super::session::Mac). The module uses the kernel's crypto library instead
//! (`rust/klib.rs`); this file is not compiled into it.

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

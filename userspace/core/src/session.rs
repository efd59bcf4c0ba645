//! The authenticated session of a peer connection (Documentation/wire-protocol.md, "Frames"):
//! after the handshake, every frame carries a tag, ChaCha20-Poly1305 (`frame_mac.rs`) under the
//! session key with the frame's direction and per-direction sequence number as its nonce, over
//! the header (which carries that sequence number) and the payload. `seal` numbers and tags what
//! a side sends; `open` accepts only the other side's next frame, its tag checked in constant
//! time before the payload is decoded.

use super::frame_mac::{FrameMac, Poly1305};
use super::wire::{decode, payload_len_ok, Cmd, Dir, Header, Msg, WireError, HEADER_BYTES, TAG_BYTES};

/// HMAC-SHA256, supplied by the caller (the kernel's crypto library in the module, the `hmac`
/// and `sha2` crates in userspace), for the handshake's proofs and session key.
pub trait Mac: Sized {
    /// Starts a MAC under `key`.
    fn new(key: &[u8; 32]) -> Self;
    /// Feeds bytes.
    fn update(&mut self, bytes: &[u8]);
    /// The 32-byte result.
    fn finish(self) -> [u8; 32];
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    core::hint::black_box(diff) == 0
}

/// The tag of a frame: ChaCha20-Poly1305 (`frame_mac.rs`) under the session key, with the
/// frame's direction and sequence number as nonce, over the header and the payload.
pub fn frame_tag<'a, P: Poly1305>(
    key: &[u8; 32],
    dir: Dir,
    seq: u64,
    header: &[u8; HEADER_BYTES],
    payload: impl IntoIterator<Item = &'a [u8]>,
) -> [u8; TAG_BYTES] {
    let mut m = FrameMac::<P>::new(key, dir, seq);
    m.update(header);
    for p in payload {
        m.update(p);
    }
    m.finish()
}

/// One side of an authenticated connection: the session key and the next sequence number of
/// each direction. `seal` numbers and tags what this side sends; `open` accepts only the next
/// frame of the other side, with its tag right.
#[derive(Clone)]
pub struct Session {
    key: [u8; 32],
    send: Dir,
    next_send: u64,
    next_recv: u64,
}

impl core::fmt::Debug for Session {
    // The key is never printed.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Session")
            .field("send", &self.send)
            .field("next_send", &self.next_send)
            .field("next_recv", &self.next_recv)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session with key `key` for the side that sends in direction `send`.
    pub fn new(key: [u8; 32], send: Dir) -> Session {
        Session { key, send, next_send: 1, next_recv: 1 }
    }

    fn recv_dir(&self) -> Dir {
        match self.send {
            Dir::ToServer => Dir::ToClient,
            Dir::ToClient => Dir::ToServer,
        }
    }

    /// The header for the next frame this side sends (its sequence number taken) and the tag
    /// over it and `payload` ([`Session::seal_fed`] with the pieces of `payload`, which must
    /// add up to `payload_len`).
    pub fn seal<'a, P: Poly1305>(
        &mut self,
        cmd: Cmd,
        volume: u32,
        payload_len: usize,
        payload: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<([u8; HEADER_BYTES], [u8; TAG_BYTES]), WireError> {
        self.seal_fed::<P>(cmd, volume, payload_len, |feed| {
            for p in payload {
                feed(p);
            }
        })
    }

    /// The header for the next frame this side sends and its tag, for a payload fed in pieces by
    /// `feed` (a write's data, read in place from its pages). The pieces must add up to
    /// `payload_len`, else nothing is sealed and the sequence number is not taken.
    pub fn seal_fed<P: Poly1305>(
        &mut self,
        cmd: Cmd,
        volume: u32,
        payload_len: usize,
        feed: impl FnOnce(&mut dyn FnMut(&[u8])),
    ) -> Result<([u8; HEADER_BYTES], [u8; TAG_BYTES]), WireError> {
        let len = u32::try_from(payload_len).map_err(|_| WireError::BadLength)?;
        if !payload_len_ok(cmd, len) || cmd.is_handshake() {
            return Err(WireError::BadLength);
        }
        let seq = self.next_send;
        let next = seq.checked_add(1).ok_or(WireError::BadSequence)?;
        let header = Header { cmd, len, volume, seq }.to_bytes();
        let mut m = FrameMac::<P>::new(&self.key, self.send, seq);
        m.update(&header);
        let mut fed = 0usize;
        feed(&mut |p: &[u8]| {
            fed = fed.saturating_add(p.len());
            m.update(p);
        });
        // The caller must feed exactly the payload the header announces.
        if fed != payload_len {
            return Err(WireError::BadLength);
        }
        self.next_send = next;
        Ok((header, m.finish()))
    }

    /// Checks a received frame: its header must be the next of the other side's sequence and its
    /// tag must verify over the header and `payload`. Only then is the payload decoded. A
    /// failure leaves the sequence where it was (the caller drops the connection).
    pub fn open<'a, P: Poly1305>(
        &mut self,
        header: &[u8; HEADER_BYTES],
        payload: &'a [u8],
        tag: &[u8; TAG_BYTES],
    ) -> Result<(Header, Msg<'a>), WireError> {
        let h = Header::decode(header)?;
        if h.cmd.is_handshake() {
            return Err(WireError::Inconsistent("a handshake message after the handshake"));
        }
        if h.seq != self.next_recv {
            return Err(WireError::BadSequence);
        }
        let want = frame_tag::<P>(&self.key, self.recv_dir(), h.seq, header, [payload]);
        if !ct_eq(&want, tag) {
            return Err(WireError::BadTag);
        }
        let msg = decode(&h, payload)?;
        self.next_recv = self.next_recv.checked_add(1).ok_or(WireError::BadSequence)?;
        Ok((h, msg))
    }

    /// The sequence number the next received frame must carry.
    pub fn next_recv(&self) -> u64 {
        self.next_recv
    }
}

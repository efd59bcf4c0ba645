//! Fuzz target for the peer wire protocol: whatever bytes arrive on a peer connection, the frame
//! decoder, the session's check and the handshake's checks never panic; an accepted header has
//! the exact length of its command; a frame accepted by a session was sealed under its key (the
//! fuzzer cannot forge one); a frame sealed from the input opens once, and with one bit flipped
//! never. Run with `cargo xtask fuzz --target wire`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerflash_core::handshake::*;
use peerflash_core::mac::{ChaChaPoly, HmacSha256};
use peerflash_core::session::*;
use peerflash_core::wire::*;

const ME: Identity = Identity { cluster: *b"fuzz-cluster-id!", host: 2, secret: [0x5a; 32] };

fuzz_target!(|data: &[u8]| {
    // A frame as the receiver reads it: header, then payload, then tag.
    if let Ok(h) = Header::decode(data) {
        assert!(payload_len_ok(h.cmd, h.len));
        let end = HEADER_BYTES + h.len as usize;
        if let (Some(payload), Some(tag)) = (data.get(HEADER_BYTES..end), data.get(end..end + TAG_BYTES)) {
            if let Ok(m) = decode(&h, payload) {
                assert_eq!(m.cmd(), h.cmd);
                assert_eq!(m.payload_len(), payload.len());
                // A handshake message as the server's first check sees it.
                if let Msg::Hello(hello) = m {
                    let _ = check_hello(&ME, &hello, |id| (id == 1).then_some(1u32), &1u32, None);
                    let _ = welcome::<HmacSha256>(&ME, &hello, [1; 32]).map(|(_, p)| p.on_auth::<HmacSha256>(&[0; 32]));
                }
            }
            let header: [u8; HEADER_BYTES] = data[..HEADER_BYTES].try_into().expect("checked length");
            let tag: [u8; TAG_BYTES] = tag.try_into().expect("checked length");
            let mut s = Session::new([0x11; 32], Dir::ToClient);
            // Unforgeable: an input frame passes only if it carries the true tag, which the fuzzer
            // can only find by computing ChaCha20-Poly1305 under the key.
            if s.open::<ChaChaPoly>(&header, payload, &tag).is_ok() {
                assert_eq!(frame_tag::<ChaChaPoly>(&[0x11; 32], Dir::ToServer, 1, &header, [payload]), tag);
            }
        }
    }
    sealed_round_trip(data);
});

/// Seals a WRITE carrying the input as data (whole sectors), opens it, then flips one bit chosen
/// by the input and checks the frame is refused.
fn sealed_round_trip(data: &[u8]) {
    let sectors = (data.len() / 512).clamp(1, 8);
    let mut body = data.to_vec();
    body.resize(sectors * 512, 0);
    let serial = data.get(..8).map_or(1, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])).max(1));
    let w = WriteHead { serial, lba: 8, sectors: sectors as u32, flags: 0 };
    let m = Msg::Write(w, &body);
    let mut payload = vec![0u8; m.payload_len()];
    let n = m.encode_payload(&mut payload).expect("sized buffer");
    payload[n..].copy_from_slice(&body);
    let mut tx = Session::new([0x22; 32], Dir::ToServer);
    let (header, tag) = tx.seal::<ChaChaPoly>(Cmd::Write, 1, payload.len(), [&payload[..]]).expect("valid write");
    let mut frame = [&header[..], &payload, &tag].concat();
    let mut rx = Session::new([0x22; 32], Dir::ToClient);
    let bit = data.get(8..16).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))) as usize % (frame.len() * 8);
    frame[bit / 8] ^= 1 << (bit % 8);
    let open = |rx: &mut Session, f: &[u8]| {
        let h: [u8; HEADER_BYTES] = f[..HEADER_BYTES].try_into().expect("length");
        let p = &f[HEADER_BYTES..f.len() - TAG_BYTES];
        let t: [u8; TAG_BYTES] = f[f.len() - TAG_BYTES..].try_into().expect("length");
        rx.open::<ChaChaPoly>(&h, p, &t).is_ok()
    };
    assert!(!open(&mut rx, &frame), "a write with bit {bit} flipped was accepted");
    frame[bit / 8] ^= 1 << (bit % 8);
    assert!(open(&mut rx, &frame), "the genuine write was refused");
}

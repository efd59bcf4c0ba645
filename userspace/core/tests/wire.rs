//! The wire protocol and the handshake: every message round-trips, any flipped bit of a sealed
//! frame is refused, a replayed, reordered or reflected frame is refused, no input panics, and
//! the handshake refuses a wrong secret, an unknown host, a wrong address, a replayed handshake
//! and a reflected proof.

use hmac::{Hmac, Mac as _};
use peerflash_core::handshake::*;
use peerflash_core::mac::{ChaChaPoly, HmacSha256};
use peerflash_core::session::*;
use peerflash_core::wire::*;
use proptest::prelude::*;

/// The adapter is HMAC-SHA256 fed in pieces: the same as the crates' one-shot use.
#[test]
fn mac_adapter_is_hmac_sha256() {
    let key = [0x0bu8; 32];
    let mut m = <HmacSha256 as Mac>::new(&key);
    Mac::update(&mut m, b"Hi ");
    Mac::update(&mut m, b"There");
    let mut one = <Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&key).unwrap();
    one.update(b"Hi There");
    assert_eq!(Mac::finish(m), <[u8; 32]>::from(one.finalize().into_bytes()));
}

proptest! {
    /// A frame's tag, fed in pieces of any size, is the RFC 8439 AEAD tag (the
    /// `chacha20poly1305` crate's) with the header and payload as associated data, nothing
    /// encrypted, and the frame's direction and sequence number as nonce.
    #[test]
    fn frame_tag_is_chacha20_poly1305(key in any::<[u8; 32]>(), seq in any::<u64>(), to_client in any::<bool>(),
                                      header in any::<[u8; HEADER_BYTES]>(), payload in proptest::collection::vec(any::<u8>(), 0..5000),
                                      cuts in proptest::collection::vec(0usize..5000, 0..6)) {
        use chacha20poly1305::aead::{AeadInPlace, KeyInit};
        let dir = if to_client { Dir::ToClient } else { Dir::ToServer };
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(payload.len())).collect();
        cuts.sort();
        let mut pieces = Vec::new();
        let mut at = 0;
        for c in cuts.into_iter().chain([payload.len()]) {
            pieces.push(&payload[at..c]);
            at = c;
        }
        let got = frame_tag::<ChaChaPoly>(&key, dir, seq, &header, pieces);
        let aad = [&header[..], &payload[..]].concat();
        let cipher = chacha20poly1305::ChaCha20Poly1305::new(&key.into());
        let nonce = peerflash_core::frame_mac::nonce(dir, seq);
        let want = cipher.encrypt_in_place_detached(&nonce.into(), &aad, &mut []).unwrap();
        prop_assert_eq!(got, <[u8; 16]>::from(want));
    }
}

/// An owned message, so proptest can generate it (a WRITE's data is a Vec).
#[derive(Debug, Clone)]
enum Owned {
    Fixed(Msg<'static>),
    Write(WriteHead, Vec<u8>),
}

impl Owned {
    fn msg(&self) -> Msg<'_> {
        match self {
            Owned::Fixed(m) => *m,
            Owned::Write(w, d) => Msg::Write(*w, d),
        }
    }
}

fn errno() -> impl Strategy<Value = i32> {
    -4095i32..0
}

fn message() -> impl Strategy<Value = Owned> {
    let u = any::<[u8; 16]>();
    prop_oneof![
        (any::<[u8; 16]>(), any::<u32>(), prop_oneof![Just(512u32), Just(4096u32)], any::<u64>(), any::<u64>(), any::<u64>(), any::<[u8; 32]>())
            .prop_map(|(uuid, owner, block_size, gen, epoch, region_bytes, name)| Owned::Fixed(Msg::Attach(Attach { uuid, owner, block_size, gen, epoch, region_bytes, name, sectors: region_bytes.rotate_left(7) }))),
        (u, any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>())
            .prop_map(|(uuid, gen, contiguous, checkpoint, credit)| Owned::Fixed(Msg::AttachOk(AttachOk { uuid, gen, contiguous, checkpoint, credit }))),
        (u, errno()).prop_map(|(uuid, errno)| Owned::Fixed(Msg::AttachRefuse(AttachRefuse { uuid, errno }))),
        (1u64.., any::<u64>(), 1u32..9, any::<bool>(), any::<u8>()).prop_map(|(serial, lba, sectors, fua, fill)| {
            let lba = lba % (u64::MAX - 16);
            Owned::Write(WriteHead { serial, lba, sectors, flags: if fua { WRITE_FUA } else { 0 } }, vec![fill; sectors as usize * 512])
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(serial, credit)| Owned::Fixed(Msg::WriteAck { serial, credit })),
        (any::<u64>(), errno()).prop_map(|(serial, errno)| Owned::Fixed(Msg::WriteNack { serial, errno })),
        any::<u64>().prop_map(|id| Owned::Fixed(Msg::Flush { id })),
        (any::<u64>(), prop_oneof![Just(0), errno()]).prop_map(|(id, errno)| Owned::Fixed(Msg::FlushAck { id, errno })),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(gen, epoch, serial)| Owned::Fixed(Msg::Checkpoint { gen, epoch, serial })),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(gen, epoch, serial)| Owned::Fixed(Msg::CheckpointAck { gen, epoch, serial })),
        any::<u64>().prop_map(|stamp| Owned::Fixed(Msg::Ping { stamp })),
        any::<u64>().prop_map(|stamp| Owned::Fixed(Msg::PingAck { stamp })),
        (u, any::<u64>()).prop_map(|(uuid, gen)| Owned::Fixed(Msg::Detach { uuid, gen })),
    ]
}

/// The bytes of a frame as a sender puts them on the wire: header, payload, tag.
fn seal(s: &mut Session, m: &Msg<'_>, volume: u32) -> Vec<u8> {
    let mut payload = vec![0u8; m.payload_len()];
    let fixed = m.encode_payload(&mut payload).expect("buffer of payload_len");
    if let Msg::Write(_, data) = m {
        payload[fixed..].copy_from_slice(data);
    }
    let (h, tag) = s.seal::<ChaChaPoly>(m.cmd(), volume, payload.len(), [&payload[..]]).expect("a valid message seals");
    [&h[..], &payload, &tag].concat()
}

/// What a receiver does with the bytes of one frame.
fn open<'a>(s: &mut Session, frame: &'a [u8]) -> Result<(Header, Msg<'a>), WireError> {
    let h: [u8; HEADER_BYTES] = frame.get(..HEADER_BYTES).ok_or(WireError::Short)?.try_into().unwrap();
    let len = Header::decode(&h)?.len as usize;
    let payload = frame.get(HEADER_BYTES..HEADER_BYTES + len).ok_or(WireError::Short)?;
    let tag: [u8; TAG_BYTES] = frame.get(HEADER_BYTES + len..).ok_or(WireError::Short)?.try_into().map_err(|_| WireError::Short)?;
    s.open::<ChaChaPoly>(&h, payload, &tag)
}

fn pair(key: [u8; 32]) -> (Session, Session) {
    (Session::new(key, Dir::ToServer), Session::new(key, Dir::ToClient))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every message decodes to itself, in order, over a session.
    #[test]
    fn messages_round_trip(msgs in proptest::collection::vec(message(), 1..6), key: [u8; 32], volume: u32) {
        let (mut client, mut server) = pair(key);
        for (i, m) in msgs.iter().enumerate() {
            let frame = seal(&mut client, &m.msg(), volume);
            let (h, back) = open(&mut server, &frame).expect("a sealed frame opens");
            prop_assert_eq!(h.seq, i as u64 + 1);
            prop_assert_eq!(h.volume, volume);
            prop_assert_eq!(back, m.msg());
        }
    }

    /// A payload fed in pieces (a write's pages, `seal_fed`) gets the header and tag `seal`
    /// gives the same bytes, and a feed of another length is refused without using a sequence.
    #[test]
    fn fed_seal_is_the_seal(sectors in 1u32..6, fill: u8, cut: usize, key: [u8; 32], short in 1usize..4) {
        let data: Vec<u8> = (0..sectors as usize * 512).map(|i| (i as u8) ^ fill).collect();
        let head = WriteHead { serial: 5, lba: 8, sectors, flags: 0 };
        let mut fixed = [0u8; WRITE_FIXED_BYTES];
        let m = Msg::Write(head, &[]);
        m.encode_payload(&mut fixed).unwrap();
        let payload = [&fixed[..], &data].concat();
        let (mut a, mut b) = (Session::new(key, Dir::ToServer), Session::new(key, Dir::ToServer));
        let want = a.seal::<ChaChaPoly>(Cmd::Write, 3, payload.len(), [&payload[..]]);
        let cut = cut % (payload.len() + 1);
        let too_short = b.seal_fed::<ChaChaPoly>(Cmd::Write, 3, payload.len(), |f| f(&payload[..payload.len().saturating_sub(short)]));
        prop_assert!(too_short.is_err());
        prop_assert!(want.is_ok());
        let got = b.seal_fed::<ChaChaPoly>(Cmd::Write, 3, payload.len(), |f| {
            f(&payload[..cut]);
            f(&payload[cut..]);
        });
        prop_assert_eq!(want, got);
    }

    /// Flipping any one bit of a sealed frame gets it refused (nothing is decoded from it), and
    /// the session still accepts the genuine frame afterwards.
    #[test]
    fn any_flipped_bit_is_refused(m in message(), key: [u8; 32], bit: usize) {
        let (mut client, mut server) = pair(key);
        let frame = seal(&mut client, &m.msg(), 7);
        let mut bad = frame.clone();
        let bit = bit % (bad.len() * 8);
        bad[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(open(&mut server, &bad).is_err(), "bit {} flipped was accepted", bit);
        prop_assert!(open(&mut server, &frame).is_ok());
    }

    /// A frame is accepted once, in order, by the other side only: a replay, a frame from later
    /// in the sequence, a frame sent back to its sender and a frame under another key are refused.
    #[test]
    fn replay_reorder_reflection_and_foreign_keys_are_refused(a in message(), b in message(), key: [u8; 32], other: [u8; 32]) {
        let (mut client, mut server) = pair(key);
        let first = seal(&mut client, &a.msg(), 1);
        let second = seal(&mut client, &b.msg(), 1);
        prop_assert_eq!(open(&mut server, &second).err(), Some(WireError::BadSequence));
        prop_assert!(open(&mut server, &first).is_ok());
        prop_assert_eq!(open(&mut server, &first).err(), Some(WireError::BadSequence));
        // Reflected: the client's own frame handed back to it (its receive sequence is at 1).
        prop_assert_eq!(open(&mut client, &first).err(), Some(WireError::BadTag));
        if other != key {
            let (mut foreign, _) = pair(other);
            let _ = seal(&mut foreign, &a.msg(), 1);
            let forged = seal(&mut foreign, &b.msg(), 1);
            prop_assert_eq!(open(&mut server, &forged).err(), Some(WireError::BadTag));
        }
        prop_assert!(open(&mut server, &second).is_ok());
    }

    /// No input makes the decoders panic; whatever a header accepts has the exact length its
    /// command allows, and a payload that decodes re-encodes to the same bytes.
    #[test]
    fn no_input_panics(bytes in proptest::collection::vec(any::<u8>(), 0..700), key: [u8; 32]) {
        if let Ok(h) = Header::decode(&bytes) {
            prop_assert!(payload_len_ok(h.cmd, h.len));
            prop_assert_eq!(&h.to_bytes()[..], &bytes[..HEADER_BYTES]);
            let payload = &bytes[HEADER_BYTES..];
            if let Some(p) = payload.get(..h.len as usize) {
                if let Ok(m) = decode(&h, p) {
                    let mut again = vec![0u8; m.payload_len()];
                    let n = m.encode_payload(&mut again).unwrap();
                    if let Msg::Write(_, d) = m { again[n..].copy_from_slice(d); }
                    prop_assert_eq!(&again[..], p);
                }
            }
        }
        let (_, mut server) = pair(key);
        let _ = open(&mut server, &bytes);
    }

    /// A valid header with any other command byte, version, flag or reserved byte is refused.
    #[test]
    fn header_fields_are_checked(m in message(), at in 4usize..32, v: u8) {
        let mut payload = vec![0u8; m.msg().payload_len()];
        m.msg().encode_payload(&mut payload).unwrap();
        let h = Header { cmd: m.msg().cmd(), len: payload.len() as u32, volume: 3, seq: 9 }.to_bytes();
        prop_assert!(Header::decode(&h).is_ok());
        let mut bad = h;
        bad[at] = v;
        // Another command of the same length is a valid header (its tag then fails).
        let same_len = at == 5 && Cmd::from_code(v).is_some_and(|c| payload_len_ok(c, payload.len() as u32));
        if bad != h && !(8..24).contains(&at) && !same_len {
            prop_assert!(Header::decode(&bad).is_err(), "byte {} = {} accepted", at, v);
        }
    }
}

/// Lengths: each command accepts only its own, and WRITE only whole sectors up to the bound.
#[test]
fn lengths_are_exact() {
    for cmd in Cmd::ALL {
        let fixed = cmd.fixed_len();
        for len in [0u32, 8, 16, 24, 40, 48, 56, 76, 80, 536, 24 + 512, 24 + 2048 * 512, 24 + 2049 * 512, u32::MAX] {
            let ok = payload_len_ok(cmd, len);
            match fixed {
                Some(n) => assert_eq!(ok, len as usize == n, "{cmd:?} {len}"),
                None => assert_eq!(ok, len == 24 + 512 || len == 24 + 2048 * 512, "{cmd:?} {len}"),
            }
        }
    }
    assert_eq!(MAX_PAYLOAD, 24 + 2048 * 512);
    // Handshake frames cannot be sealed, and later frames that claim to be one are refused.
    let (mut c, _) = pair([1; 32]);
    assert!(c.seal::<ChaChaPoly>(Cmd::Auth, 0, 32, [&[0u8; 32][..]]).is_err());
}

#[test]
fn ct_eq_compares() {
    assert!(ct_eq(b"abc", b"abc"));
    assert!(!ct_eq(b"abc", b"abd"));
    assert!(!ct_eq(b"abc", b"ab"));
    assert!(ct_eq(b"", b""));
}

const CLUSTER: [u8; 16] = *b"cluster-0000test";

fn host(id: u32, secret: [u8; 32]) -> Identity {
    Identity { cluster: CLUSTER, host: id, secret }
}

/// The test cluster: host id -> address.
fn address_of(id: u32) -> Option<&'static str> {
    match id {
        1 => Some("10.0.0.1"),
        2 => Some("10.0.0.2"),
        3 => Some("10.0.0.3"),
        _ => None,
    }
}

/// A whole handshake: the client's result and the server's.
fn handshake(client: &Identity, server: &Identity, from: &'static str, nc: [u8; 32], ns: [u8; 32]) -> Result<([u8; 32], [u8; 32]), HandshakeError> {
    let h = hello(client, server.host, Role::Data, nc);
    check_hello(server, &h, address_of, &from, Some(Role::Data))?;
    let (w, pending) = welcome::<HmacSha256>(server, &h, ns)?;
    let (proof, kc) = on_welcome::<HmacSha256>(client, &h, &w)?;
    let ks = pending.on_auth::<HmacSha256>(&proof)?;
    Ok((kc, ks))
}

#[test]
fn handshake_agrees_on_a_key_bound_to_everything() {
    let k = [7u8; 32];
    let (kc, ks) = handshake(&host(1, k), &host(2, k), "10.0.0.1", [1; 32], [2; 32]).unwrap();
    assert_eq!(kc, ks);
    // Another nonce, another key.
    let (kc2, _) = handshake(&host(1, k), &host(2, k), "10.0.0.1", [1; 32], [3; 32]).unwrap();
    assert_ne!(kc, kc2);
    // Another role, another key.
    let t1 = Transcript::new(&CLUSTER, 1, 2, Role::Data, 1, 0, &[1; 32], &[2; 32]);
    let t2 = Transcript::new(&CLUSTER, 1, 2, Role::Control, 1, 0, &[1; 32], &[2; 32]);
    assert_ne!(t1.session_key::<HmacSha256>(&k), t2.session_key::<HmacSha256>(&k));
    assert_ne!(t1.server_proof::<HmacSha256>(&k), t1.client_proof::<HmacSha256>(&k));
}

#[test]
fn handshake_refuses_strangers_and_wrong_secrets() {
    let k = [7u8; 32];
    let n = ([1; 32], [2; 32]);
    // A wrong secret on either side: the client sees the server's proof fail, or the server the client's.
    assert_eq!(handshake(&host(1, [8; 32]), &host(2, k), "10.0.0.1", n.0, n.1), Err(HandshakeError::BadProof));
    assert_eq!(handshake(&host(1, k), &host(2, [8; 32]), "10.0.0.1", n.0, n.1), Err(HandshakeError::BadProof));
    // An unknown host, a known id from the wrong address, itself, another cluster, another target.
    assert_eq!(handshake(&host(9, k), &host(2, k), "10.0.0.9", n.0, n.1), Err(HandshakeError::UnknownHost));
    assert_eq!(handshake(&host(3, k), &host(2, k), "10.0.0.1", n.0, n.1), Err(HandshakeError::WrongAddress));
    assert_eq!(handshake(&host(2, k), &host(2, k), "10.0.0.2", n.0, n.1), Err(HandshakeError::SelfConnect));
    let other = Identity { cluster: [0; 16], ..host(1, k) };
    assert_eq!(handshake(&other, &host(2, k), "10.0.0.1", n.0, n.1), Err(HandshakeError::WrongCluster));
    let h = hello(&host(1, k), 3, Role::Data, n.0);
    assert_eq!(check_hello(&host(2, k), &h, address_of, &"10.0.0.1", None), Err(HandshakeError::NotForMe));
    let h = hello(&host(1, k), 2, Role::Control, n.0);
    assert_eq!(check_hello(&host(2, k), &h, address_of, &"10.0.0.1", Some(Role::Data)), Err(HandshakeError::WrongRole));
    // A peer that speaks only newer versions, or only older ones (version 1: HMAC-SHA256 tags).
    let mut h = hello(&host(1, k), 2, Role::Data, n.0);
    (h.min_version, h.max_version) = (VERSION + 1, VERSION + 4);
    assert_eq!(check_hello(&host(2, k), &h, address_of, &"10.0.0.1", None), Err(HandshakeError::NoCommonVersion));
    (h.min_version, h.max_version) = (1, MIN_VERSION - 1);
    assert_eq!(check_hello(&host(2, k), &h, address_of, &"10.0.0.1", None), Err(HandshakeError::NoCommonVersion));
}

#[test]
fn replayed_and_reflected_handshakes_are_refused() {
    let k = [7u8; 32];
    let (client, server) = (host(1, k), host(2, k));
    // A recorded handshake (HELLO and AUTH) replayed against a server whose nonce is new.
    let h = hello(&client, 2, Role::Data, [1; 32]);
    let (w, _) = welcome::<HmacSha256>(&server, &h, [2; 32]).unwrap();
    let (recorded_auth, _) = on_welcome::<HmacSha256>(&client, &h, &w).unwrap();
    let (_, pending) = welcome::<HmacSha256>(&server, &h, [3; 32]).unwrap();
    assert_eq!(pending.on_auth::<HmacSha256>(&recorded_auth), Err(HandshakeError::BadProof));
    // The server's proof reflected back as the client's AUTH.
    let (w, pending) = welcome::<HmacSha256>(&server, &h, [4; 32]).unwrap();
    assert_eq!(pending.on_auth::<HmacSha256>(&w.proof), Err(HandshakeError::BadProof));
    // A "server" that echoes the client's nonce (a reflected challenge) is refused by the client,
    // and a server never answers with the client's nonce.
    let (mut echoed, _) = welcome::<HmacSha256>(&server, &h, [5; 32]).unwrap();
    echoed.nonce = h.nonce;
    assert_eq!(on_welcome::<HmacSha256>(&client, &h, &echoed).err(), Some(HandshakeError::EchoedNonce));
    assert_eq!(welcome::<HmacSha256>(&server, &h, h.nonce).err(), Some(HandshakeError::EchoedNonce));
    // A WELCOME choosing features the client did not offer.
    let (mut w, _) = welcome::<HmacSha256>(&server, &h, [6; 32]).unwrap();
    w.features = 1;
    assert_eq!(on_welcome::<HmacSha256>(&client, &h, &w).err(), Some(HandshakeError::UnknownFeatures));
}

#[test]
fn handshake_frames_round_trip() {
    let k = [7u8; 32];
    let h = hello(&host(1, k), 2, Role::Control, [9; 32]);
    let (w, _) = welcome::<HmacSha256>(&host(2, k), &h, [8; 32]).unwrap();
    for m in [Msg::Hello(h), Msg::Welcome(w), Msg::Auth([5; 32])] {
        let mut p = vec![0u8; m.payload_len()];
        m.encode_payload(&mut p).unwrap();
        let hd = Header::decode(&Header { cmd: m.cmd(), len: p.len() as u32, volume: 0, seq: 0 }.to_bytes()).unwrap();
        assert_eq!(decode(&hd, &p).unwrap(), m);
    }
}

#[test]
fn secrets_parse_from_hex_only() {
    let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
    let s = parse_secret(format!("  {hex}\n").as_bytes()).unwrap();
    assert_eq!(s[1], 0x11);
    assert_eq!(s[31], 0xff);
    assert!(parse_secret(&hex.as_bytes()[..62]).is_none());
    assert!(parse_secret(format!("{hex}00").as_bytes()).is_none());
    assert!(parse_secret(hex.replace('a', "g").as_bytes()).is_none());
    assert!(parse_secret(&[b'0'; 64]).is_none());
    // The identity never prints its secret.
    let id = host(1, s);
    assert!(!format!("{id:?}").contains("17"));
}

#[test]
fn endpoints_and_host_tables_parse() {
    use peerflash_core::hosts::*;
    let e = Endpoint::parse(b" 10.0.0.1:7790\n").unwrap();
    assert_eq!((e.ip, e.port), ([10, 0, 0, 1], 7790));
    assert_eq!(e.to_string(), "10.0.0.1:7790");
    for bad in ["10.0.0.1", "10.0.0.1:0", "10.0.0.1:65536", "10.0.0:1", "10.0.0.1.2:1", "256.0.0.1:1", "a.b.c.d:1", ":1", "10.0.0.1:-1", "10..0.1:1"] {
        assert_eq!(Endpoint::parse(bad.as_bytes()), Err(HostsError::BadEndpoint), "{bad}");
    }
    let t = HostTable::parse(b"1 10.0.0.1:7790\n\n2 10.0.0.2:7790\n3\t10.0.0.3:7791\n").unwrap();
    assert_eq!(t.hosts().len(), 3);
    assert_eq!(t.address(3), Some([10, 0, 0, 3]));
    assert_eq!(t.endpoint(3).unwrap().port, 7791);
    assert_eq!(t.endpoint(4), None);
    assert_eq!(HostTable::parse(b"1 10.0.0.1:1\n1 10.0.0.2:1"), Err(HostsError::Duplicate));
    assert_eq!(HostTable::parse(b"1 10.0.0.1:1\n2 10.0.0.1:1"), Err(HostsError::Duplicate));
    assert_eq!(HostTable::parse(b"0 10.0.0.1:1"), Err(HostsError::BadLine));
    assert_eq!(HostTable::parse(b"10.0.0.1:1"), Err(HostsError::BadLine));
    let many: String = (1..=33).map(|i| format!("{i} 10.0.1.{i}:1\n")).collect();
    assert_eq!(HostTable::parse(many.as_bytes()), Err(HostsError::TooMany));
    assert!(HostTable::parse(b"").unwrap().hosts().is_empty());
}

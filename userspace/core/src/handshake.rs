//! The handshake of a peer connection (Documentation/wire-protocol.md, "Handshake"): mutual
//! challenge-response over the cluster secret, bound to both host ids, the connection's role,
//! the version and features chosen and both nonces.
//!
//! ```text
//! client (dials)                               server (listens)
//!   HELLO{role, versions, features, cluster, from, to, Nc}  ->
//!                                   checks cluster, to == itself, from known at this address
//!   <-  WELCOME{version, features, Ns, Ps = HMAC(K, "pf1 srv" | T)}
//! checks Ps (the server knows K), Ns != Nc
//!   AUTH{Pc = HMAC(K, "pf1 cli" | T)}  ->
//!                                                                checks Pc
//! both: session key Ks = HMAC(K, "pf1 sess" | T); every later frame is tagged under Ks
//! ```
//!
//! `T` is the transcript ([`Transcript`]). The labels differ per side, so a proof reflected to
//! its author never verifies; both nonces are fresh per connection, so a recorded handshake
//! replayed later never does. The server allocates nothing for a connection before its HELLO
//! passed [`check_hello`] (the caller rate-limits the failures).

use super::session::{ct_eq, Mac};
use super::wire::{Hello, Role, Welcome, FEATURES_KNOWN, MIN_VERSION, NONCE_BYTES, VERSION};

/// Bytes of the cluster secret (the configuration's secret file holds them as 64 hex digits).
pub const SECRET_BYTES: usize = 32;

/// Why a handshake failed. The connection is closed; nothing else happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// The HELLO names another cluster.
    WrongCluster,
    /// The HELLO is meant for another host id.
    NotForMe,
    /// The claimed host id is not in the cluster's host table.
    UnknownHost,
    /// The claimed host id is known, but not at the address the connection comes from.
    WrongAddress,
    /// The claimed host id is the server's own.
    SelfConnect,
    /// The HELLO's role is not the one this connection slot expects.
    WrongRole,
    /// No version in common, or a version the client did not offer.
    NoCommonVersion,
    /// Feature bits the other side did not offer.
    UnknownFeatures,
    /// The peer's nonce is the one this side sent (a reflected challenge).
    EchoedNonce,
    /// The proof does not verify: a wrong secret, a replayed or forged handshake.
    BadProof,
}

impl HandshakeError {
    /// A message for the log (never contains the secret or a proof).
    pub fn describe(&self) -> &'static str {
        match self {
            HandshakeError::WrongCluster => "a host of another cluster",
            HandshakeError::NotForMe => "a connection meant for another host id",
            HandshakeError::UnknownHost => "a host id that is not in the cluster",
            HandshakeError::WrongAddress => "a known host id from an address that is not its own",
            HandshakeError::SelfConnect => "a connection claiming this host's own id",
            HandshakeError::WrongRole => "a connection of an unexpected role",
            HandshakeError::NoCommonVersion => "no protocol version in common",
            HandshakeError::UnknownFeatures => "feature bits that were not offered",
            HandshakeError::EchoedNonce => "the peer echoed this side's nonce (a reflection)",
            HandshakeError::BadProof => "the peer's proof does not verify (wrong secret or replay)",
        }
    }
}

/// What a host knows of itself for a handshake.
#[derive(Clone, Copy)]
pub struct Identity {
    /// The cluster's id.
    pub cluster: [u8; 16],
    /// This host's id.
    pub host: u32,
    /// The cluster secret.
    pub secret: [u8; SECRET_BYTES],
}

impl core::fmt::Debug for Identity {
    // The secret is never printed.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Identity").field("host", &self.host).finish_non_exhaustive()
    }
}

/// Bytes of a transcript.
pub const TRANSCRIPT_BYTES: usize = 8 + 16 + 4 + 4 + 1 + 1 + 8 + 2 * NONCE_BYTES;

/// Everything both proofs and the session key are bound to.
pub struct Transcript(pub [u8; TRANSCRIPT_BYTES]);

impl Transcript {
    /// The transcript of a connection from `client` to `server`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cluster: &[u8; 16],
        client: u32,
        server: u32,
        role: Role,
        version: u8,
        features: u64,
        client_nonce: &[u8; NONCE_BYTES],
        server_nonce: &[u8; NONCE_BYTES],
    ) -> Transcript {
        let mut t = [0u8; TRANSCRIPT_BYTES];
        let parts: [&[u8]; 9] = [
            b"pfnw-v1\0",
            cluster,
            &client.to_le_bytes(),
            &server.to_le_bytes(),
            &[role.code()],
            &[version],
            &features.to_le_bytes(),
            client_nonce,
            server_nonce,
        ];
        let mut at = 0;
        for p in parts {
            if let Some(dst) = t.get_mut(at..at + p.len()) {
                dst.copy_from_slice(p);
            }
            at += p.len();
        }
        Transcript(t)
    }

    fn mac<M: Mac>(&self, secret: &[u8; SECRET_BYTES], label: &[u8]) -> [u8; 32] {
        let mut m = M::new(secret);
        m.update(label);
        m.update(&self.0);
        m.finish()
    }

    /// The server's proof.
    pub fn server_proof<M: Mac>(&self, secret: &[u8; SECRET_BYTES]) -> [u8; 32] {
        self.mac::<M>(secret, b"pf1 srv")
    }

    /// The client's proof.
    pub fn client_proof<M: Mac>(&self, secret: &[u8; SECRET_BYTES]) -> [u8; 32] {
        self.mac::<M>(secret, b"pf1 cli")
    }

    /// The session key both sides tag every later frame with.
    pub fn session_key<M: Mac>(&self, secret: &[u8; SECRET_BYTES]) -> [u8; 32] {
        self.mac::<M>(secret, b"pf1 sess")
    }
}

/// The client's HELLO for a connection of `role` to host `to`.
pub fn hello(me: &Identity, to: u32, role: Role, nonce: [u8; NONCE_BYTES]) -> Hello {
    Hello {
        role,
        min_version: MIN_VERSION,
        max_version: VERSION,
        features: FEATURES_KNOWN,
        cluster: me.cluster,
        from: me.host,
        to,
        nonce,
    }
}

/// The server's first check of a HELLO, before anything is allocated for the connection.
/// `address_of(id)` gives the configured address of a host id (`None`: not in the cluster);
/// `from` is the address the connection comes from; `role` the role the server expects, if any.
pub fn check_hello<A: PartialEq>(
    me: &Identity,
    h: &Hello,
    address_of: impl Fn(u32) -> Option<A>,
    from: &A,
    role: Option<Role>,
) -> Result<(), HandshakeError> {
    if !ct_eq(&h.cluster, &me.cluster) {
        return Err(HandshakeError::WrongCluster);
    }
    if h.to != me.host {
        return Err(HandshakeError::NotForMe);
    }
    if h.from == me.host {
        return Err(HandshakeError::SelfConnect);
    }
    match address_of(h.from) {
        None => return Err(HandshakeError::UnknownHost),
        Some(a) if a != *from => return Err(HandshakeError::WrongAddress),
        Some(_) => {}
    }
    if role.is_some_and(|r| r != h.role) {
        return Err(HandshakeError::WrongRole);
    }
    choose_version(h.min_version, h.max_version).ok_or(HandshakeError::NoCommonVersion)?;
    Ok(())
}

/// The highest version both speak.
pub fn choose_version(min: u8, max: u8) -> Option<u8> {
    let v = max.min(VERSION);
    (v >= min.max(MIN_VERSION)).then_some(v)
}

/// The server's side once its HELLO check passed: the WELCOME to send and what checks the AUTH.
pub struct ServerPending {
    transcript: Transcript,
    secret: [u8; SECRET_BYTES],
}

/// Answers a checked HELLO with fresh `nonce`.
pub fn welcome<M: Mac>(me: &Identity, h: &Hello, nonce: [u8; NONCE_BYTES]) -> Result<(Welcome, ServerPending), HandshakeError> {
    if ct_eq(&nonce, &h.nonce) {
        return Err(HandshakeError::EchoedNonce);
    }
    let version = choose_version(h.min_version, h.max_version).ok_or(HandshakeError::NoCommonVersion)?;
    let features = h.features & FEATURES_KNOWN;
    let t = Transcript::new(&me.cluster, h.from, me.host, h.role, version, features, &h.nonce, &nonce);
    let proof = t.server_proof::<M>(&me.secret);
    Ok((Welcome { version, features, nonce, proof }, ServerPending { transcript: t, secret: me.secret }))
}

impl ServerPending {
    /// Checks the client's proof; on success, the session key.
    pub fn on_auth<M: Mac>(self, proof: &[u8; 32]) -> Result<[u8; 32], HandshakeError> {
        let want = self.transcript.client_proof::<M>(&self.secret);
        if !ct_eq(&want, proof) {
            return Err(HandshakeError::BadProof);
        }
        Ok(self.transcript.session_key::<M>(&self.secret))
    }
}

/// The client's check of a WELCOME to its `sent` HELLO; on success, its AUTH proof and the
/// session key.
pub fn on_welcome<M: Mac>(me: &Identity, sent: &Hello, w: &Welcome) -> Result<([u8; 32], [u8; 32]), HandshakeError> {
    if w.version < sent.min_version || w.version > sent.max_version || choose_version(w.version, w.version).is_none() {
        return Err(HandshakeError::NoCommonVersion);
    }
    if w.features & !sent.features != 0 {
        return Err(HandshakeError::UnknownFeatures);
    }
    if ct_eq(&w.nonce, &sent.nonce) {
        return Err(HandshakeError::EchoedNonce);
    }
    let t = Transcript::new(&me.cluster, me.host, sent.to, sent.role, w.version, w.features, &sent.nonce, &w.nonce);
    if !ct_eq(&t.server_proof::<M>(&me.secret), &w.proof) {
        return Err(HandshakeError::BadProof);
    }
    Ok((t.client_proof::<M>(&me.secret), t.session_key::<M>(&me.secret)))
}

/// Parses `2 * N` hex digits (surrounding whitespace allowed).
pub fn parse_hex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    let t = text.trim_ascii();
    if t.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    };
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = digit(*t.get(2 * i)?)? << 4 | digit(*t.get(2 * i + 1)?)?;
    }
    Some(out)
}

/// Parses a secret file's contents: 64 hex digits, surrounding whitespace allowed. An all-zero
/// secret (what an unset one looks like) is refused.
pub fn parse_secret(text: &[u8]) -> Option<[u8; SECRET_BYTES]> {
    parse_hex::<SECRET_BYTES>(text).filter(|s| *s != [0u8; SECRET_BYTES])
}

/// Parses a cluster id: 32 hex digits, not all zero.
pub fn parse_cluster_id(text: &[u8]) -> Option<[u8; 16]> {
    parse_hex::<16>(text).filter(|s| *s != [0u8; 16])
}

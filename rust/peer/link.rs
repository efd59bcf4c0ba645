// SPDX-License-Identifier: GPL-2.0

//! An authenticated peer connection: the handshake from either side
//! (`pfcore::handshake`), then frames sealed and checked by the session (`pfcore::wire`).

use kernel::prelude::*;
use kernel::sync::Arc;

use super::node::{bump, Node, NodeConfig};
use crate::klib::{random_bytes, ChaChaPoly, HmacSha256};
use crate::net::sock::Sock;
use crate::pfcore::handshake::{self, HandshakeError, Identity};
use crate::pfcore::hosts::Endpoint;
use crate::pfcore::session::Session;
use crate::blk::request::RequestData;
use crate::pfcore::wire::{self, Cmd, Dir, Header, Msg, Role, WireError, WriteHead, HEADER_BYTES, NONCE_BYTES, TAG_BYTES, WRITE_FIXED_BYTES};

/// Longest payload a control connection accepts (every control message is smaller).
pub(crate) const CONTROL_PAYLOAD: usize = 128;

/// Why a link could not be made or ended.
#[derive(Debug)]
pub(crate) enum LinkError {
    /// The socket failed (connect, send, receive, timeout, close).
    Io(Error),
    /// The other side's frame broke the protocol.
    Wire(WireError),
    /// The handshake was refused.
    Refused(HandshakeError),
    /// This host is not configured for peers (no host id, cluster id or secret).
    NotConfigured,
    /// No frame began within the socket's timeout (the connection is intact).
    Idle,
}

impl From<Error> for LinkError {
    fn from(e: Error) -> Self {
        LinkError::Io(e)
    }
}

impl From<WireError> for LinkError {
    fn from(e: WireError) -> Self {
        LinkError::Wire(e)
    }
}

impl From<HandshakeError> for LinkError {
    fn from(e: HandshakeError) -> Self {
        LinkError::Refused(e)
    }
}

impl LinkError {
    /// The errno of a socket failure (0 for the others).
    pub(crate) fn errno(&self) -> i32 {
        match self {
            LinkError::Io(e) => e.to_errno(),
            _ => 0,
        }
    }

    /// A message for the log.
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            LinkError::Io(_) => "the connection failed or timed out",
            LinkError::Wire(w) => w.describe(),
            LinkError::Refused(h) => h.describe(),
            LinkError::NotConfigured => "this host has no host id, cluster id or secret set",
            LinkError::Idle => "no frame within the timeout",
        }
    }
}

/// An authenticated connection to host `peer`.
pub(crate) struct Link {
    pub(crate) sock: Arc<Sock>,
    session: Session,
    pub(crate) peer: u32,
    pub(crate) role: Role,
}

/// Sends one handshake frame (sequence 0, zero tag).
fn send_plain(sock: &Sock, m: &Msg<'_>) -> Result<(), LinkError> {
    let mut payload = [0u8; CONTROL_PAYLOAD];
    let n = m.encode_payload(&mut payload).ok_or(LinkError::Wire(WireError::BadLength))?;
    let len = u32::try_from(n).map_err(|_| WireError::BadLength)?;
    let header = Header { cmd: m.cmd(), len, volume: 0, seq: 0 }.to_bytes();
    sock.send(&[&header, payload.get(..n).unwrap_or(&[]), &[0u8; TAG_BYTES]])?;
    Ok(())
}

/// Receives one handshake frame of command `want` into `buf` and decodes it: the header is
/// checked before the payload is read, and the tag must be zero.
fn recv_plain<'a>(sock: &Sock, want: Cmd, buf: &'a mut [u8; CONTROL_PAYLOAD]) -> Result<Msg<'a>, LinkError> {
    let mut hb = [0u8; HEADER_BYTES];
    sock.recv_exact(&mut hb)?;
    let h = Header::decode(&hb)?;
    if h.cmd != want || h.seq != 0 || h.volume != 0 {
        return Err(LinkError::Wire(WireError::Inconsistent("an unexpected message in the handshake")));
    }
    let payload = buf.get_mut(..h.len as usize).ok_or(WireError::BadLength)?;
    sock.recv_exact(payload)?;
    let mut tag = [0u8; TAG_BYTES];
    sock.recv_exact(&mut tag)?;
    if tag != [0u8; TAG_BYTES] {
        return Err(LinkError::Wire(WireError::Reserved));
    }
    Ok(wire::decode(&h, payload)?)
}

fn nonce() -> [u8; NONCE_BYTES] {
    let mut n = [0u8; NONCE_BYTES];
    random_bytes(&mut n);
    n
}

impl Link {
    /// Dials host `to` of the host table and runs the client's side of the handshake.
    pub(crate) fn dial(cfg: &NodeConfig, to: u32, role: Role, timeout_ms: u32) -> Result<Link, LinkError> {
        let me: Identity = cfg.identity().ok_or(LinkError::NotConfigured)?;
        let at: Endpoint = cfg.hosts.endpoint(to).ok_or(LinkError::Refused(HandshakeError::UnknownHost))?;
        let sock = Sock::connect(at, timeout_ms)?;
        let hello = handshake::hello(&me, to, role, nonce());
        send_plain(&sock, &Msg::Hello(hello))?;
        let mut buf = [0u8; CONTROL_PAYLOAD];
        let Msg::Welcome(w) = recv_plain(&sock, Cmd::Welcome, &mut buf)? else {
            return Err(LinkError::Wire(WireError::Inconsistent("not a welcome")));
        };
        let (proof, key) = handshake::on_welcome::<HmacSha256>(&me, &hello, &w)?;
        send_plain(&sock, &Msg::Auth(proof))?;
        let sock = Arc::new(sock, GFP_KERNEL).map_err(|e| LinkError::Io(e.into()))?;
        Ok(Link { sock, session: Session::new(key, Dir::ToServer), peer: to, role })
    }

    /// Runs the server's side of the handshake on a socket accepted from `from`. Nothing is
    /// allocated for the connection before its HELLO passed the checks.
    pub(crate) fn accept(node: &Node, sock: Sock, from: Endpoint) -> Result<Link, LinkError> {
        let (key, peer, role) = Self::server_handshake(node, &sock, from)?;
        bump(&node.counters.handshakes);
        let sock = Arc::new(sock, GFP_KERNEL).map_err(|e| LinkError::Io(e.into()))?;
        Ok(Link { sock, session: Session::new(key, Dir::ToClient), peer, role })
    }

    fn server_handshake(node: &Node, sock: &Sock, from: Endpoint) -> Result<([u8; 32], u32, Role), LinkError> {
        let cfg = node.snapshot();
        let me = cfg.identity().ok_or(LinkError::NotConfigured)?;
        let mut buf = [0u8; CONTROL_PAYLOAD];
        let Msg::Hello(hello) = recv_plain(sock, Cmd::Hello, &mut buf)? else {
            return Err(LinkError::Wire(WireError::Inconsistent("not a hello")));
        };
        handshake::check_hello(&me, &hello, |id| cfg.hosts.address(id), &from.ip, None)?;
        let (welcome, pending) = handshake::welcome::<HmacSha256>(&me, &hello, nonce())?;
        send_plain(sock, &Msg::Welcome(welcome))?;
        let Msg::Auth(proof) = recv_plain(sock, Cmd::Auth, &mut buf)? else {
            return Err(LinkError::Wire(WireError::Inconsistent("not an auth")));
        };
        let key = pending.on_auth::<HmacSha256>(&proof)?;
        Ok((key, hello.from, hello.role))
    }

    /// Seals and sends a message about replica `volume` (0: the connection).
    pub(crate) fn send(&mut self, m: &Msg<'_>, volume: u32) -> Result<(), LinkError> {
        send_frame(&self.sock, &mut self.session, m, volume)
    }

    /// Receives and checks the next frame into `buf` (its header first, then exactly its
    /// payload, then the tag; the session checks sequence and tag before decoding). `buf` bounds
    /// what is accepted: [`CONTROL_PAYLOAD`] on a control connection, `wire::MAX_PAYLOAD` on a
    /// data connection; a longer frame ends the connection before its payload is read.
    pub(crate) fn recv<'a>(&mut self, buf: &'a mut [u8]) -> Result<(Header, Msg<'a>), LinkError> {
        recv_frame(&self.sock, &mut self.session, buf)
    }

    /// Splits the link into a sending and a receiving half, for a sender and a receiving thread
    /// that run at once (the session's two directions are numbered independently).
    pub(crate) fn split(self) -> (LinkTx, LinkRx) {
        let Link { sock, session, .. } = self;
        let tx = LinkTx { sock: sock.clone(), session: session.clone() };
        (tx, LinkRx { sock, session })
    }
}

/// The sending half of a link ([`Link::split`]): only its send sequence is used.
pub(crate) struct LinkTx {
    pub(crate) sock: Arc<Sock>,
    session: Session,
}

/// The receiving half of a link ([`Link::split`]): only its receive sequence is used.
pub(crate) struct LinkRx {
    pub(crate) sock: Arc<Sock>,
    session: Session,
}

impl LinkTx {
    /// Seals and sends a message (not a WRITE; see [`LinkTx::send_write`]).
    pub(crate) fn send(&mut self, m: &Msg<'_>) -> Result<(), LinkError> {
        send_frame(&self.sock, &mut self.session, m, 0)
    }

    /// Sends a WRITE of request `rq`'s data: the MAC is computed over the pages in place, then
    /// header and fixed part, the pages themselves (no copy where the kernel allows) and the tag.
    /// Any error leaves the stream broken: the caller ends the link.
    pub(crate) fn send_write(&mut self, head: &WriteHead, rq: &dyn RequestData) -> Result<(), LinkError> {
        let m = Msg::Write(*head, &[]);
        let mut fixed = [0u8; WRITE_FIXED_BYTES];
        let n = m.encode_payload(&mut fixed).ok_or(WireError::BadLength)?;
        let fixed = fixed.get(..n).unwrap_or(&[]);
        let data = usize::try_from(head.sectors).map_err(|_| WireError::BadLength)?.checked_mul(512).ok_or(WireError::BadLength)?;
        let len = n.checked_add(data).ok_or(WireError::BadLength)?;
        let (header, tag) = self.session.seal_fed::<ChaChaPoly>(Cmd::Write, 0, len, |feed| {
            feed(fixed);
            rq.each_piece(&mut |p| feed(p));
        })?;
        self.sock.send_more(&[&header, fixed])?;
        self.sock.send_request(rq)?;
        self.sock.send(&[&tag])?;
        Ok(())
    }
}

impl LinkRx {
    /// As [`Link::recv`].
    pub(crate) fn recv<'a>(&mut self, buf: &'a mut [u8]) -> Result<(Header, Msg<'a>), LinkError> {
        recv_frame(&self.sock, &mut self.session, buf)
    }
}

fn send_frame(sock: &Sock, session: &mut Session, m: &Msg<'_>, volume: u32) -> Result<(), LinkError> {
    let mut payload = [0u8; CONTROL_PAYLOAD];
    let fixed = m.encode_payload(&mut payload).ok_or(WireError::BadLength)?;
    let fixed = payload.get(..fixed).unwrap_or(&[]);
    let data: &[u8] = match m {
        Msg::Write(_, d) => d,
        _ => &[],
    };
    let (header, tag) = session.seal::<ChaChaPoly>(m.cmd(), volume, m.payload_len(), [fixed, data])?;
    sock.send(&[&header, fixed, data, &tag])?;
    Ok(())
}

fn recv_frame<'a>(sock: &Sock, session: &mut Session, buf: &'a mut [u8]) -> Result<(Header, Msg<'a>), LinkError> {
    let mut hb = [0u8; HEADER_BYTES];
    if !sock.recv_or_idle(&mut hb)? {
        return Err(LinkError::Idle);
    }
    let h = Header::decode(&hb)?;
    let payload = buf.get_mut(..h.len as usize).ok_or(WireError::BadLength)?;
    sock.recv_exact(payload)?;
    let mut tag = [0u8; TAG_BYTES];
    sock.recv_exact(&mut tag)?;
    Ok(session.open::<ChaChaPoly>(&hb, payload, &tag)?)
}

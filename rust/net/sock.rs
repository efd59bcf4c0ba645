// SPDX-License-Identifier: GPL-2.0

//! An owned kernel TCP socket.

use core::ptr::NonNull;

use kernel::bindings;
use kernel::error::to_result;
use kernel::prelude::*;

use super::ffi;
use crate::blk::request::RequestData;
use crate::blk::thread::NoIo;
use crate::pfcore::hosts::Endpoint;

/// Most pieces one [`Sock::send`] gathers.
pub(crate) const MAX_PIECES: usize = 4;

/// A kernel TCP socket, IPv4.
///
/// # Invariants
///
/// `sock` was created by `pf_sock_create` or returned by `kernel_accept`, was set up by
/// `pf_sock_setup`, and is released only in `drop`.
pub(crate) struct Sock {
    sock: NonNull<bindings::socket>,
}

// SAFETY: a socket may be used and released from any thread; the kernel serialises concurrent
// senders and receivers on its own lock, and `shutdown` may race with both.
unsafe impl Send for Sock {}
// SAFETY: as above: every method takes the kernel's socket lock as needed.
unsafe impl Sync for Sock {}

fn be32(ip: [u8; 4]) -> u32 {
    // The address in network byte order, as the C side stores it in `sin_addr`.
    u32::from_ne_bytes(ip)
}

impl Sock {
    /// A new socket in the current process's network namespace whose blocking calls wait at most
    /// `timeout_ms`.
    fn new(timeout_ms: u32) -> Result<Sock> {
        let mut raw: *mut bindings::socket = core::ptr::null_mut();
        // SAFETY: `pf_current_net` reads `current`'s namespace, which lives while the task does;
        // `pf_sock_create` stores a new socket in `raw` on success and takes a reference on the
        // namespace for it.
        to_result(unsafe { ffi::pf_sock_create(ffi::pf_current_net(), &mut raw) })?;
        let sock = NonNull::new(raw).ok_or(ENOMEM)?;
        // SAFETY: `sock` is the socket just created; nothing else uses it yet.
        unsafe { ffi::pf_sock_setup(sock.as_ptr(), ffi::pf_msecs_to_jiffies(timeout_ms)) };
        Ok(Sock { sock })
    }

    /// A socket listening on `at`, whose `accept` waits at most `timeout_ms` per call.
    pub(crate) fn listen(at: Endpoint, timeout_ms: u32) -> Result<Sock> {
        let s = Sock::new(timeout_ms)?;
        // SAFETY: `s.sock` is a live socket (type invariant); the address is passed by value.
        to_result(unsafe { ffi::pf_sock_bind_v4(s.sock.as_ptr(), be32(at.ip), at.port.to_be()) })?;
        // SAFETY: as above.
        to_result(unsafe { ffi::kernel_listen(s.sock.as_ptr(), 16) })?;
        Ok(s)
    }

    /// A socket connected to `to` (the connect waits at most `timeout_ms`).
    pub(crate) fn connect(to: Endpoint, timeout_ms: u32) -> Result<Sock> {
        let s = Sock::new(timeout_ms)?;
        // SAFETY: `s.sock` is a live socket (type invariant); the address is passed by value.
        to_result(unsafe { ffi::pf_sock_connect_v4(s.sock.as_ptr(), be32(to.ip), to.port.to_be()) })?;
        Ok(s)
    }

    /// The next connection of a listening socket (`EAGAIN` after the timeout, an error after a
    /// shutdown), set up like every other socket with `timeout_ms`.
    pub(crate) fn accept(&self, timeout_ms: u32) -> Result<Sock> {
        let mut raw: *mut bindings::socket = core::ptr::null_mut();
        // SAFETY: `self.sock` is live (type invariant); on success `kernel_accept` stores a new
        // socket in `raw`, which we own from then on.
        to_result(unsafe { ffi::kernel_accept(self.sock.as_ptr(), &mut raw, 0) })?;
        let sock = NonNull::new(raw).ok_or(ENOMEM)?;
        // SAFETY: `sock` is the socket just accepted; nothing else uses it yet.
        unsafe { ffi::pf_sock_setup(sock.as_ptr(), ffi::pf_msecs_to_jiffies(timeout_ms)) };
        Ok(Sock { sock })
    }

    /// The address the other end connects from.
    pub(crate) fn peer(&self) -> Result<Endpoint> {
        let (mut addr, mut port) = (0u32, 0u16);
        // SAFETY: `self.sock` is live (type invariant); the helper writes the two locals.
        to_result(unsafe { ffi::pf_sock_peer_v4(self.sock.as_ptr(), &mut addr, &mut port) })?;
        Ok(Endpoint { ip: addr.to_ne_bytes(), port: u16::from_be(port) })
    }

    /// Sends all of `pieces` (at most [`MAX_PIECES`]), in order.
    pub(crate) fn send(&self, pieces: &[&[u8]]) -> Result {
        self.send_flagged(pieces, false)
    }

    /// Like [`Sock::send`], with more of the same frame to follow at once (`MSG_MORE`).
    pub(crate) fn send_more(&self, pieces: &[&[u8]]) -> Result {
        self.send_flagged(pieces, true)
    }

    /// Sends the data of write request `rq` from its own pages, without a copy where the
    /// kernel allows (`MSG_SPLICE_PAGES`), with more of the frame to follow. An error leaves
    /// the stream in the middle of a frame: the caller ends the connection.
    pub(crate) fn send_request(&self, rq: &dyn RequestData) -> Result {
        // SAFETY: `self.sock` is live (type invariant); `rq` is a started request that is not
        // ended while it is borrowed, so its bios and pages stay valid for the call; the socket
        // takes its own page references for what it keeps.
        to_result(unsafe { ffi::pf_sock_send_rq(self.sock.as_ptr(), rq.as_raw()) })
    }

    fn send_flagged(&self, pieces: &[&[u8]], more: bool) -> Result {
        if pieces.len() > MAX_PIECES {
            return Err(EINVAL);
        }
        let (mut first, mut skip) = (0usize, 0usize);
        while first < pieces.len() {
            let mut vec = [bindings::kvec { iov_base: core::ptr::null_mut(), iov_len: 0 }; MAX_PIECES];
            let mut n = 0;
            let mut len = 0usize;
            for (i, p) in pieces.iter().enumerate().skip(first) {
                let p = if i == first { p.get(skip..).unwrap_or(&[]) } else { p };
                vec[n] = bindings::kvec { iov_base: p.as_ptr().cast_mut().cast(), iov_len: p.len() };
                n += 1;
                len += p.len();
            }
            if len == 0 {
                return Ok(());
            }
            // SAFETY: `self.sock` is live (type invariant); each kvec points into a piece that is
            // borrowed for the whole call and only read.
            let sent = unsafe { ffi::pf_sock_send(self.sock.as_ptr(), vec.as_mut_ptr(), n, len, more) };
            let mut sent = match usize::try_from(sent) {
                Ok(0) => return Err(EPIPE),
                Ok(s) => s,
                Err(_) => return Err(Error::from_errno(sent)),
            };
            // Partial send (a timeout or a signal): go on after what went out.
            while first < pieces.len() && sent > 0 {
                let left = pieces[first].len() - skip;
                if sent >= left {
                    sent -= left;
                    first += 1;
                    skip = 0;
                } else {
                    skip += sent;
                    sent = 0;
                }
            }
            while first < pieces.len() && pieces[first].len() == skip {
                first += 1;
                skip = 0;
            }
        }
        Ok(())
    }

    /// Fills `buf` from the socket (`ECONNRESET` when the other end closed first, `EAGAIN` when
    /// the timeout passed first).
    pub(crate) fn recv_exact(&self, buf: &mut [u8]) -> Result {
        self.recv_from(buf, 0)
    }

    /// Like [`Sock::recv_exact`], but `Ok(false)` when the timeout passed before the first byte
    /// (nothing was read: the caller may wait again).
    pub(crate) fn recv_or_idle(&self, buf: &mut [u8]) -> Result<bool> {
        let first = buf.len().min(1);
        match self.recv_from(buf.get_mut(..first).unwrap_or(&mut []), 0) {
            Err(e) if e == EAGAIN => return Ok(false),
            r => r?,
        }
        self.recv_from(buf, first)?;
        Ok(true)
    }

    fn recv_from(&self, buf: &mut [u8], mut at: usize) -> Result {
        while at < buf.len() {
            let rest = &mut buf[at..];
            // SAFETY: `self.sock` is live (type invariant); `rest` is valid for writes of its
            // length for the duration of the call.
            let got = unsafe { ffi::pf_sock_recv(self.sock.as_ptr(), rest.as_mut_ptr(), rest.len()) };
            match usize::try_from(got) {
                Ok(0) => return Err(ECONNRESET),
                Ok(n) => at += n.min(rest.len()),
                Err(_) => return Err(Error::from_errno(got)),
            }
        }
        Ok(())
    }

    /// Whether a receive would return at once (data waits, or the connection ended).
    pub(crate) fn readable(&self) -> bool {
        // SAFETY: `self.sock` is live (type invariant); the helper peeks one byte into its own
        // stack without waiting.
        unsafe { ffi::pf_sock_readable(self.sock.as_ptr()) }
    }

    /// Shuts the socket down both ways: every call blocked on it returns an error, now and later.
    pub(crate) fn shutdown(&self) {
        // SAFETY: `self.sock` is live (type invariant); shutdown may race with senders and
        // receivers, which it wakes.
        unsafe { ffi::pf_sock_shutdown(self.sock.as_ptr()) };
    }
}

impl Drop for Sock {
    fn drop(&mut self) {
        // Releasing frees socket buffers and may flush the transmit queue: never recurse into
        // block I/O from here (as nvme-tcp's teardown does).
        let noio = NoIo::enter();
        // SAFETY: by the type invariant the socket is live and released only here; no other
        // reference to it remains (`&self` borrows have ended).
        unsafe { ffi::pf_sock_release(self.sock.as_ptr()) };
        drop(noio);
    }
}

// SPDX-License-Identifier: GPL-2.0

//! The listener: a kernel thread that accepts peer connections on the configured address, runs
//! the server's handshake on each (failed ones rate-limited) and serves the authenticated ones,
//! each in its own thread.

use core::sync::atomic::{AtomicBool, Ordering};

use kernel::new_mutex;
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};

use super::link::{Link, LinkError, CONTROL_PAYLOAD};
use super::node::{bump, SharedNode};
use crate::blk::thread::{nap, should_stop, Thread};
use crate::net::sock::Sock;
use crate::pfcore::hosts::Endpoint;
use super::replica::{answer, written, Replica, Reply};
use crate::pfcore::answer_order::{answer_before, step, Step};
use crate::pfcore::wire::{Msg, Role, MAX_PAYLOAD};

/// How long a blocking accept waits before the thread looks at whether it should stop.
const ACCEPT_WAIT_MS: u32 = 500;
/// How long a handshake may take, each step (a silent client holds the listener this long).
const HANDSHAKE_WAIT_MS: u32 = 2000;
/// How long a served connection may stay silent (the dialer pings more often than this).
const IDLE_MS: u32 = 30_000;

/// A connection being served.
#[pin_data]
struct Served {
    /// The link, until its thread takes it.
    #[pin]
    link: Mutex<Option<Link>>,
    /// Its socket, for a shutdown from another thread (which wakes the serving thread).
    sock: Arc<Sock>,
    node: SharedNode,
    done: AtomicBool,
}

/// The listener's shared state.
#[pin_data]
pub(crate) struct ListenState {
    sock: Sock,
    node: SharedNode,
    /// The connections served and their threads (reaped by the listener when they end).
    #[pin]
    served: Mutex<KVec<(Arc<Served>, Thread<Served>)>>,
}

/// A running listener; dropping it stops it and ends every connection it serves.
pub(crate) struct Listener {
    state: Arc<ListenState>,
    thread: Option<Thread<ListenState>>,
}

impl Listener {
    /// Listens on `at` for `node`.
    pub(crate) fn start(node: SharedNode, at: Endpoint) -> Result<Listener> {
        let sock = Sock::listen(at, ACCEPT_WAIT_MS)?;
        let state = Arc::pin_init(
            try_pin_init!(ListenState { sock, node, served <- new_mutex!(KVec::new()) }),
            GFP_KERNEL,
        )?;
        let thread = Thread::spawn(c"pf-listen", state.clone(), listen)?;
        Ok(Listener { state, thread: Some(thread) })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // The accept wakes with an error; the thread sees the stop and ends.
        self.state.sock.shutdown();
        drop(self.thread.take());
        // Then every served connection: its socket shut down, its thread stopped.
        let served = core::mem::take(&mut *self.state.served.lock());
        for (s, t) in served {
            end(&s);
            drop(t);
        }
    }
}

/// Shuts a served connection's socket down, so its thread's receive returns.
fn end(s: &Served) {
    s.sock.shutdown();
}

/// The listener thread.
fn listen(st: &ListenState) {
    while !should_stop() {
        reap(st);
        let sock = match st.sock.accept(HANDSHAKE_WAIT_MS) {
            Ok(s) => s,
            Err(e) if e == EAGAIN => continue,
            Err(_) => {
                // Shut down (the stop follows at once) or out of memory: do not spin.
                nap(100);
                continue;
            }
        };
        bump(&st.node.counters.accepted);
        let from = match sock.peer() {
            Ok(from) if st.node.known_address(from.ip) => from,
            Ok(from) => {
                st.node.stranger(from);
                continue;
            }
            Err(_) => continue,
        };
        if !st.node.may_try_handshake() {
            bump(&st.node.counters.rate_limited);
            drop(sock);
            continue;
        }
        match Link::accept(&st.node, sock, from) {
            Ok(link) => {
                if let Err(e) = serve(st, link) {
                    pr_warn!("peer connection not served: {:?}\n", e);
                }
            }
            Err(e) => st.node.handshake_failed(from, e.describe(), matches!(e, LinkError::Refused(_))),
        }
    }
}

/// Drops the served connections whose threads have ended.
fn reap(st: &ListenState) {
    let mut gone = KVec::new();
    {
        let mut served = st.served.lock();
        let mut i = 0;
        while i < served.len() {
            if served[i].0.done.load(Ordering::Acquire) {
                // Room first, so that nothing is dropped (and no thread stopped) under the lock.
                if gone.reserve(1, GFP_KERNEL).is_err() {
                    break;
                }
                let last = served.len() - 1;
                served.swap(i, last);
                if let Some(x) = served.pop() {
                    // Dropped outside the lock: stopping a thread waits for it.
                    let _ = gone.push(x, GFP_KERNEL);
                }
            } else {
                i += 1;
            }
        }
    }
    drop(gone);
}

/// Starts the thread that serves an authenticated connection.
fn serve(st: &ListenState, link: Link) -> Result {
    let served = Arc::pin_init(
        try_pin_init!(Served {
            sock: link.sock.clone(),
            link <- new_mutex!(Some(link)),
            node: st.node.clone(),
            done: AtomicBool::new(false),
        }),
        GFP_KERNEL,
    )?;
    // Counted before the thread can end (it uncounts itself when it does).
    bump(&st.node.counters.served);
    let thread = match Thread::spawn(c"pf-peer", served.clone(), serve_link) {
        Ok(t) => t,
        Err(e) => {
            st.node.counters.served.fetch_sub(1, Ordering::Relaxed);
            return Err(e);
        }
    };
    let mut list = st.served.lock();
    if let Err(e) = list.reserve(1, GFP_KERNEL) {
        drop(list);
        // Not kept: the connection ends (its thread is stopped here, outside the lock).
        end(&served);
        drop(thread);
        return Err(e.into());
    }
    let _ = list.push((served, thread), GFP_KERNEL);
    Ok(())
}

/// A served connection's thread: answers pings; on a data connection, the replica messages of
/// one replica (`replica::answer`); any frame that does not verify, or is not expected on its
/// connection, ends the connection.
///
/// Answers go out in the order the messages came. A WRITE's record is written while the next
/// messages are received (up to `replica::DEPTH` at once); its answer goes out when its record
/// is on this device and every older one is answered. Before any other message is answered,
/// every WRITE taken before it is.
fn serve_link(s: &Served) {
    let Some(mut link) = s.link.lock().take() else {
        s.done.store(true, Ordering::Release);
        return;
    };
    let peer = link.peer;
    // A data connection takes frames up to a whole WRITE (allocated only now, after the
    // handshake); a control connection only control messages.
    let mut small = [0u8; CONTROL_PAYLOAD];
    let mut big = KVVec::new();
    let data = link.role == Role::Data;
    if data && big.resize(MAX_PAYLOAD, 0, GFP_KERNEL).is_err() {
        pr_warn!("peer {}: no memory for a data connection's receive buffer; closing\n", peer);
        end_served(s, link);
        return;
    }
    let buf: &mut [u8] = if data { &mut big } else { &mut small };
    let mut replica: Option<Replica> = None;
    // Receives time out every HANDSHAKE_WAIT_MS; a connection silent for IDLE_MS ends.
    let mut idle_ms = 0;
    loop {
        if should_stop() {
            break;
        }
        // The WRITEs whose records are on the device are answered; with nothing to receive, the
        // oldest is waited for.
        let next = |r: &Replica, link: &Link| {
            let (pending, done) = (r.pending(), r.head_finished());
            // The socket is peeked at only when it decides.
            let readable = pending > 0 && !done && link.sock.readable();
            step(pending, done, readable) == Step::AnswerOldest
        };
        if answer_while(s, &mut link, &mut replica, next).is_err() {
            break;
        }
        let reply = match link.recv(&mut *buf) {
            Err(LinkError::Idle) => {
                idle_ms += HANDSHAKE_WAIT_MS;
                if idle_ms >= IDLE_MS {
                    pr_info!("peer {}: silent for {} ms; closing\n", peer, idle_ms);
                    break;
                }
                continue;
            }
            Ok((_, Msg::Ping { stamp })) => {
                idle_ms = 0;
                // Its answer too waits for every WRITE taken before it.
                if answer_while(s, &mut link, &mut replica, |r, _| r.pending() > 0).is_err() {
                    break;
                }
                bump(&s.node.counters.pings_answered);
                Msg::PingAck { stamp }
            }
            Ok((_, Msg::Detach { .. })) => break,
            Ok((_, m)) => {
                idle_ms = 0;
                // A WRITE beyond the replica's depth waits for the oldest; any other message
                // for every one taken.
                let write = matches!(m, Msg::Write(..));
                if answer_while(s, &mut link, &mut replica, |r, _| answer_before(r.pending(), r.full(), write)).is_err() {
                    break;
                }
                match data.then(|| answer(&s.node, peer, &mut replica, &m)).flatten() {
                    Some(Ok(Reply::Send(reply))) => reply,
                    Some(Ok(Reply::Taken)) => continue,
                    Some(Err(e)) => {
                        pr_warn!("peer {}: {} failed (errno {}); closing\n", peer, m.cmd().name(), e.to_errno());
                        break;
                    }
                    None => {
                        pr_warn!("peer {}: {} not expected here; closing\n", peer, m.cmd().name());
                        break;
                    }
                }
            }
            Err(LinkError::Io(_)) => break,
            Err(e) => {
                bump(&s.node.counters.frames_refused);
                pr_warn!("peer {}: {}; closing\n", peer, e.describe());
                break;
            }
        };
        if link.send(&reply, 0).is_err() {
            break;
        }
    }
    // The replica's records in flight end and its slot is released before the connection
    // counts as ended.
    drop(replica);
    end_served(s, link);
}

/// While `more` says so, sends the answer to the oldest WRITE the connection's replica took
/// (waiting for its record to land); `Err` when a send fails (the connection ends).
fn answer_while(
    s: &Served,
    link: &mut Link,
    replica: &mut Option<Replica>,
    more: impl Fn(&Replica, &Link) -> bool,
) -> Result<(), LinkError> {
    let Some(r) = replica.as_mut() else {
        return Ok(());
    };
    while more(r, link) {
        match written(&s.node, r) {
            Some(m) => link.send(&m, 0)?,
            None => break,
        }
    }
    Ok(())
}

/// The end of a served connection: closed, logged, uncounted.
fn end_served(s: &Served, link: Link) {
    let peer = link.peer;
    link.sock.shutdown();
    let role = if link.role == Role::Data { "data" } else { "control" };
    pr_info!("peer {}: {} connection ended\n", peer, role);
    s.node.counters.served.fetch_sub(1, Ordering::Relaxed);
    s.done.store(true, Ordering::Release);
    drop(link);
}

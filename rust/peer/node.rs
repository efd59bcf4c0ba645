// SPDX-License-Identifier: GPL-2.0

//! This host's identity in the cluster, its peer counters and its listener.

use core::sync::atomic::{AtomicU64, Ordering};

use kernel::new_mutex;
use kernel::prelude::*;
use kernel::str::CString;
use kernel::sync::{Arc, Mutex};
use kernel::time::{Instant, Monotonic};

use crate::pfcore::handshake::{Identity, SECRET_BYTES};
use crate::pfcore::hosts::{Endpoint, HostTable};

/// What the agent configured (configfs): the host's id, the cluster's id and secret, the host
/// table and the address to listen on.
#[derive(Clone, Copy, Default)]
pub(crate) struct NodeConfig {
    pub(crate) host: u32,
    pub(crate) cluster: [u8; 16],
    pub(crate) secret: Option<[u8; SECRET_BYTES]>,
    pub(crate) hosts: HostTable,
}

impl NodeConfig {
    /// The identity a handshake needs, once host id, cluster id and secret are all set.
    pub(crate) fn identity(&self) -> Option<Identity> {
        let secret = self.secret?;
        (self.host != 0 && self.cluster != [0; 16]).then_some(Identity { cluster: self.cluster, host: self.host, secret })
    }
}

/// Counters of the peer wing, shown in `peer_stats`.
#[derive(Default)]
pub(crate) struct PeerCounters {
    /// Connections accepted by the listener.
    pub(crate) accepted: AtomicU64,
    /// Handshakes that completed (either side).
    pub(crate) handshakes: AtomicU64,
    /// Handshakes refused: a wrong secret, an unknown host, a wrong address, a replay, ...
    pub(crate) auth_failures: AtomicU64,
    /// Connections closed unread because failed handshakes came too fast.
    pub(crate) rate_limited: AtomicU64,
    /// Connections closed unread because they came from an address that is no host's.
    pub(crate) strangers: AtomicU64,
    /// Frames refused after the handshake (a bad tag, sequence or field): the connection ended.
    pub(crate) frames_refused: AtomicU64,
    /// Pings answered.
    pub(crate) pings_answered: AtomicU64,
    /// Connections served right now.
    pub(crate) served: AtomicU64,
    /// The last probe: pings, mean and lowest round trip in microseconds.
    pub(crate) probe_pings: AtomicU64,
    pub(crate) probe_mean_us: AtomicU64,
    pub(crate) probe_min_us: AtomicU64,
    /// Replicas opened for primaries (ATTACH answered ATTACH_OK), and refused.
    pub(crate) replicas_attached: AtomicU64,
    pub(crate) replicas_refused: AtomicU64,
    /// Replica records written and acknowledged, and their bytes.
    pub(crate) replica_writes: AtomicU64,
    pub(crate) replica_bytes: AtomicU64,
    /// Replica writes refused (WRITE_NACK: no room, an I/O error, a bad record).
    pub(crate) replica_nacks: AtomicU64,
    /// Checkpoints persisted in replica slots.
    pub(crate) replica_checkpoints: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Failed handshakes allowed in a burst, and per second after it.
const FAILURE_BURST: u64 = 32;
const FAILURES_PER_SECOND: u64 = 20;

/// The host's peer state.
#[pin_data]
pub(crate) struct Node {
    #[pin]
    pub(crate) config: Mutex<NodeConfig>,
    /// Why the last handshake failed (a fixed message: never any of the peer's bytes).
    #[pin]
    pub(crate) last_refusal: Mutex<&'static str>,
    /// The token bucket of failed handshakes: tokens, and when it was last filled.
    #[pin]
    failures: Mutex<(u64, Option<Instant<Monotonic>>)>,
    /// When a stranger's connection was last logged (at most one line a second).
    #[pin]
    stranger_logged: Mutex<Option<Instant<Monotonic>>>,
    /// The cache device that holds the peers' replicas, as its device number (resolved when it
    /// is set: the serving threads do not see the administrator's `/dev`) and the path it was
    /// set as (None: this host holds none and refuses ATTACH). A leaf: copied out, never held
    /// across I/O.
    #[pin]
    pub(crate) replica_cache: Mutex<Option<(u32, CString)>>,
    pub(crate) counters: PeerCounters,
}

impl Node {
    pub(crate) fn new() -> impl PinInit<Self, Error> {
        try_pin_init!(Node {
            config <- new_mutex!(NodeConfig::default()),
            last_refusal <- new_mutex!(""),
            failures <- new_mutex!((FAILURE_BURST, None)),
            stranger_logged <- new_mutex!(None),
            replica_cache <- new_mutex!(None),
            counters: PeerCounters::default(),
        })
    }

    /// A copy of the configuration.
    pub(crate) fn snapshot(&self) -> NodeConfig {
        *self.config.lock()
    }

    /// Counts and logs a failed handshake (its reason only, never the peer's bytes), and takes
    /// a token of the failure bucket: `refused` when the proof or identity check said no, else
    /// the connection broke the protocol or went silent.
    pub(crate) fn handshake_failed(&self, from: Endpoint, why: &'static str, refused: bool) {
        bump(&self.counters.auth_failures);
        *self.last_refusal.lock() = why;
        if refused {
            pr_warn!("peer connection from {} refused: {}\n", DisplayEp(from), why);
        } else {
            pr_warn!("peer connection from {} dropped in the handshake: {}\n", DisplayEp(from), why);
        }
        let mut f = self.failures.lock();
        f.0 = f.0.saturating_sub(1);
    }

    /// Whether `ip` is the address of a host of the table (a connection from any other is
    /// closed before a byte of it is read).
    pub(crate) fn known_address(&self, ip: [u8; 4]) -> bool {
        self.config.lock().hosts.hosts().iter().any(|(_, e)| e.ip == ip)
    }

    /// Counts a connection from an address that is no host's (logged at most once a second:
    /// anyone can make these).
    pub(crate) fn stranger(&self, from: Endpoint) {
        bump(&self.counters.strangers);
        bump(&self.counters.auth_failures);
        *self.last_refusal.lock() = "a connection from an address that is no host's";
        let now = Instant::<Monotonic>::now();
        let mut last = self.stranger_logged.lock();
        if last.is_none_or(|t| (now - t).as_millis() >= 1000) {
            *last = Some(now);
            pr_warn!("peer connection from {} closed: not the address of a host of the cluster\n", DisplayEp(from));
        }
    }

    /// Whether the listener may run another handshake now (a token of the failure bucket is
    /// left); refills the bucket by the time passed.
    pub(crate) fn may_try_handshake(&self) -> bool {
        let mut f = self.failures.lock();
        let now = Instant::<Monotonic>::now();
        if let Some(last) = f.1 {
            let ms = u64::try_from((now - last).as_millis()).unwrap_or(0);
            let refill = ms.saturating_mul(FAILURES_PER_SECOND) / 1000;
            if refill > 0 {
                // The time a whole token takes is used up; the rest of it counts next time.
                let used = refill.saturating_mul(1000) / FAILURES_PER_SECOND;
                let next = last + kernel::time::Delta::from_millis(i64::try_from(used).unwrap_or(i64::MAX));
                *f = (f.0.saturating_add(refill).min(FAILURE_BURST), Some(next));
            }
        } else {
            f.1 = Some(now);
        }
        f.0 > 0
    }
}

/// Formats an endpoint for the kernel's formatting macros (which take `kernel::fmt::Display`).
pub(crate) struct DisplayEp(pub(crate) Endpoint);

impl kernel::fmt::Display for DisplayEp {
    fn fmt(&self, f: &mut kernel::fmt::Formatter<'_>) -> kernel::fmt::Result {
        core::fmt::Display::fmt(&self.0, f)
    }
}

/// The node, shared by the control interface and the listener's threads.
pub(crate) type SharedNode = Arc<Node>;

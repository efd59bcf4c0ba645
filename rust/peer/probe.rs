// SPDX-License-Identifier: GPL-2.0

//! A probe of a peer: dial it, authenticate, and time `count` authenticated pings, one at a
//! time (the round trip a wbp write pays on top of its flash write).

use core::sync::atomic::Ordering;

use kernel::prelude::*;
use kernel::time::{Instant, Monotonic};

use super::link::{Link, LinkError, CONTROL_PAYLOAD};
use super::node::{bump, Node};
use crate::pfcore::wire::{Msg, Role};

/// Connect and per-step timeout of a probe.
const PROBE_WAIT_MS: u32 = 3000;

/// What a probe measured.
pub(crate) struct ProbeResult {
    pub(crate) pings: u64,
    pub(crate) mean_us: u64,
    pub(crate) min_us: u64,
}

/// Probes host `to` with `count` pings; the result is also kept in the node's counters.
pub(crate) fn probe(node: &Node, to: u32, count: u64) -> Result<ProbeResult, LinkError> {
    let cfg = node.snapshot();
    let mut link = Link::dial(&cfg, to, Role::Control, PROBE_WAIT_MS)?;
    bump(&node.counters.handshakes);
    let mut buf = [0u8; CONTROL_PAYLOAD];
    let (mut total, mut min) = (0u64, u64::MAX);
    for i in 0..count {
        let start = Instant::<Monotonic>::now();
        let stamp = i.wrapping_add(1);
        link.send(&Msg::Ping { stamp }, 0)?;
        match link.recv(&mut buf)? {
            (_, Msg::PingAck { stamp: s }) if s == stamp => {}
            _ => return Err(LinkError::Wire(crate::pfcore::wire::WireError::Inconsistent("a wrong answer to a ping"))),
        }
        let us = u64::try_from((Instant::<Monotonic>::now() - start).as_micros_ceil()).unwrap_or(0);
        total = total.saturating_add(us);
        min = min.min(us);
    }
    link.sock.shutdown();
    let r = ProbeResult { pings: count, mean_us: total.checked_div(count).unwrap_or(0), min_us: if count == 0 { 0 } else { min } };
    let c = &node.counters;
    c.probe_pings.store(r.pings, Ordering::Relaxed);
    c.probe_mean_us.store(r.mean_us, Ordering::Relaxed);
    c.probe_min_us.store(r.min_us, Ordering::Relaxed);
    Ok(r)
}

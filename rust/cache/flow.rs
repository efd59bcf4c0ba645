// SPDX-License-Identifier: GPL-2.0

//! Flow control in the data path of a write-back volume (wb or wbp): the law of `pfcore::flow` (its
//! arithmetic and why it is this law) on the share's fill, the destager's measured bandwidth and
//! the tunables `flow_start_pct`, `flow_limit_pct` and `flow_max_delay_us`. A paced write sleeps
//! its delay in the worker, never in `queue_rq` (the fast path takes only writes that run free);
//! at the limit a write is written through instead of waiting for room.

use core::sync::atomic::Ordering;

use crate::pfcore::flow::{self, FlowDecision, FlowState, FlowTunables};

use super::cache::Cache;
use super::state::State;
use super::stats::bump;

impl Cache {
    fn flow_tunables(&self) -> FlowTunables {
        let t = &self.tunables;
        let pct = |a: &core::sync::atomic::AtomicU64| u32::try_from(a.load(Ordering::Relaxed)).unwrap_or(100);
        FlowTunables {
            start_pct: pct(&t.flow_start_pct),
            limit_pct: pct(&t.flow_limit_pct),
            max_delay_ns: t.flow_max_delay_us.load(Ordering::Relaxed).saturating_mul(1000),
        }
    }

    /// Where the volume is on the law now (write-back, wb or wbp; write-through runs free).
    pub(super) fn flow_state(&self, g: &State) -> FlowState {
        if !g.policy.writes_back() {
            return FlowState::Freerun;
        }
        flow::state(&self.flow_tunables(), g.fill())
    }

    /// The destager should work without its delay: the writers are paced or written through.
    pub(super) fn flow_urgent(&self, g: &State) -> bool {
        self.flow_state(g) != FlowState::Freerun
    }

    /// For the fast path: whether a write runs free (no pacing, no write-through). A write that
    /// does not goes to the worker, which decides for it with [`Cache::flow_admit`].
    pub(super) fn flow_free(&self, g: &mut State) -> bool {
        if self.flow_state(g) != FlowState::Freerun {
            return false;
        }
        // Nothing is banked while running free (no clock read on the fast path for it).
        g.flow.ran_free();
        true
    }

    /// The decision for one write of `sectors` in the worker (takes its share of the rate).
    pub(super) fn flow_admit(&self, g: &mut State, sectors: u64) -> FlowDecision {
        if !g.policy.writes_back() {
            return FlowDecision::Go;
        }
        let (u, now) = (g.fill(), self.now_ns());
        g.flow.admit(&self.flow_tunables(), u, sectors.saturating_mul(512), now)
    }

    /// Sleeps a paced write's delay (no lock held), and counts it.
    pub(super) fn flow_sleep(&self, ns: u64) {
        let us = ns / 1000;
        bump(&self.counters.paced_writes, 1);
        bump(&self.counters.paced_us, us);
        self.counters.flow_delay_us.store(us, Ordering::Relaxed);
        kernel::time::delay::fsleep(kernel::time::Delta::from_nanos(i64::try_from(ns).unwrap_or(i64::MAX)));
    }

    /// A write at the limit goes through: counted.
    pub(super) fn flow_wrote_through(&self) {
        bump(&self.counters.flow_writethroughs, 1);
    }

    /// `destage_bw`: the destager's measured bandwidth, bytes/s.
    pub(super) fn flow_bandwidth(&self) -> u64 {
        self.lock().flow.bandwidth
    }
}

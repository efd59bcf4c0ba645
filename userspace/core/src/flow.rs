//! Flow control under sustained writes (Documentation/design.md, "Flow control"): how fast a
//! write-back volume admits new writes when its share of the cache fills faster than the
//! destager empties it.
//!
//! The law, per volume, on the share's log space in use `u` (space comes back only when the
//! checkpoint passes, so it is log space, not dirty bytes, that runs out):
//! - below `start` (default 50%): **freerun**, no delay;
//! - from `start` to `limit` (default 90%): **paced**. The destager goes urgent, and writes are
//!   admitted at the rate `R = B x f(u)`, with `B` the destager's measured bandwidth and `f` the
//!   cubic of the kernel's dirty-page throttling (`balance_dirty_pages`): `f(start) = 2`,
//!   `f(setpoint) = 1` at the middle, `f(limit) = 0`. A token bucket in virtual time turns the
//!   rate into a delay per write, capped at `max_delay` (about the SAN's write latency), so no
//!   write waits longer than a write-through would have taken;
//! - at `limit` and above: **write-through**, the write goes to the SAN and never waits for room.
//!
//! Why this law (the anchors are in `shared/reference/flow-and-bench.md` §4): dm-writecache, Ceph
//! PWL and bcache do nothing on the writer's side until the cache is full, then stall or bypass
//! (the stalls users complain about); the page cache's cubic gives a delay that is a continuous
//! function of fill and of the measured drain rate, so IOPS settle where the destager keeps up;
//! the cap bounds every delay near the SAN's latency (FVP's worst case: "the VM experiences SAN
//! latency"); write-through at the limit replaces waiting for a whole destage batch.
//!
//! All arithmetic is integer and checked or saturating: no input panics (property tests in
//! `tests/flow.rs`, with a closed-loop model of writer, log and destager).

/// Fractions are in parts per [`ONE`] (Q16).
pub const ONE: u64 = 1 << 16;

/// The tunables of the law.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowTunables {
    /// Fill (percent of the share) where pacing starts.
    pub start_pct: u32,
    /// Fill (percent of the share) where writes go through to the SAN.
    pub limit_pct: u32,
    /// The longest delay of one write, in ns.
    pub max_delay_ns: u64,
}

impl FlowTunables {
    /// Defaults (the sysfs table's, `sysfs.rs`): pacing from 50% (dm-writecache's and PWL's high
    /// water), write-through from 90%, delays capped at 5 ms (about a SAN write).
    pub const DEFAULT: FlowTunables = FlowTunables { start_pct: 50, limit_pct: 90, max_delay_ns: 5_000_000 };

    /// Whether the tunables make a law: `0 < start < limit <= 100`.
    pub fn valid(&self) -> bool {
        self.start_pct > 0 && self.start_pct < self.limit_pct && self.limit_pct <= 100
    }
}

/// Where a volume is on the law.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowState {
    Freerun,
    Paced,
    WriteThrough,
}

impl FlowState {
    /// The name shown in sysfs (`flow_state`).
    pub fn name(self) -> &'static str {
        match self {
            FlowState::Freerun => "freerun",
            FlowState::Paced => "paced",
            FlowState::WriteThrough => "writethrough",
        }
    }
}

/// What to do with one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowDecision {
    /// Start it now.
    Go,
    /// Start it after this many ns (at most `max_delay_ns`).
    Delay(u64),
    /// Write it through to the SAN.
    WriteThrough,
}

/// `a * b / c`, saturating, in 64-bit arithmetic (the module has no 128-bit division); exact
/// while `a * b` fits, else `a / c * b` (the remainder's share lost, for numbers far beyond any
/// real device). `c = 0` gives `u64::MAX`.
pub fn mul_div(a: u64, b: u64, c: u64) -> u64 {
    if c == 0 {
        return u64::MAX;
    }
    match a.checked_mul(b) {
        Some(p) => p / c,
        None => (a / c).saturating_mul(b),
    }
}

/// `used / share` in parts per [`ONE`], saturating at 2 x ONE; an empty share counts as full.
pub fn fill(used: u64, share: u64) -> u64 {
    if share == 0 {
        return ONE;
    }
    mul_div(used, ONE, share).min(2 * ONE)
}

/// A percentage in parts per ONE (at most 100%).
fn pct(p: u32) -> u64 {
    u64::from(p.min(100)) * ONE / 100
}

/// The state at fill `u` (parts per ONE).
pub fn state(t: &FlowTunables, u: u64) -> FlowState {
    if !t.valid() {
        // Tunables that make no law: pacing off, write-through only when full.
        return if u >= ONE { FlowState::WriteThrough } else { FlowState::Freerun };
    }
    if u >= pct(t.limit_pct) {
        FlowState::WriteThrough
    } else if u >= pct(t.start_pct) {
        FlowState::Paced
    } else {
        FlowState::Freerun
    }
}

/// `f(u)` in parts per ONE: 2 at `start`, 1 at the middle, 0 at `limit`, the cubic
/// `1 + ((setpoint - u) / (limit - setpoint))^3` between them; 2 below `start`, 0 above `limit`.
pub fn rate_factor(t: &FlowTunables, u: u64) -> u64 {
    if !t.valid() {
        return ONE;
    }
    let (lo, hi) = (pct(t.start_pct), pct(t.limit_pct));
    if u <= lo {
        return 2 * ONE;
    }
    if u >= hi {
        return 0;
    }
    // setpoint and half-width in ONE units; x = (setpoint - u) / half in [-1, 1], in Q16.
    let half = (hi - lo) / 2;
    if half == 0 {
        return ONE;
    }
    // Here lo < u < hi <= ONE: every value below is at most 2^16 in size, so the products fit
    // an i64 (2^48 at most).
    let one = ONE as i64;
    let set = (lo + half) as i64;
    let x = ((set - u as i64) * one / half as i64).clamp(-one, one);
    let cube = x * x / one * x / one;
    (one + cube).clamp(0, 2 * one) as u64
}

/// The per-volume state of the law: the measured destage bandwidth and the token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flow {
    /// Destaged bytes per second, an EWMA over batches (0 until the first batch).
    pub bandwidth: u64,
    /// The token bucket's virtual time: when the last admitted write's share of the rate ends
    /// (ns, the caller's clock).
    next_free_ns: u64,
}

/// Weight of a new batch in the bandwidth's EWMA: 1 / 2^`EWMA_SHIFT`.
const EWMA_SHIFT: u32 = 2;

impl Flow {
    /// A batch of `bytes` took `ns` to destage (its writes and the SAN flush): updates `B`.
    /// A batch of no bytes or no time says nothing.
    pub fn on_batch(&mut self, bytes: u64, ns: u64) {
        if bytes == 0 || ns == 0 {
            return;
        }
        let sample = mul_div(bytes, 1_000_000_000, ns).max(1);
        let b = self.bandwidth;
        self.bandwidth = if b == 0 {
            sample
        } else if sample >= b {
            b + ((sample - b) >> EWMA_SHIFT)
        } else {
            (b - ((b - sample) >> EWMA_SHIFT)).max(1)
        };
    }

    /// A write ran free: the bucket does not bank that time, so pacing starts from the next
    /// paced write's own time (`admit` takes the later of this and now).
    pub fn ran_free(&mut self) {
        self.next_free_ns = 0;
    }

    /// The admission rate at fill `u`, bytes per second (0: unknown or nothing).
    pub fn rate(&self, t: &FlowTunables, u: u64) -> u64 {
        mul_div(self.bandwidth, rate_factor(t, u), ONE)
    }

    /// Decides for a write of `bytes` at time `now_ns`, the share's fill being `u`. A paced
    /// write takes its share of the rate in the bucket: it starts when the previous admitted
    /// writes' shares have passed, but never more than `max_delay_ns` from now. With no
    /// bandwidth measured yet the delay is the cap.
    pub fn admit(&mut self, t: &FlowTunables, u: u64, bytes: u64, now_ns: u64) -> FlowDecision {
        match state(t, u) {
            FlowState::Freerun => {
                self.ran_free();
                FlowDecision::Go
            }
            FlowState::WriteThrough => FlowDecision::WriteThrough,
            FlowState::Paced => {
                let rate = self.rate(t, u);
                let cost = if rate == 0 { t.max_delay_ns } else { mul_div(bytes, 1_000_000_000, rate) };
                let start = self.next_free_ns.max(now_ns);
                let start = start.min(now_ns.saturating_add(t.max_delay_ns));
                self.next_free_ns = start.saturating_add(cost);
                match start - now_ns {
                    0 => FlowDecision::Go,
                    d => FlowDecision::Delay(d),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: FlowTunables = FlowTunables::DEFAULT;

    #[test]
    fn the_cubic_passes_its_three_points() {
        assert_eq!(rate_factor(&T, fill(50, 100)), 2 * ONE);
        assert_eq!(rate_factor(&T, fill(70, 100)), ONE);
        assert_eq!(rate_factor(&T, fill(90, 100)), 0);
        // Halfway from start to setpoint: 1 + (1/2)^3.
        let f = rate_factor(&T, fill(60, 100));
        assert!(f.abs_diff(ONE + ONE / 8) <= 2, "{f}");
    }

    #[test]
    fn states_follow_the_fill() {
        assert_eq!(state(&T, fill(49, 100)), FlowState::Freerun);
        assert_eq!(state(&T, fill(50, 100)), FlowState::Paced);
        assert_eq!(state(&T, fill(89, 100)), FlowState::Paced);
        assert_eq!(state(&T, fill(90, 100)), FlowState::WriteThrough);
        assert_eq!(state(&T, fill(1, 0)), FlowState::WriteThrough);
    }

    #[test]
    fn bandwidth_is_an_ewma_of_batches() {
        let mut f = Flow::default();
        f.on_batch(4 << 20, 1_000_000_000);
        assert_eq!(f.bandwidth, 4 << 20);
        f.on_batch(8 << 20, 1_000_000_000);
        assert_eq!(f.bandwidth, 5 << 20);
        f.on_batch(0, 5);
        assert_eq!(f.bandwidth, 5 << 20);
    }

    #[test]
    fn paced_writes_are_spaced_at_the_rate() {
        let mut f = Flow { bandwidth: 4096 * 1000, next_free_ns: 0 };
        // At the setpoint the rate is B: 1000 writes of 4 KiB a second, 1 ms apart.
        let u = fill(70, 100);
        assert_eq!(f.admit(&T, u, 4096, 10_000_000), FlowDecision::Go);
        assert_eq!(f.admit(&T, u, 4096, 10_000_000), FlowDecision::Delay(1_000_000));
        assert_eq!(f.admit(&T, u, 4096, 10_500_000), FlowDecision::Delay(1_500_000));
    }
}

//! The flow-control law (`flow.rs`): property tests of its arithmetic, and a closed-loop model of
//! a writer, a volume's share of the log and a destager slower than the writer, in which the law
//! must hold the fill below the limit, keep each write's delay under the cap, and settle the
//! writer at the destager's bandwidth with steady per-second IOPS.

use peerflash_core::flow::*;
use proptest::prelude::*;

fn tunables() -> impl Strategy<Value = FlowTunables> {
    (1u32..99, 1u32..=100, 0u64..50_000_000).prop_map(|(a, b, max_delay_ns)| {
        let (start_pct, limit_pct) = if a < b { (a, b) } else { (b.clamp(1, 98), (a + 1).min(100)) };
        FlowTunables { start_pct, limit_pct, max_delay_ns }
    })
}

proptest! {
    /// No input panics; a delay is never above the cap; below the start nothing waits; at or above
    /// the limit every write goes through.
    #[test]
    fn decisions_are_bounded(t in tunables(), used in any::<u64>(), share in any::<u64>(), bw in any::<u64>(),
                             writes in proptest::collection::vec((0u64..2 << 20, 0u64..10_000_000), 1..50)) {
        let mut f = Flow::default();
        f.on_batch(bw, 1_000_000_000);
        let u = fill(used, share);
        let mut now = 0u64;
        for (bytes, gap) in writes {
            now = now.saturating_add(gap);
            let d = f.admit(&t, u, bytes, now);
            match state(&t, u) {
                FlowState::Freerun => prop_assert_eq!(d, FlowDecision::Go),
                FlowState::WriteThrough => prop_assert_eq!(d, FlowDecision::WriteThrough),
                FlowState::Paced => if let FlowDecision::Delay(ns) = d {
                    prop_assert!(ns <= t.max_delay_ns && ns > 0);
                } else {
                    prop_assert_eq!(d, FlowDecision::Go);
                },
            }
        }
    }

    /// The rate factor falls as the share fills: 2 at the start, 0 at the limit, never outside.
    #[test]
    fn the_factor_falls_with_fill(t in tunables(), a in 0u64..2 * ONE, b in 0u64..2 * ONE) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        prop_assert!(rate_factor(&t, lo) >= rate_factor(&t, hi));
        prop_assert!(rate_factor(&t, lo) <= 2 * ONE);
        if t.valid() {
            prop_assert_eq!(rate_factor(&t, u64::from(t.limit_pct) * ONE / 100), 0);
        }
    }

    /// `mul_div` is exact while the product fits 64 bits, and never above the true quotient.
    #[test]
    fn mul_div_is_exact_or_below(a in any::<u64>(), b in any::<u64>(), c in 1u64..) {
        let exact = (a as u128 * b as u128 / c as u128).min(u64::MAX as u128) as u64;
        let got = mul_div(a, b, c);
        if a.checked_mul(b).is_some() {
            prop_assert_eq!(got, exact);
        } else {
            prop_assert!(got <= exact);
        }
    }

    /// Any bytes and times keep the bandwidth finite and positive once measured.
    #[test]
    fn bandwidth_never_overflows(batches in proptest::collection::vec((any::<u64>(), any::<u64>()), 1..20)) {
        let mut f = Flow::default();
        for (bytes, ns) in batches {
            f.on_batch(bytes, ns);
        }
        let _ = f.rate(&FlowTunables::DEFAULT, ONE / 2);
    }
}

/// One run of the model: what it saw.
struct Run {
    /// Writes completed in each simulated second.
    iops: Vec<u64>,
    max_fill: u64,
    max_delay: u64,
    written_through: u64,
    /// Writes that found the share full (the stall the law must prevent).
    stalls: u64,
}

/// A writer at queue depth 1 (flash write `flash_ns`, SAN write `san_ns`) against a share of
/// `share` bytes drained by a destager of `san_bw` bytes/s that measures itself every 10 ms,
/// for `secs` seconds. `law`: whether the flow law paces the writer (else the writer runs free
/// and waits when the share is full, as before flow control).
fn model(law: bool, share: u64, san_bw: u64, flash_ns: u64, san_ns: u64, secs: u64) -> Run {
    let t = FlowTunables { max_delay_ns: san_ns, ..FlowTunables::DEFAULT };
    let mut f = Flow::default();
    let mut used: u64 = 0;
    let mut now: u64 = 0;
    let mut drained_at: u64 = 0;
    let mut batch_bytes: u64 = 0;
    let mut batch_start: u64 = 0;
    let mut run = Run { iops: vec![0; secs as usize], max_fill: 0, max_delay: 0, written_through: 0, stalls: 0 };
    let end = secs * 1_000_000_000;
    const W: u64 = 4096;
    // The destager drains continuously at san_bw once the share holds anything.
    let drain = |used: &mut u64, batch: &mut u64, from: u64, to: u64| {
        let bytes = ((to - from) as u128 * san_bw as u128 / 1_000_000_000) as u64;
        let take = bytes.min(*used);
        *used -= take;
        *batch += take;
    };
    while now < end {
        let d = if law { f.admit(&t, fill(used, share), W, now) } else { FlowDecision::Go };
        let took = match d {
            FlowDecision::Go => flash_ns,
            FlowDecision::Delay(ns) => {
                run.max_delay = run.max_delay.max(ns);
                ns + flash_ns
            }
            FlowDecision::WriteThrough => {
                run.written_through += 1;
                san_ns
            }
        };
        let mut next = now + took;
        if d != FlowDecision::WriteThrough && used + W > share {
            // No room: wait until the destager has made some (a stall).
            run.stalls += 1;
            let wait = ((used + W - share) as u128 * 1_000_000_000 / san_bw as u128) as u64 + 1;
            next += wait;
        }
        drain(&mut used, &mut batch_bytes, drained_at, next);
        drained_at = next;
        if d != FlowDecision::WriteThrough {
            used = (used + W).min(share);
        }
        if next - batch_start >= 10_000_000 {
            f.on_batch(batch_bytes, next - batch_start);
            batch_bytes = 0;
            batch_start = next;
        }
        run.max_fill = run.max_fill.max(fill(used, share));
        now = next;
        if let Some(s) = run.iops.get_mut((now / 1_000_000_000) as usize) {
            *s += 1;
        }
    }
    run
}

fn mean_cv(xs: &[u64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<u64>() as f64 / n;
    let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt() / mean)
}

/// A 64 MiB share, flash at 50 us a write (80 MB/s at QD1), a SAN that destages 4 MB/s with 2 ms
/// writes, 60 s: the fill settles between start and limit, every write's delay stays under the
/// SAN's latency, no write stalls or goes through, and once settled the writer runs at the
/// destager's bandwidth, steadily.
#[test]
fn the_law_settles_the_writer_at_the_destage_rate() {
    let san_bw = 4_000_000;
    let r = model(true, 64 << 20, san_bw, 50_000, 2_000_000, 60);
    assert!(r.max_fill < ONE * 90 / 100, "fill reached {}", r.max_fill * 100 / ONE);
    assert!(r.max_delay <= 2_000_000);
    assert_eq!((r.stalls, r.written_through), (0, 0));
    // The share (64 MiB) fills to 50% within the first seconds; steady from second 30.
    let (mean, cv) = mean_cv(&r.iops[30..]);
    eprintln!("fill max {}%, delay max {} ns, steady {mean:.0} IOPS, CV {cv:.3}, first seconds {:?}", r.max_fill * 100 / ONE, r.max_delay, &r.iops[..12]);
    let want = san_bw as f64 / 4096.0;
    assert!(mean >= 0.9 * want && mean <= 1.1 * want, "steady IOPS {mean:.0}, destage {want:.0}");
    assert!(cv <= 0.25, "per-second IOPS CV {cv:.3}");
}

/// The same writer without the law fills the share and then stalls on it again and again: the
/// model catches the behaviour flow control removes.
#[test]
fn without_the_law_the_writer_stalls() {
    let r = model(false, 64 << 20, 4_000_000, 50_000, 2_000_000, 60);
    assert!(r.stalls > 1000, "stalls {}", r.stalls);
}

/// Flow control applies to the policies whose writes complete before the SAN has them (their
/// records fill the share): wb and wbp; write-through runs free.
#[test]
fn flow_control_applies_to_write_back_policies() {
    use peerflash_core::policy::Policy;
    let applies: Vec<_> = Policy::ALL.into_iter().filter(|p| p.writes_back()).collect();
    assert_eq!(applies, [Policy::WriteBack, Policy::WriteBackPeers]);
}

//! Property tests of the bookkeeping rules the module's data path follows (`inflight`,
//! `admission`, `destage::batch_due`, `mode::on_cache_failure`): each property is a sentence of
//! design.md, checked over random inputs against a model written separately from the rule.

use peerflash_core::admission::{admit_write, Admit, WriteView};
use peerflash_core::destage::{batch_due, Due, DueView};
use peerflash_core::inflight::{self, InFlight};
use peerflash_core::mode::{on_cache_failure, AtFailure, CacheState, Fallback, Mode};
use proptest::prelude::*;

fn op() -> impl Strategy<Value = InFlight> {
    (1u64..200, 0u64..64, 1u64..16, any::<bool>(), any::<bool>())
        .prop_map(|(serial, lba, len, san, early)| InFlight { serial, lba, len, san, early })
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::Normal), Just(Mode::Bypass), Just(Mode::Failed)]
}

fn view() -> impl Strategy<Value = WriteView> {
    (mode(), any::<[bool; 6]>()).prop_map(|(mode, b)| WriteView {
        mode,
        floor_pending: b[0],
        san_allowed: b[1],
        write_through: b[2],
        overlaps_san_in_flight: b[3],
        overlaps_in_flight: b[3] || b[4],
        overlaps_dirty: b[5],
    })
}

proptest! {
    /// An operation overlaps exactly when they share a sector (model: sector by sector).
    #[test]
    fn overlap_is_a_shared_sector(ops in proptest::collection::vec(op(), 0..8), lba in 0u64..80, len in 1u64..16, san_only: bool) {
        let model = ops.iter().any(|o| {
            (o.san || !san_only) && (lba..lba + len).any(|s| (o.lba..o.lba + o.len).contains(&s))
        });
        prop_assert_eq!(inflight::overlaps(&ops, lba, len, san_only), model);
    }

    /// A checkpoint at the safe serial passes nothing in flight, and is the highest that does
    /// (every serial below the next one is complete when nothing is in flight).
    #[test]
    fn safe_serial_is_the_highest_below_every_op(ops in proptest::collection::vec(op(), 0..8), extra in 0u64..50) {
        let next = ops.iter().map(|o| o.serial).max().unwrap_or(0) + 1 + extra;
        let safe = inflight::safe_serial(&ops, next);
        prop_assert!(ops.iter().all(|o| safe < o.serial));
        prop_assert!(safe < next);
        let higher = safe + 1;
        prop_assert!(higher >= next || ops.iter().any(|o| higher >= o.serial));
    }

    /// Admission: a failed volume fails every write; nothing goes to the SAN while a bypass's
    /// checkpoint is pending or the lease has run out; a write-through write starts only with
    /// the lease valid and nothing in flight or dirty on its blocks; a write-back write waits
    /// only for SAN operations in flight on its blocks.
    #[test]
    fn admission_keeps_the_ordering_rules(v in view()) {
        let a = admit_write(&v);
        if v.mode == Mode::Failed {
            prop_assert_eq!(a, Admit::Fail);
        }
        if a == Admit::ToSan {
            prop_assert!(v.mode == Mode::Bypass && !v.floor_pending && v.san_allowed);
        }
        if a == Admit::Place {
            prop_assert_eq!(v.mode, Mode::Normal);
            if v.write_through {
                prop_assert!(v.san_allowed && !v.overlaps_in_flight && !v.overlaps_dirty);
            } else {
                prop_assert!(!v.overlaps_san_in_flight);
            }
        }
        // Write-back in a healthy cache never waits for the lease or for dirty data.
        if v.mode == Mode::Normal && !v.write_through && !v.overlaps_san_in_flight {
            prop_assert_eq!(a, Admit::Place);
        }
        // Whatever waits can go on once what it waits for is gone.
        if a == Admit::Blocked {
            let clear = WriteView { overlaps_san_in_flight: false, overlaps_in_flight: false, overlaps_dirty: false, ..v };
            prop_assert_eq!(admit_write(&clear), Admit::Place);
        }
    }

    /// A batch is due at once on a drain, in write-through, with a full batch, or once the
    /// oldest dirty data has waited the delay; otherwise the destager sleeps exactly what is
    /// left of the delay, never 0 ms (a busy loop) and never past it.
    #[test]
    fn batch_is_due_after_the_delay(drain: bool, wt: bool, dirty in 0u64..5000, batch in 1u64..4096, waited in proptest::option::of(0u64..3000), delay in 0u64..2000) {
        let v = DueView { drain, write_through: wt, dirty_sectors: dirty, batch_sectors: batch, waited_ms: waited, delay_ms: delay };
        let w = waited.unwrap_or(delay);
        let now = drain || wt || dirty >= batch || w >= delay;
        match batch_due(&v) {
            Due::Now => prop_assert!(now),
            Due::In(ms) => {
                prop_assert!(!now);
                prop_assert!(ms > 0 && ms <= delay);
                prop_assert_eq!(w + ms, delay);
            }
        }
    }

    /// On a cache failure: bypass only with nothing acknowledged that the SAN lacks (no dirty
    /// sectors, no queued record, no fast-path write in flight); a bypass after write-back
    /// writes past the checkpoint writes a checkpoint covering every serial issued first.
    #[test]
    fn bypass_only_without_dirty_data(dirty in 0u64..3, queued: bool, early: bool, wb in 0u64..20, cp in 0u64..20, extra in 0u64..5) {
        let last = wb.max(cp) + extra;
        let s = AtFailure { dirty_sectors: dirty, queued, early_in_flight: early, wb_submitted: wb, checkpoint: cp, last_serial: last };
        match on_cache_failure(&s) {
            Fallback::Fail => prop_assert!(dirty > 0 || queued || early),
            Fallback::Bypass { floor } => {
                prop_assert!(dirty == 0 && !queued && !early);
                prop_assert_eq!(floor.is_some(), wb > cp);
                if let Some(f) = floor {
                    prop_assert!(f >= wb && f == last);
                }
            }
        }
    }
}

#[test]
fn state_words_round_trip() {
    for s in CacheState::ALL {
        assert_eq!(CacheState::parse(s.word()), Some(s));
    }
    assert_eq!(CacheState::of(Mode::Normal, true, 0), CacheState::Replaying);
    assert_eq!(CacheState::of(Mode::Normal, false, 1), CacheState::Dirty);
    assert_eq!(CacheState::of(Mode::Bypass, true, 1), CacheState::Degraded);
    assert_eq!(CacheState::parse("unknown"), None);
}

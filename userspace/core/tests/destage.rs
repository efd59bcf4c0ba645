//! Destager rules.

use peerflash_core::destage::*;
use proptest::prelude::*;

const LIMITS: BatchLimits = BatchLimits {
    max_sectors: 64,
    max_records: 4,
};

#[test]
fn batches_stop_at_caps_and_in_flight_writes() {
    let q = [(1, 8), (2, 8), (3, 0), (4, 8), (5, 8), (6, 8)];
    assert_eq!(
        plan_batch(q, LIMITS, 100),
        Batch {
            records: 4,
            sectors: 24,
            checkpoint: Some(4)
        }
    );
    assert_eq!(
        plan_batch(q, LIMITS, 2),
        Batch {
            records: 2,
            sectors: 16,
            checkpoint: Some(2)
        }
    );
    assert_eq!(plan_batch(q, LIMITS, 0), Batch::default());
    // A record larger than the cap still goes, alone.
    assert_eq!(
        plan_batch([(1, 500), (2, 8)], LIMITS, 9),
        Batch {
            records: 1,
            sectors: 500,
            checkpoint: Some(1)
        }
    );
    assert_eq!(
        plan_batch([(1, 60), (2, 8)], LIMITS, 9),
        Batch {
            records: 1,
            sectors: 60,
            checkpoint: Some(1)
        }
    );
    // Superseded records (nothing left to write) cost nothing but still advance the checkpoint.
    assert_eq!(
        plan_batch([(1, 0), (2, 0)], LIMITS, 9),
        Batch {
            records: 2,
            sectors: 0,
            checkpoint: Some(2)
        }
    );
}

#[test]
fn overlaps_are_counted() {
    assert_eq!(count_overlaps([(0, 8), (8, 8), (16, 1)]), 0);
    assert_eq!(count_overlaps([(0, 8), (7, 8), (10, 1), (40, 1)]), 2);
    assert_eq!(count_overlaps([(0, 100), (50, 1), (60, 1)]), 2);
}

#[test]
fn backoff_doubles_and_caps() {
    assert_eq!(retry_delay_ms(0), 100);
    assert_eq!(retry_delay_ms(1), 200);
    assert_eq!(retry_delay_ms(6), 6400);
    assert_eq!(retry_delay_ms(7), 10_000);
    assert_eq!(retry_delay_ms(u32::MAX), 10_000);
}

#[test]
fn log_head_wraps() {
    let mut h = LogHead {
        segments: 3,
        segment_sectors: 16,
        segment: 0,
        offset: 0,
    };
    assert_eq!(h.take(9), Some(0));
    assert_eq!(h.take(9), None, "does not cross a segment end");
    assert_eq!(h.take(7), Some(9));
    h.advance();
    h.advance();
    assert_eq!((h.segment, h.next_segment()), (2, 0));
    assert_eq!(h.fits(0), None);
    assert!(segment_reusable(5, 5));
    assert!(!segment_reusable(6, 5));
}

proptest! {
    /// A batch is a prefix of the queue, within the in-flight bound, within the caps (unless it is
    /// a single record), and its checkpoint is its last serial.
    #[test]
    fn batch_is_a_safe_prefix(sizes in proptest::collection::vec(0u64..40, 0..20), safe in 0u64..25,
                              max_sectors in 1u64..100, max_records in 1usize..8) {
        let q: Vec<(u64, u64)> = sizes.iter().enumerate().map(|(i, s)| (i as u64 + 1, *s)).collect();
        let limits = BatchLimits { max_sectors, max_records };
        let b = plan_batch(q.iter().copied(), limits, safe);
        prop_assert!(b.records <= max_records);
        let taken = &q[..b.records];
        prop_assert!(taken.iter().all(|(s, _)| *s <= safe));
        prop_assert_eq!(b.sectors, taken.iter().map(|(_, n)| n).sum::<u64>());
        prop_assert_eq!(b.checkpoint, taken.last().map(|(s, _)| *s));
        if taken.iter().filter(|(_, n)| *n > 0).count() > 1 {
            prop_assert!(b.sectors <= max_sectors);
        }
        // Maximal: the next record was refused for a reason.
        if let Some((s, n)) = q.get(b.records) {
            let full = b.records >= max_records || *s > safe || (*n > 0 && b.sectors > 0 && b.sectors + n > max_sectors);
            prop_assert!(full);
        }
    }
}

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

/// The turns of one simulated SAN group: destagers that always have work ask again as soon as
/// their batch ends; `cost[i]` is how many steps destager i's batch runs.
fn simulate_turns(cost: &[u32], groups: &[u64], per_group: usize, steps: usize) -> Vec<u64> {
    let mut queue: Vec<TurnEntry> = (0..cost.len())
        .map(|i| TurnEntry {
            group: groups[i],
            id: i as u64,
            running: false,
        })
        .collect();
    let mut left = vec![0u32; cost.len()];
    let mut starts = Vec::new();
    for _ in 0..steps {
        // Start whoever may, in queue order (as the pollers would find it).
        for i in 0..cost.len() as u64 {
            let e = queue.iter().position(|e| e.id == i).unwrap();
            if !queue[e].running && may_start(&queue, i, per_group) {
                queue[e].running = true;
                left[i as usize] = cost[i as usize];
                starts.push(i);
            }
        }
        for g in groups
            .iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>()
        {
            let running = queue.iter().filter(|e| e.group == g && e.running).count();
            assert!(
                running <= per_group.max(1),
                "group {g}: {running} batches at once"
            );
        }
        // One step of work; finished batches leave and ask again at the back.
        for (i, l) in left.iter_mut().enumerate() {
            let e = queue.iter().position(|e| e.id == i as u64).unwrap();
            if queue[e].running {
                *l -= 1;
                if *l == 0 {
                    let mut me = queue.remove(e);
                    me.running = false;
                    queue.push(me);
                }
            }
        }
    }
    starts
}

#[test]
fn turns_cycle_over_the_volumes_of_a_group() {
    // Three volumes of one group, batches of very different cost: strict rotation.
    let starts = simulate_turns(&[1, 7, 3], &[1, 1, 1], 1, 200);
    assert!(starts.len() > 20);
    for w in starts.windows(3) {
        let mut s = w.to_vec();
        s.sort_unstable();
        assert_eq!(s, vec![0, 1, 2], "not a rotation: {starts:?}");
    }
    // Another group is not held up by this one.
    let starts = simulate_turns(&[5, 5, 1], &[1, 1, 2], 1, 100);
    let lone = starts.iter().filter(|&&i| i == 2).count();
    assert!(
        lone >= 90,
        "the volume alone in its group ran {lone} batches"
    );
}

#[test]
fn turns_edge_cases() {
    let q = [
        TurnEntry {
            group: 1,
            id: 4,
            running: false,
        },
        TurnEntry {
            group: 2,
            id: 5,
            running: false,
        },
        TurnEntry {
            group: 1,
            id: 6,
            running: false,
        },
    ];
    assert!(may_start(&q, 4, 1));
    assert!(may_start(&q, 5, 1));
    assert!(!may_start(&q, 6, 1));
    assert!(may_start(&q, 6, 2));
    assert!(!may_start(&q, 7, 1), "no entry, no turn");
    assert!(may_start(&q, 4, 0), "a limit of 0 counts as 1");
}

proptest! {
    #[test]
    fn turns_are_fair_and_bounded(
        cost in proptest::collection::vec(1u32..6, 1..6),
        per_group in 1usize..4,
    ) {
        let n = cost.len();
        let groups = vec![1u64; n];
        // `simulate_turns` asserts the bound on batches at once.
        let starts = simulate_turns(&cost, &groups, per_group, 300);
        let mut counts = vec![0usize; n];
        for &i in &starts {
            counts[i as usize] += 1;
        }
        let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        // Nobody starves.
        prop_assert!(*lo > 0, "counts {:?}", counts);
        if per_group == 1 {
            // One batch at a time (the module's rule): a strict rotation, whatever the costs.
            prop_assert!(hi - lo <= 1, "counts {:?}", counts);
        }
    }
}

fn reads_of(pieces: &[(u64, u64)], limits: ReadLimits) -> Vec<LogRead> {
    let mut v = Vec::new();
    plan_reads(pieces.iter().copied(), limits, |r| v.push(r));
    v
}

#[test]
fn log_reads_join_neighbours_within_the_caps() {
    let l = ReadLimits {
        max_sectors: 64,
        max_gap: 8,
    };
    // 4 KiB records: 8 sectors of header, then 8 of data.
    let recs: Vec<(u64, u64)> = (0..6).map(|i| (8 + 16 * i, 8)).collect();
    let r = reads_of(&recs, l);
    // 64 sectors hold the data of the first four records (8..64), the rest takes a second read.
    assert_eq!(
        r,
        vec![
            LogRead { start: 8, sectors: 56, first: 0, count: 4 },
            LogRead { start: 72, sectors: 24, first: 4, count: 2 },
        ]
    );
    // A gap wider than max_gap splits; a piece larger than the cap goes alone.
    let r = reads_of(&[(0, 8), (17, 8), (25, 100), (125, 1)], l);
    assert_eq!(
        r,
        vec![
            LogRead { start: 0, sectors: 8, first: 0, count: 1 },
            LogRead { start: 17, sectors: 8, first: 1, count: 1 },
            LogRead { start: 25, sectors: 100, first: 2, count: 1 },
            LogRead { start: 125, sectors: 1, first: 3, count: 1 },
        ]
    );
    assert!(reads_of(&[], l).is_empty());
    // Adjacent pieces (one record split by a newer write's removal) join with no gap.
    assert_eq!(reads_of(&[(0, 4), (4, 4)], l), vec![LogRead { start: 0, sectors: 8, first: 0, count: 2 }]);
}

proptest! {
    /// Every piece is in exactly one read, in order, and inside it; reads are within the caps
    /// unless they hold a single piece; neighbours within the caps were joined.
    #[test]
    fn log_reads_cover_every_piece(gaps in proptest::collection::vec((0u64..40, 1u64..30), 0..30),
                                   max_sectors in 1u64..120, max_gap in 0u64..20) {
        let mut at = 0u64;
        let pieces: Vec<(u64, u64)> = gaps.iter().map(|&(g, n)| { let p = (at + g, n); at += g + n; p }).collect();
        let limits = ReadLimits { max_sectors, max_gap };
        let reads = reads_of(&pieces, limits);
        let mut next = 0usize;
        for (k, r) in reads.iter().enumerate() {
            prop_assert_eq!(r.first, next);
            prop_assert!(r.count >= 1);
            next += r.count;
            let mine = &pieces[r.first..r.first + r.count];
            prop_assert_eq!(r.start, mine[0].0);
            prop_assert!(mine.iter().all(|&(s, n)| s >= r.start && s + n <= r.start + r.sectors));
            prop_assert_eq!(r.start + r.sectors, mine[mine.len() - 1].0 + mine[mine.len() - 1].1);
            if r.count > 1 {
                prop_assert!(r.sectors <= max_sectors);
            }
            if let Some(n) = reads.get(k + 1) {
                let (s, len) = pieces[n.first];
                let joinable = s - (r.start + r.sectors) <= max_gap && s + len - r.start <= max_sectors;
                prop_assert!(!joinable);
            }
        }
        prop_assert_eq!(next, pieces.len());
    }
}

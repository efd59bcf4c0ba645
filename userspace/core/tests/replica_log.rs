//! Model test of the replica log (`replica_log`): random records and checkpoints against a
//! model that keeps every record of every segment. The log must never overwrite a segment that
//! holds a record the checkpoint does not cover, must refuse a record only when its credit says
//! there is no room, and its credit must never promise room it cannot give.

use peerflash_core::replica_log::ReplicaLog;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Write(u64),
    Checkpoint(u64),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(prop_oneof![4 => (1u64..=9).prop_map(Op::Write), 1 => (0u64..=6).prop_map(Op::Checkpoint)], 1..200)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn never_overwrites_what_a_replay_needs(segments in 2u64..6, seg_sectors in 9u64..20, ops in ops()) {
        let mut seg_max = vec![0u64; segments as usize];
        let mut model: Vec<Vec<u64>> = vec![Vec::new(); segments as usize];
        let mut log = ReplicaLog::full_at(segments, seg_sectors, segments - 1, 0);
        let mut serial = 0u64;
        for op in ops {
            match op {
                Op::Write(footprint) => {
                    let credit = log.free_sectors(&seg_max);
                    let head = log.segment;
                    serial += 1;
                    match log.place(&mut seg_max, footprint, serial) {
                        Some((seg, off)) => {
                            prop_assert!(credit >= footprint, "placed beyond the credit {credit}");
                            prop_assert!(off + footprint <= seg_sectors);
                            if seg != head {
                                // Entering a segment: everything in it must be covered.
                                prop_assert!(model[seg as usize].iter().all(|&s| s <= log.checkpoint),
                                    "segment {seg} overwritten with {:?} past checkpoint {}", model[seg as usize], log.checkpoint);
                                model[seg as usize].clear();
                            }
                            model[seg as usize].push(serial);
                        }
                        None => {
                            prop_assert!(credit < footprint, "refused with credit {credit} for {footprint}");
                            serial -= 1;
                        }
                    }
                }
                Op::Checkpoint(back) => {
                    // The primary's checkpoint only grows, and never passes what it wrote.
                    log.checkpoint = log.checkpoint.max(serial.saturating_sub(back));
                }
            }
            for (s, recs) in model.iter().enumerate() {
                prop_assert_eq!(seg_max[s], recs.iter().copied().max().unwrap_or(0));
            }
        }
    }
}

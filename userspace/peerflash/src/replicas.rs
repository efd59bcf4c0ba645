//! A wbp volume's replica set as the agent handles it: where a run's set is placed, the
//! `replicas` attribute of a set, the members the module shows lost, and the rule by which lost
//! members leave the set (the lock record first, then the module).

use anyhow::Result;
use peerflash_core::replication::ReplicaSet;

/// Where a run of a wbp volume on host `me` places its replicas: the first `wanted` of the
/// operator's `peers`, in the operator's order, that answer now (`reachable`, asked only until
/// enough answered), never `me` (a VM that moved to one of its own peers keeps no replica of
/// itself). Returns the members and the peers passed over. With fewer than `wanted` answering,
/// the set is smaller and the volume runs write-through (`replication::effective_policy`): it
/// starts rather than failing because a peer host is down.
pub fn place(peers: &[u32], wanted: usize, me: u32, mut reachable: impl FnMut(u32) -> bool) -> (Vec<u32>, Vec<u32>) {
    let mut members = Vec::new();
    let mut passed = Vec::new();
    for &p in peers {
        if members.len() >= wanted {
            break;
        }
        if p == me {
            continue;
        }
        if !members.contains(&p) && reachable(p) {
            members.push(p);
        } else {
            passed.push(p);
        }
    }
    (members, passed)
}

/// The `replicas` attribute of a set: `EPOCH GEN WANTED HOST...`.
pub fn replicas_attr(set: &ReplicaSet, generation: u64, wanted: u32) -> String {
    let mut s = format!("{} {} {}", set.epoch, generation, wanted);
    for m in set.members() {
        s.push_str(&format!(" {m}"));
    }
    s
}

/// The set without the members in `lost`, at the next epoch; `None` when none of them is a
/// member of `recorded` (nothing to change) or the epoch would overflow.
fn set_without(recorded: &ReplicaSet, lost: &[u32]) -> Option<ReplicaSet> {
    if !lost.iter().any(|h| recorded.contains(*h)) {
        return None;
    }
    let rest: Vec<u32> = recorded.members().iter().copied().filter(|m| !lost.contains(m)).collect();
    ReplicaSet::new(recorded.epoch.checked_add(1)?, &rest)
}

/// Members `lost` leave the set: the lock record gets the set without them first
/// (`write_record`), and only once it holds it the module puts it in force (`put_in_force`, the
/// `replicas` attribute): the module never runs a set the record lacks, so a host that takes the
/// volume over never replays a replica of a member the primary already wrote off. Returns the
/// attribute put in force, if anything changed.
pub fn leave_set(
    recorded: &ReplicaSet,
    lost: &[u32],
    generation: u64,
    wanted: u32,
    write_record: impl FnOnce(ReplicaSet) -> Result<()>,
    put_in_force: impl FnOnce(&str) -> Result<()>,
) -> Result<Option<String>> {
    let Some(set) = set_without(recorded, lost) else {
        return Ok(None);
    };
    write_record(set)?;
    let attr = replicas_attr(&set, generation, wanted);
    put_in_force(&attr)?;
    Ok(Some(attr))
}

/// The hosts the module's `replicas` file shows as lost (`host H state lost ...` lines).
pub fn lost_hosts(text: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                ["host", h, "state", "lost", ..] => h.parse().ok(),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::anyhow;

    #[test]
    fn the_record_holds_a_set_before_the_module_runs_it() {
        let set = ReplicaSet::new(4, &[2, 3, 5]).unwrap();
        // Nothing lost, or only hosts that are not members: nothing is written.
        for lost in [&[][..], &[7][..]] {
            let r = leave_set(&set, lost, 9, 3, |_| panic!("no record write"), |_| panic!("no module write"));
            assert_eq!(r.unwrap(), None);
        }
        // Two lost at once: one new epoch without both, recorded, then in force.
        let order = std::cell::RefCell::new(Vec::new());
        let r = leave_set(
            &set,
            &[3, 5],
            9,
            3,
            |s| {
                order.borrow_mut().push(format!("record {:?}@{}", s.members(), s.epoch));
                Ok(())
            },
            |a| {
                order.borrow_mut().push(format!("module {a}"));
                Ok(())
            },
        );
        assert_eq!(r.unwrap().as_deref(), Some("5 9 3 2"));
        assert_eq!(*order.borrow(), ["record [2]@5", "module 5 9 3 2"]);
        // The record cannot be written (the lease ran out): the module keeps its set.
        let r = leave_set(&set, &[3], 9, 3, |_| Err(anyhow!("lease gone")), |_| panic!("module written without the record"));
        assert!(r.is_err());
    }

    #[test]
    fn a_run_is_placed_on_the_first_peers_that_answer() {
        let asked = std::cell::RefCell::new(Vec::new());
        let up = |down: &'static [u32]| {
            let asked = &asked;
            move |h: u32| {
                asked.borrow_mut().push(h);
                !down.contains(&h)
            }
        };
        // All answer: the operator's first two, and the third is never asked.
        assert_eq!(place(&[4, 2, 3], 2, 9, up(&[])), (vec![4, 2], vec![]));
        assert_eq!(*asked.borrow(), [4, 2]);
        // The first is down: the next in the operator's order takes its place.
        assert_eq!(place(&[4, 2, 3], 2, 9, up(&[4])), (vec![2, 3], vec![4]));
        // Too few answer: a smaller set (the volume runs write-through), never a host outside
        // `peers`.
        assert_eq!(place(&[4, 2], 2, 9, up(&[4])), (vec![2], vec![4]));
        assert_eq!(place(&[4, 2], 2, 9, up(&[4, 2])), (vec![], vec![4, 2]));
        // A peer named twice is placed once.
        assert_eq!(place(&[2, 2, 3], 2, 9, up(&[])), (vec![2, 3], vec![2]));
        // The host the volume runs on is one of its peers: never its own member, never asked,
        // never reported as passed over.
        asked.borrow_mut().clear();
        assert_eq!(place(&[4, 2, 3], 2, 4, up(&[])), (vec![2, 3], vec![]));
        assert!(!asked.borrow().contains(&4));
    }

    #[test]
    fn lost_members_are_read_from_the_modules_file() {
        let text = "epoch 2 gen 5 wanted 2 members 2 3\n\
                    host 2 state up owed 0 lag_bytes 0\n\
                    host 3 state lost owed 4 lag_bytes 16384\n";
        assert_eq!(lost_hosts(text), vec![3]);
        assert_eq!(lost_hosts("none\n"), Vec::<u32>::new());
        let set = ReplicaSet::new(2, &[2, 3]).unwrap().without(3).unwrap();
        assert_eq!(replicas_attr(&set, 5, 2), "3 5 2 2");
        // What the agent writes is what the module parses.
        let c = peerflash_core::replication::parse_set_config(replicas_attr(&set, 5, 2).as_bytes(), 1).unwrap();
        assert_eq!((c.set, c.gen, c.wanted), (set, 5, 2));
    }
}

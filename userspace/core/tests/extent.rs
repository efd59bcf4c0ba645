//! Index rules against a per-sector model: whatever the order writes complete in, every sector
//! maps to its newest write, the map never overlaps, and the totals add up.

use peerflash_core::btree::BTreeIndex;
use peerflash_core::extent::*;
use proptest::prelude::*;

/// The userspace index, checked on every insertion that it never overlaps.
#[derive(Default)]
struct Map(BTreeIndex);

impl ExtentMap for Map {
    type Error = std::convert::Infallible;
    fn first_overlapping(&self, start: u64, end: u64) -> Option<Extent> {
        assert!(start < end, "empty range asked for");
        self.0.first_overlapping(start, end)
    }
    fn remove(&mut self, lba: u64) {
        assert!(
            self.0 .0.contains_key(&lba),
            "removing an extent that does not exist"
        );
        self.0.remove(lba)
    }
    fn insert(&mut self, e: Extent) -> Result<(), Self::Error> {
        assert!(e.len > 0);
        assert!(
            self.0.first_overlapping(e.lba, e.end()).is_none(),
            "overlapping insert {e:?}"
        );
        self.0.insert(e)
    }
}

const SECTORS: u64 = 64;

/// Per sector: (serial, flash address, dirty) of the newest write.
type Model = Vec<Option<(u64, u64, bool)>>;

fn check(map: &Map, model: &Model, cached: i64, dirty: i64) {
    let mut c = 0;
    let mut d = 0;
    let mut prev_end = 0;
    for e in map.0 .0.values() {
        assert!(e.lba >= prev_end, "extents overlap");
        prev_end = e.end();
        c += e.len as i64;
        if e.dirty {
            d += e.len as i64;
        }
    }
    assert_eq!((c, d), (cached, dirty), "totals");
    for s in 0..SECTORS {
        let got = map
            .first_overlapping(s, s + 1)
            .map(|e| (e.serial, e.flash + (s - e.lba), e.dirty));
        assert_eq!(got, model[s as usize], "sector {s}");
    }
}

#[derive(Debug, Clone)]
enum Op {
    Write { lba: u64, len: u64, dirty: bool },
    Clean(usize),
    Evict(usize),
    Invalidate { lba: u64, len: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..SECTORS, 1..16u64, any::<bool>()).prop_map(|(lba, len, dirty)| Op::Write { lba, len: len.min(SECTORS - lba), dirty }),
        1 => any::<usize>().prop_map(Op::Clean),
        1 => any::<usize>().prop_map(Op::Evict),
        1 => (0..SECTORS, 1..16u64).prop_map(|(lba, len)| Op::Invalidate { lba, len: len.min(SECTORS - lba) }),
    ]
}

proptest! {
    #[test]
    fn index_follows_the_newest_write(ops in proptest::collection::vec(op(), 1..60), order in any::<u64>()) {
        let mut map = Map::default();
        let mut model: Model = vec![None; SECTORS as usize];
        let (mut cached, mut dirty) = (0i64, 0i64);
        // Writes get serials in issue order but complete (are applied) in a shuffled order.
        let mut writes: Vec<Extent> = Vec::new();
        let mut applied: Vec<Extent> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            if let Op::Write { lba, len, dirty } = *op {
                writes.push(Extent { lba, len, flash: 10_000 * (i as u64 + 1), serial: i as u64 + 1, dirty });
            }
        }
        let mut pending = writes.clone();
        let mut rng = order;
        for op in &ops {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            match op {
                Op::Write { .. } => {
                    if pending.is_empty() { continue; }
                    let w = pending.remove((rng >> 33) as usize % pending.len());
                    let d = apply(&mut map, w).unwrap();
                    cached += d.cached;
                    dirty += d.dirty;
                    for s in w.lba..w.end() {
                        let slot = &mut model[s as usize];
                        if slot.is_none_or(|(serial, _, _)| serial < w.serial) {
                            *slot = Some((w.serial, w.flash + (s - w.lba), w.dirty));
                        }
                    }
                    applied.push(w);
                }
                Op::Clean(k) if !applied.is_empty() => {
                    let w = applied[k % applied.len()];
                    let d = mark_clean(&mut map, w.lba, w.len, w.serial).unwrap();
                    cached += d.cached;
                    dirty += d.dirty;
                    for s in w.lba..w.end() {
                        if let Some((serial, _, dirty)) = &mut model[s as usize] {
                            if *serial == w.serial { *dirty = false; }
                        }
                    }
                }
                Op::Evict(k) if !applied.is_empty() => {
                    let w = applied[k % applied.len()];
                    let d = remove_record(&mut map, w.lba, w.len, w.serial).unwrap();
                    cached += d.cached;
                    dirty += d.dirty;
                    for s in w.lba..w.end() {
                        if model[s as usize].is_some_and(|(serial, _, _)| serial == w.serial) {
                            model[s as usize] = None;
                        }
                    }
                }
                Op::Invalidate { lba, len } => {
                    let d = invalidate(&mut map, *lba, lba + len).unwrap();
                    cached += d.cached;
                    dirty += d.dirty;
                    for s in *lba..lba + len {
                        model[s as usize] = None;
                    }
                }
                _ => {}
            }
            check(&map, &model, cached, dirty);
        }
    }

    /// `walk` covers a range exactly once, in order, with what the index holds.
    #[test]
    fn walk_covers_the_range(writes in proptest::collection::vec((0..SECTORS, 1..16u64), 0..20), start in 0..SECTORS, len in 0..SECTORS) {
        let mut map = Map::default();
        for (i, (lba, n)) in writes.iter().enumerate() {
            let n = (*n).min(SECTORS - lba);
            apply(&mut map, Extent { lba: *lba, len: n, flash: 1000 * i as u64, serial: i as u64 + 1, dirty: true }).unwrap();
        }
        let end = (start + len).min(SECTORS);
        let mut cursor = start;
        walk(&map, start, end, |s, e, piece| {
            assert_eq!(s, cursor);
            assert!(s < e);
            if let Some(p) = piece {
                assert_eq!((p.lba, p.end()), (s, e));
                assert_eq!(map.first_overlapping(s, s + 1).map(|x| x.serial), Some(p.serial));
            } else {
                assert!(map.first_overlapping(s, e).is_none());
            }
            cursor = e;
        });
        prop_assert_eq!(cursor, end.max(start));
    }
}

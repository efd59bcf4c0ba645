//! The index rules: how a volume's sectors map to records on flash.
//!
//! The index holds non-overlapping [`Extent`]s, each a run of volume sectors whose newest copy
//! is in one record on flash. A newer write (higher serial) supersedes an older one where they
//! overlap; an older write that completes after a newer one (they were in flight together) loses
//! the overlap, so the index never goes back in time. The container is the caller's (a red-black
//! tree in the module, a `BTreeMap` in userspace) behind [`ExtentMap`]; the rules are here, once.

/// A run of volume sectors held in one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First volume sector.
    pub lba: u64,
    /// Length in sectors (at least 1).
    pub len: u64,
    /// Cache device sector holding the data of `lba`.
    pub flash: u64,
    /// Serial of the record.
    pub serial: u64,
    /// Whether the data is not yet on the SAN.
    pub dirty: bool,
}

impl Extent {
    /// One past the last sector.
    pub fn end(&self) -> u64 {
        self.lba.saturating_add(self.len)
    }

    /// Whether the extent shares a sector with `[start, end)`.
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        self.lba < end && start < self.end()
    }

    /// The part of the extent inside `[start, end)`, with its flash address moved along.
    pub fn slice(&self, start: u64, end: u64) -> Option<Extent> {
        let s = self.lba.max(start);
        let e = self.end().min(end);
        (s < e).then(|| Extent {
            lba: s,
            len: e - s,
            flash: self.flash + (s - self.lba),
            ..*self
        })
    }
}

/// The container of a volume's extents, keyed by `lba`. Implementations keep extents
/// non-overlapping only through [`apply`] and [`remove_record`].
pub trait ExtentMap {
    /// Error of an insertion (allocation failure in the kernel).
    type Error;
    /// The extent with the lowest `lba` that overlaps `[start, end)`, if any.
    fn first_overlapping(&self, start: u64, end: u64) -> Option<Extent>;
    /// Removes the extent starting at `lba` (it exists).
    fn remove(&mut self, lba: u64);
    /// Inserts an extent (its range is free).
    fn insert(&mut self, e: Extent) -> Result<(), Self::Error>;
}

/// What a change did to the volume's totals, in sectors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta {
    /// Change in sectors held on flash (dirty or clean).
    pub cached: i64,
    /// Change in dirty sectors.
    pub dirty: i64,
}

impl Delta {
    fn add(&mut self, e: &Extent, sign: i64) {
        let n = i64::try_from(e.len).unwrap_or(i64::MAX) * sign;
        self.cached += n;
        if e.dirty {
            self.dirty += n;
        }
    }
}

/// Records that the sectors of `new` are now held in its record, except where the index already
/// holds a newer serial. Returns what changed. On an insertion error the map is still
/// non-overlapping but may have lost older extents of the range (callers treat it as a failed
/// write of the range and must not serve the range from flash for the older data: it was
/// superseded anyway, since `new` is newer).
pub fn apply<M: ExtentMap>(map: &mut M, new: Extent) -> Result<Delta, M::Error> {
    let mut delta = Delta::default();
    let end = new.end();
    let mut cursor = new.lba;
    let mut pending = new.lba;
    while cursor < end {
        let Some(e) = map.first_overlapping(cursor, end) else {
            break;
        };
        if e.serial < new.serial {
            // Older: keep only what lies outside the new write.
            map.remove(e.lba);
            delta.add(&e, -1);
            for piece in [e.slice(e.lba, new.lba), e.slice(end, e.end())]
                .into_iter()
                .flatten()
            {
                map.insert(piece)?;
                delta.add(&piece, 1);
            }
        } else {
            // Newer (or the same record): the new write fills only the gap before it.
            if let Some(gap) = new.slice(pending, e.lba) {
                map.insert(gap)?;
                delta.add(&gap, 1);
            }
            cursor = e.end();
            pending = cursor;
        }
    }
    if let Some(rest) = new.slice(pending, end) {
        map.insert(rest)?;
        delta.add(&rest, 1);
    }
    Ok(delta)
}

/// Calls `f` on each extent left in the index of record `serial` within `[lba, lba + len)`, in
/// address order; `f` may replace or remove the extent it is given.
fn each_piece_of<M: ExtentMap>(
    map: &mut M,
    lba: u64,
    len: u64,
    serial: u64,
    mut f: impl FnMut(&mut M, Extent) -> Result<(), M::Error>,
) -> Result<(), M::Error> {
    let end = lba.saturating_add(len);
    let mut cursor = lba;
    while cursor < end {
        let Some(e) = map.first_overlapping(cursor, end) else {
            break;
        };
        cursor = e.end();
        if e.serial == serial {
            f(map, e)?;
        }
    }
    Ok(())
}

/// Removes what is left in the index of record `serial`, which covered `[lba, lba + len)`:
/// used when its flash space is reused. Returns what changed.
pub fn remove_record<M: ExtentMap>(
    map: &mut M,
    lba: u64,
    len: u64,
    serial: u64,
) -> Result<Delta, M::Error> {
    let mut delta = Delta::default();
    each_piece_of(map, lba, len, serial, |map, e| {
        map.remove(e.lba);
        delta.add(&e, -1);
        Ok(())
    })?;
    Ok(delta)
}

/// Marks clean what is left in the index of record `serial` in `[lba, lba + len)`: it is on the
/// SAN now. Returns what changed.
pub fn mark_clean<M: ExtentMap>(
    map: &mut M,
    lba: u64,
    len: u64,
    serial: u64,
) -> Result<Delta, M::Error> {
    let mut delta = Delta::default();
    each_piece_of(map, lba, len, serial, |map, e| {
        if e.dirty {
            map.remove(e.lba);
            map.insert(Extent { dirty: false, ..e })?;
            delta.dirty -= i64::try_from(e.len).unwrap_or(i64::MAX);
        }
        Ok(())
    })?;
    Ok(delta)
}

/// Removes `[start, end)` from the index, keeping what lies outside it of the extents that
/// cross its ends: the cache forgets the range (its data changed on the SAN behind the cache,
/// e.g. a discard). Callers make sure no dirty data is in the range. Returns what changed.
pub fn invalidate<M: ExtentMap>(map: &mut M, start: u64, end: u64) -> Result<Delta, M::Error> {
    let mut delta = Delta::default();
    while let Some(e) = map.first_overlapping(start, end) {
        map.remove(e.lba);
        delta.add(&e, -1);
        for piece in [e.slice(e.lba, start), e.slice(end, e.end())]
            .into_iter()
            .flatten()
        {
            map.insert(piece)?;
            delta.add(&piece, 1);
        }
    }
    Ok(delta)
}

/// Visits, in address order, the pieces of `[start, end)`: `Some(extent)` for a part held on
/// flash, `None` with the gap's range for a part that is not.
pub fn walk<M: ExtentMap>(
    map: &M,
    start: u64,
    end: u64,
    mut visit: impl FnMut(u64, u64, Option<Extent>),
) {
    let mut cursor = start;
    while cursor < end {
        match map
            .first_overlapping(cursor, end)
            .and_then(|e| e.slice(cursor, end))
        {
            Some(piece) => {
                if cursor < piece.lba {
                    visit(cursor, piece.lba, None);
                }
                visit(piece.lba, piece.end(), Some(piece));
                cursor = piece.end();
            }
            None => {
                visit(cursor, end, None);
                cursor = end;
            }
        }
    }
}

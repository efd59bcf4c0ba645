//! Where a peer puts a primary's records in a replica slot's region (policy wbp), and how much it
//! can take: the replica's log (Documentation/design.md, "Replicas on the peers").
//!
//! The region is a ring of segments, written in order like the primary's log, with the same
//! record format and the primary's serials. A record never crosses a segment end. The log moves
//! into the next segment only when every record there is covered by the replica's checkpoint
//! (the primary's, sent after it persisted it: every write up to it is on the SAN or
//! superseded), so nothing a replay could still need is overwritten; without such a segment the
//! replica is full and the write is refused (the primary waits for a checkpoint, never drops it).
//!
//! `seg_max[s]` is the highest serial recorded in segment `s` (0: none), kept by the caller (one
//! entry per segment of the region, rebuilt by the scan after a restart).

/// The replica log's head and checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaLog {
    /// Segments in the region (at least 2).
    pub segments: u64,
    /// Sectors per segment.
    pub segment_sectors: u64,
    /// Segment the log writes in (relative to the region).
    pub segment: u64,
    /// Next free sector in it.
    pub offset: u64,
    /// Every record with a serial at most this may be overwritten.
    pub checkpoint: u64,
}

impl ReplicaLog {
    /// A log whose head is full at segment `segment` (so the first record moves on through the
    /// reuse check): a new region (`segment` = the last one) or one rebuilt by a scan (the
    /// segment holding the highest serial).
    pub fn full_at(segments: u64, segment_sectors: u64, segment: u64, checkpoint: u64) -> ReplicaLog {
        ReplicaLog { segments, segment_sectors, segment: segment.min(segments.saturating_sub(1)), offset: segment_sectors, checkpoint }
    }

    fn next(&self, s: u64) -> u64 {
        if s.saturating_add(1) >= self.segments {
            0
        } else {
            s + 1
        }
    }

    fn reusable(&self, seg_max: &[u64], s: u64) -> bool {
        usize::try_from(s).ok().and_then(|i| seg_max.get(i)).is_some_and(|&m| m <= self.checkpoint)
    }

    /// Places a record of `footprint` sectors with `serial`: its (segment, offset), with the head
    /// moved past it and `seg_max` updated; `None` when the replica is full (or the record can
    /// never fit a segment).
    pub fn place(&mut self, seg_max: &mut [u64], footprint: u64, serial: u64) -> Option<(u64, u64)> {
        if footprint == 0 || footprint > self.segment_sectors || seg_max.len() as u64 != self.segments {
            return None;
        }
        if self.offset.checked_add(footprint).is_none_or(|end| end > self.segment_sectors) {
            let n = self.next(self.segment);
            if n == self.segment || !self.reusable(seg_max, n) {
                return None;
            }
            *seg_max.get_mut(usize::try_from(n).ok()?)? = 0;
            self.segment = n;
            self.offset = 0;
        }
        let at = (self.segment, self.offset);
        self.offset += footprint;
        let m = seg_max.get_mut(usize::try_from(self.segment).ok()?)?;
        *m = (*m).max(serial);
        Some(at)
    }

    /// Sectors the log can still take without overwriting a record the checkpoint does not
    /// cover: the rest of the head segment and the reusable segments after it, in ring order up
    /// to the first that is not (the peer's credit).
    pub fn free_sectors(&self, seg_max: &[u64]) -> u64 {
        let mut free = self.segment_sectors.saturating_sub(self.offset);
        let mut s = self.next(self.segment);
        while s != self.segment && self.reusable(seg_max, s) {
            free = free.saturating_add(self.segment_sectors);
            s = self.next(s);
        }
        free
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_then_waits_for_the_checkpoint() {
        let mut seg_max = [0u64; 3];
        let mut log = ReplicaLog::full_at(3, 8, 2, 0);
        // The head segment is full until the log comes round to it: 16, not 24.
        assert_eq!(log.free_sectors(&seg_max), 16);
        // Six records of 4 sectors fill the three empty segments, from segment 0.
        for serial in 1..=6 {
            assert!(log.place(&mut seg_max, 4, serial).is_some(), "record {serial}");
        }
        assert_eq!(seg_max, [2, 4, 6]);
        assert_eq!(log.free_sectors(&seg_max), 0);
        assert_eq!(log.place(&mut seg_max, 4, 7), None, "overwrote records the checkpoint does not cover");
        // A checkpoint at 3 frees segment 0 only (segment 1 holds serial 4).
        log.checkpoint = 3;
        assert_eq!(log.free_sectors(&seg_max), 8);
        assert_eq!(log.place(&mut seg_max, 4, 7), Some((0, 0)));
        assert_eq!(log.place(&mut seg_max, 4, 8), Some((0, 4)));
        assert_eq!(log.place(&mut seg_max, 4, 9), None);
        assert_eq!(log.place(&mut seg_max, 9, 9), None, "a record larger than a segment");
    }
}

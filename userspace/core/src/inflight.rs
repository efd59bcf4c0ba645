//! The operations in flight that others must not overtake, and the two rules read from them:
//! which new operation overlaps one of them, and the highest serial a checkpoint may pass.

/// An operation in flight: it holds a serial from its start to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlight {
    pub serial: u64,
    pub lba: u64,
    pub len: u64,
    /// Goes to the SAN directly (write-through, discard, write-zeroes, read population's SAN
    /// copy).
    pub san: bool,
    /// A write-back write of the fast path: acknowledged when its flash write completes,
    /// indexed afterwards.
    pub early: bool,
}

/// Whether an operation of `ops` overlaps `[lba, lba + len)` (`san_only`: only those that go to
/// the SAN directly).
pub fn overlaps(ops: &[InFlight], lba: u64, len: u64, san_only: bool) -> bool {
    let end = lba.saturating_add(len);
    ops.iter()
        .any(|i| (i.san || !san_only) && i.lba < end && lba < i.lba.saturating_add(i.len))
}

/// The highest serial below every operation of `ops` (`next_serial`: the next to be issued,
/// above every serial issued): a checkpoint at it passes nothing still in flight.
pub fn safe_serial(ops: &[InFlight], next_serial: u64) -> u64 {
    ops.iter()
        .map(|i| i.serial.saturating_sub(1))
        .min()
        .unwrap_or(next_serial.saturating_sub(1))
}

/// Whether a fast-path write is in flight (it may be acknowledged and not yet indexed).
pub fn any_early(ops: &[InFlight]) -> bool {
    ops.iter().any(|i| i.early)
}

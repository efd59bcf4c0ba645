//! Write admission with a cache: whether a write starts now (and where it goes), or what it
//! waits for. The module's fast path starts a write-back write from `queue_rq` only when this
//! says [`Admit::Place`]; the worker loops on it.

use super::mode::Mode;

/// What the decision looks at, read under the state lock. What a case does not look at may be
/// left `false`: the overlaps a policy does not search, and the lease for write-back in a
/// healthy cache (the module reads only what it needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteView {
    pub mode: Mode,
    /// Bypassing, a checkpoint must be written before the SAN takes more writes.
    pub floor_pending: bool,
    /// No lease is enforced, or it is still valid.
    pub san_allowed: bool,
    /// The policy is write-through.
    pub write_through: bool,
    /// An operation in flight that goes to the SAN directly overlaps the write.
    pub overlaps_san_in_flight: bool,
    /// Any operation in flight overlaps the write.
    pub overlaps_in_flight: bool,
    /// Dirty data overlaps the write.
    pub overlaps_dirty: bool,
}

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// The volume has failed: the write fails.
    Fail,
    /// Bypassing: write the switch's checkpoint first (or wait for whoever writes it).
    SettleFloor,
    /// The lease has run out: wait for its renewal. `counted`: a write wait (in write-through;
    /// a bypassed volume's writes only wait).
    WaitLease { counted: bool },
    /// Bypassing: the write goes to the SAN as it is.
    ToSan,
    /// Nothing in its way: take room in the log and start it.
    Place,
    /// Something in flight on its blocks (or, in write-through, older dirty data of them) must
    /// end first: wait, asking the destager to drain.
    Blocked,
}

/// Write-back: waits only for what goes to the SAN directly on its blocks (the index orders
/// the rest by serial). Write-through goes to the SAN now: it waits for the lease, for any
/// operation in flight on its blocks (the SAN and the index must agree on the last one) and
/// for older dirty data of its blocks to be destaged (else a replay could overwrite it).
pub fn admit_write(v: &WriteView) -> Admit {
    match v.mode {
        Mode::Failed => return Admit::Fail,
        Mode::Bypass if v.floor_pending => return Admit::SettleFloor,
        Mode::Bypass if !v.san_allowed => return Admit::WaitLease { counted: false },
        Mode::Bypass => return Admit::ToSan,
        Mode::Normal => {}
    }
    if v.write_through && !v.san_allowed {
        return Admit::WaitLease { counted: true };
    }
    let blocked = if v.write_through {
        v.overlaps_in_flight || v.overlaps_dirty
    } else {
        v.overlaps_san_in_flight
    };
    if blocked {
        Admit::Blocked
    } else {
        Admit::Place
    }
}

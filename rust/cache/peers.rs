// SPDX-License-Identifier: GPL-2.0

//! What the cache needs of a wbp volume's replica set: send a record to every member and wait
//! for their acknowledgements, flush them, have them persist a checkpoint. The peer wing
//! implements it (`peer::mirror::Mirror`) and the control interface hands it to the cache
//! (`Cache::set_peers`), so the cache wing imports nothing of the peer wing.

use core::sync::atomic::{AtomicU32, Ordering};

use kernel::prelude::*;
use kernel::sync::Arc;

use crate::blk::request::RequestData;
use crate::pfcore::replication::SetConfig;
use crate::pfcore::wire::{WriteHead, WRITE_FUA};

/// How many members still owe an answer to one request.
pub(crate) struct Ticket {
    left: AtomicU32,
}

impl Ticket {
    /// A ticket that counts nothing yet.
    pub(crate) fn new() -> Result<Arc<Ticket>> {
        Ok(Arc::new(Ticket { left: AtomicU32::new(0) }, GFP_KERNEL)?)
    }

    /// Counts `n` members.
    pub(crate) fn count(&self, n: usize) {
        self.left.store(u32::try_from(n).unwrap_or(u32::MAX), Ordering::Release);
    }

    /// One member no longer owes an answer.
    pub(crate) fn release(&self) {
        let _ = self.left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |l| l.checked_sub(1));
    }

    /// Whether no member owes an answer.
    pub(crate) fn done(&self) -> bool {
        self.left.load(Ordering::Acquire) == 0
    }
}

/// A wbp volume's replica set as the cache uses it.
pub(crate) trait Replicas: Send + Sync {
    /// Sends record `head` with `rq`'s data to every member, counting each on `t`.
    fn send_write(&self, t: &Arc<Ticket>, rq: &dyn RequestData, head: WriteHead) -> Result;
    /// Waits until every member counted on `t` answered or left the set; `EIO` when the
    /// volume closes first.
    fn wait(&self, t: &Ticket) -> Result;
    /// Makes what the members acknowledged stable on their flash.
    fn flush(&self) -> Result;
    /// Has every member persist checkpoint `serial`.
    fn checkpoint(&self, serial: u64) -> Result;
    /// Puts a smaller set in force (checked by the caller).
    fn change_set(&self, new: SetConfig) -> Result;
    /// How long an answer may be owed before its member is lost.
    fn set_timeout(&self, ms: u32);
    /// The set and each member's state, for sysfs.
    fn show(&self, w: &mut dyn core::fmt::Write) -> core::fmt::Result;
    /// Ends every connection; what still waits gives up.
    fn close(&self);
}

/// The fields of a WRITE for a record.
pub(crate) fn write_head(serial: u64, lba: u64, sectors: u32, fua: bool) -> WriteHead {
    WriteHead { serial, lba, sectors, flags: if fua { WRITE_FUA } else { 0 } }
}

// SPDX-License-Identifier: GPL-2.0

//! Destage turns of SAN groups: the destagers of volumes the operator put in one group (sysfs
//! `san_group`, volumes whose backing devices share one SAN) run one batch at a time, in the
//! order they asked (`pfcore::destage::may_start`), so the SAN's batches cycle over the group's
//! volumes that have dirty data, whatever each one's batch cost or concurrency.
//!
//! Lock order: [`TURNS`] is a leaf; it is never held while another lock is taken or across
//! I/O, and waiting for a turn happens outside it.

use core::sync::atomic::{AtomicU64, Ordering};

use kernel::prelude::*;

use crate::pfcore::destage::{may_start, TurnEntry};

/// Batches of one group that run at once.
const PER_GROUP: usize = 1;

kernel::sync::global_lock! {
    // SAFETY: initialised by `init` in the module initialiser, before any volume exists.
    /// The destagers asking for or holding a turn, in asking order.
    unsafe(uninit) static TURNS: Mutex<KVec<TurnEntry>> = KVec::new();
}

/// Source of destager ids for [`TurnEntry::id`].
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Initialises the module-wide state of this file.
///
/// # Safety
///
/// Called once, from the module initialiser, before any other function of this file.
pub(crate) unsafe fn init() {
    // SAFETY: per the caller, once and before any use.
    unsafe { TURNS.init() };
}

/// A new destager id.
pub(crate) fn new_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// A place in a group's turns: asked for by [`Turn::ask`]; leaves the queue when dropped.
pub(crate) struct Turn {
    id: u64,
}

impl Turn {
    /// Joins the back of `group`'s queue as `id`.
    pub(crate) fn ask(id: u64, group: u64) -> Result<Turn> {
        let mut q = TURNS.lock();
        q.push(TurnEntry { group, id, running: false }, GFP_KERNEL)?;
        Ok(Turn { id })
    }

    /// Whether the turn has come; if so it is marked running (and stays so until dropped).
    pub(crate) fn try_start(&self) -> bool {
        let mut q = TURNS.lock();
        if !may_start(&q, self.id, PER_GROUP) {
            return false;
        }
        if let Some(e) = q.iter_mut().find(|e| e.id == self.id) {
            e.running = true;
        }
        true
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut q = TURNS.lock();
        if let Some(i) = q.iter().position(|e| e.id == self.id) {
            let _ = q.remove(i);
        }
    }
}

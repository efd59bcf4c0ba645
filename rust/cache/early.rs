// SPDX-License-Identifier: GPL-2.0

//! The fast-path writes in flight or acknowledged and not indexed yet: slots handed out and
//! collected without a lock (a completion runs in interrupt context).

use core::sync::atomic::{AtomicU64, Ordering};

use kernel::prelude::*;

use super::state::Rec;

/// Fast-path writes in flight or acknowledged and not indexed yet ([`Cache::write_now`]).
pub(super) const EARLY_SLOTS: usize = crate::blk::disk::QUEUE_DEPTH as usize;
pub(super) const EARLY_WORDS: usize = EARLY_SLOTS.div_ceil(64);

#[derive(Debug, Clone, Copy)]
pub(super) struct EarlyWrite {
    pub(super) seg: usize,
    pub(super) flash: u64,
    pub(super) rec: Rec,
}

/// One fast-path write's slot: written by its submitter before the write is submitted, read by
/// whoever indexes it after its completion set its `done` bit.
#[derive(Default)]
pub(super) struct EarlySlot {
    pub(super) seg: AtomicU64,
    pub(super) flash: AtomicU64,
    pub(super) serial: AtomicU64,
    pub(super) lba: AtomicU64,
    pub(super) len: AtomicU64,
}

/// The slots of fast-path writes, handed out and collected without a lock: a write's
/// completion runs in interrupt context, where [`Cache::state`] (a mutex) cannot be taken, and
/// only sets the slot's `done` bit; the next holder of the lock indexes it ([`Cache::lock`]).
/// A slot is free (its bit set in `free`), then owned by one write (submitted), then done
/// (its bit set in `done`), then free again once indexed.
pub(super) struct Early {
    pub(super) slots: KVec<EarlySlot>,
    pub(super) free: [AtomicU64; EARLY_WORDS],
    pub(super) done: [AtomicU64; EARLY_WORDS],
}

impl Early {
    pub(super) fn new() -> Result<Self> {
        let mut slots = KVec::with_capacity(EARLY_SLOTS, GFP_KERNEL)?;
        for _ in 0..EARLY_SLOTS {
            slots.push(EarlySlot::default(), GFP_KERNEL)?;
        }
        let free = core::array::from_fn(|w| {
            let n = EARLY_SLOTS.saturating_sub(w * 64).min(64);
            AtomicU64::new(if n == 64 { u64::MAX } else { (1u64 << n) - 1 })
        });
        Ok(Self { slots, free, done: core::array::from_fn(|_| AtomicU64::new(0)) })
    }

    /// A free slot, if any.
    pub(super) fn take(&self) -> Option<usize> {
        for (w, word) in self.free.iter().enumerate() {
            let mut cur = word.load(Ordering::Acquire);
            while cur != 0 {
                let bit = cur.trailing_zeros() as usize;
                match word.compare_exchange_weak(cur, cur & !(1u64 << bit), Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return Some(w * 64 + bit),
                    Err(now) => cur = now,
                }
            }
        }
        None
    }

    /// Gives slot `t` back.
    pub(super) fn put(&self, t: usize) {
        if let Some(word) = self.free.get(t / 64) {
            word.fetch_or(1u64 << (t % 64), Ordering::AcqRel);
        }
    }

    pub(super) fn set(&self, t: usize, w: &EarlyWrite) {
        if let Some(s) = self.slots.get(t) {
            s.seg.store(w.seg as u64, Ordering::Release);
            s.flash.store(w.flash, Ordering::Release);
            s.serial.store(w.rec.serial, Ordering::Release);
            s.lba.store(w.rec.lba, Ordering::Release);
            s.len.store(w.rec.len, Ordering::Release);
        }
    }

    pub(super) fn get(&self, t: usize) -> Option<EarlyWrite> {
        let s = self.slots.get(t)?;
        Some(EarlyWrite {
            seg: s.seg.load(Ordering::Acquire) as usize,
            flash: s.flash.load(Ordering::Acquire),
            rec: Rec {
                serial: s.serial.load(Ordering::Acquire),
                lba: s.lba.load(Ordering::Acquire),
                len: s.len.load(Ordering::Acquire),
            },
        })
    }

    /// Slot `t`'s write completed on flash (any context).
    pub(super) fn mark_done(&self, t: usize) {
        if let Some(word) = self.done.get(t / 64) {
            word.fetch_or(1u64 << (t % 64), Ordering::AcqRel);
        }
    }

    /// Takes the done bits of word `w`.
    pub(super) fn take_done(&self, w: usize) -> u64 {
        self.done.get(w).map_or(0, |word| word.swap(0, Ordering::AcqRel))
    }
}


// SPDX-License-Identifier: GPL-2.0

//! A volume's index: its cached extents, non-overlapping, on the kernel's red-black tree
//! (the rules that change it are `pfcore::extent`'s).

use kernel::prelude::*;
use kernel::rbtree::RBTree;

use crate::blk::GFP_IO_PATH;
use crate::pfcore::extent::{Extent, ExtentMap};

/// The index entry of an extent (the key is its first sector).
#[derive(Debug, Clone, Copy)]
pub(super) struct Val {
    pub(super) len: u64,
    pub(super) flash: u64,
    pub(super) serial: u64,
    pub(super) dirty: bool,
}

/// A volume's index: non-overlapping extents on the kernel's red-black tree.
pub(super) struct Index {
    pub(super) tree: RBTree<u64, Val>,
}

pub(super) fn ext(lba: u64, v: &Val) -> Extent {
    Extent { lba, len: v.len, flash: v.flash, serial: v.serial, dirty: v.dirty }
}

impl ExtentMap for Index {
    type Error = Error;

    fn first_overlapping(&self, start: u64, end: u64) -> Option<Extent> {
        // Extents do not overlap, so only the last one starting at or before `start` can cover
        // `start`; otherwise the first one starting after it.
        let after = match self.tree.cursor_lower_bound(&start) {
            Some(c) => {
                if let Some((k, v)) = c.peek_prev() {
                    if k + v.len > start {
                        return Some(ext(*k, v));
                    }
                }
                let (k, v) = c.current();
                Some(ext(*k, v))
            }
            None => {
                let c = self.tree.cursor_back()?;
                let (k, v) = c.current();
                Some(ext(*k, v))
            }
        };
        after.filter(|e| e.overlaps(start, end))
    }

    fn remove(&mut self, lba: u64) {
        self.tree.remove(&lba);
    }

    fn insert(&mut self, e: Extent) -> Result {
        let v = Val { len: e.len, flash: e.flash, serial: e.serial, dirty: e.dirty };
        self.tree.try_create_and_insert(e.lba, v, GFP_IO_PATH)?;
        Ok(())
    }
}


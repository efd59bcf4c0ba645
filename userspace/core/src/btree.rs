//! An [`ExtentMap`] on a `BTreeMap`, for userspace (the helper's `inspect`, and tests). Only in
//! the host crate, with feature `std`; the module has its own on the kernel's red-black tree.

extern crate std;

use std::collections::BTreeMap;

use super::extent::{Extent, ExtentMap};

/// A volume index in userspace.
#[derive(Debug, Default, Clone)]
pub struct BTreeIndex(pub BTreeMap<u64, Extent>);

impl ExtentMap for BTreeIndex {
    type Error = core::convert::Infallible;

    fn first_overlapping(&self, start: u64, end: u64) -> Option<Extent> {
        if start >= end {
            return None;
        }
        if let Some((_, e)) = self.0.range(..=start).next_back() {
            if e.overlaps(start, end) {
                return Some(*e);
            }
        }
        self.0.range(start..end).next().map(|(_, e)| *e)
    }

    fn remove(&mut self, lba: u64) {
        self.0.remove(&lba);
    }

    fn insert(&mut self, e: Extent) -> Result<(), Self::Error> {
        self.0.insert(e.lba, e);
        Ok(())
    }
}

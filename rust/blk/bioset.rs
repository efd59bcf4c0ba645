// SPDX-License-Identifier: GPL-2.0

//! A `struct bio_set`: the mempool a volume allocates its bios from, so that I/O makes progress
//! under memory pressure.

use kernel::bindings;
use kernel::error::to_result;
use kernel::prelude::*;
use kernel::types::Opaque;

/// Bios kept in reserve per volume.
const POOL_SIZE: u32 = 64;

/// A pinned, initialised `struct bio_set`.
///
/// # Invariants
///
/// `inner` was initialised by `bioset_init` and is torn down only in `drop`.
#[pin_data(PinnedDrop)]
pub(crate) struct BioSet {
    #[pin]
    inner: Opaque<bindings::bio_set>,
}

// SAFETY: `struct bio_set` is a mempool with its own locking; it is used from any context.
unsafe impl Send for BioSet {}
// SAFETY: as above, allocation and free from a bio_set are thread-safe.
unsafe impl Sync for BioSet {}

impl BioSet {
    /// Initialises a bio set without front padding, with page vectors (for bios built on the
    /// driver's own pages and request data) and a rescuer: `queue_rq` may run in the
    /// submitter's context inside `submit_bio_noacct`, where the bios we submit wait on
    /// `current->bio_list`; if the pool runs dry there, the rescuer issues them so that the
    /// allocation can make progress (as device-mapper does).
    pub(crate) fn new() -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            inner <- Opaque::try_ffi_init(|slot: *mut bindings::bio_set| {
                // SAFETY: `slot` points to memory for a `bio_set` that stays pinned. `bioset_init`
                // expects zeroed memory (C callers embed it in kzalloc'ed structs): it leaves
                // fields such as the per-cpu `cache` pointer untouched when unused.
                unsafe {
                    core::ptr::write_bytes(slot, 0, 1);
                    to_result(bindings::bioset_init(
                        slot,
                        POOL_SIZE,
                        0,
                        (bindings::BIOSET_NEED_BVECS | bindings::BIOSET_NEED_RESCUER) as i32,
                    ))
                }
            }),
        })
        // INVARIANT: `bioset_init` succeeded.
    }

    /// The raw bio set, for `bio_alloc_*`.
    pub(crate) fn raw(&self) -> *mut bindings::bio_set {
        self.inner.get()
    }
}

#[pinned_drop]
impl PinnedDrop for BioSet {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: by the type invariant the bio set was initialised; every bio allocated from it
        // has been freed, because requests end only after their child bios were put.
        unsafe { bindings::bioset_exit(self.inner.get()) };
    }
}

// SPDX-License-Identifier: GPL-2.0

//! Bios built by the cache data path and waited for as a group: [`PageBuf`] (kernel pages the
//! driver owns), [`Bio`] (a bio being built, borrowing the pages or request data it points to)
//! and [`IoSet`] (bios submitted together; waiting returns the first error); and
//! [`WriteSlot`], one write at a time from pages the slot owns, polled or waited for.
//!
//! Soundness of the borrows: a `Bio<'a>` may only be submitted through an `IoSet<'a>`, and an
//! `IoSet` waits for all its bios before it is dropped, so whatever a bio points to outlives its
//! I/O. A `WriteSlot` submits only bios on its own pages, is pinned, refuses to touch its pages
//! while a write is in flight and waits for that write before it is reused or dropped.

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};

use kernel::bindings;
use kernel::page::{Page, PAGE_SIZE};
use kernel::prelude::*;
use kernel::sync::Completion;

use super::bdev::BlockDev;
use super::bioset::BioSet;
use super::dir::Dir;
use super::ffi;
use super::GFP_IO_PATH;
use super::request::{Handler, Request};

/// A buffer of whole kernel pages owned by the driver (record headers, destage data).
pub(crate) struct PageBuf {
    pages: KVec<Page>,
    len: usize,
}

impl PageBuf {
    /// A zero-filled buffer of `len` bytes.
    pub(crate) fn new(len: usize) -> Result<Self> {
        let n = len.div_ceil(PAGE_SIZE);
        let mut pages = KVec::with_capacity(n, GFP_IO_PATH)?;
        for _ in 0..n {
            let p = Page::alloc_page(GFP_IO_PATH | kernel::alloc::flags::__GFP_ZERO)?;
            pages.push(p, GFP_IO_PATH)?;
        }
        Ok(Self { pages, len })
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn chunks(&self, offset: usize, len: usize) -> Result<impl Iterator<Item = (&Page, usize, usize, usize)>> {
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(EINVAL);
        }
        // (page, offset in page, length, position in the caller's slice)
        let mut at = offset;
        let end = offset + len;
        Ok(core::iter::from_fn(move || {
            if at >= end {
                return None;
            }
            let page = self.pages.get(at / PAGE_SIZE)?;
            let off = at % PAGE_SIZE;
            let n = (PAGE_SIZE - off).min(end - at);
            let item = (page, off, n, at - offset);
            at += n;
            Some(item)
        }))
    }

    /// Copies `out.len()` bytes from `offset` into `out`.
    pub(crate) fn read(&self, offset: usize, out: &mut [u8]) -> Result {
        for (page, off, n, pos) in self.chunks(offset, out.len())? {
            let dst = out.get_mut(pos..pos + n).ok_or(EINVAL)?;
            // SAFETY: `dst` is valid for writes of `n` bytes and is not part of the page.
            unsafe { page.read_raw(dst.as_mut_ptr(), off, n)? };
        }
        Ok(())
    }

    /// Copies `data` into the buffer at `offset`.
    pub(crate) fn write(&self, offset: usize, data: &[u8]) -> Result {
        for (page, off, n, pos) in self.chunks(offset, data.len())? {
            let src = data.get(pos..pos + n).ok_or(EINVAL)?;
            // SAFETY: `src` is valid for reads of `n` bytes and is not part of the page.
            unsafe { page.write_raw(src.as_ptr(), off, n)? };
        }
        Ok(())
    }
}

/// A bio being built: everything it points to lives for `'a`.
///
/// # Invariants
///
/// `bio` was allocated by `bio_alloc_bioset`/`bio_alloc_clone`, is not submitted, and is put
/// exactly once (on drop, or by its completion after [`IoSet::submit`]).
pub(crate) struct Bio<'a> {
    bio: NonNull<bindings::bio>,
    _borrow: PhantomData<&'a ()>,
}

impl<'a> Bio<'a> {
    /// An empty bio to `dev` at `sector` with room for `vecs` page vectors.
    pub(crate) fn new(dev: &BlockDev, sector: u64, vecs: u16, dir: Dir, bs: &BioSet) -> Result<Self> {
        // SAFETY: the device is open and the bio set initialised; GFP_IO_PATH may sleep, which the
        // data path (process context) allows.
        let bio = unsafe { bindings::bio_alloc_bioset(dev.raw(), vecs, dir.opf(), ffi::pf_gfp_noio(), bs.raw()) };
        let bio = NonNull::new(bio).ok_or(ENOMEM)?;
        // SAFETY: the bio is new and ours.
        unsafe { (*bio.as_ptr()).bi_iter.bi_sector = sector };
        Ok(Self { bio, _borrow: PhantomData })
    }

    /// Adds `len` bytes of `buf` from `offset`.
    pub(crate) fn add_buf(&mut self, buf: &'a PageBuf, offset: usize, len: usize) -> Result {
        for (page, off, n, _) in buf.chunks(offset, len)? {
            // SAFETY: the bio is not submitted; `page` lives for `'a`, which outlives the I/O.
            let added = unsafe { bindings::bio_add_page(self.bio.as_ptr(), page.as_ptr(), n as u32, off as u32) };
            if added != n as i32 {
                return Err(EINVAL);
            }
        }
        Ok(())
    }

    /// Adds all the data pages of `rq`, in order.
    pub(crate) fn add_request_data<T: Handler>(&mut self, rq: &'a Request<T>) -> Result {
        // SAFETY: the bio is not submitted; the request is started and not ended while borrowed,
        // so its pages outlive the I/O.
        if unsafe { ffi::pf_bio_add_rq_pages(self.bio.as_ptr(), rq.raw()) } {
            Ok(())
        } else {
            Err(EINVAL)
        }
    }

    /// Clones of the parts of `rq`'s data from sector `offset` (within the request) for `len`
    /// sectors, aimed at `dev` from `sector` on, keeping the request's operation and flags
    /// (`fua`: add FUA to writes).
    pub(crate) fn clone_request<T: Handler>(
        rq: &'a Request<T>,
        offset: u64,
        len: u64,
        dev: &BlockDev,
        sector: u64,
        bs: &BioSet,
        out: &mut KVec<Bio<'a>>,
    ) -> Result {
        let end = offset.checked_add(len).ok_or(EINVAL)?;
        // SAFETY: the request is started and not ended while borrowed; its bio chain is stable.
        let mut src = unsafe { (*rq.raw()).bio };
        let mut at = 0u64; // request sector of `src`'s first sector
        while !src.is_null() && at < end {
            // SAFETY: `src` is one of the request's bios (see above).
            let (size, next) = unsafe { (u64::from((*src).bi_iter.bi_size) >> 9, (*src).bi_next) };
            let (s, e) = (at.max(offset), (at + size).min(end));
            if s < e {
                // SAFETY: `src` is a valid bio, the device is open, the bio set initialised.
                let clone = unsafe { bindings::bio_alloc_clone(dev.raw(), src, ffi::pf_gfp_noio(), bs.raw()) };
                let clone = NonNull::new(clone).ok_or(ENOMEM)?;
                let bio = Bio { bio: clone, _borrow: PhantomData };
                // SAFETY: the clone is ours and covers `src`'s range, which contains `s..e`.
                unsafe {
                    bindings::bio_trim(clone.as_ptr(), s - at, e - s);
                    (*clone.as_ptr()).bi_iter.bi_sector = sector + (s - offset);
                }
                out.push(bio, GFP_IO_PATH)?;
            }
            at += size;
            src = next;
        }
        Ok(())
    }

    fn into_raw(self) -> *mut bindings::bio {
        core::mem::ManuallyDrop::new(self).bio.as_ptr()
    }
}

impl Drop for Bio<'_> {
    fn drop(&mut self) {
        // SAFETY: by the type invariant the bio is ours and not submitted.
        unsafe { bindings::bio_put(self.bio.as_ptr()) };
    }
}

/// Bios submitted together. Dropping the set waits for all of them.
#[pin_data(PinnedDrop)]
pub(crate) struct IoSet<'a> {
    /// Bios in flight plus one for the submitter until [`IoSet::wait`].
    pending: AtomicU32,
    /// First non-zero `blk_status_t`.
    status: AtomicU8,
    waited: AtomicBool,
    #[pin]
    done: Completion,
    _borrow: PhantomData<&'a ()>,
}

/// `bi_end_io` of a bio of an [`IoSet`].
///
/// # Safety
///
/// Called once by the block layer for a bio submitted by [`IoSet::submit`].
unsafe extern "C" fn set_end_io(bio: *mut bindings::bio) {
    // SAFETY: `bi_private` is the `IoSet` that submitted the bio; it waits for this call before
    // it can be dropped.
    let (set, status) = unsafe { (&*((*bio).bi_private as *const IoSet<'_>), (*bio).bi_status) };
    if status != 0 {
        let _ = set.status.compare_exchange(0, status, Ordering::AcqRel, Ordering::Acquire);
    }
    // SAFETY: the bio was handed over by `submit` and is put exactly once, here.
    unsafe { bindings::bio_put(bio) };
    set.put();
}

impl<'a> IoSet<'a> {
    /// An empty set.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            pending: AtomicU32::new(1),
            status: AtomicU8::new(0),
            waited: AtomicBool::new(false),
            done <- Completion::new(),
            _borrow: PhantomData,
        })
    }

    fn put(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.complete_all();
        }
    }

    /// Submits `bio`.
    pub(crate) fn submit(self: Pin<&Self>, bio: Bio<'a>) {
        if self.waited.load(Ordering::Acquire) {
            // A set is used once; a late bio is dropped unsubmitted and counts as an error.
            // SAFETY: `errno_to_blk_status` accepts any negative errno.
            let eio = unsafe { bindings::errno_to_blk_status(EIO.to_errno()) };
            let _ = self.status.compare_exchange(0, eio, Ordering::AcqRel, Ordering::Acquire);
            return;
        }
        self.pending.fetch_add(1, Ordering::AcqRel);
        let raw = bio.into_raw();
        // SAFETY: the bio is set up and ours; its completion drops the reference taken above and
        // the set (pinned) outlives it because waiting precedes the set's drop.
        unsafe {
            (*raw).bi_end_io = Some(set_end_io);
            (*raw).bi_private = (&*self as *const Self).cast_mut().cast();
            bindings::submit_bio(raw);
        }
    }

    /// Waits for every bio submitted so far; the first error any had.
    pub(crate) fn wait(self: Pin<&Self>) -> Result {
        if !self.waited.swap(true, Ordering::AcqRel) {
            self.put();
        }
        self.done.wait_for_completion();
        status_result(self.status.load(Ordering::Acquire))
    }
}

#[pinned_drop]
impl PinnedDrop for IoSet<'_> {
    fn drop(self: Pin<&mut Self>) {
        let _ = self.as_ref().wait();
    }
}

/// The result of a bio's `blk_status_t`.
fn status_result(status: u8) -> Result {
    match status {
        0 => Ok(()),
        // SAFETY: `blk_status_to_errno` accepts any status value.
        s => Err(Error::from_errno(unsafe { bindings::blk_status_to_errno(s) })),
    }
}

/// Submits `bios` and waits for them; the first error.
pub(crate) fn run(bios: KVec<Bio<'_>>) -> Result {
    pin_init::stack_pin_init!(let set = IoSet::new());
    for b in bios {
        set.as_ref().submit(b);
    }
    set.as_ref().wait()
}

/// Reads `len` bytes at `sector` of `dev` into `pages` (from its start), in bios of at most 256
/// pages submitted together, and waits.
pub(crate) fn read_into(dev: &BlockDev, sector: u64, pages: &PageBuf, len: usize, bs: &BioSet) -> Result {
    let chunk = 256 * PAGE_SIZE;
    let mut bios = KVec::new();
    let mut off = 0;
    while off < len {
        let n = chunk.min(len - off);
        let mut b = Bio::new(dev, sector + (off / 512) as u64, 256, Dir::Read, bs)?;
        b.add_buf(pages, off, n)?;
        bios.push(b, GFP_IO_PATH)?;
        off += n;
    }
    run(bios)
}

/// Makes every completed write to `dev` stable.
pub(crate) fn flush(dev: &BlockDev) -> Result {
    // SAFETY: the device is open; `blkdev_issue_flush` waits for the flush.
    kernel::error::to_result(unsafe { bindings::blkdev_issue_flush(dev.raw()) })
}

/// A write from pages the slot owns, one at a time: filled, submitted, then polled or waited
/// for; the next write may use the slot once the last one was waited for. The pages outlive
/// the I/O because the slot is pinned and dropping it waits.
///
/// # Invariants
///
/// While `busy`, exactly one bio from `buf`'s pages is in flight (or its completion has not yet
/// returned from `complete`), its `bi_private` is this pinned slot, and nothing else touches
/// `buf`.
#[pin_data(PinnedDrop)]
pub(crate) struct WriteSlot {
    buf: PageBuf,
    busy: bool,
    /// The `blk_status_t` of the last write.
    status: AtomicU8,
    #[pin]
    done: kernel::types::Opaque<bindings::completion>,
}

/// `bi_end_io` of a [`WriteSlot`]'s bio.
///
/// # Safety
///
/// Called once by the block layer for a bio submitted by [`WriteSlot::submit`].
unsafe extern "C" fn slot_end_io(bio: *mut bindings::bio) {
    // SAFETY: `bi_private` is the pinned slot that submitted the bio; it waits on `done` before
    // it is reused or dropped, and `complete` is the last access to it here. Only the two
    // fields the owner does not touch while `busy` are reached, through raw projections (the
    // slot is `!Unpin`, so its owner's `&mut` does not claim them).
    let (slot, status) = unsafe { ((*bio).bi_private as *const WriteSlot, (*bio).bi_status) };
    // SAFETY: as above.
    unsafe { (*core::ptr::addr_of!((*slot).status)).store(status, Ordering::Release) };
    // SAFETY: the bio was handed over by `submit` and is put exactly once, here.
    unsafe { bindings::bio_put(bio) };
    // SAFETY: `done` was initialised by `submit` before the bio went out.
    unsafe { bindings::complete(kernel::types::Opaque::cast_into(core::ptr::addr_of!((*slot).done))) };
}

impl WriteSlot {
    /// An idle slot with `len` bytes of pages (grown by [`WriteSlot::fill`] when a write needs
    /// more).
    pub(crate) fn new(len: usize) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            buf: PageBuf::new(len)?,
            busy: false,
            status: AtomicU8::new(0),
            done <- kernel::types::Opaque::ffi_init(|slot: *mut bindings::completion| {
                // SAFETY: `slot` is valid for a `struct completion` and not yet in use.
                unsafe { bindings::init_completion(slot) };
            }),
        }? Error)
    }

    /// Copies `pieces` one after the other into the slot's pages from offset 0, growing them
    /// when needed; `EBUSY` while a write is in flight.
    pub(crate) fn fill(self: Pin<&mut Self>, pieces: &[&[u8]]) -> Result {
        // SAFETY: nothing here moves the slot; `buf` is not structurally pinned (the bio points
        // at its pages, which do not move with it, and only while `busy`).
        let this = unsafe { self.get_unchecked_mut() };
        if this.busy {
            return Err(EBUSY);
        }
        let total = pieces.iter().try_fold(0usize, |n, p| n.checked_add(p.len())).ok_or(EINVAL)?;
        if total > this.buf.len() {
            this.buf = PageBuf::new(total)?;
        }
        let mut at = 0;
        for p in pieces {
            this.buf.write(at, p)?;
            at += p.len();
        }
        Ok(())
    }

    /// Submits a write of the first `len` bytes of the slot's pages to `dev` at `sector`.
    pub(crate) fn submit(self: Pin<&mut Self>, dev: &BlockDev, sector: u64, len: usize, dir: Dir, bs: &BioSet) -> Result {
        // SAFETY: nothing here moves the slot (see `fill`).
        let this = unsafe { self.get_unchecked_mut() };
        if this.busy {
            return Err(EBUSY);
        }
        let vecs = u16::try_from(len.div_ceil(PAGE_SIZE)).map_err(|_| EINVAL)?;
        let mut bio = Bio::new(dev, sector, vecs, dir, bs)?;
        bio.add_buf(&this.buf, 0, len)?;
        let raw = bio.into_raw();
        this.status.store(0, Ordering::Relaxed);
        // SAFETY: no write is in flight (`busy` is false), so nobody waits on or completes
        // `done`: it may be set up again.
        unsafe { bindings::init_completion(this.done.get()) };
        this.busy = true;
        // SAFETY: the bio is set up and ours; its completion puts it and completes `done`. The
        // slot is pinned and waits for that completion before it is reused or dropped, and its
        // pages are not touched while `busy` (type invariant).
        unsafe {
            (*raw).bi_end_io = Some(slot_end_io);
            (*raw).bi_private = (this as *const Self).cast_mut().cast();
            bindings::submit_bio(raw);
        }
        Ok(())
    }

    /// Whether the write in flight has completed (true when none is).
    pub(crate) fn finished(&self) -> bool {
        if !self.busy {
            return true;
        }
        // SAFETY: `done` is initialised; `completion_done` reads it under its lock, which also
        // makes sure `complete` has returned.
        unsafe { bindings::completion_done(self.done.get()) }
    }

    /// Waits for the write in flight, if any; its result. The slot is idle afterwards.
    pub(crate) fn wait(self: Pin<&mut Self>) -> Result {
        // SAFETY: nothing here moves the slot (see `fill`).
        let this = unsafe { self.get_unchecked_mut() };
        if !this.busy {
            return Ok(());
        }
        // SAFETY: `done` is initialised and completed exactly once by the bio in flight.
        unsafe { bindings::wait_for_completion(this.done.get()) };
        this.busy = false;
        status_result(this.status.load(Ordering::Acquire))
    }
}

#[pinned_drop]
impl PinnedDrop for WriteSlot {
    fn drop(self: Pin<&mut Self>) {
        let _ = self.wait();
    }
}

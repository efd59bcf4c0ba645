// SPDX-License-Identifier: GPL-2.0

//! A started blk-mq request, owned by the handler until it is ended exactly once, and its
//! remapping to another block device by cloning its bios.

use core::marker::PhantomData;
use core::mem::ManuallyDrop;
use core::ptr::NonNull;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU8, AtomicUsize, Ordering};

use kernel::bindings;
use kernel::page::{Page, PAGE_SIZE};
use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::types::{ForeignOwnable, Opaque};

use super::bdev::BlockDev;
use super::bioset::BioSet;
use super::ffi;
use super::dir::Dir;

/// A started request's data, as the layers above the block layer see it without knowing its
/// handler: read in place (a checksum, a MAC) or handed to the socket layer's zero-copy send.
pub(crate) trait RequestData {
    /// Calls `f` on each piece of the data, in order (mapped for the call).
    fn each_piece(&self, f: &mut dyn FnMut(&[u8]));
    /// The request, valid, started and not ended while `self` is borrowed (for `net::sock`).
    fn as_raw(&self) -> *mut bindings::request;
}

impl<T: Handler> RequestData for Request<T> {
    fn each_piece(&self, f: &mut dyn FnMut(&[u8])) {
        self.for_each_data(f);
    }

    fn as_raw(&self) -> *mut bindings::request {
        self.raw()
    }
}

/// Most vectors of one bio (`BIO_MAX_VECS`, include/linux/bio.h).
pub(crate) const BIO_MAX_VECS: u16 = 256;

/// The operation of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Read data.
    Read,
    /// Write data (possibly with FUA).
    Write,
    /// Make every completed write stable (a PREFLUSH without data).
    Flush,
    /// Discard a range.
    Discard,
    /// Write zeroes to a range.
    WriteZeroes,
    /// Anything else (never advertised, refused).
    Other(u32),
}

impl Op {
    fn from_raw(op: u32) -> Self {
        match op {
            bindings::req_op_REQ_OP_READ => Op::Read,
            bindings::req_op_REQ_OP_WRITE => Op::Write,
            bindings::req_op_REQ_OP_FLUSH => Op::Flush,
            bindings::req_op_REQ_OP_DISCARD => Op::Discard,
            bindings::req_op_REQ_OP_WRITE_ZEROES => Op::WriteZeroes,
            other => Op::Other(other),
        }
    }
}

/// What the driver above this layer implements.
pub(crate) trait Handler: Send + Sync + Sized + 'static {
    /// Handles a started request. The request must be ended exactly once, now or later, with
    /// [`Request::end`] or [`Request::remap`].
    fn queue_rq(&self, rq: Request<Self>);
    /// Handles a request handed over with [`Request::defer`], in process context.
    fn process(&self, rq: Request<Self>) {
        rq.end(Err(EOPNOTSUPP));
    }
    /// A write submitted with [`Request::write_async`] under `token` completed on its
    /// device: called from the bio's completion (any context, must not sleep) just before the
    /// request ends successfully.
    fn write_acked(&self, _token: usize) {}
    /// A write submitted with [`Request::write_async`] under `token` failed with
    /// `err`: called in process context (on the workqueue given to `write_async`) with the
    /// request, which the handler must end.
    fn write_failed(&self, rq: Request<Self>, _token: usize, err: Error) {
        rq.end(Err(err));
    }
    /// Called once for every request as it ends.
    fn completed(&self, op: Op, ok: bool);
    /// Files in `/sys/block/<disk>/peerflash/`: name and whether it can be written.
    const SYSFS: &'static [(&'static CStr, bool)] = &[];
    /// Shows file `i` of [`Handler::SYSFS`] (one value and a newline).
    fn sysfs_show(&self, _i: usize, _w: &mut kernel::str::Formatter<'_>) -> Result {
        Err(EINVAL)
    }
    /// Stores `val` into writable file `i` of [`Handler::SYSFS`].
    fn sysfs_store(&self, _i: usize, _val: &[u8]) -> Result {
        Err(EINVAL)
    }
}

/// Per-request driver data (the tag set's `cmd_size`).
#[repr(C)]
pub(crate) struct Pdu {
    /// Outstanding child bios plus one for the submitter.
    pending: AtomicU32,
    /// First non-zero `blk_status_t` of a child bio.
    status: AtomicU8,
    /// Ends the request from process context (see [`put_ref`]), or hands a failed
    /// [`Request::write_async`] to [`Handler::write_failed`].
    work: Opaque<bindings::work_struct>,
    /// The handler's token of a [`Request::write_async`] in flight.
    token: AtomicUsize,
    /// Where a failed [`Request::write_async`] goes (the handler's workqueue).
    fail_wq: AtomicPtr<bindings::workqueue_struct>,
    /// A page the request's owner fills with a header block ([`Request::set_head`]): allocated
    /// on first use and kept with the tag for its later requests (`init_request` sets it to
    /// `None`, `exit_request` frees it). Only the request's owner touches it, and it is not
    /// reset when a request starts.
    head: UnsafeCell<Option<Page>>,
}

/// `blk_mq_ops::init_request`: the fields of a `Pdu` that outlive a request.
///
/// # Safety
///
/// Called by blk-mq once for each request of a tag set whose `cmd_size` is that of a `Pdu`,
/// before the request is used.
pub(crate) unsafe extern "C" fn init_request_callback(
    _set: *mut bindings::blk_mq_tag_set,
    rq: *mut bindings::request,
    _hctx_idx: core::ffi::c_uint,
    _numa_node: core::ffi::c_int,
) -> core::ffi::c_int {
    // SAFETY: the driver data of `rq` is `Pdu`-sized and not used yet.
    unsafe {
        core::ptr::write(
            bindings::blk_mq_rq_to_pdu(rq) as *mut Pdu,
            Pdu {
                pending: AtomicU32::new(0),
                status: AtomicU8::new(0),
                work: Opaque::uninit(),
                token: AtomicUsize::new(0),
                fail_wq: AtomicPtr::new(core::ptr::null_mut()),
                head: UnsafeCell::new(None),
            },
        )
    };
    0
}

/// `blk_mq_ops::exit_request`: frees the request's header page.
///
/// # Safety
///
/// Called by blk-mq once for each request set up by [`init_request_callback`], when no request
/// uses it any more.
pub(crate) unsafe extern "C" fn exit_request_callback(
    _set: *mut bindings::blk_mq_tag_set,
    rq: *mut bindings::request,
    _hctx_idx: core::ffi::c_uint,
) {
    // SAFETY: `init_request_callback` initialised the `Pdu`; the request is idle, so nothing
    // else touches its page.
    let head = unsafe { &mut *pdu(rq).head.get() };
    drop(head.take());
}

/// The most bytes [`Request::set_head`] writes into a request's header page (the rest of the
/// page stays zero).
pub(crate) const HEAD_BYTES: usize = 512;

/// A started request that must be ended exactly once.
///
/// # Invariants
///
/// `rq` is a request of a [`super::disk::Disk<T>`] that was started with
/// `blk_mq_start_request` and has not been ended; its queue's `queuedata` is an `Arc<T>`.
pub(crate) struct Request<T: Handler> {
    rq: NonNull<bindings::request>,
    _t: PhantomData<T>,
}

// SAFETY: a started request may be ended from any context.
unsafe impl<T: Handler> Send for Request<T> {}

fn pdu<'a>(rq: *mut bindings::request) -> &'a Pdu {
    // SAFETY: the tag set was created with `cmd_size == size_of::<Pdu>()`, so the driver data of
    // every request is a `Pdu`, initialised by `init_request_callback` (its per-request fields
    // again in `queue_rq_callback`) and living as long as the request.
    unsafe { &*(bindings::blk_mq_rq_to_pdu(rq) as *const Pdu) }
}

/// Ends `rq` with `status` after telling the handler.
///
/// # Safety
///
/// `rq` must satisfy the invariants of [`Request<T>`]; it is ended here and must not be used after.
unsafe fn finish<T: Handler>(rq: *mut bindings::request, status: bindings::blk_status_t) {
    // SAFETY: per the caller, the queue's `queuedata` is an `Arc<T>` that outlives the request.
    let handler = unsafe { Arc::<T>::borrow((*(*rq).q).queuedata) };
    // SAFETY: `rq` is valid per the caller.
    let op = Op::from_raw(unsafe { ffi::pf_rq_op(rq) });
    handler.completed(op, status == 0);
    // SAFETY: the request was started and is ended exactly once, here.
    unsafe { bindings::blk_mq_end_request(rq, status) };
}

fn to_status(r: Result) -> bindings::blk_status_t {
    match r {
        Ok(()) => 0,
        // SAFETY: `errno_to_blk_status` accepts any negative errno.
        Err(e) => unsafe { bindings::errno_to_blk_status(e.to_errno()) },
    }
}

/// The request whose `Pdu` holds `work`.
///
/// # Safety
///
/// `work` must be the `work` field of the `Pdu` of a request that is not freed.
unsafe fn rq_of_work(work: *mut bindings::work_struct) -> *mut bindings::request {
    let pdu = work
        .cast::<u8>()
        .wrapping_sub(core::mem::offset_of!(Pdu, work))
        .cast::<core::ffi::c_void>();
    // SAFETY: per the caller, `pdu` is a request's `Pdu`, which sits right after its request.
    unsafe { ffi::pf_rq_from_pdu(pdu) }
}

/// Work function that ends a request deferred by [`put_ref`].
///
/// # Safety
///
/// Called by the workqueue for the `work` of a request's `Pdu`, queued by [`put_ref`].
unsafe extern "C" fn end_work<T: Handler>(work: *mut bindings::work_struct) {
    // SAFETY: `work` is the `work` field of a request's `Pdu`; the request is not ended yet
    // (that happens here).
    let rq = unsafe { rq_of_work(work) };
    let status = self::pdu(rq).status.load(Ordering::Acquire);
    // SAFETY: the last reference was dropped in `put_ref`, which handed the request over here.
    unsafe { finish::<T>(rq, status) };
}

/// Drops one reference on a remapped request; the last one ends it.
///
/// A request of a flush sequence (our flush requests, and writes with PREFLUSH) takes our
/// queue's `mq_flush_lock` when it ends. Its last clone may complete inside the backing device's
/// own flush completion, which holds the backing queue's lock of the same class: ending it there
/// would nest the two (lockdep reports it, and the order between two queues is not one the block
/// layer defines). Those requests are ended from a work item; all others end inline.
///
/// # Safety
///
/// `rq` must satisfy the invariants of [`Request<T>`] and the caller must own one of the
/// references counted in its `Pdu::pending`.
unsafe fn put_ref<T: Handler>(rq: *mut bindings::request) {
    let p = pdu(rq);
    if p.pending.fetch_sub(1, Ordering::AcqRel) != 1 {
        return;
    }
    // SAFETY: `rq` is valid; this was the last reference, so the request is ours alone.
    if unsafe { ffi::pf_rq_in_flush_seq(rq) } {
        // SAFETY: the `work` of this `Pdu` is idle (each request queues it at most once, after
        // its last reference), and the request stays allocated until `end_work` ends it.
        unsafe {
            ffi::pf_init_work(p.work.get(), end_work::<T>);
            ffi::pf_queue_work(p.work.get());
        }
        return;
    }
    let status = p.status.load(Ordering::Acquire);
    // SAFETY: this was the last reference, so nothing else touches the request.
    unsafe { finish::<T>(rq, status) };
}

/// `bi_end_io` of a child bio of a remapped request.
///
/// # Safety
///
/// Called once by the block layer for a bio set up by [`Request::remap`].
unsafe extern "C" fn child_end_io<T: Handler>(bio: *mut bindings::bio) {
    // SAFETY: the bio is valid until `bio_put`; `bi_private` is its parent request, which holds
    // a reference for this bio.
    let (rq, status) = unsafe { ((*bio).bi_private as *mut bindings::request, (*bio).bi_status) };
    if status != 0 {
        let _ = pdu(rq).status.compare_exchange(0, status, Ordering::AcqRel, Ordering::Acquire);
    }
    // SAFETY: this bio was allocated by `Request::remap` and is released exactly once, here.
    unsafe { bindings::bio_put(bio) };
    // SAFETY: this bio's reference on `rq` is dropped exactly once, here.
    unsafe { put_ref::<T>(rq) };
}

/// `blk_mq_ops::queue_rq`.
///
/// # Safety
///
/// Called by blk-mq for a disk created by [`super::disk::Disk<T>`].
pub(crate) unsafe extern "C" fn queue_rq_callback<T: Handler>(
    hctx: *mut bindings::blk_mq_hw_ctx,
    bd: *const bindings::blk_mq_queue_data,
) -> bindings::blk_status_t {
    // SAFETY: blk-mq passes a valid `bd` whose `rq` belongs to this queue.
    let rq = unsafe { (*bd).rq };
    // SAFETY: `hctx` is valid; its queue's `queuedata` is the `Arc<T>` set up by `Disk::new`,
    // which lives until after `del_gendisk` has drained all requests.
    let handler = unsafe { Arc::<T>::borrow((*(*hctx).queue).queuedata) };
    let p = pdu(rq);
    p.pending.store(0, Ordering::Relaxed);
    p.status.store(0, Ordering::Relaxed);
    // SAFETY: `rq` is ours until ended.
    unsafe { bindings::blk_mq_start_request(rq) };
    let Some(rq) = NonNull::new(rq) else {
        return 0;
    };
    // INVARIANT: the request was started above and is handed over to exactly one `Request`.
    handler.queue_rq(Request { rq, _t: PhantomData });
    0
}

/// Work function that hands a request deferred by [`Request::defer`] to the handler.
///
/// # Safety
///
/// Called by the workqueue for the `work` of a request's `Pdu`, queued by [`Request::defer`].
unsafe extern "C" fn process_work<T: Handler>(work: *mut bindings::work_struct) {
    // SAFETY: `work` is the `work` field of a request's `Pdu`; `defer` gave up the request's
    // ownership to this work item.
    let rq = unsafe { rq_of_work(work) };
    // SAFETY: as above, the queue's `queuedata` is the `Arc<T>` that outlives its requests.
    let handler = unsafe { Arc::<T>::borrow((*(*rq).q).queuedata) };
    let Some(rq) = NonNull::new(rq) else {
        return;
    };
    let _noio = super::thread::NoIo::enter();
    // INVARIANT: the request is started, not ended, and owned by nobody else.
    handler.process(Request { rq, _t: PhantomData });
}

/// `bi_end_io` of the bio of a [`Request::write_async`].
///
/// # Safety
///
/// Called once by the block layer for the bio submitted by [`Request::write_async`].
unsafe extern "C" fn async_write_end_io<T: Handler>(bio: *mut bindings::bio) {
    // SAFETY: the bio is valid until `bio_put`; `bi_private` is its request, which is not
    // ended before this call.
    let (rq, status) = unsafe { ((*bio).bi_private as *mut bindings::request, (*bio).bi_status) };
    // SAFETY: the bio was handed over by `write_async` and is released exactly once, here.
    unsafe { bindings::bio_put(bio) };
    let p = pdu(rq);
    let token = p.token.load(Ordering::Acquire);
    if status == 0 {
        // SAFETY: the queue's `queuedata` is the `Arc<T>` that outlives its requests.
        let handler = unsafe { Arc::<T>::borrow((*(*rq).q).queuedata) };
        handler.write_acked(token);
        // SAFETY: the request was handed to the bio by `write_async`; it is ended exactly once,
        // here (it is not part of a flush sequence: `write_async` refuses those).
        unsafe { finish::<T>(rq, 0) };
        return;
    }
    p.status.store(status, Ordering::Release);
    // SAFETY: the `work` of this `Pdu` is idle (an asynchronous write is neither deferred nor
    // remapped); `fail_wq` is the handler's workqueue, alive while the request is; the request
    // stays allocated until `failed_work` hands it on.
    unsafe {
        ffi::pf_init_work(p.work.get(), failed_work::<T>);
        ffi::pf_queue_work_on(p.fail_wq.load(Ordering::Acquire), p.work.get());
    }
}

/// Work function that hands a failed [`Request::write_async`] to [`Handler::write_failed`].
///
/// # Safety
///
/// Called by the workqueue for the `work` of a request's `Pdu`, queued by
/// [`async_write_end_io`].
unsafe extern "C" fn failed_work<T: Handler>(work: *mut bindings::work_struct) {
    // SAFETY: `work` is the `work` field of a request's `Pdu`; the failed write's completion
    // gave up the request to this work item.
    let rq = unsafe { rq_of_work(work) };
    // SAFETY: as above, the queue's `queuedata` is the `Arc<T>` that outlives its requests.
    let handler = unsafe { Arc::<T>::borrow((*(*rq).q).queuedata) };
    let p = self::pdu(rq);
    let (token, status) = (p.token.load(Ordering::Acquire), p.status.load(Ordering::Acquire));
    let Some(rq) = NonNull::new(rq) else {
        return;
    };
    // SAFETY: `blk_status_to_errno` accepts any status value.
    let err = Error::from_errno(unsafe { bindings::blk_status_to_errno(status) });
    let _noio = super::thread::NoIo::enter();
    // INVARIANT: the request is started, not ended, and owned by nobody else.
    handler.write_failed(Request { rq, _t: PhantomData }, token, err);
}

impl<T: Handler> Request<T> {
    pub(super) fn raw(&self) -> *mut bindings::request {
        self.rq.as_ptr()
    }


    /// Whether the request is part of a flush sequence (a write with PREFLUSH, or the flush
    /// itself): such requests end from process context (see [`put_ref`]).
    pub(crate) fn in_flush_seq(&self) -> bool {
        // SAFETY: by the type invariant `rq` is valid.
        unsafe { ffi::pf_rq_in_flush_seq(self.raw()) }
    }

    /// Fills the request's header block with `head` (at most [`HEAD_BYTES`]; the rest of the
    /// page stays zero), in a page the request keeps (allocated zeroed on first use, reused by
    /// later requests of the same tag). [`Request::write_async`] writes it before the data.
    pub(crate) fn set_head(&self, head: &[u8]) -> Result {
        if head.len() > HEAD_BYTES {
            return Err(EINVAL);
        }
        // SAFETY: only the owner of the started request touches its header page, and no bio
        // uses it (a `write_async` bio owns the request until it completes).
        let slot = unsafe { &mut *pdu(self.raw()).head.get() };
        if slot.is_none() {
            // Zeroed once: only the first `HEAD_BYTES` bytes are ever written again.
            *slot = Some(Page::alloc_page(super::GFP_IO_PATH | kernel::alloc::flags::__GFP_ZERO)?);
        }
        let page = slot.as_ref().ok_or(ENOMEM)?;
        // SAFETY: `head` is valid for reads of its length and is not part of the page; nothing
        // else reads or writes the page now (see above).
        unsafe { page.write_raw(head.as_ptr(), 0, head.len()) }
    }

    /// Writes the header block set by [`Request::set_head`] (`block` bytes) followed by the
    /// request's data to `dev` from `sector`, with FUA if the request has it, and returns at
    /// once. When the write completes the request ends: on success right after
    /// [`Handler::write_acked`]`(token)` (in the completion's context), on failure through
    /// [`Handler::write_failed`] on `fail_wq`. A request of a flush sequence, one without a
    /// header block, or one whose bio cannot be built is given back with the error.
    pub(crate) fn write_async(
        self,
        dev: &BlockDev,
        sector: u64,
        block: usize,
        bs: &BioSet,
        fail_wq: &super::thread::WorkQueue,
        token: usize,
    ) -> core::result::Result<(), (Self, Error)> {
        if self.op() != Op::Write || self.in_flush_seq() || block > PAGE_SIZE {
            return Err((self, EINVAL));
        }
        let rq = self.raw();
        let p = pdu(rq);
        // SAFETY: the request is ours and no bio uses its header page yet.
        let Some(page) = (unsafe { &*p.head.get() }).as_ref().map(|pg| pg.as_ptr()) else {
            return Err((self, EINVAL));
        };
        let opf = if self.is_fua() { Dir::WriteFua } else { Dir::Write };
        let vecs = self.record_vecs();
        // SAFETY: the device is open and the bio set initialised; GFP_NOIO may sleep, which
        // BLK_MQ_F_BLOCKING allows here.
        let bio = unsafe { bindings::bio_alloc_bioset(dev.raw(), vecs, opf.opf(), ffi::pf_gfp_noio(), bs.raw()) };
        if bio.is_null() {
            return Err((self, ENOMEM));
        }
        // SAFETY: the bio is new and ours; the header page and the request's pages stay valid
        // until the request ends, which happens only after this bio completes.
        let built = unsafe {
            (*bio).bi_iter.bi_sector = sector;
            bindings::bio_add_page(bio, page, block as u32, 0) == block as i32
                && ffi::pf_bio_add_rq_pages(bio, rq)
        };
        if !built {
            // SAFETY: the bio is ours and was never submitted.
            unsafe { bindings::bio_put(bio) };
            return Err((self, EINVAL));
        }
        p.token.store(token, Ordering::Release);
        p.fail_wq.store(fail_wq.raw(), Ordering::Release);
        let rq = self.into_raw();
        // SAFETY: the bio is complete; ownership of it and of the request passes to
        // `async_write_end_io`, which ends the request exactly once.
        unsafe {
            (*bio).bi_end_io = Some(async_write_end_io::<T>);
            (*bio).bi_private = rq.cast();
            bindings::submit_bio(bio);
        }
        Ok(())
    }

    /// Hands the request to [`Handler::process`] on `wq` (process context, may sleep and wait
    /// for I/O; requests run concurrently up to the workqueue's limit).
    pub(crate) fn defer(self, wq: &super::thread::WorkQueue) {
        let rq = self.into_raw();
        let p = pdu(rq);
        // SAFETY: the `work` of this `Pdu` is idle: it is used by `defer` or by `put_ref`, and a
        // deferred request is never remapped; the request stays allocated until ended.
        unsafe {
            ffi::pf_init_work(p.work.get(), process_work::<T>);
            ffi::pf_queue_work_on(wq.raw(), p.work.get());
        }
    }

    /// First sector.
    pub(crate) fn sector(&self) -> u64 {
        // SAFETY: by the type invariant `rq` is valid.
        unsafe { ffi::pf_rq_pos(self.raw()) }
    }

    /// Number of bio vectors the request's data takes (physically contiguous runs: what
    /// `bio_add_page` makes of its pieces), at most `BIO_MAX_VECS`.
    pub(crate) fn nr_bvecs(&self) -> u16 {
        // SAFETY: by the type invariant `rq` is valid.
        unsafe { ffi::pf_rq_nr_bvecs(self.raw()) }
    }

    /// Vectors for a record bio: one for the header block, then the data's, never more than
    /// `BIO_MAX_VECS` in all (`bio_alloc_bioset` hits `BUG()` for more). A request
    /// whose data needs more cannot become one record: adding its pages fails, and that request
    /// fails (the queue's `max_segments` keeps real requests far below it).
    pub(crate) fn record_vecs(&self) -> u16 {
        self.nr_bvecs().min(BIO_MAX_VECS - 1) + 1
    }

    /// Length in sectors.
    pub(crate) fn sectors(&self) -> u64 {
        u64::from(self.bytes()) >> 9
    }

    /// Calls `f` on each piece of the request's data, in order (mapped for the call).
    pub(crate) fn for_each_data(&self, mut f: impl FnMut(&[u8])) {
        unsafe extern "C" fn visit(ctx: *mut core::ffi::c_void, p: *const u8, len: u32) {
            // SAFETY: `ctx` is the `&mut dyn FnMut` below, alive for the whole iteration.
            let f = unsafe { &mut *(ctx as *mut &mut dyn FnMut(&[u8])) };
            // SAFETY: the helper maps `len` bytes at `p` for the duration of this call.
            f(unsafe { core::slice::from_raw_parts(p, len as usize) });
        }
        let mut dynf: &mut dyn FnMut(&[u8]) = &mut f;
        // SAFETY: the request is valid and not ended; `visit` gets `ctx` back unchanged.
        unsafe { ffi::pf_rq_for_each_data(self.raw(), visit, (&mut dynf as *mut &mut dyn FnMut(&[u8])).cast()) };
    }


    /// Gives up ownership without ending the request (the caller arranges the end).
    fn into_raw(self) -> *mut bindings::request {
        ManuallyDrop::new(self).raw()
    }

    /// The request's operation.
    pub(crate) fn op(&self) -> Op {
        // SAFETY: by the type invariant `rq` is a valid started request.
        Op::from_raw(unsafe { ffi::pf_rq_op(self.raw()) })
    }

    /// Whether the write must be stable when it completes.
    pub(crate) fn is_fua(&self) -> bool {
        // SAFETY: by the type invariant `rq` is valid.
        unsafe { ffi::pf_rq_is_fua(self.raw()) }
    }

    /// Length in bytes.
    pub(crate) fn bytes(&self) -> u32 {
        // SAFETY: by the type invariant `rq` is valid; `__data_len` is `blk_rq_bytes`.
        unsafe { (*self.raw()).__data_len }
    }

    /// Ends the request now.
    pub(crate) fn end(self, r: Result) {
        let rq = self.into_raw();
        // SAFETY: ownership was given up above, so this is the only end.
        unsafe { finish::<T>(rq, to_status(r)) };
    }

    /// Sends the request to `target` unchanged (same sectors, flags and data) by cloning each of
    /// its bios; a request without bios (a flush) becomes an empty PREFLUSH bio. The request ends
    /// when every clone has completed, with the first error any of them had.
    pub(crate) fn remap(self, target: &BlockDev, bs: &BioSet) {
        let rq = self.into_raw();
        let p = pdu(rq);
        // The submitter's own reference keeps the request alive while clones are submitted.
        p.pending.store(1, Ordering::Release);
        // SAFETY: a constant from the C helpers.
        let gfp = unsafe { ffi::pf_gfp_noio() };
        let submit = |child: *mut bindings::bio| {
            if child.is_null() {
                let _ = p.status.compare_exchange(0, to_status(Err(ENOMEM)), Ordering::AcqRel, Ordering::Acquire);
                return;
            }
            p.pending.fetch_add(1, Ordering::AcqRel);
            // SAFETY: `child` is a new bio owned here until submitted; its completion drops the
            // reference taken just above.
            unsafe {
                (*child).bi_end_io = Some(child_end_io::<T>);
                (*child).bi_private = rq.cast();
                bindings::submit_bio(child);
            }
        };
        // SAFETY: `rq` is valid and not ended (the submitter's reference is held).
        let mut bio = unsafe { (*rq).bio };
        if bio.is_null() {
            // SAFETY: `target` is an open block device and `bs` an initialised bio set; GFP_NOIO
            // may sleep, which BLK_MQ_F_BLOCKING allows here.
            submit(unsafe { bindings::bio_alloc_bioset(target.raw(), 0, ffi::pf_opf_flush(), gfp, bs.raw()) });
        }
        while !bio.is_null() {
            // SAFETY: `bio` is one of the request's bios, valid until the request ends, which
            // cannot happen while the submitter's reference is held.
            let (clone, next) = unsafe {
                (bindings::bio_alloc_clone(target.raw(), bio, gfp, bs.raw()), (*bio).bi_next)
            };
            submit(clone);
            bio = next;
        }
        // SAFETY: drops the submitter's reference taken above.
        unsafe { put_ref::<T>(rq) };
    }
}

impl<T: Handler> Drop for Request<T> {
    /// A request dropped without being ended is a driver bug; end it with an error rather than
    /// leave the submitter waiting forever.
    fn drop(&mut self) {
        pr_err!("request dropped without being ended\n");
        // SAFETY: by the type invariant the request is started and not yet ended.
        unsafe { finish::<T>(self.raw(), to_status(Err(EIO))) };
    }
}

// SPDX-License-Identifier: GPL-2.0

//! A blk-mq disk: tag set, `struct gendisk` and its operations, modelled on
//! `rust/kernel/block/mq/{tag_set,gen_disk}.rs` but with what a stacking driver needs: per-request
//! data, `BLK_MQ_F_BLOCKING`, a volatile write cache with FUA, discard and write-zeroes limits, an
//! owner module and a refusal to open while the disk is being removed.
//!
//! Lifetimes: the tag set and the handler live until `Disk` is dropped (after `del_gendisk`, which
//! detaches the queue from the tag set). The operations table must outlive the `struct gendisk`
//! itself, which an opener can keep alive past `del_gendisk`; it is therefore owned by the disk
//! and freed in its `free_disk` callback.

use core::ffi::{c_int, c_void};
use core::fmt;
use core::marker::PhantomData;
use core::pin::Pin;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};

use kernel::bindings;
use kernel::error::{from_err_ptr, to_result};
use kernel::prelude::*;
use kernel::str::NullTerminatedFormatter;
use kernel::sync::Arc;
use kernel::types::{ForeignOwnable, Opaque, ScopeGuard};
use kernel::ThisModule;

use super::ffi;
use super::bdev::BlockDev;
use super::request::{self, Handler, Pdu};
use crate::pfcore::geometry::Limits;

/// Requests in flight per volume.
pub(crate) const QUEUE_DEPTH: u32 = 128;

/// Owned by the `struct gendisk` (`private_data`), freed in its `free_disk` callback.
struct DiskShared {
    fops: Opaque<bindings::block_device_operations>,
    /// Set under the disk's `open_mutex` once removal has begun; `open` then fails.
    removing: AtomicBool,
    /// The sysfs group `peerflash` (its files are removed by `del_gendisk`, before this is
    /// freed): the attributes, the NULL-terminated list of pointers to them, the group and the
    /// NULL-terminated list of groups given to `device_add_disk`.
    attrs: KVec<Opaque<bindings::device_attribute>>,
    attr_ptrs: KVec<*mut bindings::attribute>,
    group: Opaque<bindings::attribute_group>,
    groups: [*const bindings::attribute_group; 2],
}

/// The handler and sysfs file index of a sysfs call.
///
/// # Safety
///
/// `dev` and `attr` are what sysfs passes for a file of a disk created by [`Disk::new`], which
/// is added, so its `queuedata` and `private_data` are valid until the file is removed.
unsafe fn sysfs_target<'a, T: Handler>(
    dev: *mut bindings::device,
    attr: *mut bindings::device_attribute,
) -> (kernel::sync::ArcBorrow<'a, T>, usize) {
    // SAFETY: per the function's safety section.
    unsafe {
        let disk = ffi::pf_dev_to_disk(dev);
        let shared = &*((*disk).private_data as *const DiskShared);
        let i = (attr as usize - shared.attrs.as_ptr() as usize)
            / core::mem::size_of::<Opaque<bindings::device_attribute>>();
        (Arc::<T>::borrow((*(*disk).queue).queuedata), i)
    }
}

/// `device_attribute::show` of a peerflash sysfs file.
///
/// # Safety
///
/// Called by sysfs with `buf` a page, for a file set up by [`Disk::new`].
unsafe extern "C" fn sysfs_show_cb<T: Handler>(
    dev: *mut bindings::device,
    attr: *mut bindings::device_attribute,
    buf: *mut u8,
) -> isize {
    // SAFETY: per the function's safety section.
    let (h, i) = unsafe { sysfs_target::<T>(dev, attr) };
    // SAFETY: sysfs hands a page-sized buffer that is ours for the call.
    let page = unsafe { core::slice::from_raw_parts_mut(buf, kernel::page::PAGE_SIZE) };
    let mut w = kernel::str::Formatter::new(page);
    match h.sysfs_show(i, &mut w) {
        Ok(()) => w.bytes_written() as isize,
        Err(e) => e.to_errno() as isize,
    }
}

/// `device_attribute::store` of a writable peerflash sysfs file.
///
/// # Safety
///
/// Called by sysfs with `count` bytes at `buf`, for a file set up by [`Disk::new`].
unsafe extern "C" fn sysfs_store_cb<T: Handler>(
    dev: *mut bindings::device,
    attr: *mut bindings::device_attribute,
    buf: *const u8,
    count: usize,
) -> isize {
    // SAFETY: per the function's safety section.
    let (h, i) = unsafe { sysfs_target::<T>(dev, attr) };
    // SAFETY: sysfs passes `count` readable bytes.
    let val = unsafe { core::slice::from_raw_parts(buf, count) };
    match h.sysfs_store(i, val) {
        Ok(()) => count as isize,
        Err(e) => e.to_errno() as isize,
    }
}

/// An added blk-mq disk driven by handler `T`.
///
/// # Invariants
///
/// - `tag_set` was set up by `blk_mq_alloc_tag_set` and is freed only in `drop`.
/// - `gendisk` was allocated on `tag_set` and added with `device_add_disk`; its `queuedata` is
///   an `Arc<T>` from `into_foreign` and its `private_data` a leaked `KBox<DiskShared>`.
pub(crate) struct Disk<T: Handler> {
    tag_set: Pin<KBox<Opaque<bindings::blk_mq_tag_set>>>,
    gendisk: NonNull<bindings::gendisk>,
    _t: PhantomData<fn() -> T>,
}

// SAFETY: the gendisk and tag set are kernel objects usable from any thread; the handler is
// `Send + Sync`.
unsafe impl<T: Handler> Send for Disk<T> {}
// SAFETY: `&Disk` only reads the gendisk's state through thread-safe kernel calls.
unsafe impl<T: Handler> Sync for Disk<T> {}

/// `block_device_operations::open`: refuses new opens once removal has begun.
///
/// # Safety
///
/// Called by the block layer with a disk created by [`Disk::new`], under `disk->open_mutex`.
unsafe extern "C" fn open_callback(disk: *mut bindings::gendisk, _mode: bindings::blk_mode_t) -> c_int {
    // SAFETY: `private_data` is the `DiskShared` leaked in `Disk::new`, freed only in
    // `free_disk_callback`, which cannot run while the disk is being opened.
    let shared = unsafe { &*((*disk).private_data as *const DiskShared) };
    if shared.removing.load(Ordering::Relaxed) {
        return ENXIO.to_errno();
    }
    0
}

/// `block_device_operations::free_disk`: the last reference to the gendisk is gone.
///
/// # Safety
///
/// Called once by `disk_release` for a disk added by [`Disk::new`].
unsafe extern "C" fn free_disk_callback(disk: *mut bindings::gendisk) {
    // SAFETY: `private_data` came from `KBox::into_raw` in `Disk::new` and this is the only
    // place that takes it back; nothing uses the disk's operations after this call.
    drop(unsafe { KBox::from_raw((*disk).private_data as *mut DiskShared) });
}

impl<T: Handler> Disk<T> {
    const MQ_OPS: bindings::blk_mq_ops = bindings::blk_mq_ops {
        queue_rq: Some(request::queue_rq_callback::<T>),
        init_request: Some(request::init_request_callback),
        exit_request: Some(request::exit_request_callback),
        ..pin_init::zeroed()
    };

    /// Creates and adds disk `name` with `limits`, driven by `handler` (`stable_writes`: pages
    /// under write are not modified until the write completes).
    pub(crate) fn new(
        name: fmt::Arguments<'_>,
        limits: &Limits,
        stable_writes: bool,
        module: &'static ThisModule,
        handler: Arc<T>,
    ) -> Result<Self> {
        let tag_set = KBox::pin(Opaque::<bindings::blk_mq_tag_set>::zeroed(), GFP_KERNEL)?;
        let set = tag_set.get();
        // SAFETY: `set` points to a zeroed, pinned tag set that nothing else uses yet.
        unsafe {
            (*set).ops = &Self::MQ_OPS;
            (*set).nr_hw_queues = 1;
            (*set).queue_depth = QUEUE_DEPTH;
            (*set).numa_node = bindings::NUMA_NO_NODE;
            (*set).cmd_size = core::mem::size_of::<Pdu>() as u32;
            // No I/O scheduler by default: the devices below schedule their own I/O, and
            // mq-deadline in front of a stacking driver only adds a dispatch hop (kblockd) per
            // request (measured: 2.2 ms -> 1.35 ms submission latency at QD1 under TCG).
            (*set).flags = bindings::BLK_MQ_F_BLOCKING | bindings::BLK_MQ_F_NO_SCHED_BY_DEFAULT;
            (*set).nr_maps = 1;
        }
        // SAFETY: `set` is filled in above and pinned for as long as the tag set exists.
        to_result(unsafe { bindings::blk_mq_alloc_tag_set(set) })?;
        let free_set = ScopeGuard::new(move || {
            // SAFETY: the tag set was allocated above and no disk uses it on this error path.
            unsafe { bindings::blk_mq_free_tag_set(set) }
        });

        let mut attrs = KVec::with_capacity(T::SYSFS.len(), GFP_KERNEL)?;
        for _ in T::SYSFS {
            attrs.push(Opaque::<bindings::device_attribute>::zeroed(), GFP_KERNEL)?;
        }
        let mut shared = KBox::new(
            DiskShared {
                fops: Opaque::zeroed(),
                removing: AtomicBool::new(false),
                attrs,
                attr_ptrs: KVec::with_capacity(T::SYSFS.len() + 1, GFP_KERNEL)?,
                group: Opaque::zeroed(),
                groups: [core::ptr::null(); 2],
            },
            GFP_KERNEL,
        )?;
        for (a, &(name, writable)) in shared.attrs.iter().zip(T::SYSFS) {
            let store = if writable { Some(sysfs_store_cb::<T> as _) } else { None };
            // SAFETY: `a` is a zeroed attribute owned by `shared`; `name` is static.
            unsafe {
                ffi::pf_dev_attr_init(a.get(), name.as_char_ptr(), if writable { 0o644 } else { 0o444 }, sysfs_show_cb::<T>, store)
            };
        }
        for i in 0..shared.attrs.len() {
            let p = shared.attrs.get(i).map_or(core::ptr::null_mut(), |a| a.get().cast::<bindings::attribute>());
            shared.attr_ptrs.push(p, GFP_KERNEL)?;
        }
        shared.attr_ptrs.push(core::ptr::null_mut(), GFP_KERNEL)?;
        let list = shared.attr_ptrs.as_mut_ptr();
        // SAFETY: the group is owned by `shared` (boxed: its address is stable); the name is
        // static and the pointer list lives as long as the group.
        unsafe { ffi::pf_attr_group_init(shared.group.get(), c"peerflash".as_char_ptr(), list) };
        shared.groups[0] = shared.group.get();
        let fops = shared.fops.get();
        // SAFETY: `fops` is a zeroed table owned by `shared`, not yet visible to the kernel.
        unsafe {
            (*fops).owner = module.as_ptr();
            (*fops).open = Some(open_callback);
            (*fops).free_disk = Some(free_disk_callback);
        }

        let mut lim: bindings::queue_limits = pin_init::zeroed();
        lim.logical_block_size = limits.logical_block_size;
        lim.physical_block_size = limits.physical_block_size;
        lim.max_hw_discard_sectors = limits.max_discard_sectors;
        lim.discard_granularity = limits.discard_granularity;
        lim.max_write_zeroes_sectors = limits.max_write_zeroes_sectors;
        lim.max_hw_sectors = limits.max_hw_sectors;
        // SAFETY: a constant from the C helpers.
        lim.features = unsafe { ffi::pf_feat_write_cache_fua() };
        if stable_writes {
            // Data must not change while a write is in flight: its checksum is computed first.
            // SAFETY: a constant from the C helpers.
            lim.features |= unsafe { ffi::pf_feat_stable_writes() };
        }

        let data = handler.into_foreign();
        // SAFETY: `set` is an allocated tag set, `lim` is initialised, `data` is the queue's
        // private pointer, and the lock class key is static.
        let gendisk = from_err_ptr(unsafe {
            bindings::__blk_mq_alloc_disk(set, &mut lim, data, kernel::static_lock_class!().as_ptr())
        });
        let gendisk = match gendisk {
            Ok(g) => g,
            Err(e) => {
                // SAFETY: `data` came from `into_foreign` above and the kernel did not keep it.
                drop(unsafe { Arc::<T>::from_foreign(data) });
                return Err(e);
            }
        };
        let shared = KBox::into_raw(shared);
        let unwind = ScopeGuard::new(move || {
            // SAFETY: the disk was never added, so `free_disk` will not run: `put_disk` releases
            // it, and the handler and operations table are reclaimed here.
            unsafe {
                bindings::put_disk(gendisk);
                drop(Arc::<T>::from_foreign(data));
                drop(KBox::from_raw(shared));
            }
        });
        // SAFETY: `gendisk` is valid and not yet added, so this thread has exclusive access;
        // `shared` outlives it (freed in `free_disk_callback`).
        unsafe {
            (*gendisk).fops = (*shared).fops.get();
            (*gendisk).private_data = shared.cast::<c_void>();
        }
        // SAFETY: as above, exclusive access to the not yet added disk.
        let mut writer = NullTerminatedFormatter::new(unsafe { &mut (*gendisk).disk_name })
            .ok_or(EINVAL)?;
        fmt::Write::write_fmt(&mut writer, name)?;
        // SAFETY: `gendisk` is valid; `set_capacity` takes its own lock.
        unsafe { bindings::set_capacity(gendisk, limits.sectors) };
        // SAFETY: `gendisk` is fully set up above.
        to_result(unsafe {
            bindings::device_add_disk(
                core::ptr::null_mut(),
                gendisk,
                if T::SYSFS.is_empty() { core::ptr::null_mut() } else { (*shared).groups.as_mut_ptr() },
            )
        })?;
        unwind.dismiss();
        free_set.dismiss();
        let gendisk = NonNull::new(gendisk).ok_or(EINVAL)?;
        // INVARIANT: the tag set and disk were set up above as the invariants require.
        Ok(Self { tag_set, gendisk, _t: PhantomData })
    }

    /// How many times the disk is open.
    pub(crate) fn openers(&self) -> u32 {
        // SAFETY: by the type invariant the disk is valid.
        unsafe { ffi::pf_disk_openers(self.gendisk.as_ptr()) }
    }

    /// Marks the disk as being removed, so that nothing can open it any more; fails with `EBUSY`
    /// (changing nothing) while it is open.
    pub(crate) fn claim_for_removal(&self) -> Result {
        // SAFETY: by the type invariant the disk and its `DiskShared` are valid.
        let removing = unsafe { &(*((*self.gendisk.as_ptr()).private_data as *const DiskShared)).removing };
        // SAFETY: the disk is valid and `removing` lives as long as it.
        to_result(unsafe { ffi::pf_disk_claim_for_removal(self.gendisk.as_ptr(), removing.as_ptr()) })
    }

    /// `major:minor` of the disk.
    pub(crate) fn devt(&self) -> (u32, u32) {
        // SAFETY: by the type invariant the disk is valid and added, so its numbers are set.
        let g = unsafe { &*self.gendisk.as_ptr() };
        (g.major as u32, g.first_minor as u32)
    }

}

/// Whether `dev` is a disk of this driver (so that a volume is never stacked on another, nor
/// used as a cache device).
pub(crate) fn is_ours(dev: &BlockDev) -> bool {
    dev.has_fops(open_callback)
}

impl<T: Handler> Drop for Disk<T> {
    fn drop(&mut self) {
        let g = self.gendisk.as_ptr();
        // SAFETY: by the type invariant `g` is valid and its `queuedata` is the handler.
        let queue_data = unsafe { (*(*g).queue).queuedata };
        // SAFETY: the disk was added; `del_gendisk` waits for requests in flight and detaches
        // the queue from the tag set.
        unsafe { bindings::del_gendisk(g) };
        // SAFETY: drops this driver's reference; the last one (maybe an opener's, later) frees
        // the disk through `free_disk`, without touching the tag set.
        unsafe { bindings::put_disk(g) };
        // SAFETY: after `del_gendisk` no request can reach the tag set any more.
        unsafe { bindings::blk_mq_free_tag_set(self.tag_set.get()) };
        // SAFETY: `queue_data` came from `into_foreign` in `new`; nothing calls the handler now.
        drop(unsafe { Arc::<T>::from_foreign(queue_data) });
    }
}

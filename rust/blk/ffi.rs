// SPDX-License-Identifier: GPL-2.0

//! Declarations of the C helpers in `rust/helpers.c` (kernel APIs that are inline functions or
//! macros). Each is a single expression of the API it names; see that file.

use kernel::bindings;

// The kernel structs appear only behind pointers, which C and Rust pass alike; bindgen marks
// some of them (with arrays of unknown layout deep inside) as not FFI-safe by value.
#[allow(improper_ctypes)]
extern "C" {
    pub(crate) fn pf_gfp_noio() -> bindings::gfp_t;
    pub(crate) fn pf_feat_write_cache_fua() -> bindings::blk_features_t;
    pub(crate) fn pf_feat_stable_writes() -> bindings::blk_features_t;
    pub(crate) fn pf_open_mode_rw() -> bindings::blk_mode_t;
    pub(crate) fn pf_opf_flush() -> bindings::blk_opf_t;
    pub(crate) fn pf_opf_read() -> bindings::blk_opf_t;
    pub(crate) fn pf_opf_write_fua() -> bindings::blk_opf_t;
    pub(crate) fn pf_opf_write() -> bindings::blk_opf_t;
    pub(crate) fn pf_rq_pos(rq: *mut bindings::request) -> u64;
    pub(crate) fn pf_rq_for_each_data(
        rq: *mut bindings::request,
        f: unsafe extern "C" fn(*mut core::ffi::c_void, *const u8, u32),
        ctx: *mut core::ffi::c_void,
    );
    pub(crate) fn pf_bio_add_rq_pages(bio: *mut bindings::bio, rq: *mut bindings::request) -> bool;
    pub(crate) fn pf_rq_nr_bvecs(rq: *mut bindings::request) -> u16;
    pub(crate) fn pf_alloc_wq(name: *const u8, max_active: i32) -> *mut bindings::workqueue_struct;
    pub(crate) fn pf_queue_work_on(wq: *mut bindings::workqueue_struct, work: *mut bindings::work_struct) -> bool;
    pub(crate) fn pf_memalloc_noio_save() -> u32;
    pub(crate) fn pf_dev_to_disk(dev: *mut bindings::device) -> *mut bindings::gendisk;
    pub(crate) fn pf_dev_attr_init(
        da: *mut bindings::device_attribute,
        name: *const u8,
        mode: u16,
        show: unsafe extern "C" fn(*mut bindings::device, *mut bindings::device_attribute, *mut u8) -> isize,
        store: Option<unsafe extern "C" fn(*mut bindings::device, *mut bindings::device_attribute, *const u8, usize) -> isize>,
    );
    pub(crate) fn pf_attr_group_init(
        g: *mut bindings::attribute_group,
        name: *const u8,
        attrs: *mut *mut bindings::attribute,
    );
    pub(crate) fn pf_memalloc_noio_restore(flags: u32);
    pub(crate) fn pf_kthread_run(
        f: unsafe extern "C" fn(*mut core::ffi::c_void) -> core::ffi::c_int,
        data: *mut core::ffi::c_void,
        name: *const u8,
    ) -> *mut bindings::task_struct;
    pub(crate) fn pf_rq_op(rq: *mut bindings::request) -> u32;
    pub(crate) fn pf_rq_is_fua(rq: *mut bindings::request) -> bool;
    pub(crate) fn pf_rq_in_flush_seq(rq: *mut bindings::request) -> bool;
    pub(crate) fn pf_rq_from_pdu(pdu: *mut core::ffi::c_void) -> *mut bindings::request;
    pub(crate) fn pf_init_work(
        work: *mut bindings::work_struct,
        func: unsafe extern "C" fn(*mut bindings::work_struct),
    );
    pub(crate) fn pf_queue_work(work: *mut bindings::work_struct) -> bool;
    pub(crate) fn pf_disk_openers(disk: *mut bindings::gendisk) -> u32;
    pub(crate) fn pf_disk_claim_for_removal(disk: *mut bindings::gendisk, removing: *mut bool) -> i32;
    pub(crate) fn pf_bdev_nr_sectors(bdev: *mut bindings::block_device) -> u64;
    pub(crate) fn pf_bdev_logical_block_size(bdev: *mut bindings::block_device) -> u32;
    pub(crate) fn pf_bdev_physical_block_size(bdev: *mut bindings::block_device) -> u32;
    pub(crate) fn pf_bdev_max_discard_sectors(bdev: *mut bindings::block_device) -> u32;
    pub(crate) fn pf_bdev_discard_granularity(bdev: *mut bindings::block_device) -> u32;
    pub(crate) fn pf_bdev_write_zeroes_sectors(bdev: *mut bindings::block_device) -> u32;
    pub(crate) fn pf_bdev_max_hw_sectors(bdev: *mut bindings::block_device) -> u32;
    pub(crate) fn pf_bdev_fops(
        bdev: *mut bindings::block_device,
    ) -> *const bindings::block_device_operations;
}

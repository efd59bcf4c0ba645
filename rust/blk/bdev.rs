// SPDX-License-Identifier: GPL-2.0

//! A block device opened by path, exclusively, for reading and writing.

use core::ffi::{c_int, c_void};
use core::ptr::NonNull;

use kernel::bindings;
use kernel::error::from_err_ptr;
use kernel::page::Page;
use kernel::prelude::*;

use super::ffi;
use crate::pfcore::geometry;


/// The type of a `block_device_operations::open` callback.
pub(crate) type OpenFn = unsafe extern "C" fn(*mut bindings::gendisk, bindings::blk_mode_t) -> c_int;
/// An exclusively opened block device (a volume's backing "SAN" device).
///
/// # Invariants
///
/// `file` was returned by a successful `bdev_file_open_by_path` or `bdev_file_open_by_dev` and
/// is released only in `drop`;
/// `bdev` is `file_bdev(file)` and stays valid as long as `file` is held.
pub(crate) struct BlockDev {
    file: NonNull<bindings::file>,
    bdev: NonNull<bindings::block_device>,
}

// SAFETY: the kernel's block device and file objects may be used and released from any thread.
unsafe impl Send for BlockDev {}
// SAFETY: all methods take `&self` and only call thread-safe kernel functions on the device.
unsafe impl Sync for BlockDev {}

impl BlockDev {
    /// Opens `path` for read and write, exclusively for `holder`: a second open with another
    /// holder (another volume, a mounted filesystem, device-mapper) fails with `EBUSY`.
    pub(crate) fn open(path: &CStr, holder: *mut c_void) -> Result<Self> {
        // SAFETY: `path` is a valid NUL-terminated string; `holder` is an opaque cookie the block
        // layer only compares; a NULL `hops` is allowed.
        let file = from_err_ptr(unsafe {
            bindings::bdev_file_open_by_path(
                path.as_char_ptr(),
                ffi::pf_open_mode_rw(),
                holder,
                core::ptr::null(),
            )
        })?;
        Self::from_file(file)
    }

    /// Opens the device numbered `dev` like [`BlockDev::open`]: for threads, whose path lookups
    /// see the initial mount namespace and not the administrator's `/dev`.
    pub(crate) fn open_dev(dev: u32, holder: *mut c_void) -> Result<Self> {
        // SAFETY: `holder` is an opaque cookie the block layer only compares; a NULL `hops` is
        // allowed.
        let file = from_err_ptr(unsafe {
            bindings::bdev_file_open_by_dev(dev, ffi::pf_open_mode_rw(), holder, core::ptr::null())
        })?;
        Self::from_file(file)
    }

    /// The device number of the block device at `path` (resolved in the caller's namespace).
    pub(crate) fn lookup(path: &CStr) -> Result<u32> {
        let mut dev: bindings::dev_t = 0;
        // SAFETY: `path` is a valid C string and `dev` a valid out-parameter; lookup_bdev only
        // resolves the path.
        kernel::error::to_result(unsafe { bindings::lookup_bdev(path.as_char_ptr(), &mut dev) })?;
        Ok(dev)
    }

    fn from_file(file: *mut bindings::file) -> Result<Self> {
        let file = NonNull::new(file).ok_or(EINVAL)?;
        // SAFETY: `file` is a block device file returned by `bdev_file_open_by_path` or
        // `bdev_file_open_by_dev`.
        let bdev = unsafe { bindings::file_bdev(file.as_ptr()) };
        let Some(bdev) = NonNull::new(bdev) else {
            // SAFETY: `file` was opened above and is not used after this.
            unsafe { bindings::fput(file.as_ptr()) };
            return Err(EINVAL);
        };
        // INVARIANT: `file` was opened successfully and `bdev` is its block device.
        Ok(Self { file, bdev })
    }

    /// The raw block device, for building bios.
    pub(crate) fn raw(&self) -> *mut bindings::block_device {
        self.bdev.as_ptr()
    }

    /// Size and block sizes of the device.
    pub(crate) fn geometry(&self) -> geometry::Backing {
        let b = self.raw();
        // SAFETY (all seven calls): by the type invariant `b` is a valid, open block device.
        unsafe {
            geometry::Backing {
                sectors: ffi::pf_bdev_nr_sectors(b),
                logical_block_size: ffi::pf_bdev_logical_block_size(b),
                physical_block_size: ffi::pf_bdev_physical_block_size(b),
                max_discard_sectors: ffi::pf_bdev_max_discard_sectors(b),
                discard_granularity: ffi::pf_bdev_discard_granularity(b),
                max_write_zeroes_sectors: ffi::pf_bdev_write_zeroes_sectors(b),
                max_hw_sectors: ffi::pf_bdev_max_hw_sectors(b),
            }
        }
    }

    /// Reads `buf.len()` bytes (a multiple of 512, at most a page) at `sector` and waits: for
    /// metadata, never on the data path.
    pub(crate) fn read_sync(&self, sector: u64, buf: &mut [u8]) -> Result {
        let page = Page::alloc_page(GFP_KERNEL)?;
        let len = u32::try_from(buf.len()).map_err(|_| EINVAL)?;
        self.sync_page_io(sector, &page, len, false)?;
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes, which `sync_page_io` checked is
        // at most a page, and does not overlap the page.
        unsafe { page.read_raw(buf.as_mut_ptr(), 0, buf.len()) }
    }

    /// Writes `buf` (a multiple of 512 bytes, at most a page) at `sector` with FUA and waits.
    pub(crate) fn write_sync(&self, sector: u64, buf: &[u8]) -> Result {
        let page = Page::alloc_page(GFP_KERNEL)?;
        let len = u32::try_from(buf.len()).map_err(|_| EINVAL)?;
        if buf.len() > kernel::page::PAGE_SIZE {
            return Err(EINVAL);
        }
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes (at most a page, checked above)
        // and does not overlap the page.
        unsafe { page.write_raw(buf.as_ptr(), 0, buf.len())? };
        self.sync_page_io(sector, &page, len, true)
    }

    /// Whether `other` is the same block device.
    pub(crate) fn same_device(&self, other: &BlockDev) -> bool {
        self.bdev == other.bdev
    }

    /// The device number.
    pub(crate) fn dev_t(&self) -> u32 {
        // SAFETY: by the type invariant `bdev` is an open block device.
        unsafe { (*self.bdev.as_ptr()).bd_dev }
    }

    /// Whether `path` names this device (without opening it).
    pub(crate) fn is_at(&self, path: &CStr) -> bool {
        let mut dev: bindings::dev_t = 0;
        // SAFETY: `path` is a valid C string and `dev` a valid out-parameter; lookup_bdev only
        // resolves the path.
        let r = unsafe { bindings::lookup_bdev(path.as_char_ptr(), &mut dev) };
        r == 0 && dev == self.dev_t()
    }

    fn sync_page_io(&self, sector: u64, page: &Page, len: u32, write: bool) -> Result {
        if len == 0 || len as usize > kernel::page::PAGE_SIZE || len % 512 != 0 {
            return Err(EINVAL);
        }
        // SAFETY: both helpers only return a constant.
        let opf = unsafe { if write { ffi::pf_opf_write_fua() } else { ffi::pf_opf_read() } };
        // SAFETY: by the type invariant the device is open; `fs_bio_set` is the kernel's global
        // bio set, initialised at boot; one vector is enough for one page.
        let bio = unsafe {
            bindings::bio_alloc_bioset(self.raw(), 1, opf, ffi::pf_gfp_noio(), &raw mut bindings::fs_bio_set)
        };
        let bio = NonNull::new(bio).ok_or(ENOMEM)?;
        // SAFETY: `bio` was just allocated with room for one page and is ours until `bio_put`;
        // `page` outlives the I/O because `submit_bio_wait` returns only once it completed.
        let ret = unsafe {
            (*bio.as_ptr()).bi_iter.bi_sector = sector;
            if bindings::bio_add_page(bio.as_ptr(), page.as_ptr(), len, 0) != len as i32 {
                bindings::bio_put(bio.as_ptr());
                return Err(EIO);
            }
            let ret = bindings::submit_bio_wait(bio.as_ptr());
            bindings::bio_put(bio.as_ptr());
            ret
        };
        kernel::error::to_result(ret)
    }

    /// Whether this device is served by the given block device operations table.
    pub(crate) fn has_fops(&self, open: OpenFn) -> bool {
        // SAFETY: by the type invariant the device is open, so `bd_disk` and its fops are valid.
        let fops = unsafe { ffi::pf_bdev_fops(self.raw()) };
        if fops.is_null() {
            return false;
        }
        // SAFETY: `fops` is non-NULL and points to the disk's operations table.
        let theirs = unsafe { (*fops).open };
        theirs.map(|f| f as usize) == Some(open as usize)
    }
}

impl Drop for BlockDev {
    fn drop(&mut self) {
        // SAFETY: by the type invariant `file` is open and this is its only release.
        unsafe { bindings::fput(self.file.as_ptr()) };
    }
}

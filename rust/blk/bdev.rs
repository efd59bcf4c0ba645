// SPDX-License-Identifier: GPL-2.0

//! A block device opened by path, exclusively, for reading and writing.

use core::ffi::c_void;
use core::ptr::NonNull;

use kernel::bindings;
use kernel::error::from_err_ptr;
use kernel::prelude::*;

use super::ffi;
use crate::pfcore::geometry;

/// An exclusively opened block device (a volume's backing "SAN" device).
///
/// # Invariants
///
/// `file` was returned by a successful `bdev_file_open_by_path` and is released only in `drop`;
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
        let file = NonNull::new(file).ok_or(EINVAL)?;
        // SAFETY: `file` is a block device file returned by `bdev_file_open_by_path` above.
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

    /// Whether this device is served by the given block device operations table.
    pub(crate) fn has_fops(&self, open: super::disk::OpenFn) -> bool {
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

// SPDX-License-Identifier: GPL-2.0

//! The thin layer over the kernel's block layer. Besides `crate::klib` (crc32c, random bytes)
//! and the kernel crate's `global_lock!` initialisers (Documentation/design.md), peerflash's
//! `unsafe` lives below this module (and in `rust/helpers.c`); the driver above it is safe Rust.
//!
//! - [`bdev::BlockDev`]: a block device opened by path (a volume's backing device).
//! - [`bioset::BioSet`]: a bio mempool.
//! - [`disk::Disk`]: a blk-mq disk with its tag set, driven by a [`request::Handler`].
//! - [`request::Request`]: a started request, ended exactly once or remapped to another device,
//!   and [`request::Handler`], what the driver above does with it.
//! - [`dir::Dir`]: what a bio does.
//! - [`io`]: driver-owned pages, bios built from them or from a request, groups of bios
//!   waited for together, and write slots (one write in flight from pages the slot owns).
//! - [`thread`]: the volume's workqueue and the destager's kernel thread.
//! - [`clock`]: the wall clock.

pub(crate) mod bdev;
pub(crate) mod bioset;
pub(crate) mod clock;
pub(crate) mod dir;
pub(crate) mod disk;
mod ffi;
pub(crate) mod io;
pub(crate) mod request;
pub(crate) mod thread;

/// Allocation flags on the data path. Requests with a cache run in `process_work` and the
/// destager in its thread, both inside a `memalloc_noio` scope (`thread::NoIo`), where the
/// kernel turns `GFP_KERNEL` into `GFP_NOIO`: an allocation there never recurses into I/O that
/// could wait on this volume. (The kernel crate has no `GFP_NOIO` flag; the scoped API is the
/// kernel's recommended way anyway.)
pub(crate) const GFP_IO_PATH: kernel::alloc::Flags = kernel::alloc::flags::GFP_KERNEL;

// SPDX-License-Identifier: GPL-2.0

//! The thin layer over the kernel's block layer. All of peerflash's `unsafe` lives below this
//! module (and in `rust/helpers.c`); the driver above it is safe Rust.
//!
//! - [`bdev::BlockDev`]: a block device opened by path (a volume's backing device).
//! - [`bioset::BioSet`]: a bio mempool.
//! - [`disk::Disk`]: a blk-mq disk with its tag set, driven by a [`disk::Handler`].
//! - [`request::Request`]: a started request, ended exactly once or remapped to another device.

pub(crate) mod bdev;
pub(crate) mod bioset;
pub(crate) mod disk;
mod ffi;
pub(crate) mod request;

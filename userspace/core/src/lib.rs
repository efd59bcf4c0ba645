//! peerflash-core: the pure, `no_std`, allocation-free logic shared by the peerflash kernel
//! module and its userspace helper.
//!
//! The kernel module compiles these same files into itself with `#[path]` modules (see
//! `rust/peerflash_main.rs`), so every file here must:
//! - use only `core` (no `std`, no `alloc`), and refer to sibling modules with `super::`;
//! - never panic on any input (property tests and fuzzing check this);
//! - stay free of kernel types, so that it is unit- and property-tested on the host.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![forbid(unsafe_code)]

pub mod admission;
pub mod answer_order;
pub mod attr;
#[cfg(feature = "std")]
pub mod btree;
pub mod destage;
pub mod errno;
pub mod extent;
pub mod flow;
pub mod format;
pub mod frame_mac;
pub mod geometry;
pub mod handshake;
pub mod hosts;
pub mod inflight;
pub mod lockrec;
#[cfg(feature = "std")]
pub mod mac;
pub mod mode;
pub mod names;
pub mod policy;
pub mod rebuild;
pub mod replica_log;
pub mod replication;
pub mod session;
pub mod slot;
pub mod sysfs;
pub mod wire;

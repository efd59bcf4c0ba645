// SPDX-License-Identifier: GPL-2.0

//! The cache wing: a volume's cache device and everything done with it. The rules are the
//! shared core's (`pfcore`); these files hold the state and the I/O. Documentation/design.md
//! "Cache data path" explains the design.
//!
//! Imports run one way: the request files (`fast`, `write`, `read`, `flush`, `san`), `sysfs` and
//! `destager` use [`cache::Cache`]; `cache` uses `state`, `early`, `stats`, `rebuild`, `attach`
//! and `turns`; `state` uses `index`. Nothing here imports `crate::volume`, `crate::control` or
//! `crate::peer`: a wbp volume's replica set reaches the cache as a [`peers::Replicas`].
//!
//! A write-back write that can start at once is submitted to flash from `queue_rq` and
//! acknowledged from the flash write's completion (`fast`). Every other request runs in
//! process context on the volume's workqueue and waits for its own I/O, so requests proceed
//! concurrently up to the queue depth.

pub(crate) mod attach;
#[allow(clippy::module_inception)]
pub(crate) mod cache;
mod destager;
mod early;
mod fast;
mod flow;
mod flush;
mod index;
pub(crate) mod peers;
mod read;
pub(crate) mod rebuild;
mod san;
mod state;
mod stats;
mod sysfs;
pub(crate) mod turns;
mod write;

pub(crate) use cache::{Backend, Cache};

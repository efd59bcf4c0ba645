// SPDX-License-Identifier: GPL-2.0

//! The pure shared core, compiled from the same files as the `peerflash-core` crate
//! (`userspace/core/src`), where they are unit-, property- and fuzz-tested on the host.
// The files are the public API of the host crate; in the module only some of it is used.
#![allow(dead_code, unreachable_pub)]

#[path = "../userspace/core/src/admission.rs"]
pub mod admission;
#[path = "../userspace/core/src/answer_order.rs"]
pub mod answer_order;
#[path = "../userspace/core/src/attr.rs"]
pub mod attr;
#[path = "../userspace/core/src/destage.rs"]
pub mod destage;
#[path = "../userspace/core/src/errno.rs"]
pub mod errno;
#[path = "../userspace/core/src/extent.rs"]
pub mod extent;
#[path = "../userspace/core/src/flow.rs"]
pub mod flow;
#[path = "../userspace/core/src/format.rs"]
pub mod format;
#[path = "../userspace/core/src/frame_mac.rs"]
pub mod frame_mac;
#[path = "../userspace/core/src/geometry.rs"]
pub mod geometry;
#[path = "../userspace/core/src/handshake.rs"]
pub mod handshake;
#[path = "../userspace/core/src/hosts.rs"]
pub mod hosts;
#[path = "../userspace/core/src/inflight.rs"]
pub mod inflight;
#[path = "../userspace/core/src/mode.rs"]
pub mod mode;
#[path = "../userspace/core/src/names.rs"]
pub mod names;
#[path = "../userspace/core/src/policy.rs"]
pub mod policy;
#[path = "../userspace/core/src/rebuild.rs"]
pub mod rebuild;
#[path = "../userspace/core/src/replica_log.rs"]
pub mod replica_log;
#[path = "../userspace/core/src/replication.rs"]
pub mod replication;
#[path = "../userspace/core/src/session.rs"]
pub mod session;
#[path = "../userspace/core/src/slot.rs"]
pub mod slot;
#[path = "../userspace/core/src/sysfs.rs"]
pub mod sysfs;
#[path = "../userspace/core/src/wire.rs"]
pub mod wire;

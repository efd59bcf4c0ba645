// SPDX-License-Identifier: GPL-2.0

//! peerflash: a clustered, fault-tolerant write-back cache on host flash for VM disks on shared
//! storage. See Documentation/design.md.
//!
//! Layout, imports running one way (control -> volume -> cache -> blk, everything -> pfcore):
//! `control` is the configfs control interface; `volume` is a volume's request dispatch;
//! `cache` is the cache wing (its state, requests, rebuild, destager, sysfs files); `blk` is the
//! thin unsafe layer over the block layer; `pfcore` is the pure logic shared with userspace
//! (compiled from `userspace/core/src`, tested on the host). The peer wing is `peer` (this
//! host's identity, its listener, authenticated links) beside `cache`, over `net`, the thin
//! unsafe layer over kernel sockets beside `blk`; `cluster` is the control interface's cluster
//! attributes.

mod blk;
mod cache;
mod cluster;
mod control;
mod klib;
mod net;
mod peer;
mod pfcore;
mod volume;

use kernel::prelude::*;

module! {
    type: PeerflashModule,
    name: "peerflash",
    authors: ["peerflash developers"],
    description: "Clustered fault-tolerant write-back cache on host flash",
    license: "GPL v2",
}

#[pin_data]
struct PeerflashModule {
    #[pin]
    configfs: kernel::configfs::Subsystem<control::Config>,
}

impl kernel::InPlaceModule for PeerflashModule {
    fn init(module: &'static ThisModule) -> impl PinInit<Self, Error> {
        pin_init::pin_init_scope(move || {
            // Every record checksum depends on it: refuse to load with a CRC32C that is not the
            // standard one (the helper checks its own the same way).
            if !pfcore::format::crc_self_test(klib::crc32c) {
                pr_err!("the kernel's crc32c fails the CRC32C check value; not loading\n");
                return Err(EINVAL);
            }
            // SAFETY: the module initialiser runs once, before configfs (and any attach) exists.
            unsafe { cache::attach::init() };
            // SAFETY: as above.
            unsafe { cache::turns::init() };
            pr_info!("peerflash {} loaded (on-flash format {})\n", control::VERSION, pfcore::format::VERSION);
            Ok(try_pin_init!(Self { configfs <- control::subsystem(module) }))
        })
    }
}

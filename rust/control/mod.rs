// SPDX-License-Identifier: GPL-2.0

//! The control interface: a configfs subsystem, `/sys/kernel/config/peerflash/`.
//!
//! `mkdir peerflash/NAME` makes a volume's configuration; writing `backing` then `1` to `enable`
//! creates block device `/dev/pf-NAME`; `0` to `enable` removes it (refused with `EBUSY` while it is
//! open); `rmdir` forgets the volume (the helper disables first). A refused write leaves a human
//! reason in `last_error`. Documented in Documentation/control-interface.md.
//!
//! - this file: the subsystem, its root group (`version`; the peer attributes are
//!   `crate::cluster`'s) and the making of a volume's group;
//! - [`volume`]: a volume's configuration and its start and stop;
//! - `attrs`: the volume group's attributes;
//! - [`page`]: writing a configfs page.

use kernel::configfs::{self, AttributeOperations};
use kernel::configfs_attrs;
use kernel::fmt::Write as _;
use kernel::page::PAGE_SIZE;
use kernel::prelude::*;
use kernel::ThisModule;

use crate::peer::host::PeerHost;
use crate::pfcore::names;

mod attrs;
pub(crate) mod page;
pub(crate) mod volume;

use volume::VolumeConfig;

/// Version of the module and of its control interface.
pub(crate) const VERSION: &str = "0.1.0";

/// The configfs subsystem `peerflash`; `module` owns the volumes' disks (an open disk pins it).
pub(crate) fn subsystem(module: &'static ThisModule) -> impl PinInit<configfs::Subsystem<Config>, Error> {
    let item_type = configfs_attrs! {
        container: configfs::Subsystem<Config>,
        data: Config,
        child: VolumeConfig,
        attributes: [
            version: 0,
            host_id: 1,
            cluster_id: 2,
            secret: 3,
            hosts: 4,
            listen: 5,
            probe: 6,
            peer_stats: 7,
            replica_cache: 8,
        ],
    };
    configfs::Subsystem::new(
        c"peerflash",
        item_type,
        try_pin_init!(Config { module, node: PeerHost::new()? }),
    )
}

/// The subsystem's own data: the module, for the volumes' disks, and this host's peer state
/// (its attributes are in `crate::cluster`).
#[pin_data]
pub(crate) struct Config {
    module: &'static ThisModule,
    pub(crate) node: PeerHost,
}

#[vtable]
impl AttributeOperations<0> for Config {
    type Data = Config;

    fn show(_this: &Config, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        let mut w = kernel::str::Formatter::new(page);
        w.write_str(VERSION)?;
        w.write_str("\n")?;
        Ok(w.bytes_written())
    }
}

#[vtable]
impl configfs::GroupOperations for Config {
    type Child = VolumeConfig;

    fn make_group(&self, name: &CStr) -> Result<impl PinInit<configfs::Group<VolumeConfig>, Error>> {
        if let Err(e) = names::validate_volume_name(name.to_bytes()) {
            pr_err!("refusing volume name {:?}: {}\n", name, e.describe());
            return Err(EINVAL);
        }
        let item_type = configfs_attrs! {
            container: configfs::Group<VolumeConfig>,
            data: VolumeConfig,
            attributes: [
                backing: 0,
                enable: 1,
                device: 2,
                dev: 3,
                size: 4,
                openers: 5,
                last_error: 6,
                stats: 7,
                cache: 8,
                policy: 9,
                cache_slot: 10,
                cache_mib: 11,
                force: 12,
                replay: 13,
                adopt: 14,
                replicas: 15,
                fresh: 16,
            ],
        };
        Ok(configfs::Group::new(
            name.try_into()?,
            item_type,
            VolumeConfig::new(name.try_into()?, self.node.node.clone(), self.module),
        ))
    }
}

// SPDX-License-Identifier: GPL-2.0

//! A volume's configuration (what its configfs group was told) and, while it is enabled, its
//! running state: the start (backing and cache devices opened, the cache attached, the
//! destager started, the replica set's connections made, the disk added) and the stop.
//!
//! Locking: `VolumeConfig::inner` (one per volume) is taken by every attribute access. Under it,
//! the block layer's `open_mutex` of the backing and cache devices (opening them) and of the
//! volume's own disk (removal) may be taken, and the cache attach waits for its metadata I/O;
//! never the reverse: the volume's `open` callback takes no lock of ours.

use core::ffi::c_void;

use kernel::new_mutex;
use kernel::prelude::*;
use kernel::str::{BStr, CString};
use kernel::sync::{Arc, Mutex};
use kernel::ThisModule;

use crate::blk::bdev::BlockDev;
use crate::blk::thread::Thread;
use crate::blk::disk::{self, Disk};
use crate::cache::attach;
use crate::cache::Cache;
use crate::peer::member::VolumeIdent;
use crate::peer::mirror::Mirror;
use crate::peer::node::SharedNode;
use crate::pfcore::policy::Policy;
use crate::pfcore::replication::{effective_policy, SetConfig};
use crate::pfcore::errno::{self, Role};
use crate::pfcore::sysfs::Attr;
use crate::pfcore::{attr, geometry, names};
use crate::volume::Volume;

/// One volume's configuration and, while enabled, its running state.
#[pin_data]
pub(crate) struct VolumeConfig {
    #[pin]
    pub(super) inner: Mutex<VolumeInner>,
}

impl VolumeConfig {
    /// The configuration of a new volume `name` (nothing set), dialing its members as `node`;
    /// `module` owns its disk.
    pub(super) fn new(name: CString, node: SharedNode, module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(VolumeConfig {
            inner <- new_mutex!(VolumeInner {
                name,
                backing: None,
                cache: None,
                policy: Policy::WriteBack,
                cache_mib: 0,
                force: false,
                replay: false,
                fresh: false,
                adopt: None,
                replicas: None,
                node,
                last_error: "",
                running: None,
                module,
            }),
        }? Error)
    }
}

pub(super) struct VolumeInner {
    pub(super) name: CString,
    pub(super) backing: Option<CString>,
    /// Cache device path (none: no cache).
    pub(super) cache: Option<CString>,
    /// Write policy used with a cache.
    pub(super) policy: Policy,
    /// Size of a new slot's region on the cache device in MiB (0: the largest free run).
    pub(super) cache_mib: u64,
    /// Without room for a new slot, take back the slots of volumes not running here.
    pub(super) force: bool,
    /// Replay the slot's records even after a removal with dirty data, or from its floor when
    /// no checkpoint copy is readable.
    pub(super) replay: bool,
    /// Start the slot empty: the lock record says the SAN holds every acknowledged write, so
    /// the records its log holds are dropped, never replayed.
    pub(super) fresh: bool,
    /// Adopt the replica slot of (origin host, volume uuid) on the cache device.
    pub(super) adopt: Option<(u16, [u8; 16])>,
    /// wbp: the replica set in force, the ownership generation and the count asked for.
    pub(super) replicas: Option<SetConfig>,
    /// This host's peer identity (the replica set's connections are dialed with it).
    pub(super) node: SharedNode,
    /// Why the last refused write was refused ("" after a success).
    pub(super) last_error: &'static str,
    pub(super) running: Option<Running>,
    /// The module, owner of the volume's disk.
    pub(super) module: &'static ThisModule,
}

/// Field order matters: the disk goes first (draining I/O), then the destager thread stops,
/// then the volume with its backing and cache devices is released.
pub(super) struct Running {
    pub(super) disk: Disk<Volume>,
    #[allow(dead_code)] // Held only: dropping it stops the thread.
    pub(super) destager: Option<Thread<Volume>>,
    pub(super) volume: Arc<Volume>,
    pub(super) sectors: u64,
}

impl VolumeInner {
    /// Records why an operation is refused and returns the error to give to the writer.
    pub(super) fn refuse(&mut self, why: &'static str, err: Error) -> Error {
        pr_err!("volume {:?}: {}\n", &*self.name, why);
        self.last_error = why;
        err
    }

    /// Parses a path written to a device attribute, refused with `busy` while the volume runs;
    /// `None` for an empty line.
    pub(super) fn path_for_stopped(&mut self, page: &[u8], busy: &'static str) -> Result<Option<CString>> {
        if self.running.is_some() {
            return Err(self.refuse(busy, EBUSY));
        }
        if page.trim_ascii().is_empty() {
            return Ok(None);
        }
        match attr::parse_path(page) {
            Ok(p) => Ok(Some(CString::try_from_fmt(fmt!("{p}"))?)),
            Err(e) => Err(self.refuse(e.describe(), EINVAL)),
        }
    }

    pub(super) fn start(&mut self, holder: *mut c_void) -> Result {
        let Some(path) = self.backing.as_ref() else {
            return Err(self.refuse("no backing device set (write its path to `backing` first)", EINVAL));
        };
        let dev = match BlockDev::open(path, holder) {
            Ok(d) => d,
            Err(e) => return Err(self.refuse(errno::open_refusal(-e.to_errno(), Role::Backing), e)),
        };
        if disk::is_ours(&dev) {
            return Err(self.refuse("the backing device is a peerflash volume; volumes cannot be stacked", EINVAL));
        }
        let limits = match geometry::limits_for(&dev.geometry()) {
            Ok(l) => l,
            Err(e) => return Err(self.refuse(e.describe(), EINVAL)),
        };
        let mut limits = limits;
        let cache = match self.cache.as_ref() {
            None => None,
            Some(_) if self.fresh && self.replay => {
                return Err(self.refuse("fresh drops the records a replay is for: set only one of them", EINVAL));
            }
            Some(cpath) => {
                let want = attach::Want {
                    name: self.name.to_bytes(),
                    backing_path: path.to_bytes(),
                    backing_sectors: limits.sectors,
                    policy: self.policy,
                    mib: self.cache_mib,
                    force: self.force,
                    adopt: self.adopt,
                    fresh: self.fresh,
                };
                let a = match attach::attach(cpath, &dev, &want) {
                    Ok(a) => a,
                    Err((why, e)) => return Err(self.refuse(why, e)),
                };
                for gone in a.reclaimed.iter() {
                    pr_warn!(
                        "volume {:?}: took back the cache slot of volume {:?} (force): its data on {:?} is gone\n",
                        &*self.name,
                        BStr::from_bytes(gone.name_bytes()),
                        &**cpath
                    );
                }
                pr_info!(
                    "volume {:?}: cache {:?} slot {} ({}), segments {}+{}\n",
                    &*self.name,
                    &**cpath,
                    a.slot_index,
                    if a.created { "new" } else { "found" },
                    a.slot.first_segment,
                    a.slot.segments
                );
                let opened = match Cache::open(a, self.replay, self.fresh) {
                    Ok(init) => KBox::pin_init(init, GFP_KERNEL),
                    Err((why, e)) => {
                        pr_err!("volume {:?}: cache open refused: {} ({:?})\n", &*self.name, why, e);
                        return Err(self.refuse(why, e));
                    }
                };
                match opened {
                    Ok(c) => Some(c),
                    Err(e) => {
                        pr_err!("volume {:?}: cache open failed: {:?}\n", &*self.name, e);
                        return Err(self.refuse("cannot read the volume's records on the cache device", e));
                    }
                }
            }
        };
        if let Some(c) = &cache {
            // Records stay whole blocks of the cache device: the volume's blocks are at least
            // its blocks (the capacity was checked by the attach).
            limits = match geometry::with_cache_block(limits, c.block_size()) {
                Ok(l) => l,
                Err(e) => return Err(self.refuse(e.describe(), EINVAL)),
            };
            limits.max_hw_sectors = limits.max_hw_sectors.min(c.max_request_sectors());
        }
        if let Some(c) = &cache {
            if let Err((why, e)) = self.start_peers(c, limits.sectors) {
                return Err(self.refuse(why, e));
            }
        }
        let wq_name = CString::try_from_fmt(fmt!("pf-{}", self.name.to_str()?))?;
        let volume = Arc::pin_init(Volume::new(dev, cache, &wq_name)?, GFP_KERNEL)?;
        let destager = match volume.cache() {
            Some(_) => match Thread::spawn(&wq_name, volume.clone(), Volume::destager) {
                Ok(t) => Some(t),
                Err(e) => return Err(self.refuse("cannot start the destager thread", e)),
            },
            None => None,
        };
        let module = self.module;
        let created = Disk::new(
            fmt!("{}{}", names::DISK_PREFIX, self.name.to_str()?),
            &limits,
            destager.is_some(),
            module,
            volume.clone(),
        );
        let disk = match created {
            Ok(d) => d,
            Err(e) => return Err(self.refuse("cannot create the block device", e)),
        };
        pr_info!(
            "volume {:?}: /dev/{}{} on {:?}, {} sectors\n",
            &*self.name,
            names::DISK_PREFIX,
            self.name.to_str()?,
            &**path,
            limits.sectors
        );
        self.running = Some(Running { disk, destager, volume, sectors: limits.sectors });
        Ok(())
    }

    /// wbp: opens the volume's replicas on the members of its set and hands them to the cache,
    /// which runs write-through while the set has fewer members than asked for.
    fn start_peers(&self, c: &Cache, sectors: u64) -> Result<(), (&'static str, Error)> {
        if self.policy != Policy::WriteBackPeers {
            return Ok(());
        }
        let Some(cfg) = self.replicas else {
            return Err(("wbp needs the replica set: write `replicas` first", EINVAL));
        };
        if !cfg.set.is_empty() {
            let mut name = [0u8; crate::pfcore::wire::NAME_BYTES];
            let n = self.name.to_bytes();
            name.get_mut(..n.len()).ok_or(("the volume name is too long", EINVAL))?.copy_from_slice(n);
            let (uuid, region_bytes) = c.replica_ident();
            let ident = VolumeIdent { uuid, name, sectors, block_size: c.block_size(), region_bytes };
            let timeout = u32::try_from(Attr::PeerTimeoutMs.default_value()).unwrap_or(2000);
            match Mirror::start(&self.node, ident, cfg, timeout) {
                Ok(m) => c.set_peers(Some(m as Arc<dyn crate::cache::peers::Replicas>)),
                Err((why, host, e)) => {
                    pr_err!("volume {:?}: replica host {}: {} ({:?})\n", &*self.name, host, why, e);
                    return Err((why, e));
                }
            }
        }
        let eff = effective_policy(Policy::WriteBackPeers, &cfg.set, cfg.wanted);
        if eff != Policy::WriteBackPeers {
            pr_warn!("volume {:?}: {} of {} replica hosts: running write-through\n", &*self.name, cfg.set.len(), cfg.wanted);
        }
        c.run_as(eff);
        Ok(())
    }

    pub(super) fn stop(&mut self) -> Result {
        if let Some(r) = &self.running {
            if r.disk.claim_for_removal().is_err() {
                return Err(self.refuse("the volume is open; close it first", EBUSY));
            }
        }
        if let Some(r) = self.running.take() {
            // In order: the disk (draining I/O), the destager, then the cache says what it
            // leaves on flash, then the volume and its devices go.
            let Running { disk, destager, volume, .. } = r;
            // The replica connections end first: nothing may wait on a member while the disk
            // drains and the destager stops (the disk is not open: nothing should).
            if let Some(c) = volume.cache() {
                c.set_peers(None);
            }
            drop(disk);
            drop(destager);
            if let Some(c) = volume.cache() {
                c.close();
            }
            drop(volume);
            pr_info!("volume {:?}: removed\n", &*self.name);
        }
        Ok(())
    }
}

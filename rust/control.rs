// SPDX-License-Identifier: GPL-2.0

//! The control interface: a configfs subsystem, `/sys/kernel/config/peerflash/`.
//!
//! `mkdir peerflash/NAME` makes a volume's configuration; writing `backing` then `1` to `enable`
//! creates block device `/dev/pf-NAME`; `0` to `enable` removes it (refused with `EBUSY` while it is
//! open); `rmdir` forgets the volume (the helper disables first). A refused write leaves a human
//! reason in `last_error`. Documented in Documentation/control-interface.md.
//!
//! Locking: `VolumeConfig::inner` (one per volume) is taken by every attribute access. Under it,
//! the block layer's `open_mutex` of the backing and cache devices (opening them) and of the
//! volume's own disk (removal) may be taken, and the cache attach waits for its metadata I/O;
//! never the reverse: the volume's `open` callback takes no lock of ours.

use core::ffi::c_void;

use kernel::configfs::{self, AttributeOperations};
use kernel::configfs_attrs;
use kernel::fmt::{self, Write as _};
use kernel::new_mutex;
use kernel::page::PAGE_SIZE;
use kernel::prelude::*;
use kernel::str::{BStr, CString};
use kernel::sync::{Arc, Mutex};
use kernel::ThisModule;

use crate::blk::bdev::BlockDev;
use crate::blk::thread::Thread;
use crate::blk::disk::{self, Disk};
use crate::cache::attach;
use crate::cache::Cache;
use crate::peer::host::PeerHost;
use crate::peer::member::VolumeIdent;
use crate::peer::mirror::Mirror;
use crate::peer::node::SharedNode;
use crate::pfcore::policy::Policy;
use crate::pfcore::replication::{effective_policy, parse_set_config, set_change_ok, SetConfig};
use crate::pfcore::errno::{self, Role};
use crate::pfcore::sysfs::Attr;
use crate::pfcore::{attr, geometry, names};
use crate::volume::Volume;

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
            try_pin_init!(VolumeConfig {
                inner <- new_mutex!(VolumeInner {
                    name: name.try_into()?,
                    backing: None,
                    cache: None,
                    policy: Policy::WriteBack,
                    cache_mib: 0,
                    force: false,
                    replay: false,
                    fresh: false,
                    adopt: None,
                    replicas: None,
                    node: self.node.node.clone(),
                    last_error: "",
                    running: None,
                    module: self.module,
                }),
            }),
        ))
    }
}

/// One volume's configuration and, while enabled, its running state.
#[pin_data]
pub(crate) struct VolumeConfig {
    #[pin]
    inner: Mutex<VolumeInner>,
}

struct VolumeInner {
    name: CString,
    backing: Option<CString>,
    /// Cache device path (none: no cache).
    cache: Option<CString>,
    /// Write policy used with a cache.
    policy: Policy,
    /// Size of a new slot's region on the cache device in MiB (0: the largest free run).
    cache_mib: u64,
    /// Without room for a new slot, take back the slots of volumes not running here.
    force: bool,
    /// Replay the slot's records even after a removal with dirty data, or from its floor when
    /// no checkpoint copy is readable.
    replay: bool,
    /// Start the slot empty: the lock record says the SAN holds every acknowledged write, so
    /// the records its log holds are dropped, never replayed.
    fresh: bool,
    /// Adopt the replica slot of (origin host, volume uuid) on the cache device.
    adopt: Option<(u16, [u8; 16])>,
    /// wbp: the replica set in force, the ownership generation and the count asked for.
    replicas: Option<SetConfig>,
    /// This host's peer identity (the replica set's connections are dialed with it).
    node: SharedNode,
    /// Why the last refused write was refused ("" after a success).
    last_error: &'static str,
    running: Option<Running>,
    /// The module, owner of the volume's disk.
    module: &'static ThisModule,
}

/// Field order matters: the disk goes first (draining I/O), then the destager thread stops,
/// then the volume with its backing and cache devices is released.
struct Running {
    disk: Disk<Volume>,
    #[allow(dead_code)] // Held only: dropping it stops the thread.
    destager: Option<Thread<Volume>>,
    volume: Arc<Volume>,
    sectors: u64,
}

impl VolumeInner {
    /// Records why an operation is refused and returns the error to give to the writer.
    fn refuse(&mut self, why: &'static str, err: Error) -> Error {
        pr_err!("volume {:?}: {}\n", &*self.name, why);
        self.last_error = why;
        err
    }

    /// Parses a path written to a device attribute, refused with `busy` while the volume runs;
    /// `None` for an empty line.
    fn path_for_stopped(&mut self, page: &[u8], busy: &'static str) -> Result<Option<CString>> {
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

    fn start(&mut self, holder: *mut c_void) -> Result {
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

    fn stop(&mut self) -> Result {
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

/// Shows a path attribute (an empty line when unset).
fn show_path(page: &mut [u8; PAGE_SIZE], path: Option<&CStr>) -> Result<usize> {
    match path {
        Some(p) => show_fmt(page, fmt!("{}\n", p.to_str()?)),
        None => show_fmt(page, fmt!("\n")),
    }
}

/// Stores a 0/1 attribute that only matters before enabling (`busy`: the refusal while the
/// volume runs; `range`: for another number).
fn store_flag(this: &VolumeConfig, page: &[u8], busy: &'static str, range: &'static str, set: impl FnOnce(&mut VolumeInner, bool)) -> Result {
    let mut g = this.inner.lock();
    if g.running.is_some() {
        return Err(g.refuse(busy, EBUSY));
    }
    match attr::parse_u64(page) {
        Ok(n @ (0 | 1)) => set(&mut g, n == 1),
        Ok(_) => return Err(g.refuse(range, ERANGE)),
        Err(e) => return Err(g.refuse(e.describe(), EINVAL)),
    }
    g.last_error = "";
    Ok(())
}

/// Writes `args` to a configfs page and returns the length.
pub(crate) fn show_fmt(page: &mut [u8; PAGE_SIZE], args: fmt::Arguments<'_>) -> Result<usize> {
    let mut w = kernel::str::Formatter::new(page);
    w.write_fmt(args)?;
    Ok(w.bytes_written())
}

#[vtable]
impl AttributeOperations<0> for VolumeConfig {
    type Data = VolumeConfig;

    fn show(this: &VolumeConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        show_path(page, this.inner.lock().backing.as_deref())
    }

    fn store(this: &VolumeConfig, page: &[u8]) -> Result {
        let mut g = this.inner.lock();
        match g.path_for_stopped(page, "the backing device of an enabled volume cannot change")? {
            Some(p) => g.backing = Some(p),
            None => return Err(g.refuse("the path is empty", EINVAL)),
        }
        g.last_error = "";
        Ok(())
    }
}

#[vtable]
impl AttributeOperations<1> for VolumeConfig {
    type Data = VolumeConfig;

    fn show(this: &VolumeConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        let on = this.inner.lock().running.is_some();
        show_fmt(page, fmt!("{}\n", u8::from(on)))
    }

    fn store(this: &VolumeConfig, page: &[u8]) -> Result {
        let holder = core::ptr::from_ref(this).cast_mut().cast::<c_void>();
        let mut g = this.inner.lock();
        let on = match attr::parse_bool(page) {
            Ok(b) => b,
            Err(e) => return Err(g.refuse(e.describe(), EINVAL)),
        };
        match (on, g.running.is_some()) {
            (true, false) => g.start(holder)?,
            (false, true) => g.stop()?,
            _ => {}
        }
        g.last_error = "";
        Ok(())
    }
}

#[vtable]
impl AttributeOperations<2> for VolumeConfig {
    type Data = VolumeConfig;

    fn show(this: &VolumeConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        let g = this.inner.lock();
        if g.running.is_some() {
            show_fmt(page, fmt!("{}{}\n", names::DISK_PREFIX, g.name.to_str()?))
        } else {
            show_fmt(page, fmt!("\n"))
        }
    }
}

#[vtable]
impl AttributeOperations<3> for VolumeConfig {
    type Data = VolumeConfig;

    fn show(this: &VolumeConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        match &this.inner.lock().running {
            Some(r) => {
                let (major, minor) = r.disk.devt();
                show_fmt(page, fmt!("{major}:{minor}\n"))
            }
            None => show_fmt(page, fmt!("\n")),
        }
    }
}

#[vtable]
impl AttributeOperations<4> for VolumeConfig {
    type Data = VolumeConfig;

    fn show(this: &VolumeConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        let sectors = this.inner.lock().running.as_ref().map_or(0, |r| r.sectors);
        show_fmt(page, fmt!("{sectors}\n"))
    }
}

#[vtable]
impl AttributeOperations<5> for VolumeConfig {
    type Data = VolumeConfig;

    fn show(this: &VolumeConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        let n = this.inner.lock().running.as_ref().map_or(0, |r| r.disk.openers());
        show_fmt(page, fmt!("{n}\n"))
    }
}

#[vtable]
impl AttributeOperations<6> for VolumeConfig {
    type Data = VolumeConfig;

    fn show(this: &VolumeConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        show_fmt(page, fmt!("{}\n", this.inner.lock().last_error))
    }
}

#[vtable]
impl AttributeOperations<7> for VolumeConfig {
    type Data = VolumeConfig;

    fn show(this: &VolumeConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        let g = this.inner.lock();
        let mut w = kernel::str::Formatter::new(page);
        if let Some(r) = &g.running {
            for (k, v) in r.volume.stats().snapshot() {
                w.write_fmt(fmt!("{k} {v}\n"))?;
            }
        }
        Ok(w.bytes_written())
    }
}

#[vtable]
impl AttributeOperations<8> for VolumeConfig {
    type Data = VolumeConfig;

    fn show(this: &VolumeConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        show_path(page, this.inner.lock().cache.as_deref())
    }

    /// A path sets the cache device; an empty line removes it.
    fn store(this: &VolumeConfig, page: &[u8]) -> Result {
        let mut g = this.inner.lock();
        g.cache = g.path_for_stopped(page, "the cache device of an enabled volume cannot change")?;
        g.last_error = "";
        Ok(())
    }
}

#[vtable]
impl AttributeOperations<9> for VolumeConfig {
    type Data = VolumeConfig;

    fn show(this: &VolumeConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        show_fmt(page, fmt!("{}\n", this.inner.lock().policy.name()))
    }

    fn store(this: &VolumeConfig, page: &[u8]) -> Result {
        let mut g = this.inner.lock();
        let Some(p) = Policy::parse(page) else {
            return Err(g.refuse("expected wt, wb or wbp", EINVAL));
        };
        if g.running.is_some() && (p == Policy::WriteBackPeers || g.policy == Policy::WriteBackPeers) {
            if p == g.policy {
                return Ok(());
            }
            return Err(g.refuse("a running volume does not change to or from wbp (remove it and create it again)", EBUSY));
        }
        if let Some(c) = g.running.as_ref().and_then(|r| r.volume.cache()) {
            if let Err(e) = c.set_policy(p) {
                return Err(g.refuse("cannot record the policy on the cache device", e));
            }
        }
        g.policy = p;
        g.last_error = "";
        Ok(())
    }
}

#[vtable]
impl AttributeOperations<10> for VolumeConfig {
    type Data = VolumeConfig;

    /// The volume's slot number on its cache device (empty without a cache).
    fn show(this: &VolumeConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        match this.inner.lock().running.as_ref().and_then(|r| r.volume.cache()) {
            Some(c) => show_fmt(page, fmt!("{}\n", c.slot_index())),
            None => show_fmt(page, fmt!("\n")),
        }
    }
}

#[vtable]
impl AttributeOperations<11> for VolumeConfig {
    type Data = VolumeConfig;

    fn show(this: &VolumeConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        show_fmt(page, fmt!("{}\n", this.inner.lock().cache_mib))
    }

    /// MiB of the cache device a new slot takes (0: the largest free run); a slot found by
    /// name keeps its size.
    fn store(this: &VolumeConfig, page: &[u8]) -> Result {
        let mut g = this.inner.lock();
        if g.running.is_some() {
            return Err(g.refuse("the cache share of an enabled volume cannot change", EBUSY));
        }
        match attr::parse_u64(page) {
            Ok(n) if n <= 1 << 30 => g.cache_mib = n,
            Ok(_) => return Err(g.refuse("cache_mib is larger than any device (1 PiB)", ERANGE)),
            Err(e) => return Err(g.refuse(e.describe(), EINVAL)),
        }
        g.last_error = "";
        Ok(())
    }
}

#[vtable]
impl AttributeOperations<12> for VolumeConfig {
    type Data = VolumeConfig;

    fn show(this: &VolumeConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        show_fmt(page, fmt!("{}\n", u8::from(this.inner.lock().force)))
    }

    /// 1: when the cache device has no room for a new slot, the attach takes back the slots of
    /// volumes not running here (their data on the cache device is lost).
    fn store(this: &VolumeConfig, page: &[u8]) -> Result {
        store_flag(this, page, "force only matters before enabling", "force is 0 or 1", |g, on| g.force = on)
    }
}

#[vtable]
impl AttributeOperations<13> for VolumeConfig {
    type Data = VolumeConfig;

    fn show(this: &VolumeConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        show_fmt(page, fmt!("{}\n", u8::from(this.inner.lock().replay)))
    }

    /// 1: replay the slot's dirty records even when the volume was removed with dirty data (it
    /// may have run without this cache since) or neither checkpoint copy is readable (then from
    /// the slot's serial floor): the operator knows the SAN holds nothing newer for them.
    fn store(this: &VolumeConfig, page: &[u8]) -> Result {
        store_flag(this, page, "replay only matters before enabling", "replay is 0 or 1", |g, on| g.replay = on)
    }
}

#[vtable]
impl AttributeOperations<16> for VolumeConfig {
    type Data = VolumeConfig;

    fn show(this: &VolumeConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        show_fmt(page, fmt!("{}\n", u8::from(this.inner.lock().fresh)))
    }

    /// 1: the slot starts empty: the records its log holds are dropped, never replayed, and its
    /// checkpoint moves past them (persisted before the volume runs). With `adopt`: a slot of
    /// this name is cleared first, and the adopted replica's records are dropped too (an
    /// obsolete replica whose room the volume takes). For a host that runs the
    /// volume when the lock record says the SAN holds every acknowledged write: a record left
    /// on this flash is then on the SAN already, or stale (another host replayed a replica of
    /// it and wrote on).
    fn store(this: &VolumeConfig, page: &[u8]) -> Result {
        store_flag(this, page, "fresh only matters before enabling", "fresh is 0 or 1", |g, on| g.fresh = on)
    }
}

#[vtable]
impl AttributeOperations<14> for VolumeConfig {
    type Data = VolumeConfig;

    fn show(this: &VolumeConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        match this.inner.lock().adopt {
            None => show_fmt(page, fmt!("\n")),
            Some((origin, uuid)) => {
                let mut w = kernel::str::Formatter::new(page);
                w.write_fmt(fmt!("{} ", origin))?;
                for b in uuid {
                    w.write_fmt(fmt!("{:02x}", b))?;
                }
                w.write_str("\n")?;
                Ok(w.bytes_written())
            }
        }
    }

    /// `ORIGIN UUID` (a host id and 32 hex digits): at enable, the volume takes the replica slot
    /// that this host's cache device holds for host ORIGIN's volume UUID, and replays it (the
    /// primary's own flash is gone); an empty line: none.
    fn store(this: &VolumeConfig, page: &[u8]) -> Result {
        let mut g = this.inner.lock();
        if g.running.is_some() {
            return Err(g.refuse("adopt only matters before enabling", EBUSY));
        }
        let text = page.trim_ascii();
        if text.is_empty() {
            g.adopt = None;
            g.last_error = "";
            return Ok(());
        }
        let mut words = text.split(|&b| b == b' ').filter(|w| !w.is_empty());
        let origin = words
            .next()
            .and_then(|w| core::str::from_utf8(w).ok())
            .and_then(|w| w.parse::<u16>().ok())
            .filter(|&o| o != 0);
        let uuid = words.next().and_then(crate::pfcore::handshake::parse_hex::<16>);
        match (origin, uuid, words.next()) {
            (Some(o), Some(u), None) => g.adopt = Some((o, u)),
            _ => return Err(g.refuse("adopt is a host id (1..65535) and a volume uuid of 32 hex digits", EINVAL)),
        }
        g.last_error = "";
        Ok(())
    }
}

#[vtable]
impl AttributeOperations<15> for VolumeConfig {
    type Data = VolumeConfig;

    /// The replica set as last written: `EPOCH GEN WANTED HOST...` (empty: none).
    fn show(this: &VolumeConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        let Some(c) = this.inner.lock().replicas else {
            return show_fmt(page, fmt!("\n"));
        };
        let mut w = kernel::str::Formatter::new(page);
        w.write_fmt(fmt!("{} {} {}", c.set.epoch, c.gen, c.wanted))?;
        for h in c.set.members() {
            w.write_fmt(fmt!(" {}", h))?;
        }
        w.write_str("\n")?;
        Ok(w.bytes_written())
    }

    /// `EPOCH GEN WANTED HOST...`: the replica set in force (the lock record's epoch and
    /// members), the generation of this host's ownership and the number of members asked for.
    /// Before enabling, any; while running, only a set at a higher epoch without some members
    /// (the agent writes it after the lock record holds it): what waited for the members that
    /// left is released, and with fewer members than asked for the volume runs write-through.
    fn store(this: &VolumeConfig, page: &[u8]) -> Result {
        let mut g = this.inner.lock();
        let me = g.node.snapshot().host;
        let new = match parse_set_config(page, me) {
            Ok(c) => c,
            Err(e) => return Err(g.refuse(e.describe(), EINVAL)),
        };
        let cache = g.running.as_ref().and_then(|r| r.volume.cache());
        if let Some(c) = cache {
            let Some(old) = g.replicas else {
                return Err(g.refuse("the volume runs without a replica set", EBUSY));
            };
            if let Err(e) = set_change_ok(&old, &new) {
                return Err(g.refuse(e.describe(), EINVAL));
            }
            if g.policy == Policy::WriteBackPeers {
                if let Some(m) = c.peers() {
                    if let Err(e) = m.change_set(new) {
                        return Err(g.refuse("the volume closed while its members took the new set", e));
                    }
                }
                c.run_as(effective_policy(Policy::WriteBackPeers, &new.set, new.wanted));
            }
        }
        g.replicas = Some(new);
        g.last_error = "";
        Ok(())
    }
}

// SPDX-License-Identifier: GPL-2.0

//! The attributes of a volume's configfs group (Documentation/control-interface.md): each one's
//! show and store, under the volume's `inner` lock.

use kernel::configfs::AttributeOperations;
use kernel::fmt::Write as _;
use kernel::page::PAGE_SIZE;
use kernel::prelude::*;

use crate::pfcore::policy::Policy;
use crate::pfcore::replication::{effective_policy, parse_set_config, set_change_ok};
use crate::pfcore::{attr, names};

use super::page::{show_fmt, show_path};
use super::volume::{VolumeConfig, VolumeInner};

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

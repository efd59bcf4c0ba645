// SPDX-License-Identifier: GPL-2.0

//! The cluster attributes of the control interface, at the root of `/sys/kernel/config/peerflash/`
//! (Documentation/control-interface.md, "Cluster"): this host's id, the cluster's id and secret,
//! the host table, the listen address, a probe of a peer and the peer counters. The agent
//! writes them from the cluster configuration; the secret is write-only (reading it says only
//! whether it is set) and never logged.

use core::sync::atomic::Ordering;

use kernel::configfs::AttributeOperations;
use kernel::fmt::Write as _;
use kernel::page::PAGE_SIZE;
use kernel::str::CString;
use kernel::prelude::*;

use crate::blk::bdev::BlockDev;
use crate::control::page::show_fmt;
use crate::control::Config;
use crate::peer::node::DisplayEp;
use crate::peer::probe;
use crate::pfcore::handshake::{parse_cluster_id, parse_secret};
use crate::pfcore::hosts::{Endpoint, HostTable};

fn refuse(what: &str, why: &str, e: Error) -> Error {
    pr_err!("cluster {}: {}\n", what, why);
    e
}

/// Identity settings change only while no listener runs.
fn while_stopped(c: &Config, what: &str) -> Result {
    if c.node.listening().is_some() {
        return Err(refuse(what, "refused while listening (write an empty line to `listen` first)", EBUSY));
    }
    Ok(())
}

#[vtable]
impl AttributeOperations<1> for Config {
    type Data = Config;

    fn show(c: &Config, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        show_fmt(page, fmt!("{}\n", c.node.node.snapshot().host))
    }

    fn store(c: &Config, page: &[u8]) -> Result {
        while_stopped(c, "host_id")?;
        let id = core::str::from_utf8(page.trim_ascii()).ok().and_then(|s| s.parse::<u32>().ok()).filter(|&i| i > 0);
        let Some(id) = id else {
            return Err(refuse("host_id", "expected a host id of 1 or more", EINVAL));
        };
        c.node.node.config.lock().host = id;
        Ok(())
    }
}

#[vtable]
impl AttributeOperations<2> for Config {
    type Data = Config;

    fn show(c: &Config, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        let id = c.node.node.snapshot().cluster;
        let mut w = kernel::str::Formatter::new(page);
        if id != [0; 16] {
            for b in id {
                w.write_fmt(fmt!("{:02x}", b))?;
            }
        }
        w.write_str("\n")?;
        Ok(w.bytes_written())
    }

    fn store(c: &Config, page: &[u8]) -> Result {
        while_stopped(c, "cluster_id")?;
        let Some(id) = parse_cluster_id(page) else {
            return Err(refuse("cluster_id", "expected 32 hex digits, not all zero", EINVAL));
        };
        c.node.node.config.lock().cluster = id;
        Ok(())
    }
}

#[vtable]
impl AttributeOperations<3> for Config {
    type Data = Config;

    /// Never the secret: only whether one is set.
    fn show(c: &Config, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        let set = c.node.node.snapshot().secret.is_some();
        show_fmt(page, fmt!("{}\n", if set { "set" } else { "unset" }))
    }

    fn store(c: &Config, page: &[u8]) -> Result {
        while_stopped(c, "secret")?;
        // The refusal never echoes the bytes written.
        let Some(secret) = parse_secret(page) else {
            return Err(refuse("secret", "expected 64 hex digits, not all zero", EINVAL));
        };
        c.node.node.config.lock().secret = Some(secret);
        Ok(())
    }
}

#[vtable]
impl AttributeOperations<4> for Config {
    type Data = Config;

    fn show(c: &Config, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        let t = c.node.node.snapshot().hosts;
        let mut w = kernel::str::Formatter::new(page);
        for &(id, ep) in t.hosts() {
            w.write_fmt(fmt!("{} {}\n", id, DisplayEp(ep)))?;
        }
        Ok(w.bytes_written())
    }

    /// The whole table at once: one `ID A.B.C.D:PORT` per line. It may change while listening
    /// (a host joins the cluster): the next handshake checks against the new table.
    fn store(c: &Config, page: &[u8]) -> Result {
        match HostTable::parse(page) {
            Ok(t) => {
                c.node.node.config.lock().hosts = t;
                Ok(())
            }
            Err(e) => Err(refuse("hosts", e.describe(), EINVAL)),
        }
    }
}

#[vtable]
impl AttributeOperations<5> for Config {
    type Data = Config;

    fn show(c: &Config, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        match c.node.listening() {
            Some(ep) => show_fmt(page, fmt!("{}\n", DisplayEp(ep))),
            None => show_fmt(page, fmt!("\n")),
        }
    }

    /// `A.B.C.D:PORT` starts listening there (host id, cluster id and secret set first); an
    /// empty line stops, ending every connection served.
    fn store(c: &Config, page: &[u8]) -> Result {
        if page.trim_ascii().is_empty() {
            return c.node.set_listen(None);
        }
        let at = Endpoint::parse(page).map_err(|e| refuse("listen", e.describe(), EINVAL))?;
        if c.node.node.snapshot().identity().is_none() {
            return Err(refuse("listen", "set host_id, cluster_id and secret first", EINVAL));
        }
        c.node.set_listen(Some(at)).map_err(|e| refuse("listen", "cannot listen on that address", e))
    }
}

#[vtable]
impl AttributeOperations<6> for Config {
    type Data = Config;

    fn show(c: &Config, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        let k = &c.node.node.counters;
        show_fmt(
            page,
            fmt!(
                "pings {} mean_us {} min_us {}\n",
                k.probe_pings.load(Ordering::Relaxed),
                k.probe_mean_us.load(Ordering::Relaxed),
                k.probe_min_us.load(Ordering::Relaxed)
            ),
        )
    }

    /// `ID [COUNT]`: dial host ID, authenticate, time COUNT (default 10, at most 100000) pings.
    fn store(c: &Config, page: &[u8]) -> Result {
        let text = core::str::from_utf8(page.trim_ascii()).map_err(|_| EINVAL)?;
        let mut words = text.split_ascii_whitespace();
        let id = words.next().and_then(|w| w.parse::<u32>().ok()).filter(|&i| i > 0);
        let count = match words.next() {
            None => Some(10),
            Some(w) => w.parse::<u64>().ok().filter(|&n| (1..=100_000).contains(&n)),
        };
        let (Some(id), Some(count), None) = (id, count, words.next()) else {
            return Err(refuse("probe", "expected a host id and optionally a ping count (1..100000)", EINVAL));
        };
        match probe::probe(&c.node.node, id, count) {
            Ok(_) => Ok(()),
            Err(e) => {
                pr_err!("cluster probe of host {}: {} (errno {})\n", id, e.describe(), e.errno());
                Err(EHOSTUNREACH)
            }
        }
    }
}

#[vtable]
impl AttributeOperations<7> for Config {
    type Data = Config;

    fn show(c: &Config, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        let n = &c.node.node;
        let k = &n.counters;
        let v = |a: &core::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let why = *n.last_refusal.lock();
        show_fmt(
            page,
            fmt!(
                "accepted {}\nhandshakes {}\nauth_failures {}\nrate_limited {}\nstrangers {}\nframes_refused {}\npings_answered {}\nserved {}\n\
                 replicas_attached {}\nreplicas_refused {}\nreplica_writes {}\nreplica_bytes {}\nreplica_nacks {}\nreplica_checkpoints {}\nlast_refusal {}\n",
                v(&k.accepted),
                v(&k.handshakes),
                v(&k.auth_failures),
                v(&k.rate_limited),
                v(&k.strangers),
                v(&k.frames_refused),
                v(&k.pings_answered),
                v(&k.served),
                v(&k.replicas_attached),
                v(&k.replicas_refused),
                v(&k.replica_writes),
                v(&k.replica_bytes),
                v(&k.replica_nacks),
                v(&k.replica_checkpoints),
                why
            ),
        )
    }
}

#[vtable]
impl AttributeOperations<8> for Config {
    type Data = Config;

    fn show(c: &Config, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        match &*c.node.node.replica_cache.lock() {
            Some((_, p)) => show_fmt(page, fmt!("{}\n", p.to_str().unwrap_or("?"))),
            None => show_fmt(page, fmt!("\n")),
        }
    }

    /// The path of this host's cache device that holds the peers' replicas (a device formatted
    /// with `peerflash format-cache`, usually the one its own volumes use); an empty line: none
    /// (ATTACH is refused). Replicas already open keep their device.
    fn store(c: &Config, page: &[u8]) -> Result {
        let path = page.trim_ascii();
        if path.is_empty() {
            *c.node.node.replica_cache.lock() = None;
            return Ok(());
        }
        if path.first() != Some(&b'/') || path.len() > 255 || path.contains(&0) {
            return Err(refuse("replica_cache", "expected the absolute path of a cache device", EINVAL));
        }
        let p = CString::try_from_fmt(fmt!("{}", kernel::str::BStr::from_bytes(path)))?;
        let dev = BlockDev::lookup(&p).map_err(|e| refuse("replica_cache", "no block device at that path", e))?;
        *c.node.node.replica_cache.lock() = Some((dev, p));
        Ok(())
    }
}

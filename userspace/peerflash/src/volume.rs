//! Volume verbs: create, remove, status.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use peerflash_core::mode::CacheState;
use peerflash_core::sysfs::Attr;
use peerflash_core::policy::Policy;
use peerflash_core::{attr, errno, names};
use serde::Serialize;

use crate::configfs::Root;
use crate::error::VolumeError;

fn check_name(name: &str) -> Result<()> {
    names::validate_volume_name(name.as_bytes()).map_err(|e| {
        VolumeError::Invalid(format!("invalid volume name {name:?}: {}", e.describe())).into()
    })
}

fn check_backing(backing: &str) -> Result<()> {
    check_device("backing", backing)
}

/// Checks that `path` (the `what` device) is an absolute path to an existing block device.
fn check_device(what: &str, backing: &str) -> Result<()> {
    attr::parse_path(backing.as_bytes()).map_err(|e| {
        VolumeError::Invalid(format!(
            "invalid {what} device path {backing:?}: {}",
            e.describe()
        ))
    })?;
    let meta = match std::fs::metadata(backing) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(
                VolumeError::NotFound(format!("{what} device {backing} does not exist")).into(),
            )
        }
        Err(e) => return Err(e).with_context(|| format!("cannot examine {backing}")),
    };
    if !meta.file_type().is_block_device() {
        return Err(VolumeError::Invalid(format!("{backing} is not a block device")).into());
    }
    Ok(())
}

/// What `create` made.
pub struct Created {
    /// The volume's block device path.
    pub device: String,
}

/// Turns a failed write to `enable` into a message that says why, using the module's
/// `last_error` attribute when it has one.
fn enable_error(root: &Root, name: &str, backing: &str, err: io::Error) -> anyhow::Error {
    let detail = root.read(name, "last_error").unwrap_or_default();
    let detail = if detail.is_empty() {
        err.to_string()
    } else {
        detail
    };
    let msg = format!("cannot create volume {name} on {backing}: {detail}");
    match err.raw_os_error() {
        Some(errno::EBUSY) | Some(errno::EEXIST) => VolumeError::Busy(msg).into(),
        Some(errno::ENOENT) | Some(errno::ENXIO) => VolumeError::NotFound(msg).into(),
        Some(errno::EINVAL) | Some(errno::ENOTBLK) => VolumeError::Invalid(msg).into(),
        _ => anyhow::anyhow!(msg),
    }
}

/// A cache device for [`create`].
pub struct CacheArgs<'a> {
    /// The device.
    pub device: &'a str,
    /// wt or wb.
    pub policy: Policy,
    /// MiB a new slot takes (None: the largest free run).
    pub mib: Option<u64>,
    /// Without room for a new slot, take back the slots of volumes not running here.
    pub force: bool,
    /// Replay the slot's records even after a removal with dirty data, or from its floor when
    /// no checkpoint copy is readable.
    pub replay: bool,
    /// Start the slot empty, dropping its records (the SAN holds every acknowledged write).
    pub fresh: bool,
    /// Adopt the replica slot of (origin host id, volume uuid as 32 hex digits).
    pub adopt: Option<(u16, String)>,
    /// wbp: the replica set, `EPOCH GEN WANTED HOST...` (the `replicas` attribute).
    pub replicas: Option<String>,
}

/// Slots on `device` of volumes other than `name` that are not running on this host: what a
/// forced create may take back. Empty when the device cannot be read.
fn idle_slots(root: &Root, device: &str, name: &str) -> Vec<crate::cache::VolumeReport> {
    let running: Vec<String> = root
        .volume_names()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| root.read(n, "enable").map(|e| e == "1").unwrap_or(false))
        .collect();
    match crate::cache::inspect(device, false) {
        Ok(r) => r
            .volumes
            .into_iter()
            .filter(|v| v.name != name && !running.contains(&v.name))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// "A (24.0 MiB dirty, not on its backing device /dev/x)" or "A (clean)".
fn describe_idle(v: &crate::cache::VolumeReport) -> String {
    if v.dirty_bytes > 0 {
        format!(
            "{} ({:.1} MiB dirty in {} records, not yet on its backing device {})",
            v.name,
            v.dirty_bytes as f64 / 1048576.0,
            v.dirty_records,
            v.backing
        )
    } else {
        format!("{} (clean data only)", v.name)
    }
}

/// Creates volume `name` over `backing` and enables it; with `cache`, attaches that cache
/// device.
pub fn create(
    root: &Root,
    name: &str,
    backing: &str,
    cache: Option<&CacheArgs<'_>>,
) -> Result<Created> {
    check_name(name)?;
    check_backing(backing)?;
    if let Some(c) = cache {
        check_device("cache", c.device)?;
        if c.mib == Some(0) {
            return Err(VolumeError::Invalid("--cache-mib must be at least 1".into()).into());
        }
    }
    let dir = root.dir(name);
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(VolumeError::Busy(format!("volume {name} already exists")).into())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
    }
    // What a forced create may take back, to say afterwards what was lost.
    let idle_before = match cache {
        Some(c) if c.force => idle_slots(root, c.device, name),
        _ => Vec::new(),
    };
    let result = root
        .write(name, "backing", backing)
        .and_then(|()| match cache {
            Some(c) => root
                .write(name, "cache", c.device)
                .and_then(|()| root.write(name, "policy", c.policy.name()))
                .and_then(|()| match c.mib {
                    Some(m) => root.write(name, "cache_mib", &m.to_string()),
                    None => Ok(()),
                })
                .and_then(|()| {
                    if c.force {
                        root.write(name, "force", "1")
                    } else {
                        Ok(())
                    }
                })
                .and_then(|()| {
                    if c.replay {
                        root.write(name, "replay", "1")
                    } else {
                        Ok(())
                    }
                })
                .and_then(|()| {
                    if c.fresh {
                        root.write(name, "fresh", "1")
                    } else {
                        Ok(())
                    }
                })
                .and_then(|()| match &c.adopt {
                    Some((origin, uuid)) => root.write(name, "adopt", &format!("{origin} {uuid}")),
                    None => Ok(()),
                })
                .and_then(|()| match &c.replicas {
                    Some(r) => root.write(name, "replicas", r),
                    None => Ok(()),
                }),
            None => Ok(()),
        })
        .and_then(|()| root.write(name, "enable", "1"));
    if let Err(e) = result {
        let no_room = e.raw_os_error() == Some(errno::ENOSPC);
        let why = root.read(name, "last_error").unwrap_or_default();
        let mut err = enable_error(root, name, backing, e);
        if let (true, Some(c)) = (why.contains("removed with dirty data"), cache) {
            // What a replay would write, and since when it waits.
            let mine = crate::cache::inspect(c.device, false)
                .ok()
                .and_then(|r| r.volumes.into_iter().find(|v| v.name == name));
            if let Some(v) = mine {
                err = err.context(format!(
                    "{name}'s slot on {} holds {} dirty records ({} bytes) newer than its checkpoint {}, left when it was removed {} ago",
                    c.device,
                    v.dirty_records,
                    v.dirty_bytes,
                    v.checkpoint,
                    crate::cache::ago(v.removed_dirty_at)
                ));
            }
        }
        if let (true, Some(c)) = (no_room, cache) {
            let idle = idle_slots(root, c.device, name);
            if !idle.is_empty() && !c.force {
                let list: Vec<String> = idle.iter().map(describe_idle).collect();
                err = err.context(format!(
                    "{} holds slots of volumes not running here: {}; --force takes them back as needed, and their data on {} is lost",
                    c.device,
                    list.join(", "),
                    c.device
                ));
            }
        }
        // Leave nothing behind: the volume was never enabled, so removing its directory is safe.
        if let Err(rm) = std::fs::remove_dir(&dir) {
            return Err(err.context(format!(
                "and cleaning up {} failed too: {rm}",
                dir.display()
            )));
        }
        return Err(err);
    }
    // Like dmsetup with udev synchronisation: return once udev has made the device node and
    // finished probing the new disk, so the caller can use (or remove) it at once.
    udev_settle();
    if let Some(c) = cache {
        if c.force && !idle_before.is_empty() {
            // Which of them are gone: the slot table says (no second scan of the regions).
            let after = crate::cache::slot_uuids(c.device);
            let after = after.as_deref().unwrap_or_default();
            let gone_list = idle_before
                .iter()
                .filter(|b| after.iter().all(|a| *a != b.uuid));
            // Unreadable slot table: say nothing rather than call every idle slot gone.
            for gone in gone_list.filter(|_| !after.is_empty()) {
                eprintln!(
                    "peerflash: warning: took back the slot of volume {} on {}: {}",
                    gone.name,
                    c.device,
                    if gone.dirty_bytes > 0 {
                        format!("{} lost", describe_idle(gone))
                    } else {
                        "it held clean data only, nothing lost".to_string()
                    }
                );
            }
        }
    }
    Ok(Created {
        device: format!("/dev/{}", root.read(name, "device")?),
    })
}

/// How long `remove` keeps retrying while the volume is open, for openers that are about to go
/// (udev probing a new disk, a `blkid` just started). A real user of the volume outlasts it.
const REMOVE_GRACE: Duration = Duration::from_secs(2);

/// Waits (at most 10 s) until udev has processed its queued events, when udev runs here.
/// Best effort: without udev there is nothing to wait for.
fn udev_settle() {
    if !Path::new("/run/udev/control").exists() {
        return;
    }
    let _ = std::process::Command::new("udevadm")
        .args(["settle", "--timeout=10"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// Disables and removes volume `name`; refused while it is open.
pub fn remove(root: &Root, name: &str) -> Result<()> {
    check_name(name)?;
    if !root.dir(name).is_dir() {
        return Err(VolumeError::NotFound(format!("volume {name} does not exist")).into());
    }
    udev_settle();
    let start = Instant::now();
    let mut disabled = root.write(name, "enable", "0");
    while matches!(&disabled, Err(e) if e.raw_os_error() == Some(errno::EBUSY))
        && start.elapsed() < REMOVE_GRACE
    {
        std::thread::sleep(Duration::from_millis(100));
        disabled = root.write(name, "enable", "0");
    }
    if let Err(e) = disabled {
        if e.raw_os_error() == Some(errno::EBUSY) {
            let openers = root.read(name, "openers").unwrap_or_else(|_| "?".into());
            return Err(VolumeError::Busy(format!(
                "volume {name} is open ({openers} opener(s)); close it first"
            ))
            .into());
        }
        return Err(e).with_context(|| format!("cannot disable volume {name}"));
    }
    std::fs::remove_dir(root.dir(name))
        .with_context(|| format!("cannot remove {}", root.dir(name).display()))
}

/// The state of one volume, as `status` shows it.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Volume name.
    pub name: String,
    /// Whether the block device exists.
    pub enabled: bool,
    /// Backing device path.
    pub backing: String,
    /// Block device path, when enabled.
    pub device: Option<String>,
    /// major:minor, when enabled.
    pub dev: Option<String>,
    /// Capacity in bytes.
    pub size_bytes: u64,
    /// How many times the block device is open.
    pub openers: u64,
    /// Cache device path, when one is set.
    pub cache: Option<String>,
    /// Write policy with the cache (`wt` or `wb`).
    pub policy: String,
    /// The volume's slot on its cache device, while enabled with a cache.
    pub cache_slot: Option<u64>,
    /// I/O counters.
    pub stats: BTreeMap<String, u64>,
    /// The cache's state and counters (`/sys/block/pf-NAME/peerflash/`), while enabled with a
    /// cache (the replica set apart, below).
    pub cache_state: Option<BTreeMap<String, String>>,
    /// wbp: the policy the volume runs with (`wt` while it has fewer members than it asks for).
    pub effective_policy: Option<String>,
    /// wbp: the replica set in force and each member's state, while running with members.
    pub replicas: Option<crate::sysfs::Replicas>,
}

impl Status {
    /// drbdadm-like indented `key: value` form.
    pub fn human(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{}:", self.name);
        let _ = writeln!(
            s,
            "  state: {}",
            if self.enabled { "enabled" } else { "disabled" }
        );
        let _ = writeln!(s, "  backing: {}", self.backing);
        let _ = writeln!(s, "  device: {}", self.device.as_deref().unwrap_or("-"));
        let _ = writeln!(s, "  size: {} bytes", self.size_bytes);
        let _ = writeln!(s, "  openers: {}", self.openers);
        let _ = writeln!(s, "  cache: {}", self.cache.as_deref().unwrap_or("-"));
        if self.cache.is_some() {
            let _ = writeln!(s, "  policy: {}", self.policy);
            if let Some(p) = self.effective_policy.as_ref().filter(|p| **p != self.policy) {
                let _ = writeln!(s, "  effective policy: {p} (fewer replica hosts than asked for)");
            }
            let slot = self.cache_slot.map_or("-".to_string(), |n| n.to_string());
            let _ = writeln!(s, "  cache slot: {slot}");
        }
        if let Some(r) = &self.replicas {
            let members: Vec<String> = r.members.iter().map(u64::to_string).collect();
            let _ = writeln!(
                s,
                "  replica set: epoch {} generation {} wanted {} members [{}]",
                r.epoch,
                r.generation,
                r.wanted,
                members.join(", ")
            );
            for p in &r.peers {
                let host = p.get("host").map_or("?", String::as_str);
                let _ = writeln!(s, "    host {host}:");
                for (k, v) in p.iter().filter(|(k, _)| *k != "host") {
                    let _ = writeln!(s, "      {k}: {v}");
                }
            }
        }
        if let Some(c) = &self.cache_state {
            let _ = writeln!(s, "  cache state:");
            for (k, v) in c {
                let _ = writeln!(s, "    {k}: {v}");
            }
        }
        let _ = writeln!(s, "  stats:");
        for (k, v) in &self.stats {
            let _ = writeln!(s, "    {k}: {v}");
        }
        s
    }
}

fn parse_num(name: &str, attr: &str, text: &str) -> Result<u64> {
    attr::parse_u64(text.as_bytes()).map_err(|e| {
        anyhow::anyhow!(
            "volume {name}: attribute {attr} = {text:?}: {}",
            e.describe()
        )
    })
}

/// Parses the module's `stats` attribute: one `key value` pair per line.
pub fn parse_stats(name: &str, text: &str) -> Result<BTreeMap<String, u64>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l
                .split_once(' ')
                .ok_or_else(|| anyhow::anyhow!("volume {name}: malformed stats line {l:?}"))?;
            Ok((k.to_string(), parse_num(name, k, v.trim())?))
        })
        .collect()
}

/// Reads the state of volume `name`.
pub fn status(root: &Root, name: &str) -> Result<Status> {
    check_name(name)?;
    if !root.dir(name).is_dir() {
        return Err(VolumeError::NotFound(format!("volume {name} does not exist")).into());
    }
    let read = |attr: &str| {
        root.read(name, attr)
            .with_context(|| format!("cannot read attribute {attr} of volume {name}"))
    };
    let enabled = attr::parse_bool(read("enable")?.as_bytes()).unwrap_or(false);
    let device = Some(read("device")?)
        .filter(|d| !d.is_empty())
        .map(|d| format!("/dev/{d}"));
    let dev = Some(read("dev")?).filter(|d| !d.is_empty());
    let mut cache_state = if enabled {
        crate::sysfs::read_all(name)?
            .filter(|c| c.get(Attr::State.name()).is_some_and(|s| s != CacheState::Uncached.word()))
    } else {
        None
    };
    let replicas = cache_state
        .as_mut()
        .and_then(|c| c.remove(Attr::Replicas.name()))
        .and_then(|t| crate::sysfs::parse_replicas(&t));
    Ok(Status {
        name: name.to_string(),
        enabled,
        backing: read("backing")?,
        device,
        dev,
        size_bytes: parse_num(name, "size", &read("size")?)? * 512,
        openers: parse_num(name, "openers", &read("openers")?)?,
        cache: Some(read("cache")?).filter(|c| !c.is_empty()),
        policy: read("policy")?,
        cache_slot: match read("cache_slot")? {
            s if s.is_empty() => None,
            s => Some(parse_num(name, "cache_slot", &s)?),
        },
        stats: parse_stats(name, &read("stats")?)?,
        effective_policy: cache_state.as_ref().and_then(|c| c.get(Attr::Policy.name()).cloned()),
        replicas,
        cache_state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_parse() {
        let s = parse_stats("v", "reads 3\nwrites 4\n\n").unwrap();
        assert_eq!(s.get("reads"), Some(&3));
        assert_eq!(s.get("writes"), Some(&4));
        assert!(parse_stats("v", "reads x\n").is_err());
        assert!(parse_stats("v", "reads\n").is_err());
    }

    #[test]
    fn bad_input_is_refused_before_touching_configfs() {
        let e = check_name("a/b").unwrap_err();
        assert!(e.to_string().contains("invalid volume name"), "{e}");
        let e = check_backing("/nonexistent/dev").unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        let e = check_backing("/etc/hostname").unwrap_err();
        assert!(e.to_string().contains("not a block device"), "{e}");
        let e = check_backing("relative").unwrap_err();
        assert!(e.to_string().contains("absolute"), "{e}");
    }
}

//! The cluster configuration file (TOML) and `peerflash config check`.
//!
//! ```toml
//! cluster = "prod"                      # optional name
//!
//! [datastore]                           # where the per-volume lock records live
//! device = "/dev/mapper/pf-locks"       # a block device every host sees (shared LUN)
//! offset_mib = 0                        # the region of it peerflash may use
//! size_mib = 64
//!
//! [[host]]
//! name = "hv1"
//! address = "192.168.10.1:7790"         # IP:PORT of the host's peerflash traffic
//!
//! [[volume]]
//! name = "vm1"
//! backing = "/dev/mapper/san-vm1"       # the VM disk on the SAN (same path on every host)
//! policy = "wbp"                        # wt | wb | wbp
//! replicas = 1                          # wbp: copies on peers before a write completes
//! peers = ["hv2"]                       # the hosts that may hold those copies
//! cache = { hv1 = "/dev/nvme0n1", hv2 = "/dev/nvme0n1" }   # cache device per host
//! ```
//!
//! Every refusal names the file, line and column, and the field (`volume[1].peers[0]`).
//! Documentation/administration.md describes the file.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Range;

use peerflash_core::names;
use peerflash_core::policy::Policy;
use peerflash_core::sysfs::Attr;
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// The whole file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    cluster: Option<Spanned<String>>,
    datastore: Spanned<RawDatastore>,
    peer: Option<Spanned<RawPeer>>,
    #[serde(default)]
    host: Vec<Spanned<RawHost>>,
    #[serde(default)]
    volume: Vec<Spanned<RawVolume>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatastore {
    device: Spanned<String>,
    offset_mib: Option<Spanned<u64>>,
    size_mib: Spanned<u64>,
    io_timeout: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    cluster_id: Spanned<String>,
    secret_file: Spanned<String>,
    replica_cache: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    name: Spanned<String>,
    address: Spanned<String>,
    id: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVolume {
    name: Spanned<String>,
    backing: Spanned<String>,
    policy: Spanned<String>,
    replicas: Option<Spanned<u32>>,
    peers: Option<Spanned<Vec<Spanned<String>>>>,
    cache: Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
    lock_slot: Option<Spanned<u32>>,
    san_group: Option<Spanned<u32>>,
}

/// A checked configuration.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Config {
    pub cluster: Option<String>,
    pub datastore: Datastore,
    /// The peer transport (Documentation/wire-protocol.md): absent, the agent leaves it off.
    pub peer: Option<Peer>,
    pub hosts: Vec<Host>,
    pub volumes: Vec<Volume>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Datastore {
    pub device: String,
    pub offset_mib: u64,
    pub size_mib: u64,
    /// sanlock I/O timeout in seconds (a dead host's leases are free after 8 × this + 60 s).
    pub io_timeout: u32,
}

/// The peer transport's settings: the same on every host.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Peer {
    /// The cluster's id, 32 hex digits: a host of another cluster is refused at its handshake.
    pub cluster_id: String,
    /// A root-only file holding the cluster secret (64 hex digits); read by the agent.
    pub secret_file: String,
    /// The cache device that holds the peers' replicas on each host (the same path on every
    /// host; a device formatted with `format-cache`, usually the one the volumes use). None:
    /// this host holds no replicas.
    pub replica_cache: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub address: SocketAddr,
    /// sanlock host id (1..=2000): `id`, or the host's position from 1.
    pub id: u64,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Volume {
    pub name: String,
    pub backing: String,
    #[serde(serialize_with = "policy_name")]
    pub policy: Policy,
    pub replicas: u32,
    pub peers: Vec<String>,
    /// Cache device per host name.
    pub cache: BTreeMap<String, String>,
    /// Slot of the volume's lease and lock record on the datastore: `lock_slot`, or the
    /// volume's position from 0.
    pub lock_slot: u32,
    /// The volume's SAN group (volumes whose backing devices share one SAN take destage turns;
    /// 0: none). The agent sets it on the running volume (sysfs `san_group`).
    pub san_group: u32,
}

/// One refusal: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    /// The field, as `volume[1].peers[0]`; empty for the file as a whole.
    pub field: String,
    pub message: String,
}

/// All the refusals of a file, printed one per line as `FILE:LINE:COLUMN: FIELD: MESSAGE`.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.render())]
pub struct Invalid {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl Invalid {
    fn render(&self) -> String {
        let mut out = format!(
            "{}: {} problem{}:",
            self.file,
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" }
        );
        for p in &self.problems {
            out.push_str(&format!("\n  {}:{}:{}: ", self.file, p.line, p.column));
            if !p.field.is_empty() {
                out.push_str(&p.field);
                out.push_str(": ");
            }
            out.push_str(&p.message);
        }
        out
    }
}

/// Line and column (1-based) of byte `offset` in `src`.
fn position(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

struct Checker<'a> {
    src: &'a str,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn at(&mut self, span: Range<usize>, field: impl Into<String>, message: impl Into<String>) {
        let (line, column) = position(self.src, span.start);
        self.problems.push(Problem {
            line,
            column,
            field: field.into(),
            message: message.into(),
        });
    }

    fn absolute_path(&mut self, v: &Spanned<String>, field: String) {
        let p = v.get_ref();
        if !p.starts_with('/') || p.contains('\0') || p.len() > 4095 {
            self.at(v.span(), field, format!("{p:?} is not an absolute path"));
        }
    }
}

/// Host names: what a DNS label allows, so they work in messages, lock records and paths.
fn host_name_ok(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !n.starts_with('-')
}

/// Parses and checks `src` (the contents of `file`).
pub fn parse(file: &str, src: &str) -> Result<Config, Invalid> {
    let raw: RawConfig = toml::from_str(src).map_err(|e| {
        let (line, column) = e.span().map_or((1, 1), |s| position(src, s.start));
        Invalid {
            file: file.to_string(),
            problems: vec![Problem {
                line,
                column,
                field: String::new(),
                message: e.message().trim_end().to_string(),
            }],
        }
    })?;
    let mut c = Checker {
        src,
        problems: Vec::new(),
    };
    check_cluster(&mut c, &raw);
    let ds = raw.datastore.get_ref();
    let (offset_mib, io_timeout) = check_datastore(&mut c, ds);
    let (hosts, host_names) = check_hosts(&mut c, &raw.host);
    let peer = raw.peer.as_ref().map(|p| check_peer(&mut c, p, &raw.host));
    // Slots the datastore region holds: 1 MiB of lockspace, then 2 MiB per slot.
    let slot_room = u32::try_from(ds.size_mib.get_ref().saturating_sub(1) / 2)
        .unwrap_or(u32::MAX)
        .min(peerflash_lease::MAX_SLOTS);
    let mut keys = VolumeKeys::default();
    let volumes = raw
        .volume
        .iter()
        .enumerate()
        .map(|(i, sv)| check_volume(&mut c, i, sv, ds, &host_names, slot_room, &mut keys))
        .collect();

    if !c.problems.is_empty() {
        c.problems.sort_by_key(|p| (p.line, p.column));
        return Err(Invalid {
            file: file.to_string(),
            problems: c.problems,
        });
    }
    Ok(Config {
        cluster: raw.cluster.map(|s| s.into_inner()),
        datastore: Datastore {
            device: ds.device.get_ref().clone(),
            offset_mib,
            size_mib: *ds.size_mib.get_ref(),
            io_timeout,
        },
        peer,
        hosts,
        volumes,
    })
}

/// The peer transport: a cluster id of 32 hex digits, an absolute secret file path, and IPv4
/// host addresses (the module's transport speaks IPv4 only).
fn check_peer(c: &mut Checker<'_>, p: &Spanned<RawPeer>, hosts: &[Spanned<RawHost>]) -> Peer {
    let r = p.get_ref();
    if peerflash_core::handshake::parse_cluster_id(r.cluster_id.get_ref().as_bytes()).is_none() {
        c.at(r.cluster_id.span(), "peer.cluster_id", "expected 32 hex digits, not all zero");
    }
    c.absolute_path(&r.secret_file, "peer.secret_file".into());
    if let Some(p) = &r.replica_cache {
        c.absolute_path(p, "peer.replica_cache".into());
    }
    for (i, h) in hosts.iter().enumerate() {
        let a = h.get_ref().address.get_ref();
        if a.parse::<SocketAddr>().is_ok_and(|a| a.is_ipv6()) {
            c.at(
                h.get_ref().address.span(),
                format!("host[{i}].address"),
                format!("{a} is IPv6: the peer transport speaks IPv4 only"),
            );
        }
    }
    Peer {
        cluster_id: r.cluster_id.get_ref().to_ascii_lowercase(),
        secret_file: r.secret_file.get_ref().clone(),
        replica_cache: r.replica_cache.as_ref().map(|p| p.get_ref().clone()),
    }
}


/// The cluster name names the lockspace (`pf-NAME`, at most 47 bytes for sanlock).
fn check_cluster(c: &mut Checker<'_>, raw: &RawConfig) {
if let Some(name) = &raw.cluster {
    let n = name.get_ref();
    if !host_name_ok(n) || n.len() > 40 {
        c.at(
            name.span(),
            "cluster",
            format!("{n:?} is not a cluster name (1-40 letters, digits, '-', '_'; not starting with '-')"),
        );
    }
}
}

/// The datastore: its device, region and I/O timeout; returns (offset_mib, io_timeout).
fn check_datastore(c: &mut Checker<'_>, ds: &RawDatastore) -> (u64, u32) {
c.absolute_path(&ds.device, "datastore.device".into());
if *ds.size_mib.get_ref() == 0 {
    c.at(
        ds.size_mib.span(),
        "datastore.size_mib",
        "must be at least 1 (MiB)",
    );
}
let offset_mib = ds.offset_mib.as_ref().map_or(0, |o| *o.get_ref());
if offset_mib
    .checked_add(*ds.size_mib.get_ref())
    .is_none_or(|end| end > 1 << 40)
{
    c.at(
        ds.size_mib.span(),
        "datastore.size_mib",
        "offset_mib + size_mib is beyond any device (2^40 MiB)",
    );
}

let io_timeout = ds
    .io_timeout
    .as_ref()
    .map_or(peerflash_lease::DEFAULT_IO_TIMEOUT, |t| *t.get_ref());
if let Some(t) = &ds.io_timeout {
    if !(1..=60).contains(t.get_ref()) {
        c.at(
            t.span(),
            "datastore.io_timeout",
            format!("{} is not an I/O timeout: 1 to 60 seconds", t.get_ref()),
        );
    }
}
    (offset_mib, io_timeout)
}

/// The hosts: names, ids and addresses, each unique; returns them and the name index.
fn check_hosts(c: &mut Checker<'_>, raw: &[Spanned<RawHost>]) -> (Vec<Host>, HashMap<String, usize>) {
if raw.is_empty() {
    c.at(0..0, "host", "no [[host]]: at least one host is required");
}
let mut host_names: HashMap<String, usize> = HashMap::new();
let mut addresses: HashMap<SocketAddr, usize> = HashMap::new();
let mut host_ids: HashMap<u64, usize> = HashMap::new();
let mut hosts = Vec::new();
for (i, sh) in raw.iter().enumerate() {
    let h = sh.get_ref();
    let name = h.name.get_ref();
    let id = h.id.as_ref().map_or(i as u64 + 1, |x| *x.get_ref());
    let id_span = h.id.as_ref().map_or(sh.span(), |x| x.span());
    if !(1..=peerflash_lease::MAX_HOSTS as u64).contains(&id) {
        c.at(
            id_span,
            format!("host[{i}].id"),
            format!(
                "{id} is not a host id (1 to {})",
                peerflash_lease::MAX_HOSTS
            ),
        );
    } else if let Some(first) = host_ids.insert(id, i) {
        c.at(
            id_span,
            format!("host[{i}].id"),
            format!("host id {id} is already host[{first}]'s (an absent id is the host's position from 1)"),
        );
    }
    if !host_name_ok(name) {
        c.at(
            h.name.span(),
            format!("host[{i}].name"),
            format!("{name:?} is not a host name (1-63 letters, digits, '-', '_'; not starting with '-')"),
        );
    } else if let Some(first) = host_names.insert(name.clone(), i) {
        c.at(
            h.name.span(),
            format!("host[{i}].name"),
            format!("host {name:?} is defined twice (also host[{first}])"),
        );
    }
    match h.address.get_ref().parse::<SocketAddr>() {
        Ok(a) if a.port() == 0 => {
            c.at(
                h.address.span(),
                format!("host[{i}].address"),
                "port 0 is not a port to listen on",
            );
        }
        Ok(a) => {
            if let Some(first) = addresses.insert(a, i) {
                c.at(
                    h.address.span(),
                    format!("host[{i}].address"),
                    format!("address {a} is already host[{first}]'s"),
                );
            }
            hosts.push(Host {
                name: name.clone(),
                address: a,
                id,
            });
        }
        Err(_) => c.at(
            h.address.span(),
            format!("host[{i}].address"),
            format!(
                "{:?} is not IP:PORT (e.g. \"192.168.10.1:7790\" or \"[fd00::1]:7790\")",
                h.address.get_ref()
            ),
        ),
    }
}
    (hosts, host_names)
}

/// What must be unique across volumes: names, backing devices, lock slots (each to the index
/// of the volume that has it).
#[derive(Default)]
struct VolumeKeys {
    names: HashMap<String, usize>,
    backings: HashMap<String, usize>,
    slots: HashMap<u32, usize>,
}

/// Volume `i`: its name, lock slot, backing device, policy and replicas, peers, cache devices
/// and SAN group.
fn check_volume(
    c: &mut Checker<'_>,
    i: usize,
    sv: &Spanned<RawVolume>,
    ds: &RawDatastore,
    host_names: &HashMap<String, usize>,
    slot_room: u32,
    keys: &mut VolumeKeys,
) -> Volume {
    let v = sv.get_ref();
    // Absent optional fields are reported at the volume's table.
    let replicas_span = v.replicas.as_ref().map_or(sv.span(), |r| r.span());
    let replicas = v.replicas.as_ref().map_or(0, |r| *r.get_ref());
    let empty_peers = Vec::new();
    let empty_cache = BTreeMap::new();
    let peer_list = v.peers.as_ref().map_or(&empty_peers, |p| p.get_ref());
    let cache_span = v.cache.as_ref().map_or(sv.span(), |c| c.span());
    let cache_map = v.cache.as_ref().map_or(&empty_cache, |c| c.get_ref());
    let name = v.name.get_ref();
    if let Err(e) = names::validate_volume_name(name.as_bytes()) {
        c.at(
            v.name.span(),
            format!("volume[{i}].name"),
            format!("{name:?}: {}", e.describe()),
        );
    } else if let Some(first) = keys.names.insert(name.clone(), i) {
        c.at(
            v.name.span(),
            format!("volume[{i}].name"),
            format!("volume {name:?} is defined twice (also volume[{first}])"),
        );
    }
    let lock_slot = v.lock_slot.as_ref().map_or(i as u32, |x| *x.get_ref());
    let slot_span = v.lock_slot.as_ref().map_or(sv.span(), |x| x.span());
    if lock_slot >= slot_room {
        c.at(
            slot_span,
            format!("volume[{i}].lock_slot"),
            format!(
                "slot {lock_slot} is not on the datastore: {} MiB hold {slot_room} slot(s) (1 MiB + 2 MiB per slot, at most {})",
                ds.size_mib.get_ref(),
                peerflash_lease::MAX_SLOTS
            ),
        );
    } else if let Some(first) = keys.slots.insert(lock_slot, i) {
        c.at(
            slot_span,
            format!("volume[{i}].lock_slot"),
            format!("lock slot {lock_slot} is already volume[{first}]'s (an absent slot is the volume's position from 0)"),
        );
    }
    c.absolute_path(&v.backing, format!("volume[{i}].backing"));
    if let Some(first) = keys.backings.insert(v.backing.get_ref().clone(), i) {
        c.at(
            v.backing.span(),
            format!("volume[{i}].backing"),
            format!("{:?} is already volume[{first}]'s backing device: two volumes on one disk corrupt it", v.backing.get_ref()),
        );
    }
    let policy = Policy::parse(v.policy.get_ref().as_bytes());
    match policy {
        Some(p @ (Policy::WriteThrough | Policy::WriteBack)) if replicas > 0 => c.at(
            replicas_span.clone(),
            format!("volume[{i}].replicas"),
            format!("policy {} keeps no copies on peers: replicas must be 0 (or use policy wbp)", p.name()),
        ),
        Some(Policy::WriteBackPeers) if replicas == 0 => c.at(
            replicas_span.clone(),
            format!("volume[{i}].replicas"),
            "policy wbp needs at least 1 replica (or use policy wb)",
        ),
        Some(_) => {}
        None => c.at(
            v.policy.span(),
            format!("volume[{i}].policy"),
            format!("{:?} is not a policy: wt, wb or wbp", v.policy.get_ref()),
        ),
    }
    let policy = policy.unwrap_or(Policy::WriteBack);
    let mut peers = Vec::new();
    for (j, p) in peer_list.iter().enumerate() {
        let pn = p.get_ref();
        if !host_names.contains_key(pn) {
            c.at(
                p.span(),
                format!("volume[{i}].peers[{j}]"),
                format!("unknown host {pn:?} (hosts: {})", known(host_names)),
            );
        } else if peers.contains(pn) {
            c.at(
                p.span(),
                format!("volume[{i}].peers[{j}]"),
                format!("host {pn:?} is listed twice"),
            );
        } else {
            peers.push(pn.clone());
        }
    }
    if replicas as usize > peer_list.len() && policy == Policy::WriteBackPeers {
        c.at(
            replicas_span.clone(),
            format!("volume[{i}].replicas"),
            format!(
                "{replicas} replicas but {} peer(s) to hold them",
                peer_list.len()
            ),
        );
    }
    let mut cache = BTreeMap::new();
    for (h, dev) in cache_map {
        let hn = h.get_ref();
        if !host_names.contains_key(hn) {
            c.at(
                h.span(),
                format!("volume[{i}].cache.{hn}"),
                format!("unknown host {hn:?} (hosts: {})", known(host_names)),
            );
        }
        c.absolute_path(dev, format!("volume[{i}].cache.{hn}"));
        cache.insert(hn.clone(), dev.get_ref().clone());
    }
    if cache_map.is_empty() {
        c.at(
            v.name.span(),
            format!("volume[{i}].cache"),
            "no cache device on any host",
        );
    }
    for p in &peers {
        if !cache.contains_key(p) {
            c.at(
                cache_span.clone(),
                format!("volume[{i}].cache"),
                format!("peer {p:?} holds replicas but has no cache device for this volume"),
            );
        }
    }
    let san_group = v.san_group.as_ref().map_or(0, |x| *x.get_ref());
    // The range of the module's sysfs file the agent writes it to.
    if let Some(g) = v.san_group.as_ref().filter(|g| Attr::SanGroup.check(u64::from(*g.get_ref())).is_err()) {
        c.at(
            g.span(),
            format!("volume[{i}].san_group"),
            format!("{san_group} is not a SAN group (1 to 65535; 0 or absent: none)"),
        );
    }
    Volume {
        name: name.clone(),
        backing: v.backing.get_ref().clone(),
        policy,
        replicas,
        peers,
        cache,
        lock_slot,
        san_group,
    }
}

fn known(names: &HashMap<String, usize>) -> String {
    let mut v: Vec<&String> = names.keys().collect();
    v.sort();
    v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

/// Reads and checks the file at `path`.
pub fn load(path: &str) -> anyhow::Result<Config> {
    let src = std::fs::read_to_string(path)
        .map_err(|e| crate::error::VolumeError::NotFound(format!("cannot read {path}: {e}")))?;
    Ok(parse(path, &src)?)
}

/// Serialises a policy as its name.
fn policy_name<S: serde::Serializer>(p: &Policy, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.name())
}

#[cfg(test)]
mod tests;

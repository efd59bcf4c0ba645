//! `peerflash agent`: one per host. It joins the cluster's lockspace, holds the leases of the
//! volumes running here (persistent: if the agent dies they stay this host's), pushes each
//! lease's validity into the module (`lease_ms`: the module stops writing to the SAN when it runs
//! out) and copies each volume's checkpoint into its lock record every second, and recovers after
//! a crash: volumes still running in the kernel are adopted (their orphaned leases taken back);
//! volumes this host owned and did not leave clean are replayed from its flash (offline replay),
//! flushed to the SAN, recorded clean and released.
//!
//! `peerflash up NAME` and `peerflash down NAME` ask the agent over its unix socket (one JSON
//! request line; progress lines, then a final line). A volume starts only under its lease and
//! only when its record says no other host holds acknowledged writes of it
//! ([`start_decision`]); otherwise the agent marks the record `pending`, releases the lease and
//! polls the record until the other host's replay makes it `clean` (Documentation/cluster-locks.md).
//!
//! Online replay by a peer (wbp: a member replays its replica of a gone owner's volume) is in
//! `peer_replay.rs`.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use peerflash_core::mode::CacheState;
use peerflash_core::sysfs::Attr;
use peerflash_core::lockrec::{start_decision, LockState, StartDecision};
use peerflash_core::policy::Policy;
use peerflash_core::lockrec::LockRecord;
use peerflash_core::replication::ReplicaSet;

use crate::replicas::{leave_set, lost_hosts, place, replicas_attr};
use peerflash_lease::{Datastore, Lease, LeaseError};
use serde::{Deserialize, Serialize};

use crate::config::{Config, Host, Volume};
use crate::configfs::Root;
use crate::error::VolumeError;

/// Default path of the agent's socket.
pub const DEFAULT_SOCKET: &str = "/run/peerflash/agent.sock";

/// A request line.
#[derive(Serialize, Deserialize)]
pub struct Request {
    /// `up` or `down`.
    pub op: String,
    pub volume: String,
    /// `up`: how long to wait for another host's replay (0: do not wait).
    #[serde(default)]
    pub wait_secs: u64,
}

/// A reply line: progress (`done == false`) or the final answer.
#[derive(Serialize, Deserialize, Debug)]
pub struct Reply {
    pub done: bool,
    /// Exit code of the final answer (see `crate::error::exit`).
    #[serde(default)]
    pub code: u8,
    pub message: String,
}

pub(crate) struct Agent {
    pub(crate) cfg: Config,
    pub(crate) me: Host,
    pub(crate) ds: Datastore,
    pub(crate) root: Root,
    /// Volumes running here under their lease. Lock order: this, then a lease's record lock.
    pub(crate) held: Mutex<HashMap<String, Lease>>,
    /// Volumes an operation (`up`, `down`, a peer replay) works on now: one at a time per
    /// volume. Taken and dropped alone (never with `held`).
    pub(crate) busy: Mutex<HashSet<String>>,
    /// Peer replays that could not run: when to try again and what was said (said once).
    pub(crate) peer_tries: Mutex<HashMap<String, (Instant, String)>>,
}

/// Where a replay takes the volume's records from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// This host's own slot of the volume.
    Own,
    /// This host's replica of host `origin`'s volume `uuid` (online replay by a peer).
    Replica { origin: u16, uuid: [u8; 16] },
}

/// A volume marked busy ([`Agent::busy`]) until dropped.
pub(crate) struct Busy<'a> {
    set: &'a Mutex<HashSet<String>>,
    name: String,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.set.lock() {
            s.remove(&self.name);
        }
    }
}

/// A uuid as 32 hex digits (what the module's `adopt` takes).
pub(crate) fn hex(uuid: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes(*uuid).simple().to_string()
}

/// The kernel's view of a running volume: (state, checkpoint serial, last serial).
fn kernel_serials(name: &str) -> Option<(CacheState, u64, u64)> {
    use crate::sysfs::{read_state, read_u64};
    Some((
        read_state(name).ok()?,
        read_u64(name, Attr::CheckpointSerial).ok()?,
        read_u64(name, Attr::LastSerial).ok()?,
    ))
}

/// Tells the module how long the lease stays valid: past that, it writes nothing more to the
/// volume's SAN (`lease_ms`), even if this agent is dead by then.
fn push_lease(lease: &Lease, name: &str) {
    // At least 1: 0 would mean "not enforced".
    let ms = u64::try_from(lease.remaining().as_millis().clamp(1, 3_600_000)).unwrap_or(3_600_000);
    if crate::sysfs::dir(name).join(Attr::LeaseMs.name()).exists() {
        if let Err(e) = crate::sysfs::write(name, Attr::LeaseMs, ms) {
            eprintln!("peerflash agent: {name}: {e:#}");
        }
    }
}

/// Copies the kernel's checkpoint of `name` into its record (state running or replaying);
/// the record is written only when that changes something. Pushes the lease's validity into
/// the module first.
fn copy_checkpoint(lease: &Lease, name: &str) -> Result<(), LeaseError> {
    push_lease(lease, name);
    let Some((state, checkpoint, last)) = kernel_serials(name) else {
        return Ok(());
    };
    let state = if state == CacheState::Replaying {
        LockState::Replaying
    } else {
        LockState::Running
    };
    let r = lease.record();
    if (r.checkpoint, r.last_serial, r.state) == (checkpoint, last, state) {
        return Ok(());
    }
    lease
        .update_record(|r| {
            r.checkpoint = checkpoint;
            r.last_serial = last;
            r.state = state;
        })
        .map(drop)
}

impl Agent {
    fn volume(&self, name: &str) -> Result<&Volume> {
        self.cfg
            .volumes
            .iter()
            .find(|v| v.name == name)
            .ok_or_else(|| {
                VolumeError::NotFound(format!("volume {name} is not in the configuration")).into()
            })
    }

    pub(crate) fn cache_of<'a>(&self, v: &'a Volume) -> Result<&'a str> {
        v.cache
            .get(&self.me.name)
            .map(String::as_str)
            .ok_or_else(|| {
                VolumeError::Invalid(format!(
                    "volume {} has no cache device on host {} in the configuration",
                    v.name, self.me.name
                ))
                .into()
            })
    }

    /// Creates the volume here. `fresh`: the record says the SAN holds every acknowledged
    /// write, so whatever this host's flash still holds for the volume is dropped (on the SAN
    /// already, or stale: another host replayed a replica of it and wrote on); otherwise it is
    /// replayed. `replicas`: a wbp volume's replica set (`EPOCH GEN WANTED HOST...`); without
    /// one a wbp volume runs as wb (a replay of this host's own flash needs no peers).
    fn create(&self, v: &Volume, replicas: Option<String>, fresh: bool) -> Result<String> {
        self.create_from(v, replicas, fresh, None)
    }

    /// [`Agent::create`] with `fresh` under `lease`: a replica this host still holds of the
    /// volume's recorded uuid from another host is obsolete (the record says the SAN holds
    /// every acknowledged write), and the volume takes its room: adopted with `fresh`, so its
    /// records are dropped, never replayed.
    fn create_fresh(&self, v: &Volume, lease: &Lease, replicas: Option<String>) -> Result<String> {
        let uuid = lease.record().volume_uuid;
        let me = u16::try_from(self.me.id).unwrap_or(0);
        let obsolete = if uuid == [0; 16] {
            None
        } else {
            crate::cache::find_slot(self.cache_of(v)?, |s| s.is_replica() && s.uuid == uuid && s.origin != me)?
        };
        if let Some(s) = &obsolete {
            eprintln!(
                "peerflash agent: {}: taking the room of this host's obsolete replica of host {}'s run of it (its records dropped)",
                v.name, s.origin
            );
        }
        self.create_from(v, replicas, true, obsolete.map(|s| (s.origin, s.uuid)))
    }

    /// [`Agent::create`], adopting this host's replica of (origin, uuid) when `adopt` (a slot
    /// of the volume's name is cleared first when `fresh`).
    fn create_from(
        &self,
        v: &Volume,
        replicas: Option<String>,
        fresh: bool,
        adopt: Option<(u16, [u8; 16])>,
    ) -> Result<String> {
        let policy = match (v.policy, &replicas) {
            (Policy::WriteBackPeers, None) => Policy::WriteBack,
            (p, _) => p,
        };
        let cache = crate::volume::CacheArgs {
            device: self.cache_of(v)?,
            policy,
            mib: None,
            force: false,
            replay: false,
            fresh,
            adopt: adopt.map(|(o, u)| (o, hex(&u))),
            replicas,
        };
        let device = crate::volume::create(&self.root, &v.name, &v.backing, Some(&cache))?.device;
        if v.san_group != 0 {
            crate::sysfs::write(&v.name, Attr::SanGroup, u64::from(v.san_group))?;
        }
        Ok(device)
    }

    /// The host ids of `v`'s peers, in the configuration's order.
    fn peer_ids(&self, v: &Volume) -> Result<Vec<u32>> {
        v.peers
            .iter()
            .map(|p| {
                let h = self.cfg.hosts.iter().find(|h| &h.name == p);
                h.and_then(|h| u32::try_from(h.id).ok())
                    .ok_or_else(|| anyhow!("volume {}: peer {p} is not a host of the configuration", v.name))
            })
            .collect()
    }

    /// Records a new run of wbp volume `v` with its replica set at a new epoch (the record
    /// first: the module's set is always one the record holds) and returns the `replicas`
    /// attribute for it. The set is the first `replicas` of its `peers` that answer an
    /// authenticated ping through the module now (`replicas::place`); with fewer the volume runs
    /// write-through.
    fn new_replica_set(&self, v: &Volume, lease: &Lease, say: &mut dyn FnMut(String)) -> Result<String> {
        let peers = self.peer_ids(v)?;
        let me = u32::try_from(self.me.id).map_err(|_| anyhow!("this host's id is out of range"))?;
        let (members, passed) = place(&peers, v.replicas as usize, me, |h| {
            crate::peer::probe(&self.root, u64::from(h), 1).is_ok()
        });
        if !passed.is_empty() {
            say(format!(
                "{}: replica host(s) {passed:?} do not answer; the set is {members:?}{}",
                v.name,
                if members.len() < v.replicas as usize { " (write-through until a run with enough)" } else { "" }
            ));
        }
        let r = lease.update_record(|r| {
            r.generation += 1;
            let epoch = r.replicas.epoch + 1;
            if let Some(set) = ReplicaSet::new(epoch, &members) {
                r.replicas = set;
            }
        })?;
        if r.replicas.members() != members.as_slice() {
            bail!("volume {}: its replica set cannot be recorded", v.name);
        }
        Ok(replicas_attr(&r.replicas, r.generation, v.replicas))
    }

    /// Marks `name` busy, or `None` while another operation works on it.
    pub(crate) fn claim(&self, name: &str) -> Option<Busy<'_>> {
        let mut set = self.busy.lock().ok()?;
        if !set.insert(name.to_string()) {
            return None;
        }
        Some(Busy { set: &self.busy, name: name.to_string() })
    }

    /// Marks `name` busy, waiting until `until` while another operation works on it.
    fn claim_waiting(&self, name: &str, until: Instant, say: &mut dyn FnMut(String)) -> Result<Busy<'_>> {
        let mut told = false;
        loop {
            if let Some(b) = self.claim(name) {
                return Ok(b);
            }
            if Instant::now() >= until {
                return Err(VolumeError::Busy(format!("{name}: another operation on it runs here (an up, a down or a peer replay)")).into());
            }
            if !told {
                say(format!("{name}: another operation on it runs here; waiting"));
                told = true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Acquires `v`'s lease, waiting while a live host holds it.
    fn acquire(&self, v: &Volume, until: Instant, say: &mut dyn FnMut(String)) -> Result<Lease> {
        let mut told = false;
        loop {
            // Persistent: if this agent dies, the lease stays this host's (its kernel volume may
            // still run; the module fences itself when the pushed validity runs out).
            match Lease::acquire_persistent(&self.ds, self.me.id, v.lock_slot, &v.name) {
                Ok(l) => return Ok(l),
                Err(LeaseError::Held { .. }) if Instant::now() < until => {
                    if !told {
                        say(format!(
                            "{}: the lease is held by a live host; waiting",
                            v.name
                        ));
                        told = true;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Replays `v` from this host's flash (`from`: its own slot, or its replica of a gone
    /// owner's volume), destages it all and records it clean; the volume is removed again
    /// unless `keep`.
    pub(crate) fn replay_here(
        &self,
        v: &Volume,
        lease: &Lease,
        keep: bool,
        from: Source,
        say: &mut dyn FnMut(String),
    ) -> Result<()> {
        let before = lease.record();
        if from == Source::Own && !self.root.dir(&v.name).is_dir() {
            self.own_flash_holds(v, &before)?;
        }
        // This host becomes the owner once its flash holds the volume's slot: at once for its
        // own slot, only after the adoption for a replica (until then another member, or this
        // one again after a crash, finds the replicas by the old owner's id).
        let own = |r: &mut LockRecord| {
            r.owner_id = self.me.id;
            r.set_owner_name(self.me.name.as_bytes());
        };
        lease.update_record(|r| {
            if from == Source::Own {
                own(r);
            }
            r.state = LockState::Replaying;
        })?;
        let whose = match from {
            Source::Own => "this host's flash".to_string(),
            Source::Replica { origin, .. } => format!("this host's replica of host {origin}'s writes (online replay by a peer)"),
        };
        say(format!(
            "{}: replaying from {whose} ({} writes after checkpoint {} at the last record)",
            v.name,
            before.pending_writes(),
            before.checkpoint
        ));
        let already = self.root.dir(&v.name).is_dir();
        if !already {
            match from {
                Source::Own => self.create(v, None, false)?,
                // Replayed, never fresh (that would drop what the replay is for); a slot of this
                // name left here makes the adoption refuse (tried again later; see
                // cluster-locks.md).
                Source::Replica { origin, uuid } => self.create_from(v, None, false, Some((origin, uuid)))?,
            };
        }
        if let Source::Replica { uuid, .. } = from {
            // The adopted replica is this host's slot now, uuid and all.
            lease.update_record(|r| {
                own(r);
                r.volume_uuid = uuid;
            })?;
        }
        // Destage everything, copying the checkpoint into the record as it moves.
        let stop = std::sync::atomic::AtomicBool::new(false);
        let done = std::thread::scope(|s| {
            let copier = s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    let _ = copy_checkpoint(lease, &v.name);
                    std::thread::sleep(Duration::from_millis(500));
                }
            });
            let r = crate::running::flush(&self.root, &v.name, false, None);
            stop.store(true, std::sync::atomic::Ordering::Release);
            let _ = copier.join();
            r
        });
        done?;
        let (_, checkpoint, last) = kernel_serials(&v.name)
            .ok_or_else(|| anyhow!("volume {} vanished during its replay", v.name))?;
        if !keep {
            crate::volume::remove(&self.root, &v.name)?;
        }
        lease.update_record(|r| {
            r.checkpoint = checkpoint.max(last);
            r.last_serial = last;
            r.state = if keep {
                LockState::Running
            } else {
                LockState::Clean
            };
        })?;
        say(format!(
            "{}: replayed; everything acknowledged is on the SAN (checkpoint {})",
            v.name,
            checkpoint.max(last)
        ));
        Ok(())
    }

    /// `up`: runs `name` here once no other host holds acknowledged writes of it.
    fn up(&self, name: &str, wait: Duration, say: &mut dyn FnMut(String)) -> Result<String> {
        let v = self.volume(name)?;
        if self
            .held
            .lock()
            .map_err(|_| anyhow!("agent state poisoned"))?
            .contains_key(name)
        {
            return Err(VolumeError::Busy(format!("volume {name} already runs here")).into());
        }
        let until = Instant::now() + wait;
        let _busy = self.claim_waiting(name, until, say)?;
        let mut said = String::new();
        loop {
            let lease = self.acquire(v, until, say)?;
            let rec = lease.record();
            let mut decision = start_decision(&rec, self.me.id);
            let mut from = None;
            // A member whose replica cannot be replayed yet waits like any host, and tries
            // again every 5 s (the replica may still be open for the dead owner's connection).
            let mut member_retry = false;
            match decision {
                StartDecision::ReplayHere => from = Some(Source::Own),
                StartDecision::ReplayReplica { owner_id } => match self.replica_to_replay(v, &rec) {
                    Ok(src) => from = Some(src),
                    Err(e) => {
                        let m = format!("{name}: {e:#}");
                        if m != said {
                            say(m.clone());
                            said = m;
                        }
                        decision = StartDecision::WaitFor { owner_id };
                        member_retry = true;
                    }
                },
                _ => {}
            }
            match decision {
                StartDecision::WaitFor { owner_id } => {
                    // Keep the volume stalled: say where the data is, let that host replay.
                    lease.update_record(|r| r.state = LockState::Pending)?;
                    lease.release()?;
                    let owner = String::from_utf8_lossy(rec.owner_name_bytes()).into_owned();
                    let msg = format!(
                        "{name}: host {owner} (id {owner_id}) holds acknowledged writes on its flash ({} after checkpoint {} at its last record); waiting for its replay",
                        rec.pending_writes(),
                        rec.checkpoint
                    );
                    if Instant::now() >= until {
                        return Err(VolumeError::Busy(msg).into());
                    }
                    if msg != said {
                        say(msg.clone());
                        said = msg;
                    }
                    let polled_since = Instant::now();
                    loop {
                        std::thread::sleep(Duration::from_secs(1));
                        let r = self.ds.read_record(v.lock_slot, name)?;
                        if let Some(r) = r.filter(|r| r.state == LockState::Clean) {
                            let by = String::from_utf8_lossy(r.owner_name_bytes()).into_owned();
                            say(format!("{name}: host {by} finished its replay"));
                            break;
                        }
                        if member_retry && polled_since.elapsed() >= Duration::from_secs(5) {
                            break;
                        }
                        if Instant::now() >= until {
                            return Err(VolumeError::Busy(format!(
                                "{name}: still waiting for host {owner}'s replay"
                            ))
                            .into());
                        }
                    }
                }
                _ => {
                    let started = self.start(v, &lease, from, say);
                    self.settle(name, lease, started)?;
                    return Ok(format!(
                        "/dev/{}{}",
                        peerflash_core::names::DISK_PREFIX,
                        name
                    ));
                }
            }
        }
    }

    /// Starts `v` here under `lease` (replaying first what `replay` names) and records it
    /// running.
    fn start(
        &self,
        v: &Volume,
        lease: &Lease,
        replay: Option<Source>,
        say: &mut dyn FnMut(String),
    ) -> Result<()> {
        if v.policy == Policy::WriteBackPeers {
            // This host's own flash or replica first (as wb), then a new run with its replica
            // set (fresh: whatever this flash holds of the volume is on the SAN by then).
            if let Some(from) = replay {
                self.replay_here(v, lease, false, from, say)?;
            }
            // A member that answered the ping may still fail its ATTACH (it went down since):
            // placed again, without it, at a new epoch.
            let mut tries = 0;
            loop {
                let set = self.new_replica_set(v, lease, say)?;
                say(format!("{}: replica set {set} (epoch, generation, wanted, hosts)", v.name));
                match self.create_fresh(v, lease, Some(set)) {
                    Ok(_) => break,
                    Err(e) if tries < 2 => {
                        say(format!("{}: {e:#}; placing its replicas again", v.name));
                        tries += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
            return self.mark_running(v, lease, false);
        }
        match replay {
            Some(from) => self.replay_here(v, lease, true, from, say)?,
            None => {
                self.create_fresh(v, lease, None)?;
            }
        }
        self.mark_running(v, lease, true)
    }

    /// wbp: a member the module declared lost leaves the set: the record holds the set without
    /// it at the next epoch, then the module puts that set in force (what waited for the member
    /// completes). Never the other way round: the module never runs a set the record lacks.
    fn drop_lost_members(&self, v: &Volume, lease: &Lease) -> Result<()> {
        let text = std::fs::read_to_string(crate::sysfs::dir(&v.name).join(Attr::Replicas.name())).unwrap_or_default();
        let lost = lost_hosts(&text);
        let rec = lease.record();
        let changed = leave_set(
            &rec.replicas,
            &lost,
            rec.generation,
            v.replicas,
            |set| lease.update_record(|r| r.replicas = set).map(drop).map_err(Into::into),
            |attr| crate::running::set_replicas(&self.root, &v.name, attr),
        )?;
        if let Some(attr) = changed {
            eprintln!(
                "peerflash agent: {}: replica host(s) {lost:?} lost; the set is now {attr} (recorded, then in force)",
                v.name
            );
        }
        Ok(())
    }

    /// Records `v` running here (a new generation if `new_run`) and pushes the lease into the
    /// module.
    fn mark_running(&self, v: &Volume, lease: &Lease, new_run: bool) -> Result<()> {
        let policy = v.policy;
        // The uuid of the volume's slot here: its replicas on the members carry it, so that a
        // member can find its replica when this host is gone.
        let uuid = crate::cache::find_slot(self.cache_of(v)?, |s| s.is_local_named(v.name.as_bytes()))?
            .map(|s| s.uuid)
            .ok_or_else(|| anyhow!("volume {} runs but has no slot on this host's cache device", v.name))?;
        lease.update_record(|r| {
            r.volume_uuid = uuid;
            if new_run {
                r.generation += 1;
            }
            r.owner_id = self.me.id;
            r.set_owner_name(self.me.name.as_bytes());
            r.policy = policy;
            r.state = LockState::Running;
        })?;
        copy_checkpoint(lease, &v.name)?;
        Ok(())
    }

    /// After work under `lease`: if the volume runs in the kernel (whatever `r` says), the
    /// agent keeps holding and renewing its lease; otherwise the lease is released. Then `r`.
    pub(crate) fn settle<T>(&self, name: &str, lease: Lease, r: Result<T>) -> Result<T> {
        if self.root.dir(name).is_dir() {
            self.held
                .lock()
                .map_err(|_| anyhow!("agent state poisoned"))?
                .insert(name.to_string(), lease);
        } else if let Err(e) = lease.release() {
            eprintln!("peerflash agent: {name}: cannot release the lease: {e}");
        }
        r
    }

    /// `down`: destages the volume, records it clean, removes it and releases its lease.
    fn down(&self, name: &str, say: &mut dyn FnMut(String)) -> Result<()> {
        let v = self.volume(name)?;
        let _busy = self.claim_waiting(name, Instant::now() + Duration::from_secs(600), say)?;
        let lease = self
            .held
            .lock()
            .map_err(|_| anyhow!("agent state poisoned"))?
            .remove(name)
            .ok_or_else(|| {
                VolumeError::NotFound(format!("volume {name} does not run here under the agent"))
            })?;
        let r = self.replay_here(v, &lease, false, Source::Own, say);
        if let Err(e) = r {
            // Keep holding it: the data is still here.
            self.held
                .lock()
                .map_err(|_| anyhow!("agent state poisoned"))?
                .insert(name.to_string(), lease);
            return Err(e);
        }
        lease.release()?;
        Ok(())
    }

    /// After this agent's restart while the host lived: `v` still runs in the kernel. Takes its
    /// lease back (this host's orphan) and resumes renewing it; if the lease is no longer this
    /// host's, the module is fenced at once (no more SAN writes) and the volume is left alone.
    fn adopt(&self, v: &Volume, say: &mut dyn FnMut(String)) -> Result<()> {
        say(format!(
            "{}: still runs here: taking its lease back",
            v.name
        ));
        let lease = match Lease::acquire_persistent(&self.ds, self.me.id, v.lock_slot, &v.name) {
            Ok(l) => l,
            Err(e) => {
                // Fenced at once: 1 ms of validity left.
                let fenced = match crate::sysfs::write(&v.name, Attr::LeaseMs, 1) {
                    Ok(()) => "yes".to_string(),
                    Err(w) => format!("NO ({w:#})"),
                };
                bail!(
                    "{}: runs here but its lease is not this host's ({e}); SAN writes fenced: {fenced}",
                    v.name
                );
            }
        };
        let r = self.mark_running(v, &lease, false);
        self.settle(&v.name, lease, r)
    }

    /// After a restart: volumes still running in the kernel are adopted; every other volume
    /// this host owned and did not leave clean is replayed here.
    fn recover(&self, say: &mut dyn FnMut(String)) -> Result<()> {
        for v in &self.cfg.volumes {
            if !v.cache.contains_key(&self.me.name) {
                continue;
            }
            if self.root.dir(&v.name).is_dir() {
                if let Err(e) = self.adopt(v, say) {
                    say(format!("{e:#}"));
                }
                continue;
            }
            let Some(rec) = self.ds.read_record(v.lock_slot, &v.name)? else {
                continue;
            };
            if rec.owner_id != self.me.id || rec.state == LockState::Clean {
                continue;
            }
            say(format!(
                "{}: this host owned it ({}) when it stopped: recovering",
                v.name,
                rec.state.name()
            ));
            let lease = self.acquire(v, Instant::now() + Duration::from_secs(3600), say)?;
            // Another host may have run it meanwhile only if the record turned clean.
            let r = if start_decision(&lease.record(), self.me.id) == StartDecision::ReplayHere {
                self.replay_here(v, &lease, false, Source::Own, say)
            } else {
                Ok(())
            };
            // One volume's failed recovery does not stop the others' (nor the agent).
            if let Err(e) = self.settle(&v.name, lease, r) {
                say(format!("{}: not recovered: {e:#}", v.name));
            }
        }
        Ok(())
    }

    fn tick(&self) {
        if let Ok(held) = self.held.lock() {
            for (name, lease) in held.iter() {
                if let Some(v) = self.cfg.volumes.iter().find(|v| &v.name == name) {
                    if v.policy == Policy::WriteBackPeers {
                        if let Err(e) = self.drop_lost_members(v, lease) {
                            eprintln!("peerflash agent: {name}: cannot change the replica set: {e:#}");
                        }
                    }
                }
                if let Err(e) = copy_checkpoint(lease, name) {
                    eprintln!("peerflash agent: {name}: cannot update the lock record: {e}");
                }
            }
        }
    }
}

fn serve(agent: &Agent, stream: UnixStream) -> Result<()> {
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let mut out = &stream;
    let mut send = |r: &Reply| -> std::io::Result<()> {
        let mut s = serde_json::to_string(r).unwrap_or_default();
        s.push('\n');
        out.write_all(s.as_bytes())
    };
    let mut say = |m: String| {
        eprintln!("peerflash agent: {m}");
        let _ = send(&Reply {
            done: false,
            code: 0,
            message: m,
        });
    };
    let result = match serde_json::from_str::<Request>(&line) {
        Err(e) => Err(VolumeError::Invalid(format!("bad request: {e}")).into()),
        Ok(req) => match req.op.as_str() {
            "up" => agent
                .up(&req.volume, Duration::from_secs(req.wait_secs), &mut say)
                .map(|d| format!("{} runs here as {d}", req.volume)),
            "down" => agent
                .down(&req.volume, &mut say)
                .map(|()| format!("{} stopped: on the SAN, lease released", req.volume)),
            op => Err(VolumeError::Invalid(format!("unknown request {op:?}")).into()),
        },
    };
    let reply = match result {
        Ok(m) => Reply {
            done: true,
            code: 0,
            message: m,
        },
        Err(e) => Reply {
            done: true,
            code: crate::failure::exit_code(&e),
            message: format!("{e:#}"),
        },
    };
    send(&reply)?;
    Ok(())
}

/// Runs the agent of host `host` until killed.
pub fn run(cfg: Config, host: &str, socket: &Path) -> Result<()> {
    let me = cfg
        .hosts
        .iter()
        .find(|h| h.name == host)
        .cloned()
        .ok_or_else(|| VolumeError::NotFound(format!("host {host} is not in the configuration")))?;
    let ds = crate::locks::datastore(&cfg)?;
    let root = Root::locate()?;
    if let Some(p) = &cfg.peer {
        crate::peer::configure(&root, p, &cfg.hosts, &me)?;
        eprintln!("peerflash agent: peer transport: host {} listening on {}", me.id, me.address);
    }
    eprintln!(
        "peerflash agent: joining lockspace {} as {} (id {})",
        ds.lockspace, me.name, me.id
    );
    ds.join(me.id)?;
    let agent = Arc::new(Agent {
        cfg,
        me,
        ds,
        root,
        held: Mutex::new(HashMap::new()),
        busy: Mutex::new(HashSet::new()),
        peer_tries: Mutex::new(HashMap::new()),
    });
    agent.recover(&mut |m| eprintln!("peerflash agent: {m}"))?;
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    {
        let a = agent.clone();
        std::thread::spawn(move || loop {
            a.tick();
            std::thread::sleep(Duration::from_secs(1));
        });
    }
    if agent.cfg.volumes.iter().any(|v| v.policy == Policy::WriteBackPeers) {
        let a = agent.clone();
        std::thread::spawn(move || loop {
            a.replay_for_gone_owners();
            std::thread::sleep(Duration::from_secs(2));
        });
    }
    eprintln!("peerflash agent: ready on {}", socket.display());
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                eprintln!("peerflash agent: accept: {e}");
                continue;
            }
        };
        let a = agent.clone();
        std::thread::spawn(move || {
            if let Err(e) = serve(&a, stream) {
                eprintln!("peerflash agent: request: {e:#}");
            }
        });
    }
    Ok(())
}

/// Sends `req` to the agent at `socket`; prints progress to stderr; the final reply.
pub fn request(socket: &Path, req: &Request) -> Result<Reply> {
    let stream = UnixStream::connect(socket).map_err(|e| {
        anyhow!(
            "cannot reach the peerflash agent at {} ({e}): is `peerflash agent` running?",
            socket.display()
        )
    })?;
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    (&stream).write_all(line.as_bytes())?;
    // On a terminal, a spinner with the elapsed time shows the agent's latest word while it
    // waits (another host's replay can take minutes); otherwise each progress line is printed.
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let spinner = if tty {
        indicatif::ProgressBar::new_spinner()
    } else {
        indicatif::ProgressBar::hidden()
    };
    spinner.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    spinner.enable_steady_tick(Duration::from_millis(200));
    for l in BufReader::new(&stream).lines() {
        let r: Reply = serde_json::from_str(&l?).context("bad reply from the agent")?;
        if r.done {
            spinner.finish_and_clear();
            return Ok(r);
        }
        if tty {
            spinner.println(&r.message);
            spinner.set_message(r.message);
        } else {
            eprintln!("{}", r.message);
        }
    }
    spinner.abandon();
    bail!("the agent closed the connection without an answer")
}

/// The socket path: `--socket`, else `$PEERFLASH_AGENT_SOCKET`, else the default.
pub fn socket_path(arg: Option<&str>) -> PathBuf {
    arg.map(PathBuf::from)
        .or_else(|| std::env::var_os("PEERFLASH_AGENT_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

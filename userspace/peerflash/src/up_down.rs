//! `peerflash up` and `peerflash down` as the agent runs them: the volume started here under its
//! lease once no other host holds acknowledged writes of it (a new replica set recorded first
//! for wbp), recorded running; stopped, destaged, recorded clean and released. A member the
//! module declared lost leaves the set here too.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use peerflash_core::lockrec::{start_decision, LockState, StartDecision};
use peerflash_core::policy::Policy;
use peerflash_core::replication::ReplicaSet;
use peerflash_core::sysfs::Attr;
use peerflash_lease::Lease;

use crate::agent::{copy_checkpoint, hex, Agent, Source};
use crate::config::Volume;
use crate::error::VolumeError;
use crate::replicas::{leave_set, lost_hosts, place, replicas_attr};

impl Agent {
    /// Creates the volume here. `fresh`: the record says the SAN holds every acknowledged
    /// write, so whatever this host's flash still holds for the volume is dropped (on the SAN
    /// already, or stale: another host replayed a replica of it and wrote on); otherwise it is
    /// replayed. `replicas`: a wbp volume's replica set (`EPOCH GEN WANTED HOST...`); without
    /// one a wbp volume runs as wb (a replay of this host's own flash needs no peers).
    pub(crate) fn create(&self, v: &Volume, replicas: Option<String>, fresh: bool) -> Result<String> {
        self.create_from(v, replicas, fresh, None)
    }

    /// [`Agent::create`] with `fresh` under `lease`: a replica this host still holds of the
    /// volume's recorded uuid from another host is obsolete (the record says the SAN holds
    /// every acknowledged write), and the volume takes its room: adopted with `fresh`, so its
    /// records are dropped, never replayed.
    pub(crate) fn create_fresh(&self, v: &Volume, lease: &Lease, replicas: Option<String>) -> Result<String> {
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
    pub(crate) fn create_from(
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

    /// Records a new run of wbp volume `v` with its replica set at a new epoch (the record
    /// first: the module's set is always one the record holds) and returns the `replicas`
    /// attribute for it. The set is the first `replicas` of its `peers` that answer an
    /// authenticated ping through the module now (`replicas::place`); with fewer the volume runs
    /// write-through.
    pub(crate) fn new_replica_set(&self, v: &Volume, lease: &Lease, say: &mut dyn FnMut(String)) -> Result<String> {
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

    /// `up`: runs `name` here once no other host holds acknowledged writes of it.
    pub(crate) fn up(&self, name: &str, wait: Duration, say: &mut dyn FnMut(String)) -> Result<String> {
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
    pub(crate) fn start(
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
    pub(crate) fn drop_lost_members(&self, v: &Volume, lease: &Lease) -> Result<()> {
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
    pub(crate) fn mark_running(&self, v: &Volume, lease: &Lease, new_run: bool) -> Result<()> {
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

    /// `down`: destages the volume, records it clean, removes it and releases its lease.
    pub(crate) fn down(&self, name: &str, say: &mut dyn FnMut(String)) -> Result<()> {
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
}

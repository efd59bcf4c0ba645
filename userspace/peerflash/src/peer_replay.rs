//! Online replay by a peer (wbp): when the owner of a wbp volume is gone, every member of its
//! recorded replica set holds every write the owner acknowledged (the ack rule). A member's
//! agent finds its replica (by the owner's host id and the volume uuid of the lock record),
//! checks it is of the recorded set's epoch, adopts it and replays it to the SAN, then records
//! the volume clean: unasked, once the owner's lease can be taken
//! ([`Agent::replay_for_gone_owners`], every 2 s), or before an `up` on a member starts the
//! volume. Documentation/cluster-locks.md, "Online replay by a peer".

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use peerflash_core::lockrec::{start_decision, LockRecord, StartDecision};
use peerflash_core::policy::Policy;
use peerflash_core::replication::replica_may_replay;
use peerflash_lease::Lease;

use crate::agent::{hex, Agent, Source};
use crate::config::Volume;

impl Agent {
    /// Before a wbp volume is replayed from this host's own flash: the flash must still hold
    /// the slot the record names (same uuid). A replaced or reformatted cache device holds
    /// nothing of it, and recording the volume clean would lose what the members' replicas
    /// hold: the replay is refused and left to them (online replay by a peer).
    pub(crate) fn own_flash_holds(&self, v: &Volume, rec: &LockRecord) -> Result<()> {
        if rec.policy != Policy::WriteBackPeers || rec.replicas.is_empty() || rec.volume_uuid == [0; 16] {
            return Ok(());
        }
        let uuid = rec.volume_uuid;
        if !self.holds_own_slot(v, &uuid)? {
            bail!(
                "{}: this host's cache device no longer holds the volume's slot {}: its acknowledged writes are on the replica set's members {:?}, whose agents replay them (online replay by a peer)",
                v.name,
                hex(&uuid),
                rec.replicas.members()
            );
        }
        Ok(())
    }

    /// Whether this host's cache device holds `v`'s own slot with volume uuid `uuid`.
    fn holds_own_slot(&self, v: &Volume, uuid: &[u8; 16]) -> Result<bool> {
        Ok(crate::cache::find_slot(self.cache_of(v)?, |s| s.is_local_named(v.name.as_bytes()) && s.uuid == *uuid)?.is_some())
    }

    /// The replica of `rec`'s owner that this host may replay for `v` (online replay by a
    /// peer): the replica slot of (owner, the record's volume uuid) on this host's cache
    /// device, of the epoch of the recorded set (`replica_may_replay`: a replica of another
    /// epoch may lack writes acknowledged since).
    pub(crate) fn replica_to_replay(&self, v: &Volume, rec: &LockRecord) -> Result<Source> {
        let origin = u16::try_from(rec.owner_id)
            .map_err(|_| anyhow!("owner id {} is not a host id", rec.owner_id))?;
        let me = u32::try_from(self.me.id).map_err(|_| anyhow!("this host's id is out of range"))?;
        let uuid = rec.volume_uuid;
        let cache = self.cache_of(v)?;
        let Some(slot) = crate::cache::find_slot(cache, |s| s.is_replica_of(origin, &uuid))? else {
            // Adopted already by a replay of this host that stopped before it recorded itself
            // the owner: the slot is this host's own now.
            if self.holds_own_slot(v, &uuid)? {
                return Ok(Source::Own);
            }
            bail!("this host's cache device holds no replica of host {origin}'s volume {}", hex(&uuid));
        };
        if !replica_may_replay(slot.epoch, me, &rec.replicas) {
            bail!(
                "this host's replica of host {origin}'s volume is of replica-set epoch {}, the lock record's set is at epoch {}: it may lack writes acknowledged since, so it is not replayed",
                slot.epoch,
                rec.replicas.epoch
            );
        }
        Ok(Source::Replica { origin, uuid: slot.uuid })
    }

    /// Online replay by a peer: for each wbp volume whose record names this host a member of
    /// its set while another host owns it and did not leave it clean, takes the lease if it is
    /// free (the owner is gone), replays this host's replica to the SAN and records the volume
    /// clean, so that any host can run it. A live owner keeps its lease: nothing happens. A
    /// replay that cannot run (the replica is of another epoch, or still open while the
    /// member has not yet noticed the owner's loss) is tried again after a while.
    pub(crate) fn replay_for_gone_owners(&self) {
        for v in &self.cfg.volumes {
            if v.policy != Policy::WriteBackPeers || !v.cache.contains_key(&self.me.name) || self.root.dir(&v.name).is_dir() {
                continue;
            }
            let Ok(Some(rec)) = self.ds.read_record(v.lock_slot, &v.name) else {
                continue;
            };
            if !matches!(start_decision(&rec, self.me.id), StartDecision::ReplayReplica { .. }) {
                continue;
            }
            let now = Instant::now();
            if let Ok(tries) = self.peer_tries.lock() {
                if tries.get(&v.name).is_some_and(|(next, _)| *next > now) {
                    continue;
                }
            }
            let Some(_busy) = self.claim(&v.name) else {
                continue;
            };
            // Held by a live owner (or another member replaying): nothing to do; asked again
            // in 5 s (the owner's lease stays for host_dead_seconds after it is gone anyway).
            let Ok(lease) = Lease::acquire_persistent(&self.ds, self.me.id, v.lock_slot, &v.name) else {
                if let Ok(mut tries) = self.peer_tries.lock() {
                    let said = tries.get(&v.name).map(|(_, m)| m.clone()).unwrap_or_default();
                    tries.insert(v.name.clone(), (now + Duration::from_secs(5), said));
                }
                continue;
            };
            let rec = lease.record();
            let mut log = |m: String| eprintln!("peerflash agent: {m}");
            let r = match start_decision(&rec, self.me.id) {
                StartDecision::ReplayReplica { .. } => self
                    .replica_to_replay(v, &rec)
                    .and_then(|from| self.replay_here(v, &lease, false, from, &mut log)),
                _ => Ok(()),
            };
            if let Err(e) = self.settle(&v.name, lease, r) {
                let msg = format!("{}: online replay by a peer not done: {e:#}", v.name);
                if let Ok(mut tries) = self.peer_tries.lock() {
                    let said = tries.get(&v.name).is_some_and(|(_, m)| *m == msg);
                    if !said {
                        eprintln!("peerflash agent: {msg}; trying again in 10 s");
                    }
                    tries.insert(v.name.clone(), (now + Duration::from_secs(10), msg));
                }
            } else if let Ok(mut tries) = self.peer_tries.lock() {
                tries.remove(&v.name);
            }
        }
    }

}

//! Replays and recovery: a volume replayed from this host's flash (its own slot, or its replica
//! of a gone owner's volume), destaged and recorded clean; after the agent's restart, volumes
//! still running in the kernel adopted and every other volume this host left dirty replayed.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use peerflash_core::lockrec::{start_decision, LockRecord, LockState, StartDecision};
use peerflash_core::sysfs::Attr;
use peerflash_lease::Lease;

use crate::agent::{copy_checkpoint, kernel_serials, Agent, Source};
use crate::config::Volume;

impl Agent {
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

    /// After this agent's restart while the host lived: `v` still runs in the kernel. Takes its
    /// lease back (this host's orphan) and resumes renewing it; if the lease is no longer this
    /// host's, the module is fenced at once (no more SAN writes) and the volume is left alone.
    pub(crate) fn adopt(&self, v: &Volume, say: &mut dyn FnMut(String)) -> Result<()> {
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
    pub(crate) fn recover(&self, say: &mut dyn FnMut(String)) -> Result<()> {
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
}

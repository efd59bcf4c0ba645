//! `peerflash lock ...`: the per-volume leases and lock records of the cluster configuration's
//! datastore (Documentation/cluster-locks.md).

use anyhow::{bail, Context, Result};
use peerflash_core::lockrec::{LockRecord, LockState};
use peerflash_lease::{Datastore, MAX_HOSTS};
use serde::Serialize;

use crate::config::{Config, Volume};

/// The lockspace name of a cluster.
pub fn lockspace_name(cfg: &Config) -> String {
    match &cfg.cluster {
        Some(c) => format!("pf-{c}"),
        None => "peerflash".to_string(),
    }
}

/// The configuration's datastore.
pub fn datastore(cfg: &Config) -> Result<Datastore> {
    Ok(Datastore::new(
        &cfg.datastore.device,
        &lockspace_name(cfg),
        cfg.datastore.io_timeout,
    )?
    .at_mib(cfg.datastore.offset_mib))
}

fn volumes<'a>(cfg: &'a Config, names: &[String]) -> Result<Vec<&'a Volume>> {
    if names.is_empty() {
        return Ok(cfg.volumes.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            cfg.volumes.iter().find(|v| &v.name == n).ok_or_else(|| {
                crate::error::VolumeError::NotFound(format!(
                    "volume {n} is not in the configuration"
                ))
                .into()
            })
        })
        .collect()
}

/// One volume's lock as `lock status` shows it.
#[derive(Serialize)]
pub struct LockStatus {
    pub volume: String,
    pub lock_slot: u32,
    /// `None`: no valid record (the datastore was not initialised for this volume).
    pub record: Option<RecordView>,
}

#[derive(Serialize)]
pub struct RecordView {
    pub state: &'static str,
    pub policy: &'static str,
    pub owner_id: u64,
    pub owner: String,
    pub generation: u64,
    pub checkpoint: u64,
    pub last_serial: u64,
    pub pending_writes: u64,
    pub sequence: u64,
    /// The replica set's host ids and its epoch (wbp).
    pub replica_set: Vec<u32>,
    pub replica_epoch: u64,
    /// The volume's uuid (its slot on the owner's cache device; its replicas carry it), 32 hex
    /// digits; empty when none was recorded.
    pub volume_uuid: String,
}

impl RecordView {
    fn of(r: &LockRecord) -> RecordView {
        RecordView {
            state: r.state.name(),
            policy: r.policy.name(),
            owner_id: r.owner_id,
            owner: String::from_utf8_lossy(r.owner_name_bytes()).into_owned(),
            generation: r.generation,
            checkpoint: r.checkpoint,
            last_serial: r.last_serial,
            pending_writes: r.pending_writes(),
            sequence: r.seq,
            replica_set: r.replicas.members().to_vec(),
            replica_epoch: r.replicas.epoch,
            volume_uuid: if r.volume_uuid == [0; 16] {
                String::new()
            } else {
                uuid::Uuid::from_bytes(r.volume_uuid).simple().to_string()
            },
        }
    }
}

impl LockStatus {
    /// Indented `key: value` lines.
    pub fn human(&self) -> String {
        let mut s = format!("{}:\n  lock slot: {}\n", self.volume, self.lock_slot);
        match &self.record {
            None => s.push_str("  record: none (run `peerflash lock init`)\n"),
            Some(r) => {
                s.push_str(&format!("  state: {}\n  policy: {}\n", r.state, r.policy));
                if r.owner_id == 0 {
                    s.push_str("  owner: none\n");
                } else {
                    s.push_str(&format!("  owner: {} (host id {})\n", r.owner, r.owner_id));
                }
                s.push_str(&format!(
                    "  generation: {}\n  checkpoint: {}\n  last serial: {}\n  pending writes: {}\n",
                    r.generation, r.checkpoint, r.last_serial, r.pending_writes
                ));
                if r.replica_epoch != 0 || !r.replica_set.is_empty() {
                    let ids: Vec<String> = r.replica_set.iter().map(|h| format!("host {h}")).collect();
                    let set = if ids.is_empty() { "none".to_string() } else { ids.join(", ") };
                    s.push_str(&format!("  replica set: {set} (epoch {})\n", r.replica_epoch));
                }
                if !r.volume_uuid.is_empty() {
                    s.push_str(&format!("  volume uuid: {}\n", r.volume_uuid));
                }
            }
        }
        s
    }
}

/// Reads the lock records of `names` (all volumes when empty) without taking any lease.
pub fn status(cfg: &Config, names: &[String]) -> Result<Vec<LockStatus>> {
    let ds = datastore(cfg)?;
    volumes(cfg, names)?
        .into_iter()
        .map(|v| {
            let rec = ds.read_record(v.lock_slot, &v.name)?;
            Ok(LockStatus {
                volume: v.name.clone(),
                lock_slot: v.lock_slot,
                record: rec.as_ref().map(RecordView::of),
            })
        })
        .collect()
}

/// Writes the lockspace and a free lease and first record for each volume (through the local
/// sanlock daemon). Refused while a record says a volume runs, replays or has writes pending
/// on a host's flash, unless `force`: that would forget where acknowledged data is.
pub fn init(cfg: &Config, force: bool) -> Result<()> {
    let ds = datastore(cfg)?;
    // The size of a file or a block device alike: seek to its end.
    let size = std::fs::File::open(&ds.path)
        .and_then(|mut f| std::io::Seek::seek(&mut f, std::io::SeekFrom::End(0)))
        .with_context(|| format!("datastore {}", ds.path.display()))?;
    let need = ds.base
        + Datastore::bytes_for(
            cfg.volumes
                .iter()
                .map(|v| v.lock_slot + 1)
                .max()
                .unwrap_or(0),
        );
    if size < need {
        bail!(
            "datastore {} has {size} bytes; the configuration needs {need}",
            ds.path.display()
        );
    }
    let mut busy = Vec::new();
    for v in &cfg.volumes {
        if let Some(r) = ds.read_record(v.lock_slot, &v.name)? {
            if r.state != LockState::Clean {
                busy.push(format!(
                    "{} ({}, host {}, {} writes after the checkpoint)",
                    v.name,
                    r.state.name(),
                    String::from_utf8_lossy(r.owner_name_bytes()),
                    r.pending_writes()
                ));
            }
        }
    }
    if !busy.is_empty() && !force {
        return Err(crate::error::VolumeError::Busy(format!(
            "refusing to initialise the datastore: lock records say {}; --force forgets them",
            busy.join(", ")
        ))
        .into());
    }
    ds.init_lockspace(MAX_HOSTS)?;
    for v in &cfg.volumes {
        let policy = v.policy;
        ds.init_volume(
            v.lock_slot,
            &v.name,
            &LockRecord::new(v.name.as_bytes(), policy),
            MAX_HOSTS,
        )?;
    }
    Ok(())
}

/// Joins the lockspace as host `host` of the configuration.
pub fn join(cfg: &Config, host: &str) -> Result<u64> {
    let h = cfg.hosts.iter().find(|h| h.name == host).ok_or_else(|| {
        crate::error::VolumeError::NotFound(format!("host {host} is not in the configuration"))
    })?;
    datastore(cfg)?.join(h.id)?;
    Ok(h.id)
}

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
//! (`lockrec::start_decision`); otherwise the agent marks the record `pending`, releases the lease and
//! polls the record until the other host's replay makes it `clean` (Documentation/cluster-locks.md).
//!
//! In other files, by concern: `up` and `down` (`up_down.rs`), replays and recovery after a
//! restart (`recovery.rs`), online replay by a peer (wbp: a member replays its replica of a gone
//! owner's volume, `peer_replay.rs`), the socket's requests and client (`agent_socket.rs`).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use peerflash_core::mode::CacheState;
use peerflash_core::sysfs::Attr;
use peerflash_core::lockrec::LockState;
use peerflash_core::policy::Policy;
use peerflash_lease::{Datastore, Lease, LeaseError};

use crate::agent_socket::{Reply, Request};
use crate::config::{Config, Host, Volume};
use crate::configfs::Root;
use crate::error::VolumeError;

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
pub(crate) fn kernel_serials(name: &str) -> Option<(CacheState, u64, u64)> {
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
pub(crate) fn copy_checkpoint(lease: &Lease, name: &str) -> Result<(), LeaseError> {
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
    pub(crate) fn volume(&self, name: &str) -> Result<&Volume> {
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

    /// The host ids of `v`'s peers, in the configuration's order.
    pub(crate) fn peer_ids(&self, v: &Volume) -> Result<Vec<u32>> {
        v.peers
            .iter()
            .map(|p| {
                let h = self.cfg.hosts.iter().find(|h| &h.name == p);
                h.and_then(|h| u32::try_from(h.id).ok())
                    .ok_or_else(|| anyhow!("volume {}: peer {p} is not a host of the configuration", v.name))
            })
            .collect()
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
    pub(crate) fn claim_waiting(&self, name: &str, until: Instant, say: &mut dyn FnMut(String)) -> Result<Busy<'_>> {
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
    pub(crate) fn acquire(&self, v: &Volume, until: Instant, say: &mut dyn FnMut(String)) -> Result<Lease> {
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

    pub(crate) fn tick(&self) {
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

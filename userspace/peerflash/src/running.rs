//! Verbs on a running volume's cache: `set-policy` and `flush` (with a progress bar), through
//! its sysfs files.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::configfs::Root;
use crate::error::VolumeError;
use crate::sysfs::{dir, read_state, read_u64, write};
use peerflash_core::mode::CacheState;
use peerflash_core::policy::Policy;
use peerflash_core::sysfs::Attr;

/// The volume must be running with a cache.
fn require_cached(root: &Root, name: &str) -> Result<()> {
    if !root.dir(name).is_dir() {
        return Err(VolumeError::NotFound(format!("volume {name} does not exist")).into());
    }
    if !dir(name).is_dir() {
        return Err(VolumeError::NotFound(format!("volume {name} is not enabled")).into());
    }
    if read_state(name)? == CacheState::Uncached {
        return Err(VolumeError::Invalid(format!("volume {name} has no cache device")).into());
    }
    Ok(())
}

/// Switches the write policy of a running volume (wb to wt drains dirty data in the background:
/// `flush` waits for it).
pub fn set_policy(root: &Root, name: &str, policy: Policy) -> Result<()> {
    require_cached(root, name)?;
    root.write(name, "policy", policy.name()).map_err(|e| {
        let why = root.read(name, "last_error").unwrap_or_default();
        anyhow::anyhow!("cannot set the policy of {name} to {policy}: {why} ({e})")
    })
}

/// Puts replica set `replicas` (`EPOCH GEN WANTED HOST...`) in force on running volume `name`.
pub fn set_replicas(root: &Root, name: &str, replicas: &str) -> Result<()> {
    require_cached(root, name)?;
    root.write(name, "replicas", replicas).map_err(|e| {
        let why = root.read(name, "last_error").unwrap_or_default();
        anyhow::anyhow!("cannot put replica set {replicas} in force on {name}: {why} ({e})")
    })
}

/// Waits until everything written to the volume before the call is on the SAN: no dirty data
/// and the checkpoint at the last serial seen at the start. A progress bar (on a terminal)
/// counts the dirty bytes destaged.
pub fn flush(root: &Root, name: &str, progress: bool, timeout: Option<Duration>) -> Result<()> {
    require_cached(root, name)?;
    if read_u64(name, Attr::DestagePaused)? != 0 {
        return Err(VolumeError::Invalid(format!(
            "volume {name}: destaging is paused (write 0 to {})",
            dir(name).join(Attr::DestagePaused.name()).display()
        ))
        .into());
    }
    let target = read_u64(name, Attr::LastSerial)?;
    let first = read_u64(name, Attr::DirtyBytes)?;
    // Destage at once instead of after the destager's delay.
    write(name, Attr::DestageNow, 1)?;
    let bar = if progress {
        ProgressBar::new(first)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("destaging {bar:40} {bytes}/{total_bytes} {msg} ({eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    loop {
        let state = read_state(name)?;
        if state == CacheState::Failed {
            bar.abandon();
            bail!("volume {name} failed (its cache device failed with dirty data); nothing can be destaged");
        }
        let dirty = read_u64(name, Attr::DirtyBytes)?;
        let checkpoint = read_u64(name, Attr::CheckpointSerial)?;
        if dirty > bar.length().unwrap_or(0) {
            bar.set_length(dirty.max(first));
        }
        bar.set_position(bar.length().unwrap_or(0).saturating_sub(dirty));
        let failures = read_u64(name, Attr::DestageFailures)?;
        bar.set_message(if failures > 0 {
            format!("SAN errors: retry {failures}")
        } else {
            String::new()
        });
        if state == CacheState::Degraded || (dirty == 0 && checkpoint >= target) {
            bar.finish_and_clear();
            return Ok(());
        }
        if timeout.is_some_and(|t| start.elapsed() > t) {
            bar.abandon();
            bail!("volume {name}: {dirty} bytes still dirty after {:?} (checkpoint {checkpoint}, waiting for {target})", start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

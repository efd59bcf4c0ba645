//! Verbs on a running volume's cache: `set-policy` and `flush`, and the cache state that
//! `status` shows, read from `/sys/block/pf-NAME/peerflash/` (one value per file;
//! Documentation/control-interface.md). `PEERFLASH_SYSBLOCK` overrides `/sys/block` (host tests).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use peerflash_core::{attr, names};

use crate::configfs::Root;
use crate::volume::VolumeError;

/// The volume's sysfs directory of cache files.
pub fn dir(name: &str) -> PathBuf {
    let base = std::env::var_os("PEERFLASH_SYSBLOCK")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/sys/block"));
    base.join(format!("{}{}", names::DISK_PREFIX, name))
        .join("peerflash")
}

/// All files of the volume's cache directory (`None` when the volume is not running).
pub fn read_all(name: &str) -> Result<Option<BTreeMap<String, String>>> {
    let d = dir(name);
    if !d.is_dir() {
        return Ok(None);
    }
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))? {
        let e = e.with_context(|| format!("cannot list {}", d.display()))?;
        // Files a volume without a cache does not fill in read as ENODATA: left out.
        if let Ok(v) = std::fs::read_to_string(e.path()) {
            out.insert(
                e.file_name().to_string_lossy().into_owned(),
                v.trim_end().to_string(),
            );
        }
    }
    Ok(Some(out))
}

pub fn read_u64(name: &str, file: &str) -> Result<u64> {
    let p = dir(name).join(file);
    let text =
        std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
    attr::parse_u64(text.trim_end().as_bytes())
        .map_err(|e| anyhow::anyhow!("{}: {:?}: {}", p.display(), text.trim_end(), e.describe()))
}

pub fn read_str(name: &str, file: &str) -> Result<String> {
    let p = dir(name).join(file);
    Ok(std::fs::read_to_string(&p)
        .with_context(|| format!("cannot read {}", p.display()))?
        .trim_end()
        .to_string())
}

/// Writes `value` (and a newline) to one of the volume's sysfs files.
pub fn write(name: &str, file: &str, value: impl std::fmt::Display) -> Result<()> {
    let p = dir(name).join(file);
    std::fs::write(&p, format!("{value}\n"))
        .with_context(|| format!("cannot write {}", p.display()))
}

/// The volume must be running with a cache.
fn require_cached(root: &Root, name: &str) -> Result<()> {
    if !root.dir(name).is_dir() {
        return Err(VolumeError::NotFound(format!("volume {name} does not exist")).into());
    }
    if !dir(name).is_dir() {
        return Err(VolumeError::NotFound(format!("volume {name} is not enabled")).into());
    }
    if read_str(name, "state")? == "uncached" {
        return Err(VolumeError::Invalid(format!("volume {name} has no cache device")).into());
    }
    Ok(())
}

/// Switches the write policy of a running volume (wb to wt drains dirty data in the background:
/// `flush` waits for it).
pub fn set_policy(root: &Root, name: &str, policy: &str) -> Result<()> {
    require_cached(root, name)?;
    root.write(name, "policy", policy).map_err(|e| {
        let why = root.read(name, "last_error").unwrap_or_default();
        anyhow::anyhow!("cannot set the policy of {name} to {policy}: {why} ({e})")
    })
}

/// Waits until everything written to the volume before the call is on the SAN: no dirty data
/// and the checkpoint at the last serial seen at the start. A progress bar (on a terminal)
/// counts the dirty bytes destaged.
pub fn flush(root: &Root, name: &str, progress: bool, timeout: Option<Duration>) -> Result<()> {
    require_cached(root, name)?;
    if read_u64(name, "destage_paused")? != 0 {
        return Err(VolumeError::Invalid(format!(
            "volume {name}: destaging is paused (write 0 to {})",
            dir(name).join("destage_paused").display()
        ))
        .into());
    }
    let target = read_u64(name, "last_serial")?;
    let first = read_u64(name, "dirty_bytes")?;
    // Destage at once instead of after the destager's delay.
    write(name, "destage_now", 1)?;
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
        let state = read_str(name, "state")?;
        if state == "failed" {
            bar.abandon();
            bail!("volume {name} failed (its cache device failed with dirty data); nothing can be destaged");
        }
        let dirty = read_u64(name, "dirty_bytes")?;
        let checkpoint = read_u64(name, "checkpoint_serial")?;
        if dirty > bar.length().unwrap_or(0) {
            bar.set_length(dirty.max(first));
        }
        bar.set_position(bar.length().unwrap_or(0).saturating_sub(dirty));
        let failures = read_u64(name, "destage_failures")?;
        bar.set_message(if failures > 0 {
            format!("SAN errors: retry {failures}")
        } else {
            String::new()
        });
        if state == "degraded" || (dirty == 0 && checkpoint >= target) {
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

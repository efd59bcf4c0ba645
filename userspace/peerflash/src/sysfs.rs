//! A running volume's files in `/sys/block/pf-NAME/peerflash/` (one value per file;
//! Documentation/control-interface.md), read and written. `PEERFLASH_SYSBLOCK` overrides
//! `/sys/block` (host tests).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use peerflash_core::{attr, names};

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


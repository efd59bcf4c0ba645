//! A running volume's files in `/sys/block/pf-NAME/peerflash/` (one value per file;
//! Documentation/control-interface.md), read and written. `PEERFLASH_SYSBLOCK` overrides
//! `/sys/block` (host tests).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use peerflash_core::mode::CacheState;
use peerflash_core::sysfs::{self, Attr};
use peerflash_core::{attr, names};

/// The volume's sysfs directory of cache files.
pub fn dir(name: &str) -> PathBuf {
    let base = std::env::var_os("PEERFLASH_SYSBLOCK")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/sys/block"));
    base.join(format!("{}{}", names::DISK_PREFIX, name))
        .join("peerflash")
}

/// All files of the volume's cache directory, by name, in the order of the shared table
/// (`None` when the volume is not running).
pub fn read_all(name: &str) -> Result<Option<BTreeMap<String, String>>> {
    let d = dir(name);
    if !d.is_dir() {
        return Ok(None);
    }
    let mut out = BTreeMap::new();
    for spec in sysfs::ATTRS.iter() {
        // Files a volume without a cache does not fill in read as ENODATA: left out.
        if let Ok(v) = std::fs::read_to_string(d.join(spec.attr.name())) {
            out.insert(spec.attr.name().to_string(), v.trim_end().to_string());
        }
    }
    Ok(Some(out))
}

/// A number file.
pub fn read_u64(name: &str, file: Attr) -> Result<u64> {
    let p = dir(name).join(file.name());
    let text =
        std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
    attr::parse_u64(text.trim_end().as_bytes())
        .map_err(|e| anyhow::anyhow!("{}: {:?}: {}", p.display(), text.trim_end(), e.describe()))
}

/// The volume's cache state (`state`).
pub fn read_state(name: &str) -> Result<CacheState> {
    let p = dir(name).join(Attr::State.name());
    let text =
        std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
    CacheState::parse(&text)
        .ok_or_else(|| anyhow::anyhow!("{}: unknown state {:?}", p.display(), text.trim_end()))
}

/// Writes `value` (and a newline) to one of the volume's sysfs files, after the shared
/// table's check of what the file accepts (the kernel checks the same).
pub fn write(name: &str, file: Attr, value: u64) -> Result<()> {
    let p = dir(name).join(file.name());
    file.check(value)
        .map_err(|e| anyhow::anyhow!("{}: {value} refused: {e:?}", p.display()))?;
    std::fs::write(&p, format!("{value}\n")).with_context(|| format!("cannot write {}", p.display()))
}

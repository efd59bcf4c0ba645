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

/// A wbp volume's replica set as the module shows it (`replicas`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Replicas {
    pub epoch: u64,
    pub generation: u64,
    /// Members the volume asks for.
    pub wanted: u64,
    /// The set in force.
    pub members: Vec<u64>,
    /// Each member's state and counters (`host`, `state`, `owed`, `lag_bytes`, `lag_serials`,
    /// `last_answer_ms_ago`, `credit`, `writes`, `bytes`, `zero_copy`, `checkpoint`,
    /// `timeouts`, `nacks`), as the module names them.
    pub peers: Vec<BTreeMap<String, String>>,
}

/// Parses the `replicas` file: `epoch E gen G wanted W members H...`, then a `host H key value
/// ...` line per member; `None` for `none` (no members) or text of another shape.
pub fn parse_replicas(text: &str) -> Option<Replicas> {
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next()?.split_whitespace().collect();
    let num = |s: &str| s.parse::<u64>().ok();
    let (epoch, generation, wanted, members) = match head.as_slice() {
        ["epoch", e, "gen", g, "wanted", w, "members", rest @ ..] => {
            (num(e)?, num(g)?, num(w)?, rest.iter().map(|m| num(m)).collect::<Option<Vec<_>>>()?)
        }
        _ => return None,
    };
    let mut peers = Vec::new();
    for l in lines.filter(|l| !l.trim().is_empty()) {
        let words: Vec<&str> = l.split_whitespace().collect();
        if !words.len().is_multiple_of(2) || words.first() != Some(&"host") {
            return None;
        }
        peers.push(words.chunks(2).map(|kv| (kv[0].to_string(), kv[1].to_string())).collect());
    }
    Some(Replicas { epoch, generation, wanted, members, peers })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_file_parses() {
        let text = "epoch 2 gen 5 wanted 2 members 2 3\n\
                    host 2 state up owed 0 lag_bytes 0 zero_copy 7\n\
                    host 3 state lost owed 4 lag_bytes 16384 zero_copy 3\n";
        let r = parse_replicas(text).unwrap();
        assert_eq!((r.epoch, r.generation, r.wanted, r.members.clone()), (2, 5, 2, vec![2, 3]));
        assert_eq!(r.peers[1].get("state").map(String::as_str), Some("lost"));
        assert_eq!(r.peers[0].get("zero_copy").map(String::as_str), Some("7"));
        assert_eq!(parse_replicas("none\n"), None);
        assert_eq!(parse_replicas("epoch x gen 1 wanted 1 members\n"), None);
        assert_eq!(parse_replicas("epoch 1 gen 1 wanted 1 members 2\nhost 2 state\n"), None);
    }
}

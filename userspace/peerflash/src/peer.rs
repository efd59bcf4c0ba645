//! The peer transport from the helper's side (Documentation/wire-protocol.md): the agent sets
//! the module's cluster attributes from the configuration (`configure`), `peerflash peers`
//! shows them with the peer counters, `peerflash probe` dials a host through the module.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::config::{Host, Peer};
use crate::configfs::Root;
use crate::error::VolumeError;

/// Reads the cluster secret: a regular file owned by root that no one else may read or write,
/// holding 64 hex digits. Returns them (lower case); never prints them.
pub fn read_secret(path: &str) -> Result<String> {
    let meta = std::fs::symlink_metadata(path).with_context(|| format!("cannot read the secret file {path}"))?;
    if !meta.file_type().is_file() {
        bail!(VolumeError::Invalid(format!("the secret file {path} is not a regular file")));
    }
    if meta.uid() != 0 || meta.permissions().mode() & 0o077 != 0 {
        bail!(VolumeError::Invalid(format!(
            "the secret file {path} must be owned by root and readable by no one else (chmod 600; it is {:o}, uid {})",
            meta.permissions().mode() & 0o777,
            meta.uid()
        )));
    }
    let text = std::fs::read(path).with_context(|| format!("cannot read the secret file {path}"))?;
    let Some(secret) = peerflash_core::handshake::parse_secret(&text) else {
        bail!(VolumeError::Invalid(format!("the secret file {path} does not hold 64 hex digits (not all zero)")));
    };
    Ok(secret.iter().map(|b| format!("{b:02x}")).collect())
}

/// The host table as the module's `hosts` attribute takes it.
fn host_table(hosts: &[Host]) -> String {
    hosts.iter().map(|h| format!("{} {}\n", h.id, h.address)).collect()
}

/// Makes the module host `me` of the cluster and starts its listener on `me`'s address.
pub fn configure(root: &Root, peer: &Peer, hosts: &[Host], me: &Host) -> Result<()> {
    let secret = read_secret(&peer.secret_file)?;
    let write = |attr: &str, value: &str| -> Result<()> {
        root.write_root(attr, value).with_context(|| format!("the module refused its {attr} (see the kernel log)"))
    };
    // Identity changes only while not listening (an agent restart finds it listening).
    write("listen", "\n")?;
    write("host_id", &format!("{}\n", me.id))?;
    write("cluster_id", &format!("{}\n", peer.cluster_id))?;
    write("secret", &format!("{secret}\n"))?;
    write("hosts", &host_table(hosts))?;
    write("replica_cache", &format!("{}\n", peer.replica_cache.as_deref().unwrap_or("")))?;
    write("listen", &format!("{}\n", me.address))?;
    Ok(())
}

/// What `peerflash peers` shows.
#[derive(Debug, Serialize)]
pub struct PeerStatus {
    pub host_id: u64,
    pub listen: String,
    pub secret: String,
    pub hosts: Vec<String>,
    pub counters: BTreeMap<String, String>,
    pub last_probe: String,
}

pub fn status(root: &Root) -> Result<PeerStatus> {
    let read = |a: &str| root.read_root(a).with_context(|| format!("cannot read the module's {a}"));
    let counters = read("peer_stats")?
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(k, v)| (k.to_string(), v.trim().to_string())))
        .collect();
    Ok(PeerStatus {
        host_id: read("host_id")?.trim().parse().unwrap_or(0),
        listen: read("listen")?,
        secret: read("secret")?,
        hosts: read("hosts")?.lines().map(str::to_string).collect(),
        counters,
        last_probe: read("probe")?,
    })
}

/// Prints a status for people.
pub fn print(s: &PeerStatus) {
    println!("host id:         {}", if s.host_id == 0 { "unset".to_string() } else { s.host_id.to_string() });
    println!("listening:       {}", if s.listen.is_empty() { "no" } else { &s.listen });
    println!("secret:          {}", s.secret);
    println!("hosts:           {}", if s.hosts.is_empty() { "none".to_string() } else { s.hosts.join(", ") });
    for (k, v) in &s.counters {
        println!("{:<16} {v}", format!("{k}:"));
    }
    println!("last probe:      {}", s.last_probe);
}

/// Dials host `id` through the module and times `count` authenticated pings.
pub fn probe(root: &Root, id: u64, count: u64) -> Result<String> {
    root.write_root("probe", &format!("{id} {count}\n"))
        .map_err(|e| VolumeError::Invalid(format!("the probe of host {id} failed ({e}); the kernel log says why")))?;
    Ok(root.read_root("probe")?)
}

/// Whether the tests run as root (only root can make a root-owned secret file).
#[cfg(test)]
fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &std::path::Path, name: &str, text: &str, mode: u32) -> String {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p.display().to_string()
    }

    #[test]
    fn the_secret_file_must_be_private_and_hold_64_hex_digits() {
        let d = tempfile::tempdir().unwrap();
        let hex = "ab".repeat(32);
        let ok = file(d.path(), "ok", &format!("{hex}\n"), 0o600);
        if is_root() {
            assert_eq!(read_secret(&ok).unwrap(), hex);
        }
        let open = file(d.path(), "open", &hex, 0o644);
        let e = read_secret(&open).unwrap_err().to_string();
        assert!(e.contains("readable by no one else"), "{e}");
        let short = file(d.path(), "short", "abcd", 0o600);
        if is_root() {
            let e = read_secret(&short).unwrap_err().to_string();
            assert!(e.contains("64 hex digits") && !e.contains("abcd"), "{e}");
        }
        assert!(read_secret(&d.path().display().to_string()).is_err());
        assert!(read_secret("/nonexistent/secret").is_err());
    }

}

#[cfg(test)]
mod configure_tests {
    use super::*;

    /// The agent's writes, in order, against a fake configfs tree: listening stops first, the
    /// identity and host table follow, listening starts last; the secret file is refused when
    /// others may read it, before anything is written.
    #[test]
    fn configure_writes_the_cluster_attributes() {
        if !is_root() {
            return; // The secret file must be root's: only as root can the test make one.
        }
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("peerflash");
        std::fs::create_dir(&tree).unwrap();
        let root = Root::at(&tree);
        let secret = d.path().join("secret");
        std::fs::write(&secret, format!("{}\n", "5a".repeat(32))).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let peer = Peer {
            cluster_id: "00112233445566778899aabbccddeeff".into(),
            secret_file: secret.display().to_string(),
            replica_cache: Some("/dev/nvme0n1".into()),
        };
        let hosts: Vec<Host> = (1..=2)
            .map(|i| Host { name: format!("hv{i}"), address: format!("10.0.0.{i}:7790").parse().unwrap(), id: i })
            .collect();
        configure(&root, &peer, &hosts, &hosts[1]).unwrap();
        let read = |a: &str| std::fs::read_to_string(tree.join(a)).unwrap();
        assert_eq!(read("host_id"), "2\n");
        assert_eq!(read("cluster_id"), "00112233445566778899aabbccddeeff\n");
        assert_eq!(read("secret"), format!("{}\n", "5a".repeat(32)));
        assert_eq!(read("hosts"), "1 10.0.0.1:7790\n2 10.0.0.2:7790\n");
        assert_eq!(read("listen"), "10.0.0.2:7790\n");
        assert_eq!(read("replica_cache"), "/dev/nvme0n1\n");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
        std::fs::remove_file(tree.join("host_id")).unwrap();
        assert!(configure(&root, &peer, &hosts, &hosts[0]).is_err());
        assert!(!tree.join("host_id").exists(), "nothing is written with a secret file others may read");
    }
}

//! Access to the module's configfs tree, `/sys/kernel/config/peerflash/<volume>/<attribute>`.
//!
//! The layout is described in Documentation/control-interface.md. `PEERFLASH_CONFIGFS` overrides
//! the location (used by the host tests, which lay out a fake tree in a temporary directory).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::error::VolumeError;

/// Where the module's configfs subsystem lives.
pub const DEFAULT_ROOT: &str = "/sys/kernel/config/peerflash";

/// The module's configfs subsystem directory.
pub struct Root {
    path: PathBuf,
}

impl Root {
    /// Finds the subsystem directory, or says why it is not there.
    pub fn locate() -> Result<Root> {
        let path = std::env::var_os("PEERFLASH_CONFIGFS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
        if path.is_dir() {
            return Ok(Root { path });
        }
        let why = if !Path::new("/sys/module/peerflash").exists() {
            "the peerflash module is not loaded (run `modprobe peerflash`)".to_string()
        } else {
            format!(
                "{} is missing: is configfs mounted? (mount -t configfs none /sys/kernel/config)",
                path.display()
            )
        };
        Err(VolumeError::NoModule(why).into())
    }

    /// A tree at `path` (the unit tests' fake trees).
    #[cfg(test)]
    pub fn at(path: &Path) -> Root {
        Root { path: path.to_path_buf() }
    }

    /// The directory of volume `name`.
    pub fn dir(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Names of all volumes, sorted.
    pub fn volume_names(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.path)
            .with_context(|| format!("cannot list {}", self.path.display()))?
        {
            let entry = entry.with_context(|| format!("cannot list {}", self.path.display()))?;
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Reads attribute `attr` of volume `name`, without the trailing newline.
    pub fn read(&self, name: &str, attr: &str) -> io::Result<String> {
        let s = fs::read_to_string(self.dir(name).join(attr))?;
        Ok(s.trim_end_matches('\n').to_string())
    }

    /// Reads attribute `attr` of the subsystem itself (the cluster attributes), without the
    /// trailing newline.
    pub fn read_root(&self, attr: &str) -> io::Result<String> {
        let s = fs::read_to_string(self.path.join(attr))?;
        Ok(s.trim_end_matches('\n').to_string())
    }

    /// Writes `value` to attribute `attr` of the subsystem itself, in one write.
    pub fn write_root(&self, attr: &str, value: &str) -> io::Result<()> {
        fs::write(self.path.join(attr), value.as_bytes())
    }

    /// Writes `value` to attribute `attr` of volume `name` in one write, as configfs wants.
    pub fn write(&self, name: &str, attr: &str, value: &str) -> io::Result<()> {
        fs::write(self.dir(name).join(attr), value.as_bytes())
    }
}

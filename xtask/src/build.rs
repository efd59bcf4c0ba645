//! `cargo xtask build`: the kernel module (out of tree, against the cached kernel) and the
//! userspace crates, plus a module tree for the VMs holding the kernel's modules and ours.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::env::{self, phase};
use crate::setup::Kernel;

/// What `build` produced.
pub struct Built {
    /// `lib/modules/<release>` below it holds in-tree modules plus `extra/peerflash.ko`.
    pub modroot: PathBuf,
    /// Directory holding the `peerflash` helper binary.
    pub bin_dir: PathBuf,
}

/// Builds the module and the helper; cheap when nothing changed.
pub fn build(k: &Kernel) -> Result<Built> {
    let repo = env::repo_root();
    let sfx = k.flavor.suffix();
    let kmod = repo.join(format!("target/kmod{sfx}"));
    std::fs::create_dir_all(&kmod)?;
    phase("module build", || {
        env::run_logged(
            k.make(&[
                format!("M={}", repo.display()),
                format!("MO={}", kmod.display()),
                "modules".into(),
            ]),
            "module build",
            &repo.join(format!("target/kmod{sfx}-build.log")),
            None,
        )
        .map(|_| ())
    })?;
    let ko = kmod.join("peerflash.ko");
    if !ko.exists() {
        bail!("the module build succeeded but {} is missing", ko.display());
    }
    phase("userspace build", || {
        duct::cmd!(
            "cargo",
            "build",
            "--release",
            "--quiet",
            "-p",
            "peerflash",
            "-p",
            "pf-flushcheck",
            "-p",
            "pf-craft",
            "-p",
            "pf-wire",
            "-p",
            "pf-mark"
        )
        .dir(&repo)
        .run()
        .context("cargo build of the helper failed")
        .map(|_| ())
    })?;
    let modroot = repo.join(format!("target/vm/modroot{sfx}"));
    let moddir = modroot.join("lib/modules").join(&k.release);
    std::fs::create_dir_all(&modroot)?;
    duct::cmd!(
        "rsync",
        "-a",
        "--delete",
        format!("{}/", k.modroot.display()),
        format!("{}/", modroot.display())
    )
    .run()
    .context("cannot copy the kernel's modules")?;
    std::fs::create_dir_all(moddir.join("extra"))?;
    std::fs::copy(&ko, moddir.join("extra/peerflash.ko")).context("cannot install peerflash.ko")?;
    duct::cmd!("depmod", "-b", &modroot, &k.release)
        .run()
        .context("depmod failed")?;
    Ok(Built {
        modroot,
        bin_dir: repo.join("target/release"),
    })
}

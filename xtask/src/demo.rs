//! `cargo xtask demo`: the main job. Boots a VM and shows peerflash at work there
//! (`tests/vm/demo.sh` narrates each step).

use std::time::Duration;

use anyhow::{bail, Result};

use crate::build::Built;
use crate::env;
use crate::setup::Kernel;
use crate::vm::{Vm, VmConfig};

/// Runs the demo and fails if any of its steps failed.
pub fn run(k: &Kernel, b: &Built) -> Result<()> {
    let dir = env::repo_root().join("target/vm/demo");
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = VmConfig::new("pf-demo", &dir);
    let script = env::repo_root()
        .join("tests/vm/demo.sh")
        .display()
        .to_string();
    eprintln!("==> booting a VM (TCG, takes a minute) to run {script}");
    let mut vm = Vm::spawn(k, b, &cfg, &["sh".into(), script], None)?;
    match vm.wait(Duration::from_secs(1800))? {
        Some(0) => Ok(()),
        Some(code) => bail!("the demo failed (exit {code})"),
        None => bail!("the demo VM died or timed out"),
    }
}

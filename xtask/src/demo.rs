//! `cargo xtask demo`: the main job. Boots a VM and shows peerflash at work there
//! (`tests/vm/demo.sh` narrates each step: a write-back cache, destaging, a crash and its
//! replay), then a cluster of three VMs replicating a wbp volume
//! (`tests/vm/scenarios/wbp.sh`: replicas equal to the primary's log on every member, a member's
//! link cut and the set changed without it, the primary killed and its writes recovered from a
//! member's flash).

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
        Some(0) => {}
        Some(code) => bail!("the demo failed (exit {code})"),
        None => bail!("the demo VM died or timed out"),
    }
    let wbp = env::repo_root().join("tests/vm/scenarios/wbp.sh");
    eprintln!("\n==> a cluster of three VMs (TCG, takes 10 minutes or more): write-back with peers ({})", wbp.display());
    crate::scenario::run(k, b, 3, &wbp)
}

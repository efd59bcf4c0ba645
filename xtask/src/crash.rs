//! The wb crash test: a VM writes through a wb volume and is killed at a random point (like a
//! host crash); the next VM, on the same disk images, recovers the volume (offline replay),
//! checks with fio's saved verify state that every acknowledged write is there, flushes and
//! checks that the SAN holds exactly what the volume returns. `tests/vm/crash/round.sh` is
//! the guest side.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::build::Built;
use crate::setup::Kernel;
use crate::vm::{Vm, VmConfig};

/// Kill points are drawn in this range (seconds after fio starts writing; tests/vm/crash/round.sh
/// caps fio's rate so that its region takes longer than `KILL_MAX_S`).
const KILL_MIN_S: u64 = 2;
const KILL_MAX_S: u64 = 12;

fn seed() -> u64 {
    std::env::var("PF_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

/// Runs `rounds` kill points; `Ok` when every recovery verified.
pub fn run(k: &Kernel, b: &Built, rounds: u32, dir: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let cfg = VmConfig::new("t-crash", dir);
    let script = crate::env::repo_root().join("tests/vm/crash/round.sh");
    let seed = seed();
    eprintln!("    crash test: {rounds} kill points, seed {seed} (PF_CRASH_SEED to repeat)");
    let mut rng = seed | 1;
    for round in 0..=rounds {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let last = round == rounds;
        let kill_after = KILL_MIN_S + rng % (KILL_MAX_S - KILL_MIN_S + 1);
        let arg = if last {
            "final".to_string()
        } else {
            kill_after.to_string()
        };
        let console = dir.join(format!("console-{round}.log"));
        let kill_file = cfg.run_dir.join("kill-me");
        let _ = std::fs::remove_file(&kill_file);
        let start = Instant::now();
        let mut vm = Vm::spawn(
            k,
            b,
            &cfg,
            &[
                "sh".into(),
                script.display().to_string(),
                round.to_string(),
                arg,
            ],
            Some(&console),
        )?;
        if last {
            let rc = vm.wait(Duration::from_secs(1800))?;
            if rc != Some(0) {
                bail!(
                    "final recovery exited {rc:?}:\n{}",
                    tail(&cfg.run_dir.join("output.log"))
                );
            }
            if let Some(why) = crate::verdict::kernel_verdict(&cfg.run_dir) {
                bail!("final round: {why}");
            }
        } else {
            loop {
                if kill_file.exists() {
                    vm.kill();
                    break;
                }
                if !vm.running() {
                    bail!(
                        "round {round}: the VM stopped before its kill point:\n{}",
                        tail(&cfg.run_dir.join("output.log"))
                    );
                }
                if start.elapsed() > Duration::from_secs(1800) {
                    vm.kill();
                    bail!("round {round}: no kill point after 30 minutes");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if round > 0 {
                let verified = std::fs::read_to_string(cfg.run_dir.join("verified"))
                    .context("the recovery left no verdict")?;
                if verified.trim() != round.to_string() {
                    bail!(
                        "round {round}: recovery of round {} was not verified",
                        round - 1
                    );
                }
            }
        }
        eprintln!(
            "    round {round}: {} in {:.0} s",
            if last {
                "final recovery verified".to_string()
            } else {
                format!("killed {kill_after} s into the writes")
            },
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

//! The pure core's instructions per operation of the write path, counted on the host by
//! callgrind (`valgrind --tool=callgrind`): `userspace/core/examples/write_path.rs` repeats one
//! operation N times; two runs (N and 2N) give the instructions of N operations with start-up
//! and set-up cancelled out. Deterministic and independent of the emulator, so a change in the
//! core's cost shows without a VM. Printed by `cargo xtask bench` and kept in its JSON.

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::env;

/// The operations (`write_path OP N`) and what they are, per 4 KiB write.
const OPS: [(&str, &str); 6] = [
    ("record", "record header CRC32C over header + 4 KiB, encoded"),
    ("index", "extent into a 65536-extent index (BTreeMap)"),
    ("plan", "share of planning a 256-record destage batch"),
    ("seal", "wbp: ChaCha20-Poly1305 tag of a WRITE frame (primary)"),
    ("open", "wbp: the frame checked and decoded (member)"),
    ("hmac", "for comparison: HMAC-SHA256 of the same frame (wire version 1's tag)"),
];
const N: u64 = 1000;

#[derive(Serialize, Clone)]
pub struct OpCost {
    pub op: &'static str,
    pub what: &'static str,
    /// Instructions (callgrind's Ir) per operation.
    pub instructions: u64,
}

/// `Collected : N` of callgrind's summary.
fn collected(stderr: &str) -> Result<u64> {
    stderr
        .lines()
        .find_map(|l| l.split("Collected :").nth(1))
        .context("no `Collected :` line in callgrind's output")?
        .trim()
        .parse()
        .context("callgrind's total does not parse")
}

fn run_once(bin: &std::path::Path, op: &str, n: u64) -> Result<u64> {
    let out = duct::cmd!("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", bin, op, n.to_string())
        .stderr_capture()
        .stdout_null()
        .unchecked()
        .run()
        .context("cannot run valgrind")?;
    let text = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("write_path {op} {n} under callgrind failed: {text}");
    }
    collected(&text)
}

/// Builds the example and counts every operation.
pub fn measure() -> Result<Vec<OpCost>> {
    let repo = env::repo_root();
    duct::cmd!("cargo", "build", "--release", "--quiet", "--example", "write_path", "-p", "peerflash-core")
        .dir(&repo)
        .run()
        .context("cannot build userspace/core/examples/write_path.rs")?;
    let bin = repo.join("target/release/examples/write_path");
    let mut costs: Vec<OpCost> = Vec::new();
    for (op, what) in OPS {
        let (a, b) = (run_once(&bin, op, N)?, run_once(&bin, op, 2 * N)?);
        let per = b.saturating_sub(a) / N;
        costs.push(OpCost { op, what, instructions: per });
    }
    // `open` seals each frame before it opens it.
    let seal = costs.iter().find(|c| c.op == "seal").map_or(0, |c| c.instructions);
    if let Some(open) = costs.iter_mut().find(|c| c.op == "open") {
        open.instructions = open.instructions.saturating_sub(seal);
    }
    Ok(costs)
}

/// Prints the costs as a small table.
pub fn print(costs: &[OpCost]) {
    println!("\npure core, instructions per operation (host, callgrind; crates where the module uses the kernel's CRC32C, tree, ChaCha20 and Poly1305):");
    for c in costs {
        println!("  {:<7} {:>9}  {}", c.op, c.instructions, c.what);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callgrinds_total_is_read() {
        let err = "==12== Events    : Ir\n==12== Collected : 6723620\n==12==\n==12== I   refs:      6,723,620\n";
        assert_eq!(collected(err).unwrap(), 6723620);
        assert!(collected("==12== nothing\n").is_err());
    }
}

//! `cargo xtask fuzz`: runs the libFuzzer target of the on-flash parsers
//! (`userspace/core/fuzz`) for a while. cargo-fuzz is installed into the cache on first use; the
//! sanitizer flags it passes need a nightly compiler, so the machine's stable one is run with
//! RUSTC_BOOTSTRAP=1 (no other toolchain can be fetched here).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::env;

fn install_cargo_fuzz() -> Result<PathBuf> {
    let cache = env::cache_root();
    let root = cache.join("tools");
    let bin = root.join("bin/cargo-fuzz");
    if !bin.exists() {
        std::fs::create_dir_all(&cache)?;
        env::run_logged(
            duct::cmd!(
                "cargo",
                "install",
                "--locked",
                "cargo-fuzz",
                "--version",
                "~0.13",
                "--root",
                &root
            ),
            "cargo install cargo-fuzz",
            &cache.join("cargo-fuzz-install.log"),
            None,
        )?;
    }
    Ok(bin)
}

/// Fuzzes target `target` for `secs` seconds; fails when the fuzzer finds a crash.
pub fn run(target: &str, secs: u64) -> Result<()> {
    let bin = install_cargo_fuzz()?;
    let dir = env::repo_root().join("userspace/core/fuzz");
    let log = env::repo_root().join(format!("target/fuzz-{target}.log"));
    std::fs::create_dir_all(dir.join("corpus").join(target))?;
    let r = env::run_logged(
        duct::cmd!(
            bin,
            "fuzz",
            "run",
            target,
            "--",
            format!("-max_total_time={secs}"),
            "-rss_limit_mb=2048"
        )
        .dir(&dir)
        .env("RUSTC_BOOTSTRAP", "1"),
        &format!("fuzz {target} for {secs} s"),
        &log,
        None,
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    if let Err(e) = r {
        bail!(
            "fuzz target {target} failed (log: {}): {e:#}",
            log.display()
        );
    }
    // libFuzzer's last status line: "#N DONE cov: C ft: F corp: K/..." tells how much ran.
    let done = text
        .lines()
        .rev()
        .find(|l| l.contains("DONE"))
        .context("the fuzzer did not report DONE")?;
    eprintln!("    fuzz {target}: {}", done.trim());
    Ok(())
}

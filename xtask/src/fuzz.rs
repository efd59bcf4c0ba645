//! `cargo xtask fuzz`: runs the libFuzzer target of the on-flash parsers
//! (`userspace/core/fuzz`) for a while. cargo-fuzz is installed into the cache on first use; the
//! sanitizer flags it passes need a nightly compiler, so the machine's stable one is run with
//! RUSTC_BOOTSTRAP=1 (no other toolchain can be fetched here). The corpus is kept in the cache
//! (`<cache>/fuzz/corpus/<target>`), outside the checkout, so every run (CI's clean clones too)
//! starts from what the earlier ones found.

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
    let corpus = env::cache_root().join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&corpus)?;
    // A checkout's own corpus (runs before this one kept it there) joins the cache's: inputs are
    // named by their hash, so copies never clash.
    if let Ok(local) = std::fs::read_dir(dir.join("corpus").join(target)) {
        for f in local.flatten() {
            let to = corpus.join(f.file_name());
            if !to.exists() {
                std::fs::copy(f.path(), &to).context("cannot copy the fuzz corpus")?;
            }
        }
    }
    let mut args: Vec<std::ffi::OsString> = vec!["fuzz".into(), "run".into(), target.into()];
    args.push(corpus.clone().into());
    args.extend([
        "--".into(),
        format!("-max_total_time={secs}").into(),
        "-rss_limit_mb=2048".into(),
    ]);
    let before = corpus_size(&corpus);
    let r = env::run_logged(
        duct::cmd(bin, args).dir(&dir).env("RUSTC_BOOTSTRAP", "1"),
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
    eprintln!(
        "    fuzz {target}: {} (corpus {}: {} -> {} inputs)",
        done.trim(),
        corpus.display(),
        before,
        corpus_size(&corpus)
    );
    Ok(())
}

/// Number of inputs in a corpus directory.
fn corpus_size(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

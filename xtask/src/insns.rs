//! Guest instruction counts for `cargo xtask bench --count-insns`: builds the project's QEMU TCG
//! plugin (`tests/tools/insncount/pfinsns.c`, plugin API v1 as Debian's QEMU 7.2 loads it),
//! gives QEMU the options that load it, and reads the totals it logs at each marker the guest
//! executes (`pf-mark 1` and `pf-mark 2` at the ends of a window, `tests/vm/bench.sh`).
//!
//! Instructions are what the guest executes, whatever the emulator makes them cost: under TCG a
//! `crc32` instruction takes far longer than an `add`, which CPU time per write measures and an
//! instruction count does not.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::env;

/// Builds the plugin (when its source is newer than the library) and returns its path.
pub fn build_plugin() -> Result<PathBuf> {
    let repo = env::repo_root();
    let src = repo.join("tests/tools/insncount/pfinsns.c");
    let out_dir = repo.join("target/insncount");
    std::fs::create_dir_all(&out_dir)?;
    let so = out_dir.join("libpfinsns.so");
    let stale = match (std::fs::metadata(&src), std::fs::metadata(&so)) {
        (Ok(s), Ok(o)) => s.modified()? > o.modified()?,
        _ => true,
    };
    if stale {
        duct::cmd!("cc", "-shared", "-fPIC", "-O2", "-fvisibility=hidden", "-Wall", "-Wextra", "-Werror", "-o", &so, &src)
            .run()
            .context("cannot build the QEMU plugin (cc)")?;
    }
    Ok(so)
}

/// QEMU options that load `plugin` and log what it prints to `log`.
pub fn qemu_opts(plugin: &Path, log: &Path) -> String {
    format!("-plugin {} -d plugin -D {}", plugin.display(), log.display())
}

/// One window between a start and an end marker: instructions and `crc32` instructions all
/// vCPUs executed in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub insns: u64,
    pub crc32: u64,
}

/// The windows of a plugin log, in order: each `PFMARK id=1` line followed by a `PFMARK id=2`
/// line. Anything else in the log is ignored; an end without a start, a start without an end or
/// totals that go backwards are errors.
pub fn windows(log: &str) -> Result<Vec<Window>> {
    let mut out = Vec::new();
    let mut open: Option<(u64, u64)> = None;
    for line in log.lines().filter(|l| l.starts_with("PFMARK ")) {
        let field = |name: &str| -> Result<u64> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
                .with_context(|| format!("no {name} in {line:?}"))?
                .parse()
                .with_context(|| format!("a bad {name} in {line:?}"))
        };
        let (id, insns, crc) = (field("id")?, field("insns")?, field("crc32")?);
        match (id, open) {
            (1, None) => open = Some((insns, crc)),
            (2, Some((i0, c0))) => {
                if insns < i0 || crc < c0 {
                    bail!("the totals went backwards in {line:?}");
                }
                out.push(Window { insns: insns - i0, crc32: crc - c0 });
                open = None;
            }
            (1, Some(_)) => bail!("a window started twice ({line:?})"),
            (2, None) => bail!("a window ended without a start ({line:?})"),
            _ => bail!("an unknown marker in {line:?}"),
        }
    }
    if open.is_some() {
        bail!("the last window has no end");
    }
    Ok(out)
}

/// Instructions per write of a window of `window_secs` in which `writes` writes completed: raw
/// (less the marker's own instructions, `marker`, the first window) and net of the idle
/// background too (timer ticks and housekeeping, which at a low write rate are a large part of
/// a window: the rate of the idle window `idle` of `idle_secs`, scaled to this window). Returns
/// `(raw, net)`; both 0 without writes.
pub fn per_write(window: Window, marker: Window, idle: Window, idle_secs: f64, window_secs: f64, writes: f64) -> (f64, f64) {
    if writes <= 0.0 || idle_secs <= 0.0 {
        return (0.0, 0.0);
    }
    let raw = window.insns.saturating_sub(marker.insns) as f64;
    let idle_rate = idle.insns.saturating_sub(marker.insns) as f64 / idle_secs;
    let net = (raw - idle_rate * window_secs).max(0.0);
    (raw / writes, net / writes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_pair_start_and_end_markers() {
        let log = "noise\n\
                   PFMARK id=1 vcpu=0 insns=100 crc32=5\n\
                   PFMARK id=2 vcpu=1 insns=1100 crc32=25\n\
                   other plugin output\n\
                   PFMARK id=1 vcpu=1 insns=2000 crc32=30\n\
                   PFMARK id=2 vcpu=0 insns=2500 crc32=30\n";
        assert_eq!(
            windows(log).unwrap(),
            [Window { insns: 1000, crc32: 20 }, Window { insns: 500, crc32: 0 }]
        );
        assert!(windows("PFMARK id=2 vcpu=0 insns=1 crc32=0\n").is_err());
        assert!(windows("PFMARK id=1 vcpu=0 insns=1 crc32=0\n").is_err());
        assert!(windows("PFMARK id=1 vcpu=0 insns=9 crc32=0\nPFMARK id=2 vcpu=0 insns=1 crc32=0\n").is_err());
        assert!(windows("PFMARK id=1 vcpu=0 insns=x crc32=0\n").is_err());
        assert_eq!(windows("").unwrap(), []);
    }

    #[test]
    fn per_write_takes_off_the_marker_and_the_idle_background() {
        let w = |insns| Window { insns, crc32: 0 };
        // 1000 marker instructions; idle: 2000 per second; a 4 s window of 100 writes.
        let (raw, net) = per_write(w(1_009_000), w(1_000), w(5_000), 2.0, 4.0, 100.0);
        assert_eq!((raw, net), (10_080.0, 10_000.0));
        assert_eq!(per_write(w(10), w(1), w(1), 2.0, 4.0, 0.0), (0.0, 0.0));
        // Never below zero.
        assert_eq!(per_write(w(1_100), w(1_000), w(1_000_000), 2.0, 4.0, 10.0).1, 0.0);
    }
}

//! Paths, phase timing and command helpers shared by the xtask commands.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

/// The repository root (the workspace this xtask belongs to).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// The cache outside the checkout: `$PEERFLASH_CACHE`, else `~/.cache/peerflash`.
pub fn cache_root() -> PathBuf {
    if let Some(p) = std::env::var_os("PEERFLASH_CACHE") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into());
    home.join(".cache").join("peerflash")
}

/// Wall time of each phase of this run, for the closing report.
static PHASES: Mutex<Vec<(String, Duration)>> = Mutex::new(Vec::new());

/// Times a phase: prints its start and end and records its duration.
pub fn phase<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    eprintln!("==> {name}");
    let start = Instant::now();
    let r = f();
    let took = start.elapsed();
    eprintln!(
        "<== {name}: {} in {:.1} s",
        if r.is_ok() { "done" } else { "FAILED" },
        took.as_secs_f64()
    );
    if let Ok(mut p) = PHASES.lock() {
        p.push((name.to_string(), took));
    }
    r
}

/// The phases recorded so far.
pub fn phases() -> Vec<(String, Duration)> {
    PHASES.lock().map(|p| p.clone()).unwrap_or_default()
}

/// Runs `cmd` with its output going to `log`, showing progress: a bar when `expected` lines are
/// known from a previous run, a spinner otherwise; on a non-terminal a line a minute. On failure
/// the tail of the log is printed. Returns the number of output lines.
pub fn run_logged(
    cmd: duct::Expression,
    label: &str,
    log: &Path,
    expected: Option<u64>,
) -> Result<u64> {
    let reader = cmd
        .stderr_to_stdout()
        .unchecked()
        .reader()
        .with_context(|| format!("cannot start {label}"))?;
    let mut out =
        std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let tty = std::io::stderr().is_terminal();
    let bar = match (tty, expected) {
        (true, Some(n)) => {
            let b = ProgressBar::new(n);
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{elapsed_precise}] {bar:40} {pos}/{len} {wide_msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b
        }
        (true, None) => ProgressBar::new_spinner(),
        (false, _) => ProgressBar::hidden(),
    };
    bar.set_prefix(label.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    let start = Instant::now();
    let mut last_report = Instant::now();
    let mut lines = 0u64;
    let mut tail: std::collections::VecDeque<String> = Default::default();
    let mut buf = BufReader::new(&reader);
    let mut line = String::new();
    loop {
        line.clear();
        let n = buf
            .read_line(&mut line)
            .with_context(|| format!("reading output of {label}"))?;
        if n == 0 {
            break;
        }
        out.write_all(line.as_bytes())
            .with_context(|| format!("writing {}", log.display()))?;
        lines += 1;
        let l = line.trim_end().to_string();
        bar.set_position(lines);
        bar.set_message(l.clone());
        if !tty && last_report.elapsed() > Duration::from_secs(60) {
            eprintln!(
                "    {label}: {:.0} s, {lines} lines{}, last: {l}",
                start.elapsed().as_secs_f64(),
                expected.map(|e| format!(" of ~{e}")).unwrap_or_default()
            );
            last_report = Instant::now();
        }
        tail.push_back(l);
        if tail.len() > 40 {
            tail.pop_front();
        }
    }
    bar.finish_and_clear();
    let status = reader
        .try_wait()
        .with_context(|| format!("waiting for {label}"))?;
    match status {
        Some(o) if o.status.success() => Ok(lines),
        _ => {
            eprintln!("---- last lines of {} ----", log.display());
            for l in &tail {
                eprintln!("{l}");
            }
            bail!("{label} failed (full log: {})", log.display())
        }
    }
}

/// Fails with a clear message when `dir`'s filesystem has less than `need` bytes free.
pub fn check_free_space(dir: &Path, need: u64, what: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let out = duct::cmd!("df", "--output=avail", "-B1", dir)
        .read()
        .with_context(|| format!("cannot run df on {}", dir.display()))?;
    let avail: u64 = out
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .with_context(|| format!("cannot parse df output {out:?}"))?;
    if avail < need {
        bail!(
            "disk full: {what} needs {} GiB free in {}, only {:.1} GiB available",
            need >> 30,
            dir.display(),
            avail as f64 / (1u64 << 30) as f64
        );
    }
    Ok(())
}

/// Quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("abc"), "abc");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("exit 7"), "'exit 7'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}

//! `cargo xtask test`: host unit tests, then the VM tests, then a report with the wall time of
//! each phase and the closing line `N passed, N failed`.
//!
//! VM tests are the scripts `tests/vm/cases/*.sh` (each boots its own VM with fresh images and
//! passes when it exits 0, its kernel log shows no warning, bug or lockdep report, and lockdep
//! was on), the scenarios driven from here (the VM exit status, the crash test, the failover
//! test; the cluster smoke test only with `--filter smoke`) and the scenario scripts of
//! `tests/vm/scenarios/` marked `# test: nodes=N`. The cases run one at a time.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::build::{self, Built};
use crate::cluster;
use crate::verdict::kernel_verdict;
use crate::env::{self, phase};
use crate::setup::{self, Kernel};
use crate::vm::{Vm, VmConfig};

struct Outcome {
    name: String,
    passed: bool,
    took: Duration,
    detail: String,
}

/// Sums `test result: ... N passed; M failed` lines of cargo test output.
fn count_cargo_results(out: &str) -> (u64, u64) {
    let mut passed = 0;
    let mut failed = 0;
    for l in out.lines().filter(|l| l.starts_with("test result:")) {
        let num_before = |word: &str| -> u64 {
            l.split(';')
                .find(|p| p.contains(word))
                .and_then(|p| {
                    p.split_whitespace()
                        .rev()
                        .nth(1)
                        .and_then(|n| n.parse().ok())
                })
                .unwrap_or(0)
        };
        passed += num_before("passed");
        failed += num_before("failed");
    }
    (passed, failed)
}

fn host_tests() -> Result<(u64, u64)> {
    let repo = env::repo_root();
    let out = duct::cmd!(
        "cargo",
        "test",
        "--workspace",
        "--release",
        "--no-fail-fast"
    )
    .dir(&repo)
    .stderr_to_stdout()
    .unchecked()
    .read()
    .context("cannot run cargo test")?;
    std::fs::create_dir_all(repo.join("target"))?;
    std::fs::write(repo.join("target/host-tests.log"), &out)?;
    let (p, f) = count_cargo_results(&out);
    if f > 0 || p == 0 {
        eprintln!("{out}");
    }
    eprintln!("    host tests: {p} passed, {f} failed (log: target/host-tests.log)");
    Ok((p, f))
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn vm_case(k: &Kernel, b: &Built, script: &Path) -> Result<Outcome> {
    let name = script
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = env::repo_root().join("target/vm-tests").join(&name);
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = VmConfig::new(&format!("t-{name}"), &dir);
    let text = std::fs::read_to_string(script)
        .with_context(|| format!("cannot read {}", script.display()))?;
    apply_directives(&mut cfg, &text).with_context(|| format!("in {}", script.display()))?;
    let console = dir.join("console.log");
    let start = Instant::now();
    std::fs::create_dir_all(&dir)?;
    let mut vm = Vm::spawn(
        k,
        b,
        &cfg,
        &["sh".into(), script.display().to_string()],
        Some(&console),
    )?;
    let rc = vm.wait(Duration::from_secs(2400))?;
    let took = start.elapsed();
    let mut detail = String::new();
    let passed = match rc {
        Some(0) => match kernel_verdict(&cfg.run_dir) {
            None => true,
            Some(why) => {
                detail = why;
                false
            }
        },
        Some(code) => {
            let out = cfg.run_dir.join("output.log");
            detail = format!("exited {code}; output tail:\n{}", tail(&out, 40));
            if let Some(why) = kernel_verdict(&cfg.run_dir) {
                detail.push_str(&format!("\nand {why}"));
            }
            false
        }
        None => {
            detail = format!(
                "the VM died or timed out; console tail:\n{}",
                tail(&console, 40)
            );
            false
        }
    };
    Ok(Outcome {
        name,
        passed,
        took,
        detail,
    })
}

/// Applies a case script's `# vm: KEY=VALUE ...` lines to its VM: `cache_size` and `san_size`
/// (bytes, with a K/M/G/T suffix; sparse images) and `mem` (MiB).
fn apply_directives(cfg: &mut VmConfig, script: &str) -> Result<()> {
    for line in script.lines().filter_map(|l| l.strip_prefix("# vm:")) {
        for kv in line.split_whitespace() {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("`{kv}` is not KEY=VALUE"))?;
            match k {
                "cache_size" => cfg.cache_size = parse_size(v)?,
                "san_size" => cfg.san_size = parse_size(v)?,
                "mem" => cfg.mem_mb = v.parse().with_context(|| format!("bad mem `{v}`"))?,
                _ => anyhow::bail!("unknown VM setting `{k}`"),
            }
        }
    }
    Ok(())
}

/// `200G`, `512M`, `4096`: bytes.
fn parse_size(v: &str) -> Result<u64> {
    let (num, shift) = match v.chars().last() {
        Some('K') => (&v[..v.len() - 1], 10),
        Some('M') => (&v[..v.len() - 1], 20),
        Some('G') => (&v[..v.len() - 1], 30),
        Some('T') => (&v[..v.len() - 1], 40),
        _ => (v, 0),
    };
    let n: u64 = num.parse().with_context(|| format!("bad size `{v}`"))?;
    n.checked_shl(shift)
        .filter(|b| b >> shift == n)
        .with_context(|| format!("size `{v}` is too large"))
}

fn exit_status_case(k: &Kernel, b: &Built) -> Result<Outcome> {
    let dir = env::repo_root().join("target/vm-tests/vm-exit-status");
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = VmConfig::new("t-exit", &dir);
    let start = Instant::now();
    std::fs::create_dir_all(&dir)?;
    let cmd = ["sh".to_string(), "-c".into(), "exit 7".into()];
    let mut vm = Vm::spawn(k, b, &cfg, &cmd, Some(&dir.join("console.log")))?;
    let rc = vm.wait(Duration::from_secs(600))?;
    Ok(Outcome {
        name: "vm-exit-status".into(),
        passed: rc == Some(7),
        took: start.elapsed(),
        detail: format!("`sh -c 'exit 7'` in the VM gave {rc:?}, expected Some(7)"),
    })
}

fn cluster_case(k: &Kernel, b: &Built) -> Outcome {
    let start = Instant::now();
    let r = cluster::smoke(k, b, 2);
    Outcome {
        name: "cluster-smoke".into(),
        passed: r.is_ok(),
        took: start.elapsed(),
        detail: r.err().map(|e| format!("{e:#}")).unwrap_or_default(),
    }
}

fn failover_case(k: &Kernel, b: &Built) -> Outcome {
    let start = Instant::now();
    let r = crate::failover::run(k, b);
    Outcome {
        name: "cluster-failover".into(),
        passed: r.is_ok(),
        took: start.elapsed(),
        detail: r.err().map(|e| format!("{e:#}")).unwrap_or_default(),
    }
}

/// A single-VM case to run.
type Job<'a> = Box<dyn FnOnce() -> Result<Outcome> + 'a>;

/// Runs `jobs` one after the other, each case reported as it ends. A job that cannot run (its VM
/// did not start) is a failed case. (Two at once were slower in all on this machine's two cores:
/// each case took 2.1-2.3x its time alone, 2026-12-06.)
fn run_in_turn(jobs: Vec<(String, Job<'_>)>) -> Vec<Outcome> {
    let mut done = Vec::with_capacity(jobs.len());
    for (name, job) in jobs {
        eprintln!("    running {name}");
        let start = Instant::now();
        let o = job().unwrap_or_else(|e| Outcome {
            name,
            passed: false,
            took: start.elapsed(),
            detail: format!("{e:#}"),
        });
        report(Some(&o));
        done.push(o);
    }
    done
}

/// Kill points of the crash test in the suite (`cargo xtask crash --rounds N` for more).
const CRASH_ROUNDS: u32 = 4;

/// Runs everything; `filter` selects VM tests by name.
pub fn run(filter: Option<&str>, host_only: bool, vm_only: bool) -> Result<ExitCode> {
    // The host tests link libsanlock_client and start sanlock daemons.
    setup::packages()?;
    let (mut passed, mut failed) = if vm_only {
        (0, 0)
    } else {
        phase("host tests", host_tests)?
    };
    // Short fuzz runs of the on-flash parsers, the attach rules and the peer wire protocol: a
    // crash is a failed test.
    let targets: &[&str] = if vm_only { &[] } else { &["format", "attach", "wire"] };
    for &target in targets {
        match phase(&format!("fuzz {target}"), || crate::fuzz::run(target, 30)) {
            Ok(()) => passed += 1,
            Err(e) => {
                eprintln!("    FAIL fuzz {target}: {e:#}");
                failed += 1;
            }
        }
    }
    let mut outcomes_failed: Vec<(String, String)> = Vec::new();
    if !host_only {
        let k = setup::setup()?;
        let b = build::build(&k)?;
        let cases_dir = env::repo_root().join("tests/vm/cases");
        let mut scripts: Vec<_> = std::fs::read_dir(&cases_dir)
            .with_context(|| format!("cannot list {}", cases_dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "sh"))
            .collect();
        scripts.sort();
        let wanted = |name: &str| filter.is_none_or(|f| name.contains(f));
        let mut outcomes = Vec::new();
        phase("VM tests", || {
            // The single-VM cases.
            let mut jobs: Vec<(String, Job<'_>)> = Vec::new();
            if wanted("vm-exit-status") {
                jobs.push(("vm-exit-status".into(), Box::new(|| exit_status_case(&k, &b))));
            }
            for s in &scripts {
                let name = s
                    .file_stem()
                    .map(|x| x.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if wanted(&name) {
                    jobs.push((name, Box::new(|| vm_case(&k, &b, s))));
                }
            }
            if wanted("crash-wb") {
                jobs.push((
                    "crash-wb".into(),
                    Box::new(|| {
                        let start = Instant::now();
                        let dir = env::repo_root().join("target/vm-tests/crash-wb");
                        let r = crate::crash::run(&k, &b, CRASH_ROUNDS, &dir);
                        Ok(Outcome {
                            name: "crash-wb".into(),
                            passed: r.is_ok(),
                            took: start.elapsed(),
                            detail: r.err().map(|e| format!("{e:#}")).unwrap_or_default(),
                        })
                    }),
                ));
            }
            outcomes.extend(run_in_turn(jobs));
            // The cluster smoke test checks the harness itself (reachability, the shared SAN, a
            // node killed and restarted over its images, a cut link, a frozen node, netem) and
            // the module-to-module dial; cluster-wbp covers the dial, the shared SAN, a cut link
            // and a killed node with the module's replication, so the smoke test runs only when
            // asked for by name (`--filter cluster-smoke`), keeping the suite within CI's time.
            if filter.is_some_and(|f| f.contains("smoke") && "cluster-smoke".contains(f)) {
                eprintln!("    running cluster-smoke");
                outcomes.push(cluster_case(&k, &b));
                report(outcomes.last());
            }
            // Scenario scripts with a `# test: nodes=N` line are cluster tests too. Those of the
            // same N share one boot of the cluster (each leaves the nodes as booted), in name
            // order; each is reported as its own case, its time including its share of the boot.
            let tests: Vec<_> = scenario_tests()?.into_iter().filter(|t| wanted(&t.0)).collect();
            let mut sizes: Vec<usize> = tests.iter().map(|t| t.2).collect();
            sizes.sort();
            sizes.dedup();
            for n in sizes {
                let group: Vec<_> = tests.iter().filter(|t| t.2 == n).collect();
                let scripts: Vec<_> = group.iter().map(|t| t.1.clone()).collect();
                let results = crate::scenario::run_group(&k, &b, n, &format!("tests-{n}-nodes"), &scripts);
                for (t, (r, took)) in group.iter().zip(results) {
                    outcomes.push(Outcome {
                        name: t.0.clone(),
                        passed: r.is_ok(),
                        took,
                        detail: r.err().map(|e| format!("{e:#}")).unwrap_or_default(),
                    });
                    report(outcomes.last());
                }
            }
            if wanted("cluster-failover") {
                eprintln!("    running cluster-failover");
                outcomes.push(failover_case(&k, &b));
                report(outcomes.last());
            }
            Ok(())
        })?;
        for o in &outcomes {
            if o.passed {
                passed += 1;
            } else {
                failed += 1;
                outcomes_failed.push((o.name.clone(), reason(&o.detail)));
            }
        }
    }
    eprintln!("\nphase wall times:");
    for (name, took) in env::phases() {
        eprintln!("  {name:<28} {:>8.1} s", took.as_secs_f64());
    }
    // The reasons again at the very end, where a log's tail shows them.
    for o in outcomes_failed.iter() {
        eprintln!("FAILED {}: {}", o.0, o.1);
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The scenario scripts of `tests/vm/scenarios/` that are tests: those with a line
/// `# test: nodes=N [order=K]`; named `cluster-STEM`, in order of K (default 50), then name (the
/// tests of one N share a cluster in that order: one that kills a node goes last).
fn scenario_tests() -> Result<Vec<(String, std::path::PathBuf, usize)>> {
    let dir = env::repo_root().join("tests/vm/scenarios");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = e?.path();
        if path.extension().is_none_or(|x| x != "sh") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        if let Some((n, order)) = scenario_directive(&text) {
            let stem = path.file_stem().map(|x| x.to_string_lossy().into_owned()).unwrap_or_default();
            out.push((order, format!("cluster-{stem}"), path, n));
        }
    }
    out.sort();
    Ok(out.into_iter().map(|(_, name, path, n)| (name, path, n)).collect())
}

/// N and K of a `# test: nodes=N [order=K]` line (K 50 when not given).
fn scenario_directive(text: &str) -> Option<(usize, u32)> {
    let line = text.lines().find_map(|l| l.strip_prefix("# test:"))?;
    let (mut nodes, mut order) = (None, 50);
    for kv in line.split_whitespace() {
        match kv.split_once('=') {
            Some(("nodes", v)) => nodes = Some(v.parse().ok()?),
            Some(("order", v)) => order = v.parse().ok()?,
            _ => return None,
        }
    }
    Some((nodes?, order))
}

/// The line of a failed case's detail that says why: the script's `FAIL:` line if there is one,
/// else the first line.
fn reason(detail: &str) -> String {
    detail
        .lines()
        .find(|l| l.contains("FAIL:"))
        .or_else(|| detail.lines().next())
        .unwrap_or("")
        .trim()
        .to_string()
}

fn report(o: Option<&Outcome>) {
    if let Some(o) = o {
        let verdict = if o.passed { "PASS" } else { "FAIL" };
        eprintln!("    {verdict} {} ({:.0} s)", o.name, o.took.as_secs_f64());
        if !o.passed {
            eprintln!("{}", o.detail);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_directives_name_cluster_tests() {
        assert_eq!(scenario_directive("# x\n# test: nodes=3\nrest"), Some((3, 50)));
        assert_eq!(scenario_directive("# test: nodes=3 order=90"), Some((3, 90)));
        assert_eq!(scenario_directive("# test: order=90"), None);
        assert_eq!(scenario_directive("# test: nodes=3 colour=red"), None);
        assert_eq!(scenario_directive("# test: nodes=x"), None);
        assert_eq!(scenario_directive("no directive"), None);
    }

    #[test]
    fn counts_cargo_summaries() {
        let out = "test result: ok. 7 passed; 0 failed; 0 ignored\n\
                   noise\n\
                   test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured\n";
        assert_eq!(count_cargo_results(out), (9, 1));
        assert_eq!(count_cargo_results("nothing"), (0, 0));
    }

    #[test]
    fn a_failure_is_told_by_its_fail_line() {
        let detail = "exited 1; output tail:\nwrote 3 blocks\nFAIL: round 1: lost\nmore";
        assert_eq!(reason(detail), "FAIL: round 1: lost");
        assert_eq!(reason("the VM died or timed out; console tail:\nx"), "the VM died or timed out; console tail:");
        assert_eq!(reason(""), "");
    }

    #[test]
    fn vm_directives_set_the_vm() {
        let mut cfg = VmConfig::new("t", Path::new("/tmp/x"));
        apply_directives(&mut cfg, "#!/bin/sh\n# vm: cache_size=200G mem=3072\necho\n").unwrap();
        assert_eq!((cfg.cache_size, cfg.mem_mb), (200 << 30, 3072));
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert!(apply_directives(&mut cfg, "# vm: disks=3\n").is_err());
        assert!(apply_directives(&mut cfg, "# vm: cache_size\n").is_err());
    }
}

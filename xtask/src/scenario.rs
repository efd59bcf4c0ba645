//! `cargo xtask cluster --nodes N --script FILE`: boots a cluster and runs a scenario written as
//! a host shell script, so that cluster cases need no Rust. The script runs with
//! `tests/vm/cluster-lib.sh` sourced, whose functions ask this process to act on the cluster
//! through request files in `$PF_CTL` (the same file protocol as the node agent):
//!
//! | function | what xtask does |
//! |---|---|
//! | `on I CMD` | runs CMD (sh) on node I, prints its output, returns its exit status |
//! | `kill_node I` / `start_node I` | kills node I like a power cut / boots it over its images |
//! | `running I` | exit status 0 when node I runs (a scenario after one that killed it boots it) |
//! | `freeze I` / `thaw I` | SIGSTOP / SIGCONT of node I's QEMU |
//! | `cut I` / `restore I` | takes node I's link down / up (its tap on the bridge) |
//! | `netem I SPEC` | `tc qdisc ... netem SPEC` on node I's NIC (empty SPEC: removed) |
//!
//! `node_ip I` gives node I's address; `$PF_CLUSTER_DIR` is the cluster's directory (node I's
//! images and its run directory `nodeI/run`). The scenario fails when the script exits
//! non-zero; every node's kernel log is checked at the end like every VM test's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::build::Built;
use crate::cluster::Cluster;
use crate::env::{self, phase};
use crate::setup::Kernel;

/// One request of the script, from its file.
fn handle(c: &mut Cluster, ctl: &Path, id: u64) -> Result<(i32, String)> {
    let req = std::fs::read_to_string(ctl.join(format!("req-{id}")))?;
    let mut words = req.split_whitespace();
    let verb = words.next().unwrap_or_default();
    let node: usize = words
        .next()
        .and_then(|w| w.parse().ok())
        .with_context(|| format!("request {id}: `{req}` names no node"))?;
    if node >= c.nodes.len() {
        bail!("request {id}: node {node} does not exist ({} nodes)", c.nodes.len());
    }
    let rest: Vec<&str> = words.collect();
    Ok(match verb {
        "on" => {
            let body = std::fs::read_to_string(ctl.join(format!("body-{id}")))?;
            c.exec(node, &body, Duration::from_secs(900))?
        }
        "kill" => {
            c.kill(node);
            (0, String::new())
        }
        "start" => {
            c.start(node)?;
            (0, String::new())
        }
        "running" => (i32::from(!c.is_running(node)), String::new()),
        "freeze" | "thaw" => {
            c.freeze(node, verb == "freeze")?;
            (0, String::new())
        }
        "cut" | "restore" => {
            c.link(node, verb == "restore")?;
            (0, String::new())
        }
        "netem" => {
            c.netem(node, &rest.join(" "))?;
            (0, String::new())
        }
        _ => bail!("request {id}: unknown verb `{verb}`"),
    })
}

/// Boots `n` nodes and runs `script`; fails when it does or a node's kernel log shows problems.
pub fn run(k: &Kernel, b: &Built, n: usize, script: &Path) -> Result<()> {
    run_with(k, b, n, script, &[], None)
}

/// The name of a scenario (its script's stem) and its run directory, `target/vm/cluster-NAME`.
fn name_and_dir(script: &Path) -> (String, PathBuf) {
    let name = script.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let dir = env::repo_root().join("target/vm").join(format!("cluster-{name}"));
    (name, dir)
}

/// The plugin log of node `i` of a scenario run with a plugin ([`run_with`]).
pub fn plugin_log(script: &Path, i: usize) -> PathBuf {
    name_and_dir(script).1.join(format!("insns-node{i}.log"))
}

/// [`run`], with `env` added to the script's environment and, with `plugin`, every node's QEMU
/// loading that TCG plugin (its log: [`plugin_log`]).
pub fn run_with(k: &Kernel, b: &Built, n: usize, script: &Path, env: &[(&str, String)], plugin: Option<&Path>) -> Result<()> {
    let script = std::fs::canonicalize(script).with_context(|| format!("no script {}", script.display()))?;
    let (name, dir) = name_and_dir(&script);
    let mut c = Cluster::new(k, b, n, dir.clone())?;
    if let Some(p) = plugin {
        std::fs::create_dir_all(&dir)?;
        for (i, node) in c.nodes.iter_mut().enumerate() {
            node.cfg.qemu_extra = Some(crate::insns::qemu_opts(p, &plugin_log(&script, i)));
        }
    }
    phase("cluster: boot nodes", || c.start_all())?;
    let ran = run_script(&mut c, &dir, &script, env);
    let problems = stop_all(&mut c);
    ran.with_context(|| format!("scenario {name} failed"))?;
    if !problems.is_empty() {
        bail!("scenario {name}: kernel logs show problems:\n{}", problems.join("\n"));
    }
    Ok(())
}

/// Runs `scripts` in turn on one cluster of `n` nodes, in `target/vm/cluster-GROUP`: each script
/// leaves the nodes as booted (nothing loaded or running) for the next, and a script that fails
/// is followed by a fresh boot. A result per script, and its time (a boot it needed included);
/// every node's kernel log is checked whenever the nodes stop, and its problems fail the
/// scripts that ran since their boot.
pub fn run_group(k: &Kernel, b: &Built, n: usize, group: &str, scripts: &[PathBuf]) -> Vec<(Result<()>, Duration)> {
    let dir = env::repo_root().join("target/vm").join(format!("cluster-{group}"));
    let mut results: Vec<(Result<()>, Duration)> = Vec::new();
    let mut cluster: Option<Cluster> = None;
    // The scripts that ran on the nodes up now (indexes into `results`).
    let mut on_these: Vec<usize> = Vec::new();
    for (i, script) in scripts.iter().enumerate() {
        let start = Instant::now();
        let c = match cluster.take() {
            Some(c) => Ok(c),
            None => Cluster::new(k, b, n, dir.clone()).and_then(|mut c| phase("cluster: boot nodes", || c.start_all()).map(|_| c)),
        };
        let mut c = match c {
            Ok(c) => c,
            Err(e) => {
                results.push((Err(e), start.elapsed()));
                continue;
            }
        };
        eprintln!("    running cluster-{}", script.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
        let r = std::fs::canonicalize(script)
            .with_context(|| format!("no script {}", script.display()))
            .and_then(|s| run_script(&mut c, &dir, &s, &[]));
        let failed = r.is_err();
        on_these.push(results.len());
        results.push((r, Duration::ZERO));
        if failed || i + 1 == scripts.len() {
            let problems = stop_all(&mut c);
            if !problems.is_empty() {
                for &j in &on_these {
                    if let Some((r @ Ok(()), _)) = results.get_mut(j) {
                        *r = Err(anyhow::anyhow!("kernel logs show problems (checked when the nodes this scenario ran on stopped):\n{}", problems.join("\n")));
                    }
                }
            }
            on_these.clear();
        } else {
            cluster = Some(c);
        }
        if let Some(last) = results.last_mut() {
            last.1 = start.elapsed();
        }
    }
    results
}

/// Runs `script` against the booted cluster `c` (its directory `dir`, exported to the script as
/// `PF_CLUSTER_DIR`; node I's run directory, the guest's `$PF_RUN_DIR`, is `$PF_CLUSTER_DIR/nodeI/run`).
fn run_script(c: &mut Cluster, dir: &Path, script: &Path, env: &[(&str, String)]) -> Result<()> {
    let stem = script.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    // A request directory of its own: request numbers start again at 1.
    let ctl: PathBuf = dir.join(format!("ctl-{stem}"));
    let _ = std::fs::remove_dir_all(&ctl);
    std::fs::create_dir_all(&ctl)?;
    let lib = env::repo_root().join("tests/vm/cluster-lib.sh");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(". '{}' && . '{}'", lib.display(), script.display()))
        .env("PF_CTL", &ctl)
        .env("PF_NODES", c.nodes.len().to_string())
        .env("PF_REPO", env::repo_root())
        .env("PF_CLUSTER_DIR", dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .spawn()
        .context("cannot run the scenario script")?;
    let mut next = 1u64;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if ctl.join(format!("req-{next}")).exists() {
            let (rc, out) = match handle(c, &ctl, next) {
                Ok(r) => r,
                Err(e) => (255, format!("xtask: {e:#}\n")),
            };
            std::fs::write(ctl.join(format!("out-{next}")), out)?;
            std::fs::write(ctl.join(format!("tmp-{next}")), rc.to_string())?;
            std::fs::rename(ctl.join(format!("tmp-{next}")), ctl.join(format!("rc-{next}")))?;
            next += 1;
        } else {
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    if !status.success() {
        bail!("{stem}: the script exited with {status}");
    }
    Ok(())
}

/// Stops every node (a frozen one thawed first, so it can power off); the problems their kernel
/// logs show.
fn stop_all(c: &mut Cluster) -> Vec<String> {
    let mut problems = Vec::new();
    for i in 0..c.nodes.len() {
        let _ = c.freeze(i, false);
        match c.stop(i) {
            Ok(log) => problems.extend(crate::verdict::kernel_log_problems(&log).into_iter().map(|p| format!("node{i}: {p}"))),
            Err(e) => problems.push(format!("node{i}: {e:#}")),
        }
    }
    problems
}

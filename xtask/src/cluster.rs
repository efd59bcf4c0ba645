//! A cluster of test VMs on a private network inside a network namespace made for it.
//!
//! Topology (GUIDE §2 measured it best): one Linux bridge in the namespace, one tap per node,
//! guest addresses 192.0.2.0/24 (nodes from .11). All nodes share one SAN image; each has its
//! own NVMe cache image. Nothing leaves the namespace: it has no route and no link to the host's
//! network. Nodes are driven through `tests/vm/node-agent.sh` over their 9p run directory, so a
//! node can be commanded while its network is cut.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::build::Built;
use crate::env::{self, phase};
use crate::setup::Kernel;
use crate::vm::{Nic, Vm, VmConfig};

/// A node of the cluster.
pub struct Node {
    /// Its VM configuration (images, run directory, NIC).
    pub cfg: VmConfig,
    vm: Option<Vm>,
    seq: u32,
}

/// A running cluster. Dropping it kills the nodes and deletes the namespace.
pub struct Cluster<'a> {
    k: &'a Kernel,
    b: &'a Built,
    ns: String,
    /// The nodes, index 0 first.
    pub nodes: Vec<Node>,
}

fn ip_ns(ns: &str, args: &[&str]) -> Result<()> {
    let mut full = vec!["-n", ns];
    full.extend_from_slice(args);
    duct::cmd("ip", &full)
        .stdout_null()
        .run()
        .with_context(|| format!("ip {}", full.join(" ")))?;
    Ok(())
}

/// Deletes namespaces `pf-PID` left behind by runs that were killed (PID no longer running).
fn remove_stale_namespaces() {
    let list = duct::cmd!("ip", "netns", "list")
        .stderr_null()
        .read()
        .unwrap_or_default();
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let stale = name
            .strip_prefix("pf-")
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists());
        if stale {
            let _ = duct::cmd!("ip", "netns", "del", name)
                .stderr_null()
                .unchecked()
                .run();
        }
    }
}

impl<'a> Cluster<'a> {
    /// Creates the namespace, bridge and taps for `n` nodes below `dir` (nothing booted yet).
    pub fn new(k: &'a Kernel, b: &'a Built, n: usize, dir: PathBuf) -> Result<Self> {
        if n == 0 || n > 200 {
            bail!("a cluster has 1 to 200 nodes, not {n}");
        }
        remove_stale_namespaces();
        let ns = format!("pf-{}", std::process::id());
        let _ = duct::cmd!("ip", "netns", "del", &ns)
            .stderr_null()
            .unchecked()
            .run();
        duct::cmd!("ip", "netns", "add", &ns)
            .run()
            .context("cannot create a network namespace (need root)")?;
        let mut c = Cluster {
            k,
            b,
            ns: ns.clone(),
            nodes: Vec::new(),
        };
        ip_ns(&ns, &["link", "set", "lo", "up"])?;
        ip_ns(&ns, &["link", "add", "pfbr0", "type", "bridge"])?;
        ip_ns(&ns, &["link", "set", "pfbr0", "up"])?;
        let _ = std::fs::remove_dir_all(&dir);
        let san = dir.join("san.img");
        for i in 0..n {
            let tap = format!("pftap{i}");
            ip_ns(&ns, &["tuntap", "add", "dev", &tap, "mode", "tap"])?;
            ip_ns(&ns, &["link", "set", &tap, "master", "pfbr0"])?;
            ip_ns(&ns, &["link", "set", &tap, "up"])?;
            let name = format!("node{i}");
            let mut cfg = VmConfig::new(&name, &dir.join(&name));
            cfg.san_image = san.clone();
            cfg.shared_san = true;
            cfg.mem_mb = 1024;
            cfg.cpus = 1;
            cfg.netns = Some(ns.clone());
            cfg.nic = Some(Nic {
                tap,
                mac: format!("52:54:00:00:02:{:02x}", 11 + i),
                ip: Self::ip(i),
            });
            c.nodes.push(Node {
                cfg,
                vm: None,
                seq: 0,
            });
        }
        Ok(c)
    }

    /// Guest address of node `i`.
    pub fn ip(i: usize) -> String {
        format!("192.0.2.{}", 11 + i)
    }

    /// Boots node `i` over its images and waits until its agent answers.
    pub fn start(&mut self, i: usize) -> Result<()> {
        self.spawn(i)?;
        self.wait_ready(i)
    }

    /// Boots every node at once and waits until all agents answer.
    pub fn start_all(&mut self) -> Result<()> {
        (0..self.nodes.len()).try_for_each(|i| self.spawn(i))?;
        (0..self.nodes.len()).try_for_each(|i| self.wait_ready(i))
    }

    fn console(&self, i: usize) -> PathBuf {
        self.nodes[i].cfg.run_dir.with_extension("console.log")
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let console = self.console(i);
        let node = &mut self.nodes[i];
        let run = &node.cfg.run_dir;
        std::fs::create_dir_all(run)?;
        for e in std::fs::read_dir(run)? {
            let p = e?.path();
            if p.is_file() {
                let _ = std::fs::remove_file(p);
            }
        }
        let agent = env::repo_root()
            .join("tests/vm/node-agent.sh")
            .display()
            .to_string();
        node.vm = Some(Vm::spawn(
            self.k,
            self.b,
            &node.cfg,
            &["sh".into(), agent],
            Some(&console),
        )?);
        node.seq = 0;
        Ok(())
    }

    fn wait_ready(&mut self, i: usize) -> Result<()> {
        let console = self.console(i);
        let node = &mut self.nodes[i];
        let start = Instant::now();
        while !node.cfg.run_dir.join("ready").exists() {
            if start.elapsed() > Duration::from_secs(300) {
                bail!(
                    "node{i} did not come up in 300 s (console: {})",
                    console.display()
                );
            }
            if let Some(vm) = node.vm.as_mut() {
                if !vm.running() {
                    bail!(
                        "node{i} exited while booting (console: {})",
                        console.display()
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Ok(())
    }

    /// Runs `script` (sh) on node `i`; returns its exit status and output.
    pub fn exec(&mut self, i: usize, script: &str, timeout: Duration) -> Result<(i32, String)> {
        let node = &mut self.nodes[i];
        node.seq += 1;
        let id = node.seq;
        let run = node.cfg.run_dir.clone();
        let tmp = run.join(format!("tmp-{id}"));
        std::fs::write(&tmp, script)?;
        std::fs::rename(&tmp, run.join(format!("cmd-{id}.sh")))?;
        let start = Instant::now();
        let rc = run.join(format!("rc-{id}"));
        while !rc.exists() {
            if start.elapsed() > timeout {
                bail!(
                    "node{i}: command timed out after {} s: {script}",
                    timeout.as_secs()
                );
            }
            if !node.vm.as_mut().map(Vm::running).unwrap_or(false) {
                bail!("node{i} is not running");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let code = std::fs::read_to_string(&rc)?.trim().parse().unwrap_or(-1);
        let out = std::fs::read_to_string(run.join(format!("out-{id}"))).unwrap_or_default();
        Ok((code, out))
    }

    /// Runs `script` on node `i` and fails unless it succeeds; returns its output.
    pub fn check(&mut self, i: usize, script: &str) -> Result<String> {
        let (code, out) = self.exec(i, script, Duration::from_secs(300))?;
        if code != 0 {
            bail!("node{i}: `{script}` exited {code}:\n{out}");
        }
        Ok(out)
    }

    /// Kills node `i` at once, like a host crash.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut vm) = self.nodes[i].vm.take() {
            vm.kill();
        }
    }

    /// Whether node `i` runs (not killed).
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].vm.is_some()
    }

    /// Freezes (`true`) or thaws node `i` (SIGSTOP/SIGCONT of its QEMU).
    pub fn freeze(&mut self, i: usize, frozen: bool) -> Result<()> {
        let vm = self.nodes[i].vm.as_mut().with_context(|| format!("node{i} is not running"))?;
        vm.signal(if frozen { libc::SIGSTOP } else { libc::SIGCONT });
        Ok(())
    }

    /// Powers node `i` off cleanly and returns its kernel log.
    pub fn stop(&mut self, i: usize) -> Result<String> {
        let run = self.nodes[i].cfg.run_dir.clone();
        std::fs::write(run.join("stop"), "")?;
        if let Some(mut vm) = self.nodes[i].vm.take() {
            if vm.wait(Duration::from_secs(120))?.is_none() {
                bail!("node{i} did not power off cleanly");
            }
        }
        Ok(std::fs::read_to_string(run.join("dmesg.txt")).unwrap_or_default())
    }

    /// Cuts (`up == false`) or restores node `i`'s link.
    pub fn link(&self, i: usize, up: bool) -> Result<()> {
        let tap = self.nodes[i]
            .cfg
            .nic
            .as_ref()
            .map(|n| n.tap.clone())
            .unwrap_or_default();
        ip_ns(
            &self.ns,
            &["link", "set", &tap, if up { "up" } else { "down" }],
        )
    }

    /// Adds latency/loss on node `i`'s NIC (netem inside the guest), e.g. "delay 20ms loss 1%";
    /// an empty spec removes it.
    pub fn netem(&mut self, i: usize, spec: &str) -> Result<()> {
        let script = if spec.is_empty() {
            "tc qdisc del dev eth0 root 2>/dev/null; true".to_string()
        } else {
            format!("tc qdisc replace dev eth0 root netem {spec}")
        };
        self.check(i, &script).map(|_| ())
    }
}

impl Drop for Cluster<'_> {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        let _ = duct::cmd!("ip", "netns", "del", &self.ns)
            .stderr_null()
            .unchecked()
            .run();
    }
}

/// The cluster smoke scenario: reachability, one shared SAN, a node killed and restarted over its
/// images while the other goes on, a cut link seen as unreachable and then restored, and netem
/// latency measured on the wire.
pub fn smoke(k: &Kernel, b: &Built, n: usize) -> Result<()> {
    if n < 2 {
        bail!("the smoke scenario needs at least 2 nodes");
    }
    let dir = env::repo_root().join("target/vm/cluster-smoke");
    let mut c = Cluster::new(k, b, n, dir)?;
    phase("cluster: boot nodes", || c.start_all())?;
    // The cluster secret, fresh for the run, where the nodes read it (the repository is shared).
    let mut secret = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut secret))?;
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(env::repo_root().join("target/vm/cluster-secret"), hex + "\n")?;
    let ping = |c: &mut Cluster, from: usize, to: usize| -> Result<bool> {
        let (code, _) = c.exec(
            from,
            &format!("ping -c 2 -W 2 {}", Cluster::ip(to)),
            Duration::from_secs(30),
        )?;
        Ok(code == 0)
    };
    for i in 0..n {
        for j in 0..n {
            if i != j && !ping(&mut c, i, j)? {
                bail!("node{i} cannot reach node{j}");
            }
        }
    }
    eprintln!("    every node reaches every other");

    // The modules' peer transport: each node listens as host i+1; each dials every other and
    // times authenticated pings.
    for i in 0..n {
        peer_setup(&mut c, i, n)?;
    }
    for i in 0..n {
        for j in (0..n).filter(|&j| j != i) {
            let out = c.check(i, &format!("echo '{} 20' > /sys/kernel/config/peerflash/probe && cat /sys/kernel/config/peerflash/probe", j + 1))?;
            eprintln!("    node{i} -> node{j} (module to module, authenticated): {}", out.trim());
        }
    }

    // One SAN: what node0 writes (direct I/O), node1 reads back.
    c.check(0, "head -c 1048576 /dev/urandom > /tmp/pat && dd if=/tmp/pat of=$PF_SAN_DEV bs=1M count=1 seek=7 oflag=direct status=none && sha256sum < /tmp/pat > $PF_RUN_DIR/pat.sum")?;
    let want = std::fs::read_to_string(c.nodes[0].cfg.run_dir.join("pat.sum"))?;
    let got = c.check(
        1,
        "dd if=$PF_SAN_DEV bs=1M count=1 skip=7 iflag=direct status=none | sha256sum",
    )?;
    if want.trim() != got.trim() {
        bail!(
            "node1 reads {} from the SAN where node0 wrote {}",
            got.trim(),
            want.trim()
        );
    }
    eprintln!("    node1 reads the bytes node0 wrote to the shared SAN");

    // Kill node1 (after leaving a mark on its own cache device); node0 is unaffected; node1
    // restarts over the same images.
    c.check(1, "echo pf-mark-$$ > /tmp/m && dd if=/tmp/m of=$PF_CACHE_DEV bs=4096 count=1 conv=sync oflag=direct status=none && cat /tmp/m")
        .and_then(|mark| {
            std::fs::write(c.nodes[1].cfg.run_dir.with_extension("mark"), mark.trim())?;
            Ok(())
        })?;
    c.kill(1);
    if ping(&mut c, 0, 1)? {
        bail!("node1 was killed but still answers pings");
    }
    c.check(
        0,
        "dd if=$PF_SAN_DEV bs=1M count=1 skip=7 iflag=direct status=none > /dev/null",
    )?;
    eprintln!("    node1 killed; node0 still serves I/O");
    phase("cluster: restart node1", || c.start(1))?;
    let mark = std::fs::read_to_string(c.nodes[1].cfg.run_dir.with_extension("mark"))?;
    let back = c.check(
        1,
        "dd if=$PF_CACHE_DEV bs=4096 count=1 iflag=direct status=none | tr -d '\\0'",
    )?;
    if back.trim() != mark.trim() {
        bail!("node1 restarted over another cache image: found {back:?}, expected {mark:?}");
    }
    if !ping(&mut c, 0, 1)? || !ping(&mut c, 1, 0)? {
        bail!("node1 is not reachable after its restart");
    }
    eprintln!("    node1 restarted over its own images and is reachable");
    peer_setup(&mut c, 1, n)?;

    // Cut and restore node1's link; a dial of node1's module fails within its bound.
    c.link(1, false)?;
    if ping(&mut c, 0, 1)? {
        bail!("node1's link is cut but node0 still reaches it");
    }
    peer_dial_bounded(&mut c, 0, 1)?;
    c.link(1, true)?;
    let start = Instant::now();
    while !ping(&mut c, 0, 1)? {
        if start.elapsed() > Duration::from_secs(30) {
            bail!("node1 is unreachable 30 s after its link was restored");
        }
    }
    c.check(0, "echo '2 5' > /sys/kernel/config/peerflash/probe")?;
    eprintln!("    a cut link is seen as unreachable, and restored (the peer dial works again)");

    // A frozen node (SIGSTOP of its QEMU): the dial fails within its bound; thawed, it works.
    c.freeze(1, true)?;
    peer_dial_bounded(&mut c, 0, 1)?;
    c.freeze(1, false)?;
    c.check(0, "echo '2 5' > /sys/kernel/config/peerflash/probe")?;
    eprintln!("    a frozen node's module is not reached; thawed, it is");

    // Latency on node1's NIC shows in node0's round trips.
    c.netem(1, "delay 50ms")?;
    let out = c.check(0, &format!("ping -c 3 -W 3 {}", Cluster::ip(1)))?;
    c.netem(1, "")?;
    let min_rtt = out
        .lines()
        .find(|l| l.contains("min/avg/max"))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.trim().split('/').next())
        .and_then(|v| v.parse::<f64>().ok())
        .with_context(|| format!("cannot read ping's round trip from:\n{out}"))?;
    if min_rtt < 50.0 {
        bail!("netem delay 50ms on node1 but node0 sees a round trip of {min_rtt} ms");
    }
    eprintln!("    netem delay 50ms on node1 seen by node0 (min rtt {min_rtt:.1} ms)");

    for i in 0..n {
        c.check(i, "echo > /sys/kernel/config/peerflash/listen && rmmod peerflash")?;
        let log = c.stop(i)?;
        let bad = crate::verdict::kernel_log_problems(&log);
        if !bad.is_empty() {
            bail!("node{i}'s kernel log shows problems:\n{}", bad.join("\n"));
        }
    }
    Ok(())
}

/// A dial of node `to`'s module from node `from` must fail, within 10 s.
fn peer_dial_bounded(c: &mut Cluster, from: usize, to: usize) -> Result<()> {
    let t0 = Instant::now();
    let (code, _) = c.exec(from, &format!("echo '{} 5' > /sys/kernel/config/peerflash/probe", to + 1), Duration::from_secs(60))?;
    let took = t0.elapsed();
    if code == 0 {
        bail!("node{from} dialed node{to}'s module across a cut link or to a frozen node");
    }
    if took > Duration::from_secs(10) {
        bail!("the dial of node{to} took {:.1} s to fail (bound 10 s)", took.as_secs_f64());
    }
    eprintln!("    node{from} -> node{to}: the dial failed after {:.1} s", took.as_secs_f64());
    Ok(())
}

/// Loads the module on node `i` and makes it host i+1 of an `n`-host cluster, listening.
fn peer_setup(c: &mut Cluster, i: usize, n: usize) -> Result<()> {
    let hosts: String = (0..n).map(|j| format!("{} {}:7790\\n", j + 1, Cluster::ip(j))).collect();
    c.check(
        i,
        &format!(
            "modprobe peerflash && cd /sys/kernel/config/peerflash && echo {} > host_id && echo 5eed0000000000000000000000000001 > cluster_id && cat $PF_REPO/target/vm/cluster-secret > secret && printf '{hosts}' > hosts && echo {}:7790 > listen",
            i + 1,
            Cluster::ip(i)
        ),
    )
    .map(|_| ())
}

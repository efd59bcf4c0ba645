//! Boots test VMs with virtme-ng under TCG: our kernel, the host's root over 9p (read-only), an
//! emulated NVMe cache device and a virtio-blk "SAN" disk, each backed by an image file, a
//! writable run directory for results, and optionally a NIC on a tap device.
//!
//! Inside, `tests/vm/guest-init.sh` mounts configfs, puts our module tree on /lib/modules and the
//! helper on PATH, names the devices (`PF_CACHE_DEV`, `PF_SAN_DEV`), configures the NIC, runs
//! the command, and leaves its exit status in `<run dir>/rc` and the kernel log in
//! `<run dir>/dmesg.txt`.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::build::Built;
use crate::env::{self, shell_quote};
use crate::setup::Kernel;

/// A NIC on a tap device of the cluster's bridge.
#[derive(Clone)]
pub struct Nic {
    /// Tap device name (in the cluster's network namespace).
    pub tap: String,
    /// MAC address.
    pub mac: String,
    /// Guest IPv4 address (a /24).
    pub ip: String,
}

/// One VM's devices and resources.
#[derive(Clone)]
pub struct VmConfig {
    /// Host name of the guest.
    pub name: String,
    /// Image of the NVMe cache device (created sparse if missing).
    pub cache_image: PathBuf,
    /// Image of the SAN disk (created sparse if missing).
    pub san_image: PathBuf,
    /// Size for a new cache image.
    pub cache_size: u64,
    /// Size for a new SAN image.
    pub san_size: u64,
    /// Guest memory in MiB.
    pub mem_mb: u32,
    /// Guest CPUs.
    pub cpus: u32,
    /// Writable directory shared with the guest.
    pub run_dir: PathBuf,
    /// The SAN image is shared with other VMs (share-rw, no image locking).
    pub shared_san: bool,
    /// Network interface, for cluster nodes.
    pub nic: Option<Nic>,
    /// Network namespace to run QEMU in.
    pub netns: Option<String>,
    /// Extra environment for the guest command.
    pub env: Vec<(String, String)>,
    /// Extra QEMU options (a TCG plugin and its log, for `bench --count-insns`).
    pub qemu_extra: Option<String>,
    /// Extra options of the SAN's `-drive` (QEMU write throttling, for `bench --sustained`).
    pub san_drive_opts: Option<String>,
}

impl VmConfig {
    /// A single VM with its images and results below `dir`.
    pub fn new(name: &str, dir: &Path) -> Self {
        VmConfig {
            name: name.to_string(),
            cache_image: dir.join("cache.img"),
            san_image: dir.join("san.img"),
            cache_size: 512 << 20,
            san_size: 2 << 30,
            mem_mb: 2048,
            cpus: 2,
            run_dir: dir.join("run"),
            shared_san: false,
            nic: None,
            netns: None,
            env: Vec::new(),
            qemu_extra: None,
            san_drive_opts: None,
        }
    }
}

fn ensure_image(path: &Path, size: u64) -> Result<()> {
    if path.exists() {
        return Ok(());
    }
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let f = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot create image {}", path.display()))?;
    f.set_len(size)
        .with_context(|| format!("cannot size image {}", path.display()))?;
    Ok(())
}

/// Process groups of the VMs this process started, killed on Ctrl-C.
static LIVE: std::sync::Mutex<Vec<libc::pid_t>> = std::sync::Mutex::new(Vec::new());

/// Kills every VM this process started when it is interrupted (VMs run in their own process
/// groups, so the terminal's SIGINT does not reach them).
pub fn kill_vms_on_interrupt() {
    let _ = ctrlc::set_handler(|| {
        if let Ok(live) = LIVE.lock() {
            for pgid in live.iter() {
                // SAFETY: sends SIGKILL to a process group this process created.
                unsafe { libc::kill(-*pgid, libc::SIGKILL) };
            }
        }
        eprintln!("xtask: interrupted; VMs killed");
        std::process::exit(130);
    });
}

/// A running VM. Dropping it kills the VM.
pub struct Vm {
    child: Child,
    /// Copies the console pipe into the console log until the VM exits.
    copier: Option<std::thread::JoinHandle<()>>,
    /// The VM's run directory.
    pub run_dir: PathBuf,
}

impl Vm {
    /// Boots a VM that runs `command` (a shell word list) after `guest-init.sh`; its console goes
    /// to `console` (a file) or to this process's stdout when `None`.
    pub fn spawn(
        k: &Kernel,
        b: &Built,
        cfg: &VmConfig,
        command: &[String],
        console: Option<&Path>,
    ) -> Result<Vm> {
        ensure_image(&cfg.cache_image, cfg.cache_size)?;
        ensure_image(&cfg.san_image, cfg.san_size)?;
        std::fs::create_dir_all(&cfg.run_dir)?;
        for f in ["rc", "dmesg.txt", "lockdep"] {
            let _ = std::fs::remove_file(cfg.run_dir.join(f));
        }
        let repo = env::repo_root();
        let mut guest_env = vec![
            ("PF_RUN_DIR".to_string(), cfg.run_dir.display().to_string()),
            ("PF_BIN".to_string(), b.bin_dir.display().to_string()),
            ("PF_REPO".to_string(), repo.display().to_string()),
            ("PF_NODE".to_string(), cfg.name.clone()),
        ];
        if let Some(n) = &cfg.nic {
            guest_env.push(("PF_IP".to_string(), n.ip.clone()));
            guest_env.push(("PF_MAC".to_string(), n.mac.clone()));
        }
        guest_env.extend(cfg.env.iter().cloned());
        let mut exec = String::from("env");
        for (key, v) in &guest_env {
            exec.push(' ');
            exec.push_str(&shell_quote(&format!("{key}={v}")));
        }
        exec.push_str(" sh ");
        exec.push_str(&shell_quote(
            &repo.join("tests/vm/guest-init.sh").display().to_string(),
        ));
        for a in command {
            exec.push(' ');
            exec.push_str(&shell_quote(a));
        }

        let share = if cfg.shared_san { ",share-rw=on" } else { "" };
        let mut lock = if cfg.shared_san {
            ",file.locking=off".to_string()
        } else {
            String::new()
        };
        if let Some(o) = &cfg.san_drive_opts {
            lock.push(',');
            lock.push_str(o);
        }
        let mut qemu = format!(
            "-drive file={},if=none,id=pfcache,format=raw,cache=writeback \
             -device nvme,serial=pfcache0,drive=pfcache \
             -drive file={},if=none,id=pfsan,format=raw,cache=writeback,discard=unmap{lock} \
             -device virtio-blk-pci,drive=pfsan,serial=pfsan0{share}",
            cfg.cache_image.display(),
            cfg.san_image.display(),
        );
        if let Some(extra) = &cfg.qemu_extra {
            qemu.push(' ');
            qemu.push_str(extra);
        }
        if let Some(n) = &cfg.nic {
            qemu.push_str(&format!(
                " -netdev tap,id=pfnet,ifname={},script=no,downscript=no -device virtio-net-pci,netdev=pfnet,mac={}",
                n.tap, n.mac
            ));
        }
        let mut args: Vec<String> = Vec::new();
        if let Some(ns) = &cfg.netns {
            args.extend(["ip", "netns", "exec", ns].map(String::from));
        }
        args.push(k.vng.display().to_string());
        args.extend([
            "--run".to_string(),
            k.bzimage().display().to_string(),
            "--disable-kvm".into(),
            "--disable-microvm".into(),
            "--name".into(),
            cfg.name.clone(),
            "--cpus".into(),
            cfg.cpus.to_string(),
            "--memory".into(),
            format!("{}M", cfg.mem_mb),
            format!(
                "--rodir=/lib/modules={}",
                b.modroot.join("lib/modules").display()
            ),
            format!("--rwdir={}", cfg.run_dir.display()),
            // No legacy BSD ptys: 512 of the 751 devices udev's coldplug went through at each
            // boot (about 10 s of it under TCG); nothing here uses them.
            "--append=pty.legacy_count=0".into(),
            // `=` form: argparse would take a value starting with '-' for an option.
            format!("--qemu-opts={qemu}"),
            "--exec".into(),
            exec,
        ]);
        // vng runs `virtme-run` from its own venv.
        let venv_bin = k.vng.parent().map(Path::to_path_buf).unwrap_or_default();
        let path = format!(
            "{}:{}",
            venv_bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new(&args[0]);
        cmd.args(&args[1..])
            .env("PATH", path)
            .stdin(Stdio::null())
            .process_group(0);
        // The console goes through a pipe: QEMU and vng reopen their stdout by path, which on a
        // regular file starts a new offset (and truncates) and garbles the log.
        let mut copier = None;
        if let Some(path) = console {
            let mut f = std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            let (mut reader, writer) = std::io::pipe().context("cannot create a pipe")?;
            cmd.stdout(writer.try_clone()?).stderr(writer);
            copier = Some(move || {
                let _ = std::io::copy(&mut reader, &mut f);
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start VM {}", cfg.name))?;
        // `cmd` holds the pipe's write end: drop it so the copier sees end-of-file when the VM exits.
        drop(cmd);
        let copier = copier.map(std::thread::spawn);
        if let Ok(mut live) = LIVE.lock() {
            live.push(child.id() as libc::pid_t);
        }
        Ok(Vm {
            child,
            copier,
            run_dir: cfg.run_dir.clone(),
        })
    }

    /// Waits for the VM to power off, at most `timeout`; returns the guest command's exit status,
    /// or `None` when the VM died or timed out without leaving one.
    pub fn wait(&mut self, timeout: Duration) -> Result<Option<i32>> {
        let start = Instant::now();
        loop {
            if self.child.try_wait()?.is_some() {
                break;
            }
            if start.elapsed() > timeout {
                eprintln!("    VM timed out after {} s; killing it", timeout.as_secs());
                self.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if let Some(c) = self.copier.take() {
            let _ = c.join();
        }
        Ok(std::fs::read_to_string(self.run_dir.join("rc"))
            .ok()
            .and_then(|s| s.trim().parse().ok()))
    }

    /// Kills the VM at once (QEMU and its launcher), like pulling the plug.
    pub fn kill(&mut self) {
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: sends SIGKILL to the process group this VM was started in (its own).
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
        if let Ok(mut live) = LIVE.lock() {
            live.retain(|p| *p != pgid);
        }
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the VM's process group: a host that is alive but
    /// mute, its clocks stopped, as a stalled hypervisor looks to its peers.
    pub fn signal(&mut self, sig: libc::c_int) {
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: sends `sig` to the process group this VM was started in (its own).
        unsafe { libc::kill(-pgid, sig) };
    }

    /// Whether the VM is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if self.running() {
            self.kill();
        }
    }
}

/// `cargo xtask vm`: boots one VM over the given images, runs `command`, shows its output and
/// returns its exit status.
pub fn run_interactive(
    k: &Kernel,
    b: &Built,
    cache_image: Option<PathBuf>,
    san_image: Option<PathBuf>,
    mem: u32,
    timeout: u64,
    command: &[String],
) -> Result<u8> {
    let dir = env::repo_root().join("target/vm/interactive");
    let mut cfg = VmConfig::new("pf-vm", &dir);
    if let Some(c) = cache_image {
        cfg.cache_image = c;
    }
    if let Some(s) = san_image {
        cfg.san_image = s;
    }
    cfg.mem_mb = mem;
    let mut vm = Vm::spawn(k, b, &cfg, command, None)?;
    match vm.wait(Duration::from_secs(timeout))? {
        Some(code) => Ok(u8::try_from(code).unwrap_or(1)),
        None => anyhow::bail!(
            "the VM ended without reporting an exit status (crashed or timed out); kernel log: {}",
            cfg.run_dir.join("dmesg.txt").display()
        ),
    }
}

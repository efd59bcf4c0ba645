//! `cargo xtask setup`: installs what the machine lacks and builds the test kernel (the bench
//! kernel, the same without lock debugging, is built the same way when `cargo xtask bench` or
//! `cargo xtask vm --bench-kernel` first needs it).
//!
//! Everything lands in the cache (`env::cache_root()`), outside the checkout:
//! - `apt/`: a private apt configuration listing Debian trixie-backports (the system's apt
//!   sources are never edited), and the downloaded `.deb` files;
//! - `src/linux-<version>/` and `src/rust-src-<version>/`: the extracted kernel and Rust library
//!   sources;
//! - `tools/bin/bindgen`, `venv/bin/vng`;
//! - `kernel/<key>/`: a kernel build (`O=` directory), keyed by kernel version, config fragments,
//!   rustc and bindgen versions; `kernel/<key>/modroot` holds its installed modules.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::env::{self, phase};

/// Debian packages the build and the VMs need (all from the machine's own bookworm sources).
const PACKAGES: &[&str] = &[
    "flex",
    "bison",
    "bc",
    "libelf-dev",
    "libssl-dev",
    "cpio",
    "libclang-19-dev",
    "clang-19",
    "lld-19",
    "llvm-19",
    "qemu-system-x86",
    "busybox-static",
    "fio",
    "kmod",
    "pahole",
    "iproute2",
    "nftables",
    "iputils-ping",
    "bcache-tools",
    "dmsetup",
    "python3-venv",
    "rsync",
    "procps",
    "psmisc",
    // `cargo xtask bench --profile` runs perf in the guest (the guest sees the host's files).
    "linux-perf",
    // `cargo xtask bench`: the pure core's instructions per operation (callgrind), and the QEMU
    // plugin of `--count-insns` (built with cc).
    "valgrind",
    "gcc",
    // Per-volume leases: the sanlock daemon and libsanlock_client (linked by the helper).
    "sanlock",
    "libsanlock-dev",
];

/// Where Debian's kernel source and rust-src come from (same mirror host as the system's sources).
const BACKPORTS: &str = "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
                         http://deb.debian.org/debian trixie-backports main";
const KERNEL_PKG: &str = "linux-source-7.3";
const LIBCLANG: &str = "/usr/lib/llvm-19/lib";
/// Bump when the way the kernel is configured or built changes, to invalidate cached builds.
const RECIPE: &str = "peerflash-kernel-recipe-1";

/// Which kernel: the test kernel runs lockdep and the other debug checks the suite relies on; the
/// bench kernel is the same configuration without them (a production kernel has none, and
/// lockdep's cost per lock operation would weigh on whichever stack takes the most locks).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Flavor {
    Test,
    Bench,
}

impl Flavor {
    /// The bench kernel if `bench`, else the test kernel.
    pub fn bench_if(bench: bool) -> Self {
        if bench {
            Flavor::Bench
        } else {
            Flavor::Test
        }
    }

    /// "test" or "bench", as reports name the kernel.
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Test => "test",
            Flavor::Bench => "bench",
        }
    }

    /// Directory suffix for what is built against this kernel (`target/kmod{suffix}`, ...).
    pub fn suffix(self) -> &'static str {
        match self {
            Flavor::Test => "",
            Flavor::Bench => "-bench",
        }
    }
}

/// A configured and built kernel, plus the tools to use it.
pub struct Kernel {
    /// Test kernel (lockdep) or bench kernel.
    pub flavor: Flavor,
    /// Kernel source tree.
    pub src: PathBuf,
    /// `O=` build directory.
    pub build: PathBuf,
    /// `make kernelrelease`.
    pub release: String,
    /// Installed in-tree modules (`lib/modules/<release>` below it).
    pub modroot: PathBuf,
    /// The virtme-ng launcher.
    pub vng: PathBuf,
    /// Environment for `make` (PATH with bindgen, LIBCLANG_PATH, RUST_LIB_SRC).
    pub make_env: Vec<(String, String)>,
}

impl Kernel {
    /// `make -C src O=build ARGS...` with the toolchain environment.
    pub fn make(&self, args: &[String]) -> duct::Expression {
        let mut full = vec![
            "-C".to_string(),
            self.src.display().to_string(),
            format!("O={}", self.build.display()),
        ];
        full.extend(args.iter().cloned());
        let mut e = duct::cmd("make", full);
        for (k, v) in &self.make_env {
            e = e.env(k, v);
        }
        e
    }

    /// The bootable image.
    pub fn bzimage(&self) -> PathBuf {
        self.build.join("arch/x86/boot/bzImage")
    }
}

/// The Debian packages only (the host tests need libsanlock-dev and the sanlock daemon).
pub fn packages() -> Result<()> {
    phase("deps: Debian packages", install_packages)
}

/// Runs every setup step for the test kernel; each is skipped when already done.
pub fn setup() -> Result<Kernel> {
    setup_flavor(Flavor::Test)
}

/// Runs every setup step for the given kernel; each is skipped when already done.
pub fn setup_flavor(flavor: Flavor) -> Result<Kernel> {
    let cache = env::cache_root();
    env::check_free_space(&cache, 8 << 30, "the kernel source and build")?;
    phase("deps: Debian packages", install_packages)?;
    let bindgen = phase("deps: bindgen-cli", || install_bindgen(&cache))?;
    let vng = phase("deps: virtme-ng", || install_vng(&cache))?;
    let (linux, rustlib) = phase("kernel fetch", || fetch_sources(&cache))?;
    let tools_bin = bindgen.parent().map(Path::to_path_buf).unwrap_or_default();
    let path = format!(
        "{}:{}",
        tools_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let make_env = vec![
        ("PATH".to_string(), path),
        ("LIBCLANG_PATH".to_string(), LIBCLANG.to_string()),
        ("RUST_LIB_SRC".to_string(), rustlib.display().to_string()),
    ];
    let key = build_key(&linux, &bindgen, flavor)?;
    let mut k = Kernel {
        flavor,
        src: linux,
        build: cache.join("kernel").join(&key),
        release: String::new(),
        modroot: cache.join("kernel").join(&key).join("modroot"),
        vng,
        make_env,
    };
    phase("kernel build", || build_kernel(&mut k, &cache))?;
    Ok(k)
}

fn dpkg_installed(pkg: &str) -> bool {
    duct::cmd!("dpkg-query", "-W", "-f=${Status}", pkg)
        .stderr_null()
        .read()
        .map(|s| s.contains("install ok installed"))
        .unwrap_or(false)
}

fn install_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("    installing: {}", missing.join(" "));
    duct::cmd!("apt-get", "update", "-q")
        .stdout_null()
        .run()
        .context("apt-get update failed: no network to the Debian archive?")?;
    let mut args = vec!["install", "-y", "-q"];
    args.extend(&missing);
    duct::cmd("apt-get", args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout_null()
        .run()
        .with_context(|| format!("apt-get install {} failed", missing.join(" ")))?;
    Ok(())
}

fn install_bindgen(cache: &Path) -> Result<PathBuf> {
    let root = cache.join("tools");
    let bin = root.join("bin/bindgen");
    let ok = bin.exists()
        && duct::cmd!(&bin, "--version")
            .read()
            .map(|v| v.contains("0.73"))
            .unwrap_or(false);
    if !ok {
        env::run_logged(
            duct::cmd!(
                "cargo",
                "install",
                "--locked",
                "bindgen-cli",
                "--version",
                "~0.73",
                "--root",
                &root
            ),
            "cargo install bindgen-cli",
            &cache.join("bindgen-install.log"),
            None,
        )?;
    }
    Ok(bin)
}

fn install_vng(cache: &Path) -> Result<PathBuf> {
    let venv = cache.join("venv");
    let vng = venv.join("bin/vng");
    if !vng.exists() {
        duct::cmd!("python3", "-m", "venv", &venv)
            .run()
            .context("python3 -m venv failed")?;
        env::run_logged(
            duct::cmd!(venv.join("bin/pip"), "install", "-q", "virtme-ng"),
            "pip install virtme-ng",
            &cache.join("vng-install.log"),
            None,
        )?;
    }
    Ok(vng)
}

/// The private apt configuration: flags for apt-get/apt-cache.
fn apt_opts(apt: &Path) -> Vec<String> {
    vec![
        format!(
            "-o=Dir::Etc::sourcelist={}",
            apt.join("sources.list").display()
        ),
        "-o=Dir::Etc::sourceparts=-".to_string(),
        format!("-o=Dir::State::Lists={}", apt.join("lists").display()),
        format!("-o=Dir::Cache={}", apt.join("cache").display()),
        "-o=Debug::NoLocking=1".to_string(),
        "-o=APT::Sandbox::User=root".to_string(),
        "-q".to_string(),
    ]
}

fn rustc_version() -> Result<String> {
    let v = duct::cmd!("rustc", "--version")
        .read()
        .context("cannot run rustc --version")?;
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    v.split_whitespace()
        .nth(1)
        .map(str::to_string)
        .with_context(|| format!("odd rustc version {v:?}"))
}

/// Fetches and extracts linux-source-7.3 (newest in the archive) and the rust-src matching the
/// installed rustc. Falls back to what was extracted before when the archive cannot be reached.
fn fetch_sources(cache: &Path) -> Result<(PathBuf, PathBuf)> {
    let apt = cache.join("apt");
    let src = cache.join("src");
    for d in ["lists/partial", "cache/archives/partial", "debs"] {
        std::fs::create_dir_all(apt.join(d))
            .with_context(|| format!("cannot create {}", apt.join(d).display()))?;
    }
    std::fs::create_dir_all(&src)?;
    std::fs::write(apt.join("sources.list"), format!("{BACKPORTS}\n"))?;
    let opts = apt_opts(&apt);
    let rustc = rustc_version()?;
    let current = src.join("current.txt");

    let update = duct::cmd("apt-get", opts.iter().chain(["update".to_string()].iter()))
        .stdout_null()
        .stderr_capture()
        .unchecked()
        .run()
        .context("cannot run apt-get")?;
    if !update.status.success() {
        let err = String::from_utf8_lossy(&update.stderr).to_string();
        if let Ok(prev) = std::fs::read_to_string(&current) {
            let mut it = prev.lines();
            if let (Some(l), Some(r)) = (it.next(), it.next()) {
                eprintln!("    warning: cannot reach the Debian archive ({}); using the sources fetched before", err.trim());
                return Ok((PathBuf::from(l), PathBuf::from(r)));
            }
        }
        bail!(
            "cannot reach the Debian archive to fetch {KERNEL_PKG} and rust-src (no network?): {}",
            err.trim()
        );
    }
    let madison = |pkg: &str| -> Result<Vec<String>> {
        let out = duct::cmd(
            "apt-cache",
            opts.iter()
                .cloned()
                .chain(["madison".to_string(), pkg.to_string()]),
        )
        .read()
        .with_context(|| format!("apt-cache madison {pkg} failed"))?;
        Ok(out
            .lines()
            .filter_map(|l| l.split('|').nth(1))
            .map(|v| v.trim().to_string())
            .collect())
    };
    let newest = |versions: Vec<String>| -> Option<String> {
        versions.into_iter().reduce(|a, b| {
            let newer = duct::cmd!("dpkg", "--compare-versions", &b, "gt", &a)
                .unchecked()
                .run()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if newer {
                b
            } else {
                a
            }
        })
    };
    let kver =
        newest(madison(KERNEL_PKG)?).with_context(|| format!("the archive has no {KERNEL_PKG}"))?;
    let rver = newest(madison("rust-src")?.into_iter().filter(|v| v.starts_with(&format!("{rustc}+"))).collect())
        .with_context(|| format!("the archive has no rust-src for rustc {rustc}: install a rustc that Debian's rust-src matches"))?;

    let linux_dir = src.join(format!("linux-{kver}"));
    let rust_dir = src.join(format!("rust-src-{rver}"));
    let debs = apt.join("debs");
    let download = |pkg: &str, ver: &str| -> Result<PathBuf> {
        let deb = std::fs::read_dir(&debs)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                let n = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                n.starts_with(&format!("{pkg}_{}", ver.replace(':', "%3a"))) && n.ends_with(".deb")
            });
        if let Some(d) = deb {
            return Ok(d);
        }
        eprintln!("    downloading {pkg} {ver}");
        duct::cmd(
            "apt-get",
            opts.iter()
                .cloned()
                .chain(["download".to_string(), format!("{pkg}={ver}")]),
        )
        .dir(&debs)
        .stdout_null()
        .run()
        .with_context(|| format!("apt-get download {pkg}={ver} failed"))?;
        std::fs::read_dir(&debs)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy().starts_with(&format!("{pkg}_")))
                    .unwrap_or(false)
                    && p.to_string_lossy().contains(&ver.replace(':', "%3a"))
            })
            .with_context(|| {
                format!(
                    "downloaded {pkg} but cannot find its .deb in {}",
                    debs.display()
                )
            })
    };

    if !rust_dir.join("library").is_dir() {
        let deb = download("rust-src", &rver)?;
        let tmp = src.join("rust-src.tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        duct::cmd!("dpkg-deb", "-x", &deb, &tmp)
            .run()
            .context("dpkg-deb -x rust-src failed")?;
        let lib = tmp.join(format!("usr/src/rustc-{rustc}/library"));
        if !lib.is_dir() {
            bail!("rust-src {rver} has no usr/src/rustc-{rustc}/library");
        }
        std::fs::create_dir_all(&rust_dir)?;
        std::fs::rename(&lib, rust_dir.join("library"))?;
        let _ = std::fs::remove_dir_all(&tmp);
    }
    if !linux_dir.join("Makefile").is_file() {
        let deb = download(KERNEL_PKG, &kver)?;
        let tmp = src.join("linux.tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        env::check_free_space(&src, 4 << 30, "extracting the kernel source")?;
        duct::cmd!("dpkg-deb", "-x", &deb, &tmp)
            .run()
            .context("dpkg-deb -x linux-source failed")?;
        let tarball = tmp.join("usr/src/linux-source-7.3.tar.xz");
        env::run_logged(
            duct::cmd!("tar", "-xJf", &tarball, "-C", &tmp),
            "extract kernel source",
            &src.join("extract.log"),
            None,
        )?;
        let _ = std::fs::remove_dir_all(&linux_dir);
        std::fs::rename(tmp.join("linux-source-7.3"), &linux_dir)
            .context("the linux-source tarball has no linux-source-7.3 directory")?;
        let _ = std::fs::remove_dir_all(&tmp);
    }
    let lib = rust_dir.join("library");
    std::fs::write(
        &current,
        format!("{}\n{}\n", linux_dir.display(), lib.display()),
    )?;
    Ok((linux_dir, lib))
}

/// The config fragments merged over tinyconfig and `kvm_guest.config`, in order.
fn fragment_paths(flavor: Flavor) -> Vec<PathBuf> {
    let dir = env::repo_root().join("xtask/kernel");
    let mut v = vec![dir.join("peerflash.fragment")];
    if flavor == Flavor::Bench {
        v.push(dir.join("bench.fragment"));
    }
    v
}

/// The cache key of a kernel build: everything that changes its output.
fn build_key(linux: &Path, bindgen: &Path, flavor: Flavor) -> Result<String> {
    let mut h = Sha256::new();
    h.update(RECIPE);
    h.update(
        linux
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    for f in fragment_paths(flavor) {
        h.update(
            std::fs::read(&f).with_context(|| {
                format!("cannot read the kernel config fragment {}", f.display())
            })?,
        );
    }
    h.update(duct::cmd!("rustc", "--version").read()?);
    h.update(duct::cmd!(bindgen, "--version").read()?);
    let digest = h.finalize();
    let ver = linux
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(format!(
        "{ver}-{}",
        digest
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ))
}

fn build_kernel(k: &mut Kernel, cache: &Path) -> Result<()> {
    let done = k.build.join(".peerflash-built");
    if !done.exists() {
        std::fs::create_dir_all(&k.build)?;
        env::check_free_space(&k.build, 4 << 30, "the kernel build")?;
        let s = |x: &str| x.to_string();
        let avail = k
            .make(&[s("rustavailable")])
            .stderr_to_stdout()
            .unchecked()
            .read()?;
        if !avail.contains("Rust is available") {
            bail!("the kernel says Rust is not available with this toolchain:\n{avail}");
        }
        k.make(&[s("tinyconfig")])
            .stdout_null()
            .run()
            .context("make tinyconfig failed")?;
        let merge = k.src.join("scripts/kconfig/merge_config.sh");
        let config = k.build.join(".config");
        let mut args = vec![
            "-O".into(),
            k.build.clone().into_os_string(),
            "-m".into(),
            config.clone().into_os_string(),
            k.src
                .join("kernel/configs/kvm_guest.config")
                .into_os_string(),
        ];
        args.extend(
            fragment_paths(k.flavor)
                .into_iter()
                .map(PathBuf::into_os_string),
        );
        duct::cmd(merge, args)
            .dir(&k.src)
            .stdout_null()
            .run()
            .context("merge_config.sh failed")?;
        k.make(&[s("olddefconfig")])
            .stdout_null()
            .run()
            .context("make olddefconfig failed")?;
        check_config(&config, k.flavor)?;
        let jobs = std::thread::available_parallelism()
            .map(|n| n.get() + 1)
            .unwrap_or(3);
        let lines_file = cache.join("kernel/build-lines.txt");
        let expected = std::fs::read_to_string(&lines_file)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let lines = env::run_logged(
            k.make(&[format!("-j{jobs}")]),
            "kernel build",
            &k.build.join("peerflash-build.log"),
            expected,
        )?;
        let _ = std::fs::write(&lines_file, lines.to_string());
        let _ = std::fs::remove_dir_all(&k.modroot);
        k.make(&[
            s("modules_install"),
            format!("INSTALL_MOD_PATH={}", k.modroot.display()),
        ])
        .stdout_null()
        .run()
        .context("make modules_install failed")?;
        std::fs::write(&done, "")?;
    }
    k.release = k
        .make(&["-s".into(), "kernelrelease".into()])
        .read()
        .context("make kernelrelease failed")?
        .trim()
        .to_string();
    Ok(())
}

/// Options the tests rely on: refuse a kernel whose config silently dropped one.
fn check_config(config: &Path, flavor: Flavor) -> Result<()> {
    let text = std::fs::read_to_string(config)?;
    let debug = match flavor {
        Flavor::Test => ["CONFIG_PROVE_LOCKING=y", "CONFIG_DEBUG_ATOMIC_SLEEP=y"],
        Flavor::Bench => [
            "# CONFIG_PROVE_LOCKING is not set",
            "# CONFIG_DEBUG_ATOMIC_SLEEP is not set",
        ],
    };
    let need = [
        "CONFIG_RUST=y",
        debug[0],
        debug[1],
        "CONFIG_BLK_DEV_NVME=y",
        "CONFIG_VIRTIO_BLK=y",
        "CONFIG_VIRTIO_NET=y",
        "CONFIG_VIRTIO_CONSOLE=y",
        "CONFIG_NET_9P_VIRTIO=y",
        "CONFIG_CONFIGFS_FS=y",
        "CONFIG_DM_DELAY=m",
        "CONFIG_DM_WRITECACHE=m",
        "CONFIG_BCACHE=m",
        "CONFIG_BLK_DEV_NULL_BLK=m",
        "CONFIG_ACPI=y",
        "CONFIG_FAIL_MAKE_REQUEST=y",
        "CONFIG_SYSVIPC=y",
        "CONFIG_DETECT_HUNG_TASK=y",
        "CONFIG_NET_SCH_NETEM=y",
        "CONFIG_NET_SCH_PRIO=y",
        "CONFIG_NET_CLS_U32=y",
        "CONFIG_NET_SCH_INGRESS=y",
        "CONFIG_NET_ACT_GACT=y",
        "CONFIG_NF_TABLES=y",
        "CONFIG_NF_TABLES_IPV4=y",
        "CONFIG_HUGETLBFS=y",
        "CONFIG_CRYPTO_LIB_POLY1305=y",
        "CONFIG_CRYPTO_LIB_CHACHA=y",
    ];
    let missing: Vec<&str> = need
        .iter()
        .copied()
        .filter(|o| !text.lines().any(|l| l == *o))
        .collect();
    if !missing.is_empty() {
        bail!(
            "the kernel configuration lacks {} (see xtask/kernel/*.fragment)",
            missing.join(", ")
        );
    }
    Ok(())
}

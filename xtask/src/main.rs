//! `cargo xtask`: sets up the toolchain and kernel, builds the module and helper, boots test VMs
//! and clusters, runs the tests and the demo. See Documentation/build-and-test.md.

mod bench;
mod bench_cluster;
mod bench_sustained;
mod build;
mod cluster;
mod core_cost;
mod crash;
mod demo;
mod env;
mod failover;
mod fuzz;
mod imports;
mod insns;
mod scenario;
mod setup;
mod test;
mod verdict;
mod vm;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, boot and test peerflash")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what the machine lacks, fetch and build the test kernel (cached).
    Setup,
    /// Build the kernel module and the userspace crates.
    Build,
    /// Boot one VM with an NVMe cache device and a virtio-blk SAN disk and run COMMAND in it.
    Vm {
        /// Image file of the NVMe cache device (created if missing).
        #[arg(long)]
        cache_image: Option<PathBuf>,
        /// Image file of the SAN disk (created if missing).
        #[arg(long)]
        san_image: Option<PathBuf>,
        /// Guest memory in MiB.
        #[arg(long, default_value_t = 2048)]
        mem: u32,
        /// Seconds before the VM is killed.
        #[arg(long, default_value_t = 1800)]
        timeout: u64,
        /// Boot the bench kernel (no lock debugging) instead of the test kernel.
        #[arg(long)]
        bench_kernel: bool,
        /// Command and arguments to run in the guest.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Boot a cluster of N VMs on a private network in a new network namespace and run a
    /// scenario: the smoke scenario (reachability, shared SAN, node kill and restart, link cut
    /// and restore), or a host shell script (see xtask/src/scenario.rs for what it can do).
    Cluster {
        /// Number of nodes.
        #[arg(long, default_value_t = 2)]
        nodes: usize,
        /// A scenario script (sh, run on the host with tests/vm/cluster-lib.sh sourced).
        #[arg(long)]
        script: Option<std::path::PathBuf>,
    },
    /// Run the host unit tests, then the VM tests; prints `N passed, N failed`.
    Test {
        /// Only run VM tests whose name contains this.
        #[arg(long)]
        filter: Option<String>,
        /// Skip the VM tests.
        #[arg(long)]
        host_only: bool,
        /// Skip the host tests and the fuzzing (to iterate on VM cases; CI runs everything).
        #[arg(long, conflicts_with = "host_only")]
        vm_only: bool,
    },
    /// The main job: show peerflash at work in a VM.
    Demo,
    /// The wb crash test alone: ROUNDS kill points of a VM writing through a wb volume, each
    /// followed by recovery and verification (PF_CRASH_SEED repeats a run).
    Crash {
        /// Number of kill points.
        #[arg(long, default_value_t = 5)]
        rounds: u32,
    },
    /// Benchmark in one VM run: 4k random writes at QD1 and QD16 on the raw delayed SAN, raw
    /// NVMe, peerflash wt and wb, dm-writecache and bcache; a table, target/bench/bench.json and
    /// target/bench/bench.svg.
    Bench {
        /// Seconds per fio run.
        #[arg(long, default_value_t = 8)]
        secs: u64,
        /// Run on the test kernel (lockdep and the other debug checks) instead of the bench
        /// kernel (the same configuration without them).
        #[arg(long)]
        debug_kernel: bool,
        /// Profile each run with perf in the guest and report the CPU time in CRC32C code.
        #[arg(long)]
        profile: bool,
        /// Count guest instructions (a QEMU TCG plugin): instructions and crc32 instructions per
        /// write for every configuration, in a run of its own (the plugin slows the emulator);
        /// with --cluster, on the primary and on each member (--secs 10 or more).
        #[arg(long, conflicts_with = "profile")]
        count_insns: bool,
        /// The cluster benchmark instead: three VMs, wt, wb and wbp with one and two replica
        /// hosts beside raw NVMe, the raw SAN and the 4 KiB round trip; target/bench/cluster.json
        /// and cluster.svg.
        #[arg(long, conflicts_with = "profile")]
        cluster: bool,
        /// Sustained writes instead: 3x a cache's share over a SAN throttled by QEMU and delayed
        /// by dm-delay, for peerflash wb (flow control), dm-writecache and bcache beside the raw
        /// SAN, with per-second IOPS, latency and fill; target/bench/sustained.json and .svg.
        #[arg(long, conflicts_with_all = ["profile", "cluster", "count_insns"])]
        sustained: bool,
        /// With --cluster or --sustained: only make the report of the last run again (no VMs).
        #[arg(long)]
        report_only: bool,
    },
    /// Fuzz the on-flash parsers or the attach rules (libFuzzer through cargo-fuzz).
    Fuzz {
        /// Fuzz target: `format` (the parsers), `attach` (cache images rebuilt) or `wire` (the peer
        /// protocol: frames, sessions, handshake checks).
        #[arg(long, default_value = "format")]
        target: String,
        /// Seconds to run.
        #[arg(long, default_value_t = 60)]
        secs: u64,
    },
    /// Check that imports run one way: print the import circles between files (none expected).
    Imports {
        /// Print every file's imports too.
        #[arg(long)]
        verbose: bool,
        /// Another checkout to check (default: this one).
        #[arg(long)]
        repo: Option<PathBuf>,
    },
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Setup => {
            setup::setup()?;
        }
        Command::Build => {
            let k = setup::setup()?;
            build::build(&k)?;
        }
        Command::Vm {
            cache_image,
            san_image,
            mem,
            timeout,
            bench_kernel,
            command,
        } => {
            let k = setup::setup_flavor(setup::Flavor::bench_if(bench_kernel))?;
            let b = build::build(&k)?;
            let code = vm::run_interactive(&k, &b, cache_image, san_image, mem, timeout, &command)?;
            return Ok(ExitCode::from(code));
        }
        Command::Cluster { nodes, script } => {
            let k = setup::setup()?;
            let b = build::build(&k)?;
            match script {
                Some(s) => scenario::run(&k, &b, nodes, &s)?,
                None => cluster::smoke(&k, &b, nodes)?,
            }
        }
        Command::Test {
            filter,
            host_only,
            vm_only,
        } => {
            return test::run(filter.as_deref(), host_only, vm_only);
        }
        Command::Fuzz { target, secs } => {
            fuzz::run(&target, secs)?;
        }
        Command::Imports { verbose, repo } => {
            imports::run(verbose, repo)?;
        }
        Command::Crash { rounds } => {
            let k = setup::setup()?;
            let b = build::build(&k)?;
            let dir = env::repo_root().join("target/vm-tests/crash-wb");
            crash::run(&k, &b, rounds, &dir)?;
            eprintln!("crash test: {rounds} kill points, every recovery verified");
        }
        Command::Bench {
            secs,
            debug_kernel,
            profile,
            count_insns,
            cluster,
            sustained,
            report_only,
        } => {
            if report_only && !cluster && !sustained {
                anyhow::bail!("--report-only goes with --cluster or --sustained");
            }
            let k = setup::setup_flavor(setup::Flavor::bench_if(!debug_kernel))?;
            let b = build::build(&k)?;
            if sustained {
                bench_sustained::run(&k, &b, report_only)?;
            } else if cluster {
                bench_cluster::run(&k, &b, secs, report_only, count_insns)?;
            } else {
                bench::run(&k, &b, secs, profile, count_insns)?;
            }
        }
        Command::Demo => {
            let k = setup::setup()?;
            let b = build::build(&k)?;
            demo::run(&k, &b)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    vm::kill_vms_on_interrupt();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

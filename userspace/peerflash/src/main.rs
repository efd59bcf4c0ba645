//! `peerflash`: the userspace helper. dmsetup-style verbs over the module's configfs tree.

mod agent;
mod agent_socket;
mod cache;
mod config;
mod configfs;
mod error;
mod failure;
mod locks;
mod peer;
mod peer_replay;
mod recovery;
mod replicas;
mod running;
mod sysfs;
mod up_down;
mod volume;

use error::exit;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use peerflash_core::policy::Policy;

#[derive(Parser)]
#[command(name = "peerflash", version, about = "Manage peerflash cached volumes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Human,
    Json,
}

/// Parses `--policy`: the shared policy names.
fn policy_arg() -> impl clap::builder::TypedValueParser<Value = Policy> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Policy::ALL.map(Policy::name))
        .try_map(|s| Policy::parse(s.as_bytes()).ok_or("not a policy"))
}

/// Parses `--replicas`: `EPOCH GEN WANTED HOST...` by the module's own rules (host 0 stands
/// for no host of its own: the module checks its id).
fn replicas_arg(s: &str) -> Result<String, &'static str> {
    peerflash_core::replication::parse_set_config(s.as_bytes(), 0)
        .map(|_| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .map_err(|e| e.describe())
}

#[derive(Subcommand)]
enum Command {
    /// Create a volume NAME stacked over a backing block device; it appears as /dev/pf-NAME.
    Create {
        /// Volume name: letters, digits, '_', '.', '-'; at most 28 bytes.
        name: String,
        /// The backing ("SAN") block device.
        #[arg(long)]
        backing: String,
        /// A cache device formatted with `format-cache`; the volume gets a slot on it.
        #[arg(long)]
        cache: Option<String>,
        /// Write policy with the cache.
        #[arg(long, value_parser = policy_arg(), default_value = "wb", requires = "cache")]
        policy: Policy,
        /// MiB of the cache device the volume's new slot takes (default: the largest free run;
        /// give each volume a share when several use one cache device). A slot found again keeps
        /// its size.
        #[arg(long, requires = "cache")]
        cache_mib: Option<u64>,
        /// When the cache device has no room for a new slot, take back the slots of volumes not
        /// running here (their data on the cache device, dirty data included, is lost; the
        /// refusal without it lists what they hold).
        #[arg(long, requires = "cache")]
        force: bool,
        /// Replay the volume's dirty records on the cache device even when neither checkpoint
        /// copy of its slot is readable (they are replayed from the slot's serial floor): only
        /// when the SAN holds nothing newer for them. `peerflash inspect` shows what they are.
        #[arg(long, requires = "cache")]
        replay: bool,
        /// Start the volume's slot empty: the records it holds on the cache device are dropped,
        /// never replayed. Only when the SAN holds every acknowledged write (the lock record is
        /// clean, or another host replayed them); the agent does this itself. With
        /// --adopt-replica, a slot of this volume's name on the device is cleared first.
        #[arg(long, requires = "cache", conflicts_with = "replay")]
        fresh: bool,
        /// Take the replica this host's cache device holds for another host's volume, as
        /// ORIGIN:UUID (the host id and the volume uuid `peerflash inspect` shows), as this
        /// volume's slot and replay it to the backing device: when that host's own flash is gone.
        #[arg(long, requires = "cache", value_parser = adopt_arg)]
        adopt_replica: Option<(u16, String)>,
        /// wbp: the replica set, "EPOCH GEN WANTED HOST...": the set's epoch, the generation of
        /// this host's ownership, how many replica hosts the volume asks for, and the host ids
        /// holding its replicas (the agent writes it from the lock record).
        #[arg(long, requires = "cache", value_parser = replicas_arg)]
        replicas: Option<String>,
    },
    /// wbp: put a new replica set in force on a running volume (a higher epoch, members only
    /// leaving): what waited for the members that left completes; with fewer members than
    /// asked for, the volume runs write-through. The agent does this after the lock record
    /// holds the set.
    SetReplicas {
        /// Volume name.
        name: String,
        /// "EPOCH GEN WANTED HOST...".
        #[arg(value_parser = replicas_arg)]
        replicas: String,
    },
    /// Remove a volume; refused while the volume is open.
    Remove {
        /// Volume name.
        name: String,
    },
    /// Format a cache device: an empty version-1 layout (Documentation/on-flash-format.md).
    FormatCache {
        /// The cache (NVMe) block device or image file.
        device: String,
        /// Segment size in KiB (a power of two from 64 to 65536).
        #[arg(long, default_value_t = 1024)]
        segment_kib: u32,
        /// Format even if the device holds peerflash volumes (their cached data is lost).
        #[arg(long)]
        force: bool,
    },
    /// Decode what a cache device holds: volumes, records, checkpoints, dirty data.
    Inspect {
        /// The cache block device or image file.
        device: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// Change the write policy of a running volume: wt to wb at once; wb to wt at once for new
    /// writes while dirty data drains in the background (`flush` waits for it).
    SetPolicy {
        /// Volume name.
        name: String,
        /// The new policy.
        #[arg(value_parser = policy_arg())]
        policy: Policy,
    },
    /// Wait until every write made to the volume so far is on the backing device (the
    /// destager empties the cache of dirty data and checkpoints).
    Flush {
        /// Volume name.
        name: String,
        /// Give up after this many seconds (default: wait as long as it takes).
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// List volume names, one per line.
    List,
    /// This host's peer transport: host id, listen address, host table, counters.
    Peers {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// Dial host ID through the module, authenticate, and time authenticated pings.
    Probe {
        /// The host id (from the configuration) to dial.
        host_id: u64,
        /// Pings to time (1-100000).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        count: u64,
    },
    /// The cluster configuration file (TOML; Documentation/administration.md).
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// The per-host agent: holds the leases of the volumes running here, copies their
    /// checkpoints into the lock records, recovers this host's volumes after a crash, and serves
    /// `up` and `down` (Documentation/cluster-locks.md).
    Agent {
        #[arg(long)]
        config: String,
        /// This host's name in the configuration.
        #[arg(long)]
        host: String,
        /// The agent's socket (default $PEERFLASH_AGENT_SOCKET or /run/peerflash/agent.sock).
        #[arg(long)]
        socket: Option<String>,
    },
    /// Run a volume of the configuration on this host (through the agent): under its lease,
    /// once no other host holds acknowledged writes of it.
    Up {
        name: String,
        /// Seconds to wait for another host's replay (0: refuse at once).
        #[arg(long, default_value_t = 3600)]
        wait_secs: u64,
        #[arg(long)]
        socket: Option<String>,
    },
    /// Stop a volume run by the agent: destage it, record it clean, remove it, release its lease.
    Down {
        name: String,
        #[arg(long)]
        socket: Option<String>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions { shell: clap_complete::Shell },
    /// Per-volume leases and lock records on the configuration's datastore
    /// (Documentation/cluster-locks.md).
    Lock {
        #[command(subcommand)]
        command: LockCommand,
    },
    /// Show the state of one volume or of all.
    Status {
        /// Volume name; all volumes when absent.
        name: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a cluster configuration file: every problem with its line, column and field.
    Check {
        /// The file.
        file: String,
        /// Output format of the checked configuration.
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
}

#[derive(Subcommand)]
enum LockCommand {
    /// Write the lockspace and each volume's free lease and first lock record (needs the local
    /// sanlock daemon). Refused while a record says a volume runs, replays or has writes pending.
    Init {
        /// The cluster configuration file.
        #[arg(long)]
        config: String,
        /// Initialise even over records of running or dirty volumes (forgets them).
        #[arg(long)]
        force: bool,
    },
    /// Join the lockspace as a host of the configuration (needs the local sanlock daemon).
    Join {
        #[arg(long)]
        config: String,
        /// This host's name in the configuration.
        #[arg(long)]
        host: String,
    },
    /// Show volumes' lock records (read without any lease: the read-only copy).
    Status {
        #[arg(long)]
        config: String,
        /// Volume names; all volumes of the configuration when absent.
        names: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
}

fn run(cli: Cli) -> Result<()> {
    // Verbs on a cache device or a file work without the module.
    match &cli.command {
        Command::Config {
            command: ConfigCommand::Check { file, output },
        } => {
            let c = config::load(file)?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&c)?),
                Output::Human => println!(
                    "{file}: ok: {} host(s), {} volume(s), lock datastore {} ({} MiB at {} MiB)",
                    c.hosts.len(),
                    c.volumes.len(),
                    c.datastore.device,
                    c.datastore.size_mib,
                    c.datastore.offset_mib
                ),
            }
            return Ok(());
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut cmd, "peerflash", &mut script);
            // A closed pipe (`| head`) is not an error worth a message.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
            return Ok(());
        }
        Command::Agent {
            config,
            host,
            socket,
        } => {
            let c = config::load(config)?;
            return agent::run(c, host, &agent_socket::socket_path(socket.as_deref()));
        }
        Command::Up {
            name,
            wait_secs,
            socket,
        } => {
            let req = agent_socket::Request {
                op: "up".into(),
                volume: name.clone(),
                wait_secs: *wait_secs,
            };
            return agent_answer(&agent_socket::request(
                &agent_socket::socket_path(socket.as_deref()),
                &req,
            )?);
        }
        Command::Down { name, socket } => {
            let req = agent_socket::Request {
                op: "down".into(),
                volume: name.clone(),
                wait_secs: 0,
            };
            return agent_answer(&agent_socket::request(
                &agent_socket::socket_path(socket.as_deref()),
                &req,
            )?);
        }
        Command::Lock { command } => {
            match command {
                LockCommand::Init { config, force } => {
                    let c = config::load(config)?;
                    locks::init(&c, *force)?;
                    println!(
                        "initialised lockspace {} on {} with {} volume lease(s)",
                        locks::lockspace_name(&c),
                        c.datastore.device,
                        c.volumes.len()
                    );
                }
                LockCommand::Join { config, host } => {
                    let c = config::load(config)?;
                    let id = locks::join(&c, host)?;
                    println!(
                        "joined lockspace {} as host {host} (id {id})",
                        locks::lockspace_name(&c)
                    );
                }
                LockCommand::Status {
                    config,
                    names,
                    output,
                } => {
                    let all = locks::status(&config::load(config)?, names)?;
                    match output {
                        Output::Json => println!("{}", serde_json::to_string_pretty(&all)?),
                        Output::Human => all.iter().for_each(|s| print!("{}", s.human())),
                    }
                }
            }
            return Ok(());
        }
        Command::FormatCache {
            device,
            segment_kib,
            force,
        } => {
            let sb = cache::format_cache(device, *segment_kib, *force)?;
            println!(
                "formatted {device}: {} segments of {} KiB, block size {}",
                sb.segments,
                sb.segment_sectors / 2,
                sb.block_size
            );
            return Ok(());
        }
        Command::Inspect { device, output } => {
            let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let report = cache::inspect(device, tty && *output == Output::Human)?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                Output::Human => print!("{}", report.human()),
            }
            return Ok(());
        }
        _ => {}
    }
    let root = configfs::Root::locate()?;
    match cli.command {
        Command::FormatCache { .. }
        | Command::Inspect { .. }
        | Command::Config { .. }
        | Command::Lock { .. }
        | Command::Agent { .. }
        | Command::Up { .. }
        | Command::Down { .. }
        | Command::Completions { .. } => {}
        Command::Create {
            name,
            backing,
            cache,
            policy,
            cache_mib,
            force,
            replay,
            fresh,
            adopt_replica,
            replicas,
        } => {
            if policy == Policy::WriteBackPeers && replicas.is_none() {
                return Err(error::VolumeError::Invalid("--policy wbp needs --replicas".into()).into());
            }
            let c = cache.as_deref().map(|device| volume::CacheArgs {
                device,
                policy,
                mib: cache_mib,
                force,
                replay,
                fresh,
                adopt: adopt_replica,
                replicas,
            });
            let v = volume::create(&root, &name, &backing, c.as_ref())?;
            println!("created volume {} on {} as {}", name, backing, v.device);
        }
        Command::Remove { name } => {
            volume::remove(&root, &name)?;
            println!("removed volume {name}");
        }
        Command::SetReplicas { name, replicas } => {
            running::set_replicas(&root, &name, &replicas)?;
            println!("volume {name}: replica set {replicas}");
        }
        Command::SetPolicy { name, policy } => {
            running::set_policy(&root, &name, policy)?;
            println!("volume {name}: policy {}", policy.name());
        }
        Command::Flush { name, timeout } => {
            let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
            running::flush(
                &root,
                &name,
                tty,
                timeout.map(std::time::Duration::from_secs),
            )?;
            println!("volume {name}: flushed (no dirty data, checkpoint at the last write)");
        }
        Command::List => {
            for name in root.volume_names()? {
                println!("{name}");
            }
        }
        Command::Peers { output } => {
            let st = peer::status(&root)?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&st)?),
                Output::Human => peer::print(&st),
            }
        }
        Command::Probe { host_id, count } => println!("{}", peer::probe(&root, host_id, count)?),
        Command::Status { name, output } => {
            let names = match name {
                Some(n) => vec![n],
                None => root.volume_names()?,
            };
            let all = names
                .iter()
                .map(|n| volume::status(&root, n))
                .collect::<Result<Vec<_>>>()?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&all)?),
                Output::Human => {
                    for s in &all {
                        print!("{}", s.human());
                    }
                }
            }
        }
    }
    Ok(())
}

fn agent_answer(r: &agent_socket::Reply) -> Result<()> {
    if r.code == exit::OK {
        println!("{}", r.message);
        Ok(())
    } else {
        Err(failure::AgentFailure {
            code: r.code,
            message: r.message.clone(),
        }
        .into())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("peerflash: error: {e:#}");
            let code = failure::exit_code(&e);
            ExitCode::from(code)
        }
    }
}

/// `ORIGIN:UUID` of `create --adopt-replica`: a host id 1..65535 and a uuid (32 hex digits,
/// hyphens allowed).
fn adopt_arg(s: &str) -> Result<(u16, String), String> {
    let (origin, uuid) = s.split_once(':').ok_or("expected ORIGIN:UUID")?;
    let origin: u16 = origin.parse().ok().filter(|&o| o != 0).ok_or("ORIGIN is a host id, 1..65535")?;
    let uuid = uuid::Uuid::parse_str(uuid).map_err(|_| "UUID is 32 hex digits (hyphens allowed)")?;
    Ok((origin, uuid.simple().to_string()))
}

//! Host tests of the per-volume leases with real sanlock daemons: one daemon per simulated host
//! (its own `SANLOCK_RUN_DIR`, no watchdog, unprivileged), all on one datastore file, and
//! pf-lockcheck processes as the hosts' lease holders.
//!
//! - `contention`: 6 processes on 3 hosts take one volume lease 10 times each and, under it,
//!   check and bump an independent counter: it must end at exactly 300 with no violation seen.
//!   The same processes without the lease (control) must be caught.
//! - `expiry_and_self_fencing`: host 1 holds the lease and writes a log; host 1 (daemon and
//!   holder) is stopped with SIGSTOP; host 2 may take the lease only once host 1's lease has
//!   expired (not before `host_dead_seconds` minus one renewal period), and host 1's holder must
//!   already be dead by then (its own SIGKILL timer) and write nothing after it is resumed.
//!
//! The tests need the `sanlock` daemon (Debian package sanlock, installed by `cargo xtask setup`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use peerflash_lease::testing::TestDaemon;

const BIN: &str = env!("CARGO_BIN_EXE_pf-lockcheck");

fn uptime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: plain kill(2) on a child we started.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Simulated hosts: a sanlock daemon each, on one datastore file.
struct Cluster {
    dir: tempfile::TempDir,
    daemons: Vec<TestDaemon>,
}

impl Cluster {
    fn start(hosts: u64) -> Cluster {
        // On disk, not tmpfs: sanlock opens the datastore with O_DIRECT.
        let dir = tempfile::Builder::new()
            .prefix("lease")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("temp dir");
        let ds = dir.path().join("ds");
        std::fs::File::create(&ds)
            .and_then(|f| f.set_len(8 << 20))
            .expect("datastore file");
        let daemons = (1..=hosts)
            .map(|h| {
                let log = dir.path().join(format!("h{h}.log"));
                TestDaemon::start(
                    &dir.path().join(format!("h{h}")),
                    &format!("host{h}"),
                    Some(&log),
                )
                .expect("sanlock daemon")
            })
            .collect();
        let c = Cluster { dir, daemons };
        c.run(1, &["init"]);
        let joins: Vec<Child> = (1..=hosts)
            .map(|h| c.spawn(h, &["join", "--host-id", &h.to_string()], None))
            .collect();
        for j in joins {
            let out = j.wait_with_output().expect("join");
            assert!(
                out.status.success(),
                "join failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        c
    }

    fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    fn cmd(&self, host: u64, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--datastore")
            .arg(self.path("ds"))
            .args(args)
            .env("SANLOCK_RUN_DIR", self.path(&format!("h{host}")));
        c
    }

    fn spawn(&self, host: u64, args: &[&str], stdout: Option<&Path>) -> Child {
        let mut c = self.cmd(host, args);
        c.stderr(Stdio::piped());
        match stdout {
            Some(p) => c.stdout(std::fs::File::create(p).expect("stdout file")),
            None => c.stdout(Stdio::piped()),
        };
        c.spawn().expect("pf-lockcheck")
    }

    fn run(&self, host: u64, args: &[&str]) {
        let out = self.cmd(host, args).output().expect("pf-lockcheck");
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn daemon_pid(&self, host: u64) -> u32 {
        self.daemons[(host - 1) as usize].pid()
    }
}

fn counter(c: &Cluster) -> (u64, u64) {
    let b = std::fs::read(c.path("counter")).expect("counter");
    (
        u64::from_le_bytes(b[..8].try_into().unwrap()),
        u64::from_le_bytes(b[8..16].try_into().unwrap()),
    )
}

#[test]
fn contention() {
    let c = Cluster::start(3);
    // Control: the same work without the lease must be caught by the counter check.
    std::fs::write(c.path("counter"), [0u8; 16]).unwrap();
    let counter_path = c.path("counter").display().to_string();
    let control: Vec<Child> = (1..=3)
        .map(|h| {
            c.spawn(
                h,
                &[
                    "contend",
                    "--host-id",
                    &h.to_string(),
                    "--counter",
                    &counter_path,
                    "--no-lease",
                ],
                None,
            )
        })
        .collect();
    let caught = control
        .into_iter()
        .map(|p| p.wait_with_output().unwrap().status.code())
        .filter(|c| *c == Some(5))
        .count();
    assert!(
        caught > 0,
        "the counter check did not catch unlocked writers: it could not fail"
    );

    std::fs::write(c.path("counter"), [0u8; 16]).unwrap();
    let mut procs = Vec::new();
    for h in 1..=3u64 {
        for _ in 0..2 {
            procs.push(c.spawn(
                h,
                &[
                    "contend",
                    "--host-id",
                    &h.to_string(),
                    "--counter",
                    &counter_path,
                    "--cycles",
                    "10",
                    "--increments",
                    "5",
                ],
                None,
            ));
        }
    }
    for p in procs {
        let out = p.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a contender failed ({:?}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        counter(&c),
        (0, 6 * 10 * 5),
        "lost or doubled increments: two owners at once"
    );
}

/// Lines `host seq ns` of the writers' log.
fn log_lines(c: &Cluster) -> Vec<(u64, u64, u64)> {
    std::fs::read_to_string(c.path("log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace().map(|x| x.parse::<u64>().ok());
            Some((it.next()??, it.next()??, it.next()??))
        })
        .collect()
}

fn acquired_at(c: &Cluster, f: &str) -> Option<u64> {
    let s = std::fs::read_to_string(c.path(f)).ok()?;
    s.lines().find_map(|l| {
        l.strip_prefix("acquired ")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

#[test]
fn expiry_and_self_fencing() {
    let c = Cluster::start(2);
    let log = c.path("log").display().to_string();
    let mut w1 = c.spawn(
        1,
        &["writer", "--host-id", "1", "--log", &log],
        Some(&c.path("w1.out")),
    );
    let t = Instant::now();
    while acquired_at(&c, "w1.out").is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "host 1 did not acquire the free lease"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut w2 = c.spawn(
        2,
        &["writer", "--host-id", "2", "--log", &log],
        Some(&c.path("w2.out")),
    );
    // While host 1 is alive, host 2 keeps failing to acquire.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        acquired_at(&c, "w2.out").is_none(),
        "host 2 acquired a lease held by a live host"
    );
    assert!(log_lines(&c).iter().all(|l| l.0 == 1));

    // Freeze host 1: its daemon stops renewing, its holder stops running.
    signal(c.daemon_pid(1), libc::SIGSTOP);
    signal(w1.id(), libc::SIGSTOP);
    let stopped = uptime_ns();
    let t = Instant::now();
    let took = loop {
        if let Some(at) = acquired_at(&c, "w2.out") {
            break at;
        }
        assert!(
            t.elapsed() < Duration::from_secs(150),
            "host 2 never took over the expired lease"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let waited = Duration::from_nanos(took.saturating_sub(stopped));
    // Host 1 renewed at most one renewal period (2 × io_timeout = 2 s) before it was stopped.
    let expiry = Duration::from_secs(peerflash_lease::host_dead_seconds(1) - 2);
    eprintln!(
        "host 2 took over {:.1} s after host 1 froze (expiry bound {} s)",
        waited.as_secs_f64(),
        expiry.as_secs()
    );
    assert!(
        waited >= expiry,
        "host 2 took over after {waited:?}, before host 1's lease could expire ({expiry:?})"
    );

    // Host 1's holder killed itself while still frozen, before host 2 could take over.
    let st = w1.try_wait().expect("wait");
    let Some(st) = st else {
        panic!("host 1's frozen holder is still alive after host 2 took over: no self-fencing");
    };
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        st.signal(),
        Some(libc::SIGKILL),
        "host 1's holder ended otherwise: {st:?}"
    );
    let before = log_lines(&c).iter().filter(|l| l.0 == 1).count();
    signal(c.daemon_pid(1), libc::SIGCONT);
    std::thread::sleep(Duration::from_secs(3));
    let lines = log_lines(&c);
    let host1: Vec<_> = lines.iter().filter(|l| l.0 == 1).collect();
    assert_eq!(host1.len(), before, "host 1 wrote after it was resumed");
    assert!(
        host1.iter().all(|l| l.2 < took),
        "host 1 wrote after host 2 took over"
    );
    let first2 = lines
        .iter()
        .position(|l| l.0 == 2)
        .expect("host 2 wrote nothing");
    assert!(
        lines[first2..].iter().all(|l| l.0 == 2),
        "host 1 and host 2 lines interleave"
    );
    assert!(lines.len() - first2 > 10, "host 2 did not keep writing");
    let _ = w2.kill();
    let _ = w2.wait();
}

/// Exit code of `pf-lockcheck try` when the lease is held.
fn try_acquire(c: &Cluster, host: u64, persistent: bool) -> i32 {
    let mut args = vec!["try", "--host-id"];
    let h = host.to_string();
    args.push(&h);
    if persistent {
        args.push("--persistent");
    }
    let out = c.cmd(host, &args).output().expect("pf-lockcheck try");
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code == 0 || code == 3,
        "try failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    code
}

/// Starts `hold` on `host`, waits for it to hold the lease, then kills it with SIGKILL.
fn hold_and_die(c: &Cluster, host: u64, persistent: bool) {
    let out = c.path("hold.out");
    let h = host.to_string();
    let mut args = vec!["hold", "--host-id", &h];
    if persistent {
        args.push("--persistent");
    }
    let mut p = c.spawn(host, &args, Some(&out));
    let t = Instant::now();
    while !std::fs::read_to_string(&out)
        .unwrap_or_default()
        .contains("held")
    {
        assert!(p.try_wait().expect("wait").is_none(), "hold exited early");
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "hold did not acquire the free lease"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(p.id(), libc::SIGKILL);
    let _ = p.wait();
    // The daemon sees the process go asynchronously: give it time to release (or orphan).
    std::thread::sleep(Duration::from_secs(3));
}

/// The agent's leases are persistent: a holder process that dies leaves the lease held by its
/// host (whose kernel may still run the volume), and only a later process of the same host takes
/// it over. The control: a non-persistent holder's death frees the lease for any host.
#[test]
fn persistent_lease_outlives_its_process() {
    let c = Cluster::start(2);
    hold_and_die(&c, 1, true);
    assert_eq!(
        try_acquire(&c, 2, false),
        3,
        "host 2 got a lease whose holder's host is alive"
    );
    assert_eq!(try_acquire(&c, 2, true), 3, "host 2 got host 1's orphan");
    assert_eq!(
        try_acquire(&c, 1, true),
        0,
        "host 1 could not take its own orphan back"
    );
    assert_eq!(
        try_acquire(&c, 2, false),
        0,
        "the lease stayed held after its release"
    );
    // Control: without persistence, the death of the holder releases the lease.
    hold_and_die(&c, 1, false);
    let t = Instant::now();
    while try_acquire(&c, 2, false) != 0 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "a non-persistent lease outlived its process by 20 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

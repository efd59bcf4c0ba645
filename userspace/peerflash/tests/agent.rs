//! `peerflash agent` and `peerflash up` with real sanlock daemons (one per simulated host). A
//! process's libsanlock talks to one daemon (it keeps the first `SANLOCK_RUN_DIR` it sees), so
//! this test runs in its own process: hv1 is the agent, hv2's leases are taken here.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{daemon, peerflash, text};
use peerflash_core::lockrec::LockState;
use peerflash_lease::{Datastore, Lease};

/// The agent keeps a volume stalled while its record says another host holds acknowledged
/// writes of it, and proceeds once that host's replay makes the record clean. (Creating the
/// volume needs the module: here, on a fake configfs tree, the create itself fails after the
/// wait; the VM test covers the real one.)
#[test]
fn agent_stalls_until_the_other_host_replayed() {
    let t = tempfile::Builder::new()
        .prefix("agent")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let (run1, run2) = (t.path().join("run1"), t.path().join("run2"));
    let ds_path = t.path().join("ds");
    std::fs::File::create(&ds_path)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let cfg = t.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "cluster = \"lab\"\n[datastore]\ndevice = \"{}\"\nsize_mib = 8\nio_timeout = 1\n\n\
             [[host]]\nname = \"hv1\"\naddress = \"10.0.0.1:7790\"\n\n\
             [[host]]\nname = \"hv2\"\naddress = \"10.0.0.2:7790\"\n\n\
             [[volume]]\nname = \"vm1\"\nbacking = \"/dev/sdb\"\npolicy = \"wb\"\ncache = {{ hv1 = \"/dev/nvme0n1\", hv2 = \"/dev/nvme0n1\" }}\n",
            ds_path.display()
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let _d1 = daemon(&run1);
    let _d2 = daemon(&run2);
    for (run, args) in [
        (&run1, vec!["lock", "init", "--config", cfg]),
        (
            &run1,
            vec!["lock", "join", "--config", cfg, "--host", "hv1"],
        ),
        (
            &run2,
            vec!["lock", "join", "--config", cfg, "--host", "hv2"],
        ),
    ] {
        let o = peerflash(run, &args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
    }

    // hv2 runs vm1 (wb) with writes after its checkpoint. Its lease is acquired in a child
    // process of ours that talks to hv2's daemon: this test process is hv1's side.
    let ds = Datastore::new(&ds_path, "pf-lab", 1).unwrap();
    let hv2 = |state: LockState| {
        std::env::set_var("SANLOCK_RUN_DIR", &run2);
        let lease = Lease::acquire(&ds, 2, 0, "vm1").expect("hv2 acquires vm1");
        lease
            .update_record(|r| {
                r.owner_id = 2;
                r.set_owner_name(b"hv2");
                r.checkpoint = 10;
                r.last_serial = if state == LockState::Clean { 10 } else { 25 };
                r.state = state;
            })
            .unwrap();
        lease
    };
    let held = hv2(LockState::Running);

    let fake = t.path().join("configfs");
    std::fs::create_dir_all(&fake).unwrap();
    let sock = t.path().join("agent.sock");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_peerflash"))
        .args([
            "agent",
            "--config",
            cfg,
            "--host",
            "hv1",
            "--socket",
            sock.to_str().unwrap(),
        ])
        .env("SANLOCK_RUN_DIR", &run1)
        .env("PEERFLASH_CONFIGFS", &fake)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !sock.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "agent did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let up = |wait: &str| {
        peerflash(
            &run1,
            &[
                "up",
                "vm1",
                "--wait-secs",
                wait,
                "--socket",
                sock.to_str().unwrap(),
            ],
        )
    };

    // While hv2 holds the lease: busy.
    let o = up("0");
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("the lease is held"), "{}", text(&o));

    // hv2's lease is gone but its record says it ran vm1 with dirty data: stalled, record pending.
    held.release().unwrap();
    let o = up("0");
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains(
            "host hv2 (id 2) holds acknowledged writes on its flash (15 after checkpoint 10"
        ),
        "{}",
        text(&o)
    );
    let o = peerflash(&run1, &["lock", "status", "--config", cfg, "vm1"]);
    assert!(
        text(&o).contains("  state: pending\n") && text(&o).contains("  owner: hv2 (host id 2)\n"),
        "{}",
        text(&o)
    );
    assert!(
        !fake.join("vm1").exists(),
        "the volume was created while hv2 holds its data"
    );

    // Waiting: hv2 replays (record clean), then the agent goes on to create the volume.
    let waiter = Command::new(env!("CARGO_BIN_EXE_peerflash"))
        .args([
            "up",
            "vm1",
            "--wait-secs",
            "60",
            "--socket",
            sock.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !fake.join("vm1").exists(),
        "the volume was created before hv2's replay"
    );
    hv2(LockState::Clean).release().unwrap();
    let o = waiter.wait_with_output().unwrap();
    let s = text(&o);
    assert!(
        s.contains("waiting for its replay") && s.contains("host hv2 finished its replay"),
        "{s}"
    );
    let _ = agent.kill();
    let _ = agent.wait();
}

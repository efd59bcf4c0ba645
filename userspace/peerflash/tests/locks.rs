//! `peerflash lock init|join|status` against a real sanlock daemon (unprivileged, no watchdog,
//! its own run directory) and a datastore file.

mod common;

use common::{daemon, peerflash, text};
use peerflash_core::lockrec::LockState;
use peerflash_lease::{Datastore, Lease};

#[test]
fn init_join_status_and_refusals() {
    let t = tempfile::Builder::new()
        .prefix("locks")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let run = t.path().join("run");
    let ds_path = t.path().join("ds");
    let cfg = t.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "cluster = \"lab\"\n[datastore]\ndevice = \"{}\"\nsize_mib = 8\n\n\
             [[host]]\nname = \"hv1\"\naddress = \"10.0.0.1:7790\"\n\n\
             [[volume]]\nname = \"vm1\"\nbacking = \"/dev/sdb\"\npolicy = \"wb\"\ncache = {{ hv1 = \"/dev/nvme0n1\" }}\n\n\
             [[volume]]\nname = \"vm2\"\nbacking = \"/dev/sdc\"\npolicy = \"wt\"\nlock_slot = 2\ncache = {{ hv1 = \"/dev/nvme0n1\" }}\n",
            ds_path.display()
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();

    // Too small a datastore is refused before anything is written.
    std::fs::File::create(&ds_path)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let _d = daemon(&run);
    let o = peerflash(&run, &["lock", "init", "--config", cfg]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("the configuration needs 7340032"),
        "{}",
        text(&o)
    );

    std::fs::File::create(&ds_path)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let o = peerflash(&run, &["lock", "status", "--config", cfg, "vm1"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("record: none"), "{}", text(&o));

    let o = peerflash(&run, &["lock", "init", "--config", cfg]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("lockspace pf-lab"), "{}", text(&o));
    let o = peerflash(&run, &["lock", "join", "--config", cfg, "--host", "hv1"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = peerflash(&run, &["lock", "join", "--config", cfg, "--host", "hv9"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));

    let o = peerflash(
        &run,
        &["lock", "status", "--config", cfg, "--output", "json"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["volume"], "vm1");
    assert_eq!(v[0]["record"]["state"], "clean");
    assert_eq!(v[0]["record"]["policy"], "wb");
    assert_eq!(v[1]["lock_slot"], 2);
    assert_eq!(v[1]["record"]["policy"], "wt");

    // A holder records writes pending on its flash; everyone can read it without the lease.
    std::env::set_var("SANLOCK_RUN_DIR", &run);
    let ds = Datastore::new(&ds_path, "pf-lab", 10).unwrap();
    let lease = Lease::acquire(&ds, 1, 0, "vm1").expect("acquire vm1");
    lease
        .update_record(|r| {
            r.generation += 1;
            r.owner_id = 1;
            r.set_owner_name(b"hv1");
            r.checkpoint = 40;
            r.last_serial = 52;
            r.state = LockState::Pending;
        })
        .unwrap();
    assert!(matches!(
        Lease::acquire(&ds, 1, 0, "vm1"),
        Err(peerflash_lease::LeaseError::Held { .. })
    ));
    let o = peerflash(&run, &["lock", "status", "--config", cfg, "vm1"]);
    let s = text(&o);
    assert!(
        s.contains("  state: pending\n")
            && s.contains("  owner: hv1 (host id 1)\n")
            && s.contains("  pending writes: 12\n"),
        "{s}"
    );

    // Initialising over a record with pending writes is refused (exit 3) unless forced.
    let o = peerflash(&run, &["lock", "init", "--config", cfg]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("vm1 (pending, host hv1, 12 writes after the checkpoint)"),
        "{}",
        text(&o)
    );
    lease.release().unwrap();
    let o = peerflash(&run, &["lock", "init", "--config", cfg, "--force"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = peerflash(&run, &["lock", "status", "--config", cfg, "vm1"]);
    assert!(text(&o).contains("  state: clean\n"), "{}", text(&o));
}

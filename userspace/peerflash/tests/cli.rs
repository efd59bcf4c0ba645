//! The helper against a fake configfs tree (`PEERFLASH_CONFIGFS`): output formats, exit codes
//! and refusals that happen before the kernel is asked. The real kernel side is covered by the
//! VM tests (tests/vm/cases/).

use std::path::Path;
use std::process::{Command, Output};

fn peerflash(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peerflash"))
        .env("PEERFLASH_CONFIGFS", root)
        .args(args)
        .output()
        .expect("run peerflash")
}

fn fake_volume(root: &Path, name: &str, enabled: bool) {
    let d = root.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let w = |f: &str, v: &str| std::fs::write(d.join(f), v).unwrap();
    w("backing", "/dev/vda\n");
    w("enable", if enabled { "1\n" } else { "0\n" });
    w("device", if enabled { "pf-vm1\n" } else { "\n" });
    w("dev", if enabled { "252:0\n" } else { "\n" });
    w("size", "2048\n");
    w("openers", "1\n");
    w("last_error", "\n");
    w("cache", "\n");
    w("policy", "wb\n");
    w("cache_slot", "\n");
    w("stats", "reads 5\nwrites 7\nerrors 0\n");
}

#[test]
fn status_human_and_json() {
    let t = tempfile::tempdir().unwrap();
    fake_volume(t.path(), "vm1", true);
    let out = peerflash(t.path(), &["status", "vm1"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("vm1:\n  state: enabled\n"), "{text}");
    assert!(text.contains("  device: /dev/pf-vm1\n"), "{text}");
    assert!(text.contains("  size: 1048576 bytes\n"), "{text}");
    assert!(text.contains("    writes: 7\n"), "{text}");

    let out = peerflash(t.path(), &["status", "--output", "json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["name"], "vm1");
    assert_eq!(v[0]["device"], "/dev/pf-vm1");
    assert_eq!(v[0]["dev"], "252:0");
    assert_eq!(v[0]["size_bytes"], 1048576);
    assert_eq!(v[0]["openers"], 1);
    assert_eq!(v[0]["stats"]["reads"], 5);
}

#[test]
fn list_is_sorted() {
    let t = tempfile::tempdir().unwrap();
    fake_volume(t.path(), "b", false);
    fake_volume(t.path(), "a", false);
    let out = peerflash(t.path(), &["list"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "a\nb\n");
}

#[test]
fn refusals_have_exit_codes_and_reasons() {
    let t = tempfile::tempdir().unwrap();
    let cases: [(&[&str], i32, &str); 9] = [
        (
            &["create", "a/b", "--backing", "/dev/vda"],
            2,
            "invalid volume name",
        ),
        (
            &["create", "v", "--backing", "/nonexistent/dev"],
            4,
            "does not exist",
        ),
        (
            &["create", "v", "--backing", "/etc/hostname"],
            2,
            "is not a block device",
        ),
        (
            &["create", "v", "--backing", "/dev/vda", "--cache", "/dev/vdb", "--policy", "wbp"],
            2,
            "--policy wbp needs --replicas",
        ),
        (
            &["create", "v", "--backing", "/dev/vda", "--cache", "/dev/vdb", "--policy", "wbp", "--replicas", "1 1 4 2"],
            2,
            "WANTED is 1 to 3",
        ),
        (&["set-replicas", "v", "2 1 2 2 2"], 2, "a host id is 0, repeated"),
        (
            &["create", "v", "--backing", "/dev/vda", "--cache", "/dev/vdb", "--policy", "wx"],
            2,
            "[possible values: wt, wb, wbp]",
        ),
        (&["remove", "nothere"], 4, "volume nothere does not exist"),
        (&["status", "nothere"], 4, "volume nothere does not exist"),
    ];
    for (args, code, text) in cases {
        let out = peerflash(t.path(), args);
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(text), "{args:?}: {err}");
    }
    // Nothing was created by the refused commands.
    assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0);
}

#[test]
fn missing_module_is_reported() {
    let out = peerflash(Path::new("/nonexistent/configfs"), &["list"]);
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("not loaded"));
}

#[test]
fn config_check_exit_codes_and_positions() {
    let t = tempfile::tempdir().unwrap();
    let good = t.path().join("cluster.toml");
    std::fs::write(
        &good,
        "[datastore]\ndevice = \"/dev/sdb\"\nsize_mib = 16\n\n[[host]]\nname = \"hv1\"\naddress = \"10.0.0.1:7790\"\n\n\
         [[volume]]\nname = \"vm1\"\nbacking = \"/dev/sdc\"\npolicy = \"wb\"\ncache = { hv1 = \"/dev/nvme0n1\" }\n",
    )
    .unwrap();
    let file = good.to_str().unwrap();
    let out = peerflash(t.path(), &["config", "check", file]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok: 1 host(s), 1 volume(s)"));
    let out = peerflash(t.path(), &["config", "check", file, "--output", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["volumes"][0]["policy"], "wb");

    let bad = t.path().join("bad.toml");
    let text = std::fs::read_to_string(&good)
        .unwrap()
        .replace("10.0.0.1:7790", "10.0.0.1");
    std::fs::write(&bad, text).unwrap();
    let out = peerflash(t.path(), &["config", "check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:7:11: host[0].address: \"10.0.0.1\" is not IP:PORT"),
        "{err}"
    );

    let out = peerflash(t.path(), &["config", "check", "/nonexistent/cluster.toml"]);
    assert_eq!(out.status.code(), Some(4));
}

#[test]
fn shell_completions() {
    let t = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = peerflash(t.path(), &["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let s = String::from_utf8(out.stdout).unwrap();
        for verb in ["create", "flush", "lock", "agent", "up", "down"] {
            assert!(s.contains(verb), "{shell} completions lack {verb}");
        }
    }
    let out = peerflash(t.path(), &["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "an unknown shell is bad usage");
}

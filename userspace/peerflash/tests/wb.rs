//! `flush`, `set-policy` and the cache state in `status`, against a fake configfs tree and a fake
//! `/sys/block` (`PEERFLASH_CONFIGFS`, `PEERFLASH_SYSBLOCK`). The kernel side is covered by the
//! VM tests (tests/vm/cases/cache-wb.sh, the crash test).

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn peerflash(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peerflash"))
        .env("PEERFLASH_CONFIGFS", root.join("config"))
        .env("PEERFLASH_SYSBLOCK", root.join("block"))
        .args(args)
        .output()
        .expect("run peerflash")
}

/// Replaces a fake sysfs file at once, as the kernel's files change (a plain write truncates
/// first, and a reader polling meanwhile could see it empty).
fn put(path: &Path, value: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, value).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A fake enabled volume `v` with a cache; `files` overrides sysfs values.
fn fake(root: &Path, files: &[(&str, &str)]) {
    let d = root.join("config/v");
    std::fs::create_dir_all(&d).unwrap();
    for (f, v) in [
        ("backing", "/dev/vda"),
        ("enable", "1"),
        ("device", "pf-v"),
        ("dev", "252:0"),
        ("size", "2048"),
        ("openers", "0"),
        ("last_error", ""),
        ("cache", "/dev/nvme0n1"),
        ("policy", "wb"),
        ("cache_slot", "0"),
        ("stats", "reads 1\n"),
    ] {
        std::fs::write(d.join(f), format!("{v}\n")).unwrap();
    }
    let s = root.join("block/pf-v/peerflash");
    std::fs::create_dir_all(&s).unwrap();
    let mut all = vec![
        ("state", "clean"),
        ("policy", "wb"),
        ("dirty_bytes", "0"),
        ("last_serial", "10"),
        ("checkpoint_serial", "10"),
        ("destage_failures", "0"),
        ("destage_paused", "0"),
    ];
    for &(f, v) in files {
        all.retain(|(k, _)| *k != f);
        all.push((f, v));
    }
    for (f, v) in all {
        std::fs::write(s.join(f), format!("{v}\n")).unwrap();
    }
}

#[test]
fn flush_returns_once_clean_and_checkpointed() {
    let t = tempfile::tempdir().unwrap();
    fake(t.path(), &[]);
    let out = peerflash(t.path(), &["flush", "v"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It asked the destager not to wait for its delay.
    let now = t.path().join("block/pf-v/peerflash/destage_now");
    assert_eq!(std::fs::read_to_string(now).unwrap(), "1\n");
}

#[test]
fn flush_waits_for_the_checkpoint() {
    let t = tempfile::tempdir().unwrap();
    fake(
        t.path(),
        &[("dirty_bytes", "4096"), ("checkpoint_serial", "7")],
    );
    // Dirty data that never drains: the timeout ends the wait with a failure.
    let out = peerflash(t.path(), &["flush", "v", "--timeout", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("4096 bytes still dirty"));
    // The destager finishes while flush waits.
    let s = t.path().join("block/pf-v/peerflash");
    let mut child = Command::new(env!("CARGO_BIN_EXE_peerflash"))
        .env("PEERFLASH_CONFIGFS", t.path().join("config"))
        .env("PEERFLASH_SYSBLOCK", t.path().join("block"))
        .args(["flush", "v", "--timeout", "20"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    put(&s.join("dirty_bytes"), "0\n");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "flush returned with the checkpoint behind"
    );
    put(&s.join("checkpoint_serial"), "9\n");
    std::thread::sleep(Duration::from_millis(300));
    // Still one serial short of the last write seen at the start.
    assert!(
        child.try_wait().unwrap().is_none(),
        "flush returned one serial short"
    );
    put(&s.join("checkpoint_serial"), "10\n");
    assert!(child.wait().unwrap().success());
}

#[test]
fn flush_refusals() {
    let t = tempfile::tempdir().unwrap();
    fake(t.path(), &[("destage_paused", "1")]);
    let out = peerflash(t.path(), &["flush", "v"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("destaging is paused"));

    fake(
        t.path(),
        &[
            ("destage_paused", "0"),
            ("state", "failed"),
            ("dirty_bytes", "1"),
        ],
    );
    let out = peerflash(t.path(), &["flush", "v"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("failed"));

    fake(t.path(), &[("state", "uncached")]);
    let out = peerflash(t.path(), &["flush", "v"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no cache device"));

    let out = peerflash(t.path(), &["flush", "nothere"]);
    assert_eq!(out.status.code(), Some(4));
}

#[test]
fn set_policy_writes_configfs_and_status_shows_the_cache_state() {
    let t = tempfile::tempdir().unwrap();
    fake(t.path(), &[("dirty_bytes", "8192"), ("state", "dirty")]);
    let out = peerflash(t.path(), &["set-policy", "v", "wt"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = std::fs::read_to_string(t.path().join("config/v/policy")).unwrap();
    assert_eq!(p, "wt");
    let out = peerflash(t.path(), &["set-policy", "v", "wx"]);
    assert_eq!(out.status.code(), Some(2));

    let out = peerflash(t.path(), &["status", "v", "--output", "json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["cache_state"]["state"], "dirty");
    assert_eq!(v[0]["cache_state"]["dirty_bytes"], "8192");
    let out = peerflash(t.path(), &["status", "v"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("  cache state:\n"), "{text}");
    assert!(text.contains("    state: dirty\n"), "{text}");
}

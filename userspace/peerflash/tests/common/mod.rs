//! Helpers of the lock and agent tests: a sanlock daemon per simulated host, the helper binary.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn daemon(run: &Path) -> Daemon {
    std::fs::create_dir_all(run).unwrap();
    let sanlock = if Path::new("/usr/sbin/sanlock").exists() {
        "/usr/sbin/sanlock"
    } else {
        "sanlock"
    };
    let d = Command::new(sanlock)
        .args([
            "daemon", "-D", "-w", "0", "-h", "0", "-l", "0", "-U", "root", "-G", "root", "-e",
            "hv1",
        ])
        .env("SANLOCK_RUN_DIR", run)
        .env("SANLOCK_PRIVILEGED", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start the sanlock daemon (`cargo xtask setup` installs it)");
    let t = Instant::now();
    while !run.join("sanlock.sock").exists() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "sanlock daemon did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Daemon(d)
}

pub fn peerflash(run: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peerflash"))
        .env("SANLOCK_RUN_DIR", run)
        .args(args)
        .output()
        .expect("run peerflash")
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

//! Helpers of the lock and agent tests: a sanlock daemon per simulated host, the helper binary.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

pub use peerflash_lease::testing::TestDaemon as Daemon;

/// A sanlock daemon whose host name is the last component of its run directory.
pub fn daemon(run: &Path) -> Daemon {
    let name = run
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Daemon::start(run, &name, None).expect("sanlock daemon")
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

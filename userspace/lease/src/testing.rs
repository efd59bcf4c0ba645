//! A sanlock daemon for tests: one per simulated host, each in its own run directory, with no
//! watchdog, unprivileged (no memlock or realtime limits to raise), in the foreground.

use std::io;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running test daemon; dropping it kills it (after resuming it, should it be stopped).
pub struct TestDaemon {
    child: Child,
}

impl TestDaemon {
    /// Starts a daemon named `host` with its socket in `run` (created) and its log in `log`
    /// (discarded when `None`); returns once its socket exists.
    pub fn start(run: &Path, host: &str, log: Option<&Path>) -> io::Result<TestDaemon> {
        std::fs::create_dir_all(run)?;
        let sanlock = if Path::new("/usr/sbin/sanlock").exists() {
            "/usr/sbin/sanlock"
        } else {
            "sanlock"
        };
        let stderr = match log {
            Some(p) => Stdio::from(std::fs::File::create(p)?),
            None => Stdio::null(),
        };
        let child = Command::new(sanlock)
            .args([
                "daemon", "-D", "-w", "0", "-h", "0", "-l", "0", "-U", "root", "-G", "root", "-e",
                host,
            ])
            .env("SANLOCK_RUN_DIR", run)
            .env("SANLOCK_PRIVILEGED", "0")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot start the sanlock daemon ({e}): `cargo xtask setup` installs it"
                    ),
                )
            })?;
        let d = TestDaemon { child };
        let t = Instant::now();
        while !run.join("sanlock.sock").exists() {
            if t.elapsed() > Duration::from_secs(20) {
                return Err(io::Error::other(format!(
                    "the sanlock daemon of {host} did not start"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(d)
    }

    /// The daemon's process id (to stop and resume it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child, which has not been waited for yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGCONT) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

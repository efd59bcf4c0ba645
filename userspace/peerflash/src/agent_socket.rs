//! The agent's socket: where it listens, the request line `peerflash up` and `peerflash down`
//! send, the reply lines (progress, then a final answer) and the client side, which shows the
//! agent's progress while it waits.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Default path of the agent's socket.
pub const DEFAULT_SOCKET: &str = "/run/peerflash/agent.sock";

/// A request line.
#[derive(Serialize, Deserialize)]
pub struct Request {
    /// `up` or `down`.
    pub op: String,
    pub volume: String,
    /// `up`: how long to wait for another host's replay (0: do not wait).
    #[serde(default)]
    pub wait_secs: u64,
}

/// A reply line: progress (`done == false`) or the final answer.
#[derive(Serialize, Deserialize, Debug)]
pub struct Reply {
    pub done: bool,
    /// Exit code of the final answer (see `crate::error::exit`).
    #[serde(default)]
    pub code: u8,
    pub message: String,
}

/// Sends `req` to the agent at `socket`; prints progress to stderr; the final reply.
pub fn request(socket: &Path, req: &Request) -> Result<Reply> {
    let stream = UnixStream::connect(socket).map_err(|e| {
        anyhow!(
            "cannot reach the peerflash agent at {} ({e}): is `peerflash agent` running?",
            socket.display()
        )
    })?;
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    (&stream).write_all(line.as_bytes())?;
    // On a terminal, a spinner with the elapsed time shows the agent's latest word while it
    // waits (another host's replay can take minutes); otherwise each progress line is printed.
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let spinner = if tty {
        indicatif::ProgressBar::new_spinner()
    } else {
        indicatif::ProgressBar::hidden()
    };
    spinner.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    spinner.enable_steady_tick(Duration::from_millis(200));
    for l in BufReader::new(&stream).lines() {
        let r: Reply = serde_json::from_str(&l?).context("bad reply from the agent")?;
        if r.done {
            spinner.finish_and_clear();
            return Ok(r);
        }
        if tty {
            spinner.println(&r.message);
            spinner.set_message(r.message);
        } else {
            eprintln!("{}", r.message);
        }
    }
    spinner.abandon();
    bail!("the agent closed the connection without an answer")
}

/// The socket path: `--socket`, else `$PEERFLASH_AGENT_SOCKET`, else the default.
pub fn socket_path(arg: Option<&str>) -> PathBuf {
    arg.map(PathBuf::from)
        .or_else(|| std::env::var_os("PEERFLASH_AGENT_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

//! What a VM run's kernel log and lockdep state say: a warning, a bug or a lockdep report in
//! the log fails the run, and so does lockdep not being on in the test kernel (off in the bench
//! kernel).

use std::path::Path;

use crate::setup::Flavor;

/// Flags a kernel log that shows a warning, a bug or a lockdep report.
pub fn kernel_log_problems(log: &str) -> Vec<String> {
    const BAD: [&str; 8] = [
        "WARNING:",
        "BUG:",
        "Oops",
        "possible recursive locking",
        "possible circular locking",
        "inconsistent lock state",
        "INFO: task",
        "general protection fault",
    ];
    log.lines()
        .filter(|l| BAD.iter().any(|b| l.contains(b)))
        .map(str::to_string)
        .collect()
}

/// Checks a VM's kernel log and lockdep state; returns what is wrong.
pub fn kernel_verdict(run_dir: &Path) -> Option<String> {
    kernel_verdict_for(run_dir, Flavor::Test)
}

/// As `kernel_verdict`, for a kernel of the given flavor: lockdep must be on exactly in the test
/// kernel.
pub fn kernel_verdict_for(run_dir: &Path, flavor: Flavor) -> Option<String> {
    let log = std::fs::read_to_string(run_dir.join("dmesg.txt")).unwrap_or_default();
    if log.is_empty() {
        return Some("no kernel log (the VM did not finish its command)".into());
    }
    let bad = kernel_log_problems(&log);
    if !bad.is_empty() {
        return Some(format!("kernel log shows:\n{}", bad.join("\n")));
    }
    let want = match flavor {
        Flavor::Test => "on",
        Flavor::Bench => "off",
    };
    match std::fs::read_to_string(run_dir.join("lockdep")).map(|s| s.trim().to_string()) {
        Ok(s) if s == want => None,
        _ => Some(format!(
            "lockdep was not {want} in the {} kernel",
            flavor.name()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_log_problems_are_found() {
        let log = "[ 1.0] ok\n[ 2.0] WARNING: CPU: 0 PID: 1 at x\n[ 3.0] fine\n";
        assert_eq!(kernel_log_problems(log).len(), 1);
        assert!(kernel_log_problems("all good\n").is_empty());
    }
}

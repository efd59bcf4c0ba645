//! Self-fencing: a process that holds a lease arms a kernel timer that kills it (`SIGKILL`) at
//! the moment its lease may expire for other hosts, and pushes the moment back each time the
//! lease is confirmed renewed. `SIGKILL` is delivered even to a stopped process, so a holder
//! paused past that moment (SIGSTOP, a frozen host) is dead before it could run again, and
//! nothing it had planned to write is written. Writes are also gated on [`Fence::valid`].
//!
//! Only the local `CLOCK_MONOTONIC` is used: no clock is compared across hosts.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Nanoseconds of `CLOCK_MONOTONIC` (the clock sanlock's timestamps use, in seconds).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// A timer that kills this process at a deadline of `CLOCK_MONOTONIC`.
pub struct Fence {
    timer: libc::timer_t,
    /// The armed deadline in ns (0: not armed, never valid).
    deadline_ns: AtomicU64,
}

// SAFETY: a POSIX timer id may be used from any thread of the process; the deadline is atomic.
unsafe impl Send for Fence {}
// SAFETY: as above; `timer_settime` is thread-safe.
unsafe impl Sync for Fence {}

impl Fence {
    /// A disarmed fence.
    pub fn new() -> io::Result<Fence> {
        // SAFETY: an all-zero sigevent is valid; the fields are set below.
        let mut ev: libc::sigevent = unsafe { std::mem::zeroed() };
        ev.sigev_notify = libc::SIGEV_SIGNAL;
        ev.sigev_signo = libc::SIGKILL;
        let mut timer: libc::timer_t = std::ptr::null_mut();
        // SAFETY: `ev` and `timer` are valid pointers for the call.
        if unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut ev, &mut timer) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Fence {
            timer,
            deadline_ns: AtomicU64::new(0),
        })
    }

    fn set(&self, at_ns: u64) -> io::Result<()> {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (at_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (at_ns % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: `self.timer` was created by `timer_create` and not deleted; `spec` is valid.
        if unsafe {
            libc::timer_settime(self.timer, libc::TIMER_ABSTIME, &spec, std::ptr::null_mut())
        } != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Kills the process at `deadline_ns` (absolute `CLOCK_MONOTONIC`) unless re-armed before.
    /// A deadline already past kills it at once.
    pub fn arm(&self, deadline_ns: u64) -> io::Result<()> {
        // The timer first: `valid` never says yes for longer than the timer allows.
        self.set(deadline_ns.max(1))?;
        self.deadline_ns.store(deadline_ns, Ordering::Release);
        Ok(())
    }

    /// Stops gating writes (`valid` is false from now on), then disarms the timer. Call it only
    /// once the lease is released.
    pub fn disarm(&self) -> io::Result<()> {
        self.deadline_ns.store(0, Ordering::Release);
        self.set(0)
    }

    /// Ends validity now without disarming: writes stop, the timer stays armed.
    pub fn revoke(&self) {
        self.deadline_ns.store(0, Ordering::Release);
    }

    /// Whether the lease is still safely ours now.
    pub fn valid(&self) -> bool {
        now_ns() < self.deadline_ns.load(Ordering::Acquire)
    }

    /// Time left before the deadline.
    pub fn remaining(&self) -> Duration {
        Duration::from_nanos(
            self.deadline_ns
                .load(Ordering::Acquire)
                .saturating_sub(now_ns()),
        )
    }
}

impl Drop for Fence {
    fn drop(&mut self) {
        // SAFETY: created by `timer_create`, deleted once here.
        unsafe { libc::timer_delete(self.timer) };
    }
}

// SPDX-License-Identifier: GPL-2.0

//! The wall clock, for what is written on a device to be read by people (the kernel crate's
//! `Instant<RealTime>` does not give its value).

use kernel::bindings;

/// Seconds since the Unix epoch (0 before the epoch).
pub(crate) fn real_seconds() -> u64 {
    // SAFETY: `ktime_get_real_seconds` only reads the timekeeping state; any context.
    let s = unsafe { bindings::ktime_get_real_seconds() };
    u64::try_from(s).unwrap_or(0)
}

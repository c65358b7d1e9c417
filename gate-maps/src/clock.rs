//! The lease clock: `CLOCK_MONOTONIC_COARSE`, which the XDP program reads as
//! `bpf_ktime_get_coarse_ns`. The kernel keeps it running with no daemon, so leases expire on
//! time while the daemon is down. It is cheap to read in the program (no clocksource access) and
//! its few milliseconds of granularity are far below any lease lifetime.
use std::time::Duration;

use nix::time::{ClockId, clock_gettime};

/// Now, in lease-clock nanoseconds.
///
/// # Panics
/// Never in practice: `clock_gettime` on this clock cannot fail on Linux.
#[must_use]
pub fn now_ns() -> u64 {
    let now = clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE).expect("CLOCK_MONOTONIC_COARSE is always available");
    let nanos = Duration::from(now).as_nanos();
    u64::try_from(nanos).unwrap_or(u64::MAX)
}

/// `duration` in nanoseconds, saturating.
#[must_use]
pub fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// How long from `now_ns` until `deadline_ns` (zero if it has passed).
#[must_use]
pub fn until(now_ns: u64, deadline_ns: u64) -> Duration {
    Duration::from_nanos(deadline_ns.saturating_sub(now_ns))
}

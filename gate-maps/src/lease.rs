//! Building leases: from the daemon's policy (connect window, idle timeout, maximum lifetime) or
//! from an operator's plain TTL; and which addresses a lease may be for at all.
use std::{net::IpAddr, time::Duration};

use gate_common::Lease;

use crate::clock::nanos;

/// Whether a lease for `addr` could ever admit a client: not unspecified, loopback, multicast,
/// link-local or broadcast (judged on the address a lease is kept under, so `::ffff:127.0.0.1`
/// is loopback). One rule for approvals and `gatectl allow`.
#[must_use]
pub fn openable(addr: IpAddr) -> bool {
    match crate::state::lease_address(addr) {
        IpAddr::V4(v4) => {
            !(v4.is_unspecified() || v4.is_loopback() || v4.is_multicast() || v4.is_link_local() || v4.is_broadcast())
        }
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_loopback() || v6.is_multicast() || v6.is_unicast_link_local()),
    }
}

/// How long an approval keeps a gate open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeasePolicy {
    /// Time to make the first connection after approval (the first idle deadline).
    pub connect_window: Duration,
    /// Once traffic flows, how long the lease survives without any.
    pub idle_timeout: Duration,
    /// The hard limit, whatever the traffic.
    pub max_lifetime: Duration,
}

impl LeasePolicy {
    /// A lease granted at `now_ns` under this policy.
    #[must_use]
    pub fn lease_at(&self, now_ns: u64) -> Lease {
        let expires_ns = now_ns.saturating_add(nanos(self.max_lifetime));
        Lease {
            expires_ns,
            idle_deadline_ns: now_ns.saturating_add(nanos(self.connect_window)).min(expires_ns),
            idle_timeout_ns: nanos(self.idle_timeout),
        }
    }
}

/// A lease live for exactly `ttl` from `now_ns`, whatever the traffic.
#[must_use]
pub fn ttl_lease(now_ns: u64, ttl: Duration) -> Lease {
    let expires_ns = now_ns.saturating_add(nanos(ttl));
    Lease { expires_ns, idle_deadline_ns: expires_ns, idle_timeout_ns: 0 }
}

#[cfg(test)]
mod tests {
    use gate_common::LeaseState;

    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn policy() -> LeasePolicy {
        LeasePolicy {
            connect_window: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(180),
            max_lifetime: Duration::from_secs(3600),
        }
    }

    #[test]
    fn unconnected_lease_closes_after_the_connect_window() {
        let lease = policy().lease_at(1000 * SEC);
        assert_eq!(lease.state(1059 * SEC), LeaseState::Live);
        assert_eq!(lease.state(1060 * SEC), LeaseState::Idle);
    }

    #[test]
    fn traffic_moves_the_idle_deadline_but_not_the_hard_expiry() {
        let mut lease = policy().lease_at(0);
        let refreshed = lease.refreshed_idle_deadline(30 * SEC).expect("a refresh 150 s ahead");
        assert_eq!(refreshed, 210 * SEC);
        lease.idle_deadline_ns = refreshed;
        assert_eq!(lease.state(209 * SEC), LeaseState::Live);
        assert_eq!(lease.state(3600 * SEC), LeaseState::Expired);
    }

    #[test]
    fn refresh_is_skipped_within_the_granularity() {
        let mut lease = policy().lease_at(0);
        lease.idle_deadline_ns = 180 * SEC;
        assert_eq!(lease.refreshed_idle_deadline(SEC / 2), None);
        assert_eq!(lease.refreshed_idle_deadline(2 * SEC), Some(182 * SEC));
    }

    #[test]
    fn ttl_lease_ignores_traffic() {
        let lease = ttl_lease(0, Duration::from_secs(5));
        assert_eq!(lease.refreshed_idle_deadline(SEC), None);
        assert_eq!(lease.state(5 * SEC - 1), LeaseState::Live);
        assert_eq!(lease.state(5 * SEC), LeaseState::Expired);
        assert_eq!(lease.closes_at_ns(), 5 * SEC);
    }

    #[test]
    fn connect_window_never_outlives_the_maximum_lifetime() {
        let short = LeasePolicy { max_lifetime: Duration::from_secs(10), ..policy() };
        let lease = short.lease_at(0);
        assert_eq!(lease.idle_deadline_ns, 10 * SEC);
    }
}

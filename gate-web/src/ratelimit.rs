//! A token bucket per source for approval requests: per IPv4 address, and per IPv6 /64 (one
//! host usually holds a whole /64, so counting its addresses one by one would not limit it).
//! The table is bounded: when it is full, buckets that are full again (sources gone quiet) are
//! dropped first, then arbitrary ones, so a flood from many addresses costs bounded memory.
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

pub const MAX_SOURCES: usize = 65_536;

pub struct RateLimit {
    /// Settable while running (a reload); buckets keep their tokens.
    per_minute: AtomicU32,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimit {
    #[must_use]
    pub fn new(per_minute: u32) -> Self {
        Self { per_minute: AtomicU32::new(per_minute), buckets: Mutex::new(HashMap::new()) }
    }

    /// A new rate (and burst) from now on.
    pub fn set_per_minute(&self, per_minute: u32) {
        self.per_minute.store(per_minute, Ordering::Relaxed);
    }

    #[must_use]
    pub fn per_minute(&self) -> u32 {
        self.per_minute.load(Ordering::Relaxed)
    }

    /// Takes a token for `source` at `now`; `false` if it has none left.
    pub fn allow(&self, source: IpAddr, now: Instant) -> bool {
        let source = source_key(source);
        let per_minute = f64::from(self.per_minute());
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let refill = |tokens: f64, since: Instant| {
            (tokens + now.saturating_duration_since(since).as_secs_f64() * per_minute / 60.0).min(per_minute)
        };
        if buckets.len() >= MAX_SOURCES && !buckets.contains_key(&source) {
            buckets.retain(|_, (tokens, since)| refill(*tokens, *since) < per_minute);
            if buckets.len() >= MAX_SOURCES {
                let victim = *buckets.keys().next().expect("a full table has a key");
                buckets.remove(&victim);
            }
        }
        let (tokens, since) = buckets.entry(source).or_insert((per_minute, now));
        let available = refill(*tokens, *since);
        *since = now;
        if available >= 1.0 {
            *tokens = available - 1.0;
            true
        } else {
            *tokens = available;
            false
        }
    }

    #[must_use]
    pub fn sources(&self) -> usize {
        self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }
}

/// What a source counts as: the address itself, or its /64 for IPv6.
#[must_use]
pub fn source_key(source: IpAddr) -> IpAddr {
    match source.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1_u128 << 64) - 1)).into()),
        v4 => v4,
    }
}

/// How long until `per_minute` allows one more: for a `Retry-After` header.
#[must_use]
pub fn retry_after(per_minute: u32) -> Duration {
    Duration::from_secs(60 / u64::from(per_minute.max(1))).max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let limit = RateLimit::new(60);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        assert!((0..60).all(|_| limit.allow(a, t0)));
        assert!(!limit.allow(a, t0), "burst spent");
        assert!(limit.allow(b, t0), "another source has its own bucket");
        assert!(limit.allow(a, t0 + Duration::from_millis(1000)), "one token a second comes back");
        assert!(!limit.allow(a, t0 + Duration::from_millis(1000)));
    }

    #[test]
    fn an_ipv6_host_counts_as_its_slash_64() {
        let limit = RateLimit::new(2);
        let t0 = Instant::now();
        assert!(limit.allow("2001:db8:1:2::1".parse().unwrap(), t0));
        assert!(limit.allow("2001:db8:1:2::ffff:1".parse().unwrap(), t0));
        assert!(!limit.allow("2001:db8:1:2:abcd::9".parse().unwrap(), t0), "same /64: same bucket");
        assert!(limit.allow("2001:db8:1:3::1".parse().unwrap(), t0), "another /64");
    }

    #[test]
    fn the_table_stays_bounded() {
        let limit = RateLimit::new(10);
        let t0 = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 1000) {
            limit.allow(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(limit.sources() <= MAX_SOURCES);
    }
}

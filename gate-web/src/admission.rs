//! Who may open a connection, decided before any TLS work: a cap on connections per source and a
//! rate of new connections (TLS handshakes) per source, both by IPv4 address and by IPv6 /64 as
//! the approval limit counts, then the global cap. One source holding every connection it can
//! get holds at most its own share, so other sources are still served. Trusted proxies (which
//! carry many clients) are held only to the global cap.
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};

use crate::{
    config::Limits,
    ratelimit::{RateLimit, source_key},
    tally::{Refusal, Tally},
};

pub struct Admission {
    inner: Mutex<Inner>,
    handshakes: RateLimit,
    pub tally: Arc<Tally>,
}

/// The counts and the limits they are held to (a reload changes the limits, never the counts).
struct Inner {
    /// Open connections per source key; an entry exists only while one is open, so the table
    /// is bounded by the global cap.
    open: HashMap<IpAddr, usize>,
    total: usize,
    max: usize,
    per_source: usize,
    trusted: Vec<IpAddr>,
}

/// An admitted connection's place: given back when dropped.
pub struct Admitted {
    key: Option<IpAddr>,
    admission: Arc<Admission>,
}

impl Admission {
    #[must_use]
    pub fn new(limits: &Limits, trusted: Vec<IpAddr>, tally: Arc<Tally>) -> Self {
        let admission = Self {
            inner: Mutex::new(Inner { open: HashMap::new(), total: 0, max: 0, per_source: 0, trusted: Vec::new() }),
            handshakes: RateLimit::new(limits.handshakes_per_minute),
            tally,
        };
        admission.set_limits(limits, trusted);
        admission
    }

    /// Holds connections from now on to `limits` and exempts `trusted`; connections open now stay
    /// open and keep counting.
    pub fn set_limits(&self, limits: &Limits, trusted: Vec<IpAddr>) {
        let mut inner = self.lock();
        inner.max = limits.max_connections;
        inner.per_source = limits.connections_per_source.min(limits.max_connections);
        inner.trusted = trusted;
        self.handshakes.set_per_minute(limits.handshakes_per_minute);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a connection from `source`, or says which limit refused it (counted and logged at
    /// a bounded rate by the tally).
    ///
    /// # Errors
    /// The limit that refused it.
    pub fn admit(self: &Arc<Self>, source: IpAddr, now: Instant) -> Result<Admitted, Refusal> {
        // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d.
        let source = source.to_canonical();
        let refusal = {
            let mut inner = self.lock();
            let key = (!inner.trusted.contains(&source)).then(|| source_key(source));
            let held = key.map_or(0, |key| inner.open.get(&key).copied().unwrap_or(0));
            if key.is_some() && held >= inner.per_source {
                Refusal::PerSource
            } else if key.is_some() && !self.handshakes.allow(source, now) {
                Refusal::HandshakeRate
            } else if inner.total >= inner.max {
                Refusal::Global
            } else {
                inner.total += 1;
                if let Some(key) = key {
                    *inner.open.entry(key).or_insert(0) += 1;
                }
                return Ok(Admitted { key, admission: Arc::clone(self) });
            }
        };
        self.tally.refused(refusal, source);
        Err(refusal)
    }

    fn release(&self, key: Option<IpAddr>) {
        let mut inner = self.lock();
        inner.total -= 1;
        if let Some(key) = key
            && let Some(count) = inner.open.get_mut(&key)
        {
            *count -= 1;
            if *count == 0 {
                inner.open.remove(&key);
            }
        }
    }

    /// Connections open now, and the number of sources (trusted proxies aside) holding them.
    #[must_use]
    pub fn open(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.total, inner.open.len())
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.release(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max: usize, per_source: usize, per_minute: u32, trusted: &[&str]) -> Arc<Admission> {
        let limits = Limits {
            max_connections: max,
            connections_per_source: per_source,
            handshakes_per_minute: per_minute,
            ..Limits::default()
        };
        let trusted = trusted.iter().map(|t| t.parse().unwrap()).collect();
        Arc::new(Admission::new(&limits, trusted, Arc::new(Tally::default())))
    }

    #[test]
    fn a_source_holds_at_most_its_share_and_gets_it_back() {
        let admission = admission(10, 2, 1000, &[]);
        let now = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let held: Vec<_> = (0..2).map(|_| admission.admit(a, now).unwrap()).collect();
        assert_eq!(admission.admit(a, now).err(), Some(Refusal::PerSource));
        assert!(admission.admit("192.0.2.2".parse().unwrap(), now).is_ok(), "another source is admitted");
        drop(held);
        assert_eq!(admission.open(), (0, 0), "closed connections leave no entry");
        assert!(admission.admit(a, now).is_ok());
    }

    #[test]
    fn new_limits_apply_to_new_connections_and_open_ones_keep_counting() {
        let admission = admission(10, 3, 1000, &[]);
        let now = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let held: Vec<_> = (0..3).map(|_| admission.admit(a, now).unwrap()).collect();
        let lower = Limits { max_connections: 10, connections_per_source: 1, ..Limits::default() };
        admission.set_limits(&lower, Vec::new());
        assert_eq!(admission.admit(a, now).err(), Some(Refusal::PerSource));
        drop(held);
        let first = admission.admit(a, now).unwrap();
        assert_eq!(admission.admit(a, now).err(), Some(Refusal::PerSource), "the new cap of 1");
        drop(first);
        assert_eq!(admission.open(), (0, 0));
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source() {
        let admission = admission(10, 1, 1000, &[]);
        let now = Instant::now();
        let _held = admission.admit("2001:db8:1:2::1".parse().unwrap(), now).unwrap();
        assert_eq!(admission.admit("2001:db8:1:2::99".parse().unwrap(), now).err(), Some(Refusal::PerSource));
        assert!(admission.admit("2001:db8:1:3::1".parse().unwrap(), now).is_ok());
    }

    #[test]
    fn handshakes_are_rate_limited_and_the_global_cap_holds() {
        let admission = admission(3, 10, 2, &["10.0.0.5"]);
        let now = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        drop(admission.admit(a, now).unwrap());
        drop(admission.admit(a, now).unwrap());
        assert_eq!(admission.admit(a, now).err(), Some(Refusal::HandshakeRate));
        assert_eq!(admission.open(), (0, 0), "a refused source leaves no entry");
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let held: Vec<_> = (0..3).map(|_| admission.admit(proxy, now).unwrap()).collect();
        assert_eq!(admission.admit(proxy, now).err(), Some(Refusal::Global), "a trusted proxy meets only the cap");
        assert_eq!(admission.admit("192.0.2.9".parse().unwrap(), now).err(), Some(Refusal::Global));
        drop(held);
        // Per source, handshake rate, global cap.
        assert_eq!(admission.tally.refusals(), [0, 1, 2]);
    }
}

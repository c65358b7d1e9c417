//! Why a request was refused (for the log and the counters, never for the requester) and the
//! service's counters.
use std::{
    collections::VecDeque,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use gate_protocol::ProtocolError;
use serde::Serialize;

/// One reason per check of docs/protocol.md, in check order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    TooLarge,
    Malformed,
    Skew,
    UnknownToken,
    BadHmac,
    Replay,
    BadBox,
    BadSignature,
    PayloadMismatch,
    Revoked,
    GateNotAllowed,
    UnknownGate,
    ForbiddenAddress,
    NoAddress,
    LeaseFailed,
    Internal,
    NotFromFront,
    VpnDisabled,
}

impl Rejection {
    pub const ALL: [Self; 18] = [
        Self::TooLarge,
        Self::Malformed,
        Self::Skew,
        Self::UnknownToken,
        Self::BadHmac,
        Self::Replay,
        Self::BadBox,
        Self::BadSignature,
        Self::PayloadMismatch,
        Self::Revoked,
        Self::GateNotAllowed,
        Self::UnknownGate,
        Self::ForbiddenAddress,
        Self::NoAddress,
        Self::LeaseFailed,
        Self::Internal,
        Self::NotFromFront,
        Self::VpnDisabled,
    ];

    /// The counter's name.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::Skew => "skew",
            Self::UnknownToken => "unknown_token",
            Self::BadHmac => "bad_hmac",
            Self::Replay => "replay",
            Self::BadBox => "bad_box",
            Self::BadSignature => "bad_signature",
            Self::PayloadMismatch => "payload_mismatch",
            Self::Revoked => "revoked",
            Self::GateNotAllowed => "gate_not_allowed",
            Self::UnknownGate => "unknown_gate",
            Self::ForbiddenAddress => "forbidden_address",
            Self::NoAddress => "no_address",
            Self::LeaseFailed => "lease_failed",
            Self::Internal => "internal",
            Self::NotFromFront => "not_from_front",
            Self::VpnDisabled => "vpn_disabled",
        }
    }

    /// The reason for a failed parse.
    #[must_use]
    pub const fn of_parse(error: &ProtocolError) -> Self {
        match error {
            ProtocolError::TooLarge(_) => Self::TooLarge,
            _ => Self::Malformed,
        }
    }
}

/// Upper bounds of the approval time histogram, in seconds: a granted approval takes ~1 ms
/// (docs/benchmarks.md); the upper buckets show a store or a host in trouble.
pub const LATENCY_BUCKETS: [f64; 12] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// Counters since the daemon started.
pub struct Counters {
    approved: AtomicU64,
    /// Approvals by gate id (index; 0 unused).
    approved_on: [AtomicU64; gate_common::MAX_GATES as usize + 1],
    /// Approvals of requests boxed to the server's previous key (a rotation under way).
    approved_with_previous_key: AtomicU64,
    rejected: [AtomicU64; Rejection::ALL.len()],
    requests: AtomicU64,
    hmac_checks: AtomicU64,
    rsa_verifications: AtomicU64,
    /// The last approvals (at most [`RECENT`]): µs inside the service, and µs of it in crypto.
    recent: Mutex<VecDeque<(u32, u32)>>,
    /// Every granted approval's time inside the service, for the metrics page.
    pub latency: gate_config::metrics::Histogram,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            approved: AtomicU64::default(),
            approved_on: [const { AtomicU64::new(0) }; gate_common::MAX_GATES as usize + 1],
            approved_with_previous_key: AtomicU64::default(),
            rejected: Default::default(),
            requests: AtomicU64::default(),
            hmac_checks: AtomicU64::default(),
            rsa_verifications: AtomicU64::default(),
            recent: Mutex::default(),
            latency: gate_config::metrics::Histogram::new(&LATENCY_BUCKETS),
        }
    }
}

/// How many approval times are kept for the percentiles.
pub const RECENT: usize = 1024;

/// A copy of the counters, as the internal API serves them.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct CountersSnapshot {
    /// Requests on the internal socket (reading these counters excepted), whoever sent them.
    #[serde(default)]
    pub requests: u64,
    pub approved: u64,
    /// Approvals by gate id (gates with none left out).
    #[serde(default)]
    pub approved_by_gate: std::collections::BTreeMap<u32, u64>,
    /// Approvals of requests boxed to the server's previous box key (profiles not yet updated
    /// during a key rotation).
    #[serde(default)]
    pub approved_with_previous_key: u64,
    pub rejected: std::collections::BTreeMap<String, u64>,
    pub hmac_checks: u64,
    pub rsa_verifications: u64,
    /// Time inside the service per approval, request parsed to leases written, over the last
    /// approvals (at most 1024): p50 and p99 in µs (0 before the first).
    pub approval_us_p50: u32,
    pub approval_us_p99: u32,
    /// Of that, the crypto (HMAC check, box open, RSA verify, answer sealed): p50 in µs.
    pub approval_crypto_us_p50: u32,
    /// Median over those approvals of (time inside the service / its crypto time).
    pub approval_over_crypto_p50: f64,
}

impl Counters {
    pub fn approved(&self, took: Duration, crypto: Duration) {
        self.approved.fetch_add(1, Relaxed);
        self.latency.observe(took);
        let micros = |d: Duration| u32::try_from(d.as_micros()).unwrap_or(u32::MAX).max(1);
        let mut recent = self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back((micros(took), micros(crypto)));
    }

    /// (p50, p99 of the time inside, p50 of the crypto time, p50 of their ratio).
    fn percentiles(&self) -> (u32, u32, u32, f64) {
        let recent: Vec<(u32, u32)> =
            self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().copied().collect();
        if recent.is_empty() {
            return (0, 0, 0, 0.0);
        }
        let mut took: Vec<u32> = recent.iter().map(|r| r.0).collect();
        let mut crypto: Vec<u32> = recent.iter().map(|r| r.1).collect();
        let mut ratio: Vec<f64> = recent.iter().map(|r| f64::from(r.0) / f64::from(r.1)).collect();
        took.sort_unstable();
        crypto.sort_unstable();
        ratio.sort_unstable_by(f64::total_cmp);
        let at = |len: usize, p: usize| (len - 1) * p / 100;
        (took[at(took.len(), 50)], took[at(took.len(), 99)], crypto[at(crypto.len(), 50)], ratio[at(ratio.len(), 50)])
    }

    /// Counts an approval on gate `id` (besides [`Self::approved`], which times it).
    pub fn approved_on(&self, id: u32) {
        if let Some(counter) = self.approved_on.get(id as usize) {
            counter.fetch_add(1, Relaxed);
        }
    }

    /// Counts an approval of a request boxed to the previous server key.
    pub fn approved_with_previous_key(&self) {
        self.approved_with_previous_key.fetch_add(1, Relaxed);
    }

    pub fn rejected(&self, reason: Rejection) {
        self.rejected[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn request(&self) {
        self.requests.fetch_add(1, Relaxed);
    }

    pub fn hmac_check(&self) {
        self.hmac_checks.fetch_add(1, Relaxed);
    }

    pub fn rsa_verification(&self) {
        self.rsa_verifications.fetch_add(1, Relaxed);
    }

    #[must_use]
    pub fn snapshot(&self) -> CountersSnapshot {
        let (p50, p99, crypto_p50, ratio_p50) = self.percentiles();
        CountersSnapshot {
            requests: self.requests.load(Relaxed),
            approved: self.approved.load(Relaxed),
            approved_by_gate: (0..)
                .zip(&self.approved_on)
                .map(|(id, counter)| (id, counter.load(Relaxed)))
                .filter(|&(_, count)| count > 0)
                .collect(),
            approved_with_previous_key: self.approved_with_previous_key.load(Relaxed),
            rejected: Rejection::ALL
                .iter()
                .map(|r| (r.name().to_owned(), self.rejected[*r as usize].load(Relaxed)))
                .collect(),
            hmac_checks: self.hmac_checks.load(Relaxed),
            rsa_verifications: self.rsa_verifications.load(Relaxed),
            approval_us_p50: p50,
            approval_us_p99: p99,
            approval_crypto_us_p50: crypto_p50,
            approval_over_crypto_p50: ratio_p50,
        }
    }
}

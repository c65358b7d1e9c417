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
}

impl Rejection {
    pub const ALL: [Self; 16] = [
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

/// Counters since the daemon started.
#[derive(Debug, Default)]
pub struct Counters {
    approved: AtomicU64,
    rejected: [AtomicU64; Rejection::ALL.len()],
    hmac_checks: AtomicU64,
    rsa_verifications: AtomicU64,
    /// How long the last approvals took inside the service (µs), at most [`RECENT`] of them.
    recent: Mutex<VecDeque<u32>>,
}

/// How many approval times are kept for the percentiles.
pub const RECENT: usize = 1024;

/// A copy of the counters, as the internal API serves them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct CountersSnapshot {
    pub approved: u64,
    pub rejected: std::collections::BTreeMap<String, u64>,
    pub hmac_checks: u64,
    pub rsa_verifications: u64,
    /// Time inside the service per approval, request parsed to leases written, over the last
    /// approvals (at most 1024): p50 and p99 in µs (0 before the first).
    pub approval_us_p50: u32,
    pub approval_us_p99: u32,
}

impl Counters {
    pub fn approved(&self, took: Duration) {
        self.approved.fetch_add(1, Relaxed);
        let mut recent = self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
    }

    fn percentiles(&self) -> (u32, u32) {
        let mut times: Vec<u32> =
            self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().copied().collect();
        if times.is_empty() {
            return (0, 0);
        }
        times.sort_unstable();
        let at = |p: usize| times[(times.len() - 1) * p / 100];
        (at(50), at(99))
    }

    pub fn rejected(&self, reason: Rejection) {
        self.rejected[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn hmac_check(&self) {
        self.hmac_checks.fetch_add(1, Relaxed);
    }

    pub fn rsa_verification(&self) {
        self.rsa_verifications.fetch_add(1, Relaxed);
    }

    #[must_use]
    pub fn snapshot(&self) -> CountersSnapshot {
        let (p50, p99) = self.percentiles();
        CountersSnapshot {
            approved: self.approved.load(Relaxed),
            rejected: Rejection::ALL
                .iter()
                .map(|r| (r.name().to_owned(), self.rejected[*r as usize].load(Relaxed)))
                .collect(),
            hmac_checks: self.hmac_checks.load(Relaxed),
            rsa_verifications: self.rsa_verifications.load(Relaxed),
            approval_us_p50: p50,
            approval_us_p99: p99,
        }
    }
}

//! The front's refusals, counted: connections turned away before TLS, by the limit that refused
//! them, failed accepts, and answers by status. Logging is bounded whatever a stranger sends:
//! each cause is logged once when it starts (with its source), then only in a summary line per
//! interval while it lasts, so a flood costs a line a minute, not a line a refusal.
use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

/// How often the summary of refusals is logged (when there were any).
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(60);

/// Which limit refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The source already holds `connections_per_source` connections.
    PerSource,
    /// The source opened more than `handshakes_per_minute` connections.
    HandshakeRate,
    /// `max_connections` are open.
    Global,
}

impl Refusal {
    pub const ALL: [Self; 3] = [Self::PerSource, Self::HandshakeRate, Self::Global];

    /// Its label on the metrics page.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::PerSource => "per_source",
            Self::HandshakeRate => "handshake_rate",
            Self::Global => "global",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::PerSource => "over the per-source connection cap (limits.connections_per_source)",
            Self::HandshakeRate => "over the per-source handshake rate (limits.handshakes_per_minute)",
            Self::Global => "at the connection cap (limits.max_connections)",
        }
    }
}

#[derive(Default)]
pub struct Tally {
    refusals: [AtomicU64; 3],
    /// Whether each cause has been logged since the last summary.
    announced: [AtomicBool; 3],
    accept_errors: AtomicU64,
    accept_announced: AtomicBool,
    answers: Mutex<BTreeMap<u16, u64>>,
    /// The totals at the last summary, to log only what changed.
    last: Mutex<([u64; 3], u64, BTreeMap<u16, u64>)>,
}

impl Tally {
    /// Counts a refused connection; logs the first of its cause since the last summary.
    pub fn refused(&self, refusal: Refusal, source: IpAddr) {
        let i = refusal as usize;
        self.refusals[i].fetch_add(1, Ordering::Relaxed);
        if !self.announced[i].swap(true, Ordering::Relaxed) {
            gate_config::logging::with_fields(
                log::Level::Warn,
                module_path!(),
                &[("limit", refusal.name()), ("address", &source.to_string())],
                format_args!(
                    "refusing connections {}, first from {source}; counted, and summarised every {}s while it lasts",
                    refusal.describe(),
                    SUMMARY_INTERVAL.as_secs()
                ),
            );
        }
    }

    /// Counts a failed accept (out of descriptors, say); logs the first since the last summary.
    pub fn accept_failed(&self, error: &std::io::Error) {
        self.accept_errors.fetch_add(1, Ordering::Relaxed);
        if !self.accept_announced.swap(true, Ordering::Relaxed) {
            log::warn!("accept: {error}; counted, and summarised every {}s while it lasts", SUMMARY_INTERVAL.as_secs());
        }
    }

    /// Counts an answer by its status.
    pub fn answered(&self, status: u16) {
        *self.answers.lock().unwrap_or_else(PoisonError::into_inner).entry(status).or_insert(0) += 1;
    }

    /// Refused connections so far: per source, handshake rate, global cap.
    #[must_use]
    pub fn refusals(&self) -> [u64; 3] {
        self.refusals.each_ref().map(|c| c.load(Ordering::Relaxed))
    }

    /// Failed accepts so far.
    #[must_use]
    pub fn accept_errors(&self) -> u64 {
        self.accept_errors.load(Ordering::Relaxed)
    }

    /// Answers so far, by status.
    #[must_use]
    pub fn answers(&self) -> BTreeMap<u16, u64> {
        self.answers.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The line for what happened since the last call, if any refusal or error did (answers
    /// with a status of 400 or more count as refusals); re-arms the first-of-cause warnings.
    pub fn summary(&self) -> Option<String> {
        let refusals = self.refusals();
        let accept_errors = self.accept_errors.load(Ordering::Relaxed);
        let answers = self.answers();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let mut parts = Vec::new();
        for (i, refusal) in Refusal::ALL.iter().enumerate() {
            let new = refusals[i] - last.0[i];
            if new > 0 {
                parts.push(format!("{new} connections refused {}", refusal.describe()));
            }
        }
        if accept_errors > last.1 {
            parts.push(format!("{} failed accepts", accept_errors - last.1));
        }
        let refused_answers: Vec<String> = answers
            .iter()
            .filter(|(status, _)| **status >= 400)
            .filter_map(|(status, n)| {
                let new = n - last.2.get(status).copied().unwrap_or(0);
                (new > 0).then(|| format!("{status} x{new}"))
            })
            .collect();
        if !refused_answers.is_empty() {
            parts.push(format!("answered {}", refused_answers.join(", ")));
        }
        *last = (refusals, accept_errors, answers);
        for flag in &self.announced {
            flag.store(false, Ordering::Relaxed);
        }
        self.accept_announced.store(false, Ordering::Relaxed);
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    /// Logs [`Self::summary`] every `interval`, forever.
    pub async fn report(&self, interval: Duration) {
        let mut ticks = tokio::time::interval(interval);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            if let Some(summary) = self.summary() {
                log::warn!("in the last {}s: {summary}", interval.as_secs());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_says_what_changed_since_the_last_one() {
        let tally = Tally::default();
        let source: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(tally.summary(), None, "nothing happened");
        for _ in 0..5 {
            tally.refused(Refusal::PerSource, source);
        }
        tally.answered(200);
        tally.answered(429);
        tally.answered(429);
        let summary = tally.summary().unwrap();
        assert!(summary.contains("5 connections refused over the per-source connection cap"), "{summary}");
        assert!(summary.contains("answered 429 x2") && !summary.contains("200"), "{summary}");
        tally.answered(400);
        assert_eq!(tally.summary().unwrap(), "answered 400 x1");
        assert_eq!(tally.summary(), None);
        assert_eq!(tally.refusals(), [5, 0, 0]);
    }
}

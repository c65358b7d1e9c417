//! Store failures logged as a state, not one line a request: a database that went away fails
//! every approval (each refused with the uniform answer, counted as `internal`), and a storm of
//! them must not become a storm of log lines. The first failure is logged at once, then one
//! line every [`REPEAT`] while failures go on (with their count), and one when the store
//! answers again.
use std::{
    fmt::Display,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

pub const REPEAT: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct StoreTrouble {
    /// Set while failing: a success costs one atomic read otherwise.
    failing: AtomicBool,
    /// Since when, when last logged, failures not logged since.
    state: Mutex<Option<(Instant, Instant, u64)>>,
}

impl StoreTrouble {
    /// A store operation (`what`) failed with `error`.
    pub fn failed(&self, what: &str, error: &dyn Display) {
        self.failed_at(what, error, Instant::now());
    }

    fn failed_at(&self, what: &str, error: &dyn Display, now: Instant) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut *state {
            None => {
                log::error!("store: {what}: {error} (approvals are refused until the store answers)");
                *state = Some((now, now, 0));
                self.failing.store(true, Ordering::SeqCst);
            }
            Some((since, logged, held)) if now.duration_since(*logged) >= REPEAT => {
                log::error!(
                    "store: {what}: {error} ({} more failures in the last {} s; failing for {} s)",
                    *held,
                    now.duration_since(*logged).as_secs(),
                    now.duration_since(*since).as_secs()
                );
                *logged = now;
                *held = 0;
            }
            Some((_, _, held)) => *held += 1,
        }
    }

    /// A store operation worked.
    pub fn answered(&self) {
        if !self.failing.load(Ordering::Relaxed) {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((since, _, _)) = state.take() {
            log::warn!("store: answering again after {} s of failures", since.elapsed().as_secs());
            self.failing.store(false, Ordering::SeqCst);
        }
    }

    /// Whether the last store operation failed.
    #[must_use]
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_a_state_with_a_line_every_few_seconds() {
        let trouble = StoreTrouble::default();
        let t0 = Instant::now();
        for i in 0..1000 {
            trouble.failed_at("record", &"connection refused", t0 + Duration::from_millis(i));
        }
        assert!(trouble.is_failing());
        assert_eq!(trouble.state.lock().unwrap().map(|(_, _, held)| held), Some(999), "one line for the first second");
        trouble.failed_at("record", &"connection refused", t0 + REPEAT);
        assert_eq!(trouble.state.lock().unwrap().map(|(_, logged, held)| (logged, held)), Some((t0 + REPEAT, 0)));
        trouble.answered();
        assert!(!trouble.is_failing());
        assert!(trouble.state.lock().unwrap().is_none());
    }
}

//! Bounded logging of refusals: a flood of bad requests must not become a flood of log lines.
//! At most [`PER_SECOND`] refusals are logged each second; the rest are counted and the count is
//! logged with the next line that gets through. The counters see every refusal regardless.
use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

pub const PER_SECOND: u32 = 20;

#[derive(Debug)]
pub struct LogLimit {
    window: Mutex<(Instant, u32, u64)>,
}

impl Default for LogLimit {
    fn default() -> Self {
        Self { window: Mutex::new((Instant::now(), 0, 0)) }
    }
}

impl LogLimit {
    /// Whether a line may be logged now; `Some(n)` with how many were held back before it.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut window = self.window.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (start, logged, suppressed) = &mut *window;
        if now.duration_since(*start) >= Duration::from_secs(1) {
            *start = now;
            *logged = 0;
        }
        if *logged < PER_SECOND {
            *logged += 1;
            Some(std::mem::take(suppressed))
        } else {
            *suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_cut_and_counted() {
        let limit = LogLimit::default();
        let t0 = Instant::now();
        let admitted = (0..100).filter(|_| limit.admit(t0).is_some()).count();
        assert_eq!(admitted, PER_SECOND as usize);
        assert_eq!(limit.admit(t0 + Duration::from_secs(1)), Some(80), "the held-back count comes with the next line");
    }
}

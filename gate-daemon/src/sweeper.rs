//! Deletes leases that have been closed for a while, so the lease maps do not fill with the dead.
//!
//! Correctness never depends on it: the program refuses a closed lease by its deadlines alone.
//! A closed lease is kept one sweep interval before deletion, so the counters can still tell
//! "expired" from "never had a lease" for a moment.
//!
//! The sweep opens the pinned maps itself rather than sharing the approvals' handle: it reads
//! the leases without any lock and deletes the dead in small batches under the pin dir's lock
//! (`GateState::sweep_yielding`), and between batches it lets the daemon's waiting writers
//! ([`Writers`]) go first, so an approval waits for one batch at most, never for a whole sweep.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use gate_maps::{GateState, StateError, clock};

use crate::writers::Writers;

/// How long the sweep holds back for the daemon's writers between two batches, at most: a stuck
/// writer must not stop the sweep.
const YIELD_AT_MOST: Duration = Duration::from_millis(50);

/// One sweep of the maps pinned at `pin_dir` (leases closed `grace_ns` before `now_ns`) on a
/// handle of its own, letting `writers` go first between batches, and leaving them the count of
/// live leases it read. Returns how many it deleted.
///
/// # Errors
/// The maps cannot be opened, read or written.
pub fn sweep(pin_dir: &Path, writers: &Writers, now_ns: u64, grace_ns: u64) -> Result<usize, StateError> {
    let yield_to_writers = || {
        let started = std::time::Instant::now();
        while writers.busy() && started.elapsed() < YIELD_AT_MOST {
            std::thread::sleep(Duration::from_micros(50));
        }
    };
    let swept = GateState::open(pin_dir)?.sweep_yielding(now_ns, grace_ns, yield_to_writers)?;
    writers.swept(swept.live);
    Ok(swept.removed)
}

/// Sweeps the maps pinned at `pin_dir` every `interval` until the task is dropped, yielding to
/// `writers` between batches.
pub async fn run(pin_dir: PathBuf, writers: Arc<Writers>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let (pin_dir, writers) = (pin_dir.clone(), Arc::clone(&writers));
        let swept =
            tokio::task::spawn_blocking(move || sweep(&pin_dir, &writers, clock::now_ns(), clock::nanos(interval)))
                .await;
        match swept {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => log::info!("swept {n} closed leases"),
            Ok(Err(e)) => log::warn!("sweep failed: {e}"),
            Err(e) => log::error!("sweep task died: {e}"),
        }
    }
}

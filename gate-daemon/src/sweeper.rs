//! Deletes leases that have been closed for a while, so the lease maps do not fill with the dead.
//!
//! Correctness never depends on it: the program refuses a closed lease by its deadlines alone.
//! A closed lease is kept one sweep interval before deletion, so the counters can still tell
//! "expired" from "never had a lease" for a moment.
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use gate_maps::{GateState, clock};

/// Sweeps `state` every `interval` until the task is dropped.
pub async fn run(state: Arc<Mutex<GateState>>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let state = Arc::clone(&state);
        let swept = tokio::task::spawn_blocking(move || {
            let mut state = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            state.sweep(clock::now_ns(), clock::nanos(interval))
        })
        .await;
        match swept {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => log::info!("swept {n} closed leases"),
            Ok(Err(e)) => log::warn!("sweep failed: {e}"),
            Err(e) => log::error!("sweep task died: {e}"),
        }
    }
}

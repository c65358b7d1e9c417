//! Background work for the approval service: close the leases of revoked clients within
//! [`REVOCATION_TICK`] (gatectl closes them at once when it can reach the maps; this covers the
//! rest), and forget nonces, grants and session tokens past their keeping time.
use std::{sync::Arc, time::Duration};

use crate::approval::{ApprovalService, service::unix_now};

pub const REVOCATION_TICK: Duration = Duration::from_millis(250);
const PURGE_EVERY: u32 = 240; // ticks: once a minute

/// Runs until the task is dropped.
pub async fn run(service: Arc<ApprovalService>) {
    let mut ticker = tokio::time::interval(REVOCATION_TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tick: u32 = 0;
    loop {
        ticker.tick().await;
        tick = tick.wrapping_add(1);
        let purge = tick.is_multiple_of(PURGE_EVERY);
        let service = Arc::clone(&service);
        let done = tokio::task::spawn_blocking(move || once(&service, purge)).await;
        if let Err(e) = done {
            log::error!("approval upkeep task died: {e}");
        }
    }
}

fn once(service: &ApprovalService, purge: bool) {
    let now = unix_now();
    let host = &service.settings().host;
    let store = service.store();
    match service.state().with(|state| gate_store::end_grants(&store, state, host, now)) {
        Ok(0) => {}
        Ok(n) => log::info!("closed {n} leases of revoked clients"),
        Err(e) => log::warn!("closing leases of revoked clients: {e}"),
    }
    if purge {
        let purged =
            store.purge_nonces(now).and_then(|n| Ok(n + store.purge_grants(now)? + store.purge_session_tokens(now)?));
        match purged {
            Ok(0) => {}
            Ok(n) => log::debug!("forgot {n} old nonces, grants and session tokens"),
            Err(e) => log::warn!("purging the store: {e}"),
        }
    }
}

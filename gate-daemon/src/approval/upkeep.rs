//! Background work for the approval service: close the leases of revoked clients within
//! [`REVOCATION_TICK`] (gatectl closes them at once when it can reach the maps; this covers the
//! rest), and forget nonces, grants, session tokens and audit rows past their keeping time.
//!
//! Looking for revoked clients' grants reads every grant (100,000 after a storm of as many
//! clients), under the store and the maps' locks, so it is done only when another process
//! committed to the store since the last complete look: a revocation is always gatectl's
//! commit (the daemon never revokes), and an approval recorded before it is a grant the next
//! look sees. It was ~5% of the daemon's CPU in a storm, every approval waiting behind it.
//!
//! And this host's heartbeat ([`heartbeat`](crate::approval::heartbeat)), and the store's
//! checkpoints, on a connection of their own ([`checkpoints`]).
use std::{sync::Arc, time::Duration};

use crate::approval::{
    ApprovalService,
    heartbeat::{HEARTBEAT_EVERY, Presence},
    service::unix_now,
};

pub const REVOCATION_TICK: Duration = Duration::from_millis(250);
/// How often the store's write-ahead log is copied into the database file: often enough that
/// the log stays a few MiB in a storm (~30 KiB of log an approval).
const CHECKPOINT_TICK: Duration = Duration::from_millis(100);
const PURGE_EVERY: u32 = 240; // ticks: once a minute

/// Runs until the task is dropped: a look every [`REVOCATION_TICK`], and one at once when
/// another host's client write is heard ([`listen`]); a heartbeat at the first tick and every
/// [`HEARTBEAT_EVERY`].
pub async fn run(service: Arc<ApprovalService>, presence: Arc<Presence>) {
    let mut heard = service.client_changes();
    let beat_every = u32::try_from(HEARTBEAT_EVERY.as_millis() / REVOCATION_TICK.as_millis()).unwrap_or(1);
    let mut ticker = tokio::time::interval(REVOCATION_TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tick: u32 = 0;
    let mut looked_at = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            Ok(()) = heard.changed() => {}
        }
        tick = tick.wrapping_add(1);
        let purge = tick.is_multiple_of(PURGE_EVERY);
        let beat = tick % beat_every == 1;
        let (service, presence) = (Arc::clone(&service), Arc::clone(&presence));
        let work = move || {
            if beat {
                presence.beat(&service);
            }
            once(&service, purge, looked_at)
        };
        match tokio::task::spawn_blocking(work).await {
            Ok(version) => looked_at = version,
            Err(e) => log::error!("approval upkeep task died: {e}"),
        }
    }
}

/// For a PostgreSQL store: a thread with a connection of its own that hears every host's
/// client writes as they commit (LISTEN/NOTIFY) and wakes the upkeep and the OpenVPN
/// supervisors ([`ApprovalService::heard_client_change`]), so a
/// revocation made on another host closes this host's leases at once rather than at the next
/// look. The looks go on beside it: a notification lost while the connection was down costs at
/// most one [`REVOCATION_TICK`]. Nothing for SQLite (one host: its own look suffices).
pub fn listen(service: Arc<ApprovalService>) {
    // An SQLite store is a file (and this runs on the runtime: no connection made here).
    if service.store().path().is_some() {
        return;
    }
    let spawned = std::thread::Builder::new().name("store-listener".into()).spawn(move || {
        loop {
            let listener = service.store().listen_for_changes();
            match listener {
                Ok(None) => return,
                Ok(Some(mut listener)) => loop {
                    match listener.wait(Duration::from_secs(5)) {
                        Ok(true) => service.heard_client_change(),
                        Ok(false) => {}
                        Err(e) => {
                            service.trouble.failed("hear other hosts' client changes", &e);
                            break;
                        }
                    }
                },
                Err(e) => service.trouble.failed("listen for other hosts' client changes", &e),
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    if let Err(e) = spawned {
        log::error!("store listener: {e} (revocations from other hosts arrive at the next look)");
    }
}

/// Runs the store's checkpoints until the task is dropped.
pub async fn checkpoints(mut checkpointer: gate_store::Checkpointer) {
    let mut ticker = tokio::time::interval(CHECKPOINT_TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticker.tick().await;
        let done = tokio::task::spawn_blocking(move || {
            let outcome = checkpointer.run();
            (checkpointer, outcome)
        })
        .await;
        let outcome;
        (checkpointer, outcome) = match done {
            Ok(done) => done,
            Err(e) => {
                log::error!("store checkpoints stopped: {e}");
                return;
            }
        };
        // One line when it starts failing and one when it recovers, not one a tick.
        match outcome {
            Err(e) if !failing => {
                log::warn!("store checkpoint: {e} (the store checkpoints in its own commits meanwhile)");
                failing = true;
            }
            Ok(_) if failing => {
                log::info!("store checkpoints work again");
                failing = false;
            }
            _ => {}
        }
    }
}

/// One tick. `looked_at`: the store's generation at the last complete look for revoked
/// clients' grants; returns the one to remember (`None`: look again next time).
fn once(service: &ApprovalService, purge: bool, looked_at: Option<i64>) -> Option<i64> {
    let now = unix_now();
    let host = &service.settings().host;
    let store = service.store();
    // Read before the look: a commit landing during it changes the version, so the next tick
    // looks again.
    let mut version = match store.generation() {
        Ok(version) => {
            service.trouble.answered();
            Some(version)
        }
        Err(e) => {
            service.trouble.failed("read the store's generation", &e);
            None
        }
    };
    if version.is_none() || version != looked_at {
        match service.state().with(|state| gate_store::end_grants(&store, state, host, now, "daemon")) {
            Ok(0) => {}
            Ok(n) => log::info!("closed {n} leases of revoked clients"),
            Err(e) => {
                service.trouble.failed("close the leases of revoked clients", &e);
                version = None;
            }
        }
    }
    if purge {
        let kept_since = now.saturating_sub(service.settings().audit_keep.as_secs());
        let purged = store.purge_nonces(now).and_then(|n| {
            Ok(n + store.purge_grants(now)? + store.purge_session_tokens(now)? + store.purge_audit(kept_since)?)
        });
        match purged {
            Ok(0) => {}
            Ok(n) => log::debug!("forgot {n} old nonces, grants, session tokens and audit rows"),
            Err(e) => service.trouble.failed("purge the store", &e),
        }
    }
    version
}

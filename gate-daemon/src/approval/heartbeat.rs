//! This host's heartbeat in the store, every [`HEARTBEAT_EVERY`] while the daemon runs and a
//! last word when it stops cleanly: what `gatectl cluster status` shows of every host (version,
//! live leases as its last sweep counted them, approvals and refusals since it started).
//!
//! Each start of the daemon beats under a random instance number, so a second daemon
//! configured with the same `approval.host` in a cluster is noticed and logged: the two would
//! share their grants' tag and their shutdown states.
use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use gate_protocol::rand::{RngCore as _, rngs::OsRng};

use crate::approval::{ApprovalService, service::unix_now};

pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// How often at most a second daemon under this host's name is logged.
const SHARED_NAME_LOG_EVERY: u32 = 12; // heartbeats: once a minute

pub struct Presence {
    instance: i64,
    started_at: u64,
    /// Set after the first heartbeat written: a row another instance wrote is then a twin.
    beaten: AtomicBool,
    /// Heartbeats since the twin was last logged.
    since_logged: std::sync::atomic::AtomicU32,
}

impl Default for Presence {
    fn default() -> Self {
        Self {
            instance: i64::from_ne_bytes(OsRng.next_u64().to_ne_bytes()),
            started_at: unix_now(),
            beaten: AtomicBool::new(false),
            since_logged: std::sync::atomic::AtomicU32::new(SHARED_NAME_LOG_EVERY),
        }
    }
}

impl Presence {
    /// Writes this host's heartbeat (blocking: call it off the runtime).
    pub fn beat(&self, service: &ApprovalService) {
        let counters = service.counters.snapshot();
        let host = &service.settings().host;
        let beat = gate_store::Heartbeat {
            host,
            instance: self.instance,
            version: env!("CARGO_PKG_VERSION"),
            started_at: self.started_at,
            leases: service.state().live_leases().map(|n| u64::try_from(n).unwrap_or(u64::MAX)),
            approvals: counters.approved,
            refusals: counters.rejected.values().sum(),
        };
        match service.store().heartbeat(&beat, unix_now()) {
            Ok(twin) => {
                service.trouble.answered();
                let logged = self.since_logged.fetch_add(1, Ordering::Relaxed);
                if twin && self.beaten.load(Ordering::Relaxed) && logged >= SHARED_NAME_LOG_EVERY {
                    log::error!(
                        "another daemon writes heartbeats as host {host:?} in this store: give every host of a \
                         cluster its own approval.host"
                    );
                    self.since_logged.store(0, Ordering::Relaxed);
                }
                self.beaten.store(true, Ordering::Relaxed);
            }
            Err(e) => service.trouble.failed("write this host's heartbeat", &e),
        }
    }

    /// Marks this host stopped in the store (blocking), so its silence is not mistaken for a
    /// failure.
    pub fn stopped(&self, service: &ApprovalService) {
        if let Err(e) = service.store().host_stopped(&service.settings().host, self.instance, unix_now()) {
            log::warn!("store: could not mark this host stopped: {e}");
        }
    }
}

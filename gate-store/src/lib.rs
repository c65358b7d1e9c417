//! The gate's persistent state in one SQLite file (no server to run): the server's box key,
//! enrolled clients with their keys and secrets, the gates each may open, revocations, the
//! nonces of authenticated requests (so a replay is refused also after a restart), the grants
//! made (so a revocation can find its leases), one-time session tokens, and the audit trail.
//!
//! The file holds secrets: it is created 0600 and tightened to 0600 if found looser (SQLite's
//! WAL and shared-memory files take the database file's mode).
//!
//! The schema (`schema.sql`) uses only types and constraints PostgreSQL shares, keys rows by
//! client name and token rather than by local row ids, and tags host-local rows (nonces,
//! grants, session tokens) with the host that wrote them, so one shared database can later serve
//! a cluster of gate hosts (a nonce seen by any host is then a replay on every host).
mod audit;
mod error;
mod hosts;
mod location;
mod names;
mod pki;
mod postgres;
mod revocation;
mod rotation;
mod sealing;
mod shutdown;
mod sql;
mod store;

pub use audit::{AuditEvent, AuditKind, AuditQuery};
pub use error::StoreError;
pub use hosts::{DatabaseInfo, Heartbeat, HostRow};
pub use location::{StoreAccess, StoreLocation};
pub use names::validate_client_name;
pub use pki::ServerIdentity;
pub use postgres::ChangeListener;
pub use revocation::{EndGrantsError, end_grants};
pub use rotation::{CaState, ServerBoxKeys};
pub use sealing::{Sealing, StoreKey};
pub use shutdown::{ALL_HOSTS, FROM_NOTIFICATION, FROM_OPERATOR, ShutdownRow};
pub use store::{
    ApprovalRecord, Checkpointer, ClientRecord, DEFAULT_STORE_PATH, Grant, NewClient, NonceRecord, Recorded, Store,
    Write,
};

/// This host's tag in shared state when none is configured: the hostname.
#[must_use]
pub fn default_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

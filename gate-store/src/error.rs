use std::path::PathBuf;

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error(
        "no store at {0}: the daemon makes one at its first start, `gatectl client add` where the daemon's config names it"
    )]
    Missing(PathBuf),
    #[error(
        "store {path} is damaged: {reason}; restore it from a backup (a new store would have a new server key and no clients)"
    )]
    Damaged { path: PathBuf, reason: String },
    #[error("store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("store: {}", with_causes(.0))]
    Postgres(#[from] postgres::Error),
    #[error("store: {0}")]
    Sealed(String),
    #[error("store: the database cannot be reached: {0}")]
    Unreachable(String),
    #[error("store: client {0:?} already exists (revoke it first to enroll it again, e.g. on a new device)")]
    ClientExists(String),
    #[error(
        "store: client {client:?} is revoked but its leases are not all closed yet ({grants} left, on {hosts}): \
         each host's daemon closes them within a second; try again, or wait for them to expire"
    )]
    LeasesLeft { client: String, grants: u64, hosts: String },
    #[error("store: no client named {0:?}")]
    NoSuchClient(String),
    #[error("store: {0}")]
    Invalid(String),
    #[error("store: a stored key is malformed: {0}")]
    Key(#[from] gate_protocol::ProtocolError),
    #[error("store: schema version {found} is newer than this build's {supported}")]
    Schema { found: i64, supported: i64 },
}

/// An error with its causes, as PostgreSQL's client keeps the cause of "error performing TLS
/// handshake" (the certificate that failed) apart from its own message.
pub(crate) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

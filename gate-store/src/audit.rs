//! The audit trail: what changed who may pass, when, where and by whom (`gatectl audit`).
//! Approvals write their rows in the commit that records them ([`crate::Write::Approval`]), a
//! revocation's closed leases in [`crate::end_grants`]; the daemon and gatectl write the rest
//! with [`Store::record_audit`]. Rows older than the daemon's `audit.keep` are purged.
use std::net::IpAddr;

use crate::{
    Store, StoreError,
    sql::{Db, Tx, Value, args},
    store::{from_sql, to_sql},
};

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditKind {
    LeaseOpened,
    LeaseClosed,
    Enrolled,
    Revoked,
    ShutdownSet,
    ShutdownCleared,
    NotificationAccepted,
    /// A box key or CA rotation began (cause `server_key` or `ca`).
    KeyRotated,
    /// A rotation ended: the previous box key retired, the old CA forgotten.
    KeyRetired,
    /// A client's profile update was issued (`gatectl client update`).
    ProfileUpdated,
}

impl AuditKind {
    const ALL: [Self; 10] = [
        Self::LeaseOpened,
        Self::LeaseClosed,
        Self::Enrolled,
        Self::Revoked,
        Self::ShutdownSet,
        Self::ShutdownCleared,
        Self::NotificationAccepted,
        Self::KeyRotated,
        Self::KeyRetired,
        Self::ProfileUpdated,
    ];

    /// As stored and shown.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::LeaseOpened => "lease_opened",
            Self::LeaseClosed => "lease_closed",
            Self::Enrolled => "enrolled",
            Self::Revoked => "revoked",
            Self::ShutdownSet => "shutdown_set",
            Self::ShutdownCleared => "shutdown_cleared",
            Self::NotificationAccepted => "notification_accepted",
            Self::KeyRotated => "key_rotated",
            Self::KeyRetired => "key_retired",
            Self::ProfileUpdated => "profile_updated",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.name() == text)
            .ok_or_else(|| StoreError::Invalid(format!("audit event {text:?}")))
    }
}

/// One row of the trail.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuditEvent {
    /// Unix seconds.
    pub at: u64,
    pub host: String,
    #[serde(serialize_with = "kind_name")]
    pub event: AuditKind,
    /// Why: `approval`, `allow`, `revoke`, `revocation`, `expiry`, `vpn_shutdown`, ...
    pub cause: String,
    /// Who: the client of an approval, the local user who ran gatectl, `daemon`.
    pub actor: String,
    pub client: Option<String>,
    pub gate: Option<String>,
    pub address: Option<IpAddr>,
    pub detail: String,
}

fn kind_name<S: serde::Serializer>(kind: &AuditKind, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(kind.name())
}

impl AuditEvent {
    /// An event with no client, gate, address or detail (set the fields that apply).
    #[must_use]
    pub fn new(at: u64, host: &str, event: AuditKind, cause: &str, actor: &str) -> Self {
        Self {
            at,
            host: host.to_owned(),
            event,
            cause: cause.to_owned(),
            actor: actor.to_owned(),
            client: None,
            gate: None,
            address: None,
            detail: String::new(),
        }
    }

    #[must_use]
    pub fn client(mut self, client: &str) -> Self {
        self.client = Some(client.to_owned());
        self
    }

    #[must_use]
    pub fn lease(mut self, gate: &str, address: IpAddr) -> Self {
        self.gate = Some(gate.to_owned());
        self.address = Some(address);
        self
    }

    #[must_use]
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

/// Which rows `gatectl audit` wants: all of them, narrowed by each field that is set. Oldest
/// first; at most `limit`, the newest ones.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    pub since: Option<u64>,
    pub client: Option<String>,
    pub address: Option<IpAddr>,
    pub limit: u64,
}

/// Appends `event` inside a transaction the caller holds.
pub(crate) fn insert(db: &Db, event: &AuditEvent) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO audit (at, host, event, cause, actor, client, gate, address, detail) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        args![
            to_sql(event.at),
            &event.host,
            event.event.name(),
            &event.cause,
            &event.actor,
            Value::from(event.client.clone()),
            Value::from(event.gate.clone()),
            Value::from(event.address.map(|a| a.to_string())),
            &event.detail
        ],
    )?;
    Ok(())
}

impl Store {
    /// Appends `events` to the trail, all or none.
    ///
    /// # Errors
    /// The database failed.
    pub fn record_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        self.db().transaction(Tx::Rows, |db| events.iter().try_for_each(|event| insert(db, event)))
    }

    /// The rows `query` asks for, oldest first.
    ///
    /// # Errors
    /// The database failed, or a row is not one this build wrote.
    pub fn audit_trail(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        // Only the filters given, so each is a plain typed comparison (and the indexes serve).
        let mut filters = vec!["at >= ?1".to_owned()];
        let mut values = vec![Value::from(to_sql(query.since.unwrap_or(0)))];
        for (column, value) in [("client", query.client.clone()), ("address", query.address.map(|a| a.to_string()))] {
            if let Some(value) = value {
                values.push(Value::from(value));
                filters.push(format!("{column} = ?{}", values.len()));
            }
        }
        values.push(Value::from(to_sql(query.limit)));
        let sql = format!(
            "SELECT at, host, event, cause, actor, client, gate, address, detail FROM audit WHERE {} \
             ORDER BY at DESC LIMIT ?{}",
            filters.join(" AND "),
            values.len()
        );
        let rows = self.db().query(&sql, &values)?;
        let mut events = Vec::with_capacity(rows.len());
        for mut row in rows {
            let address = row.opt_text(7)?;
            events.push(AuditEvent {
                at: from_sql(row.int(0)?),
                host: row.text(1)?,
                event: AuditKind::parse(&row.text(2)?)?,
                cause: row.text(3)?,
                actor: row.text(4)?,
                client: row.opt_text(5)?,
                gate: row.opt_text(6)?,
                address: address
                    .map(|a| a.parse().map_err(|_| StoreError::Invalid(format!("audit address {a:?}"))))
                    .transpose()?,
                detail: row.text(8)?,
            });
        }
        events.reverse();
        Ok(events)
    }

    /// Forgets rows older than `before` (Unix seconds). Returns how many.
    ///
    /// # Errors
    /// The database failed.
    pub fn purge_audit(&self, before: u64) -> Result<u64, StoreError> {
        self.db().execute("DELETE FROM audit WHERE at < ?1", args![to_sql(before)])
    }
}

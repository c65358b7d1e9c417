//! The hosts of a store (one, or a cluster's): each daemon's heartbeat, and what the database
//! is, for `gatectl cluster status`.
use crate::{
    Store, StoreError,
    sql::{Tx, args},
    store::{from_sql, to_sql},
};

/// What a daemon says of itself at each heartbeat.
#[derive(Clone, Debug)]
pub struct Heartbeat<'a> {
    pub host: &'a str,
    /// Random at each start of the daemon (see [`Store::heartbeat`]).
    pub instance: i64,
    pub version: &'a str,
    pub started_at: u64,
    /// Live leases at its last sweep, if it swept yet.
    pub leases: Option<u64>,
    /// Approvals and refusals since it started.
    pub approvals: u64,
    pub refusals: u64,
}

/// A host as its last heartbeat left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRow {
    pub host: String,
    pub version: String,
    pub started_at: u64,
    pub seen_at: u64,
    /// When it stopped cleanly; `None` while it runs (or since it died without a word).
    pub stopped_at: Option<u64>,
    pub leases: Option<u64>,
    pub approvals: u64,
    pub refusals: u64,
}

/// The database a store lives in.
#[derive(Clone, Debug)]
pub struct DatabaseInfo {
    /// `SQLite` or `PostgreSQL`.
    pub product: &'static str,
    /// The server's version, or SQLite's.
    pub version: String,
    /// Where it is (no password).
    pub location: String,
    pub schema_version: i64,
    pub clients: u64,
    pub revoked: u64,
}

impl Store {
    /// Writes `beat` as `beat.host`'s heartbeat at `now`. Returns `true` if the row was last
    /// written by another instance: at a daemon's first beat, its own earlier run; at any
    /// later one, a second daemon running under the same host name.
    ///
    /// # Errors
    /// The database failed.
    pub fn heartbeat(&self, beat: &Heartbeat<'_>, now: u64) -> Result<bool, StoreError> {
        self.db().transaction(Tx::Rows, |db| {
            let before = db.query_opt("SELECT instance FROM hosts WHERE host = ?1", args![beat.host])?;
            let other = match before {
                Some(mut row) => row.int(0)? != beat.instance,
                None => false,
            };
            db.execute(
                "INSERT INTO hosts (host, instance, version, started_at, seen_at, stopped_at, leases, approvals, \
                 refusals) VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6, ?7, ?8) ON CONFLICT (host) DO UPDATE SET \
                 instance = excluded.instance, version = excluded.version, started_at = excluded.started_at, \
                 seen_at = excluded.seen_at, stopped_at = NULL, leases = excluded.leases, \
                 approvals = excluded.approvals, refusals = excluded.refusals",
                args![
                    beat.host,
                    beat.instance,
                    beat.version,
                    to_sql(beat.started_at),
                    to_sql(now),
                    beat.leases.map(to_sql),
                    to_sql(beat.approvals),
                    to_sql(beat.refusals)
                ],
            )?;
            Ok(other)
        })
    }

    /// Marks `host` stopped at `now`, if `instance` wrote its last heartbeat.
    ///
    /// # Errors
    /// The database failed.
    pub fn host_stopped(&self, host: &str, instance: i64, now: u64) -> Result<(), StoreError> {
        self.db().execute(
            "UPDATE hosts SET stopped_at = ?1, seen_at = ?1 WHERE host = ?2 AND instance = ?3",
            args![to_sql(now), host, instance],
        )?;
        Ok(())
    }

    /// Every host that ever beat, by name.
    ///
    /// # Errors
    /// The database failed.
    pub fn hosts(&self) -> Result<Vec<HostRow>, StoreError> {
        let rows = self.db().query(
            "SELECT host, version, started_at, seen_at, stopped_at, leases, approvals, refusals FROM hosts \
             ORDER BY host",
            args![],
        )?;
        rows.into_iter()
            .map(|mut row| {
                Ok(HostRow {
                    host: row.text(0)?,
                    version: row.text(1)?,
                    started_at: from_sql(row.int(2)?),
                    seen_at: from_sql(row.int(3)?),
                    stopped_at: row.opt_int(4)?.map(from_sql),
                    leases: row.opt_int(5)?.map(from_sql),
                    approvals: from_sql(row.int(6)?),
                    refusals: from_sql(row.int(7)?),
                })
            })
            .collect()
    }

    /// Forgets a host (one taken out of the cluster); `false` if none had that name. A host
    /// that still runs appears again at its next heartbeat.
    ///
    /// # Errors
    /// The database failed.
    pub fn forget_host(&self, host: &str) -> Result<bool, StoreError> {
        Ok(self.db().execute("DELETE FROM hosts WHERE host = ?1", args![host])? > 0)
    }

    /// What the database is and holds.
    ///
    /// # Errors
    /// The database failed.
    pub fn database(&self) -> Result<DatabaseInfo, StoreError> {
        let (product, version) = self.db().product()?;
        let schema_version = self.db().query_one("SELECT max(version) FROM schema_version", args![])?.int(0)?;
        let mut counts = self.db().query_one("SELECT count(*), count(revoked_at) FROM clients", args![])?;
        Ok(DatabaseInfo {
            product,
            version,
            location: self.location_name(),
            schema_version,
            clients: from_sql(counts.int(0)?),
            revoked: from_sql(counts.int(1)?),
        })
    }
}

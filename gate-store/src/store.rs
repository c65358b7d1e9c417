//! [`Store`]: typed calls over the store's database, an SQLite file or a PostgreSQL server,
//! each written once against [`Db`]. Times are Unix seconds, passed in by the caller.
use std::{
    cell::RefCell,
    collections::{BTreeSet, HashMap},
    fs::{self, OpenOptions},
    net::IpAddr,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    time::Duration,
};

use gate_protocol::{
    crypto_box::PublicKey,
    keys::{ClientPublic, HmacSecret, ServerKeys, Token, box_public, box_secret, rsa_public_der, rsa_public_from_der},
    rand::rngs::OsRng,
    rsa::RsaPublicKey,
};
use rusqlite::Connection;

use crate::{
    StoreError,
    postgres::PgConn,
    sealing::{Sealing, Secret},
    sql::{Db, Tx, Value, args},
    validate_client_name,
};

pub const DEFAULT_STORE_PATH: &str = "/var/lib/gate/gate.db";
pub(crate) const SCHEMA: &str = include_str!("schema.sql");
const SCHEMA_VERSION: i64 = 2;
/// Every table of the store but `schema_version`, with its columns, in an order that keeps
/// references whole (a client before its gates): what [`Store::copy_into`] copies.
const COPIED_TABLES: &[(&str, &[&str])] = &[
    ("server_keys", &["name", "box_secret", "created_at"]),
    ("clients", &["name", "token", "hmac_secret", "box_public", "rsa_public", "created_at", "revoked_at", "revision"]),
    ("client_gates", &["client", "gate"]),
    ("nonces", &["token", "nonce", "expires_at", "host"]),
    ("grants", &["client", "gate", "address", "expires_at", "host"]),
    ("session_tokens", &["digest", "client", "gate", "expires_at", "used_at", "host"]),
    ("pki_ca", &["name", "cert_pem", "key_pem", "created_at"]),
    ("certificates", &["serial", "kind", "name", "cert_pem", "key_pem", "issued_at", "revoked_at"]),
    ("sequences", &["name", "value"]),
    ("shutdown", &["part", "source", "state", "message", "set_at", "host"]),
    ("notifications_accepted", &["host", "serial", "accepted_at"]),
    ("audit", &["at", "host", "event", "cause", "actor", "client", "gate", "address", "detail"]),
];

/// What brings a store of the version before each up to that version, in order. (SQLite
/// only so far: PostgreSQL stores begin at version 2.)
const MIGRATIONS: &[(i64, &str)] =
    &[(2, "ALTER TABLE clients ADD COLUMN revision INTEGER NOT NULL DEFAULT 0; UPDATE clients SET revision = rowid;")];
/// Run after the schema and the migrations: objects on columns a migration may have added.
const INDEXES: &str = "CREATE INDEX IF NOT EXISTS clients_by_revision ON clients (revision);";
/// The next client revision, inside the writing transaction (writers are serialised, so the
/// revisions grow in commit order).
const NEXT_REVISION: &str = "(SELECT coalesce(max(revision), 0) + 1 FROM clients)";
pub(crate) const SERVER_KEY_NAME: &str = "default";
/// An X25519 secret key's length, as stored unsealed.
const BOX_SECRET_BYTES: usize = 32;

/// An enrolled client as the daemon needs it.
#[derive(Clone, Debug)]
pub struct ClientRecord {
    pub name: String,
    pub token: Token,
    pub secret: HmacSecret,
    pub box_public: PublicKey,
    pub rsa_public: RsaPublicKey,
    pub gates: BTreeSet<String>,
    pub created_at: u64,
    pub revoked_at: Option<u64>,
}

/// A client to enroll.
pub struct NewClient<'a> {
    pub name: &'a str,
    pub gates: &'a [String],
    pub public: &'a ClientPublic,
    pub secret: &'a HmacSecret,
    pub now: u64,
}

/// What an approval leaves in the store. Owned: a group commit may write it from another
/// thread (see [`Store::commit_group`]).
#[derive(Clone, Debug)]
pub struct ApprovalRecord {
    /// When it was approved (Unix seconds), for the audit trail.
    pub at: u64,
    pub client: String,
    pub gate: String,
    pub addresses: Vec<IpAddr>,
    pub expires_at: u64,
    /// The session token's digest and expiry.
    pub session: Option<(Vec<u8>, u64)>,
    pub host: String,
}

/// An authenticated request's nonce, kept until `expires_at`.
#[derive(Clone, Debug)]
pub struct NonceRecord {
    pub token: Token,
    pub nonce: Vec<u8>,
    pub expires_at: u64,
    pub host: String,
}

/// One write of an approval, committed alone or with those of other approvals.
#[derive(Clone, Debug)]
pub enum Write {
    /// The nonce of a request refused after its nonce was checked: spent all the same, so the
    /// same request cannot cost the checks again.
    Nonce(NonceRecord),
    /// An approval: its nonce, its grants and its session token, in one. A nonce seen before
    /// writes nothing ([`Recorded::Replay`]); a revoked client writes only the nonce
    /// ([`Recorded::Revoked`]), so a revocation either sees these grants or makes the write
    /// say no.
    Approval(NonceRecord, ApprovalRecord),
}

/// What a [`Write`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    Yes,
    /// The nonce was recorded before (by this host or another): nothing was written.
    Replay,
    /// The client is revoked: nothing but the nonce was written.
    Revoked,
}

/// An address a gate was opened for on a client's behalf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub client: String,
    pub gate: String,
    pub address: IpAddr,
    pub expires_at: u64,
    pub host: String,
}

/// The open store. Not `Sync`: share it behind a mutex.
pub struct Store {
    db: Db,
    location: Location,
    /// The store key(s) its secrets are sealed with (none: written as they are).
    sealing: Sealing,
}

/// Where a store's database is.
#[derive(Clone)]
enum Location {
    File(PathBuf),
    /// A PostgreSQL server; what is kept to name it in messages (no password).
    Postgres(String),
}

/// WAL pages after which a store whose checkpoints run on a [`Checkpointer`] checkpoints in its
/// own commit all the same (~80 MiB): only if the checkpointer falls that far behind.
const CHECKPOINT_BACKSTOP_PAGES: i64 = 20_000;

/// A second connection to a store that copies its write-ahead log into the database file
/// (SQLite's checkpoint), so the store's own commits never do it. A checkpoint writes back
/// every page changed since the last and syncs both files; done in a commit, as SQLite does by
/// default every 1,000 pages, it held the daemon's store, and every approval waiting for it,
/// for milliseconds at a time (a quarter of the CPU idle in a storm).
pub struct Checkpointer {
    conn: Connection,
}

impl Checkpointer {
    /// Checkpoints what the log holds, without waiting for or holding up the store's writer
    /// (PASSIVE). Returns the pages copied.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn run(&self) -> Result<u64, StoreError> {
        let (_busy, _log, copied): (i64, i64, i64) =
            self.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(from_sql(copied))
    }
}

/// A count, serial or Unix time as SQLite stores integers (i64, clamped).
pub(crate) fn to_sql(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// An integer as SQLite returns it (a negative one, never written, reads as 0).
pub(crate) fn from_sql(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Makes `path`'s directory (0700) if missing, then the store file itself (0600); refused if
/// a file is already there.
fn create_file(path: &Path) -> Result<(), StoreError> {
    let io = |source| StoreError::Open { path: path.to_owned(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        fs::create_dir_all(dir).map_err(io)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    OpenOptions::new().create_new(true).write(true).mode(0o600).open(path).map_err(io)?;
    Ok(())
}

/// Tightens an existing store file to 0600 if it is looser (it holds client secrets).
fn tighten(path: &Path) -> Result<(), StoreError> {
    let io = |source| StoreError::Open { path: path.to_owned(), source };
    let mode = fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
    if mode != 0o600 {
        log::warn!("store {}: mode {mode:o} tightened to 600 (it holds client secrets)", path.display());
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    Ok(())
}

/// What SQLite's file header says before SQLite is asked anything: an empty file, or one that is
/// not SQLite, would otherwise be taken for a new database and silently filled.
fn check_header(path: &Path) -> Result<(), StoreError> {
    let damaged = |reason: String| StoreError::Damaged { path: path.to_owned(), reason };
    let mut header = [0_u8; 100];
    let mut file = fs::File::open(path).map_err(|source| StoreError::Open { path: path.to_owned(), source })?;
    let read = std::io::Read::read(&mut file, &mut header).map_err(|e| damaged(format!("read its header: {e}")))?;
    match read {
        0 => Err(damaged("the file is empty (0 bytes)".into())),
        n if n < header.len() || !header.starts_with(b"SQLite format 3\0") => {
            Err(damaged("it is not an SQLite database (its header is wrong or cut short)".into()))
        }
        _ => Ok(()),
    }
}

/// The store's whole content as SQLite checks it (every page, every index against its table),
/// and the schema's version table, which every gate store has.
fn check_content(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let damaged = |reason: String| StoreError::Damaged { path: path.to_owned(), reason };
    let problems: Vec<String> = conn
        .prepare("PRAGMA integrity_check(5)")
        .and_then(|mut s| s.query_map([], |r| r.get::<_, String>(0))?.collect())
        .map_err(|e| damaged(format!("SQLite's integrity check failed: {e}")))?;
    if problems != ["ok"] {
        return Err(damaged(format!("SQLite's integrity check found: {}", problems.join("; "))));
    }
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'schema_version'", [], |r| {
            r.get(0)
        })
        .map_err(|e| damaged(format!("read its tables: {e}")))?;
    if tables == 0 {
        return Err(damaged("it is an SQLite database but not a gate store (no schema_version table)".into()));
    }
    Ok(())
}

/// Inserts a nonce unless it is there: `false` if it was (one statement, so two hosts on one
/// database cannot both take it).
fn insert_nonce(db: &Db, nonce: &NonceRecord) -> Result<bool, StoreError> {
    let inserted = db.execute(
        "INSERT INTO nonces (token, nonce, expires_at, host) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
        args![nonce.token.0.as_slice(), &nonce.nonce, to_sql(nonce.expires_at), &nonce.host],
    )?;
    Ok(inserted == 1)
}

/// One write inside the caller's transaction.
fn apply(db: &Db, write: &Write) -> Result<Recorded, StoreError> {
    let (nonce, approval) = match write {
        Write::Nonce(nonce) => (nonce, None),
        Write::Approval(nonce, approval) => (nonce, Some(approval)),
    };
    if !insert_nonce(db, nonce)? {
        return Ok(Recorded::Replay);
    }
    let Some(approval) = approval else { return Ok(Recorded::Yes) };
    // The client's row held until this commits: a revocation of it waits for these grants, so
    // it either sees them or is seen here.
    let live = db.locking(
        "SELECT 1 FROM clients WHERE name = ?1 AND revoked_at IS NULL",
        "SELECT 1 FROM clients WHERE name = ?1 AND revoked_at IS NULL FOR SHARE",
    );
    if db.query_opt(live, args![&approval.client])?.is_none() {
        return Ok(Recorded::Revoked);
    }
    for address in &approval.addresses {
        db.execute(
            "INSERT INTO grants (client, gate, address, expires_at, host) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (client, gate, address, host) DO UPDATE SET expires_at = excluded.expires_at",
            args![&approval.client, &approval.gate, address.to_string(), to_sql(approval.expires_at), &approval.host],
        )?;
    }
    for address in &approval.addresses {
        let opened = crate::AuditEvent::new(
            approval.at,
            &approval.host,
            crate::AuditKind::LeaseOpened,
            "approval",
            &approval.client,
        )
        .client(&approval.client)
        .lease(&approval.gate, *address)
        .detail(format!("for {}s", approval.expires_at.saturating_sub(approval.at)));
        crate::audit::insert(db, &opened)?;
    }
    if let Some((digest, expires_at)) = &approval.session {
        db.execute(
            "INSERT INTO session_tokens (digest, client, gate, expires_at, host) VALUES (?1, ?2, ?3, ?4, ?5)",
            args![digest, &approval.client, &approval.gate, to_sql(*expires_at), &approval.host],
        )?;
    }
    Ok(Recorded::Yes)
}

/// The box key pair stored (sealed) as `name` in `server_keys`.
pub(crate) fn box_keys(sealing: &Sealing, name: &str, stored: &[u8]) -> Result<ServerKeys, StoreError> {
    Ok(ServerKeys { box_secret: box_secret(&sealing.open(Secret::ServerBox(name), stored, BOX_SECRET_BYTES)?)? })
}

/// A revoked client's row given new keys (`keys`: name, token, sealed secret, box key, RSA key,
/// time, as [`Store::add_client`] binds them): enrolled again, as new. Refused while any host
/// still holds a grant of it (its leases not all closed: they would stay open to the old
/// device). Its gates are replaced, and its unspent session tokens dropped: an old device's
/// token must not start a VPN session once the name is enrolled again.
fn enroll_again(db: &Db, name: &str, keys: &[Value]) -> Result<(), StoreError> {
    let left = db.query_one(
        "SELECT count(*), coalesce(min(host), ''), coalesce(max(host), '') FROM grants WHERE client = ?1",
        args![name],
    );
    let mut left = left?;
    let grants = from_sql(left.int(0)?);
    if grants > 0 {
        let (first, last) = (left.text(1)?, left.text(2)?);
        let hosts = if first == last { first } else { format!("{first} ... {last}") };
        return Err(StoreError::LeasesLeft { client: name.to_owned(), grants, hosts });
    }
    db.execute(
        &format!(
            "UPDATE clients SET token = ?2, hmac_secret = ?3, box_public = ?4, rsa_public = ?5, created_at = ?6, \
             revoked_at = NULL, revision = {NEXT_REVISION} WHERE name = ?1"
        ),
        keys,
    )?;
    db.execute("DELETE FROM client_gates WHERE client = ?1", args![name])?;
    db.execute("DELETE FROM session_tokens WHERE client = ?1", args![name])?;
    Ok(())
}

/// Grant rows (client, gate, address, expires_at, host) as grants.
fn grants(rows: Vec<crate::sql::Row>) -> Result<Vec<Grant>, StoreError> {
    let mut grants = Vec::with_capacity(rows.len());
    for mut row in rows {
        let address = row.text(2)?;
        let address = address.parse().map_err(|_| StoreError::Invalid(format!("grant address {address:?}")))?;
        grants.push(Grant {
            client: row.text(0)?,
            gate: row.text(1)?,
            address,
            expires_at: from_sql(row.int(3)?),
            host: row.text(4)?,
        });
    }
    Ok(grants)
}

impl Store {
    /// Opens the existing store at `path`, after checking that it is whole: an empty, cut short,
    /// corrupt or foreign file is refused, never replaced. Once per process: the header is read
    /// apart from SQLite, and closing that read drops any lock the process's own SQLite
    /// connections hold on the file (POSIX locks are per process).
    ///
    /// # Errors
    /// [`StoreError::Missing`] if there is no file, [`StoreError::Damaged`] if it is not a sound
    /// gate store, or it holds a newer schema.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(StoreError::Missing(path.to_owned()));
        }
        tighten(path)?;
        check_header(path)?;
        let conn = Connection::open(path)?;
        check_content(&conn, path)?;
        Self::prepare(conn, path)
    }

    /// Opens the store at `path`, making a new one only if no file is there; `true` with a new
    /// one (whose server key is new: profiles of any other store do not work with it).
    ///
    /// # Errors
    /// As [`Self::open`], or the file cannot be created.
    pub fn open_or_create(path: impl AsRef<Path>) -> Result<(Self, bool), StoreError> {
        let path = path.as_ref();
        if path.exists() {
            return Ok((Self::open(path)?, false));
        }
        // Made whole beside it, then linked into place (never over a file another process made
        // meanwhile), so a crash half-way leaves no empty store to be refused at the next start.
        let io = |source| StoreError::Open { path: path.to_owned(), source };
        let mut name = path.file_name().unwrap_or_default().to_owned();
        // The pid and a count: two threads of one process may make a store at once too.
        static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let made = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        name.push(format!(".new-{}-{made}", std::process::id()));
        let fresh = path.with_file_name(name);
        let _ = fs::remove_file(&fresh);
        create_file(&fresh)?;
        let made = Connection::open(&fresh).map_err(StoreError::from).and_then(|conn| {
            conn.execute_batch(SCHEMA)?;
            conn.execute("INSERT INTO schema_version (version) VALUES (?1)", [SCHEMA_VERSION])?;
            Ok(())
        });
        let linked = made.and_then(|()| match fs::hard_link(&fresh, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io(e)),
        });
        let _ = fs::remove_file(&fresh);
        let created = linked?;
        Ok((Self::open(path)?, created))
    }

    /// Connects to the PostgreSQL store at `params` (a `postgres://` URL or libpq's
    /// `key=value` pairs), making its tables if the database has none; any number of hosts may
    /// do so at once.
    ///
    /// # Errors
    /// The server cannot be reached or refused, or its store has a newer schema.
    pub fn connect(params: &str) -> Result<Self, StoreError> {
        Self::connect_with(params, None, None).map(|(store, _)| store)
    }

    /// As [`Self::connect`], with the password apart from the parameters and the CA that
    /// signed the database's certificate (TLS); `true` if the store's tables were made now.
    ///
    /// # Errors
    /// As [`Self::connect`]; a CA file that is not one, or given with a URL that does not
    /// require TLS.
    pub fn connect_with(
        params: &str,
        password: Option<&str>,
        ca_file: Option<&Path>,
    ) -> Result<(Self, bool), StoreError> {
        let db = Db::Postgres(Box::new(RefCell::new(PgConn::connect(params, password, ca_file)?)));
        Self::ready(db, Location::Postgres(redacted(params)))
    }

    fn prepare(conn: Connection, path: &Path) -> Result<Self, StoreError> {
        conn.busy_timeout(Duration::from_secs(5))?;
        // WAL: readers never block the writer. synchronous=NORMAL: a commit survives a crash of
        // the process (a daemon restart); only a power loss can drop the last commits.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.set_prepared_statement_cache_capacity(64);
        Self::ready(Db::Sqlite(conn), Location::File(path.to_owned())).map(|(store, _)| store)
    }

    /// Makes the tables a store lacks and brings an older schema up to [`SCHEMA_VERSION`], all
    /// in one transaction: a process that opens the store at the same moment waits, then finds
    /// it done.
    /// `true` if the store had no schema yet.
    fn ready(db: Db, location: Location) -> Result<(Self, bool), StoreError> {
        let made = db.transaction(Tx::Schema, |db| {
            db.batch(&db.schema(SCHEMA))?;
            let found = db.query_one("SELECT max(version) FROM schema_version", args![])?.opt_int(0)?;
            match found {
                None => {
                    db.execute("INSERT INTO schema_version (version) VALUES (?1)", args![SCHEMA_VERSION])?;
                    db.batch(INDEXES)?;
                    return Ok(true);
                }
                Some(found) if found > SCHEMA_VERSION => {
                    return Err(StoreError::Schema { found, supported: SCHEMA_VERSION });
                }
                Some(found) => {
                    for (version, steps) in MIGRATIONS.iter().filter(|(version, _)| found < *version) {
                        db.batch(steps)?;
                        db.execute("INSERT INTO schema_version (version) VALUES (?1)", args![*version])?;
                        log::info!("store {}: schema upgraded from version {found} to {version}", location.name());
                    }
                }
            }
            db.batch(INDEXES)?;
            Ok(false)
        })?;
        Ok((Self { db, location, sealing: Sealing::default() }, made))
    }

    /// Where the store is, as it may be shown (no password).
    pub(crate) fn location_name(&self) -> String {
        self.location.name()
    }

    /// The store's file, if it is an SQLite store.
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        match &self.location {
            Location::File(path) => Some(path),
            Location::Postgres(_) => None,
        }
    }

    /// Hands this store's checkpoints to the returned [`Checkpointer`] (run it often: the
    /// store checkpoints in its own commits again only past [`CHECKPOINT_BACKSTOP_PAGES`]).
    /// `None` for a PostgreSQL store, whose server does its own.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn checkpoint_elsewhere(&self) -> Result<Option<Checkpointer>, StoreError> {
        let (Db::Sqlite(own), Location::File(path)) = (&self.db, &self.location) else { return Ok(None) };
        // SQLite's own open, not `Store::open`: a second file handle of ours, closed, would
        // drop this process's locks on the file; SQLite's handles share them.
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        own.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_BACKSTOP_PAGES)?;
        Ok(Some(Checkpointer { conn }))
    }

    /// A connection of its own that hears every host's client writes as they commit (a
    /// revocation, say), so the daemon need not wait for its next look; `None` for SQLite.
    ///
    /// # Errors
    /// The database cannot be reached.
    pub fn listen_for_changes(&self) -> Result<Option<crate::ChangeListener>, StoreError> {
        match &self.db {
            Db::Sqlite(_) => Ok(None),
            Db::Postgres(conn) => conn.borrow().listener().map(Some),
        }
    }

    /// Another connection to the same PostgreSQL store, with the same keys: a reader beside the
    /// connection that writes, so a read need not wait for a commit's round trips. `None` for
    /// SQLite, whose one connection reads in-process (and whose change counter,
    /// `data_version`, would count every commit of this process's other connection).
    ///
    /// # Errors
    /// The database cannot be reached.
    pub fn another_connection(&self) -> Result<Option<Self>, StoreError> {
        match &self.db {
            Db::Sqlite(_) => Ok(None),
            Db::Postgres(conn) => Ok(Some(Self {
                db: Db::Postgres(Box::new(RefCell::new(conn.borrow().another()?))),
                location: self.location.clone(),
                sealing: self.sealing.clone(),
            })),
        }
    }

    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    pub(crate) fn sealing(&self) -> &Sealing {
        &self.sealing
    }

    /// Seals the secrets written from now on with `sealing`'s current key, and opens those
    /// sealed with any of its keys.
    pub fn set_sealing(&mut self, sealing: Sealing) {
        self.sealing = sealing;
    }

    /// Copies everything this store holds into `target`, an empty store (SQLite or
    /// PostgreSQL: moving one host's store to a cluster's database, or a backup), read from one
    /// snapshot of this store (consistent while daemons write to it) and written in one
    /// transaction of `target`'s; then seals the copied secrets with `target`'s key, if it has
    /// one (give it this store's key as its previous one if this store's secrets are sealed).
    /// Returns the rows copied.
    ///
    /// # Errors
    /// `target` already holds clients or a server key; either database failed; a secret does
    /// not open with `target`'s keys.
    pub fn copy_into(&self, target: &mut Self) -> Result<usize, StoreError> {
        let copied = self.db.transaction(Tx::Read, |from| {
            target.db.transaction(Tx::Clients, |into| {
                let used = into
                    .query_one("SELECT (SELECT count(*) FROM clients) + (SELECT count(*) FROM server_keys)", args![])?;
                if used.0.first() != Some(&Value::Int(0)) {
                    return Err(StoreError::Invalid(format!(
                        "{} already holds clients or a server key: a store is copied only into an empty one",
                        target.location.name()
                    )));
                }
                let mut copied = 0;
                for (table, columns) in COPIED_TABLES {
                    let list = columns.join(", ");
                    let marks: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
                    let insert = format!("INSERT INTO {table} ({list}) VALUES ({})", marks.join(", "));
                    for row in from.query(&format!("SELECT {list} FROM {table}"), args![])? {
                        into.execute(&insert, &row.0)?;
                        copied += 1;
                    }
                }
                Ok(copied)
            })
        })?;
        if target.sealing.is_on() {
            target.reseal()?;
        }
        Ok(copied)
    }

    /// Seals every secret in the store with the current key: those written before the store
    /// had a key and those sealed with a previous one (a key being rotated), in one
    /// transaction. Returns how many were sealed anew.
    ///
    /// # Errors
    /// No key is set, a secret does not open with the keys given, or the database failed.
    pub fn reseal(&mut self) -> Result<usize, StoreError> {
        if !self.sealing.is_on() {
            return Err(StoreError::Invalid("no store key to seal with (approval.store_key_file)".into()));
        }
        let sealing = &self.sealing;
        self.db
            .transaction(Tx::Clients, |db| {
                let mut resealed = 0;
                for mut row in db.query("SELECT name, hmac_secret FROM clients", args![])? {
                    let (name, stored) = (row.text(0)?, row.blob(1)?);
                    if !sealing.sealed_with_current(&stored) {
                        let what = Secret::ClientHmac(&name);
                        let sealed =
                            sealing.seal(what, &sealing.open(what, &stored, gate_protocol::keys::SECRET_BYTES)?)?;
                        db.execute("UPDATE clients SET hmac_secret = ?2 WHERE name = ?1", args![&name, sealed])?;
                        resealed += 1;
                    }
                }
                for mut row in db.query("SELECT name, box_secret FROM server_keys", args![])? {
                    let (name, stored) = (row.text(0)?, row.blob(1)?);
                    if !sealing.sealed_with_current(&stored) {
                        let what = Secret::ServerBox(&name);
                        let sealed = sealing.seal(what, &sealing.open(what, &stored, BOX_SECRET_BYTES)?)?;
                        db.execute("UPDATE server_keys SET box_secret = ?2 WHERE name = ?1", args![&name, sealed])?;
                        resealed += 1;
                    }
                }
                for mut row in db.query("SELECT name, key_pem FROM pki_ca", args![])? {
                    let (name, stored) = (row.text(0)?, row.text(1)?);
                    if !sealing.sealed_with_current(stored.as_bytes()) {
                        let what = Secret::CaKey(&name);
                        let sealed = sealing.seal_text(what, &sealing.open_text(what, &stored)?)?;
                        db.execute("UPDATE pki_ca SET key_pem = ?2 WHERE name = ?1", args![&name, sealed])?;
                        resealed += 1;
                    }
                }
                for mut row in
                    db.query("SELECT serial, key_pem FROM certificates WHERE key_pem IS NOT NULL", args![])?
                {
                    let (serial, stored) = (row.int(0)?, row.text(1)?);
                    if !sealing.sealed_with_current(stored.as_bytes()) {
                        let what = Secret::CertificateKey(serial);
                        let sealed = sealing.seal_text(what, &sealing.open_text(what, &stored)?)?;
                        db.execute("UPDATE certificates SET key_pem = ?2 WHERE serial = ?1", args![serial, sealed])?;
                        resealed += 1;
                    }
                }
                Ok(resealed)
            })
            .and_then(|resealed| {
                // SQLite keeps what an update replaced in free pages and in its log until they are
                // reused: rebuilt and truncated, the file holds only what is sealed now.
                if resealed > 0 && matches!(self.db, Db::Sqlite(_)) {
                    self.db.batch("VACUUM")?;
                    self.db.query_one("PRAGMA wal_checkpoint(TRUNCATE)", args![])?;
                }
                Ok(resealed)
            })
    }

    /// A number that changes whenever clients or the server's keys are written by another
    /// connection (gatectl, another host): a client enrolled, revoked, its gates changed; a key
    /// or CA rotated. SQLite: its `data_version`, which any other connection's commit changes;
    /// PostgreSQL: the highest client revision plus the count of key rotation steps (both only
    /// grow, so their sum changes when either does).
    ///
    /// # Errors
    /// The database failed.
    pub fn generation(&self) -> Result<i64, StoreError> {
        match &self.db {
            Db::Sqlite(_) => self.db.query_one("PRAGMA data_version", args![])?.int(0),
            Db::Postgres(_) => self
                .db
                .query_one(
                    "SELECT coalesce((SELECT max(revision) FROM clients), 0) \
                     + coalesce((SELECT value FROM sequences WHERE name = ?1), 0)",
                    args![crate::rotation::KEY_CHANGES],
                )?
                .int(0),
        }
    }

    /// The server's box key pair, made on first use (by whichever process asks first).
    ///
    /// # Errors
    /// The database failed, or the stored key is malformed.
    pub fn server_keys(&self, now: u64) -> Result<ServerKeys, StoreError> {
        let fresh = ServerKeys::generate(&mut OsRng);
        let what = Secret::ServerBox(SERVER_KEY_NAME);
        let sealed = self.sealing.seal(what, fresh.box_secret.to_bytes().as_slice())?;
        self.db.execute(
            "INSERT INTO server_keys (name, box_secret, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
            args![SERVER_KEY_NAME, sealed, to_sql(now)],
        )?;
        let bytes =
            self.db.query_one("SELECT box_secret FROM server_keys WHERE name = ?1", args![SERVER_KEY_NAME])?.blob(0)?;
        box_keys(&self.sealing, SERVER_KEY_NAME, &bytes)
    }

    /// Enrolls a client; a revoked client's name is enrolled again with the new keys (its old
    /// token, keys and profile stay refused), once no host holds a grant of it.
    ///
    /// # Errors
    /// A bad name, no gate, a name or token already taken, a revoked name whose leases are not
    /// all closed, or the database failed.
    pub fn add_client(&mut self, client: &NewClient<'_>) -> Result<(), StoreError> {
        validate_client_name(client.name)?;
        if client.gates.is_empty() {
            return Err(StoreError::Invalid(format!("client {:?}: name at least one gate", client.name)));
        }
        let secret = self.sealing.seal(Secret::ClientHmac(client.name), client.secret.0.as_slice())?;
        let keys = args![
            client.name,
            client.public.token.0.as_slice(),
            secret,
            client.public.box_public.as_bytes().as_slice(),
            rsa_public_der(&client.public.rsa_public)?,
            to_sql(client.now)
        ]
        .to_vec();
        self.db.transaction(Tx::Clients, |db| {
            let existing = db.query_opt("SELECT revoked_at FROM clients WHERE name = ?1", args![client.name])?;
            let revoked = existing.map(|mut row| row.opt_int(0).map(|at| at.is_some())).transpose()?;
            match revoked {
                None => {
                    db.execute(
                        &format!(
                            "INSERT INTO clients (name, token, hmac_secret, box_public, rsa_public, created_at, revision) \
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, {NEXT_REVISION})"
                        ),
                        &keys,
                    )?;
                }
                Some(true) => enroll_again(db, client.name, &keys)?,
                Some(false) => return Err(StoreError::ClientExists(client.name.to_owned())),
            }
            for gate in client.gates {
                db.execute(
                    "INSERT INTO client_gates (client, gate) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                    args![client.name, gate],
                )?;
            }
            db.announce_client_change()
        })
    }

    /// Every client, by name.
    ///
    /// # Errors
    /// The database failed, or a stored key is malformed.
    pub fn clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        self.query_clients("ORDER BY name", args![])
            .map(|clients| clients.into_iter().map(|(client, _)| client).collect())
    }

    /// The clients written (enrolled, revoked, their gates changed) after `revision`, and the
    /// highest revision among them (`revision` itself if none): what a view that has seen
    /// everything up to `revision` needs to catch up. Revision 0: every client.
    ///
    /// # Errors
    /// The database failed, or a stored key is malformed.
    pub fn clients_since(&self, revision: i64) -> Result<(Vec<ClientRecord>, i64), StoreError> {
        // Ordered by revision, so the database walks the revision index from `revision` on.
        let changed = self.query_clients("WHERE revision > ?1 ORDER BY revision", args![revision])?;
        let latest = changed.iter().map(|(_, r)| *r).max().unwrap_or(revision);
        Ok((changed.into_iter().map(|(client, _)| client).collect(), latest))
    }

    /// One client.
    ///
    /// # Errors
    /// [`StoreError::NoSuchClient`], the database failed, or a stored key is malformed.
    pub fn client(&self, name: &str) -> Result<ClientRecord, StoreError> {
        let found = self.query_clients("WHERE name = ?1", args![name])?.pop().map(|(client, _)| client);
        found.ok_or_else(|| StoreError::NoSuchClient(name.to_owned()))
    }

    /// Clients with their revisions: two queries whatever their number (a client's gates are
    /// read with all the others', not one query a client: that is a round trip each to a
    /// database server).
    fn query_clients(&self, filter: &str, args: &[Value]) -> Result<Vec<(ClientRecord, i64)>, StoreError> {
        // One transaction, so the gates read belong to the clients read.
        let sealing = &self.sealing;
        self.db.transaction(Tx::Read, |db| {
            let rows = db.query(
                &format!(
                    "SELECT name, token, hmac_secret, box_public, rsa_public, created_at, revoked_at, revision \
                     FROM clients {filter}"
                ),
                args,
            )?;
            let mut gates: HashMap<String, BTreeSet<String>> = HashMap::new();
            for mut row in db.query(
                &format!("SELECT client_gates.client, client_gates.gate FROM clients JOIN client_gates ON client_gates.client = clients.name {filter}"),
                args,
            )? {
                gates.entry(row.text(0)?).or_default().insert(row.text(1)?);
            }
            let mut clients = Vec::with_capacity(rows.len());
            for mut row in rows {
                let name = row.text(0)?;
                let token = <[u8; gate_protocol::keys::TOKEN_BYTES]>::try_from(row.blob(1)?.as_slice())
                    .map(Token)
                    .map_err(|_| StoreError::Invalid(format!("client {name:?}: malformed token")))?;
                let record = ClientRecord {
                    token,
                    secret: HmacSecret::from_slice(&sealing.open(
                        Secret::ClientHmac(&name),
                        &row.blob(2)?,
                        gate_protocol::keys::SECRET_BYTES,
                    )?)?,
                    box_public: box_public(&row.blob(3)?)?,
                    rsa_public: rsa_public_from_der(&row.blob(4)?)?,
                    gates: gates.remove(&name).unwrap_or_default(),
                    created_at: from_sql(row.int(5)?),
                    revoked_at: row.opt_int(6)?.map(from_sql),
                    name,
                };
                clients.push((record, row.int(7)?));
            }
            Ok(clients)
        })
    }

    /// Revokes a client. Returns `false` if it already was.
    ///
    /// # Errors
    /// [`StoreError::NoSuchClient`] or the database failed.
    pub fn revoke_client(&mut self, name: &str, now: u64) -> Result<bool, StoreError> {
        self.db.transaction(Tx::Clients, |db| {
            let changed = db.execute(
                &format!(
                    "UPDATE clients SET revoked_at = ?2, revision = {NEXT_REVISION} WHERE name = ?1 AND revoked_at IS NULL"
                ),
                args![name, to_sql(now)],
            )?;
            // Its VPN certificates go with it (the next CRL lists them).
            db.execute(
                "UPDATE certificates SET revoked_at = ?2 WHERE kind = 'client' AND name = ?1 AND revoked_at IS NULL",
                args![name, to_sql(now)],
            )?;
            if changed == 0 && db.query_opt("SELECT 1 FROM clients WHERE name = ?1", args![name])?.is_none() {
                return Err(StoreError::NoSuchClient(name.to_owned()));
            }
            if changed > 0 {
                db.announce_client_change()?;
            }
            Ok(changed > 0)
        })
    }

    /// Whether a client is revoked (a missing client counts as revoked).
    ///
    /// # Errors
    /// The database failed.
    pub fn is_revoked(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.db.query_opt("SELECT 1 FROM clients WHERE name = ?1 AND revoked_at IS NULL", args![name])?.is_none())
    }

    /// Whether (token, nonce) was recorded: a read, no write. The write that decides is the
    /// approval's own ([`Write::Approval`]).
    ///
    /// # Errors
    /// The database failed.
    pub fn nonce_seen(&self, token: Token, nonce: &[u8]) -> Result<bool, StoreError> {
        let found = self
            .db
            .query_opt("SELECT 1 FROM nonces WHERE token = ?1 AND nonce = ?2", args![token.0.as_slice(), nonce])?;
        Ok(found.is_some())
    }

    /// Forgets nonces past their keeping time. Returns how many.
    ///
    /// # Errors
    /// The database failed.
    pub fn purge_nonces(&self, now: u64) -> Result<u64, StoreError> {
        self.db.execute("DELETE FROM nonces WHERE expires_at < ?1", args![to_sql(now)])
    }

    /// Commits `writes` in one transaction and returns each one's answer in their order: one
    /// commit (one WAL append, one round of file locks, one round trip) for the writes of
    /// every approval that waited meanwhile, instead of one each. If the transaction fails,
    /// each write is tried again alone, so a write that cannot be made fails only itself.
    pub fn commit_group(&mut self, writes: &[Write]) -> Vec<Result<Recorded, StoreError>> {
        if let [write] = writes {
            return vec![self.commit(write)];
        }
        match self.commit_all(writes) {
            Ok(answers) => answers.into_iter().map(Ok).collect(),
            Err(e) => {
                log::warn!("store: a group of {} writes failed together ({e}); each is tried alone", writes.len());
                writes.iter().map(|write| self.commit(write)).collect()
            }
        }
    }

    /// Commits one write in a transaction of its own; what it did as [`Write`] says.
    ///
    /// # Errors
    /// The database failed.
    pub fn commit(&mut self, write: &Write) -> Result<Recorded, StoreError> {
        Ok(self.commit_all(std::slice::from_ref(write))?[0])
    }

    fn commit_all(&mut self, writes: &[Write]) -> Result<Vec<Recorded>, StoreError> {
        self.db.transaction(Tx::Rows, |db| writes.iter().map(|write| apply(db, write)).collect())
    }

    /// Removes grants (after their leases were written back out, or failed to be written).
    ///
    /// # Errors
    /// The database failed.
    pub fn delete_grants(&self, client: &str, gate: &str, addresses: &[IpAddr], host: &str) -> Result<(), StoreError> {
        for address in addresses {
            self.db.execute(
                "DELETE FROM grants WHERE client = ?1 AND gate = ?2 AND address = ?3 AND host = ?4",
                args![client, gate, address.to_string(), host],
            )?;
        }
        Ok(())
    }

    /// The grants of revoked clients on `host`.
    ///
    /// # Errors
    /// The database failed.
    pub fn revoked_grants(&self, host: &str) -> Result<Vec<Grant>, StoreError> {
        grants(self.db.query(
            "SELECT g.client, g.gate, g.address, g.expires_at, g.host FROM grants g JOIN clients c ON c.name = g.client \
             WHERE c.revoked_at IS NOT NULL AND g.host = ?1",
            args![host],
        )?)
    }

    /// The grants on `host` not expired at `now`: which client each lease was opened for.
    ///
    /// # Errors
    /// The database failed.
    pub fn live_grants(&self, host: &str, now: u64) -> Result<Vec<Grant>, StoreError> {
        grants(self.db.query(
            "SELECT client, gate, address, expires_at, host FROM grants WHERE host = ?1 AND expires_at > ?2",
            args![host, to_sql(now)],
        )?)
    }

    /// Whether a client that is not revoked holds a grant for `address` on `gate` at `host`
    /// live at `now` (then a shared address, behind one NAT, stays open for it).
    ///
    /// # Errors
    /// The database failed.
    pub fn address_held_by_live_client(
        &self,
        gate: &str,
        address: IpAddr,
        host: &str,
        now: u64,
    ) -> Result<bool, StoreError> {
        let found = self.db.query_opt(
            "SELECT 1 FROM grants g JOIN clients c ON c.name = g.client \
             WHERE g.gate = ?1 AND g.address = ?2 AND g.host = ?3 AND g.expires_at > ?4 AND c.revoked_at IS NULL",
            args![gate, address.to_string(), host, to_sql(now)],
        )?;
        Ok(found.is_some())
    }

    /// Forgets grants past their expiry. Returns how many.
    ///
    /// # Errors
    /// The database failed.
    pub fn purge_grants(&self, now: u64) -> Result<u64, StoreError> {
        self.db.execute("DELETE FROM grants WHERE expires_at < ?1", args![to_sql(now)])
    }

    /// Spends a session token: it must exist, belong to `client` on `gate`, be unexpired and
    /// unused, and the client must not be revoked. Returns whether it was good; a good token is
    /// used up in the same statement, so it opens one VPN session only.
    ///
    /// # Errors
    /// The database failed.
    pub fn spend_session_token(&self, digest: &[u8], client: &str, gate: &str, now: u64) -> Result<bool, StoreError> {
        let spent = self.db.execute(
            "UPDATE session_tokens SET used_at = ?4 WHERE digest = ?1 AND client = ?2 AND gate = ?3 \
             AND used_at IS NULL AND expires_at >= ?4 \
             AND EXISTS (SELECT 1 FROM clients WHERE name = ?2 AND revoked_at IS NULL)",
            args![digest, client, gate, to_sql(now)],
        )?;
        Ok(spent == 1)
    }

    /// Forgets session tokens past their expiry. Returns how many.
    ///
    /// # Errors
    /// The database failed.
    pub fn purge_session_tokens(&self, now: u64) -> Result<u64, StoreError> {
        self.db.execute("DELETE FROM session_tokens WHERE expires_at < ?1", args![to_sql(now)])
    }
}

impl Location {
    fn name(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::Postgres(name) => name.clone(),
        }
    }
}

/// Connection parameters as they may be shown: a password in them replaced.
fn redacted(params: &str) -> String {
    match params.parse::<postgres::Config>() {
        Ok(config) => {
            let hosts: Vec<String> = config
                .get_hosts()
                .iter()
                .map(|host| match host {
                    postgres::config::Host::Tcp(name) => name.clone(),
                    postgres::config::Host::Unix(path) => path.display().to_string(),
                })
                .collect();
            format!("postgres {} database {}", hosts.join(","), config.get_dbname().unwrap_or("(default)"))
        }
        Err(_) => "postgres (unparsed parameters)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tables [`Store::copy_into`] leaves behind: `hosts`, the heartbeats of the daemons on the
    /// store copied from, which say nothing of the hosts of the one copied into.
    const NOT_COPIED: &[&str] = &["hosts"];

    #[test]
    fn a_connection_frozen_inside_a_transaction_is_ended_and_stops_holding_up_revocations() {
        let server = temp_postgres::TempPostgres::start().unwrap();
        let frozen = Store::connect(&server.params("postgres")).unwrap();
        let mut revoker = Store::connect(&server.params("postgres")).unwrap();
        let (locked, is_locked) = std::sync::mpsc::channel();
        let stuck = std::thread::spawn(move || {
            // Holds the clients' lock, then goes silent as a frozen process would.
            frozen.db.transaction(Tx::Clients, |_| {
                locked.send(()).unwrap();
                std::thread::sleep(std::time::Duration::from_secs(7));
                Ok(())
            })
        });
        is_locked.recv().unwrap();
        let start = std::time::Instant::now();
        let revoked = revoker.revoke_client("nobody", 1);
        assert!(matches!(revoked, Err(StoreError::NoSuchClient(_))), "the revocation ran: {revoked:?}");
        let waited = start.elapsed();
        assert!(waited < std::time::Duration::from_millis(6_500), "held up {waited:?} by a frozen session");
        assert!(stuck.join().unwrap().is_err(), "the frozen session's transaction was ended, not committed");
    }

    #[test]
    fn the_copy_knows_every_table_and_column_of_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open_or_create(dir.path().join("gate.db")).unwrap();
        let tables = store
            .db
            .query(
                "SELECT name FROM sqlite_schema WHERE type = 'table' AND name != 'schema_version' ORDER BY name",
                args![],
            )
            .unwrap();
        let mut copied: Vec<&str> = COPIED_TABLES.iter().map(|(table, _)| *table).collect();
        copied.sort_unstable();
        let mut found = Vec::new();
        for mut row in tables {
            let table = row.text(0).unwrap();
            if NOT_COPIED.contains(&table.as_str()) {
                continue;
            }
            let columns: Vec<String> = store
                .db
                .query(&format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid"), args![])
                .unwrap()
                .into_iter()
                .map(|mut c| c.text(0).unwrap())
                .collect();
            let listed = COPIED_TABLES.iter().find(|(t, _)| *t == table).map(|(_, c)| c.to_vec()).unwrap_or_default();
            assert_eq!(columns, listed, "table {table}: a column the copy would lose");
            found.push(table);
        }
        assert_eq!(found, copied);
    }
}

//! [`Store`]: typed calls over the SQLite file. Times are Unix seconds, passed in by the caller.
use std::{
    collections::BTreeSet,
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
use rusqlite::{Connection, TransactionBehavior, params};

use crate::{StoreError, validate_client_name};

pub const DEFAULT_STORE_PATH: &str = "/var/lib/gate/gate.db";
const SCHEMA: &str = include_str!("schema.sql");
const SCHEMA_VERSION: i64 = 2;
/// What brings a store of the version before each up to that version, in order.
const MIGRATIONS: &[(i64, &str)] =
    &[(2, "ALTER TABLE clients ADD COLUMN revision INTEGER NOT NULL DEFAULT 0; UPDATE clients SET revision = rowid;")];
/// Run after the schema and the migrations: objects on columns a migration may have added.
const INDEXES: &str = "CREATE INDEX IF NOT EXISTS clients_by_revision ON clients (revision);";
/// The next client revision, inside the writing transaction (writers are serialised, so the
/// revisions grow in commit order).
const NEXT_REVISION: &str = "(SELECT coalesce(max(revision), 0) + 1 FROM clients)";
const SERVER_KEY_NAME: &str = "default";

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
    conn: Connection,
    path: PathBuf,
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

/// Brings an older store up to [`SCHEMA_VERSION`], one step a transaction; a process that
/// opens it at the same moment waits, then finds it done.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    for (version, steps) in MIGRATIONS {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found: i64 = tx.query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))?;
        if found < *version {
            tx.execute_batch(steps)?;
            tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [version])?;
            log::info!("store {}: schema upgraded from version {found} to {version}", path.display());
        }
        tx.commit()?;
    }
    Ok(())
}

/// Inserts a nonce unless it is there: `false` if it was (one statement, so two hosts on one
/// database cannot both take it).
fn insert_nonce(conn: &Connection, nonce: &NonceRecord) -> Result<bool, StoreError> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO nonces (token, nonce, expires_at, host) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
        )?
        .execute(params![nonce.token.0.as_slice(), nonce.nonce, to_sql(nonce.expires_at), nonce.host])?;
    Ok(inserted == 1)
}

/// One write inside the caller's transaction.
fn apply(conn: &Connection, write: &Write) -> Result<Recorded, StoreError> {
    let (nonce, approval) = match write {
        Write::Nonce(nonce) => (nonce, None),
        Write::Approval(nonce, approval) => (nonce, Some(approval)),
    };
    if !insert_nonce(conn, nonce)? {
        return Ok(Recorded::Replay);
    }
    let Some(approval) = approval else { return Ok(Recorded::Yes) };
    let live: bool = conn
        .prepare_cached("SELECT count(*) > 0 FROM clients WHERE name = ?1 AND revoked_at IS NULL")?
        .query_row([&approval.client], |r| r.get(0))?;
    if !live {
        return Ok(Recorded::Revoked);
    }
    let mut grant = conn.prepare_cached(
        "INSERT INTO grants (client, gate, address, expires_at, host) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (client, gate, address, host) DO UPDATE SET expires_at = excluded.expires_at",
    )?;
    for address in &approval.addresses {
        grant.execute(params![
            approval.client,
            approval.gate,
            address.to_string(),
            to_sql(approval.expires_at),
            approval.host
        ])?;
    }
    if let Some((digest, expires_at)) = &approval.session {
        conn.prepare_cached(
            "INSERT INTO session_tokens (digest, client, gate, expires_at, host) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![digest, approval.client, approval.gate, to_sql(*expires_at), approval.host])?;
    }
    Ok(Recorded::Yes)
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
        name.push(format!(".new-{}", std::process::id()));
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

    fn prepare(mut conn: Connection, path: &Path) -> Result<Self, StoreError> {
        conn.busy_timeout(Duration::from_secs(5))?;
        // WAL: readers never block the writer. synchronous=NORMAL: a commit survives a crash of
        // the process (a daemon restart); only a power loss can drop the last commits.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA)?;
        let found: Option<i64> = conn.query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))?;
        match found {
            None => {
                conn.execute("INSERT INTO schema_version (version) VALUES (?1)", [SCHEMA_VERSION])?;
            }
            Some(found) if found > SCHEMA_VERSION => {
                return Err(StoreError::Schema { found, supported: SCHEMA_VERSION });
            }
            Some(found) if found < SCHEMA_VERSION => migrate(&mut conn, path)?,
            Some(_) => {}
        }
        conn.execute_batch(INDEXES)?;
        Ok(Self { conn, path: path.to_owned() })
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hands this store's checkpoints to the returned [`Checkpointer`] (run it often: the
    /// store checkpoints in its own commits again only past [`CHECKPOINT_BACKSTOP_PAGES`]).
    ///
    /// # Errors
    /// SQLite failed.
    pub fn checkpoint_elsewhere(&self) -> Result<Checkpointer, StoreError> {
        // SQLite's own open, not `Store::open`: a second file handle of ours, closed, would
        // drop this process's locks on the file; SQLite's handles share them.
        let conn = Connection::open(&self.path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        self.conn.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_BACKSTOP_PAGES)?;
        Ok(Checkpointer { conn })
    }

    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }

    pub(crate) fn connection_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// A number that changes whenever another connection (gatectl, another host) commits.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        Ok(self.conn.prepare_cached("PRAGMA data_version")?.query_row([], |r| r.get(0))?)
    }

    /// The server's box key pair, made on first use (by whichever process asks first).
    ///
    /// # Errors
    /// SQLite failed, or the stored key is malformed.
    pub fn server_keys(&self, now: u64) -> Result<ServerKeys, StoreError> {
        let fresh = ServerKeys::generate(&mut OsRng);
        self.conn.execute(
            "INSERT INTO server_keys (name, box_secret, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
            params![SERVER_KEY_NAME, fresh.box_secret.to_bytes().as_slice(), to_sql(now)],
        )?;
        let bytes: Vec<u8> =
            self.conn
                .query_row("SELECT box_secret FROM server_keys WHERE name = ?1", [SERVER_KEY_NAME], |r| r.get(0))?;
        Ok(ServerKeys { box_secret: box_secret(&bytes)? })
    }

    /// Enrolls a client.
    ///
    /// # Errors
    /// A bad name, no gate, a name or token already taken, or SQLite failed.
    pub fn add_client(&mut self, client: &NewClient<'_>) -> Result<(), StoreError> {
        validate_client_name(client.name)?;
        if client.gates.is_empty() {
            return Err(StoreError::Invalid(format!("client {:?}: name at least one gate", client.name)));
        }
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let exists: bool =
            tx.query_row("SELECT count(*) > 0 FROM clients WHERE name = ?1", [client.name], |r| r.get(0))?;
        if exists {
            return Err(StoreError::ClientExists(client.name.to_owned()));
        }
        tx.execute(
            &format!(
                "INSERT INTO clients (name, token, hmac_secret, box_public, rsa_public, created_at, revision) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, {NEXT_REVISION})"
            ),
            params![
                client.name,
                client.public.token.0.as_slice(),
                client.secret.0.as_slice(),
                client.public.box_public.as_bytes().as_slice(),
                rsa_public_der(&client.public.rsa_public)?,
                to_sql(client.now)
            ],
        )?;
        for gate in client.gates {
            tx.execute(
                "INSERT OR IGNORE INTO client_gates (client, gate) VALUES (?1, ?2)",
                params![client.name, gate],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every client, by name.
    ///
    /// # Errors
    /// SQLite failed, or a stored key is malformed.
    pub fn clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        self.query_clients("ORDER BY name", []).map(|clients| clients.into_iter().map(|(client, _)| client).collect())
    }

    /// The clients written (enrolled, revoked, their gates changed) after `revision`, and the
    /// highest revision among them (`revision` itself if none): what a view that has seen
    /// everything up to `revision` needs to catch up. Revision 0: every client.
    ///
    /// # Errors
    /// SQLite failed, or a stored key is malformed.
    pub fn clients_since(&self, revision: i64) -> Result<(Vec<ClientRecord>, i64), StoreError> {
        // Ordered by revision, so SQLite walks the revision index from `revision` on.
        let changed = self.query_clients("WHERE revision > ?1 ORDER BY revision", [revision])?;
        let latest = changed.iter().map(|(_, r)| *r).max().unwrap_or(revision);
        Ok((changed.into_iter().map(|(client, _)| client).collect(), latest))
    }

    /// One client.
    ///
    /// # Errors
    /// [`StoreError::NoSuchClient`], SQLite failed, or a stored key is malformed.
    pub fn client(&self, name: &str) -> Result<ClientRecord, StoreError> {
        let found = self.query_clients("WHERE name = ?1", [name])?.pop().map(|(client, _)| client);
        found.ok_or_else(|| StoreError::NoSuchClient(name.to_owned()))
    }

    /// Clients with their revisions.
    fn query_clients<P: rusqlite::Params>(
        &self,
        filter: &str,
        params: P,
    ) -> Result<Vec<(ClientRecord, i64)>, StoreError> {
        let mut gates = self.conn.prepare_cached("SELECT gate FROM client_gates WHERE client = ?1 ORDER BY gate")?;
        let mut statement = self.conn.prepare(&format!(
            "SELECT name, token, hmac_secret, box_public, rsa_public, created_at, revoked_at, revision FROM clients \
             {filter}"
        ))?;
        let rows = statement.query_map(params, |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, Vec<u8>>(3)?,
                r.get::<_, Vec<u8>>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, Option<i64>>(6)?,
                r.get::<_, i64>(7)?,
            ))
        })?;
        let mut clients = Vec::new();
        for row in rows {
            let (name, token, secret, box_key, rsa, created_at, revoked_at, revision) = row?;
            let token = <[u8; gate_protocol::keys::TOKEN_BYTES]>::try_from(token.as_slice())
                .map(Token)
                .map_err(|_| StoreError::Invalid(format!("client {name:?}: malformed token")))?;
            let client_gates = gates.query_map([&name], |r| r.get::<_, String>(0))?.collect::<Result<_, _>>()?;
            let record = ClientRecord {
                token,
                secret: HmacSecret::from_slice(&secret)?,
                box_public: box_public(&box_key)?,
                rsa_public: rsa_public_from_der(&rsa)?,
                gates: client_gates,
                created_at: from_sql(created_at),
                revoked_at: revoked_at.map(from_sql),
                name,
            };
            clients.push((record, revision));
        }
        Ok(clients)
    }

    /// Revokes a client. Returns `false` if it already was.
    ///
    /// # Errors
    /// [`StoreError::NoSuchClient`] or SQLite failed.
    pub fn revoke_client(&mut self, name: &str, now: u64) -> Result<bool, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changed = tx.execute(
            &format!(
                "UPDATE clients SET revoked_at = ?2, revision = {NEXT_REVISION} WHERE name = ?1 AND revoked_at IS NULL"
            ),
            params![name, to_sql(now)],
        )?;
        // Its VPN certificates go with it (the next CRL lists them).
        tx.execute(
            "UPDATE certificates SET revoked_at = ?2 WHERE kind = 'client' AND name = ?1 AND revoked_at IS NULL",
            params![name, to_sql(now)],
        )?;
        tx.commit()?;
        if changed == 0 {
            let exists: bool =
                self.conn.query_row("SELECT count(*) > 0 FROM clients WHERE name = ?1", [name], |r| r.get(0))?;
            if !exists {
                return Err(StoreError::NoSuchClient(name.to_owned()));
            }
        }
        Ok(changed > 0)
    }

    /// Whether a client is revoked (a missing client counts as revoked).
    ///
    /// # Errors
    /// SQLite failed.
    pub fn is_revoked(&self, name: &str) -> Result<bool, StoreError> {
        let live: bool = self
            .conn
            .prepare_cached("SELECT count(*) > 0 FROM clients WHERE name = ?1 AND revoked_at IS NULL")?
            .query_row([name], |r| r.get(0))?;
        Ok(!live)
    }

    /// Whether (token, nonce) was recorded: a read, no write. The write that decides is the
    /// approval's own ([`Write::Approval`]).
    ///
    /// # Errors
    /// SQLite failed.
    pub fn nonce_seen(&self, token: Token, nonce: &[u8]) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT count(*) > 0 FROM nonces WHERE token = ?1 AND nonce = ?2")?
            .query_row(params![token.0.as_slice(), nonce], |r| r.get(0))?)
    }

    /// Forgets nonces past their keeping time. Returns how many.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn purge_nonces(&self, now: u64) -> Result<usize, StoreError> {
        Ok(self.conn.execute("DELETE FROM nonces WHERE expires_at < ?1", [to_sql(now)])?)
    }

    /// Commits `writes` in one transaction and returns each one's answer in their order: one
    /// commit (one WAL append, one round of file locks) for the writes of every approval that
    /// waited meanwhile, instead of one each. If the transaction fails, each write is tried
    /// again alone, so a write that cannot be made fails only itself.
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
    /// SQLite failed.
    pub fn commit(&mut self, write: &Write) -> Result<Recorded, StoreError> {
        Ok(self.commit_all(std::slice::from_ref(write))?[0])
    }

    fn commit_all(&mut self, writes: &[Write]) -> Result<Vec<Recorded>, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let answers = writes.iter().map(|write| apply(&tx, write)).collect::<Result<_, _>>()?;
        tx.commit()?;
        Ok(answers)
    }

    /// Removes grants (after their leases were written back out, or failed to be written).
    ///
    /// # Errors
    /// SQLite failed.
    pub fn delete_grants(&self, client: &str, gate: &str, addresses: &[IpAddr], host: &str) -> Result<(), StoreError> {
        for address in addresses {
            self.conn.execute(
                "DELETE FROM grants WHERE client = ?1 AND gate = ?2 AND address = ?3 AND host = ?4",
                params![client, gate, address.to_string(), host],
            )?;
        }
        Ok(())
    }

    /// The grants of revoked clients on `host`.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn revoked_grants(&self, host: &str) -> Result<Vec<Grant>, StoreError> {
        let mut statement = self.conn.prepare(
            "SELECT g.client, g.gate, g.address, g.expires_at, g.host FROM grants g JOIN clients c ON c.name = g.client \
             WHERE c.revoked_at IS NOT NULL AND g.host = ?1",
        )?;
        let rows = statement.query_map([host], grant_row)?;
        collect_grants(rows)
    }

    /// Whether a client that is not revoked holds a grant for `address` on `gate` at `host`
    /// live at `now` (then a shared address, behind one NAT, stays open for it).
    ///
    /// # Errors
    /// SQLite failed.
    pub fn address_held_by_live_client(
        &self,
        gate: &str,
        address: IpAddr,
        host: &str,
        now: u64,
    ) -> Result<bool, StoreError> {
        Ok(self.conn.query_row(
            "SELECT count(*) > 0 FROM grants g JOIN clients c ON c.name = g.client \
             WHERE g.gate = ?1 AND g.address = ?2 AND g.host = ?3 AND g.expires_at > ?4 AND c.revoked_at IS NULL",
            params![gate, address.to_string(), host, to_sql(now)],
            |r| r.get(0),
        )?)
    }

    /// Forgets grants past their expiry. Returns how many.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn purge_grants(&self, now: u64) -> Result<usize, StoreError> {
        Ok(self.conn.execute("DELETE FROM grants WHERE expires_at < ?1", [to_sql(now)])?)
    }

    /// Spends a session token: it must exist, belong to `client` on `gate`, be unexpired and
    /// unused, and the client must not be revoked. Returns whether it was good; a good token is
    /// used up in the same statement, so it opens one VPN session only.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn spend_session_token(&self, digest: &[u8], client: &str, gate: &str, now: u64) -> Result<bool, StoreError> {
        let spent = self.conn.execute(
            "UPDATE session_tokens SET used_at = ?4 WHERE digest = ?1 AND client = ?2 AND gate = ?3 \
             AND used_at IS NULL AND expires_at >= ?4 \
             AND EXISTS (SELECT 1 FROM clients WHERE name = ?2 AND revoked_at IS NULL)",
            params![digest, client, gate, to_sql(now)],
        )?;
        Ok(spent == 1)
    }

    /// Forgets session tokens past their expiry. Returns how many.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn purge_session_tokens(&self, now: u64) -> Result<usize, StoreError> {
        Ok(self.conn.execute("DELETE FROM session_tokens WHERE expires_at < ?1", [to_sql(now)])?)
    }
}

fn grant_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, String, i64, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn collect_grants(
    rows: impl Iterator<Item = rusqlite::Result<(String, String, String, i64, String)>>,
) -> Result<Vec<Grant>, StoreError> {
    let mut grants = Vec::new();
    for row in rows {
        let (client, gate, address, expires_at, host) = row?;
        let address = address.parse().map_err(|_| StoreError::Invalid(format!("grant address {address:?}")))?;
        grants.push(Grant { client, gate, address, expires_at: from_sql(expires_at), host });
    }
    Ok(grants)
}

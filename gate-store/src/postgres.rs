//! A PostgreSQL connection as [`crate::sql::Db`] uses it: statements prepared once and kept,
//! `?N` parameters written as PostgreSQL's `$N`, values converted to the column types the
//! server expects, and the schema spelt in PostgreSQL's types. Synchronous (the `postgres`
//! crate): the store's callers already run its work on blocking threads.
use std::{
    collections::HashMap,
    error::Error,
    path::Path,
    time::{Duration, Instant},
};

use bytes::BytesMut;
use openssl::ssl::{SslConnector, SslMethod};
use postgres::{
    Client, Statement,
    config::SslMode,
    types::{IsNull, ToSql, Type, to_sql_checked},
};
use postgres_openssl::MakeTlsConnector;

use crate::{
    StoreError,
    sql::{Row, Tx, Value},
};

/// Advisory lock keys (any 64-bit numbers no other user of the database takes): one held by
/// whoever writes clients' revisions, one by whoever creates or upgrades the schema.
const CLIENTS_LOCK: i64 = 0x6761_7465_636c_6e74; // "gateclnt"
const SCHEMA_LOCK: i64 = 0x6761_7465_7363_686d; // "gateschm"

/// How long a connection attempt may take, and how long sent data may go unacknowledged before
/// the kernel gives the connection up (a database host that vanished, a partition): the store's
/// callers hold its lock meanwhile, so a lost database must fail fast, not after TCP's minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(5);
/// Ended by the server: a session of ours idle inside a transaction this long (its process
/// frozen, or cut off mid-transaction), so the locks it holds (the clients' advisory lock, a
/// client's row) do not hold up every host's revocations until TCP notices; and a statement
/// running or waiting this long. The store's transactions take milliseconds.
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "5s";
const STATEMENT_TIMEOUT: &str = "10s";
/// A lost connection is made again at most this often (between attempts, calls fail at once).
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

pub(crate) struct PgConn {
    config: postgres::Config,
    tls: MakeTlsConnector,
    /// `None` once the connection was lost, until it is made again.
    client: Option<Client>,
    /// Prepared statements by their text as the store writes it (a fixed set), of this
    /// connection (a new one prepares them again).
    statements: HashMap<String, Statement>,
    /// Between BEGIN and COMMIT or ROLLBACK: a connection lost here is not made again until
    /// the transaction is over (its statements must not go on outside it).
    in_transaction: bool,
    last_attempt: Instant,
}

impl PgConn {
    /// Connects with `params` (a `postgres://` URL or `key=value` pairs, as libpq takes them)
    /// and `password`, if given apart from them. TLS (over TCP, as `sslmode` asks) always
    /// verifies the server's certificate and name: against `ca_file` if given (then `sslmode`
    /// must be `require`: with `prefer`, whoever sits between could simply decline TLS), else
    /// against the system's roots.
    pub(crate) fn connect(params: &str, password: Option<&str>, ca_file: Option<&Path>) -> Result<Self, StoreError> {
        let (mut config, tls) = settings(params, ca_file)?;
        if let Some(password) = password {
            config.password(password);
        }
        let client = config.connect(tls.clone())?;
        Ok(Self {
            config,
            tls,
            client: Some(client),
            statements: HashMap::new(),
            in_transaction: false,
            last_attempt: Instant::now(),
        })
    }

    /// A second connection, listening for client writes.
    pub(crate) fn listener(&self) -> Result<ChangeListener, StoreError> {
        let mut client = self.new_client()?;
        client.batch_execute(&format!("LISTEN {CLIENTS_CHANNEL}"))?;
        Ok(ChangeListener { client })
    }

    /// Another connection with the same settings.
    pub(crate) fn another(&self) -> Result<Self, StoreError> {
        Ok(Self {
            config: self.config.clone(),
            tls: self.tls.clone(),
            client: Some(self.new_client()?),
            statements: HashMap::new(),
            in_transaction: false,
            last_attempt: Instant::now(),
        })
    }

    fn new_client(&self) -> Result<Client, StoreError> {
        self.config.connect(self.tls.clone()).map_err(|e| StoreError::Unreachable(crate::error::with_causes(&e)))
    }

    /// The connection, made again if it was lost (outside a transaction, at most every
    /// [`RECONNECT_EVERY`]).
    fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
            self.statements.clear();
        }
        if self.client.is_none() {
            if self.in_transaction {
                return Err(StoreError::Unreachable("the connection was lost inside a transaction".into()));
            }
            if self.last_attempt.elapsed() < RECONNECT_EVERY {
                return Err(StoreError::Unreachable("the connection is lost; trying again within a second".into()));
            }
            self.last_attempt = Instant::now();
            let client = self.new_client()?;
            log::info!("store: connected to the database again");
            self.client = Some(client);
        }
        self.client.as_mut().ok_or_else(|| StoreError::Unreachable("no connection".into()))
    }

    fn statement(&mut self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client()?.prepare(&numbered(sql))?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    pub(crate) fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, StoreError> {
        let statement = self.statement(sql)?;
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        Ok(self.client()?.execute(&statement, &params)?)
    }

    pub(crate) fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, StoreError> {
        let statement = self.statement(sql)?;
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        self.client()?.query(&statement, &params)?.iter().map(row).collect()
    }

    pub(crate) fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        let ends = sql == "COMMIT" || sql == "ROLLBACK";
        let result = self.client().and_then(|client| Ok(client.batch_execute(sql)?));
        if ends {
            // Over whether it worked or not: a failed COMMIT rolls back, a lost connection ends
            // the transaction with it.
            self.in_transaction = false;
        }
        result
    }

    /// Opens a transaction (READ COMMITTED, PostgreSQL's default) holding what `kind` needs
    /// until it ends.
    pub(crate) fn begin(&mut self, kind: Tx) -> Result<(), StoreError> {
        let begin = match kind {
            Tx::Read => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY".to_owned(),
            Tx::Rows => "BEGIN".to_owned(),
            Tx::Clients => format!("BEGIN; SELECT pg_advisory_xact_lock({CLIENTS_LOCK})"),
            Tx::Schema => format!("BEGIN; SELECT pg_advisory_xact_lock({SCHEMA_LOCK})"),
        };
        self.batch(&begin)?;
        self.in_transaction = true;
        Ok(())
    }
}

/// The channel a client write is announced on (`NOTIFY`, sent when its transaction commits).
pub(crate) const CLIENTS_CHANNEL: &str = "gate_clients";

/// A connection of its own that waits for the announcements of client writes (enrollments,
/// revocations) by any host: PostgreSQL's LISTEN.
pub struct ChangeListener {
    client: Client,
}

impl ChangeListener {
    /// Waits up to `timeout` for an announcement; `true` if one (or several) came.
    ///
    /// # Errors
    /// The connection was lost (make a new listener).
    pub fn wait(&mut self, timeout: Duration) -> Result<bool, StoreError> {
        use postgres::fallible_iterator::FallibleIterator as _;
        let heard = {
            let mut notifications = self.client.notifications();
            let heard = notifications.timeout_iter(timeout).next()?.is_some();
            // Everything else already waiting is the same news.
            while notifications.iter().next()?.is_some() {}
            heard
        };
        if self.client.is_closed() {
            return Err(StoreError::Unreachable("the listening connection was lost".into()));
        }
        Ok(heard)
    }
}

/// The client's settings for `params` and `ca_file`, checked without asking the server: the
/// URL parses, a CA comes with `sslmode=require`, the CA file is a certificate file.
pub(crate) fn settings(
    params: &str,
    ca_file: Option<&Path>,
) -> Result<(postgres::Config, MakeTlsConnector), StoreError> {
    let mut config: postgres::Config = params.parse()?;
    if ca_file.is_some() && config.get_ssl_mode() != SslMode::Require {
        return Err(StoreError::Invalid(
            "a CA for the database's certificate is given, but the URL does not require TLS: add sslmode=require to it"
                .into(),
        ));
    }
    config.connect_timeout(CONNECT_TIMEOUT).tcp_user_timeout(TCP_USER_TIMEOUT);
    let ours = format!(
        "-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_TIMEOUT} -c statement_timeout={STATEMENT_TIMEOUT}"
    );
    let options = config.get_options().map_or(ours.clone(), |theirs| format!("{theirs} {ours}"));
    config.options(&options);
    Ok((config, tls(ca_file)?))
}

/// OpenSSL's client side of TLS, verifying the server (OpenSSL's defaults: the peer's
/// certificate chain, and the host name the URL names).
fn tls(ca_file: Option<&Path>) -> Result<MakeTlsConnector, StoreError> {
    let tls_error = |e: openssl::error::ErrorStack| StoreError::Invalid(format!("TLS for the database: {e}"));
    let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(tls_error)?;
    match ca_file {
        Some(file) => builder
            .set_ca_file(file)
            .map_err(|e| StoreError::Invalid(format!("{}: not a CA certificate file (PEM): {e}", file.display())))?,
        None => builder.set_default_verify_paths().map_err(tls_error)?,
    }
    Ok(MakeTlsConnector::new(builder.build()))
}

/// `?N` parameters as PostgreSQL writes them (`$N`). The store's SQL has no `?` elsewhere.
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

/// The store's schema (written in SQLite's spelling) in PostgreSQL's: 64-bit integers (an
/// INTEGER there has 32 bits), BYTEA for blobs, no SQLite table options.
pub(crate) fn schema(sqlite: &str) -> String {
    sqlite.replace(" INTEGER", " BIGINT").replace(" BLOB", " BYTEA").replace(") WITHOUT ROWID;", ");")
}

fn row(row: &postgres::Row) -> Result<Row, StoreError> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let value = match *column.type_() {
            Type::BOOL => row.try_get::<_, Option<bool>>(i)?.map(|v| Value::Int(i64::from(v))),
            Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Int),
            Type::INT4 => row.try_get::<_, Option<i32>>(i)?.map(|v| Value::Int(i64::from(v))),
            Type::INT2 => row.try_get::<_, Option<i16>>(i)?.map(|v| Value::Int(i64::from(v))),
            Type::TEXT | Type::VARCHAR | Type::NAME => row.try_get::<_, Option<String>>(i)?.map(Value::Text),
            Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
            ref other => {
                return Err(StoreError::Invalid(format!(
                    "column {:?} has a type the store does not read: {other}",
                    column.name()
                )));
            }
        };
        values.push(value.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Self::Null => Ok(IsNull::Yes),
            Self::Int(v) => match *ty {
                Type::BOOL => (*v != 0).to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                _ => v.to_sql(ty, out),
            },
            Self::Text(v) => v.to_sql(ty, out),
            Self::Blob(v) => v.to_sql(ty, out),
        }
    }

    // Each arm above checks its own type (a text bound to an integer column is refused there).
    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_numbered_the_postgresql_way() {
        assert_eq!(numbered("SELECT a FROM t WHERE b = ?1 AND c >= ?12"), "SELECT a FROM t WHERE b = $1 AND c >= $12");
        assert_eq!(numbered("SELECT '?' || ?"), "SELECT '?' || ?");
    }

    #[test]
    fn the_schema_speaks_postgresql() {
        let pg = schema(crate::store::SCHEMA);
        assert!(!pg.contains("WITHOUT ROWID;"), "{pg}");
        assert!(!pg.contains(" BLOB"), "{pg}");
        assert!(!pg.contains(" INTEGER"), "{pg}");
    }
}

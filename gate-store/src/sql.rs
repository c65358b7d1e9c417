//! The store's one way to talk to its database, whichever it is: SQL text written once with
//! numbered parameters (`?1`), values of four kinds, rows read by position, transactions that
//! commit or roll back as a whole. Every domain operation of [`crate::Store`] is written against
//! [`Db`], so SQLite and PostgreSQL run the same statements and the same suite tests both; what
//! differs between them (parameter marks, locking, the schema's spelling) is decided here and
//! in `postgres.rs`, nowhere else.
use std::cell::RefCell;

use rusqlite::types::{ToSqlOutput, ValueRef};

use crate::{StoreError, postgres::PgConn};

/// A value bound to a parameter or read from a column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Self::Text(v.to_owned())
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Self::Text(v.clone())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}
impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Self::Blob(v.to_vec())
    }
}
impl From<&Vec<u8>> for Value {
    fn from(v: &Vec<u8>) -> Self {
        Self::Blob(v.clone())
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Self::Blob(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Self::Null, Into::into)
    }
}

/// The parameters of one statement: `args![a, b]` is `&[Value::from(a), Value::from(b)]`.
macro_rules! args {
    ($($value:expr),* $(,)?) => { &[$($crate::sql::Value::from($value)),*][..] };
}
pub(crate) use args;

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Self::Null => ValueRef::Null,
            Self::Int(v) => ValueRef::Integer(*v),
            Self::Text(v) => ValueRef::Text(v.as_bytes()),
            Self::Blob(v) => ValueRef::Blob(v),
        }))
    }
}

/// One row of a result, its columns read by position (each once: reading takes the value).
#[derive(Debug)]
pub(crate) struct Row(pub(crate) Vec<Value>);

impl Row {
    fn take(&mut self, column: usize) -> Result<Value, StoreError> {
        self.0
            .get_mut(column)
            .map(|value| std::mem::replace(value, Value::Null))
            .ok_or_else(|| StoreError::Invalid(format!("a result has no column {column}")))
    }

    fn wrong(column: usize, want: &str, found: &Value) -> StoreError {
        StoreError::Invalid(format!("column {column} holds {found:?}, not {want}"))
    }

    pub(crate) fn opt_int(&mut self, column: usize) -> Result<Option<i64>, StoreError> {
        match self.take(column)? {
            Value::Null => Ok(None),
            Value::Int(v) => Ok(Some(v)),
            other => Err(Self::wrong(column, "an integer", &other)),
        }
    }

    pub(crate) fn int(&mut self, column: usize) -> Result<i64, StoreError> {
        self.opt_int(column)?.ok_or_else(|| Self::wrong(column, "an integer", &Value::Null))
    }

    pub(crate) fn opt_text(&mut self, column: usize) -> Result<Option<String>, StoreError> {
        match self.take(column)? {
            Value::Null => Ok(None),
            Value::Text(v) => Ok(Some(v)),
            other => Err(Self::wrong(column, "text", &other)),
        }
    }

    pub(crate) fn text(&mut self, column: usize) -> Result<String, StoreError> {
        self.opt_text(column)?.ok_or_else(|| Self::wrong(column, "text", &Value::Null))
    }

    pub(crate) fn blob(&mut self, column: usize) -> Result<Vec<u8>, StoreError> {
        match self.take(column)? {
            Value::Blob(v) => Ok(v),
            other => Err(Self::wrong(column, "bytes", &other)),
        }
    }
}

/// What a transaction must be kept apart from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tx {
    /// Reads only, all from one snapshot of the database.
    Read,
    /// Writes that need only their rows' own locks (a nonce insert, an upsert of a counter).
    Rows,
    /// Writes that give clients their next revision: one at a time in the whole database, so
    /// revisions are committed in the order they were given (a reader that saw revision N has
    /// seen every write up to N).
    Clients,
    /// Creating or upgrading the schema: one process at a time (two hosts starting at once).
    Schema,
}

/// An open database: an SQLite file or a PostgreSQL server. Not `Sync` (share it behind the
/// store's mutex).
pub(crate) enum Db {
    Sqlite(rusqlite::Connection),
    Postgres(Box<RefCell<PgConn>>),
}

impl Db {
    /// The store's schema (written for SQLite) as this database spells it.
    pub(crate) fn schema(&self, sqlite: &str) -> String {
        match self {
            Self::Sqlite(_) => sqlite.to_owned(),
            Self::Postgres(_) => crate::postgres::schema(sqlite),
        }
    }

    /// The database's name and its server's (or library's) version.
    pub(crate) fn product(&self) -> Result<(&'static str, String), StoreError> {
        match self {
            Self::Sqlite(_) => Ok(("SQLite", self.query_one("SELECT sqlite_version()", &[])?.text(0)?)),
            Self::Postgres(_) => {
                Ok(("PostgreSQL", self.query_one("SELECT current_setting('server_version')", &[])?.text(0)?))
            }
        }
    }

    /// `sql` (a SELECT of rows, not of an aggregate) holding the rows it reads until the
    /// transaction ends, so a concurrent writer of them waits (PostgreSQL's FOR SHARE; an SQLite
    /// writer already excludes every other).
    pub(crate) fn locking<'a>(&self, sqlite: &'a str, postgres: &'a str) -> &'a str {
        match self {
            Self::Sqlite(_) => sqlite,
            Self::Postgres(_) => postgres,
        }
    }

    /// Runs a statement; returns the rows it changed.
    pub(crate) fn execute(&self, sql: &str, args: &[Value]) -> Result<u64, StoreError> {
        match self {
            Self::Sqlite(conn) => {
                let changed = conn.prepare_cached(sql)?.execute(rusqlite::params_from_iter(args))?;
                Ok(u64::try_from(changed).unwrap_or(u64::MAX))
            }
            Self::Postgres(conn) => conn.borrow_mut().execute(sql, args),
        }
    }

    /// Every row a query returns.
    pub(crate) fn query(&self, sql: &str, args: &[Value]) -> Result<Vec<Row>, StoreError> {
        match self {
            Self::Sqlite(conn) => {
                let mut statement = conn.prepare_cached(sql)?;
                let width = statement.column_count();
                let mut rows = statement.query(rusqlite::params_from_iter(args))?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    let mut values = Vec::with_capacity(width);
                    for column in 0..width {
                        values.push(match row.get_ref(column)? {
                            ValueRef::Null => Value::Null,
                            ValueRef::Integer(v) => Value::Int(v),
                            ValueRef::Text(v) => Value::Text(String::from_utf8_lossy(v).into_owned()),
                            ValueRef::Blob(v) => Value::Blob(v.to_vec()),
                            ValueRef::Real(v) => {
                                return Err(StoreError::Invalid(format!("column {column} holds a real ({v})")));
                            }
                        });
                    }
                    out.push(Row(values));
                }
                Ok(out)
            }
            Self::Postgres(conn) => conn.borrow_mut().query(sql, args),
        }
    }

    /// The first row a query returns, if any.
    pub(crate) fn query_opt(&self, sql: &str, args: &[Value]) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, args)?.into_iter().next())
    }

    /// The row a query must return.
    pub(crate) fn query_one(&self, sql: &str, args: &[Value]) -> Result<Row, StoreError> {
        self.query_opt(sql, args)?.ok_or_else(|| StoreError::Invalid(format!("no row from: {sql}")))
    }

    /// Statements without parameters or results, run in order (schema, pragmas).
    pub(crate) fn batch(&self, sql: &str) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(conn) => Ok(conn.execute_batch(sql)?),
            Self::Postgres(conn) => conn.borrow_mut().batch(sql),
        }
    }

    /// Announces, when the current transaction commits, that clients were written (PostgreSQL's
    /// NOTIFY, heard by every host's [`crate::ChangeListener`]); nothing on SQLite, whose one
    /// host sees the change at its next look.
    pub(crate) fn announce_client_change(&self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(_) => Ok(()),
            Self::Postgres(conn) => conn.borrow_mut().batch(&format!("NOTIFY {}", crate::postgres::CLIENTS_CHANNEL)),
        }
    }

    /// Runs `work` in one transaction: committed if it returns `Ok`, rolled back if it returns
    /// an error, panics, or the commit fails.
    pub(crate) fn transaction<T>(
        &self,
        kind: Tx,
        work: impl FnOnce(&Self) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match self {
            // IMMEDIATE: the write lock at BEGIN, so two writers never both read, then one fails
            // to upgrade; SQLite has one writer at a time, which serves both kinds.
            Self::Sqlite(_) if kind == Tx::Read => self.batch("BEGIN")?,
            Self::Sqlite(_) => self.batch("BEGIN IMMEDIATE")?,
            Self::Postgres(conn) => conn.borrow_mut().begin(kind)?,
        }
        let open = Open { db: self, done: false };
        let result = work(self)?;
        open.commit()?;
        Ok(result)
    }
}

/// An open transaction: rolled back when dropped before [`Open::commit`].
struct Open<'a> {
    db: &'a Db,
    done: bool,
}

impl Open<'_> {
    fn commit(mut self) -> Result<(), StoreError> {
        self.db.batch("COMMIT")?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.db.batch("ROLLBACK");
        }
    }
}

//! A PostgreSQL connection as [`crate::sql::Db`] uses it: statements prepared once and kept,
//! `?N` parameters written as PostgreSQL's `$N`, values converted to the column types the
//! server expects, and the schema spelt in PostgreSQL's types. Synchronous (the `postgres`
//! crate): the store's callers already run its work on blocking threads.
use std::{collections::HashMap, error::Error};

use bytes::BytesMut;
use postgres::{
    Client, NoTls, Statement,
    types::{IsNull, ToSql, Type, to_sql_checked},
};

use crate::{
    StoreError,
    sql::{Row, Tx, Value},
};

/// Advisory lock keys (any 64-bit numbers no other user of the database takes): one held by
/// whoever writes clients' revisions, one by whoever creates or upgrades the schema.
const CLIENTS_LOCK: i64 = 0x6761_7465_636c_6e74; // "gateclnt"
const SCHEMA_LOCK: i64 = 0x6761_7465_7363_686d; // "gateschm"

pub(crate) struct PgConn {
    client: Client,
    /// Prepared statements by their text as the store writes it (a fixed set).
    statements: HashMap<String, Statement>,
}

impl PgConn {
    /// Connects with `params` (a `postgres://` URL or `key=value` pairs, as libpq takes them).
    pub(crate) fn connect(params: &str) -> Result<Self, StoreError> {
        let client = Client::connect(params, NoTls)?;
        Ok(Self { client, statements: HashMap::new() })
    }

    fn statement(&mut self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(&numbered(sql))?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    pub(crate) fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, StoreError> {
        let statement = self.statement(sql)?;
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        Ok(self.client.execute(&statement, &params)?)
    }

    pub(crate) fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, StoreError> {
        let statement = self.statement(sql)?;
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        self.client.query(&statement, &params)?.iter().map(row).collect()
    }

    pub(crate) fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        Ok(self.client.batch_execute(sql)?)
    }

    /// Opens a transaction (READ COMMITTED, PostgreSQL's default) holding what `kind` needs
    /// until it ends.
    pub(crate) fn begin(&mut self, kind: Tx) -> Result<(), StoreError> {
        let lock = match kind {
            Tx::Read => return self.batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"),
            Tx::Rows => return self.batch("BEGIN"),
            Tx::Clients => CLIENTS_LOCK,
            Tx::Schema => SCHEMA_LOCK,
        };
        self.batch(&format!("BEGIN; SELECT pg_advisory_xact_lock({lock})"))
    }
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

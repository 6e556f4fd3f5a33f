//! SQL written once for SQLite (embedded) and PostgreSQL (at scale), used by
//! the resource store and the aggregator's ledger.
//!
//! Statements use `?N` placeholders, which SQLite reads as they are and
//! PostgreSQL as `$N`; values are text, 64-bit integers, bytes or (on
//! PostgreSQL only) lists of text. What the two databases spell differently
//! (type names, a byte-order collation, a sequence) the [`Dialect`] says, so
//! that a statement is one text with at most a fragment filled in.
//!
//! A write transaction is serialised with other processes' writers where
//! the caller asks ([`Database::serialise_writers`]): SQLite starts every
//! write transaction `IMMEDIATE` (taking the file's write lock at once),
//! PostgreSQL then takes a transaction-level advisory lock. A PostgreSQL
//! connection that was lost (a restart, a failover) is opened again and the
//! work, whose transaction rolled back, tried once more.
//!
//! ```
//! use veil_sql::{Database, args};
//! let db = Database::open(":memory:", 1, |db| db.batch("CREATE TABLE t (name TEXT, n BIGINT)"))?;
//! db.write(|db| db.execute("INSERT INTO t (name, n) VALUES (?1, ?2)", args!["a", 7_i64]))?;
//! let mut row = db.read(|db| db.query_opt("SELECT name, n FROM t", args![]))?.unwrap();
//! assert_eq!((row.text(0)?, row.int(1)?), ("a".to_string(), 7));
//! # Ok::<(), veil_sql::SqlError>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::sync::{Mutex, MutexGuard};

/// A database failure. Messages name the database and its own reason,
/// never the values bound to a statement.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// SQLite failed.
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed.
    #[error("PostgreSQL: {}", postgres_reason(.0))]
    Postgres(#[from] postgres::Error),
    /// A column held another type than was written there.
    #[error("database: column {0} of a row has an unexpected type")]
    Decode(usize),
    /// A list of values was bound on SQLite, which has no arrays.
    #[error("database: a list parameter is only for PostgreSQL")]
    ListOnSqlite,
}

/// The error's code and message without PostgreSQL's DETAIL, which may
/// quote a key's values.
fn postgres_reason(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// Shorthand.
pub type Result<T, E = SqlError> = std::result::Result<T, E>;

/// Which database a statement runs on, for the few things the two spell
/// differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Dialect {
    /// The 64-bit integer type.
    pub fn bigint(self) -> &'static str {
        match self {
            Dialect::Sqlite => "INTEGER",
            Dialect::Postgres => "BIGINT",
        }
    }

    /// The byte-string type.
    pub fn bytes(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BLOB",
            Dialect::Postgres => "BYTEA",
        }
    }

    /// A primary key the database numbers in insertion order.
    pub fn serial_key(self) -> &'static str {
        match self {
            Dialect::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
            Dialect::Postgres => "BIGSERIAL PRIMARY KEY",
        }
    }

    /// A collation that orders text by its bytes, whatever the database's
    /// locale: keyset pagination compares keys in the same order as its
    /// `ORDER BY`.
    pub fn bytewise(self) -> &'static str {
        match self {
            Dialect::Sqlite => "COLLATE BINARY",
            Dialect::Postgres => "COLLATE \"C\"",
        }
    }
}

/// A value bound to a placeholder.
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    /// Text, or NULL.
    Text(Option<&'a str>),
    /// A 64-bit integer, or NULL.
    Int(Option<i64>),
    /// Bytes.
    Bytes(&'a [u8]),
    /// A list of text (`?1::text[]`), PostgreSQL only.
    TextList(&'a [&'a str]),
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(v: &'a str) -> Self {
        Param::Text(Some(v))
    }
}
impl<'a> From<&'a String> for Param<'a> {
    fn from(v: &'a String) -> Self {
        Param::Text(Some(v))
    }
}
impl<'a> From<Option<&'a str>> for Param<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Param::Text(v)
    }
}
impl<'a> From<&'a Option<String>> for Param<'a> {
    fn from(v: &'a Option<String>) -> Self {
        Param::Text(v.as_deref())
    }
}
impl From<i64> for Param<'_> {
    fn from(v: i64) -> Self {
        Param::Int(Some(v))
    }
}
impl From<Option<i64>> for Param<'_> {
    fn from(v: Option<i64>) -> Self {
        Param::Int(v)
    }
}
impl<'a> From<&'a [u8]> for Param<'a> {
    fn from(v: &'a [u8]) -> Self {
        Param::Bytes(v)
    }
}
impl<'a> From<&'a Vec<u8>> for Param<'a> {
    fn from(v: &'a Vec<u8>) -> Self {
        Param::Bytes(v)
    }
}
impl<'a> From<&'a [&'a str]> for Param<'a> {
    fn from(v: &'a [&'a str]) -> Self {
        Param::TextList(v)
    }
}
impl<'a> From<&'a Vec<&'a str>> for Param<'a> {
    fn from(v: &'a Vec<&'a str>) -> Self {
        Param::TextList(v)
    }
}

/// `args![a, b]`: the parameters of a statement, in placeholder order.
#[macro_export]
macro_rules! args {
    ($($v:expr),* $(,)?) => { &[$($crate::Param::from($v)),*] };
}

/// One value read back.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

/// A row read back; each getter takes its column's value out.
#[derive(Debug)]
pub struct Row(Vec<Cell>);

impl Row {
    fn take(&mut self, i: usize) -> Cell {
        self.0.get_mut(i).map(|c| std::mem::replace(c, Cell::Null)).unwrap_or(Cell::Null)
    }

    /// Column `i` as text that is not NULL.
    pub fn text(&mut self, i: usize) -> Result<String> {
        self.opt_text(i)?.ok_or(SqlError::Decode(i))
    }

    /// Column `i` as text, or NULL.
    pub fn opt_text(&mut self, i: usize) -> Result<Option<String>> {
        match self.take(i) {
            Cell::Null => Ok(None),
            Cell::Text(s) => Ok(Some(s)),
            _ => Err(SqlError::Decode(i)),
        }
    }

    /// Column `i` as an integer that is not NULL.
    pub fn int(&mut self, i: usize) -> Result<i64> {
        self.opt_int(i)?.ok_or(SqlError::Decode(i))
    }

    /// Column `i` as an integer, or NULL.
    pub fn opt_int(&mut self, i: usize) -> Result<Option<i64>> {
        match self.take(i) {
            Cell::Null => Ok(None),
            Cell::Int(n) => Ok(Some(n)),
            _ => Err(SqlError::Decode(i)),
        }
    }

    /// Column `i` as bytes.
    pub fn bytes(&mut self, i: usize) -> Result<Vec<u8>> {
        match self.take(i) {
            Cell::Bytes(b) => Ok(b),
            _ => Err(SqlError::Decode(i)),
        }
    }
}

/// Statements on a connection or inside a transaction.
pub trait Sql {
    /// Which database this is.
    fn dialect(&self) -> Dialect;
    /// Runs statements separated by `;`, without parameters (a schema).
    fn batch(&mut self, sql: &str) -> Result<()>;
    /// Runs a statement; returns the number of rows it changed.
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64>;
    /// Runs a query; returns every row.
    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>>;

    /// The first row, if any.
    fn query_opt(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// The first row, which must be there.
    fn query_one(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Row> {
        self.query_opt(sql, params)?.ok_or(SqlError::Decode(0))
    }
}

struct Lite<'c>(&'c rusqlite::Connection);

fn lite_params<'p>(params: &'p [Param<'_>]) -> Result<Vec<&'p dyn rusqlite::ToSql>> {
    params
        .iter()
        .map(|p| match p {
            Param::Text(v) => Ok(v as &dyn rusqlite::ToSql),
            Param::Int(v) => Ok(v as &dyn rusqlite::ToSql),
            Param::Bytes(v) => Ok(v as &dyn rusqlite::ToSql),
            Param::TextList(_) => Err(SqlError::ListOnSqlite),
        })
        .collect()
}

impl Sql for Lite<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        Ok(self.0.execute_batch(sql)?)
    }

    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        Ok(self.0.prepare_cached(sql)?.execute(&*lite_params(params)?)? as u64)
    }

    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>> {
        use rusqlite::types::ValueRef;
        let mut statement = self.0.prepare_cached(sql)?;
        let width = statement.column_count();
        let mut rows = statement.query(&*lite_params(params)?)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let cells = (0..width)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        ValueRef::Null => Cell::Null,
                        ValueRef::Integer(n) => Cell::Int(n),
                        ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
                        ValueRef::Blob(b) => Cell::Bytes(b.to_vec()),
                        ValueRef::Real(_) => return Err(SqlError::Decode(i)),
                    })
                })
                .collect::<Result<_>>()?;
            out.push(Row(cells));
        }
        Ok(out)
    }
}

/// `?N` → `$N`. Statements hold no `?` anywhere else.
fn dollar_placeholders(sql: &str) -> String {
    sql.replace('?', "$")
}

fn pg_params<'p>(params: &'p [Param<'_>]) -> Vec<&'p (dyn postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| match p {
            Param::Text(v) => v as &(dyn postgres::types::ToSql + Sync),
            Param::Int(v) => v,
            Param::Bytes(v) => v,
            Param::TextList(v) => v,
        })
        .collect()
}

fn pg_row(r: &postgres::Row) -> Result<Row> {
    use postgres::types::Type;
    let cells = r
        .columns()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let ty = c.type_();
            Ok(if *ty == Type::TEXT || *ty == Type::VARCHAR {
                r.get::<_, Option<String>>(i).map_or(Cell::Null, Cell::Text)
            } else if *ty == Type::INT8 {
                r.get::<_, Option<i64>>(i).map_or(Cell::Null, Cell::Int)
            } else if *ty == Type::INT4 {
                r.get::<_, Option<i32>>(i).map_or(Cell::Null, |n| Cell::Int(n.into()))
            } else if *ty == Type::BYTEA {
                r.get::<_, Option<Vec<u8>>>(i).map_or(Cell::Null, Cell::Bytes)
            } else {
                return Err(SqlError::Decode(i));
            })
        })
        .collect::<Result<_>>()?;
    Ok(Row(cells))
}

struct Pg<'c, C: postgres::GenericClient>(&'c mut C);

impl<C: postgres::GenericClient> Sql for Pg<'_, C> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        Ok(self.0.batch_execute(sql)?)
    }

    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        Ok(self.0.execute(&dollar_placeholders(sql), &pg_params(params))?)
    }

    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>> {
        self.0.query(&dollar_placeholders(sql), &pg_params(params))?.iter().map(pg_row).collect()
    }
}

/// A connection to SQLite or PostgreSQL.
pub struct Database {
    connection: Connection,
    /// The PostgreSQL advisory lock every write transaction takes, when
    /// writers are serialised.
    writers_lock: Option<i64>,
}

enum Connection {
    Sqlite(Mutex<rusqlite::Connection>),
    /// With the URL it was opened with, to connect again.
    Postgres {
        url: String,
        client: Box<Mutex<postgres::Client>>,
    },
}

impl Database {
    /// Opens `target`: `postgres://…` or `postgresql://…` (with Veil's
    /// `?schema=NAME`, see [`connect_postgres`]), otherwise a SQLite file
    /// path, or `:memory:`. `setup` (creating tables) runs in a write
    /// transaction that, on PostgreSQL, holds the advisory lock `lock`, so
    /// that processes starting together do not race to create them.
    pub fn open(target: &str, lock: i64, setup: impl FnOnce(&mut dyn Sql) -> Result<()>) -> Result<Database> {
        let connection = if target.starts_with("postgres://") || target.starts_with("postgresql://") {
            Connection::Postgres { url: target.to_string(), client: Box::new(Mutex::new(connect_postgres(target)?)) }
        } else {
            let conn = if target == ":memory:" {
                rusqlite::Connection::open_in_memory()?
            } else {
                rusqlite::Connection::open(target)?
            };
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.busy_timeout(std::time::Duration::from_secs(30))?;
            Connection::Sqlite(Mutex::new(conn))
        };
        let db = Database { connection, writers_lock: Some(lock) };
        let mut setup = Some(setup);
        db.write(|sql| setup.take().map_or(Ok(()), |s| s(sql)))?;
        Ok(Database { writers_lock: None, ..db })
    }

    /// Makes every write transaction take the advisory lock `lock` on
    /// PostgreSQL, so that writers in all processes take turns (on SQLite
    /// they always do).
    pub fn serialise_writers(self, lock: i64) -> Database {
        Database { writers_lock: Some(lock), ..self }
    }

    /// Which database this is.
    pub fn dialect(&self) -> Dialect {
        match self.connection {
            Connection::Sqlite(_) => Dialect::Sqlite,
            Connection::Postgres { .. } => Dialect::Postgres,
        }
    }

    /// Runs `work` in a write transaction, committed if `work` succeeds and
    /// rolled back if not.
    pub fn write<T>(&self, mut work: impl FnMut(&mut dyn Sql) -> Result<T>) -> Result<T> {
        match &self.connection {
            Connection::Sqlite(conn) => {
                let mut conn = relock(conn);
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let out = work(&mut Lite(&tx))?;
                tx.commit()?;
                Ok(out)
            }
            Connection::Postgres { url, client } => with_postgres(url, client, |client| {
                let mut tx = client.transaction()?;
                if let Some(lock) = self.writers_lock {
                    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock])?;
                }
                let out = work(&mut Pg(&mut tx))?;
                tx.commit()?;
                Ok(out)
            }),
        }
    }

    /// Runs `work`'s statements outside a transaction (each sees committed
    /// data and commits on its own).
    pub fn read<T>(&self, mut work: impl FnMut(&mut dyn Sql) -> Result<T>) -> Result<T> {
        match &self.connection {
            Connection::Sqlite(conn) => work(&mut Lite(&relock(conn))),
            Connection::Postgres { url, client } => with_postgres(url, client, |client| work(&mut Pg(client))),
        }
    }
}

/// Connects to PostgreSQL at `url`; a `schema=NAME` query parameter
/// (Veil's, not libpq's) puts the tables in a schema of their own, created
/// if missing, so that several Veil databases (or tests) can share one
/// server.
pub fn connect_postgres(url: &str) -> std::result::Result<postgres::Client, postgres::Error> {
    let (url, schema) = split_schema(url);
    let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
    if let Some(schema) = &schema {
        // The name is quoted as an identifier; it is configuration, not data.
        let quoted = format!("\"{}\"", schema.replace('"', "\"\""));
        client.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {quoted}; SET search_path TO {quoted}"))?;
    }
    Ok(client)
}

fn split_schema(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else { return (url.to_string(), None) };
    let mut schema = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|kv| match kv.strip_prefix("schema=") {
            Some(s) => {
                schema = Some(s.to_string());
                false
            }
            None => true,
        })
        .collect();
    let url = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
    (url, schema)
}

/// Runs `work` on the connection, connecting again first if it is closed,
/// and once more after a failure that closed it (the server restarted, a
/// failover, a cut connection): the transaction it was in rolled back, so
/// trying again is safe.
fn with_postgres<T>(
    url: &str,
    client: &Mutex<postgres::Client>,
    mut work: impl FnMut(&mut postgres::Client) -> Result<T>,
) -> Result<T> {
    let mut client = relock(client);
    if client.is_closed() {
        *client = connect_postgres(url)?;
    }
    match work(&mut client) {
        Err(SqlError::Postgres(e)) if client.is_closed() || connection_lost(&e) => {
            *client = connect_postgres(url)?;
            work(&mut client)
        }
        other => other,
    }
}

/// The error of a connection that is gone: closed, or ended by the server
/// (SQLSTATE class 57, operator intervention, e.g. a shutdown; class 08,
/// connection exception).
fn connection_lost(e: &postgres::Error) -> bool {
    e.is_closed() || e.as_db_error().is_some_and(|db| matches!(db.code().code().get(..2), Some("57" | "08")))
}

/// A panic while holding the lock leaves the database consistent (the
/// transaction rolls back), so the connection stays usable.
fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_parameter_is_split_from_the_url() {
        assert_eq!(split_schema("postgres://h/db?schema=s"), ("postgres://h/db".into(), Some("s".into())));
        assert_eq!(
            split_schema("postgres://h/db?sslmode=disable&schema=s"),
            ("postgres://h/db?sslmode=disable".into(), Some("s".into()))
        );
        assert_eq!(split_schema("postgres://h/db"), ("postgres://h/db".into(), None));
    }

    #[test]
    fn lists_are_refused_on_sqlite_without_running_anything() {
        let db = Database::open(":memory:", 1, |db| db.batch("CREATE TABLE t (a TEXT)")).unwrap();
        let list = ["a", "b"];
        let err = db.write(|db| db.execute("INSERT INTO t SELECT ?1", args![&list[..]])).unwrap_err();
        assert!(matches!(err, SqlError::ListOnSqlite), "{err}");
        assert!(db.read(|db| db.query("SELECT a FROM t", args![])).unwrap().is_empty());
    }
}

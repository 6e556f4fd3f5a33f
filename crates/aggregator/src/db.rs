//! The ledger's SQL, written once for SQLite (embedded) and PostgreSQL
//! (production): statements use `?N` placeholders, which SQLite reads as
//! they are and PostgreSQL as `$N`; values are text, 64-bit integers or
//! bytes, the only types the ledger stores.
//!
//! Writers are serialised across processes, not only threads: a SQLite
//! write transaction starts `IMMEDIATE` (taking the file's write lock at
//! once), a PostgreSQL one takes a transaction-level advisory lock. Uploads
//! are rare and the merge reads what other sites sent, so two merges must
//! never interleave — whichever committed second would drop the other's
//! contribution from the aggregate.

use std::sync::{Mutex, MutexGuard};

/// A database failure. Messages name the operation and the database's own
/// reason, never the values bound to a statement.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// SQLite failed.
    #[error("aggregator database (SQLite): {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed.
    #[error("aggregator database (PostgreSQL): {}", postgres_reason(.0))]
    Postgres(#[from] postgres::Error),
    /// A column held another type than the ledger wrote there.
    #[error("aggregator database: column {0} of a row has an unexpected type")]
    Decode(usize),
}

/// The error's code and message without PostgreSQL's DETAIL, which may
/// quote a key's values.
fn postgres_reason(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

pub(crate) type Result<T, E = LedgerError> = std::result::Result<T, E>;

/// A value bound to a placeholder.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Param<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
    Bytes(&'a [u8]),
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

/// `args![a, b]`: the parameters of a statement, in placeholder order.
macro_rules! args {
    ($($v:expr),* $(,)?) => { &[$($crate::db::Param::from($v)),*] };
}
pub(crate) use args;

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
pub(crate) struct Row(Vec<Cell>);

impl Row {
    fn take(&mut self, i: usize) -> Cell {
        self.0.get_mut(i).map(|c| std::mem::replace(c, Cell::Null)).unwrap_or(Cell::Null)
    }

    pub fn text(&mut self, i: usize) -> Result<String> {
        self.opt_text(i)?.ok_or(LedgerError::Decode(i))
    }

    pub fn opt_text(&mut self, i: usize) -> Result<Option<String>> {
        match self.take(i) {
            Cell::Null => Ok(None),
            Cell::Text(s) => Ok(Some(s)),
            _ => Err(LedgerError::Decode(i)),
        }
    }

    pub fn int(&mut self, i: usize) -> Result<i64> {
        self.opt_int(i)?.ok_or(LedgerError::Decode(i))
    }

    pub fn opt_int(&mut self, i: usize) -> Result<Option<i64>> {
        match self.take(i) {
            Cell::Null => Ok(None),
            Cell::Int(n) => Ok(Some(n)),
            _ => Err(LedgerError::Decode(i)),
        }
    }

    pub fn bytes(&mut self, i: usize) -> Result<Vec<u8>> {
        match self.take(i) {
            Cell::Bytes(b) => Ok(b),
            _ => Err(LedgerError::Decode(i)),
        }
    }
}

/// Statements on a connection or inside a transaction.
pub(crate) trait Sql {
    /// Runs a statement; returns the number of rows it changed.
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64>;
    /// Runs a query; returns every row.
    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>>;

    /// The first row, if any.
    fn query_opt(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
}

struct Lite<'c>(&'c rusqlite::Connection);

fn lite_params<'p>(params: &'p [Param<'_>]) -> Vec<&'p dyn rusqlite::ToSql> {
    params
        .iter()
        .map(|p| match p {
            Param::Text(v) => v as &dyn rusqlite::ToSql,
            Param::Int(v) => v,
            Param::Bytes(v) => v,
        })
        .collect()
}

impl Sql for Lite<'_> {
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        Ok(self.0.prepare_cached(sql)?.execute(&*lite_params(params))? as u64)
    }

    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>> {
        let mut statement = self.0.prepare_cached(sql)?;
        let width = statement.column_count();
        let mut rows = statement.query(&*lite_params(params))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let cells = (0..width)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        rusqlite::types::ValueRef::Null => Cell::Null,
                        rusqlite::types::ValueRef::Integer(n) => Cell::Int(n),
                        rusqlite::types::ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
                        rusqlite::types::ValueRef::Blob(b) => Cell::Bytes(b.to_vec()),
                        rusqlite::types::ValueRef::Real(_) => return Err(LedgerError::Decode(i)),
                    })
                })
                .collect::<Result<_>>()?;
            out.push(Row(cells));
        }
        Ok(out)
    }
}

/// `?N` → `$N`. The ledger's statements hold no `?` anywhere else.
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
                return Err(LedgerError::Decode(i));
            })
        })
        .collect::<Result<_>>()?;
    Ok(Row(cells))
}

struct Pg<'c, C: postgres::GenericClient>(&'c mut C);

impl<C: postgres::GenericClient> Sql for Pg<'_, C> {
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        Ok(self.0.execute(&dollar_placeholders(sql), &pg_params(params))?)
    }

    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>> {
        self.0.query(&dollar_placeholders(sql), &pg_params(params))?.iter().map(pg_row).collect()
    }
}

/// The ledger's connection.
pub(crate) enum Database {
    Sqlite(Mutex<rusqlite::Connection>),
    /// With what it was opened with, to connect again.
    Postgres {
        target: String,
        client: Box<Mutex<postgres::Client>>,
    },
}

/// The tables, in the SQL both databases speak.
fn schema(bytes: &str, serial: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS sites (
  name TEXT PRIMARY KEY, username TEXT NOT NULL UNIQUE, display TEXT NOT NULL,
  salt {bytes} NOT NULL, digest {bytes} NOT NULL, studies TEXT NOT NULL,
  created TEXT NOT NULL, rotated TEXT);
CREATE TABLE IF NOT EXISTS api_keys (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, salt {bytes} NOT NULL, digest {bytes} NOT NULL, created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value {bytes} NOT NULL);
CREATE TABLE IF NOT EXISTS locks (
  site TEXT NOT NULL, study TEXT NOT NULL, id TEXT NOT NULL, expires BIGINT NOT NULL,
  PRIMARY KEY (site, study));
CREATE TABLE IF NOT EXISTS uploads (
  seq {serial}, id TEXT NOT NULL, site TEXT NOT NULL, study TEXT NOT NULL, version BIGINT NOT NULL,
  sha256 TEXT NOT NULL, bytes BIGINT NOT NULL, received TEXT NOT NULL,
  outcome TEXT NOT NULL, message TEXT);
CREATE TABLE IF NOT EXISTS site_versions (
  site TEXT NOT NULL, study TEXT NOT NULL, version BIGINT NOT NULL,
  sha256 TEXT NOT NULL, updated TEXT NOT NULL, earliest TEXT, latest TEXT,
  PRIMARY KEY (site, study, version));
CREATE TABLE IF NOT EXISTS contributions (
  study TEXT NOT NULL, package TEXT NOT NULL, version BIGINT NOT NULL, site TEXT NOT NULL,
  kind TEXT NOT NULL, columns TEXT NOT NULL, rows TEXT NOT NULL, updated TEXT NOT NULL,
  PRIMARY KEY (study, package, version, site));
CREATE TABLE IF NOT EXISTS aggregates (
  id TEXT PRIMARY KEY, study TEXT NOT NULL, package TEXT NOT NULL, version BIGINT NOT NULL,
  site TEXT, kind TEXT NOT NULL, columns TEXT NOT NULL, rows TEXT NOT NULL,
  total BIGINT, updated TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS manifests (
  study TEXT NOT NULL, version BIGINT NOT NULL, owner TEXT NOT NULL, manifest TEXT NOT NULL,
  PRIMARY KEY (study, version));"
    )
}

/// Serialises the ledger's writers on one PostgreSQL server (and the
/// schema's creation); the store uses 7357001.
const PG_WRITE_LOCK: i64 = 7357002;

impl Database {
    /// `postgres://…` or `postgresql://…` (with Veil's `?schema=NAME`),
    /// otherwise a SQLite file path, or `:memory:`. Tables are created when
    /// missing.
    pub fn open(target: &str) -> Result<Database> {
        if target.starts_with("postgres://") || target.starts_with("postgresql://") {
            let mut client = veil_store::connect_postgres(target)?;
            let mut tx = client.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PG_WRITE_LOCK])?;
            tx.batch_execute(&schema("BYTEA", "BIGSERIAL PRIMARY KEY"))?;
            tx.commit()?;
            return Ok(Database::Postgres { target: target.to_string(), client: Box::new(Mutex::new(client)) });
        }
        let conn = if target == ":memory:" {
            rusqlite::Connection::open_in_memory()?
        } else {
            rusqlite::Connection::open(target)?
        };
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.execute_batch(&schema("BLOB", "INTEGER PRIMARY KEY AUTOINCREMENT"))?;
        Ok(Database::Sqlite(Mutex::new(conn)))
    }

    /// Runs `work` in a write transaction, serialised with every other
    /// writer, committed if `work` succeeds and rolled back if not.
    pub fn write<T>(&self, mut work: impl FnMut(&mut dyn Sql) -> Result<T>) -> Result<T> {
        match self {
            Database::Sqlite(conn) => {
                let mut conn = relock(conn);
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let out = work(&mut Lite(&tx))?;
                tx.commit()?;
                Ok(out)
            }
            Database::Postgres { target, client } => with_postgres(target, client, |client| {
                let mut tx = client.transaction()?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PG_WRITE_LOCK])?;
                let out = work(&mut Pg(&mut tx))?;
                tx.commit()?;
                Ok(out)
            }),
        }
    }

    /// Runs `work`'s queries outside a transaction (each sees committed data).
    pub fn read<T>(&self, mut work: impl FnMut(&mut dyn Sql) -> Result<T>) -> Result<T> {
        match self {
            Database::Sqlite(conn) => work(&mut Lite(&relock(conn))),
            Database::Postgres { target, client } => with_postgres(target, client, |client| work(&mut Pg(client))),
        }
    }
}

/// Runs `work` on the connection, connecting again first if it is closed,
/// and once more after a failure that closed it (the server restarted, a
/// failover, a cut connection): the transaction it was in rolled back, so
/// trying again is safe.
fn with_postgres<T>(
    target: &str,
    client: &Mutex<postgres::Client>,
    mut work: impl FnMut(&mut postgres::Client) -> Result<T>,
) -> Result<T> {
    let mut client = relock(client);
    if client.is_closed() {
        *client = veil_store::connect_postgres(target)?;
    }
    match work(&mut client) {
        Err(LedgerError::Postgres(e)) if client.is_closed() || connection_lost(&e) => {
            *client = veil_store::connect_postgres(target)?;
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

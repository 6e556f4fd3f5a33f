//! The ledger's tables, in SQL written once for SQLite (embedded) and
//! PostgreSQL (production) with `veil-sql`.
//!
//! Writers are serialised across processes, not only threads: uploads are
//! rare and the merge reads what other sites sent, so two merges must never
//! interleave — whichever committed second would drop the other's
//! contribution from the aggregate.

use veil_sql::{Database, Dialect};

/// A database failure. Messages name the operation and the database's own
/// reason, never the values bound to a statement.
pub type LedgerError = veil_sql::SqlError;

pub(crate) type Result<T, E = LedgerError> = std::result::Result<T, E>;

/// The tables, in the SQL both databases speak.
fn schema(dialect: Dialect) -> String {
    let (bytes, serial) = (dialect.bytes(), dialect.serial_key());
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
const WRITERS_LOCK: i64 = 7357002;

/// Opens `target`: `postgres://…` or `postgresql://…` (with Veil's
/// `?schema=NAME`), otherwise a SQLite file path, or `:memory:`. Tables are
/// created when missing.
pub(crate) fn open(target: &str) -> Result<Database> {
    Ok(Database::open(target, WRITERS_LOCK, |db| db.batch(&schema(db.dialect())))?.serialise_writers(WRITERS_LOCK))
}

//! The aggregator's database (SQLite): sites and API keys (digests only),
//! upload locks, every upload's outcome, each site's contribution to each
//! data package, and the merged aggregates the query API reads.
//!
//! An accepted upload changes the database in one transaction: the site's
//! previous contribution to that study and version is replaced and every
//! data package it touches is merged again, so a reader sees the old state
//! or the new one, never a mix, and a crash leaves the old.

use std::collections::BTreeSet;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::{Value as Json, json};

use crate::merge::{Aggregate, merge, same_schema};
use crate::package::{Column, Kind, Package, Refusal, Table};
use crate::secrets;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sites (
  name TEXT PRIMARY KEY, user TEXT NOT NULL UNIQUE, display TEXT NOT NULL,
  salt BLOB NOT NULL, digest BLOB NOT NULL, studies TEXT NOT NULL,
  created TEXT NOT NULL, rotated TEXT);
CREATE TABLE IF NOT EXISTS api_keys (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, salt BLOB NOT NULL, digest BLOB NOT NULL, created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS locks (
  site TEXT NOT NULL, study TEXT NOT NULL, id TEXT NOT NULL, expires INTEGER NOT NULL,
  PRIMARY KEY (site, study));
CREATE TABLE IF NOT EXISTS uploads (
  id TEXT NOT NULL, site TEXT NOT NULL, study TEXT NOT NULL, version INTEGER NOT NULL,
  sha256 TEXT NOT NULL, bytes INTEGER NOT NULL, received TEXT NOT NULL,
  outcome TEXT NOT NULL, message TEXT);
CREATE TABLE IF NOT EXISTS site_versions (
  site TEXT NOT NULL, study TEXT NOT NULL, version INTEGER NOT NULL,
  sha256 TEXT NOT NULL, updated TEXT NOT NULL, earliest TEXT, latest TEXT,
  PRIMARY KEY (site, study, version));
CREATE TABLE IF NOT EXISTS contributions (
  study TEXT NOT NULL, package TEXT NOT NULL, version INTEGER NOT NULL, site TEXT NOT NULL,
  kind TEXT NOT NULL, columns TEXT NOT NULL, rows TEXT NOT NULL, updated TEXT NOT NULL,
  PRIMARY KEY (study, package, version, site));
CREATE TABLE IF NOT EXISTS aggregates (
  id TEXT PRIMARY KEY, study TEXT NOT NULL, package TEXT NOT NULL, version INTEGER NOT NULL,
  site TEXT, kind TEXT NOT NULL, columns TEXT NOT NULL, rows TEXT NOT NULL,
  total INTEGER, updated TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS manifests (
  study TEXT NOT NULL, version INTEGER NOT NULL, owner TEXT NOT NULL, manifest TEXT NOT NULL,
  PRIMARY KEY (study, version));
";

/// A database failure. Messages name tables and operations, never data.
#[derive(Debug, thiserror::Error)]
#[error("aggregator database: {0}")]
pub struct LedgerError(#[from] rusqlite::Error);

type Result<T, E = LedgerError> = std::result::Result<T, E>;

/// A site as the administrator sees it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// The name used in data and the API (`bch`).
    pub name: String,
    /// `CUMULUS_AGGREGATOR_USER`.
    pub user: String,
    /// A name for people.
    pub display: String,
    /// The studies it may upload; empty means all.
    pub studies: Vec<String>,
    /// When it was added.
    pub created: String,
    /// When its secret last changed, if ever.
    pub rotated: Option<String>,
}

impl Site {
    /// Whether the site may upload `study`.
    pub fn may_upload(&self, study: &str) -> bool {
        self.studies.is_empty() || self.studies.iter().any(|s| s == study)
    }
}

/// An API key as the administrator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The key's public half, also the first part of the key itself.
    pub id: String,
    /// Who or what holds it.
    pub name: String,
    /// When it was made.
    pub created: String,
}

/// What became of an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Checked and merged.
    Accepted,
    /// The same package as the site's current one: nothing changed.
    Unchanged,
    /// Refused; nothing of it was kept.
    Refused,
}

impl Outcome {
    /// accepted, unchanged or refused, as recorded.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Unchanged => "unchanged",
            Outcome::Refused => "refused",
        }
    }
}

/// One upload, for `veil aggregator uploads` and the status API.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UploadRecord {
    /// The transaction id the handshake gave.
    pub id: String,
    /// The site.
    pub site: String,
    /// The study.
    pub study: String,
    /// Its data package version.
    pub version: i64,
    /// SHA-256 of the zip.
    pub sha256: String,
    /// Size of the zip.
    pub bytes: i64,
    /// When it arrived.
    pub received: String,
    /// accepted, unchanged or refused.
    pub outcome: String,
    /// Why it was refused.
    pub message: Option<String>,
}

/// An upload that passed [`crate::package::read`], with who sent it.
pub struct Arrival<'a> {
    /// The handshake's transaction id.
    pub id: &'a str,
    /// The sending site.
    pub site: &'a str,
    /// The study.
    pub study: &'a str,
    /// Its data package version.
    pub version: i64,
    /// SHA-256 of the zip, hex.
    pub sha256: &'a str,
    /// Size of the zip.
    pub bytes: i64,
}

/// A merged (or flat) data package, as `/data-packages` lists it.
#[derive(Debug, Clone)]
pub struct DataPackage {
    /// `<study>__<package>__<NNN>`, or `<study>__<package>__<site>__<NNN>` for flat tables.
    pub id: String,
    /// The study.
    pub study: String,
    /// The table without the study prefix.
    pub name: String,
    /// The data package version.
    pub version: i64,
    /// The site, for a flat table.
    pub site: Option<String>,
    /// cube, annotated_cube or flat.
    pub kind: String,
    /// The table.
    pub aggregate: Aggregate,
    /// The network's total (the all-`NULL` row), if the table has one.
    pub total: Option<i64>,
    /// When its data last changed.
    pub updated: String,
}

/// The aggregator's database.
pub struct Ledger {
    conn: Mutex<Connection>,
}

/// Zero-padded to three digits, as Cumulus writes versions in names.
pub fn version_key(version: i64) -> String {
    format!("{version:03}")
}

impl Ledger {
    /// Opens (creating if needed) the database at `path`, or in memory for `:memory:`.
    pub fn open(path: &str) -> Result<Ledger> {
        let conn = if path == ":memory:" { Connection::open_in_memory()? } else { Connection::open(path)? };
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Ledger { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent
        // (transactions roll back), so the connection stays usable.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a site and returns its new secret (its `CUMULUS_AGGREGATOR_ID`),
    /// or `None` if the name or user is taken.
    pub fn add_site(&self, name: &str, user: &str, display: &str, studies: &[String]) -> Result<Option<String>> {
        let secret = secrets::new_secret();
        let salt = secrets::random(16);
        let digest = secrets::mac(&salt, secret.as_bytes());
        let added = self.conn().execute(
            "INSERT INTO sites (name, user, display, salt, digest, studies, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
            params![name, user, display, salt, digest, serde_json::to_string(studies).expect("strings serialise"), veil_store::now_instant()],
        )?;
        Ok((added == 1).then_some(secret))
    }

    /// Gives a site a new secret; the old one stops working at once.
    pub fn rotate_site(&self, name: &str) -> Result<Option<String>> {
        let secret = secrets::new_secret();
        let salt = secrets::random(16);
        let digest = secrets::mac(&salt, secret.as_bytes());
        let changed = self
            .conn()
            .execute("UPDATE sites SET salt = ?2, digest = ?3, rotated = ?4 WHERE name = ?1", params![name, salt, digest, veil_store::now_instant()])?;
        Ok((changed == 1).then_some(secret))
    }

    /// Removes a site's credentials; with `purge`, also its data, merging
    /// every package it contributed to again. Returns whether it existed.
    pub fn remove_site(&self, name: &str, purge: bool) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let existed = tx.execute("DELETE FROM sites WHERE name = ?1", [name])? == 1;
        if purge {
            let touched: Vec<(String, String, i64)> = {
                let mut q = tx.prepare("SELECT study, package, version FROM contributions WHERE site = ?1")?;
                q.query_map([name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<rusqlite::Result<_>>()?
            };
            tx.execute("DELETE FROM contributions WHERE site = ?1", [name])?;
            tx.execute("DELETE FROM site_versions WHERE site = ?1", [name])?;
            tx.execute("DELETE FROM aggregates WHERE site = ?1", [name])?;
            let now = veil_store::now_instant();
            for (study, package, version) in touched {
                remerge(&tx, &study, &package, version, &now)?;
            }
        }
        tx.commit()?;
        Ok(existed)
    }

    /// Every site, by name.
    pub fn sites(&self) -> Result<Vec<Site>> {
        let conn = self.conn();
        let mut q = conn.prepare("SELECT name, user, display, studies, created, rotated FROM sites ORDER BY name")?;
        q.query_map([], site)?.collect::<rusqlite::Result<_>>().map_err(Into::into)
    }

    /// The site whose user and secret these are.
    pub fn authenticate(&self, user: &str, secret: &str) -> Result<Option<Site>> {
        let conn = self.conn();
        let found = conn
            .query_row("SELECT name, user, display, studies, created, rotated, salt, digest FROM sites WHERE user = ?1", [user], |r| {
                Ok((site(r)?, r.get::<_, Vec<u8>>(6)?, r.get::<_, Vec<u8>>(7)?))
            })
            .optional()?;
        Ok(found.and_then(|(site, salt, digest)| secrets::matches(secret, &salt, &digest).then_some(site)))
    }

    /// Makes an API key for the query API; returns the key (`<id>.<secret>`).
    pub fn add_api_key(&self, name: &str) -> Result<String> {
        let id = veil_fhir::hex::encode(&secrets::random(6));
        let secret = secrets::new_secret();
        let salt = secrets::random(16);
        let digest = secrets::mac(&salt, secret.as_bytes());
        self.conn().execute(
            "INSERT INTO api_keys (id, name, salt, digest, created) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, name, salt, digest, veil_store::now_instant()],
        )?;
        Ok(format!("{id}.{secret}"))
    }

    /// Every API key (never the secret).
    pub fn api_keys(&self) -> Result<Vec<ApiKey>> {
        let conn = self.conn();
        let mut q = conn.prepare("SELECT id, name, created FROM api_keys ORDER BY created")?;
        q.query_map([], |r| Ok(ApiKey { id: r.get(0)?, name: r.get(1)?, created: r.get(2)? }))?.collect::<rusqlite::Result<_>>().map_err(Into::into)
    }

    /// Removes an API key; returns whether it existed.
    pub fn remove_api_key(&self, id: &str) -> Result<bool> {
        Ok(self.conn().execute("DELETE FROM api_keys WHERE id = ?1", [id])? == 1)
    }

    /// Whether `key` is a current API key.
    pub fn check_api_key(&self, key: &str) -> Result<bool> {
        let Some((id, secret)) = key.split_once('.') else { return Ok(false) };
        let found: Option<(Vec<u8>, Vec<u8>)> =
            self.conn().query_row("SELECT salt, digest FROM api_keys WHERE id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
        Ok(found.is_some_and(|(salt, digest)| secrets::matches(secret, &salt, &digest)))
    }

    /// The key that signs upload policies, made on first use.
    pub fn signing_key(&self) -> Result<Vec<u8>> {
        let conn = self.conn();
        conn.execute("INSERT INTO settings (name, value) VALUES ('upload-signing-key', ?1) ON CONFLICT DO NOTHING", [secrets::random(32)])?;
        Ok(conn.query_row("SELECT value FROM settings WHERE name = 'upload-signing-key'", [], |r| r.get(0))?)
    }

    /// Takes the upload lock for a site's study, for `lease_secs`: `Ok(id)`
    /// when it was free, had lapsed, or is held under `transaction` already;
    /// `Err(())` when another upload holds it.
    pub fn lock(&self, site: &str, study: &str, transaction: Option<&str>, now: i64, lease_secs: i64) -> Result<Result<String, ()>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let held: Option<(String, i64)> =
            tx.query_row("SELECT id, expires FROM locks WHERE site = ?1 AND study = ?2", [site, study], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
        let id = match held {
            Some((id, expires)) if expires > now && transaction != Some(id.as_str()) => return Ok(Err(())),
            Some((id, expires)) if expires > now => id,
            _ => veil_fhir::hex::encode(&secrets::random(16)),
        };
        tx.execute(
            "INSERT INTO locks (site, study, id, expires) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (site, study) DO UPDATE SET id = ?3, expires = ?4",
            params![site, study, id, now + lease_secs],
        )?;
        tx.commit()?;
        Ok(Ok(id))
    }

    /// Whether the lock is still `id`'s (or free: a lapsed lock nobody took).
    pub fn lock_is(&self, site: &str, study: &str, id: &str, now: i64) -> Result<bool> {
        let held: Option<(String, i64)> =
            self.conn().query_row("SELECT id, expires FROM locks WHERE site = ?1 AND study = ?2", [site, study], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
        Ok(match held {
            Some((holder, expires)) => holder == id || expires <= now,
            None => true,
        })
    }

    /// Releases the lock if `id` holds it.
    pub fn unlock(&self, site: &str, study: &str, id: &str) -> Result<()> {
        self.conn().execute("DELETE FROM locks WHERE site = ?1 AND study = ?2 AND id = ?3", [site, study, id])?;
        Ok(())
    }

    /// Records a refused upload.
    pub fn refuse(&self, arrival: &Arrival<'_>, why: &Refusal) -> Result<()> {
        let conn = self.conn();
        record(&conn, arrival, Outcome::Refused, Some(&why.0))?;
        Ok(())
    }

    /// Keeps a checked package: replaces the site's contribution to the
    /// study at this version and merges every data package it touches, in
    /// one transaction. A package identical to the site's current one
    /// changes nothing. A schema that differs from other sites' for the
    /// same data package and version is refused (a change needs a new
    /// version), and so recorded.
    pub fn accept(&self, arrival: &Arrival<'_>, package: &Package) -> Result<Result<Outcome, Refusal>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let current: Option<String> = tx
            .query_row(
                "SELECT sha256 FROM site_versions WHERE site = ?1 AND study = ?2 AND version = ?3",
                params![arrival.site, arrival.study, arrival.version],
                |r| r.get(0),
            )
            .optional()?;
        if current.as_deref() == Some(arrival.sha256) {
            record(&tx, arrival, Outcome::Unchanged, None)?;
            tx.commit()?;
            return Ok(Ok(Outcome::Unchanged));
        }
        if let Some(why) = schema_conflict(&tx, arrival, package)? {
            drop(tx);
            record(&conn, arrival, Outcome::Refused, Some(&why.0))?;
            return Ok(Err(why));
        }
        let now = veil_store::now_instant();
        let mut touched: BTreeSet<String> = {
            let mut q = tx.prepare("SELECT package FROM contributions WHERE site = ?1 AND study = ?2 AND version = ?3")?;
            q.query_map(params![arrival.site, arrival.study, arrival.version], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?
        };
        // The new upload replaces the site's whole contribution: a package
        // it no longer sends leaves the merge (recorded here as the choice
        // Cumulus leaves open).
        tx.execute("DELETE FROM contributions WHERE site = ?1 AND study = ?2 AND version = ?3", params![arrival.site, arrival.study, arrival.version])?;
        for table in &package.tables {
            tx.execute(
                "INSERT INTO contributions (study, package, version, site, kind, columns, rows, updated) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    arrival.study,
                    table.package,
                    arrival.version,
                    arrival.site,
                    table.kind.as_str(),
                    serde_json::to_string(&table.columns).expect("columns serialise"),
                    serde_json::to_string(&table.rows).expect("rows serialise"),
                    now
                ],
            )?;
            touched.insert(table.package.clone());
        }
        for name in &touched {
            remerge(&tx, arrival.study, name, arrival.version, &now)?;
        }
        let (earliest, latest) = package.period.clone().unzip();
        tx.execute(
            "INSERT INTO site_versions (site, study, version, sha256, updated, earliest, latest) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (site, study, version) DO UPDATE SET sha256 = ?4, updated = ?5, earliest = ?6, latest = ?7",
            params![arrival.site, arrival.study, arrival.version, arrival.sha256, now, earliest, latest],
        )?;
        if let Some(manifest) = &package.manifest {
            // The first site to send a study's manifest for a version owns it (as Cumulus does).
            tx.execute(
                "INSERT INTO manifests (study, version, owner, manifest) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (study, version) DO UPDATE SET manifest = ?4 WHERE owner = ?3",
                params![arrival.study, arrival.version, arrival.site, manifest],
            )?;
        }
        record(&tx, arrival, Outcome::Accepted, None)?;
        tx.commit()?;
        Ok(Ok(Outcome::Accepted))
    }

    /// Every merged and flat data package, by id.
    pub fn data_packages(&self) -> Result<Vec<DataPackage>> {
        let conn = self.conn();
        let mut q = conn.prepare(&format!("SELECT {AGGREGATE_COLS} FROM aggregates ORDER BY id"))?;
        q.query_map([], data_package)?.collect::<rusqlite::Result<_>>().map_err(Into::into)
    }

    /// One data package.
    pub fn data_package(&self, id: &str) -> Result<Option<DataPackage>> {
        let conn = self.conn();
        Ok(conn.query_row(&format!("SELECT {AGGREGATE_COLS} FROM aggregates WHERE id = ?1"), [id], data_package).optional()?)
    }

    /// `site → study → package → <package>__<NNN> → {last_upload, …}`, as
    /// Cumulus' `/metadata` answers (its version keys normalised).
    pub fn metadata(&self) -> Result<Json> {
        let conn = self.conn();
        let mut q = conn.prepare(
            "SELECT c.site, c.study, c.package, c.version, c.updated, v.updated FROM contributions c
             JOIN site_versions v ON v.site = c.site AND v.study = c.study AND v.version = c.version ORDER BY 1, 2, 3, 4",
        )?;
        let mut out = json!({});
        let rows = q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?, r.get::<_, String>(4)?, r.get::<_, String>(5)?)))?;
        for row in rows {
            let (site, study, package, version, updated, uploaded) = row?;
            out[&site][&study][&package][format!("{package}__{}", version_key(version))] = json!({
                "transaction_format_version": "2",
                "last_upload": uploaded,
                "last_data_update": updated,
                "last_aggregation": updated,
                "last_error": null,
                "deleted": null,
            });
        }
        Ok(out)
    }

    /// `site → study → <NNN> → {earliest_date, latest_date, …}`, as Cumulus'
    /// `/study-periods` answers.
    pub fn study_periods(&self) -> Result<Json> {
        let conn = self.conn();
        let mut q = conn.prepare("SELECT site, study, version, earliest, latest, updated FROM site_versions ORDER BY 1, 2, 3")?;
        let mut out = json!({});
        let rows = q.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, Option<String>>(3)?, r.get::<_, Option<String>>(4)?, r.get::<_, String>(5)?))
        })?;
        for row in rows {
            let (site, study, version, earliest, latest, updated) = row?;
            out[&site][&study][version_key(version)] = json!({
                "study_period_format_version": "2",
                "earliest_date": earliest,
                "latest_date": latest,
                "last_data_update": updated,
            });
        }
        Ok(out)
    }

    /// Each study's manifests: `study → <NNN> → {study_owner, manifest}`.
    pub fn studies(&self) -> Result<Json> {
        let conn = self.conn();
        let mut q = conn.prepare("SELECT study, version, owner, manifest FROM manifests ORDER BY 1, 2")?;
        let mut out = json!({});
        let rows = q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?)))?;
        for row in rows {
            let (study, version, owner, manifest) = row?;
            let parsed: toml::Table = manifest.parse().unwrap_or_default();
            let mut entry = serde_json::to_value(&parsed).unwrap_or(json!({}));
            entry["study_owner"] = owner.into();
            out[&study][version_key(version)] = entry;
        }
        Ok(out)
    }

    /// The latest uploads, newest first.
    pub fn uploads(&self, limit: usize) -> Result<Vec<UploadRecord>> {
        let conn = self.conn();
        let mut q = conn.prepare("SELECT id, site, study, version, sha256, bytes, received, outcome, message FROM uploads ORDER BY rowid DESC LIMIT ?1")?;
        q.query_map([limit as i64], |r| {
            Ok(UploadRecord {
                id: r.get(0)?,
                site: r.get(1)?,
                study: r.get(2)?,
                version: r.get(3)?,
                sha256: r.get(4)?,
                bytes: r.get(5)?,
                received: r.get(6)?,
                outcome: r.get(7)?,
                message: r.get(8)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()
        .map_err(Into::into)
    }
}

fn site(r: &rusqlite::Row<'_>) -> rusqlite::Result<Site> {
    Ok(Site {
        name: r.get(0)?,
        user: r.get(1)?,
        display: r.get(2)?,
        studies: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default(),
        created: r.get(4)?,
        rotated: r.get(5)?,
    })
}

const AGGREGATE_COLS: &str = "id, study, package, version, site, kind, columns, rows, total, updated";

fn data_package(r: &rusqlite::Row<'_>) -> rusqlite::Result<DataPackage> {
    let columns: Vec<Column> = serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or_default();
    let rows: Vec<Vec<Json>> = serde_json::from_str(&r.get::<_, String>(7)?).unwrap_or_default();
    Ok(DataPackage {
        id: r.get(0)?,
        study: r.get(1)?,
        name: r.get(2)?,
        version: r.get(3)?,
        site: r.get(4)?,
        kind: r.get(5)?,
        aggregate: Aggregate { columns, rows },
        total: r.get(8)?,
        updated: r.get(9)?,
    })
}

fn record(conn: &Connection, a: &Arrival<'_>, outcome: Outcome, message: Option<&str>) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO uploads (id, site, study, version, sha256, bytes, received, outcome, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![a.id, a.site, a.study, a.version, a.sha256, a.bytes, veil_store::now_instant(), outcome.as_str(), message],
    )?;
    Ok(())
}

/// A table whose columns differ from another site's for the same data
/// package and version, or whose kind does.
fn schema_conflict(tx: &Transaction<'_>, a: &Arrival<'_>, package: &Package) -> Result<Option<Refusal>> {
    let mut q = tx.prepare("SELECT kind, columns FROM contributions WHERE study = ?1 AND package = ?2 AND version = ?3 AND site <> ?4 LIMIT 1")?;
    for table in &package.tables {
        let other: Option<(String, String)> = q.query_row(params![a.study, table.package, a.version, a.site], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
        let Some((kind, columns)) = other else { continue };
        let columns: Vec<Column> = serde_json::from_str(&columns).unwrap_or_default();
        if kind != table.kind.as_str() || !same_schema(&columns, &table.columns) {
            let names = |c: &[Column]| c.iter().map(|c| format!("{}:{:?}", c.name, c.column_type).to_lowercase()).collect::<Vec<_>>().join(", ");
            return Ok(Some(Refusal(format!(
                "{}__{}: other sites sent version {} as a {kind} with columns ({}), this upload as a {} with ({}); a schema change needs a new data_package_version",
                a.study,
                table.package,
                version_key(a.version),
                names(&columns),
                table.kind.as_str(),
                names(&table.columns)
            ))));
        }
    }
    Ok(None)
}

/// Rebuilds the aggregates of one data package and version from every
/// site's contribution: one merged cube, or one flat table per site.
fn remerge(tx: &Transaction<'_>, study: &str, package: &str, version: i64, now: &str) -> Result<()> {
    let contributions: Vec<(String, Table)> = {
        let mut q = tx.prepare("SELECT site, kind, columns, rows FROM contributions WHERE study = ?1 AND package = ?2 AND version = ?3 ORDER BY site")?;
        q.query_map(params![study, package, version], |r| {
            let kind = Kind::parse(&r.get::<_, String>(1)?).unwrap_or(Kind::Flat);
            let columns = serde_json::from_str(&r.get::<_, String>(2)?).unwrap_or_default();
            let rows = serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default();
            Ok((r.get::<_, String>(0)?, Table { package: package.to_string(), kind, columns, rows }))
        })?
        .collect::<rusqlite::Result<_>>()?
    };
    tx.execute("DELETE FROM aggregates WHERE study = ?1 AND package = ?2 AND version = ?3", params![study, package, version])?;
    let nnn = version_key(version);
    let mut insert = tx.prepare(&format!("INSERT INTO aggregates ({AGGREGATE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"))?;
    let mut put = |id: String, site: Option<&str>, kind: Kind, aggregate: &Aggregate| {
        let total = aggregate.columns.iter().position(|c| c.name == "cnt").and_then(|cnt| {
            aggregate.rows.iter().find(|r| r.iter().enumerate().all(|(i, v)| i == cnt || v.is_null())).and_then(|r| r[cnt].as_i64())
        });
        insert.execute(params![
            id,
            study,
            package,
            version,
            site,
            kind.as_str(),
            serde_json::to_string(&aggregate.columns).expect("columns serialise"),
            serde_json::to_string(&aggregate.rows).expect("rows serialise"),
            total,
            now
        ])
    };
    let merged: Vec<(&str, &Table)> = contributions.iter().filter(|(_, t)| t.kind.merged()).map(|(s, t)| (s.as_str(), t)).collect();
    if let Some((_, first)) = merged.first() {
        put(format!("{study}__{package}__{nnn}"), None, first.kind, &merge(&merged))?;
    }
    for (site, table) in contributions.iter().filter(|(_, t)| !t.kind.merged()) {
        let flat = Aggregate { columns: table.columns.clone(), rows: table.rows.clone() };
        put(format!("{study}__{package}__{site}__{nnn}"), Some(site), Kind::Flat, &flat)?;
    }
    Ok(())
}

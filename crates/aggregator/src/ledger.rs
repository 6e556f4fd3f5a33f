//! The aggregator's database: sites and API keys (digests only), upload
//! locks, every upload's outcome, each site's contribution to each data
//! package, and the merged aggregates the query API reads. SQLite by
//! default, PostgreSQL for production ([`crate::db`]); the statements are
//! the same.
//!
//! An accepted upload changes the database in one transaction: the site's
//! previous contribution to that study and version is replaced and every
//! data package it touches is merged again, so a reader sees the old state
//! or the new one, never a mix, and a crash leaves the old.

use std::collections::BTreeSet;

use serde_json::{Value as Json, json};

pub use crate::db::LedgerError;
use crate::db::Result;
use crate::merge::{Aggregate, merge, same_schema};
use crate::package::{Column, Kind, Package, Refusal, Table};
use crate::secrets;
use veil_sql::{Database, Row, Sql, args};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
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

    /// Reads what [`Outcome::as_str`] wrote; column `column` of a row.
    fn read(text: &str, column: usize) -> Result<Outcome> {
        [Outcome::Accepted, Outcome::Unchanged, Outcome::Refused]
            .into_iter()
            .find(|o| o.as_str() == text)
            .ok_or(LedgerError::Decode(column))
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
    /// What became of it.
    pub outcome: Outcome,
    /// Why it was refused.
    pub message: Option<String>,
}

/// What became of an upload, as its site may ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadState {
    /// The handshake was made and the upload not yet checked.
    Waiting,
    /// Checked: accepted, unchanged or refused (with the reason).
    Done {
        /// What became of it.
        outcome: Outcome,
        /// Why it was refused.
        message: Option<String>,
    },
    /// No such upload of this site's (or its lock lapsed unused).
    Unknown,
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
    db: Database,
}

/// Why an upload on a form that is no longer valid is refused.
pub const FORM_GONE: &str = "this upload form is no longer valid: it was used already, or the site's credentials were rotated or removed since it was issued; ask the aggregator for a new one";

/// Where an upload stands with its lock (see [`Ledger::lock_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockState {
    /// Its lock is held under its transaction: it may be merged.
    Held,
    /// A newer handshake of the site's took the lock.
    TakenOver,
    /// No lock: the form was used, or the credentials changed.
    Gone,
}

/// Deletes the lock `arrival`'s transaction holds; whether it held one.
fn consume_lock(db: &mut dyn Sql, a: &Arrival<'_>) -> Result<bool> {
    Ok(db.execute("DELETE FROM locks WHERE site = ?1 AND study = ?2 AND id = ?3", args![a.site, a.study, a.id])? == 1)
}

/// Zero-padded to three digits, as Cumulus writes versions in names.
pub fn version_key(version: i64) -> String {
    format!("{version:03}")
}

/// A new secret and its salted digest.
fn new_credential() -> (String, Vec<u8>, Vec<u8>) {
    let secret = secrets::new_secret();
    let salt = secrets::random(16);
    let digest = secrets::mac(&salt, secret.as_bytes());
    (secret, salt, digest)
}

impl Ledger {
    /// Opens (creating the tables if needed) the database `target` names:
    /// `postgres://…` / `postgresql://…` (with `?schema=NAME` for a schema of
    /// its own), otherwise a SQLite file path, or `:memory:`.
    pub fn open(target: &str) -> Result<Ledger> {
        Ok(Ledger { db: crate::db::open(target)? })
    }

    /// Adds a site and returns its new secret (its `CUMULUS_AGGREGATOR_ID`),
    /// or `None` if the name or user is taken.
    pub fn add_site(&self, name: &str, user: &str, display: &str, studies: &[String]) -> Result<Option<String>> {
        let (secret, salt, digest) = new_credential();
        let studies = serde_json::to_string(studies).expect("strings serialise");
        let added = self.db.write(|db| {
            db.execute(
                "INSERT INTO sites (name, username, display, salt, digest, studies, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                args![name, user, display, &salt, &digest, &studies, &veil_util::clock::now_instant()],
            )
        })?;
        Ok((added == 1).then_some(secret))
    }

    /// Gives a site a new secret; the old one stops working at once.
    pub fn rotate_site(&self, name: &str) -> Result<Option<String>> {
        let (secret, salt, digest) = new_credential();
        let changed = self.db.write(|db| {
            db.execute(
                "UPDATE sites SET salt = ?2, digest = ?3, rotated = ?4 WHERE name = ?1",
                args![name, &salt, &digest, &veil_util::clock::now_instant()],
            )
            .and_then(|changed| {
                // Upload forms issued under the old secret die with it.
                db.execute("DELETE FROM locks WHERE site = ?1", args![name])?;
                Ok(changed)
            })
        })?;
        Ok((changed == 1).then_some(secret))
    }

    /// Removes a site's credentials; with `purge`, also its data, merging
    /// every package it contributed to again. Returns whether it existed.
    pub fn remove_site(&self, name: &str, purge: bool) -> Result<bool> {
        self.db.write(|db| {
            let existed = db.execute("DELETE FROM sites WHERE name = ?1", args![name])? == 1;
            // Its outstanding upload forms die with it.
            db.execute("DELETE FROM locks WHERE site = ?1", args![name])?;
            if purge {
                let touched = db
                    .query("SELECT study, package, version FROM contributions WHERE site = ?1", args![name])?
                    .into_iter()
                    .map(|mut r| Ok((r.text(0)?, r.text(1)?, r.int(2)?)))
                    .collect::<Result<Vec<_>>>()?;
                db.execute("DELETE FROM contributions WHERE site = ?1", args![name])?;
                db.execute("DELETE FROM site_versions WHERE site = ?1", args![name])?;
                db.execute("DELETE FROM aggregates WHERE site = ?1", args![name])?;
                let now = veil_util::clock::now_instant();
                for (study, package, version) in touched {
                    remerge(db, &study, &package, version, &now)?;
                }
            }
            Ok(existed)
        })
    }

    /// Every site, by name.
    pub fn sites(&self) -> Result<Vec<Site>> {
        self.db.read(|db| {
            db.query(&format!("SELECT {SITE_COLS} FROM sites ORDER BY name"), args![])?.into_iter().map(site).collect()
        })
    }

    /// The site whose user and secret these are.
    pub fn authenticate(&self, user: &str, secret: &str) -> Result<Option<Site>> {
        let found = self.db.read(|db| {
            db.query_opt(&format!("SELECT {SITE_COLS}, salt, digest FROM sites WHERE username = ?1"), args![user])
        })?;
        let Some(mut row) = found else {
            return Ok(None);
        };
        let (salt, digest) = (row.bytes(6)?, row.bytes(7)?);
        Ok(secrets::matches(secret, &salt, &digest).then_some(site(row)?))
    }

    /// Makes an API key for the query API; returns the key (`<id>.<secret>`).
    pub fn add_api_key(&self, name: &str) -> Result<String> {
        let id = veil_util::hex::encode(&secrets::random(6));
        let (secret, salt, digest) = new_credential();
        self.db.write(|db| {
            db.execute(
                "INSERT INTO api_keys (id, name, salt, digest, created) VALUES (?1, ?2, ?3, ?4, ?5)",
                args![&id, name, &salt, &digest, &veil_util::clock::now_instant()],
            )
        })?;
        Ok(format!("{id}.{secret}"))
    }

    /// Every API key (never the secret).
    pub fn api_keys(&self) -> Result<Vec<ApiKey>> {
        self.db.read(|db| {
            db.query("SELECT id, name, created FROM api_keys ORDER BY created, id", args![])?
                .into_iter()
                .map(|mut r| Ok(ApiKey { id: r.text(0)?, name: r.text(1)?, created: r.text(2)? }))
                .collect()
        })
    }

    /// Removes an API key; returns whether it existed.
    pub fn remove_api_key(&self, id: &str) -> Result<bool> {
        Ok(self.db.write(|db| db.execute("DELETE FROM api_keys WHERE id = ?1", args![id]))? == 1)
    }

    /// Whether `key` is a current API key.
    pub fn check_api_key(&self, key: &str) -> Result<bool> {
        let Some((id, secret)) = key.split_once('.') else {
            return Ok(false);
        };
        let Some(mut row) =
            self.db.read(|db| db.query_opt("SELECT salt, digest FROM api_keys WHERE id = ?1", args![id]))?
        else {
            return Ok(false);
        };
        Ok(secrets::matches(secret, &row.bytes(0)?, &row.bytes(1)?))
    }

    /// The key that signs upload policies, made on first use.
    pub fn signing_key(&self) -> Result<Vec<u8>> {
        let fresh = secrets::random(32);
        self.db.write(|db| {
            db.execute(
                "INSERT INTO settings (name, value) VALUES ('upload-signing-key', ?1) ON CONFLICT DO NOTHING",
                args![&fresh],
            )?;
            db.query_opt("SELECT value FROM settings WHERE name = 'upload-signing-key'", args![])?
                .map_or(Err(LedgerError::Decode(0)), |mut r| r.bytes(0))
        })
    }

    /// Takes the upload lock for a site's study, for `lease_secs`: its id
    /// when it was free, had lapsed, or is held under `transaction` already;
    /// `None` when another upload holds it. One statement, so two
    /// handshakes racing (even from two servers) cannot both win.
    pub fn lock(
        &self,
        site: &str,
        study: &str,
        transaction: Option<&str>,
        now: i64,
        lease_secs: i64,
    ) -> Result<Option<String>> {
        let fresh = veil_util::hex::encode(&secrets::random(16));
        let taken = self.db.write(|db| {
            db.query_opt(
                "INSERT INTO locks (site, study, id, expires) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (site, study) DO UPDATE
                   SET id = CASE WHEN locks.id = ?5 AND locks.expires > ?6 THEN locks.id ELSE ?3 END, expires = ?4
                   WHERE locks.expires <= ?6 OR locks.id = ?5
                 RETURNING id",
                args![site, study, &fresh, now + lease_secs, transaction, now],
            )
        })?;
        taken.map(|mut row| row.text(0)).transpose()
    }

    /// Where the upload under transaction `id` stands with its lock. A
    /// form is good for one upload: its lock is consumed when the upload
    /// is recorded (kept or refused), and rotating or removing the site's
    /// credentials deletes the site's locks, so a form used once, or issued
    /// under credentials that are gone, finds [`LockState::Gone`].
    pub fn lock_state(&self, site: &str, study: &str, id: &str) -> Result<LockState> {
        let held = self
            .db
            .read(|db| db.query_opt("SELECT id FROM locks WHERE site = ?1 AND study = ?2", args![site, study]))?;
        Ok(match held.map(|mut row| row.text(0)).transpose()? {
            // Even lapsed: nobody took it over, so it is still this upload's.
            Some(holder) if holder == id => LockState::Held,
            Some(_) => LockState::TakenOver,
            None => LockState::Gone,
        })
    }

    /// Whether an outcome was recorded for this very upload (same site,
    /// transaction and bytes): an S3 object taken again after a crash that
    /// came between recording and removing it.
    pub fn recorded(&self, site: &str, transaction: &str, sha256: &str) -> Result<bool> {
        self.db.read(|db| {
            Ok(db
                .query_opt(
                    "SELECT 1 FROM uploads WHERE site = ?1 AND id = ?2 AND sha256 = ?3",
                    args![site, transaction, sha256],
                )?
                .is_some())
        })
    }

    /// Records that an upload already recorded came again (the same S3
    /// object after a crash): unchanged, and nothing else done.
    pub fn repeated(&self, arrival: &Arrival<'_>) -> Result<()> {
        self.db.write(|db| record(db, arrival, Outcome::Unchanged, None))
    }

    /// Frees every upload lock: at the start of a server whose uploads come
    /// to it (not through S3), any upload that held one died with the last
    /// process, and its site should not wait out the lease to try again.
    pub fn release_all_locks(&self) -> Result<u64> {
        self.db.write(|db| db.execute("DELETE FROM locks", args![]))
    }

    /// Releases the lock if `id` holds it.
    pub fn unlock(&self, site: &str, study: &str, id: &str) -> Result<()> {
        self.db.write(|db| {
            db.execute("DELETE FROM locks WHERE site = ?1 AND study = ?2 AND id = ?3", args![site, study, id])
        })?;
        Ok(())
    }

    /// Records a refused upload, consuming its form.
    pub fn refuse(&self, arrival: &Arrival<'_>, why: &Refusal) -> Result<()> {
        self.db.write(|db| {
            consume_lock(db, arrival)?;
            record(db, arrival, Outcome::Refused, Some(&why.0))
        })
    }

    /// Keeps a checked package: replaces the site's contribution to the
    /// study at this version and merges every data package it touches, in
    /// one transaction. A package identical to the site's current one
    /// changes nothing. A schema that differs from other sites' for the
    /// same data package and version is refused (a change needs a new
    /// version), and so recorded.
    pub fn accept(&self, arrival: &Arrival<'_>, package: &Package) -> Result<Result<Outcome, Refusal>> {
        self.db.write(|db| {
            let a = arrival;
            // In the same transaction as the merge: a rotation or a second
            // use of the form racing this upload cannot both succeed.
            if !consume_lock(db, a)? {
                let why = Refusal(FORM_GONE.into());
                record(db, a, Outcome::Refused, Some(&why.0))?;
                return Ok(Err(why));
            }
            let current = db.query_opt("SELECT sha256 FROM site_versions WHERE site = ?1 AND study = ?2 AND version = ?3", args![a.site, a.study, a.version])?;
            if current.map(|mut r| r.text(0)).transpose()?.as_deref() == Some(a.sha256) {
                record(db, a, Outcome::Unchanged, None)?;
                return Ok(Ok(Outcome::Unchanged));
            }
            if let Some(why) = schema_conflict(db, a, package)? {
                // Nothing was written yet: the refusal is all this transaction keeps.
                record(db, a, Outcome::Refused, Some(&why.0))?;
                return Ok(Err(why));
            }
            let now = veil_util::clock::now_instant();
            let mut touched: BTreeSet<String> = db
                .query("SELECT package FROM contributions WHERE site = ?1 AND study = ?2 AND version = ?3", args![a.site, a.study, a.version])?
                .into_iter()
                .map(|mut r| r.text(0))
                .collect::<Result<_>>()?;
            // The new upload replaces the site's whole contribution: a package
            // it no longer sends leaves the merge (recorded here as the choice
            // Cumulus leaves open).
            db.execute("DELETE FROM contributions WHERE site = ?1 AND study = ?2 AND version = ?3", args![a.site, a.study, a.version])?;
            for table in &package.tables {
                db.execute(
                    "INSERT INTO contributions (study, package, version, site, kind, columns, rows, updated) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    args![
                        a.study,
                        &table.package,
                        a.version,
                        a.site,
                        table.kind.as_str(),
                        &serde_json::to_string(&table.columns).expect("columns serialise"),
                        &serde_json::to_string(&table.rows).expect("rows serialise"),
                        &now
                    ],
                )?;
                touched.insert(table.package.clone());
            }
            for name in &touched {
                remerge(db, a.study, name, a.version, &now)?;
            }
            let (earliest, latest) = package.period.clone().unzip();
            db.execute(
                "INSERT INTO site_versions (site, study, version, sha256, updated, earliest, latest) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (site, study, version) DO UPDATE SET sha256 = ?4, updated = ?5, earliest = ?6, latest = ?7",
                args![a.site, a.study, a.version, a.sha256, &now, earliest.as_deref(), latest.as_deref()],
            )?;
            if let Some(manifest) = &package.manifest {
                // The first site to send a study's manifest for a version owns it (as Cumulus does).
                db.execute(
                    "INSERT INTO manifests (study, version, owner, manifest) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (study, version) DO UPDATE SET manifest = ?4 WHERE manifests.owner = ?3",
                    args![a.study, a.version, a.site, manifest],
                )?;
            }
            record(db, a, Outcome::Accepted, None)?;
            Ok(Ok(Outcome::Accepted))
        })
    }

    /// Every merged and flat data package, by id.
    pub fn data_packages(&self) -> Result<Vec<DataPackage>> {
        self.db.read(|db| {
            db.query(&format!("SELECT {AGGREGATE_COLS} FROM aggregates ORDER BY id"), args![])?
                .into_iter()
                .map(data_package)
                .collect()
        })
    }

    /// One data package.
    pub fn data_package(&self, id: &str) -> Result<Option<DataPackage>> {
        self.db.read(|db| {
            db.query_opt(&format!("SELECT {AGGREGATE_COLS} FROM aggregates WHERE id = ?1"), args![id])?
                .map(data_package)
                .transpose()
        })
    }

    /// `site → study → package → <package>__<NNN> → {last_upload, …}`, as
    /// Cumulus' `/metadata` answers (its version keys normalised).
    pub fn metadata(&self) -> Result<Json> {
        let rows = self.db.read(|db| {
            db.query(
                "SELECT c.site, c.study, c.package, c.version, c.updated, v.updated,
                   (SELECT MAX(u.received) FROM uploads u
                    WHERE u.site = c.site AND u.study = c.study AND u.version = c.version AND u.outcome = 'refused')
                 FROM contributions c
                 JOIN site_versions v ON v.site = c.site AND v.study = c.study AND v.version = c.version ORDER BY 1, 2, 3, 4",
                args![],
            )
        })?;
        let mut out = json!({});
        for mut r in rows {
            let (site, study, package, version, updated, uploaded) =
                (r.text(0)?, r.text(1)?, r.text(2)?, r.int(3)?, r.text(4)?, r.text(5)?);
            out[&site][&study][&package][format!("{package}__{}", version_key(version))] = json!({
                "transaction_format_version": "2",
                "last_upload": uploaded,
                "last_data_update": updated,
                "last_aggregation": updated,
                // When the site's latest refused upload of this version arrived
                // (its reason is in /uploads), as Cumulus keeps a timestamp.
                "last_error": r.opt_text(6)?,
                "deleted": null,
            });
        }
        Ok(out)
    }

    /// `site → study → <NNN> → {earliest_date, latest_date, …}`, as Cumulus'
    /// `/study-periods` answers.
    pub fn study_periods(&self) -> Result<Json> {
        let rows = self.db.read(|db| {
            db.query(
                "SELECT site, study, version, earliest, latest, updated FROM site_versions ORDER BY 1, 2, 3",
                args![],
            )
        })?;
        let mut out = json!({});
        for mut r in rows {
            let (site, study, version) = (r.text(0)?, r.text(1)?, r.int(2)?);
            out[&site][&study][version_key(version)] = json!({
                "study_period_format_version": "2",
                "earliest_date": r.opt_text(3)?,
                "latest_date": r.opt_text(4)?,
                "last_data_update": r.text(5)?,
            });
        }
        Ok(out)
    }

    /// Each study's manifests: `study → <NNN> → {study_owner, manifest}`.
    pub fn studies(&self) -> Result<Json> {
        let rows = self
            .db
            .read(|db| db.query("SELECT study, version, owner, manifest FROM manifests ORDER BY 1, 2", args![]))?;
        let mut out = json!({});
        for mut r in rows {
            let (study, version, owner, manifest) = (r.text(0)?, r.int(1)?, r.text(2)?, r.text(3)?);
            let parsed: toml::Table = manifest.parse().unwrap_or_default();
            let mut entry = serde_json::to_value(&parsed).unwrap_or(json!({}));
            entry["study_owner"] = owner.into();
            out[&study][version_key(version)] = entry;
        }
        Ok(out)
    }

    /// What became of the site's upload under `transaction`.
    pub fn upload_state(&self, site: &str, transaction: &str) -> Result<UploadState> {
        self.db.read(|db| {
            if let Some(mut row) = db.query_opt(
                "SELECT outcome, message FROM uploads WHERE site = ?1 AND id = ?2 ORDER BY seq DESC LIMIT 1",
                args![site, transaction],
            )? {
                return Ok(UploadState::Done { outcome: Outcome::read(&row.text(0)?, 0)?, message: row.opt_text(1)? });
            }
            let waiting =
                db.query_opt("SELECT 1 FROM locks WHERE site = ?1 AND id = ?2", args![site, transaction])?.is_some();
            Ok(if waiting { UploadState::Waiting } else { UploadState::Unknown })
        })
    }

    /// The latest uploads, newest first.
    pub fn uploads(&self, limit: usize) -> Result<Vec<UploadRecord>> {
        let rows = self.db.read(|db| {
            db.query(
                "SELECT id, site, study, version, sha256, bytes, received, outcome, message FROM uploads ORDER BY seq DESC LIMIT ?1",
                args![i64::try_from(limit).unwrap_or(i64::MAX)],
            )
        })?;
        rows.into_iter()
            .map(|mut r| {
                Ok(UploadRecord {
                    id: r.text(0)?,
                    site: r.text(1)?,
                    study: r.text(2)?,
                    version: r.int(3)?,
                    sha256: r.text(4)?,
                    bytes: r.int(5)?,
                    received: r.text(6)?,
                    outcome: Outcome::read(&r.text(7)?, 7)?,
                    message: r.opt_text(8)?,
                })
            })
            .collect()
    }
}

const SITE_COLS: &str = "name, username, display, studies, created, rotated";

fn site(mut r: Row) -> Result<Site> {
    Ok(Site {
        name: r.text(0)?,
        user: r.text(1)?,
        display: r.text(2)?,
        studies: serde_json::from_str(&r.text(3)?).unwrap_or_default(),
        created: r.text(4)?,
        rotated: r.opt_text(5)?,
    })
}

const AGGREGATE_COLS: &str = "id, study, package, version, site, kind, columns, rows, total, updated";

fn data_package(mut r: Row) -> Result<DataPackage> {
    let columns: Vec<Column> = serde_json::from_str(&r.text(6)?).unwrap_or_default();
    let rows: Vec<Vec<Json>> = serde_json::from_str(&r.text(7)?).unwrap_or_default();
    Ok(DataPackage {
        id: r.text(0)?,
        study: r.text(1)?,
        name: r.text(2)?,
        version: r.int(3)?,
        site: r.opt_text(4)?,
        kind: r.text(5)?,
        aggregate: Aggregate { columns, rows },
        total: r.opt_int(8)?,
        updated: r.text(9)?,
    })
}

fn record(db: &mut dyn Sql, a: &Arrival<'_>, outcome: Outcome, message: Option<&str>) -> Result<()> {
    db.execute(
        "INSERT INTO uploads (id, site, study, version, sha256, bytes, received, outcome, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        args![a.id, a.site, a.study, a.version, a.sha256, a.bytes, &veil_util::clock::now_instant(), outcome.as_str(), message],
    )?;
    Ok(())
}

/// A table whose columns differ from another site's for the same data
/// package and version, or whose kind does.
fn schema_conflict(db: &mut dyn Sql, a: &Arrival<'_>, package: &Package) -> Result<Option<Refusal>> {
    for table in &package.tables {
        let other = db.query_opt(
            "SELECT kind, columns FROM contributions WHERE study = ?1 AND package = ?2 AND version = ?3 AND site <> ?4 LIMIT 1",
            args![a.study, &table.package, a.version, a.site],
        )?;
        let Some(mut other) = other else { continue };
        let kind = other.text(0)?;
        let columns: Vec<Column> = serde_json::from_str(&other.text(1)?).unwrap_or_default();
        if kind != table.kind.as_str() || !same_schema(&columns, &table.columns) {
            let names = |c: &[Column]| {
                c.iter()
                    .map(|c| format!("{}:{:?}", c.name, c.column_type).to_lowercase())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
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
fn remerge(db: &mut dyn Sql, study: &str, package: &str, version: i64, now: &str) -> Result<()> {
    let contributions: Vec<(String, Table)> = db
        .query("SELECT site, kind, columns, rows FROM contributions WHERE study = ?1 AND package = ?2 AND version = ?3 ORDER BY site", args![study, package, version])?
        .into_iter()
        .map(|mut r| {
            let kind = Kind::parse(&r.text(1)?).unwrap_or(Kind::Flat);
            let columns = serde_json::from_str(&r.text(2)?).unwrap_or_default();
            let rows = serde_json::from_str(&r.text(3)?).unwrap_or_default();
            Ok((r.text(0)?, Table { package: package.to_string(), kind, columns, rows }))
        })
        .collect::<Result<_>>()?;
    db.execute(
        "DELETE FROM aggregates WHERE study = ?1 AND package = ?2 AND version = ?3",
        args![study, package, version],
    )?;
    let nnn = version_key(version);
    let mut put = |id: String, site: Option<&str>, kind: Kind, aggregate: &Aggregate| {
        let total = aggregate.columns.iter().position(|c| c.name == "cnt").and_then(|cnt| {
            aggregate
                .rows
                .iter()
                .find(|r| r.iter().enumerate().all(|(i, v)| i == cnt || v.is_null()))
                .and_then(|r| r[cnt].as_i64())
        });
        db.execute(
            &format!("INSERT INTO aggregates ({AGGREGATE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
            args![
                &id,
                study,
                package,
                version,
                site,
                kind.as_str(),
                &serde_json::to_string(&aggregate.columns).expect("columns serialise"),
                &serde_json::to_string(&aggregate.rows).expect("rows serialise"),
                total,
                now
            ],
        )
    };
    let merged: Vec<(&str, &Table)> =
        contributions.iter().filter(|(_, t)| t.kind.merged()).map(|(s, t)| (s.as_str(), t)).collect();
    if let Some((_, first)) = merged.first() {
        put(format!("{study}__{package}__{nnn}"), None, first.kind, &merge(&merged))?;
    }
    for (site, table) in contributions.iter().filter(|(_, t)| !t.kind.merged()) {
        let flat = Aggregate { columns: table.columns.clone(), rows: table.rows.clone() };
        put(format!("{study}__{package}__{site}__{nnn}"), Some(site), Kind::Flat, &flat)?;
    }
    Ok(())
}

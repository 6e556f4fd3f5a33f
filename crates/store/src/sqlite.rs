//! The embedded store: one SQLite file (WAL), one connection behind a mutex.
//! Writes are serialised anyway in SQLite; reads during an export hold the
//! lock only per batch of rows.

use std::collections::BTreeMap;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use crate::{
    CLIENT_COLS, ClientRecord, DOWNLOAD_COLS, Job, JobState, Result, SHARE_COLS, ScanFilter, ShareDownload,
    ShareRecord, Store, Stored, Write,
};
use veil_util::clock::{instant_in, now_instant};

pub(crate) struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    pub fn open(path: &str) -> Result<SqliteStore> {
        let conn = if path == ":memory:" { Connection::open_in_memory()? } else { Connection::open(path)? };
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.execute_batch(&crate::schema(
            "INTEGER",
            "INTEGER PRIMARY KEY",
            "CREATE TABLE IF NOT EXISTS seq (n INTEGER NOT NULL);",
        ))?;
        for (table, column, definition) in crate::ADDED_COLUMNS {
            let present: i64 = conn.query_row(
                &format!("SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE name = ?1"),
                [column],
                |r| r.get(0),
            )?;
            if present == 0 {
                conn.execute_batch(&format!(
                    "ALTER TABLE {table} ADD COLUMN {column} {}",
                    definition.replace("{int}", "INTEGER")
                ))?;
            }
        }
        let has_seq: i64 = conn.query_row("SELECT COUNT(*) FROM seq", [], |r| r.get(0))?;
        if has_seq == 0 {
            conn.execute("INSERT INTO seq (n) VALUES (0)", [])?;
        }
        Ok(SqliteStore { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic elsewhere while holding the lock leaves SQLite consistent
        // (transactions roll back), so the connection is still usable.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn stored(r: &rusqlite::Row<'_>) -> rusqlite::Result<Stored> {
    Ok(Stored {
        resource_type: r.get(0)?,
        id: r.get(1)?,
        version: r.get(2)?,
        last_updated: r.get(3)?,
        seq: r.get(4)?,
        body: r.get(5)?,
    })
}

fn job(r: &rusqlite::Row<'_>) -> rusqlite::Result<Job> {
    Ok(Job {
        id: r.get(0)?,
        request: r.get(1)?,
        state: JobState::parse(&r.get::<_, String>(2)?),
        created: r.get(3)?,
        lease_owner: r.get(4)?,
        lease_until: r.get(5)?,
        attempts: r.get(6)?,
        progress: r.get(7)?,
        result: r.get(8)?,
        error: r.get(9)?,
    })
}

const COLS: &str = "type, id, version, last_updated, seq, body";
const JOB_COLS: &str = "id, request, state, created, lease_owner, lease_until, attempts, progress, result, error";

impl Store for SqliteStore {
    fn put(&self, writes: &[Write<'_>]) -> Result<Vec<Stored>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let now = now_instant();
        let mut out = Vec::with_capacity(writes.len());
        {
            let mut next_seq = tx.prepare_cached("UPDATE seq SET n = n + 1 RETURNING n")?;
            let mut upsert = tx.prepare_cached(
                "INSERT INTO resources (type, id, version, last_updated, seq, body) VALUES (?1, ?2, 1, ?3, ?4, ?5)
                 ON CONFLICT (type, id) DO UPDATE SET version = version + 1, last_updated = ?3, seq = ?4, body = ?5
                 RETURNING version",
            )?;
            let mut clear = tx.prepare_cached("DELETE FROM compartment WHERE type = ?1 AND id = ?2")?;
            let mut member =
                tx.prepare_cached("INSERT OR IGNORE INTO compartment (patient, type, id) VALUES (?1, ?2, ?3)")?;
            let mut clear_group = tx.prepare_cached("DELETE FROM group_members WHERE group_id = ?1")?;
            let mut group =
                tx.prepare_cached("INSERT OR IGNORE INTO group_members (group_id, patient) VALUES (?1, ?2)")?;
            for w in writes {
                let seq: i64 = next_seq.query_row([], |r| r.get(0))?;
                let version: i64 = upsert.query_row(params![w.resource_type, w.id, now, seq, w.body], |r| r.get(0))?;
                clear.execute(params![w.resource_type, w.id])?;
                for p in w.patients {
                    member.execute(params![p, w.resource_type, w.id])?;
                }
                if let Some(members) = w.group_members {
                    clear_group.execute(params![w.id])?;
                    for p in members {
                        group.execute(params![w.id, p])?;
                    }
                }
                out.push(w.stored(version, seq, &now));
            }
        }
        tx.commit()?;
        Ok(out)
    }

    fn get(&self, resource_type: &str, id: &str) -> Result<Option<Stored>> {
        let conn = self.conn();
        let sql = format!("SELECT {COLS} FROM resources WHERE type = ?1 AND id = ?2");
        Ok(conn.query_row(&sql, params![resource_type, id], stored).optional()?)
    }

    fn delete(&self, resource_type: &str, id: &str) -> Result<Option<Stored>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let now = now_instant();
        let seq: i64 = tx.query_row("UPDATE seq SET n = n + 1 RETURNING n", [], |r| r.get(0))?;
        let sql = format!(
            "UPDATE resources SET version = version + 1, last_updated = ?3, seq = ?4, body = NULL
             WHERE type = ?1 AND id = ?2 AND body IS NOT NULL RETURNING {COLS}"
        );
        let gone = tx.query_row(&sql, params![resource_type, id, now, seq], stored).optional()?;
        tx.execute("DELETE FROM compartment WHERE type = ?1 AND id = ?2", params![resource_type, id])?;
        if resource_type == "Group" {
            tx.execute("DELETE FROM group_members WHERE group_id = ?1", params![id])?;
        }
        tx.commit()?;
        Ok(gone)
    }

    fn scan(&self, filter: &ScanFilter, each: &mut dyn FnMut(Stored) -> Result<bool>) -> Result<()> {
        crate::paginate(
            |after| {
                let conn = self.conn();
                let (sql, values) = scan_sql(filter, after);
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(rusqlite::params_from_iter(values.iter()), stored)?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            },
            each,
        )
    }

    fn counts(&self) -> Result<BTreeMap<String, u64>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT type, COUNT(*) FROM resources WHERE body IS NOT NULL GROUP BY type")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn group_members(&self, group_id: &str) -> Result<Option<Vec<String>>> {
        let conn = self.conn();
        let exists: bool = conn
            .query_row(
                "SELECT 1 FROM resources WHERE type = 'Group' AND id = ?1 AND body IS NOT NULL",
                [group_id],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if !exists {
            return Ok(None);
        }
        let mut stmt = conn.prepare("SELECT patient FROM group_members WHERE group_id = ?1 ORDER BY patient")?;
        let rows = stmt.query_map([group_id], |r| r.get::<_, String>(0))?;
        Ok(Some(rows.collect::<rusqlite::Result<_>>()?))
    }

    fn create_job(&self, id: &str, request: &str) -> Result<Job> {
        let conn = self.conn();
        let sql = format!(
            "INSERT INTO jobs (id, request, state, created) VALUES (?1, ?2, 'queued', ?3) RETURNING {JOB_COLS}"
        );
        Ok(conn.query_row(&sql, params![id, request, now_instant()], job)?)
    }

    fn job(&self, id: &str) -> Result<Option<Job>> {
        let conn = self.conn();
        Ok(conn.query_row(&format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?1"), [id], job).optional()?)
    }

    fn jobs(&self) -> Result<Vec<Job>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {JOB_COLS} FROM jobs ORDER BY created, id"))?;
        let rows = stmt.query_map([], job)?.collect::<rusqlite::Result<Vec<Job>>>()?;
        Ok(rows)
    }

    fn claim_job(&self, owner: &str, lease_secs: i64) -> Result<Option<Job>> {
        let conn = self.conn();
        let sql = format!(
            "UPDATE jobs SET state = 'running', lease_owner = ?1, lease_until = ?2, attempts = attempts + 1
             WHERE id = (SELECT id FROM jobs WHERE state = 'queued' OR (state = 'running' AND lease_until < ?3)
                         ORDER BY created, id LIMIT 1)
             RETURNING {JOB_COLS}"
        );
        Ok(conn.query_row(&sql, params![owner, instant_in(lease_secs), now_instant()], job).optional()?)
    }

    fn heartbeat(&self, id: &str, owner: &str, lease_secs: i64, progress: Option<&str>) -> Result<bool> {
        let conn = self.conn();
        let n = conn.execute(
            "UPDATE jobs SET lease_until = ?3, progress = COALESCE(?4, progress)
             WHERE id = ?1 AND lease_owner = ?2 AND state = 'running'",
            params![id, owner, instant_in(lease_secs), progress],
        )?;
        Ok(n == 1)
    }

    fn finish_job(&self, id: &str, owner: &str, state: JobState, outcome: &str) -> Result<bool> {
        let conn = self.conn();
        let (result, error) = if state == JobState::Completed { (Some(outcome), None) } else { (None, Some(outcome)) };
        let n = conn.execute(
            "UPDATE jobs SET state = ?3, result = ?4, error = ?5, lease_until = NULL
             WHERE id = ?1 AND lease_owner = ?2 AND state = 'running'",
            params![id, owner, state.as_str(), result, error],
        )?;
        Ok(n == 1)
    }

    fn cancel_job(&self, id: &str) -> Result<bool> {
        let conn = self.conn();
        Ok(conn.execute("UPDATE jobs SET state = 'cancelled' WHERE id = ?1", [id])? == 1)
    }

    fn delete_job(&self, id: &str) -> Result<bool> {
        let conn = self.conn();
        Ok(conn.execute("DELETE FROM jobs WHERE id = ?1", [id])? == 1)
    }

    fn add_client(&self, c: &ClientRecord) -> Result<ClientRecord> {
        let conn = self.conn();
        let sql =
            format!("INSERT INTO clients ({CLIENT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING {CLIENT_COLS}");
        Ok(conn.query_row(&sql, params![c.id, c.name, c.jwks, c.jwks_url, c.scopes, now_instant()], client)?)
    }

    fn client(&self, id: &str) -> Result<Option<ClientRecord>> {
        let conn = self.conn();
        Ok(conn.query_row(&format!("SELECT {CLIENT_COLS} FROM clients WHERE id = ?1"), [id], client).optional()?)
    }

    fn clients(&self) -> Result<Vec<ClientRecord>> {
        let conn = self.conn();
        let mut q = conn.prepare(&format!("SELECT {CLIENT_COLS} FROM clients ORDER BY name, id"))?;
        let rows = q.query_map([], client)?.collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn remove_client(&self, id: &str) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM used_jti WHERE client_id = ?1", [id])?;
        let removed = tx.execute("DELETE FROM clients WHERE id = ?1", [id])? == 1;
        tx.commit()?;
        Ok(removed)
    }

    fn record_jti(&self, client_id: &str, jti: &str, expires: i64, now: i64) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM used_jti WHERE expires < ?1", [now])?;
        let fresh = tx.execute(
            "INSERT INTO used_jti (client_id, jti, expires) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            params![client_id, jti, expires],
        )? == 1;
        tx.commit()?;
        Ok(fresh)
    }

    fn secret(&self, name: &str, make: &mut dyn FnMut() -> String) -> Result<String> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO secrets (name, value) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            params![name, make()],
        )?;
        Ok(conn.query_row("SELECT value FROM secrets WHERE name = ?1", [name], |r| r.get(0))?)
    }

    fn add_share(&self, s: &ShareRecord) -> Result<ShareRecord> {
        let sql = format!(
            "INSERT INTO shares ({SHARE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?8) RETURNING {SHARE_COLS}"
        );
        Ok(self.conn().query_row(
            &sql,
            params![s.id, s.kind, s.location, now_instant(), s.expires, s.recipient, s.ip, i64::from(s.identified)],
            share_row,
        )?)
    }

    fn share(&self, id: &str) -> Result<Option<ShareRecord>> {
        Ok(self
            .conn()
            .query_row(&format!("SELECT {SHARE_COLS} FROM shares WHERE id = ?1"), [id], share_row)
            .optional()?)
    }

    fn shares(&self) -> Result<Vec<ShareRecord>> {
        let conn = self.conn();
        let mut q = conn.prepare(&format!("SELECT {SHARE_COLS} FROM shares ORDER BY created DESC, id"))?;
        Ok(q.query_map([], share_row)?.collect::<rusqlite::Result<_>>()?)
    }

    fn revoke_share(&self, id: &str) -> Result<bool> {
        Ok(self
            .conn()
            .execute("UPDATE shares SET revoked = ?2 WHERE id = ?1 AND revoked IS NULL", params![id, now_instant()])?
            == 1)
    }

    fn record_download(&self, d: &ShareDownload) -> Result<()> {
        let sql = format!("INSERT INTO share_downloads ({DOWNLOAD_COLS}) VALUES (?1, ?2, ?3, ?4, ?5)");
        self.conn().execute(&sql, params![d.share_id, now_instant(), d.file, d.bytes, d.client])?;
        Ok(())
    }

    fn downloads(&self, share_id: Option<&str>) -> Result<Vec<ShareDownload>> {
        let conn = self.conn();
        let mut q = conn.prepare(&format!(
            "SELECT {DOWNLOAD_COLS} FROM share_downloads WHERE ?1 IS NULL OR share_id = ?1 ORDER BY seq"
        ))?;
        let rows = q.query_map([share_id], |r| {
            Ok(ShareDownload {
                share_id: r.get(0)?,
                time: r.get(1)?,
                file: r.get(2)?,
                bytes: r.get(3)?,
                client: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

fn share_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ShareRecord> {
    Ok(ShareRecord {
        id: r.get(0)?,
        kind: r.get(1)?,
        location: r.get(2)?,
        created: r.get(3)?,
        expires: r.get(4)?,
        recipient: r.get(5)?,
        ip: r.get(6)?,
        revoked: r.get(7)?,
        identified: r.get::<_, i64>(8)? != 0,
    })
}

fn client(r: &rusqlite::Row<'_>) -> rusqlite::Result<ClientRecord> {
    Ok(ClientRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        jwks: r.get(2)?,
        jwks_url: r.get(3)?,
        scopes: r.get(4)?,
        created: r.get(5)?,
    })
}

/// The scan query for one batch after `after` in (type, id) order, with
/// positional parameters; shared by both stores (PostgreSQL numbers its
/// parameters the same way).
pub(crate) fn scan_sql(filter: &ScanFilter, after: &(String, String)) -> (String, Vec<String>) {
    let mut sql = format!("SELECT {COLS} FROM resources r WHERE ");
    let mut values: Vec<String> = Vec::new();
    let param = |v: String, values: &mut Vec<String>| {
        values.push(v);
        format!("${}", values.len())
    };
    sql.push_str(if filter.deleted { "r.body IS NULL" } else { "r.body IS NOT NULL" });
    let (t, i) = (param(after.0.clone(), &mut values), param(after.1.clone(), &mut values));
    sql.push_str(&format!(" AND (r.type > {t} OR (r.type = {t} AND r.id > {i}))"));
    if let Some(types) = &filter.types {
        let list: Vec<String> = types.iter().map(|ty| param(ty.clone(), &mut values)).collect();
        if list.is_empty() {
            sql.push_str(" AND 1 = 0");
        } else {
            sql.push_str(&format!(" AND r.type IN ({})", list.join(", ")));
        }
    }
    if let Some(since) = &filter.since {
        sql.push_str(&format!(" AND r.last_updated > {}", param(since.clone(), &mut values)));
    }
    if let Some(until) = &filter.until {
        sql.push_str(&format!(" AND r.last_updated <= {}", param(until.clone(), &mut values)));
    }
    if let Some(patients) = &filter.patients {
        let list: Vec<String> = patients.iter().map(|p| param(p.clone(), &mut values)).collect();
        if list.is_empty() {
            sql.push_str(" AND 1 = 0");
        } else {
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM compartment c WHERE c.type = r.type AND c.id = r.id AND c.patient IN ({}))",
                list.join(", ")
            ));
        }
    }
    sql.push_str(&format!(" ORDER BY r.type, r.id LIMIT {}", crate::SCAN_BATCH));
    (sql, values)
}

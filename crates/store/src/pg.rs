//! PostgreSQL: the same tables as SQLite; jobs are claimed with
//! `FOR UPDATE SKIP LOCKED`, so several `veil serve` processes can share the
//! queue and each job runs once.

use std::collections::BTreeMap;
use std::sync::Mutex;

use postgres::{Client, NoTls, Row};

use crate::sqlite::scan_sql;
use crate::{
    CLIENT_COLS, ClientRecord, DOWNLOAD_COLS, Job, JobState, Result, SHARE_COLS, ScanFilter, ShareDownload,
    ShareRecord, Store, Stored, Write,
};
use veil_util::clock::{instant_in, now_instant};

pub(crate) struct PgStore {
    client: Mutex<Client>,
}

impl PgStore {
    /// Connects (see [`connect`] for `?schema=`) and creates the tables.
    pub fn open(url: &str) -> Result<PgStore> {
        let mut client = connect(url)?;
        // Concurrent first starts may race to create the same tables.
        client.batch_execute("SELECT pg_advisory_lock(7357001)")?;
        let added: String = crate::ADDED_COLUMNS
            .iter()
            .map(|(table, column, definition)| {
                format!(
                    "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {};",
                    definition.replace("{int}", "BIGINT")
                )
            })
            .collect();
        let created = client.batch_execute(
            &(crate::schema("BIGINT", "BIGSERIAL PRIMARY KEY", "CREATE SEQUENCE IF NOT EXISTS resource_seq;") + &added),
        );
        client.batch_execute("SELECT pg_advisory_unlock(7357001)")?;
        created?;
        Ok(PgStore { client: Mutex::new(client) })
    }

    fn client(&self) -> std::sync::MutexGuard<'_, Client> {
        self.client.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Connects to `url`; a `schema=NAME` query parameter (Veil's, not
/// libpq's) puts the tables in a schema of their own, created if missing,
/// so that several Veil databases (or tests) can share one server.
pub fn connect(url: &str) -> std::result::Result<Client, postgres::Error> {
    let (url, schema) = split_schema(url);
    let mut client = Client::connect(&url, NoTls)?;
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

fn replace_group(tx: &mut postgres::Transaction<'_>, group: &str, members: &[String]) -> Result<()> {
    tx.execute("DELETE FROM group_members WHERE group_id = $1", &[&group])?;
    tx.execute(
        "INSERT INTO group_members (group_id, patient) SELECT $1, p FROM UNNEST($2::text[]) AS u(p) ON CONFLICT DO NOTHING",
        &[&group, &members],
    )?;
    Ok(())
}

fn stored(r: &Row) -> Stored {
    Stored {
        resource_type: r.get(0),
        id: r.get(1),
        version: r.get(2),
        last_updated: r.get(3),
        seq: r.get(4),
        body: r.get(5),
    }
}

fn job(r: &Row) -> Job {
    Job {
        id: r.get(0),
        request: r.get(1),
        state: JobState::parse(r.get(2)),
        created: r.get(3),
        lease_owner: r.get(4),
        lease_until: r.get(5),
        attempts: r.get(6),
        progress: r.get(7),
        result: r.get(8),
        error: r.get(9),
    }
}

const COLS: &str = "type, id, version, last_updated, seq, body";
const JOB_COLS: &str = "id, request, state, created, lease_owner, lease_until, attempts, progress, result, error";

impl Store for PgStore {
    fn put(&self, writes: &[Write<'_>]) -> Result<Vec<Stored>> {
        let mut client = self.client();
        let mut tx = client.transaction()?;
        let now = now_instant();
        // One round trip per batch (arrays unnested server-side) instead of
        // one per row: PostgreSQL is usually across a network. A batch that
        // names one resource twice falls back to row by row, because one
        // INSERT … ON CONFLICT cannot update a row twice.
        let mut seen = std::collections::HashSet::with_capacity(writes.len());
        let unique = writes.iter().all(|w| seen.insert((w.resource_type, w.id)));
        let mut out = Vec::with_capacity(writes.len());
        if unique && !writes.is_empty() {
            let types: Vec<&str> = writes.iter().map(|w| w.resource_type).collect();
            let ids: Vec<&str> = writes.iter().map(|w| w.id).collect();
            let bodies: Vec<&str> = writes.iter().map(|w| w.body).collect();
            let rows = tx.query(
                "INSERT INTO resources (type, id, version, last_updated, seq, body)
                 SELECT t, i, 1, $3, nextval('resource_seq'), b FROM UNNEST($1::text[], $2::text[], $4::text[]) AS u(t, i, b)
                 ON CONFLICT (type, id) DO UPDATE SET version = resources.version + 1, last_updated = $3,
                     seq = nextval('resource_seq'), body = EXCLUDED.body
                 RETURNING type, id, version, seq",
                &[&types, &ids, &now, &bodies],
            )?;
            let mut written: std::collections::HashMap<(String, String), (i64, i64)> =
                rows.iter().map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3)))).collect();
            tx.execute(
                "DELETE FROM compartment c USING UNNEST($1::text[], $2::text[]) AS u(t, i) WHERE c.type = u.t AND c.id = u.i",
                &[&types, &ids],
            )?;
            let (mut pt, mut pty, mut pid) = (Vec::new(), Vec::new(), Vec::new());
            for w in writes {
                for p in w.patients {
                    pt.push(p.as_str());
                    pty.push(w.resource_type);
                    pid.push(w.id);
                }
            }
            if !pt.is_empty() {
                tx.execute(
                    "INSERT INTO compartment (patient, type, id) SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING",
                    &[&pt, &pty, &pid],
                )?;
            }
            for w in writes {
                if let Some(members) = w.group_members {
                    replace_group(&mut tx, w.id, members)?;
                }
                let (version, seq) = written.remove(&(w.resource_type.to_string(), w.id.to_string())).unwrap_or((1, 0));
                out.push(w.stored(version, seq, &now));
            }
            tx.commit()?;
            return Ok(out);
        }
        let upsert = tx.prepare(
            "INSERT INTO resources (type, id, version, last_updated, seq, body) VALUES ($1, $2, 1, $3, nextval('resource_seq'), $4)
             ON CONFLICT (type, id) DO UPDATE SET version = resources.version + 1, last_updated = $3,
                 seq = nextval('resource_seq'), body = $4
             RETURNING version, seq",
        )?;
        let clear = tx.prepare("DELETE FROM compartment WHERE type = $1 AND id = $2")?;
        let member =
            tx.prepare("INSERT INTO compartment (patient, type, id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")?;
        for w in writes {
            let row = tx.query_one(&upsert, &[&w.resource_type, &w.id, &now, &w.body])?;
            tx.execute(&clear, &[&w.resource_type, &w.id])?;
            for p in w.patients {
                tx.execute(&member, &[p, &w.resource_type, &w.id])?;
            }
            if let Some(members) = w.group_members {
                replace_group(&mut tx, w.id, members)?;
            }
            out.push(w.stored(row.get(0), row.get(1), &now));
        }
        tx.commit()?;
        Ok(out)
    }

    fn get(&self, resource_type: &str, id: &str) -> Result<Option<Stored>> {
        let mut client = self.client();
        let sql = format!("SELECT {COLS} FROM resources WHERE type = $1 AND id = $2");
        Ok(client.query_opt(&sql, &[&resource_type, &id])?.as_ref().map(stored))
    }

    fn delete(&self, resource_type: &str, id: &str) -> Result<Option<Stored>> {
        let mut client = self.client();
        let mut tx = client.transaction()?;
        let sql = format!(
            "UPDATE resources SET version = version + 1, last_updated = $3, seq = nextval('resource_seq'), body = NULL
             WHERE type = $1 AND id = $2 AND body IS NOT NULL RETURNING {COLS}"
        );
        let gone = tx.query_opt(&sql, &[&resource_type, &id, &now_instant()])?.as_ref().map(stored);
        tx.execute("DELETE FROM compartment WHERE type = $1 AND id = $2", &[&resource_type, &id])?;
        if resource_type == "Group" {
            tx.execute("DELETE FROM group_members WHERE group_id = $1", &[&id])?;
        }
        tx.commit()?;
        Ok(gone)
    }

    fn scan(&self, filter: &ScanFilter, each: &mut dyn FnMut(Stored) -> Result<bool>) -> Result<()> {
        crate::paginate(
            |after| {
                let mut client = self.client();
                let (sql, values) = scan_sql(filter, after);
                // PostgreSQL sorts text by the database's collation; the keyset
                // comparison must use the same order as ORDER BY, so both use "C".
                let sql = sql
                    .replace(
                        "r.type > $1 OR (r.type = $1 AND r.id > $2)",
                        "r.type COLLATE \"C\" > $1 OR (r.type = $1 AND r.id COLLATE \"C\" > $2)",
                    )
                    .replace("ORDER BY r.type, r.id", "ORDER BY r.type COLLATE \"C\", r.id COLLATE \"C\"");
                let params: Vec<&(dyn postgres::types::ToSql + Sync)> = values.iter().map(|v| v as _).collect();
                Ok(client.query(&sql, &params)?.iter().map(stored).collect())
            },
            each,
        )
    }

    fn counts(&self) -> Result<BTreeMap<String, u64>> {
        let mut client = self.client();
        let rows = client.query("SELECT type, COUNT(*) FROM resources WHERE body IS NOT NULL GROUP BY type", &[])?;
        Ok(rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64)).collect())
    }

    fn group_members(&self, group_id: &str) -> Result<Option<Vec<String>>> {
        let mut client = self.client();
        if client
            .query_opt("SELECT 1 FROM resources WHERE type = 'Group' AND id = $1 AND body IS NOT NULL", &[&group_id])?
            .is_none()
        {
            return Ok(None);
        }
        let rows = client.query(
            "SELECT patient FROM group_members WHERE group_id = $1 ORDER BY patient COLLATE \"C\"",
            &[&group_id],
        )?;
        Ok(Some(rows.iter().map(|r| r.get(0)).collect()))
    }

    fn create_job(&self, id: &str, request: &str) -> Result<Job> {
        let mut client = self.client();
        let sql = format!(
            "INSERT INTO jobs (id, request, state, created) VALUES ($1, $2, 'queued', $3) RETURNING {JOB_COLS}"
        );
        Ok(job(&client.query_one(&sql, &[&id, &request, &now_instant()])?))
    }

    fn job(&self, id: &str) -> Result<Option<Job>> {
        let mut client = self.client();
        Ok(client.query_opt(&format!("SELECT {JOB_COLS} FROM jobs WHERE id = $1"), &[&id])?.as_ref().map(job))
    }

    fn jobs(&self) -> Result<Vec<Job>> {
        let mut client = self.client();
        Ok(client.query(&format!("SELECT {JOB_COLS} FROM jobs ORDER BY created, id"), &[])?.iter().map(job).collect())
    }

    fn claim_job(&self, owner: &str, lease_secs: i64) -> Result<Option<Job>> {
        let mut client = self.client();
        let sql = format!(
            "UPDATE jobs SET state = 'running', lease_owner = $1, lease_until = $2, attempts = attempts + 1
             WHERE id = (SELECT id FROM jobs WHERE state = 'queued' OR (state = 'running' AND lease_until < $3)
                         ORDER BY created, id LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING {JOB_COLS}"
        );
        Ok(client.query_opt(&sql, &[&owner, &instant_in(lease_secs), &now_instant()])?.as_ref().map(job))
    }

    fn heartbeat(&self, id: &str, owner: &str, lease_secs: i64, progress: Option<&str>) -> Result<bool> {
        let mut client = self.client();
        let n = client.execute(
            "UPDATE jobs SET lease_until = $3, progress = COALESCE($4, progress)
             WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
            &[&id, &owner, &instant_in(lease_secs), &progress],
        )?;
        Ok(n == 1)
    }

    fn finish_job(&self, id: &str, owner: &str, state: JobState, outcome: &str) -> Result<bool> {
        let mut client = self.client();
        let (result, error) = if state == JobState::Completed { (Some(outcome), None) } else { (None, Some(outcome)) };
        let n = client.execute(
            "UPDATE jobs SET state = $3, result = $4, error = $5, lease_until = NULL
             WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
            &[&id, &owner, &state.as_str(), &result, &error],
        )?;
        Ok(n == 1)
    }

    fn cancel_job(&self, id: &str) -> Result<bool> {
        let mut client = self.client();
        Ok(client.execute("UPDATE jobs SET state = 'cancelled' WHERE id = $1", &[&id])? == 1)
    }

    fn delete_job(&self, id: &str) -> Result<bool> {
        let mut client = self.client();
        Ok(client.execute("DELETE FROM jobs WHERE id = $1", &[&id])? == 1)
    }

    fn add_client(&self, c: &ClientRecord) -> Result<ClientRecord> {
        let mut client = self.client();
        let sql =
            format!("INSERT INTO clients ({CLIENT_COLS}) VALUES ($1, $2, $3, $4, $5, $6) RETURNING {CLIENT_COLS}");
        Ok(registered(&client.query_one(&sql, &[&c.id, &c.name, &c.jwks, &c.jwks_url, &c.scopes, &now_instant()])?))
    }

    fn client(&self, id: &str) -> Result<Option<ClientRecord>> {
        let mut client = self.client();
        Ok(client
            .query_opt(&format!("SELECT {CLIENT_COLS} FROM clients WHERE id = $1"), &[&id])?
            .as_ref()
            .map(registered))
    }

    fn clients(&self) -> Result<Vec<ClientRecord>> {
        let mut client = self.client();
        Ok(client
            .query(&format!("SELECT {CLIENT_COLS} FROM clients ORDER BY name, id"), &[])?
            .iter()
            .map(registered)
            .collect())
    }

    fn remove_client(&self, id: &str) -> Result<bool> {
        let mut client = self.client();
        let mut tx = client.transaction()?;
        tx.execute("DELETE FROM used_jti WHERE client_id = $1", &[&id])?;
        let removed = tx.execute("DELETE FROM clients WHERE id = $1", &[&id])? == 1;
        tx.commit()?;
        Ok(removed)
    }

    fn record_jti(&self, client_id: &str, jti: &str, expires: i64, now: i64) -> Result<bool> {
        let mut client = self.client();
        let mut tx = client.transaction()?;
        tx.execute("DELETE FROM used_jti WHERE expires < $1", &[&now])?;
        let fresh = tx.execute(
            "INSERT INTO used_jti (client_id, jti, expires) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&client_id, &jti, &expires],
        )? == 1;
        tx.commit()?;
        Ok(fresh)
    }

    fn secret(&self, name: &str, make: &mut dyn FnMut() -> String) -> Result<String> {
        let mut client = self.client();
        client
            .execute("INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING", &[&name, &make()])?;
        Ok(client.query_one("SELECT value FROM secrets WHERE name = $1", &[&name])?.get(0))
    }

    fn add_share(&self, s: &ShareRecord) -> Result<ShareRecord> {
        let sql = format!(
            "INSERT INTO shares ({SHARE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8) RETURNING {SHARE_COLS}"
        );
        let row = self.client().query_one(
            &sql,
            &[&s.id, &s.kind, &s.location, &now_instant(), &s.expires, &s.recipient, &s.ip, &i64::from(s.identified)],
        )?;
        Ok(share_row(&row))
    }

    fn share(&self, id: &str) -> Result<Option<ShareRecord>> {
        Ok(self
            .client()
            .query_opt(&format!("SELECT {SHARE_COLS} FROM shares WHERE id = $1"), &[&id])?
            .as_ref()
            .map(share_row))
    }

    fn shares(&self) -> Result<Vec<ShareRecord>> {
        Ok(self
            .client()
            .query(&format!("SELECT {SHARE_COLS} FROM shares ORDER BY created DESC, id"), &[])?
            .iter()
            .map(share_row)
            .collect())
    }

    fn revoke_share(&self, id: &str) -> Result<bool> {
        Ok(self
            .client()
            .execute("UPDATE shares SET revoked = $2 WHERE id = $1 AND revoked IS NULL", &[&id, &now_instant()])?
            == 1)
    }

    fn record_download(&self, d: &ShareDownload) -> Result<()> {
        let sql = format!("INSERT INTO share_downloads ({DOWNLOAD_COLS}) VALUES ($1, $2, $3, $4, $5)");
        self.client().execute(&sql, &[&d.share_id, &now_instant(), &d.file, &d.bytes, &d.client])?;
        Ok(())
    }

    fn downloads(&self, share_id: Option<&str>) -> Result<Vec<ShareDownload>> {
        let sql =
            format!("SELECT {DOWNLOAD_COLS} FROM share_downloads WHERE $1::TEXT IS NULL OR share_id = $1 ORDER BY seq");
        let rows = self.client().query(&sql, &[&share_id])?;
        Ok(rows
            .iter()
            .map(|r| ShareDownload {
                share_id: r.get(0),
                time: r.get(1),
                file: r.get(2),
                bytes: r.get(3),
                client: r.get(4),
            })
            .collect())
    }
}

/// A share row.
fn share_row(r: &Row) -> ShareRecord {
    ShareRecord {
        id: r.get(0),
        kind: r.get(1),
        location: r.get(2),
        created: r.get(3),
        expires: r.get(4),
        recipient: r.get(5),
        ip: r.get(6),
        revoked: r.get(7),
        identified: r.get::<_, i64>(8) != 0,
    }
}

/// A client row (named so as not to clash with the connection's `client`).
fn registered(r: &Row) -> ClientRecord {
    ClientRecord {
        id: r.get(0),
        name: r.get(1),
        jwks: r.get(2),
        jwks_url: r.get(3),
        scopes: r.get(4),
        created: r.get(5),
    }
}

//! The store's tables and statements, written once for SQLite and
//! PostgreSQL (see `veil-sql`). Where the two differ it says why: the
//! change counter (a one-row table in SQLite, whose writers are serialised
//! anyway; a sequence in PostgreSQL, so concurrent servers do not queue on
//! one row), claiming a job (`FOR UPDATE SKIP LOCKED`, so several servers
//! share the queue and each job runs once) and writing a batch of resources
//! (one round trip with arrays on PostgreSQL, usually across a network).

use std::collections::{BTreeMap, HashMap, HashSet};

use veil_sql::{Database, Dialect, Row, Sql, args};
use veil_util::clock::{instant_in, now_instant};

use crate::{
    Change, ClientRecord, Job, JobState, Result, ScanFilter, ShareDownload, ShareRecord, Store, Stored, Write, Written,
};

/// Serialises the creation of the tables on one PostgreSQL server (the
/// aggregator's ledger uses 7357002).
const SCHEMA_LOCK: i64 = 7357001;

pub(crate) struct SqlStore {
    db: Database,
}

/// The tables, in the SQL both databases speak.
fn schema(dialect: Dialect) -> String {
    let int = dialect.bigint();
    let serial = dialect.serial_key();
    let counter = match dialect {
        Dialect::Sqlite => {
            "CREATE TABLE IF NOT EXISTS seq (n INTEGER NOT NULL);
             INSERT INTO seq (n) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM seq);"
        }
        Dialect::Postgres => "CREATE SEQUENCE IF NOT EXISTS resource_seq;",
    };
    format!(
        "CREATE TABLE IF NOT EXISTS resources (
            type TEXT NOT NULL, id TEXT NOT NULL, version {int} NOT NULL, last_updated TEXT NOT NULL,
            seq {int} NOT NULL, body TEXT, PRIMARY KEY (type, id));
        CREATE INDEX IF NOT EXISTS resources_updated ON resources (last_updated);
        CREATE TABLE IF NOT EXISTS compartment (
            patient TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY (patient, type, id));
        CREATE INDEX IF NOT EXISTS compartment_resource ON compartment (type, id);
        CREATE TABLE IF NOT EXISTS group_members (
            group_id TEXT NOT NULL, patient TEXT NOT NULL, PRIMARY KEY (group_id, patient));
        {counter}
        CREATE TABLE IF NOT EXISTS jobs (
            id TEXT PRIMARY KEY, request TEXT NOT NULL, state TEXT NOT NULL, created TEXT NOT NULL,
            lease_owner TEXT, lease_until TEXT, attempts {int} NOT NULL DEFAULT 0,
            progress TEXT, result TEXT, error TEXT);
        CREATE TABLE IF NOT EXISTS clients (
            id TEXT PRIMARY KEY, name TEXT NOT NULL, jwks TEXT, jwks_url TEXT, scopes TEXT NOT NULL, created TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS used_jti (
            client_id TEXT NOT NULL, jti TEXT NOT NULL, expires {int} NOT NULL, PRIMARY KEY (client_id, jti));
        CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS shares (
            id TEXT PRIMARY KEY, kind TEXT NOT NULL, location TEXT NOT NULL, created TEXT NOT NULL,
            expires TEXT NOT NULL, recipient TEXT, ip TEXT, revoked TEXT, identified {int} NOT NULL DEFAULT 0);
        CREATE TABLE IF NOT EXISTS share_downloads (
            seq {serial}, share_id TEXT NOT NULL, time TEXT NOT NULL, file TEXT NOT NULL,
            bytes {int} NOT NULL, client TEXT NOT NULL);
        CREATE INDEX IF NOT EXISTS share_downloads_share ON share_downloads (share_id, seq);"
    )
}

/// Columns added to tables after their first release, for stores made
/// before: `(table, column, definition)`.
const ADDED_COLUMNS: [(&str, &str, &str); 1] = [("shares", "identified", "{int} NOT NULL DEFAULT 0")];

fn add_missing_columns(db: &mut dyn Sql) -> veil_sql::Result<()> {
    let present = match db.dialect() {
        Dialect::Sqlite => "SELECT COUNT(*) FROM pragma_table_info(?1) WHERE name = ?2",
        Dialect::Postgres => {
            "SELECT COUNT(*) FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = ?1 AND column_name = ?2"
        }
    };
    for (table, column, definition) in ADDED_COLUMNS {
        if db.query_one(present, args![table, column])?.int(0)? == 0 {
            let definition = definition.replace("{int}", db.dialect().bigint());
            db.batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {definition}"))?;
        }
    }
    Ok(())
}

/// The columns of a resource, in [`Stored`]'s order.
const COLS: &str = "type, id, version, last_updated, seq, body";

fn stored(mut r: Row) -> veil_sql::Result<Stored> {
    Ok(Stored {
        resource_type: r.text(0)?,
        id: r.text(1)?,
        version: r.int(2)?,
        last_updated: r.text(3)?,
        seq: r.int(4)?,
        body: r.opt_text(5)?,
    })
}

/// The columns of a job, in [`Job`]'s order.
const JOB_COLS: &str = "id, request, state, created, lease_owner, lease_until, attempts, progress, result, error";

fn job(mut r: Row) -> veil_sql::Result<Job> {
    Ok(Job {
        id: r.text(0)?,
        request: r.text(1)?,
        state: JobState::parse(&r.text(2)?),
        created: r.text(3)?,
        lease_owner: r.opt_text(4)?,
        lease_until: r.opt_text(5)?,
        attempts: r.int(6)?,
        progress: r.opt_text(7)?,
        result: r.opt_text(8)?,
        error: r.opt_text(9)?,
    })
}

/// The columns of a client, in [`ClientRecord`]'s order.
const CLIENT_COLS: &str = "id, name, jwks, jwks_url, scopes, created";

fn client(mut r: Row) -> veil_sql::Result<ClientRecord> {
    Ok(ClientRecord {
        id: r.text(0)?,
        name: r.text(1)?,
        jwks: r.opt_text(2)?,
        jwks_url: r.opt_text(3)?,
        scopes: r.text(4)?,
        created: r.text(5)?,
    })
}

/// The columns of a share, in [`ShareRecord`]'s order.
const SHARE_COLS: &str = "id, kind, location, created, expires, recipient, ip, revoked, identified";

fn share(mut r: Row) -> veil_sql::Result<ShareRecord> {
    Ok(ShareRecord {
        id: r.text(0)?,
        kind: r.text(1)?,
        location: r.text(2)?,
        created: r.text(3)?,
        expires: r.text(4)?,
        recipient: r.opt_text(5)?,
        ip: r.opt_text(6)?,
        revoked: r.opt_text(7)?,
        identified: r.int(8)? != 0,
    })
}

/// The columns of a download, in [`ShareDownload`]'s order.
const DOWNLOAD_COLS: &str = "share_id, time, file, bytes, client";

fn download(mut r: Row) -> veil_sql::Result<ShareDownload> {
    Ok(ShareDownload { share_id: r.text(0)?, time: r.text(1)?, file: r.text(2)?, bytes: r.int(3)?, client: r.text(4)? })
}

/// Every row of a query, read by `read`.
fn all<T>(
    db: &mut dyn Sql,
    sql: &str,
    params: &[veil_sql::Param<'_>],
    read: fn(Row) -> veil_sql::Result<T>,
) -> veil_sql::Result<Vec<T>> {
    db.query(sql, params)?.into_iter().map(read).collect()
}

/// The first row of a query, if any, read by `read`.
fn first<T>(
    db: &mut dyn Sql,
    sql: &str,
    params: &[veil_sql::Param<'_>],
    read: fn(Row) -> veil_sql::Result<T>,
) -> veil_sql::Result<Option<T>> {
    db.query_opt(sql, params)?.map(read).transpose()
}

/// The next value of the change counter.
fn next_seq(db: &mut dyn Sql) -> veil_sql::Result<i64> {
    let sql = match db.dialect() {
        Dialect::Sqlite => "UPDATE seq SET n = n + 1 RETURNING n",
        Dialect::Postgres => "SELECT nextval('resource_seq')",
    };
    db.query_one(sql, args![])?.int(0)
}

fn replace_group(db: &mut dyn Sql, group: &str, members: &[String]) -> veil_sql::Result<()> {
    db.execute("DELETE FROM group_members WHERE group_id = ?1", args![group])?;
    if db.dialect() == Dialect::Postgres {
        let members: Vec<&str> = members.iter().map(String::as_str).collect();
        db.execute(
            "INSERT INTO group_members (group_id, patient) SELECT ?1, p FROM UNNEST(?2::text[]) AS u(p)
             ON CONFLICT DO NOTHING",
            args![group, &members],
        )?;
    } else {
        for p in members {
            db.execute(
                "INSERT INTO group_members (group_id, patient) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                args![group, p],
            )?;
        }
    }
    Ok(())
}

/// The resource as it is stored, for a write that changed nothing (its
/// body is the write's: only the version, time and place are read).
fn unchanged(db: &mut dyn Sql, w: &Write<'_>) -> veil_sql::Result<Written> {
    let mut row = db.query_one(
        "SELECT version, seq, last_updated FROM resources WHERE type = ?1 AND id = ?2",
        args![w.resource_type, w.id],
    )?;
    let (version, seq, last_updated) = (row.int(0)?, row.int(1)?, row.text(2)?);
    Ok(Written { stored: w.stored(version, seq, &last_updated), change: Change::Unchanged })
}

fn change_of(version: i64) -> Change {
    if version == 1 { Change::Created } else { Change::Updated }
}

/// Writes one resource, row by row; one whose body is the stored one
/// already keeps its version.
fn put_one(db: &mut dyn Sql, w: &Write<'_>, now: &str) -> veil_sql::Result<Written> {
    let seq = next_seq(db)?;
    let returned = db.query(
        "INSERT INTO resources (type, id, version, last_updated, seq, body) VALUES (?1, ?2, 1, ?3, ?4, ?5)
         ON CONFLICT (type, id) DO UPDATE SET version = resources.version + 1, last_updated = ?3, seq = ?4, body = ?5
         WHERE resources.body IS DISTINCT FROM excluded.body
         RETURNING version",
        args![w.resource_type, w.id, now, seq, w.body],
    )?;
    let version = returned.into_iter().next().map(|mut row| row.int(0)).transpose()?;
    // The compartment and membership are the caller's reading of the body,
    // and are replaced even when the body is not: a reload after the
    // rules for them changed brings them up to date.
    db.execute("DELETE FROM compartment WHERE type = ?1 AND id = ?2", args![w.resource_type, w.id])?;
    for p in w.patients {
        db.execute(
            "INSERT INTO compartment (patient, type, id) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            args![p, w.resource_type, w.id],
        )?;
    }
    if let Some(members) = w.group_members {
        replace_group(db, w.id, members)?;
    }
    match version {
        Some(version) => Ok(Written { stored: w.stored(version, seq, now), change: change_of(version) }),
        None => unchanged(db, w),
    }
}

/// Writes a batch of distinct resources in a few round trips, arrays
/// unnested by PostgreSQL. (One `INSERT … ON CONFLICT` cannot update a row
/// twice, so a batch naming a resource twice goes row by row.)
fn put_batch_on_postgres(db: &mut dyn Sql, writes: &[Write<'_>], now: &str) -> veil_sql::Result<Vec<Written>> {
    let types: Vec<&str> = writes.iter().map(|w| w.resource_type).collect();
    let ids: Vec<&str> = writes.iter().map(|w| w.id).collect();
    let bodies: Vec<&str> = writes.iter().map(|w| w.body).collect();
    let mut written: HashMap<(String, String), (i64, i64)> = HashMap::with_capacity(writes.len());
    for mut r in db.query(
        "INSERT INTO resources (type, id, version, last_updated, seq, body)
         SELECT t, i, 1, ?3, nextval('resource_seq'), b FROM UNNEST(?1::text[], ?2::text[], ?4::text[]) AS u(t, i, b)
         ON CONFLICT (type, id) DO UPDATE SET version = resources.version + 1, last_updated = ?3,
             seq = nextval('resource_seq'), body = EXCLUDED.body
         WHERE resources.body IS DISTINCT FROM EXCLUDED.body
         RETURNING type, id, version, seq",
        args![&types, &ids, now, &bodies],
    )? {
        written.insert((r.text(0)?, r.text(1)?), (r.int(2)?, r.int(3)?));
    }
    db.execute(
        "DELETE FROM compartment c USING UNNEST(?1::text[], ?2::text[]) AS u(t, i) WHERE c.type = u.t AND c.id = u.i",
        args![&types, &ids],
    )?;
    let (mut patients, mut member_types, mut member_ids) = (Vec::new(), Vec::new(), Vec::new());
    for w in writes {
        for p in w.patients {
            patients.push(p.as_str());
            member_types.push(w.resource_type);
            member_ids.push(w.id);
        }
    }
    if !patients.is_empty() {
        db.execute(
            "INSERT INTO compartment (patient, type, id) SELECT * FROM UNNEST(?1::text[], ?2::text[], ?3::text[])
             ON CONFLICT DO NOTHING",
            args![&patients, &member_types, &member_ids],
        )?;
    }
    let mut out = Vec::with_capacity(writes.len());
    for w in writes {
        if let Some(members) = w.group_members {
            replace_group(db, w.id, members)?;
        }
        // Not returned: the body was the stored one already.
        match written.remove(&(w.resource_type.to_string(), w.id.to_string())) {
            Some((version, seq)) => {
                out.push(Written { stored: w.stored(version, seq, now), change: change_of(version) })
            }
            None => out.push(unchanged(db, w)?),
        }
    }
    Ok(out)
}

/// Rows per scan query.
const SCAN_BATCH: usize = 2000;

/// Keyset pagination on (type, id): `fetch` runs one
/// query for the batch after a key (so locks and connections are released
/// between batches and memory stays bounded), `each` sees every row.
fn paginate(
    mut fetch: impl FnMut(&(String, String)) -> Result<Vec<Stored>>,
    each: &mut dyn FnMut(Stored) -> Result<bool>,
) -> Result<()> {
    let mut after = (String::new(), String::new());
    loop {
        let batch = fetch(&after)?;
        let full = batch.len() == SCAN_BATCH;
        let last = batch.last().map(|s| (s.resource_type.clone(), s.id.clone()));
        for s in batch {
            if !each(s)? {
                return Ok(());
            }
        }
        match last {
            Some(l) if full => after = l,
            _ => return Ok(()),
        }
    }
}

/// The scan query for one batch after `after` in (type, id) order, with
/// its parameters. Keys compare byte by byte, in the same order as the
/// `ORDER BY`, whatever the database's locale.
fn scan_sql(filter: &ScanFilter, after: &(String, String), dialect: Dialect) -> (String, Vec<String>) {
    let c = dialect.bytewise();
    let mut sql = format!("SELECT {COLS} FROM resources r WHERE ");
    let mut values: Vec<String> = vec![after.0.clone(), after.1.clone()];
    // Binds `items` and returns their placeholders, `?3, ?4`.
    let bind = |items: &[String], values: &mut Vec<String>| {
        let first = values.len() + 1;
        values.extend(items.iter().cloned());
        (first..=values.len()).map(|n| format!("?{n}")).collect::<Vec<_>>().join(", ")
    };
    sql.push_str(if filter.deleted { "r.body IS NULL" } else { "r.body IS NOT NULL" });
    sql.push_str(&format!(" AND (r.type {c} > ?1 OR (r.type = ?1 AND r.id {c} > ?2))"));
    if let Some(types) = &filter.types {
        match bind(types, &mut values) {
            none if none.is_empty() => sql.push_str(" AND 1 = 0"),
            list => sql.push_str(&format!(" AND r.type IN ({list})")),
        }
    }
    if let Some(since) = &filter.since {
        sql.push_str(&format!(" AND r.last_updated > {}", bind(std::slice::from_ref(since), &mut values)));
    }
    if let Some(until) = &filter.until {
        sql.push_str(&format!(" AND r.last_updated <= {}", bind(std::slice::from_ref(until), &mut values)));
    }
    if let Some(patients) = &filter.patients {
        match bind(patients, &mut values) {
            none if none.is_empty() => sql.push_str(" AND 1 = 0"),
            list => sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM compartment c WHERE c.type = r.type AND c.id = r.id AND c.patient IN ({list}))"
            )),
        }
    }
    sql.push_str(&format!(" ORDER BY r.type {c}, r.id {c} LIMIT {SCAN_BATCH}"));
    (sql, values)
}

impl SqlStore {
    /// Opens `target` (a SQLite path or a PostgreSQL URL) and creates the
    /// tables that are missing.
    pub fn open(target: &str) -> Result<SqlStore> {
        let db = Database::open(target, SCHEMA_LOCK, |db| {
            db.batch(&schema(db.dialect()))?;
            add_missing_columns(db)
        })?;
        Ok(SqlStore { db })
    }
}

impl Store for SqlStore {
    fn put(&self, writes: &[Write<'_>]) -> Result<Vec<Written>> {
        let now = now_instant();
        let mut seen = HashSet::with_capacity(writes.len());
        let distinct = writes.iter().all(|w| seen.insert((w.resource_type, w.id)));
        Ok(self.db.write(|db| {
            if db.dialect() == Dialect::Postgres && distinct && !writes.is_empty() {
                return put_batch_on_postgres(db, writes, &now);
            }
            writes.iter().map(|w| put_one(db, w, &now)).collect()
        })?)
    }

    fn get(&self, resource_type: &str, id: &str) -> Result<Option<Stored>> {
        let sql = format!("SELECT {COLS} FROM resources WHERE type = ?1 AND id = ?2");
        Ok(self.db.read(|db| first(db, &sql, args![resource_type, id], stored))?)
    }

    fn delete(&self, resource_type: &str, id: &str) -> Result<Option<Stored>> {
        let sql = format!(
            "UPDATE resources SET version = version + 1, last_updated = ?3, seq = ?4, body = NULL
             WHERE type = ?1 AND id = ?2 AND body IS NOT NULL RETURNING {COLS}"
        );
        Ok(self.db.write(|db| {
            let seq = next_seq(db)?;
            let gone = first(db, &sql, args![resource_type, id, &now_instant(), seq], stored)?;
            db.execute("DELETE FROM compartment WHERE type = ?1 AND id = ?2", args![resource_type, id])?;
            if resource_type == "Group" {
                db.execute("DELETE FROM group_members WHERE group_id = ?1", args![id])?;
            }
            Ok(gone)
        })?)
    }

    fn scan(&self, filter: &ScanFilter, each: &mut dyn FnMut(Stored) -> Result<bool>) -> Result<()> {
        let (dialect, db) = (self.db.dialect(), &self.db);
        paginate(
            |after| {
                let (sql, values) = scan_sql(filter, after, dialect);
                let params: Vec<veil_sql::Param<'_>> = values.iter().map(Into::into).collect();
                Ok(db.read(|db| all(db, &sql, &params, stored))?)
            },
            each,
        )
    }

    fn counts(&self) -> Result<BTreeMap<String, u64>> {
        let rows = self.db.read(|db| {
            db.query("SELECT type, COUNT(*) FROM resources WHERE body IS NOT NULL GROUP BY type", args![])?
                .into_iter()
                .map(|mut r| Ok((r.text(0)?, r.int(1)? as u64)))
                .collect()
        })?;
        Ok(rows)
    }

    fn group_members(&self, group_id: &str) -> Result<Option<Vec<String>>> {
        let c = self.db.dialect().bytewise();
        let sql = format!("SELECT patient FROM group_members WHERE group_id = ?1 ORDER BY patient {c}");
        Ok(self.db.read(|db| {
            let live = "SELECT 1 FROM resources WHERE type = 'Group' AND id = ?1 AND body IS NOT NULL";
            if db.query_opt(live, args![group_id])?.is_none() {
                return Ok(None);
            }
            all(db, &sql, args![group_id], |mut r| r.text(0)).map(Some)
        })?)
    }

    fn create_job(&self, id: &str, request: &str) -> Result<Job> {
        let sql = format!(
            "INSERT INTO jobs (id, request, state, created) VALUES (?1, ?2, 'queued', ?3) RETURNING {JOB_COLS}"
        );
        Ok(self.db.write(|db| job(db.query_one(&sql, args![id, request, &now_instant()])?))?)
    }

    fn job(&self, id: &str) -> Result<Option<Job>> {
        let sql = format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?1");
        Ok(self.db.read(|db| first(db, &sql, args![id], job))?)
    }

    fn jobs(&self) -> Result<Vec<Job>> {
        let sql = format!("SELECT {JOB_COLS} FROM jobs ORDER BY created, id");
        Ok(self.db.read(|db| all(db, &sql, args![], job))?)
    }

    fn claim_job(&self, owner: &str, lease_secs: i64) -> Result<Option<Job>> {
        // On PostgreSQL, servers claiming at once skip each other's row
        // instead of waiting for it; SQLite's writers take turns anyway.
        let skip_locked = match self.db.dialect() {
            Dialect::Sqlite => "",
            Dialect::Postgres => "FOR UPDATE SKIP LOCKED",
        };
        let sql = format!(
            "UPDATE jobs SET state = 'running', lease_owner = ?1, lease_until = ?2, attempts = attempts + 1
             WHERE id = (SELECT id FROM jobs WHERE state = 'queued' OR (state = 'running' AND lease_until < ?3)
                         ORDER BY created, id LIMIT 1 {skip_locked})
             RETURNING {JOB_COLS}"
        );
        Ok(self.db.write(|db| first(db, &sql, args![owner, &instant_in(lease_secs), &now_instant()], job))?)
    }

    fn heartbeat(&self, id: &str, owner: &str, lease_secs: i64, progress: Option<&str>) -> Result<bool> {
        let n = self.db.write(|db| {
            db.execute(
                "UPDATE jobs SET lease_until = ?3, progress = COALESCE(?4, progress)
                 WHERE id = ?1 AND lease_owner = ?2 AND state = 'running'",
                args![id, owner, &instant_in(lease_secs), progress],
            )
        })?;
        Ok(n == 1)
    }

    fn finish_job(&self, id: &str, owner: &str, state: JobState, outcome: &str) -> Result<bool> {
        let (result, error) = if state == JobState::Completed { (Some(outcome), None) } else { (None, Some(outcome)) };
        let n = self.db.write(|db| {
            db.execute(
                "UPDATE jobs SET state = ?3, result = ?4, error = ?5, lease_until = NULL
                 WHERE id = ?1 AND lease_owner = ?2 AND state = 'running'",
                args![id, owner, state.as_str(), result, error],
            )
        })?;
        Ok(n == 1)
    }

    fn cancel_job(&self, id: &str) -> Result<bool> {
        Ok(self.db.write(|db| db.execute("UPDATE jobs SET state = 'cancelled' WHERE id = ?1", args![id]))? == 1)
    }

    fn delete_job(&self, id: &str) -> Result<bool> {
        Ok(self.db.write(|db| db.execute("DELETE FROM jobs WHERE id = ?1", args![id]))? == 1)
    }

    fn add_client(&self, c: &ClientRecord) -> Result<ClientRecord> {
        let sql =
            format!("INSERT INTO clients ({CLIENT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING {CLIENT_COLS}");
        let now = now_instant();
        let values = args![&c.id, &c.name, &c.jwks, &c.jwks_url, &c.scopes, &now];
        Ok(self.db.write(|db| client(db.query_one(&sql, values)?))?)
    }

    fn client(&self, id: &str) -> Result<Option<ClientRecord>> {
        let sql = format!("SELECT {CLIENT_COLS} FROM clients WHERE id = ?1");
        Ok(self.db.read(|db| first(db, &sql, args![id], client))?)
    }

    fn clients(&self) -> Result<Vec<ClientRecord>> {
        let sql = format!("SELECT {CLIENT_COLS} FROM clients ORDER BY name, id");
        Ok(self.db.read(|db| all(db, &sql, args![], client))?)
    }

    fn remove_client(&self, id: &str) -> Result<bool> {
        Ok(self.db.write(|db| {
            db.execute("DELETE FROM used_jti WHERE client_id = ?1", args![id])?;
            Ok(db.execute("DELETE FROM clients WHERE id = ?1", args![id])? == 1)
        })?)
    }

    fn record_jti(&self, client_id: &str, jti: &str, expires: i64, now: i64) -> Result<bool> {
        Ok(self.db.write(|db| {
            db.execute("DELETE FROM used_jti WHERE expires < ?1", args![now])?;
            let sql = "INSERT INTO used_jti (client_id, jti, expires) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING";
            Ok(db.execute(sql, args![client_id, jti, expires])? == 1)
        })?)
    }

    fn secret(&self, name: &str, make: &mut dyn FnMut() -> String) -> Result<String> {
        Ok(self.db.write(|db| {
            let sql = "INSERT INTO secrets (name, value) VALUES (?1, ?2) ON CONFLICT DO NOTHING";
            db.execute(sql, args![name, &make()])?;
            db.query_one("SELECT value FROM secrets WHERE name = ?1", args![name])?.text(0)
        })?)
    }

    fn add_share(&self, s: &ShareRecord) -> Result<ShareRecord> {
        let sql = format!(
            "INSERT INTO shares ({SHARE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?8) RETURNING {SHARE_COLS}"
        );
        let now = now_instant();
        let values = args![&s.id, &s.kind, &s.location, &now, &s.expires, &s.recipient, &s.ip, i64::from(s.identified)];
        Ok(self.db.write(|db| share(db.query_one(&sql, values)?))?)
    }

    fn share(&self, id: &str) -> Result<Option<ShareRecord>> {
        let sql = format!("SELECT {SHARE_COLS} FROM shares WHERE id = ?1");
        Ok(self.db.read(|db| first(db, &sql, args![id], share))?)
    }

    fn shares(&self) -> Result<Vec<ShareRecord>> {
        let sql = format!("SELECT {SHARE_COLS} FROM shares ORDER BY created DESC, id");
        Ok(self.db.read(|db| all(db, &sql, args![], share))?)
    }

    fn revoke_share(&self, id: &str) -> Result<bool> {
        let sql = "UPDATE shares SET revoked = ?2 WHERE id = ?1 AND revoked IS NULL";
        Ok(self.db.write(|db| db.execute(sql, args![id, &now_instant()]))? == 1)
    }

    fn record_download(&self, d: &ShareDownload) -> Result<()> {
        let sql = format!("INSERT INTO share_downloads ({DOWNLOAD_COLS}) VALUES (?1, ?2, ?3, ?4, ?5)");
        self.db.write(|db| db.execute(&sql, args![&d.share_id, &now_instant(), &d.file, d.bytes, &d.client]))?;
        Ok(())
    }

    fn downloads(&self, share_id: Option<&str>) -> Result<Vec<ShareDownload>> {
        let sql = format!(
            "SELECT {DOWNLOAD_COLS} FROM share_downloads WHERE CAST(?1 AS TEXT) IS NULL OR share_id = ?1 ORDER BY seq"
        );
        Ok(self.db.read(|db| all(db, &sql, args![share_id], download))?)
    }
}

//! Where Veil keeps FHIR resources and export jobs: an embedded SQLite file
//! by default, PostgreSQL at scale, behind one [`Store`] trait.
//!
//! Resources are kept as the JSON they were written with (their current
//! version; a deletion leaves a tombstone, which Bulk Data's `deleted`
//! output needs), with their Patient compartment and Group membership
//! supplied by the caller, who knows the FHIR rules for them. Export jobs are
//! durable: claimed with a lease by one worker at a time, renewed by
//! heartbeat, and taken over by another worker when the lease lapses.
//! SMART clients, the assertion nonces they used (against replay) and the
//! server's signing secret live here too, so that several servers sharing
//! one PostgreSQL database agree on them.
//!
//! * [`open`] chooses the implementation from a URL: `sqlite:veil.db`,
//!   `sqlite::memory:`, `postgres://user@host/db`.
//! * [`Store::put`] writes a batch in one transaction; [`Store::scan`]
//!   streams what an export selects.
//!
//! ```
//! let store = veil_store::open("sqlite::memory:")?;
//! let body = r#"{"resourceType":"Patient","id":"p1"}"#;
//! store.put(&[veil_store::Write { resource_type: "Patient", id: "p1", body, patients: &["p1".into()], group_members: None }])?;
//! assert_eq!(store.get("Patient", "p1")?.unwrap().version, 1);
//! # Ok::<(), veil_store::StoreError>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod tables;

use std::collections::BTreeMap;

/// A store failure. Messages name tables and operations, never resource content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The URL names no known store (`sqlite:…`, `postgres://…`).
    #[error("unknown store URL (expected sqlite:PATH, sqlite::memory: or postgres://…)")]
    Url,
    /// The database (SQLite or PostgreSQL) failed.
    #[error("store: {0}")]
    Database(#[from] veil_sql::SqlError),
    /// A caller's callback failed.
    #[error("{0}")]
    Callback(String),
}

/// Shorthand.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One resource to write.
#[derive(Debug, Clone, Copy)]
pub struct Write<'a> {
    /// `resourceType`.
    pub resource_type: &'a str,
    /// `id`.
    pub id: &'a str,
    /// The resource's JSON as it is to be stored.
    pub body: &'a str,
    /// The ids of the patients whose compartment it is in.
    pub patients: &'a [String],
    /// For a Group: the patient ids among its members (replacing earlier ones).
    pub group_members: Option<&'a [String]>,
}

impl Write<'_> {
    /// What the store holds after this write.
    pub(crate) fn stored(&self, version: i64, seq: i64, now: &str) -> Stored {
        Stored {
            resource_type: self.resource_type.to_string(),
            id: self.id.to_string(),
            version,
            last_updated: now.to_string(),
            seq,
            body: Some(self.body.to_string()),
        }
    }
}

/// What one write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The resource was new (version 1).
    Created,
    /// It replaced a different body, or a tombstone (a new version).
    Updated,
    /// It held the same body already: nothing was written, and the stored
    /// version, time and change order stay (an export `_since` then does
    /// not send it again).
    Unchanged,
}

/// A write's outcome: what the store holds, and what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The resource as stored after the write.
    pub stored: Stored,
    /// What the write did.
    pub change: Change,
}

/// A stored resource (or a tombstone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// `resourceType`.
    pub resource_type: String,
    /// `id`.
    pub id: String,
    /// 1 for the first write, then one more per write or delete.
    pub version: i64,
    /// When it was last written, as a FHIR instant in UTC (`2026-11-22T17:40:00.123Z`).
    pub last_updated: String,
    /// Position in the store's change order.
    pub seq: i64,
    /// The JSON, or `None` once deleted.
    pub body: Option<String>,
}

/// What a scan selects. Every field narrows the selection.
#[derive(Debug, Clone, Default)]
pub struct ScanFilter {
    /// Only these resource types.
    pub types: Option<Vec<String>>,
    /// Only resources written after this instant (exclusive, `_since`).
    pub since: Option<String>,
    /// Only resources written at or before this instant (`_until`, the export's transaction time).
    pub until: Option<String>,
    /// Only resources in these patients' compartments.
    pub patients: Option<Vec<String>>,
    /// Tombstones instead of live resources.
    pub deleted: bool,
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for a worker.
    Queued,
    /// A worker holds its lease.
    Running,
    /// Finished; its result is the manifest.
    Completed,
    /// Finished with an error.
    Failed,
    /// Cancelled by the client; the worker stops at its next heartbeat.
    Cancelled,
}

impl JobState {
    fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
    fn parse(s: &str) -> JobState {
        match s {
            "running" => JobState::Running,
            "completed" => JobState::Completed,
            "failed" => JobState::Failed,
            "cancelled" => JobState::Cancelled,
            _ => JobState::Queued,
        }
    }
}

/// A durable job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Its id (the status URL's last segment).
    pub id: String,
    /// The request, as JSON the caller defines.
    pub request: String,
    /// Where it stands.
    pub state: JobState,
    /// When it was created (the export's transaction time).
    pub created: String,
    /// Who holds the lease, while running.
    pub lease_owner: Option<String>,
    /// Until when.
    pub lease_until: Option<String>,
    /// How many times a worker claimed it.
    pub attempts: i64,
    /// Progress the worker last reported (JSON the caller defines).
    pub progress: Option<String>,
    /// The result once completed (the manifest).
    pub result: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

/// A client registered for SMART Backend Services (see `veil-smart`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    /// The `client_id` Veil assigned.
    pub id: String,
    /// A name for people (`"Research team A"`).
    pub name: String,
    /// Its public keys as a JWK Set (JSON), when registered inline.
    pub jwks: Option<String>,
    /// Where it publishes its public keys, when registered by URL.
    pub jwks_url: Option<String>,
    /// The scopes it may be granted, space-separated.
    pub scopes: String,
    /// When it was registered.
    pub created: String,
}

/// A share: a read-only, expiring link to one export (see `veil-storage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareRecord {
    /// Its id (`sh_` and 16 hex digits); never a secret: the link is.
    pub id: String,
    /// How the link works: `veil` (served by `veil serve`), `azure-sas`,
    /// `s3-presigned` or `gcs-presigned`.
    pub kind: String,
    /// What is shared: a storage location, never with credentials in it.
    pub location: String,
    /// When it was made.
    pub created: String,
    /// When it stops working (an instant, as [`now_instant`] writes them).
    pub expires: String,
    /// Who it is for, as the issuer described them.
    pub recipient: Option<String>,
    /// The client addresses allowed (a CIDR), if limited.
    pub ip: Option<String>,
    /// When it was revoked.
    pub revoked: Option<String>,
    /// Whether it shares data that was not de-identified (or whose
    /// de-identification nobody could show), as the operator said
    /// explicitly when making it.
    pub identified: bool,
}

/// One download through a Veil share link: the audit log's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareDownload {
    /// The share.
    pub share_id: String,
    /// When (set by the store).
    pub time: String,
    /// The file, as the share's manifest names it.
    pub file: String,
    /// Bytes sent.
    pub bytes: i64,
    /// The client's address.
    pub client: String,
}

/// Persistence, implemented for SQLite and PostgreSQL.
pub trait Store: Send + Sync {
    /// Creates or replaces resources, all in one transaction; each one
    /// whose body differs from the stored one gets the next version and the
    /// current time, the others stay as they are ([`Change::Unchanged`]).
    fn put(&self, writes: &[Write<'_>]) -> Result<Vec<Written>>;
    /// The current version of a resource, a tombstone included.
    fn get(&self, resource_type: &str, id: &str) -> Result<Option<Stored>>;
    /// Deletes a resource, leaving a tombstone; `None` if there was none.
    fn delete(&self, resource_type: &str, id: &str) -> Result<Option<Stored>>;
    /// Streams the selected resources in (type, id) order to `each`, which
    /// returns `false` to stop early.
    fn scan(&self, filter: &ScanFilter, each: &mut dyn FnMut(Stored) -> Result<bool>) -> Result<()>;
    /// Live resources per type.
    fn counts(&self) -> Result<BTreeMap<String, u64>>;
    /// A Group's patient members, or `None` if no such Group was written.
    fn group_members(&self, group_id: &str) -> Result<Option<Vec<String>>>;
    /// Queues a new job.
    fn create_job(&self, id: &str, request: &str) -> Result<Job>;
    /// A job by id.
    fn job(&self, id: &str) -> Result<Option<Job>>;
    /// Every job, oldest first (for limits per client and retention).
    fn jobs(&self) -> Result<Vec<Job>>;
    /// Takes the oldest queued job, or a running one whose lease lapsed,
    /// for `lease_secs`; each job is given to one worker at a time.
    fn claim_job(&self, owner: &str, lease_secs: i64) -> Result<Option<Job>>;
    /// Renews the lease and records progress; `false` if the job is no
    /// longer this worker's (cancelled, or taken over).
    fn heartbeat(&self, id: &str, owner: &str, lease_secs: i64, progress: Option<&str>) -> Result<bool>;
    /// Ends a job as completed (with its result) or failed (with its error);
    /// `false` if the job is no longer this worker's.
    fn finish_job(&self, id: &str, owner: &str, state: JobState, outcome: &str) -> Result<bool>;
    /// Marks a job cancelled; `false` if there is no such job.
    fn cancel_job(&self, id: &str) -> Result<bool>;
    /// Forgets a job; `false` if there is no such job.
    fn delete_job(&self, id: &str) -> Result<bool>;
    /// Registers a client (its `created` is set by the store); an id
    /// already taken is an error.
    fn add_client(&self, client: &ClientRecord) -> Result<ClientRecord>;
    /// A client by id.
    fn client(&self, id: &str) -> Result<Option<ClientRecord>>;
    /// Every client, by name then id.
    fn clients(&self) -> Result<Vec<ClientRecord>>;
    /// Removes a client and the nonces it used; `false` if there was none.
    fn remove_client(&self, id: &str) -> Result<bool>;
    /// Records that `client_id` used the assertion nonce `jti`, which
    /// expires at `expires` (seconds since the epoch): `true` the first
    /// time, `false` if it is already recorded and not yet expired (a
    /// replay). Nonces expired at `now` are forgotten.
    fn record_jti(&self, client_id: &str, jti: &str, expires: i64, now: i64) -> Result<bool>;
    /// The secret called `name`, made by `make` the first time it is asked
    /// for; every process sharing the store gets the same value.
    fn secret(&self, name: &str, make: &mut dyn FnMut() -> String) -> Result<String>;
    /// Records a new share (its `created` is set by the store).
    fn add_share(&self, share: &ShareRecord) -> Result<ShareRecord>;
    /// A share by id.
    fn share(&self, id: &str) -> Result<Option<ShareRecord>>;
    /// Every share, newest first.
    fn shares(&self) -> Result<Vec<ShareRecord>>;
    /// Marks a share revoked now; `false` if there is no such share or it
    /// was revoked already.
    fn revoke_share(&self, id: &str) -> Result<bool>;
    /// Appends a download to the audit log (its `time` is set by the store).
    fn record_download(&self, download: &ShareDownload) -> Result<()>;
    /// The audit log: downloads of one share (or all, for `None`), oldest first.
    fn downloads(&self, share_id: Option<&str>) -> Result<Vec<ShareDownload>>;
}

/// Opens a store from a URL: `sqlite:PATH`, `sqlite::memory:`, or
/// `postgres://…` / `postgresql://…` (with `?schema=NAME` to use a schema
/// of its own). Tables are created when missing.
pub fn open(url: &str) -> Result<Box<dyn Store>> {
    let target = match url.strip_prefix("sqlite:") {
        Some(path) => path,
        None if url.starts_with("postgres://") || url.starts_with("postgresql://") => url,
        None => return Err(StoreError::Url),
    };
    Ok(Box::new(tables::SqlStore::open(target)?))
}

/// A database URL fit to print: a password in it (`postgres://u:pw@host`)
/// becomes `***`.
///
/// ```
/// assert_eq!(veil_store::printable_url("postgres://veil:s3cret@db/veil"), "postgres://veil:***@db/veil");
/// assert_eq!(veil_store::printable_url("sqlite:veil.db"), "sqlite:veil.db");
/// ```
pub fn printable_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return url.to_string() };
    match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_string(),
    }
}

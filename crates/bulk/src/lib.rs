//! A Bulk Data `$export` client (reference: bulk-export.md §2, §4, §6), for
//! pulling data out of an EHR's FHIR server and de-identifying it on the
//! way in, so that raw data never rests on the researcher-facing side.
//!
//! * [`Client::kick_off`] asks for the export (GET, or POST with a
//!   `Parameters` body when patients are named) with the `Prefer` and
//!   `Accept` headers servers expect;
//! * [`Client::wait`] polls the status URL, honouring `Retry-After` (seconds
//!   or an HTTP date, capped), backing off on 429 and transient 5xx, and
//!   reporting `X-Progress`;
//! * [`run`] downloads every `output`, `deleted` and `error` file of the
//!   manifest with a bounded number of threads, retrying each file from its
//!   start, writing it under a temporary name and renaming it when whole
//!   (`veil_util::atomic`), and records each
//!   finished file (SHA-256, bytes, resources) in a state file, so that a
//!   second run with `resume` continues without fetching a finished file
//!   again and without duplicates.
//!
//! With a de-identification [`veil_deid::Engine`], each line is
//! de-identified in memory as it arrives and only the result is written; a
//! resource that cannot be de-identified is left out and counted, never
//! written.

mod export;
mod http;

pub use export::{Options, STATE_FILE, State, Summary, run};
pub use http::{Auth, Client, ExportRequest, Level, Manifest, ManifestFile, RetryPolicy};

/// Why an export could not go on. Messages name URLs' paths, statuses and
/// files, never a token, a key or a resource.
#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    /// The server could not be reached, or the connection broke.
    #[error("{0}")]
    Http(String),
    /// The server refused or failed, with its status and what it said.
    #[error("{what}: the server answered {status}: {detail}")]
    Status {
        /// What was being asked.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The server's explanation (the start of its body).
        detail: String,
    },
    /// The server's answer was not what the specification says.
    #[error("{0}")]
    Protocol(String),
    /// The destination's state does not allow this run (an unfinished
    /// export without `resume`, nothing to resume, a different `deid`).
    #[error("{0}")]
    Destination(String),
    /// No token could be had.
    #[error(transparent)]
    Token(#[from] veil_smart::ClientError),
    /// Writing the destination failed.
    #[error("{0}")]
    Io(String),
    /// A resource could not be de-identified and de-identification fails closed.
    #[error("{0}")]
    Deid(String),
}

/// Results of this crate.
pub type Result<T, E = BulkError> = std::result::Result<T, E>;

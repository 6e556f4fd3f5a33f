//! The multi-site aggregator (reference: cumulus.md §3, §4, §7): where
//! hospitals send their studies' count cubes, and where the cubes are
//! combined for a dashboard.
//!
//! It speaks the Cumulus wire protocol, so that `cumulus-library upload` and
//! `veil upload` both work against it, and fixes what the reference lists
//! as missing:
//!
//! * sites are registered with per-study permissions and rotatable secrets,
//!   kept only as salted digests ([`Ledger::add_site`]);
//! * an upload is validated before anything of it is kept: zip safety,
//!   member names, manifest, Parquet types, the data package version, and
//!   **every cell at least the network's minimum** ([`package::read`]);
//! * the merge ([`merge::merge`]) runs inside the transaction that records
//!   the upload, so a reader sees the old or the new state, never a mix; a
//!   site's new upload replaces its whole contribution, the same package
//!   twice is a no-op, and a schema change without a version bump is
//!   refused with the columns named;
//! * the upload lock is a lease, released as soon as the upload is done;
//! * uploads go to this server, or with S3 storage straight to the bucket
//!   by a presigned POST, as with Cumulus; either way nothing of one is
//!   visible before it has been checked ([`staging`]), and a site can ask
//!   what became of it;
//! * chart queries are evaluated over parsed filters ([`chart::chart`]), never
//!   by building query text from a request.
//!
//! * its database is a SQLite file or PostgreSQL, the same statements on
//!   both, with writers serialised across processes so that several
//!   servers can share one database;
//! * a web dashboard ([`dashboard`]), compiled in, reads only the query API.
//!
//! [`http::router`] serves it; the `veil aggregator` command wires it up.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod chart;
pub mod dashboard;
mod db;
mod error;
pub mod http;
mod intake;
mod ledger;
pub mod merge;
pub mod package;
mod secrets;
pub mod staging;

pub use ledger::{
    ApiKey, Arrival, DataPackage, Ledger, LedgerError, Outcome, Site, UploadRecord, UploadState, version_key,
};

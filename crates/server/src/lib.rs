//! Veil's FHIR side: what goes into the store, and the HTTP server that
//! answers FHIR REST and Bulk Data `$export` from it, behind SMART Backend
//! Services authorization.
//!
//! * [`load_document`] unpacks transaction and batch Bundles (references
//!   between entries rewritten from `urn:uuid:` fullUrls to `Type/id`) and
//!   stores single resources; [`load_ndjson`] streams NDJSON in batches.
//!   Both compute Patient compartment and Group membership for the store.
//! * [`http`] is the router (FHIR REST, `$export` kick-off, status,
//!   downloads); [`export`] the durable workers that write the files;
//!   [`auth`] discovery, the token endpoint and the token every protected
//!   request needs; [`share`] Veil's own share links (`/share/<token>/`);
//!   [`running::start`] starts it all, as `veil serve` does.
//!
//! ```
//! let store = veil_store::open("sqlite::memory:")?;
//! let bundle = serde_json::json!({"resourceType": "Bundle", "type": "transaction", "entry": [
//!     {"fullUrl": "urn:uuid:p1", "resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
//!     {"fullUrl": "urn:uuid:o1", "resource": {"resourceType": "Observation", "status": "final",
//!         "code": {"text": "x"}, "subject": {"reference": "urn:uuid:p1"}}, "request": {"method": "POST", "url": "Observation"}}
//! ]});
//! let report = veil_server::load_document(&*store, bundle, "example")?;
//! assert_eq!(report.created["Observation"], 1);
//! let obs = store.get("Observation", "o1")?.unwrap();
//! assert!(obs.body.unwrap().contains(r#""reference":"Patient/p1""#));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod auth;
mod error;
pub mod export;
pub mod http;
mod ingest;
pub mod running;
pub mod search;
pub mod share;

pub use ingest::{
    EntryAction, LoadError, LoadReport, entry_actions, load_document, load_ndjson, new_id, store_resource,
};

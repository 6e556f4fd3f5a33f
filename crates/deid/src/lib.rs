//! De-identification of FHIR R4 resources, driven by Microsoft FHIR
//! anonymizer configuration files.
//!
//! Hospitals already write their de-identification policies as anonymizer
//! configurations (Azure's de-identified `$export` takes exactly these).
//! Veil reads them unchanged: [`Policy::parse`] accepts and refuses files as
//! the anonymizer does, and names the rule, its path and the reason when it
//! refuses one. An [`Engine`] applies a policy to one resource at a time;
//! [`anonymize_ndjson`] streams NDJSON through it on every core, in input
//! order, counting what each method changed for the run's report.
//!
//! ```
//! let policy = veil_deid::Policy::parse(r#"{
//!     "fhirVersion": "R4",
//!     "fhirPathRules": [
//!         {"path": "nodesByType('HumanName').use", "method": "keep"},
//!         {"path": "nodesByType('HumanName')", "method": "redact"}
//!     ]
//! }"#)?;
//! assert_eq!(policy.rules.len(), 2);
//! assert_eq!(policy.rules[1].resource_type, "");
//! # Ok::<(), veil_deid::ConfigError>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod config;
mod crypto;
mod dateshift;
mod engine;
mod index;
mod json;
mod methods;
mod shape;
mod stream;

pub use config::{ConfigError, DateShiftScope, Method, Parameters, Policy, ProcessingErrors, RangeType, Rule};
pub use engine::{DeidError, Engine, Stats, is_security_label};
pub use stream::{
    OnError, Quarantined, Report, StreamError, anonymize_ndjson, anonymize_ndjson_watched, map_lines_in_parallel,
};

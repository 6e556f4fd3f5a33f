//! Aggregate studies (reference: cumulus.md §2, §7): what a hospital may
//! hand an aggregator instead of rows about patients.
//!
//! A study is a folder with a `study.toml` that names SQL on FHIR
//! ViewDefinitions, joins their rows into tables, and declares count
//! tables. [`Study::load`] checks all of it before any data is read;
//! [`Builder`] streams resources through the views and
//! [`Builder::finish`] computes each count cube over every combination of
//! its strata (`NULL` meaning "all values", [`NONE`] standing for a real
//! null, as Cumulus does) and drops every cell counted under the table's
//! minimum (10 unless the study says otherwise). [`export`] then writes the
//! Cumulus data package: `<study>__<table>.cube.csv` and `.parquet`, the
//! meta tables, `manifest.toml` and `<study>.zip`; [`upload`] sends the
//! zip ([`Package::find`] checks it first) to a Cumulus aggregator.
//!
//! Built-in studies ([`Study::builtin`]): `flu`, yearly influenza
//! vaccination trends.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod build;
mod definition;
mod export;
mod upload;

pub use build::{Builder, Built, BuiltColumn, BuiltTable, TableKind, ViewRows};
pub use definition::{ExportPreset, PresetRule, Study};
pub use export::{Exported, export};
pub use upload::{Aggregator, Package, UploadError, upload};

/// The value a stratum takes where the data held no value, so that `NULL`
/// can mean "all values" in a cube.
pub use veil_util::CUMULUS_NONE as NONE;

/// The minimum cell size when a count table does not set one (Cumulus'
/// `DEFAULT_MIN_SUBJECT`).
pub const DEFAULT_MIN_CELL: u64 = 10;

/// Why a study cannot be loaded, built or exported. Messages name files,
/// tables and columns, never resource values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StudyError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, StudyError> {
    Err(StudyError(msg.into()))
}

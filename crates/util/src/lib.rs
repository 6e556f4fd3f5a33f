//! The small pieces every Veil crate needs and none owns: encodings (hex,
//! base64), files written whole or not at all, whole-day calendar
//! arithmetic, the clock and the two ways Veil writes an instant, and a
//! CSV line.
//!
//! A leaf: it depends on no other Veil crate, so a crate that needs a hex
//! encoder does not link the R4 tables or FHIRPath to get one.

pub mod atomic;
pub mod base64;
pub mod calendar;
pub mod clock;
pub mod csv;
pub mod hex;

/// Cumulus' value for a stratum where the data held no value
/// (`cumulus__none`), so that `NULL` can mean "all values" in a count cube:
/// written by studies, read by the aggregator.
pub const CUMULUS_NONE: &str = "cumulus__none";

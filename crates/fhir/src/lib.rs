//! The FHIR R4 model as data, for code that walks FHIR JSON without typed structs.
//!
//! Everything Veil does to a resource (choose nodes with FHIRPath, redact,
//! shift dates, flatten into tables) needs to know what an element *is*: that
//! `Patient.birthDate` is a `date`, that `Observation.value` is a choice stored
//! as `valueQuantity` or `valueString`, that `Age` is a `Quantity` and `code` a
//! `string`, that `Questionnaire.item.item` has the shape of
//! `Questionnaire.item`. This crate answers those questions from tables
//! generated out of the official R4 4.0.1 definitions (see
//! `tools/gen-fhir-r4.py` and the licence files in `src/r4/`).
//!
//! * [`r4()`] returns the [`Model`], built once on first use.
//! * [`Model::child`] finds the [`Element`] a name selects below a type or a
//!   backbone path, following type inheritance (`SimpleQuantity.value` is
//!   `Quantity.value`).
//! * [`validate::check_resource`] checks that a JSON document has the shape
//!   of an R4 resource (defined elements, primitives of their types).
//! * [`Model::search_params`] and [`Model::patient_compartment`] serve the
//!   export side (`_typeFilter`, Patient-level `$export`).
//!
//! ```
//! let m = veil_fhir::r4();
//! let given = m.child("HumanName", "given").unwrap();
//! assert_eq!(given.types, &["string"]);
//! assert!(given.repeats);
//! let value = m.child("Observation", "value").unwrap();
//! assert!(value.is_choice());
//! assert_eq!(value.choice_type_of_key("valueQuantity"), Some("Quantity"));
//! assert!(m.is_subtype("Age", "Quantity"));
//! assert!(m.is_subtype("Patient", "Resource"));
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod model;
mod r4;
pub mod validate;

pub use model::{Element, Model, SearchParam, SearchParamKind, r4};

//! FHIRPath over FHIR R4 JSON that returns *handles* to the nodes it matches.
//!
//! De-identification must change or delete what a rule selects, in place;
//! SQL on FHIR views and `_typeFilter` only read. Both use this one engine:
//! an expression is compiled once into an [`Expression`], then evaluated
//! against many resources. Each result [`Item`] is either a [`Node`] of the
//! resource — typed by the R4 model of `veil-fhir` and carrying its
//! [`Location`] — or a computed [`Value`]. Through a location the caller reads,
//! replaces or deletes the node after evaluation, including inside arrays,
//! choice elements (`valueQuantity`), primitive extensions (`_birthDate`),
//! contained resources and Bundle entries.
//!
//! ```
//! use serde_json::json;
//! use veil_fhirpath::{Expression, remove_all};
//!
//! let mut patient = json!({
//!     "resourceType": "Patient",
//!     "name": [{"family": "Chalmers", "given": ["Peter", "James"]}],
//!     "address": [{"use": "home", "city": "PleasantVille"}, {"use": "work", "city": "Metropolis"}]
//! });
//! let home = Expression::compile("Patient.address.where(use = 'home')")?;
//! let found = home.evaluate(&patient)?;
//! assert_eq!(found[0].type_name(), "Address");
//! let locations: Vec<_> = found.iter().filter_map(|i| i.as_node()).map(|n| n.location()).collect();
//! assert_eq!(locations[0].to_string(), "address[0]");
//! remove_all(&mut patient, &locations);
//! assert_eq!(patient["address"][0]["city"], "Metropolis");
//! # Ok::<(), veil_fhirpath::Error>(())
//! ```
//!
//! Errors never quote resource values: parse errors point into the
//! expression (`1:14: expected …`), runtime errors name functions and types.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod check;
pub mod compartment;
mod compile;
mod error;
mod eval;
mod functions;
mod lex;
mod node;
mod ops;
mod parse;
mod strings;
mod temporal;
mod value;

pub use error::{Error, ErrorKind, Span};
pub use eval::{Context, Item};
pub use node::{Location, Node, PathStep, node_at, remove_all};
pub use temporal::{Precision, Temporal, TemporalKind};
pub use value::Value;

use serde_json::Value as Json;

/// A compiled FHIRPath expression: parse and resolve once, evaluate many times.
#[derive(Debug, Clone)]
pub struct Expression {
    source: String,
    op: compile::Op,
}

impl Expression {
    /// Parses and compiles `source`. Syntax errors carry the line and column;
    /// unknown functions and wrong argument counts are rejected here, before
    /// any data is read.
    pub fn compile(source: &str) -> Result<Expression, Error> {
        let ast = parse::parse(source)?;
        let op = compile::compile(source, &ast)?;
        Ok(Expression { source: source.to_string(), op })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates against a resource with default settings.
    pub fn evaluate<'a>(&self, resource: &'a Json) -> Result<Vec<Item<'a>>, Error> {
        self.evaluate_with(&Context::new(resource))
    }

    /// Evaluates with a prepared [`Context`] (constants, focus, strictness).
    pub fn evaluate_with<'a>(&self, ctx: &Context<'a>) -> Result<Vec<Item<'a>>, Error> {
        if ctx.strict
            && let [Item::Node(n)] = ctx.focus.as_slice()
            && n.is_resource()
        {
            check::check(&self.op, n.fhir_type())?;
        }
        let ev = eval::Evaluator { ctx, now: std::cell::OnceCell::new() };
        let scope = eval::Scope { this: ctx.focus.clone(), root: true, index: None, total: None };
        ev.eval(&self.op, &scope)
    }

    /// Evaluates as a predicate: true when the result is a single `true`, or
    /// a non-empty collection that is not a single `false` (FHIRPath N1
    /// §Singleton evaluation, as the anonymizer's `generalize` uses it).
    pub fn is_true(&self, ctx: &Context<'_>) -> Result<bool, Error> {
        let r = self.evaluate_with(ctx)?;
        Ok(match r.as_slice() {
            [] => false,
            [item] => !matches!(item.value(), Some(Value::Boolean(false))),
            _ => true,
        })
    }
}

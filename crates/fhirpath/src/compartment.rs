//! The R4 Patient compartment, evaluated: which patients a resource belongs
//! to, through the compartment definition's search parameters and their
//! FHIRPath expressions. Used to scope Patient-level exports and per-patient
//! date shifts.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value as Json;

use crate::{Context, Expression, Item};

/// Per resource type, the compiled expressions of the search parameters
/// that put it in the Patient compartment.
fn links() -> &'static HashMap<&'static str, Vec<Expression>> {
    static LINKS: OnceLock<HashMap<&'static str, Vec<Expression>>> = OnceLock::new();
    LINKS.get_or_init(|| {
        let model = veil_fhir::r4();
        let mut out = HashMap::new();
        for ty in model.resource_types() {
            let Some(params) = model.patient_compartment(ty) else { continue };
            let exprs: Vec<Expression> = params
                .iter()
                .filter_map(|code| model.search_param(ty, code))
                // `resolve()` cannot follow `Patient/123` outside a Bundle;
                // the reference's own type says the same, and is checked below.
                .filter_map(|p| Expression::compile(&p.expression.replace(".where(resolve() is Patient)", "")).ok())
                .collect();
            if !exprs.is_empty() {
                out.insert(ty, exprs);
            }
        }
        out
    })
}

/// The patient id a reference points at: `Patient/123` (with any base URL
/// or version) → `123`; `urn:uuid:X` → `X` (transaction Bundles, whose
/// entries are linked by `fullUrl`); anything else → `None`.
pub fn patient_id_of_reference(reference: &str) -> Option<&str> {
    if let Some(uuid) = reference.strip_prefix("urn:uuid:") {
        return Some(uuid);
    }
    let path = reference.split("/_history/").next()?;
    let mut parts = path.rsplit('/');
    let id = parts.next()?;
    (parts.next()? == "Patient" && !id.is_empty()).then_some(id)
}

/// The ids of the patients whose compartment the resource `doc` is in.
pub fn patients_of_resource(doc: &Json) -> Vec<String> {
    patients_of(doc, Item::Node(crate::Node::root(doc)))
}

/// The ids of the patients whose compartment `focus` (a resource node of
/// `doc`) is in, in the order the compartment definition lists its links:
/// a Patient's own id, or the patients its linking elements reference.
pub fn patients_of(doc: &Json, focus: Item<'_>) -> Vec<String> {
    let Some(node) = focus.as_node() else { return Vec::new() };
    let ty = node.fhir_type();
    if ty == "Patient" {
        return node
            .json()
            .and_then(|j| j.get("id"))
            .and_then(Json::as_str)
            .map(|id| vec![id.to_string()])
            .unwrap_or_default();
    }
    let Some(exprs) = links().get(ty) else { return Vec::new() };
    let ctx = Context::new(doc).with_focus(vec![focus.clone()]);
    let mut out: Vec<String> = Vec::new();
    for expr in exprs {
        let Ok(items) = expr.evaluate_with(&ctx) else { continue };
        for item in items {
            let reference =
                item.as_node().and_then(|n| n.json()).and_then(|j| j.get("reference")).and_then(Json::as_str);
            if let Some(id) = reference.and_then(patient_id_of_reference)
                && !out.iter().any(|o| o == id)
            {
                out.push(id.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn of(doc: &Json) -> Vec<String> {
        patients_of_resource(doc)
    }

    #[test]
    fn compartment_links() {
        assert_eq!(of(&json!({"resourceType": "Patient", "id": "p1"})), ["p1"]);
        let obs = json!({"resourceType": "Observation", "subject": {"reference": "Patient/p1"}, "performer": [{"reference": "Practitioner/x"}, {"reference": "http://h/fhir/Patient/p2/_history/3"}]});
        assert_eq!(of(&obs), ["p1", "p2"]);
        let enc = json!({"resourceType": "Encounter", "subject": {"reference": "urn:uuid:abc"}});
        assert_eq!(of(&enc), ["abc"]);
        assert!(of(&json!({"resourceType": "Organization", "id": "o"})).is_empty());
        assert!(of(&json!({"resourceType": "Observation", "subject": {"reference": "Group/g"}})).is_empty());
    }
}

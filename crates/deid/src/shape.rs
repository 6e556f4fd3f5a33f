//! Array-versus-single comes from the definitions, not the input (§3): the
//! anonymizer reads `"communication": {…}` and writes `"communication": [{…}]`.

use serde_json::Value as Json;
use veil_fhir::r4;

/// Wraps single values of repeating elements in arrays, throughout a resource.
pub(crate) fn normalize_arrays(v: &mut Json) {
    let Some(rt) = v.get("resourceType").and_then(Json::as_str).and_then(|t| r4().type_name(t)) else { return };
    normalize_object(v, rt);
}

fn normalize_object(v: &mut Json, owner: &'static str) {
    let Json::Object(map) = v else { return };
    for (key, value) in map.iter_mut() {
        let base = key.strip_prefix('_').unwrap_or(key);
        let Some((el, ty)) = r4().element_for_key(owner, base) else { continue };
        if el.repeats && !value.is_array() && !value.is_null() {
            *value = Json::Array(vec![value.take()]);
        }
        if key.starts_with('_') {
            continue;
        }
        let child_owner = el.children_owner(ty);
        match value {
            Json::Array(items) => {
                for item in items {
                    normalize_child(item, child_owner);
                }
            }
            item => normalize_child(item, child_owner),
        }
    }
}

fn normalize_child(item: &mut Json, owner: &'static str) {
    match item.get("resourceType").and_then(Json::as_str).and_then(|t| r4().type_name(t)) {
        Some(rt) => normalize_object(item, rt),
        None => normalize_object(item, owner),
    }
}

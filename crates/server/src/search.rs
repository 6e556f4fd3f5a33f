//! FHIR search parameters evaluated through their FHIRPath definitions:
//! used for `_typeFilter` in `$export` and for REST search. Supports the
//! token, date, reference, string, number, uri and quantity types with their
//! common prefixes and modifiers; anything else is reported as unsupported
//! so the caller can answer 400 (or ignore it when lenient).

use serde_json::Value as Json;
use veil_fhir::SearchParamKind;
use veil_fhirpath::{Context, Expression, Item, Temporal, Value};

/// A search that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SearchError(pub String);

/// One `name[:modifier]=value[,value…]` criterion, compiled.
struct Criterion {
    kind: SearchParamKind,
    modifier: Option<String>,
    expr: Expression,
    /// Alternatives (comma-separated values are ORed).
    values: Vec<String>,
}

/// A compiled query for one resource type: all criteria must hold.
pub struct Query {
    /// The resource type it applies to.
    pub resource_type: String,
    criteria: Vec<Criterion>,
}

/// Decodes a query-string component (`%XX` and `+`), once.
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len()
            // Bytes, not a str slice: a multi-byte character after '%' must not split.
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The decoded `(name, value)` pairs of a query string.
pub(crate) fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// `X.where(resolve() is Patient)` → `X.where(reference.startsWith('Patient/'))`:
/// there is nothing to resolve against, and the reference names its type.
fn resolve_free(expression: &str) -> String {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| regex::Regex::new(r"\.where\(resolve\(\) is ([A-Za-z]+)\)").expect("valid"));
    re.replace_all(expression, ".where(reference.startsWith('$1/'))").into_owned()
}

/// Result-shaping parameters that are not criteria.
const CONTROL: [&str; 8] = ["_count", "_offset", "_sort", "_include", "_revinclude", "_elements", "_summary", "_total"];

impl Query {
    /// Compiles `k=v&k=v` for `resource_type`. Parameters Veil cannot
    /// evaluate are errors naming the parameter.
    pub fn parse(resource_type: &str, query: &str) -> Result<Query, SearchError> {
        Query::from_pairs(resource_type, &query_pairs(query))
    }

    /// Compiles already-decoded `(name[:modifier], value)` pairs.
    pub fn from_pairs(resource_type: &str, pairs: &[(String, String)]) -> Result<Query, SearchError> {
        let model = veil_fhir::r4();
        let mut criteria = Vec::new();
        for (k, v) in pairs {
            if CONTROL.contains(&k.as_str()) {
                continue;
            }
            let (name, modifier) = match k.split_once(':') {
                Some((n, m)) => (n.to_string(), Some(m.to_string())),
                None => (k.clone(), None),
            };
            let param = model
                .search_param(resource_type, &name)
                .ok_or_else(|| SearchError(format!("unknown search parameter '{name}' for {resource_type}")))?;
            let supported = matches!(
                param.kind,
                SearchParamKind::Token
                    | SearchParamKind::Date
                    | SearchParamKind::Reference
                    | SearchParamKind::String
                    | SearchParamKind::Number
                    | SearchParamKind::Uri
                    | SearchParamKind::Quantity
            );
            if !supported || param.expression.is_empty() {
                return Err(SearchError(format!("the search parameter '{name}' ({:?}) is not supported", param.kind)));
            }
            if let Some(m) = &modifier {
                let ok = matches!(
                    (param.kind, m.as_str()),
                    (_, "missing")
                        | (SearchParamKind::String, "exact" | "contains")
                        | (SearchParamKind::Token, "not" | "text")
                ) || (param.kind == SearchParamKind::Reference && model.is_resource_type(m));
                if !ok {
                    return Err(SearchError(format!("the modifier ':{m}' is not supported on '{name}'")));
                }
            }
            // `resolve()` has nothing to resolve against here; a reference's
            // type is checked from its text instead.
            let src = resolve_free(param.expression);
            let expr = Expression::compile(&src)
                .or_else(|_| Expression::compile(param.expression))
                .map_err(|e| SearchError(format!("'{name}': {e}")))?;
            criteria.push(Criterion {
                kind: param.kind,
                modifier,
                expr,
                values: v.split(',').map(str::to_string).collect(),
            });
        }
        Ok(Query { resource_type: resource_type.to_string(), criteria })
    }

    /// Parses a `_typeFilter` value `Type?k=v&…`.
    pub fn parse_type_filter(filter: &str) -> Result<Query, SearchError> {
        let (ty, query) =
            filter.split_once('?').ok_or_else(|| SearchError("a _typeFilter is Type?parameters".into()))?;
        if !veil_fhir::r4().is_resource_type(ty) {
            return Err(SearchError(format!("'{ty}' is not a resource type")));
        }
        Query::parse(ty, query)
    }

    /// Whether `resource` matches every criterion.
    pub fn matches(&self, resource: &Json) -> bool {
        self.criteria.iter().all(|c| {
            let found = c.expr.evaluate_with(&Context::new(resource)).unwrap_or_default();
            if c.modifier.as_deref() == Some("missing") {
                return (c.values.first().map(String::as_str) == Some("true")) == found.is_empty();
            }
            let any =
                c.values.iter().any(|v| found.iter().any(|item| item_matches(c.kind, c.modifier.as_deref(), item, v)));
            if c.modifier.as_deref() == Some("not") { !any } else { any }
        })
    }
}

fn item_matches(kind: SearchParamKind, modifier: Option<&str>, item: &Item<'_>, wanted: &str) -> bool {
    match kind {
        SearchParamKind::String => {
            let Some(text) = string_of(item) else { return false };
            match modifier {
                Some("exact") => text == wanted,
                Some("contains") => fold(&text).contains(&fold(wanted)),
                _ => fold(&text).starts_with(&fold(wanted)),
            }
        }
        SearchParamKind::Uri => string_of(item).is_some_and(|t| t == wanted),
        SearchParamKind::Token => token_matches(item, wanted, modifier == Some("text")),
        SearchParamKind::Reference => {
            let Some(reference) =
                item.as_node().and_then(|n| n.json()).and_then(|j| j.get("reference")).and_then(Json::as_str)
            else {
                return false;
            };
            let target = match modifier {
                Some(ty) if !wanted.contains('/') => format!("{ty}/{wanted}"),
                _ => wanted.to_string(),
            };
            if target.contains('/') {
                reference == target || reference.ends_with(&format!("/{target}"))
            } else {
                reference.rsplit('/').next() == Some(target.as_str())
            }
        }
        SearchParamKind::Date => date_matches(item, wanted),
        SearchParamKind::Number | SearchParamKind::Quantity => number_matches(kind, item, wanted),
        _ => false,
    }
}

/// Case- and accent-insensitive enough for names and text: lowercase.
fn fold(s: &str) -> String {
    s.to_lowercase()
}

fn string_of(item: &Item<'_>) -> Option<String> {
    match item.value() {
        Some(Value::String(s)) => Some(s),
        _ => {
            // HumanName and Address match on any of their parts.
            let j = item.as_node()?.json()?;
            let parts: Vec<String> = [
                "text",
                "family",
                "given",
                "prefix",
                "suffix",
                "line",
                "city",
                "district",
                "state",
                "postalCode",
                "country",
            ]
            .iter()
            .filter_map(|k| j.get(*k))
            .flat_map(|v| match v {
                Json::Array(a) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect::<Vec<_>>(),
                Json::String(s) => vec![s.clone()],
                _ => vec![],
            })
            .collect();
            (!parts.is_empty()).then(|| parts.join(" "))
        }
    }
}

fn token_matches(item: &Item<'_>, wanted: &str, text: bool) -> bool {
    let (system, code) = match wanted.split_once('|') {
        Some((s, c)) => (Some(s), c),
        None => (None, wanted),
    };
    fn one(c: &serde_json::Map<String, Json>) -> (Option<&str>, Option<String>, Option<&str>) {
        (
            c.get("system").and_then(Json::as_str),
            c.get("code").or_else(|| c.get("value")).and_then(|v| v.as_str().map(str::to_string)),
            c.get("display").and_then(Json::as_str),
        )
    }
    let codings: Vec<(Option<&str>, Option<String>, Option<&str>)> = match item.as_node().and_then(|n| n.json()) {
        Some(Json::Object(o)) => match o.get("coding").and_then(Json::as_array) {
            Some(codings) => codings.iter().filter_map(|c| c.as_object()).map(one).collect(),
            None => vec![one(o)],
        },
        Some(Json::String(s)) => vec![(None, Some(s.clone()), None)],
        Some(Json::Bool(b)) => vec![(None, Some(b.to_string()), None)],
        _ => vec![],
    };
    if text {
        return codings.iter().any(|(_, _, d)| d.is_some_and(|d| fold(d).starts_with(&fold(wanted))));
    }
    codings.iter().any(|(s, c, _)| {
        let system_ok = match system {
            None => true,
            Some("") => s.is_none(),
            Some(sys) => *s == Some(sys),
        };
        system_ok && (code.is_empty() || c.as_deref() == Some(code))
    })
}

fn prefix(value: &str) -> (&str, &str) {
    for p in ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"] {
        if let Some(rest) = value.strip_prefix(p)
            && rest.starts_with(|c: char| c.is_ascii_digit() || c == '-')
        {
            return (p, rest);
        }
    }
    ("eq", value)
}

/// The instants a date covers, as text in the same (UTC-less) form: the
/// earliest and latest `YYYY-MM-DDThh:mm:ss` it could mean.
fn range(t: &Temporal) -> Option<(String, String)> {
    let t = t.to_datetime();
    let lo = t.boundary(false, Some(14))?.to_string();
    let hi = t.boundary(true, Some(14))?.to_string();
    Some((lo.chars().take(19).collect(), hi.chars().take(19).collect()))
}

fn date_matches(item: &Item<'_>, wanted: &str) -> bool {
    let (p, value) = prefix(wanted);
    let Some(target) = Temporal::parse_datetime(value).and_then(|t| range(&t)) else { return false };
    let Some(actual) = (match item.value() {
        Some(Value::Temporal(t)) => range(&t),
        _ => {
            // A Period matches on its start and end.
            let j = item.as_node().and_then(|n| n.json());
            let start = j
                .and_then(|j| j.get("start"))
                .and_then(Json::as_str)
                .and_then(Temporal::parse_datetime)
                .and_then(|t| range(&t));
            let end = j
                .and_then(|j| j.get("end"))
                .and_then(Json::as_str)
                .and_then(Temporal::parse_datetime)
                .and_then(|t| range(&t));
            match (start, end) {
                (None, None) => None,
                (s, e) => {
                    Some((s.map_or_else(|| "0000".to_string(), |s| s.0), e.map_or_else(|| "9999".to_string(), |e| e.1)))
                }
            }
        }
    }) else {
        return false;
    };
    let ((alo, ahi), (tlo, thi)) = (&actual, &target);
    match p {
        "eq" | "ap" => alo >= tlo && ahi <= thi,
        "ne" => !(alo >= tlo && ahi <= thi),
        "gt" | "sa" => ahi > thi,
        "lt" | "eb" => alo < tlo,
        "ge" => ahi >= tlo,
        "le" => alo <= thi,
        _ => false,
    }
}

fn number_matches(kind: SearchParamKind, item: &Item<'_>, wanted: &str) -> bool {
    let (p, rest) = prefix(wanted);
    let mut parts = rest.splitn(3, '|');
    let number = parts.next().unwrap_or("");
    let (system, code) = (parts.next().filter(|s| !s.is_empty()), parts.next().filter(|s| !s.is_empty()));
    let Ok(target) = number.parse::<f64>() else { return false };
    let (actual, unit_ok) = match item.value() {
        Some(Value::Quantity(v, unit)) => {
            let j = item.as_node().and_then(|n| n.json());
            let sys = j.and_then(|j| j.get("system")).and_then(Json::as_str);
            let ok = kind != SearchParamKind::Quantity
                || (system.is_none_or(|s| sys == Some(s))
                    && code
                        .is_none_or(|c| unit == c || j.and_then(|j| j.get("unit")).and_then(Json::as_str) == Some(c)));
            (v.to_string().parse::<f64>().ok(), ok)
        }
        Some(Value::Integer(i)) => (Some(i as f64), true),
        Some(Value::Decimal(d)) => (d.to_string().parse::<f64>().ok(), true),
        _ => (None, false),
    };
    let Some(a) = actual else { return false };
    unit_ok
        && match p {
            "eq" | "ap" => {
                // Equal within the precision the value was written with.
                let decimals = number.split_once('.').map_or(0, |(_, f)| f.len()) as i32;
                (a - target).abs() <= 0.5 * 10f64.powi(-decimals)
            }
            "ne" => (a - target).abs() > f64::EPSILON,
            "gt" | "sa" => a > target,
            "lt" | "eb" => a < target,
            "ge" => a >= target,
            "le" => a <= target,
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(ty: &str, query: &str) -> Query {
        Query::parse(ty, query).unwrap()
    }

    #[test]
    fn token_date_reference_string_quantity() {
        let obs = json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2", "display": "Body Height"}]},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2019-03-04T10:00:00Z",
            "valueQuantity": {"value": 181.2, "unit": "cm", "system": "http://unitsofmeasure.org", "code": "cm"}});
        assert!(q("Observation", "status=final").matches(&obs));
        assert!(!q("Observation", "status=preliminary").matches(&obs));
        assert!(q("Observation", "status=preliminary,final").matches(&obs), "comma is OR");
        assert!(q("Observation", "code=http://loinc.org|8302-2").matches(&obs));
        assert!(!q("Observation", "code=http://snomed.info/sct|8302-2").matches(&obs));
        assert!(q("Observation", "code:text=body").matches(&obs));
        assert!(q("Observation", "subject=Patient/p1").matches(&obs));
        assert!(q("Observation", "patient=p1").matches(&obs));
        assert!(!q("Observation", "patient=p2").matches(&obs));
        assert!(q("Observation", "date=2019-03").matches(&obs));
        assert!(q("Observation", "date=ge2019-01-01&date=lt2020-01-01").matches(&obs));
        assert!(!q("Observation", "date=gt2019-12-31").matches(&obs));
        assert!(q("Observation", "value-quantity=gt180|http://unitsofmeasure.org|cm").matches(&obs));
        assert!(!q("Observation", "value-quantity=lt180").matches(&obs));
        let pat = json!({"resourceType": "Patient", "name": [{"family": "Chalmers", "given": ["Peter"]}], "gender": "male", "birthDate": "1974-12-25"});
        assert!(q("Patient", "name=chal").matches(&pat));
        assert!(q("Patient", "family:exact=Chalmers").matches(&pat));
        assert!(!q("Patient", "family:exact=chalmers").matches(&pat));
        assert!(q("Patient", "gender=male&birthdate=1974").matches(&pat));
        assert!(q("Patient", "email:missing=true").matches(&pat));
    }

    #[test]
    fn unsupported_parameters_are_named() {
        assert_eq!(
            Query::parse("Patient", "nonsense=1").err().unwrap().0,
            "unknown search parameter 'nonsense' for Patient"
        );
        assert!(Query::parse_type_filter("Nope?x=1").is_err());
        assert!(Query::parse_type_filter("Observation").is_err());
        assert!(Query::parse("Observation", "code-value-quantity=x").is_err(), "composite parameters");
        assert!(Query::parse("Patient", "name:fuzzy=x").is_err());
    }
}

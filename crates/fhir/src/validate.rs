//! Whether a JSON document is a valid FHIR R4 resource as far as its shape
//! goes: every property is an element the model defines for its owner, and
//! every primitive holds a value of its type (a `date` that is a date, a
//! `boolean` that is `true` or `false`). Invariants and terminology are not
//! checked.
//!
//! Servers use it to refuse at the door what later steps (search,
//! de-identification) would have to drop. Problems name the element path,
//! never the value.

use serde_json::{Map, Value as Json};

use crate::model::r4;

/// Why a document is not valid R4: where, and what is wrong, without the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The element, e.g. `Patient.name[0].given[1]`.
    pub path: String,
    /// What is wrong, e.g. `not a valid date`.
    pub problem: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)
    }
}

/// Checks `doc` as an R4 resource; the first problem found.
pub fn check_resource(doc: &Json) -> Result<(), Invalid> {
    let ty = doc.get("resourceType").and_then(Json::as_str).unwrap_or("");
    match r4().type_name(ty) {
        Some(t) if r4().is_resource_type(t) && !matches!(t, "Resource" | "DomainResource") => {}
        _ => return Err(Invalid { path: "resourceType".into(), problem: "not a FHIR R4 resource type".into() }),
    }
    let Json::Object(map) = doc else { unreachable!("a resourceType was read from it") };
    object(map, ty, ty)
}

fn invalid(path: &str, problem: impl Into<String>) -> Invalid {
    Invalid { path: path.to_string(), problem: problem.into() }
}

fn object(map: &Map<String, Json>, owner: &str, path: &str) -> Result<(), Invalid> {
    for (key, value) in map {
        if key == "resourceType" {
            continue;
        }
        let (name, companion) = match key.strip_prefix('_') {
            Some(base) => (base, true),
            None => (key.as_str(), false),
        };
        let here = format!("{path}.{key}");
        let Some((el, ty)) = r4().element_for_key(owner, name) else {
            return Err(invalid(&here, "is not an element FHIR R4 defines here"));
        };
        if companion && !r4().is_primitive(ty) {
            return Err(invalid(&here, "a '_' companion belongs to primitive elements only"));
        }
        let items: Vec<(String, &Json)> = match value {
            Json::Array(items) if el.repeats => {
                items.iter().enumerate().map(|(i, v)| (format!("{here}[{i}]"), v)).collect()
            }
            Json::Array(_) => return Err(invalid(&here, "is a list, but the element does not repeat")),
            single => vec![(here.clone(), single)],
        };
        for (at, item) in items {
            if item.is_null() {
                // A gap that keeps a primitive array aligned with its companion.
                if el.repeats {
                    continue;
                }
                return Err(invalid(&at, "is null"));
            }
            if companion {
                let Json::Object(m) = item else { return Err(invalid(&at, "must be an object (id and extensions)")) };
                object(m, "Element", &at)?;
            } else if r4().is_primitive(ty) {
                primitive(item, ty).map_err(|p| invalid(&at, p))?;
            } else if ty == "Resource" {
                let Json::Object(_) = item else { return Err(invalid(&at, "must be a resource")) };
                check_resource(item).map_err(|e| invalid(&format!("{at}.{}", e.path), e.problem))?;
            } else {
                let Json::Object(m) = item else { return Err(invalid(&at, "must be an object")) };
                object(m, el.children_owner(ty), &at)?;
            }
        }
    }
    Ok(())
}

/// Checks one primitive value against its type; the problem, in words.
fn primitive(value: &Json, ty: &str) -> Result<(), String> {
    let text = || value.as_str().ok_or_else(|| format!("must be a JSON string ({ty})"));
    let ok = match ty {
        "boolean" => return if value.is_boolean() { Ok(()) } else { Err("must be true or false".into()) },
        "decimal" => return if value.is_number() { Ok(()) } else { Err("must be a JSON number (decimal)".into()) },
        "integer" | "unsignedInt" | "positiveInt" => {
            let n = value
                .as_i64()
                .filter(|n| i32::try_from(*n).is_ok())
                .ok_or_else(|| format!("must be a whole JSON number ({ty})"))?;
            match ty {
                "unsignedInt" if n < 0 => return Err("must not be negative (unsignedInt)".into()),
                "positiveInt" if n < 1 => return Err("must be at least 1 (positiveInt)".into()),
                _ => return Ok(()),
            }
        }
        "date" => is_date(text()?),
        "dateTime" => is_date_time(text()?),
        "instant" => text()?.split_once('T').is_some_and(|(d, t)| d.len() == 10 && is_date(d) && is_time_zoned(t)),
        "time" => is_time(text()?),
        "id" => {
            let t = text()?;
            (1..=64).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        }
        "code" => {
            let t = text()?;
            !t.is_empty() && t.trim() == t && !t.contains("  ")
        }
        _ => !text()?.is_empty(),
    };
    if ok { Ok(()) } else { Err(format!("not a valid {ty}")) }
}

fn digits(s: &str, n: usize) -> Option<u32> {
    (s.len() == n && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
}

/// `YYYY`, `YYYY-MM` or `YYYY-MM-DD`, a real calendar day.
fn is_date(s: &str) -> bool {
    let mut parts = s.split('-');
    let Some(year) = parts.next().and_then(|y| digits(y, 4)) else { return false };
    let month = match parts.next() {
        None => return year > 0,
        Some(m) => match digits(m, 2) {
            Some(m @ 1..=12) => m,
            _ => return false,
        },
    };
    let valid = match parts.next() {
        None => true,
        Some(d) => digits(d, 2).is_some_and(|d| d >= 1 && d <= veil_util::calendar::days_in_month(year as i32, month)),
    };
    year > 0 && valid && parts.next().is_none()
}

/// A date, or a full date with a time and a zone (R4: a time needs a zone).
fn is_date_time(s: &str) -> bool {
    match s.split_once('T') {
        None => is_date(s),
        Some((d, t)) => d.len() == 10 && is_date(d) && is_time_zoned(t),
    }
}

/// `hh:mm:ss[.fff]` followed by `Z` or `±hh:mm`.
fn is_time_zoned(s: &str) -> bool {
    let (time, zone) = match s.find(['Z', '+', '-']) {
        Some(at) => s.split_at(at),
        None => return false,
    };
    let zone_ok = zone == "Z"
        || (zone.len() == 6
            && zone.as_bytes()[3] == b':'
            && digits(&zone[1..3], 2).is_some_and(|h| h <= 14)
            && digits(&zone[4..6], 2).is_some_and(|m| m < 60));
    zone_ok && is_time(time)
}

/// `hh:mm:ss[.fff]`.
fn is_time(s: &str) -> bool {
    let (whole, fraction) = s.split_once('.').unwrap_or((s, "0"));
    let mut parts = whole.split(':');
    let (Some(h), Some(m), Some(sec), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    digits(h, 2).is_some_and(|h| h < 24)
        && digits(m, 2).is_some_and(|m| m < 60)
        && digits(sec, 2).is_some_and(|s| s <= 60)
        && !fraction.is_empty()
        && fraction.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn primitives_are_checked_by_type() {
        for good in ["2024", "2024-02", "2024-02-29"] {
            assert!(is_date(good), "{good}");
        }
        for bad in ["not-a-date", "2023-02-29", "2024-13", "2024-1-01", "0000", "2024-01-01T", "20240101"] {
            assert!(!is_date(bad), "{bad}");
        }
        assert!(is_date_time("2024-01-02T03:04:05.123+01:00"));
        assert!(is_date_time("2024-01-02T03:04:05Z"));
        assert!(!is_date_time("2024-01-02T03:04:05"), "a time needs a zone");
        assert!(!is_date_time("2024-01-02T25:04:05Z"));
        assert!(is_time("23:59:60.5"));
        assert!(!is_time("23:59"));
    }

    #[test]
    fn resources_are_checked_throughout_naming_the_path_only() {
        let ok = json!({"resourceType": "Patient", "id": "p1", "birthDate": "1970-01-01", "active": true,
            "name": [{"given": ["A", null], "_given": [null, {"extension": [{"url": "x", "valueString": "y"}]}]}],
            "contained": [{"resourceType": "Practitioner", "id": "gp"}],
            "multipleBirthInteger": 2});
        assert_eq!(check_resource(&ok), Ok(()));
        let cases = [
            (json!({"resourceType": "Patient", "birthDate": "not-a-date"}), "Patient.birthDate"),
            (json!({"resourceType": "Patient", "active": "yes"}), "Patient.active"),
            (json!({"resourceType": "Patient", "nickname": "secret"}), "Patient.nickname"),
            (json!({"resourceType": "Patient", "name": [{"given": [3]}]}), "Patient.name[0].given[0]"),
            (
                json!({"resourceType": "Patient", "contained": [{"resourceType": "Patient", "birthDate": "1970-02-30"}]}),
                "Patient.contained[0].Patient.birthDate",
            ),
            (json!({"resourceType": "Patient", "gender": ["female"]}), "Patient.gender"),
            (json!({"resourceType": "Observation", "valueInteger": 1.5}), "Observation.valueInteger"),
            (json!({"resourceType": "Nope"}), "resourceType"),
        ];
        for (doc, path) in cases {
            let e = check_resource(&doc).expect_err(&doc.to_string());
            assert_eq!(e.path, path, "{doc}");
            for value in ["not-a-date", "yes", "secret", "1970-02-30", "female"] {
                assert!(!e.to_string().contains(value), "{e}");
            }
        }
    }
}

//! The eight methods, each applied to one indexed node with the
//! anonymizer's exact algorithm (ms-anonymizer.md §5).

use std::sync::OnceLock;

use rustc_hash::FxHashSet as HashSet;

use rust_decimal::prelude::*;
use serde_json::{Map, Value as Json};
use veil_fhirpath::{Context, Item, Location, Value, node_at};

use crate::config::{Method, Parameters, RangeType};
use crate::engine::Records;
use crate::index::{Entry, Index, child_loc, companion_of};
use crate::{crypto, dateshift};

/// Keys and clock for one engine.
#[derive(Clone)]
pub(crate) struct Keys {
    pub hash: crypto::Hasher,
    pub date: String,
    pub encrypt: Vec<u8>,
    pub fixed_offset: Option<i64>,
    pub today: (i32, u32, u32),
    /// Whether a computed offset of 0 stays 0 (the anonymizer) or becomes 51 (Veil).
    pub exact_date_shift: bool,
    /// Whether shifted date-times are written in UTC (Veil's `veil.dateShiftToUtc`).
    pub date_shift_to_utc: bool,
}

/// 32 random hex characters, like the GUID the anonymizer generates.
pub(crate) fn random_key() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    veil_util::hex::encode(&bytes)
}

impl Keys {
    pub fn from_parameters(p: &Parameters) -> Keys {
        // The anonymizer draws one random key per process for hashing and
        // encryption alike, and a new date-shift key per configuration load.
        static PROCESS_KEY: OnceLock<String> = OnceLock::new();
        let process_key = || PROCESS_KEY.get_or_init(random_key).clone();
        Keys {
            hash: crypto::Hasher::new(p.crypto_hash_key.clone().unwrap_or_else(process_key).as_bytes()),
            date: p.date_shift_key.clone().unwrap_or_else(random_key),
            encrypt: p.encrypt_key.clone().unwrap_or_else(process_key).into_bytes(),
            fixed_offset: p.date_shift_fixed_offset_in_days,
            today: veil_util::clock::today(),
            exact_date_shift: false,
            date_shift_to_utc: false,
        }
    }
}

pub(crate) enum Outcome {
    /// Go on with the node's children.
    Continue,
    /// The method took care of the whole subtree, which is now visited.
    SubtreeDone { restructured: bool },
}

pub(crate) struct MethodResult {
    pub records: Records,
    pub outcome: Outcome,
}

#[derive(Default)]
pub(crate) struct Applied {
    pub records: Records,
    pub restructured: bool,
    /// Nodes whose method recorded a change.
    pub changed: u64,
}

pub(crate) enum Failure {
    /// The rule cannot apply here; not skippable.
    Rule(String),
    /// Processing failed; `processingErrors: skip` may skip the document.
    Processing(String),
}

fn done(records: Records) -> Result<MethodResult, Failure> {
    Ok(MethodResult { records, outcome: Outcome::Continue })
}

/// The .NET string form the anonymizer reads values in (§5): text as is,
/// numbers as written, booleans `True`/`False`.
fn dotnet_text(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(true) => Some("True".into()),
        Json::Bool(false) => Some("False".into()),
        _ => None,
    }
}

fn set(doc: &mut Json, loc: &Location, v: Json) {
    let _ = loc.replace(doc, v);
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn apply(
    method: &Method,
    doc: &mut Json,
    entry: &Entry,
    parent_ty: &str,
    keys: &Keys,
    prefix: &str,
    params: &Parameters,
    visited: &mut HashSet<Location>,
) -> Result<MethodResult, Failure> {
    let current = || entry.loc.get(doc).and_then(dotnet_text).filter(|s| !s.is_empty());
    match method {
        Method::Keep | Method::Unknown(_) => done(Records::default()),
        Method::Redact => {
            if !entry.primitive {
                return done(Records::default());
            }
            let Some(text) = current() else { return done(Records::default()) };
            redact(doc, entry, parent_ty, &text, keys, params)
        }
        Method::DateShift => {
            if !matches!(entry.ty, "date" | "dateTime" | "instant") {
                return done(Records::default());
            }
            let Some(text) = current() else { return done(Records::default()) };
            let (year, month, day) = date_parts(&text);
            if day.is_none() || year.is_some_and(|y| over_89(y, month, day, keys.today)) {
                return redact_date(doc, entry, &text, keys, params.partial_dates);
            }
            let days = match keys.fixed_offset {
                Some(n) => n,
                None => {
                    let id = if prefix.is_empty() {
                        doc.get("id").and_then(Json::as_str).unwrap_or("").to_string()
                    } else {
                        prefix.to_string()
                    };
                    match dateshift::offset_days(&id, &keys.date) {
                        // A zero shift would leave real dates in the output;
                        // 51 is outside the anonymizer's range, so no other
                        // prefix's dates are confused with these.
                        0 if !keys.exact_date_shift => 51,
                        n => n,
                    }
                }
            };
            let shifted = if keys.date_shift_to_utc {
                dateshift::shift_in_utc(&text, days)
            } else {
                dateshift::shift(&text, days)
            };
            match shifted {
                Some(shifted) => {
                    set(doc, &entry.loc, Json::String(shifted));
                    done(Records::PERTURB)
                }
                None => redact_date(doc, entry, &text, keys, params.partial_dates),
            }
        }
        Method::CryptoHash => {
            if !entry.primitive {
                return done(Records::default());
            }
            let Some(text) = current() else { return done(Records::default()) };
            let hashed = if entry.name.eq_ignore_ascii_case("reference") && parent_ty == "Reference" {
                crypto::transform_reference(&text, |id| keys.hash.hash(id))
            } else {
                keys.hash.hash(&text)
            };
            set(doc, &entry.loc, Json::String(hashed));
            done(Records::CRYPTOHASH)
        }
        Method::Encrypt => {
            if !entry.primitive {
                return done(Records::default());
            }
            let Some(text) = current() else { return done(Records::default()) };
            set(doc, &entry.loc, Json::String(crypto::encrypt(&keys.encrypt, &text)));
            done(Records::ENCRYPT)
        }
        Method::Substitute { replace_with } => substitute(doc, entry, replace_with, visited),
        Method::Perturb { span, range_type, round_to } => perturb(doc, entry, *span, *range_type, *round_to, visited),
        Method::Generalize { cases, redact_others } => generalize(doc, entry, cases, *redact_others),
    }
}

// ---- redact ----------------------------------------------------------------

fn redact(
    doc: &mut Json,
    entry: &Entry,
    parent_ty: &str,
    text: &str,
    keys: &Keys,
    p: &Parameters,
) -> Result<MethodResult, Failure> {
    if matches!(entry.ty, "date" | "dateTime" | "instant") {
        return redact_date(doc, entry, text, keys, p.partial_dates);
    }
    if entry.ty == "decimal" && parent_ty == "Age" && p.partial_ages {
        // The anonymizer parses the age as a whole number and stops on anything else.
        let age: i64 = text.trim().parse().map_err(|_| {
            Failure::Rule("an Age value that is not a whole number cannot be partially redacted".into())
        })?;
        if age > 89 {
            set(doc, &entry.loc, Json::Null);
        }
        return done(Records::REDACT);
    }
    if entry.name.eq_ignore_ascii_case("postalCode") && p.partial_zip_codes {
        let restricted = p.restricted_zip3.iter().any(|z| text.starts_with(z.as_str()));
        let masked: String = if restricted {
            text.chars().map(|c| if c.is_ascii_digit() { '0' } else { c }).collect()
        } else if text.chars().count() >= 3 {
            text.chars().enumerate().map(|(i, c)| if i >= 3 && c.is_ascii_digit() { '0' } else { c }).collect()
        } else {
            text.to_string()
        };
        set(doc, &entry.loc, Json::String(masked));
        return done(Records::ABSTRACT);
    }
    set(doc, &entry.loc, Json::Null);
    done(Records::REDACT)
}

/// Year, month and day as written, when they parse.
fn date_parts(text: &str) -> (Option<i32>, Option<u32>, Option<u32>) {
    let date = text.split('T').next().unwrap_or(text);
    let mut parts = date.splitn(3, '-');
    let year = parts.next().filter(|y| y.len() == 4).and_then(|y| y.parse().ok());
    let month = parts.next().and_then(|m| m.get(..2)).and_then(|m| m.parse().ok());
    let day = parts.next().and_then(|d| d.get(..2)).and_then(|d| d.parse().ok());
    (year, month, day)
}

/// Whether someone born on this date would be over 89 today (missing parts count as 1).
fn over_89(year: i32, month: Option<u32>, day: Option<u32>, today: (i32, u32, u32)) -> bool {
    let (ty, tm, td) = today;
    let mut age = ty - year;
    if (tm, td) < (month.unwrap_or(1), day.unwrap_or(1)) {
        age -= 1;
    }
    age > 89
}

fn redact_date(doc: &mut Json, entry: &Entry, text: &str, keys: &Keys, partial: bool) -> Result<MethodResult, Failure> {
    let (year, month, day) = date_parts(text);
    match year {
        Some(y) if partial && !over_89(y, month, day, keys.today) => {
            set(doc, &entry.loc, Json::String(format!("{y:04}")))
        }
        _ => set(doc, &entry.loc, Json::Null),
    }
    done(Records::REDACT)
}

// ---- substitute ------------------------------------------------------------

fn has_visited_within(loc: &Location, visited: &HashSet<Location>) -> bool {
    visited.iter().any(|v| v.steps().starts_with(loc.steps()))
}

fn substitute(
    doc: &mut Json,
    entry: &Entry,
    replace_with: &Json,
    visited: &mut HashSet<Location>,
) -> Result<MethodResult, Failure> {
    if entry.primitive {
        let new = match replace_with {
            Json::Null => Json::Null,
            Json::String(s) => Json::String(s.clone()),
            Json::Bool(true) => Json::String("True".into()),
            Json::Bool(false) => Json::String("False".into()),
            Json::Number(n) => Json::String(n.to_string()),
            other => Json::String(serde_json::to_string_pretty(other).unwrap_or_default()),
        };
        set(doc, &entry.loc, new);
        // The primitive's id and extensions go, unless an earlier rule touched them.
        if let Some(c) = companion_of(&entry.loc)
            && c.get(doc).is_some()
            && !has_visited_within(&c, visited)
        {
            set(doc, &c, Json::Null);
        }
        return Ok(MethodResult {
            records: Records::SUBSTITUTE,
            outcome: Outcome::SubtreeDone { restructured: false },
        });
    }
    let replacement = match replace_with {
        Json::Null => Map::new(),
        Json::Object(m) => m.clone(),
        _ => return Err(Failure::Rule(format!("a {} can only be substituted with a JSON object", entry.ty))),
    };
    merge(doc, &entry.loc, &replacement, visited);
    // Everything under the substituted node, new nodes included, is now visited.
    if let Some(idx) = Index::build_subtree(doc, &entry.loc, &Default::default()) {
        visited.extend(idx.entries.into_iter().map(|e| e.loc));
    }
    Ok(MethodResult { records: Records::SUBSTITUTE, outcome: Outcome::SubtreeDone { restructured: true } })
}

/// The anonymizer's `SubstituteNode` (§5.5): positional merge by element
/// name; visited children are kept and consume a replacement slot; children
/// with visited descendants are reduced to those; the rest is replaced or removed.
fn merge(doc: &mut Json, target: &Location, replacement: &Map<String, Json>, visited: &HashSet<Location>) {
    let Some(Json::Object(existing)) = target.get(doc).cloned() else { return };
    for (key, repl) in replacement {
        if key.starts_with('_') {
            continue;
        }
        let repl_items: Vec<&Json> = match repl {
            Json::Array(items) => items.iter().collect(),
            // An empty string in the fragment is no value at all.
            Json::String(s) if s.is_empty() => Vec::new(),
            other => vec![other],
        };
        match existing.get(key) {
            Some(Json::Array(old)) => {
                let mut slot = 0;
                let mut new_items = old.clone();
                for (i, _) in old.iter().enumerate() {
                    let loc = child_loc(target, key, Some(i));
                    if visited.contains(&loc) {
                        slot += 1;
                    } else if let Some(r) = repl_items.get(slot) {
                        slot += 1;
                        new_items[i] = merged_value(doc, &loc, r, visited);
                    } else if has_visited_within(&loc, visited) {
                        new_items[i] = reduce_to_kept(doc, &loc, visited);
                    } else {
                        new_items[i] = Json::Null;
                    }
                }
                new_items.extend(repl_items.iter().skip(slot).map(|r| (*r).clone()));
                write_key(doc, target, key, Json::Array(new_items));
            }
            Some(_) => {
                let loc = child_loc(target, key, None);
                if visited.contains(&loc) {
                    continue;
                }
                let new = match repl_items.first() {
                    Some(r) => merged_value(doc, &loc, r, visited),
                    None if has_visited_within(&loc, visited) => reduce_to_kept(doc, &loc, visited),
                    None => Json::Null,
                };
                write_key(doc, target, key, new);
            }
            None => {
                // New elements are appended at the end of the target.
                let new = match repl {
                    Json::String(s) if s.is_empty() => continue,
                    Json::Object(o) => Json::Object(drop_empty_strings(o)),
                    other => other.clone(),
                };
                write_key(doc, target, key, new);
            }
        }
    }
    for key in existing.keys() {
        if replacement.contains_key(key) || key.starts_with('_') {
            continue;
        }
        let items = match &existing[key] {
            Json::Array(a) => (0..a.len()).map(Some).collect(),
            _ => vec![None],
        };
        for i in items {
            let loc = child_loc(target, key, i);
            if visited.contains(&loc) {
                continue;
            }
            let new = if has_visited_within(&loc, visited) { reduce_to_kept(doc, &loc, visited) } else { Json::Null };
            let _ = loc.replace(doc, new);
        }
    }
}

fn drop_empty_strings(o: &Map<String, Json>) -> Map<String, Json> {
    o.iter()
        .filter(|(_, v)| !matches!(v, Json::String(s) if s.is_empty()))
        .map(|(k, v)| {
            (
                k.clone(),
                match v {
                    Json::Object(inner) => Json::Object(drop_empty_strings(inner)),
                    other => other.clone(),
                },
            )
        })
        .collect()
}

fn write_key(doc: &mut Json, target: &Location, key: &str, value: Json) {
    if let Some(Json::Object(map)) = target.get_mut(doc) {
        map.insert(key.to_string(), value);
    }
}

/// The replacement for one existing child: a primitive takes the new value,
/// an object is merged recursively.
fn merged_value(doc: &mut Json, loc: &Location, repl: &Json, visited: &HashSet<Location>) -> Json {
    match (loc.get(doc), repl) {
        (Some(Json::Object(_)), Json::Object(r)) => {
            merge(doc, loc, &drop_empty_strings(r), visited);
            loc.get(doc).cloned().unwrap_or(Json::Null)
        }
        _ => repl.clone(),
    }
}

/// A node with visited descendants but not itself replaced: only the
/// visited branches survive.
fn reduce_to_kept(doc: &mut Json, loc: &Location, visited: &HashSet<Location>) -> Json {
    merge(doc, loc, &Map::new(), visited);
    match loc.get(doc) {
        Some(Json::Object(o)) => Json::Object(o.clone()),
        _ => Json::Null,
    }
}

// ---- perturb ---------------------------------------------------------------

fn perturb(
    doc: &mut Json,
    entry: &Entry,
    span: f64,
    range_type: RangeType,
    round_to: u32,
    visited: &HashSet<Location>,
) -> Result<MethodResult, Failure> {
    let integer = matches!(entry.ty.to_ascii_lowercase().as_str(), "integer" | "positiveint" | "unsignedint");
    let value_loc = if integer || entry.ty.eq_ignore_ascii_case("decimal") {
        entry.loc.clone()
    } else if matches!(
        entry.ty,
        "Age" | "Count" | "Duration" | "Distance" | "Money" | "MoneyQuantity" | "Quantity" | "SimpleQuantity"
    ) {
        child_loc(&entry.loc, "value", None)
    } else {
        return done(Records::default());
    };
    if value_loc != entry.loc && visited.contains(&value_loc) {
        return done(Records::default());
    }
    let Some(value) = value_loc.get(doc).and_then(dotnet_text).and_then(|t| Decimal::from_str_exact(&t).ok()) else {
        return done(Records::default());
    };
    let round_to = if integer { 0 } else { round_to };
    let width = match range_type {
        // A negative value would make the anonymizer crash (lower > upper);
        // Veil takes the magnitude.
        RangeType::Proportional => value.abs() * Decimal::from_f64(span).unwrap_or_default(),
        RangeType::Fixed => Decimal::from_f64(span).unwrap_or_default(),
    };
    let noise = width * (Decimal::from_f64(uniform()).unwrap_or_default() - Decimal::new(5, 1));
    let mut result = (value + noise).round_dp_with_strategy(round_to, RoundingStrategy::MidpointNearestEven);
    if entry.ty.eq_ignore_ascii_case("positiveInt") && result <= Decimal::ZERO {
        result = Decimal::ONE;
    }
    if entry.ty.eq_ignore_ascii_case("unsignedInt") && result < Decimal::ZERO {
        result = Decimal::ZERO;
    }
    let number: Json = serde_json::from_str(&result.to_string()).unwrap_or(Json::Null);
    set(doc, &value_loc, number);
    Ok(MethodResult { records: Records::PERTURB, outcome: Outcome::SubtreeDone { restructured: false } })
}

/// A uniform draw from [0, 1) from the operating system's random source.
fn uniform() -> f64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

// ---- generalize ------------------------------------------------------------

fn generalize(
    doc: &mut Json,
    entry: &Entry,
    cases: &[(veil_fhirpath::Expression, veil_fhirpath::Expression)],
    redact_others: bool,
) -> Result<MethodResult, Failure> {
    if !entry.primitive {
        return Err(Failure::Rule(format!("generalize applies to primitive values; this node is a {}", entry.ty)));
    }
    if entry.loc.get(doc).is_none_or(Json::is_null) {
        return done(Records::default());
    }
    let result = {
        let node = node_at(doc, &entry.loc).ok_or_else(|| Failure::Processing("node not found".into()))?;
        let ctx = Context::new(doc).with_focus(vec![Item::Node(node)]);
        let mut chosen = None;
        for (cond, value) in cases {
            let hit =
                cond.evaluate_with(&ctx).map_err(|e| Failure::Processing(format!("case condition failed: {e}")))?;
            let matched = match hit.as_slice() {
                [only] => !matches!(only.value(), Some(Value::Boolean(false))),
                _ => true,
            };
            if matched {
                let v =
                    value.evaluate_with(&ctx).map_err(|e| Failure::Processing(format!("case value failed: {e}")))?;
                chosen = Some(match v.as_slice() {
                    [] => Json::Null,
                    [item] => item.to_json(),
                    _ => return Err(Failure::Processing("a case value gave more than one item".into())),
                });
                break;
            }
        }
        chosen
    };
    match result {
        Some(v) => set(doc, &entry.loc, v),
        None if redact_others => set(doc, &entry.loc, Json::Null),
        None => {}
    }
    done(Records::GENERALIZE)
}

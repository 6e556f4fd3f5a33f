//! Re-identification risk of what a de-identified export leaves about each
//! patient, as ARX measures it (Prasser et al.), without a population table.
//!
//! **Quasi-identifiers** are everything left in a `Patient` resource except
//! what cannot link to the outside world: `id`, `meta`, `text`,
//! `identifier` and `link` (pseudonyms and bookkeeping). Each remaining leaf
//! path (`birthDate`, `gender`, `address.state`,
//! `maritalStatus.coding.code`; array positions dropped) is one
//! quasi-identifier; a patient's value for it is the list of values at that
//! path, in document order (none when absent). Patients with equal values on
//! every quasi-identifier form an **equivalence class**; its size is `k`.
//!
//! With `n` patients in `c` classes:
//! - **unique share**: patients in classes of size 1, over `n`;
//! - **prosecutor risk** (the attacker knows the patient is in the data):
//!   highest `1 / min k`; average `c / n`; records at risk: the share of
//!   patients whose `1 / k` exceeds the threshold (0.2 unless set);
//! - **journalist risk** equals prosecutor risk here: without a population
//!   table the data set is its own population (ARX does the same);
//! - **marketer risk** (re-identify as many as possible): `c / n`.
//!
//! **Longitudinal risk**: per patient, the number of resources that name
//! the patient (`subject`, `patient` or `beneficiary`, whose reference ends
//! in the patient's id after `/` or `:`), and the sequence of
//! day intervals between those resources' dates (the first of
//! [`EVENT_DATE_KEYS`] present; a year stands for 1 January, a month for its
//! first day). The share of patients whose count, and whose interval
//! sequence, no other patient has.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// Top-level `Patient` elements that are not quasi-identifiers.
pub const NOT_QUASI_IDENTIFIERS: [&str; 6] = ["resourceType", "id", "meta", "text", "identifier", "link"];

/// Where a resource's date is read from, first present wins (`a.b` is a
/// nested element).
pub const EVENT_DATE_KEYS: [&str; 14] = [
    "effectiveDateTime",
    "effectivePeriod.start",
    "effectiveInstant",
    "period.start",
    "occurrenceDateTime",
    "occurrencePeriod.start",
    "performedDateTime",
    "performedPeriod.start",
    "onsetDateTime",
    "recordedDate",
    "authoredOn",
    "issued",
    "date",
    "created",
];

/// What a resource tells the risk report.
pub(crate) enum Seen {
    Patient { id: String, quasi: BTreeMap<String, Vec<String>> },
    Event { patient: String, day: Option<i64> },
}

/// The patient facts in one resource, if any.
pub(crate) fn observe(doc: &Json) -> Option<Seen> {
    let map = doc.as_object()?;
    match map.get("resourceType").and_then(Json::as_str)? {
        "Patient" => {
            let mut quasi = BTreeMap::new();
            for (key, value) in map.iter().filter(|(k, _)| !NOT_QUASI_IDENTIFIERS.contains(&k.as_str())) {
                let key = veil_fhir::r4().json_key(key).unwrap_or("(unknown)");
                leaves(value, key, &mut quasi);
            }
            Some(Seen::Patient { id: map.get("id").and_then(Json::as_str).unwrap_or("").to_string(), quasi })
        }
        _ => {
            let reference = ["subject", "patient", "beneficiary"]
                .iter()
                .find_map(|k| map.get(*k).and_then(|r| r.get("reference")).and_then(Json::as_str))?;
            // `Patient/ID` on a server, `urn:uuid:ID` in a transaction bundle.
            let patient = reference.rsplit(['/', ':']).next()?.to_string();
            let day = EVENT_DATE_KEYS.iter().find_map(|k| {
                let mut v = doc;
                for step in k.split('.') {
                    v = v.get(step)?;
                }
                v.as_str().and_then(day_number)
            });
            Some(Seen::Event { patient, day })
        }
    }
}

fn leaves(value: &Json, path: &str, out: &mut BTreeMap<String, Vec<String>>) {
    match value {
        Json::Array(items) => items.iter().for_each(|v| leaves(v, path, out)),
        Json::Object(map) => {
            for (k, v) in map {
                // A key R4 does not define could be data: it is not repeated.
                let k = veil_fhir::r4().json_key(k).unwrap_or("(unknown)");
                leaves(v, &format!("{path}.{k}"), out);
            }
        }
        Json::Null => {}
        Json::String(s) => out.entry(path.to_string()).or_default().push(s.clone()),
        other => out.entry(path.to_string()).or_default().push(other.to_string()),
    }
}

/// `YYYY`, `YYYY-MM` or `YYYY-MM-DD…` as a day number.
fn day_number(text: &str) -> Option<i64> {
    let year: i32 = text.get(..4)?.parse().ok()?;
    let month: u32 = text.get(5..7).map_or(Some(1), |m| m.parse().ok())?;
    let day: u32 = text.get(8..10).map_or(Some(1), |d| d.parse().ok())?;
    Some(veil_util::calendar::days_from_civil(year, month, day))
}

/// What the risk report gathers while the scan runs.
#[derive(Default)]
pub(crate) struct Gathered {
    patients: Vec<(String, BTreeMap<String, Vec<String>>)>,
    events: HashMap<String, Vec<Option<i64>>>,
}

impl Gathered {
    pub(crate) fn add(&mut self, seen: Seen) {
        match seen {
            Seen::Patient { id, quasi } => self.patients.push((id, quasi)),
            Seen::Event { patient, day } => self.events.entry(patient).or_default().push(day),
        }
    }

    pub(crate) fn finish(self, threshold: f64) -> Risk {
        let n = self.patients.len() as u64;
        let paths: Vec<String> = {
            let mut all: Vec<String> = self.patients.iter().flat_map(|(_, q)| q.keys().cloned()).collect();
            all.sort();
            all.dedup();
            all
        };
        let empty = Vec::new();
        let rows: Vec<Vec<&Vec<String>>> =
            self.patients.iter().map(|(_, q)| paths.iter().map(|p| q.get(p).unwrap_or(&empty)).collect()).collect();
        let sizes = class_sizes(rows.iter());
        let quasi_identifiers = paths
            .iter()
            .enumerate()
            .map(|(i, path)| {
                let alone = class_sizes(rows.iter().map(|r| vec![r[i]]));
                QuasiIdentifier { path: path.clone(), distinct: alone.len() as u64, unique_alone: uniques(&alone) }
            })
            .collect();
        let mut pairs = Vec::new();
        for a in 0..paths.len() {
            for b in a + 1..paths.len() {
                let both = class_sizes(rows.iter().map(|r| vec![r[a], r[b]]));
                pairs.push(Pair { paths: [paths[a].clone(), paths[b].clone()], unique: uniques(&both) });
            }
        }
        pairs.sort_by(|x, y| y.unique.cmp(&x.unique).then_with(|| x.paths.cmp(&y.paths)));
        pairs.truncate(10);

        let classes = sizes.len() as u64;
        let min_k = sizes.iter().copied().min().unwrap_or(0);
        let mut k_histogram: BTreeMap<u64, u64> = BTreeMap::new();
        for &k in &sizes {
            *k_histogram.entry(k).or_default() += 1;
        }
        let records_at_risk: u64 = sizes.iter().filter(|&&k| 1.0 / k as f64 > threshold).sum();
        let records_at_highest: u64 = sizes.iter().filter(|&&k| k == min_k).sum();
        let attacker = Attacker {
            highest: if min_k == 0 { 0.0 } else { 1.0 / min_k as f64 },
            records_at_highest,
            average: ratio(classes, n),
            records_at_risk,
        };

        // Longitudinal: every patient, those without events included.
        let mut counts = Vec::with_capacity(self.patients.len());
        let mut sequences = Vec::with_capacity(self.patients.len());
        for (id, _) in &self.patients {
            let events = self.events.get(id).map_or(&[][..], Vec::as_slice);
            counts.push(events.len());
            let mut days: Vec<i64> = events.iter().flatten().copied().collect();
            days.sort_unstable();
            sequences.push(days.windows(2).map(|w| w[1] - w[0]).collect::<Vec<i64>>());
        }
        let longitudinal = Longitudinal {
            events: counts.iter().sum::<usize>() as u64,
            unique_event_counts: uniques(&class_sizes(counts.iter().map(|c| vec![c]))),
            unique_interval_sequences: uniques(&class_sizes(sequences.iter().map(|s| vec![s]))),
        };
        Risk {
            patients: n,
            quasi_identifiers,
            classes,
            min_k,
            k_histogram,
            unique: uniques(&sizes),
            threshold,
            prosecutor: attacker.clone(),
            journalist: attacker,
            marketer: ratio(classes, n),
            riskiest_pairs: pairs,
            longitudinal,
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// The sizes of the classes of equal rows.
fn class_sizes<T: std::hash::Hash + Eq>(rows: impl Iterator<Item = T>) -> Vec<u64> {
    let mut classes: HashMap<T, u64> = HashMap::default();
    for row in rows {
        *classes.entry(row).or_default() += 1;
    }
    let mut sizes: Vec<u64> = classes.into_values().collect();
    sizes.sort_unstable();
    sizes
}

fn uniques(sizes: &[u64]) -> u64 {
    sizes.iter().filter(|&&k| k == 1).count() as u64
}

/// The risk report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Risk {
    /// Patients (`Patient` resources) in the output.
    pub patients: u64,
    /// Every quasi-identifier found, with its number of distinct values and
    /// the patients it alone makes unique.
    pub quasi_identifiers: Vec<QuasiIdentifier>,
    /// Equivalence classes over all quasi-identifiers.
    pub classes: u64,
    /// The smallest class (0 when there are no patients).
    pub min_k: u64,
    /// Class size → number of classes of that size.
    pub k_histogram: BTreeMap<u64, u64>,
    /// Patients in a class of their own.
    pub unique: u64,
    /// The risk above which a record counts as at risk.
    pub threshold: f64,
    /// The prosecutor model.
    pub prosecutor: Attacker,
    /// The journalist model (equal to prosecutor without a population table).
    pub journalist: Attacker,
    /// The marketer model's average risk, `classes / patients`.
    pub marketer: f64,
    /// The pairs of quasi-identifiers that alone make the most patients unique.
    pub riskiest_pairs: Vec<Pair>,
    /// Risk from the shape of each patient's record over time.
    pub longitudinal: Longitudinal,
}

impl Risk {
    /// The share of patients who are unique.
    pub fn unique_share(&self) -> f64 {
        ratio(self.unique, self.patients)
    }
}

/// One quasi-identifier.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QuasiIdentifier {
    /// Its path below `Patient` (`address.state`).
    pub path: String,
    /// How many different values it takes.
    pub distinct: u64,
    /// Patients unique on it alone.
    pub unique_alone: u64,
}

/// Two quasi-identifiers together.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Pair {
    /// Their paths.
    pub paths: [String; 2],
    /// Patients unique on the pair alone.
    pub unique: u64,
}

/// One attacker model's figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Attacker {
    /// The highest risk of any record: `1 / min k`.
    pub highest: f64,
    /// Records that carry the highest risk.
    pub records_at_highest: u64,
    /// The average risk (expected share re-identified): `classes / patients`.
    pub average: f64,
    /// Records whose risk `1 / k` exceeds the threshold.
    pub records_at_risk: u64,
}

/// Longitudinal figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Longitudinal {
    /// Resources that name one of the patients.
    pub events: u64,
    /// Patients whose number of such resources no other patient has.
    pub unique_event_counts: u64,
    /// Patients whose sequence of day intervals no other patient has.
    pub unique_interval_sequences: u64,
}

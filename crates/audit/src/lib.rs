//! Evidence of what a de-identified FHIR export is.
//!
//! A policy says what it means to remove; this crate reads what was
//! written and says what is left. It has two parts:
//!
//! - the **scan** ([`Category`]): every value of every resource, read with
//!   its FHIR R4 type, counted by HIPAA Safe Harbor category and element
//!   path (never the value): dates finer than a year, geography below the
//!   state, names, telecom, identifier values that are not keyed
//!   pseudonyms, URLs, IP addresses, UIDs, binary data, free text, time-zone
//!   offsets, and, given the original data, every original string or date
//!   that reappears unchanged;
//! - the **risk report** ([`Risk`]): equivalence classes over the
//!   quasi-identifiers left in `Patient`, prosecutor, journalist and
//!   marketer risk as ARX defines them, and longitudinal uniqueness.
//!
//! A [`Standard`] decides which categories must be empty; limits on the
//! unique share and on `k` are the user's. [`audit_dir`] runs both over a
//! folder of NDJSON on every core; [`Evidence::write_beside`] leaves
//! `veil-risk.json`, `veil-risk.txt` and `veil-risk.html` in it, which
//! `veil deid`, `veil export --deid` and `veil serve`'s `$export` do for
//! every de-identified folder, and `veil share create` reads.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod html;
mod risk;
mod scan;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use rustc_hash::FxHashSet as HashSet;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

pub use risk::{Attacker, EVENT_DATE_KEYS, Longitudinal, NOT_QUASI_IDENTIFIERS, Pair, QuasiIdentifier, Risk};
pub use scan::{Category, Findings, is_pseudonym};

/// The evidence files' names, beside the manifest.
pub const EVIDENCE_JSON: &str = "veil-risk.json";
/// The human summary.
pub const EVIDENCE_TEXT: &str = "veil-risk.txt";
/// The page for a privacy officer.
pub const EVIDENCE_HTML: &str = "veil-risk.html";

/// The HIPAA path an output claims to meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Standard {
    /// §164.514(b)(2): none of the 18 identifiers, dates to the year, ZIP3.
    SafeHarbor,
    /// §164.514(e): the 16 direct identifiers removed; dates, city, state
    /// and ZIP may stay, under a data use agreement.
    LimitedDataSet,
    /// §164.514(b)(1): an expert's determination; direct identifiers and
    /// free text removed, ZIP3, dates may be shifted but carry no time
    /// zone; complete only with the risk report and its limits.
    Expert,
}

impl Standard {
    /// Every standard, by name.
    pub const ALL: [Standard; 3] = [Standard::SafeHarbor, Standard::LimitedDataSet, Standard::Expert];

    /// Its name: `safe-harbor`, `limited-data-set`, `expert`.
    pub fn name(self) -> &'static str {
        match self {
            Standard::SafeHarbor => "safe-harbor",
            Standard::LimitedDataSet => "limited-data-set",
            Standard::Expert => "expert",
        }
    }

    /// The standard named `name`.
    pub fn parse(name: &str) -> Option<Standard> {
        Standard::ALL.into_iter().find(|s| s.name().eq_ignore_ascii_case(name))
    }

    /// The standard a built-in policy is made for; any other policy is held
    /// to Safe Harbor, the one that needs no expert or agreement.
    pub fn of_policy(policy: &str) -> Standard {
        match policy {
            "limited-data-set" => Standard::LimitedDataSet,
            "expert-shift" => Standard::Expert,
            _ => Standard::SafeHarbor,
        }
    }

    /// Whether any finding of `category` means the output does not meet
    /// this standard.
    pub fn forbids(self, category: Category) -> bool {
        use Category::*;
        match self {
            Standard::SafeHarbor => true,
            // Dates, city, county and ZIP are what a limited data set keeps;
            // (R) is not among its 16 identifiers; its values are the real ones.
            Standard::LimitedDataSet => {
                !matches!(category, Dates | SmallGeography | OtherIdentifiers | TimeZoneOffsets | OriginalValues)
            }
            // Shifted dates are the point; their zone must not tell the shift.
            Standard::Expert => !matches!(category, Dates),
        }
    }

    /// What meeting it means, in a sentence.
    pub fn describe(self) -> &'static str {
        match self {
            Standard::SafeHarbor => {
                "HIPAA Safe Harbor (45 CFR 164.514(b)(2)): none of the 18 identifiers, dates to the year, ZIP3."
            }
            Standard::LimitedDataSet => {
                "HIPAA limited data set (45 CFR 164.514(e)): direct identifiers removed; dates, city and ZIP kept. \
                 It may be shared only under a data use agreement."
            }
            Standard::Expert => {
                "HIPAA Expert Determination (45 CFR 164.514(b)(1)): direct identifiers and free text removed, ZIP3, \
                 dates shifted in UTC. Valid only with an expert's review of the risk figures below."
            }
        }
    }
}

/// How to audit.
#[derive(Debug, Clone)]
pub struct Options {
    /// The standard the output must meet.
    pub standard: Standard,
    /// The data before de-identification, to find original values in the output.
    pub original: Option<PathBuf>,
    /// The most patients that may be unique, as a share (0.05 = 5 %).
    pub max_unique: Option<f64>,
    /// The smallest equivalence class allowed.
    pub min_k: Option<u64>,
    /// The risk `1 / k` above which a record counts as at risk.
    pub threshold: f64,
    /// The year against which "over 89" is judged (this year unless a test
    /// fixes it).
    pub this_year: i32,
}

impl Options {
    /// Options for `standard`, with the 0.2 threshold, and no limits on
    /// risk but for Expert Determination: there at most 5 % of patients may
    /// be unique (a starting point; the expert sets the limits).
    pub fn new(standard: Standard) -> Options {
        Options {
            standard,
            original: None,
            max_unique: (standard == Standard::Expert).then_some(0.05),
            min_k: None,
            threshold: 0.2,
            this_year: veil_util::clock::today().0,
        }
    }
}

/// Why an audit could not run. Messages name files, never content.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: io::Error,
    },
}

/// One category's findings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CategoryReport {
    /// Its name (`dates`).
    pub category: Category,
    /// The letter of §164.514(b)(2)(i), or `-`.
    pub hipaa: String,
    /// Whether the standard forbids it.
    pub forbidden: bool,
    /// Values found.
    pub values: u64,
    /// Values found, by element path.
    pub paths: BTreeMap<String, u64>,
}

/// What an audit found: the evidence written beside an export.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Evidence {
    /// `veil-risk/1`.
    pub format: String,
    /// When it was made.
    pub created: String,
    /// The standard claimed.
    pub standard: Standard,
    /// Whether the output meets it, and the limits set.
    pub passes: bool,
    /// Why it does not, one line each.
    pub failures: Vec<String>,
    /// Resources read.
    pub resources: u64,
    /// Lines that were not JSON resources (an output that cannot be read
    /// cannot be shown to be de-identified).
    pub unreadable: u64,
    /// Whether original data was compared.
    pub compared_with_original: bool,
    /// The limits applied to the risk figures.
    pub max_unique: Option<f64>,
    /// The smallest class allowed.
    pub min_k: Option<u64>,
    /// Every category, in report order.
    pub categories: Vec<CategoryReport>,
    /// Re-identification risk.
    pub risk: Risk,
}

/// Audits every `*.ndjson` and `*.json` file below `dir` (Veil's own
/// `veil-*` files aside).
pub fn audit_dir(dir: &Path, options: &Options) -> Result<Evidence, AuditError> {
    audit_files(&data_files(dir)?, options)
}

/// Audits these NDJSON (`.ndjson`) and single-resource (`.json`) files.
pub fn audit_files(files: &[PathBuf], options: &Options) -> Result<Evidence, AuditError> {
    let auditor = Auditor::new(options.clone())?;
    let mut tally = Tally::default();
    for_each_resource(files, |doc| auditor.see(doc), |seen| tally.add(seen))?;
    Ok(auditor.finish(tally))
}

/// An audit as it runs, for a caller that has the resources in hand (`veil
/// deid` as it writes them): [`Auditor::see`] on any thread, what it made
/// of each resource added to a [`Tally`] in order, [`Auditor::finish`] at
/// the end.
pub struct Auditor {
    options: Options,
    originals: Option<HashSet<u64>>,
}

/// What an audit has counted so far.
#[derive(Default)]
pub struct Tally {
    findings: Findings,
    gathered: risk::Gathered,
    resources: u64,
    unreadable: u64,
}

/// What the audit made of one resource; the default stands for a line that
/// was not a JSON resource.
#[derive(Default)]
pub struct Seen(Option<(Findings, Option<risk::Seen>)>);

impl Auditor {
    /// An audit with these options (reading the original data first, if given).
    pub fn new(options: Options) -> Result<Auditor, AuditError> {
        let originals = match &options.original {
            Some(dir) => Some(original_values(dir)?),
            None => None,
        };
        Ok(Auditor { options, originals })
    }

    /// Scans one resource.
    pub fn see(&self, doc: &Json) -> Seen {
        let cx = scan::Context {
            originals: self.originals.as_ref(),
            compare_dates: self.options.standard != Standard::Expert,
            this_year: self.options.this_year,
        };
        let mut found = Findings::new();
        scan::scan_resource(doc, &cx, &mut found);
        Seen(Some((found, risk::observe(doc))))
    }

    /// The evidence, from everything counted.
    pub fn finish(&self, tally: Tally) -> Evidence {
        let risk = tally.gathered.finish(self.options.threshold);
        Evidence::judge(&self.options, tally.findings, risk, tally.resources, tally.unreadable)
    }
}

impl Tally {
    /// Counts what [`Auditor::see`] made of one resource.
    pub fn add(&mut self, seen: Seen) {
        let Some((found, observed)) = seen.0 else {
            self.unreadable += 1;
            return;
        };
        self.resources += 1;
        for (category, paths) in found {
            let into = self.findings.entry(category).or_default();
            for (path, n) in paths {
                *into.entry(path).or_default() += n;
            }
        }
        if let Some(o) = observed {
            self.gathered.add(o);
        }
    }
}

impl Evidence {
    fn judge(options: &Options, mut findings: Findings, risk: Risk, resources: u64, unreadable: u64) -> Evidence {
        let standard = options.standard;
        let categories: Vec<CategoryReport> = Category::ALL
            .into_iter()
            .map(|category| {
                let paths = findings.remove(&category).unwrap_or_default();
                CategoryReport {
                    category,
                    hipaa: category.hipaa().into(),
                    forbidden: standard.forbids(category),
                    values: paths.values().sum(),
                    paths,
                }
            })
            .collect();
        let mut failures: Vec<String> = categories
            .iter()
            .filter(|c| c.forbidden && c.values > 0)
            .map(|c| format!("{}: {} values in {} elements", c.category.name(), c.values, c.paths.len()))
            .collect();
        if unreadable > 0 {
            failures.push(format!("{unreadable} lines are not JSON resources and could not be checked"));
        }
        if let Some(max) = options.max_unique
            && risk.unique_share() > max
        {
            failures.push(format!(
                "unique patients: {} of {} ({:.1} %), above the limit of {:.1} %",
                risk.unique,
                risk.patients,
                100.0 * risk.unique_share(),
                100.0 * max
            ));
        }
        if let Some(min) = options.min_k
            && risk.patients > 0
            && risk.min_k < min
        {
            failures.push(format!("smallest equivalence class: k = {}, below the limit of {min}", risk.min_k));
        }
        Evidence {
            format: "veil-risk/1".into(),
            created: veil_util::clock::now_iso(),
            standard,
            passes: failures.is_empty(),
            failures,
            resources,
            unreadable,
            compared_with_original: options.original.is_some(),
            max_unique: options.max_unique,
            min_k: options.min_k,
            categories,
            risk,
        }
    }

    /// The evidence in `veil-risk.json` below `dir`, if there is one that reads.
    pub fn read_beside(dir: &Path) -> Option<Evidence> {
        serde_json::from_slice(&std::fs::read(dir.join(EVIDENCE_JSON)).ok()?).ok()
    }

    /// The evidence as pretty JSON.
    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("evidence serialises");
        bytes.push(b'\n');
        bytes
    }

    /// Writes `veil-risk.json`, `veil-risk.txt` and `veil-risk.html` into
    /// `dir`, each whole or not at all.
    pub fn write_beside(&self, dir: &Path) -> io::Result<()> {
        veil_util::atomic::write(&dir.join(EVIDENCE_JSON), &self.to_json())?;
        veil_util::atomic::write(&dir.join(EVIDENCE_TEXT), self.summary().as_bytes())?;
        veil_util::atomic::write(&dir.join(EVIDENCE_HTML), self.html().as_bytes())
    }

    /// The page for a privacy officer: one self-contained HTML file.
    pub fn html(&self) -> String {
        html::render(self)
    }

    /// A short human summary: the verdict, what failed, the risk figures.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let verdict = if self.passes { "MEETS" } else { "DOES NOT MEET" };
        let _ = writeln!(s, "Output {verdict} {} ({} resources read).", self.standard.name(), self.resources);
        let _ = writeln!(s, "  {}", self.standard.describe());
        for f in &self.failures {
            let _ = writeln!(s, "  FAIL {f}");
        }
        for c in self.categories.iter().filter(|c| !c.forbidden && c.values > 0) {
            let _ = writeln!(s, "  allowed by the standard: {} ({} values)", c.category.name(), c.values);
        }
        if !self.compared_with_original {
            let _ = writeln!(s, "  Original data was not compared (veil audit --original DIR does).");
        }
        let r = &self.risk;
        let _ = writeln!(
            s,
            "Risk over {} patients and {} quasi-identifiers: {} classes, smallest k = {}, {} unique ({:.1} %).",
            r.patients,
            r.quasi_identifiers.len(),
            r.classes,
            r.min_k,
            r.unique,
            100.0 * r.unique_share()
        );
        let _ = writeln!(
            s,
            "  Prosecutor (= journalist): highest {:.3}, average {:.3}, {} records above {:.2}. Marketer: {:.3}.",
            r.prosecutor.highest, r.prosecutor.average, r.prosecutor.records_at_risk, r.threshold, r.marketer
        );
        let _ = writeln!(
            s,
            "  Longitudinal: {} events; {} patients unique by event count, {} by their intervals.",
            r.longitudinal.events, r.longitudinal.unique_event_counts, r.longitudinal.unique_interval_sequences
        );
        s
    }
}

/// The data files below `dir`, sorted; Veil's own `veil-*` files aside.
fn data_files(dir: &Path) -> Result<Vec<PathBuf>, AuditError> {
    let io_err = |source| AuditError::Io { path: dir.display().to_string(), source };
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(io_err)? {
            let path = entry.map_err(io_err)?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                stack.push(path);
            } else if !name.starts_with("veil-") && (name.ends_with(".ndjson") || name.ends_with(".json")) {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Runs `map` on every resource of every file on every core, and hands the
/// results to `each` in order; `T::default()` for a line that is not a JSON
/// object.
fn for_each_resource<T: Send + Default>(
    files: &[PathBuf],
    map: impl Fn(&Json) -> T + Sync,
    mut each: impl FnMut(T),
) -> Result<(), AuditError> {
    for path in files {
        let io_err = |source| AuditError::Io { path: path.display().to_string(), source };
        let file = File::open(path).map_err(io_err)?;
        let parse = |line: &str| serde_json::from_str::<Json>(line).ok().filter(Json::is_object);
        if path.extension().is_some_and(|e| e == "ndjson") {
            veil_deid::map_lines_in_parallel(
                BufReader::new(file),
                |line| match line {
                    Ok(l) if l.trim().is_empty() => None,
                    Ok(l) => Some(parse(l).map(|doc| map(&doc)).unwrap_or_default()),
                    Err(_) => Some(T::default()),
                },
                |_, result| {
                    if let Some(r) = result {
                        each(r);
                    }
                    Ok::<(), io::Error>(())
                },
            )
            .map_err(io_err)?;
        } else {
            let mut text = String::new();
            BufReader::new(file).read_to_string(&mut text).map_err(io_err)?;
            each(parse(&text).map(|doc| map(&doc)).unwrap_or_default());
        }
    }
    Ok(())
}

/// Fingerprints of the original strings and dates below `dir`.
fn original_values(dir: &Path) -> Result<HashSet<u64>, AuditError> {
    let mut set = HashSet::default();
    for_each_resource(
        &data_files(dir)?,
        |doc| {
            let mut values = Vec::new();
            scan::original_values(doc, &mut values);
            values
        },
        |values| set.extend(values),
    )?;
    Ok(set)
}

//! `veil demo`: the path built so far, run on the bundled Synthea sample.
//! Each issue that lands extends this command, so that one command always
//! shows the whole pipeline on the embedded defaults.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::Value as Json;
use veil_fhirpath::Expression;

use crate::input::{for_each_json_in_tar_gz, resources};

/// Run Veil on the bundled sample: 100 synthetic patients (Synthea).
///
/// Today this loads every resource and evaluates the FHIRPath expressions
/// that de-identification rules and study views are made of, printing what
/// each one selects (counts and the location of the first match, never a
/// value).
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The sample archive (a .tar.gz of FHIR JSON files).
    #[arg(long, value_name = "PATH", default_value = "data/synthea-r4-100.tar.gz", env = "VEIL_DEMO_DATA")]
    data: PathBuf,
}

/// What the demo evaluates: the shapes of real anonymizer rules and views.
const EXPRESSIONS: &[(&str, &str)] = &[
    ("nodesByType('HumanName')", "names a Safe Harbor policy redacts"),
    ("Patient.address.where(postalCode.exists())", "addresses with a zip code"),
    ("Patient.telecom | Patient.identifier", "phone numbers and identifiers"),
    ("nodesByType('date') | nodesByType('dateTime')", "dates a policy shifts"),
    ("Observation.value.ofType(Quantity).value", "measured values (views)"),
    ("descendants().ofType(Reference)", "references between resources"),
    ("Condition.onset.ofType(dateTime)", "condition onsets"),
];

pub(crate) fn run(args: Args) -> Result<ExitCode> {
    if !args.data.exists() {
        bail!(
            "{} not found: run from the repository root, or pass --data PATH (or VEIL_DEMO_DATA)",
            args.data.display()
        );
    }
    let compiled: Vec<(Expression, &str)> = EXPRESSIONS
        .iter()
        .map(|(src, what)| Ok((Expression::compile(src)?, *what)))
        .collect::<Result<_>>()?;

    eprintln!("veil demo: reading {}", args.data.display());
    let started = Instant::now();
    let mut all: Vec<Json> = Vec::new();
    let mut files = 0;
    for_each_json_in_tar_gz(&args.data, |_, doc| {
        files += 1;
        all.extend(resources(doc));
        Ok(())
    })?;
    let read_time = started.elapsed();

    let mut by_type: BTreeMap<String, usize> = BTreeMap::new();
    for r in &all {
        let t = r.get("resourceType").and_then(Json::as_str).unwrap_or("(none)");
        *by_type.entry(t.to_string()).or_default() += 1;
    }
    println!("Loaded {} resources from {files} files in {}", all.len(), ms(read_time));
    let mut top: Vec<_> = by_type.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1));
    let top: Vec<String> = top.iter().take(6).map(|(t, n)| format!("{t} {n}")).collect();
    println!("  {}", top.join(", "));
    println!();
    println!("{:<46} {:>9} {:>9} {:>8}  first match", "FHIRPath", "resources", "nodes", "time");
    let mut errors = 0;
    for (expr, what) in &compiled {
        let t = Instant::now();
        let (mut hit_resources, mut nodes) = (0, 0);
        let mut first: Option<String> = None;
        for r in &all {
            match expr.evaluate(r) {
                Ok(items) if !items.is_empty() => {
                    hit_resources += 1;
                    nodes += items.len();
                    if first.is_none()
                        && let Some(n) = items[0].as_node() {
                            let root = r.get("resourceType").and_then(Json::as_str).unwrap_or("");
                            first = Some(format!("{root}.{}", n.location()));
                        }
                }
                Ok(_) => {}
                Err(_) => errors += 1,
            }
        }
        println!(
            "{:<46} {:>9} {:>9} {:>8}  {}",
            expr.source(),
            hit_resources,
            nodes,
            ms(t.elapsed()),
            first.unwrap_or_else(|| "-".into())
        );
        println!("  ({what})");
    }
    if errors > 0 {
        eprintln!("veil demo: {errors} evaluation(s) failed");
        return Ok(ExitCode::FAILURE);
    }
    println!();
    println!("Next on the path: de-identification with a Safe Harbor policy (veil deid), then the FHIR server's $export.");
    Ok(ExitCode::SUCCESS)
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

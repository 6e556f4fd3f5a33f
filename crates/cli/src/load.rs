//! `veil load`: put FHIR resources into Veil's store.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, Result};
use veil_server::{LoadReport, load_document, load_ndjson};

use crate::UsageError;

/// Load FHIR resources into the store that `veil serve` answers from.
///
/// Accepts transaction and batch Bundles (references between entries are
/// rewritten from their urn:uuid fullUrls to Type/id), single resources,
/// NDJSON (one resource per line) and .tar.gz archives of JSON files, such
/// as the bundled Synthea sample:
///
///   veil load data/synthea-r4-100.tar.gz
///   veil load --db postgres://veil@db/veil Patient.ndjson Observation.ndjson
///
/// A resource written again with another body becomes its next version;
/// written again as it is, it stays as it was. The summary counts each
/// kind: created, updated (a new version), unchanged (a resource repeated
/// in the input, such as Synthea's organizations, or loaded before).
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// The store: sqlite:PATH (created if missing) or postgres://….
    #[arg(long, value_name = "URL", default_value = "sqlite:veil.db", env = "VEIL_DB")]
    db: String,
    /// Files to load (.json, .ndjson, .tar.gz).
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
}

pub(crate) fn run(args: Args) -> Result<ExitCode> {
    let store = veil_store::open(&args.db)
        .map_err(|e| UsageError(format!("cannot open the store {}: {e}", veil_store::printable_url(&args.db))))?;
    let started = Instant::now();
    let mut total = LoadReport::default();
    for path in &args.files {
        let name = path.display().to_string();
        let report = if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            let mut all = LoadReport::default();
            crate::input::for_each_json_in_tar_gz(path, |member, doc| {
                all.add(&load_document(&*store, doc, &format!("{name}:{member}"))?);
                Ok(())
            })?;
            all
        } else if name.ends_with(".ndjson") {
            let file = File::open(path).with_context(|| format!("cannot open {name}"))?;
            load_ndjson(&*store, BufReader::new(file), &name, 1000)?
        } else {
            let mut text = String::new();
            File::open(path)
                .and_then(|mut f| f.read_to_string(&mut text))
                .with_context(|| format!("cannot read {name}"))?;
            let doc = serde_json::from_str(text.trim_start_matches('\u{feff}'))
                .map_err(|e| anyhow::anyhow!("{name}:{}:{}: not valid JSON", e.line(), e.column()))?;
            load_document(&*store, doc, &name)?
        };
        total.add(&report);
    }
    let sum = |counts: &std::collections::BTreeMap<String, u64>| counts.values().sum::<u64>();
    eprintln!(
        "veil load: {} resources created, {} updated, {} unchanged in {} in {:.1} s",
        sum(&total.created),
        sum(&total.updated),
        sum(&total.unchanged),
        veil_store::printable_url(&args.db),
        started.elapsed().as_secs_f64()
    );
    if !total.deleted.is_empty() {
        eprintln!("  deleted: {}", sum(&total.deleted));
    }
    for (what, counts) in [("created", &total.created), ("updated", &total.updated), ("unchanged", &total.unchanged)] {
        if !counts.is_empty() {
            let kinds: Vec<String> = counts.iter().map(|(t, c)| format!("{t} {c}")).collect();
            eprintln!("  {what}: {}", kinds.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}

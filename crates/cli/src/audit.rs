//! `veil audit`: what a de-identified folder still holds, and how unique
//! its patients are.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use veil_audit::{Options, Standard, audit_dir};

use crate::UsageError;

/// Check de-identified FHIR NDJSON against a HIPAA standard, and measure
/// its re-identification risk.
///
///   veil audit out/                              Safe Harbor, summary on stdout
///   veil audit out/ --original in/               also find original values that survived
///   veil audit out/ --standard expert --max-unique 0.05 --min-k 5
///   veil audit out/ --json audit.json --html audit.html
///
/// Every value of every resource is read with its FHIR type and counted,
/// by HIPAA Safe Harbor category (A–R) and element path, when it still
/// looks identifying: a date finer than the year, geography below the
/// state, a name, phone, fax or email, an identifier value that is not a
/// keyed pseudonym, a device or lot number, a URL, an IP address, a UID,
/// binary data, free text, a time-zone offset other than UTC. With
/// `--original`, every original string or date that reappears unchanged is
/// counted too. Nothing printed or written holds a value from the data.
///
/// The risk report groups patients by the quasi-identifiers left in
/// Patient (birth date, sex, state, ZIP3, marital status, language, …) and
/// gives the size of each group (k), the share of unique patients and the
/// prosecutor, journalist and marketer risk as ARX defines them, plus how
/// many patients are unique by their number of events and by the intervals
/// between them (docs/deid.md, "Evidence", gives every definition).
///
/// Exit status: 0 when the output meets the standard and the limits set,
/// 1 when it does not, 2 for bad arguments.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// The folder of de-identified *.ndjson (or *.json) files.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// The same data before de-identification.
    #[arg(long, value_name = "DIR")]
    original: Option<PathBuf>,
    /// The standard to meet: safe-harbor, limited-data-set or expert.
    #[arg(long, default_value = "safe-harbor", value_parser = parse_standard)]
    standard: Standard,
    /// Fail when more than this share of patients is unique (0.05 = 5 %;
    /// the default with --standard expert, none otherwise).
    #[arg(long, value_name = "SHARE")]
    max_unique: Option<f64>,
    /// Fail when any group of patients alike is smaller than this.
    #[arg(long, value_name = "K")]
    min_k: Option<u64>,
    /// Write the whole evidence as JSON to this file (as veil-risk.json).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the evidence as one self-contained HTML page to this file.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

pub(crate) fn parse_standard(name: &str) -> Result<Standard, String> {
    Standard::parse(name).ok_or_else(|| "expected safe-harbor, limited-data-set or expert".into())
}

pub(crate) fn run(args: Args) -> Result<ExitCode> {
    if !args.dir.is_dir() {
        return Err(UsageError(format!("{}: not a folder", args.dir.display())).into());
    }
    if let Some(share) = args.max_unique
        && !(0.0..=1.0).contains(&share)
    {
        return Err(UsageError("--max-unique is a share between 0 and 1 (0.05 = 5 %)".into()).into());
    }
    let defaults = Options::new(args.standard);
    let options = Options {
        original: args.original,
        max_unique: args.max_unique.or(defaults.max_unique),
        min_k: args.min_k,
        ..defaults
    };
    let evidence = audit_dir(&args.dir, &options)?;
    print!("{}", evidence.summary());
    if let Some(path) = &args.json {
        veil_util::atomic::write(path, &evidence.to_json())?;
    }
    if let Some(path) = &args.html {
        veil_util::atomic::write(path, evidence.html().as_bytes())?;
    }
    Ok(if evidence.passes { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

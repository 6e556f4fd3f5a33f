//! `veil`: share FHIR data with researchers without sharing patients.
//!
//! This binary only parses arguments and wires the library crates together;
//! each subcommand lives in its own module.

mod aggregator;
mod audit;
mod client;
mod deid;
mod demo;
mod export;
mod fhirpath;
mod input;
mod load;
mod output;
mod serve;
mod share;
mod study;
mod upload;
mod view;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Veil de-identifies FHIR R4 data and hands it to researchers.
///
/// It de-identifies FHIR files with Microsoft FHIR anonymizer configurations
/// (`veil deid`), shows what de-identified data still holds and how
/// unique its patients are (`veil audit`), serves a FHIR store with de-identified Bulk Data $export
/// to registered clients (`veil load`, `veil serve`, `veil client`),
/// flattens resources with SQL on FHIR views (`veil view run`) and builds
/// aggregate studies for a Cumulus aggregator (`veil study`,
/// `veil export-preset`, `veil upload`), combines many sites' studies
/// (`veil aggregator`) and pulls de-identified data from any FHIR server's
/// Bulk Data endpoint (`veil export`). De-identified exports go to a folder,
/// S3, Azure Blob or GCS, and reach a research team as read-only links that
/// expire (`veil share`, `veil fetch`). `veil demo` runs the main path on
/// the bundled sample.
#[derive(Parser)]
#[command(name = "veil", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    // Each subcommand's help is the doc comment on its Args struct.
    Fhirpath(fhirpath::Args),
    Deid(deid::Args),
    Audit(audit::Args),
    Load(load::Args),
    Serve(serve::Args),
    Client(client::Args),
    View(view::Args),
    Study(study::Args),
    ExportPreset(study::PresetArgs),
    Upload(upload::Args),
    Export(Box<export::Args>),
    Share(share::Args),
    Fetch(share::FetchArgs),
    Aggregator(aggregator::Args),
    Demo(demo::Args),
}

/// A failure that is the user's to fix (exit code 2) rather than a failure
/// while working (exit code 1).
#[derive(Debug)]
pub(crate) struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Fhirpath(args) => fhirpath::run(args),
        Command::Deid(args) => deid::run(args),
        Command::Audit(args) => audit::run(args),
        Command::Load(args) => load::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Client(args) => client::run(args),
        Command::View(args) => view::run(args),
        Command::Study(args) => study::run(args),
        Command::ExportPreset(args) => study::preset(args),
        Command::Upload(args) => upload::run(args),
        Command::Export(args) => export::run(*args),
        Command::Share(args) => share::run(args),
        Command::Fetch(args) => share::fetch(args),
        Command::Aggregator(args) => aggregator::run(args),
        Command::Demo(args) => demo::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("veil: {err:#}");
            if err.downcast_ref::<UsageError>().is_some() { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().filter_map(|e| e.downcast_ref::<std::io::Error>()).any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

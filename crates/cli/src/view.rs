//! `veil view run`: apply a SQL on FHIR ViewDefinition to NDJSON.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use serde_json::Value as Json;
use veil_util::atomic::AtomicFile;
use veil_util::csv;
use veil_views::View;

use crate::UsageError;
use crate::input::{map_ndjson_in_parallel, ndjson_files};

/// Work with SQL on FHIR v2 ViewDefinitions.
#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    Run(RunArgs),
}

/// Flatten FHIR resources into a table with a ViewDefinition.
///
/// Reads NDJSON (a de-identified export's files, for example): a file, or
/// every *.ndjson file in a folder and its subfolders, on every core; rows
/// come out in input order. The view is checked before any data is read.
/// Writes CSV (RFC 4180, with a header), NDJSON (one object per row) or
/// Parquet, to standard output unless -o is given.
///
///   veil view run --view patient_demographics.json --input export/ --format csv -o patients.csv
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
struct RunArgs {
    /// The ViewDefinition (JSON).
    #[arg(long, value_name = "FILE")]
    view: PathBuf,
    /// NDJSON file, or a folder of them.
    #[arg(long, value_name = "PATH")]
    input: PathBuf,
    /// Output format: csv, ndjson or parquet (parquet needs -o).
    #[arg(long, default_value = "csv")]
    format: String,
    /// Output file (written complete, then renamed into place).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

pub(crate) fn run(args: Args) -> Result<ExitCode> {
    let Command::Run(args) = args.command;
    let text = std::fs::read_to_string(&args.view).with_context(|| format!("cannot read {}", args.view.display()))?;
    let json: Json = serde_json::from_str(&text)
        .map_err(|e| UsageError(format!("{}: not JSON (line {})", args.view.display(), e.line())))?;
    let view =
        View::parse(&json).map_err(|e| UsageError(format!("{}: invalid ViewDefinition: {e}", args.view.display())))?;
    if !matches!(args.format.as_str(), "csv" | "ndjson" | "parquet") {
        return Err(UsageError(format!("--format {} is not available: use csv, ndjson or parquet", args.format)).into());
    }
    if args.format == "parquet" && args.output.is_none() {
        return Err(UsageError("--format parquet writes a file: give -o FILE".into()).into());
    }
    let inputs = ndjson_files(&args.input)?;
    // A file appears whole or not at all (dropped on an error, it leaves
    // nothing); stdout is written as it comes.
    let file = args.output.as_deref().map(AtomicFile::create).transpose().context("cannot write the output")?;
    let (mut text_file, mut parquet) = match file {
        Some(file) if args.format == "parquet" => {
            (None, Some(veil_views::ParquetWriter::new(&view, file).map_err(|e| anyhow::anyhow!("{e}"))?))
        }
        file => (file, None),
    };
    let mut stdout = BufWriter::new(std::io::stdout().lock());
    let out: &mut dyn Write = match text_file.as_mut() {
        Some(file) => file,
        None => &mut stdout,
    };
    if args.format == "csv" {
        let header: Vec<Json> = view.columns().iter().map(|c| Json::String(c.clone())).collect();
        out.write_all(csv::line(&header).as_bytes())?;
    }
    let mut rows = 0u64;
    map_ndjson_in_parallel(
        &inputs,
        |doc| Ok(view.rows(&doc)?),
        |new_rows| {
            for row in new_rows {
                rows += 1;
                if let Some(p) = parquet.as_mut() {
                    p.write(row)?;
                } else if args.format == "csv" {
                    out.write_all(csv::line(&row.values).as_bytes())?;
                } else {
                    let obj: serde_json::Map<String, Json> = view.columns().iter().cloned().zip(row.values).collect();
                    out.write_all(Json::Object(obj).to_string().as_bytes())?;
                    out.write_all(b"\n")?;
                }
            }
            Ok(())
        },
    )?;
    out.flush()?;
    let file = match parquet {
        Some(p) => Some(p.finish().map_err(|e| anyhow::anyhow!("{e}"))?),
        None => text_file,
    };
    if let Some(file) = file {
        let path = file.path().to_path_buf();
        file.commit().with_context(|| format!("cannot write {}", path.display()))?;
    }
    eprintln!("veil view: {rows} rows");
    Ok(ExitCode::SUCCESS)
}

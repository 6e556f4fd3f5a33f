//! `veil study`: build aggregate studies from de-identified NDJSON and
//! export them as Cumulus data packages; `veil export-preset`: the
//! minimum-necessary `$export` a study needs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, Result};
use serde_json::json;
use veil_study::{Builder, Built, Study};

use crate::UsageError;
use crate::input::{map_ndjson_in_parallel, ndjson_files};
use crate::output::{Progress, write_atomically};

/// Build aggregate studies (count cubes, small cells suppressed) for a Cumulus aggregator.
///
/// A study is a folder with a study.toml (its SQL on FHIR views, how they
/// join, what it counts), or the name of a built-in study (`veil study
/// list`). Build it from de-identified NDJSON, then export it:
///
///   veil study build flu --input export/
///   veil study export flu
///   ls data_export/flu/
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    Build(BuildArgs),
    Export(ExportArgs),
    Show(ShowArgs),
    /// List the built-in studies.
    List,
}

/// Run a study's views over NDJSON and compute its count cubes.
///
/// Every combination of each table's strata is counted (an empty cell in
/// the output means "all values"; cumulus__none stands for data with no
/// value), and every cell counted under the table's minimum (10 unless
/// study.toml says otherwise) is dropped here, before anything is written.
/// The result goes to BUILD_DIR/<study>/build.json for `veil study export`.
#[derive(clap::Args)]
struct BuildArgs {
    /// A built-in study's name, or a folder holding study.toml.
    study: String,
    /// De-identified NDJSON: a file, or a folder (searched recursively for *.ndjson).
    #[arg(long, value_name = "PATH")]
    input: PathBuf,
    /// Where built studies are kept between build and export.
    #[arg(long, value_name = "DIR", default_value = "veil-build")]
    build_dir: PathBuf,
}

/// Write a built study as a Cumulus data package.
///
/// Writes DATA_PATH/<study>/: <study>__<table>.cube.csv and .cube.parquet
/// for each count table, the meta tables (meta_date, meta_version),
/// manifest.toml, and <study>.zip (the Parquet files and the manifest), the
/// file `cumulus-library upload` and `veil upload` send. Files of an earlier
/// export of the same study are replaced; other files are left alone.
#[derive(clap::Args)]
struct ExportArgs {
    /// The study (as given to `veil study build`).
    study: String,
    /// Where built studies are kept between build and export.
    #[arg(long, value_name = "DIR", default_value = "veil-build")]
    build_dir: PathBuf,
    /// The folder that holds each study's export.
    #[arg(long, value_name = "DIR", env = "CUMULUS_LIBRARY_DATA_PATH", default_value = "data_export")]
    data_path: PathBuf,
}

/// Print a study's tables, their columns and SQL types, as JSON.
#[derive(clap::Args)]
struct ShowArgs {
    /// A built-in study's name, or a folder holding study.toml.
    study: String,
}

/// Print the Bulk Data $export parameters a study needs, and nothing more.
///
/// Prints `_type` and `_elements` as a query string, limited to the
/// resource types and elements the study's views read, for a
/// minimum-necessary export:
///
///   curl "$FHIR/\$export?$(veil export-preset flu)&_anonymizationConfig=flu.json" -H 'Prefer: respond-async'
///
/// With --policy, also writes the de-identification policy to pair with it:
/// Veil's HIPAA Safe Harbor policy with the study's own rules placed first,
/// for what the study needs that Safe Harbor would remove (`flu` needs
/// none: vaccine codes are vocabulary, and it counts by year; counts by
/// month are built on the site's own data, where only suppressed
/// aggregates leave).
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct PresetArgs {
    /// A built-in study's name, or a folder holding study.toml.
    study: String,
    /// Also write the matching de-identification policy to this file.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
}

/// A study by name: a folder with a study.toml, else a built-in one.
pub(crate) fn resolve(study: &str) -> Result<Study> {
    let dir = Path::new(study);
    if dir.join("study.toml").is_file() {
        return Ok(Study::load(dir).map_err(|e| UsageError(e.to_string()))?);
    }
    Study::builtin(study).ok_or_else(|| {
        let names: Vec<&str> = Study::builtin_names().collect();
        UsageError(format!(
            "no study '{study}': give a folder holding study.toml, or one of the built-in studies: {}",
            names.join(", ")
        ))
        .into()
    })
}

pub(crate) fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        Command::Build(a) => build(a),
        Command::Export(a) => export(a),
        Command::Show(a) => show(a),
        Command::List => {
            for name in Study::builtin_names() {
                let study = Study::builtin(name).expect("listed");
                println!("{name}\t{}", study.description);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn built_path(build_dir: &Path, study: &Study) -> PathBuf {
    build_dir.join(&study.prefix).join("build.json")
}

/// Today's date (UTC), `YYYY-MM-DD`.
fn today() -> String {
    let (y, m, d) = veil_util::clock::today();
    format!("{y:04}-{m:02}-{d:02}")
}

fn build(args: BuildArgs) -> Result<ExitCode> {
    let study = resolve(&args.study)?;
    let files = ndjson_files(&args.input)?;
    if files.is_empty() {
        return Err(UsageError(format!("{}: no .ndjson files", args.input.display())).into());
    }
    let started = Instant::now();
    let built = build_from(&study, &files)?;
    let path = built_path(&args.build_dir, &study);
    write_atomically(&path, |w| serde_json::to_writer(w, &built).map_err(std::io::Error::other))?;
    eprintln!(
        "veil study: {} built from {} resources in {:.1} s",
        study.prefix,
        built.resources,
        started.elapsed().as_secs_f64()
    );
    for t in &built.tables {
        match t.suppression_summary() {
            Some(summary) => eprintln!("  {}: {summary}", t.name),
            None => eprintln!("  {}", t.name),
        }
    }
    eprintln!("next: veil study export {}", args.study);
    Ok(ExitCode::SUCCESS)
}

/// Builds `study` from NDJSON `files`, views applied on every core, with
/// progress on a terminal.
pub(crate) fn build_from(study: &Study, files: &[PathBuf]) -> Result<Built> {
    let progress = Progress::new(&format!("study {}", study.prefix));
    let mut builder = Builder::new(study);
    let read = map_ndjson_in_parallel(
        files,
        |doc| Ok(study.rows(&doc)?),
        |rows| {
            builder.add_rows(rows);
            if builder.resources() % 4096 == 0 {
                progress.lines(builder.resources());
            }
            Ok(())
        },
    );
    progress.finish();
    read?;
    Ok(builder.finish(&today())?)
}

/// Veil's Safe Harbor policy with the study's preset rules placed first.
pub(crate) fn preset_policy(study: &Study) -> Result<String> {
    let first: Vec<(String, String)> = study.export.rules.iter().map(|r| (r.path.clone(), r.method.clone())).collect();
    Ok(veil_deid::Policy::safe_harbor_with(&first)?)
}

fn export(args: ExportArgs) -> Result<ExitCode> {
    let study = resolve(&args.study)?;
    let path = built_path(&args.build_dir, &study);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(UsageError(format!(
                "{} has not been built (no {}): run veil study build {} --input …",
                study.prefix,
                path.display(),
                args.study
            ))
            .into());
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let built: Built = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a build of this Veil version; build again", path.display()))?;
    let out = veil_study::export(&built, &args.data_path)?;
    println!("{}", out.folder.display());
    for f in &out.files {
        println!("  {}", f.file_name().unwrap_or_default().to_string_lossy());
    }
    for t in &out.empty {
        eprintln!("veil study: {t} left out: no cell reached the minimum size");
    }
    Ok(ExitCode::SUCCESS)
}

fn show(args: ShowArgs) -> Result<ExitCode> {
    let study = resolve(&args.study)?;
    // The shape of a build with no data: the tables and their typed columns.
    let empty = Builder::new(&study).finish(&today())?;
    let tables: Vec<_> = empty
        .tables
        .iter()
        .map(|t| json!({"name": t.name, "kind": t.kind, "description": t.description, "min_cell": t.min_cell, "columns": t.columns}))
        .collect();
    let views: Vec<_> =
        study.views().map(|(name, v)| json!({"name": name, "resource": v.resource, "columns": v.columns()})).collect();
    let out = json!({
        "study": study.prefix,
        "description": study.description,
        "data_package_version": study.data_package_version,
        "views": views,
        "tables": tables,
        "export": {
            "_type": study.export.types,
            "_elements": study.export.elements,
            "rules": study.export.rules.iter().map(|r| json!({"path": r.path, "method": r.method})).collect::<Vec<_>>(),
        },
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

/// `_type=…&_elements=…` for a study's preset.
pub(crate) fn preset_query(study: &Study) -> String {
    let e = &study.export;
    let mut query = format!("_type={}", e.types.join(","));
    if !e.elements.is_empty() {
        query.push_str(&format!("&_elements={}", e.elements.join(",")));
    }
    query
}

pub(crate) fn preset(args: PresetArgs) -> Result<ExitCode> {
    let study = resolve(&args.study)?;
    let e = &study.export;
    if e.types.is_empty() {
        return Err(UsageError(format!("study {} declares no [export] preset", study.prefix)).into());
    }
    println!("{}", preset_query(&study));
    if let Some(path) = &args.policy {
        let policy = preset_policy(&study)?;
        write_atomically(path, |w| std::io::Write::write_all(w, policy.as_bytes()))?;
        let rules: Vec<String> = e.rules.iter().map(|r| format!("{} {}", r.method, r.path)).collect();
        match rules.is_empty() {
            true => eprintln!("veil export-preset: wrote {}: Veil's Safe Harbor policy", path.display()),
            false => eprintln!(
                "veil export-preset: wrote {}: Veil's Safe Harbor policy with first {} (no longer Safe Harbor where these keep more)",
                path.display(),
                rules.join(", ")
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

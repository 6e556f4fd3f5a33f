//! `veil upload`: a study's data package to a Cumulus aggregator.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use veil_study::{Aggregator, Package};

use crate::UsageError;

/// Upload exported studies to a Cumulus aggregator.
///
/// Sends `<data path>/<study>/<study>.zip` (what `veil study export`
/// writes) the way `cumulus-library upload` does: the zip is checked
/// (aggregates and metadata only, meta_date present), then a request with
/// the site's credentials asks where to put it, and the zip goes there.
/// Transient failures are retried; refusals are explained.
///
///   export CUMULUS_AGGREGATOR_USER=my-site CUMULUS_AGGREGATOR_ID=…
///   veil upload flu --network flu-network --preview   # what would be sent; sends nothing
///   veil upload flu --network flu-network
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// Studies to upload; default: every exported study under the data path.
    studies: Vec<String>,
    /// The user name the aggregator gave this site.
    #[arg(long, env = "CUMULUS_AGGREGATOR_USER")]
    user: Option<String>,
    /// The site's secret id (the Basic auth password). Never printed.
    #[arg(long = "id", env = "CUMULUS_AGGREGATOR_ID", hide_env_values = true)]
    site_id: Option<String>,
    /// The aggregator.
    #[arg(long, env = "CUMULUS_AGGREGATOR_URL", default_value = "https://aggregator.smartcumulus.org/")]
    url: String,
    /// The research network (appended to the URL).
    #[arg(long, env = "CUMULUS_AGGREGATOR_NETWORK")]
    network: Option<String>,
    /// The folder that holds each study's export.
    #[arg(long, value_name = "DIR", env = "CUMULUS_LIBRARY_DATA_PATH", default_value = "data_export")]
    data_path: PathBuf,
    /// Show what would be sent, without contacting the aggregator.
    #[arg(long)]
    preview: bool,
    /// When the zip goes to the aggregator's storage (S3) rather than to
    /// the aggregator itself: how long to wait for a Veil aggregator to say
    /// it was accepted or refused, in seconds (0: do not wait).
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    wait: u64,
}

pub(crate) fn run(args: Args) -> Result<ExitCode> {
    let studies = if args.studies.is_empty() { exported_studies(&args.data_path)? } else { args.studies.clone() };
    if studies.is_empty() {
        return Err(UsageError(format!(
            "no exported study under {}: run veil study export first",
            args.data_path.display()
        ))
        .into());
    }
    let packages = studies
        .iter()
        .map(|s| Package::find(&args.data_path, s).map_err(|e| UsageError(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let (Some(user), Some(site_id)) = (args.user.clone(), args.site_id.clone()) else {
        return Err(UsageError("the aggregator needs this site's credentials: set CUMULUS_AGGREGATOR_USER and CUMULUS_AGGREGATOR_ID (or --user and --id)".into()).into());
    };
    let aggregator = Aggregator {
        url: args.url.clone(),
        network: args.network.clone(),
        user,
        site_id,
        wait: std::time::Duration::from_secs(args.wait),
    };
    for package in &packages {
        if args.preview {
            preview(&aggregator, package);
            continue;
        }
        eprintln!("veil upload: {}", package.study);
        veil_study::upload(&aggregator, package, &mut |step| eprintln!("  {step}"))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// What would be sent: everything but the secret.
fn preview(aggregator: &Aggregator, package: &Package) {
    println!("Would upload {} (nothing is sent in a preview):", package.study);
    println!("  POST {}", aggregator.endpoint());
    println!("  Authorization: Basic, user {} with this site's id (set; not shown)", aggregator.user);
    println!("  {}", package.prefetch_body(&aggregator.user));
    println!("  then a multipart POST of {} to the URL the aggregator answers:", package.zip.display());
    for (name, size) in &package.members {
        println!("    {name} ({size} bytes)");
    }
}

/// Every `<study>/<study>.zip` directly under `data_path`.
fn exported_studies(data_path: &std::path::Path) -> Result<Vec<String>> {
    let entries =
        std::fs::read_dir(data_path).map_err(|e| UsageError(format!("cannot read {}: {e}", data_path.display())))?;
    let mut studies: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            e.path().join(format!("{name}.zip")).is_file().then_some(name)
        })
        .collect();
    studies.sort();
    Ok(studies)
}

//! `veil export`: pull data from a FHIR server's Bulk Data endpoint,
//! de-identified on the way in.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use veil_bulk::{Auth, Client, ExportRequest, Level, Options};

use crate::UsageError;
use crate::output::{Destination, open_checked, upload_stage};

/// Pull data from any FHIR server's Bulk Data $export, de-identified on the way in.
///
/// Kicks off the export (system, Patient or Group level), polls until the
/// server is done (honouring Retry-After, retrying 429 and 5xx), downloads
/// every file of the manifest a few at a time, retrying a file from its
/// start when the connection breaks, and writes TYPE.NNN.ndjson into the
/// destination with veil-export-manifest.json (each file's resources,
/// bytes and SHA-256) last.
///
/// With --deid, each resource is de-identified in memory as it arrives and
/// raw data is never written (unless --keep-raw DIR asks for it); a
/// resource the policy cannot handle is left out and counted.
///
/// The destination keeps a state file while the export runs; after an
/// interruption, the same command with --resume continues without fetching
/// finished files again.
///
/// A cloud destination (s3://, az://, gs://) is checked first; the export
/// is made in a local work folder (--work-dir, kept for --resume until the
/// export is done), then uploaded with veil-manifest.json last.
///
///   veil export --from https://ehr.example.org/fhir --group cohort-1 --type Patient,Immunization \
///     --client-id veil --private-key veil.pem --deid safe-harbor -o cohort-1/
///   veil export --from https://ehr.example.org/fhir --group cohort-1 … -o cohort-1/ --resume
///   veil export --from … --deid safe-harbor -o s3://research-drop/cohort-1
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// The FHIR server's base URL.
    #[arg(long, value_name = "URL")]
    from: String,
    /// Export a Group's patients (Group/ID/$export).
    #[arg(long, value_name = "ID", conflicts_with = "all_patients")]
    group: Option<String>,
    /// Export every patient's compartment (Patient/$export); without it or --group, the system level.
    #[arg(long)]
    all_patients: bool,
    /// Only these patients (Patient/ID; repeatable), sent in a POST.
    #[arg(long = "patient", value_name = "REF")]
    patients: Vec<String>,
    /// Resource types (_type), comma-separated.
    #[arg(long = "type", value_name = "T,…", value_delimiter = ',')]
    types: Vec<String>,
    /// Only resources changed since (_since, an instant).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only resources changed until (_until, an instant).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// A _typeFilter query (repeatable), e.g. Immunization?status=completed.
    #[arg(long = "type-filter", value_name = "Q")]
    type_filters: Vec<String>,
    /// De-identify with this policy (a Microsoft anonymizer configuration, or a built-in
    /// policy's name: safe-harbor, limited-data-set, expert-shift, ms-sample).
    #[arg(long, value_name = "CONFIG")]
    deid: Option<String>,
    /// With --deid, also keep the raw files here.
    #[arg(long, value_name = "DIR", requires = "deid")]
    keep_raw: Option<PathBuf>,
    /// The destination: a folder, or s3://bucket/prefix, az://container/prefix, gs://bucket/prefix.
    #[arg(short, long, value_name = "DIR|URL")]
    output: PathBuf,
    /// With a cloud destination: the local folder the export is made in
    /// before it is uploaded; default: one in the temporary folder, named
    /// after the destination (so that --resume finds it).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Continue the interrupted export in the destination.
    #[arg(long)]
    resume: bool,
    /// Files downloaded at once.
    #[arg(long, value_name = "N", default_value_t = 4)]
    concurrency: usize,
    /// SMART Backend Services: the client id registered at the server.
    #[arg(long, value_name = "ID", requires = "private_key")]
    client_id: Option<String>,
    /// SMART Backend Services: the private key (PEM, or a JSON private JWK; RS384 or ES384).
    #[arg(long, value_name = "FILE", requires = "client_id")]
    private_key: Option<PathBuf>,
    /// SMART Backend Services: the scope asked for.
    #[arg(long, default_value = "system/*.read")]
    scope: String,
    /// A bearer token to send instead (never printed).
    #[arg(long, env = "VEIL_EXPORT_TOKEN", hide_env_values = true, conflicts_with_all = ["client_id", "basic_user"])]
    bearer_token: Option<String>,
    /// HTTP Basic: the user (the password from VEIL_EXPORT_PASSWORD).
    #[arg(long, value_name = "USER", requires = "basic_password")]
    basic_user: Option<String>,
    /// HTTP Basic: the password (never printed).
    #[arg(long, env = "VEIL_EXPORT_PASSWORD", hide_env_values = true)]
    basic_password: Option<String>,
}

pub(crate) fn run(a: Args) -> Result<ExitCode> {
    let auth = if let (Some(id), Some(key)) = (&a.client_id, &a.private_key) {
        let key = crate::client::read_key(key, None)?;
        Auth::Smart(Box::new(veil_smart::TokenClient::new(&a.from, id, key, &a.scope)))
    } else if let Some(token) = a.bearer_token.clone() {
        Auth::Bearer(token)
    } else if let (Some(user), Some(password)) = (a.basic_user.clone(), a.basic_password.clone()) {
        Auth::Basic { user, password }
    } else {
        Auth::None
    };
    let level = match (&a.group, a.all_patients || !a.patients.is_empty()) {
        (Some(id), _) => Level::Group(id.clone()),
        (None, true) => Level::Patient,
        (None, false) => Level::System,
    };
    let request = ExportRequest {
        level,
        types: a.types.clone(),
        since: a.since.clone(),
        until: a.until.clone(),
        type_filters: a.type_filters.clone(),
        patients: a.patients.clone(),
        ..Default::default()
    };
    let engine = a
        .deid
        .as_deref()
        .map(|config| crate::deid::read_policy(config, "veil export"))
        .transpose()?
        .map(veil_deid::Engine::new);
    let client = Client::new(&a.from, auth);
    let (dest, cloud) = match Destination::parse(&a.output)? {
        Destination::Local(dir) => (dir, None),
        Destination::Cloud(location) => {
            let storage = open_checked(&location)?;
            let stage = a.work_dir.clone().unwrap_or_else(|| work_dir_for(&location));
            create_private_dir(&stage)?;
            (stage, Some((location, storage)))
        }
    };
    let options = Options {
        dest: dest.clone(),
        concurrency: a.concurrency,
        deid: engine.as_ref(),
        keep_raw: a.keep_raw.clone(),
        resume: a.resume,
    };
    let started = std::time::Instant::now();
    // On a terminal the per-file lines ("[12/40] …") become one bar that
    // moves; elsewhere (a log) every line is kept.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let report = |line: &str| match (terminal, bar(line)) {
        (true, Some(bar)) => eprint!("\r\x1b[2Kveil export: {bar}"),
        (true, None) => eprint!("\r\x1b[2Kveil export: {line}\n"),
        (false, _) => eprintln!("veil export: {line}"),
    };
    let result = veil_bulk::run(&client, &request, &options, &report);
    if terminal {
        eprintln!();
    }
    if result.is_err() && cloud.is_some() {
        eprintln!(
            "veil export: what was fetched is kept in {}; the same command with --resume continues",
            dest.display()
        );
    }
    let summary = result.map_err(|e| match e {
        veil_bulk::BulkError::Destination(m) => anyhow::Error::from(UsageError(m)),
        other => other.into(),
    })?;
    // De-identified output is audited where it lies; the evidence goes with it.
    let deidentified = match a.deid.as_deref() {
        Some(config) => Some(veil_server::share::seal(&dest, &crate::deid::policy_name(config))?),
        None => None,
    };
    if let Some(audit) = deidentified.as_ref().and_then(|d| d.audit.as_ref()) {
        eprint!("veil export: {}", audit.summary);
    }
    let into = match &cloud {
        Some((location, storage)) => {
            upload_stage("veil export", storage, &dest, deidentified)?;
            std::fs::remove_dir_all(&dest)
                .map_err(|e| anyhow::anyhow!("cannot remove the work folder {}: {e}", dest.display()))?;
            location.to_string()
        }
        None => dest.display().to_string(),
    };
    let total: u64 = summary.resources.values().sum();
    let per_type: Vec<String> = summary.resources.iter().map(|(t, n)| format!("{t} {n}")).collect();
    println!(
        "{total} resources in {} files ({}) in {:.1} s, into {}{}",
        summary.files,
        per_type.join(", "),
        started.elapsed().as_secs_f64(),
        into,
        if a.deid.is_some() { ", de-identified" } else { "" }
    );
    if summary.deleted > 0 {
        println!("{} bundles of deleted resources in deleted/", summary.deleted);
    }
    if summary.errors > 0 {
        println!("the server reported {} errors (OperationOutcomes in error/)", summary.errors);
    }
    if summary.reused > 0 {
        println!("{} files were already finished and were not fetched again", summary.reused);
    }
    if summary.left_out > 0 {
        println!("{} resources could not be de-identified and were left out", summary.left_out);
    }
    if summary.not_kept > 0 {
        println!("{} deleted/error files were not kept: they are not de-identified", summary.not_kept);
    }
    Ok(ExitCode::SUCCESS)
}

/// The default work folder for a cloud destination: the same one each time
/// (so that --resume finds it), in the temporary folder.
fn work_dir_for(location: &veil_storage::Location) -> PathBuf {
    let (digest, _) = veil_storage::digest(location.to_string().as_bytes()).expect("reading memory cannot fail");
    std::env::temp_dir().join(format!("veil-export-{}", &digest[..16]))
}

/// A folder only this user can read: without --deid it holds the
/// server's data as it came.
fn create_private_dir(dir: &std::path::Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| anyhow::anyhow!("cannot create the work folder {}: {e}", dir.display()))
}

/// `[12/40] Patient.003.ndjson: 300 resources` as a bar:
/// `[#######.....................] 12/40 files  Patient.003.ndjson`.
fn bar(line: &str) -> Option<String> {
    let (count, rest) = line.strip_prefix('[')?.split_once("] ")?;
    let (done, total) = count.split_once('/')?;
    let (done, total): (usize, usize) = (done.parse().ok()?, total.parse().ok()?);
    let width = 30;
    let filled = (done * width).checked_div(total).unwrap_or(width);
    let name = rest.split(':').next().unwrap_or_default();
    Some(format!("[{}{}] {done}/{total} files  {name}", "#".repeat(filled), ".".repeat(width - filled)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn file_lines_become_a_bar() {
        assert_eq!(
            super::bar("[3/12] Patient.003.ndjson: 300 resources").unwrap(),
            "[#######.......................] 3/12 files  Patient.003.ndjson"
        );
        assert_eq!(super::bar("export accepted; polling /x"), None);
    }
}

//! `veil share` and `veil fetch`: hand an export to a research team as a
//! read-only link that expires, and download what a link shares.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use veil_server::share::{Exposure, ShareError, make_share};
use veil_storage::Location;
use veil_storage::share::{Cidr, ShareKind};
use veil_store::{JobState, ShareRecord, Store};

use crate::UsageError;

/// Hand a de-identified export to a research team: a read-only link to
/// exactly that export, which stops working when it expires.
///
///   veil share create --export 5f3a… --expires 72h --recipient "Team A"
///   veil share create --path az://exports-2026-11 --expires 7d
///   veil share list
///   veil share revoke sh_0123456789abcdef
///   veil share log
///
/// The link depends on where the export is:
///
///   a local folder   a Veil link (https://HOST/share/TOKEN/) that veil serve
///                    answers: signed, expiring, limited to an address range
///                    with --ip, revoked at once, every download audited
///   az://container   an Azure service SAS: read and list, https only, at
///                    most 7 days, through a stored access policy made for
///                    the share (so revoke is immediate; five per container);
///                    an export below a prefix gets a read-only SAS per
///                    file, listed in a share manifest
///   s3://, gs://     a presigned URL per file, listed in a share manifest
///                    that is itself presigned; at most 7 days
///
/// The research team runs `veil fetch LINK -o DIR`. The link is printed
/// once, on stdout; it is the credential, so Veil keeps only its id.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// The store that keeps shares and the audit log: sqlite:PATH or postgres://….
    #[arg(long, value_name = "URL", default_value = "sqlite:veil.db", env = "VEIL_DB", global = true)]
    db: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Make a link to one export.
    Create(CreateArgs),
    /// List shares: id, kind, expiry, status, downloads, recipient.
    List,
    /// Revoke a share: at once for Veil links and Azure SAS (its stored
    /// access policy is deleted); for S3 and GCS, says what else must be
    /// done (exit code 3).
    Revoke {
        /// The share's id (`sh_…`, from `veil share list`).
        id: String,
    },
    /// The audit log: every download through Veil links (share, time,
    /// file, bytes, client address).
    Log {
        /// Only this share's downloads.
        id: Option<String>,
    },
}

#[derive(clap::Args)]
struct CreateArgs {
    /// The export job to share (its id is the last part of its status URL).
    #[arg(long, value_name = "JOB", conflicts_with = "path", required_unless_present = "path")]
    export: Option<String>,
    /// The destination to share: a folder, s3://…, az://… or gs://….
    #[arg(long, value_name = "DEST")]
    path: Option<String>,
    /// How long the link works: 90s, 30m, 72h, 7d (cloud links: 7d at most;
    /// Veil links: 30d).
    #[arg(long, value_name = "LIFETIME", default_value = "72h")]
    expires: String,
    /// Who the link is for (kept with the share, shown by `list`).
    #[arg(long, value_name = "WHO")]
    recipient: Option<String>,
    /// Only clients from this address range (CIDR) may use the link (Veil
    /// links and Azure SAS).
    #[arg(long, value_name = "CIDR")]
    ip: Option<Cidr>,
    /// The address of `veil serve` as the research team reaches it (for
    /// Veil links).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080", env = "VEIL_BASE_URL")]
    base_url: String,
    /// veil serve's --storage (where --export looks for the job's files).
    #[arg(long, value_name = "DIR|URL", default_value = "storage", env = "VEIL_STORAGE")]
    storage: String,
    /// veil serve's --work-dir, with cloud --storage.
    #[arg(long, value_name = "DIR", default_value = "storage-work", env = "VEIL_WORK_DIR")]
    work_dir: PathBuf,
    /// Share an export that was not de-identified (its manifest names no
    /// de-identification policy), knowing that it holds identified data
    /// about patients: for recipients under an agreement that allows it.
    /// The share is recorded, listed and logged as identified. Without
    /// this flag such an export is refused.
    #[arg(long)]
    identified: bool,
    /// Share a de-identified export whose audit failed (veil-risk.txt in the
    /// export says why): for when an expert's determination or a data use
    /// agreement covers what the audit found. Without this flag it is refused.
    #[arg(long)]
    despite_audit: bool,
}

pub(crate) fn run(args: Args) -> Result<ExitCode> {
    let store = veil_store::open(&args.db)
        .map_err(|e| UsageError(format!("cannot open the store {}: {e}", veil_store::printable_url(&args.db))))?;
    match args.command {
        Command::Create(c) => create(&*store, c),
        Command::List => list(&*store),
        Command::Revoke { id } => revoke(&*store, &id),
        Command::Log { id } => log(&*store, id.as_deref()),
    }
}

/// What the operator must correct is a usage error (exit code 2).
pub(crate) fn usage(e: ShareError) -> anyhow::Error {
    match e {
        ShareError::Refused(why) => UsageError(why).into(),
        other => other.into(),
    }
}

fn create(store: &dyn Store, c: CreateArgs) -> Result<ExitCode> {
    let lifetime = veil_storage::parse_lifetime(&c.expires).map_err(UsageError)?;
    let location = match (&c.export, &c.path) {
        (Some(job), _) => export_location(store, job, &crate::serve::storage_of(&c.storage, &c.work_dir)?)?,
        (None, Some(path)) => Location::parse(path).map_err(|e| UsageError(e.to_string()))?,
        (None, None) => unreachable!("clap requires --export or --path"),
    };
    let exposure = match (c.identified, c.despite_audit) {
        (true, _) => Exposure::Identified,
        (false, true) => Exposure::DespiteAudit,
        (false, false) => Exposure::DeidentifiedOnly,
    };
    let made = make_share(store, &location, lifetime, c.recipient, c.ip, &c.base_url, exposure).map_err(usage)?;
    let r = &made.record;
    if r.identified {
        eprintln!(
            "veil share: WARNING: {} shares IDENTIFIED data: {} was not de-identified, so its files may hold patients' names, addresses, dates, identifiers and clinical narratives; the share is recorded as identified",
            r.id, r.location
        );
    }
    eprintln!("veil share: {} ({}) shares {}: {}", r.id, r.kind, r.location, made.scope);
    match &made.audit {
        Some(summary) => summary.lines().for_each(|l| eprintln!("  audit: {l}")),
        None if !r.identified => eprintln!("  audit: none on record (shared with --despite-audit)"),
        None => {}
    }
    eprintln!(
        "  expires {}{}{}",
        r.expires,
        r.recipient.as_ref().map(|w| format!(", for {w}")).unwrap_or_default(),
        r.ip.as_ref().map(|i| format!(", from {i} only")).unwrap_or_default()
    );
    if r.kind == ShareKind::Veil.as_str() {
        eprintln!(
            "  served by veil serve at {} (with this store); revoke with: veil share revoke {}",
            c.base_url, r.id
        );
        let host = c.base_url.strip_prefix("http://").map(|rest| rest.split(['/', ':']).next().unwrap_or_default());
        if host.is_some_and(|h| !matches!(h, "127.0.0.1" | "localhost" | "[::1]")) {
            eprintln!(
                "  WARNING: {} is plain http: the link's token would cross the network in the clear; give --base-url https://…",
                c.base_url
            );
        }
    }
    eprintln!(
        "  the research team runs: veil fetch 'LINK' -o DIR   (the link is below; it is the credential: send it privately)"
    );
    println!("{}", made.link);
    Ok(ExitCode::SUCCESS)
}

/// Where a completed export job's files are in veil serve's storage.
fn export_location(store: &dyn Store, job: &str, storage: &veil_server::export::Storage) -> Result<Location> {
    let j = store.job(job)?.ok_or_else(|| UsageError(format!("no export job {job} in this store")))?;
    if j.state != JobState::Completed {
        return Err(UsageError(format!(
            "export job {job} is {:?}, not completed: only a finished export can be shared",
            j.state
        ))
        .into());
    }
    let container = veil_server::export::JobRequest::container_of(&j);
    Ok(storage.job_location(job, container.as_deref(), &j.created))
}

fn status(s: &ShareRecord) -> String {
    match &s.revoked {
        Some(at) => format!("revoked {at}"),
        None if veil_util::clock::parse_iso(&s.expires).is_some_and(|e| e <= veil_util::clock::now_secs()) => {
            "expired".into()
        }
        None => "active".into(),
    }
}

fn list(store: &dyn Store) -> Result<ExitCode> {
    let shares = store.shares()?;
    if shares.is_empty() {
        eprintln!("veil share: no shares in this store (make one with veil share create)");
        return Ok(ExitCode::SUCCESS);
    }
    let downloads = store.downloads(None)?;
    println!(
        "{:<19} {:<13} {:<14} {:<20} {:<30} {:>9}  {:<20} location",
        "id", "kind", "data", "expires", "status", "downloads", "recipient"
    );
    for s in &shares {
        let n = downloads.iter().filter(|d| d.share_id == s.id).count();
        println!(
            "{:<19} {:<13} {:<14} {:<20} {:<30} {:>9}  {:<20} {}",
            s.id,
            s.kind,
            data_kind(s),
            s.expires,
            status(s),
            n,
            s.recipient.as_deref().unwrap_or("-"),
            s.location
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn data_kind(s: &ShareRecord) -> &'static str {
    if s.identified { "IDENTIFIED" } else { "de-identified" }
}

fn revoke(store: &dyn Store, id: &str) -> Result<ExitCode> {
    let Some(share) = store.share(id)? else {
        return Err(UsageError(format!("no share {id} in this store (see veil share list)")).into());
    };
    let kind = ShareKind::parse(&share.kind);
    // The policy first: if Azure refuses, nothing is recorded, and the
    // same command can be run again.
    if kind == ShareKind::AzureSas && !veil_storage::share::revoke_azure(&Location::parse(&share.location)?, id)? {
        eprintln!(
            "veil share: {id}: no stored access policy of that name was left on {} (it expired or was removed)",
            share.location
        );
    }
    if !store.revoke_share(id)? {
        eprintln!("veil share: {id} was revoked already ({})", share.revoked.unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    println!("revoked {id}: {}", kind.revocation());
    if matches!(kind, ShareKind::S3Presigned | ShareKind::GcsPresigned) {
        println!("  shared location: {}", share.location);
        // The links still work: the operator must act, so say it by the
        // exit code too.
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

fn log(store: &dyn Store, id: Option<&str>) -> Result<ExitCode> {
    let downloads = store.downloads(id)?;
    if downloads.is_empty() {
        eprintln!("veil share: no downloads recorded{}", id.map(|i| format!(" for {i}")).unwrap_or_default());
    }
    let identified: std::collections::HashSet<String> =
        store.shares()?.into_iter().filter(|s| s.identified).map(|s| s.id).collect();
    for d in downloads {
        let data = if identified.contains(&d.share_id) { "IDENTIFIED" } else { "de-identified" };
        println!("{}  {}  {data}  {}  {} bytes  from {}", d.time, d.share_id, d.file, d.bytes, d.client);
    }
    Ok(ExitCode::SUCCESS)
}

/// Download what a share link shares, and check every file.
///
///   veil fetch 'https://veil.hospital.example/share/v1.sh_…/' -o study-data
///   veil fetch 'https://acct.blob.core.windows.net/exports?sv=…&sig=…' -o study-data
///
/// Every file is checked against the export's manifest (size and SHA-256);
/// a file that does not match is deleted and the command fails. Run the same
/// command again after an interruption: intact files are kept and a file cut
/// off continues where it stopped. The folder ends with veil-manifest.json.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct FetchArgs {
    /// The share link (quote it: it holds & and ?).
    link: String,
    /// Where the files go.
    #[arg(short = 'o', long = "out", value_name = "DIR")]
    out: PathBuf,
}

pub(crate) fn fetch(args: FetchArgs) -> Result<ExitCode> {
    use veil_storage::fetch::Event;
    let started = std::time::Instant::now();
    // On a terminal, one bar by bytes; elsewhere (a log), a line per file.
    let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        let style = indicatif::ProgressStyle::with_template(
            "veil fetch: [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        );
        bar.set_style(style.unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()).progress_chars("#."));
        bar
    });
    let mut report = |event: Event<'_>| match (event, &bar) {
        (Event::Planned { bytes, .. }, Some(bar)) => bar.set_length(bytes),
        (Event::Bytes(n), Some(bar)) => bar.inc(n),
        (Event::File { file, .. }, Some(bar)) => bar.set_message(file.path.clone()),
        (Event::File { file, reused }, None) => {
            eprintln!(
                "  {} ({} bytes){}",
                file.path,
                file.size,
                if reused { ", already here and intact" } else { ", checked" }
            )
        }
        _ => {}
    };
    let result = veil_storage::fetch::fetch(&args.link, &args.out, &mut report);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    match result {
        Ok(done) => {
            eprintln!(
                "veil fetch: {} files in {} ({} downloaded now, {} bytes, {:.1} s), every checksum matches",
                done.files,
                args.out.display(),
                done.files - done.reused,
                done.bytes,
                started.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("veil fetch: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

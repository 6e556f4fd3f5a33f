//! `veil aggregator`: the multi-site aggregator's server and its
//! administration (sites, API keys, the upload log).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use veil_aggregator::Ledger;
use veil_aggregator::http::{Config, router};
use veil_aggregator::package::{Limits, is_identifier};

use crate::UsageError;

/// Combine many sites' study results: the Cumulus aggregator's protocol
/// and query API, on one machine.
///
/// Sites upload with `cumulus-library upload` or `veil upload`; every upload
/// is checked (zip safety, names, Parquet types, no cell under the
/// network's minimum) and merged before it is acknowledged. The dashboard
/// (and any script) reads the merged cubes with an API key.
///
///   veil aggregator site add bch --user bch-uploader --studies flu   # prints the site's secret
///   veil aggregator key add --name dashboard                        # prints an API key
///   veil aggregator serve --listen 127.0.0.1:8090
///   # or, with uploads going straight to S3 (a presigned POST, as with Cumulus):
///   veil aggregator serve --storage s3://cumulus-uploads/flu-net --db postgres://agg@db/aggregator
///   # at the site:
///   CUMULUS_AGGREGATOR_USER=bch-uploader CUMULUS_AGGREGATOR_ID=<secret> \
///     veil upload flu --url http://127.0.0.1:8090/
///   # anyone with the key: doses by year, a series per site
///   curl -H "x-api-key: $KEY" \
///     'http://127.0.0.1:8090/data-packages/flu__count_doses__001/chart?column=year&stratifier=site'
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Serve the upload handshake, the signed upload endpoint and the query API.
    Serve(ServeArgs),
    /// Add, rotate, remove and list the sites that may upload.
    Site(SiteArgs),
    /// Make, list and remove API keys for the query API.
    Key(KeyArgs),
    /// The latest uploads and what became of them (newest first).
    Uploads(UploadsArgs),
}

#[derive(clap::Args)]
struct DbArgs {
    /// The aggregator's database: a SQLite file (created if missing) or
    /// postgres://user@host/db (add ?schema=NAME for a schema of its own);
    /// tables are created when missing.
    #[arg(long, value_name = "FILE|URL", default_value = "aggregator.db", env = "VEIL_AGGREGATOR_DB")]
    db: String,
}

impl DbArgs {
    fn open(&self) -> Result<Ledger> {
        Ledger::open(&self.db)
            .map_err(|e| UsageError(format!("cannot open {}: {e}", veil_store::printable_url(&self.db))).into())
    }
}

#[derive(clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Where accepted uploads are archived as they arrived: a folder, or
    /// s3://bucket/prefix (az://…, gs://… too). With S3, sites upload
    /// straight to the bucket by a presigned POST (as with the Cumulus
    /// aggregator) and this server checks and merges what arrives there;
    /// credentials come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_REGION (AWS_ENDPOINT for another S3 server) or an instance role.
    #[arg(
        long,
        visible_alias = "dir",
        value_name = "DIR|URL",
        default_value = "aggregator-data",
        env = "VEIL_AGGREGATOR_STORAGE"
    )]
    storage: String,
    /// With S3 storage: how often to look for new uploads in the bucket, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    poll_secs: u64,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8090", env = "VEIL_AGGREGATOR_LISTEN")]
    listen: SocketAddr,
    /// The URL sites reach this server at, if not http://ADDR (the upload URL is built from it).
    #[arg(long, value_name = "URL", env = "VEIL_AGGREGATOR_BASE_URL")]
    base_url: Option<String>,
    /// The research network: the handshake is served at /NETWORK too (CUMULUS_AGGREGATOR_NETWORK at the sites).
    #[arg(long, value_name = "NAME")]
    network: Option<String>,
    /// The smallest count any cell may hold; uploads with a smaller cell are refused.
    #[arg(long, value_name = "N", default_value_t = veil_study::DEFAULT_MIN_CELL)]
    min_cell: u64,
    /// The largest zip accepted, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    max_upload_mib: u64,
    /// Requests per second one address may make to the doors that check
    /// credentials (handshake, upload status, the query API), in bursts of
    /// twice that; after 5 failed attempts an address waits 1 s, doubling
    /// with each further failure up to a minute (429 with Retry-After).
    #[arg(long, value_name = "N", default_value_t = 20.0)]
    auth_rate: f64,
    /// How each request and upload is logged on stderr.
    #[arg(long, value_enum, default_value = "human")]
    log_format: crate::output::LogFormat,
}

#[derive(clap::Args)]
struct SiteArgs {
    #[command(subcommand)]
    command: SiteCommand,
}

#[derive(clap::Subcommand)]
enum SiteCommand {
    /// Add a site; prints its secret (its CUMULUS_AGGREGATOR_ID), once.
    Add(SiteAddArgs),
    /// Give a site a new secret (printed once); the old one stops working at once.
    Rotate(SiteNameArgs),
    /// Remove a site's credentials; with --purge, its data too.
    Remove(SiteRemoveArgs),
    /// List the sites (never their secrets).
    List(DbArgs),
}

#[derive(clap::Args)]
struct SiteAddArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The site's name in the data and the API: lower-case letters, digits and _ (e.g. bch).
    name: String,
    /// The user name the site sends (CUMULUS_AGGREGATOR_USER); default: the name.
    #[arg(long)]
    user: Option<String>,
    /// A name for people; default: the name.
    #[arg(long)]
    display: Option<String>,
    /// The studies it may upload, comma-separated; default: all.
    #[arg(long, value_delimiter = ',')]
    studies: Vec<String>,
}

#[derive(clap::Args)]
struct SiteNameArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The site.
    name: String,
}

#[derive(clap::Args)]
struct SiteRemoveArgs {
    #[command(flatten)]
    site: SiteNameArgs,
    /// Also delete everything the site uploaded, and merge the rest again.
    #[arg(long)]
    purge: bool,
}

#[derive(clap::Args)]
struct KeyArgs {
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(clap::Subcommand)]
enum KeyCommand {
    /// Make an API key for the query API; prints it, once.
    Add(KeyAddArgs),
    /// List the API keys (never the keys themselves).
    List(DbArgs),
    /// Remove an API key: it stops working at once.
    Remove(KeyRemoveArgs),
}

#[derive(clap::Args)]
struct KeyAddArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Who or what holds it ("dashboard").
    #[arg(long)]
    name: String,
}

#[derive(clap::Args)]
struct KeyRemoveArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The key's id (the part before the dot, as `key list` shows).
    id: String,
}

#[derive(clap::Args)]
struct UploadsArgs {
    #[command(flatten)]
    db: DbArgs,
    /// How many to show.
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

pub(crate) fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        Command::Serve(a) => serve(a),
        Command::Site(a) => site(a.command),
        Command::Key(a) => key(a.command),
        Command::Uploads(a) => {
            let ledger = a.db.open()?;
            for u in ledger.uploads(a.limit)? {
                let why = u.message.map(|m| format!("  {m}")).unwrap_or_default();
                println!(
                    "{}  {:<9}  {}  {}  v{}  {} bytes  sha256 {}{why}",
                    u.received,
                    u.outcome,
                    u.site,
                    u.study,
                    u.version,
                    u.bytes,
                    &u.sha256[..16]
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn site(command: SiteCommand) -> Result<ExitCode> {
    match command {
        SiteCommand::Add(a) => {
            if !is_identifier(&a.name) {
                return Err(UsageError(format!(
                    "a site name is lower-case letters, digits and _, starting with a letter (got {:?})",
                    a.name
                ))
                .into());
            }
            if let Some(bad) = a.studies.iter().find(|s| !is_identifier(s)) {
                return Err(UsageError(format!("{bad:?} is not a study name")).into());
            }
            let user = a.user.clone().unwrap_or_else(|| a.name.clone());
            if user.is_empty() || user.contains(':') {
                return Err(
                    UsageError("a user name must not be empty or hold ':' (it is the Basic auth user)".into()).into()
                );
            }
            let ledger = a.db.open()?;
            let Some(secret) = ledger.add_site(&a.name, &user, a.display.as_deref().unwrap_or(&a.name), &a.studies)?
            else {
                return Err(
                    UsageError(format!("a site named {} or with the user {user} exists already", a.name)).into()
                );
            };
            let studies = if a.studies.is_empty() { "every study".to_string() } else { a.studies.join(", ") };
            eprintln!(
                "veil aggregator: added site {} (user {user}, may upload {studies}); its secret, shown only now, is on stdout:",
                a.name
            );
            println!("{secret}");
        }
        SiteCommand::Rotate(a) => {
            let Some(secret) = a.db.open()?.rotate_site(&a.name)? else {
                return Err(UsageError(format!("no site named {}", a.name)).into());
            };
            eprintln!(
                "veil aggregator: site {} has a new secret (the old one no longer works); shown only now, on stdout:",
                a.name
            );
            println!("{secret}");
        }
        SiteCommand::Remove(a) => {
            if !a.site.db.open()?.remove_site(&a.site.name, a.purge)? {
                return Err(UsageError(format!("no site named {}", a.site.name)).into());
            }
            let what = if a.purge {
                "its credentials and data; the other sites' data is merged again"
            } else {
                "its credentials (its data stays in the merge; --purge removes it)"
            };
            eprintln!("veil aggregator: removed site {}: {what}", a.site.name);
        }
        SiteCommand::List(db) => {
            for s in db.open()?.sites()? {
                let studies = if s.studies.is_empty() { "*".to_string() } else { s.studies.join(",") };
                let rotated = s.rotated.map(|r| format!("  rotated {r}")).unwrap_or_default();
                println!("{}\tuser {}\tstudies {studies}\t{}\tadded {}{rotated}", s.name, s.user, s.display, s.created);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn key(command: KeyCommand) -> Result<ExitCode> {
    match command {
        KeyCommand::Add(a) => {
            let key = a.db.open()?.add_api_key(&a.name)?;
            eprintln!(
                "veil aggregator: API key for {} (send it as the x-api-key header); shown only now, on stdout:",
                a.name
            );
            println!("{key}");
        }
        KeyCommand::List(db) => {
            for k in db.open()?.api_keys()? {
                println!("{}\t{}\tadded {}", k.id, k.name, k.created);
            }
        }
        KeyCommand::Remove(a) => {
            if !a.db.open()?.remove_api_key(&a.id)? {
                return Err(UsageError(format!("no API key with the id {}", a.id)).into());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn serve(a: ServeArgs) -> Result<ExitCode> {
    if let Some(n) = &a.network
        && (!is_identifier(&n.replace('-', "_")) || ["upload", "metadata", "studies", "uploads"].contains(&n.as_str()))
    {
        return Err(UsageError(format!(
            "{n:?} cannot name a network (lower-case letters, digits, - and _; not a route of the API)"
        ))
        .into());
    }
    let ledger = Arc::new(a.db.open()?);
    let location = veil_storage::Location::parse(&a.storage).map_err(|e| UsageError(e.to_string()))?;
    let storage = crate::output::open_checked(&location)
        .map_err(|e| UsageError(format!("cannot use {location} for uploads: {e}")))?;
    let runtime = tokio::runtime::Runtime::new()?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(a.listen))
        .map_err(|e| UsageError(format!("cannot listen on {}: {e}", a.listen)))?;
    let addr = listener.local_addr()?;
    let base_url = a.base_url.clone().unwrap_or_else(|| format!("http://{addr}"));
    let sites = ledger.sites()?.len();
    let keys = ledger.api_keys()?.len();
    let limits = Limits { zip_bytes: a.max_upload_mib << 20, ..Limits::default() };
    let guard = veil_http::Limits { per_second: a.auth_rate, burst: 2.0 * a.auth_rate, ..veil_http::Limits::default() };
    let uploads_here = !matches!(location, veil_storage::Location::S3 { .. });
    if uploads_here {
        // An upload that held a lock when the last process stopped died with it.
        let freed = ledger.release_all_locks()?;
        if freed > 0 {
            eprintln!(
                "veil aggregator: freed {freed} upload lock(s) left by the last run (those sites may upload again at once)"
            );
        }
    }
    let config = Arc::new(Config {
        ledger,
        storage: Arc::new(storage),
        base_url: base_url.clone(),
        network: a.network.clone(),
        min_cell: a.min_cell,
        limits,
        access_log: Some(a.log_format.access_log("site")),
        guard,
    });
    let app = router(config.clone())?;
    let at = a.network.as_ref().map(|n| format!(" and {base_url}/{n}")).unwrap_or_default();
    eprintln!(
        "veil aggregator: {base_url} (database {}, archive {location}); handshake at {base_url}/{at}; minimum cell {}",
        veil_store::printable_url(&a.db.db),
        a.min_cell
    );
    if config.uploads_to_storage() {
        eprintln!(
            "veil aggregator: sites upload to {} by presigned POST; checked every {} s",
            location.join("upload_staging"),
            a.poll_secs
        );
        runtime
            .spawn(veil_aggregator::staging::watch(config.clone(), std::time::Duration::from_secs(a.poll_secs.max(1))));
    }
    eprintln!(
        "veil aggregator: {sites} site(s) (veil aggregator site add), {keys} API key(s) (veil aggregator key add)"
    );
    if !addr.ip().is_loopback() && !base_url.starts_with("https://") {
        eprintln!(
            "veil aggregator: WARNING: {base_url} is not https: site secrets would cross the network in the clear; serve behind a TLS-terminating proxy and pass --base-url https://…"
        );
    }
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    // The client's address is what the credential doors' rate limits count by.
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    runtime.block_on(async { axum::serve(listener, app).with_graceful_shutdown(shutdown).await })?;
    Ok(ExitCode::SUCCESS)
}

//! `veil serve`: the FHIR server with Bulk Data `$export`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use veil_server::auth::Auth;
use veil_server::export::{DEFAULT_FILE_LIMIT, Storage, WorkerConfig};
use veil_server::http::{AppState, ExportLimits};
use veil_server::running::Start;

use crate::UsageError;

/// Serve FHIR R4 from Veil's store, with Bulk Data $export.
///
/// Answers read, search, metadata and $export at system, Patient and Group
/// level (GET, or POST with a Parameters body), with de-identification as
/// Azure does it: _anonymizationConfig names a file in the storage's
/// `anonymization` container, _container names where the files go.
///
/// Every request but metadata and discovery needs an access token (SMART
/// Backend Services): register clients with `veil client add`; they get
/// tokens from /auth/token, as /.well-known/smart-configuration says.
/// Each token's scopes limit the types it may read and export.
///
///   veil load data/synthea-r4-100.tar.gz
///   veil client keygen --out team.pem > team.jwks.json
///   ID=$(veil client add --name Team --jwks team.jwks.json)
///   veil serve --storage ./storage &
///   TOKEN=$(veil client token --fhir-url http://127.0.0.1:8080 --client-id $ID --key team.pem)
///   curl -i -H "Authorization: Bearer $TOKEN" -H 'Prefer: respond-async' \
///     'http://127.0.0.1:8080/$export?_type=Patient&_anonymizationConfig=safe-harbor.json'
///
/// One line per request goes to stderr: the route's pattern, status,
/// client and time (never a query, an id or a token).
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// The store: sqlite:PATH or postgres://….
    #[arg(long, value_name = "URL", default_value = "sqlite:veil.db", env = "VEIL_DB")]
    db: String,
    /// Where exports are written: a folder whose subfolders are containers
    /// (`anonymization` holds policies), or s3://bucket/prefix,
    /// az://container/prefix or gs://bucket/prefix, laid out the same way
    /// (credentials from the cloud's usual environment variables).
    #[arg(long, value_name = "DIR|URL", default_value = "storage", env = "VEIL_STORAGE")]
    storage: String,
    /// With cloud --storage: the local folder export workers write in
    /// before uploading (downloads are served from it).
    #[arg(long, value_name = "DIR", default_value = "storage-work", env = "VEIL_WORK_DIR")]
    work_dir: PathBuf,
    /// Address to listen on; beyond loopback only with authorization on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080", env = "VEIL_LISTEN")]
    listen: SocketAddr,
    /// Serve without authorization: anyone who can connect reads
    /// everything. For experiments on loopback only; warns at every start.
    #[arg(long)]
    insecure_no_auth: bool,
    /// The base URL clients use, if not http://ADDR.
    #[arg(long, value_name = "URL", env = "VEIL_BASE_URL")]
    base_url: Option<String>,
    /// Export workers (threads running jobs).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Resources per output file.
    #[arg(long, default_value_t = DEFAULT_FILE_LIMIT)]
    file_limit: u64,
    /// Seconds before a job whose worker stopped answering (a crash) is
    /// taken over by another worker or a restarted server.
    #[arg(long, default_value_t = 60)]
    lease_secs: i64,
    /// Exports one client may have queued or running at once; one more is
    /// answered 429 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = ExportLimits::default().per_client)]
    max_exports_per_client: usize,
    /// GiB of export files one client may hold; a kick-off beyond is
    /// answered 429 until earlier exports are deleted or expire.
    #[arg(long, value_name = "GIB", default_value_t = 20.0)]
    client_quota_gib: f64,
    /// GiB the export disk must keep free; below, kick-offs get 503.
    #[arg(long, value_name = "GIB", default_value_t = 1.0)]
    min_free_gib: f64,
    /// Hours a finished export is kept (the status answer's Expires); then
    /// its files and job are deleted.
    #[arg(long, value_name = "HOURS", default_value_t = 24.0)]
    retention_hours: f64,
    /// How each request is logged on stderr.
    #[arg(long, value_enum, default_value = "human")]
    log_format: crate::output::LogFormat,
    /// Token requests per second one address may make, in bursts of twice
    /// that; after 5 refused requests an address waits 1 s, doubling with
    /// each further refusal up to a minute (429 with Retry-After).
    #[arg(long, value_name = "N", default_value_t = 20.0)]
    token_rate: f64,
}

pub(crate) fn run(args: Args) -> Result<ExitCode> {
    let store: Arc<dyn veil_store::Store> = Arc::from(
        veil_store::open(&args.db)
            .map_err(|e| UsageError(format!("cannot open the store {}: {e}", veil_store::printable_url(&args.db))))?,
    );
    let storage = storage_of(&args.storage, &args.work_dir)?;
    let auth = if args.insecure_no_auth {
        eprintln!(
            "veil serve: WARNING: authorization is OFF (--insecure-no-auth): anyone who can connect to {} can read and export every resource",
            args.listen
        );
        None
    } else {
        Some(Auth::new(&*store).map_err(|e| {
            UsageError(format!("cannot set up authorization in the store {}: {e}", veil_store::printable_url(&args.db)))
        })?)
    };
    let authorization = auth.is_some();
    let clients = if authorization { store.clients().map(|c| c.len()).unwrap_or(0) } else { 0 };
    let start = Start {
        listen: args.listen,
        workers: args.workers.max(1),
        worker: WorkerConfig { file_limit: args.file_limit, lease_secs: args.lease_secs.max(1) },
        owner: format!("veil-{}", std::process::id()),
    };
    let gib = |g: f64| (g.max(0.0) * f64::from(1u32 << 30)) as u64;
    let limits = ExportLimits {
        per_client: args.max_exports_per_client,
        client_quota_bytes: gib(args.client_quota_gib),
        min_free_bytes: gib(args.min_free_gib),
        retention_secs: (args.retention_hours.max(0.0) * 3600.0) as u64,
    };
    let token_guard =
        veil_http::Limits { per_second: args.token_rate, burst: 2.0 * args.token_rate, ..veil_http::Limits::default() };
    let (base_url, log) = (args.base_url.clone(), args.log_format.access_log("client"));
    let running = veil_server::running::start(start, authorization, move |addr| {
        let base_url = base_url.unwrap_or_else(|| format!("http://{addr}"));
        let mut state = AppState::new(store, storage, base_url, auth);
        state.access_log = Some(log);
        state.limits = limits;
        state.token_guard = token_guard;
        state
    })
    .map_err(|e| UsageError(format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = running.addr();
    let base_url = args.base_url.clone().unwrap_or_else(|| format!("http://{addr}"));
    eprintln!("veil serve: {base_url} (store {}, storage {})", veil_store::printable_url(&args.db), args.storage);
    if !addr.ip().is_loopback() && !base_url.starts_with("https://") {
        // Veil speaks plain HTTP; beyond loopback, TLS belongs to a proxy in front.
        eprintln!(
            "veil serve: WARNING: {base_url} is not https: tokens and data would cross the network in the clear; serve behind a TLS-terminating proxy and pass --base-url https://…"
        );
    }
    if authorization {
        eprintln!(
            "veil serve: tokens from {base_url}{}; {clients} client(s) registered (veil client add)",
            veil_server::auth::TOKEN_PATH
        );
    }
    // Until Ctrl-C (or SIGINT): then stop serving and let the workers finish their step.
    let signals = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let _ = signals.block_on(tokio::signal::ctrl_c());
    running.stop();
    Ok(ExitCode::SUCCESS)
}

/// veil serve's storage from `--storage` (a folder, or a cloud location
/// with `work_dir` as its local copy).
pub(crate) fn storage_of(storage: &str, work_dir: &std::path::Path) -> Result<Storage> {
    let location = veil_storage::Location::parse(storage).map_err(|e| UsageError(e.to_string()))?;
    match location {
        veil_storage::Location::Local(dir) => {
            Storage::new(&dir).with_context(|| format!("cannot create {}", dir.display()))
        }
        cloud => Storage::with_remote(work_dir, cloud).with_context(|| format!("cannot create {}", work_dir.display())),
    }
}

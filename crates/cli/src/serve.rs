//! `veil serve`: the FHIR server with Bulk Data `$export`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, Result};
use veil_server::export::{DEFAULT_FILE_LIMIT, Storage, WorkerConfig, worker_loop};
use veil_server::http::{AppState, bind, serve};

use crate::UsageError;

/// Serve FHIR R4 from Veil's store, with Bulk Data $export.
///
/// Answers read, metadata and $export at system, Patient and Group level
/// (GET, or POST with a Parameters body), with de-identification as Azure
/// does it: _anonymizationConfig names a file in the storage's
/// `anonymization` container, _container names where the files go.
///
///   veil load data/synthea-r4-100.tar.gz
///   veil serve --storage ./storage
///   curl -i 'http://127.0.0.1:8080/$export?_type=Patient&_anonymizationConfig=safe-harbor.json'
///
/// It listens on loopback only, until authorization lands.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// The store: sqlite:PATH or postgres://….
    #[arg(long, value_name = "URL", default_value = "sqlite:veil.db", env = "VEIL_DB")]
    db: String,
    /// Where exports are written: a folder whose subfolders are containers.
    #[arg(long, value_name = "DIR", default_value = "storage", env = "VEIL_STORAGE")]
    storage: PathBuf,
    /// Address to listen on (loopback only).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080", env = "VEIL_LISTEN")]
    listen: SocketAddr,
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
}

pub(crate) fn run(args: Args) -> Result<ExitCode> {
    let store: Arc<dyn veil_store::Store> =
        Arc::from(veil_store::open(&args.db).map_err(|e| UsageError(format!("cannot open the store {}: {e}", args.db)))?);
    let storage = Storage::new(&args.storage).with_context(|| format!("cannot create {}", args.storage.display()))?;
    let runtime = tokio::runtime::Runtime::new()?;
    let listener = runtime.block_on(bind(args.listen)).map_err(|e| UsageError(format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = listener.local_addr()?;
    let base_url = args.base_url.clone().unwrap_or_else(|| format!("http://{addr}"));
    let stop = Arc::new(AtomicBool::new(false));
    let host = std::process::id();
    let workers: Vec<_> = (0..args.workers.max(1))
        .map(|i| {
            let (store, storage, stop) = (store.clone(), storage.clone(), stop.clone());
            let config = WorkerConfig { file_limit: args.file_limit, lease_secs: args.lease_secs.max(1) };
            std::thread::spawn(move || worker_loop(&*store, &storage, &format!("veil-{host}-{i}"), config, &stop))
        })
        .collect();
    eprintln!("veil serve: {base_url} (store {}, storage {})", args.db, args.storage.display());
    let state = AppState::new(store, storage, base_url);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    runtime.block_on(serve(state, listener, shutdown))?;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    Ok(ExitCode::SUCCESS)
}

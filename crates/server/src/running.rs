//! `veil serve` started: the one way the binary, the demo and the tests run
//! it. The HTTP server gets a runtime on a thread of its own; export
//! workers run on threads beside it; [`Running::stop`] (or dropping it)
//! stops serving, lets each worker finish its step and waits for all.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::export::{Storage, WorkerConfig, worker_loop};
use crate::http::{AppState, bind, serve};

/// How to start: where to listen, and the export workers.
#[derive(Debug, Clone)]
pub struct Start {
    /// The address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// Export worker threads (0: none; jobs wait for another process).
    pub workers: usize,
    /// How the workers run jobs.
    pub worker: WorkerConfig,
    /// What the workers' lease owners are called (`NAME-0`, `NAME-1`, …).
    pub owner: String,
}

/// A started server.
pub struct Running {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Binds `start.listen`, builds the server's state with `state` (which is
/// given the bound address, for a base URL), and starts serving and the
/// workers. Without authorization (`state`'s `auth` is `None`) only a
/// loopback address may be bound.
pub fn start(
    start: Start,
    authorization: bool,
    state: impl FnOnce(SocketAddr) -> AppState + Send + 'static,
) -> std::io::Result<Running> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let listener = runtime.block_on(bind(start.listen, authorization))?;
    let addr = listener.local_addr()?;
    let state = Arc::new(state(addr));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads: Vec<JoinHandle<()>> = (0..start.workers)
        .map(|i| {
            let (store, storage, stop): (_, Storage, _) = (state.store.clone(), state.storage.clone(), stop.clone());
            let (owner, config) = (format!("{}-{i}", start.owner), start.worker);
            std::thread::spawn(move || worker_loop(&*store, &storage, &owner, config, &stop))
        })
        .collect();
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    threads.push(std::thread::spawn(move || {
        let served = runtime.block_on(serve(state, listener, async move {
            let _ = stopped.await;
        }));
        if let Err(e) = served {
            eprintln!("veil serve: the server stopped: {e}");
        }
    }));
    Ok(Running { addr, shutdown: Some(shutdown), stop, threads })
}

impl Running {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and the workers, and waits for them.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.halt();
    }
}

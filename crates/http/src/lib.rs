//! What Veil's two HTTP servers (`veil serve`, `veil aggregator serve`) put
//! around their handlers, written once:
//!
//! - [`Door`]: limits that keep a hostile client from wearing a credential
//!   check down (a request rate and a failure backoff per caller);
//! - [`AccessLog`]: one line per request, as text for a terminal or as JSON
//!   lines for a log collector, naming the route's pattern and never a
//!   resource id, token or key;
//! - [`blocking`]: store and file work moved off the async threads.

mod guard;
mod log;

pub use guard::{Credentials, Door, Limits, MAX_CALLERS, guard};
pub use log::{AccessLog, LogFormat, Who, access_log};

/// The blocking task panicked (its panic is already on stderr); answer 500.
#[derive(Debug, Clone, Copy)]
pub struct TaskFailed;

/// Runs `f` on tokio's blocking pool, so that a store query or a file write
/// does not hold an async worker thread.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, TaskFailed> {
    tokio::task::spawn_blocking(f).await.map_err(|_| TaskFailed)
}

//! Uploads that sites post straight to S3 (the handshake's presigned POST
//! puts them under `upload_staging/`). S3 only keeps an object once it has
//! arrived whole, so what is listed there is complete; each is checked and
//! merged by [`crate::intake::ingest`] as if it had come to `/upload`.
//!
//! A staged object is deleted only after the ledger has recorded what
//! became of it. If the server dies between the two, the next sweep takes
//! the object again, and the ledger answers the same package twice as
//! "unchanged", so a crash loses no upload and merges none twice. Several
//! servers may sweep one bucket: the ledger's writes are serialised, and
//! an object another server has removed is skipped.

use std::sync::Arc;
use std::time::Duration;

use veil_storage::StorageError;

use crate::http::Config;
use crate::intake::{Failure, STAGING, Upload, ingest, superseded};

/// What one sweep did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Uploads checked (kept, unchanged or refused), their objects removed.
    pub checked: usize,
    /// Objects this server did not sign, removed unread.
    pub dropped: usize,
    /// Uploads left for the next sweep because the database or storage failed.
    pub retry: usize,
}

/// Checks every upload waiting in the staging area, oldest name first.
pub fn sweep(config: &Config) -> Result<Swept, StorageError> {
    let storage = &config.storage;
    let mut swept = Swept::default();
    for name in storage.list_below(STAGING)? {
        let Some(upload) = Upload::from_staging_key(&name) else {
            eprintln!("veil aggregator: removed an object in {STAGING}/ that no upload policy of this server names");
            delete(config, &name)?;
            swept.dropped += 1;
            continue;
        };
        let zip = match storage.get(&name) {
            Ok(zip) => zip,
            // Another server took it.
            Err(StorageError::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        let done = match ingest(config, &upload, &zip) {
            Ok(_) | Err(Failure::Refused(_)) => true,
            Err(Failure::Busy) => superseded(config, &upload, &zip).is_ok(),
            Err(Failure::Internal) => false,
        };
        if done {
            delete(config, &name)?;
            swept.checked += 1;
        } else {
            swept.retry += 1;
        }
    }
    Ok(swept)
}

fn delete(config: &Config, name: &str) -> Result<(), StorageError> {
    match config.storage.delete(name) {
        Ok(()) | Err(StorageError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Sweeps at once (what a crash left), then every `every`, for as long as
/// the server runs. A failed sweep is logged and tried again.
pub async fn watch(config: Arc<Config>, every: Duration) {
    // A failure is told once, not every few seconds while it lasts.
    let mut last_failure = None;
    loop {
        let cfg = config.clone();
        let failure = match tokio::task::spawn_blocking(move || sweep(&cfg)).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => {
                Some(format!("cannot read the uploads waiting in {}: {e}", config.storage.location().join(STAGING)))
            }
            Err(_) => Some("a sweep of the staged uploads stopped unexpectedly".to_string()),
        };
        match (&failure, &last_failure) {
            (Some(now), before) if Some(now) != before.as_ref() => eprintln!("veil aggregator: {now}"),
            (None, Some(_)) => eprintln!("veil aggregator: the staged uploads can be read again"),
            _ => {}
        }
        last_failure = failure;
        tokio::time::sleep(every).await;
    }
}

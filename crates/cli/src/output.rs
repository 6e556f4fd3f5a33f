//! Writing results: files that appear whole or not at all, cloud
//! destinations (work staged in a local folder, then uploaded with the
//! manifest last), and progress on a terminal.

use std::io::{self, IsTerminal};
use std::path::Path;

use anyhow::{Context as _, Result};
use veil_storage::{Location, Storage};
use veil_util::atomic::AtomicFile;

use crate::UsageError;

/// How a server writes its log lines (`--log-format`).
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Text lines, for a terminal.
    Human,
    /// One JSON object per line, for a log collector.
    Json,
}

impl LogFormat {
    /// The access log of a server that names who asked as `who`.
    pub(crate) fn access_log(self, who: &'static str) -> veil_http::AccessLog {
        let format = match self {
            LogFormat::Human => veil_http::LogFormat::Human,
            LogFormat::Json => veil_http::LogFormat::Json,
        };
        veil_http::AccessLog { format, who }
    }
}

/// Where `-o` points: a local folder, or a cloud location that the work is
/// staged for locally and then uploaded to.
pub(crate) enum Destination {
    Local(std::path::PathBuf),
    Cloud(Location),
}

impl Destination {
    /// Reads `-o`: `s3://`, `az://`, `abfss://`, `gs://` are cloud
    /// locations; anything else (`file://` too) is a local folder.
    pub(crate) fn parse(text: &Path) -> Result<Destination> {
        let Some(url) = text.to_str().filter(|t| t.contains("://")) else {
            return Ok(Destination::Local(text.to_path_buf()));
        };
        Ok(match Location::parse(url).map_err(|e| UsageError(e.to_string()))? {
            Location::Local(dir) => Destination::Local(dir),
            cloud => Destination::Cloud(cloud),
        })
    }
}

/// Opens a destination and checks it before any work is done for it: a
/// missing bucket or a refused key is found now, not after an hour.
pub(crate) fn open_checked(location: &Location) -> Result<Storage> {
    let storage = Storage::open(location)?;
    storage.check()?;
    Ok(storage)
}

/// Uploads every file of the finished folder `stage`, the manifest last
/// (a reader who finds it finds everything), and says so.
pub(crate) fn upload_stage(
    command: &str,
    storage: &Storage,
    stage: &Path,
    deidentified: Option<veil_storage::Deidentified>,
) -> Result<()> {
    let mut uploaded = 0;
    let manifest = storage.upload_dir(stage, deidentified, &mut |_| uploaded += 1)?;
    eprintln!(
        "{command}: uploaded {uploaded} files ({} bytes) and {} to {}",
        manifest.bytes(),
        veil_storage::MANIFEST_NAME,
        storage.location()
    );
    Ok(())
}

/// Writes `path` whole or not at all ([`veil_util::atomic`]), so that an
/// interrupted run never leaves a file that looks finished.
pub(crate) fn write_atomically(path: &Path, write: impl FnOnce(&mut AtomicFile) -> io::Result<()>) -> Result<()> {
    veil_util::atomic::write_with(path, write).with_context(|| format!("cannot write {}", path.display()))
}

/// A progress line on a terminal; silent in pipes.
pub(crate) struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    pub(crate) fn new(name: &str) -> Progress {
        if !io::stderr().is_terminal() {
            return Progress { bar: None };
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} {pos} resources, {per_sec}, {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_message(name.to_string());
        Progress { bar: Some(bar) }
    }
    pub(crate) fn lines(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.set_position(n);
        }
    }
    pub(crate) fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

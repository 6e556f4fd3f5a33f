//! One export from kick-off to the last file, with a state file so that an
//! interrupted export resumes: the status URL is recorded as soon as the
//! server gives it, the manifest as soon as it is complete, and each file
//! once it is whole on disk (written through `veil_util::atomic`), with its SHA-256.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead as _, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};
use veil_deid::{Engine, OnError, StreamError, anonymize_ndjson};
use veil_util::atomic::AtomicFile;

use crate::http::{Client, ExportRequest, Manifest, ManifestFile, path_of};
use crate::{BulkError, Result};

/// The state file, inside the destination; removed when the export is done.
pub const STATE_FILE: &str = ".veil-export-state.json";
/// What was received, written last.
pub const MANIFEST_FILE: &str = "veil-export-manifest.json";

/// What an export has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct State {
    /// SHA-256 of what was asked for (the kick-off URL and any POST body),
    /// to refuse resuming it as another export. A digest, not the request:
    /// a `_typeFilter` or a patient reference may identify someone, and
    /// this file sits among de-identified data.
    pub request_sha256: String,
    /// Whether the files are de-identified on the way in.
    pub deidentified: bool,
    /// The status URL, once the server accepted the export.
    pub status_url: Option<String>,
    /// The manifest, once the export is complete.
    pub manifest: Option<Manifest>,
    /// Finished files by name.
    pub files: BTreeMap<String, FileDone>,
}

/// A finished file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileDone {
    /// Its resource type.
    #[serde(rename = "type")]
    pub resource_type: String,
    /// Resources written.
    pub resources: u64,
    /// Resources left out (they could not be de-identified).
    pub left_out: u64,
    /// Bytes written.
    pub bytes: u64,
    /// SHA-256 of what was written, hex.
    pub sha256: String,
}

/// How to run an export.
pub struct Options<'a> {
    /// The destination folder.
    pub dest: PathBuf,
    /// Files downloaded at once.
    pub concurrency: usize,
    /// De-identify every resource on the way in.
    pub deid: Option<&'a Engine>,
    /// With `deid`, also keep the raw files here (only when asked for).
    pub keep_raw: Option<PathBuf>,
    /// Continue the export the destination's state file describes.
    pub resume: bool,
}

/// What an export did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Files written (now or by the run that was resumed).
    pub files: usize,
    /// Of those, files a resumed run found finished and did not fetch again.
    pub reused: usize,
    /// Resources written, per type (the manifest's `output`).
    pub resources: BTreeMap<String, u64>,
    /// Bundles of deleted resources written (`deleted/`).
    pub deleted: u64,
    /// OperationOutcomes the server reported (`error/`).
    pub errors: u64,
    /// Resources left out because they could not be de-identified.
    pub left_out: u64,
    /// Files of the manifest's `deleted` and `error` lists not kept because
    /// they were not de-identified (they name resources by id, or may quote
    /// values).
    pub not_kept: usize,
}

/// A file to fetch: where it goes and what it is.
struct Job {
    name: String,
    file: ManifestFile,
}

fn io(what: impl std::fmt::Display, e: impl std::fmt::Display) -> BulkError {
    BulkError::Io(format!("{what}: {e}"))
}

fn save(path: &Path, state: &State) -> Result<()> {
    veil_util::atomic::write(path, &serde_json::to_vec_pretty(state).expect("the state serialises"))
        .map_err(|e| io(path.display(), e))
}

/// Runs (or, with `options.resume`, continues) an export into `options.dest`.
/// `progress` sees a line for each step and each finished file.
pub fn run(
    client: &Client,
    request: &ExportRequest,
    options: &Options<'_>,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Summary> {
    fs::create_dir_all(&options.dest).map_err(|e| io(options.dest.display(), e))?;
    let state_path = options.dest.join(STATE_FILE);
    let request_sha256 = request.digest();
    let mut state = match fs::read(&state_path) {
        Ok(bytes) if options.resume => {
            let state: State = serde_json::from_slice(&bytes).map_err(|e| io(state_path.display(), e))?;
            if state.request_sha256 != request_sha256 {
                return Err(BulkError::Destination(format!(
                    "the export in {} was asked for with other parameters; resume it with the same ones",
                    options.dest.display()
                )));
            }
            if state.deidentified != options.deid.is_some() {
                return Err(BulkError::Destination(format!(
                    "the export in {} was {}de-identified on the way in; resume it the same way",
                    options.dest.display(),
                    if state.deidentified { "" } else { "not " }
                )));
            }
            state
        }
        Ok(_) => {
            return Err(BulkError::Destination(format!(
                "{} holds an unfinished export: continue it with --resume, or choose another folder",
                options.dest.display()
            )));
        }
        Err(_) if options.resume => {
            return Err(BulkError::Destination(format!(
                "nothing to resume in {} (no {STATE_FILE})",
                options.dest.display()
            )));
        }
        Err(_) => State { request_sha256, deidentified: options.deid.is_some(), ..State::default() },
    };

    let status_url = match &state.status_url {
        Some(url) => url.clone(),
        None => {
            let url = client.kick_off(request)?;
            progress(&format!("export accepted; polling {}", path_of(&url)));
            state.status_url = Some(url.clone());
            save(&state_path, &state)?;
            url
        }
    };
    let manifest = match &state.manifest {
        Some(m) => m.clone(),
        None => {
            let m = client.wait(&status_url, &mut |p| progress(&format!("the server is working: {p}"))).map_err(
                |e| match e {
                    // Servers forget finished or abandoned exports after a while.
                    BulkError::Status { status: 404 | 410, .. } if options.resume => BulkError::Destination(format!(
                        "the server no longer knows this export ({e}); remove {} to start again",
                        state_path.display()
                    )),
                    other => other,
                },
            )?;
            state.manifest = Some(m.clone());
            save(&state_path, &state)?;
            m
        }
    };

    let mut summary = Summary::default();
    let mut jobs = Vec::new();
    for (folder, files) in [("", &manifest.output), ("deleted/", &manifest.deleted), ("error/", &manifest.error)] {
        if options.deid.is_some() && !folder.is_empty() {
            // Fail closed: `deleted` bundles name resources by their raw ids
            // and OperationOutcomes may quote values; neither is de-identified.
            summary.not_kept += files.len();
            continue;
        }
        let mut per_type: BTreeMap<&str, usize> = BTreeMap::new();
        for file in files {
            let k = per_type.entry(&file.resource_type).or_default();
            *k += 1;
            let name = format!("{folder}{}.{k:03}.ndjson", safe_name(&file.resource_type));
            jobs.push(Job { name, file: file.clone() });
        }
    }
    let planned = jobs.len();
    let mut todo: Vec<Job> =
        jobs.into_iter().filter(|job| !finished(&options.dest, &job.name, state.files.get(&job.name))).collect();
    todo.reverse(); // taken from the end: in the manifest's order
    summary.reused = planned - todo.len();
    progress(&format!(
        "{} files to fetch{}",
        todo.len(),
        if summary.reused > 0 { format!(", {} already finished", summary.reused) } else { String::new() }
    ));

    let finished_count = std::sync::atomic::AtomicUsize::new(summary.reused);
    let state = Mutex::new(state);
    let queue = Mutex::new(todo);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..options.concurrency.max(1) {
            scope.spawn(|| {
                loop {
                    let Some(job) = queue.lock().expect("the queue").pop() else { break };
                    match fetch(client, &job, manifest.requires_access_token, options) {
                        Ok(done) => {
                            let n = finished_count.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                            progress(&format!("[{n}/{planned}] {}: {} resources", job.name, done.resources));
                            let mut state = state.lock().expect("the state");
                            state.files.insert(job.name.clone(), done);
                            if let Err(e) = save(&state_path, &state) {
                                failures.lock().expect("failures").push(e);
                            }
                        }
                        Err(e) => failures.lock().expect("failures").push(e),
                    }
                }
            });
        }
    });
    let state = state.into_inner().expect("the state");
    let mut failures = failures.into_inner().expect("failures");
    if let Some(first) = failures.pop() {
        return Err(BulkError::Protocol(format!(
            "{} file(s) could not be fetched ({first}); what was finished is kept: run again with --resume",
            failures.len() + 1
        )));
    }

    for (name, done) in &state.files {
        if name.starts_with("error/") {
            summary.errors += done.resources;
        } else if name.starts_with("deleted/") {
            summary.deleted += done.resources;
        } else {
            *summary.resources.entry(done.resource_type.clone()).or_default() += done.resources;
        }
        summary.left_out += done.left_out;
    }
    summary.files = state.files.len();
    let received = serde_json::json!({
        "transactionTime": manifest.transaction_time,
        "request": if state.deidentified { serde_json::Value::Null } else { request.url("").into() },
        "deidentified": state.deidentified,
        "files": state.files,
        "notKept": summary.not_kept,
    });
    let path = options.dest.join(MANIFEST_FILE);
    fs::write(&path, serde_json::to_vec_pretty(&received).expect("JSON")).map_err(|e| io(path.display(), e))?;
    fs::remove_file(&state_path).map_err(|e| io(state_path.display(), e))?;
    Ok(summary)
}

/// A resource type as a file name (the server's manifest is not trusted to name paths).
fn safe_name(resource_type: &str) -> String {
    let name: String = resource_type.chars().filter(char::is_ascii_alphanumeric).collect();
    if name.is_empty() { "Unknown".into() } else { name }
}

/// Whether `name` is on disk as the state recorded it.
fn finished(dest: &Path, name: &str, done: Option<&FileDone>) -> bool {
    let Some(done) = done else { return false };
    let Ok(mut file) = fs::File::open(dest.join(name)) else { return false };
    let mut hashing = Hashing { inner: std::io::sink(), hash: Sha256::new(), bytes: 0 };
    if std::io::copy(&mut file, &mut hashing).is_err() {
        return false;
    }
    hashing.bytes == done.bytes && veil_util::hex::encode(&hashing.hash.finalize()) == done.sha256
}

/// Counts and hashes what goes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Copies what is read to a second writer (the raw copy, when asked for).
struct Tee<R, W> {
    inner: R,
    copy: Option<W>,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(copy) = &mut self.copy {
            copy.write_all(&buf[..n])?;
        }
        Ok(n)
    }
}

/// Fetches one file whole, retrying it from its start when the connection
/// breaks; only a whole file is renamed into place.
fn fetch(client: &Client, job: &Job, with_token: bool, options: &Options<'_>) -> Result<FileDone> {
    let path = options.dest.join(&job.name);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut file = AtomicFile::create(&path).map_err(|e| io(path.display(), e))?;
        match fetch_once(client, job, with_token, options, &mut file) {
            Ok(done) => {
                file.commit().map_err(|e| io(path.display(), e))?;
                return Ok(done);
            }
            // A broken connection mid-file: start the file again.
            Err(BulkError::Http(_)) if attempt < client.retry.attempts => {
                std::thread::sleep(std::time::Duration::from_secs(1))
            }
            // Dropped uncommitted, the file leaves nothing behind.
            Err(e) => return Err(e),
        }
    }
}

fn fetch_once(
    client: &Client,
    job: &Job,
    with_token: bool,
    options: &Options<'_>,
    file: &mut AtomicFile,
) -> Result<FileDone> {
    let part = file.path().to_path_buf();
    let response = client.open(&job.file, with_token)?;
    let raw = match (&options.keep_raw, options.deid) {
        (Some(dir), Some(_)) => {
            let raw = dir.join(&job.name);
            if let Some(parent) = raw.parent() {
                fs::create_dir_all(parent).map_err(|e| io(parent.display(), e))?;
            }
            Some(BufWriter::new(fs::File::create(&raw).map_err(|e| io(raw.display(), e))?))
        }
        _ => None,
    };
    let input = BufReader::new(Tee { inner: response, copy: raw });
    let mut out = Hashing { inner: file, hash: Sha256::new(), bytes: 0 };
    // Only the kind: a body error's text can carry the file's URL, and a presigned URL is a credential.
    let broken = |e: std::io::Error| BulkError::Http(format!("{}: the download broke off ({:?})", job.name, e.kind()));
    let (resources, left_out) = match options.deid {
        Some(engine) => {
            let mut left_out = 0u64;
            let report = anonymize_ndjson(engine, input, &mut out, OnError::Quarantine, |_| left_out += 1, |_| {})
                .map_err(|e| match e {
                    StreamError::Io(e) => broken(e),
                    other => BulkError::Deid(format!("{}: {other}", job.name)),
                })?;
            (report.written(), left_out)
        }
        None => {
            // Copied as bytes, a line at a time through one buffer; blank
            // lines dropped and the last line ended, as the de-identified path does.
            let (mut input, mut line, mut resources) = (input, Vec::new(), 0u64);
            while input.read_until(b'\n', &mut line).map_err(broken)? > 0 {
                if !line.trim_ascii().is_empty() {
                    resources += 1;
                    let ended = line.ends_with(b"\n");
                    out.write_all(&line)
                        .and_then(|()| if ended { Ok(()) } else { out.write_all(b"\n") })
                        .map_err(|e| io(part.display(), e))?;
                }
                line.clear();
            }
            (resources, 0)
        }
    };
    out.flush().map_err(|e| io(part.display(), e))?;
    let Hashing { hash, bytes, .. } = out;
    Ok(FileDone {
        resource_type: job.file.resource_type.clone(),
        resources,
        left_out,
        bytes,
        sha256: veil_util::hex::encode(&hash.finalize()),
    })
}

//! Bulk Data `$export` jobs: the request as stored with the job, and the
//! worker that runs it — scanning the store, de-identifying when asked,
//! writing NDJSON files into a storage container — and the manifest it ends
//! with. Files are written under a temporary name and renamed when complete;
//! the manifest, written last, lists only complete files.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Value as Json, json};
pub use veil_bulk::ExportRequest;
use veil_bulk::{Level, Manifest, ManifestFile};
use veil_store::{JobState, ScanFilter, Store};
use veil_util::atomic::AtomicFile;

/// A job's request (its JSON record): what the kick-off asked for and
/// what the server needs to answer it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRequest {
    /// The kick-off's parameters, already checked.
    #[serde(flatten)]
    pub export: ExportRequest,
    /// The kick-off URL, for the manifest's `request`.
    pub url: String,
    /// What a lenient kick-off ignored, reported in the manifest's `error` files.
    #[serde(default)]
    pub ignored: Vec<String>,
    /// The base URL that file URLs in the manifest start with.
    pub base_url: String,
    /// The client that asked, when authorization is on: only it may see
    /// the status and files, and the manifest says they need its token.
    pub client: Option<String>,
}

impl JobRequest {
    /// The request a job was made for; `None` if its record is unreadable.
    pub fn of_job(job: &veil_store::Job) -> Option<JobRequest> {
        serde_json::from_str(&job.request).ok()
    }

    /// The `_container` a job's files went to; `None` for the default (or
    /// an unreadable record).
    pub fn container_of(job: &veil_store::Job) -> Option<String> {
        JobRequest::of_job(job)?.export.container
    }
}

/// The server's storage: a folder whose subfolders are containers
/// (`anonymization` holds de-identification configurations).
///
/// With a cloud location (`s3://…`, `az://…`, `gs://…`) the folder is the
/// workers' local copy: each finished export is uploaded below the
/// location, at the same relative path (`CONTAINER/STAMP-JOB/…`, manifest
/// last), and configurations are read from its `anonymization/` prefix.
#[derive(Debug, Clone)]
pub struct Storage {
    root: PathBuf,
    remote: Option<veil_storage::Location>,
}

impl Storage {
    /// Storage rooted at `root` (created if missing).
    pub fn new(root: impl Into<PathBuf>) -> std::io::Result<Storage> {
        let root = root.into();
        fs::create_dir_all(root.join("anonymization"))?;
        Ok(Storage { root, remote: None })
    }

    /// Storage whose exports go to a cloud `remote` too, `root` holding the
    /// local copy.
    pub fn with_remote(root: impl Into<PathBuf>, remote: veil_storage::Location) -> std::io::Result<Storage> {
        Ok(Storage { remote: (!remote.is_local()).then_some(remote), ..Storage::new(root)? })
    }

    /// Where a job's files are, as a location: the cloud copy when there is
    /// one, else the local folder.
    pub fn job_location(&self, job: &str, container: Option<&str>, created: &str) -> veil_storage::Location {
        let dir = self.job_dir(job, container, created);
        self.remote_of(&dir).unwrap_or(veil_storage::Location::Local(dir))
    }

    /// The cloud copy of a folder below the local root, if there is a cloud.
    fn remote_of(&self, dir: &Path) -> Option<veil_storage::Location> {
        let rel = dir.strip_prefix(&self.root).ok()?;
        Some(rel.iter().fold(self.remote.clone()?, |l, part| l.join(&part.to_string_lossy())))
    }

    /// Deletes a job's files: the local folder and the cloud copy.
    pub fn remove_job(
        &self,
        job: &str,
        container: Option<&str>,
        created: &str,
    ) -> Result<(), veil_storage::StorageError> {
        let _ = fs::remove_dir_all(self.job_dir(job, container, created));
        match self.job_location(job, container, created) {
            veil_storage::Location::Local(_) => Ok(()),
            cloud => veil_storage::Storage::open(&cloud)?.delete_all().map(|_| ()),
        }
    }

    /// Uploads a finished job folder to the cloud copy, if there is one.
    fn publish(
        &self,
        dir: &Path,
        deidentified: Option<veil_storage::Deidentified>,
    ) -> Result<(), veil_storage::StorageError> {
        let Some(target) = self.remote_of(dir) else { return Ok(()) };
        veil_storage::Storage::open(&target)?.upload_dir(dir, deidentified, &mut |_| {})?;
        Ok(())
    }

    /// The folder of a job's files.
    pub fn job_dir(&self, job: &str, container: Option<&str>, created: &str) -> PathBuf {
        match container {
            // As Azure: a timestamped folder per export inside the named container.
            Some(c) => {
                let stamp: String = created.chars().filter(|c| c.is_ascii_digit() || *c == 'T').take(15).collect();
                self.root.join(c).join(format!("{stamp}-{job}"))
            }
            None => self.root.join(format!("export-{job}")),
        }
    }

    /// A de-identification configuration from the `anonymization` container.
    pub fn anonymization_config(&self, name: &str) -> Option<String> {
        if !is_plain_file_name(name) {
            return None;
        }
        if let Some(remote) = &self.remote {
            let bytes = veil_storage::Storage::open(&remote.join("anonymization")).and_then(|s| s.get(name)).ok()?;
            return String::from_utf8(bytes).ok();
        }
        fs::read_to_string(self.root.join("anonymization").join(name)).ok()
    }

    /// Bytes a job's files take in the local folder.
    pub fn job_bytes(&self, job: &str, container: Option<&str>, created: &str) -> u64 {
        let dir = self.job_dir(job, container, created);
        let Ok(names) = veil_storage::files_below(&dir) else { return 0 };
        names.iter().filter_map(|n| fs::metadata(dir.join(n)).ok()).map(|m| m.len()).sum()
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// A configuration's ETag in local storage: the hex SHA-256 of its bytes
/// (what `sha256sum` prints), so a caller can pin the version it reviewed.
pub fn etag(content: &str) -> String {
    use sha2::Digest;
    veil_util::hex::encode(&sha2::Sha256::digest(content.as_bytes()))
}

/// A name `_container` may take: Azure's rule for container names (3 to 63
/// lower-case letters, digits and single hyphens, starting and ending with a
/// letter or digit), so that one name means one folder on every file system
/// and cloud whatever their letter case, and nothing hidden; and none of the
/// server's own folders (`anonymization`, `export-…`).
pub fn is_container_name(name: &str) -> bool {
    let shape = (3..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    shape && name != "anonymization" && !name.starts_with("export-")
}

/// A single plain name (a file, a container): ASCII letters, digits, `-`,
/// `_` and `.`, at most 128 characters, never `.` or `..`; no separator, so
/// nothing to climb out of a folder with.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `_elements`: keeps `resourceType`, `id`, `meta`, the listed elements
/// that apply to the resource's type (a choice by its base name, with its
/// primitive extensions) and, as the Bulk Data IG asks, the type's
/// mandatory elements (R4 cardinality `1..`), tagged SUBSETTED; types with
/// no listed element are left whole. A de-identified export projects what
/// de-identification wrote, so the mandatory elements kept are
/// de-identified like the rest.
pub fn project(resource: &mut Json, elements: &[String]) {
    let Some(ty) = resource.get("resourceType").and_then(Json::as_str).map(str::to_string) else { return };
    let keep: Vec<&str> = elements
        .iter()
        .filter_map(|e| match e.split_once('.') {
            Some((t, el)) if t == ty => Some(el),
            Some(_) => None,
            None => Some(e.as_str()),
        })
        .collect();
    if keep.is_empty() {
        return;
    }
    let required = veil_fhir::r4().required_elements(&ty);
    let Some(map) = resource.as_object_mut() else { return };
    map.retain(|k, _| {
        let base = k.strip_prefix('_').unwrap_or(k);
        if matches!(base, "resourceType" | "id" | "meta") {
            return true;
        }
        let element = veil_fhir::r4().element_for_key(&ty, base).map_or(base, |(el, _)| el.name);
        keep.contains(&element) || required.contains(&element)
    });
    let meta = map.entry("meta").or_insert_with(|| json!({}));
    if let Some(meta) = meta.as_object_mut() {
        let tags = meta.entry("tag").or_insert_with(|| json!([]));
        if let Some(tags) = tags.as_array_mut() {
            tags.push(json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED", "display": "subsetted"}));
        }
    }
}

/// Resources per output file before a new one starts.
pub const DEFAULT_FILE_LIMIT: u64 = 10_000;

/// How a job ended.
pub enum Outcome {
    /// Done: the manifest.
    Completed(Manifest),
    /// Failed: an OperationOutcome and the HTTP status the status endpoint reports.
    Failed(u16, String),
    /// The job was cancelled or taken over while running; nothing is reported.
    Abandoned,
}

/// An OperationOutcome with one issue.
pub fn operation_outcome(severity: &str, code: &str, text: &str) -> Json {
    json!({"resourceType": "OperationOutcome", "issue": [{"severity": severity, "code": code, "diagnostics": text}]})
}

/// An export's NDJSON files as they are written: one resource type per
/// file, `TYPE-N.ndjson`, a new file after `limit` resources. Each file is
/// written whole or not at all ([`veil_util::atomic`]); dropped before
/// [`NdjsonFiles::finish`], the open file leaves nothing behind.
struct NdjsonFiles<'a> {
    dir: &'a Path,
    limit: u64,
    open: Option<(String, AtomicFile, u64)>,
    numbers: BTreeMap<String, u32>,
    done: Vec<(String, PathBuf, u64)>,
}

impl<'a> NdjsonFiles<'a> {
    fn new(dir: &'a Path, limit: u64) -> NdjsonFiles<'a> {
        NdjsonFiles { dir, limit, open: None, numbers: BTreeMap::new(), done: Vec::new() }
    }

    /// Appends one line to the current file of `resource_type`, starting
    /// the next file first when the type changes or the file is full.
    fn write(&mut self, resource_type: &str, line: &str) -> std::io::Result<()> {
        if self.open.as_ref().is_none_or(|(ty, _, count)| ty != resource_type || *count >= self.limit) {
            self.close()?;
            let n = self.numbers.entry(resource_type.to_string()).or_insert(0);
            *n += 1;
            let file = AtomicFile::create(&self.dir.join(format!("{resource_type}-{n}.ndjson")))?;
            self.open = Some((resource_type.to_string(), file, 0));
        }
        let (_, file, count) = self.open.as_mut().expect("a file is open");
        file.write_all(line.as_bytes())?;
        file.write_all(b"\n")?;
        *count += 1;
        Ok(())
    }

    fn close(&mut self) -> std::io::Result<()> {
        if let Some((ty, file, count)) = self.open.take() {
            let path = file.commit()?;
            self.done.push((ty, path, count));
        }
        Ok(())
    }

    /// Puts the last file in place; the files written, with their type
    /// and count.
    fn finish(mut self) -> std::io::Result<Vec<(String, PathBuf, u64)>> {
        self.close()?;
        Ok(std::mem::take(&mut self.done))
    }
}

/// How a worker runs jobs.
#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    /// Resources per output file.
    pub file_limit: u64,
    /// Seconds a claimed job stays this worker's without a heartbeat; a job
    /// whose worker died is taken over after this long.
    pub lease_secs: i64,
}

impl Default for WorkerConfig {
    fn default() -> WorkerConfig {
        WorkerConfig { file_limit: DEFAULT_FILE_LIMIT, lease_secs: 60 }
    }
}

/// Runs one claimed job to its end.
pub fn run_job(
    store: &dyn Store,
    storage: &Storage,
    job: &veil_store::Job,
    owner: &str,
    config: WorkerConfig,
) -> Outcome {
    let Some(record) = JobRequest::of_job(job) else {
        return Outcome::Failed(500, "the stored export request is unreadable".into());
    };
    let req = &record.export;
    // De-identification first: a missing or invalid configuration fails
    // the job before anything is written (as Azure reports it).
    let engine = match policy_engine(storage, req) {
        Ok(engine) => engine,
        Err(failed) => return failed.into(),
    };
    let patients = match patients_of(store, req, job) {
        Ok(patients) => patients,
        Err(failed) => return failed.into(),
    };
    // _typeFilter: per type, the queries a resource must match one of.
    let mut filters: BTreeMap<String, Vec<crate::search::Query>> = BTreeMap::new();
    for f in &req.type_filters {
        match crate::search::Query::parse_type_filter(f) {
            Ok(q) => filters.entry(q.resource_type.clone()).or_default().push(q),
            Err(e) => return Outcome::Failed(400, format!("_typeFilter: {e}")),
        }
    }
    let dir = storage.job_dir(&job.id, req.container.as_deref(), &job.created);
    // A job taken over after a crash starts again from a clean folder.
    let _ = fs::remove_dir_all(&dir);
    if let Err(e) = fs::create_dir_all(&dir) {
        return Outcome::Failed(500, format!("cannot create the export folder: {e}"));
    }
    let filter = ScanFilter {
        types: (!req.types.is_empty()).then(|| req.types.clone()),
        since: req.since.clone(),
        until: Some(req.until.clone().filter(|u| *u < job.created).unwrap_or_else(|| job.created.clone())),
        patients,
        deleted: false,
    };
    let mut files = NdjsonFiles::new(&dir, config.file_limit);
    let mut done: u64 = 0;
    let mut errors: Vec<Json> = Vec::new();
    let mut skipped = 0u64;
    let mut lost = false;
    let result = store.scan(&filter, &mut |s| {
        let Some(body) = s.body else { return Ok(true) };
        let queries = filters.get(&s.resource_type);
        // Parsed once, and only when something needs the tree.
        let line = if queries.is_none() && engine.is_none() && req.elements.is_empty() {
            body
        } else {
            let mut doc: Json =
                serde_json::from_str(&body).map_err(|e| veil_store::StoreError::Callback(e.to_string()))?;
            if queries.is_some_and(|qs| !qs.iter().any(|q| q.matches(&doc))) {
                return Ok(true);
            }
            if let Some(engine) = &engine {
                doc = match engine.anonymize(doc) {
                    Ok(out) => out,
                    // Fail closed: the resource is left out. The error file sits
                    // beside de-identified data, so it names the resource by type
                    // and position in the export, never by its (identifying) id.
                    Err(e) => {
                        skipped += 1;
                        errors.push(operation_outcome(
                            "error",
                            "processing",
                            &format!(
                                "{} #{skipped} of the export's skipped resources: not exported: {e}",
                                s.resource_type
                            ),
                        ));
                        return Ok(true);
                    }
                };
            }
            project(&mut doc, &req.elements);
            doc.to_string()
        };
        files.write(&s.resource_type, &line).map_err(|e| veil_store::StoreError::Callback(e.to_string()))?;
        done += 1;
        if done.is_multiple_of(5_000) {
            // Renew the lease; a cancelled or taken-over job stops here.
            let progress = json!({"resources": done}).to_string();
            if !store.heartbeat(&job.id, owner, config.lease_secs, Some(&progress)).unwrap_or(false) {
                lost = true;
                return Ok(false);
            }
        }
        Ok(true)
    });
    let files = match (lost, &result) {
        (false, Ok(_)) => match files.finish() {
            Ok(files) => files,
            Err(e) => return Outcome::Failed(500, format!("cannot write the export files: {e}")),
        },
        _ => Vec::new(),
    };
    if lost {
        let _ = fs::remove_dir_all(&dir);
        return Outcome::Abandoned;
    }
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&dir);
        return Outcome::Failed(500, format!("export failed: {e}"));
    }
    for what in &record.ignored {
        errors.push(operation_outcome(
            "information",
            "informational",
            &format!("ignored under handling=lenient: {what}"),
        ));
    }
    if lists_deletions(req) && req.anonymization_config.is_some() {
        errors.push(operation_outcome(
            "information",
            "informational",
            "deleted resources are not listed in a de-identified export: their ids are the stored ones, not de-identified",
        ));
    }
    let mut error_files = Vec::new();
    if !errors.is_empty() {
        let path = dir.join("OperationOutcome-1.ndjson");
        let text: String = errors.iter().map(|e| e.to_string() + "\n").collect();
        if veil_util::atomic::write(&path, text.as_bytes()).is_ok() {
            error_files.push(listed(&record, &job.id, "OperationOutcome", &path, errors.len() as u64));
        }
    }
    let list = |files: Vec<(String, PathBuf, u64)>| -> Vec<ManifestFile> {
        files.iter().map(|(ty, path, count)| listed(&record, &job.id, ty, path, *count)).collect()
    };
    let output = list(files);
    let deleted = match deleted_files(store, req, &filter, &dir) {
        Ok(d) => list(d),
        Err(e) => return Outcome::Failed(500, format!("cannot list deletions: {e}")),
    };
    // Last, the checksummed manifest: what `veil share` hands over and
    // `veil fetch` checks. Its presence says the folder is complete.
    // It says whether the files were de-identified, so that sharing them
    // can fail closed.
    let deidentified = match &req.anonymization_config {
        Some(policy) => match crate::share::seal(&dir, policy) {
            Ok(d) => Some(d),
            Err(e) => return Outcome::Failed(500, format!("cannot audit the de-identified export: {e}")),
        },
        None => None,
    };
    let manifest = veil_storage::manifest_of_dir(&dir)
        .map(|m| m.deidentified(deidentified.clone()).to_json())
        .and_then(|m| veil_util::atomic::write(&dir.join(veil_storage::MANIFEST_NAME), &m));
    if let Err(e) = manifest {
        return Outcome::Failed(500, format!("cannot write the export's manifest: {e}"));
    }
    if let Err(e) = storage.publish(&dir, deidentified) {
        return Outcome::Failed(500, format!("cannot upload the export: {e}"));
    }
    Outcome::Completed(Manifest {
        transaction_time: job.created.clone(),
        request: record.url.clone(),
        requires_access_token: record.client.is_some(),
        output,
        deleted,
        error: error_files,
    })
}

/// Why a job failed before it wrote anything: the status the status
/// endpoint reports, and what it says.
pub(crate) struct JobFailed(pub(crate) u16, pub(crate) String);

impl From<JobFailed> for Outcome {
    fn from(JobFailed(status, text): JobFailed) -> Outcome {
        Outcome::Failed(status, text)
    }
}

/// The engine for the request's `_anonymizationConfig`, if it names one;
/// a missing, changed or invalid configuration fails the job (400).
pub(crate) fn policy_engine(storage: &Storage, req: &ExportRequest) -> Result<Option<veil_deid::Engine>, JobFailed> {
    let Some(name) = &req.anonymization_config else { return Ok(None) };
    let failed = |text: String| JobFailed(400, text);
    let Some(text) = storage.anonymization_config(name) else {
        return Err(failed(format!(
            "the anonymization configuration '{name}' was not found in the anonymization container"
        )));
    };
    if req.anonymization_config_etag.as_deref().is_some_and(|e| e.trim_matches('"') != etag(&text)) {
        return Err(failed(format!(
            "the anonymization configuration '{name}' has changed: its ETag does not match _anonymizationConfigEtag"
        )));
    }
    match veil_deid::Policy::parse(&text) {
        Ok(p) => Ok(Some(veil_deid::Engine::new(p))),
        Err(e) => Err(failed(format!("the anonymization configuration '{name}' is invalid: {e}"))),
    }
}

/// The patients whose compartments the export is limited to: none at the
/// system level, every patient at the Patient level (unless `patient`
/// names some), the Group's members (those named, if any) at the Group level.
fn patients_of(
    store: &dyn Store,
    req: &ExportRequest,
    job: &veil_store::Job,
) -> Result<Option<Vec<String>>, JobFailed> {
    let named = (!req.patients.is_empty()).then(|| patient_ids(req));
    match (&req.level, named) {
        (Level::System, _) => Ok(None),
        (Level::Patient, Some(p)) => Ok(Some(p.into_iter().map(str::to_string).collect())),
        (Level::Patient, None) => {
            let mut ids = Vec::new();
            let every_patient = ScanFilter {
                types: Some(vec!["Patient".into()]),
                until: Some(job.created.clone()),
                ..Default::default()
            };
            store
                .scan(&every_patient, &mut |s| {
                    ids.push(s.id);
                    Ok(true)
                })
                .map_err(|e| JobFailed(500, format!("cannot list patients: {e}")))?;
            Ok(Some(ids))
        }
        (Level::Group(g), requested) => match store.group_members(g) {
            Ok(Some(members)) => Ok(Some(match requested {
                Some(p) => members.into_iter().filter(|m| p.contains(&m.as_str())).collect(),
                None => members,
            })),
            Ok(None) => Err(JobFailed(404, format!("Group {g} was not found"))),
            Err(e) => Err(JobFailed(500, format!("cannot read the group: {e}"))),
        },
    }
}

/// The ids of the patients a request names: its references (`Patient/ID`),
/// or bare ids, which job records written before the request type was
/// shared hold.
pub(crate) fn patient_ids(req: &ExportRequest) -> Vec<&str> {
    req.patients.iter().map(|r| veil_fhirpath::compartment::patient_id_of_reference(r).unwrap_or(r)).collect()
}

/// With `_since`, the deletions in the window, one file per type: each line
/// a transaction Bundle with one `DELETE` entry (bulk-export.md §2.6).
/// Tombstones leave their compartments, so only system-level exports list
/// them.
fn deleted_files(
    store: &dyn Store,
    req: &ExportRequest,
    filter: &ScanFilter,
    dir: &Path,
) -> std::io::Result<Vec<(String, PathBuf, u64)>> {
    // Fail closed: a deletion names a resource by its stored id, which a
    // de-identified export must not carry (and the folder may be shared).
    if !lists_deletions(req) || req.anonymization_config.is_some() {
        return Ok(Vec::new());
    }
    let mut by_type: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let gone = ScanFilter { deleted: true, patients: None, ..filter.clone() };
    store
        .scan(&gone, &mut |s| {
            by_type.entry(s.resource_type.clone()).or_default().push(format!("{}/{}", s.resource_type, s.id));
            Ok(true)
        })
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut out = Vec::new();
    for (ty, urls) in by_type {
        let path = dir.join(format!("{ty}-deleted-1.ndjson"));
        let text: String = urls
            .iter()
            .map(|u| json!({"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "DELETE", "url": u}}]}).to_string() + "\n")
            .collect();
        veil_util::atomic::write(&path, text.as_bytes())?;
        out.push((ty, path, urls.len() as u64));
    }
    Ok(out)
}

/// Whether the request asks for deletions: `_since` at system level.
fn lists_deletions(req: &ExportRequest) -> bool {
    req.since.is_some() && req.level == Level::System
}

/// A file of the export as its manifest lists it, with its download URL.
fn listed(record: &JobRequest, job: &str, resource_type: &str, path: &Path, count: u64) -> ManifestFile {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let url = format!("{}/_export/{job}/{name}", record.base_url.trim_end_matches('/'));
    ManifestFile { resource_type: resource_type.to_string(), url, count: Some(count) }
}

/// Deletes every finished (or failed) export kicked off more than
/// `retention_secs` ago: its files, local and cloud, then its job; the
/// number deleted.
pub fn expire_exports(store: &dyn Store, storage: &Storage, retention_secs: u64) -> usize {
    let now = veil_util::clock::now_secs();
    let Ok(jobs) = store.jobs() else { return 0 };
    let mut expired = 0;
    for j in jobs {
        let old = veil_util::clock::parse_iso(&j.created).is_some_and(|c| c + retention_secs <= now);
        if !old || !matches!(j.state, JobState::Completed | JobState::Failed | JobState::Cancelled) {
            continue;
        }
        let container = JobRequest::container_of(&j);
        if storage.remove_job(&j.id, container.as_deref(), &j.created).is_ok()
            && store.delete_job(&j.id).unwrap_or(false)
        {
            expired += 1;
        }
    }
    expired
}

/// Claims and runs jobs until `stop` says so; sleeps briefly when idle.
pub fn worker_loop(
    store: &dyn Store,
    storage: &Storage,
    owner: &str,
    config: WorkerConfig,
    stop: &std::sync::atomic::AtomicBool,
) {
    use std::sync::atomic::Ordering;
    while !stop.load(Ordering::Relaxed) {
        let job = match store.claim_job(owner, config.lease_secs) {
            Ok(Some(job)) => job,
            Ok(None) | Err(_) => {
                std::thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
        };
        match run_job(store, storage, &job, owner, config) {
            Outcome::Completed(manifest) => {
                let manifest = serde_json::to_string(&manifest).expect("a manifest serialises");
                let _ = store.finish_job(&job.id, owner, JobState::Completed, &manifest);
            }
            Outcome::Failed(status, text) => {
                let body = json!({"status": status, "outcome": operation_outcome("error", "processing", &text)});
                let _ = store.finish_job(&job.id, owner, JobState::Failed, &body.to_string());
            }
            Outcome::Abandoned => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job record as `veil serve` wrote it before the request type was
    /// shared with the bulk client: `null` lists, bare patient ids.
    const RECORD_BEFORE_SHARING: &str = r#"{"level":{"group":"g1"},"url":"http://x/Group/g1/$export","types":null,
        "since":null,"until":null,"patients":["p1","p2"],"anonymizationConfig":"safe.json",
        "anonymizationConfigEtag":null,"container":"study","typeFilters":[],"ignored":["the includeAssociatedData parameter"],
        "elements":[],"baseUrl":"http://x","client":"c1"}"#;

    #[test]
    fn job_records_written_before_the_request_was_shared_still_read() {
        let job = veil_store::Job {
            id: "j".into(),
            request: RECORD_BEFORE_SHARING.into(),
            state: JobState::Queued,
            created: "2026-01-01T00:00:00Z".into(),
            lease_owner: None,
            lease_until: None,
            attempts: 0,
            progress: None,
            result: None,
            error: None,
        };
        let record = JobRequest::of_job(&job).expect("the old record reads");
        assert_eq!(record.export.level, Level::Group("g1".into()));
        assert!(record.export.types.is_empty(), "null types: every type");
        assert_eq!(patient_ids(&record.export), ["p1", "p2"]);
        assert_eq!(record.export.anonymization_config.as_deref(), Some("safe.json"));
        assert_eq!(JobRequest::container_of(&job).as_deref(), Some("study"));
        assert_eq!((record.client.as_deref(), record.ignored.len()), (Some("c1"), 1));
        // What it writes now reads back the same, references and all.
        let mut now = record.clone();
        now.export.patients = vec!["Patient/p1".into(), "Patient/p2".into()];
        let again: JobRequest = serde_json::from_str(&serde_json::to_string(&now).unwrap()).unwrap();
        assert_eq!(again, now);
        assert_eq!(patient_ids(&again.export), ["p1", "p2"]);
    }
}

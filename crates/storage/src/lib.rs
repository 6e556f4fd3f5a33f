//! Where Veil's files go, and how they are handed to a research team.
//!
//! * [`Location`]: a destination as users write it (a path, `file://`,
//!   `s3://bucket/prefix`, `az://container/prefix`, `gs://bucket/prefix`).
//! * [`Storage`]: writes and reads files there through `object_store`, with
//!   each cloud's usual environment variables for credentials. Every file is
//!   written whole or not at all (a local file under a temporary name then
//!   renamed; an object by one PUT, or a multipart upload completed only at
//!   the end), and [`Storage::upload_dir`] writes the [`Manifest`] (size and
//!   SHA-256 of each file) last, so a reader that finds it finds everything.
//! * [`share`]: read-only links that expire: Azure service SAS (read and
//!   list, signed here), S3 and GCS presigned GETs listed in a share
//!   manifest, and Veil-signed tokens that `veil serve` checks.
//! * [`fetch`]: the research team's side: follow a link, download every
//!   file, check it against the manifest, resume when cut off.
//!
//! The API is blocking: each [`Storage`] drives its own small runtime, so
//! call it from a thread that is not running async tasks.

pub mod azure;
pub mod fetch;
mod lifetime;
mod location;
mod manifest;
mod s3_post;
pub mod share;

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt as _;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorage, GoogleCloudStorageBuilder};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer as _;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload, WriteMultipart};

pub use lifetime::parse_lifetime;
pub use location::Location;
pub use manifest::{
    Deidentified, FileEntry, MANIFEST_NAME, Manifest, Verdict, digest, digest_file, files_below, manifest_of_dir,
};
pub use s3_post::PresignedPost;

/// Files larger than this go up in parts of this size (S3 needs at least
/// 5 MiB per part); memory stays at two parts per upload.
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// Why storage failed. Messages name locations and files, never a key, a
/// token or file content.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A destination that cannot be read.
    #[error("{0}")]
    Location(String),
    /// The store refused or failed.
    #[error("{location}: {message}")]
    Store { location: String, message: String },
    /// There is no such object (or no such bucket or container).
    #[error("{0}: not found")]
    NotFound(String),
    /// A local file.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Something that cannot be done with this kind of storage.
    #[error("{0}")]
    Unsupported(String),
}

/// A destination opened for writing and reading.
pub struct Storage {
    location: Location,
    backend: Backend,
    root: String,
    /// Always `Some` until dropped; see [`Storage::block_on`] and the `Drop` impl.
    runtime: Option<tokio::runtime::Runtime>,
    /// For S3: where POST uploads go and the region that signs them.
    s3_bucket: Option<S3Bucket>,
}

/// Servers keep a `Storage` in their state, which their runtime drops on
/// one of its threads, where tokio forbids the blocking shutdown of a
/// dropped runtime. Every call has finished by then (the API is blocking),
/// so the runtime is let go without waiting.
impl Drop for Storage {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

struct S3Bucket {
    name: String,
    region: String,
    url: String,
}

impl S3Bucket {
    /// The bucket's URL as object_store reaches it (its own rule: a
    /// virtual-hosted endpoint names the bucket already, any other gets it
    /// as the first path segment), so that uploads go where reads do.
    fn of(builder: &AmazonS3Builder, name: &str) -> S3Bucket {
        let get = |key| builder.get_config_value(&key);
        let region = get(AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".to_string());
        let endpoint = get(AmazonS3ConfigKey::S3Endpoint).or_else(|| get(AmazonS3ConfigKey::Endpoint));
        let virtual_hosted =
            get(AmazonS3ConfigKey::VirtualHostedStyleRequest).is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let url = match (endpoint, virtual_hosted) {
            (Some(endpoint), true) => endpoint,
            (Some(endpoint), false) => format!("{}/{name}", endpoint.trim_end_matches('/')),
            (None, true) => format!("https://{name}.s3.{region}.amazonaws.com"),
            (None, false) => format!("https://s3.{region}.amazonaws.com/{name}"),
        };
        S3Bucket { name: name.to_string(), region, url }
    }
}

enum Backend {
    Local(LocalFileSystem),
    S3(AmazonS3),
    Azure(MicrosoftAzure),
    Gcs(GoogleCloudStorage),
}

impl Storage {
    /// Opens a destination; a local folder is created if missing. Cloud
    /// credentials come from the environment: `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT`…;
    /// `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY` (or
    /// `AZURE_STORAGE_USE_EMULATOR=true` for Azurite)…;
    /// `GOOGLE_SERVICE_ACCOUNT` / `GOOGLE_APPLICATION_CREDENTIALS`.
    pub fn open(location: &Location) -> Result<Storage, StorageError> {
        let failed =
            |e: object_store::Error| StorageError::Store { location: location.to_string(), message: describe(&e) };
        let mut s3_bucket = None;
        let (backend, root) = match location {
            Location::Local(dir) => {
                std::fs::create_dir_all(dir)?;
                (Backend::Local(LocalFileSystem::new_with_prefix(dir).map_err(failed)?), String::new())
            }
            Location::S3 { bucket, prefix } => {
                let builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                s3_bucket = Some(S3Bucket::of(&builder, bucket));
                (Backend::S3(builder.build().map_err(failed)?), prefix.clone())
            }
            Location::Azure { container, prefix } => {
                let mut builder = MicrosoftAzureBuilder::from_env().with_container_name(container);
                if azure::use_emulator() {
                    builder = builder.with_use_emulator(true);
                }
                (Backend::Azure(builder.build().map_err(failed)?), prefix.clone())
            }
            Location::Gcs { bucket, prefix } => {
                let gcs = GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket).build().map_err(failed)?;
                (Backend::Gcs(gcs), prefix.clone())
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(Storage { location: location.clone(), backend, root, runtime: Some(runtime), s3_bucket })
    }

    /// Opens a destination written as text (see [`Location::parse`]).
    pub fn open_str(text: &str) -> Result<Storage, StorageError> {
        Storage::open(&Location::parse(text)?)
    }

    /// Runs `future` to completion on this storage's own runtime.
    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.as_ref().expect("the runtime lives as long as the storage").block_on(future)
    }

    /// Where this is.
    pub fn location(&self) -> &Location {
        &self.location
    }

    fn store(&self) -> &dyn ObjectStore {
        match &self.backend {
            Backend::Local(s) => s,
            Backend::S3(s) => s,
            Backend::Azure(s) => s,
            Backend::Gcs(s) => s,
        }
    }

    /// The object path of `name` below this destination.
    fn path(&self, name: &str) -> Result<ObjectPath, StorageError> {
        if !is_safe_relative_path(name) {
            return Err(StorageError::Location(format!("'{name}' is not a file name Veil writes")));
        }
        Ok(ObjectPath::from(if self.root.is_empty() { name.to_string() } else { format!("{}/{name}", self.root) }))
    }

    fn failed(&self, name: &str) -> impl Fn(object_store::Error) -> StorageError + '_ {
        let location = if name.is_empty() { self.location.to_string() } else { self.location.join(name).to_string() };
        move |e| match e {
            object_store::Error::NotFound { .. } => StorageError::NotFound(location.clone()),
            other => StorageError::Store { location: location.clone(), message: describe(&other) },
        }
    }

    /// Checks that the destination can be listed (the bucket or container
    /// exists and the credentials open it) before work is done for it.
    pub fn check(&self) -> Result<(), StorageError> {
        let prefix = (!self.root.is_empty()).then(|| ObjectPath::from(self.root.as_str()));
        let first = self.block_on(async { self.store().list(prefix.as_ref()).next().await.transpose() });
        let missing = || {
            StorageError::Location(format!(
                "{}: the bucket or container does not exist (Veil does not create it)",
                self.location
            ))
        };
        match first {
            Ok(_) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => Err(missing()),
            // A listing's 404 reaches object_store as a generic error.
            Err(e) if ["NoSuchBucket", "ContainerNotFound"].iter().any(|code| describe(&e).ends_with(code)) => {
                Err(missing())
            }
            Err(e) => Err(self.failed("")(e)),
        }
    }

    /// Writes `bytes` as `name`, whole or not at all.
    pub fn put_bytes(&self, name: &str, bytes: Vec<u8>) -> Result<FileEntry, StorageError> {
        let path = self.path(name)?;
        let (sha256, size) = digest(bytes.as_slice())?;
        self.block_on(self.store().put(&path, PutPayload::from(bytes))).map_err(self.failed(name))?;
        Ok(FileEntry { path: name.to_string(), size, sha256 })
    }

    /// Copies the local file `from` to `name`, computing its SHA-256 on the
    /// way; large files go up in [`PART_SIZE`] parts, and a failed upload
    /// is aborted so no partial object is left.
    pub fn put_file(&self, name: &str, from: &Path) -> Result<FileEntry, StorageError> {
        use sha2::Digest as _;
        use std::io::Read as _;
        let path = self.path(name)?;
        let mut file = std::fs::File::open(from)?;
        if file.metadata()?.len() <= PART_SIZE as u64 {
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            return self.put_bytes(name, bytes);
        }
        let mut hasher = sha2::Sha256::new();
        let mut size = 0u64;
        let store = self.store();
        let result: Result<(), StorageError> = self.block_on(async {
            let upload = store.put_multipart(&path).await.map_err(self.failed(name))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            let mut buf = vec![0u8; PART_SIZE];
            loop {
                let n = match file.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = writer.abort().await;
                        return Err(e.into());
                    }
                };
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                size += n as u64;
                // At most two parts in flight: memory stays bounded.
                if let Err(e) = writer.wait_for_capacity(2).await {
                    return Err(self.failed(name)(e));
                }
                writer.write(&buf[..n]);
            }
            writer.finish().await.map_err(self.failed(name))?;
            Ok(())
        });
        result?;
        Ok(FileEntry { path: name.to_string(), size, sha256: veil_util::hex::encode(&hasher.finalize()) })
    }

    /// Uploads every file below the local folder `dir` (but Veil's working
    /// files and a manifest found there: [`files_below`]), then the manifest of what was uploaded,
    /// stating how it was `deidentified`, last. `each` hears of each file
    /// as it is done.
    pub fn upload_dir(
        &self,
        dir: &Path,
        deidentified: Option<Deidentified>,
        each: &mut dyn FnMut(&FileEntry),
    ) -> Result<Manifest, StorageError> {
        let mut files = Vec::new();
        for name in files_below(dir)? {
            let entry = self.put_file(&name, &dir.join(&name))?;
            each(&entry);
            files.push(entry);
        }
        let manifest = Manifest::new(files).deidentified(deidentified);
        self.put_bytes(MANIFEST_NAME, manifest.to_json())?;
        Ok(manifest)
    }

    /// Reads `name` whole.
    pub fn get(&self, name: &str) -> Result<Vec<u8>, StorageError> {
        let path = self.path(name)?;
        let bytes = self.block_on(async { self.store().get(&path).await?.bytes().await }).map_err(self.failed(name))?;
        Ok(bytes.to_vec())
    }

    /// The manifest written last; an error if there is none (the files are
    /// not all there, or this is not a Veil destination).
    pub fn read_manifest(&self) -> Result<Manifest, StorageError> {
        let bytes = self.get(MANIFEST_NAME).map_err(|e| match e {
            StorageError::NotFound(location) => StorageError::Location(format!(
                "{location} is missing: {} holds no complete Veil export (the manifest is written last)",
                self.location
            )),
            other => other,
        })?;
        Manifest::from_json(&bytes)
            .map_err(|e| StorageError::Location(format!("{}: {e}", self.location.join(MANIFEST_NAME))))
    }

    /// The names of everything below this destination, sorted.
    pub fn list(&self) -> Result<Vec<String>, StorageError> {
        self.list_below("")
    }

    /// The names (from the top of this destination) of everything below
    /// its folder `dir`, sorted.
    pub fn list_below(&self, dir: &str) -> Result<Vec<String>, StorageError> {
        let below = [self.root.as_str(), dir].into_iter().filter(|p| !p.is_empty()).collect::<Vec<_>>().join("/");
        let prefix = (!below.is_empty()).then(|| ObjectPath::from(below.as_str()));
        let mut names: Vec<String> = self
            .block_on(async {
                let mut out = Vec::new();
                let mut listing = self.store().list(prefix.as_ref());
                while let Some(meta) = listing.next().await {
                    out.push(meta?.location.to_string());
                }
                Ok::<_, object_store::Error>(out)
            })
            .map_err(self.failed(""))?;
        if !self.root.is_empty() {
            let strip = format!("{}/", self.root);
            names = names.into_iter().filter_map(|n| n.strip_prefix(&strip).map(str::to_string)).collect();
        }
        names.sort();
        Ok(names)
    }

    /// An Azure URL that reads `name` as the container's stored access
    /// policy `policy` allows.
    pub fn azure_blob_sas(
        &self,
        name: &str,
        policy: &azure::AccessPolicy,
        ip: Option<&share::Cidr>,
    ) -> Result<String, StorageError> {
        let Location::Azure { container, .. } = &self.location else {
            return Err(StorageError::Unsupported(format!("{} is not in Azure", self.location)));
        };
        Ok(azure::Account::from_env()?.blob_sas_url(container, self.path(name)?.as_ref(), policy, ip))
    }

    /// Deletes everything below this destination, the manifest first (so a
    /// reader never finds a manifest whose files are going).
    pub fn delete_all(&self) -> Result<usize, StorageError> {
        let names = self.list()?;
        let (manifest, rest): (Vec<String>, Vec<String>) = names.into_iter().partition(|n| n == MANIFEST_NAME);
        for name in manifest.iter().chain(&rest) {
            match self.delete(name) {
                Ok(()) | Err(StorageError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(manifest.len() + rest.len())
    }

    /// Deletes `name`.
    pub fn delete(&self, name: &str) -> Result<(), StorageError> {
        let path = self.path(name)?;
        self.block_on(self.store().delete(&path)).map_err(self.failed(name))
    }

    /// A form that uploads one object, `name`, of at most `max_bytes`, until
    /// `lifetime` has passed: S3's presigned POST, signed with the
    /// credentials object_store found.
    pub fn presigned_post(
        &self,
        name: &str,
        max_bytes: u64,
        lifetime: Duration,
    ) -> Result<PresignedPost, StorageError> {
        let path = self.path(name)?;
        let (Backend::S3(s3), Some(bucket)) = (&self.backend, &self.s3_bucket) else {
            return Err(StorageError::Unsupported(format!("{}: presigned POST uploads are S3's", self.location)));
        };
        let credential = self.block_on(s3.credentials().get_credential()).map_err(self.failed(name))?;
        let now = veil_util::clock::now_secs();
        let grant = s3_post::PostGrant {
            bucket: &bucket.name,
            region: &bucket.region,
            key: path.as_ref(),
            max_bytes,
            now,
            expires: now + lifetime.as_secs(),
        };
        let signer = s3_post::Signer {
            key_id: &credential.key_id,
            secret_key: &credential.secret_key,
            token: credential.token.as_deref(),
        };
        Ok(PresignedPost { url: bucket.url.clone(), fields: s3_post::sign(&grant, &signer) })
    }

    /// A URL that reads `name` until `lifetime` has passed, signed as the
    /// cloud's own SDK would: S3 SigV4 and GCS V4 presigned GETs.
    pub fn presigned_get(&self, name: &str, lifetime: Duration) -> Result<String, StorageError> {
        let path = self.path(name)?;
        let url = match &self.backend {
            Backend::S3(s3) => {
                self.block_on(s3.signed_url(reqwest::Method::GET, &path, lifetime)).map_err(self.failed(name))?
            }
            Backend::Gcs(gcs) => {
                self.block_on(gcs.signed_url(reqwest::Method::GET, &path, lifetime)).map_err(self.failed(name))?
            }
            Backend::Azure(_) => {
                return Err(StorageError::Unsupported(
                    "an Azure share names a stored access policy: use Storage::azure_blob_sas".into(),
                ));
            }
            Backend::Local(_) => {
                return Err(StorageError::Unsupported(
                    "a local folder has no presigned URLs: share it through `veil serve` (a Veil link)".into(),
                ));
            }
        };
        Ok(url.to_string())
    }
}

/// An object_store error in a sentence. Its Display nests the HTTP error
/// and the server's XML; the status and the cloud's error code are what a
/// person needs (`404 Not Found: ContainerNotFound`), else its first line.
fn describe(e: &object_store::Error) -> String {
    let text = e.to_string();
    let status = text.split("status code: ").nth(1).and_then(|s| s.split(':').next()).map(str::trim);
    let code = xml_text(&text, "Code");
    if text.contains("token request") {
        return format!(
            "no credentials: the token request failed ({}); set the cloud's credential variables",
            status.unwrap_or("no answer")
        );
    }
    match (status, code) {
        (Some(status), Some(code)) => format!("{status}: {code}"),
        (Some(status), None) => status.to_string(),
        _ => text.lines().next().unwrap_or_default().chars().take(300).collect(),
    }
}

/// The text of the first `<tag>` in a cloud's XML error (`Code`,
/// `Message`…); cheaper and more forgiving than parsing a document that
/// may be cut short.
pub(crate) fn xml_text<'a>(body: &'a str, tag: &str) -> Option<&'a str> {
    let start = body.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = body[start..].find(&format!("</{tag}>"))? + start;
    Some(&body[start..end])
}

/// HMAC-SHA256 of `text` under `key`: Veil's share tokens and Azure's
/// signatures.
pub(crate) fn hmac_sha256(key: &[u8], text: &str) -> hmac::Hmac<sha2::Sha256> {
    use hmac::{KeyInit as _, Mac as _};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(text.as_bytes());
    mac
}

/// `name` percent-encoded for a URL path, its `/` kept.
pub fn encode_path(name: &str) -> String {
    azure::encode_path(name)
}

/// Whether `name` is a relative, `/`-separated name with nothing that could
/// climb out of its folder: no empty, `.` or `..` segment, no backslash,
/// no control character.
///
/// ```
/// assert!(veil_storage::is_safe_relative_path("Patient-1.ndjson"));
/// assert!(veil_storage::is_safe_relative_path("2026/job/Patient-1.ndjson"));
/// for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "a\\b", "./a", "a/", "a\nb"] {
///     assert!(!veil_storage::is_safe_relative_path(bad), "{bad:?}");
/// }
/// ```
pub fn is_safe_relative_path(name: &str) -> bool {
    !name.is_empty()
        && name.split('/').all(|seg| {
            !seg.is_empty() && seg != "." && seg != ".." && !seg.chars().any(|c| c == '\\' || c.is_control())
        })
}

//! Sending a study's data package to a Cumulus aggregator (reference:
//! cumulus.md §3.1): the same checks `cumulus-library upload` makes on the
//! zip, then the handshake: a JSON prefetch with Basic auth answered by a
//! presigned POST (`url` + `fields`), and a multipart upload answered 204.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow_array::Array;
use serde_json::{Value as Json, json};

/// Why an upload could not be made. Never carries the site id.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    /// The data package is missing or not fit to send.
    #[error("{0}")]
    Package(String),
    /// The aggregator refused, or could not be reached.
    #[error("{0}")]
    Aggregator(String),
}

/// Member names an aggregator accepts: aggregates and metadata, never
/// line-level data (`.archive.`).
const ALLOWED: [&str; 5] = [".cube.", ".annotated_cube.", ".flat.", ".meta.", "manifest.toml"];

/// Attempts for a request that fails transiently (connection, 429, 5xx).
const ATTEMPTS: u32 = 3;

/// A study's data package, found and checked.
#[derive(Debug, Clone)]
pub struct Package {
    /// The study.
    pub study: String,
    /// `<data_path>/…/<study>/<study>.zip`.
    pub zip: PathBuf,
    /// `data_package_version`, read from the `meta_version` table.
    pub version: i64,
    /// Each member's name and size.
    pub members: Vec<(String, u64)>,
}

/// Where to send, and as whom.
#[derive(Debug, Clone)]
pub struct Aggregator {
    /// The aggregator's URL (`https://aggregator.smartcumulus.org/`).
    pub url: String,
    /// The research network, appended to the URL when given.
    pub network: Option<String>,
    /// `CUMULUS_AGGREGATOR_USER`.
    pub user: String,
    /// `CUMULUS_AGGREGATOR_ID`, the site's secret: sent, never shown.
    pub site_id: String,
    /// How long to wait for the aggregator's verdict when the zip went to
    /// its storage (S3) rather than to itself; zero: do not wait.
    pub wait: Duration,
}

impl Aggregator {
    /// The handshake endpoint.
    pub fn endpoint(&self) -> String {
        match &self.network {
            Some(n) => format!("{}/{n}", self.url.trim_end_matches('/')),
            None => self.url.clone(),
        }
    }
}

impl Package {
    /// Finds `<study>/<study>.zip` under `data_path` and checks it as the
    /// Cumulus client does: only allowed members, `meta_date` present.
    pub fn find(data_path: &Path, study: &str) -> Result<Package, UploadError> {
        let zip = find_zip(data_path, &format!("{study}.zip"), study, 0).ok_or_else(|| {
            UploadError::Package(format!(
                "no {study}/{study}.zip under {}: run veil study export {study} first",
                data_path.display()
            ))
        })?;
        let unreadable =
            |e: &dyn std::fmt::Display| UploadError::Package(format!("{} is not a readable zip: {e}", zip.display()));
        let mut archive =
            zip::ZipArchive::new(std::fs::File::open(&zip).map_err(|e| unreadable(&e))?).map_err(|e| unreadable(&e))?;
        let mut members = Vec::new();
        let mut version = None;
        for i in 0..archive.len() {
            let mut file = archive.by_index(i).map_err(|e| unreadable(&e))?;
            let name = file.name().map_err(|e| unreadable(&e))?.to_string();
            if !ALLOWED.iter().any(|a| name.contains(a)) {
                return Err(UploadError::Package(format!(
                    "{} holds {name}, which is not a cube, flat, meta or manifest file: aggregators accept no line-level data",
                    zip.display()
                )));
            }
            if name.ends_with("__meta_version.meta.parquet") && version.is_none() {
                let mut bytes = Vec::new();
                file.read_to_end(&mut bytes).map_err(|e| unreadable(&e))?;
                version = Some(
                    read_version(bytes)
                        .ok_or_else(|| UploadError::Package(format!("{name} holds no data_package_version")))?,
                );
            }
            members.push((name, file.size()));
        }
        if !members.iter().any(|(n, _)| *n == format!("{study}__meta_date.meta.parquet")) {
            return Err(UploadError::Package(format!(
                "{} has no {study}__meta_date.meta.parquet, which aggregators require",
                zip.display()
            )));
        }
        Ok(Package { study: study.to_string(), zip, version: version.unwrap_or(0), members })
    }

    /// The prefetch body, as the Cumulus client sends it.
    pub fn prefetch_body(&self, user: &str) -> Json {
        json!({"study": self.study, "data_package_version": self.version, "filename": format!("{user}_{}.zip", self.study)})
    }
}

fn find_zip(dir: &Path, file: &str, study: &str, depth: usize) -> Option<PathBuf> {
    let candidate = dir.join(study).join(file);
    if candidate.is_file() {
        return Some(candidate);
    }
    if depth >= 4 {
        return None;
    }
    let mut subdirs: Vec<PathBuf> =
        std::fs::read_dir(dir).ok()?.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).collect();
    subdirs.sort();
    subdirs.iter().find_map(|d| find_zip(d, file, study, depth + 1))
}

/// The first value of the first column of a one-table Parquet file.
fn read_version(bytes: Vec<u8>) -> Option<i64> {
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
        .ok()?
        .build()
        .ok()?;
    let batch = reader.into_iter().next()?.ok()?;
    let column = batch.column(0);
    if column.is_empty() || column.is_null(0) {
        return None;
    }
    let any = column.as_any();
    if let Some(a) = any.downcast_ref::<arrow_array::Int32Array>() {
        return Some(a.value(0).into());
    }
    if let Some(a) = any.downcast_ref::<arrow_array::Int64Array>() {
        return Some(a.value(0));
    }
    // As the Cumulus client does: int(float(v)) of a text version.
    any.downcast_ref::<arrow_array::StringArray>().and_then(|a| a.value(0).parse::<f64>().ok()).map(|v| v as i64)
}

/// Sends `package` to `aggregator`, telling `progress` each step.
pub fn upload(aggregator: &Aggregator, package: &Package, progress: &mut dyn FnMut(&str)) -> Result<(), UploadError> {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .map_err(|e| UploadError::Aggregator(e.to_string()))?;
    let endpoint = aggregator.endpoint();
    progress(&format!("asking {endpoint} where to put {} (data package version {})", package.study, package.version));
    let body = package.prefetch_body(&aggregator.user);
    let response = with_retries(progress, || {
        http.post(&endpoint)
            .basic_auth(&aggregator.user, Some(&aggregator.site_id))
            .json(&body)
            .timeout(Duration::from_secs(60))
            .send()
    })?;
    let status = response.status().as_u16();
    // A Veil aggregator says where to ask what became of the upload.
    let status_url = response.headers().get("x-veil-status").and_then(|h| h.to_str().ok()).map(str::to_string);
    let text = response.text().unwrap_or_default();
    match status {
        200 => {}
        401 => {
            return Err(UploadError::Aggregator(format!(
                "the aggregator refused the credentials ({status}): check CUMULUS_AGGREGATOR_USER and CUMULUS_AGGREGATOR_ID, and that {endpoint} is your network's URL"
            )));
        }
        403 => {
            return Err(UploadError::Aggregator(format!(
                "the aggregator accepted the credentials but not this upload (403): {}; ask its operators for permission",
                first_line(&text)
            )));
        }
        412 => {
            return Err(UploadError::Aggregator(format!(
                "the aggregator is still processing this site's previous upload of {} (412); try again in a few minutes",
                package.study
            )));
        }
        _ => {
            return Err(UploadError::Aggregator(format!(
                "the aggregator answered {status} to the upload request: {}",
                first_line(&text)
            )));
        }
    }
    let presigned: Json = serde_json::from_str(&text).map_err(|_| {
        UploadError::Aggregator("the aggregator's answer is not the JSON {url, fields} of a presigned upload".into())
    })?;
    let (Some(url), Some(fields)) = (presigned["url"].as_str(), presigned["fields"].as_object()) else {
        return Err(UploadError::Aggregator("the aggregator's answer has no url and fields for the upload".into()));
    };
    let bytes = std::fs::read(&package.zip)
        .map_err(|e| UploadError::Package(format!("cannot read {}: {e}", package.zip.display())))?;
    progress(&format!("uploading {} ({} bytes)", package.zip.display(), bytes.len()));
    let filename = format!("{}_{}.zip", aggregator.user, package.study);
    let response = with_retries(progress, || {
        let mut form = reqwest::blocking::multipart::Form::new();
        for (name, value) in fields {
            form = form.text(name.clone(), value.as_str().map_or_else(|| value.to_string(), str::to_string));
        }
        let part = reqwest::blocking::multipart::Part::bytes(bytes.clone()).file_name(filename.clone());
        http.post(url).multipart(form.part("file", part)).send()
    })?;
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(UploadError::Aggregator(format!(
            "the upload was refused ({status}): {}",
            first_line(&response.text().unwrap_or_default())
        )));
    }
    progress(&format!("uploaded {} ({status})", package.study));
    if let Some(outcome) = response.headers().get("x-veil-outcome").and_then(|h| h.to_str().ok()) {
        progress(&format!("the aggregator checked it: {outcome}"));
        return Ok(());
    }
    match status_url {
        Some(url) if !aggregator.wait.is_zero() && same_origin(&url, &endpoint) => {
            await_verdict(&http, aggregator, &url, progress)
        }
        _ => {
            progress("the aggregator checks it on its own");
            Ok(())
        }
    }
}

/// Asks the aggregator what became of an upload that went to its storage,
/// every second until it has been checked or `aggregator.wait` has passed.
fn await_verdict(
    http: &reqwest::blocking::Client,
    aggregator: &Aggregator,
    url: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<(), UploadError> {
    progress("waiting for the aggregator to check it");
    let deadline = std::time::Instant::now() + aggregator.wait;
    loop {
        let answer = http
            .get(url)
            .basic_auth(&aggregator.user, Some(&aggregator.site_id))
            .timeout(Duration::from_secs(30))
            .send();
        if let Ok(r) = answer {
            let status = r.status().as_u16();
            let body: Json = r.json().unwrap_or(Json::Null);
            match (status, body["state"].as_str()) {
                (200, Some("waiting")) | (500.., _) => {}
                (200, Some("refused")) => {
                    return Err(UploadError::Aggregator(format!(
                        "the aggregator refused the upload: {}",
                        body["message"].as_str().unwrap_or("no reason given")
                    )));
                }
                (200, Some(outcome)) => {
                    progress(&format!("the aggregator checked it: {outcome}"));
                    return Ok(());
                }
                _ => {
                    return Err(UploadError::Aggregator(format!(
                        "the aggregator has no record of this upload ({status}); ask its operators"
                    )));
                }
            }
        }
        if std::time::Instant::now() >= deadline {
            progress(&format!(
                "not checked within {} s; the aggregator checks it later on its own",
                aggregator.wait.as_secs()
            ));
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Whether two URLs share scheme, host and port: the site's credentials
/// go only where the handshake went.
fn same_origin(a: &str, b: &str) -> bool {
    match (reqwest::Url::parse(a), reqwest::Url::parse(b)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

/// Runs `send` until it gets an answer that is not transient, at most
/// [`ATTEMPTS`] times, waiting 1, then 2 seconds between.
fn with_retries(
    progress: &mut dyn FnMut(&str),
    mut send: impl FnMut() -> reqwest::Result<reqwest::blocking::Response>,
) -> Result<reqwest::blocking::Response, UploadError> {
    let mut wait = Duration::from_secs(1);
    for attempt in 1..=ATTEMPTS {
        let why = match send() {
            Ok(r) if !(r.status().is_server_error() || r.status().as_u16() == 429) => return Ok(r),
            Ok(r) if attempt == ATTEMPTS => {
                return Err(UploadError::Aggregator(format!(
                    "the aggregator kept failing ({}): try again later, or ask its operators",
                    r.status().as_u16()
                )));
            }
            Ok(r) => format!("the aggregator answered {}", r.status().as_u16()),
            Err(e) if attempt == ATTEMPTS => {
                return Err(UploadError::Aggregator(format!("cannot reach the aggregator: {}", e.without_url())));
            }
            Err(e) => format!("cannot reach the aggregator ({})", e.without_url()),
        };
        progress(&format!("{why}; trying again in {} s", wait.as_secs()));
        std::thread::sleep(wait);
        wait *= 2;
    }
    unreachable!("the last attempt returns")
}

/// The first line of an answer, at most 200 characters; a JSON string
/// (as aggregators send messages) without its quotes; of S3's XML error,
/// its code and message.
fn first_line(text: &str) -> String {
    let tag =
        |name: &str| Some(text.split(&format!("<{name}>")).nth(1)?.split(&format!("</{name}>")).next()?.to_string());
    let text = match (tag("Code"), tag("Message")) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code,
        _ => serde_json::from_str::<String>(text).unwrap_or_else(|_| text.to_string()),
    };
    text.lines().next().unwrap_or("").chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    /// A zip under `dir/flu/flu.zip` holding `members` (empty files).
    fn package(dir: &Path, members: &[&str]) {
        std::fs::create_dir_all(dir.join("flu")).unwrap();
        let mut zip = zip::ZipWriter::new(std::fs::File::create(dir.join("flu/flu.zip")).unwrap());
        for m in members {
            zip.start_file(*m, zip::write::SimpleFileOptions::default()).unwrap();
            zip.write_all(b"").unwrap();
        }
        zip.finish().unwrap();
    }

    #[test]
    fn only_aggregates_with_a_meta_date_are_sent() {
        let dir = std::env::temp_dir().join(format!("veil-upload-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        package(&dir, &["flu__count.cube.parquet", "flu__meta_date.meta.parquet", "manifest.toml"]);
        let found = Package::find(&dir, "flu").unwrap();
        assert_eq!((found.version, found.members.len()), (0, 3), "no meta_version: version 0, as Cumulus does");
        package(&dir, &["flu__count.cube.parquet", "flu__meta_date.meta.parquet", "flu__patients.archive.parquet"]);
        assert!(Package::find(&dir, "flu").unwrap_err().to_string().contains("line-level"));
        package(&dir, &["flu__count.cube.parquet"]);
        assert!(Package::find(&dir, "flu").unwrap_err().to_string().contains("meta_date"));
        assert!(Package::find(&dir, "covid").unwrap_err().to_string().contains("veil study export covid"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_network_is_a_path_under_the_url() {
        let mut a = Aggregator {
            url: "https://agg.example/".into(),
            network: None,
            user: "u".into(),
            site_id: "s".into(),
            wait: Duration::ZERO,
        };
        assert_eq!(a.endpoint(), "https://agg.example/");
        a.network = Some("flu-net".into());
        assert_eq!(a.endpoint(), "https://agg.example/flu-net");
    }
}

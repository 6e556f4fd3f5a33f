//! `veil fetch`: the research team's side of a share. Follows a link of any
//! kind, downloads every file into a folder, checks each against the
//! export's manifest, and resumes where an earlier run was cut off.
//!
//! A link's query string is its signature, so no message here contains a
//! URL: errors name the file and what the server said.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};
use reqwest::header::{CONTENT_RANGE, RANGE};

use crate::share::{ShareManifest, SharedFile};
use crate::{FileEntry, MANIFEST_NAME, Manifest, digest_file, encode_path, xml_text};

/// Why a fetch stopped. No variant holds a link or a signature.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The link has expired.
    #[error("the share link has expired{0}: ask the data provider for a new one")]
    Expired(String),
    /// The link was revoked.
    #[error("the share link was revoked{0}: ask the data provider whether a new one will be issued")]
    Revoked(String),
    /// Refused for another reason.
    #[error("the share refused the download ({status}): {reason}")]
    Refused { status: u16, reason: String },
    /// A file does not match the manifest.
    #[error(
        "{file}: the download does not match the manifest ({what}), so it was deleted; run the same command again, and if it fails again the shared copy is damaged: tell the data provider"
    )]
    Corrupt { file: String, what: String },
    /// Not a share link Veil understands.
    #[error("{0}")]
    Link(String),
    /// The network.
    #[error("cannot reach the share: {0}")]
    Http(String),
    /// The destination folder.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// What a fetch reports as it goes.
pub enum Event<'a> {
    /// What the share holds: files and bytes.
    Planned { files: usize, bytes: u64 },
    /// Bytes arrived.
    Bytes(u64),
    /// A file is in place (`reused`: it was there already, intact).
    File { file: &'a SharedFile, reused: bool },
}

/// What a fetch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Files the share holds.
    pub files: usize,
    /// Files already in the folder and intact (an earlier run's).
    pub reused: usize,
    /// Bytes downloaded by this run.
    pub bytes: u64,
}

/// Downloads everything `link` shares into `dest`, and writes the export's
/// manifest there last. `each` hears what is planned, bytes as they
/// arrive, and each file when it is in place.
pub fn fetch(link: &str, dest: &Path, each: &mut dyn FnMut(Event<'_>)) -> Result<Fetched, FetchError> {
    let url =
        reqwest::Url::parse(link.trim()).map_err(|_| FetchError::Link("that is not a share link (a URL)".into()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FetchError::Link("a share link starts with https:// (or http:// on loopback)".into()));
    }
    let client = Client::builder()
        .connect_timeout(Duration::from_secs(20))
        .timeout(None)
        .build()
        .map_err(|e| FetchError::Http(e.without_url().to_string()))?;
    let files = resolve(&client, &url)?;
    fs::create_dir_all(dest)?;
    each(Event::Planned { files: files.len(), bytes: files.iter().map(|f| f.size).sum() });
    let mut done = Fetched { files: files.len(), ..Fetched::default() };
    for file in &files {
        let reused = download(&client, file, dest, &mut done.bytes, each)?;
        done.reused += usize::from(reused);
        each(Event::File { file, reused });
    }
    let manifest = Manifest::new(
        files.iter().map(|f| FileEntry { path: f.path.clone(), size: f.size, sha256: f.sha256.clone() }).collect(),
    );
    fs::write(dest.join(MANIFEST_NAME), manifest.to_json())?;
    Ok(done)
}

/// The files a link shares, with absolute URLs.
fn resolve(client: &Client, url: &reqwest::Url) -> Result<Vec<SharedFile>, FetchError> {
    let query = |name: &str| url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
    if query("sr").as_deref() == Some("c") && query("sig").is_some() {
        return resolve_azure_container(client, url);
    }
    let response = get(client, url.as_str(), None)?;
    let body = response.bytes().map_err(|e| FetchError::Http(e.without_url().to_string()))?;
    let share: ShareManifest =
        serde_json::from_slice(&body).map_err(|_| FetchError::Link("the link does not lead to a Veil share".into()))?;
    if share.format != "veil-share/1" {
        return Err(FetchError::Link(format!(
            "share format '{}' is not one this Veil reads: update Veil",
            share.format
        )));
    }
    // Relative URLs are relative to the link as a folder.
    let mut base = url.clone();
    if !base.path().ends_with('/') {
        base.set_path(&format!("{}/", base.path()));
    }
    share
        .files
        .into_iter()
        .map(|f| {
            if !crate::manifest::is_plausible_entry(&f.path, &f.sha256) {
                return Err(FetchError::Link(format!("the share names a file Veil will not write: '{}'", f.path)));
            }
            let absolute = base
                .join(&f.url)
                .map_err(|_| FetchError::Link(format!("the share gives no usable URL for {}", f.path)))?;
            Ok(SharedFile { url: absolute.to_string(), ..f })
        })
        .collect()
}

/// An Azure container SAS: list the container, read its manifest, and
/// check that every file it names is there.
fn resolve_azure_container(client: &Client, url: &reqwest::Url) -> Result<Vec<SharedFile>, FetchError> {
    let sas = url.query().unwrap_or_default().to_string();
    let mut base = url.clone();
    base.set_query(None);
    let base = base.as_str().trim_end_matches('/').to_string();
    let mut listed = std::collections::BTreeSet::new();
    let mut marker = String::new();
    loop {
        let mut page = format!("{base}?restype=container&comp=list&{sas}");
        if !marker.is_empty() {
            page.push_str(&format!("&marker={marker}"));
        }
        let text = get(client, &page, None)?.text().map_err(|e| FetchError::Http(e.without_url().to_string()))?;
        let doc = roxmltree::Document::parse(&text)
            .map_err(|_| FetchError::Link("Azure's container listing is not XML".into()))?;
        listed.extend(
            doc.descendants()
                .filter(|n| n.has_tag_name("Blob"))
                .filter_map(|b| b.children().find(|c| c.has_tag_name("Name"))?.text().map(str::to_string)),
        );
        marker = doc
            .descendants()
            .find(|n| n.has_tag_name("NextMarker"))
            .and_then(|n| n.text())
            .unwrap_or_default()
            .to_string();
        if marker.is_empty() {
            break;
        }
    }
    if !listed.contains(MANIFEST_NAME) {
        return Err(FetchError::Link(format!(
            "the shared container holds no {MANIFEST_NAME}: it is not a complete Veil export"
        )));
    }
    let body = get(client, &format!("{base}/{MANIFEST_NAME}?{sas}"), None)?
        .bytes()
        .map_err(|e| FetchError::Http(e.without_url().to_string()))?;
    let manifest = Manifest::from_json(&body).map_err(FetchError::Link)?;
    manifest
        .files
        .into_iter()
        .map(|f| {
            if !listed.contains(&f.path) {
                return Err(FetchError::Link(format!(
                    "the shared container lacks {}, which its manifest names",
                    f.path
                )));
            }
            let url = format!("{base}/{}?{sas}", encode_path(&f.path));
            Ok(SharedFile { path: f.path, size: f.size, sha256: f.sha256, url })
        })
        .collect()
}

/// Puts one file in place: kept if it is already there and intact, else
/// downloaded into its temporary (`veil_util::atomic`) (continuing a part an earlier run left) and
/// renamed once its size and SHA-256 match. Transient failures are retried,
/// continuing from what arrived.
fn download(
    client: &Client,
    file: &SharedFile,
    dest: &Path,
    bytes: &mut u64,
    each: &mut dyn FnMut(Event<'_>),
) -> Result<bool, FetchError> {
    let target = dest.join(&file.path);
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)?;
    }
    if target.is_file() {
        if digest_file(&target)? == (file.sha256.clone(), file.size) {
            each(Event::Bytes(file.size));
            return Ok(true);
        }
        fs::remove_file(&target)?;
    }
    // Kept across runs, so that a second `veil fetch` continues it.
    let part = veil_util::atomic::temporary_path(&target);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match download_part(client, file, &part, bytes, each) {
            Ok(()) => break,
            Err(FetchError::Http(_)) if attempt < 4 => std::thread::sleep(Duration::from_secs(attempt)),
            Err(e) => return Err(e),
        }
    }
    let (sha256, size) = digest_file(&part)?;
    if (sha256.as_str(), size) != (file.sha256.as_str(), file.size) {
        fs::remove_file(&part)?;
        let what =
            if size != file.size { format!("{size} bytes, not {}", file.size) } else { "its SHA-256 differs".into() };
        return Err(FetchError::Corrupt { file: file.path.clone(), what });
    }
    veil_util::atomic::commit_temporary(&target)?;
    Ok(false)
}

fn download_part(
    client: &Client,
    file: &SharedFile,
    part: &Path,
    bytes: &mut u64,
    each: &mut dyn FnMut(Event<'_>),
) -> Result<(), FetchError> {
    let have = fs::metadata(part).map_or(0, |m| m.len());
    if have >= file.size && have > 0 {
        return Ok(());
    }
    let mut response = get(client, &file.url, (have > 0).then_some(have))?;
    let out = if response.status() == StatusCode::PARTIAL_CONTENT && starts_at(&response) == Some(have) {
        each(Event::Bytes(have));
        OpenOptions::new().append(true).open(part)?
    } else {
        // The server sent the whole file: start again.
        File::create(part)?
    };
    let mut out = Counting { inner: out, each };
    let copied = io::copy(&mut response, &mut out)
        .map_err(|e| FetchError::Http(format!("{}: the download was cut off ({e})", file.path)));
    out.inner.flush()?;
    out.inner.sync_all()?;
    *bytes += copied?;
    Ok(())
}

/// A file that reports the bytes written to it.
struct Counting<'a, 'b> {
    inner: File,
    each: &'a mut dyn FnMut(Event<'b>),
}

impl io::Write for Counting<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        (self.each)(Event::Bytes(n as u64));
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Where a 206 response's range starts.
fn starts_at(response: &Response) -> Option<u64> {
    let range = response.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    range.strip_prefix("bytes ")?.split('-').next()?.parse().ok()
}

/// GETs `url` (from byte `from`, if given), turning a refusal into an
/// explanation.
fn get(client: &Client, url: &str, from: Option<u64>) -> Result<Response, FetchError> {
    let mut request = client.get(url);
    if let Some(from) = from {
        request = request.header(RANGE, format!("bytes={from}-"));
    }
    let response = request.send().map_err(|e| FetchError::Http(e.without_url().to_string()))?;
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let body = response.text().unwrap_or_default();
    // A signed URL says when it expires; a refusal after that is expiry,
    // whether or not the server says why (Azurite does not).
    if status == StatusCode::FORBIDDEN
        && let Some(at) = reqwest::Url::parse(url).ok().as_ref().and_then(signed_expiry)
        && at <= veil_util::clock::now_secs()
    {
        return Err(FetchError::Expired(format!(" at {}", veil_util::clock::iso(at))));
    }
    Err(explain(status, &body))
}

/// When a signed URL stops working, from its own query: an Azure SAS's
/// `se`, or the expiry in the name of the stored access policy Veil made
/// (`si=<share>.<expiry>`); an S3 SigV4 or GCS V4 URL's signing time plus
/// lifetime.
fn signed_expiry(url: &reqwest::Url) -> Option<u64> {
    let q = |name: &str| url.query_pairs().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.into_owned());
    if let Some(se) = q("se") {
        return veil_util::clock::parse_iso(&se);
    }
    if let Some(si) = q("si") {
        return si.rsplit_once('.')?.1.parse().ok();
    }
    let (date, lifetime) =
        q("X-Amz-Date").zip(q("X-Amz-Expires")).or_else(|| q("X-Goog-Date").zip(q("X-Goog-Expires")))?;
    // 20261123T020904Z
    let iso = format!(
        "{}-{}-{}T{}:{}:{}Z",
        date.get(0..4)?,
        date.get(4..6)?,
        date.get(6..8)?,
        date.get(9..11)?,
        date.get(11..13)?,
        date.get(13..15)?
    );
    Some(veil_util::clock::parse_iso(&iso)? + lifetime.parse::<u64>().ok()?)
}

/// A refusal in words, from Veil's JSON or a cloud's XML error.
fn explain(status: StatusCode, body: &str) -> FetchError {
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(body) {
        let message = json["message"].as_str().unwrap_or_default().to_string();
        let detail = |m: &str| if m.is_empty() { String::new() } else { format!(" ({m})") };
        return match json["error"].as_str() {
            Some("expired") => FetchError::Expired(detail(&message)),
            Some("revoked") => FetchError::Revoked(detail(&message)),
            _ => FetchError::Refused {
                status: status.as_u16(),
                reason: if message.is_empty() { "no reason given".into() } else { message },
            },
        };
    }
    let tag = |name: &str| {
        xml_text(body, name).map(|t| t.lines().next().unwrap_or_default().chars().take(200).collect::<String>())
    };
    let message = tag("Message")
        .or_else(|| tag("Code"))
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("refused").to_string());
    // Azure puts why a SAS failed in AuthenticationErrorDetail.
    let detail = tag("AuthenticationErrorDetail").unwrap_or_default();
    let lower = format!("{message} {detail}").to_ascii_lowercase();
    if status == StatusCode::FORBIDDEN && (lower.contains("expired") || lower.contains("time frame")) {
        return FetchError::Expired(String::new());
    }
    FetchError::Refused { status: status.as_u16(), reason: message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_urls_tell_when_they_expire() {
        let azure = reqwest::Url::parse(
            "https://a.blob.core.windows.net/c?sv=2022-11-02&sr=c&sp=rl&se=2026-11-23T02%3A09%3A04Z&sig=x",
        )
        .unwrap();
        assert_eq!(signed_expiry(&azure), veil_util::clock::parse_iso("2026-11-23T02:09:04Z"));
        let policy = reqwest::Url::parse(
            "https://a.blob.core.windows.net/c?sv=2022-11-02&sr=c&si=sh_0123456789abcdef.1795000000&sig=x",
        )
        .unwrap();
        assert_eq!(signed_expiry(&policy), Some(1_795_000_000));
        let s3 = reqwest::Url::parse("http://h/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20261123T020904Z&X-Amz-Expires=3600&X-Amz-Signature=x").unwrap();
        assert_eq!(signed_expiry(&s3), veil_util::clock::parse_iso("2026-11-23T03:09:04Z"));
        assert_eq!(signed_expiry(&reqwest::Url::parse("http://h/share/v1.x/").unwrap()), None);
    }

    #[test]
    fn refusals_are_explained_without_the_link() {
        let veil = r#"{"error":"revoked","message":"revoked at 2026-11-23T10:00:00Z"}"#;
        assert!(matches!(explain(StatusCode::FORBIDDEN, veil), FetchError::Revoked(m) if m.contains("10:00")));
        let s3 =
            "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>";
        assert!(matches!(explain(StatusCode::FORBIDDEN, s3), FetchError::Expired(_)));
        let azure = "<Error><Code>AuthenticationFailed</Code><Message>Server failed to authenticate the request.\nTime: x</Message><AuthenticationErrorDetail>Signature not valid in the specified time frame</AuthenticationErrorDetail></Error>";
        assert!(matches!(explain(StatusCode::FORBIDDEN, azure), FetchError::Expired(_)));
        let tampered = azure.replace("Signature not valid in the specified time frame", "Signature did not match.");
        assert!(
            matches!(explain(StatusCode::FORBIDDEN, &tampered), FetchError::Refused { status: 403, reason } if reason == "Server failed to authenticate the request.")
        );
        assert!(matches!(explain(StatusCode::NOT_FOUND, "nope"), FetchError::Refused { status: 404, .. }));
    }
}

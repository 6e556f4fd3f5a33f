//! Veil's own share links: `/share/<token>/` answers the share manifest
//! (every file with its size, SHA-256 and URL) and `/share/<token>/<file>`
//! the file, with `Range` so that an interrupted download continues.
//!
//! Every request is checked afresh, in this order: the token's signature
//! (a tampered token is refused), its expiry, the share's record in the
//! store (so a revocation takes effect at once), the client's address
//! against the share's range, and the file against the export's manifest,
//! so nothing but the manifest's files can be reached, whatever the path
//! says. Refusals are 403 with a JSON reason (`invalid`, `expired`,
//! `revoked`, `address`) that `veil fetch` turns into words. Each file
//! served is written to the store's audit log (share, time, file, bytes,
//! client address). The token is never logged: the access log prints the
//! route's pattern only.
//!
//! [`make_share`] makes a share, of any kind of storage, with the rules
//! that decide whether it may be made (the longest lifetime per kind of
//! link; only de-identified exports whose audit passed, unless told
//! otherwise). [`seal`] makes that audit's evidence for every
//! de-identified folder Veil writes.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse as _;
use veil_storage::share::{
    Cidr, MAX_CLOUD_LIFETIME, MAX_VEIL_LIFETIME, ShareKind, ShareManifest, TokenError, create_cloud_share,
    new_share_id, sign_token, verify_token,
};
use veil_storage::{Location, MANIFEST_NAME, Manifest, Storage};
use veil_store::{ShareDownload, ShareRecord, Store};

use crate::error::{ApiError, ApiResult};
use crate::http::{AppState, FileStream};

/// What a checked request may read.
struct Granted {
    share: String,
    expires: u64,
    dir: PathBuf,
    manifest: Manifest,
}

/// A share link's refusal: `{"error": …, "message": …}`.
fn refuse(status: StatusCode, error: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::share(status, error, message)
}

fn internal(message: &'static str) -> ApiError {
    refuse(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
}

fn client_address(request: &Request) -> Option<IpAddr> {
    request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

/// Checks the token, the share's record and the client's address.
async fn check(st: &Arc<AppState>, token: String, client: Option<IpAddr>) -> Result<Granted, ApiError> {
    let store = st.store.clone();
    let key = st.share_key.clone();
    let store_failed = |_| internal("the store failed");
    veil_http::blocking(move || -> Result<Granted, ApiError> {
        let key = key.get(&*store).map_err(store_failed)?;
        let now = veil_util::clock::now_secs();
        let id = verify_token(&key, &token, now).map_err(|e| match e {
            TokenError::Invalid => refuse(StatusCode::FORBIDDEN, "invalid", "this is not a valid share link"),
            TokenError::Expired(at) => refuse(
                StatusCode::FORBIDDEN,
                "expired",
                format!("this share link expired at {}", veil_util::clock::iso(at)),
            ),
        })?;
        let Some(share) = store.share(&id).map_err(store_failed)? else {
            return Err(refuse(StatusCode::FORBIDDEN, "revoked", "this share no longer exists"));
        };
        if let Some(at) = &share.revoked {
            return Err(refuse(StatusCode::FORBIDDEN, "revoked", format!("this share link was revoked at {at}")));
        }
        let expires = veil_util::clock::parse_iso(&share.expires).unwrap_or(0);
        if now >= expires {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "expired",
                format!("this share link expired at {}", share.expires),
            ));
        }
        if let Some(range) = &share.ip {
            let allowed = range.parse::<Cidr>().ok().zip(client).is_some_and(|(r, c)| r.contains(c));
            if !allowed {
                return Err(refuse(
                    StatusCode::FORBIDDEN,
                    "address",
                    "this share link cannot be used from this address",
                ));
            }
        }
        let Ok(Location::Local(dir)) = Location::parse(&share.location) else {
            return Err(refuse(StatusCode::NOT_FOUND, "gone", "this share is not served here"));
        };
        let manifest = std::fs::read(dir.join(MANIFEST_NAME)).ok().and_then(|b| Manifest::from_json(&b).ok());
        let Some(manifest) = manifest else {
            return Err(refuse(StatusCode::NOT_FOUND, "gone", "the shared export is no longer here"));
        };
        Ok(Granted { share: share.id, expires, dir, manifest })
    })
    .await
    .map_err(|_| internal("internal error"))?
}

/// `GET /share/<token>/`: the share manifest, URLs relative to the link.
pub(crate) async fn manifest(
    State(st): State<Arc<AppState>>,
    Path(token): Path<String>,
    request: Request,
) -> ApiResult {
    let granted = check(&st, token, client_address(&request)).await?;
    let share = ShareManifest::new(&granted.share, granted.expires, &granted.manifest, |path| {
        Ok(veil_storage::encode_path(path))
    })
    .map_err(|_| internal("internal error"))?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")],
        serde_json::to_string_pretty(&share).unwrap_or_default(),
    )
        .into_response())
}

/// `GET /share/<token>/<file>`: one file of the share (from a byte offset
/// with `Range: bytes=N-`).
pub(crate) async fn file(
    State(st): State<Arc<AppState>>,
    Path((token, path)): Path<(String, String)>,
    headers: HeaderMap,
    request: Request,
) -> ApiResult {
    let client = client_address(&request);
    let granted = check(&st, token, client).await?;
    // Only the manifest's files: `..`, absolute paths and encoded variants
    // are not names in it (the router decoded the path once; it is never
    // decoded again).
    if !veil_storage::is_safe_relative_path(&path) {
        return Err(refuse(StatusCode::BAD_REQUEST, "invalid-path", "that is not a file name in this share"));
    }
    let Some(entry) = granted.manifest.file(&path) else {
        return Err(refuse(StatusCode::NOT_FOUND, "not-found", "this share holds no such file"));
    };
    let size = entry.size;
    let from = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse::<u64>().ok());
    let Ok(mut file) = tokio::fs::File::open(granted.dir.join(&path)).await else {
        return Err(refuse(StatusCode::NOT_FOUND, "gone", "the shared file is no longer here"));
    };
    let actual = file.metadata().await.map_or(size, |m| m.len());
    let (status, start) = match from {
        Some(n) if n > 0 && n < actual => (StatusCode::PARTIAL_CONTENT, n),
        Some(n) if n > 0 => {
            return Ok((StatusCode::RANGE_NOT_SATISFIABLE, [(header::CONTENT_RANGE, format!("bytes */{actual}"))])
                .into_response());
        }
        _ => (StatusCode::OK, 0),
    };
    if start > 0 {
        use tokio::io::AsyncSeekExt as _;
        if file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
            return Err(internal("cannot read the shared file"));
        }
    }
    let store = st.store.clone();
    let record = ShareDownload {
        share_id: granted.share,
        time: String::new(),
        file: path,
        bytes: (actual - start) as i64,
        client: client.map_or_else(|| "-".into(), |c| c.to_string()),
    };
    // No audit record, no download.
    if !matches!(veil_http::blocking(move || store.record_download(&record)).await, Ok(Ok(()))) {
        return Err(internal("cannot write the audit log"));
    }
    let mut response = (status, Body::from_stream(FileStream::new(file))).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/octet-stream"));
    h.insert(header::ACCEPT_RANGES, header::HeaderValue::from_static("bytes"));
    h.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    if let Ok(v) = header::HeaderValue::from_str(&(actual - start).to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = header::HeaderValue::from_str(&format!("bytes {start}-{}/{actual}", actual - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    Ok(response)
}

/// The key Veil links are signed with, read from the store once.
#[derive(Default)]
pub struct ShareKey(std::sync::OnceLock<Vec<u8>>);

impl ShareKey {
    /// The key, made and kept in the store the first time.
    pub fn get(&self, store: &dyn veil_store::Store) -> veil_store::Result<Vec<u8>> {
        if let Some(k) = self.0.get() {
            return Ok(k.clone());
        }
        let key = store.secret(veil_storage::share::SIGNING_KEY_NAME, &mut veil_storage::share::new_signing_key)?;
        Ok(self.0.get_or_init(|| key.into_bytes()).clone())
    }
}

/// A share the caller made: the link to hand over, and the record kept.
pub struct Made {
    /// The link to hand over: a credential.
    pub link: String,
    /// The share as the store records it.
    pub record: ShareRecord,
    /// What it shares, in words (`3 files (12 bytes), through veil serve`).
    pub scope: String,
    /// The audit's summary from the export's manifest, when it has one.
    pub audit: Option<String>,
}

/// Whether the operator said the data is identified: only then is an
/// export that no manifest shows de-identified shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// Share only what the manifest shows de-identified, and its audit passed.
    DeidentifiedOnly,
    /// `--despite-audit`: share a de-identified export whose audit failed
    /// (the operator has read why, and an expert or agreement covers it).
    DespiteAudit,
    /// `--identified`: share it even so, and record that it is identified.
    Identified,
}

/// Audits the de-identified folder `dir` against the standard its policy
/// is made for (any policy but a built-in one is held to Safe Harbor),
/// leaves the evidence (`veil-risk.json`, `.txt`, `.html`) beside its
/// files, and returns what its manifest is to say. Every writer of
/// de-identified folders calls it before writing the manifest.
pub fn seal(dir: &std::path::Path, policy: &str) -> Result<veil_storage::Deidentified, veil_audit::AuditError> {
    let evidence = veil_audit::audit_dir(dir, &audit_options(policy))?;
    seal_with(dir, policy, &evidence)
}

/// The audit a de-identified folder made with `policy` gets.
pub fn audit_options(policy: &str) -> veil_audit::Options {
    veil_audit::Options::new(veil_audit::Standard::of_policy(policy))
}

/// [`seal`], with the evidence of an audit made while the files were
/// written (`veil deid` audits each resource as it serialises it).
pub fn seal_with(
    dir: &std::path::Path,
    policy: &str,
    evidence: &veil_audit::Evidence,
) -> Result<veil_storage::Deidentified, veil_audit::AuditError> {
    evidence
        .write_beside(dir)
        .map_err(|source| veil_audit::AuditError::Io { path: dir.display().to_string(), source })?;
    Ok(veil_storage::Deidentified {
        policy: policy.to_string(),
        audit: Some(veil_storage::Verdict {
            standard: evidence.standard.name().into(),
            passes: evidence.passes,
            summary: evidence.summary(),
        }),
    })
}

/// Why a share was not made.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// What was asked for cannot be shared (too long a lifetime, not a
    /// complete export, not de-identified): the operator's to correct.
    #[error("{0}")]
    Refused(String),
    /// The export's storage failed.
    #[error(transparent)]
    Storage(#[from] veil_storage::StorageError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] veil_store::StoreError),
}

/// Makes a share of `location` (what `veil share create` does): checks the
/// lifetime against the kind of link's maximum and, failing closed, that
/// the export's manifest names a de-identification policy (unless
/// `exposure` says the data is identified); then signs the link (a Veil
/// token, an Azure SAS or presigned URLs) and records the share.
pub fn make_share(
    store: &dyn Store,
    location: &Location,
    lifetime: std::time::Duration,
    recipient: Option<String>,
    ip: Option<Cidr>,
    base_url: &str,
    exposure: Exposure,
) -> Result<Made, ShareError> {
    let kind = ShareKind::for_location(location);
    let cap = if kind == ShareKind::Veil { MAX_VEIL_LIFETIME } else { MAX_CLOUD_LIFETIME };
    if lifetime > cap {
        return Err(ShareError::Refused(format!(
            "{} links live at most {} days",
            kind.as_str(),
            cap.as_secs() / 86_400
        )));
    }
    // Fail closed: the manifest (written last, by whatever made the export)
    // must show the data de-identified.
    let manifest = match location {
        Location::Local(dir) => std::fs::read(dir.join(MANIFEST_NAME))
            .map_err(|_| {
                ShareError::Refused(format!(
                    "{} holds no {MANIFEST_NAME}: only a complete Veil export can be shared",
                    dir.display()
                ))
            })
            .and_then(|bytes| Manifest::from_json(&bytes).map_err(ShareError::Refused))?,
        cloud => Storage::open(cloud)?.read_manifest()?,
    };
    let identified = match (&manifest.deidentified, exposure) {
        (Some(d), Exposure::DeidentifiedOnly) if !d.audit.as_ref().is_some_and(|a| a.passes) => {
            let why = match &d.audit {
                Some(a) => format!("failed its de-identification audit:\n{}", a.summary),
                None => format!(
                    "was never audited (its {MANIFEST_NAME} records no verdict: made with --no-audit, or by an older Veil; veil audit shows what it holds).\n"
                ),
            };
            return Err(ShareError::Refused(format!(
                "{location} {why}To share it all the same (an expert's determination or a data use agreement covers what it holds), add --despite-audit"
            )));
        }
        (Some(_), _) => false,
        (None, Exposure::Identified) => true,
        (None, Exposure::DeidentifiedOnly | Exposure::DespiteAudit) => {
            return Err(ShareError::Refused(format!(
                "{location} was not de-identified (its {MANIFEST_NAME} names no de-identification policy): it may hold names, dates and narratives about patients. Share de-identified exports ($export with _anonymizationConfig, veil deid, veil export --deid); to share this one all the same, under an agreement that allows identified data, add --identified"
            )));
        }
    };
    let id = new_share_id();
    let expires = veil_util::clock::now_secs() + lifetime.as_secs();
    let (link, scope, location_text) = match location {
        Location::Local(dir) => {
            let dir = std::fs::canonicalize(dir)
                .map_err(|e| ShareError::Refused(format!("cannot share {}: {e}", dir.display())))?;
            let key = ShareKey::default().get(store)?;
            let link = format!("{}/share/{}/", base_url.trim_end_matches('/'), sign_token(&key, &id, expires));
            (
                link,
                format!("{} files ({} bytes), through veil serve", manifest.files.len(), manifest.bytes()),
                dir.display().to_string(),
            )
        }
        cloud => {
            let storage = Storage::open(cloud)?;
            let made = create_cloud_share(&storage, &id, expires, ip.as_ref())?;
            (made.link, made.scope, cloud.to_string())
        }
    };
    let record = store.add_share(&ShareRecord {
        id,
        kind: kind.as_str().into(),
        location: location_text,
        created: String::new(),
        expires: veil_util::clock::iso(expires),
        recipient,
        ip: ip.map(|c| c.to_string()),
        revoked: None,
        identified,
    })?;
    let audit = manifest.deidentified.and_then(|d| d.audit).map(|a| a.summary);
    Ok(Made { link, record, scope, audit })
}

//! `veil aggregator serve`: the site API (the Cumulus handshake and a
//! signed upload endpoint) and the query API the dashboard reads.
//!
//! * `POST /` and `POST /<network>`: Basic auth with the site's user and
//!   secret, a JSON body `{study, data_package_version, filename}`; answers
//!   200 `{url, fields}` and a `transaction-id` header, 412 while the site's
//!   previous upload of the study holds the lock, 401, 403 or 400 otherwise.
//!   With S3 storage, `{url, fields}` is an S3 presigned POST into the
//!   bucket's `upload_staging/` ([`crate::staging`] takes it from there);
//!   otherwise it points at this server's `/upload`.
//! * `POST /upload`: the multipart form `fields` + `file` the handshake
//!   described, checked against the signed policy (HMAC over the site,
//!   study, version, transaction, size cap and expiry), then validated and
//!   merged before the answer: 204 when kept, 400 with the reason when not.
//! * `GET /upload/{transaction}`: Basic auth again; what became of that
//!   upload of the site's (`waiting`, `accepted`, `unchanged`, `refused`
//!   with the reason), so that a site that uploaded to S3 learns it too.
//!   The handshake names this URL in an `x-veil-status` header.
//! * `GET /data-packages[/{id}[/chart]]`, `/metadata/…`, `/study-periods/…`,
//!   `/studies[/{study}]`, `/uploads`: the query API, with an `x-api-key`.
//! * `GET /dashboard` (and `GET /`, which sends a browser there): the web
//!   dashboard ([`crate::dashboard`]), which reads only the query API.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::multipart::Field;
use axum::extract::{DefaultBodyLimit, Multipart, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value as Json, json};
use sha2::Digest as _;
use veil_storage::{Location, Storage};
use veil_util::csv;

use crate::chart::{ChartQuery, chart, column_summary};
use crate::error::{ApiError, ApiResult};
use crate::intake::{Upload, ingest, is_file_name};
use crate::ledger::{Ledger, Site, UploadState, version_key};
use crate::package::{Limits, is_identifier};
use crate::secrets;

/// How long an upload lock lasts without an upload (Cumulus: 10 minutes).
pub const LOCK_SECS: i64 = 600;
/// How long a presigned upload stays valid (Cumulus: an hour).
pub const POLICY_SECS: i64 = 3600;

/// What the server needs.
pub struct Config {
    /// The database.
    pub ledger: Arc<Ledger>,
    /// Where accepted zips are kept (`archive/<study>/<site>/<NNN>/<sha256>.zip`):
    /// a local folder or any cloud location; when it is S3, sites upload
    /// straight to it (`upload_staging/…`) and [`crate::staging`] takes
    /// the uploads from there.
    pub storage: Arc<Storage>,
    /// The URL sites reach this server at (the upload URL is built from it).
    pub base_url: String,
    /// The research network, if the handshake is also served at `/<network>`.
    pub network: Option<String>,
    /// The network's minimum cell size, enforced on every cube.
    pub min_cell: u64,
    /// Caps on what an upload may hold.
    pub limits: Limits,
    /// One line per request and per upload on stderr, if set.
    pub access_log: Option<veil_http::AccessLog>,
    /// The rate and failure backoff per address on the doors that check
    /// credentials (the handshake, upload status, the query API's keys).
    pub guard: veil_http::Limits,
}

impl Config {
    /// Whether sites upload straight to the storage (S3) rather than to `/upload`.
    pub fn uploads_to_storage(&self) -> bool {
        matches!(self.storage.location(), Location::S3 { .. })
    }
}

struct AppState {
    config: Arc<Config>,
    signing_key: Vec<u8>,
}

/// The router, with its state. When [`Config::uploads_to_storage`], run
/// [`crate::staging::watch`] on the same configuration beside it.
pub fn router(config: Arc<Config>) -> Result<Router, crate::ledger::LedgerError> {
    let signing_key = config.ledger.signing_key()?;
    let upload_cap = usize::try_from(config.limits.zip_bytes).unwrap_or(usize::MAX).saturating_add(1 << 20);
    let door = Arc::new(veil_http::Door::new(config.guard));
    let state = Arc::new(AppState { config, signing_key });
    let guarded = |router: Router<Arc<AppState>>| {
        router.route_layer(axum::middleware::from_fn_with_state(door.clone(), veil_http::guard))
    };
    let query = Router::new()
        .route("/data-packages", get(data_packages))
        .route("/data-packages/{id}", get(data_package))
        .route("/data-packages/{id}/chart", get(chart_data))
        .route("/data-packages/{id}/download", get(download))
        .route("/metadata", get(metadata))
        .route("/metadata/{*path}", get(metadata))
        .route("/study-periods", get(study_periods))
        .route("/study-periods/{*path}", get(study_periods))
        .route("/studies", get(studies))
        .route("/studies/{study}", get(study))
        .route("/uploads", get(uploads))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), require_api_key));
    let sites = Router::new()
        .route("/", post(handshake_root))
        .route("/{network}", post(handshake_network))
        .route("/upload/{transaction}", get(upload_status));
    let router = Router::new()
        .route("/", get(crate::dashboard::to_dashboard))
        .merge(crate::dashboard::routes())
        .merge(guarded(sites))
        .route("/upload", post(upload).layer(DefaultBodyLimit::max(upload_cap)))
        .merge(guarded(query))
        .with_state(state.clone());
    Ok(match state.config.access_log {
        Some(log) => router.layer(axum::middleware::from_fn_with_state(Arc::new(log), veil_http::access_log)),
        None => router,
    })
}

type Shared = State<Arc<AppState>>;

/// An answer to a site whose credentials were good, success or error:
/// named for the access log, and counted as a success by the credential
/// door.
fn for_site(answer: ApiResult, who: &str) -> Response {
    let mut response = answer.into_response();
    response.extensions_mut().insert(veil_http::Who(who.to_string()));
    veil_http::Credentials::Accepted.mark(response)
}

async fn authenticate(st: &AppState, headers: &HeaderMap) -> Result<Site, ApiError> {
    let unauthorized = || {
        ApiError::new(StatusCode::UNAUTHORIZED, "Invalid user/site id")
            .with_header(header::WWW_AUTHENTICATE, "Basic realm=\"veil aggregator\"")
            .refused_credentials()
    };
    let (user, secret) = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(secrets::basic)
        .ok_or_else(unauthorized)?;
    let ledger = st.config.ledger.clone();
    veil_http::blocking(move || ledger.authenticate(&user, &secret)).await??.ok_or_else(unauthorized)
}

async fn handshake_root(st: Shared, headers: HeaderMap, body: axum::body::Bytes) -> ApiResult {
    handshake(st, headers, body).await
}

async fn handshake_network(
    st: Shared,
    Path(network): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult {
    if st.config.network.as_deref() != Some(network.as_str()) {
        return Err(ApiError::not_found("no such research network here"));
    }
    handshake(st, headers, body).await
}

/// The signed description of one permitted upload to `/upload`.
#[derive(serde::Serialize, serde::Deserialize)]
struct Policy {
    #[serde(flatten)]
    upload: Upload,
    key: String,
    max_bytes: u64,
    expires: i64,
}

async fn handshake(State(st): Shared, headers: HeaderMap, body: axum::body::Bytes) -> ApiResult {
    let site = authenticate(&st, &headers).await?;
    let who = site.name.clone();
    Ok(for_site(handshake_for(&st, site, &headers, &body).await, &who))
}

/// The handshake of an authenticated site: checks what it announces,
/// takes the study's lock and answers with a signed upload form.
async fn handshake_for(st: &AppState, site: Site, headers: &HeaderMap, body: &[u8]) -> ApiResult {
    let Ok(request) = serde_json::from_slice::<Json>(body) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "Malformed data payload: expected JSON {study, data_package_version, filename}",
        ));
    };
    let (Some(study), Some(filename)) = (request["study"].as_str(), request["filename"].as_str()) else {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "Malformed data payload: study and filename are required"));
    };
    if !is_identifier(study) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "Malformed data payload: a study name is lower-case letters, digits and _",
        ));
    }
    if !is_file_name(filename) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "Malformed data payload: the filename must be a plain file name",
        ));
    }
    // As the Cumulus client sends it: a number, or text read as int(float(v)).
    let version = match &request["data_package_version"] {
        Json::Null => Some(0),
        v => crate::package::package_version(v),
    };
    let Some(version) = version else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "Malformed data payload: data_package_version must be a whole number from 0 to 999",
        ));
    };
    if !site.may_upload(study) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("site {} may not upload the study {study}", site.name),
        ));
    }
    let transaction = headers.get("transaction-id").and_then(|h| h.to_str().ok()).map(str::to_string);
    let ledger = st.config.ledger.clone();
    let (site_name, study_name) = (site.name.clone(), study.to_string());
    let lock = veil_http::blocking(move || {
        ledger.lock(&site_name, &study_name, transaction.as_deref(), veil_util::clock::now_secs() as i64, LOCK_SECS)
    })
    .await??;
    let Some(transaction) = lock else {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            format!("Currently processing a previous upload of {study}. Please try again later."),
        ));
    };
    let upload =
        Upload { transaction: transaction.clone(), site: site.name.clone(), study: study.to_string(), version };
    let key = upload.staging_key(filename);
    let base = st.config.base_url.trim_end_matches('/').to_string();
    let form = if st.config.uploads_to_storage() {
        let storage = st.config.storage.clone();
        let max_bytes = st.config.limits.zip_bytes;
        let post = veil_http::blocking(move || {
            storage.presigned_post(&key, max_bytes, Duration::from_secs(POLICY_SECS as u64))
        })
        .await?
        .map_err(|e| {
            eprintln!("veil aggregator: cannot sign an S3 upload form: {e}");
            ApiError::internal()
        })?;
        json!({"url": post.url, "fields": post.fields.into_iter().map(|(k, v)| (k, Json::String(v))).collect::<serde_json::Map<_, _>>()})
    } else {
        let policy = Policy {
            upload,
            key,
            max_bytes: st.config.limits.zip_bytes,
            expires: veil_util::clock::now_secs() as i64 + POLICY_SECS,
        };
        let encoded = veil_util::base64::encode(
            serde_json::to_string(&policy).expect("a policy serialises").as_bytes(),
            veil_util::base64::STANDARD,
        );
        let signature = veil_util::hex::encode(&secrets::mac(&st.signing_key, encoded.as_bytes()));
        json!({"url": format!("{base}/upload"), "fields": {"key": policy.key, "policy": encoded, "signature": signature}})
    };
    let mut response = axum::Json(form).into_response();
    let headers = response.headers_mut();
    headers.insert("transaction-id", HeaderValue::from_str(&transaction).expect("hex is a header value"));
    if let Ok(status) = HeaderValue::from_str(&format!("{base}/upload/{transaction}")) {
        headers.insert("x-veil-status", status);
    }
    Ok(response)
}

/// What became of one of the site's uploads.
async fn upload_status(State(st): Shared, Path(transaction): Path<String>, headers: HeaderMap) -> ApiResult {
    let site = authenticate(&st, &headers).await?;
    let who = site.name.clone();
    let ledger = st.config.ledger.clone();
    let state = veil_http::blocking(move || ledger.upload_state(&site.name, &transaction)).await?;
    let answer = state.map_err(ApiError::from).and_then(|state| match state {
        UploadState::Unknown => Err(ApiError::not_found("this site has no upload with that transaction id")),
        UploadState::Waiting => Ok(axum::Json(json!({"state": "waiting"})).into_response()),
        UploadState::Done { outcome, message } => {
            Ok(axum::Json(json!({"state": outcome, "message": message})).into_response())
        }
    });
    Ok(for_site(answer, &who))
}

fn verify_policy(st: &AppState, policy: &str, signature: &str) -> Option<Policy> {
    let given = veil_util::hex::decode(signature)?;
    // Compared through the MAC, in constant time.
    if !secrets::matches(policy, &st.signing_key, &given) {
        return None;
    }
    let decoded = veil_util::base64::decode(policy, veil_util::base64::STANDARD)?;
    serde_json::from_slice::<Policy>(&decoded).ok()
}

async fn upload(State(st): Shared, mut form: Multipart) -> ApiResult {
    let mut fields: HashMap<String, String> = HashMap::new();
    let file = loop {
        let field = form
            .next_field()
            .await
            .map_err(|_| ApiError::bad_request("the upload is not a complete multipart form"))?
            .ok_or_else(|| ApiError::bad_request("the form has no file"))?;
        let name = field.name().unwrap_or("").to_string();
        if name == "file" {
            break field;
        }
        if fields.len() > 20 {
            return Err(ApiError::bad_request("too many form fields"));
        }
        match field.text().await {
            Ok(text) if text.len() <= 8192 => fields.insert(name, text),
            _ => return Err(ApiError::bad_request("a form field is unreadable or too long")),
        };
    };
    // As S3 requires: the policy comes before the file, so that nothing
    // is read from an unsigned upload.
    let (Some(p), Some(s)) = (fields.get("policy"), fields.get("signature")) else {
        return Err(ApiError::forbidden("the upload has no signed policy before the file"));
    };
    let Some(policy) = verify_policy(&st, p, s) else {
        return Err(ApiError::forbidden("the upload's policy signature does not match"));
    };
    let who = policy.upload.site.clone();
    Ok(for_site(receive(&st, policy, &fields, file).await, &who))
}

/// The file of an upload whose policy is signed: read within the policy's
/// cap, then checked, archived and merged.
async fn receive(
    st: &Arc<AppState>,
    policy: Policy,
    fields: &HashMap<String, String>,
    mut file: Field<'_>,
) -> ApiResult {
    if policy.expires <= veil_util::clock::now_secs() as i64 {
        return Err(ApiError::forbidden("the upload's policy has expired: ask for a new upload URL"));
    }
    if fields.get("key") != Some(&policy.key) {
        return Err(ApiError::forbidden("the upload's key is not the one its policy signs"));
    }
    let mut zip = Vec::new();
    loop {
        match file.chunk().await {
            Ok(Some(chunk)) => {
                if (zip.len() + chunk.len()) as u64 > policy.max_bytes {
                    release(st, &policy).await;
                    return Err(ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("the zip is larger than the aggregator accepts ({} MiB)", policy.max_bytes >> 20),
                    ));
                }
                zip.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(_) => {
                // A dropped connection: nothing was kept; free the lock
                // so that the site can try again at once.
                release(st, &policy).await;
                return Err(ApiError::bad_request("the upload ended before the whole file arrived"));
            }
        }
    }
    let config = st.config.clone();
    let outcome = veil_http::blocking(move || ingest(&config, &policy.upload, &zip)).await??;
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert("x-veil-outcome", HeaderValue::from_static(outcome.as_str()));
    Ok(r)
}

async fn release(st: &Arc<AppState>, p: &Policy) {
    let (ledger, u) = (st.config.ledger.clone(), p.upload.clone());
    let _ = veil_http::blocking(move || ledger.unlock(&u.site, &u.study, &u.transaction)).await;
}

// ---- the query API --------------------------------------------------------

async fn require_api_key(State(st): Shared, request: Request, next: Next) -> ApiResult {
    let refused = |text| ApiError::new(StatusCode::UNAUTHORIZED, text).refused_credentials();
    let key = request.headers().get("x-api-key").and_then(|h| h.to_str().ok()).map(str::to_string);
    let Some(key) = key else {
        return Err(refused("an x-api-key header is required (veil aggregator key add)"));
    };
    let ledger = st.config.ledger.clone();
    match veil_http::blocking(move || ledger.check_api_key(&key)).await?? {
        true => Ok(veil_http::Credentials::Accepted.mark(next.run(request).await)),
        false => Err(refused("the API key is not valid")),
    }
}

/// Cumulus' data package entry, plus the network's minimum cell size
/// (`min_cell_count`), so that a reader can say what a missing cell means.
fn package_entry(p: &crate::ledger::DataPackage, min_cell: u64) -> Json {
    let mut entry = json!({
        "study": p.study,
        "name": p.name,
        "version": version_key(p.version),
        "id": p.id,
        "column_types_format_version": "3",
        "columns": column_summary(&p.aggregate),
        "last_data_update": p.updated,
        "total": p.total,
        "min_cell_count": min_cell,
    });
    if let Some(site) = &p.site {
        entry["site"] = site.clone().into();
        entry["type"] = "flat".into();
    }
    entry
}

async fn data_packages(State(st): Shared, RawQuery(query): RawQuery) -> ApiResult {
    let name = query.as_deref().and_then(|q| form_pairs(q).into_iter().find(|(k, _)| k == "name").map(|(_, v)| v));
    let ledger = st.config.ledger.clone();
    let packages = veil_http::blocking(move || ledger.data_packages()).await??;
    let entries = packages
        .iter()
        .filter(|p| name.as_ref().is_none_or(|n| *n == p.name))
        .map(|p| package_entry(p, st.config.min_cell))
        .collect();
    Ok(axum::Json(Json::Array(entries)).into_response())
}

/// One data package, 404 when there is none by that id.
async fn package(st: &AppState, id: String) -> Result<crate::ledger::DataPackage, ApiError> {
    let ledger = st.config.ledger.clone();
    veil_http::blocking(move || ledger.data_package(&id))
        .await??
        .ok_or_else(|| ApiError::not_found("no such data package"))
}

async fn data_package(State(st): Shared, Path(id): Path<String>) -> ApiResult {
    let p = package(&st, id).await?;
    Ok(axum::Json(package_entry(&p, st.config.min_cell)).into_response())
}

/// A text cell a spreadsheet would run as a formula (starting with `=`,
/// `+`, `-`, `@`, a tab or a carriage return; the values come from sites'
/// uploads) gets a leading `'`, as OWASP advises, so that it shows as text.
fn spreadsheet_safe(cell: &Json) -> Json {
    match cell {
        Json::String(t) if t.starts_with(['=', '+', '-', '@', '\t', '\r']) => Json::String(format!("'{t}")),
        other => other.clone(),
    }
}

/// The whole table, `?type=json` (`{columns, rows}`, the default) or
/// `csv` (an empty cell is NULL), as Cumulus' `/from-parquet` offers it.
async fn download(State(st): Shared, Path(id): Path<String>, RawQuery(query): RawQuery) -> ApiResult {
    let kind = form_pairs(query.as_deref().unwrap_or(""))
        .into_iter()
        .find(|(k, _)| k == "type")
        .map_or("json".to_string(), |(_, v)| v);
    let found = package(&st, id).await?;
    let names: Vec<&str> = found.aggregate.columns.iter().map(|c| c.name.as_str()).collect();
    match kind.as_str() {
        "json" => Ok(axum::Json(json!({"columns": names, "rows": found.aggregate.rows})).into_response()),
        "csv" => {
            let header: Vec<Json> = names.iter().map(|n| Json::from(*n)).collect();
            let mut text = csv::line(&header);
            for row in &found.aggregate.rows {
                text += &csv::line(&row.iter().map(spreadsheet_safe).collect::<Vec<_>>());
            }
            let disposition = format!("attachment; filename=\"{}.csv\"", found.id);
            Ok((
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                    (header::CONTENT_DISPOSITION, disposition),
                ],
                text,
            )
                .into_response())
        }
        _ => Err(ApiError::bad_request("type must be json or csv")),
    }
}

/// `application/x-www-form-urlencoded` pairs, repeated keys kept.
fn form_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}

async fn chart_data(
    State(st): Shared,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    let mut chart_query = ChartQuery::default();
    for (k, v) in form_pairs(query.as_deref().unwrap_or("")) {
        match k.as_str() {
            "column" => chart_query.column = v,
            "stratifier" if !v.is_empty() => chart_query.stratifier = Some(v),
            "filter" if !v.is_empty() => chart_query.filters.push(v),
            _ => {}
        }
    }
    if chart_query.column.is_empty() {
        return Err(ApiError::bad_request("column is required"));
    }
    let found = package(&st, id).await?;
    if found.site.is_some() {
        return Err(ApiError::not_found("no such merged data package"));
    }
    // The answer changes only when the package does: an ETag lets the
    // dashboard cache it, as Cumulus advises.
    let etag = format!(
        "\"{}\"",
        veil_util::hex::encode(
            &sha2::Sha256::digest(format!("{}\n{}\n{:?}", found.id, found.updated, query).as_bytes())[..16]
        )
    );
    if headers.get(header::IF_NONE_MATCH).and_then(|h| h.to_str().ok()) == Some(etag.as_str()) {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    let body = chart(&found.aggregate, &chart_query).map_err(|bad| ApiError::bad_request(bad.0))?;
    let mut r = axum::Json(body).into_response();
    r.headers_mut().insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex is a header value"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}

/// `tree` narrowed by the path's segments (`site/study/…`), 404 when one is missing.
fn slice(tree: Json, path: Option<&str>) -> ApiResult {
    let mut node = &tree;
    for segment in path.unwrap_or("").split('/').filter(|s| !s.is_empty()) {
        node = node.get(segment).ok_or_else(|| ApiError::not_found("nothing at that path"))?;
    }
    Ok(axum::Json(node.clone()).into_response())
}

/// What a ledger query answers, as JSON.
async fn from_ledger<T: Send + 'static>(
    st: &AppState,
    query: impl FnOnce(&Ledger) -> crate::db::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let ledger = st.config.ledger.clone();
    Ok(veil_http::blocking(move || query(&ledger)).await??)
}

async fn metadata(State(st): Shared, path: Option<Path<String>>) -> ApiResult {
    slice(from_ledger(&st, Ledger::metadata).await?, path.as_ref().map(|p| p.0.as_str()))
}

async fn study_periods(State(st): Shared, path: Option<Path<String>>) -> ApiResult {
    slice(from_ledger(&st, Ledger::study_periods).await?, path.as_ref().map(|p| p.0.as_str()))
}

async fn studies(State(st): Shared) -> ApiResult {
    Ok(axum::Json(from_ledger(&st, Ledger::studies).await?).into_response())
}

async fn study(State(st): Shared, Path(study): Path<String>) -> ApiResult {
    slice(from_ledger(&st, Ledger::studies).await?, Some(&study))
}

async fn uploads(State(st): Shared) -> ApiResult {
    Ok(axum::Json(from_ledger(&st, |ledger| ledger.uploads(200)).await?).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_neutralised_for_spreadsheets() {
        for (cell, want) in [
            ("=1+2", "'=1+2"),
            ("+cmd", "'+cmd"),
            ("-2", "'-2"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("female", "female"),
        ] {
            assert_eq!(spreadsheet_safe(&json!(cell)), json!(want));
        }
        assert_eq!(spreadsheet_safe(&json!(-2)), json!(-2), "numbers stay numbers");
    }

    #[test]
    fn query_strings_decode_as_forms() {
        assert_eq!(
            form_pairs("column=year&filter=sex%3AstrEq%3Afemale&filter=a+b&x=%zz%4"),
            [("column", "year"), ("filter", "sex:strEq:female"), ("filter", "a b"), ("x", "%zz%4")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }
}

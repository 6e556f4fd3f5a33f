//! The HTTP face: FHIR read, `metadata`, Bulk Data `$export` kick-off,
//! status, cancel and downloads (reference: bulk-export.md §1–§2), behind
//! SMART Backend Services authorization (see [`crate::auth`]) unless it is
//! switched off.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, MatchedPath, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value as Json, json};
use veil_store::{JobState, Store};

use crate::auth::{Auth, Caller};
use crate::error::{ApiError, ApiResult};
use veil_bulk::Level;

use crate::export::{ExportRequest, JobRequest, Storage, is_plain_file_name, operation_outcome};
use crate::search::query_pairs;

/// What the handlers share.
pub struct AppState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Where export files go.
    pub storage: Storage,
    /// The base URL of this server as clients see it.
    pub base_url: String,
    /// SMART Backend Services authorization; `None` only when switched off.
    pub auth: Option<Auth>,
    /// One line per request on stderr, if set (route, status, client,
    /// time: never a query, an id or a token).
    pub access_log: Option<veil_http::AccessLog>,
    /// When each job's status was last polled, to answer 429 to clients
    /// that poll faster than Retry-After.
    polls: Mutex<HashMap<String, Instant>>,
    /// The key Veil share links are signed with.
    pub(crate) share_key: Arc<crate::share::ShareKey>,
    /// What one client may ask of the export machinery.
    pub limits: ExportLimits,
    /// The rate and failure backoff per address at the token endpoint.
    pub token_guard: veil_http::Limits,
    /// Held while a kick-off checks the limits and records its job, so that
    /// a burst of kick-offs cannot all pass the same check.
    kickoff_gate: Mutex<()>,
    /// The CapabilityStatement, built on first use: it changes only with
    /// the binary, and building it per request let anonymous callers
    /// spend the server's time.
    capabilities: std::sync::OnceLock<String>,
}

/// Seconds a client should wait between status polls.
const RETRY_AFTER_SECS: u64 = 1;

/// Limits on what one client may ask of the export machinery, each set by a
/// `veil serve` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportLimits {
    /// Exports one client may have queued or running at once; one more
    /// is answered 429 with Retry-After (`--max-exports-per-client`).
    pub per_client: usize,
    /// Bytes of export files one client may hold in storage; a kick-off
    /// beyond is refused until some are deleted or expire
    /// (`--client-quota-gib`).
    pub client_quota_bytes: u64,
    /// Free bytes the export disk must keep: below, kick-offs are refused
    /// (`--min-free-gib`).
    pub min_free_bytes: u64,
    /// How long a finished export's files are kept; then they and the job
    /// are deleted, as the status answer's `Expires` says (`--retention-hours`).
    pub retention_secs: u64,
}

impl Default for ExportLimits {
    /// 4 exports at once, 20 GiB per client, 1 GiB kept free, 24 hours.
    fn default() -> ExportLimits {
        ExportLimits { per_client: 4, client_quota_bytes: 20 << 30, min_free_bytes: 1 << 30, retention_secs: 24 * 3600 }
    }
}

impl AppState {
    /// Shared state for the router; `auth` `None` serves without
    /// authorization, for experiments on loopback.
    pub fn new(store: Arc<dyn Store>, storage: Storage, base_url: String, auth: Option<Auth>) -> AppState {
        AppState {
            store,
            storage,
            base_url,
            auth,
            access_log: None,
            polls: Mutex::new(HashMap::new()),
            share_key: Arc::default(),
            limits: ExportLimits::default(),
            token_guard: veil_http::Limits::default(),
            kickoff_gate: Mutex::new(()),
            capabilities: std::sync::OnceLock::new(),
        }
    }
}

/// The router for all endpoints: discovery, the token endpoint and the
/// CapabilityStatement are open; everything else needs a token when
/// authorization is on.
pub fn router(state: Arc<AppState>) -> Router {
    let open = Router::new()
        .route("/metadata", get(metadata))
        .route("/.well-known/smart-configuration", get(crate::auth::smart_configuration))
        .route(
            crate::auth::TOKEN_PATH,
            axum::routing::post(crate::auth::token).route_layer(axum::middleware::from_fn_with_state(
                Arc::new(veil_http::Door::new(state.token_guard)),
                veil_http::guard,
            )),
        )
        // Share links carry their own credential (a signed token).
        .route("/share/{token}", get(crate::share::manifest))
        .route("/share/{token}/", get(crate::share::manifest))
        .route("/share/{token}/{*path}", get(crate::share::file));
    let protected = Router::new()
        .route("/$export", get(kickoff).post(kickoff))
        .route("/Patient/$export", get(kickoff).post(kickoff))
        .route("/Group/{id}/$export", get(kickoff).post(kickoff))
        .route("/_export-status/{job}", get(status).delete(cancel))
        .route("/_export/{job}/{file}", get(download))
        .route("/", axum::routing::post(transaction))
        .route("/{type}", get(search).post(create))
        .route("/{type}/{id}", get(read).put(update).delete(remove))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), crate::auth::require_token));
    let router = open.merge(protected).with_state(state.clone());
    match state.access_log {
        Some(log) => router.layer(axum::middleware::from_fn_with_state(Arc::new(log), veil_http::access_log)),
        None => router,
    }
}

fn fhir_json(status: StatusCode, body: Json) -> Response {
    (status, [(header::CONTENT_TYPE, "application/fhir+json")], body.to_string()).into_response()
}

/// 404 unless `ty` is an R4 resource type.
fn known_type(ty: &str) -> Result<(), ApiError> {
    match veil_fhir::r4().is_resource_type(ty) {
        true => Ok(()),
        false => Err(ApiError::not_found(format!("unknown resource type {ty}"))),
    }
}

async fn metadata(State(st): State<Arc<AppState>>) -> Response {
    let body = st.capabilities.get_or_init(|| capability_statement(&st.base_url, st.auth.is_some()));
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/fhir+json")], body.clone()).into_response()
}

/// The CapabilityStatement; with authorization on, `rest.security` names
/// the token endpoint as SMART servers do (the `oauth-uris` extension),
/// since some clients (SMART's bulk-data-client) look there rather than
/// at `.well-known/smart-configuration`.
fn capability_statement(base_url: &str, authorization: bool) -> String {
    let export = |name: &str, canonical: &str| json!({"name": name, "definition": canonical});
    let types: Vec<Json> = {
        let mut t: Vec<&str> =
            veil_fhir::r4().resource_types().filter(|t| !matches!(*t, "Resource" | "DomainResource")).collect();
        t.sort_unstable();
        t.into_iter()
            .map(|ty| {
                let interactions = ["read", "create", "update", "delete", "search-type"].map(|c| json!({"code": c}));
                let params: Vec<Json> = veil_fhir::r4()
                    .search_params(ty)
                    .filter(|p| {
                        !matches!(p.kind, veil_fhir::SearchParamKind::Composite | veil_fhir::SearchParamKind::Special)
                    })
                    .map(|p| json!({"name": p.code, "type": format!("{:?}", p.kind).to_lowercase()}))
                    .collect();
                let mut r = json!({"type": ty, "interaction": interactions, "searchParam": params});
                match ty {
                    "Patient" => {
                        r["operation"] = json!([export(
                            "export",
                            "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"
                        )])
                    }
                    "Group" => {
                        r["operation"] = json!([export(
                            "export",
                            "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"
                        )])
                    }
                    _ => {}
                }
                r
            })
            .collect()
    };
    let mut rest = json!({
        "mode": "server",
        "resource": types,
        "interaction": [{"code": "transaction"}, {"code": "batch"}],
        "operation": [export("export", "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export")]
    });
    if authorization {
        rest["security"] = json!({
            "service": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                "code": "SMART-on-FHIR"
            }]}],
            "extension": [{
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [{"url": "token", "valueUri": format!("{base_url}{}", crate::auth::TOKEN_PATH)}]
            }]
        });
    }
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": veil_util::clock::now_instant(),
        "kind": "instance",
        "instantiates": ["http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"],
        "software": {"name": "Veil", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "Veil FHIR server", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json"],
        "rest": [rest]
    })
    .to_string()
}

async fn read(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ty, id)): Path<(String, String)>,
) -> ApiResult {
    known_type(&ty)?;
    caller.check(&ty, 'r', "reading")?;
    let store = st.store.clone();
    let (t, i) = (ty.clone(), id.clone());
    let stored = veil_http::blocking(move || store.get(&t, &i)).await??;
    let Some(stored) = stored else { return Err(ApiError::not_found(format!("{ty}/{id} is not known"))) };
    let Some(body) = stored.body else {
        return Err(ApiError::new(StatusCode::GONE, "deleted", format!("{ty}/{id} was deleted")));
    };
    let etag = format!("W/\"{}\"", stored.version);
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/fhir+json".to_string()), (header::ETAG, etag)], body)
        .into_response())
}

fn parse_resource(body: &str, ty: &str) -> Result<Json, ApiError> {
    let doc: Json = serde_json::from_str(body)
        .map_err(|e| ApiError::invalid(format!("the body is not JSON (line {}, column {})", e.line(), e.column())))?;
    if doc.get("resourceType").and_then(Json::as_str) != Some(ty) {
        return Err(ApiError::invalid(format!("the body is not a {ty}")));
    }
    valid_r4(&doc)?;
    Ok(doc)
}

/// 422 unless `doc` has the shape of an R4 resource: what is stored must be
/// what search and export can read, not something export later drops.
fn valid_r4(doc: &Json) -> Result<(), ApiError> {
    veil_fhir::validate::check_resource(doc).map_err(|e| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "structure", format!("not a valid FHIR R4 resource: {e}"))
    })
}

fn written(status: StatusCode, base: &str, location: &str, body: Json) -> Response {
    let mut r = fhir_json(status, body);
    let version = location.rsplit('/').next().unwrap_or("1");
    r.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("{base}/{location}")).unwrap_or(HeaderValue::from_static("")),
    );
    r.headers_mut().insert(
        header::ETAG,
        HeaderValue::from_str(&format!("W/\"{version}\"")).unwrap_or(HeaderValue::from_static("")),
    );
    r
}

async fn store_one(st: &Arc<AppState>, doc: Json) -> Result<(String, Json), ApiError> {
    let store = st.store.clone();
    let kept = doc.clone();
    // Stored as the one resource it is: a Bundle POSTed or PUT to /Bundle
    // is kept as a Bundle, never unpacked (only the base processes
    // transactions, where every entry is checked).
    let report = veil_http::blocking(move || crate::store_resource(&*store, doc, "request")).await??;
    Ok((report.locations.first().cloned().unwrap_or_default(), kept))
}

async fn create(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(ty): Path<String>,
    body: String,
) -> ApiResult {
    known_type(&ty)?;
    caller.check(&ty, 'c', "creating")?;
    let mut doc = parse_resource(&body, &ty)?;
    // The server chooses the id of a created resource.
    doc["id"] = Json::String(crate::new_id());
    let (location, doc) = store_one(&st, doc).await?;
    Ok(written(StatusCode::CREATED, &st.base_url, &location, doc))
}

async fn update(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ty, id)): Path<(String, String)>,
    body: String,
) -> ApiResult {
    known_type(&ty)?;
    // An update may create the resource, so it needs both.
    caller.check(&ty, 'u', "updating")?;
    caller.check(&ty, 'c', "updating")?;
    let doc = parse_resource(&body, &ty)?;
    if doc.get("id").and_then(Json::as_str) != Some(id.as_str()) {
        return Err(ApiError::invalid("the resource's id must equal the id in the URL"));
    }
    let (location, doc) = store_one(&st, doc).await?;
    let status = if location.ends_with("/_history/1") { StatusCode::CREATED } else { StatusCode::OK };
    Ok(written(status, &st.base_url, &location, doc))
}

async fn remove(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ty, id)): Path<(String, String)>,
) -> ApiResult {
    caller.check(&ty, 'd', "deleting")?;
    let store = st.store.clone();
    match veil_http::blocking(move || store.delete(&ty, &id)).await?? {
        Some(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        None => Err(ApiError::not_found("no such resource")),
    }
}

async fn transaction(State(st): State<Arc<AppState>>, Extension(caller): Extension<Caller>, body: String) -> ApiResult {
    let doc = parse_resource(&body, "Bundle")?;
    let kind = doc.get("type").and_then(Json::as_str).unwrap_or("").to_string();
    if !matches!(kind.as_str(), "transaction" | "batch") {
        return Err(ApiError::invalid("POST to the base takes a transaction or batch Bundle"));
    }
    // Every entry is checked for its own type and interaction before
    // anything of the Bundle is written.
    let actions = crate::entry_actions(&doc).map_err(ApiError::invalid)?;
    for (i, action) in actions.iter().enumerate() {
        if let Some(&missing) = action.needs.iter().find(|&&p| !caller.permits(&action.resource_type, p)) {
            let what = match missing {
                'c' => "creating",
                'u' => "updating",
                _ => "deleting",
            };
            return Err(ApiError::forbidden(format!(
                "entry {i}: the access token's scopes do not allow {what} {}",
                action.resource_type
            )));
        }
    }
    let store = st.store.clone();
    let report = veil_http::blocking(move || crate::load_document(&*store, doc, "request")).await??;
    let entries: Vec<Json> = report
        .locations
        .iter()
        .map(|l| {
            let status = if l.ends_with("/_history/1") { "201 Created" } else { "200 OK" };
            json!({"response": {"status": status, "location": l}})
        })
        .collect();
    Ok(fhir_json(
        StatusCode::OK,
        json!({"resourceType": "Bundle", "type": format!("{kind}-response"), "entry": entries}),
    ))
}

/// Search: any supported search parameter (see [`crate::search`]), with
/// `_count` (default 50, at most 1000) and paging by `_offset`.
async fn search(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(ty): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    known_type(&ty)?;
    caller.check(&ty, 's', "searching")?;
    let query = query.unwrap_or_default();
    let params = query_pairs(&query);
    let number = |name: &str, default: usize| {
        params.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.parse::<usize>().ok()).unwrap_or(default)
    };
    let count = number("_count", 50).min(1000);
    let offset = number("_offset", 0);
    // _lastUpdated narrows the store's scan; everything else is matched on the resources.
    let mut filter = veil_store::ScanFilter { types: Some(vec![ty.clone()]), ..Default::default() };
    let mut criteria = Vec::new();
    for (k, v) in &params {
        match k.as_str() {
            "_lastUpdated" => {
                let (prefix, value) = v.split_at(v.find(|c: char| c.is_ascii_digit()).unwrap_or(0));
                let Some(at) = instant(value).or_else(|| instant(&format!("{value}T00:00:00Z"))) else {
                    return Err(ApiError::invalid(
                        "_lastUpdated takes a prefix and an instant, e.g. gt2024-01-01T00:00:00Z",
                    ));
                };
                match prefix {
                    "gt" | "ge" | "sa" => filter.since = Some(at),
                    "lt" | "le" | "eb" => filter.until = Some(at),
                    _ => return Err(ApiError::not_supported("_lastUpdated supports gt, ge, lt and le")),
                }
            }
            "_count" | "_offset" => {}
            _ => criteria.push((k.clone(), v.clone())),
        }
    }
    let compiled =
        crate::search::Query::from_pairs(&ty, &criteria).map_err(|e| ApiError::not_supported(e.to_string()))?;
    let store = st.store.clone();
    let mut matches = veil_http::blocking(move || {
        let mut matches: Vec<String> = Vec::new();
        let mut seen = 0usize;
        let r = store.scan(&filter, &mut |s| {
            let Some(body) = s.body else { return Ok(true) };
            let doc: Json = serde_json::from_str(&body).map_err(|e| veil_store::StoreError::Callback(e.to_string()))?;
            if compiled.matches(&doc) {
                if seen >= offset && matches.len() <= count {
                    matches.push(body);
                }
                seen += 1;
            }
            // One more than a page tells whether there is a next page.
            Ok(matches.len() <= count)
        });
        r.map(|_| matches)
    })
    .await??;
    let more = matches.len() > count;
    matches.truncate(count);
    let base_query: String =
        params.iter().filter(|(k, _)| k != "_offset").map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    let mut links = vec![json!({"relation": "self", "url": format!("{}/{ty}?{query}", st.base_url)})];
    if more {
        links.push(
            json!({"relation": "next", "url": format!("{}/{ty}?{base_query}&_offset={}", st.base_url, offset + count)}),
        );
    }
    let entries: Vec<Json> = matches
        .into_iter()
        .filter_map(|b| serde_json::from_str::<Json>(&b).ok())
        .map(|r| {
            let full = format!("{}/{}/{}", st.base_url, ty, r["id"].as_str().unwrap_or(""));
            json!({"fullUrl": full, "resource": r, "search": {"mode": "match"}})
        })
        .collect();
    Ok(fhir_json(
        StatusCode::OK,
        json!({"resourceType": "Bundle", "type": "searchset", "link": links, "entry": entries}),
    ))
}

/// Parameters of a kick-off, from the query string (GET) or a Parameters body (POST).
fn parameters(method: &Method, query: Option<&str>, body: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = query_pairs(query.unwrap_or(""));
    if *method == Method::POST && !body.trim().is_empty() {
        let doc: Json =
            serde_json::from_str(body).map_err(|_| "the body is not a FHIR Parameters resource".to_string())?;
        if doc.get("resourceType").and_then(Json::as_str) != Some("Parameters") {
            return Err("the body is not a FHIR Parameters resource".into());
        }
        for p in doc.get("parameter").and_then(Json::as_array).into_iter().flatten() {
            let Some(name) = p.get("name").and_then(Json::as_str) else { continue };
            let value =
                p.as_object().and_then(|o| o.iter().find(|(k, _)| k.starts_with("value")).map(|(_, v)| v.clone()));
            let text = match value {
                Some(Json::String(s)) => s,
                Some(Json::Object(o)) => o.get("reference").and_then(Json::as_str).unwrap_or("").to_string(),
                Some(Json::Bool(b)) => b.to_string(),
                _ => continue,
            };
            out.push((name.to_string(), text));
        }
    }
    Ok(out)
}

/// Splits a `_typeFilter` value at each comma that starts a new `Type?`
/// query, keeping commas inside values (`status=a,b`).
fn split_type_filters(value: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut rest = value;
    while let Some(i) = rest.find(',') {
        let after = &rest[i + 1..];
        let starts_query = after.find('?').is_some_and(|q| {
            let ty = &after[..q];
            !ty.is_empty()
                && ty.starts_with(|c: char| c.is_ascii_uppercase())
                && ty.chars().all(|c| c.is_ascii_alphabetic())
        });
        out.last_mut().expect("non-empty").push_str(&rest[..i]);
        if starts_query {
            out.push(String::new());
        } else {
            out.last_mut().expect("non-empty").push(',');
        }
        rest = after;
    }
    out.last_mut().expect("non-empty").push_str(rest);
    out.into_iter().filter(|s| !s.is_empty()).collect()
}

/// A FHIR instant (a time zone is required), in the store's UTC form.
fn instant(text: &str) -> Option<String> {
    let t = veil_fhirpath::Temporal::parse_datetime(text)?;
    if t.precision < veil_fhirpath::Precision::Second || text.len() < 20 {
        return None;
    }
    // Re-read the parts we need from the validated text.
    let (date, rest) = text.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let zone_at = rest.find(['Z', '+', '-'])?;
    let (clock, zone) = rest.split_at(zone_at);
    let mut c = clock.splitn(3, ':');
    let (h, mi) = (c.next()?.parse::<i64>().ok()?, c.next()?.parse::<i64>().ok()?);
    let sec_text = c.next()?;
    let (s, frac) = sec_text.split_once('.').unwrap_or((sec_text, "0"));
    let s: i64 = s.parse().ok()?;
    let ms: i64 = format!("{frac:0<3}")[..3].parse().ok()?;
    let offset_min = match zone {
        "Z" => 0,
        z => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let (zh, zm) = z[1..].split_once(':')?;
            sign * (zh.parse::<i64>().ok()? * 60 + zm.parse::<i64>().ok()?)
        }
    };
    let days = veil_util::calendar::days_from_civil(y as i32, mo as u32, da as u32);
    let total_ms = ((days * 86_400 + h * 3600 + mi * 60 + s - offset_min * 60) * 1000) + ms;
    let (days, rem) = (total_ms.div_euclid(86_400_000), total_ms.rem_euclid(86_400_000));
    let (y, m, d) = veil_util::calendar::civil_from_days(days);
    Some(format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    ))
}

/// The export a kick-off asks for, every parameter checked: 400 for what
/// is malformed or unsupported (unless `lenient`, where the parameter
/// allows), 403 for a type the token cannot read.
#[allow(clippy::too_many_arguments)]
fn export_request(
    st: &AppState,
    caller: &Caller,
    level: Level,
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &str,
    lenient: bool,
) -> Result<JobRequest, ApiError> {
    let bad = |text: &str| Err(ApiError::invalid(text));
    if let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) {
        // Accept what a client of this server can read; refuse only what it cannot.
        if !["application/fhir+json", "application/json", "*/*"].iter().any(|a| accept.contains(a)) {
            return bad(&format!("the Accept header '{accept}' is not supported: use application/fhir+json"));
        }
    }
    let params = parameters(method, query, body).map_err(ApiError::invalid)?;
    let url = format!(
        "{}{}",
        st.base_url,
        match &level {
            Level::System => "/$export".to_string(),
            Level::Patient => "/Patient/$export".to_string(),
            Level::Group(g) => format!("/Group/{g}/$export"),
        }
    ) + &query.map(|q| format!("?{q}")).unwrap_or_default();
    let mut req = ExportRequest { level: level.clone(), ..Default::default() };
    // `None`: no `_type` (every type the caller may read); `Some`: those named.
    let mut types: Option<Vec<String>> = None;
    let mut ignored = Vec::new();
    let mut etag = None;
    for (name, value) in &params {
        match name.as_str() {
            "_outputFormat"
                if !matches!(value.as_str(), "application/fhir+ndjson" | "application/ndjson" | "ndjson") =>
            {
                return bad(&format!("the _outputFormat '{value}' is not supported: use application/fhir+ndjson"));
            }
            "_outputFormat" => {}
            "_since" | "_until" => match instant(value) {
                Some(i) if name == "_since" => req.since = Some(i),
                Some(i) => req.until = Some(i),
                None => {
                    return bad(&format!("{name} must be a FHIR instant with a time zone, e.g. 2024-01-01T00:00:00Z"));
                }
            },
            "_type" => {
                for t in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    if !veil_fhir::r4().is_resource_type(t) || matches!(t, "Resource" | "DomainResource") {
                        if lenient {
                            continue;
                        }
                        return bad(&format!("the _type '{t}' is not a FHIR R4 resource type"));
                    }
                    types.get_or_insert_with(Vec::new).push(t.to_string());
                }
            }
            "patient" => {
                if *method != Method::POST {
                    return bad("the patient parameter is only available in POST requests");
                }
                if level == Level::System {
                    return bad("the patient parameter is not valid for a system-level export");
                }
                let id = veil_fhirpath::compartment::patient_id_of_reference(value).unwrap_or(value);
                req.patients.push(format!("Patient/{id}"));
            }
            "_anonymizationConfig" => {
                if !is_plain_file_name(value) {
                    return bad("_anonymizationConfig must name a file in the anonymization container");
                }
                req.anonymization_config = Some(value.clone());
            }
            "_anonymizationConfigEtag" => etag = Some(value.clone()),
            "_container" => {
                if !crate::export::is_container_name(value) {
                    return bad(
                        "_container must be a container name: 3 to 63 lower-case letters, digits and single hyphens, not 'anonymization' or 'export-…'",
                    );
                }
                req.container = Some(value.clone());
            }
            "_typeFilter" => {
                // STU2 packs several queries in one value; split only where a new `Type?` starts.
                for q in split_type_filters(value) {
                    match crate::search::Query::parse_type_filter(&q) {
                        Ok(_) => req.type_filters.push(q),
                        Err(e) if lenient => ignored.push(format!("_typeFilter {q}: {e}")),
                        Err(e) => return Err(ApiError::not_supported(format!("_typeFilter: {e}"))),
                    }
                }
            }
            "_elements" => {
                for e in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                    let known = match e.split_once('.') {
                        Some((t, el)) => veil_fhir::r4().is_resource_type(t) && veil_fhir::r4().child(t, el).is_some(),
                        None => {
                            e.chars().all(|c| c.is_ascii_alphanumeric())
                                && e.starts_with(|c: char| c.is_ascii_lowercase())
                        }
                    };
                    if !known {
                        return bad(&format!("_elements: '{e}' is not an element (element or Type.element)"));
                    }
                    req.elements.push(e.to_string());
                }
            }
            "includeAssociatedData" | "organizeOutputBy" => {
                if !lenient {
                    return Err(ApiError::not_supported(format!("the {name} parameter is not supported")));
                }
                ignored.push(format!("the {name} parameter"));
            }
            // Refused unless the client asked for lenient handling, as the
            // Bulk Data IG recommends: a misspelt `_since` must not export
            // everything.
            _ if lenient => ignored.push(format!("the {name} parameter")),
            _ => {
                return bad(&format!(
                    "the parameter '{name}' is not known to $export (Prefer: handling=lenient ignores it)"
                ));
            }
        }
    }
    // Scopes limit the types: asking for one the token cannot read is
    // refused (403); asking for none exports only what it can read.
    if let Some(grant) = &caller.0 {
        match &types {
            Some(named) => {
                if let Some(t) = named.iter().find(|t| !grant.scopes.reads(t)) {
                    return Err(Caller::forbidden(t, "exporting"));
                }
            }
            None => types = grant.scopes.readable_types(),
        }
        if types.as_ref().is_some_and(Vec::is_empty) {
            return Err(ApiError::forbidden("the access token's scopes allow reading no resource type"));
        }
    }
    if etag.is_some() && req.anonymization_config.is_none() {
        return bad("_anonymizationConfigEtag needs _anonymizationConfig");
    }
    req.anonymization_config_etag = etag;
    if let (Some(s), Some(u)) = (&req.since, &req.until)
        && u < s
    {
        return bad("_until is before _since");
    }
    req.types = types.unwrap_or_default();
    Ok(JobRequest {
        export: req,
        url,
        ignored,
        base_url: st.base_url.clone(),
        client: caller.client_id().map(str::to_string),
    })
}

/// `$export` at every level: the level is the route's (`/$export`,
/// `/Patient/$export`, `/Group/{id}/$export`).
#[allow(clippy::too_many_arguments)]
async fn kickoff(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    group: Option<Path<String>>,
    route: MatchedPath,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: String,
) -> ApiResult {
    let level = match group {
        Some(Path(id)) => Level::Group(id),
        None if route.as_str().starts_with("/Patient/") => Level::Patient,
        None => Level::System,
    };
    let lenient =
        headers.get_all("prefer").iter().filter_map(|v| v.to_str().ok()).any(|v| v.contains("handling=lenient"));
    let req = export_request(&st, &caller, level.clone(), &method, &headers, query.as_deref(), &body, lenient)?;
    let store = st.store.clone();
    let request = serde_json::to_string(&req).expect("a request serialises");
    let group = match &level {
        Level::Group(g) => Some(g.clone()),
        _ => None,
    };
    let wanted_patients: Vec<String> =
        crate::export::patient_ids(&req.export).into_iter().map(str::to_string).collect();
    let state = st.clone();
    let client = caller.client_id().map(str::to_string);
    let export = req.export.clone();
    let id = veil_http::blocking(move || -> Result<String, ApiError> {
        // The configuration is checked now, so that the client hears of a
        // missing, changed or invalid one at kick-off (400), not only when
        // it polls (many clients hide a failed job's message); the job
        // checks it again when it runs.
        crate::export::policy_engine(&state.storage, &export).map_err(|e| ApiError::invalid(e.1))?;
        let members = match &group {
            Some(g) => Some(store.group_members(g)?.ok_or_else(|| ApiError::not_found("the group is not known"))?),
            None => None,
        };
        // `patient` must name patients the export could include (bulk-export.md §5.B 22).
        for p in &wanted_patients {
            let known = match &members {
                Some(m) => m.contains(p),
                None => store.get("Patient", p)?.is_some_and(|s| s.body.is_some()),
            };
            if !known && !lenient {
                let why = if members.is_some() { "is not a member of the group" } else { "is not known" };
                return Err(ApiError::invalid(format!("patient {p} {why}")));
            }
        }
        // Checked and recorded under one gate, so that a burst of
        // kick-offs cannot all pass the same count.
        let _gate = state.kickoff_gate.lock().unwrap_or_else(|e| e.into_inner());
        within_limits(&state, client.as_deref())?;
        let id = crate::new_id();
        store.create_job(&id, &request)?;
        Ok(id)
    })
    .await??;
    let location = format!("{}/_export-status/{id}", st.base_url);
    let mut r = fhir_json(
        StatusCode::ACCEPTED,
        operation_outcome(
            "information",
            "informational",
            &format!("Your request has been accepted. You can check its status at {location}"),
        ),
    );
    r.headers_mut().insert(header::CONTENT_LOCATION, HeaderValue::from_str(&location).expect("ascii"));
    Ok(r)
}

/// Refuses a kick-off that a limit stops: too many of the client's exports
/// running (429), its storage quota used (429 until its oldest export
/// expires), or the export disk nearly full (503).
fn within_limits(st: &AppState, client: Option<&str>) -> Result<(), ApiError> {
    let limits = st.limits;
    let busy = |status: StatusCode, retry: u64, text: &str| {
        Err(ApiError::new(status, "throttled", text).with_header(header::RETRY_AFTER, retry.max(1).to_string()))
    };
    let free = rustix::fs::statvfs(st.storage.root())
        .map(|v| v.f_bavail.saturating_mul(v.f_frsize))
        .map_err(|_| ApiError::internal("cannot read the export storage's free space"))?;
    if free < limits.min_free_bytes {
        return busy(
            StatusCode::SERVICE_UNAVAILABLE,
            600,
            "the server's export storage is nearly full: try again later",
        );
    }
    let jobs = st.store.jobs()?;
    let mine: Vec<(veil_store::Job, JobRequest)> = jobs
        .into_iter()
        .filter_map(|j| {
            let r = JobRequest::of_job(&j)?;
            (r.client.as_deref() == client).then_some((j, r))
        })
        .collect();
    let running = mine.iter().filter(|(j, _)| matches!(j.state, JobState::Queued | JobState::Running)).count();
    if running >= limits.per_client {
        return busy(
            StatusCode::TOO_MANY_REQUESTS,
            10,
            &format!(
                "{running} of this client's exports are still running (at most {}): wait for one to finish",
                limits.per_client
            ),
        );
    }
    let used: u64 =
        mine.iter().map(|(j, r)| st.storage.job_bytes(&j.id, r.export.container.as_deref(), &j.created)).sum();
    if used >= limits.client_quota_bytes {
        let oldest = mine
            .iter()
            .filter_map(|(j, _)| veil_util::clock::parse_iso(&j.created))
            .min()
            .unwrap_or_else(veil_util::clock::now_secs);
        let wait = (oldest + limits.retention_secs).saturating_sub(veil_util::clock::now_secs());
        let text = format!(
            "this client's exports hold {} MiB, its quota is {} MiB: delete finished exports (DELETE their status URL) or wait for them to expire",
            used >> 20,
            limits.client_quota_bytes >> 20
        );
        return busy(StatusCode::TOO_MANY_REQUESTS, wait, &text);
    }
    Ok(())
}

/// Whether `caller` started `job`: with authorization on, only the client
/// that kicked an export off sees its status and files; to anyone else it
/// does not exist.
fn started_by(job: &veil_store::Job, caller: &Caller) -> bool {
    caller.client_id().is_none_or(|me| JobRequest::of_job(job).and_then(|r| r.client).as_deref() == Some(me))
}

async fn status(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(job): Path<String>,
) -> ApiResult {
    let store = st.store.clone();
    let id = job.clone();
    let found = veil_http::blocking(move || store.job(&id)).await??;
    let Some(j) = found.filter(|j| j.state != JobState::Cancelled && started_by(j, &caller)) else {
        return Err(ApiError::not_found("the export was not found"));
    };
    match j.state {
        JobState::Queued | JobState::Running => {
            // Polling faster than Retry-After says gets 429.
            let now = Instant::now();
            let too_soon = {
                let mut polls = st.polls.lock().unwrap_or_else(|e| e.into_inner());
                polls.retain(|_, t| now.duration_since(*t) < Duration::from_secs(600));
                let soon = polls
                    .get(&job)
                    .is_some_and(|t| now.duration_since(*t) < Duration::from_millis(RETRY_AFTER_SECS * 1000 - 50));
                if !soon {
                    polls.insert(job.clone(), now);
                }
                soon
            };
            let retry = (header::RETRY_AFTER, RETRY_AFTER_SECS.to_string());
            if too_soon {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "throttled",
                    "polled faster than Retry-After",
                )
                .with_header(retry.0, retry.1));
            }
            let progress = match (&j.state, j.progress.as_deref().and_then(|p| serde_json::from_str::<Json>(p).ok())) {
                (JobState::Queued, _) => "queued".to_string(),
                (_, Some(p)) => format!("{} resources exported", p["resources"]),
                _ => "in progress".to_string(),
            };
            Ok((StatusCode::ACCEPTED, [retry, (header::HeaderName::from_static("x-progress"), progress)])
                .into_response())
        }
        JobState::Completed => {
            let body = j.result.unwrap_or_else(|| "{}".into());
            // The files are deleted this long after the kick-off.
            let created = veil_util::clock::parse_iso(&j.created).unwrap_or_else(veil_util::clock::now_secs);
            let expires =
                httpdate_in((created + st.limits.retention_secs).saturating_sub(veil_util::clock::now_secs()));
            Ok((
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json".to_string()), (header::EXPIRES, expires)],
                body,
            )
                .into_response())
        }
        JobState::Failed | JobState::Cancelled => {
            let stored: Json = j.error.as_deref().and_then(|e| serde_json::from_str(e).ok()).unwrap_or(Json::Null);
            let code = stored["status"]
                .as_u64()
                .and_then(|c| StatusCode::from_u16(c as u16).ok())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = if stored["outcome"].is_object() {
                stored["outcome"].clone()
            } else {
                operation_outcome("error", "exception", "the export failed")
            };
            Ok(fhir_json(code, body))
        }
    }
}

/// An HTTP date (RFC 9110 IMF-fixdate) `secs` from now.
fn httpdate_in(secs: u64) -> String {
    httpdate::fmt_http_date(std::time::SystemTime::now() + std::time::Duration::from_secs(secs))
}

async fn cancel(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(job): Path<String>,
) -> ApiResult {
    let store = st.store.clone();
    let storage = st.storage.clone();
    let cancelled = veil_http::blocking(move || -> Result<bool, ApiError> {
        let Some(j) = store.job(&job)? else { return Ok(false) };
        if j.state == JobState::Cancelled || !started_by(&j, &caller) {
            return Ok(false);
        }
        // Cancel first, so a running worker stops at its next heartbeat, then forget the job.
        store.cancel_job(&job)?;
        let container = JobRequest::container_of(&j);
        storage
            .remove_job(&job, container.as_deref(), &j.created)
            .map_err(|_| ApiError::internal("cannot delete the export's files"))?;
        store.delete_job(&job)?;
        Ok(true)
    })
    .await??;
    if !cancelled {
        return Err(ApiError::not_found("the export was not found"));
    }
    Ok(fhir_json(
        StatusCode::ACCEPTED,
        operation_outcome("information", "informational", "the export was cancelled and its files deleted"),
    ))
}

async fn download(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((job, file)): Path<(String, String)>,
) -> ApiResult {
    let no_such_file = || ApiError::not_found("no such file");
    if !is_plain_file_name(&file) || file.starts_with('.') {
        return Err(no_such_file());
    }
    let store = st.store.clone();
    let storage = st.storage.clone();
    let path = veil_http::blocking(move || -> Option<std::path::PathBuf> {
        let j = store.job(&job).ok()??;
        if j.state != JobState::Completed || !started_by(&j, &caller) {
            return None;
        }
        let container = JobRequest::container_of(&j);
        let path = storage.job_dir(&job, container.as_deref(), &j.created).join(&file);
        path.is_file().then_some(path)
    })
    .await?
    .ok_or_else(no_such_file)?;
    let file = tokio::fs::File::open(&path).await.map_err(|_| no_such_file())?;
    let stream = FileStream::new(file);
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/fhir+ndjson")], Body::from_stream(stream)).into_response())
}

/// Binds `addr` for [`serve`]. Without authorization only loopback
/// addresses are allowed: anything else would hand patient data to anyone
/// who can connect.
pub async fn bind(addr: SocketAddr, authorization: bool) -> std::io::Result<tokio::net::TcpListener> {
    if !authorization && !addr.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "without authorization veil serve listens on loopback only: anything else would hand patient data to anyone who can connect",
        ));
    }
    tokio::net::TcpListener::bind(addr).await
}

/// Serves on `listener` until `shutdown` resolves.
pub async fn serve(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Retention: finished exports past their expiry are deleted, files and job.
    let sweeper = {
        let state = state.clone();
        tokio::spawn(async move {
            loop {
                let (store, storage, retention) =
                    (state.store.clone(), state.storage.clone(), state.limits.retention_secs);
                let _ =
                    tokio::task::spawn_blocking(move || crate::export::expire_exports(&*store, &storage, retention))
                        .await;
                // A minute apart, or sooner when exports live less long.
                tokio::time::sleep(Duration::from_secs(retention.clamp(1, 60))).await;
            }
        })
    };
    let _stop_sweeper = AbortOnDrop(sweeper);
    // The client's address is what share links with an address range check.
    axum::serve(listener, router(state).into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}

/// Stops a background task when the server stops.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A file as a stream of 64 KiB chunks, so downloads never hold a whole
/// file in memory.
pub(crate) struct FileStream {
    file: tokio::fs::File,
    buf: Vec<u8>,
}

impl FileStream {
    /// The rest of `file`, from where it stands.
    pub(crate) fn new(file: tokio::fs::File) -> FileStream {
        FileStream { file, buf: vec![0; 64 * 1024] }
    }
}

impl futures_core::Stream for FileStream {
    type Item = Result<axum::body::Bytes, std::io::Error>;
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        use tokio::io::AsyncRead;
        let this = self.get_mut();
        let mut rb = tokio::io::ReadBuf::new(&mut this.buf);
        match std::pin::Pin::new(&mut this.file).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) if rb.filled().is_empty() => Poll::Ready(None),
            Poll::Ready(Ok(())) => Poll::Ready(Some(Ok(axum::body::Bytes::copy_from_slice(rb.filled())))),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Pending => Poll::Pending,
        }
    }
}

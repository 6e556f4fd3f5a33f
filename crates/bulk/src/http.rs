//! The protocol: kick-off, status polling and file requests, with the
//! retries a long export needs.

use std::time::{Duration, SystemTime};

use reqwest::blocking::{RequestBuilder, Response};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde_json::{Value as Json, json};

use crate::{BulkError, Result};

/// How a request is authorised.
pub enum Auth {
    /// No authorisation (a server on loopback, a test).
    None,
    /// A bearer token given by the user.
    Bearer(String),
    /// HTTP Basic.
    Basic {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// SMART Backend Services: a fresh token whenever the old one is about to lapse.
    Smart(Box<veil_smart::TokenClient>),
}

impl Auth {
    /// After a 401: whether asking again can help (a SMART token is
    /// renewed; a given token or password would only be refused again).
    fn renew(&self) -> bool {
        match self {
            Auth::Smart(tokens) => {
                tokens.forget();
                true
            }
            _ => false,
        }
    }

    fn apply(&self, request: RequestBuilder) -> Result<RequestBuilder> {
        Ok(match self {
            Auth::None => request,
            Auth::Bearer(token) => request.bearer_auth(token),
            Auth::Basic { user, password } => request.basic_auth(user, Some(password)),
            Auth::Smart(tokens) => request.bearer_auth(tokens.access_token()?),
        })
    }
}

/// Which `$export` operation (as the server's job table stores it too:
/// `"system"`, `"patient"`, `{"group": ID}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// `[base]/$export`.
    #[default]
    System,
    /// `[base]/Patient/$export`.
    Patient,
    /// `[base]/Group/ID/$export`.
    Group(String),
}

/// What to export: the kick-off's parameters, as `veil export` sends them
/// and as `veil serve` keeps them in its job record (JSON, camelCase; a list
/// left empty asks for no narrowing).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportRequest {
    /// The operation.
    #[serde(default)]
    pub level: Level,
    /// `_type`; every type when empty.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub types: Vec<String>,
    /// `_since`.
    pub since: Option<String>,
    /// `_until` (Bulk Data 2.0).
    pub until: Option<String>,
    /// `_typeFilter`, each as given.
    #[serde(default)]
    pub type_filters: Vec<String>,
    /// `_elements`: `element` or `Type.element` entries.
    #[serde(default)]
    pub elements: Vec<String>,
    /// `patient` references (`Patient/ID`; Patient or Group level), sent in a POST.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub patients: Vec<String>,
    /// Azure's `_anonymizationConfig`: a policy the server holds.
    pub anonymization_config: Option<String>,
    /// Azure's `_anonymizationConfigEtag`: the policy must still be this version.
    pub anonymization_config_etag: Option<String>,
    /// Azure's `_container`: where the server puts the files.
    pub container: Option<String>,
}

/// A list written as `null` (as `veil serve`'s job records were before
/// this type was shared) reads as empty.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    use serde::Deserialize as _;
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

impl ExportRequest {
    /// The kick-off URL (with the query for a GET).
    pub fn url(&self, base: &str) -> String {
        let base = base.trim_end_matches('/');
        let path = match &self.level {
            Level::System => format!("{base}/$export"),
            Level::Patient => format!("{base}/Patient/$export"),
            Level::Group(id) => format!("{base}/Group/{id}/$export"),
        };
        if !self.patients.is_empty() {
            return path;
        }
        let mut query = reqwest::Url::parse("http://x/").expect("a valid URL");
        {
            let mut q = query.query_pairs_mut();
            if !self.types.is_empty() {
                q.append_pair("_type", &self.types.join(","));
            }
            if let Some(since) = &self.since {
                q.append_pair("_since", since);
            }
            if let Some(until) = &self.until {
                q.append_pair("_until", until);
            }
            for (name, value) in self.other_parameters() {
                q.append_pair(name, &value);
            }
        }
        match query.query() {
            Some(q) if !q.is_empty() => format!("{path}?{q}"),
            _ => path,
        }
    }

    /// SHA-256 (hex) of what identifies the request: its kick-off URL and,
    /// for a POST, its body.
    pub fn digest(&self) -> String {
        use sha2::Digest as _;
        let mut hash = sha2::Sha256::new();
        hash.update(self.url("").as_bytes());
        if !self.patients.is_empty() {
            hash.update(self.parameters().to_string().as_bytes());
        }
        veil_util::hex::encode(&hash.finalize())
    }

    /// The `Parameters` body of a POST kick-off (used when patients are named).
    pub fn parameters(&self) -> Json {
        let mut parameter = Vec::new();
        if !self.types.is_empty() {
            parameter.push(json!({"name": "_type", "valueString": self.types.join(",")}));
        }
        if let Some(since) = &self.since {
            parameter.push(json!({"name": "_since", "valueInstant": since}));
        }
        if let Some(until) = &self.until {
            parameter.push(json!({"name": "_until", "valueInstant": until}));
        }
        for (name, value) in self.other_parameters() {
            parameter.push(json!({"name": name, "valueString": value}));
        }
        for patient in &self.patients {
            parameter.push(json!({"name": "patient", "valueReference": {"reference": patient}}));
        }
        json!({"resourceType": "Parameters", "parameter": parameter})
    }

    /// The parameters after `_type`, `_since` and `_until`, in the order
    /// both kick-off forms send them.
    fn other_parameters(&self) -> Vec<(&'static str, String)> {
        let mut out: Vec<(&'static str, String)> =
            self.type_filters.iter().map(|f| ("_typeFilter", f.clone())).collect();
        if !self.elements.is_empty() {
            out.push(("_elements", self.elements.join(",")));
        }
        let azure = [
            ("_anonymizationConfig", &self.anonymization_config),
            ("_anonymizationConfigEtag", &self.anonymization_config_etag),
            ("_container", &self.container),
        ];
        out.extend(azure.into_iter().filter_map(|(name, value)| Some((name, value.clone()?))));
        out
    }
}

/// One file of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManifestFile {
    /// Its resource type.
    #[serde(rename = "type")]
    pub resource_type: String,
    /// Where to get it.
    pub url: String,
    /// How many resources the server says it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// The completed export's manifest, as `veil serve` writes it and
/// `veil export` reads it (Bulk Data §2.4).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// The server's time of the export (`transactionTime`).
    #[serde(rename = "transactionTime", default)]
    pub transaction_time: String,
    /// The kick-off URL.
    #[serde(default)]
    pub request: String,
    /// Whether the files need the access token.
    #[serde(rename = "requiresAccessToken", default)]
    pub requires_access_token: bool,
    /// The data.
    #[serde(default)]
    pub output: Vec<ManifestFile>,
    /// Bundles of deleted resources (with `_since`).
    #[serde(default)]
    pub deleted: Vec<ManifestFile>,
    /// OperationOutcomes about what could not be exported.
    #[serde(default)]
    pub error: Vec<ManifestFile>,
}

/// How hard to try.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per request before giving up (connection errors, 429, 5xx).
    pub attempts: u32,
    /// The longest wait between polls or attempts, whatever `Retry-After` says.
    pub max_wait: Duration,
    /// The wait between polls when the server gives none.
    pub poll: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { attempts: 6, max_wait: Duration::from_secs(120), poll: Duration::from_secs(2) }
    }
}

/// A Bulk Data server and how to reach it.
pub struct Client {
    http: reqwest::blocking::Client,
    base: String,
    auth: Auth,
    /// Retries and waits.
    pub retry: RetryPolicy,
}

/// A status that is worth another try.
fn transient(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// `Retry-After` as a wait: seconds, or an HTTP date; capped.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime, cap: Duration) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(value).ok()?.duration_since(now).unwrap_or_default(),
    };
    Some(wait.min(cap))
}

/// The path of a URL, for messages (never its query, which may carry a token).
pub(crate) fn path_of(url: &str) -> String {
    reqwest::Url::parse(url).map(|u| u.path().to_string()).unwrap_or_else(|_| "(an invalid URL)".into())
}

fn detail(response: Response) -> String {
    let text = response.text().unwrap_or_default();
    let text = serde_json::from_str::<Json>(&text)
        .ok()
        .and_then(|j| j["issue"][0]["diagnostics"].as_str().map(str::to_string))
        .unwrap_or(text);
    text.chars().take(300).collect()
}

impl Client {
    /// A client for the FHIR server at `base`.
    pub fn new(base: &str, auth: Auth) -> Client {
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            // Files can be large: no limit on a whole request.
            .timeout(None)
            .build()
            .expect("an HTTP client with defaults");
        Client { http, base: base.trim_end_matches('/').to_string(), auth, retry: RetryPolicy::default() }
    }

    /// Sends `make()` until it answers something other than a connection
    /// error, 429 or a transient 5xx, waiting as `Retry-After` says (or
    /// doubling from a second); gives up after `retry.attempts`.
    /// `authorise`: whether the request carries our credentials (not to a
    /// file host the manifest says needs no token).
    pub(crate) fn send(&self, what: &str, authorise: bool, make: &dyn Fn() -> RequestBuilder) -> Result<Response> {
        let mut backoff = Duration::from_secs(1);
        let mut renewed = false;
        for attempt in 1..=self.retry.attempts {
            let last = attempt == self.retry.attempts;
            let request = if authorise { self.auth.apply(make())? } else { make() };
            match request.send() {
                // A token that lapsed on the way (or was revoked): one new token, one more try.
                Ok(r) if r.status() == 401 && authorise && !renewed && !last && self.auth.renew() => renewed = true,
                Ok(r) if transient(r.status().as_u16()) && !last => {
                    let wait = retry_after(r.headers(), SystemTime::now(), self.retry.max_wait).unwrap_or(backoff);
                    std::thread::sleep(wait);
                }
                Ok(r) => return Ok(r),
                Err(_) if !last => std::thread::sleep(backoff),
                Err(e) => return Err(BulkError::Http(format!("{what}: {}", without_url(e)))),
            }
            backoff = (backoff * 2).min(self.retry.max_wait);
        }
        unreachable!("the last attempt returns")
    }

    /// Starts the export; returns the status URL.
    pub fn kick_off(&self, request: &ExportRequest) -> Result<String> {
        let url = request.url(&self.base);
        let post = !request.patients.is_empty();
        let body = request.parameters().to_string();
        let response = self.send("the kick-off", true, &|| {
            let r = if post {
                self.http.post(&url).header("Content-Type", "application/fhir+json").body(body.clone())
            } else {
                self.http.get(&url)
            };
            r.header("Accept", "application/fhir+json").header("Prefer", "respond-async")
        })?;
        let status = response.status().as_u16();
        if status != 202 {
            return Err(BulkError::Status {
                what: format!("the kick-off ({})", path_of(&url)),
                status,
                detail: detail(response),
            });
        }
        let location = response.headers().get("content-location").and_then(|v| v.to_str().ok());
        location
            .map(str::to_string)
            .ok_or_else(|| BulkError::Protocol("the kick-off answered 202 without a Content-Location".into()))
    }

    /// Polls `status_url` until the export is complete; `progress` sees
    /// each `X-Progress`.
    pub fn wait(&self, status_url: &str, progress: &mut dyn FnMut(&str)) -> Result<Manifest> {
        loop {
            let response = self
                .send("the status request", true, &|| self.http.get(status_url).header("Accept", "application/json"))?;
            match response.status().as_u16() {
                200 => {
                    return response.json().map_err(|e| {
                        BulkError::Protocol(format!("the manifest is not what Bulk Data describes: {}", without_url(e)))
                    });
                }
                202 => {
                    if let Some(p) = response.headers().get("x-progress").and_then(|v| v.to_str().ok()) {
                        progress(p);
                    }
                    std::thread::sleep(
                        retry_after(response.headers(), SystemTime::now(), self.retry.max_wait)
                            .unwrap_or(self.retry.poll),
                    );
                }
                status => {
                    return Err(BulkError::Status { what: "the export".into(), status, detail: detail(response) });
                }
            }
        }
    }

    /// Opens a file of the manifest; the token goes with the request only
    /// when the manifest says the files need it.
    pub(crate) fn open(&self, file: &ManifestFile, with_token: bool) -> Result<Response> {
        let what = format!("{} file {}", file.resource_type, path_of(&file.url));
        let response =
            self.send(&what, with_token, &|| self.http.get(&file.url).header("Accept", "application/fhir+ndjson"))?;
        match response.status().as_u16() {
            200 => Ok(response),
            status => Err(BulkError::Status { what, status, detail: detail(response) }),
        }
    }

    /// Asks the server to stop and forget the export (`DELETE` on the status URL).
    pub fn cancel(&self, status_url: &str) -> Result<()> {
        self.send("the cancellation", true, &|| self.http.delete(status_url))?;
        Ok(())
    }
}

/// A reqwest error's message without the URL it carries (its query may hold a token).
pub(crate) fn without_url(e: reqwest::Error) -> String {
    e.without_url().to_string().chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates_and_is_capped() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h, now, Duration::from_secs(60)), Some(Duration::from_secs(7)));
        h.insert(RETRY_AFTER, "7000".parse().unwrap());
        assert_eq!(retry_after(&h, now, Duration::from_secs(60)), Some(Duration::from_secs(60)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        h.insert(RETRY_AFTER, later.parse().unwrap());
        assert_eq!(retry_after(&h, now, Duration::from_secs(60)), Some(Duration::from_secs(30)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        h.insert(RETRY_AFTER, past.parse().unwrap());
        assert_eq!(retry_after(&h, now, Duration::from_secs(60)), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h, now, Duration::from_secs(60)), None);
    }

    #[test]
    fn kick_off_urls_and_parameters() {
        let r = ExportRequest {
            types: vec!["Patient".into(), "Immunization".into()],
            since: Some("2020-01-01T00:00:00Z".into()),
            ..Default::default()
        };
        assert_eq!(
            r.url("http://ehr/fhir/"),
            "http://ehr/fhir/$export?_type=Patient%2CImmunization&_since=2020-01-01T00%3A00%3A00Z"
        );
        let g = ExportRequest { level: Level::Group("g1".into()), ..Default::default() };
        assert_eq!(g.url("http://ehr/fhir"), "http://ehr/fhir/Group/g1/$export");
        let p = ExportRequest { level: Level::Patient, patients: vec!["Patient/1".into()], ..Default::default() };
        assert_eq!(p.url("http://ehr/fhir"), "http://ehr/fhir/Patient/$export", "named patients go in a POST body");
        assert_eq!(
            p.parameters()["parameter"][0],
            json!({"name": "patient", "valueReference": {"reference": "Patient/1"}})
        );
        // Azure's parameters and _elements go in both forms.
        let azure = ExportRequest {
            elements: vec!["id".into(), "Patient.birthDate".into()],
            anonymization_config: Some("safe.json".into()),
            container: Some("study".into()),
            ..Default::default()
        };
        assert_eq!(
            azure.url("http://veil"),
            "http://veil/$export?_elements=id%2CPatient.birthDate&_anonymizationConfig=safe.json&_container=study"
        );
        let named = ExportRequest { patients: vec!["Patient/1".into()], ..azure };
        let body = named.parameters();
        let sent: Vec<&str> =
            body["parameter"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(sent, ["_elements", "_anonymizationConfig", "_container", "patient"]);
    }
}

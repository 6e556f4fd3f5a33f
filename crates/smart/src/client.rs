//! The client side, for Veil's commands that call other FHIR servers
//! (reference: bulk-export.md §4.3): discovers the token endpoint from
//! `.well-known/smart-configuration`, signs a fresh assertion per token
//! request, caches the token and asks for a new one before it runs out.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use crate::SigningKey;

/// A token is renewed when fewer than this many seconds remain, so that a
/// request never leaves with a token about to lapse.
const RENEW_SECS: u64 = 30;

/// Why no token could be had. Never carries a token, an assertion or a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server could not be reached or answered nonsense.
    #[error("{0}")]
    Http(String),
    /// The token endpoint refused, with its OAuth error.
    #[error("the token endpoint refused ({code}): {description}")]
    Refused {
        /// `invalid_client`, `invalid_scope`, …
        code: String,
        /// The server's explanation.
        description: String,
    },
    /// Signing the assertion failed.
    #[error(transparent)]
    Key(#[from] crate::KeyError),
}

/// Gets and keeps access tokens for one registered client at one server.
pub struct TokenClient {
    http: reqwest::blocking::Client,
    fhir_base: String,
    client_id: String,
    key: SigningKey,
    scope: String,
    token_url: Mutex<Option<String>>,
    cached: Mutex<Option<Cached>>,
}

struct Cached {
    token: String,
    scope: String,
    renew_at: Instant,
}

impl TokenClient {
    /// A client for the FHIR server at `fhir_base`, registered there as
    /// `client_id` with `key`'s public half, asking for `scope`
    /// (`system/*.read`, say).
    pub fn new(fhir_base: &str, client_id: &str, key: SigningKey, scope: &str) -> TokenClient {
        TokenClient {
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("an HTTP client with defaults"),
            fhir_base: fhir_base.trim_end_matches('/').to_string(),
            client_id: client_id.to_string(),
            key,
            scope: scope.to_string(),
            token_url: Mutex::new(None),
            cached: Mutex::new(None),
        }
    }

    /// The token endpoint, from the server's SMART configuration (once).
    pub fn token_endpoint(&self) -> Result<String, ClientError> {
        let mut known = self.token_url.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(url) = &*known {
            return Ok(url.clone());
        }
        let discovery = format!("{}/.well-known/smart-configuration", self.fhir_base);
        let unreachable =
            |e: reqwest::Error| ClientError::Http(format!("cannot read {discovery}: {}", without_url(&e)));
        let response = self.http.get(&discovery).header("accept", "application/json").send().map_err(unreachable)?;
        if !response.status().is_success() {
            return Err(ClientError::Http(format!(
                "{discovery} answered {}: the server does not offer SMART Backend Services",
                response.status()
            )));
        }
        let config: Json = response.json().map_err(unreachable)?;
        let Some(endpoint) = config.get("token_endpoint").and_then(Json::as_str) else {
            return Err(ClientError::Http(format!("{discovery} names no token_endpoint")));
        };
        // Relative URLs are resolved against the FHIR base (§4.1).
        let url = if endpoint.contains("://") {
            endpoint.to_string()
        } else {
            format!("{}/{}", self.fhir_base, endpoint.trim_start_matches('/'))
        };
        *known = Some(url.clone());
        Ok(url)
    }

    /// A token valid for at least the next half minute: the cached one, or
    /// a new one from the token endpoint.
    pub fn access_token(&self) -> Result<String, ClientError> {
        Ok(self.current()?.0)
    }

    /// Drops the cached token, so that the next [`TokenClient::access_token`]
    /// asks for a new one (after a server refused it as expired, say).
    pub fn forget(&self) {
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The scope the server granted, which may be narrower than asked for.
    pub fn granted_scope(&self) -> Result<String, ClientError> {
        Ok(self.current()?.1)
    }

    fn current(&self) -> Result<(String, String), ClientError> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = &*cached
            && Instant::now() < c.renew_at
        {
            return Ok((c.token.clone(), c.scope.clone()));
        }
        let fresh = self.request_token()?;
        let pair = (fresh.token.clone(), fresh.scope.clone());
        *cached = Some(fresh);
        Ok(pair)
    }

    fn request_token(&self) -> Result<Cached, ClientError> {
        let token_url = self.token_endpoint()?;
        let now = veil_util::clock::now_secs();
        let assertion = self.key.assertion(&self.client_id, &token_url, now)?;
        let form = [
            ("grant_type", "client_credentials"),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", assertion.as_str()),
            ("scope", self.scope.as_str()),
        ];
        let asked = Instant::now();
        let response =
            self.http.post(&token_url).header("accept", "application/json").form(&form).send().map_err(|e| {
                ClientError::Http(format!("cannot reach the token endpoint {token_url}: {}", without_url(&e)))
            })?;
        let status = response.status();
        let body: Json = response.json().unwrap_or(Json::Null);
        let text = |name: &str| body.get(name).and_then(Json::as_str).map(str::to_string);
        if !status.is_success() {
            return Err(ClientError::Refused {
                code: text("error").unwrap_or_else(|| status.to_string()),
                description: text("error_description").unwrap_or_default(),
            });
        }
        let (Some(token), Some(kind)) = (text("access_token"), text("token_type")) else {
            return Err(ClientError::Http("the token endpoint's answer has no access_token or token_type".into()));
        };
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err(ClientError::Http(format!(
                "the token endpoint issued a '{kind}' token; only bearer tokens are supported"
            )));
        }
        let lifetime = body.get("expires_in").and_then(Json::as_u64).unwrap_or(crate::MAX_LIFETIME_SECS);
        Ok(Cached {
            token,
            scope: text("scope").unwrap_or_default(),
            renew_at: asked + Duration::from_secs(lifetime.saturating_sub(RENEW_SECS)),
        })
    }
}

/// reqwest's error text without the URL it carries (the caller names it).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(&format!(" ({url})"), "").replace(url.as_str(), "");
    }
    text
}

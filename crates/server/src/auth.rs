//! SMART Backend Services on the server (reference: bulk-export.md §4.1,
//! §4.4): the discovery document, the token endpoint, and the check every
//! protected request passes. Clients and the nonces they used live in the
//! store; access tokens are HMAC-signed with a secret kept there too.
//!
//! Nothing here logs or echoes a token, an assertion or a key.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};
use veil_smart::{Grant, JwksCache, OAuthError, Scopes};
use veil_store::{ClientRecord, Store, StoreError};

use crate::error::ApiError;
use crate::http::AppState;

/// Where the token endpoint is, under the base URL.
pub const TOKEN_PATH: &str = "/auth/token";

/// The store's name for the access-token signing secret.
const SECRET_NAME: &str = "access-token-hmac-sha256";

/// Authorization settings and state for a server that requires tokens.
pub struct Auth {
    secret: Vec<u8>,
    token_lifetime: u64,
    jwks: JwksCache,
}

impl Auth {
    /// Authorization backed by `store`: the signing secret is made on first
    /// use and shared by every server on the same store.
    pub fn new(store: &dyn Store) -> Result<Auth, StoreError> {
        let secret = store.secret(SECRET_NAME, &mut || {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).expect("the operating system's random source");
            veil_util::hex::encode(&bytes)
        })?;
        Ok(Auth { secret: secret.into_bytes(), token_lifetime: veil_smart::MAX_LIFETIME_SECS, jwks: JwksCache::new() })
    }

    /// Access tokens live `secs` (at most five minutes, the default).
    pub fn with_token_lifetime(mut self, secs: u64) -> Auth {
        self.token_lifetime = secs.clamp(1, veil_smart::MAX_LIFETIME_SECS);
        self
    }
}

/// Who is asking: the token's grant, or nobody when authorization is off.
#[derive(Clone, Debug)]
pub struct Caller(pub Option<Grant>);

impl Caller {
    /// The client id, when authorization is on.
    pub fn client_id(&self) -> Option<&str> {
        self.0.as_ref().map(|g| g.client_id.as_str())
    }

    /// Whether the caller may use `permission` (`c r u d s`) on `resource_type`.
    pub fn permits(&self, resource_type: &str, permission: char) -> bool {
        self.0.as_ref().is_none_or(|g| g.scopes.permits(resource_type, permission))
    }

    /// The answer when it may not: 403, naming the type but no data.
    pub(crate) fn forbidden(resource_type: &str, what: &str) -> ApiError {
        ApiError::forbidden(format!("the access token's scopes do not allow {what} {resource_type}"))
    }

    /// [`Caller::permits`], as the handlers ask it: 403 when it may not
    /// (`what`: "reading", "creating", …).
    pub(crate) fn check(&self, resource_type: &str, permission: char, what: &str) -> Result<(), ApiError> {
        match self.permits(resource_type, permission) {
            true => Ok(()),
            false => Err(Caller::forbidden(resource_type, what)),
        }
    }
}

/// Every protected request passes here: with authorization on it needs a
/// valid bearer token, whose grant the handlers then read as [`Caller`].
pub(crate) async fn require_token(State(st): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    let caller = match &st.auth {
        None => Caller(None),
        Some(auth) => {
            let bearer = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
            let Some(token) = bearer else {
                return unauthorized(
                    "an access token is required: Authorization: Bearer <token> from the token endpoint",
                    None,
                );
            };
            match veil_smart::verify_access_token(token, &auth.secret, &st.base_url, veil_util::clock::now_secs()) {
                Ok(grant) => Caller(Some(grant)),
                Err(e) => return unauthorized(&e.description, Some(&e)),
            }
        }
    };
    let who = caller.client_id().map(|id| veil_http::Who(id.to_string()));
    request.extensions_mut().insert(caller);
    let mut response = next.run(request).await;
    // For the access log, which sees only the response.
    if let Some(who) = who {
        response.extensions_mut().insert(who);
    }
    response
}

/// Discovery and the token endpoint of a server without authorization.
fn authorization_off() -> Response {
    ApiError::not_found("authorization is off on this server (--insecure-no-auth)").into_response()
}

fn unauthorized(text: &str, error: Option<&OAuthError>) -> Response {
    let challenge = match error {
        Some(e) => format!(
            "Bearer realm=\"veil\", error=\"{}\", error_description=\"{}\"",
            e.code,
            e.description.replace('"', "'")
        ),
        None => "Bearer realm=\"veil\"".to_string(),
    };
    ApiError::new(StatusCode::UNAUTHORIZED, "login", text)
        .with_header(header::WWW_AUTHENTICATE, challenge)
        .into_response()
}

/// `GET /.well-known/smart-configuration`: what a backend client needs
/// to know, with absolute URLs (bulk-export.md §4.1).
pub(crate) async fn smart_configuration(State(st): State<Arc<AppState>>) -> Response {
    if st.auth.is_none() {
        return authorization_off();
    }
    let body = json!({
        "issuer": st.base_url,
        "token_endpoint": format!("{}{TOKEN_PATH}", st.base_url),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "scopes_supported": ["system/*.read", "system/*.rs", "system/*.cruds", "system/*.write", "system/Patient.read", "system/Patient.rs"],
        "response_types_supported": ["token"],
        "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
        "code_challenge_methods_supported": ["S256"],
    });
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// `POST /auth/token`: `client_credentials` with a JWT client assertion
/// (bulk-export.md §4.4), answering a token or an OAuth error.
pub(crate) async fn token(State(st): State<Arc<AppState>>, headers: HeaderMap, body: String) -> Response {
    let Some(auth) = &st.auth else { return authorization_off() };
    let (status, body, found) = match issue(&st, auth, &headers, &body).await {
        Ok(body) => (StatusCode::OK, body, Some(veil_http::Credentials::Accepted)),
        Err(e) => {
            let status =
                if e.code == "server_error" { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::BAD_REQUEST };
            // Only a refused client counts towards the backoff, not a malformed request or a scope.
            let found = (e.code == "invalid_client").then_some(veil_http::Credentials::Refused);
            (status, e.to_json(), found)
        }
    };
    // Tokens must never be cached (RFC 6749 §5.1).
    let response = (
        status,
        [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")],
        body.to_string(),
    )
        .into_response();
    match found {
        Some(found) => found.mark(response),
        None => response,
    }
}

fn error(code: &'static str, description: &str) -> OAuthError {
    OAuthError { code, description: description.to_string() }
}

async fn issue(st: &Arc<AppState>, auth: &Auth, headers: &HeaderMap, body: &str) -> Result<Json, OAuthError> {
    let form_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !form_type.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded") {
        return Err(error("invalid_request", "the token request must be application/x-www-form-urlencoded"));
    }
    let form = crate::search::query_pairs(body);
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    match field("grant_type") {
        None => return Err(error("invalid_request", "grant_type is required (client_credentials)")),
        Some("client_credentials") => {}
        Some(_) => return Err(error("unsupported_grant_type", "only the client_credentials grant is supported")),
    }
    match field("client_assertion_type") {
        Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer") => {}
        None => {
            return Err(error(
                "invalid_request",
                "client_assertion_type is required (urn:ietf:params:oauth:client-assertion-type:jwt-bearer)",
            ));
        }
        Some(_) => {
            return Err(error(
                "invalid_client",
                "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ));
        }
    }
    let Some(assertion) = field("client_assertion") else {
        return Err(error("invalid_request", "client_assertion is required"));
    };
    let requested = Scopes::parse(field("scope").unwrap_or(""))?;
    if requested.0.is_empty() {
        return Err(error("invalid_scope", "scope is required: system scopes such as system/*.read"));
    }

    // Find the client and its keys before checking the signature with them.
    let Some((iss, kid)) = veil_smart::assertion_issuer_and_kid(assertion) else {
        return Err(error("invalid_client", "client_assertion is not a JWT with iss and a kid"));
    };
    let store = st.store.clone();
    let record = veil_http::blocking(move || store.client(&iss))
        .await
        .map_err(|_| error("server_error", "internal error"))?
        .map_err(|_| error("server_error", "the store failed"))?;
    let Some(record) = record else { return Err(error("invalid_client", "unknown client")) };
    let client = registered_client(auth, &record, &kid).await?;
    let token_url = format!("{}{TOKEN_PATH}", st.base_url);
    let now = veil_util::clock::now_secs();
    let verified =
        veil_smart::verify_assertion(assertion, &token_url, now, |id| (id == client.id).then_some(client.clone()))?;
    if field("client_id").is_some_and(|id| id != verified.client_id) {
        return Err(error("invalid_client", "client_id does not match the assertion's issuer"));
    }
    let allowed = Scopes::parse(&record.scopes)
        .map_err(|_| error("invalid_scope", "the client's registered scopes are not readable"))?;
    let granted = requested.grant(&allowed)?;

    // Record the nonce only now, so that forged assertions cannot use up a
    // client's nonces; a second use is refused until it expires.
    let store = st.store.clone();
    let (client_id, jti, expires) = (verified.client_id.clone(), verified.jti.clone(), verified.expires as i64);
    let fresh = veil_http::blocking(move || store.record_jti(&client_id, &jti, expires, now as i64))
        .await
        .map_err(|_| error("server_error", "internal error"))?
        .map_err(|_| error("server_error", "the store failed"))?;
    if !fresh {
        return Err(error(
            "invalid_client",
            "this assertion's jti was already used: sign a new assertion for every token request",
        ));
    }
    let grant = Grant { client_id: verified.client_id, scopes: granted, expires: now + auth.token_lifetime };
    let token = veil_smart::issue_access_token(&auth.secret, &st.base_url, &grant, now);
    Ok(
        json!({"access_token": token, "token_type": "bearer", "expires_in": auth.token_lifetime, "scope": grant.scopes.to_string()}),
    )
}

/// The client's keys: inline, or fetched from its JWKS URL.
async fn registered_client(auth: &Auth, record: &ClientRecord, kid: &str) -> Result<veil_smart::Client, OAuthError> {
    let jwks = match (&record.jwks, &record.jwks_url) {
        (Some(inline), _) => serde_json::from_str(inline)
            .map_err(|_| error("invalid_client", "the client's registered key set is not readable"))?,
        (None, Some(url)) => auth.jwks.keys(url, kid).await?,
        (None, None) => return Err(error("invalid_client", "the client has no registered keys")),
    };
    Ok(veil_smart::Client { id: record.id.clone(), jwks, jwks_url: record.jwks_url.clone() })
}

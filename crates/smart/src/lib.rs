//! SMART Backend Services (reference: bulk-export.md §4): how a registered
//! client proves itself with a signed JWT, and what its system scopes let
//! it read.
//!
//! [`verify_assertion`] checks a client assertion the way §4.4 lists:
//! RS384 or ES384 only (never `none` or HMAC), `typ` JWT, a `kid` naming
//! exactly one of the client's registered keys of the matching type, a
//! `jku` only when it is the registered JWKS URL, `iss` = `sub` = the
//! client id, `aud` = the token endpoint, `exp` in the future and at most
//! five minutes ahead, and a `jti` for the caller to record against replay.
//! [`Scopes`] parses SMART v1 (`system/Patient.read`) and v2
//! (`system/*.rs`) scopes and says which resource types they let a client
//! read. [`issue_access_token`] and [`verify_access_token`] are the
//! server's own short-lived tokens; [`JwksCache`] fetches the keys of
//! clients registered by URL.
//!
//! The client side: [`SigningKey`] makes or reads a key and signs
//! assertions, [`TokenClient`] discovers a server's token endpoint and
//! keeps a valid token. Errors are OAuth errors; their descriptions never
//! carry a token, an assertion or a key.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod assertion;
mod client;
mod jwks;
mod keys;
mod scope;
mod token;

pub use assertion::{Client, Verified, assertion_issuer_and_kid, verify_assertion};
pub use client::{ClientError, TokenClient};
pub use jwks::JwksCache;
pub use keys::{KeyError, KeyKind, SigningKey, public_key_set};
pub use scope::{Scope, Scopes};
pub use token::{Grant, issue_access_token, verify_access_token};

/// The longest an assertion or an access token may live, in seconds.
pub const MAX_LIFETIME_SECS: u64 = 300;

/// An OAuth 2.0 error response (`{"error", "error_description"}`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {description}")]
pub struct OAuthError {
    /// `invalid_client`, `invalid_scope`, `invalid_request`, …
    pub code: &'static str,
    /// Why, for the client's developer.
    pub description: String,
}

impl OAuthError {
    pub(crate) fn invalid_client(description: impl Into<String>) -> OAuthError {
        OAuthError { code: "invalid_client", description: description.into() }
    }

    pub(crate) fn invalid_scope(description: impl Into<String>) -> OAuthError {
        OAuthError { code: "invalid_scope", description: description.into() }
    }

    /// The JSON body.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"error": self.code, "error_description": self.description})
    }
}

//! Access tokens Veil issues: JWTs signed with HMAC-SHA256 under a secret
//! only the server holds, bound to the client, its granted scopes and the
//! FHIR base, living at most five minutes (reference: bulk-export.md §4.4
//! step 9). Self-contained, so several servers sharing the secret (kept in
//! the store) accept each other's tokens without a lookup.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::{MAX_LIFETIME_SECS, OAuthError, Scopes};

/// What an access token grants.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// The client it was issued to.
    pub client_id: String,
    /// What it may do.
    pub scopes: Scopes,
    /// When it stops working (seconds since the epoch).
    pub expires: u64,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    scope: String,
    iat: u64,
    exp: u64,
}

/// Issues a token for `grant` at `now`, for the server at `fhir_base`.
/// Its lifetime is `grant.expires - now`, cut to five minutes.
pub fn issue_access_token(secret: &[u8], fhir_base: &str, grant: &Grant, now: u64) -> String {
    let claims = Claims {
        iss: fhir_base.to_string(),
        aud: fhir_base.to_string(),
        sub: grant.client_id.clone(),
        scope: grant.scopes.to_string(),
        iat: now,
        exp: grant.expires.min(now + MAX_LIFETIME_SECS),
    };
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret))
        .expect("HMAC signing cannot fail")
}

/// Checks a bearer token at `now`: signed with `secret`, for `fhir_base`,
/// not expired. Every failure is `invalid_token`, described without the token.
pub fn verify_access_token(token: &str, secret: &[u8], fhir_base: &str, now: u64) -> Result<Grant, OAuthError> {
    let invalid = |why: &str| OAuthError { code: "invalid_token", description: why.to_string() };
    let mut validation = Validation::new(Algorithm::HS256);
    // Expiry is checked below against the caller's clock, with no leeway.
    validation.validate_exp = false;
    validation.set_audience(&[fhir_base]);
    validation.set_issuer(&[fhir_base]);
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    let data = jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret), &validation)
        .map_err(|_| invalid("the access token is not valid here"))?;
    let c = data.claims;
    if c.exp <= now {
        return Err(invalid("the access token has expired: ask the token endpoint for a new one"));
    }
    let scopes = Scopes::parse(&c.scope).map_err(|_| invalid("the access token's scope is not readable"))?;
    Ok(Grant { client_id: c.sub, scopes, expires: c.exp })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "http://127.0.0.1:8080";

    fn grant(expires: u64) -> Grant {
        Grant { client_id: "c1".into(), scopes: Scopes::parse("system/Patient.read").unwrap(), expires }
    }

    #[test]
    fn tokens_carry_their_grant_until_they_expire() {
        let token = issue_access_token(b"secret", BASE, &grant(1_000_200), 1_000_000);
        assert_eq!(verify_access_token(&token, b"secret", BASE, 1_000_199).unwrap(), grant(1_000_200));
        let e = verify_access_token(&token, b"secret", BASE, 1_000_200).unwrap_err();
        assert_eq!(e.code, "invalid_token");
        assert!(e.description.contains("expired"));
    }

    #[test]
    fn no_token_lives_longer_than_five_minutes() {
        let token = issue_access_token(b"secret", BASE, &grant(9_999_999), 1_000_000);
        assert_eq!(verify_access_token(&token, b"secret", BASE, 1_000_000).unwrap().expires, 1_000_300);
    }

    #[test]
    fn other_secrets_servers_and_tampering_are_refused() {
        let token = issue_access_token(b"secret", BASE, &grant(1_000_200), 1_000_000);
        assert!(verify_access_token(&token, b"other", BASE, 1_000_000).is_err());
        assert!(verify_access_token(&token, b"secret", "http://elsewhere", 1_000_000).is_err());
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        let claims =
            String::from_utf8(veil_util::base64::decode(&parts[1], veil_util::base64::URL_SAFE).unwrap()).unwrap();
        parts[1] = crate::keys::b64url(claims.replace("system/Patient.read", "system/*.read").as_bytes());
        let e = verify_access_token(&parts.join("."), b"secret", BASE, 1_000_000).unwrap_err();
        assert!(!e.description.contains(&parts[1]));
    }
}

//! Client assertions (RFC 7523 JWTs) checked as SMART Backend Services
//! requires (reference: bulk-export.md §4.4, steps 2–7).

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyOperations};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::{MAX_LIFETIME_SECS, OAuthError};

/// Seconds of clock difference tolerated between client and server.
const SKEW_SECS: u64 = 60;

/// A registered client, as the server knows it.
#[derive(Debug, Clone)]
pub struct Client {
    /// The `client_id` Veil assigned.
    pub id: String,
    /// Its public keys: registered inline, or fetched from `jwks_url`.
    pub jwks: JwkSet,
    /// The JWKS URL it registered, if any: the only `jku` accepted.
    pub jwks_url: Option<String>,
}

/// What a valid assertion establishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The client.
    pub client_id: String,
    /// Its nonce: the caller records it until `expires` and refuses it again.
    pub jti: String,
    /// The assertion's `exp` (seconds since the epoch).
    pub expires: u64,
}

#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    jti: Option<String>,
    exp: Option<u64>,
}

/// The `iss` and `kid` an assertion claims, read without checking
/// anything: only to find the client and the key that will check it.
pub fn assertion_issuer_and_kid(assertion: &str) -> Option<(String, String)> {
    let kid = jsonwebtoken::decode_header(assertion).ok()?.kid?;
    let claims: Claims = jsonwebtoken::dangerous::insecure_decode_claims(assertion).ok()?;
    Some((claims.iss?, kid))
}

/// Checks a client assertion for `token_url` at `now` (seconds since the
/// epoch); `find_client` looks a client up by the assertion's `iss`.
/// Every failure is `invalid_client`, described without quoting the
/// assertion or a key.
pub fn verify_assertion(
    assertion: &str,
    token_url: &str,
    now: u64,
    find_client: impl FnOnce(&str) -> Option<Client>,
) -> Result<Verified, OAuthError> {
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|_| OAuthError::invalid_client("client_assertion is not a JWT"))?;
    // An allow-list, so that `none` and HMAC (a public key used as a shared
    // secret) can never verify.
    if !matches!(header.alg, Algorithm::RS384 | Algorithm::ES384) {
        return Err(OAuthError::invalid_client(format!(
            "alg {:?} is not accepted: sign with RS384 or ES384",
            header.alg
        )));
    }
    if !header.typ.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("JWT")) {
        return Err(OAuthError::invalid_client("the assertion's header needs typ JWT"));
    }
    let Some(kid) = header.kid.as_deref() else {
        return Err(OAuthError::invalid_client("the assertion's header needs a kid"));
    };
    // The issuer, read before the signature is checked, only to find the
    // client whose keys will check it.
    let unverified: Claims = jsonwebtoken::dangerous::insecure_decode_claims(assertion)
        .map_err(|_| OAuthError::invalid_client("the assertion's claims are not readable"))?;
    let Some(iss) = unverified.iss else {
        return Err(OAuthError::invalid_client("the assertion needs iss (the client id)"));
    };
    let Some(client) = find_client(&iss) else { return Err(OAuthError::invalid_client("unknown client")) };
    if let Some(jku) = header.jku.as_deref()
        && client.jwks_url.as_deref() != Some(jku)
    {
        return Err(OAuthError::invalid_client("jku is not the JWKS URL this client registered"));
    }
    let candidates: Vec<_> = client
        .jwks
        .keys
        .iter()
        .filter(|k| k.common.key_id.as_deref() == Some(kid))
        .filter(|k| match (&k.algorithm, header.alg) {
            (AlgorithmParameters::RSA(_), Algorithm::RS384) => true,
            (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES384) => ec.curve == EllipticCurve::P384,
            _ => false,
        })
        .filter(|k| {
            k.common.key_operations.as_ref().is_none_or(|ops| ops.iter().any(|o| matches!(o, KeyOperations::Verify)))
        })
        .collect();
    let [jwk] = candidates.as_slice() else {
        return Err(OAuthError::invalid_client(format!("no single registered {:?} key has this kid", header.alg)));
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|_| OAuthError::invalid_client("the registered key is not usable"))?;
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[token_url]);
    validation.set_issuer(&[&client.id]);
    validation.sub = Some(client.id.clone());
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    validation.leeway = SKEW_SECS;
    let claims: Claims = jsonwebtoken::decode(assertion, &key, &validation)
        .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            OAuthError::invalid_client(match e.kind() {
                K::InvalidSignature => "the signature does not verify with the registered key",
                K::ExpiredSignature => "the assertion has expired",
                K::InvalidAudience => "aud must be this server's token endpoint",
                K::InvalidIssuer | K::InvalidSubject => "iss and sub must both be the client id",
                K::MissingRequiredClaim(_) => "the assertion needs exp, iss, sub and aud",
                _ => "the assertion is not valid",
            })
        })?
        .claims;
    let expires = claims.exp.unwrap_or_default();
    if expires > now + MAX_LIFETIME_SECS + SKEW_SECS {
        return Err(OAuthError::invalid_client("exp may be at most five minutes ahead"));
    }
    let Some(jti) = claims.jti.filter(|j| !j.is_empty()) else {
        return Err(OAuthError::invalid_client("the assertion needs a jti"));
    };
    Ok(Verified { client_id: client.id, jti, expires })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use crate::keys::{b64url, pem};

    const TOKEN_URL: &str = "https://veil.example/auth/token";

    use veil_util::clock::now_secs as now;

    /// A fresh P-384 key: its signing key and its public JWK.
    fn ec_key(kid: &str) -> (EncodingKey, serde_json::Value) {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &SystemRandom::new()).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref(); // 0x04 || x || y
        let jwk =
            json!({"kty": "EC", "crv": "P-384", "kid": kid, "x": b64url(&point[1..49]), "y": b64url(&point[49..97])});
        (EncodingKey::from_ec_der(pkcs8.as_ref()), jwk)
    }

    /// A fresh 2048-bit RSA key: its signing key and its public JWK.
    fn rsa_key(kid: &str) -> (EncodingKey, serde_json::Value) {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let der = pair.as_der().unwrap();
        let public: &aws_lc_rs::rsa::PublicKey = pair.public_key();
        let n = public.modulus().big_endian_without_leading_zero();
        let e = public.exponent().big_endian_without_leading_zero();
        let jwk = json!({"kty": "RSA", "kid": kid, "n": b64url(n), "e": b64url(e)});
        // PKCS#8 PEM, as OpenSSL and Python's cryptography write keys.
        (EncodingKey::from_rsa_pem(pem("PRIVATE KEY", der.as_ref()).as_bytes()).unwrap(), jwk)
    }

    fn client(keys: &[&serde_json::Value]) -> Client {
        Client {
            id: "client-1".into(),
            jwks: serde_json::from_value(json!({"keys": keys})).unwrap(),
            jwks_url: Some("https://client.example/jwks.json".into()),
        }
    }

    fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, claims: serde_json::Value) -> String {
        let mut header = Header::new(alg);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    }

    fn claims() -> serde_json::Value {
        json!({"iss": "client-1", "sub": "client-1", "aud": TOKEN_URL, "exp": now() + 240, "jti": "nonce-1"})
    }

    fn check(assertion: &str, c: &Client) -> Result<Verified, OAuthError> {
        verify_assertion(assertion, TOKEN_URL, now(), |id| (id == c.id).then(|| c.clone()))
    }

    #[test]
    fn valid_es384_and_rs384_assertions_verify() {
        let (ec, ec_jwk) = ec_key("ec-1");
        let (rsa, rsa_jwk) = rsa_key("rsa-1");
        let c = client(&[&ec_jwk, &rsa_jwk]);
        let v = check(&sign(Algorithm::ES384, "ec-1", &ec, claims()), &c).unwrap();
        assert_eq!((v.client_id.as_str(), v.jti.as_str()), ("client-1", "nonce-1"));
        assert!(check(&sign(Algorithm::RS384, "rsa-1", &rsa, claims()), &c).is_ok());
    }

    #[test]
    fn bad_assertions_are_invalid_client() {
        let (ec, ec_jwk) = ec_key("ec-1");
        let (other, _) = ec_key("ec-1");
        let (rsa, rsa_jwk) = rsa_key("rsa-1");
        let c = client(&[&ec_jwk, &rsa_jwk]);
        let with = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut c = claims();
            f(&mut c);
            c
        };
        let cases = [
            ("another key", sign(Algorithm::ES384, "ec-1", &other, claims())),
            ("unknown kid", sign(Algorithm::ES384, "ec-9", &ec, claims())),
            ("kid of the other key type", sign(Algorithm::RS384, "ec-1", &rsa, claims())),
            ("RS256", sign(Algorithm::RS256, "rsa-1", &rsa, claims())),
            (
                "HS384 with the public key as secret",
                sign(
                    Algorithm::HS384,
                    "rsa-1",
                    &EncodingKey::from_secret(rsa_jwk["n"].as_str().unwrap().as_bytes()),
                    claims(),
                ),
            ),
            ("expired", sign(Algorithm::ES384, "ec-1", &ec, with(&|c| c["exp"] = json!(now() - 120)))),
            ("too far ahead", sign(Algorithm::ES384, "ec-1", &ec, with(&|c| c["exp"] = json!(now() + 3600)))),
            (
                "wrong audience",
                sign(Algorithm::ES384, "ec-1", &ec, with(&|c| c["aud"] = json!("https://other.example/token"))),
            ),
            ("sub is not iss", sign(Algorithm::ES384, "ec-1", &ec, with(&|c| c["sub"] = json!("client-2")))),
            (
                "no jti",
                sign(
                    Algorithm::ES384,
                    "ec-1",
                    &ec,
                    with(&|c| {
                        c.as_object_mut().unwrap().remove("jti");
                    }),
                ),
            ),
            (
                "no exp",
                sign(
                    Algorithm::ES384,
                    "ec-1",
                    &ec,
                    with(&|c| {
                        c.as_object_mut().unwrap().remove("exp");
                    }),
                ),
            ),
            (
                "unknown client",
                sign(
                    Algorithm::ES384,
                    "ec-1",
                    &ec,
                    with(&|c| {
                        c["iss"] = json!("client-2");
                        c["sub"] = json!("client-2");
                    }),
                ),
            ),
            ("not a JWT", "not-a-jwt".to_string()),
        ];
        for (what, assertion) in cases {
            let e = check(&assertion, &c).expect_err(what);
            assert_eq!(e.code, "invalid_client", "{what}");
            assert!(
                !e.description.contains(&assertion) && !e.description.contains(ec_jwk["x"].as_str().unwrap()),
                "{what}: {e}"
            );
        }
        // alg none: a token with no signature at all.
        let none = format!(
            "{}.{}.",
            b64url(br#"{"alg":"none","typ":"JWT","kid":"ec-1"}"#),
            b64url(claims().to_string().as_bytes())
        );
        assert_eq!(check(&none, &c).unwrap_err().code, "invalid_client");
    }

    #[test]
    fn jku_only_when_it_is_the_registered_url() {
        let (ec, ec_jwk) = ec_key("ec-1");
        let c = client(&[&ec_jwk]);
        let with_jku = |jku: &str| {
            let mut header = Header::new(Algorithm::ES384);
            header.kid = Some("ec-1".into());
            header.jku = Some(jku.into());
            jsonwebtoken::encode(&header, &claims(), &ec).unwrap()
        };
        assert!(check(&with_jku("https://client.example/jwks.json"), &c).is_ok());
        assert_eq!(check(&with_jku("https://attacker.example/jwks.json"), &c).unwrap_err().code, "invalid_client");
    }
}

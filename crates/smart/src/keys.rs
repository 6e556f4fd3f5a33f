//! A client's signing key: made fresh, or read from a PEM file or a private
//! JWK; its public JWK Set (what the client registers) and the client
//! assertions it signs (reference: bulk-export.md §4.2–§4.3).

use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair};
use jsonwebtoken::jwk::{Jwk, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value as Json, json};

use crate::MAX_LIFETIME_SECS;

/// Why a key could not be made or read. Never carries key material.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

use veil_util::base64::{STANDARD, URL_SAFE};

pub(crate) fn b64url(bytes: &[u8]) -> String {
    veil_util::base64::encode(bytes, URL_SAFE).trim_end_matches('=').to_string()
}

/// The two algorithms SMART Backend Services clients must support.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on P-384 with SHA-384: small keys, fast; the default.
    Es384,
    /// RSASSA-PKCS1-v1_5 with SHA-384, 3072-bit keys.
    Rs384,
}

/// A private key that signs client assertions.
pub struct SigningKey {
    alg: Algorithm,
    kid: String,
    key: EncodingKey,
    public: Jwk,
}

impl std::fmt::Debug for SigningKey {
    // Never the key itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("alg", &self.alg).field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key pair, with its private key as PKCS#8 PEM (what OpenSSL
    /// and Python's `cryptography` write) to keep in a file.
    pub fn generate(kind: KeyKind) -> Result<(SigningKey, String), KeyError> {
        let failed = || KeyError("the operating system's random source failed".into());
        let der = match kind {
            KeyKind::Es384 => EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING)
                .and_then(|k| k.to_pkcs8v1())
                .map_err(|_| failed())?
                .as_ref()
                .to_vec(),
            KeyKind::Rs384 => {
                use aws_lc_rs::encoding::AsDer;
                let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa3072).map_err(|_| failed())?;
                pair.as_der().map_err(|_| failed())?.as_ref().to_vec()
            }
        };
        let pem = pem("PRIVATE KEY", &der);
        Ok((SigningKey::from_pem(&pem, None)?, pem))
    }

    /// Reads a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`, or
    /// `RSA PRIVATE KEY` / `EC PRIVATE KEY`): a P-384 key signs ES384, an
    /// RSA key RS384. `kid` defaults to the key's RFC 7638 thumbprint, so the
    /// same key always has the same `kid`.
    pub fn from_pem(pem: &str, kid: Option<&str>) -> Result<SigningKey, KeyError> {
        if let Some(der) = pem_body(pem, "EC PRIVATE KEY") {
            // SEC 1 (OpenSSL's traditional EC form), which the signer does not read: re-encoded as PKCS#8.
            let pair = EcdsaKeyPair::from_private_key_der(&ECDSA_P384_SHA384_FIXED_SIGNING, &der)
                .map_err(|_| KeyError("an EC key must be on curve P-384 (ES384)".into()))?;
            let pkcs8 = pair.to_pkcs8v1().map_err(|_| KeyError("the EC key could not be encoded".into()))?;
            return SigningKey::new(Algorithm::ES384, EncodingKey::from_ec_der(pkcs8.as_ref()), kid);
        }
        if let Ok(key) = EncodingKey::from_ec_pem(pem.as_bytes()) {
            return SigningKey::new(Algorithm::ES384, key, kid)
                .map_err(|_| KeyError("an EC key must be on curve P-384 (ES384)".into()));
        }
        let key = EncodingKey::from_rsa_pem(pem.as_bytes())
            .map_err(|_| KeyError("not a PEM private key (PKCS#8, RSA or P-384 EC)".into()))?;
        SigningKey::new(Algorithm::RS384, key, kid)
    }

    /// Reads a private JWK (`kty` EC with `crv` P-384, or RSA, with `d`
    /// and, for RSA, the CRT parameters). `kid` overrides the JWK's own;
    /// without either it is the thumbprint.
    pub fn from_jwk(text: &str, kid: Option<&str>) -> Result<SigningKey, KeyError> {
        let jwk: Json = serde_json::from_str(text).map_err(|_| KeyError("the key is not a JSON Web Key".into()))?;
        let part = |name: &str| -> Result<Vec<u8>, KeyError> {
            let text = jwk
                .get(name)
                .and_then(Json::as_str)
                .ok_or_else(|| KeyError(format!("the private JWK has no '{name}'")))?;
            veil_util::base64::decode(text, URL_SAFE)
                .ok_or_else(|| KeyError(format!("the JWK's '{name}' is not base64url")))
        };
        let kid = kid.or_else(|| jwk.get("kid").and_then(Json::as_str));
        match jwk.get("kty").and_then(Json::as_str) {
            Some("EC") => {
                if jwk.get("crv").and_then(Json::as_str) != Some("P-384") {
                    return Err(KeyError("an EC key must be on curve P-384 (ES384)".into()));
                }
                let point = [&[4u8][..], &part("x")?, &part("y")?].concat();
                let pair = EcdsaKeyPair::from_private_key_and_public_key(
                    &ECDSA_P384_SHA384_FIXED_SIGNING,
                    &part("d")?,
                    &point,
                )
                .map_err(|_| KeyError("the EC JWK's d, x and y do not form a P-384 key pair".into()))?;
                let der = pair.to_pkcs8v1().map_err(|_| KeyError("the EC key could not be encoded".into()))?;
                SigningKey::new(Algorithm::ES384, EncodingKey::from_ec_der(der.as_ref()), kid)
            }
            Some("RSA") => {
                // RFC 8017 RSAPrivateKey (PKCS#1), which the signer reads.
                let mut fields = vec![vec![0u8]];
                for name in ["n", "e", "d", "p", "q", "dp", "dq", "qi"] {
                    fields.push(part(name)?);
                }
                let der = der_sequence(&fields);
                aws_lc_rs::rsa::KeyPair::from_der(&der)
                    .map_err(|_| KeyError("the RSA JWK's parameters do not form a key pair".into()))?;
                SigningKey::new(Algorithm::RS384, EncodingKey::from_rsa_der(&der), kid)
            }
            _ => Err(KeyError("the JWK's kty must be EC (P-384) or RSA".into())),
        }
    }

    fn new(alg: Algorithm, key: EncodingKey, kid: Option<&str>) -> Result<SigningKey, KeyError> {
        let mut public =
            Jwk::from_encoding_key(&key, alg).map_err(|_| KeyError("the key does not fit its algorithm".into()))?;
        let kid = match kid {
            Some(k) => k.to_string(),
            None => public
                .thumbprint(ThumbprintHash::SHA256)
                .map_err(|_| KeyError("the key's thumbprint could not be computed".into()))?,
        };
        public.common.key_id = Some(kid.clone());
        public.common.key_algorithm = Some(match alg {
            Algorithm::ES384 => KeyAlgorithm::ES384,
            _ => KeyAlgorithm::RS384,
        });
        public.common.public_key_use = Some(PublicKeyUse::Signature);
        Ok(SigningKey { alg, kid, key, public })
    }

    /// `kid`: how the server finds the public half.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// `ES384` or `RS384`.
    pub fn algorithm(&self) -> &'static str {
        if self.alg == Algorithm::ES384 { "ES384" } else { "RS384" }
    }

    /// The public JWK Set to register with a server.
    pub fn public_jwks(&self) -> Json {
        json!({"keys": [self.public]})
    }

    /// A client assertion for `token_url`: `iss` = `sub` = `client_id`,
    /// `exp` five minutes after `now`, a fresh random `jti`.
    pub fn assertion(&self, client_id: &str, token_url: &str, now: u64) -> Result<String, KeyError> {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).map_err(|_| KeyError("the operating system's random source failed".into()))?;
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        let claims = json!({"iss": client_id, "sub": client_id, "aud": token_url, "iat": now, "exp": now + MAX_LIFETIME_SECS, "jti": b64url(&nonce)});
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|_| KeyError("signing the assertion failed".into()))
    }
}

/// Checks a JWK Set a client registers: RSA or EC P-384 keys, each with a
/// unique `kid`, none with a private part. Returns it as compact JSON.
pub fn public_key_set(text: &str) -> Result<String, KeyError> {
    let bad = |why: &str| KeyError(why.to_string());
    let set: Json = serde_json::from_str(text).map_err(|_| bad("not JSON"))?;
    let keys = set.get("keys").and_then(Json::as_array).ok_or_else(|| bad("not a JWK Set ({\"keys\": [...]})"))?;
    if keys.is_empty() {
        return Err(bad("the set holds no keys"));
    }
    let mut kids = Vec::new();
    for key in keys {
        if ["d", "p", "q"].iter().any(|k| key.get(k).is_some()) {
            return Err(bad(
                "the set holds a private key: register the public set (veil client keygen prints it) and keep the private key with the client",
            ));
        }
        let kid = key.get("kid").and_then(Json::as_str).ok_or_else(|| bad("every key needs a kid"))?;
        let part_len = |name: &str| {
            key.get(name).and_then(Json::as_str).and_then(|t| veil_util::base64::decode(t, URL_SAFE)).map(|b| b.len())
        };
        let complete = match (key.get("kty").and_then(Json::as_str), key.get("crv").and_then(Json::as_str)) {
            (Some("RSA"), _) => part_len("n").is_some_and(|n| n >= 256) && part_len("e").is_some_and(|e| e > 0),
            (Some("EC"), Some("P-384")) => part_len("x") == Some(48) && part_len("y") == Some(48),
            _ => return Err(KeyError(format!("key {kid}: only RSA (RS384) and EC P-384 (ES384) keys are accepted"))),
        };
        if !complete {
            return Err(KeyError(format!(
                "key {kid}: its parameters are missing or malformed (RSA needs n of 2048 bits or more and e; EC x and y)"
            )));
        }
        if kids.contains(&kid) {
            return Err(KeyError(format!("kid {kid} appears twice")));
        }
        kids.push(kid);
    }
    Ok(set.to_string())
}

/// The DER inside a PEM block labelled `label`, if there is one.
fn pem_body(pem: &str, label: &str) -> Option<Vec<u8>> {
    let start = pem.find(&format!("-----BEGIN {label}-----"))? + label.len() + 16;
    let end = pem[start..].find(&format!("-----END {label}-----"))? + start;
    let body: String = pem[start..end].chars().filter(|c| !c.is_ascii_whitespace()).collect();
    veil_util::base64::decode(&body, STANDARD)
}

/// PEM armour around DER.
pub(crate) fn pem(label: &str, der: &[u8]) -> String {
    let body = veil_util::base64::encode(der, STANDARD);
    let lines: Vec<&str> =
        body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("base64 is ASCII")).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

/// A DER SEQUENCE of unsigned INTEGERs given big-endian.
fn der_sequence(integers: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::new();
    for int in integers {
        let digits: &[u8] = match int.iter().position(|b| *b != 0) {
            Some(i) => &int[i..],
            None => &[0],
        };
        // A leading 0x00 keeps a high first bit from reading as negative.
        let pad = digits[0] & 0x80 != 0;
        body.push(0x02);
        der_length(&mut body, digits.len() + usize::from(pad));
        if pad {
            body.push(0);
        }
        body.extend_from_slice(digits);
    }
    let mut out = vec![0x30];
    der_length(&mut out, body.len());
    out.extend(body);
    out
}

fn der_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Client, verify_assertion};

    const TOKEN_URL: &str = "http://127.0.0.1:8080/auth/token";

    fn verifies(key: &SigningKey) -> bool {
        let client =
            Client { id: "c1".into(), jwks: serde_json::from_value(key.public_jwks()).unwrap(), jwks_url: None };
        let assertion = key.assertion("c1", TOKEN_URL, 1_900_000_000).unwrap();
        verify_assertion(&assertion, TOKEN_URL, 1_900_000_000, |_| Some(client)).is_ok()
    }

    #[test]
    fn generated_keys_sign_assertions_their_public_jwks_verifies() {
        for kind in [KeyKind::Es384, KeyKind::Rs384] {
            let (key, pem) = SigningKey::generate(kind).unwrap();
            assert!(verifies(&key), "{kind:?}");
            let again = SigningKey::from_pem(&pem, None).unwrap();
            assert_eq!(again.kid(), key.kid(), "the kid is the key's thumbprint");
            assert_eq!(again.algorithm(), if kind == KeyKind::Es384 { "ES384" } else { "RS384" });
            assert!(!format!("{key:?}").contains(&pem[30..60]), "Debug never shows the key");
            let jwks = key.public_jwks();
            assert!(jwks["keys"][0].get("d").is_none(), "the public set has no private part");
        }
    }

    #[test]
    fn private_jwks_sign_like_their_pem() {
        // The same P-384 key as a PEM and as a JWK: built from the PEM's
        // public point and the PKCS#8 body's private scalar.
        let pair = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).unwrap();
        use aws_lc_rs::encoding::AsBigEndian;
        let private = pair.private_key().as_be_bytes().unwrap();
        use aws_lc_rs::signature::KeyPair;
        let point = pair.public_key().as_ref().to_vec();
        let jwk = json!({"kty": "EC", "crv": "P-384", "kid": "k1", "d": b64url(private.as_ref()), "x": b64url(&point[1..49]), "y": b64url(&point[49..])});
        let key = SigningKey::from_jwk(&jwk.to_string(), None).unwrap();
        assert_eq!(key.kid(), "k1");
        assert!(verifies(&key));
        let pem_key =
            SigningKey::from_pem(&pem("PRIVATE KEY", pair.to_pkcs8v1().unwrap().as_ref()), Some("k1")).unwrap();
        assert_eq!(pem_key.public_jwks(), key.public_jwks());

        let wrong = json!({"kty": "EC", "crv": "P-256", "d": "AA", "x": "AA", "y": "AA"});
        assert!(SigningKey::from_jwk(&wrong.to_string(), None).unwrap_err().to_string().contains("P-384"));
        let broken = json!({"kty": "EC", "crv": "P-384", "d": b64url(&[1; 48]), "x": jwk["x"], "y": jwk["y"]});
        assert!(SigningKey::from_jwk(&broken.to_string(), None).is_err(), "d must match x and y");
    }

    #[test]
    fn registered_sets_must_be_public_p384_or_rsa_with_unique_kids() {
        let (key, _) = SigningKey::generate(KeyKind::Es384).unwrap();
        let public = key.public_jwks();
        assert!(public_key_set(&public.to_string()).is_ok());
        let with = |f: &dyn Fn(&mut Json)| {
            let mut s = public.clone();
            f(&mut s);
            public_key_set(&s.to_string()).unwrap_err().to_string()
        };
        assert!(with(&|s| s["keys"][0]["d"] = json!("AAAA")).contains("private"));
        assert!(with(&|s| s["keys"][0]["crv"] = json!("P-256")).contains("P-384"));
        assert!(
            with(&|s| {
                s["keys"][0].as_object_mut().unwrap().remove("kid");
            })
            .contains("kid")
        );
        assert!(
            with(&|s| {
                let k = s["keys"][0].clone();
                s["keys"].as_array_mut().unwrap().push(k);
            })
            .contains("twice")
        );
        assert!(
            with(&|s| {
                s["keys"][0].as_object_mut().unwrap().remove("x");
            })
            .contains("malformed")
        );
        assert!(with(&|s| s["keys"] = json!([])).contains("no keys"));
        assert!(public_key_set("[]").is_err());
    }

    #[test]
    fn sec1_ec_pems_are_read() {
        let pair = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).unwrap();
        use aws_lc_rs::encoding::AsDer;
        let sec1 = pair.private_key().as_der().unwrap();
        let key = SigningKey::from_pem(&pem("EC PRIVATE KEY", sec1.as_ref()), None).unwrap();
        let same = SigningKey::from_pem(&pem("PRIVATE KEY", pair.to_pkcs8v1().unwrap().as_ref()), None).unwrap();
        assert_eq!(key.kid(), same.kid());
        assert!(verifies(&key));
    }

    #[test]
    fn a_p256_pem_is_refused() {
        let pair = EcdsaKeyPair::generate(&aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let e = SigningKey::from_pem(&pem("PRIVATE KEY", pair.to_pkcs8v1().unwrap().as_ref()), None).unwrap_err();
        assert!(e.to_string().contains("P-384"), "{e}");
        assert!(SigningKey::from_pem("not a key", None).is_err());
    }

    #[test]
    fn der_integers_are_minimal_and_non_negative() {
        assert_eq!(der_sequence(&[vec![0], vec![0, 0x7f], vec![0x80]]), [0x30, 10, 2, 1, 0, 2, 1, 0x7f, 2, 2, 0, 0x80]);
        let long = der_sequence(&[vec![1; 200]]);
        assert_eq!(&long[..6], &[0x30, 0x81, 203, 2, 0x81, 200]);
    }
}

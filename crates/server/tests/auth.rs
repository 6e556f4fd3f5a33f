//! SMART Backend Services against a real server on loopback (reference:
//! bulk-export.md §4): discovery, the token endpoint's checks and errors,
//! tokens opening kick-off, status and downloads, scopes limiting exports,
//! expiry, and keys registered by JWKS URL.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Server, client, start};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::blocking::{RequestBuilder, Response};
use serde_json::{Value as Json, json};
use veil_smart::{KeyKind, SigningKey, TokenClient};
use veil_store::ClientRecord;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Registers a client with `key`'s public set (inline) and `scopes`.
fn register(s: &Server, id: &str, key: &SigningKey, scopes: &str) {
    let record = ClientRecord {
        id: id.into(),
        name: format!("test {id}"),
        jwks: Some(key.public_jwks().to_string()),
        jwks_url: None,
        scopes: scopes.into(),
        created: String::new(),
    };
    s.store.add_client(&record).unwrap();
}

/// A fresh ES384 key registered as `id` with `allowed` scopes, and a token
/// client for it asking for `asked`.
fn registered_tokens(s: &Server, id: &str, allowed: &str, asked: &str) -> TokenClient {
    let (key, _) = SigningKey::generate(KeyKind::Es384).unwrap();
    register(s, id, &key, allowed);
    TokenClient::new(&s.base, id, key, asked)
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn token_url(s: &Server) -> String {
    format!("{}/auth/token", s.base)
}

fn token_request(s: &Server, assertion: &str, scope: &str) -> Response {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", assertion),
        ("scope", scope),
    ];
    client().post(token_url(s)).form(&form).send().unwrap()
}

/// The OAuth error code of a refused token request.
fn refused(r: Response) -> String {
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Json = r.json().unwrap();
    assert!(body["error_description"].is_string());
    body["error"].as_str().unwrap().to_string()
}

fn with_token(r: RequestBuilder, token: &str) -> Response {
    r.bearer_auth(token).send().unwrap()
}

/// Polls until the export ends, with the token.
fn wait(url: &str, token: &str) -> Response {
    for _ in 0..300 {
        let r = with_token(client().get(url), token);
        if r.status() != 202 {
            return r;
        }
        std::thread::sleep(Duration::from_millis(1050));
    }
    panic!("the export did not finish");
}

/// A signed assertion with the given header algorithm, kid and claims.
fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Json) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    header.typ = Some("JWT".into());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

#[test]
fn a_valid_assertion_gets_a_token_that_opens_kickoff_status_and_downloads() {
    let s = start("auth_flow", false, Some(300));
    let (key, _) = SigningKey::generate(KeyKind::Es384).unwrap();
    register(&s, "team-a", &key, "system/*.read");
    let (other_key, _) = SigningKey::generate(KeyKind::Rs384).unwrap();
    register(&s, "team-b", &other_key, "system/*.read");

    // Discovery: JSON with absolute URLs.
    let config: Json =
        client().get(format!("{}/.well-known/smart-configuration", s.base)).send().unwrap().json().unwrap();
    assert_eq!(config["token_endpoint"], token_url(&s));
    assert_eq!(config["token_endpoint_auth_methods_supported"], json!(["private_key_jwt"]));
    assert!(config["token_endpoint_auth_signing_alg_values_supported"].as_array().unwrap().contains(&json!("ES384")));
    assert!(config["capabilities"].as_array().unwrap().contains(&json!("client-confidential-asymmetric")));
    assert!(config["grant_types_supported"].as_array().unwrap().contains(&json!("client_credentials")));

    // The token endpoint's answer, seen raw.
    let r = token_request(&s, &key.assertion("team-a", &token_url(&s), now()).unwrap(), "system/*.read");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["pragma"], "no-cache");
    let body: Json = r.json().unwrap();
    assert_eq!((body["token_type"].as_str(), body["scope"].as_str()), (Some("bearer"), Some("system/*.read")));
    assert!(body["expires_in"].as_u64().unwrap() <= 300);

    // Veil's own client library: discovery, assertion, token.
    let team_a = TokenClient::new(&s.base, "team-a", key, "system/*.read");
    let token = team_a.access_token().unwrap();
    assert_eq!(team_a.access_token().unwrap(), token, "cached while it has time left");
    let team_b = TokenClient::new(&s.base, "team-b", other_key, "system/*.read").access_token().unwrap();

    // Without a token: 401 with a challenge, and an OperationOutcome.
    let kickoff = format!("{}/$export?_type=Patient,Condition", s.base);
    let r = client().get(&kickoff).send().unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    assert_eq!(r.json::<Json>().unwrap()["resourceType"], "OperationOutcome");
    assert_eq!(with_token(client().get(&kickoff), "not-a-token").status(), 401);
    let r = client().get(format!("{}/metadata", s.base)).send().unwrap();
    assert_eq!(r.status(), 200, "the CapabilityStatement stays open");
    // And it names the token endpoint too, where some clients look for it
    // (SMART's bulk-data-client): rest.security, the oauth-uris extension.
    let security = &r.json::<Json>().unwrap()["rest"][0]["security"];
    assert_eq!(security["service"][0]["coding"][0]["code"], "SMART-on-FHIR");
    let uris = &security["extension"][0];
    assert_eq!(uris["url"], "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris");
    assert_eq!(uris["extension"][0], json!({"url": "token", "valueUri": token_url(&s)}));

    // With it: kick-off, status, downloads.
    let r = with_token(client().get(&kickoff).header("prefer", "respond-async"), &token);
    assert_eq!(r.status(), 202);
    let status = r.headers()["content-location"].to_str().unwrap().to_string();
    assert_eq!(client().get(&status).send().unwrap().status(), 401, "status needs the token too");
    let done = wait(&status, &token);
    assert_eq!(done.status(), 200);
    let manifest: Json = done.json().unwrap();
    assert_eq!(manifest["requiresAccessToken"], true);
    let file = manifest["output"][0]["url"].as_str().unwrap().to_string();
    assert_eq!(client().get(&file).send().unwrap().status(), 401, "downloads need the token");
    let r = with_token(client().get(&file), &token);
    assert_eq!(r.status(), 200);
    assert!(r.text().unwrap().starts_with(r#"{"resourceType":"#));

    // Another client's token sees neither the job nor its files.
    assert_eq!(with_token(client().get(&status), &team_b).status(), 404);
    assert_eq!(with_token(client().get(&file), &team_b).status(), 404);
    assert_eq!(with_token(client().delete(&status), &team_b).status(), 404);
    assert_eq!(with_token(client().get(&status), &token).status(), 200, "and cannot cancel it");
}

#[test]
fn bad_assertions_are_refused_with_oauth_errors() {
    let s = start("auth_refusals", false, Some(300));
    let (key, pem) = SigningKey::generate(KeyKind::Es384).unwrap();
    register(&s, "team-a", &key, "system/Patient.read");
    let kid = key.kid().to_string();
    let signer = EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
    let (_, other_pem) = SigningKey::generate(KeyKind::Es384).unwrap();
    let other = EncodingKey::from_ec_pem(other_pem.as_bytes()).unwrap();
    let (_, rsa_pem) = SigningKey::generate(KeyKind::Rs384).unwrap();
    let rsa = EncodingKey::from_rsa_pem(rsa_pem.as_bytes()).unwrap();
    let mut n = 0;
    let mut claims = |change: &dyn Fn(&mut Json)| {
        n += 1;
        let mut c = json!({"iss": "team-a", "sub": "team-a", "aud": token_url(&s), "exp": now() + 240, "jti": format!("nonce-{n}")});
        change(&mut c);
        c
    };
    let same = |_: &mut Json| {};
    let cases = [
        ("expired", sign(Algorithm::ES384, &kid, &signer, &claims(&|c| c["exp"] = json!(now() - 120)))),
        (
            "exp more than 5 minutes ahead",
            sign(Algorithm::ES384, &kid, &signer, &claims(&|c| c["exp"] = json!(now() + 900))),
        ),
        (
            "wrong audience",
            sign(
                Algorithm::ES384,
                &kid,
                &signer,
                &claims(&|c| c["aud"] = json!("https://elsewhere.example/auth/token")),
            ),
        ),
        ("wrong key", sign(Algorithm::ES384, &kid, &other, &claims(&same))),
        ("unknown kid", sign(Algorithm::ES384, "kid-9", &signer, &claims(&same))),
        ("wrong algorithm: RS256", sign(Algorithm::RS256, &kid, &rsa, &claims(&same))),
        ("wrong algorithm: HS384", sign(Algorithm::HS384, &kid, &EncodingKey::from_secret(b"guess"), &claims(&same))),
        ("sub is not iss", sign(Algorithm::ES384, &kid, &signer, &claims(&|c| c["sub"] = json!("team-b")))),
        (
            "unknown client",
            sign(
                Algorithm::ES384,
                &kid,
                &signer,
                &claims(&|c| {
                    c["iss"] = json!("team-z");
                    c["sub"] = json!("team-z");
                }),
            ),
        ),
        (
            "no jti",
            sign(
                Algorithm::ES384,
                &kid,
                &signer,
                &claims(&|c| {
                    c.as_object_mut().unwrap().remove("jti");
                }),
            ),
        ),
    ];
    for (what, assertion) in &cases {
        assert_eq!(refused(token_request(&s, assertion, "system/Patient.read")), "invalid_client", "{what}");
    }

    // A replayed jti: accepted once, refused after.
    let good = sign(Algorithm::ES384, &kid, &signer, &claims(&same));
    assert_eq!(token_request(&s, &good, "system/Patient.read").status(), 200);
    assert_eq!(refused(token_request(&s, &good, "system/Patient.read")), "invalid_client", "replayed jti");

    // Scopes the client may not have.
    let wide = sign(Algorithm::ES384, &kid, &signer, &claims(&same));
    assert_eq!(refused(token_request(&s, &wide, "system/Observation.read")), "invalid_scope");
    let none = sign(Algorithm::ES384, &kid, &signer, &claims(&same));
    assert_eq!(refused(token_request(&s, &none, "")), "invalid_scope");

    // The request itself.
    let c = client();
    let assertion = sign(Algorithm::ES384, &kid, &signer, &claims(&same));
    let post = |form: &[(&str, &str)]| c.post(token_url(&s)).form(form).send().unwrap();
    assert_eq!(
        refused(post(&[
            ("grant_type", "password"),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", &assertion)
        ])),
        "unsupported_grant_type"
    );
    assert_eq!(
        refused(post(&[
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", &assertion),
            ("scope", "system/Patient.read")
        ])),
        "invalid_request"
    );
    assert_eq!(
        refused(post(&[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", "basic"),
            ("client_assertion", &assertion)
        ])),
        "invalid_client"
    );
    assert_eq!(
        refused(post(&[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", JWT_BEARER),
            ("scope", "system/Patient.read")
        ])),
        "invalid_request"
    );
    let json_body = c.post(token_url(&s)).json(&json!({"grant_type": "client_credentials"})).send().unwrap();
    assert_eq!(refused(json_body), "invalid_request", "the form content type is required");
    // None of these spent the nonce: the assertion still works once.
    assert_eq!(token_request(&s, &assertion, "system/Patient.read").status(), 200);
}

#[test]
fn a_patient_read_token_cannot_export_observations() {
    let s = start("auth_scopes", false, Some(300));
    // Asking for less than allowed gets what was asked for.
    let tokens = registered_tokens(&s, "narrow", "system/Patient.read system/Observation.read", "system/Patient.read");
    assert_eq!(tokens.granted_scope().unwrap(), "system/Patient.read");
    let token = tokens.access_token().unwrap();

    let r = with_token(client().get(format!("{}/$export?_type=Observation", s.base)), &token);
    assert_eq!(r.status(), 403);
    assert!(r.text().unwrap().contains("Observation"));
    assert_eq!(with_token(client().get(format!("{}/$export?_type=Patient,Observation", s.base)), &token).status(), 403);
    assert_eq!(with_token(client().get(format!("{}/Patient/$export?_type=Observation", s.base)), &token).status(), 403);
    assert_eq!(with_token(client().get(format!("{}/Observation?_count=1", s.base)), &token).status(), 403);

    // No _type: the export holds only what the scope reads.
    let r = with_token(client().get(format!("{}/$export", s.base)), &token);
    assert_eq!(r.status(), 202);
    let manifest: Json = wait(r.headers()["content-location"].to_str().unwrap(), &token).json().unwrap();
    let types: Vec<&str> = manifest["output"].as_array().unwrap().iter().map(|o| o["type"].as_str().unwrap()).collect();
    assert!(!types.is_empty() && types.iter().all(|t| *t == "Patient"), "{types:?}");

    // Reading a Patient is allowed; writing is not.
    let found: Json = with_token(client().get(format!("{}/Patient?_count=1", s.base)), &token).json().unwrap();
    let id = found["entry"][0]["resource"]["id"].as_str().unwrap();
    assert_eq!(with_token(client().get(format!("{}/Patient/{id}", s.base)), &token).status(), 200);
    assert_eq!(with_token(client().delete(format!("{}/Patient/{id}", s.base)), &token).status(), 403);
    let write = client().post(format!("{}/Patient", s.base)).body(r#"{"resourceType":"Patient"}"#);
    assert_eq!(with_token(write, &token).status(), 403);
}

#[test]
fn an_expired_access_token_is_refused() {
    // Expiry is kept in whole seconds, so a token of lifetime L lives between
    // L-1 and L seconds: 3 leaves the fresh token below at least two seconds
    // to be used in, even on a loaded machine (1 made this test flaky).
    let s = start("auth_expiry", false, Some(3));
    let tokens = registered_tokens(&s, "team-a", "system/*.read", "system/*.read");
    let token = tokens.access_token().unwrap();
    std::thread::sleep(Duration::from_millis(3100));
    let r = with_token(client().get(format!("{}/Patient?_count=1", s.base)), &token);
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().contains("invalid_token"));
    // The client library notices and gets a new one.
    let fresh = tokens.access_token().unwrap();
    assert_ne!(fresh, token);
    assert_eq!(with_token(client().get(format!("{}/Patient?_count=1", s.base)), &fresh).status(), 200);
}

/// Serves `body` as a JWKS at a loopback URL, counting fetches.
fn jwks_host(body: String) -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            counter.fetch_add(1, Ordering::SeqCst);
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: max-age=60\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    (url, fetches)
}

#[test]
fn keys_registered_by_url_are_fetched_cached_and_jku_must_match() {
    let s = start("auth_jwks_url", false, Some(300));
    let (key, pem) = SigningKey::generate(KeyKind::Es384).unwrap();
    let (url, fetches) = jwks_host(key.public_jwks().to_string());
    let record = ClientRecord {
        id: "by-url".into(),
        name: "by url".into(),
        jwks: None,
        jwks_url: Some(url.clone()),
        scopes: "system/*.read".into(),
        created: String::new(),
    };
    s.store.add_client(&record).unwrap();
    let signer = EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
    let assertion = |jku: Option<&str>, jti: &str| {
        let mut header = Header::new(Algorithm::ES384);
        header.kid = Some(key.kid().into());
        header.typ = Some("JWT".into());
        header.jku = jku.map(str::to_string);
        let claims = json!({"iss": "by-url", "sub": "by-url", "aud": token_url(&s), "exp": now() + 240, "jti": jti});
        jsonwebtoken::encode(&header, &claims, &signer).unwrap()
    };
    assert_eq!(token_request(&s, &assertion(None, "a"), "system/*.read").status(), 200);
    assert_eq!(token_request(&s, &assertion(Some(&url), "b"), "system/*.read").status(), 200);
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "kept as Cache-Control allows");
    let elsewhere = "http://127.0.0.1:9/jwks.json";
    assert_eq!(refused(token_request(&s, &assertion(Some(elsewhere), "c"), "system/*.read")), "invalid_client");
}

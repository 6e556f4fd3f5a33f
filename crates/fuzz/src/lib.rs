//! Fuzz targets: one function per parser that reads input from outside
//! Veil (policies, ViewDefinitions, `study.toml`, NDJSON lines, search and
//! `_typeFilter` parameters, share tokens, client assertions, the
//! aggregator's zip + Parquet intake, FHIRPath, the R4 shape check). Each
//! takes any bytes and must return, never panic, hang or exhaust memory.
//!
//! libFuzzer runs them through `crates/fuzz/fuzz` (`cargo fuzz run NAME`,
//! nightly); `cargo test` runs each over its seed corpus in
//! `crates/fuzz/corpus/NAME/` and over mutations of the seeds, so a crash
//! found once stays fixed (add the crashing input to the corpus).

use std::sync::OnceLock;

/// A fuzz target: takes any bytes, must return.
pub type Target = fn(&[u8]);

/// Every target, by the name of its corpus folder and libFuzzer binary.
pub const TARGETS: &[(&str, Target)] = &[
    ("policy", policy),
    ("view_definition", view_definition),
    ("study_toml", study_toml),
    ("ndjson", ndjson),
    ("search", search),
    ("share_token", share_token),
    ("client_assertion", client_assertion),
    ("aggregator_intake", aggregator_intake),
    ("fhirpath", fhirpath),
    ("r4_resource", r4_resource),
];

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// A de-identification policy (Microsoft anonymizer configuration), then
/// the engine it makes over a small resource.
pub fn policy(data: &[u8]) {
    let Some(t) = text(data) else { return };
    if let Ok(policy) = veil_deid::Policy::parse(t) {
        let engine = veil_deid::Engine::new(policy);
        let _ = engine.anonymize(serde_json::json!({"resourceType": "Patient", "id": "p", "birthDate": "1970-01-01", "name": [{"family": "F"}]}));
    }
}

/// A SQL on FHIR ViewDefinition.
pub fn view_definition(data: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = veil_views::View::parse(&v);
    }
}

/// `study.toml`, with every file it names answered by the same text.
pub fn study_toml(data: &[u8]) {
    let Some(t) = text(data) else { return };
    let _ = veil_study::Study::parse(t, |_| Ok(t.to_string()));
}

/// One NDJSON line through `veil deid`'s stream with the built-in policy.
pub fn ndjson(data: &[u8]) {
    static ENGINE: OnceLock<veil_deid::Engine> = OnceLock::new();
    let engine = ENGINE.get_or_init(|| veil_deid::Engine::new(veil_deid::Policy::safe_harbor()));
    let _ = veil_deid::anonymize_ndjson(engine, data, std::io::sink(), veil_deid::OnError::Quarantine, |_| {}, |_| {});
}

/// A search query (`Type?params`, as `_typeFilter` carries it), then a
/// match against a resource.
pub fn search(data: &[u8]) {
    let Some(t) = text(data) else { return };
    if let Ok(q) = veil_server::search::Query::parse_type_filter(t) {
        let _ = q.matches(
            &serde_json::json!({"resourceType": "Patient", "id": "p", "gender": "female", "birthDate": "1970-01-01"}),
        );
    }
    let _ = veil_server::search::Query::parse("Observation", t);
}

/// A Veil share token, checked against a fixed key.
pub fn share_token(data: &[u8]) {
    let Some(t) = text(data) else { return };
    let _ = veil_storage::share::verify_token(b"fuzz-key", t, 1_800_000_000);
}

/// A SMART client assertion, checked against a registered ES384 key.
pub fn client_assertion(data: &[u8]) {
    static CLIENT: OnceLock<veil_smart::Client> = OnceLock::new();
    let Some(t) = text(data) else { return };
    let client = CLIENT.get_or_init(|| {
        let (key, _) = veil_smart::SigningKey::generate(veil_smart::KeyKind::Es384).expect("a key");
        veil_smart::Client {
            id: "fuzz".into(),
            jwks: serde_json::from_value(key.public_jwks()).expect("a key set"),
            jwks_url: None,
        }
    });
    let _ = veil_smart::assertion_issuer_and_kid(t);
    let _ = veil_smart::verify_assertion(t, "http://127.0.0.1/auth/token", 1_800_000_000, |_| Some(client.clone()));
}

/// An upload to the aggregator: a zip of Parquet tables.
pub fn aggregator_intake(data: &[u8]) {
    let _ = veil_aggregator::package::read(data, "flu", 1, 10, &veil_aggregator::package::Limits::default());
}

/// A FHIRPath expression and a resource, split at the first newline:
/// compiled, evaluated, and every matched node replaced and removed.
pub fn fhirpath(data: &[u8]) {
    let Some(t) = text(data) else { return };
    let (expr, json) = t.split_once('\n').unwrap_or((t, r#"{"resourceType":"Patient","name":[{"given":["a"]}]}"#));
    let (Ok(e), Ok(resource)) =
        (veil_fhirpath::Expression::compile(expr), serde_json::from_str::<serde_json::Value>(json))
    else {
        return;
    };
    if let Ok(items) = e.evaluate(&resource) {
        for item in items {
            if let Ok(loc) = item.location() {
                let mut copy = resource.clone();
                let _ = loc.replace(&mut copy, serde_json::Value::Null);
                let _ = loc.remove(&mut copy);
            }
        }
    }
}

/// A resource through the R4 shape check the REST API applies.
pub fn r4_resource(data: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = veil_fhir::validate::check_resource(&v);
    }
}

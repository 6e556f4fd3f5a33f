//! The audit on the bundled Synthea sample, with identifiers planted where
//! Microsoft's sample policy lets them through: Veil's `safe-harbor` output
//! passes, original values included; the Microsoft sample's output is
//! caught in every category it leaves behind.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{Value as Json, json};
use veil_audit::{Category, Evidence, Options, Standard, audit_dir};
use veil_deid::{Engine, OnError, Policy, anonymize_ndjson};

/// Identifiers in the places the independent audit found them.
fn plant(r: &mut Json) {
    match r["resourceType"].as_str() {
        Some("Organization") => {
            r["address"][0]["postalCode"] = json!("0210");
            r["telecom"] = json!([{"system": "url", "value": "http://10.20.30.40/clinic"}]);
        }
        Some("Immunization") => r["lotNumber"] = json!("LOT-77A"),
        Some("MedicationRequest") => r["dosageInstruction"] = json!([{"text": "call 617-555-0199 before"}]),
        Some("Device") => r["serialNumber"] = json!("SN-88B"),
        Some("Observation") => r["note"] = json!([{"text": "seen by Dr Plantedname"}]),
        Some("DiagnosticReport") => {
            r["presentedForm"] = json!([{"title": "scan", "url": "http://10.20.30.40/report", "data": "cGxhbnRlZA=="}])
        }
        Some("CarePlan") => r["description"] = json!("Plantedname's plan"),
        Some("Patient") => r["telecom"] = json!([{"system": "email", "value": "someone@example.org"}]),
        _ => {}
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("veil-audit-sample-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The sample as NDJSON, planted, in a folder of its own.
fn original() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/synthea-r4-100.tar.gz");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()));
    let mut ndjson = String::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut text = String::new();
        entry.read_to_string(&mut text).unwrap();
        let Ok(bundle) = serde_json::from_str::<Json>(&text) else { continue };
        for e in bundle["entry"].as_array().into_iter().flatten() {
            let mut r = e["resource"].clone();
            plant(&mut r);
            ndjson.push_str(&r.to_string());
            ndjson.push('\n');
        }
    }
    let dir = scratch("original");
    std::fs::write(dir.join("all.ndjson"), ndjson).unwrap();
    dir
}

fn deidentify(original: &Path, policy: &str) -> PathBuf {
    let mut policy = Policy::built_in(policy).unwrap();
    policy.parameters.date_shift_key = Some("audit-test-date".into());
    policy.parameters.crypto_hash_key = Some("audit-test-hash".into());
    let input = std::fs::read(original.join("all.ndjson")).unwrap();
    let mut output = Vec::new();
    anonymize_ndjson(&Engine::new(policy), &input[..], &mut output, OnError::Fail, |_| {}, |_| {}).unwrap();
    let dir = scratch(&format!("out-{}", output.len()));
    std::fs::write(dir.join("all.ndjson"), output).unwrap();
    dir
}

fn values(e: &Evidence, c: Category) -> u64 {
    e.categories.iter().find(|r| r.category == c).unwrap().values
}

#[test]
fn safe_harbor_output_passes_and_the_microsoft_sample_is_caught() {
    let original = original();
    let options = Options { original: Some(original.clone()), ..Options::new(Standard::SafeHarbor) };

    let ours = audit_dir(&deidentify(&original, "safe-harbor"), &options).unwrap();
    assert!(ours.passes, "{}", ours.summary());
    assert!(ours.categories.iter().all(|c| c.values == 0), "{}", ours.summary());
    assert_eq!(ours.resources, 38970, "every resource of the 100 patients' bundles");
    assert_eq!(ours.risk.patients, 100);

    let sample = audit_dir(&deidentify(&original, "ms-sample"), &options).unwrap();
    assert!(!sample.passes);
    // What the independent audit found in the Microsoft sample's output.
    use Category::*;
    for c in [
        StreetAddresses,
        SmallGeography,
        Dates,
        Phone,
        DeviceIds,
        Urls,
        IpAddresses,
        OtherIdentifiers,
        FreeText,
        TimeZoneOffsets,
        OriginalValues,
    ] {
        assert!(values(&sample, c) > 0, "{c:?} not found in the Microsoft sample's output:\n{}", sample.summary());
    }
    // Dates keep their day, and almost all of them an offset from the original zone.
    assert!(values(&sample, Dates) > 90_000, "{}", sample.summary());
}

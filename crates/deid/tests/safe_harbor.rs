//! The built-in Safe Harbor policy on Synthea patients with fake identifiers
//! planted in every place identifiers hide (names, SSNs, phone numbers,
//! emails, street addresses, full dates, identifiers, free text, extensions,
//! contained resources): none of them, and none of Synthea's own identifying
//! values, may survive in the output, in a quarantine reason or in an error.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

use serde_json::{Value as Json, json};
use veil_deid::{Engine, OnError, Policy, anonymize_ndjson};

/// Values no de-identified output may contain.
const PLANTED: &[&str] = &[
    "Zyxwplanted",
    "Qwertplanted",
    "999-12-3456",
    "555-867-5309",
    "planted.person@example.org",
    "742 Evergreen Terrace",
    "MRN-PLANTED-0001",
    "PLANTED-EXT-SECRET",
    "Containedplanted",
    "Springfieldplanted",
];

fn plant(patient: &mut Json) {
    let p = patient.as_object_mut().unwrap();
    p.insert("name".into(), json!([{"use": "official", "family": "Zyxwplanted", "given": ["Qwertplanted"], "text": "Qwertplanted Zyxwplanted"}]));
    p.insert("telecom".into(), json!([{"system": "phone", "value": "555-867-5309"}, {"system": "email", "value": "planted.person@example.org"}]));
    p.insert("address".into(), json!([{"line": ["742 Evergreen Terrace"], "city": "Springfieldplanted", "state": "MA", "postalCode": "99950", "country": "US"}]));
    p.insert("birthDate".into(), json!("1961-07-04"));
    p.insert(
        "_birthDate".into(),
        json!({"extension": [{"url": "http://example.org/birth-note", "valueString": "PLANTED-EXT-SECRET"}]}),
    );
    p.insert(
        "identifier".into(),
        json!([
            {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-12-3456"},
            {"system": "http://example.org/mrn", "value": "MRN-PLANTED-0001"}
        ]),
    );
    p.insert(
        "contained".into(),
        json!([{"resourceType": "Practitioner", "id": "gp", "name": [{"family": "Containedplanted"}],
        "telecom": [{"system": "phone", "value": "555-867-5309"}]}]),
    );
    p.insert("text".into(), json!({"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Qwertplanted Zyxwplanted, 742 Evergreen Terrace</div>"}));
}

/// Identifying values Synthea itself put in: names (with their numeric
/// suffixes), SSNs, phone numbers, street lines, full birth dates,
/// identifier values.
fn synthea_identifiers(patient: &Json) -> Vec<String> {
    let mut out = Vec::new();
    for name in patient["name"].as_array().into_iter().flatten() {
        out.extend(name["family"].as_str().map(str::to_string));
        out.extend(name["given"].as_array().into_iter().flatten().filter_map(|g| g.as_str().map(str::to_string)));
    }
    for t in patient["telecom"].as_array().into_iter().flatten() {
        out.extend(t["value"].as_str().map(str::to_string));
    }
    for a in patient["address"].as_array().into_iter().flatten() {
        out.extend(a["line"].as_array().into_iter().flatten().filter_map(|l| l.as_str().map(str::to_string)));
    }
    for i in patient["identifier"].as_array().into_iter().flatten() {
        out.extend(i["value"].as_str().map(str::to_string));
    }
    // Short values could occur by chance in unrelated text; these are not short.
    out.retain(|v| v.len() >= 6);
    out
}

#[test]
fn nothing_identifying_survives() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/synthea-r4-100.tar.gz");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()));
    let mut input = String::new();
    let mut forbidden: BTreeSet<String> = PLANTED.iter().map(|s| s.to_string()).collect();
    let mut patients = 0;
    // Thirty patients' records keep a debug build's run short; every kind of
    // resource Synthea writes is among them.
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".json") || name.starts_with("groupInformation") {
            continue;
        }
        let mut text = String::new();
        entry.read_to_string(&mut text).unwrap();
        let bundle: Json = serde_json::from_str(&text).unwrap();
        for e in bundle["entry"].as_array().into_iter().flatten() {
            let mut resource = e["resource"].clone();
            if resource["resourceType"] == "Patient" {
                forbidden.extend(synthea_identifiers(&resource));
                if patients % 3 == 0 {
                    plant(&mut resource);
                }
                patients += 1;
            }
            if resource["resourceType"] == "Condition" {
                resource["note"] = json!([{"text": "Seen with Qwertplanted Zyxwplanted, call 555-867-5309"}]);
            }
            input.push_str(&resource.to_string());
            input.push('\n');
        }
        if patients >= 30 {
            break;
        }
    }
    // Lines that cannot be de-identified, carrying PHI, to check the reasons.
    input.push_str("{\"resourceType\": \"Patient\", \"name\": [{\"family\": \"Zyxwplanted\"\n");
    input.push_str("{\"resourceType\": \"NotAType\", \"name\": \"Zyxwplanted 999-12-3456\"}\n");
    assert!(forbidden.len() > 100, "{} values to look for", forbidden.len());

    // Fixed keys make the run, and so this test, deterministic.
    let mut policy = Policy::safe_harbor();
    policy.parameters.date_shift_key = Some("safe-harbor-test-date".into());
    policy.parameters.crypto_hash_key = Some("safe-harbor-test-hash".into());
    let engine = Engine::new(policy);
    let birth_dates_in: Vec<String> = input
        .lines()
        .filter_map(|l| serde_json::from_str::<Json>(l).ok())
        .filter(|r| r["resourceType"] == "Patient")
        .filter_map(|r| r["birthDate"].as_str().map(str::to_string))
        .collect();
    let mut output = Vec::new();
    let mut reasons = Vec::new();
    let report =
        anonymize_ndjson(&engine, input.as_bytes(), &mut output, OnError::Quarantine, |q| reasons.push(q), |_| {})
            .unwrap();
    let output = String::from_utf8(output).unwrap();
    assert_eq!(reasons.len(), 2, "the two broken lines are quarantined");
    assert!(report.written() > 3000, "{} resources written", report.written());

    let reasons_text = format!("{reasons:?}");
    let mut leaks = Vec::new();
    for value in &forbidden {
        if output.contains(value.as_str()) {
            leaks.push(format!("output contains {value:?}"));
        }
        if reasons_text.contains(value.as_str()) {
            leaks.push(format!("a quarantine reason contains {value:?}"));
        }
    }
    assert!(leaks.is_empty(), "{}", leaks.join("\n"));
    // Full dates are shifted: no patient keeps its birth date. (Dates are
    // checked per patient: another record's shifted date may equal one by chance.)
    let birth_dates_out: Vec<String> = output
        .lines()
        .filter_map(|l| serde_json::from_str::<Json>(l).ok())
        .filter(|r| r["resourceType"] == "Patient")
        .map(|r| r["birthDate"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(birth_dates_in.len(), birth_dates_out.len());
    for (a, b) in birth_dates_in.iter().zip(&birth_dates_out) {
        assert_ne!(a, b, "a birth date survived");
    }
    // The planted patients are still there, de-identified and labelled.
    let planted_out: Vec<Json> = output
        .lines()
        .map(|l| serde_json::from_str::<Json>(l).unwrap())
        .filter(|r| r["resourceType"] == "Patient" && r["address"][0]["postalCode"] == "99900")
        .collect();
    assert!(planted_out.len() >= 10, "{} planted patients found", planted_out.len());
    for p in &planted_out {
        assert_eq!(p["birthDate"].as_str().map(str::len), Some(10), "a shifted full date, not the original");
        assert!(p["meta"]["security"].as_array().unwrap().iter().any(|c| c["code"] == "REDACTED"));
        assert!(p.get("contained").is_some(), "contained resources stay, emptied");
    }
}

/// A study's policy: Safe Harbor with rules placed first. The kept vaccine
/// code survives and the vaccination date is shifted to the day instead of
/// cut to the year; every other code, and the patient's details, are
/// treated as the sample treats them.
#[test]
fn rules_placed_ahead_of_safe_harbor_win_only_where_they_match() {
    let immunization = json!({"resourceType": "Immunization", "id": "i1", "status": "completed",
        "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140", "display": "Influenza"}], "text": "Influenza"},
        "patient": {"reference": "Patient/p1", "display": "Qwertplanted Zyxwplanted"}, "occurrenceDateTime": "2019-10-01",
        "reasonCode": [{"coding": [{"system": "http://snomed.info/sct", "code": "429060002"}]}]});
    let first = [
        ("Immunization.vaccineCode.coding.code".to_string(), "keep".to_string()),
        ("Immunization.occurrence".into(), "dateShift".into()),
    ];
    let keeping = Policy::parse(&Policy::safe_harbor_with(&first).unwrap()).unwrap();
    let kept = Engine::new(keeping).anonymize(immunization.clone()).unwrap();
    assert_eq!(kept["vaccineCode"]["coding"][0]["code"], "140");
    assert!(kept["vaccineCode"]["coding"][0].get("display").is_none() && kept["vaccineCode"].get("text").is_none());
    assert!(kept["reasonCode"][0]["coding"][0].get("code").is_none(), "other codes are still redacted");
    assert!(kept["patient"].get("display").is_none());
    let shifted = kept["occurrenceDateTime"].as_str().unwrap();
    assert!(shifted.len() == 10 && shifted != "2019-10-01", "shifted to the day");
    let plain = Engine::new(Policy::safe_harbor()).anonymize(immunization).unwrap();
    assert!(plain["vaccineCode"]["coding"][0].get("code").is_none());
    assert_eq!(plain["occurrenceDateTime"], "2019", "the sample keeps only the year");
    assert!(Policy::safe_harbor_with(&[("Patient.(".into(), "keep".into())]).is_err(), "a bad path is refused");
}

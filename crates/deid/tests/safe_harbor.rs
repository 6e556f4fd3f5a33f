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

/// Thirty Synthea patients' resources, every third patient planted, every
/// Condition with a planted note, and two broken lines; and the values no
/// output may contain.
fn planted_input(extra: impl Fn(&mut Json)) -> (String, BTreeSet<String>) {
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
            extra(&mut resource);
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

    (input, forbidden)
}

/// Microsoft's sample, which Veil keeps unchanged as `ms-sample`: what it
/// does remove never survives (its dates are shifted to the day, not cut).
#[test]
fn nothing_the_microsoft_sample_removes_survives() {
    // Fixed keys make the run, and so this test, deterministic.
    let mut policy = Policy::built_in("ms-sample").unwrap();
    policy.parameters.date_shift_key = Some("safe-harbor-test-date".into());
    policy.parameters.crypto_hash_key = Some("safe-harbor-test-hash".into());
    let engine = Engine::new(policy);
    let (input, forbidden) = planted_input(|_| {});
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

/// Identifiers planted where Microsoft's sample lets them through: free
/// text of every kind, UIDs, lot and serial numbers, URLs (one with an IP
/// address), organizations' and locations' addresses and telecom.
const PLANTED_PAST_THE_SAMPLE: &[&str] = &[
    "Plantedname Description",
    "call 617-555-0199 before",
    "1.2.840.113619.2.55.3.604688119",
    "LOT-PLANTED-77",
    "SERIAL-PLANTED-88",
    "http://10.20.30.40/planted",
    "1 Planted Plaza",
    "Plantedville",
    "planted-markdown-note",
    "planted-annotation",
    "planted-attachment-title",
    "planted-string-value",
];

fn plant_past_the_sample(r: &mut Json) {
    match r["resourceType"].as_str() {
        Some("Organization") => {
            r["address"] =
                json!([{"line": ["1 Planted Plaza"], "city": "Plantedville", "state": "MA", "postalCode": "03601"}]);
            r["telecom"] = json!([{"system": "url", "value": "http://10.20.30.40/planted"}]);
        }
        Some("Immunization") => r["lotNumber"] = json!("LOT-PLANTED-77"),
        Some("MedicationRequest") => r["dosageInstruction"] = json!([{"text": "call 617-555-0199 before"}]),
        Some("ImagingStudy") => r["series"][0]["uid"] = json!("1.2.840.113619.2.55.3.604688119"),
        Some("Device") => r["serialNumber"] = json!("SERIAL-PLANTED-88"),
        Some("Observation") => {
            r["valueString"] = json!("planted-string-value");
            r.as_object_mut().unwrap().remove("valueQuantity");
            r["note"] = json!([{"text": "planted-annotation"}]);
        }
        Some("DiagnosticReport") => {
            r["presentedForm"] = json!([{"title": "planted-attachment-title", "url": "http://10.20.30.40/planted", "data": "cGxhbnRlZA=="}])
        }
        Some("CarePlan") => r["description"] = json!("Plantedname Description"),
        Some("Patient") => r["address"][0]["postalCode"] = json!("0210"),
        Some("Condition") => r["code"]["text"] = json!("planted-markdown-note"),
        _ => {}
    }
}

/// Veil's `safe-harbor`: nothing planted survives, where the sample keeps
/// it or not; no date keeps a month or a day; postal codes are ZIP3 (a
/// restricted one `000`, one not of five digits gone); addresses keep only
/// state and ZIP3, every resource's.
#[test]
fn nothing_identifying_survives_safe_harbor() {
    let (input, mut forbidden) = planted_input(plant_past_the_sample);
    forbidden.extend(PLANTED_PAST_THE_SAMPLE.iter().map(|s| s.to_string()));
    for kind in
        ["Organization", "Immunization", "MedicationRequest", "ImagingStudy", "Device", "DiagnosticReport", "CarePlan"]
    {
        assert!(input.contains(&format!("\"resourceType\":\"{kind}\"")), "the sample holds a {kind} to plant in");
    }
    let engine = Engine::new(Policy::safe_harbor());
    let mut output = Vec::new();
    let mut reasons = Vec::new();
    anonymize_ndjson(&engine, input.as_bytes(), &mut output, OnError::Quarantine, |q| reasons.push(q), |_| {}).unwrap();
    let output = String::from_utf8(output).unwrap();
    let reasons = format!("{reasons:?}");
    let leaks: Vec<&String> =
        forbidden.iter().filter(|v| output.contains(v.as_str()) || reasons.contains(v.as_str())).collect();
    assert!(leaks.is_empty(), "survived: {leaks:?}");

    let mut dates = 0;
    let mut zips = BTreeSet::new();
    for line in output.lines() {
        let r: Json = serde_json::from_str(line).unwrap();
        visit_strings(&r, &mut |key, v| {
            let b = v.as_bytes();
            if b.len() >= 7 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && b[5].is_ascii_digit() {
                panic!("a date keeps its month in {key}: {} characters", v.len());
            }
            if b.len() == 4 && b.iter().all(u8::is_ascii_digit) {
                dates += 1;
            }
            if key == "postalCode" {
                zips.insert(v.to_string());
            }
            assert!(!matches!(key, "line" | "city" | "district"), "an address keeps its {key}");
        });
    }
    assert!(dates > 1000, "{dates} dates cut to the year");
    assert!(zips.iter().all(|z| z.len() == 3 && z.bytes().all(|b| b.is_ascii_digit())), "{zips:?}");
    assert!(zips.contains("000"), "the restricted ZIP3 036 becomes 000");
}

/// Calls `each(key, value)` for every string in a resource.
fn visit_strings(v: &Json, each: &mut impl FnMut(&str, &str)) {
    match v {
        Json::Object(m) => {
            for (k, v) in m {
                match v {
                    Json::String(s) => each(k, s),
                    Json::Array(items) => {
                        for item in items {
                            match item {
                                Json::String(s) => each(k, s),
                                other => visit_strings(other, each),
                            }
                        }
                    }
                    other => visit_strings(other, each),
                }
            }
        }
        Json::Array(items) => items.iter().for_each(|i| visit_strings(i, each)),
        _ => {}
    }
}

/// A study's policy: Safe Harbor with rules placed first. What they keep
/// survives (here a lot number, and a vaccination date shifted to the day
/// instead of cut to the year); everything else is treated as Safe Harbor
/// treats it.
#[test]
fn rules_placed_ahead_of_safe_harbor_win_only_where_they_match() {
    let immunization = json!({"resourceType": "Immunization", "id": "i1", "status": "completed",
        "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140", "display": "Influenza"}], "text": "Influenza"},
        "patient": {"reference": "Patient/p1", "display": "Qwertplanted Zyxwplanted"}, "occurrenceDateTime": "2019-10-01",
        "lotNumber": "LOT-1", "note": [{"text": "Qwertplanted"}]});
    let first = [
        ("Immunization.lotNumber".to_string(), "keep".to_string()),
        ("Immunization.occurrence".into(), "dateShift".into()),
    ];
    let keeping = Policy::parse(&Policy::safe_harbor_with(&first).unwrap()).unwrap();
    let kept = Engine::new(keeping).anonymize(immunization.clone()).unwrap();
    assert_eq!(kept["lotNumber"], "LOT-1");
    assert_eq!(kept["vaccineCode"]["coding"][0]["code"], "140", "codes are vocabulary, kept by Safe Harbor");
    assert!(kept["vaccineCode"]["coding"][0].get("display").is_none() && kept["vaccineCode"].get("text").is_none());
    assert!(kept["patient"].get("display").is_none() && kept.get("note").is_none());
    let shifted = kept["occurrenceDateTime"].as_str().unwrap();
    assert!(shifted.len() > 4 && !shifted.starts_with("2019-10-01"), "shifted to the day: {shifted}");
    let plain = Engine::new(Policy::safe_harbor()).anonymize(immunization).unwrap();
    assert!(plain.get("lotNumber").is_none());
    assert_eq!(plain["occurrenceDateTime"], "2019", "Safe Harbor keeps only the year");
    assert!(Policy::safe_harbor_with(&[("Patient.(".into(), "keep".into())]).is_err(), "a bad path is refused");
}

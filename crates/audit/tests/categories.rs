//! Each category is caught when one value of its kind is planted, at the
//! element path where it was planted, and nothing else is reported for a
//! clean resource.

use std::path::PathBuf;

use serde_json::{Value as Json, json};
use veil_audit::{Category, Evidence, Options, Standard, audit_files};

const HASH: &str = "5d41402abc4b2a76b9719d911017c592aa6a2b9c5e0b8d1f4a6c7e3d2b1a0f9e";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("veil-audit-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn audit(name: &str, resources: &[Json], original: Option<&[Json]>) -> Evidence {
    let write = |dir: &PathBuf, rs: &[Json]| {
        let text: String = rs.iter().map(|r| r.to_string() + "\n").collect();
        let file = dir.join("data.ndjson");
        std::fs::write(&file, text).unwrap();
        file
    };
    let dir = scratch(name);
    let file = write(&dir, resources);
    let mut options = Options::new(Standard::SafeHarbor);
    options.this_year = 2026;
    if let Some(orig) = original {
        let odir = scratch(&format!("{name}-original"));
        write(&odir, orig);
        options.original = Some(odir);
    }
    audit_files(&[file], &options).unwrap()
}

fn found(e: &Evidence, category: Category) -> &std::collections::BTreeMap<String, u64> {
    &e.categories.iter().find(|c| c.category == category).unwrap().paths
}

/// A resource as `safe-harbor` leaves one: pseudonyms, codes, a year.
fn clean() -> Json {
    json!({"resourceType": "Observation", "id": HASH, "status": "final",
        "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "REDACTED", "display": "redacted"}]},
        "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
        "subject": {"reference": format!("Patient/{HASH}")},
        "identifier": [{"system": "http://example.org/ids", "value": HASH}],
        "effectiveDateTime": "2019",
        "valueQuantity": {"value": 180, "unit": "cm", "system": "http://unitsofmeasure.org", "code": "cm"}})
}

#[test]
fn a_clean_resource_has_no_findings_and_passes() {
    let e = audit("clean", &[clean()], None);
    let any: Vec<_> = e.categories.iter().filter(|c| c.values > 0).map(|c| c.category).collect();
    assert!(any.is_empty(), "{any:?}");
    assert!(e.passes, "{:?}", e.failures);
}

/// Plants `value` into a clean resource with `plant`, and checks that the
/// audit counts it under `category` at `path` and fails Safe Harbor.
fn caught(category: Category, path: &str, plant: impl Fn(&mut Json)) {
    let mut r = clean();
    plant(&mut r);
    let e = audit(category.name(), &[r], None);
    assert_eq!(found(&e, category).get(path), Some(&1), "{category:?} at {path}: {:?}", e.categories);
    assert!(!e.passes);
    assert!(e.failures.iter().any(|f| f.starts_with(category.name())), "{:?}", e.failures);
    // The evidence never carries a value: only paths and counts.
    let text = String::from_utf8(e.to_json()).unwrap() + &e.summary() + &e.html();
    assert!(!text.contains("PLANTED") && !text.contains("planted"), "a value reached the evidence");
}

#[test]
fn names() {
    caught(Category::Names, "Patient.name.family", |r| {
        *r = json!({"resourceType": "Patient", "id": HASH, "name": [{"use": "official", "family": "Plantedson"}]})
    });
}

#[test]
fn street_addresses() {
    caught(Category::StreetAddresses, "Organization.address.line", |r| {
        *r =
            json!({"resourceType": "Organization", "id": HASH, "address": [{"line": ["1 Planted Way"], "state": "MA"}]})
    });
    caught(Category::StreetAddresses, "Location.position", |r| {
        *r = json!({"resourceType": "Location", "id": HASH, "position": {"longitude": -71.1, "latitude": 42.3}})
    });
}

#[test]
fn small_geography() {
    caught(Category::SmallGeography, "Patient.address.city", |r| {
        *r = json!({"resourceType": "Patient", "id": HASH, "address": [{"city": "Plantedville", "postalCode": "021"}]})
    });
    caught(Category::SmallGeography, "Patient.address.postalCode", |r| {
        *r = json!({"resourceType": "Patient", "id": HASH, "address": [{"postalCode": "0210"}]})
    });
}

#[test]
fn dates() {
    caught(Category::Dates, "Observation.effectiveDateTime", |r| r["effectiveDateTime"] = json!("2019-03"));
    caught(Category::Dates, "Patient.birthDate", |r| {
        *r = json!({"resourceType": "Patient", "id": HASH, "birthDate": "1930"})
    });
    caught(Category::Dates, "Condition.onsetAge.value", |r| {
        *r = json!({"resourceType": "Condition", "id": HASH, "onsetAge": {"value": 93, "unit": "a"}})
    });
}

#[test]
fn phone() {
    caught(Category::Phone, "Patient.telecom.value", |r| {
        *r = json!({"resourceType": "Patient", "id": HASH, "telecom": [{"system": "phone", "value": "planted"}]})
    });
}

#[test]
fn fax() {
    caught(Category::Fax, "Organization.telecom.value", |r| {
        *r = json!({"resourceType": "Organization", "id": HASH, "telecom": [{"system": "fax", "value": "planted"}]})
    });
}

#[test]
fn email() {
    caught(Category::Email, "Practitioner.telecom.value", |r| {
        *r = json!({"resourceType": "Practitioner", "id": HASH, "telecom": [{"system": "email", "value": "planted"}]})
    });
}

#[test]
fn ssn() {
    caught(Category::Ssn, "Patient.identifier.value", |r| {
        *r = json!({"resourceType": "Patient", "id": HASH,
            "identifier": [{"system": "http://hl7.org/fhir/sid/us-ssn", "value": "planted"}]})
    });
}

#[test]
fn medical_record_numbers() {
    caught(Category::MedicalRecordNumbers, "Patient.identifier.value", |r| {
        *r = json!({"resourceType": "Patient", "id": HASH, "identifier": [{"type": {"coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}, "value": "planted"}]})
    });
}

#[test]
fn health_plan_numbers() {
    caught(Category::HealthPlanNumbers, "Coverage.subscriberId", |r| {
        *r = json!({"resourceType": "Coverage", "id": HASH, "status": "active", "subscriberId": "planted"})
    });
}

#[test]
fn account_numbers() {
    caught(Category::AccountNumbers, "Account.identifier.value", |r| {
        *r = json!({"resourceType": "Account", "id": HASH, "status": "active", "identifier": [{"value": "planted"}]})
    });
}

#[test]
fn licence_numbers() {
    caught(
        Category::LicenceNumbers,
        "Patient.identifier.value",
        |r| *r = json!({"resourceType": "Patient", "id": HASH, "identifier": [{"type": {"coding": [{"code": "DL"}]}, "value": "planted"}]}),
    );
}

#[test]
fn vehicle_ids() {
    caught(Category::VehicleIds, "Observation.valueString", |r| {
        r.as_object_mut().unwrap().remove("valueQuantity");
        r["valueString"] = json!("1HGCM82633A004352");
    });
}

#[test]
fn device_ids() {
    caught(Category::DeviceIds, "Immunization.lotNumber", |r| {
        *r = json!({"resourceType": "Immunization", "id": HASH, "status": "completed", "lotNumber": "planted"})
    });
    caught(Category::DeviceIds, "Device.udiCarrier.carrierHRF", |r| {
        *r = json!({"resourceType": "Device", "id": HASH, "udiCarrier": [{"carrierHRF": "planted"}]})
    });
}

#[test]
fn urls() {
    caught(Category::Urls, "DiagnosticReport.presentedForm.url", |r| {
        *r = json!({"resourceType": "DiagnosticReport", "id": HASH, "status": "final",
            "presentedForm": [{"url": "https://example.org/planted"}]})
    });
}

#[test]
fn ip_addresses() {
    // In a code system, where a URL is allowed: its host still may not be an address.
    caught(Category::IpAddresses, "Observation.code.coding.system", |r| {
        r["code"]["coding"][0]["system"] = json!("http://10.20.30.40/planted");
    });
}

#[test]
fn images_and_binary() {
    caught(
        Category::ImagesAndBinary,
        "Patient.photo.data",
        |r| *r = json!({"resourceType": "Patient", "id": HASH, "photo": [{"contentType": "image/jpeg", "data": "cGxhbnRlZA=="}]}),
    );
}

#[test]
fn other_identifiers() {
    caught(Category::OtherIdentifiers, "ImagingStudy.series.uid", |r| {
        *r = json!({"resourceType": "ImagingStudy", "id": HASH, "status": "available",
            "series": [{"uid": "1.2.840.113619.2.55.3", "modality": {"code": "CT"}}]})
    });
    caught(Category::OtherIdentifiers, "Observation.subject.reference", |r| {
        r["subject"]["reference"] = json!("Patient/planted-id");
    });
    caught(Category::OtherIdentifiers, "Observation.id", |r| r["id"] = json!("planted-id"));
}

#[test]
fn free_text() {
    caught(Category::FreeText, "Observation.note.text", |r| r["note"] = json!([{"text": "planted"}]));
    caught(Category::FreeText, "Observation.code.coding.display", |r| {
        r["code"]["coding"][0]["display"] = json!("planted");
    });
    caught(Category::FreeText, "Observation.(unknown)", |r| r["plantedKey"] = json!("planted"));
}

#[test]
fn time_zone_offsets() {
    let mut r = clean();
    r["effectiveDateTime"] = json!("2019-03-04T10:00:00-05:00");
    let e = audit("tz", std::slice::from_ref(&r), None);
    assert_eq!(found(&e, Category::TimeZoneOffsets).get("Observation.effectiveDateTime"), Some(&1));
    r["effectiveDateTime"] = json!("2019-03-04T15:00:00Z");
    let e = audit("utc", &[r], None);
    assert!(found(&e, Category::TimeZoneOffsets).is_empty(), "UTC is no finding");
}

#[test]
fn original_values() {
    // A value of no other category, found only because the original held it.
    let original = json!({"resourceType": "Observation", "id": "o1", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]}, "valueString": "Qx-7 blue"});
    let mut r = clean();
    r.as_object_mut().unwrap().remove("valueQuantity");
    r["valueString"] = json!("Qx-7 blue");
    let e = audit("original", std::slice::from_ref(&r), Some(std::slice::from_ref(&original)));
    assert_eq!(found(&e, Category::OriginalValues).get("Observation.valueString"), Some(&1));
    r["valueString"] = json!("Qx-8 blue");
    let e = audit("original-changed", &[r], Some(&[original]));
    assert!(found(&e, Category::OriginalValues).is_empty());
}

#[test]
fn each_standard_forbids_what_it_must() {
    use Category::*;
    for standard in Standard::ALL {
        // Direct identifiers fail every standard.
        for c in [Names, StreetAddresses, Phone, Fax, Email, Ssn, MedicalRecordNumbers, Urls, IpAddresses, FreeText] {
            assert!(standard.forbids(c), "{standard:?} {c:?}");
        }
    }
    assert!(!Standard::LimitedDataSet.forbids(Dates) && !Standard::LimitedDataSet.forbids(SmallGeography));
    assert!(!Standard::Expert.forbids(Dates) && Standard::Expert.forbids(TimeZoneOffsets));
    assert!(Category::ALL.iter().all(|&c| Standard::SafeHarbor.forbids(c)));
}

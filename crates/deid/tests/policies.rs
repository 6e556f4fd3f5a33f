//! What the built-in `limited-data-set` and `expert-shift` policies keep and
//! remove, pinned on one patient's record.

use serde_json::{Value as Json, json};
use veil_deid::{Engine, Policy};

fn patient() -> Json {
    json!({"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1961-07-04",
        "name": [{"family": "Zyxwplanted", "given": ["Qwertplanted"]}],
        "telecom": [{"system": "phone", "value": "555-867-5309"}],
        "identifier": [{"system": "http://example.org/mrn", "value": "MRN-1"}],
        "address": [{"line": ["742 Evergreen Terrace"], "city": "Springfield", "district": "Hampden",
                     "state": "MA", "postalCode": "01105", "country": "US"}]})
}

fn encounter() -> Json {
    json!({"resourceType": "Encounter", "id": "e1", "status": "finished", "subject": {"reference": "Patient/p1"},
        "period": {"start": "2019-03-01T21:30:00-05:00", "end": "2019-03-03T09:00:00-05:00"},
        "reasonCode": [{"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}], "text": "Diabetes, seen by Dr Planted"}]})
}

fn days(date: &str) -> i64 {
    let num = |r: std::ops::Range<usize>| date[r].parse().unwrap();
    veil_util::calendar::days_from_civil(num(0..4) as i32, num(5..7), num(8..10))
}

#[test]
fn limited_data_set_keeps_dates_city_and_zip_and_removes_direct_identifiers() {
    let engine = Engine::new(Policy::built_in("limited-data-set").unwrap());
    let p = engine.anonymize(patient()).unwrap();
    assert_eq!(p["birthDate"], "1961-07-04", "dates are kept");
    assert_eq!(
        p["address"][0],
        json!({"city": "Springfield", "district": "Hampden", "state": "MA", "postalCode": "01105", "country": "US"})
    );
    assert!(p.get("name").is_none() && p.get("telecom").is_none(), "names and telecom go");
    assert_ne!(p["identifier"][0]["value"], "MRN-1", "identifiers become pseudonyms");
    assert_eq!(p["identifier"][0]["system"], "http://example.org/mrn");
    let e = engine.anonymize(encounter()).unwrap();
    assert_eq!(e["period"], encounter()["period"], "dates are kept, offsets and all");
    assert!(e["reasonCode"][0].get("text").is_none(), "free text goes");
    assert_eq!(e["reasonCode"][0]["coding"][0]["code"], "44054006");
}

#[test]
fn expert_shift_moves_each_patients_dates_together_in_utc() {
    let engine = Engine::new(Policy::built_in("expert-shift").unwrap());
    let p = engine.anonymize(patient()).unwrap();
    let birth = p["birthDate"].as_str().unwrap();
    assert!(birth.len() == 10 && birth != "1961-07-04", "shifted to the day: {birth}");
    assert_eq!(p["address"][0], json!({"state": "MA", "postalCode": "011", "country": "US"}));
    assert!(p.get("name").is_none() && p.get("telecom").is_none());
    let e = engine.anonymize(encounter()).unwrap();
    let (start, end) = (e["period"]["start"].as_str().unwrap(), e["period"]["end"].as_str().unwrap());
    for t in [start, end] {
        assert!(t.ends_with("T00:00:00Z"), "only UTC is left: {t}");
    }
    // 21:30 at -05:00 is 02:30 UTC the next day: the UTC days are 2 and 3 March.
    assert_eq!(days(end) - days(start), 1, "the interval between UTC days is kept");
    let shift = days(birth) - days("1961-07-04");
    assert_eq!(days(start) - days("2019-03-02"), shift, "one shift for every resource of the patient");
    assert!(e["reasonCode"][0].get("text").is_none());
}

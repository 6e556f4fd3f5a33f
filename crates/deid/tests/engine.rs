//! The engine on small resources: the worked vectors of ms-anonymizer.md
//! §5 that need a whole document, and Veil's extensions.

use serde_json::{Value as Json, json};
use veil_deid::{Engine, Policy};

fn engine(rules: &str, parameters: &str) -> Engine {
    let cfg = format!(r#"{{"fhirVersion": "R4", "fhirPathRules": [{rules}], "parameters": {{{parameters}}}}}"#);
    Engine::new(Policy::parse(&cfg).unwrap()).with_today(2026, 11, 22)
}

fn run(e: &Engine, doc: Json) -> Json {
    e.anonymize(doc).unwrap()
}

#[test]
fn partial_redaction_of_zip_codes_ages_and_dates() {
    let e = engine(
        r#"{"path": "nodesByType('Address')", "method": "redact"}, {"path": "nodesByType('Age')", "method": "redact"}, {"path": "Patient.birthDate", "method": "redact"}"#,
        r#""enablePartialZipCodesForRedact": true, "enablePartialAgesForRedact": true, "enablePartialDatesForRedact": true, "restrictedZipCodeTabulationAreas": ["203", "556"]"#,
    );
    let zips = ["98052", "10104", "20301", "55602", "98028-1830", "20301-1830"];
    let addresses: Vec<Json> = zips.iter().map(|z| json!({"city": "X", "postalCode": z})).collect();
    let out = run(&e, json!({"resourceType": "Patient", "address": addresses, "birthDate": "2015-02-07"}));
    let got: Vec<&str> = out["address"].as_array().unwrap().iter().map(|a| a["postalCode"].as_str().unwrap()).collect();
    assert_eq!(got, ["98000", "10100", "00000", "00000", "98000-0000", "00000-0000"]);
    assert!(out["address"][0].get("city").is_none());
    assert_eq!(out["birthDate"], "2015");
    let codes: Vec<&str> =
        out["meta"]["security"].as_array().unwrap().iter().map(|c| c["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["REDACTED", "ABSTRED"]);
    // Over 89 is removed even with partial dates.
    let out = run(&e, json!({"resourceType": "Patient", "birthDate": "1925-02-07"}));
    assert!(out.get("birthDate").is_none());
    // Ages: kept up to 89, removed above; unit and code always go.
    for (age, kept) in [(91, false), (89, true), (57, true)] {
        let doc = json!({"resourceType": "FamilyMemberHistory", "status": "completed", "patient": {"reference": "Patient/1"},
            "relationship": {"text": "x"}, "condition": [{"code": {"text": "c"}, "onsetAge": {"value": age, "unit": "yr", "system": "http://unitsofmeasure.org", "code": "a"}}]});
        let out = run(&e, doc);
        let onset = &out["condition"][0]["onsetAge"];
        assert_eq!(onset.get("value").is_some(), kept, "{age}: {out}");
        assert!(onset.get("unit").is_none());
    }
}

#[test]
fn date_shift_per_resource_id_and_fixed_offset() {
    let e = engine(
        r#"{"path": "nodesByType('date')", "method": "dateShift"}, {"path": "nodesByType('dateTime')", "method": "dateShift"}"#,
        r#""dateShiftKey": "123""#,
    );
    // Resource scope: the prefix is the resource's id, "example" + "123" gives +41 days.
    let out = run(
        &e,
        json!({"resourceType": "Patient", "id": "example", "birthDate": "2015-02-07", "deceasedDateTime": "2015-02-07T13:28:17-05:00"}),
    );
    assert_eq!(out["birthDate"], "2015-03-20");
    assert_eq!(out["deceasedDateTime"], "2015-03-20T00:00:00-05:00");
    assert_eq!(out["meta"]["security"][0]["code"], "PERTURBED");
    // No day: redacted (removed, as partial dates are off).
    let out = run(&e, json!({"resourceType": "Patient", "id": "example", "birthDate": "2015-02"}));
    assert!(out.get("birthDate").is_none());
    let fixed =
        engine(r#"{"path": "nodesByType('date')", "method": "dateShift"}"#, r#""dateShiftFixedOffsetInDays": 7"#);
    assert_eq!(
        run(&fixed, json!({"resourceType": "Patient", "id": "x", "birthDate": "2015-12-30"}))["birthDate"],
        "2016-01-06"
    );
}

#[test]
fn patient_scope_keeps_intervals_within_a_record() {
    let e = engine(
        r#"{"path": "Resource.id", "method": "cryptoHash"}, {"path": "nodesByType('Reference').reference", "method": "cryptoHash"}, {"path": "nodesByType('date')", "method": "dateShift"}, {"path": "nodesByType('dateTime')", "method": "dateShift"}"#,
        r#""dateShiftKey": "k", "cryptoHashKey": "h", "dateShiftScope": "patient""#,
    );
    let patient = run(&e, json!({"resourceType": "Patient", "id": "p1", "birthDate": "2000-01-10"}));
    let obs = run(
        &e,
        json!({"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"},
        "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2000-01-20T10:00:00Z"}),
    );
    let enc = run(
        &e,
        json!({"resourceType": "Encounter", "id": "e1", "status": "finished", "class": {"code": "AMB"},
        "subject": {"reference": "Patient/p1"}, "period": {"start": "2000-01-15T08:00:00Z"}}),
    );
    let days = |s: &str| -> i64 {
        let (y, m, d) = (s[..4].parse().unwrap(), s[5..7].parse().unwrap(), s[8..10].parse().unwrap());
        veil_util::calendar::days_from_civil(y, m, d)
    };
    let birth = days(patient["birthDate"].as_str().unwrap());
    assert_eq!(days(obs["effectiveDateTime"].as_str().unwrap()) - birth, 10, "interval kept");
    assert_eq!(days(enc["period"]["start"].as_str().unwrap()) - birth, 5, "interval kept");
    assert_ne!(patient["birthDate"], "2000-01-10");
    // Another patient gets its own offset.
    let other = run(&e, json!({"resourceType": "Patient", "id": "p2", "birthDate": "2000-01-10"}));
    let p3 = run(&e, json!({"resourceType": "Patient", "id": "p3", "birthDate": "2000-01-10"}));
    assert!(other["birthDate"] != patient["birthDate"] || p3["birthDate"] != patient["birthDate"]);
}

#[test]
fn generalize_vectors() {
    let cases = r#"{"$this>=0 and $this<20":"20","$this>=20 and $this<40":"40","$this>=40 and $this<60":"60","$this>=60 and $this<80":"80"}"#;
    for (other, input, want) in
        [("redact", 5, Some(20)), ("redact", 43, Some(60)), ("redact", 110, None), ("keep", 110, Some(110))]
    {
        let rule = format!(
            r#"{{"path": "RiskAssessment.prediction.probability", "method": "generalize", "cases": {cases}, "otherValues": "{other}"}}"#
        );
        let e = engine(&rule, "");
        let doc = json!({"resourceType": "RiskAssessment", "status": "final", "subject": {"reference": "Patient/1"}, "prediction": [{"probabilityDecimal": input}]});
        let out = run(&e, doc);
        let got = out["prediction"][0].get("probabilityDecimal").and_then(Json::as_i64);
        assert_eq!(got, want, "{other} {input}");
        assert_eq!(out["meta"]["security"][0]["code"], "GENERALIZED");
    }
    // Dates: partial-precision comparisons are empty, which counts as a match.
    let rule = r#"{"path": "Patient.birthDate", "method": "generalize", "cases": {"$this >= @1990-01-01 and $this < @2000-01-01":"@1990","$this = @2010":"@2010-01-01","$this ~ @2020":"@2020-01-01"}}"#;
    let e = engine(rule, "");
    for (input, want) in [
        ("1990-01-01", Some("1990")),
        ("2000-01-01", None),
        ("1990", Some("1990")),
        ("2000", Some("1990")),
        ("2010-01-02", Some("2010-01-01")),
        ("2020", Some("2020-01-01")),
        ("2020-01-01", None),
    ] {
        let out = run(&e, json!({"resourceType": "Patient", "birthDate": input}));
        assert_eq!(out.get("birthDate").and_then(Json::as_str), want, "{input}");
    }
    // Masking strings.
    let rule = r#"{"path": "Patient.identifier.value", "method": "generalize", "cases": {"$this.startsWith('123') or $this.endsWith('234')":"$this.substring(0,3)+'****'"}}"#;
    let e = engine(rule, "");
    for (input, want) in [("1230005", Some("123****")), ("2345234", Some("234****")), ("1111111", None)] {
        let out = run(&e, json!({"resourceType": "Patient", "identifier": [{"system": "s", "value": input}]}));
        assert_eq!(out["identifier"][0].get("value").and_then(Json::as_str), want, "{input}");
    }
}

#[test]
fn substitute_merges_by_position_and_keeps_earlier_rules() {
    let e = engine(
        r#"{"path": "Patient.name.given[0]", "method": "keep"}, {"path": "Patient.name", "method": "substitute", "replaceWith": {"use": "nickname", "family": "Harry", "given": ["Jim", "Cook"]}}"#,
        "",
    );
    let out = run(
        &e,
        json!({"resourceType": "Patient", "name": [{"use": "official", "family": "Green", "given": ["Chris", "Jason"]}]}),
    );
    assert_eq!(out["name"][0], json!({"use": "nickname", "family": "Harry", "given": ["Chris", "Cook"]}));
    assert_eq!(out["meta"]["security"][0]["code"], "SUBSTITUTED");
}

#[test]
fn encrypt_and_perturb() {
    let e = engine(
        r#"{"path": "Patient.name.family", "method": "encrypt"}, {"path": "Observation.value", "method": "perturb", "span": 6, "roundTo": 2}"#,
        r#""encryptKey": "704ab12c8e3e46d4bea600ef62a6bec7""#,
    );
    let out = run(&e, json!({"resourceType": "Patient", "name": [{"family": "Chalmers"}]}));
    let enc = out["name"][0]["family"].as_str().unwrap();
    assert_ne!(enc, "Chalmers");
    assert_eq!(out["meta"]["security"][0]["code"], "MASKED");
    let doc: Json = serde_json::from_str(r#"{"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueQuantity": {"value": 5.234, "unit": "kg"}}"#).unwrap();
    for _ in 0..50 {
        let out = run(&e, doc.clone());
        let v: f64 = out["valueQuantity"]["value"].to_string().parse().unwrap();
        assert!((2.23..=8.24).contains(&v), "{v}");
        assert_eq!(out["valueQuantity"]["unit"], "kg", "descendants of a perturbed node are protected");
    }
}

#[test]
fn errors_carry_no_values() {
    let e = engine(r#"{"path": "Patient.name.family", "method": "generalize", "cases": {"$this >= 0": "1"}}"#, "");
    let err = e.anonymize(json!({"resourceType": "Patient", "name": [{"family": "Zebulon"}]})).unwrap_err();
    assert!(!err.to_string().contains("Zebulon"), "{err}");
    assert!(err.to_string().contains("name[0].family"), "{err}");
    let err = e.anonymize(json!({"resourceType": "NotAResource", "x": "Zebulon"})).unwrap_err();
    assert!(!err.to_string().contains("Zebulon"), "{err}");
}

#[test]
fn zero_date_shifts_are_avoided_unless_exactness_is_asked_for() {
    // "d" hashed with key "k2", then folded with "k1", gives the anonymizer's offset 0.
    let rules =
        r#"{"path": "Resource.id", "method": "cryptoHash"}, {"path": "nodesByType('date')", "method": "dateShift"}"#;
    let doc = json!({"resourceType": "Patient", "id": "d", "birthDate": "1980-04-02"});
    let veil = engine(rules, r#""dateShiftKey": "k1", "cryptoHashKey": "k2""#);
    assert_eq!(run(&veil, doc.clone())["birthDate"], "1980-05-23", "shifted by 51 days");
    let cfg = format!(
        r#"{{"fhirPathRules": [{rules}], "parameters": {{"dateShiftKey": "k1", "cryptoHashKey": "k2"}}, "veil": {{"exactDateShift": true}}}}"#
    );
    let exact = Engine::new(Policy::parse(&cfg).unwrap());
    assert_eq!(run(&exact, doc)["birthDate"], "1980-04-02", "the anonymizer's own result");
}

#[test]
fn input_that_is_not_r4_is_refused() {
    let e = engine(r#"{"path": "nodesByType('HumanName')", "method": "redact"}"#, "");
    // An STU3-only element: the anonymizer refuses it, and untyped it would escape every rule.
    let err = e.anonymize(json!({"resourceType": "Account", "active": "Zebulon"})).unwrap_err();
    assert_eq!(err.to_string(), "not a FHIR resource: Account.active: not an element of FHIR R4");
    let err =
        e.anonymize(json!({"resourceType": "Patient", "name": [{"family": "F", "nickname": "Zebulon"}]})).unwrap_err();
    assert!(err.to_string().contains("name[0].nickname"), "{err}");
    let err = e.anonymize(json!({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "DeviceComponent"}}]})).unwrap_err();
    assert!(err.to_string().contains("entry[0].resource"), "{err}");
    assert!(e.anonymize(json!({"resourceType": "DeviceComponent"})).is_err());
}

//! Node handles at work: results lead back into the resource, where they are
//! read, replaced and deleted, and everything else stays as it was.

use serde_json::{Value as Json, json};
use veil_fhirpath::{Context, ErrorKind, Expression, Location, remove_all};

fn locations(expr: &str, resource: &Json) -> Vec<Location> {
    Expression::compile(expr)
        .unwrap()
        .evaluate(resource)
        .unwrap()
        .iter()
        .map(|i| i.location().expect("a node"))
        .collect()
}

fn patient() -> Json {
    json!({
        "resourceType": "Patient",
        "id": "p1",
        "name": [
            {"use": "official", "family": "Chalmers", "given": ["Peter", "James"]},
            {"use": "usual", "given": ["Jim"]},
            {"use": "maiden", "family": "Windsor", "given": ["Peter", "James"]}
        ],
        "birthDate": "1974-12-25",
        "_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueDateTime": "1974-12-25T14:35:45-05:00"}]},
        "telecom": [{"system": "phone", "value": "555-0100"}]
    })
}

#[test]
fn delete_in_nested_arrays_keeps_the_rest() {
    let mut p = patient();
    let before = p.clone();
    let locs = locations("Patient.name.given.where($this = 'Peter')", &p);
    assert_eq!(locs.iter().map(ToString::to_string).collect::<Vec<_>>(), ["name[0].given[0]", "name[2].given[0]"]);
    assert_eq!(remove_all(&mut p, &locs), 2);
    assert_eq!(p["name"][0]["given"], json!(["James"]));
    assert_eq!(p["name"][1], before["name"][1]);
    assert_eq!(p["name"][2]["given"], json!(["James"]));
    assert_eq!(p["telecom"], before["telecom"]);
    // Still valid JSON with the same property order.
    let text = serde_json::to_string(&p).unwrap();
    let keys: Vec<&String> = p.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["resourceType", "id", "name", "birthDate", "_birthDate", "telecom"]);
    assert!(serde_json::from_str::<Json>(&text).is_ok());
}

#[test]
fn deleting_every_item_removes_the_array() {
    let mut p = patient();
    let locs = locations("Patient.name[1].given", &p);
    remove_all(&mut p, &locs);
    assert!(p["name"][1].get("given").is_none(), "no empty arrays in FHIR JSON");
    assert_eq!(p["name"][1]["use"], "usual");
    // Several items of one array, deleted in any order, stay aligned.
    let mut p = patient();
    let mut locs = locations("Patient.name", &p);
    locs.swap(0, 2);
    assert_eq!(remove_all(&mut p, &locs[..2]), 2);
    assert_eq!(p["name"].as_array().unwrap().len(), 1);
    assert_eq!(p["name"][0]["use"], "official");
}

#[test]
fn replace_a_primitive_keeps_its_extension() {
    let mut p = patient();
    let loc = &locations("Patient.birthDate", &p)[0];
    assert_eq!(loc.to_string(), "birthDate");
    let old = loc.replace(&mut p, json!("1974")).unwrap();
    assert_eq!(old, "1974-12-25");
    assert_eq!(p["birthDate"], "1974");
    assert!(p["_birthDate"]["extension"].is_array());
    // The extension itself is a node, reached through the companion object.
    let ext = locations("Patient.birthDate.extension", &p);
    assert_eq!(ext[0].to_string(), "birthDate.extension[0]");
    remove_all(&mut p, &ext);
    // Deleting the primitive deletes its companion too.
    let mut p = patient();
    let found = locations("Patient.birthDate", &p);
    remove_all(&mut p, &found);
    assert!(p.get("birthDate").is_none() && p.get("_birthDate").is_none());
}

#[test]
fn primitive_arrays_with_companions_stay_aligned() {
    let mut r = json!({
        "resourceType": "Patient",
        "name": [{"given": ["A", "B", "C"], "_given": [null, {"extension": [{"url": "x", "valueString": "mark"}]}, null]}]
    });
    let given = Expression::compile("Patient.name.given").unwrap();
    let found = given.evaluate(&r).unwrap();
    assert_eq!(found.len(), 3);
    // The extension on B is visible through B.
    let marked = Expression::compile("Patient.name.given.where(extension('x').exists())").unwrap();
    let b = marked.evaluate(&r).unwrap()[0].location().unwrap();
    assert_eq!(b.to_string(), "name[0].given[1]");
    remove_all(&mut r, &[b]);
    assert_eq!(r["name"][0]["given"], json!(["A", "C"]));
    assert!(r["name"][0].get("_given").is_none(), "only nulls were left in _given");
}

#[test]
fn choice_elements_by_base_name() {
    let mut obs: Json = serde_json::from_str(
        r#"{"resourceType": "Observation", "status": "final",
            "valueQuantity": {"value": 185.50, "unit": "lbs", "system": "http://unitsofmeasure.org", "code": "[lb_av]"},
            "effectiveDateTime": "2013-04-02T09:30:10+01:00"}"#,
    )
    .unwrap();
    let loc = &locations("Observation.value.ofType(Quantity).value", &obs)[0];
    assert_eq!(loc.to_string(), "valueQuantity.value");
    assert_eq!(loc.get(&obs).unwrap().to_string(), "185.50", "decimals keep their written scale");
    loc.replace(&mut obs, json!(190)).unwrap();
    assert_eq!(obs["valueQuantity"]["value"], 190);
    assert_eq!(obs["valueQuantity"]["unit"], "lbs");
    // Deleting the choice element removes whichever variant is present.
    let found = locations("Observation.value", &obs);
    remove_all(&mut obs, &found);
    assert!(obs.get("valueQuantity").is_none());
    assert_eq!(obs["effectiveDateTime"], "2013-04-02T09:30:10+01:00");
    // The variant name is not FHIRPath; saying so beats matching nothing.
    let err = Expression::compile("Observation.valueQuantity").unwrap().evaluate(&obs).unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Semantic);
}

#[test]
fn contained_resources_are_nodes_with_their_own_type() {
    let mut p = json!({
        "resourceType": "Patient",
        "name": [{"family": "Outer"}],
        "contained": [
            {"resourceType": "Practitioner", "id": "pr", "name": [{"family": "Inner"}]},
            {"resourceType": "Organization", "id": "org", "name": "Clinic"}
        ],
        "generalPractitioner": [{"reference": "#pr"}]
    });
    // nodesByType does not enter nested resources (the anonymizer's rule).
    let outer = locations("nodesByType('HumanName')", &p);
    assert_eq!(outer.iter().map(ToString::to_string).collect::<Vec<_>>(), ["name[0]"]);
    // ofType picks a contained resource by type; its nodes are editable.
    let inner = locations("Patient.contained.ofType(Practitioner).name.family", &p);
    assert_eq!(inner[0].to_string(), "contained[0].name[0].family");
    inner[0].replace(&mut p, json!("REDACTED")).unwrap();
    assert_eq!(p["contained"][0]["name"][0]["family"], "REDACTED");
    assert_eq!(p["name"][0]["family"], "Outer");
    // resolve() follows a local reference to the contained resource.
    let resolved = locations("Patient.generalPractitioner.resolve().id", &p);
    assert_eq!(resolved[0].to_string(), "contained[0].id");
    // Evaluating a rule relative to a contained resource keeps outer locations.
    let contained = Expression::compile("Patient.contained.ofType(Organization)").unwrap();
    let org_node = contained.evaluate(&p).unwrap();
    let name = Expression::compile("Organization.name").unwrap();
    let found = name.evaluate_with(&Context::new(&p).with_focus(org_node)).unwrap();
    assert_eq!(found[0].location().unwrap().to_string(), "contained[1].name");
}

#[test]
fn bundle_entries() {
    let mut bundle = json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient", "id": "1", "birthDate": "1980-05-05"}},
            {"fullUrl": "urn:uuid:2", "resource": {"resourceType": "Observation", "id": "2", "subject": {"reference": "urn:uuid:1"}, "status": "final"}}
        ]
    });
    let dates = locations("Bundle.entry.resource.ofType(Patient).birthDate", &bundle);
    assert_eq!(dates[0].to_string(), "entry[0].resource.birthDate");
    dates[0].replace(&mut bundle, json!("1980")).unwrap();
    assert_eq!(bundle["entry"][0]["resource"]["birthDate"], "1980");
    // References resolve to the entry with that fullUrl.
    let subject = locations("Bundle.entry.resource.ofType(Observation).subject.resolve().id", &bundle);
    assert_eq!(subject[0].to_string(), "entry[0].resource.id");
    // Deleting a whole entry's resource leaves the entry, as asked.
    let found = locations("Bundle.entry[1].resource", &bundle);
    remove_all(&mut bundle, &found);
    assert_eq!(bundle["entry"][1], json!({"fullUrl": "urn:uuid:2"}));
}

#[test]
fn computed_values_have_no_location() {
    let p = patient();
    let r = Expression::compile("Patient.name.family.select(substring(0, 1))").unwrap().evaluate(&p).unwrap();
    assert_eq!(r.len(), 2);
    let err = r[0].location().unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Location);
    assert!(!err.to_string().contains('C'), "no value in the error: {err}");
}

#[test]
fn stale_locations_are_errors_not_panics() {
    let mut p = patient();
    let locs = locations("Patient.name.given", &p);
    p["name"] = json!([]);
    for l in &locs {
        assert_eq!(l.remove(&mut p).unwrap_err().kind(), &ErrorKind::Location);
        assert_eq!(l.replace(&mut p, json!("x")).unwrap_err().kind(), &ErrorKind::Location);
    }
    assert_eq!(Location::default().remove(&mut p).unwrap_err().kind(), &ErrorKind::Location);
}

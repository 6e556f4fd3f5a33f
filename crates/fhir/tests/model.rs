//! Cross-checks the generated model (from fhirpath.js's flattened tables)
//! against a sample of the official StructureDefinition snapshots, a second
//! and independent rendering of the same R4 definitions.

use veil_fhir::r4;

/// FHIR types the StructureDefinitions spell as FHIRPath System types.
fn fhir_type_for(path: &str, code: &str) -> String {
    match code.strip_prefix("http://hl7.org/fhirpath/System.") {
        None => code.to_string(),
        Some(_) if path == "Extension.url" => "uri".into(),
        Some(_) if path.ends_with(".id") => {
            let owner = path.rsplit_once('.').unwrap().0;
            if r4().is_resource_type(owner) { "id".into() } else { "string".into() }
        }
        Some(system) => format!("System.{system}"),
    }
}

#[test]
fn generated_elements_agree_with_structure_definitions() {
    let sample = include_str!("r4-structure-sample.tsv");
    let mut checked = 0;
    let mut failures = Vec::new();
    for line in sample.lines().filter(|l| !l.starts_with('#')) {
        let cols: Vec<&str> = line.split('\t').collect();
        let [path, types, max, content_ref] = cols[..] else { panic!("bad fixture row {line:?}") };
        let Some(el) = r4().element(path) else {
            failures.push(format!("{path}: missing"));
            continue;
        };
        checked += 1;
        if el.repeats != (max == "*") {
            failures.push(format!("{path}: repeats={} but max={max}", el.repeats));
        }
        if content_ref.is_empty() {
            let want: Vec<String> = types.split(',').map(|t| fhir_type_for(path, t)).collect();
            if el.types != want {
                failures.push(format!("{path}: types {:?}, definition says {want:?}", el.types));
            }
        } else if el.content_ref.is_none() {
            failures.push(format!("{path}: content reference to {content_ref} not recorded"));
        }
    }
    assert!(checked >= 400, "only {checked} rows checked");
    assert!(failures.is_empty(), "{} of {checked} disagree:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn choice_types_and_inheritance() {
    let m = r4();
    let onset = m.child("Condition", "onset").unwrap();
    assert_eq!(onset.types, ["dateTime", "Age", "Period", "Range", "string"]);
    assert_eq!(onset.json_key("dateTime"), "onsetDateTime");
    assert_eq!(onset.choice_type_of_key("onsetAge"), Some("Age"));
    assert_eq!(onset.choice_type_of_key("onsetFoo"), None);
    assert_eq!(onset.choice_type_of_key("onset"), None);
    // Quantity profiles reach Quantity's elements through their parent.
    for profile in ["Age", "Duration", "Distance", "Count", "SimpleQuantity", "MoneyQuantity"] {
        assert!(m.is_subtype(profile, "Quantity"), "{profile}");
        assert_eq!(m.child(profile, "value").unwrap().types, ["decimal"], "{profile}");
    }
    assert_eq!(m.parent_type("code"), Some("string"));
    assert_eq!(m.parent_type("positiveInt"), Some("integer"));
    assert!(m.is_subtype("Patient", "DomainResource"));
    assert!(m.is_subtype("Bundle", "Resource"));
    assert!(!m.is_subtype("Bundle", "DomainResource"));
    assert!(m.is_primitive("dateTime") && !m.is_primitive("HumanName"));
    // Content references keep the shape of their target.
    let item = m.child("Questionnaire.item", "item").unwrap();
    assert_eq!(item.content_ref, Some("Questionnaire.item"));
    assert_eq!(item.children_owner("BackboneElement"), "Questionnaire.item");
    assert!(item.repeats);
    // Backbone elements own their children by path.
    let contact = m.child("Patient", "contact").unwrap();
    assert_eq!(contact.children_owner(contact.types[0]), "Patient.contact");
    assert_eq!(m.child("Patient.contact", "name").unwrap().types, ["HumanName"]);
    // Inherited resource elements.
    assert_eq!(m.child("Patient", "id").unwrap().types, ["id"]);
    assert_eq!(m.child("HumanName", "id").unwrap().types, ["string"]);
    assert_eq!(m.child("Patient", "meta").unwrap().types, ["Meta"]);
}

#[test]
fn search_parameters_and_compartment() {
    let m = r4();
    let birthdate = m.search_param("Patient", "birthdate").unwrap();
    assert_eq!(birthdate.expression, "Patient.birthDate | Person.birthDate | RelatedPerson.birthDate");
    assert_eq!(m.search_param("Observation", "_lastUpdated").unwrap().base, "Resource");
    assert!(m.search_param("Observation", "subject").unwrap().targets.contains(&"Patient"));
    assert!(m.search_param("Patient", "no-such-param").is_none());
    assert_eq!(m.patient_compartment("Observation"), Some(&["subject", "performer"][..]));
    assert_eq!(m.patient_compartment("Patient"), Some(&["link"][..]));
    assert_eq!(m.patient_compartment("Organization"), Some(&[][..]));
    assert_eq!(m.patient_compartment("NotAType"), None);
    let n = m.search_params("Observation").count();
    assert!(n > 30, "{n} Observation search parameters");
}

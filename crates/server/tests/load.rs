//! Loading the bundled Synthea sample as it is: every resource arrives, with
//! references rewritten and compartments and groups filled in.

use std::io::Read;
use std::path::Path;

use veil_store::ScanFilter;

#[test]
fn the_synthea_sample_loads_as_it_is() {
    let store = veil_store::open("sqlite::memory:").unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/synthea-r4-100.tar.gz");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()));
    let mut total = veil_server::LoadReport::default();
    let mut entries_in = 0;
    let mut distinct: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut text = String::new();
        entry.read_to_string(&mut text).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        entries_in += doc["entry"].as_array().map_or(1, |e| e.len());
        for e in doc["entry"].as_array().into_iter().flatten() {
            let r = &e["resource"];
            let id =
                r["id"].as_str().or_else(|| e["fullUrl"].as_str().and_then(|u| u.strip_prefix("urn:uuid:"))).unwrap();
            distinct.entry(r["resourceType"].as_str().unwrap().to_string()).or_default().insert(id.to_string());
        }
        total.add(&veil_server::load_document(&*store, doc, &name).unwrap());
    }
    let seen: u64 = [&total.created, &total.updated, &total.unchanged].iter().flat_map(|c| c.values()).sum();
    assert_eq!(seen as usize, entries_in, "every entry counted, and the Group file");
    // Organizations and practitioners recur across patients' bundles: stored
    // once each, and counted as created once, the same again unchanged.
    let expected: std::collections::BTreeMap<String, u64> =
        distinct.iter().map(|(t, ids)| (t.clone(), ids.len() as u64)).collect();
    let mut counts = store.counts().unwrap();
    assert_eq!(counts.remove("Group"), Some(1));
    assert_eq!(counts, expected);
    let mut created = total.created.clone();
    assert_eq!(created.remove("Group"), Some(1));
    assert_eq!(created, expected, "created: what the store holds");
    assert!(total.unchanged.values().sum::<u64>() > 0, "repeated resources are counted apart");
    assert_eq!(total.created["Patient"], 100);
    // References between entries now point at Type/id. (The Group, loaded on
    // its own, still names its members by urn:uuid: there is no Bundle to
    // resolve them in; its membership is read from them all the same.)
    let mut urn_left = 0;
    store
        .scan(&ScanFilter::default(), &mut |s| {
            if s.resource_type != "Group" {
                urn_left += s.body.unwrap_or_default().matches("\"reference\":\"urn:uuid:").count();
            }
            Ok(true)
        })
        .unwrap();
    assert_eq!(urn_left, 0);
    // Each patient's compartment holds its own records.
    let mut patient_ids = Vec::new();
    store
        .scan(&ScanFilter { types: Some(vec!["Patient".into()]), ..Default::default() }, &mut |s| {
            patient_ids.push(s.id);
            Ok(true)
        })
        .unwrap();
    let mut in_compartments = 0;
    store
        .scan(
            &ScanFilter {
                patients: Some(patient_ids.clone()),
                types: Some(vec!["Observation".into()]),
                ..Default::default()
            },
            &mut |_| {
                in_compartments += 1;
                Ok(true)
            },
        )
        .unwrap();
    assert_eq!(in_compartments, total.created["Observation"], "every Observation belongs to a patient");
    // The sample's Group lists all 100 patients.
    let mut groups = Vec::new();
    store
        .scan(&ScanFilter { types: Some(vec!["Group".into()]), ..Default::default() }, &mut |s| {
            groups.push(s.id);
            Ok(true)
        })
        .unwrap();
    assert_eq!(groups.len(), 1);
    let members = store.group_members(&groups[0]).unwrap().unwrap();
    assert_eq!(members.len(), 100);
    patient_ids.sort();
    let mut sorted = members.clone();
    sorted.sort();
    assert_eq!(sorted, patient_ids);
}

#[test]
fn ndjson_loads_in_batches_and_names_bad_lines() {
    let store = veil_store::open("sqlite::memory:").unwrap();
    let text = "{\"resourceType\":\"Patient\",\"id\":\"a\"}\n\n{\"resourceType\":\"Patient\",\"id\":\"b\"}\n{\"resourceType\":\"Observation\",\"id\":\"o\",\"status\":\"final\",\"code\":{\"text\":\"x\"},\"subject\":{\"reference\":\"Patient/a\"}}\n";
    let report = veil_server::load_ndjson(&*store, text.as_bytes(), "x.ndjson", 2).unwrap();
    assert_eq!(report.created["Patient"], 2);
    // Again: nothing changes, not even the versions; then one resource differs.
    let again = veil_server::load_ndjson(&*store, text.as_bytes(), "x.ndjson", 2).unwrap();
    assert_eq!((again.unchanged["Patient"], again.unchanged["Observation"]), (2, 1));
    assert!(again.created.is_empty() && again.updated.is_empty(), "{again:?}");
    assert_eq!(store.get("Patient", "a").unwrap().unwrap().version, 1);
    let changed = text.replace("\"id\":\"b\"", "\"id\":\"b\",\"gender\":\"other\"");
    let third = veil_server::load_ndjson(&*store, changed.as_bytes(), "x.ndjson", 2).unwrap();
    assert_eq!((third.updated["Patient"], third.unchanged["Patient"]), (1, 1));
    assert_eq!(store.get("Patient", "b").unwrap().unwrap().version, 2);
    let err = veil_server::load_ndjson(
        &*store,
        "{\"resourceType\":\"Patient\",\"id\":\"c\"}\n{oops Zebulon\n".as_bytes(),
        "y.ndjson",
        10,
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "y.ndjson:2: not valid JSON (column 2)");
    let err = veil_server::load_ndjson(
        &*store,
        "{\"resourceType\":\"Nope\",\"name\":\"Zebulon\"}\n".as_bytes(),
        "z.ndjson",
        10,
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "z.ndjson:1: no known resourceType");
}

//! Bulk Data `$export` against a real server listening on loopback, on
//! SQLite and on PostgreSQL: kick-off, status, manifest, downloads, cancel,
//! errors, and de-identified export (bulk-export.md §5).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{PLANTED, Server, client, start};
use reqwest::blocking::Response;
use serde_json::{Value as Json, json};
use veil_server::http::bind;
use veil_store::{ScanFilter, Store};

fn kickoff(s: &Server, path: &str) -> Response {
    client()
        .get(format!("{}{path}", s.base))
        .header("Accept", "application/fhir+json")
        .header("Prefer", "respond-async")
        .send()
        .unwrap()
}

fn status_url(r: &Response) -> String {
    assert_eq!(r.status(), 202, "kick-off accepted");
    r.headers()["content-location"].to_str().unwrap().to_string()
}

/// Polls as a well-behaved client, honouring Retry-After, until the export ends.
fn wait(url: &str) -> Response {
    for _ in 0..300 {
        let r = client().get(url).send().unwrap();
        if r.status() != 202 {
            return r;
        }
        assert!(r.headers().contains_key("x-progress"));
        let secs: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        std::thread::sleep(Duration::from_millis(secs * 1000 + 50));
    }
    panic!("the export did not finish");
}

/// Downloads every output file: counts per type, checking each line.
fn download(manifest: &Json) -> (BTreeMap<String, u64>, String) {
    let mut counts = BTreeMap::new();
    let mut all = String::new();
    for item in manifest["output"].as_array().unwrap() {
        let r = client().get(item["url"].as_str().unwrap()).send().unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/fhir+ndjson");
        let text = r.text().unwrap();
        let ty = item["type"].as_str().unwrap();
        let lines: Vec<Json> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len() as u64, item["count"].as_u64().unwrap());
        assert!(lines.iter().all(|l| l["resourceType"] == ty));
        *counts.entry(ty.to_string()).or_default() += lines.len() as u64;
        all.push_str(&text);
    }
    (counts, all)
}

fn store_counts(store: &dyn Store, filter: &ScanFilter) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    store
        .scan(filter, &mut |s| {
            *counts.entry(s.resource_type).or_default() += 1;
            Ok(true)
        })
        .unwrap();
    counts
}

fn checklist(s: &Server) {
    // metadata lists what works.
    let cap: Json = client().get(format!("{}/metadata", s.base)).send().unwrap().json().unwrap();
    assert_eq!(cap["instantiates"][0], "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data");
    assert!(cap["rest"][0].get("security").is_none(), "no token endpoint to name without authorization");

    // System export: everything, split into files of at most 500 resources.
    let url = status_url(&kickoff(s, "/$export"));
    assert!(url.starts_with(&s.base), "absolute Content-Location");
    // Polling again at once is too fast.
    let first = client().get(&url).send().unwrap();
    if first.status() == 202 {
        let again = client().get(&url).send().unwrap();
        // 429, unless the export finished in between.
        if again.status() != 200 {
            assert_eq!(again.status(), 429);
            assert!(again.headers().contains_key("retry-after"));
        }
        std::thread::sleep(Duration::from_millis(1100));
    }
    let done = wait(&url);
    assert_eq!(done.status(), 200);
    assert_eq!(done.headers()["content-type"], "application/json");
    assert!(done.headers()["expires"].to_str().unwrap().ends_with(" GMT"));
    let manifest: Json = done.json().unwrap();
    assert!(manifest["transactionTime"].as_str().unwrap().ends_with('Z'));
    assert!(manifest["request"].as_str().unwrap().ends_with("/$export"));
    assert_eq!(manifest["requiresAccessToken"], false);
    assert_eq!(manifest["error"], json!([]));
    assert!(manifest["output"].as_array().unwrap().iter().all(|o| o["count"].as_u64().unwrap() <= 500));
    let (counts, _) = download(&manifest);
    assert_eq!(counts, s.store.counts().unwrap(), "every resource exactly once");

    // Patient and Group level: the patients' compartments.
    let mut patients = Vec::new();
    s.store
        .scan(&ScanFilter { types: Some(vec!["Patient".into()]), ..Default::default() }, &mut |r| {
            patients.push(r.id);
            Ok(true)
        })
        .unwrap();
    let expected = store_counts(&*s.store, &ScanFilter { patients: Some(patients.clone()), ..Default::default() });
    let manifest: Json = wait(&status_url(&kickoff(s, "/Patient/$export"))).json().unwrap();
    assert_eq!(download(&manifest).0, expected);
    let mut group = String::new();
    s.store
        .scan(&ScanFilter { types: Some(vec!["Group".into()]), ..Default::default() }, &mut |r| {
            group = r.id;
            Ok(true)
        })
        .unwrap();
    let members = s.store.group_members(&group).unwrap().unwrap();
    let in_group: Vec<String> = patients.iter().filter(|p| members.contains(p)).cloned().collect();
    let expected_group = store_counts(&*s.store, &ScanFilter { patients: Some(in_group), ..Default::default() });
    let manifest: Json =
        wait(&status_url(&kickoff(s, &format!("/Group/{group}/$export?_type=Patient,Encounter")))).json().unwrap();
    let got = download(&manifest).0;
    assert_eq!(got.get("Patient"), expected_group.get("Patient"));
    assert_eq!(got.get("Encounter"), expected_group.get("Encounter"));
    assert_eq!(got.len(), 2, "_type limits the output");
    assert!(got["Patient"] >= 2, "at least two patients in the group export");

    // _since after everything: an empty export, still a manifest.
    let future = "2999-01-01T00:00:00Z";
    let manifest: Json = wait(&status_url(&kickoff(s, &format!("/$export?_since={future}")))).json().unwrap();
    assert_eq!(manifest["output"], json!([]));

    // POST with a Parameters body: one patient.
    let one = &patients[0];
    let body = json!({"resourceType": "Parameters", "parameter": [{"name": "patient", "valueReference": {"reference": format!("Patient/{one}")}}, {"name": "_type", "valueString": "Patient,Condition"}]});
    let r = client()
        .post(format!("{}/Patient/$export", s.base))
        .header("Accept", "application/fhir+json")
        .body(body.to_string())
        .send()
        .unwrap();
    let manifest: Json = wait(&status_url(&r)).json().unwrap();
    let (got, text) = download(&manifest);
    assert_eq!(got.get("Patient"), Some(&1));
    assert!(text.contains(one.as_str()));

    // A patient the export cannot include is an error.
    let body = json!({"resourceType": "Parameters", "parameter": [{"name": "patient", "valueReference": {"reference": "Patient/not-there"}}]});
    let r = client().post(format!("{}/Patient/$export", s.base)).body(body.to_string()).send().unwrap();
    assert_eq!(r.status(), 400);
    // Repeated _type is the comma-joined list.
    let manifest: Json = wait(&status_url(&kickoff(s, "/$export?_type=Patient&_type=Device"))).json().unwrap();
    let types: Vec<&str> = manifest["output"].as_array().unwrap().iter().map(|o| o["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["Device", "Patient"]);

    // The three NDJSON spellings are accepted; anything else is a 400 with an OperationOutcome.
    for f in ["application/fhir+ndjson", "application/ndjson", "ndjson"] {
        let r = kickoff(s, &format!("/$export?_type=Device&_outputFormat={}", f.replace('+', "%2B")));
        let url = status_url(&r);
        assert_eq!(client().delete(&url).send().unwrap().status(), 202);
    }
    for (path, status) in [
        ("/$export?_outputFormat=text/csv", 400),
        ("/$export?_type=NotAType", 400),
        ("/$export?_since=yesterday", 400),
        ("/$export?_since=2024-01-01T00:00:00", 400),
        ("/$export?_since=2024-02-01T00:00:00Z&_until=2024-01-01T00:00:00Z", 400),
        ("/Patient/$export?patient=Patient/x", 400),
        ("/$export?_typeFilter=Observation%3Fnonsense%3Dfinal", 400),
        ("/$export?_elements=Patient.nonsense", 400),
        ("/$export?organizeOutputBy=Patient", 400),
        ("/$export?_anonymizationConfigEtag=x", 400),
        ("/$export?_container=../up", 400),
        ("/Group/nope/$export", 404),
        ("/$export?_type=Patient&_type=Nope", 400),
        // A misspelt parameter would otherwise export everything.
        ("/$export?_sinse=2024-01-01T00:00:00Z", 400),
    ] {
        let r = kickoff(s, path);
        assert_eq!(r.status(), status, "{path}");
        let body: Json = r.json().unwrap();
        assert_eq!(body["resourceType"], "OperationOutcome", "{path}");
    }
    // Under handling=lenient, what cannot be honoured is ignored and reported.
    let lenient = client()
        .get(format!(
            "{}/$export?_type=Device&_typeFilter=Observation%3Fnonsense%3Dfinal&organizeOutputBy=Patient&_sinse=x",
            s.base
        ))
        .header("Prefer", "respond-async, handling=lenient")
        .send()
        .unwrap();
    let manifest: Json = wait(&status_url(&lenient)).json().unwrap();
    let report = client().get(manifest["error"][0]["url"].as_str().unwrap()).send().unwrap().text().unwrap();
    assert_eq!(report.lines().count(), 3, "{report}");
    assert!(report.contains("nonsense") && report.contains("organizeOutputBy") && report.contains("_sinse"));

    // _elements: only what was asked, plus id and meta, tagged SUBSETTED.
    let (_, text) = download(
        &wait(&status_url(&kickoff(s, "/$export?_type=Patient,Device&_elements=Patient.gender,birthDate")))
            .json()
            .unwrap(),
    );
    for line in text.lines() {
        let r: Json = serde_json::from_str(line).unwrap();
        let keys: Vec<&String> = r.as_object().unwrap().keys().collect();
        assert!(
            keys.iter()
                .all(|k| ["resourceType", "id", "meta", "gender", "birthDate", "_birthDate"].contains(&k.as_str())),
            "{keys:?}"
        );
        assert!(r["meta"]["tag"].to_string().contains("SUBSETTED"));
    }
    // Mandatory elements stay (the IG): an Immunization keeps vaccineCode,
    // patient and occurrence[x] beside the status asked for, and, exported
    // de-identified, has them de-identified like the rest.
    let elements = "/$export?_type=Immunization&_elements=Immunization.status";
    let (_, plain) = download(&wait(&status_url(&kickoff(s, elements))).json().unwrap());
    let (_, safe) = download(
        &wait(&status_url(&kickoff(s, &format!("{elements}&_anonymizationConfig=safe-harbor.json")))).json().unwrap(),
    );
    assert!(!plain.is_empty());
    for (line, deidentified) in plain.lines().zip(safe.lines()) {
        let (r, d): (Json, Json) = (serde_json::from_str(line).unwrap(), serde_json::from_str(deidentified).unwrap());
        let mut keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["id", "meta", "occurrenceDateTime", "patient", "resourceType", "status", "vaccineCode"]);
        assert!(d.get("occurrenceDateTime").is_some() && d["patient"] != r["patient"], "{deidentified}");
        assert_ne!(d["occurrenceDateTime"], r["occurrenceDateTime"], "dates de-identified");
    }

    // _typeFilter: search parameters through their FHIRPath definitions.
    let final_obs = store_counts(
        &*s.store,
        &ScanFilter { types: Some(vec!["Observation".into()]), ..Default::default() },
    )["Observation"];
    let filtered: Json = wait(&status_url(&kickoff(
        s,
        "/$export?_type=Observation,Patient&_typeFilter=Observation%3Fcategory%3Dvital-signs%26date%3Dge2000-01-01,Patient%3Fgender%3Dfemale",
    )))
    .json()
    .unwrap();
    let (got, text) = download(&filtered);
    assert!(got["Observation"] > 0 && got["Observation"] < final_obs, "{got:?} of {final_obs}");
    for line in text.lines() {
        let r: Json = serde_json::from_str(line).unwrap();
        match r["resourceType"].as_str().unwrap() {
            "Patient" => assert_eq!(r["gender"], "female"),
            _ => assert!(r["category"].to_string().contains("vital-signs")),
        }
    }

    // DELETE: the job and its files go at once; the status is then 404.
    let url = status_url(&kickoff(s, "/$export"));
    assert_eq!(client().delete(&url).send().unwrap().status(), 202);
    assert_eq!(client().get(&url).send().unwrap().status(), 404);
    assert_eq!(client().delete(&url).send().unwrap().status(), 404);

    // De-identified export into a named container, as Azure does it.
    let url = status_url(&kickoff(
        s,
        "/$export?_type=Patient,Condition&_anonymizationConfig=safe-harbor.json&_container=research",
    ));
    let manifest: Json = wait(&url).json().unwrap();
    let (counts, text) = download(&manifest);
    assert_eq!(counts["Patient"], s.store.counts().unwrap()["Patient"] - 1, "the resource that is not R4 is left out");
    for p in PLANTED {
        assert!(!text.contains(p), "{p} in a de-identified export");
    }
    // …and reported beside the data without its id (which could identify someone).
    let report = client().get(manifest["error"][0]["url"].as_str().unwrap()).send().unwrap().text().unwrap();
    assert!(report.contains("Patient #1") && report.contains("nickname"), "{report}");
    assert!(!report.contains("MRN-ODD-4242") && !report.contains("Zyxwplanted"), "{report}");
    let research: Vec<_> = std::fs::read_dir(s.storage.join("research")).unwrap().collect();
    assert_eq!(research.len(), 1, "one timestamped folder in the container");
    // The same export without de-identification does carry them (the test can fail).
    let (_, raw) = download(&wait(&status_url(&kickoff(s, "/$export?_type=Patient,Condition"))).json().unwrap());
    assert!(PLANTED.iter().all(|p| raw.contains(p)), "the plain export carries every planted value");
    // _anonymizationConfigEtag pins the configuration's version (its SHA-256 in local storage).
    let config = std::fs::read_to_string(s.storage.join("anonymization/safe-harbor.json")).unwrap();
    let tag = veil_server::export::etag(&config);
    let ok = wait(&status_url(&kickoff(
        s,
        &format!("/$export?_type=Device&_anonymizationConfig=safe-harbor.json&_anonymizationConfigEtag=%22{tag}%22"),
    )));
    assert_eq!(ok.status(), 200);
    // A configuration that changed, is not there or is not valid: refused
    // at kick-off (400 with an OperationOutcome), where every client shows
    // the message, and no job is started.
    std::fs::write(s.storage.join("anonymization/broken.json"), r#"{"fhirPathRules": [{"path": "Patient.x"}]}"#)
        .unwrap();
    for (path, says) in [
        ("/$export?_type=Device&_anonymizationConfig=safe-harbor.json&_anonymizationConfigEtag=0x8D9", "has changed"),
        ("/$export?_anonymizationConfig=missing.json", "not found"),
        ("/$export?_anonymizationConfig=broken.json", "is invalid"),
    ] {
        let r = kickoff(s, path);
        assert_eq!(r.status(), 400, "{path}");
        assert!(r.headers().get("content-location").is_none(), "{path}: no job");
        let body: Json = r.json().unwrap();
        assert!(body["issue"][0]["diagnostics"].as_str().unwrap().contains(says), "{path}: {body}");
    }

    // Reads.
    let p: Json = client().get(format!("{}/Patient/{one}", s.base)).send().unwrap().json().unwrap();
    assert_eq!(p["id"], one.as_str());
    assert_eq!(client().get(format!("{}/Patient/nope", s.base)).send().unwrap().status(), 404);
    rest(s, one);
}

fn rest(s: &Server, patient: &str) {
    let c = client();
    // Create: the server chooses the id.
    let r = c
        .post(format!("{}/Patient", s.base))
        .body(r#"{"resourceType":"Patient","id":"mine","name":[{"family":"Restful"}],"gender":"other"}"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(&format!("{}/Patient/", s.base)) && location.ends_with("/_history/1"), "{location}");
    let id = location.split('/').rev().nth(2).unwrap().to_string();
    assert_ne!(id, "mine");
    // Update.
    let body = format!(r#"{{"resourceType":"Patient","id":"{id}","name":[{{"family":"Restful"}}],"gender":"female"}}"#);
    let r = c.put(format!("{}/Patient/{id}", s.base)).body(body).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], "W/\"2\"");
    let r =
        c.put(format!("{}/Patient/{id}", s.base)).body(r#"{"resourceType":"Patient","id":"other"}"#).send().unwrap();
    assert_eq!(r.status(), 400);
    // Search.
    let found: Json = c.get(format!("{}/Patient?family=restf&gender=female", s.base)).send().unwrap().json().unwrap();
    assert_eq!(found["type"], "searchset");
    assert_eq!(found["entry"].as_array().unwrap().len(), 1);
    let page1: Json =
        c.get(format!("{}/Observation?patient={patient}&_count=5", s.base)).send().unwrap().json().unwrap();
    assert_eq!(page1["entry"].as_array().unwrap().len(), 5);
    let next = page1["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next").unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    let page2: Json = c.get(&next).send().unwrap().json().unwrap();
    assert_ne!(page1["entry"][0]["resource"]["id"], page2["entry"][0]["resource"]["id"]);
    assert!(
        page2["entry"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["resource"]["subject"]["reference"] == format!("Patient/{patient}"))
    );
    let none: Json =
        c.get(format!("{}/Observation?_lastUpdated=gt2999-01-01T00:00:00Z", s.base)).send().unwrap().json().unwrap();
    assert_eq!(none["entry"], json!([]));
    let some: Json = c.get(format!("{}/Patient?_id={patient}", s.base)).send().unwrap().json().unwrap();
    assert_eq!(some["entry"][0]["resource"]["id"], patient);
    assert_eq!(c.get(format!("{}/Patient?nonsense=1", s.base)).send().unwrap().status(), 400);
    // Delete: 204, then gone.
    let before_delete = veil_util::clock::now_instant();
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(c.delete(format!("{}/Patient/{id}", s.base)).send().unwrap().status(), 204);
    // A system export since then lists the deletion, not the resource.
    let manifest: Json = wait(&status_url(&kickoff(s, &format!("/$export?_since={before_delete}")))).json().unwrap();
    assert!(manifest["output"].as_array().unwrap().iter().all(|o| o["type"] != "Patient"));
    let deleted = &manifest["deleted"][0];
    assert_eq!((deleted["type"].as_str(), deleted["count"].as_u64()), (Some("Patient"), Some(1)));
    let line: Json =
        serde_json::from_str(c.get(deleted["url"].as_str().unwrap()).send().unwrap().text().unwrap().trim()).unwrap();
    assert_eq!(line["entry"][0]["request"], json!({"method": "DELETE", "url": format!("Patient/{id}")}));
    // De-identified, the same export lists no deletion: its id is the stored
    // one. An informational outcome says why.
    let deid: Json = wait(&status_url(&kickoff(
        s,
        &format!("/$export?_since={before_delete}&_anonymizationConfig=safe-harbor.json"),
    )))
    .json()
    .unwrap();
    assert_eq!(deid["deleted"], json!([]));
    let why = c.get(deid["error"][0]["url"].as_str().unwrap()).send().unwrap().text().unwrap();
    assert!(why.contains("deleted resources are not listed in a de-identified export") && !why.contains(&id), "{why}");
    assert_eq!(c.get(format!("{}/Patient/{id}", s.base)).send().unwrap().status(), 410);
    assert_eq!(c.delete(format!("{}/Patient/{id}", s.base)).send().unwrap().status(), 404);
    // A transaction Bundle.
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:4a0c59a5-0000-4000-8000-000000000001", "resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": "urn:uuid:4a0c59a5-0000-4000-8000-000000000001"}}, "request": {"method": "POST", "url": "Observation"}}
    ]});
    let resp: Json = c.post(&s.base).body(tx.to_string()).send().unwrap().json().unwrap();
    assert_eq!(resp["type"], "transaction-response");
    assert_eq!(resp["entry"].as_array().unwrap().len(), 2);
    assert_eq!(resp["entry"][1]["response"]["status"], "201 Created");
    let obs_location = resp["entry"][1]["response"]["location"].as_str().unwrap();
    let obs_id = obs_location.split('/').nth(1).unwrap();
    let obs: Json = c.get(format!("{}/Observation/{obs_id}", s.base)).send().unwrap().json().unwrap();
    assert_eq!(obs["subject"]["reference"], "Patient/4a0c59a5-0000-4000-8000-000000000001");
}

#[test]
fn export_checklist_on_sqlite() {
    checklist(&start("sqlite", false, None));
}

#[test]
fn export_checklist_on_postgres() {
    checklist(&start("postgres", true, None));
}

#[test]
fn refuses_to_listen_beyond_loopback() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt.block_on(bind("0.0.0.0:0".parse().unwrap(), false)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    assert!(err.to_string().contains("loopback only"));
}

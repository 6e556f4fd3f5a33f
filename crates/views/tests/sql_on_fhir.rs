//! The SQL on FHIR v2 test suite (`conformance/sql-on-fhir/tests/`), run
//! case by case: rows compared as multisets (numbers by value), column order
//! where `expectColumns` says, errors where `expectError` says. Prints
//! `sql-on-fhir: N passed, N failed` and fails on a case that fails and is
//! not in `known-failures.tsv` (or is listed but passes).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde_json::Value as Json;
use veil_views::View;

fn canonical(v: &Json) -> String {
    match v {
        Json::Number(n) => {
            n.to_string().parse::<rust_decimal::Decimal>().map_or(n.to_string(), |d| d.normalize().to_string())
        }
        Json::Array(items) => format!("[{}]", items.iter().map(canonical).collect::<Vec<_>>().join(",")),
        Json::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            format!("{{{}}}", keys.iter().map(|k| format!("{k}:{}", canonical(&map[*k]))).collect::<Vec<_>>().join(","))
        }
        other => other.to_string(),
    }
}

fn run(test: &Json, resources: &[Json]) -> Result<(), String> {
    let expect_error = test.get("expectError").and_then(Json::as_bool).unwrap_or(false);
    let outcome = View::parse(&test["view"]).map_err(|e| e.to_string()).and_then(|view| {
        let mut rows = Vec::new();
        for r in resources {
            rows.extend(view.rows(r).map_err(|e| e.to_string())?);
        }
        Ok((view.columns().to_vec(), rows))
    });
    let (columns, rows) = match (outcome, expect_error) {
        (Err(_), true) => return Ok(()),
        (Ok(_), true) => return Err("expected an error".into()),
        (Err(e), false) => return Err(format!("error: {e}")),
        (Ok(x), false) => x,
    };
    if let Some(expected) = test.get("expectColumns").and_then(Json::as_array) {
        let want: Vec<&str> = expected.iter().filter_map(Json::as_str).collect();
        if columns != want {
            return Err(format!("columns {columns:?}, expected {want:?}"));
        }
    }
    let mut got: Vec<String> = rows
        .iter()
        .map(|r| {
            let obj: serde_json::Map<String, Json> = columns.iter().cloned().zip(r.values.iter().cloned()).collect();
            canonical(&Json::Object(obj))
        })
        .collect();
    let mut want: Vec<String> = test["expect"].as_array().into_iter().flatten().map(canonical).collect();
    got.sort();
    want.sort();
    if got == want { Ok(()) } else { Err(format!("rows {got:?}, expected {want:?}")) }
}

#[test]
fn sql_on_fhir_v2_suite() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conformance/sql-on-fhir/tests");
    let known: BTreeMap<String, String> =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/known-failures.tsv"))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let (k, v) = l.split_once('\t').unwrap_or((l, ""));
                assert!(!v.trim().is_empty(), "{k} needs a reason");
                (k.to_string(), v.to_string())
            })
            .collect();
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let (mut passed, mut failed) = (0, 0);
    let mut problems = Vec::new();
    for f in files {
        let suite: Json = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let resources: Vec<Json> = suite["resources"].as_array().cloned().unwrap_or_default();
        let file = f.file_stem().unwrap().to_string_lossy().into_owned();
        for t in suite["tests"].as_array().unwrap() {
            let id = format!("{file}/{}", t["title"].as_str().unwrap_or(""));
            match run(t, &resources) {
                Ok(()) => {
                    passed += 1;
                    if known.contains_key(&id) {
                        problems.push(format!("{id}: passes but is listed"));
                    }
                }
                Err(why) => {
                    failed += 1;
                    if !known.contains_key(&id) {
                        problems.push(format!("{id}: {why}"));
                    }
                }
            }
        }
    }
    let _ = writeln!(std::io::stderr().lock(), "sql-on-fhir: {passed} passed, {failed} failed");
    assert!(problems.is_empty(), "{} unexpected:\n{}", problems.len(), problems.join("\n"));
}

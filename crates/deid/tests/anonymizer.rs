//! The Microsoft anonymizer's functional tests (`conformance/ms-anonymizer/`,
//! `cases.tsv`): each configuration applied to each input must give the
//! expected resource, compared structurally (objects without regard to
//! property order, arrays in order, numbers by decimal value), or fail where
//! the expected result is `error`. Prints `ms-anonymizer: N passed, N failed`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;
use veil_deid::{Engine, Policy};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conformance/ms-anonymizer")
}

fn read(path: PathBuf) -> String {
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.strip_prefix('\u{feff}').map(str::to_string).unwrap_or(text)
}

/// Structural equality; the first difference found, as a path.
fn diff(a: &Json, b: &Json, path: &str) -> Option<String> {
    match (a, b) {
        (Json::Object(x), Json::Object(y)) => {
            for k in x.keys().chain(y.keys()) {
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => {
                        if let Some(d) = diff(p, q, &format!("{path}.{k}")) {
                            return Some(d);
                        }
                    }
                    (Some(_), None) => return Some(format!("{path}.{k}: unexpected in output")),
                    (None, Some(_)) => return Some(format!("{path}.{k}: missing from output")),
                    (None, None) => {}
                }
            }
            None
        }
        (Json::Array(x), Json::Array(y)) => {
            if x.len() != y.len() {
                return Some(format!("{path}: {} items, expected {}", x.len(), y.len()));
            }
            x.iter().zip(y).enumerate().find_map(|(i, (p, q))| diff(p, q, &format!("{path}[{i}]")))
        }
        (Json::Number(x), Json::Number(y)) => {
            let p: Option<rust_decimal::Decimal> = x.to_string().parse().ok();
            let q: Option<rust_decimal::Decimal> = y.to_string().parse().ok();
            (p != q || p.is_none()).then(|| format!("{path}: {x} vs expected {y}"))
        }
        _ => (a != b).then(|| format!("{path}: {a} vs expected {b}")),
    }
}

#[test]
fn microsoft_functional_cases() {
    let cases = read(dir().join("cases.tsv"));
    let (mut passed, mut failed) = (0, 0);
    let mut failures = Vec::new();
    for line in cases.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        let [config, input, expected] = cols[..] else { panic!("bad row {line:?}") };
        let outcome = (|| -> Result<(), String> {
            let policy =
                Policy::parse(&read(dir().join("configurations").join(config))).map_err(|e| format!("config: {e}"))?;
            // The expected outputs assume "now" is before 2030 (README of the suite).
            let engine = Engine::new(policy).with_today(2026, 11, 22);
            let doc: Json =
                serde_json::from_str(&read(dir().join("resources").join(input))).map_err(|e| e.to_string())?;
            let result = engine.anonymize(doc);
            if expected == "error" {
                return match result {
                    Err(_) => Ok(()),
                    Ok(_) => Err("expected an error".into()),
                };
            }
            let got = result.map_err(|e| format!("error: {e}"))?;
            let want: Json =
                serde_json::from_str(&read(dir().join("resources").join(expected))).map_err(|e| e.to_string())?;
            match diff(&got, &want, "") {
                None => Ok(()),
                Some(d) => Err(d),
            }
        })();
        match outcome {
            Ok(()) => passed += 1,
            Err(why) => {
                failed += 1;
                failures.push(format!("{config} + {input}: {why}"));
            }
        }
    }
    let _ = writeln!(std::io::stderr().lock(), "ms-anonymizer: {passed} passed, {failed} failed");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(passed, 26);
}

//! The `veil` binary, run as a user would.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn veil(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("veil runs");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        // veil may exit before reading (an invalid expression): a broken pipe is fine.
        let _ = input.write_all(text.as_bytes());
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const PATIENT: &str = r#"{"resourceType":"Patient","id":"p1",
  "name":[{"family":"Zebulon","given":["Quincy","Xavier"]}],
  "birthDate":"1974-12-25"}"#;

#[test]
fn prints_typed_results_with_locations() {
    let out = veil(&["fhirpath", "--locations", "Patient.name.given[1] | Patient.birthDate | Patient.name.count()"], Some(PATIENT));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        got,
        serde_json::json!([
            {"type": "string", "value": "Xavier", "location": "Patient.name[0].given[1]"},
            {"type": "date", "value": "1974-12-25", "location": "Patient.birthDate"},
            {"type": "Integer", "value": 1}
        ])
    );
}

#[test]
fn reads_ndjson_from_a_file_one_line_per_resource() {
    let dir = std::env::temp_dir().join(format!("veil-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("obs.ndjson");
    std::fs::write(
        &file,
        "{\"resourceType\":\"Observation\",\"valueQuantity\":{\"value\":1.50,\"unit\":\"kg\"}}\n\n{\"resourceType\":\"Observation\",\"valueString\":\"x\"}\n",
    )
    .unwrap();
    let out = veil(&["fhirpath", "--input", file.to_str().unwrap(), "Observation.value.ofType(Quantity).value"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "[{\"type\":\"decimal\",\"value\":1.50}]\n[]\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn invalid_expression_exits_2_with_position() {
    let out = veil(&["fhirpath", "Patient.name.where(given = )"], Some(PATIENT));
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("1:28: expected an expression, found ')'"), "{err}");
    assert!(err.contains("^"), "caret under the place: {err}");
    let out = veil(&["fhirpath", "Patient.name.frobnicate()"], Some(PATIENT));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown function 'frobnicate'"));
}

#[test]
fn evaluation_errors_name_the_place_not_the_value() {
    let out = veil(&["fhirpath", "Patient.name.given.single()"], Some(PATIENT));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("<stdin>:1:"), "{err}");
    for phi in ["Quincy", "Xavier", "Zebulon", "1974"] {
        assert!(!err.contains(phi), "error leaks a value: {err}");
    }
    let out = veil(&["fhirpath", "Patient"], Some("{\"resourceType\": \"Patient\", \"name\": [Zebulon]}"));
    assert_eq!(out.status.code(), Some(1));
    assert!(!text(&out.stderr).contains("Zebulon"), "{}", text(&out.stderr));
}

#[test]
fn constants_and_strict_mode() {
    let out = veil(&["fhirpath", "--var", "cutoff=1970-01-01", "Patient.birthDate > %cutoff.toDate()"], Some(PATIENT));
    assert_eq!(text(&out.stdout), "[{\"type\":\"Boolean\",\"value\":true}]\n");
    let lenient = veil(&["fhirpath", "Patient.nmae"], Some(PATIENT));
    assert_eq!(text(&lenient.stdout), "[]\n");
    let strict = veil(&["fhirpath", "--strict", "Patient.nmae"], Some(PATIENT));
    assert_eq!(strict.status.code(), Some(1));
    assert!(text(&strict.stderr).contains("no element 'nmae'"), "{}", text(&strict.stderr));
}

#[test]
fn demo_runs_on_the_bundled_sample() {
    let out = veil(&["demo"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Loaded 38971 resources from 103 files"), "{stdout}");
    // 100 patients, each with a name: the HumanName rule selects at least those.
    let names = stdout.lines().find(|l| l.starts_with("nodesByType('HumanName')")).expect("row");
    let cols: Vec<&str> = names.split_whitespace().collect();
    assert!(cols[1].parse::<usize>().unwrap() >= 100, "{names}");
    assert!(names.ends_with("Patient.name[0]"), "{names}");
}

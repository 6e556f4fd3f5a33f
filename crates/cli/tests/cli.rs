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
    let out = veil(
        &["fhirpath", "--locations", "Patient.name.given[1] | Patient.birthDate | Patient.name.count()"],
        Some(PATIENT),
    );
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

/// With nothing to read, the expression is evaluated without a resource,
/// as the HL7 suite's context-free cases are.
#[test]
fn an_expression_without_input_is_evaluated_without_a_resource() {
    for stdin in [None, Some("  \n")] {
        let out = veil(&["fhirpath", "(1 + 2) * 3"], stdin);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "[{\"type\":\"Integer\",\"value\":9}]\n");
    }
}

/// The speed `veil deid` reports counts the bytes it read, standard input
/// included (it has no file size to go by).
#[test]
fn deid_from_standard_input_reports_its_speed() {
    let lines: String = (0..2000)
        .map(|i| format!("{{\"resourceType\":\"Patient\",\"id\":\"p{i}\",\"gender\":\"female\"}}\n"))
        .collect();
    let out = veil(&["deid", "-c", "safe-harbor"], Some(&lines));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    let speed = err.split(" MB/s").next().and_then(|s| s.rsplit('(').next()).unwrap_or_default();
    assert!(speed.parse::<f64>().is_ok_and(|v| v > 0.0), "{err}");
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
    let dir = std::env::temp_dir().join(format!("veil-demo-{}", std::process::id()));
    let out = veil(&["demo", "--out", dir.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A panic on a thread the demo does not wait for would not change its exit code.
    assert!(!text(&out.stderr).contains("panicked"), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Loaded 38971 resources from 103 files"), "{stdout}");
    // 100 patients, each with a name: the HumanName rule selects at least those.
    let names = stdout.lines().find(|l| l.starts_with("nodesByType('HumanName')")).expect("row");
    let cols: Vec<&str> = names.split_whitespace().collect();
    assert!(cols[1].parse::<usize>().unwrap() >= 100, "{names}");
    assert!(names.ends_with("Patient.name[0]"), "{names}");
    // Then Safe Harbor over all of it, checked with FHIRPath.
    assert!(stdout.contains("De-identified 38971 resources with the HIPAA Safe Harbor policy"), "{stdout}");
    for kind in [
        "names",
        "street addresses and cities",
        "phone numbers and emails",
        "identifier values that are not pseudonyms",
        "narratives",
    ] {
        assert!(stdout.contains(&format!("  {kind} left: 0 ")), "{kind}: {stdout}");
    }
    // Then the server: an empty store, the sample loaded (each distinct resource counted once), a
    // de-identified $export over HTTP.
    assert!(stdout.contains("Loaded 38473 resources into an empty store"), "{stdout}");
    // The research team's client gets a token the way SMART Backend Services prescribes.
    assert!(
        stdout.contains("Client 'research-team' signed an ES384 assertion and got a token from http://127.0.0.1:"),
        "{stdout}"
    );
    // Organizations and practitioners recur across the patients' bundles: 38,473 distinct resources.
    assert!(stdout.contains("200 manifest: 38473 de-identified resources"), "{stdout}");
    let files: Vec<_> = std::fs::read_dir(dir.join("storage/research")).unwrap().collect();
    assert_eq!(files.len(), 1);
    // Then the flu study: its minimum-necessary export holds the 100
    // patients and 1,287 immunizations only, and its tables are exported.
    assert!(stdout.contains("200 manifest: 1387 de-identified resources in 2 files"), "{stdout}");
    assert!(stdout.contains("Built the flu study from 1387 de-identified resources"), "{stdout}");
    let cube = std::fs::read_to_string(dir.join("data_export/flu/flu__count_vaccinated.cube.csv")).unwrap();
    let counts: Vec<u64> = cube.lines().skip(1).map(|l| l.split(',').next().unwrap().parse().unwrap()).collect();
    assert!(counts.len() > 20 && counts.iter().all(|&n| n >= 10), "{cube}");
    assert!(dir.join("data_export/flu/flu.zip").is_file());
    // Then two sites, each with half the patients, upload to an aggregator
    // whose chart API returns the combined trend: each year the sum of the
    // sites' counts.
    let resources: u64 = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("  site "))
        .map(|l| l.split(' ').nth(4).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(resources, 1387, "{stdout}");
    let trend = stdout.split("The combined trend").nth(1).expect("the trend");
    let years: Vec<&str> = trend.lines().skip(1).take_while(|l| l.starts_with("  ")).collect();
    assert!(years.len() >= 5, "{stdout}");
    for line in years {
        let (total, parts) = line.split_once(": ").unwrap().1.split_once(" (").unwrap();
        let sum: u64 = parts
            .trim_end_matches(')')
            .split(" + ")
            .map(|p| p.split(' ').nth(1).unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(total.parse::<u64>().unwrap(), sum, "{line}");
    }
    // The export was shared and fetched: the research team's copy is the
    // export, file for file; the demo ends with the link and the command.
    let export = std::fs::read_dir(dir.join("storage/research")).unwrap().next().unwrap().unwrap().path();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(export.join("veil-manifest.json")).unwrap()).unwrap();
    let shared = manifest["files"].as_array().unwrap();
    // The data's 19 files and the audit's three files of evidence.
    assert_eq!(shared.len(), 22);
    for f in shared {
        let name = f["path"].as_str().unwrap();
        assert_eq!(
            std::fs::read(dir.join("research-copy").join(name)).unwrap(),
            std::fs::read(export.join(name)).unwrap(),
            "{name}"
        );
    }
    assert!(stdout.contains("veil fetch downloaded 22 files"), "{stdout}");
    // Before sharing, the export's audit said it meets Safe Harbor.
    assert!(stdout.contains("  audit: Output MEETS safe-harbor (38473 resources read)."), "{stdout}");
    let tail: Vec<&str> = stdout.lines().rev().take(4).collect();
    assert!(
        tail[0].starts_with("  veil fetch 'http://127.0.0.1:8080/share/v1.sh_")
            && tail[0].ends_with("/' -o research-copy"),
        "{stdout}"
    );
    assert!(tail[2].starts_with("  http://127.0.0.1:8080/share/v1.sh_"), "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---- veil deid ----------------------------------------------------------

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("veil-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }
    fn files(&self, rel: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.0.join(rel))
            .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const POLICY: &str = r#"{"fhirVersion": "R4", "fhirPathRules": [
  {"path": "Resource.id", "method": "cryptoHash"},
  {"path": "nodesByType('HumanName')", "method": "redact"},
  {"path": "nodesByType('date')", "method": "dateShift"}
], "parameters": {"dateShiftKey": "k1", "cryptoHashKey": "k2"}}"#;

fn patient_line(id: &str, family: &str) -> String {
    format!(r#"{{"resourceType":"Patient","id":"{id}","name":[{{"family":"{family}"}}],"birthDate":"1980-04-02"}}"#)
}

/// A killed `veil deid -o DIR` leaves its temporaries behind; the next run
/// into the same folder must not list them in its manifest (they hold
/// de-identified lines at best, and are not what the manifest vouches for).
#[test]
fn deid_manifest_leaves_out_what_a_killed_run_left() {
    let t = TempDir::new("killed");
    let policy = t.write("policy.json", POLICY);
    t.write("in/a.ndjson", &(patient_line("a", "Zebulon") + "\n"));
    // What a run killed mid-write leaves, under every name Veil has used for one.
    for left in [".a.ndjson.veil-4242.tmp", ".a.ndjson.veil-partial", ".a.ndjson.veil-tmp", "sub/.b.ndjson.tmp"] {
        t.write(&format!("out/{left}"), &patient_line("half", "Written"));
    }
    let p = |x: &str| t.0.join(x).to_string_lossy().into_owned();
    let out = veil(&["deid", "-c", &p("policy.json"), "-i", &p("in"), "-o", &p("out"), "-b"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.0.join("out/veil-manifest.json")).unwrap()).unwrap();
    let listed: Vec<&str> = manifest["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    // The data and the audit's evidence beside it.
    assert_eq!(listed, ["a.ndjson", "veil-risk.html", "veil-risk.json", "veil-risk.txt"]);
    drop(policy);
}

/// A folder de-identified with Microsoft's sample fails its Safe Harbor
/// audit (its dates keep their day): `veil share create` shows why and
/// refuses it, unless told `--despite-audit`; `veil audit` agrees.
#[test]
fn an_export_whose_audit_failed_is_shared_only_when_told() {
    let t = TempDir::new("audit-share");
    t.write("in/p.ndjson", &(patient_line("a", "Zebulon") + "\n"));
    let p = |x: &str| t.0.join(x).to_string_lossy().into_owned();
    let db = format!("sqlite:{}", p("veil.db"));
    for (policy, passes) in [("ms-sample", false), ("safe-harbor", true)] {
        let out_dir = p(policy);
        let out = veil(&["deid", "-c", policy, "-b", "-i", &p("in"), "-o", &out_dir], None);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let audit = veil(&["audit", &out_dir, "--original", &p("in")], None);
        assert_eq!(audit.status.success(), passes, "{}", text(&audit.stdout));
        let share = |extra: &[&str]| {
            let mut args = vec!["share", "create", "--db", &db, "--path", &out_dir];
            args.extend_from_slice(extra);
            veil(&args, None)
        };
        let refused = share(&[]);
        if passes {
            assert!(refused.status.success(), "{}", text(&refused.stderr));
            assert!(text(&refused.stderr).contains("audit: Output MEETS safe-harbor"), "{}", text(&refused.stderr));
            continue;
        }
        assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
        let why = text(&refused.stderr);
        assert!(why.contains("failed its de-identification audit") && why.contains("FAIL dates"), "{why}");
        assert!(!why.contains("Zebulon") && !why.contains("1980"), "no value in the reason: {why}");
        let told = share(&["--despite-audit"]);
        assert!(told.status.success(), "{}", text(&told.stderr));
    }
    // A policy of one's own is held to Safe Harbor unless the run claims
    // another standard; this one shifts dates, which a limited data set may keep.
    t.write("own.json", POLICY);
    for (standard, passes) in [(None, false), (Some("limited-data-set"), true)] {
        let dir = p(&format!("own-{}", standard.unwrap_or("default")));
        let (own, input) = (p("own.json"), p("in"));
        let mut args = vec!["deid", "-c", &own, "-b", "-i", &input, "-o", &dir];
        args.extend(standard.iter().flat_map(|s| ["--standard", *s]));
        let out = veil(&args, None);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(format!("{dir}/veil-manifest.json")).unwrap()).unwrap();
        let verdict = &manifest["deidentified"]["audit"];
        assert_eq!(verdict["standard"], standard.unwrap_or("safe-harbor"));
        assert_eq!(verdict["passes"], passes, "{verdict}");
    }
    // A folder never audited is refused too.
    let out = veil(&["deid", "-c", "safe-harbor", "-b", "-i", &p("in"), "-o", &p("unaudited"), "--no-audit"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!t.0.join("unaudited/veil-risk.json").exists());
    let refused = veil(&["share", "create", "--db", &db, "--path", &p("unaudited")], None);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(text(&refused.stderr).contains("was never audited"), "{}", text(&refused.stderr));
}

#[test]
fn deid_folders_like_the_microsoft_tool() {
    let t = TempDir::new("folders");
    let policy = t.write("policy.json", POLICY);
    t.write("in/a.json", &patient_line("a", "Zebulon"));
    t.write("in/sub/b.json", &patient_line("b", "Quincy"));
    t.write("in/c.ndjson", &(patient_line("c", "Xavier") + "\n" + &patient_line("d", "Yolanda") + "\n"));
    let p = |x: &str| t.0.join(x).to_string_lossy().into_owned();
    let out = veil(&["deid", "-c", &p("policy.json"), "-i", &p("in"), "-o", &p("out"), "-r"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        t.files("out"),
        ["a.json", "sub", "veil-manifest.json", "veil-risk.html", "veil-risk.json", "veil-risk.txt"]
    );
    // The manifest, written last, names every output file with its digest.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.0.join("out/veil-manifest.json")).unwrap()).unwrap();
    for f in manifest["files"].as_array().unwrap() {
        let bytes = std::fs::read(t.0.join("out").join(f["path"].as_str().unwrap())).unwrap();
        let digest: String = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&bytes))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!((f["size"].as_u64().unwrap(), f["sha256"].as_str().unwrap()), (bytes.len() as u64, digest.as_str()));
    }
    assert_eq!(manifest["files"].as_array().unwrap().len(), 1 + t.files("out/sub").len() + 3, "data and evidence");
    let a: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(t.0.join("out/a.json")).unwrap()).unwrap();
    assert!(a.get("name").is_none());
    assert_ne!(a["id"], "a");
    assert!(
        std::fs::read_to_string(t.0.join("out/a.json")).unwrap().contains("\n  \"resourceType\""),
        "pretty, as the Microsoft tool writes files"
    );
    // -b: NDJSON, one compact line per resource, input order kept.
    let out = veil(&["deid", "-c", &p("policy.json"), "-i", &p("in"), "-o", &p("out"), "-b"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(t.0.join("out/c.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| l["birthDate"] != "1980-04-02" && l.get("name").is_none()));
    let err = text(&out.stderr);
    assert!(err.contains("2 resources in, 2 out, 0 quarantined"), "{err}");
    assert!(err.contains("nodes changed: cryptoHash 2, dateShift 2, redact 2"), "{err}");
    // -s skips outputs that exist.
    std::fs::write(t.0.join("out/c.ndjson"), "kept").unwrap();
    let out = veil(&["deid", "-c", &p("policy.json"), "-i", &p("in"), "-o", &p("out"), "-b", "-s"], None);
    assert!(out.status.success());
    assert_eq!(std::fs::read_to_string(t.0.join("out/c.ndjson")).unwrap(), "kept");
    // Input and output folders must differ.
    let out = veil(&["deid", "-c", &p("policy.json"), "-i", &p("in"), "-o", &p("in")], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("Input and output folders are the same!"));
    // Same keys, same output: the run is reproducible.
    let again = veil(&["deid", "-c", policy.to_str().unwrap()], Some(&patient_line("a", "Zebulon")));
    let once = veil(&["deid", "-c", policy.to_str().unwrap()], Some(&patient_line("a", "Zebulon")));
    assert_eq!(again.stdout, once.stdout);
}

#[test]
fn deid_bad_input_fails_cleanly_or_is_quarantined() {
    let t = TempDir::new("bad");
    let p = |x: &str| t.0.join(x).to_string_lossy().into_owned();
    t.write("policy.json", POLICY);
    let deep = "[".repeat(5000) + &"]".repeat(5000);
    let bad = [
        patient_line("a", "Zebulon"),
        "{\"resourceType\": \"Patient\", \"name\": [{\"family\": \"Quincy\"".to_string(),
        r#"{"resourceType": "DeviceComponent", "note": "Xavier"}"#.to_string(),
        r#"{"not": "fhir", "who": "Yolanda"}"#.to_string(),
        deep,
        patient_line("b", "Wilhelmina"),
    ]
    .join("\n");
    t.write("in/bad.ndjson", &bad);
    // Without quarantine: the first bad line stops the file, no output is left.
    let out = veil(&["deid", "-c", &p("policy.json"), "-i", &p("in"), "-o", &p("out"), "-b"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("bad.ndjson: line 2: not valid JSON"), "{err}");
    assert!(t.files("out").is_empty(), "no partial or temporary file: {:?}", t.files("out"));
    // With quarantine: the good lines go through, the bad ones are listed.
    let out = veil(
        &["deid", "-c", &p("policy.json"), "-i", &p("in"), "-o", &p("out"), "-b", "--quarantine", &p("q.ndjson")],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "finished, but not everything went through");
    let written = std::fs::read_to_string(t.0.join("out/bad.ndjson")).unwrap();
    assert_eq!(written.lines().count(), 2);
    let q = std::fs::read_to_string(t.0.join("q.ndjson")).unwrap();
    let lines: Vec<u64> =
        q.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [2, 3, 4, 5]);
    let err = text(&out.stderr);
    for secret in ["Zebulon", "Quincy", "Xavier", "Yolanda", "Wilhelmina", "1980-04-02"] {
        assert!(!err.contains(secret) && !q.contains(secret), "{secret} leaked: {err}\n{q}");
    }
    // An empty file gives an empty output; a broken JSON file is named with its line.
    t.write("json/empty.ndjson", "");
    let out = veil(&["deid", "-c", &p("policy.json"), &p("json/empty.ndjson"), "-o", &p("empty.out.ndjson")], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(t.0.join("empty.out.ndjson")).unwrap(), "");
    t.write("json/broken.json", "{\n  \"resourceType\": \"Patient\",\n  \"name\": Zebulon\n}");
    let out = veil(&["deid", "-c", &p("policy.json"), &p("json/broken.json"), "-o", &p("broken.out.json")], None);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("broken.json: not valid JSON at line 3"), "{err}");
    assert!(!err.contains("Zebulon"));
    assert!(!t.0.join("broken.out.json").exists());
}

#[test]
fn deid_a_fifty_megabyte_line() {
    let t = TempDir::new("big");
    let p = |x: &str| t.0.join(x).to_string_lossy().into_owned();
    let big = format!(
        r#"{{"resourceType":"Patient","id":"x","text":{{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">{}</div>"}},"gender":"female"}}"#,
        "Zebulon ".repeat(50 << 17)
    );
    assert!(big.len() > 50 << 20);
    t.write("big.ndjson", &(big + "\n"));
    let out = veil(&["deid", "-c", "safe-harbor", &p("big.ndjson"), "-o", &p("out.ndjson")], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let written = std::fs::read_to_string(t.0.join("out.ndjson")).unwrap();
    assert!(written.len() < 2000 && !written.contains("Zebulon"), "the narrative is redacted");
    assert!(text(&out.stderr).contains("random key"), "empty keys are announced");
}

#[test]
fn deid_invalid_policy_names_the_rule() {
    let t = TempDir::new("policy");
    let p = t.write("p.json", r#"{"fhirPathRules": [{"path": "Patient.name", "method": "redact"}, {"path": "Patient.x", "method": "perturb", "span": -1}]}"#);
    let out = veil(&["deid", "-c", p.to_str().unwrap()], Some(""));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("rule 1 (path \"Patient.x\"): Span value is invalid at Patient.x."),
        "{}",
        text(&out.stderr)
    );
}

// ---- veil serve: a crash in the middle of an export ----------------------

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A SQLite store in `t` loaded with the Synthea sample; its URL.
fn sample_store(t: &TempDir) -> String {
    let db = format!("sqlite:{}", t.0.join("veil.db").display());
    let load = veil(&["load", "--db", &db, "data/synthea-r4-100.tar.gz"], None);
    assert!(load.status.success(), "{}", text(&load.stderr));
    db
}

/// `veil serve` without authorization, for tests of what happens behind
/// it (authorization has its own test below and in veil-server).
fn spawn_serve(db: &str, storage: &Path, port: u16) -> std::process::Child {
    spawn_serve_with(db, storage, port, &["--insecure-no-auth"], Stdio::null())
}

fn spawn_serve_with(db: &str, storage: &Path, port: u16, extra: &[&str], stderr: Stdio) -> std::process::Child {
    let child = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["serve", "--db", db, "--storage", storage.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")])
        .args(["--file-limit", "100", "--lease-secs", "2", "--workers", "1"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child
}

#[test]
fn serve_survives_a_kill_in_the_middle_of_an_export() {
    let t = TempDir::new("crash");
    let db = sample_store(&t);
    let storage = t.0.join("storage");
    let port = free_port();
    let mut server = spawn_serve(&db, &storage, port);
    let http = reqwest::blocking::Client::new();
    let r = http.get(format!("http://127.0.0.1:{port}/$export")).header("Prefer", "respond-async").send().unwrap();
    assert_eq!(r.status(), 202);
    let status = r.headers()["content-location"].to_str().unwrap().to_string();
    // Wait until the export is under way (files are appearing), then kill
    // the server outright.
    let job = status.rsplit('/').next().unwrap().to_string();
    let folder = storage.join(format!("export-{job}"));
    let mut running = false;
    for _ in 0..2000 {
        std::thread::sleep(std::time::Duration::from_millis(10));
        if std::fs::read_dir(&folder).map(|d| d.count()).unwrap_or(0) >= 3 {
            running = true;
            break;
        }
    }
    assert!(running, "the export started");
    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();
    // The kill really interrupted it: the job is still marked running.
    let store = veil_store::open(&db).unwrap();
    assert_eq!(store.job(&job).unwrap().unwrap().state, veil_store::JobState::Running, "killed mid-export");
    drop(store);
    // Restart: the lapsed job is taken over and run again from a clean folder.
    let port = free_port();
    let status = status.replace(&status.split('/').nth(2).unwrap().to_string(), &format!("127.0.0.1:{port}"));
    let mut server = spawn_serve(&db, &storage, port);
    let mut manifest = serde_json::Value::Null;
    for _ in 0..600 {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let r = http.get(&status).send().unwrap();
        if r.status() == 200 {
            manifest = r.json().unwrap();
            break;
        }
        assert!(r.status() == 202 || r.status() == 429, "{}", r.status());
    }
    assert!(manifest.is_object(), "the export completed after the restart");
    // Every listed file is complete: its line count is its count, every line parses.
    let mut total = 0;
    for item in manifest["output"].as_array().unwrap() {
        let url = item["url"].as_str().unwrap().replace(
            &item["url"].as_str().unwrap().split('/').nth(2).unwrap().to_string(),
            &format!("127.0.0.1:{port}"),
        );
        let body = http.get(&url).send().unwrap().text().unwrap();
        let lines: Vec<serde_json::Value> = body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len() as u64, item["count"].as_u64().unwrap());
        total += lines.len();
    }
    assert_eq!(total, 38473, "every stored resource exactly once");
    // No temporary files are left among the listed ones.
    let folder = std::fs::read_dir(&storage)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("export-"))
        .unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn two_servers_share_one_postgres_job_queue() {
    let base =
        std::env::var("VEIL_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let schema = format!("veil_cli_queue_{}", std::process::id());
    let db = format!("{base}?schema={schema}");
    let t = TempDir::new("queue");
    // Enough resources that one export takes longer than a worker's idle poll.
    let lines: String = (0..20000).map(|i| format!("{{\"resourceType\":\"Patient\",\"id\":\"p{i}\"}}\n")).collect();
    let input = t.write("patients.ndjson", &lines);
    let load = veil(&["load", "--db", &db, input.to_str().unwrap()], None);
    assert!(load.status.success(), "{}", text(&load.stderr));
    let ports = [free_port(), free_port()];
    // Six exports of one (anonymous) client at once: above the default limit of 4.
    let extra = ["--insecure-no-auth", "--max-exports-per-client", "6"];
    let mut servers: Vec<_> =
        ports.iter().map(|p| spawn_serve_with(&db, &t.0.join("storage"), *p, &extra, Stdio::null())).collect();
    let http = reqwest::blocking::Client::new();
    // Six exports kicked off at the first server; both servers' workers take them.
    let urls: Vec<String> = (0..6)
        .map(|_| {
            let r = http.get(format!("http://127.0.0.1:{}/$export", ports[0])).send().unwrap();
            r.headers()["content-location"].to_str().unwrap().to_string()
        })
        .collect();
    for url in &urls {
        let mut done = false;
        for _ in 0..240 {
            std::thread::sleep(std::time::Duration::from_millis(500));
            if http.get(url).send().unwrap().status() == 200 {
                done = true;
                break;
            }
        }
        assert!(done, "{url} finished");
    }
    for s in &mut servers {
        s.kill().unwrap();
        s.wait().unwrap();
    }
    let mut c = postgres::Client::connect(&base, postgres::NoTls).unwrap();
    let rows = c.query(&format!("SELECT lease_owner, attempts, state FROM \"{schema}\".jobs"), &[]).unwrap();
    let _ = c.batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"));
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().all(|r| r.get::<_, i64>(1) == 1 && r.get::<_, String>(2) == "completed"), "each job ran once");
    let owners: std::collections::BTreeSet<String> =
        rows.iter().map(|r| r.get::<_, String>(0).split('-').nth(1).unwrap().to_string()).collect();
    assert_eq!(owners.len(), 2, "both processes took jobs: {owners:?}");
}

#[test]
fn view_run_writes_csv_and_ndjson() {
    let t = TempDir::new("view");
    let view = t.write("v.json", r#"{"resource":"Patient","select":[{"column":[{"name":"id","path":"id"},{"name":"family","path":"name.first().family"}]},{"forEachOrNull":"telecom","column":[{"name":"phone","path":"value"}]}]}"#);
    let input = t.write(
        "in/Patient.ndjson",
        "{\"resourceType\":\"Patient\",\"id\":\"a\",\"name\":[{\"family\":\"O'Brien, Jr\"}],\"telecom\":[{\"value\":\"1\"},{\"value\":\"2\"}]}\n{\"resourceType\":\"Observation\",\"id\":\"o\"}\n{\"resourceType\":\"Patient\",\"id\":\"b\"}\n",
    );
    // `veil view run --view VIEW --input INPUT` and further arguments.
    let view_run = |input: &std::path::Path, more: &[&str]| {
        let args =
            [&["view", "run", "--view", view.to_str().unwrap(), "--input", input.to_str().unwrap()], more].concat();
        veil(&args, None)
    };
    let out = view_run(&t.0.join("in"), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "id,family,phone\r\na,\"O'Brien, Jr\",1\r\na,\"O'Brien, Jr\",2\r\nb,,\r\n");
    let csv = t.0.join("out.ndjson");
    let out = view_run(&input, &["--format", "ndjson", "-o", csv.to_str().unwrap()]);
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&csv).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[2], serde_json::json!({"id": "b", "family": null, "phone": null}));
    // An invalid view is refused before any data is read.
    let bad = t.write(
        "bad.json",
        r#"{"resource":"Patient","select":[{"column":[{"name":"id","path":"id"},{"name":"id","path":"gender"}]}]}"#,
    );
    let out = veil(&["view", "run", "--view", bad.to_str().unwrap(), "--input", "/nonexistent"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("Column Already Defined"), "{}", text(&out.stderr));
    let out = view_run(&input, &["--format", "parquet"]);
    assert_eq!(out.status.code(), Some(2), "parquet needs -o");
    let pq = t.0.join("out.parquet");
    let out = view_run(&input, &["--format", "parquet", "-o", pq.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bytes = std::fs::read(&pq).unwrap();
    assert!(bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"), "a complete Parquet file");
    // Rows keep input order across the parallel batches; a damaged line
    // stops the run naming its file and line, not its content, and leaves
    // no output file.
    let many: String = (0..5000).map(|i| format!("{{\"resourceType\":\"Patient\",\"id\":\"p{i}\"}}\n")).collect();
    let big = t.write("big.ndjson", &many);
    let out = view_run(&big, &[]);
    let ids: Vec<String> =
        text(&out.stdout).lines().skip(1).map(|l| l.split(',').next().unwrap().to_string()).collect();
    assert_eq!(ids, (0..5000).map(|i| format!("p{i}")).collect::<Vec<_>>());
    let damaged = t.write("damaged.ndjson", &(many + "{\"resourceType\":\"Patient\",\"id\":\"SECRET\"\n"));
    let dest = t.0.join("damaged.csv");
    let out = view_run(&damaged, &["-o", dest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("damaged.ndjson:5001: not valid JSON") && !text(&out.stderr).contains("SECRET"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dest.exists());
}

// ---- veil study and veil export-preset ------------------------------------

#[test]
fn study_build_and_export_a_study_folder() {
    let t = TempDir::new("study");
    t.write("s/study.toml", "study_prefix = 'demo'\ndata_package_version = 2\n[views]\npatient = 'patient.json'\n[[counts]]\nname = 'count_sex'\nfrom = 'patient'\nstrata = ['sex']\ncount_distinct = 'id'\nmin_cell = 2\n");
    t.write("s/patient.json", r#"{"resource": "Patient", "select": [{"column": [{"name": "id", "path": "getResourceKey()"}, {"name": "sex", "path": "gender"}]}]}"#);
    let lines: Vec<String> = ["female", "female", "male", "female"]
        .iter()
        .enumerate()
        .map(|(i, g)| format!(r#"{{"resourceType":"Patient","id":"p{i}","gender":"{g}"}}"#))
        .collect();
    t.write("in/nested/Patient.ndjson", &(lines.join("\n") + "\n"));
    let (study, build, data) = (t.0.join("s"), t.0.join("build"), t.0.join("data_export"));
    let s = |p: &Path| p.to_str().unwrap().to_string();

    let out = veil(&["study", "export", &s(&study), "--build-dir", &s(&build), "--data-path", &s(&data)], None);
    assert_eq!(out.status.code(), Some(2), "export before build");
    assert!(text(&out.stderr).contains("has not been built"), "{}", text(&out.stderr));

    let out = veil(&["study", "build", &s(&study), "--input", &s(&t.0.join("in")), "--build-dir", &s(&build)], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The one man is under 2; the 3 women go too, or 4 - 3 would give him away.
    assert!(
        text(&out.stderr)
            .contains("demo__count_sex: 1 cells kept, 1 under 2 dropped, 1 more so that those cannot be worked out"),
        "{}",
        text(&out.stderr)
    );
    let out = veil(&["study", "export", &s(&study), "--build-dir", &s(&build), "--data-path", &s(&data)], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // 4 patients, 3 women; the one man is a cell under 2 and is not there,
    // nor the women, from whom he could be worked out.
    assert_eq!(std::fs::read_to_string(data.join("demo/demo__count_sex.cube.csv")).unwrap(), "cnt,sex\r\n4,\r\n");
    assert_eq!(
        std::fs::read_to_string(data.join("demo/demo__meta_version.meta.csv")).unwrap(),
        "data_package_version\r\n2\r\n"
    );
    assert!(data.join("demo/demo.zip").is_file());

    // A damaged line stops the build, naming file and line but not the content,
    // and the earlier build is left as it was.
    t.write("in/nested/Patient.ndjson", "{\"resourceType\":\"Patient\",\"id\":\"p9\",\"gender\":\"female\"}\n{\"resourceType\":\"Patient\",\"id\":\"SECRET-ID\n");
    let before = std::fs::read(build.join("demo/build.json")).unwrap();
    let out = veil(&["study", "build", &s(&study), "--input", &s(&t.0.join("in")), "--build-dir", &s(&build)], None);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("Patient.ndjson:2: not valid JSON") && !err.contains("SECRET"), "{err}");
    assert_eq!(std::fs::read(build.join("demo/build.json")).unwrap(), before);

    // Mistakes in study.toml are reported before any data is read.
    t.write("s/study.toml", "study_prefix = 'demo'\n[views]\npatient = 'patient.json'\n[[counts]]\nname = 'count_sex'\nfrom = 'patient'\nstrata = ['gender']\ncount_distinct = 'id'\n");
    let out = veil(&["study", "build", &s(&study), "--input", "/nonexistent", "--build-dir", &s(&build)], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("'gender' is not a column of 'patient'"), "{}", text(&out.stderr));
    let out = veil(&["study", "build", "no-such-study", "--input", "/nonexistent"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("built-in studies: flu"), "{}", text(&out.stderr));
}

#[test]
fn export_preset_prints_parameters_and_writes_a_valid_policy() {
    let t = TempDir::new("preset");
    let policy = t.0.join("flu.json");
    let out = veil(&["export-preset", "flu", "--policy", policy.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let query = text(&out.stdout);
    assert!(query.starts_with("_type=Patient,Immunization&_elements=Patient.birthDate,"), "{query}");
    // The written policy is one `veil deid` accepts, and it keeps vaccine codes.
    let line = r#"{"resourceType":"Immunization","id":"i","status":"completed","vaccineCode":{"coding":[{"system":"http://hl7.org/fhir/sid/cvx","code":"140"}]},"patient":{"reference":"Patient/p"},"occurrenceDateTime":"2019-10-01T10:00:00Z"}"#;
    let out = veil(&["deid", "-c", policy.to_str().unwrap()], Some(line));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["vaccineCode"]["coding"][0]["code"], "140");
    assert_eq!(got["occurrenceDateTime"], "2019", "Safe Harbor keeps the year only");
}

/// Kicks off an export; its status URL.
fn kick_off(http: &reqwest::blocking::Client, url: &str) -> String {
    let r = http.get(url).header("Prefer", "respond-async").send().unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().unwrap_or_default());
    r.headers()["content-location"].to_str().unwrap().to_string()
}

/// Kicks off an export and polls until its manifest is ready.
fn export_and_wait(http: &reqwest::blocking::Client, url: &str) -> serde_json::Value {
    wait_for_export(http, &kick_off(http, url))
}

/// What a hospital and a research team do: make a key, register it, serve
/// with authorization (the default), get a token, export with it; remove
/// the client and it gets no more tokens. No token or key reaches the log.
#[test]
fn a_registered_client_exports_with_a_token_from_the_cli() {
    let t = TempDir::new("client-auth");
    let db = sample_store(&t);
    let key = t.0.join("team.pem");
    let keygen = veil(&["client", "keygen", "--out", key.to_str().unwrap()], None);
    assert!(keygen.status.success(), "{}", text(&keygen.stderr));
    let private = std::fs::read_to_string(&key).unwrap();
    assert!(private.starts_with("-----BEGIN PRIVATE KEY-----"));
    #[cfg(unix)]
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions()) & 0o777, 0o600);
    assert!(
        !veil(&["client", "keygen", "--out", key.to_str().unwrap()], None).status.success(),
        "a key is never overwritten"
    );
    let jwks = t.write("team.jwks.json", &text(&keygen.stdout));
    let add = veil(
        &[
            "client",
            "add",
            "--db",
            &db,
            "--name",
            "Team A",
            "--jwks",
            jwks.to_str().unwrap(),
            "--scope",
            "system/Patient.read system/Condition.read",
        ],
        None,
    );
    assert!(add.status.success(), "{}", text(&add.stderr));
    let id = text(&add.stdout).trim().to_string();
    let refused = veil(&["client", "add", "--db", &db, "--name", "leaky", "--jwks", &private], None);
    assert_eq!(refused.status.code(), Some(2), "a PEM is not a JWKS");
    let list = veil(&["client", "list", "--db", &db], None);
    assert!(
        text(&list.stdout)
            .contains(&format!("{id}\tTeam A\tsystem/Patient.read system/Condition.read\t1 key(s) inline")),
        "{}",
        text(&list.stdout)
    );

    let port = free_port();
    let log = t.0.join("serve.log");
    let mut server =
        spawn_serve_with(&db, &t.0.join("storage"), port, &[], Stdio::from(std::fs::File::create(&log).unwrap()));
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::blocking::Client::new();
    assert_eq!(http.get(format!("{base}/$export")).send().unwrap().status(), 401, "authorization is on by default");
    let token_out = veil(
        &[
            "client",
            "token",
            "--fhir-url",
            &base,
            "--client-id",
            &id,
            "--key",
            key.to_str().unwrap(),
            "--scope",
            "system/*.read",
        ],
        None,
    );
    assert!(token_out.status.success(), "{}", text(&token_out.stderr));
    assert!(
        text(&token_out.stderr).contains("Granted: system/Patient.read system/Condition.read"),
        "{}",
        text(&token_out.stderr)
    );
    let token = text(&token_out.stdout).trim().to_string();
    let r = http.get(format!("{base}/$export")).bearer_auth(&token).header("Prefer", "respond-async").send().unwrap();
    assert_eq!(r.status(), 202);
    let status = r.headers()["content-location"].to_str().unwrap().to_string();
    let manifest: serde_json::Value = loop {
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let r = http.get(&status).bearer_auth(&token).send().unwrap();
        if r.status() == 200 {
            break r.json().unwrap();
        }
        assert_eq!(r.status(), 202);
    };
    let mut types: Vec<&str> =
        manifest["output"].as_array().unwrap().iter().map(|o| o["type"].as_str().unwrap()).collect();
    types.dedup();
    assert_eq!(types, ["Condition", "Patient"], "only what the scopes read");
    let file = manifest["output"][0]["url"].as_str().unwrap();
    assert_eq!(http.get(file).bearer_auth(&token).send().unwrap().status(), 200);

    let remove = veil(&["client", "remove", "--db", &db, &id], None);
    assert!(remove.status.success(), "{}", text(&remove.stderr));
    let again =
        veil(&["client", "token", "--fhir-url", &base, "--client-id", &id, "--key", key.to_str().unwrap()], None);
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("invalid_client"), "{}", text(&again.stderr));
    server.kill().unwrap();
    server.wait().unwrap();

    // The log has a line per request, and none of the secrets.
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("GET /$export 202 client=") && log.contains("POST /auth/token 200"), "{log}");
    assert!(log.contains("GET /_export/{job}/{file} 200"), "routes, not ids: {log}");
    let key_body: String = private.lines().filter(|l| !l.starts_with("-----")).collect();
    for secret in [token.as_str(), &key_body[..40], &token[token.len() - 20..]] {
        assert!(!log.contains(secret), "a secret in the log");
    }
}

#[test]
fn serving_without_authorization_warns_and_stays_on_loopback() {
    let t = TempDir::new("no-auth");
    let db = format!("sqlite:{}", t.0.join("veil.db").display());
    let storage = t.0.join("storage");
    let beyond = veil(
        &["serve", "--db", &db, "--storage", storage.to_str().unwrap(), "--listen", "0.0.0.0:0", "--insecure-no-auth"],
        None,
    );
    assert_eq!(beyond.status.code(), Some(2));
    assert!(text(&beyond.stderr).contains("WARNING: authorization is OFF"), "{}", text(&beyond.stderr));
    assert!(text(&beyond.stderr).contains("loopback only"), "{}", text(&beyond.stderr));
}

/// The flu preset's `_elements` keep everything the study reads: the study
/// built from the preset's export equals the one built from whole
/// resources, de-identified with the same policy and keys.
#[test]
fn the_flu_preset_export_loses_nothing_the_study_reads() {
    let t = TempDir::new("preset-export");
    let db = sample_store(&t);
    let policy_file = t.0.join("flu.json");
    let preset = veil(&["export-preset", "flu", "--policy", policy_file.to_str().unwrap()], None);
    assert!(preset.status.success(), "{}", text(&preset.stderr));
    let mut policy: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&policy_file).unwrap()).unwrap();
    policy["parameters"]["dateShiftKey"] = "test-date-key".into();
    policy["parameters"]["cryptoHashKey"] = "test-hash-key".into();
    let storage = t.0.join("storage");
    t.write("storage/anonymization/flu.json", &policy.to_string());

    let port = free_port();
    let mut server = spawn_serve(&db, &storage, port);
    let http = reqwest::blocking::Client::new();
    let base = format!("http://127.0.0.1:{port}/$export?_anonymizationConfig=flu.json");
    let whole = export_and_wait(&http, &format!("{base}&_type=Patient,Immunization&_container=whole"));
    let subset = export_and_wait(&http, &format!("{base}&{}&_container=subset", text(&preset.stdout).trim()));
    server.kill().unwrap();
    server.wait().unwrap();
    let count = |m: &serde_json::Value| {
        m["output"].as_array().unwrap().iter().map(|o| o["count"].as_u64().unwrap()).sum::<u64>()
    };
    assert_eq!(count(&whole), 1387);
    assert_eq!(count(&subset), 1387);

    let mut built = Vec::new();
    for container in ["whole", "subset"] {
        let dir = t.0.join(format!("build-{container}"));
        let out = veil(
            &[
                "study",
                "build",
                "flu",
                "--input",
                storage.join(container).to_str().unwrap(),
                "--build-dir",
                dir.to_str().unwrap(),
            ],
            None,
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let b: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("flu/build.json")).unwrap()).unwrap();
        built.push(b["tables"].clone());
    }
    assert!(built[0][0]["rows"].as_array().unwrap().len() > 20, "a real cube");
    assert_eq!(built[0], built[1]);
}

#[test]
fn aggregator_sites_and_keys_are_managed_from_the_cli() {
    let t = TempDir::new("aggregator-admin");
    manage_sites_and_keys(t.0.join("aggregator.db").to_str().unwrap());
}

#[test]
fn aggregator_sites_and_keys_are_managed_on_postgres() {
    let base =
        std::env::var("VEIL_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    manage_sites_and_keys(&format!("{base}?schema=veil_cli_aggregator_{}", std::process::id()));
}

fn manage_sites_and_keys(db: &str) {
    let add = veil(
        &["aggregator", "site", "add", "bch", "--user", "bch-uploader", "--studies", "flu,core", "--db", db],
        None,
    );
    assert!(add.status.success(), "{}", text(&add.stderr));
    let secret = text(&add.stdout).trim().to_string();
    assert_eq!(secret.len(), 43, "one secret on stdout");
    assert!(text(&add.stderr).contains("may upload flu, core"));
    let again = veil(&["aggregator", "site", "add", "bch", "--db", db], None);
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again.stderr).contains("exists already"));
    for bad in ["BCH", "../x", "a b"] {
        let out = veil(&["aggregator", "site", "add", bad, "--db", db], None);
        assert_eq!(out.status.code(), Some(2), "{bad}");
    }
    let rotated = veil(&["aggregator", "site", "rotate", "bch", "--db", db], None);
    let new_secret = text(&rotated.stdout).trim().to_string();
    assert!(rotated.status.success() && new_secret.len() == 43 && new_secret != secret);
    let list = veil(&["aggregator", "site", "list", "--db", db], None);
    let listed = text(&list.stdout);
    assert!(listed.starts_with("bch\tuser bch-uploader\tstudies flu,core") && listed.contains("rotated"), "{listed}");
    assert!(!listed.contains(&secret) && !listed.contains(&new_secret), "never a secret");

    let key =
        text(&veil(&["aggregator", "key", "add", "--name", "dashboard", "--db", db], None).stdout).trim().to_string();
    let (id, key_secret) = key.split_once('.').unwrap();
    let keys = text(&veil(&["aggregator", "key", "list", "--db", db], None).stdout);
    assert!(keys.starts_with(&format!("{id}\tdashboard")) && !keys.contains(key_secret), "{keys}");
    assert!(veil(&["aggregator", "key", "remove", id, "--db", db], None).status.success());
    assert_eq!(veil(&["aggregator", "key", "remove", id, "--db", db], None).status.code(), Some(2));

    assert!(veil(&["aggregator", "site", "remove", "bch", "--purge", "--db", db], None).status.success());
    assert_eq!(text(&veil(&["aggregator", "site", "list", "--db", db], None).stdout), "");
    assert_eq!(veil(&["aggregator", "site", "rotate", "bch", "--db", db], None).status.code(), Some(2));
    let serve = veil(&["aggregator", "serve", "--db", db, "--network", "upload"], None);
    assert_eq!(serve.status.code(), Some(2), "a network may not shadow a route");
}

#[test]
fn export_says_when_there_is_nothing_to_resume() {
    let t = TempDir::new("export-resume");
    // Nothing listens on this port: the state is checked before any request.
    let out = veil(&["export", "--from", "http://127.0.0.1:9/fhir", "-o", t.0.to_str().unwrap(), "--resume"], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("nothing to resume"), "{}", text(&out.stderr));
    let refused =
        veil(&["export", "--from", "http://127.0.0.1:9/fhir", "-o", t.0.to_str().unwrap(), "--keep-raw", "raw"], None);
    assert_eq!(refused.status.code(), Some(2), "--keep-raw needs --deid");
}

#[test]
fn export_killed_mid_download_resumes_with_every_resource_once() {
    use serde_json::Value as Json;
    use sha2::Digest as _;
    let t = TempDir::new("export-kill");
    let db = sample_store(&t);
    let port = free_port();
    let mut server = spawn_serve(&db, &t.0.join("storage"), port);
    let base = format!("http://127.0.0.1:{port}");
    let dest = t.0.join("pulled");
    let args = ["export", "--from", base.as_str(), "-o", dest.to_str().unwrap(), "--concurrency", "1"];
    let mut export = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // SIGKILL once a few files (of the sample's ~390) are finished.
    let state_path = dest.join(".veil-export-state.json");
    let state = loop {
        assert!(export.try_wait().unwrap().is_none(), "the export ended before it could be killed");
        if let Some(state) = std::fs::read(&state_path).ok().and_then(|b| serde_json::from_slice::<Json>(&b).ok())
            && state["files"].as_object().is_some_and(|f| f.len() >= 3)
        {
            export.kill().unwrap();
            export.wait().unwrap();
            break state;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let planned = state["manifest"]["output"].as_array().unwrap().len();
    let expected: u64 =
        state["manifest"]["output"].as_array().unwrap().iter().map(|o| o["count"].as_u64().unwrap()).sum();
    let finished = std::fs::read(&state_path)
        .map(|b| serde_json::from_slice::<Json>(&b).unwrap()["files"].as_object().unwrap().len())
        .unwrap();
    assert!(finished < planned, "killed mid-download ({finished} of {planned} files)");

    let resumed = veil(&["export", "--from", &base, "-o", dest.to_str().unwrap(), "--resume"], None);
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert!(
        text(&resumed.stdout).contains("were already finished and were not fetched again"),
        "{}",
        text(&resumed.stdout)
    );
    // Every resource exactly once; each file as the manifest says.
    let received: Json =
        serde_json::from_slice(&std::fs::read(dest.join("veil-export-manifest.json")).unwrap()).unwrap();
    let files = received["files"].as_object().unwrap();
    assert_eq!(files.len(), planned);
    let mut seen = std::collections::HashSet::new();
    for (name, file) in files {
        let bytes = std::fs::read(dest.join(name)).unwrap();
        assert_eq!(veil_util::hex::encode(&sha2::Sha256::digest(&bytes)), file["sha256"].as_str().unwrap(), "{name}");
        for line in String::from_utf8(bytes).unwrap().lines() {
            let doc: Json = serde_json::from_str(line).unwrap();
            assert!(seen.insert(format!("{}/{}", doc["resourceType"], doc["id"])), "a duplicate in {name}");
        }
    }
    assert_eq!(seen.len() as u64, expected, "every resource of the export");
    let leftovers: Vec<_> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part") || n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    server.kill().unwrap();
    server.wait().unwrap();
}

/// Waits for an export's manifest at `status` (a Bulk Data status URL).
fn wait_for_export(http: &reqwest::blocking::Client, status: &str) -> serde_json::Value {
    for _ in 0..600 {
        let r = http.get(status).send().unwrap();
        if r.status() == 200 {
            return r.json().unwrap();
        }
        assert!(r.status() == 202 || r.status() == 429, "{}", r.status());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("the export did not finish");
}

#[test]
fn share_an_export_fetch_it_resume_it_and_revoke_it() {
    let t = TempDir::new("share");
    let db = sample_store(&t);
    let storage = t.0.join("storage");
    std::fs::create_dir_all(storage.join("anonymization")).unwrap();
    std::fs::copy(
        repo_root().join("crates/deid/policies/safe-harbor.json"),
        storage.join("anonymization/safe-harbor.json"),
    )
    .unwrap();
    let port = free_port();
    let log_path = t.0.join("serve.log");
    let mut server = spawn_serve_with(
        &db,
        &storage,
        port,
        &["--insecure-no-auth"],
        Stdio::from(std::fs::File::create(&log_path).unwrap()),
    );
    let http = reqwest::blocking::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let status =
        kick_off(&http, &format!("{base}/$export?_type=Patient,Condition&_anonymizationConfig=safe-harbor.json"));
    wait_for_export(&http, &status);
    let job = status.rsplit('/').next().unwrap();
    let exported = storage.join(format!("export-{job}"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(exported.join("veil-manifest.json")).unwrap()).unwrap();
    let files: Vec<String> =
        manifest["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap().to_string()).collect();
    let data: Vec<&String> = files.iter().filter(|f| !f.starts_with("veil-risk.")).collect();
    assert!(data.len() >= 3 && data.iter().all(|f| f.ends_with(".ndjson")), "{files:?}");
    assert_eq!(files.len(), data.len() + 3, "the audit's evidence is listed: {files:?}");

    let share = |extra: &[&str]| -> String {
        let mut args = vec![
            "share",
            "create",
            "--db",
            &db,
            "--export",
            job,
            "--storage",
            storage.to_str().unwrap(),
            "--base-url",
            &base,
        ];
        args.extend_from_slice(extra);
        let out = veil(&args, None);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(!text(&out.stderr).contains("/share/v1."), "the link goes to stdout only");
        text(&out.stdout).trim().to_string()
    };
    let link = share(&["--expires", "1h", "--recipient", "Team A"]);
    let token = link.split("/share/").nth(1).unwrap().trim_end_matches('/').to_string();
    let id = token.split('.').nth(1).unwrap().to_string();

    // Round trip: every file identical to the export.
    let out = t.0.join("fetched");
    let fetch_stderr = std::cell::RefCell::new(Vec::new());
    let fetch = |dir: &Path, link: &str| {
        let out = veil(&["fetch", link, "-o", dir.to_str().unwrap()], None);
        fetch_stderr.borrow_mut().push(text(&out.stderr));
        out
    };
    let r = fetch(&out, &link);
    assert!(r.status.success(), "{}", text(&r.stderr));
    for f in &files {
        assert_eq!(std::fs::read(out.join(f)).unwrap(), std::fs::read(exported.join(f)).unwrap(), "{f}");
    }
    assert!(out.join("veil-manifest.json").is_file());

    // Interrupted: one file only partly there. The next run keeps the
    // others and asks for the rest of that one alone.
    let partial = &files[0];
    let whole = std::fs::read(exported.join(partial)).unwrap();
    std::fs::remove_file(out.join(partial)).unwrap();
    std::fs::write(out.join(format!(".{partial}.veil-partial")), &whole[..1000]).unwrap();
    let r = fetch(&out, &link);
    assert!(r.status.success(), "{}", text(&r.stderr));
    assert_eq!(std::fs::read(out.join(partial)).unwrap(), whole);
    assert!(!out.join(format!(".{partial}.veil-partial")).exists());
    assert!(text(&r.stderr).contains("already here and intact"));
    let log = veil(&["share", "log", "--db", &db, &id], None);
    let last = text(&log.stdout).lines().last().unwrap().to_string();
    assert!(
        last.contains(partial.as_str())
            && last.contains(&format!("{} bytes", whole.len() - 1000))
            && last.contains("from 127.0.0.1"),
        "{last}"
    );
    assert_eq!(text(&log.stdout).lines().count(), files.len() + 1, "each download audited once");

    // Corrupted in storage (same size): detected, and no bad file is left.
    let victim = exported.join(&files[1]);
    let good = std::fs::read(&victim).unwrap();
    let mut bad = good.clone();
    bad[10] ^= 0x20;
    std::fs::write(&victim, &bad).unwrap();
    let out2 = t.0.join("fetched-corrupt");
    let r = fetch(&out2, &link);
    assert_eq!(r.status.code(), Some(1));
    assert!(text(&r.stderr).contains("does not match the manifest"), "{}", text(&r.stderr));
    assert!(!out2.join(&files[1]).exists() && !out2.join(format!(".{}.veil-partial", files[1])).exists());
    std::fs::write(&victim, &good).unwrap();

    // Revoked: refused from now on, and said so.
    let r = veil(&["share", "revoke", "--db", &db, &id], None);
    assert!(r.status.success(), "{}", text(&r.stderr));
    assert!(text(&r.stdout).contains("stopped working now"));
    let r = fetch(&t.0.join("fetched-revoked"), &link);
    assert_eq!(r.status.code(), Some(1));
    assert!(text(&r.stderr).contains("revoked"), "{}", text(&r.stderr));

    // Expired.
    let short = share(&["--expires", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let r = fetch(&t.0.join("fetched-expired"), &short);
    assert_eq!(r.status.code(), Some(1));
    assert!(text(&r.stderr).contains("expired"), "{}", text(&r.stderr));

    let list = veil(&["share", "list", "--db", &db], None);
    let list = text(&list.stdout);
    assert!(list.contains(&format!("{id} ")) && list.contains("revoked") && list.contains("Team A"), "{list}");

    server.kill().unwrap();
    server.wait().unwrap();
    // The token is a credential: no log line carries it, nor any other output.
    let logged = std::fs::read_to_string(&log_path).unwrap();
    assert!(logged.contains("/share/{token}/{*path}"), "the access log names the route");
    let signature = token.rsplit('.').next().unwrap();
    assert!(!logged.contains(signature) && !logged.contains(&token), "the token is not logged");
    let fetch_stderr = fetch_stderr.into_inner();
    assert!(fetch_stderr.len() >= 5);
    for said in &fetch_stderr {
        assert!(!said.contains(signature), "veil fetch does not print the link: {said}");
    }
    assert!(!list.contains(signature));
}

//! The client against a real `veil serve` on loopback (SQLite, the Synthea
//! sample), through a proxy that injects faults: 503 on the kick-off, 429s
//! with Retry-After while polling, connections dropped mid-file, and files
//! that stop answering (an interrupted export, then resumed).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};
use veil_bulk::{Auth, Client, ExportRequest, Options, RetryPolicy};
use veil_server::export::{Storage, WorkerConfig, worker_loop};
use veil_store::Store;

const TYPES: [&str; 2] = ["Patient", "Immunization"];

/// `veil serve`, reached through the fault proxy: the server names the
/// proxy as its base, so the status and file URLs it gives lead there too.
struct Server {
    url: String,
    faults: Arc<Faults>,
    store: Arc<dyn Store>,
    storage: PathBuf,
    stop: Arc<AtomicBool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = std::fs::remove_dir_all(&self.storage);
    }
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("veil-bulk-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A policy with fixed keys and no perturb (whose noise is random by design),
/// so that two runs give the same output.
fn fixed_policy() -> String {
    let mut policy: Json = serde_json::from_str(include_str!("../../deid/policies/safe-harbor.json")).unwrap();
    policy["parameters"]["dateShiftKey"] = json!("bulk-test-date-key");
    policy["parameters"]["cryptoHashKey"] = json!("bulk-test-hash-key");
    policy["parameters"]["encryptKey"] = json!("0123456789abcdef0123456789abcdef");
    policy["fhirPathRules"].as_array_mut().unwrap().retain(|r| r["method"] != "perturb");
    policy.to_string()
}

/// `auth`: `Some(secs)` requires SMART tokens that live `secs`.
fn start(name: &'static str, auth: Option<u64>) -> Server {
    let db = temp(name).with_extension("db");
    let store: Arc<dyn Store> = Arc::from(veil_store::open(&format!("sqlite:{}", db.display())).unwrap());
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/synthea-r4-100.tar.gz");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::fs::File::open(sample).unwrap()));
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut text = String::new();
        entry.read_to_string(&mut text).unwrap();
        veil_server::load_document(&*store, serde_json::from_str(&text).unwrap(), &name).unwrap();
    }
    let storage_dir = temp(&format!("{name}-storage"));
    let storage = Storage::new(&storage_dir).unwrap();
    std::fs::write(storage_dir.join("anonymization/fixed.json"), fixed_policy()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (store, storage, stop) = (store.clone(), storage.clone(), stop.clone());
        // Small files, so that an export has many.
        std::thread::spawn(move || {
            worker_loop(&*store, &storage, name, WorkerConfig { file_limit: 300, lease_secs: 60 }, &stop)
        });
    }
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    proxy.set_nonblocking(true).unwrap();
    let url = format!("http://{}", proxy.local_addr().unwrap());
    let faults = Arc::new(Faults::default());
    let (tx, rx) = std::sync::mpsc::channel();
    let (st, public, f) = (store.clone(), url.clone(), faults.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let listener = veil_server::http::bind("127.0.0.1:0".parse().unwrap(), auth.is_some()).await.unwrap();
            let upstream = format!("http://{}", listener.local_addr().unwrap());
            let auth = auth.map(|secs| veil_server::auth::Auth::new(&*st).unwrap().with_token_lifetime(secs));
            let state = Arc::new(veil_server::http::AppState::new(st, storage, public, auth));
            let app = axum::Router::new().fallback(forward).with_state((upstream, f));
            let proxy = tokio::net::TcpListener::from_std(proxy).unwrap();
            tokio::spawn(async move { axum::serve(proxy, app).await.unwrap() });
            tx.send(()).unwrap();
            veil_server::http::serve(state, listener, std::future::pending()).await.unwrap();
        });
    });
    rx.recv().unwrap();
    Server { url, faults, store, storage: storage_dir, stop }
}

/// What the proxy does to the requests it forwards.
#[derive(Default)]
struct Faults {
    /// Kick-offs answered 503 before one is let through.
    kickoff_503: AtomicUsize,
    /// Status polls answered 429 (Retry-After: 1) before one is let through.
    poll_429: AtomicUsize,
    /// Files whose first response is cut off halfway.
    cut_first_try: AtomicBool,
    /// Files whose first request is answered 401 (a token the server no
    /// longer takes). Each file is refused once at most: files download in
    /// parallel, and a budget shared by all could refuse one file's retry
    /// too, with the fresh token, which the client rightly takes as final.
    file_401: AtomicUsize,
    /// The files refused so far.
    refused_401: Mutex<BTreeSet<String>>,
    /// Token requests seen.
    tokens: AtomicUsize,
    /// After this many whole files, every file request fails (an outage).
    files_until_outage: Mutex<Option<usize>>,
    /// Per file path: how often it was asked for.
    asked: Mutex<BTreeMap<String, usize>>,
}

async fn forward(State((upstream, faults)): State<(String, Arc<Faults>)>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let query = request.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
    let is_kickoff = path.ends_with("$export");
    let is_status = path.starts_with("/_export-status/");
    let is_token = path.ends_with("/token");
    let is_file = path.ends_with(".ndjson");
    if is_token {
        faults.tokens.fetch_add(1, Ordering::SeqCst);
    }
    let take = |n: &AtomicUsize| n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1)).is_ok();
    if is_kickoff && take(&faults.kickoff_503) {
        return (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response();
    }
    if is_status && take(&faults.poll_429) {
        return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")], "slow down").into_response();
    }
    if is_file {
        let mut refused = faults.refused_401.lock().unwrap();
        if !refused.contains(&path) && take(&faults.file_401) {
            refused.insert(path.clone());
            return (StatusCode::UNAUTHORIZED, "the token has expired").into_response();
        }
    }
    let mut tries = 0;
    if is_file {
        let mut outage = faults.files_until_outage.lock().unwrap();
        match &mut *outage {
            Some(0) => return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response(),
            Some(n) => *n -= 1,
            None => {}
        }
        let mut asked = faults.asked.lock().unwrap();
        let count = asked.entry(path.clone()).or_default();
        *count += 1;
        tries = *count;
    }
    let method = request.method().clone();
    let headers = request.headers().clone();
    let body = axum::body::to_bytes(request.into_body(), usize::MAX).await.unwrap();
    let client = reqwest::Client::new();
    let upstream_response =
        client.request(method, format!("{upstream}{path}{query}")).headers(headers).body(body).send().await.unwrap();
    let status = upstream_response.status();
    let mut headers = upstream_response.headers().clone();
    let bytes = upstream_response.bytes().await.unwrap();
    let mut body = bytes.to_vec();
    if is_file && tries == 1 && faults.cut_first_try.load(Ordering::SeqCst) && body.len() > 2 {
        // Claim the whole length, send half, and the connection is cut.
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        body.truncate(body.len() / 2);
    }
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    for (k, v) in &headers {
        if k != header::TRANSFER_ENCODING {
            response.headers_mut().insert(k, v.clone());
        }
    }
    response
}

fn client(server: &Server) -> Client {
    let mut client = Client::new(&server.url, Auth::None);
    client.retry = RetryPolicy { attempts: 4, max_wait: Duration::from_secs(2), poll: Duration::from_millis(200) };
    client
}

fn request() -> ExportRequest {
    ExportRequest { types: TYPES.iter().map(|t| t.to_string()).collect(), ..Default::default() }
}

fn options(dest: &Path, resume: bool) -> Options<'static> {
    Options { dest: dest.to_path_buf(), concurrency: 3, deid: None, keep_raw: None, resume }
}

/// Every resource in `dest`'s NDJSON files, by type and id, with how often it appears.
fn received(dest: &Path) -> BTreeMap<(String, String), usize> {
    let mut seen = BTreeMap::new();
    for entry in std::fs::read_dir(dest).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "ndjson") {
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                let doc: Json = serde_json::from_str(line).unwrap();
                *seen
                    .entry((doc["resourceType"].as_str().unwrap().to_string(), doc["id"].as_str().unwrap().to_string()))
                    .or_default() += 1;
            }
        }
    }
    seen
}

fn stored(store: &dyn Store) -> BTreeMap<(String, String), usize> {
    let mut all = BTreeMap::new();
    for ty in TYPES {
        let filter = veil_store::ScanFilter { types: Some(vec![ty.to_string()]), ..Default::default() };
        store
            .scan(&filter, &mut |s| {
                all.insert((s.resource_type, s.id), 1);
                Ok(true)
            })
            .unwrap();
    }
    all
}

#[test]
fn faults_are_weathered_and_every_resource_arrives_once() {
    let server = start("faults", None);
    server.faults.kickoff_503.store(1, Ordering::SeqCst);
    server.faults.poll_429.store(2, Ordering::SeqCst);
    server.faults.cut_first_try.store(true, Ordering::SeqCst);
    let dest = temp("faults-out");
    let lines = Mutex::new(Vec::new());
    let summary = veil_bulk::run(&client(&server), &request(), &options(&dest, false), &|l| {
        lines.lock().unwrap().push(l.to_string())
    })
    .unwrap();
    let expected = stored(&*server.store);
    assert_eq!(received(&dest), expected, "every resource exactly once, despite the faults");
    assert_eq!(summary.resources.values().sum::<u64>() as usize, expected.len());
    assert!(server.faults.asked.lock().unwrap().values().all(|&n| n == 2), "each cut file was fetched again, once");
    assert_eq!(server.faults.kickoff_503.load(Ordering::SeqCst), 0, "the 503 kick-off was retried");
    assert_eq!(server.faults.poll_429.load(Ordering::SeqCst), 0, "the 429 polls were waited out");
    assert!(lines.lock().unwrap().iter().any(|l| l.contains("files to fetch")), "progress was reported");
    assert!(summary.files > 2);
    let manifest: Json =
        serde_json::from_slice(&std::fs::read(dest.join("veil-export-manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["files"].as_object().unwrap().len(), summary.files);
    assert!(!dest.join(veil_bulk::STATE_FILE).exists(), "the state file goes when the export is done");
    let _ = std::fs::remove_dir_all(&dest);
}

#[test]
fn an_interrupted_export_resumes_without_duplicates() {
    let server = start("resume", None);
    *server.faults.files_until_outage.lock().unwrap() = Some(2);
    let dest = temp("resume-out");
    let failed =
        veil_bulk::run(&client(&server), &request(), &Options { concurrency: 1, ..options(&dest, false) }, &|_| {});
    assert!(failed.is_err(), "the outage stops the export");
    assert!(dest.join(veil_bulk::STATE_FILE).exists(), "and leaves its state");
    // Without --resume the folder is not overwritten.
    let refused = veil_bulk::run(&client(&server), &request(), &options(&dest, false), &|_| {});
    assert!(matches!(refused, Err(veil_bulk::BulkError::Destination(_))), "{refused:?}");

    // Nor is it resumed as another export.
    let other = ExportRequest { types: vec!["Patient".into()], ..Default::default() };
    let refused = veil_bulk::run(&client(&server), &other, &options(&dest, true), &|_| {});
    assert!(
        matches!(&refused, Err(veil_bulk::BulkError::Destination(m)) if m.contains("other parameters")),
        "{refused:?}"
    );

    *server.faults.files_until_outage.lock().unwrap() = None;
    let asked_before: usize = server.faults.asked.lock().unwrap().values().sum();
    let summary = veil_bulk::run(&client(&server), &request(), &options(&dest, true), &|_| {}).unwrap();
    assert_eq!(summary.reused, 2, "the two finished files were not fetched again");
    let asked_after: usize = server.faults.asked.lock().unwrap().values().sum();
    assert_eq!(asked_after - asked_before, summary.files - 2);
    assert_eq!(received(&dest), stored(&*server.store), "every resource exactly once");

    // A state whose export the server has forgotten: resuming says what to do.
    let forgotten = temp("resume-forgotten");
    std::fs::create_dir_all(&forgotten).unwrap();
    let state = veil_bulk::State {
        request_sha256: request().digest(),
        status_url: Some(format!("{}/_export-status/forgotten", server.url)),
        ..Default::default()
    };
    std::fs::write(forgotten.join(veil_bulk::STATE_FILE), serde_json::to_vec(&state).unwrap()).unwrap();
    match veil_bulk::run(&client(&server), &request(), &options(&forgotten, true), &|_| {}) {
        Err(veil_bulk::BulkError::Destination(m)) => {
            assert!(m.contains("no longer knows this export") && m.contains("to start again"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dest);
    let _ = std::fs::remove_dir_all(&forgotten);
}

#[test]
fn client_side_deid_equals_the_servers() {
    let server = start("deid", None);
    // Not R4 (an element FHIR does not define): neither side can de-identify it.
    let odd = json!({"resourceType": "Patient", "id": "odd-1", "nickname": "Zyxwplanted"});
    veil_server::load_document(&*server.store, odd, "odd").unwrap();
    let policy = veil_deid::Policy::parse(&fixed_policy()).unwrap();
    let engine = veil_deid::Engine::new(policy);
    let ours = temp("deid-client");
    let raw = temp("deid-raw");
    let opts = Options { deid: Some(&engine), keep_raw: Some(raw.clone()), ..options(&ours, false) };
    let summary = veil_bulk::run(&client(&server), &request(), &opts, &|_| {}).unwrap();
    assert_eq!(summary.left_out, 1, "the resource it cannot de-identify is left out, and counted");

    // The same export de-identified by the server ($export?_anonymizationConfig=).
    let theirs = temp("deid-server");
    let c = client(&server);
    let status = {
        let url = format!("{}/$export?_type={}&_anonymizationConfig=fixed.json", server.url, TYPES.join(","));
        let r = reqwest::blocking::Client::new().get(url).header("Prefer", "respond-async").send().unwrap();
        assert_eq!(r.status(), 202);
        r.headers()["content-location"].to_str().unwrap().to_string()
    };
    let manifest = c.wait(&status, &mut |_| {}).unwrap();
    std::fs::create_dir_all(&theirs).unwrap();
    for (i, file) in manifest.output.iter().enumerate() {
        let text = reqwest::blocking::get(&file.url).unwrap().text().unwrap();
        std::fs::write(theirs.join(format!("{i}.ndjson")), text).unwrap();
    }
    let lines = |dir: &Path| -> Vec<String> {
        let mut all: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "ndjson"))
            .flat_map(|p| std::fs::read_to_string(p).unwrap().lines().map(str::to_string).collect::<Vec<_>>())
            .collect();
        all.sort();
        all
    };
    let (a, b) = (lines(&ours), lines(&theirs));
    assert_eq!(a.len(), stored(&*server.store).len() - 1);
    assert!(!a.iter().any(|l| l.contains("Zyxwplanted")));
    // --keep-raw: the raw files went there, and only there.
    assert_eq!(received(&raw), stored(&*server.store), "the raw copy holds every resource as the server sent it");
    assert!(
        std::fs::read_dir(&raw)
            .unwrap()
            .any(|e| std::fs::read_to_string(e.unwrap().path()).unwrap().contains("Zyxwplanted"))
    );
    assert!(a == b, "client-side and server-side de-identification give the same resources");
    assert!(!a.iter().any(|l| l.contains("\"family\"")), "names are gone");
    let _ = std::fs::remove_dir_all(&ours);
    let _ = std::fs::remove_dir_all(&theirs);
    let _ = std::fs::remove_dir_all(&raw);
}

#[test]
fn tokens_are_renewed_as_they_lapse_and_when_refused() {
    let server = start("tokens", Some(2));
    let (key, _) = veil_smart::SigningKey::generate(veil_smart::KeyKind::Es384).unwrap();
    server
        .store
        .add_client(&veil_store::ClientRecord {
            id: "bulk-test".into(),
            name: "bulk test".into(),
            jwks: Some(key.public_jwks().to_string()),
            jwks_url: None,
            scopes: "system/*.read".into(),
            created: String::new(),
        })
        .unwrap();
    server.faults.file_401.store(3, Ordering::SeqCst);
    let tokens = veil_smart::TokenClient::new(&server.url, "bulk-test", key, "system/*.read");
    let mut client = Client::new(&server.url, Auth::Smart(Box::new(tokens)));
    client.retry = RetryPolicy { attempts: 4, max_wait: Duration::from_secs(2), poll: Duration::from_millis(200) };
    let dest = temp("tokens-out");
    veil_bulk::run(&client, &request(), &options(&dest, false), &|_| {}).unwrap();
    assert_eq!(received(&dest), stored(&*server.store), "every resource exactly once");
    assert_eq!(server.faults.file_401.load(Ordering::SeqCst), 0, "each refused file was asked for again");
    // Tokens live 2 s here: each request went with a fresh one.
    assert!(
        server.faults.tokens.load(Ordering::SeqCst) > 5,
        "{} token requests",
        server.faults.tokens.load(Ordering::SeqCst)
    );
    // Without credentials the server refuses, and the client says so.
    let refused = veil_bulk::run(
        &Client::new(&server.url, Auth::None),
        &request(),
        &options(&temp("tokens-none"), false),
        &|_| {},
    );
    assert!(matches!(&refused, Err(veil_bulk::BulkError::Status { status: 401, .. })), "{refused:?}");
    let _ = std::fs::remove_dir_all(&dest);
}

#[test]
fn named_patients_are_asked_for_in_a_post() {
    let server = start("post", None);
    let mut patients = Vec::new();
    let filter = veil_store::ScanFilter { types: Some(vec!["Patient".into()]), ..Default::default() };
    server
        .store
        .scan(&filter, &mut |s| {
            patients.push(s.id);
            Ok(patients.len() < 2)
        })
        .unwrap();
    let request = ExportRequest {
        level: veil_bulk::Level::Patient,
        types: vec!["Patient".into()],
        patients: patients.iter().map(|id| format!("Patient/{id}")).collect(),
        ..Default::default()
    };
    let dest = temp("post-out");
    veil_bulk::run(&client(&server), &request, &options(&dest, false), &|_| {}).unwrap();
    let expected: BTreeMap<(String, String), usize> =
        patients.into_iter().map(|id| (("Patient".to_string(), id), 1)).collect();
    assert_eq!(received(&dest), expected, "only the two named patients");
    let _ = std::fs::remove_dir_all(&dest);
}

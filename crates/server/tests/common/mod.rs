//! The fixture the HTTP tests share: a real `veil serve` on loopback over
//! SQLite or PostgreSQL, with export workers, loaded with the Synthea sample.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::blocking::Client;
use serde_json::{Value as Json, json};
use veil_server::auth::Auth;
use veil_server::export::{Storage, WorkerConfig};
use veil_server::http::AppState;
use veil_server::running::{Running, Start, start as start_serving};
use veil_store::Store;

pub struct Server {
    pub base: String,
    pub store: Arc<dyn Store>,
    pub storage: PathBuf,
    running: Option<Running>,
    cleanup: Box<dyn Fn()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop();
        }
        let _ = std::fs::remove_dir_all(&self.storage);
        (self.cleanup)();
    }
}

/// Fake identifiers planted in every place identifiers hide, as in veil-deid's Safe Harbor test.
pub const PLANTED: [&str; 10] = [
    "Zyxwplanted",
    "Qwertplanted",
    "555-867-5309",
    "999-12-3456",
    "742 Evergreen Terrace",
    "planted.person@example.org",
    "MRN-PLANTED-0001",
    "PLANTED-EXT-SECRET",
    "Containedplanted",
    "Springfieldplanted",
];

pub fn load_sample(store: &dyn Store) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/synthea-r4-100.tar.gz");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()));
    let mut bundles = 0usize;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut text = String::new();
        entry.read_to_string(&mut text).unwrap();
        let doc: Json = serde_json::from_str(&text).unwrap();
        let is_group = name.starts_with("groupInformation");
        bundles += usize::from(!is_group);
        veil_server::load_document(store, doc, &name).unwrap();
    }
    assert!(bundles >= 100);
    assert_eq!(store.counts().unwrap()["Patient"], 100, "all 100 Synthea patients");
    // A patient with planted identifiers, for the de-identified export.
    let planted = json!({"resourceType": "Patient", "id": "planted",
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Qwertplanted Zyxwplanted</div>"},
        "contained": [{"resourceType": "Practitioner", "id": "gp", "name": [{"family": "Containedplanted"}]}],
        "name": [{"family": "Zyxwplanted", "given": ["Qwertplanted"]}],
        "telecom": [{"system": "phone", "value": "555-867-5309"}, {"system": "email", "value": "planted.person@example.org"}],
        "identifier": [{"system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-12-3456"}, {"system": "http://example.org/mrn", "value": "MRN-PLANTED-0001"}],
        "address": [{"line": ["742 Evergreen Terrace"], "city": "Springfieldplanted", "postalCode": "99950"}],
        "birthDate": "1961-07-04", "_birthDate": {"extension": [{"url": "http://example.org/note", "valueString": "PLANTED-EXT-SECRET"}]}});
    veil_server::load_document(store, planted, "planted").unwrap();
    let note = json!({"resourceType": "Condition", "id": "planted-note", "subject": {"reference": "Patient/planted"},
        "code": {"text": "x"}, "note": [{"text": "Seen with Qwertplanted Zyxwplanted, call 555-867-5309"}]});
    veil_server::load_document(store, note, "planted-note").unwrap();
    // Not R4 (an element FHIR does not define): de-identification refuses it.
    let odd = json!({"resourceType": "Patient", "id": "MRN-ODD-4242", "nickname": "Zyxwplanted"});
    veil_server::load_document(store, odd, "odd").unwrap();
}

/// A server for one test. `auth`: `None` serves without authorization,
/// `Some(secs)` requires tokens that live `secs`.
pub fn start(name: &str, postgres: bool, auth: Option<u64>) -> Server {
    let (url, cleanup): (String, Box<dyn Fn()>) = if postgres {
        let base = std::env::var("VEIL_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let schema = format!("veil_export_{}_{name}", std::process::id());
        let drop_url = base.clone();
        let s2 = schema.clone();
        (
            format!("{base}?schema={schema}"),
            Box::new(move || {
                if let Ok(mut c) = postgres::Client::connect(&drop_url, postgres::NoTls) {
                    let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{s2}\" CASCADE"));
                }
            }),
        )
    } else {
        let db = std::env::temp_dir().join(format!("veil-export-{name}-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&db);
        let d2 = db.clone();
        (
            format!("sqlite:{}", db.display()),
            Box::new(move || {
                for s in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{s}", d2.display()));
                }
            }),
        )
    };
    let store: Arc<dyn Store> = Arc::from(veil_store::open(&url).expect("store (PostgreSQL: see scripts/test)"));
    load_sample(&*store);
    let storage_dir = std::env::temp_dir().join(format!("veil-export-storage-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&storage_dir);
    let storage = Storage::new(&storage_dir).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deid/policies/safe-harbor.json"),
        storage_dir.join("anonymization/safe-harbor.json"),
    )
    .unwrap();
    let config = Start {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 2,
        worker: WorkerConfig { file_limit: 500, lease_secs: 60 },
        owner: "test".into(),
    };
    let st = store.clone();
    let running = start_serving(config, auth.is_some(), move |addr| {
        let auth = auth.map(|secs| Auth::new(&*st).unwrap().with_token_lifetime(secs));
        let mut state = AppState::new(st, storage, format!("http://{addr}"), auth);
        // These tests send refused token requests on purpose, many in a
        // row; the failure backoff has tests of its own (tests/python/test_hostile.py).
        state.token_guard.free_failures = 1000;
        state
    })
    .unwrap();
    let base = format!("http://{}", running.addr());
    Server { base, store, storage: storage_dir, running: Some(running), cleanup }
}

pub fn client() -> Client {
    Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

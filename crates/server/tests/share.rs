//! Veil share links against a real server on loopback: what a link opens,
//! what it refuses (tampered, expired, revoked, wrong address, any path
//! outside the export's manifest, sent as raw bytes so that no client
//! library tidies it first), and the audit log.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;

use veil_server::export::Storage;
use veil_server::http::AppState;
use veil_server::running::{Running, Start, start as start_serving};
use veil_storage::share::{sign_token, verify_token};
use veil_store::{ShareRecord, Store};

struct Fixture {
    addr: std::net::SocketAddr,
    store: Arc<dyn Store>,
    key: Vec<u8>,
    root: PathBuf,
    running: Option<Running>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A server, and an export folder `root/export` (two files and their
/// manifest, plus a file the manifest does not name) beside a secret
/// `root/secret.txt` and the store `root/veil.db`.
fn start(name: &str) -> Fixture {
    let root = std::env::temp_dir().join(format!("veil-share-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let export = root.join("export");
    std::fs::create_dir_all(export.join("sub")).unwrap();
    std::fs::write(export.join("Patient-1.ndjson"), "{\"resourceType\":\"Patient\",\"id\":\"a\"}\n".repeat(200))
        .unwrap();
    std::fs::write(export.join("sub/Observation-1.ndjson"), "{\"resourceType\":\"Observation\"}\n").unwrap();
    let manifest = veil_storage::manifest_of_dir(&export).unwrap();
    std::fs::write(export.join(veil_storage::MANIFEST_NAME), manifest.to_json()).unwrap();
    std::fs::write(export.join("unlisted.txt"), "UNLISTED-CONTENT").unwrap();
    std::fs::write(root.join("secret.txt"), "TOP-SECRET-CONTENT").unwrap();
    let store: Arc<dyn Store> =
        Arc::from(veil_store::open(&format!("sqlite:{}", root.join("veil.db").display())).unwrap());
    let storage = Storage::new(root.join("storage")).unwrap();
    let config =
        Start { listen: "127.0.0.1:0".parse().unwrap(), workers: 0, worker: Default::default(), owner: "test".into() };
    let st = store.clone();
    let running =
        start_serving(config, false, move |addr| AppState::new(st, storage, format!("http://{addr}"), None)).unwrap();
    let addr = running.addr();
    let key = veil_server::share::ShareKey::default().get(&*store).unwrap();
    Fixture { addr, store, key, root, running: Some(running) }
}

impl Fixture {
    /// Records a share of the export folder and gives its token.
    fn share(&self, id: &str, lifetime: i64, ip: Option<&str>) -> String {
        let expires = (veil_util::clock::now_secs() as i64 + lifetime) as u64;
        self.store
            .add_share(&ShareRecord {
                id: id.into(),
                kind: "veil".into(),
                location: self.root.join("export").display().to_string(),
                created: String::new(),
                expires: veil_util::clock::iso(expires),
                recipient: Some("Team A".into()),
                ip: ip.map(str::to_string),
                revoked: None,
                identified: false,
            })
            .unwrap();
        sign_token(&self.key, id, expires)
    }

    /// Sends `GET path` exactly as written; gives the status and body.
    fn raw_get(&self, path: &str, extra: &str) -> (u16, String) {
        let mut s = TcpStream::connect(self.addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{extra}\r\n", self.addr).unwrap();
        let mut response = Vec::new();
        s.read_to_end(&mut response).unwrap();
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    }

    fn get(&self, path: &str) -> reqwest::blocking::Response {
        reqwest::blocking::get(format!("http://{}{path}", self.addr)).unwrap()
    }
}

fn reason(r: reqwest::blocking::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().unwrap();
    (status, body["error"].as_str().unwrap().to_string())
}

#[test]
fn a_link_opens_exactly_its_export_and_every_download_is_audited() {
    let f = start("opens");
    let token = f.share("sh_00000000000000a1", 3600, None);
    let listing: serde_json::Value = f.get(&format!("/share/{token}/")).json().unwrap();
    assert_eq!(listing["format"], "veil-share/1");
    assert_eq!(listing["share"], "sh_00000000000000a1");
    let files: Vec<&str> = listing["files"].as_array().unwrap().iter().map(|x| x["path"].as_str().unwrap()).collect();
    assert_eq!(files, ["Patient-1.ndjson", "sub/Observation-1.ndjson"], "the manifest's files, and only those");
    let same_without_slash: serde_json::Value = f.get(&format!("/share/{token}")).json().unwrap();
    assert_eq!(same_without_slash["files"], listing["files"]);

    let expected = std::fs::read(f.root.join("export/Patient-1.ndjson")).unwrap();
    let r = f.get(&format!("/share/{token}/Patient-1.ndjson"));
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap().as_ref(), expected.as_slice());
    assert_eq!(f.get(&format!("/share/{token}/sub/Observation-1.ndjson")).status(), 200);
    // From byte 100 on, as a resumed download asks.
    let (status, body) = f.raw_get(&format!("/share/{token}/Patient-1.ndjson"), "Range: bytes=100-\r\n");
    assert_eq!(status, 206);
    assert_eq!(body.as_bytes(), &expected[100..]);
    // A file in the folder that the manifest does not name is not shared.
    let (status, body) = f.raw_get(&format!("/share/{token}/unlisted.txt"), "");
    assert_eq!(status, 404);
    assert!(!body.contains("UNLISTED"));

    let log = f.store.downloads(Some("sh_00000000000000a1")).unwrap();
    let seen: Vec<(&str, i64, &str)> = log.iter().map(|d| (d.file.as_str(), d.bytes, d.client.as_str())).collect();
    let full = expected.len() as i64;
    assert_eq!(
        seen,
        [
            ("Patient-1.ndjson", full, "127.0.0.1"),
            ("sub/Observation-1.ndjson", 31, "127.0.0.1"),
            ("Patient-1.ndjson", full - 100, "127.0.0.1")
        ]
    );
    assert!(log.iter().all(|d| d.time.len() == 24));
}

#[test]
fn tampered_expired_and_revoked_links_are_refused() {
    let f = start("refused");
    let token = f.share("sh_00000000000000b1", 3600, None);
    assert_eq!(f.get(&format!("/share/{token}/Patient-1.ndjson")).status(), 200);

    // Tampered: a digit of the signature, the expiry, the share id.
    let mut flipped = token.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'a' { b'b' } else { b'a' };
    let flipped = String::from_utf8(flipped).unwrap();
    let (id, rest) = token.split_once('.').unwrap().1.split_once('.').unwrap();
    let later = format!("v1.{id}.{}.{}", u64::MAX / 2, rest.split_once('.').unwrap().1);
    let other_id = token.replace("sh_00000000000000b1", "sh_00000000000000b2");
    for bad in [flipped, later, other_id, "v1.sh_00000000000000b1".into(), "anything".into()] {
        assert_eq!(reason(f.get(&format!("/share/{bad}/Patient-1.ndjson"))), (403, "invalid".into()), "{bad}");
        assert_eq!(reason(f.get(&format!("/share/{bad}/"))).0, 403);
    }
    // A token signed with another key (someone else's Veil).
    let foreign = sign_token(b"another key", "sh_00000000000000b1", veil_util::clock::now_secs() + 3600);
    assert_eq!(reason(f.get(&format!("/share/{foreign}/"))), (403, "invalid".into()));

    // Expired: the token's expiry has passed.
    let old = f.share("sh_00000000000000b3", 1, None);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert!(verify_token(&f.key, &old, veil_util::clock::now_secs()).is_err());
    assert_eq!(reason(f.get(&format!("/share/{old}/Patient-1.ndjson"))), (403, "expired".into()));

    // Revoked: refused from the next request on, the manifest too.
    assert!(f.store.revoke_share("sh_00000000000000b1").unwrap());
    assert_eq!(reason(f.get(&format!("/share/{token}/Patient-1.ndjson"))), (403, "revoked".into()));
    assert_eq!(reason(f.get(&format!("/share/{token}/"))), (403, "revoked".into()));
    // None of the refusals was audited as a download.
    assert_eq!(f.store.downloads(None).unwrap().len(), 1);
}

#[test]
fn an_address_range_limits_who_may_use_a_link() {
    let f = start("address");
    let elsewhere = f.share("sh_00000000000000c1", 3600, Some("10.0.0.0/8"));
    assert_eq!(reason(f.get(&format!("/share/{elsewhere}/Patient-1.ndjson"))), (403, "address".into()));
    let here = f.share("sh_00000000000000c2", 3600, Some("127.0.0.0/8"));
    assert_eq!(f.get(&format!("/share/{here}/Patient-1.ndjson")).status(), 200);
}

#[test]
fn paths_outside_the_manifest_are_refused_however_they_are_written() {
    let f = start("traversal");
    let token = f.share("sh_00000000000000d1", 3600, None);
    let attempts = [
        "../secret.txt",
        "../../secret.txt",
        "sub/../../secret.txt",
        "%2e%2e/secret.txt",
        "%2E%2E%2Fsecret.txt",
        "..%2fsecret.txt",
        "sub%2f..%2f..%2fsecret.txt",
        "%252e%252e/secret.txt",
        "%252e%252e%252fsecret.txt",
        "..%5csecret.txt",
        "..\\secret.txt",
        "/etc/passwd",
        "%2Fetc%2Fpasswd",
        "%2F..%2Fsecret.txt",
        "./Patient-1.ndjson",
        "sub//Observation-1.ndjson",
        "Patient-1.ndjson%00.txt",
        "veil-manifest.json/../../secret.txt",
    ];
    for path in attempts {
        let (status, body) = f.raw_get(&format!("/share/{token}/{path}"), "");
        assert!((400..500).contains(&status), "{path}: {status}");
        assert!(!body.contains("TOP-SECRET") && !body.contains("root:"), "{path}");
    }
    // Outside the share prefix entirely.
    for path in [format!("/share/{token}/../../veil.db"), format!("/share/%2e%2e/{token}/secret.txt")] {
        let (status, body) = f.raw_get(&path, "");
        assert!((400..500).contains(&status), "{path}: {status}");
        assert!(!body.contains("TOP-SECRET"));
    }
    assert!(f.store.downloads(None).unwrap().is_empty(), "nothing was served");
}

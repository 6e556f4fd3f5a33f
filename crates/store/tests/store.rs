//! One suite, run against both stores: SQLite in a temporary file and the
//! PostgreSQL server at `VEIL_TEST_POSTGRES` (default: the machine's own on
//! 127.0.0.1:5432; `.ci/run` starts one where there is none). Each
//! PostgreSQL test works in a schema of its own, dropped afterwards.

use std::collections::BTreeMap;
use std::path::PathBuf;

use veil_store::{Change, ClientRecord, JobState, ScanFilter, ShareDownload, ShareRecord, Store, Write, Written, open};

fn pg_url() -> String {
    std::env::var("VEIL_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A store for one test, removed when dropped.
struct Fixture {
    store: Box<dyn Store>,
    cleanup: Box<dyn Fn()>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        (self.cleanup)();
    }
}

fn sqlite(name: &str) -> Fixture {
    let path: PathBuf = std::env::temp_dir().join(format!("veil-store-{name}-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let store = open(&format!("sqlite:{}", path.display())).unwrap();
    Fixture {
        store,
        cleanup: Box::new(move || {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }),
    }
}

fn postgres(name: &str) -> Fixture {
    let schema = format!("veil_test_{}_{name}", std::process::id());
    let url = format!("{}?schema={schema}", pg_url());
    let store = open(&url).unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is needed for the store tests ({e}); set VEIL_TEST_POSTGRES or run .ci/run, which starts one"
        )
    });
    Fixture {
        store,
        cleanup: Box::new(move || {
            if let Ok(mut c) = veil_sql::connect_postgres(&pg_url()) {
                let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"));
            }
        }),
    }
}

/// Runs each test body against both stores.
macro_rules! both {
    ($($name:ident => $body:expr;)*) => {
        mod on_sqlite { use super::*; $( #[test] fn $name() { let f = sqlite(stringify!($name)); ($body)(&*f.store); } )* }
        mod on_postgres { use super::*; $( #[test] fn $name() { let f = postgres(stringify!($name)); ($body)(&*f.store); } )* }
    };
}

fn patient(id: &str) -> String {
    format!(r#"{{"resourceType":"Patient","id":"{id}","birthDate":"1970-01-01","note":"1.50"}}"#)
}

fn put(store: &dyn Store, ty: &str, id: &str, body: &str, patients: &[&str]) {
    let patients: Vec<String> = patients.iter().map(|p| p.to_string()).collect();
    store.put(&[Write { resource_type: ty, id, body, patients: &patients, group_members: None }]).unwrap();
}

fn scan(store: &dyn Store, filter: &ScanFilter) -> Vec<String> {
    let mut out = Vec::new();
    store
        .scan(filter, &mut |s| {
            out.push(format!("{}/{}", s.resource_type, s.id));
            Ok(true)
        })
        .unwrap();
    out
}

both! {
    clients_are_registered_listed_and_removed_with_their_nonces => |s: &dyn Store| {
        let client = |id: &str, name: &str| ClientRecord {
            id: id.into(), name: name.into(), jwks: Some(r#"{"keys":[]}"#.into()), jwks_url: None, scopes: "system/*.read".into(), created: String::new(),
        };
        let b = s.add_client(&client("b", "Team B")).unwrap();
        assert_eq!(b.created.len(), 24, "the store sets when it was registered");
        s.add_client(&ClientRecord { jwks: None, jwks_url: Some("https://keys.example/jwks.json".into()), ..client("a", "Team A") }).unwrap();
        assert!(s.add_client(&client("a", "again")).is_err(), "an id is registered once");
        let names: Vec<String> = s.clients().unwrap().into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["Team A", "Team B"]);
        assert_eq!(s.client("a").unwrap().unwrap().jwks_url.as_deref(), Some("https://keys.example/jwks.json"));
        assert_eq!(s.client("b").unwrap().unwrap(), b);
        assert!(s.record_jti("b", "n1", 200, 100).unwrap());
        assert!(s.remove_client("b").unwrap());
        assert!(!s.remove_client("b").unwrap());
        assert!(s.client("b").unwrap().is_none());
        assert!(s.record_jti("b", "n1", 200, 100).unwrap(), "removing a client forgets its nonces");
    };
    a_nonce_is_accepted_once_until_it_expires => |s: &dyn Store| {
        assert!(s.record_jti("c1", "n1", 1_000, 900).unwrap());
        assert!(!s.record_jti("c1", "n1", 1_000, 950).unwrap(), "a replay within its lifetime");
        assert!(s.record_jti("c2", "n1", 1_000, 950).unwrap(), "nonces are per client");
        assert!(s.record_jti("c1", "n1", 2_000, 1_001).unwrap(), "forgotten once expired");
    };
    a_secret_is_made_once_and_shared => |s: &dyn Store| {
        let mut made = 0;
        let first = s.secret("token-key", &mut || { made += 1; format!("k{made}") }).unwrap();
        let again = s.secret("token-key", &mut || { made += 1; format!("k{made}") }).unwrap();
        assert_eq!((first.as_str(), again.as_str()), ("k1", "k1"));
        assert_eq!(s.secret("other", &mut || "x".into()).unwrap(), "x");
    };
    shares_are_recorded_revoked_once_and_audited => |s: &dyn Store| {
        let share = |id: &str| ShareRecord {
            id: id.into(), kind: "veil".into(), location: "file:///exports/a".into(), created: String::new(),
            expires: "2030-01-01T00:00:00.000Z".into(), recipient: Some("Team A".into()), ip: None, revoked: None, identified: false,
        };
        let made = s.add_share(&share("sh_1")).unwrap();
        assert_eq!(made.created.len(), 24, "the store sets the creation time");
        assert_eq!(s.share("sh_1").unwrap().unwrap(), made);
        assert!(s.add_share(&share("sh_1")).is_err(), "ids are unique");
        std::thread::sleep(std::time::Duration::from_millis(5));
        s.add_share(&ShareRecord { ip: Some("10.0.0.0/8".into()), identified: true, ..share("sh_2") }).unwrap();
        assert!(s.share("sh_2").unwrap().unwrap().identified, "an identified share is recorded as one");
        assert!(!s.share("sh_1").unwrap().unwrap().identified);
        let ids: Vec<String> = s.shares().unwrap().into_iter().map(|x| x.id).collect();
        assert_eq!(ids, ["sh_2", "sh_1"], "newest first");
        assert!(s.revoke_share("sh_1").unwrap());
        assert!(!s.revoke_share("sh_1").unwrap(), "revoked once");
        assert!(!s.revoke_share("sh_none").unwrap());
        assert!(s.share("sh_1").unwrap().unwrap().revoked.is_some());
        assert!(s.share("sh_2").unwrap().unwrap().revoked.is_none());
        for (id, file) in [("sh_1", "a.ndjson"), ("sh_2", "b.ndjson"), ("sh_1", "c.ndjson")] {
            s.record_download(&ShareDownload { share_id: id.into(), time: String::new(), file: file.into(), bytes: 7, client: "127.0.0.1".into() }).unwrap();
        }
        let files = |id: Option<&str>| s.downloads(id).unwrap().into_iter().map(|d| d.file).collect::<Vec<_>>();
        assert_eq!(files(Some("sh_1")), ["a.ndjson", "c.ndjson"]);
        assert_eq!(files(None), ["a.ndjson", "b.ndjson", "c.ndjson"]);
        assert_eq!(s.downloads(Some("sh_2")).unwrap()[0].bytes, 7);
    };
    writes_read_back_exactly_with_versions => |s: &dyn Store| {
        let body = patient("p1");
        put(s, "Patient", "p1", &body, &["p1"]);
        let first = s.get("Patient", "p1").unwrap().unwrap();
        assert_eq!((first.version, first.body.as_deref()), (1, Some(body.as_str())));
        assert_eq!(first.last_updated.len(), 24);
        std::thread::sleep(std::time::Duration::from_millis(5));
        put(s, "Patient", "p1", &patient("p1").replace("1970", "1971"), &["p1"]);
        let second = s.get("Patient", "p1").unwrap().unwrap();
        assert_eq!(second.version, 2);
        assert!(second.last_updated > first.last_updated && second.seq > first.seq);
        assert!(s.get("Patient", "nope").unwrap().is_none());
        assert!(s.get("Observation", "p1").unwrap().is_none(), "ids are per type");
    };

    deletes_leave_tombstones => |s: &dyn Store| {
        put(s, "Patient", "p1", &patient("p1"), &["p1"]);
        put(s, "Patient", "p2", &patient("p2"), &["p2"]);
        let gone = s.delete("Patient", "p1").unwrap().unwrap();
        assert_eq!((gone.version, gone.body), (2, None));
        assert!(s.delete("Patient", "p1").unwrap().is_none(), "already deleted");
        assert!(s.delete("Patient", "never").unwrap().is_none());
        assert_eq!(s.counts().unwrap(), BTreeMap::from([("Patient".to_string(), 1)]));
        assert_eq!(scan(s, &ScanFilter::default()), ["Patient/p2"]);
        assert_eq!(scan(s, &ScanFilter { deleted: true, ..Default::default() }), ["Patient/p1"]);
        put(s, "Patient", "p1", &patient("p1"), &["p1"]);
        assert_eq!(s.get("Patient", "p1").unwrap().unwrap().version, 3, "recreated after delete");
    };

    scans_filter_and_stream_in_order => |s: &dyn Store| {
        // More than one scan batch (2,000), written in one transaction.
        let bodies: Vec<(String, String)> = (0..4500).map(|i| (format!("o{i:05}"), format!(r#"{{"resourceType":"Observation","id":"o{i:05}"}}"#))).collect();
        let pats: Vec<Vec<String>> = (0..4500).map(|i| vec![format!("p{}", i % 3)]).collect();
        let writes: Vec<Write<'_>> = bodies.iter().zip(&pats).map(|((id, b), p)| Write { resource_type: "Observation", id, body: b, patients: p, group_members: None }).collect();
        s.put(&writes).unwrap();
        put(s, "Patient", "p0", &patient("p0"), &["p0"]);
        let all = scan(s, &ScanFilter::default());
        assert_eq!(all.len(), 4501);
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(all, sorted, "(type, id) order");
        assert_eq!(scan(s, &ScanFilter { types: Some(vec!["Patient".into()]), ..Default::default() }), ["Patient/p0"]);
        assert!(scan(s, &ScanFilter { types: Some(vec![]), ..Default::default() }).is_empty());
        let p0 = scan(s, &ScanFilter { patients: Some(vec!["p0".into()]), ..Default::default() });
        assert_eq!(p0.len(), 1501, "1,500 observations and the patient");
        let both = scan(s, &ScanFilter { patients: Some(vec!["p1".into(), "p2".into()]), types: Some(vec!["Observation".into()]), ..Default::default() });
        assert_eq!(both.len(), 3000);
        // Time windows: everything so far is before a later write.
        std::thread::sleep(std::time::Duration::from_millis(5));
        let cut = veil_util::clock::now_instant();
        std::thread::sleep(std::time::Duration::from_millis(5));
        put(s, "Patient", "late", &patient("late"), &["late"]);
        assert_eq!(scan(s, &ScanFilter { since: Some(cut.clone()), ..Default::default() }), ["Patient/late"]);
        assert_eq!(scan(s, &ScanFilter { until: Some(cut), ..Default::default() }).len(), 4501);
        // Early stop.
        let mut n = 0;
        s.scan(&ScanFilter::default(), &mut |_| { n += 1; Ok(n < 10) }).unwrap();
        assert_eq!(n, 10);
    };

    a_batch_may_name_a_resource_twice => |s: &dyn Store| {
        let a = patient("p1");
        let a2 = a.replace("1.50", "1.75");
        let writes = [
            Write { resource_type: "Patient", id: "p1", body: &a, patients: &[], group_members: None },
            Write { resource_type: "Patient", id: "p1", body: &a2, patients: &[], group_members: None },
            Write { resource_type: "Patient", id: "p1", body: &a2, patients: &[], group_members: None },
        ];
        let written = s.put(&writes).unwrap();
        let outcome = |w: &[Written]| w.iter().map(|x| (x.stored.id.clone(), x.stored.version, x.change)).collect::<Vec<_>>();
        assert_eq!(
            outcome(&written),
            [("p1".into(), 1, Change::Created), ("p1".into(), 2, Change::Updated), ("p1".into(), 2, Change::Unchanged)]
        );
        assert_eq!(s.get("Patient", "p1").unwrap().unwrap().version, 2);
        // A batch of distinct resources reports each one's version; the
        // same body again keeps its version and its place in the change order.
        let before = s.get("Patient", "p1").unwrap().unwrap();
        let b = patient("p2");
        let writes = [
            Write { resource_type: "Patient", id: "p1", body: &a2, patients: &["p1".into()], group_members: None },
            Write { resource_type: "Patient", id: "p2", body: &b, patients: &["p2".into()], group_members: None },
        ];
        let written = s.put(&writes).unwrap();
        assert_eq!(outcome(&written), [("p1".into(), 2, Change::Unchanged), ("p2".into(), 1, Change::Created)]);
        assert_eq!(written[0].stored, before, "unchanged: version, time and change order kept");
        let writes = [
            Write { resource_type: "Patient", id: "p1", body: &a, patients: &["p1".into()], group_members: None },
            Write { resource_type: "Patient", id: "p2", body: &a2.replace("p1", "p2"), patients: &["p2".into()], group_members: None },
        ];
        let written = s.put(&writes).unwrap();
        assert_eq!(outcome(&written), [("p1".into(), 3, Change::Updated), ("p2".into(), 2, Change::Updated)]);
        assert_ne!(written[0].stored.seq, written[1].stored.seq, "each write takes its own place in the change order");
        // The compartment is the caller's, replaced even when the body is not.
        assert_eq!(scan(s, &ScanFilter { patients: Some(vec!["p2".into()]), ..Default::default() }), ["Patient/p2"]);
        assert_eq!(scan(s, &ScanFilter { patients: Some(vec!["p1".into()]), ..Default::default() }), ["Patient/p1"]);
    };

    groups_keep_their_members => |s: &dyn Store| {
        let members = vec!["p1".to_string(), "p2".to_string()];
        s.put(&[Write { resource_type: "Group", id: "g", body: r#"{"resourceType":"Group","id":"g"}"#, patients: &[], group_members: Some(&members) }]).unwrap();
        assert_eq!(s.group_members("g").unwrap(), Some(members));
        let fewer = vec!["p3".to_string()];
        s.put(&[Write { resource_type: "Group", id: "g", body: r#"{"resourceType":"Group","id":"g"}"#, patients: &[], group_members: Some(&fewer) }]).unwrap();
        assert_eq!(s.group_members("g").unwrap(), Some(fewer));
        assert_eq!(s.group_members("other").unwrap(), None);
        s.delete("Group", "g").unwrap();
        assert_eq!(s.group_members("g").unwrap(), None);
    };

    jobs_are_leased_to_one_worker => |s: &dyn Store| {
        let j = s.create_job("j1", r#"{"kind":"system"}"#).unwrap();
        assert_eq!((j.state, j.attempts), (JobState::Queued, 0));
        let claimed = s.claim_job("w1", 60).unwrap().unwrap();
        assert_eq!((claimed.id.as_str(), claimed.state, claimed.attempts), ("j1", JobState::Running, 1));
        assert!(s.claim_job("w2", 60).unwrap().is_none(), "a live lease is not taken");
        assert!(s.heartbeat("j1", "w1", 60, Some(r#"{"done":10}"#)).unwrap());
        assert!(!s.heartbeat("j1", "w2", 60, None).unwrap());
        assert_eq!(s.job("j1").unwrap().unwrap().progress.as_deref(), Some(r#"{"done":10}"#));
        assert!(s.finish_job("j1", "w1", JobState::Completed, r#"{"output":[]}"#).unwrap());
        let done = s.job("j1").unwrap().unwrap();
        assert_eq!((done.state, done.result.as_deref()), (JobState::Completed, Some(r#"{"output":[]}"#)));
        assert_eq!(s.jobs().unwrap(), vec![done.clone()], "every job is listed");
        assert!(!s.finish_job("j1", "w1", JobState::Failed, "late").unwrap(), "finished once");
        assert!(s.delete_job("j1").unwrap());
        assert!(s.job("j1").unwrap().is_none());
        assert!(!s.delete_job("j1").unwrap());
    };

    lapsed_leases_are_taken_over_and_cancellation_stops_the_worker => |s: &dyn Store| {
        s.create_job("j2", "{}").unwrap();
        // A lease that has already lapsed: the worker "died".
        assert!(s.claim_job("dead", -1).unwrap().is_some());
        let again = s.claim_job("w2", 60).unwrap().unwrap();
        assert_eq!((again.lease_owner.as_deref(), again.attempts), (Some("w2"), 2));
        assert!(!s.heartbeat("j2", "dead", 60, None).unwrap(), "the old worker learns it lost the job");
        assert!(!s.finish_job("j2", "dead", JobState::Completed, "{}").unwrap());
        assert!(s.cancel_job("j2").unwrap());
        assert!(!s.heartbeat("j2", "w2", 60, None).unwrap(), "cancelled: the worker stops");
        assert_eq!(s.job("j2").unwrap().unwrap().state, JobState::Cancelled);
        assert!(!s.cancel_job("none").unwrap());
    };
}

/// Several processes sharing one PostgreSQL queue: every job is claimed once.
#[test]
fn postgres_workers_share_the_queue() {
    let f = postgres("shared_queue");
    for i in 0..40 {
        f.store.create_job(&format!("job{i:02}"), "{}").unwrap();
    }
    let schema = format!("veil_test_{}_shared_queue", std::process::id());
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let url = format!("{}?schema={schema}", pg_url());
            std::thread::spawn(move || {
                let store = open(&url).unwrap();
                let mut mine = Vec::new();
                while let Some(j) = store.claim_job(&format!("w{w}"), 60).unwrap() {
                    mine.push(j.id);
                }
                mine
            })
        })
        .collect();
    let mut all: Vec<String> = workers.into_iter().flat_map(|h| h.join().unwrap()).collect();
    all.sort();
    let expected: Vec<String> = (0..40).map(|i| format!("job{i:02}")).collect();
    assert_eq!(all, expected, "each job exactly once");
}

#[test]
fn unknown_urls_are_refused() {
    assert!(open("mysql://x").is_err());
}

/// The `shares` table as the first release made it, before `identified`.
const SHARES_BEFORE_IDENTIFIED: &str = "CREATE TABLE shares (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, location TEXT NOT NULL, created TEXT NOT NULL,
    expires TEXT NOT NULL, recipient TEXT, ip TEXT, revoked TEXT);
    INSERT INTO shares VALUES ('sh_old', 'veil', 'exports/1', '2026-01-01T00:00:00Z', '2026-02-01T00:00:00Z', NULL, NULL, NULL)";

fn opens_a_store_made_before_a_column_was_added(store: &dyn Store) {
    let old = store.share("sh_old").unwrap().expect("the old share is kept");
    assert!(!old.identified, "an old share reads as de-identified, the column's default");
    let new = ShareRecord { id: "sh_new".into(), identified: true, ..old };
    assert!(store.add_share(&new).unwrap().identified);
}

#[test]
fn sqlite_store_made_before_a_column_was_added_opens() {
    let path = std::env::temp_dir().join(format!("veil-store-old-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    veil_sql::Database::open(&path.display().to_string(), 0, |db| db.batch(SHARES_BEFORE_IDENTIFIED)).unwrap();
    let store = open(&format!("sqlite:{}", path.display())).unwrap();
    opens_a_store_made_before_a_column_was_added(&*store);
    drop(store);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[test]
fn postgres_store_made_before_a_column_was_added_opens() {
    let schema = format!("veil_test_{}_old_columns", std::process::id());
    let url = format!("{}?schema={schema}", pg_url());
    let mut c = veil_sql::connect_postgres(&url).unwrap();
    c.batch_execute(&format!("DROP TABLE IF EXISTS shares; {SHARES_BEFORE_IDENTIFIED}")).unwrap();
    let store = open(&url).unwrap();
    opens_a_store_made_before_a_column_was_added(&*store);
    drop(store);
    let _ = c.batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"));
}

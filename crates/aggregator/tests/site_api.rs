//! The aggregator over real HTTP on loopback: sites upload data packages
//! (Parquet written by Veil's own writer, zipped here) through the Cumulus
//! handshake and the signed upload endpoint; the query API reads the merge.
//! Every test runs twice: on a SQLite file and on PostgreSQL (the server at
//! `VEIL_TEST_POSTGRES`, default the machine's own on 127.0.0.1:5432, each
//! test in a schema of its own).

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::Arc;

use reqwest::blocking::{Client, Response, multipart};
use serde_json::{Value as Json, json};
use veil_aggregator::http::{Config, router};
use veil_aggregator::package::Limits;
use veil_aggregator::{Ledger, Outcome};
use veil_views::{ColumnType, ParquetWriter, Row};

struct Aggregator {
    url: String,
    ledger: Arc<Ledger>,
    http: Client,
    key: String,
    /// The database the ledger opened, for a second server on it.
    target: String,
    /// What the server runs on (its storage, for the staging sweep).
    config: Arc<Config>,
    _dir: TempDir,
    _schema: Option<Schema>,
}

/// Where the ledger lives.
#[derive(Clone, Copy)]
enum Db {
    Sqlite,
    Postgres,
}

/// A PostgreSQL schema made for one test, dropped when it ends.
struct Schema {
    server: String,
    name: String,
}

impl Schema {
    fn fresh(name: String) -> Schema {
        let server = std::env::var("VEIL_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let schema = Schema { server, name };
        schema.drop_it().unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is needed for these tests ({e}); set VEIL_TEST_POSTGRES or run .ci/run, which starts one"
            )
        });
        schema
    }

    fn url(&self) -> String {
        let join = if self.server.contains('?') { '&' } else { '?' };
        format!("{}{join}schema={}", self.server, self.name)
    }

    fn drop_it(&self) -> Result<(), postgres::Error> {
        let mut client = postgres::Client::connect(&self.server, postgres::NoTls)?;
        client.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = self.drop_it();
    }
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start(name: &str, db: Db, limits: Limits) -> Aggregator {
    let tag = match db {
        Db::Sqlite => "sqlite",
        Db::Postgres => "pg",
    };
    let dir = std::env::temp_dir().join(format!("veil-aggregator-{name}-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let schema =
        matches!(db, Db::Postgres).then(|| Schema::fresh(format!("veil_aggregator_{name}_{}", std::process::id())));
    let target = match &schema {
        Some(schema) => schema.url(),
        None => dir.join("aggregator.db").to_string_lossy().into_owned(),
    };
    let ledger = Arc::new(Ledger::open(&target).unwrap());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let storage = Arc::new(veil_storage::Storage::open(&veil_storage::Location::Local(dir.clone())).unwrap());
    let config = Config {
        ledger: ledger.clone(),
        storage,
        base_url: url.clone(),
        network: Some("flu-net".into()),
        min_cell: 10,
        limits,
        access_log: None,
        guard: veil_http::Limits::default(),
    };
    let config = Arc::new(config);
    let app = router(config.clone()).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime
            .block_on(async { axum::serve(tokio::net::TcpListener::from_std(listener).unwrap(), app).await.unwrap() });
    });
    let key = ledger.add_api_key("tests").unwrap();
    Aggregator { url, ledger, http: Client::new(), key, target, config, _dir: TempDir(dir), _schema: schema }
}

/// A Parquet table: `columns` as (name, type), rows as JSON values.
fn parquet(columns: &[(&str, ColumnType)], rows: &[Vec<Json>]) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut writer = ParquetWriter::with_columns(columns, &mut bytes).unwrap();
    for r in rows {
        writer.write(Row { values: r.clone() }).unwrap();
    }
    writer.finish().unwrap();
    bytes
}

/// `cnt, sex` rows.
fn cube(rows: &[(i64, Option<&str>)]) -> Vec<u8> {
    parquet(
        &[("cnt", ColumnType::BigInt), ("sex", ColumnType::Text)],
        &rows.iter().map(|(n, s)| vec![json!(n), json!(s)]).collect::<Vec<_>>(),
    )
}

fn meta(version: i64) -> Vec<(String, Vec<u8>)> {
    vec![
        (
            "flu__meta_date.meta.parquet".into(),
            parquet(
                &[("min_date", ColumnType::Date), ("max_date", ColumnType::Date)],
                &[vec![json!("2019-01-01"), json!("2021-06-30")]],
            ),
        ),
        (
            "flu__meta_version.meta.parquet".into(),
            parquet(&[("data_package_version", ColumnType::Integer)], &[vec![json!(version)]]),
        ),
        ("manifest.toml".into(), b"study_prefix = \"flu\"\ndescription = \"test\"\n".to_vec()),
    ]
}

fn zip(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in members {
        out.start_file(name.as_str(), zip::write::SimpleFileOptions::default()).unwrap();
        out.write_all(bytes).unwrap();
    }
    out.finish().unwrap().into_inner()
}

/// A `flu` package at `version` holding `count_sex` with these rows.
fn package(version: i64, rows: &[(i64, Option<&str>)]) -> Vec<u8> {
    let mut members = vec![("flu__count_sex.cube.parquet".to_string(), cube(rows))];
    members.extend(meta(version));
    zip(&members)
}

impl Aggregator {
    fn site(&self, name: &str, studies: &[&str]) -> (String, String) {
        let studies: Vec<String> = studies.iter().map(|s| s.to_string()).collect();
        let secret = self.ledger.add_site(name, &format!("{name}-user"), name, &studies).unwrap().unwrap();
        (format!("{name}-user"), secret)
    }

    fn handshake(
        &self,
        path: &str,
        (user, secret): &(String, String),
        body: Json,
        transaction: Option<&str>,
    ) -> Response {
        let mut request = self.http.post(format!("{}{path}", self.url)).basic_auth(user, Some(secret)).json(&body);
        if let Some(t) = transaction {
            request = request.header("transaction-id", t);
        }
        request.send().unwrap()
    }

    /// The whole protocol, as the Cumulus client runs it; the upload's answer.
    fn upload(&self, site: &(String, String), version: i64, zip: Vec<u8>) -> Response {
        let r = self.handshake(
            "/",
            site,
            json!({"study": "flu", "data_package_version": version, "filename": format!("{}_flu.zip", site.0)}),
            None,
        );
        assert_eq!(r.status(), 200, "handshake: {}", r.text().unwrap());
        let presigned: Json = r.json().unwrap();
        self.post_form(&presigned, zip)
    }

    fn post_form(&self, presigned: &Json, zip: Vec<u8>) -> Response {
        self.try_post_form(&self.http, presigned, zip).unwrap()
    }

    fn try_post_form(&self, http: &Client, presigned: &Json, zip: Vec<u8>) -> reqwest::Result<Response> {
        let mut form = multipart::Form::new();
        for (k, v) in presigned["fields"].as_object().unwrap() {
            form = form.text(k.clone(), v.as_str().unwrap().to_string());
        }
        form = form.part("file", multipart::Part::bytes(zip).file_name("flu.zip"));
        http.post(presigned["url"].as_str().unwrap()).multipart(form).send()
    }

    fn get(&self, path: &str) -> Json {
        let r = self.http.get(format!("{}{path}", self.url)).header("x-api-key", &self.key).send().unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.json().unwrap()
    }

    fn chart(&self, query: &str) -> Json {
        self.get(&format!("/data-packages/flu__count_sex__001/chart?{query}"))
    }
}

fn sites_upload_and_the_merge_sums_them(db: Db) {
    let agg = start("merge", db, Limits::default());
    let a = agg.site("site_a", &["flu"]);
    let b = agg.site("site_b", &[]);
    let r = agg.upload(&a, 1, package(1, &[(30, None), (12, Some("female")), (18, Some("male"))]));
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["x-veil-outcome"], "accepted");
    assert_eq!(agg.upload(&b, 1, package(1, &[(25, None), (25, Some("female"))])).status(), 204);

    let packages = agg.get("/data-packages");
    assert_eq!(packages.as_array().unwrap().len(), 1);
    assert_eq!(packages[0]["id"], "flu__count_sex__001");
    assert_eq!(packages[0]["total"], 55);
    assert_eq!(packages[0]["columns"]["site"]["distinct_values_count"], 2);
    let by_site = agg.chart("column=sex&stratifier=site");
    assert_eq!(
        by_site["data"],
        json!([{"stratifier": "site_a", "rows": [["female", 12], ["male", 18]]}, {"stratifier": "site_b", "rows": [["female", 25]]}])
    );
    assert_eq!(by_site["counts"], json!({"site_a": 30, "site_b": 25}));
    assert_eq!(agg.chart("column=sex")["data"], json!([{"rows": [["female", 37], ["male", 18]]}]));
    assert_eq!(agg.get("/study-periods/site_a/flu/001")["earliest_date"], "2019-01-01");
    assert!(agg.get("/metadata/site_b/flu/count_sex")["count_sex__001"]["last_upload"].is_string());
    assert_eq!(agg.get("/studies/flu")["001"]["study_owner"], "site_a", "the first site's manifest owns the study");
    // The network path serves the same handshake; another network is unknown.
    let body = json!({"study": "flu", "data_package_version": 1, "filename": "x.zip"});
    let r = agg.handshake("/flu-net", &a, body.clone(), None);
    assert_eq!(r.status(), 200);
    agg.ledger.unlock("site_a", "flu", r.headers()["transaction-id"].to_str().unwrap()).unwrap();
    assert_eq!(agg.handshake("/other-net", &b, body, None).status(), 404);

    // The same package again changes nothing; a new one replaces the site's
    // whole contribution.
    let r = agg.upload(&b, 1, package(1, &[(25, None), (25, Some("female"))]));
    assert_eq!((r.status().as_u16(), r.headers()["x-veil-outcome"].to_str().unwrap()), (204, "unchanged"));
    assert_eq!(agg.chart("column=sex")["data"], json!([{"rows": [["female", 37], ["male", 18]]}]));
    assert_eq!(agg.upload(&b, 1, package(1, &[(40, None), (20, Some("female")), (20, Some("male"))])).status(), 204);
    assert_eq!(agg.chart("column=sex")["data"], json!([{"rows": [["female", 32], ["male", 38]]}]));
    let outcomes: Vec<&str> = agg.ledger.uploads(10).unwrap().into_iter().map(|u| u.outcome.as_str()).collect();
    assert_eq!(outcomes, ["accepted", "unchanged", "accepted", "accepted"]);

    // Another version is another data package, merged on its own.
    assert_eq!(agg.upload(&a, 2, package(2, &[(11, None)])).status(), 204);
    assert_eq!(agg.get("/data-packages?name=count_sex").as_array().unwrap().len(), 2);
    assert_eq!(agg.get("/data-packages/flu__count_sex__002")["total"], 11);
    assert_eq!(agg.get("/data-packages/flu__count_sex__001")["total"], 70);

    // Removing a site with --purge merges the rest again.
    assert!(agg.ledger.remove_site("site_b", true).unwrap());
    assert_eq!(agg.get("/data-packages/flu__count_sex__001")["total"], 30);
}

fn credentials_and_permissions(db: Db) {
    let agg = start("auth", db, Limits::default());
    let a = agg.site("site_a", &["covid"]);
    let body = json!({"study": "flu", "data_package_version": 1, "filename": "site_a-user_flu.zip"});
    let wrong = (a.0.clone(), "not-the-secret".to_string());
    let unknown = ("nobody".to_string(), a.1.clone());
    for who in [&wrong, &unknown] {
        let r = agg.handshake("/", who, body.clone(), None);
        assert_eq!(r.status(), 401);
        assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    }
    assert_eq!(agg.http.post(format!("{}/", agg.url)).json(&body).send().unwrap().status(), 401);
    let r = agg.handshake("/", &a, body.clone(), None);
    assert_eq!(r.status(), 403, "site_a may upload covid only");
    assert!(r.text().unwrap().contains("may not upload the study flu"));

    // A rotated secret: the old one stops at once.
    let b = agg.site("site_b", &["flu"]);
    let new = agg.ledger.rotate_site("site_b").unwrap().unwrap();
    assert_eq!(agg.handshake("/", &b, body.clone(), None).status(), 401);
    let b = (b.0, new);
    assert_eq!(agg.handshake("/", &b, body.clone(), None).status(), 200);

    // The lock: a second handshake waits (412) unless it names the transaction.
    let r = agg.handshake("/", &b, body.clone(), None);
    assert_eq!(r.status(), 412);
    assert!(r.text().unwrap().contains("previous upload of flu"));

    // The query API needs an API key; a site's secret is not one.
    let r = agg.http.get(format!("{}/data-packages", agg.url)).send().unwrap();
    assert_eq!(r.status(), 401);
    let r = agg.http.get(format!("{}/data-packages", agg.url)).header("x-api-key", &b.1).send().unwrap();
    assert_eq!(r.status(), 401);

    for bad in [
        json!({"filename": "x.zip"}),
        json!({"study": "../flu", "filename": "x.zip"}),
        json!({"study": "flu", "filename": "../x.zip"}),
        json!({"study": "flu", "filename": "x.zip", "data_package_version": "new"}),
    ] {
        let c = agg.site(&format!("s{}", agg.ledger.sites().unwrap().len()), &[]);
        assert_eq!(agg.handshake("/", &c, bad.clone(), None).status(), 400, "{bad}");
    }
}

fn one_site_cannot_write_as_another(db: Db) {
    let agg = start("forge", db, Limits::default());
    let a = agg.site("site_a", &[]);
    let b = agg.site("site_b", &[]);
    assert_eq!(agg.upload(&a, 1, package(1, &[(30, None)])).status(), 204);
    let r = agg.handshake("/", &b, json!({"study": "flu", "data_package_version": 1, "filename": "b.zip"}), None);
    let presigned: Json = r.json().unwrap();
    // site_b rewrites its signed policy to name site_a.
    let mut forged = presigned.clone();
    let policy = presigned["fields"]["policy"].as_str().unwrap();
    let mut decoded: Json =
        serde_json::from_slice(&veil_util::base64::decode(policy, veil_util::base64::STANDARD).unwrap()).unwrap();
    decoded["site"] = json!("site_a");
    forged["fields"]["policy"] =
        json!(veil_util::base64::encode(decoded.to_string().as_bytes(), veil_util::base64::STANDARD));
    let r = agg.post_form(&forged, package(1, &[(99, None)]));
    assert_eq!(r.status(), 403);
    assert!(r.text().unwrap().contains("signature"));
    // Nor may it move the key its policy signs.
    let mut moved = presigned.clone();
    moved["fields"]["key"] = json!("upload_staging/flu/site_a/001/b.zip");
    let r = agg.post_form(&moved, package(1, &[(99, None)]));
    assert_eq!(r.status(), 403);
    assert!(r.text().unwrap().contains("key is not the one its policy signs"));
    // Refusals before the policy is trusted leave site_b's lock in place.
    let r = agg.handshake("/", &b, json!({"study": "flu", "data_package_version": 1, "filename": "b.zip"}), Some("-"));
    assert_eq!(r.status(), 412);
    assert_eq!(agg.get("/data-packages/flu__count_sex__001")["total"], 30, "site_a's data is untouched");
}

/// Every refusal says why, and leaves the data as it was.
fn malformed_and_hostile_zips_are_refused_with_a_message(db: Db) {
    let agg = start("hostile", db, Limits { zip_bytes: 2 << 20, ..Limits::default() });
    let a = agg.site("site_a", &[]);
    assert_eq!(agg.upload(&a, 1, package(1, &[(30, None)])).status(), 204);
    let with = |extra: Vec<(String, Vec<u8>)>| {
        let mut members = extra;
        members.extend(meta(1));
        zip(&members)
    };
    let good_cube = || ("flu__count_sex.cube.parquet".to_string(), cube(&[(31, None)]));
    let bomb = {
        let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        out.start_file(
            "flu__count_sex.cube.parquet",
            zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated),
        )
        .unwrap();
        out.write_all(&vec![0u8; 20 << 20]).unwrap();
        out.finish().unwrap().into_inner()
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not a zip", b"PK\x03\x04 this is not a zip".to_vec(), "not a readable zip"),
        ("traversal", with(vec![("../flu__count_sex.cube.parquet".into(), cube(&[(31, None)]))]), "without folders"),
        ("absolute", with(vec![("/tmp/flu__count_sex.cube.parquet".into(), cube(&[(31, None)]))]), "without folders"),
        (
            "line-level",
            with(vec![good_cube(), ("flu__patients.archive.parquet".into(), cube(&[(31, None)]))]),
            "line-level",
        ),
        (
            "another study",
            with(vec![("covid__count.cube.parquet".into(), cube(&[(31, None)]))]),
            "does not belong to the study flu",
        ),
        (
            "small cell",
            with(vec![("flu__count_sex.cube.parquet".into(), cube(&[(31, None), (4, Some("female"))]))]),
            "1 cell(s) count fewer than 10",
        ),
        (
            "no cnt",
            with(vec![(
                "flu__count_sex.cube.parquet".into(),
                parquet(&[("sex", ColumnType::Text)], &[vec![json!("x")]]),
            )]),
            "no cnt column",
        ),
        (
            "text cnt",
            with(vec![(
                "flu__count_sex.cube.parquet".into(),
                parquet(&[("cnt", ColumnType::Text)], &[vec![json!("40")]]),
            )]),
            "cnt must be a whole number",
        ),
        (
            "site column",
            with(vec![(
                "flu__count_sex.cube.parquet".into(),
                parquet(&[("cnt", ColumnType::BigInt), ("site", ColumnType::Text)], &[vec![json!(40), json!("x")]]),
            )]),
            "aggregator's own",
        ),
        (
            "not parquet",
            with(vec![("flu__count_sex.cube.parquet".into(), b"hello".to_vec())]),
            "not a readable Parquet",
        ),
        (
            "duplicate strata",
            with(vec![("flu__count_sex.cube.parquet".into(), cube(&[(31, None), (32, None)]))]),
            "more than one row",
        ),
        ("zip bomb", bomb, "zip bomb"),
        ("version", zip(&[vec![good_cube()], meta(2)].concat()), "says data package version 2"),
        ("no meta_date", zip(&[good_cube()]), "no flu__meta_date"),
        (
            "schema change",
            with(vec![(
                "flu__count_sex.cube.parquet".into(),
                parquet(&[("cnt", ColumnType::BigInt), ("gender", ColumnType::Text)], &[vec![json!(40), Json::Null]]),
            )]),
            "needs a new data_package_version",
        ),
    ];
    let b = agg.site("site_b", &[]);
    for (what, zip, expected) in cases {
        let r = agg.upload(&b, 1, zip);
        let status = r.status();
        let text = r.text().unwrap();
        assert_eq!(status, 400, "{what}: {text}");
        assert!(text.contains(expected), "{what}: {text}");
    }
    // Over the size cap the server answers 413 and stops reading; a client
    // still sending may see the connection close before it reads the
    // answer. On its own connections, so that no other request reuses one.
    let r = agg.handshake("/", &b, json!({"study": "flu", "data_package_version": 1, "filename": "b.zip"}), None);
    match agg.try_post_form(&Client::new(), &r.json().unwrap(), vec![0; 3 << 20]) {
        Ok(r) => assert_eq!(r.status(), 413, "over the size cap"),
        Err(e) => assert!(e.is_body() || e.is_request(), "{e}"),
    }
    assert_eq!(agg.get("/data-packages/flu__count_sex__001")["total"], 30, "nothing refused became visible");
    let refused = agg.ledger.uploads(100).unwrap().iter().filter(|u| u.outcome == Outcome::Refused).count();
    assert_eq!(refused, 15, "each refusal recorded");
    assert_eq!(
        agg.upload(&b, 1, package(1, &[(12, None)])).status(),
        204,
        "every refusal freed the lock: the site can upload at once"
    );
    // /metadata's last_error is the time of the site's latest refusal.
    let b_meta = agg.get("/metadata/site_b/flu/count_sex/count_sex__001");
    let (error, upload) =
        (b_meta["last_error"].as_str().expect("site_b had refusals"), b_meta["last_upload"].as_str().unwrap());
    assert!(error <= upload, "the refusals came before the accepted upload: {error} {upload}");
    assert!(agg.get("/metadata/site_a/flu/count_sex/count_sex__001")["last_error"].is_null());
}

fn a_broken_upload_leaves_nothing_and_frees_the_lock(db: Db) {
    let agg = start("crash", db, Limits::default());
    let a = agg.site("site_a", &[]);
    assert_eq!(agg.upload(&a, 1, package(1, &[(30, None)])).status(), 204);
    let r = agg.handshake("/", &a, json!({"study": "flu", "data_package_version": 1, "filename": "a.zip"}), None);
    let presigned: Json = r.json().unwrap();
    // Half a multipart body, then the connection drops.
    let boundary = "veilboundary";
    let mut body = String::new();
    for (k, v) in presigned["fields"].as_object().unwrap() {
        body +=
            &format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{}\r\n", v.as_str().unwrap());
    }
    body += &format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.zip\"\r\n\r\n");
    let zip = package(1, &[(99, None)]);
    let mut stream = TcpStream::connect(agg.url.trim_start_matches("http://")).unwrap();
    let declared = body.len() + zip.len() + 100;
    write!(stream, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {declared}\r\n\r\n{body}").unwrap();
    stream.write_all(&zip[..zip.len() / 2]).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(!answer.starts_with("HTTP/1.1 204"), "{answer}");
    assert_eq!(agg.get("/data-packages/flu__count_sex__001")["total"], 30);
    assert_eq!(
        agg.upload(&a, 1, package(1, &[(40, None)])).status(),
        204,
        "the lock was freed: the site can upload again at once"
    );
    assert_eq!(agg.get("/data-packages/flu__count_sex__001")["total"], 40);
}

fn a_site_can_ask_what_became_of_its_upload(db: Db) {
    let agg = start("status", db, Limits::default());
    let a = agg.site("site_a", &[]);
    let b = agg.site("site_b", &[]);
    let state = |site: &(String, String), transaction: &str| {
        let r = agg
            .http
            .get(format!("{}/upload/{transaction}", agg.url))
            .basic_auth(&site.0, Some(&site.1))
            .send()
            .unwrap();
        (r.status().as_u16(), r.json::<Json>().unwrap_or(Json::Null))
    };
    let r = agg.handshake("/", &a, json!({"study": "flu", "data_package_version": 1, "filename": "a.zip"}), None);
    let transaction = r.headers()["transaction-id"].to_str().unwrap().to_string();
    assert_eq!(r.headers()["x-veil-status"].to_str().unwrap(), format!("{}/upload/{transaction}", agg.url));
    let presigned: Json = r.json().unwrap();
    assert_eq!(state(&a, &transaction), (200, json!({"state": "waiting"})));
    assert_eq!(state(&b, &transaction).0, 404, "another site cannot ask after it");
    assert_eq!(state(&(a.0.clone(), "wrong".into()), &transaction).0, 401);
    assert_eq!(agg.post_form(&presigned, package(1, &[(30, None)])).status(), 204);
    assert_eq!(state(&a, &transaction), (200, json!({"state": "accepted", "message": null})));

    let r = agg.handshake("/", &a, json!({"study": "flu", "data_package_version": 1, "filename": "a.zip"}), None);
    let transaction = r.headers()["transaction-id"].to_str().unwrap().to_string();
    assert_eq!(agg.post_form(&r.json().unwrap(), package(1, &[(3, None)])).status(), 400);
    let (status, body) = state(&a, &transaction);
    assert_eq!((status, &body["state"]), (200, &json!("refused")));
    assert!(body["message"].as_str().unwrap().contains("minimum cell size"), "{body}");
    assert_eq!(state(&a, "0123456789abcdef0123456789abcdef").0, 404);
}

/// The sweep that takes uploads sites posted to S3, here over a local
/// folder (S3 itself is tests/python/test_aggregator.py's): objects are
/// checked once, removed after the ledger has recorded them, taken again
/// harmlessly after a crash between the two, and an upload overtaken by a
/// newer handshake is refused, not merged.
fn staged_uploads_are_swept_once_and_a_crash_loses_nothing(db: Db) {
    use veil_aggregator::staging::{Swept, sweep};
    let agg = start("staging", db, Limits::default());
    agg.site("site_a", &[]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let storage = &agg.config.storage;
    let stage = |transaction: &str, zip: Vec<u8>| {
        storage.put_bytes(&format!("upload_staging/flu/site_a/001/{transaction}/a.zip"), zip).unwrap()
    };
    let first = agg.ledger.lock("site_a", "flu", None, now, 600).unwrap().unwrap();
    stage(&first, package(1, &[(30, None)]));
    storage.put_bytes("upload_staging/flu/notes.txt", b"not an upload".to_vec()).unwrap();
    assert_eq!(sweep(&agg.config).unwrap(), Swept { checked: 1, dropped: 1, retry: 0 });
    assert_eq!(storage.list_below("upload_staging").unwrap(), Vec::<String>::new());
    assert_eq!(storage.list_below("archive").unwrap().len(), 1);
    assert_eq!(agg.get("/data-packages/flu__count_sex__001")["total"], 30);
    assert_eq!(sweep(&agg.config).unwrap(), Swept::default(), "nothing twice");

    // A crash after the ledger recorded it, before the object was removed.
    stage(&first, package(1, &[(30, None)]));
    assert_eq!(sweep(&agg.config).unwrap().checked, 1);
    let outcomes: Vec<&str> = agg.ledger.uploads(10).unwrap().into_iter().map(|u| u.outcome.as_str()).collect();
    assert_eq!(outcomes, ["unchanged", "accepted"]);

    // An upload whose lock lapsed and was taken by a newer handshake.
    let stale = agg.ledger.lock("site_a", "flu", None, now, -1).unwrap().unwrap();
    agg.ledger.lock("site_a", "flu", None, now, 600).unwrap().unwrap();
    stage(&stale, package(1, &[(99, None)]));
    assert_eq!(sweep(&agg.config).unwrap().checked, 1);
    let latest = agg.ledger.uploads(1).unwrap().remove(0);
    assert_eq!((latest.outcome.as_str(), latest.message.unwrap().starts_with("superseded")), ("refused", true));
    assert_eq!(agg.get("/data-packages/flu__count_sex__001")["total"], 30, "not merged");
}

fn flat_tables_are_kept_per_site_and_need_counts_too(db: Db) {
    let agg = start("flat", db, Limits::default());
    let a = agg.site("site_a", &[]);
    let flat = |rows: &[(i64, &str)]| {
        parquet(
            &[("cnt", ColumnType::BigInt), ("code", ColumnType::Text)],
            &rows.iter().map(|(n, c)| vec![json!(n), json!(c)]).collect::<Vec<_>>(),
        )
    };
    let mut members = vec![
        ("flu__count_sex.cube.parquet".to_string(), cube(&[(30, None)])),
        ("flu__codes.flat.parquet".to_string(), flat(&[(12, "x"), (15, "y")])),
    ];
    members.extend(meta(1));
    assert_eq!(agg.upload(&a, 1, zip(&members)).status(), 204);
    let entry = agg.get("/data-packages/flu__codes__site_a__001");
    assert_eq!((entry["type"].as_str(), entry["site"].as_str()), (Some("flat"), Some("site_a")));
    assert_eq!(agg.get("/data-packages/flu__codes__site_a__001/download")["rows"], json!([[12, "x"], [15, "y"]]));
    let r = agg
        .http
        .get(format!("{}/data-packages/flu__codes__site_a__001/chart?column=code", agg.url))
        .header("x-api-key", &agg.key)
        .send()
        .unwrap();
    assert_eq!(r.status(), 404, "flat tables are not charted across sites");

    // A table without counts could be rows about patients.
    let rows = parquet(&[("patient", ColumnType::Text)], &[vec![json!("p1")]]);
    let mut members = vec![("flu__patients.flat.parquet".to_string(), rows)];
    members.extend(meta(1));
    let r = agg.upload(&a, 1, zip(&members));
    assert_eq!(r.status(), 400);
    assert!(r.text().unwrap().contains("counts only"));
}

fn two_servers_merging_at_once_lose_nothing(db: Db) {
    let agg = start("race", db, Limits::default());
    // A second server on the same database, as in a deployment with two
    // aggregator processes behind a load balancer.
    let second = Arc::new(Ledger::open(&agg.target).unwrap());
    let sites: Vec<i64> = (0..12).collect();
    for i in &sites {
        agg.ledger.add_site(&format!("site_{i}"), &format!("user_{i}"), "", &[]).unwrap();
    }
    let threads: Vec<_> = sites
        .iter()
        .map(|&i| {
            let ledger = if i % 2 == 0 { agg.ledger.clone() } else { second.clone() };
            std::thread::spawn(move || {
                let zip = package(1, &[(10 + i, None)]);
                let checked = veil_aggregator::package::read(&zip, "flu", 1, 10, &Limits::default()).unwrap();
                let site = format!("site_{i}");
                // Each upload holds its lock, as one that came through a handshake does.
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
                let id = ledger.lock(&site, "flu", None, now, 600).unwrap().unwrap();
                let sha = format!("{i:064}");
                let arrival = veil_aggregator::Arrival {
                    id: &id,
                    site: &site,
                    study: "flu",
                    version: 1,
                    sha256: &sha,
                    bytes: zip.len() as i64,
                };
                ledger.accept(&arrival, &checked).unwrap().unwrap()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), veil_aggregator::Outcome::Accepted);
    }
    let expected: i64 = sites.iter().map(|i| 10 + i).sum();
    assert_eq!(agg.get("/data-packages/flu__count_sex__001")["total"], expected, "every site's upload is in the merge");
    assert_eq!(agg.chart("column=site")["data"][0]["rows"].as_array().unwrap().len(), sites.len());
}

fn the_dashboard_is_served_without_data(db: Db) {
    let agg = start("dashboard", db, Limits::default());
    let http = Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let root = http.get(&agg.url).send().unwrap();
    assert_eq!((root.status().as_u16(), root.headers()["location"].to_str().unwrap()), (303, "/dashboard"));
    for (path, kind) in
        [("/dashboard", "text/html"), ("/dashboard/app.js", "text/javascript"), ("/dashboard/app.css", "text/css")]
    {
        let r = http.get(format!("{}{path}", agg.url)).send().unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with(kind), "{path}");
        assert!(r.headers()["content-security-policy"].to_str().unwrap().contains("script-src 'self'"), "{path}");
    }
    // The page holds no data: without a key, the API it reads still says no.
    assert_eq!(http.get(format!("{}/data-packages", agg.url)).send().unwrap().status(), 401);
}

#[test]
fn a_dropped_postgres_connection_is_made_again() {
    let schema = Schema::fresh(format!("veil_aggregator_reconnect_{}", std::process::id()));
    let app = format!("veil_reconnect_{}", std::process::id());
    let ledger = Ledger::open(&format!("{}&application_name={app}", schema.url())).unwrap();
    assert!(ledger.add_site("site_a", "a", "", &[]).unwrap().is_some());
    // The server drops the connection, as a restart or a failover does.
    let mut admin = postgres::Client::connect(&schema.server, postgres::NoTls).unwrap();
    let dropped: i64 = admin
        .query_one("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1", &[&app])
        .unwrap()
        .get(0);
    assert_eq!(dropped, 1);
    assert_eq!(ledger.sites().unwrap().len(), 1, "a read connects again");
    let dropped: i64 = admin
        .query_one("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1", &[&app])
        .unwrap()
        .get(0);
    assert_eq!(dropped, 1);
    assert!(ledger.add_site("site_b", "b", "", &[]).unwrap().is_some(), "so does a write");
    assert_eq!(ledger.sites().unwrap().len(), 2);
}

/// Each test, once per database.
macro_rules! on_both {
    ($($test:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[test]
            fn $test() {
                super::$test(super::Db::Sqlite)
            })*
        }
        mod on_postgres {
            $(#[test]
            fn $test() {
                super::$test(super::Db::Postgres)
            })*
        }
    };
}

on_both!(
    sites_upload_and_the_merge_sums_them,
    credentials_and_permissions,
    one_site_cannot_write_as_another,
    malformed_and_hostile_zips_are_refused_with_a_message,
    a_broken_upload_leaves_nothing_and_frees_the_lock,
    a_site_can_ask_what_became_of_its_upload,
    staged_uploads_are_swept_once_and_a_crash_loses_nothing,
    flat_tables_are_kept_per_site_and_need_counts_too,
    two_servers_merging_at_once_lose_nothing,
    the_dashboard_is_served_without_data,
);

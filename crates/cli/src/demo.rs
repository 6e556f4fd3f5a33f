//! `veil demo`: the path built so far, run on the bundled Synthea sample.
//! Each issue that lands extends this command, so that one command always
//! shows the whole pipeline on the embedded defaults.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::Value as Json;
use veil_fhirpath::Expression;

use crate::input::{for_each_json_in_tar_gz, resources};

/// Run Veil on the bundled sample: 100 synthetic patients (Synthea).
///
/// It loads every resource and evaluates the FHIRPath expressions that
/// de-identification rules and study views are made of (counts and the
/// location of the first match, never a value); de-identifies with Safe
/// Harbor; serves the store and runs a de-identified $export as a
/// registered client; shares that export with a Veil link and fetches it;
/// builds the flu study; and merges two sites' uploads in an aggregator.
/// It ends with the share link and the command a research team runs.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The sample archive (a .tar.gz of FHIR JSON files).
    #[arg(long, value_name = "PATH", default_value = "data/synthea-r4-100.tar.gz", env = "VEIL_DEMO_DATA")]
    data: PathBuf,
    /// Where the demo's store and export go (emptied first).
    #[arg(long, value_name = "DIR", default_value = "demo-output")]
    out: PathBuf,
}

/// What the demo evaluates: the shapes of real anonymizer rules and views.
const EXPRESSIONS: &[(&str, &str)] = &[
    ("nodesByType('HumanName')", "names a Safe Harbor policy redacts"),
    ("Patient.address.where(postalCode.exists())", "addresses with a zip code"),
    ("Patient.telecom | Patient.identifier", "phone numbers and identifiers"),
    ("nodesByType('date') | nodesByType('dateTime')", "dates a policy shifts"),
    ("Observation.value.ofType(Quantity).value", "measured values (views)"),
    ("descendants().ofType(Reference)", "references between resources"),
    ("Condition.onset.ofType(dateTime)", "condition onsets"),
];

pub(crate) fn run(args: Args) -> Result<ExitCode> {
    if !args.data.exists() {
        bail!(
            "{} not found: run from the repository root, or pass --data PATH (or VEIL_DEMO_DATA)",
            args.data.display()
        );
    }
    let compiled: Vec<(Expression, &str)> =
        EXPRESSIONS.iter().map(|(src, what)| Ok((Expression::compile(src)?, *what))).collect::<Result<_>>()?;

    eprintln!("veil demo: reading {}", args.data.display());
    let started = Instant::now();
    let mut all: Vec<Json> = Vec::new();
    let mut files = 0;
    for_each_json_in_tar_gz(&args.data, |_, doc| {
        files += 1;
        all.extend(resources(doc));
        Ok(())
    })?;
    let read_time = started.elapsed();

    let mut by_type: BTreeMap<String, usize> = BTreeMap::new();
    for r in &all {
        let t = r.get("resourceType").and_then(Json::as_str).unwrap_or("(none)");
        *by_type.entry(t.to_string()).or_default() += 1;
    }
    println!("Loaded {} resources from {files} files in {}", all.len(), ms(read_time));
    let mut top: Vec<_> = by_type.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1));
    let top: Vec<String> = top.iter().take(6).map(|(t, n)| format!("{t} {n}")).collect();
    println!("  {}", top.join(", "));
    println!();
    println!("{:<46} {:>9} {:>9} {:>8}  first match", "FHIRPath", "resources", "nodes", "time");
    let mut errors = 0;
    for (expr, what) in &compiled {
        let t = Instant::now();
        let (mut hit_resources, mut nodes) = (0, 0);
        let mut first: Option<String> = None;
        for r in &all {
            match expr.evaluate(r) {
                Ok(items) if !items.is_empty() => {
                    hit_resources += 1;
                    nodes += items.len();
                    if first.is_none()
                        && let Some(n) = items[0].as_node()
                    {
                        let root = r.get("resourceType").and_then(Json::as_str).unwrap_or("");
                        first = Some(format!("{root}.{}", n.location()));
                    }
                }
                Ok(_) => {}
                Err(_) => errors += 1,
            }
        }
        println!(
            "{:<46} {:>9} {:>9} {:>8}  {}",
            expr.source(),
            hit_resources,
            nodes,
            ms(t.elapsed()),
            first.unwrap_or_else(|| "-".into())
        );
        println!("  ({what})");
    }
    if errors > 0 {
        eprintln!("veil demo: {errors} evaluation(s) failed");
        return Ok(ExitCode::FAILURE);
    }
    println!();
    deidentify(&all)?;
    println!();
    let share = serve_and_export(&args.data, &args.out)?;
    println!();
    let db = format!("sqlite:{}", args.out.join("veil.db").display());
    println!(
        "The de-identified export, shared with the research team ({}, expires {}; veil share list --db {db}):",
        share.record.id, share.record.expires
    );
    println!("  {}", share.link);
    println!(
        "While veil serve answers it (veil serve --db {db} --storage {}), the team runs:",
        args.out.join("storage").display()
    );
    println!("  veil fetch '{}' -o research-copy", share.link);
    Ok(ExitCode::SUCCESS)
}

/// The second step of the path: the built-in Safe Harbor policy over every
/// resource, then a check with FHIRPath of what is left.
fn deidentify(all: &[Json]) -> Result<()> {
    let mut policy = veil_deid::Policy::safe_harbor();
    // Fixed demo keys, so that two runs print the same thing.
    policy.parameters.date_shift_key = Some("veil-demo-date-key".into());
    policy.parameters.crypto_hash_key = Some("veil-demo-hash-key".into());
    policy.parameters.encrypt_key = Some("veil-demo-encrypt-key-32-bytes!!".into());
    let engine = veil_deid::Engine::new(policy);
    let input: String = all.iter().map(|r| r.to_string() + "\n").collect();
    let mut output = Vec::new();
    let t = Instant::now();
    let report =
        veil_deid::anonymize_ndjson(&engine, input.as_bytes(), &mut output, veil_deid::OnError::Fail, |_| {}, |_| {})?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "De-identified {} resources with the HIPAA Safe Harbor policy in {:.1} s ({:.0} MB/s)",
        report.written(),
        secs,
        input.len() as f64 / 1e6 / secs
    );
    let changed: Vec<String> = report.stats.changed.iter().map(|(m, n)| format!("{m} {n}")).collect();
    println!("  nodes changed: {}", changed.join(", "));
    // What a reviewer would check first: nothing of these kinds is left,
    // in any resource (organizations' addresses locate their patients), and
    // identifier values are keyed pseudonyms.
    let checks = [
        ("names", "nodesByType('HumanName').select(family | given | text)"),
        ("street addresses and cities", "nodesByType('Address').select(line | city | district)"),
        ("phone numbers and emails", "nodesByType('ContactPoint').value"),
        (
            "identifier values that are not pseudonyms",
            "nodesByType('Identifier').value.where(matches('^[0-9a-f]{64}$').not())",
        ),
        ("narratives", "text.div"),
    ];
    let text = String::from_utf8(output)?;
    let docs: Vec<Json> = text.lines().map(serde_json::from_str::<Json>).collect::<Result<Vec<_>, _>>()?;
    for (what, src) in checks {
        let expr = Expression::compile(src)?;
        let left: usize = docs.iter().map(|d| expr.evaluate(d).map(|r| r.len()).unwrap_or(0)).sum();
        println!("  {what} left: {left}   ({src})");
    }
    Ok(())
}

/// The third step: an empty store, the sample loaded into it, `veil serve`
/// started on loopback, and a de-identified `$export` asked of it over HTTP,
/// as Azure's de-identified export is asked.
fn serve_and_export(data: &std::path::Path, out: &std::path::Path) -> Result<veil_server::share::Made> {
    use std::sync::Arc;

    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out)?;
    let db = format!("sqlite:{}", out.join("veil.db").display());
    let store: Arc<dyn veil_store::Store> = Arc::from(veil_store::open(&db)?);
    let t = Instant::now();
    let mut loaded = 0u64;
    for_each_json_in_tar_gz(data, |name, doc| {
        loaded += veil_server::load_document(&*store, doc, name)?.created.values().sum::<u64>();
        Ok(())
    })?;
    println!("Loaded {loaded} resources into an empty store ({db}) in {}", ms(t.elapsed()));

    let storage = veil_server::export::Storage::new(out.join("storage"))?;
    std::fs::write(
        out.join("storage/anonymization/safe-harbor.json"),
        include_str!("../../deid/policies/safe-harbor.json"),
    )?;
    // A research team's client, registered as `veil client keygen` and
    // `veil client add` would: only its public key goes into the store.
    let (key, pem) = veil_smart::SigningKey::generate(veil_smart::KeyKind::Es384)?;
    std::fs::write(out.join("research-team.pem"), pem)?;
    let client_id = "research-team";
    store.add_client(&veil_store::ClientRecord {
        id: client_id.into(),
        name: "Research team (demo)".into(),
        jwks: Some(key.public_jwks().to_string()),
        jwks_url: None,
        scopes: "system/*.read".into(),
        created: String::new(),
    })?;

    let auth = veil_server::auth::Auth::new(&*store)?;
    let start = veil_server::running::Start {
        listen: "127.0.0.1:0".parse()?,
        workers: 1,
        worker: Default::default(),
        owner: "demo".into(),
    };
    let served = store.clone();
    let server = veil_server::running::start(start, true, move |addr| {
        veil_server::http::AppState::new(served, storage, format!("http://{addr}"), Some(auth))
    })?;
    let base = format!("http://{}", server.addr());
    println!("veil serve is listening on {base}, with SMART Backend Services authorization");

    // The token client runs blocking HTTP, so it lives outside the runtime.
    let tokens = veil_smart::TokenClient::new(&base, client_id, key, "system/*.read");
    let token_url = tokens.token_endpoint()?;
    tokens.access_token()?;
    println!(
        "Client '{client_id}' signed an ES384 assertion and got a token from {token_url} ({})",
        tokens.granted_scope()?
    );
    let http = Authorized { http: reqwest::blocking::Client::new(), tokens };
    let storage_root = out.join("storage");
    let folder =
        export_over_http(&http, &base, "_anonymizationConfig=safe-harbor.json&_container=research", &storage_root)?;
    println!("  files: {}", folder.display());

    // Handed over only because its audit passed (veil-risk.json, .txt and
    // .html lie beside the files): Safe Harbor keeps years only, so studies
    // that need months count on the site's own data instead.: a Veil share link to exactly that export, fetched and
    // checked as the research team would. The token does not depend on the
    // address, so the link printed at the end names veil serve's default.
    let shared = veil_server::share::make_share(
        &*store,
        &veil_storage::Location::Local(folder.clone()),
        Duration::from_secs(72 * 3600),
        Some("Research team (demo)".into()),
        None,
        &base,
        veil_server::share::Exposure::DeidentifiedOnly,
    )?;
    let copy = out.join("research-copy");
    let fetched = veil_storage::fetch::fetch(&shared.link, &copy, &mut |_| {})?;
    println!(
        "Shared it ({}, a Veil link that expires {}); veil fetch downloaded {} files ({} bytes) into {}, every SHA-256 checked",
        shared.record.id,
        shared.record.expires,
        fetched.files,
        fetched.bytes,
        copy.display()
    );
    for line in shared.audit.as_deref().unwrap_or("").lines() {
        println!("  audit: {line}");
    }
    let shared = veil_server::share::Made { link: shared.link.replace(&base, "http://127.0.0.1:8080"), ..shared };

    // The study's minimum-necessary export: only the types and elements the
    // flu study reads, de-identified with the policy its preset pairs with.
    let study = veil_study::Study::builtin("flu").expect("built in");
    let preset = crate::study::preset_query(&study);
    std::fs::write(out.join("storage/anonymization/flu.json"), crate::study::preset_policy(&study)?)?;
    println!();
    println!("The flu study's minimum-necessary export (veil export-preset flu):");
    let flu_export = export_over_http(
        &http,
        &base,
        &format!("{preset}&_anonymizationConfig=flu.json&_container=flu"),
        &storage_root,
    )?;

    server.stop();
    println!();
    build_flu_study(&study, &flu_export, out)?;
    println!();
    two_sites(&study, &flu_export, out)?;
    Ok(shared)
}

/// An HTTP client that sends a current access token with every request.
struct Authorized {
    http: reqwest::blocking::Client,
    tokens: veil_smart::TokenClient,
}

impl Authorized {
    fn get(&self, url: &str) -> Result<reqwest::blocking::RequestBuilder> {
        Ok(self.http.get(url).bearer_auth(self.tokens.access_token()?))
    }
}

/// Kicks off `$export?QUERY` (which names a `_container`), polls until
/// done, and returns the container's folder in `storage`.
fn export_over_http(client: &Authorized, base: &str, query: &str, storage: &std::path::Path) -> Result<PathBuf> {
    let kickoff = format!("{base}/$export?{query}");
    println!("GET {kickoff}");
    let t = Instant::now();
    let r = client.get(&kickoff)?.header("Accept", "application/fhir+json").header("Prefer", "respond-async").send()?;
    let status_url = r.headers().get("content-location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    println!("  {} Content-Location: {status_url}", r.status());
    if r.status() != 202 {
        bail!("the export was refused: {}", r.text()?);
    }
    let manifest: Json = loop {
        std::thread::sleep(Duration::from_millis(500));
        let r = client.get(&status_url)?.send()?;
        if r.status() == 200 {
            break r.json()?;
        }
        if r.status() != 202 && r.status() != 429 {
            bail!("the export failed: {}", r.text()?);
        }
    };
    let outputs = manifest["output"].as_array().cloned().unwrap_or_default();
    let resources: u64 = outputs.iter().filter_map(|o| o["count"].as_u64()).sum();
    println!("  200 manifest: {resources} de-identified resources in {} files, in {}", outputs.len(), ms(t.elapsed()));
    let container = storage.join(query.split('&').find_map(|p| p.strip_prefix("_container=")).unwrap_or_default());
    // A container holds a timestamped folder per export, and the demo's
    // storage starts empty: this export's is the only one.
    let folder = std::fs::read_dir(&container)?.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| p.is_dir());
    Ok(folder.unwrap_or(container))
}

/// The last step: the flu study built from the de-identified export, and
/// written as a Cumulus data package.
fn build_flu_study(study: &veil_study::Study, export: &std::path::Path, out: &std::path::Path) -> Result<()> {
    let t = Instant::now();
    let built = crate::study::build_from(study, &crate::input::ndjson_files(export)?)?;
    println!("Built the flu study from {} de-identified resources in {}:", built.resources, ms(t.elapsed()));
    for t in &built.tables {
        if let Some(summary) = t.suppression_summary() {
            println!("  {}: {summary}", t.name);
        }
    }
    // The trend: cells where only the year is given.
    let cube = &built.tables[0];
    let mut by_year: Vec<(String, u64)> = cube
        .rows
        .iter()
        .filter(|r| r[1].is_string() && r[2..].iter().all(Json::is_null))
        .map(|r| (r[1].as_str().unwrap_or_default().to_string(), r[0].as_u64().unwrap_or_default()))
        .collect();
    by_year.sort();
    let years: Vec<String> = by_year.iter().map(|(y, n)| format!("{y}: {n}")).collect();
    println!("  vaccinated patients by year: {}", years.join(", "));
    let exported = veil_study::export(&built, &out.join("data_export"))?;
    println!("Exported for a Cumulus aggregator: {}/", exported.folder.display());
    for f in &exported.files {
        println!("  {}", f.file_name().unwrap_or_default().to_string_lossy());
    }
    Ok(())
}

/// The aggregator's side: the same export split into two sites' halves
/// (by patient), each built and uploaded as a Cumulus site would, then the
/// combined trend read back from the aggregator's query API.
fn two_sites(study: &veil_study::Study, export: &std::path::Path, out: &std::path::Path) -> Result<()> {
    use std::sync::Arc;

    const SITES: [&str; 2] = ["north", "south"];
    let halves = split_by_patient(export, &out.join("sites"), &SITES)?;
    let dir = out.join("aggregator");
    std::fs::create_dir_all(&dir)?;
    let ledger = Arc::new(veil_aggregator::Ledger::open(&dir.join("aggregator.db").to_string_lossy())?);
    let runtime = tokio::runtime::Runtime::new()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let base = format!("http://{}", listener.local_addr()?);
    let config = veil_aggregator::http::Config {
        ledger: ledger.clone(),
        storage: Arc::new(veil_storage::Storage::open(&veil_storage::Location::Local(dir.clone()))?),
        base_url: base.clone(),
        network: None,
        min_cell: veil_study::DEFAULT_MIN_CELL,
        limits: Default::default(),
        access_log: None,
        guard: Default::default(),
    };
    let app = veil_aggregator::http::router(Arc::new(config))?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = runtime
        .spawn(async move { axum::serve(listener, app).with_graceful_shutdown(async move { drop(rx.await) }).await });
    println!("veil aggregator is listening on {base} (database {})", dir.join("aggregator.db").display());
    for (site, half) in SITES.iter().zip(&halves) {
        let secret = ledger.add_site(site, site, site, std::slice::from_ref(&study.prefix))?.expect("a new database");
        let built = crate::study::build_from(study, &crate::input::ndjson_files(half)?)?;
        let data_path = half.join("data_export");
        veil_study::export(&built, &data_path)?;
        let package = veil_study::Package::find(&data_path, &study.prefix)?;
        let aggregator = veil_study::Aggregator {
            url: format!("{base}/"),
            network: None,
            user: site.to_string(),
            site_id: secret,
            wait: std::time::Duration::ZERO,
        };
        veil_study::upload(&aggregator, &package, &mut |_| {})?;
        println!("  site {site}: built flu from {} resources and uploaded it (veil upload)", built.resources);
    }
    let key = ledger.add_api_key("demo")?;
    let chart = |stratifier: &str| -> Result<Json> {
        let id = format!("flu__count_vaccinated__{}", veil_aggregator::version_key(study.data_package_version.into()));
        Ok(reqwest::blocking::Client::new()
            .get(format!("{base}/data-packages/{id}/chart?column=year{stratifier}"))
            .header("x-api-key", &key)
            .send()?
            .error_for_status()?
            .json()?)
    };
    let (combined, by_site) = (chart("")?, chart("&stratifier=site")?);
    let _ = tx.send(());
    let _ = runtime.block_on(server);
    let mut parts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for series in by_site["data"].as_array().into_iter().flatten() {
        for row in series["rows"].as_array().into_iter().flatten() {
            parts.entry(row[0].as_str().unwrap_or_default().to_string()).or_default().push(format!(
                "{} {}",
                series["stratifier"].as_str().unwrap_or_default(),
                row[1]
            ));
        }
    }
    println!("The combined trend, from the aggregator's chart API (vaccinated patients by year; per site):");
    for row in combined["data"][0]["rows"].as_array().into_iter().flatten() {
        let year = row[0].as_str().unwrap_or_default();
        println!("  {year}: {} ({})", row[1], parts.get(year).map(|p| p.join(" + ")).unwrap_or_default());
    }
    // The key goes to a file only the user can read, never to the terminal.
    let key_file = dir.join("api-key.txt");
    let _ = std::fs::remove_file(&key_file); // the previous run's
    crate::client::write_private(&key_file, &key)?;
    println!(
        "See it in the dashboard: veil aggregator serve --db {} --storage {}",
        dir.join("aggregator.db").display(),
        dir.display()
    );
    println!("  then open http://127.0.0.1:8090/ and sign in with the API key in {}", key_file.display());
    Ok(())
}

/// Writes `export`'s NDJSON into one folder per site, each patient (and what
/// refers to it) in one site only, patients dealt out in turn by id.
fn split_by_patient(export: &std::path::Path, out: &std::path::Path, sites: &[&str]) -> Result<Vec<PathBuf>> {
    use std::io::{BufRead as _, Write as _};

    let files = crate::input::ndjson_files(export)?;
    let mut patients: Vec<String> = Vec::new();
    let mut lines: Vec<(String, String, String)> = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap_or_default().to_string_lossy().into_owned();
        for line in std::io::BufReader::new(std::fs::File::open(file)?).lines() {
            let line = line?;
            let doc: Json = serde_json::from_str(&line)?;
            let patient = if doc["resourceType"] == "Patient" {
                let id = doc["id"].as_str().unwrap_or_default().to_string();
                patients.push(id.clone());
                id
            } else {
                doc["patient"]["reference"].as_str().unwrap_or_default().trim_start_matches("Patient/").to_string()
            };
            lines.push((name.clone(), patient, line));
        }
    }
    patients.sort();
    let site_of: BTreeMap<&str, usize> =
        patients.iter().enumerate().map(|(i, p)| (p.as_str(), i % sites.len())).collect();
    let dirs: Vec<PathBuf> = sites.iter().map(|s| out.join(s)).collect();
    let mut writers: BTreeMap<(usize, String), std::io::BufWriter<std::fs::File>> = BTreeMap::new();
    for (name, patient, line) in &lines {
        let Some(&site) = site_of.get(patient.as_str()) else { continue };
        let key = (site, name.clone());
        if !writers.contains_key(&key) {
            std::fs::create_dir_all(&dirs[site])?;
            writers.insert(key.clone(), std::io::BufWriter::new(std::fs::File::create(dirs[site].join(name))?));
        }
        writeln!(writers.get_mut(&key).expect("inserted"), "{line}")?;
    }
    for (_, mut w) in writers {
        w.flush()?;
    }
    Ok(dirs)
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

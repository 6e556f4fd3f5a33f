//! `veil deid`: de-identify FHIR files with an anonymizer configuration.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use serde_json::{Value as Json, json};
use veil_deid::{Engine, OnError, Policy, Quarantined, Report, anonymize_ndjson, anonymize_ndjson_watched};

use crate::UsageError;
use crate::output::{Destination, Progress, open_checked, upload_stage, write_atomically};

/// De-identify FHIR R4 resources with a Microsoft FHIR anonymizer configuration.
///
/// Accepts the Microsoft command-line tool's options, so existing scripts keep
/// working:
///
///   veil deid -c config.json -i in/ -o out/            one resource per *.json file
///   veil deid -c config.json -i in/ -o out/ -b         NDJSON: *.ndjson files
///   veil deid -c safe-harbor Patient.ndjson -o out/    plain files (.json or .ndjson)
///   veil deid -c safe-harbor < in.ndjson > out.ndjson  standard input to output
///
/// NDJSON is streamed in bounded batches on every core and written in input
/// order; every output file is written under a temporary name and renamed
/// when complete, so a failure never leaves a partial file. At the end a
/// report gives resources in, out and quarantined per type and the nodes each
/// method changed.
///
/// `-c NAME` selects a built-in policy: `safe-harbor` (HIPAA Safe Harbor:
/// dates to the year, no free text, ZIP3), `limited-data-set` (dates, city
/// and ZIP kept, for use under a data use agreement), `expert-shift`
/// (per-patient date shift in UTC, for Expert Determination) or `ms-sample`
/// (the Microsoft anonymizer's sample, unchanged; not Safe Harbor).
/// Empty keys in a policy mean random keys, as in the Microsoft tool: the
/// output then differs from run to run (a warning says so).
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// The anonymizer configuration file, or a built-in policy's name
    /// (safe-harbor, limited-data-set, expert-shift, ms-sample).
    #[arg(short = 'c', long = "configFile", visible_alias = "config", value_name = "FILE", env = "VEIL_DEID_CONFIG")]
    config: String,
    /// Input folder (the Microsoft tool's -i).
    #[arg(short = 'i', long = "inputFolder", visible_alias = "input", value_name = "DIR")]
    input_folder: Option<PathBuf>,
    /// Output folder (or, for a single input file, a file name); also
    /// s3://bucket/prefix, az://container/prefix or gs://bucket/prefix, with
    /// the cloud's usual environment variables for credentials. A folder
    /// ends with veil-manifest.json (size and SHA-256 of each file).
    #[arg(short = 'o', long = "outputFolder", visible_alias = "output", value_name = "PATH")]
    output: Option<PathBuf>,
    /// NDJSON mode: read *.ndjson files from the input folder (otherwise *.json).
    #[arg(short = 'b', long = "bulkData")]
    bulk_data: bool,
    /// Recurse into subfolders, recreating them under the output folder.
    #[arg(short = 'r', long)]
    recursive: bool,
    /// Skip inputs whose output file already exists.
    #[arg(short = 's', long)]
    skip: bool,
    /// Leave failing resources out instead of stopping, and list them (line,
    /// type, reason; never a value) in this file. Same as the policy's
    /// `"veil": {"onError": "quarantine"}`.
    #[arg(long, value_name = "FILE")]
    quarantine: Option<PathBuf>,
    /// The HIPAA standard the output folder is audited against:
    /// safe-harbor, limited-data-set or expert. By default, the one a
    /// built-in policy is made for, and safe-harbor for any other policy.
    #[arg(long, value_parser = crate::audit::parse_standard)]
    standard: Option<veil_audit::Standard>,
    /// Do not audit the output folder: no veil-risk.* files, and the
    /// manifest records no verdict, so `veil share create` refuses the
    /// folder unless told --despite-audit.
    #[arg(long)]
    no_audit: bool,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Input files (.json holds one resource, .ndjson one per line).
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,
}

struct Job {
    input: PathBuf,
    output: Option<PathBuf>,
    ndjson: bool,
}

/// The policy `config` names: a built-in one (`safe-harbor`, …) or a
/// configuration file; its warnings go to stderr under `command`'s name.
pub(crate) fn read_policy(config: &str, command: &str) -> Result<Policy> {
    let policy = if let Some(built_in) = Policy::built_in(config) {
        built_in
    } else {
        let text = fs::read_to_string(config).with_context(|| format!("cannot read the configuration {config}"))?;
        Policy::parse(&text).map_err(|e| UsageError(format!("{config}: {e}")))?
    };
    for w in &policy.warnings {
        eprintln!("{command}: warning: {w}");
    }
    Ok(policy)
}

pub(crate) fn run(mut args: Args) -> Result<ExitCode> {
    match args.output.as_deref().map(Destination::parse).transpose()? {
        Some(Destination::Cloud(cloud)) => run_to_cloud(args, &cloud),
        Some(Destination::Local(dir)) => {
            args.output = Some(dir);
            run_local(args)
        }
        None => run_local(args),
    }
}

/// De-identifies into a local staging folder, then uploads every file and
/// the manifest last: the cloud destination never holds a partial file,
/// and a reader who finds the manifest finds everything.
fn run_to_cloud(mut args: Args, destination: &veil_storage::Location) -> Result<ExitCode> {
    if args.input_folder.is_none() && args.files.is_empty() {
        bail!(UsageError(
            "standard input goes to standard output or a local file, not to cloud storage: give input files or -i"
                .into()
        ));
    }
    let storage = open_checked(destination)?;
    let stage = std::env::temp_dir().join(format!("veil-deid-{}-{}", std::process::id(), veil_util::clock::now_secs()));
    fs::create_dir_all(&stage)?;
    args.output = Some(stage.clone());
    let outcome = run_local(args).and_then(|code| {
        // The stage's own manifest carries the audit's verdict (its evidence files go up with the data).
        let local = veil_storage::Manifest::from_json(&fs::read(stage.join(veil_storage::MANIFEST_NAME))?)
            .map_err(anyhow::Error::msg)?;
        upload_stage("veil deid", &storage, &stage, local.deidentified).map(|()| code)
    });
    let _ = fs::remove_dir_all(&stage);
    outcome
}

fn run_local(args: Args) -> Result<ExitCode> {
    let policy = read_policy(&args.config, "veil deid")?;
    let quarantine_mode = policy.quarantine || args.quarantine.is_some();
    let on_error = if quarantine_mode { OnError::Quarantine } else { OnError::Fail };
    let scope_prefix_is_folder = matches!(policy.parameters.date_shift_scope, Some(veil_deid::DateShiftScope::Folder));
    let engine = Engine::new(policy);
    let jobs = plan(&args)?;
    // Every resource written to a file is audited as it is serialised (no
    // second reading); the evidence is written if the output is a folder.
    let options = match args.standard {
        Some(standard) => veil_audit::Options::new(standard),
        None => veil_server::share::audit_options(&policy_name(&args.config)),
    };
    let auditor = veil_audit::Auditor::new(options.clone())?;
    let mut tally = veil_audit::Tally::default();
    let mut skipped_any = false;
    let started = Instant::now();
    let mut total = Report::default();
    let mut quarantined: Vec<(String, Quarantined)> = Vec::new();
    let mut bytes_in = 0u64;

    for job in &jobs {
        let name = job.input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "<stdin>".into());
        let prefix = if scope_prefix_is_folder {
            args.input_folder
                .as_ref()
                .and_then(|f| f.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            name.clone()
        };
        let engine = engine.clone().with_date_shift_prefix(&prefix);
        if let Some(out) = &job.output
            && args.skip
            && out.exists()
        {
            eprintln!("veil deid: {}: output exists, skipped (-s)", job.input.display());
            skipped_any = true;
            continue;
        }
        let watch = (job.output.is_some() && !args.no_audit).then_some((&auditor, &mut tally));
        let result = if job.ndjson {
            run_ndjson(&engine, job, on_error, &name, watch)
        } else {
            run_json(&engine, job, on_error, &name, watch)
        };
        match result {
            Ok((report, q, read)) => {
                bytes_in += read;
                total.add(&report);
                quarantined.extend(q.into_iter().map(|x| (job.input.display().to_string(), x)));
            }
            Err(e) => {
                print_report(&total, &quarantined, started, bytes_in);
                return Err(e);
            }
        }
    }
    if jobs.is_empty() {
        bail!(UsageError("no input files found (use -b for *.ndjson folders)".into()));
    }
    if let Some(path) = &args.quarantine {
        let mut text = String::new();
        for (file, q) in &quarantined {
            text.push_str(
                &json!({"file": file, "line": q.line, "resourceType": q.resource_type, "reason": q.reason}).to_string(),
            );
            text.push('\n');
        }
        write_atomically(path, |w| w.write_all(text.as_bytes()))?;
    }
    if let Some(path) = &args.report {
        let report = report_json(&total, quarantined.len(), started);
        write_atomically(path, |w| w.write_all(serde_json::to_string_pretty(&report).unwrap_or_default().as_bytes()))?;
    }
    // A folder of output ends with its checksummed manifest, written last.
    // The audit's evidence goes beside the files, and its verdict into the manifest.
    let mut audit = None;
    if let Some(dir) = args.output.as_ref().filter(|o| o.is_dir()) {
        let policy = policy_name(&args.config);
        // Files skipped (-s) were not seen: then the folder is read again.
        let deidentified = match (args.no_audit, skipped_any) {
            (true, _) => veil_storage::Deidentified { policy, audit: None },
            (false, true) => veil_server::share::seal_with(dir, &policy, &veil_audit::audit_dir(dir, &options)?)?,
            (false, false) => veil_server::share::seal_with(dir, &policy, &auditor.finish(tally))?,
        };
        audit = deidentified.audit.clone();
        let manifest = veil_storage::manifest_of_dir(dir)?.deidentified(Some(deidentified));
        write_atomically(&dir.join(veil_storage::MANIFEST_NAME), |w| w.write_all(&manifest.to_json()))?;
    }
    print_report(&total, &quarantined, started, bytes_in);
    if let Some(audit) = audit {
        eprint!("veil deid: audit: {}", audit.summary);
    }
    // Finished, but not everything went through: say so in the exit code (the report says what).
    Ok(if quarantined.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Works out the input files and where each one's output goes.
fn plan(args: &Args) -> Result<Vec<Job>> {
    let mut jobs = Vec::new();
    if let Some(folder) = &args.input_folder {
        let out = args.output.as_ref().ok_or_else(|| UsageError("-i needs -o (the output folder)".into()))?;
        let (a, b) = (fs::canonicalize(folder).with_context(|| format!("cannot open {}", folder.display()))?, out);
        if b.exists() && fs::canonicalize(b)? == a {
            bail!(UsageError("Input and output folders are the same! Please choose another folder.".into()));
        }
        let ext = if args.bulk_data { "ndjson" } else { "json" };
        let mut files = Vec::new();
        collect(folder, ext, args.recursive, &mut files)?;
        files.sort();
        for f in files {
            let rel = f.strip_prefix(folder).unwrap_or(&f).to_path_buf();
            jobs.push(Job { input: f, output: Some(out.join(rel)), ndjson: args.bulk_data });
        }
        return Ok(jobs);
    }
    if args.files.is_empty() {
        // Standard input to standard output, as NDJSON.
        return Ok(vec![Job { input: PathBuf::from("-"), output: args.output.clone(), ndjson: true }]);
    }
    let single = args.files.len() == 1;
    // `-o DIR/` (a trailing separator), or several inputs: a folder, made
    // if missing; otherwise, for one input, a missing path is the file.
    if let Some(o) = &args.output
        && (!single || o.as_os_str().to_string_lossy().ends_with(std::path::MAIN_SEPARATOR))
    {
        fs::create_dir_all(o).with_context(|| format!("cannot create the output folder {}", o.display()))?;
    }
    for f in &args.files {
        let ndjson = f.extension().is_some_and(|e| e == "ndjson") || args.bulk_data;
        let output = match &args.output {
            None if single => None,
            None => bail!(UsageError("several input files need -o (an output folder)".into())),
            Some(o) if single && !o.is_dir() => Some(o.clone()),
            Some(o) => Some(o.join(f.file_name().unwrap_or_default())),
        };
        if let Some(o) = &output
            && fs::canonicalize(f).ok() == fs::canonicalize(o).ok()
        {
            bail!(UsageError(format!("{} would overwrite its own input", o.display())));
        }
        jobs.push(Job { input: f.clone(), output, ndjson });
    }
    Ok(jobs)
}

fn collect(dir: &Path, ext: &str, recursive: bool, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            if recursive {
                collect(&path, ext, true, out)?;
            }
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
    Ok(())
}

/// What a job did, what it quarantined, and how many bytes it read (the
/// speed reported: standard input has no file size to go by).
type Outcome = (Report, Vec<Quarantined>, u64);

/// A reader that counts the bytes taken from it.
struct Counted<R> {
    inner: R,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R: io::Read> io::Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

impl<R: io::BufRead> io::BufRead for Counted<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        self.count.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        self.inner.consume(n)
    }
}

/// The audit that watches what a job writes.
type Watch<'a> = Option<(&'a veil_audit::Auditor, &'a mut veil_audit::Tally)>;

fn run_ndjson(engine: &Engine, job: &Job, on_error: OnError, name: &str, mut watch: Watch) -> Result<Outcome> {
    let mut quarantined = Vec::new();
    let progress = Progress::new(name);
    let mut stream = |input: Box<dyn io::BufRead>, output: &mut dyn Write, q: &mut Vec<Quarantined>| {
        let quarantine = |x| q.push(x);
        let lines = |n| progress.lines(n);
        match watch.as_mut() {
            Some((auditor, tally)) => anonymize_ndjson_watched(
                engine,
                input,
                output,
                on_error,
                quarantine,
                lines,
                &|doc| auditor.see(doc),
                |seen| tally.add(seen),
            ),
            None => anonymize_ndjson(engine, input, output, on_error, quarantine, lines),
        }
        .map_err(|e| anyhow::anyhow!("{name}: {e}"))
    };
    let read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let input: Box<dyn io::BufRead> = if job.input.as_os_str() == "-" {
        Box::new(Counted { inner: io::stdin().lock(), count: read.clone() })
    } else {
        let file = File::open(&job.input).with_context(|| format!("cannot open {}", job.input.display()))?;
        Box::new(Counted { inner: BufReader::with_capacity(1 << 20, file), count: read.clone() })
    };
    let report = match &job.output {
        None => {
            let stdout = io::stdout();
            let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
            stream(input, &mut out, &mut quarantined)?
        }
        Some(path) => {
            let mut result = None;
            write_atomically(path, |w| {
                result = Some(stream(input, w, &mut quarantined));
                match &result {
                    Some(Ok(_)) => Ok(()),
                    _ => Err(io::Error::other("de-identification failed")),
                }
            })
            .map_err(|e| match result.take() {
                Some(Err(inner)) => inner,
                _ => e,
            })?;
            match result {
                Some(Ok(r)) => r,
                _ => unreachable!("write_atomically succeeded only with a report"),
            }
        }
    };
    progress.finish();
    Ok((report, quarantined, read.load(std::sync::atomic::Ordering::Relaxed)))
}

fn run_json(engine: &Engine, job: &Job, on_error: OnError, name: &str, watch: Watch) -> Result<Outcome> {
    let text = fs::read_to_string(&job.input).with_context(|| format!("cannot read {}", job.input.display()))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut report = Report::default();
    let fail = |reason: String, ty: String, report: &mut Report| -> Result<Outcome> {
        *report.resources_in.entry(ty.clone()).or_default() += 1;
        match on_error {
            OnError::Fail => bail!("{name}: {reason}"),
            _ => {
                *report.quarantined.entry(ty.clone()).or_default() += 1;
                Ok((report.clone(), vec![Quarantined { line: 1, resource_type: ty, reason }], text.len() as u64))
            }
        }
    };
    let doc: Json = match serde_json::from_str(text) {
        Ok(d) => d,
        Err(e) => {
            return fail(
                format!("not valid JSON at line {}, column {}", e.line(), e.column()),
                "(unparsed)".into(),
                &mut report,
            );
        }
    };
    let ty = doc.get("resourceType").and_then(Json::as_str).unwrap_or("(unknown)").to_string();
    let (out, stats) = match engine.anonymize_counted(doc) {
        Ok(x) => x,
        Err(e) => return fail(e.to_string(), ty, &mut report),
    };
    *report.resources_in.entry(ty.clone()).or_default() += 1;
    *report.resources_out.entry(ty).or_default() += 1;
    report.stats.add(&stats);
    if let Some((auditor, tally)) = watch {
        tally.add(auditor.see(&out));
    }
    let pretty = serde_json::to_string_pretty(&out)?;
    match &job.output {
        Some(path) => write_atomically(path, |w| w.write_all(pretty.as_bytes()))?,
        None => println!("{pretty}"),
    }
    Ok((report, Vec::new(), text.len() as u64))
}

fn report_json(r: &Report, quarantined: usize, started: Instant) -> Json {
    json!({
        "resourcesIn": r.resources_in,
        "resourcesOut": r.resources_out,
        "quarantined": r.quarantined,
        "quarantinedTotal": quarantined,
        "nodesChanged": r.stats.changed,
        "seconds": started.elapsed().as_secs_f64(),
    })
}

fn print_report(r: &Report, quarantined: &[(String, Quarantined)], started: Instant, bytes_in: u64) {
    let secs = started.elapsed().as_secs_f64();
    let n_in: u64 = r.resources_in.values().sum();
    let mut e = io::stderr().lock();
    let _ = writeln!(
        e,
        "veil deid: {n_in} resources in, {} out, {} quarantined in {secs:.1} s ({:.1} MB/s)",
        r.written(),
        quarantined.len(),
        bytes_in as f64 / 1e6 / secs.max(1e-9)
    );
    let types: Vec<String> = r.resources_out.iter().map(|(t, n)| format!("{t} {n}")).collect();
    if !types.is_empty() {
        let _ = writeln!(e, "  out: {}", types.join(", "));
    }
    let changed: Vec<String> = r.stats.changed.iter().map(|(m, n)| format!("{m} {n}")).collect();
    if !changed.is_empty() {
        let _ = writeln!(e, "  nodes changed: {}", changed.join(", "));
    }
    for (file, q) in quarantined.iter().take(10) {
        let _ = writeln!(e, "  quarantined: {file}:{}: {} ({})", q.line, q.resource_type, q.reason);
    }
    if quarantined.len() > 10 {
        let _ = writeln!(e, "  … and {} more", quarantined.len() - 10);
    }
}

/// The name a manifest gives the policy: a built-in's name, or the
/// configuration file's name (not its folder, which may say more than it
/// should).
pub(crate) fn policy_name(config: &str) -> String {
    std::path::Path::new(config).file_name().map_or_else(|| config.to_string(), |n| n.to_string_lossy().into_owned())
}

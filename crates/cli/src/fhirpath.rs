//! `veil fhirpath`: evaluate an expression and print typed results.

use std::io::{self, IsTerminal as _, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use serde_json::{Value as Json, json};
use veil_fhirpath::{Context, Expression, Item, Value};

use crate::UsageError;
use crate::input::for_each_document;

/// Evaluate a FHIRPath expression over FHIR resources.
///
/// Reads one JSON resource (a Bundle counts as one), or NDJSON with one
/// resource per line, from FILE or standard input. For each resource it
/// prints a JSON array of the results, one line per resource:
///
///   [{"type":"HumanName","value":{"family":"Chalmers"}}, …]
///
/// "type" is the FHIR type of a node of the resource (string, date,
/// HumanName, Patient) or the System type of a computed value (Boolean,
/// Integer, Decimal, String, Date, DateTime, Time, Quantity).
///
/// Examples:
///
///   veil fhirpath --input patient.json "Patient.name.given"
///
///   veil fhirpath --locations --input Observation.ndjson "Observation.value.ofType(Quantity)"
///
///   veil fhirpath --var cutoff=2010-01-01 "Patient.birthDate < %cutoff.toDate()" < patient.json
///
/// With no input (standard input a terminal, or empty) the expression is
/// evaluated once without a resource:
///
///   veil fhirpath "(1 + 2) * 3"
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// The FHIRPath expression.
    expression: String,
    /// Read resources from this file (JSON or NDJSON) instead of standard input.
    #[arg(short, long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Add each node's location in its resource, e.g. Patient.name[0].given[1].
    #[arg(long)]
    locations: bool,
    /// Treat names the R4 model does not define for the focus's type as errors, not as empty.
    #[arg(long)]
    strict: bool,
    /// Define the string constant %NAME (repeatable): --var name=value.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
}

pub(crate) fn run(args: Args) -> Result<ExitCode> {
    let expr =
        Expression::compile(&args.expression).map_err(|e| UsageError(render_expression_error(&args.expression, &e)))?;
    let mut vars = Vec::new();
    for v in &args.vars {
        let (name, value) =
            v.split_once('=').ok_or_else(|| UsageError(format!("--var expects NAME=VALUE, found '{v}'")))?;
        vars.push((name.to_string(), value.to_string()));
    }
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let name = args.input.as_ref().map_or_else(|| "<stdin>".to_string(), |p| p.display().to_string());
    let reader: Box<dyn io::Read> = match &args.input {
        Some(path) => Box::new(std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?),
        // A terminal: nothing to read, as when standard input is empty.
        None if io::stdin().is_terminal() => Box::new(io::empty()),
        None => Box::new(io::stdin().lock()),
    };
    let mut reader = io::BufReader::new(reader);
    let mut failed = false;
    let mut evaluate = |doc: Json, line: usize| -> Result<()> {
        let mut ctx = Context::new(&doc).strict(args.strict);
        for (k, v) in &vars {
            ctx = ctx.with_var(k, Value::String(v.clone()));
        }
        match expr.evaluate_with(&ctx) {
            Ok(items) => {
                let root = doc.get("resourceType").and_then(Json::as_str).unwrap_or("");
                let rendered: Vec<Json> = items.iter().map(|i| render_item(i, root, args.locations)).collect();
                serde_json::to_writer(&mut out, &rendered)?;
                out.write_all(b"\n")?;
            }
            Err(e) => {
                // Name the place, not the resource's content.
                eprintln!("veil: {name}:{line}: {e}");
                failed = true;
            }
        }
        Ok(())
    };
    if only_whitespace_left(&mut reader).with_context(|| format!("{name}: cannot read"))? {
        // No resource: the expression is evaluated without one, as the
        // HL7 suite's context-free cases are (`1 + 1`, `today()`).
        evaluate(Json::Null, 1)?;
    } else {
        for_each_document(reader, &name, evaluate)?;
    }
    out.flush()?;
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Skips leading whitespace; whether nothing else is left to read.
fn only_whitespace_left(reader: &mut impl io::BufRead) -> io::Result<bool> {
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(true);
        }
        let blanks = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
        if blanks < buf.len() {
            reader.consume(blanks);
            return Ok(false);
        }
        let n = buf.len();
        reader.consume(n);
    }
}

fn render_item(item: &Item<'_>, root: &str, with_location: bool) -> Json {
    let mut obj = json!({"type": item.type_name(), "value": item.to_json()});
    if with_location && let Item::Node(n) = item {
        let loc = n.location().to_string();
        let path = match (root.is_empty(), loc.is_empty()) {
            (_, true) => root.to_string(),
            (true, false) => loc,
            (false, false) => format!("{root}.{loc}"),
        };
        obj["location"] = Json::String(path);
    }
    obj
}

/// `invalid expression at 1:14: expected …` followed by the expression with
/// a caret under the place.
fn render_expression_error(src: &str, err: &veil_fhirpath::Error) -> String {
    let mut msg = format!("invalid FHIRPath expression: {err}");
    if let (Some((line, col)), Some(span)) = (err.position(), err.span())
        && let Some(text) = src.lines().nth(line - 1)
    {
        let width = src[span.start.min(src.len())..span.end.min(src.len())].chars().count().max(1);
        msg.push_str(&format!("\n  {text}\n  {}{}", " ".repeat(col - 1), "^".repeat(width)));
    }
    msg
}

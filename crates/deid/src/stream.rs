//! The NDJSON driver: reads lines in bounded batches, de-identifies each
//! batch on every core, writes results in input order, and reports what
//! happened. Memory is bounded by the batch, whatever the input size.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use rayon::prelude::*;
use serde_json::Value as Json;

use crate::engine::{DeidError, Engine, Stats};

/// What to do with a resource that cannot be de-identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Stop; nothing more is written (the caller discards the partial output).
    Fail,
    /// Veil's extension: leave the resource out, record why (without any of
    /// its values), and go on.
    Quarantine,
}

/// A resource left out of the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// 1-based line number in the input.
    pub line: u64,
    /// Its resourceType, if it had a readable one.
    pub resource_type: String,
    /// Why, naming rules and element paths, never values.
    pub reason: String,
}

/// Counts for a run: resources in and out and quarantined per type, nodes
/// changed per method.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Resources read, per resourceType.
    pub resources_in: BTreeMap<String, u64>,
    /// Resources written, per resourceType.
    pub resources_out: BTreeMap<String, u64>,
    /// Resources quarantined, per resourceType.
    pub quarantined: BTreeMap<String, u64>,
    /// Nodes changed per method.
    pub stats: Stats,
}

impl Report {
    /// Adds another run's counts (several files).
    pub fn add(&mut self, other: &Report) {
        for (mine, theirs) in [
            (&mut self.resources_in, &other.resources_in),
            (&mut self.resources_out, &other.resources_out),
            (&mut self.quarantined, &other.quarantined),
        ] {
            for (k, v) in theirs {
                *mine.entry(k.clone()).or_default() += v;
            }
        }
        self.stats.add(&other.stats);
    }

    /// Total resources written.
    pub fn written(&self) -> u64 {
        self.resources_out.values().sum()
    }
}

/// A failure of the whole stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A line failed and the policy says to stop.
    #[error("line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: u64,
        /// Why (no values).
        reason: String,
    },
}

/// Lines per batch: enough to keep every core busy, few enough to bound memory.
const BATCH_LINES: usize = 2048;
/// And at most this many bytes of input per batch, for very long lines.
const BATCH_BYTES: usize = 64 << 20;

enum LineResult<S> {
    Written { ty: String, text: String, stats: Stats, seen: S },
    Failed { ty: String, reason: String },
    Blank,
}

fn resource_type(doc: &Json) -> String {
    doc.get("resourceType").and_then(Json::as_str).unwrap_or("(unknown)").to_string()
}

fn process_line<S>(engine: &Engine, line: &str, see: &(impl Fn(&Json) -> S + Sync)) -> LineResult<S> {
    if line.trim().is_empty() {
        return LineResult::Blank;
    }
    let doc: Json = match serde_json::from_str(line) {
        Ok(d) => d,
        // serde_json's message names a position and a category, never the text.
        Err(e) => {
            let what = match e.classify() {
                serde_json::error::Category::Syntax => "syntax error",
                serde_json::error::Category::Eof => "unexpected end of line",
                _ => "invalid data",
            };
            return LineResult::Failed {
                ty: "(unparsed)".into(),
                reason: format!("not valid JSON ({what} at column {})", e.column()),
            };
        }
    };
    let ty = resource_type(&doc);
    match engine.anonymize_counted(doc) {
        Ok((out, stats)) => {
            LineResult::Written { ty: resource_type(&out), text: out.to_string(), stats, seen: see(&out) }
        }
        Err(e) => LineResult::Failed { ty, reason: describe(&e) },
    }
}

fn describe(e: &DeidError) -> String {
    e.to_string()
}

/// Reads NDJSON from `input` a batch of lines at a time, applies `map` to
/// every line of a batch on every core, and hands the results to `each` in
/// input order, with their 1-based line numbers. Memory stays at a batch
/// (2,048 lines or 64 MiB). A line that is not UTF-8 reaches `map` as
/// `Err(reason)`, so it is named by its number like any other failure; a
/// byte-order mark opening the input is dropped. An error from `each`
/// stops the run.
pub fn map_lines_in_parallel<T: Send, E: From<std::io::Error>>(
    mut input: impl BufRead,
    map: impl Fn(Result<&str, &str>) -> T + Sync,
    mut each: impl FnMut(u64, T) -> Result<(), E>,
) -> Result<(), E> {
    let mut line_no: u64 = 0;
    let mut batch: Vec<Result<String, String>> = Vec::with_capacity(BATCH_LINES);
    loop {
        batch.clear();
        let mut bytes = 0;
        while batch.len() < BATCH_LINES && bytes < BATCH_BYTES {
            let mut raw = Vec::new();
            if input.read_until(b'\n', &mut raw)? == 0 {
                break;
            }
            bytes += raw.len();
            let line = String::from_utf8(raw)
                .map_err(|e| format!("not valid UTF-8 (byte {} of the line)", e.utf8_error().valid_up_to() + 1));
            let line = match line {
                Ok(l) if line_no == 0 && batch.is_empty() && l.starts_with('\u{feff}') => {
                    Ok(l['\u{feff}'.len_utf8()..].to_string())
                }
                other => other,
            };
            batch.push(line);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let results: Vec<T> = batch.par_iter().map(|l| map(l.as_deref().map_err(String::as_str))).collect();
        for result in results {
            line_no += 1;
            each(line_no, result)?;
        }
    }
}

/// De-identifies NDJSON from `input` to `output`, one compact resource per
/// line in input order. Blank lines are skipped. `progress` is called with
/// the number of lines done after each batch.
pub fn anonymize_ndjson(
    engine: &Engine,
    input: impl BufRead,
    output: impl Write,
    on_error: OnError,
    quarantine: impl FnMut(Quarantined),
    progress: impl FnMut(u64),
) -> Result<Report, StreamError> {
    anonymize_ndjson_watched(engine, input, output, on_error, quarantine, progress, &|_| (), |()| {})
}

/// [`anonymize_ndjson`], with every resource written also handed to `see`
/// on the worker threads (as it is about to be serialised), and what `see`
/// made of it to `keep`, in input order: Veil's audit looks at the output
/// this way without parsing it again.
#[allow(clippy::too_many_arguments)]
pub fn anonymize_ndjson_watched<S: Send>(
    engine: &Engine,
    input: impl BufRead,
    mut output: impl Write,
    on_error: OnError,
    mut quarantine: impl FnMut(Quarantined),
    mut progress: impl FnMut(u64),
    see: &(impl Fn(&Json) -> S + Sync),
    mut keep: impl FnMut(S),
) -> Result<Report, StreamError> {
    let mut report = Report::default();
    let work = |line: Result<&str, &str>| match line {
        Ok(line) => process_line(engine, line, see),
        Err(reason) => LineResult::Failed { ty: "(unparsed)".into(), reason: reason.to_string() },
    };
    let mut lines = 0;
    map_lines_in_parallel(input, work, |line_no, result| {
        lines = line_no;
        match result {
            LineResult::Blank => {}
            LineResult::Written { ty, text, stats, seen } => {
                keep(seen);
                *report.resources_in.entry(ty.clone()).or_default() += 1;
                *report.resources_out.entry(ty).or_default() += 1;
                report.stats.add(&stats);
                output.write_all(text.as_bytes())?;
                output.write_all(b"\n")?;
            }
            LineResult::Failed { ty, reason } => {
                *report.resources_in.entry(ty.clone()).or_default() += 1;
                match on_error {
                    OnError::Fail => return Err(StreamError::Line { line: line_no, reason }),
                    OnError::Quarantine => {
                        *report.quarantined.entry(ty.clone()).or_default() += 1;
                        quarantine(Quarantined { line: line_no, resource_type: ty, reason });
                    }
                }
            }
        }
        if line_no.is_multiple_of(BATCH_LINES as u64) {
            progress(line_no);
        }
        Ok(())
    })?;
    progress(lines);
    output.flush()?;
    Ok(report)
}

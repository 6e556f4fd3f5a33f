//! Reading FHIR resources from the forms users have them in: one JSON
//! resource (a Bundle included), NDJSON, or a `.tar.gz` of JSON files such as
//! the bundled Synthea sample.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value as Json;

/// Calls `each` with every JSON document in `reader`: each line when the
/// first line is a whole JSON value (NDJSON, read as a stream), otherwise the
/// whole text as one value (a pretty-printed resource or Bundle). `name` is
/// used in errors; line numbers are 1-based.
pub(crate) fn for_each_document(
    reader: impl Read,
    name: &str,
    mut each: impl FnMut(Json, usize) -> Result<()>,
) -> Result<()> {
    let mut reader = BufReader::new(reader);
    let mut first = String::new();
    reader.read_line(&mut first).with_context(|| format!("{name}: cannot read"))?;
    if let Ok(doc) = serde_json::from_str::<Json>(first.trim()) {
        each(doc, 1)?;
        for (i, line) in reader.lines().enumerate() {
            let line = line.with_context(|| format!("{name}:{}: cannot read", i + 2))?;
            if line.trim().is_empty() {
                continue;
            }
            // The message says where, never what: the line may hold PHI.
            let doc: Json = serde_json::from_str(&line)
                .map_err(|e| anyhow::anyhow!("{name}:{}: not valid JSON ({})", i + 2, e.classify_name()))?;
            each(doc, i + 2)?;
        }
        return Ok(());
    }
    let mut text = first;
    reader.read_to_string(&mut text).with_context(|| format!("{name}: cannot read"))?;
    let doc: Json = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{name}:{}:{}: not valid JSON ({})", e.line(), e.column(), e.classify_name()))?;
    each(doc, 1)
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected data",
            serde_json::error::Category::Eof => "unexpected end of input",
        }
    }
}

/// Calls `each` with every `.json` file in a gzip-compressed tar archive.
pub(crate) fn for_each_json_in_tar_gz(path: &Path, mut each: impl FnMut(&str, Json) -> Result<()>) -> Result<()> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)));
    for entry in archive.entries().with_context(|| format!("{}: not a tar.gz archive", path.display()))? {
        let mut entry = entry.with_context(|| format!("{}: damaged archive", path.display()))?;
        let name = entry.path()?.to_string_lossy().into_owned();
        if !name.ends_with(".json") {
            continue;
        }
        let mut text = String::new();
        entry.read_to_string(&mut text).with_context(|| format!("{}: cannot read {name}", path.display()))?;
        let doc: Json = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {name}:{}: not valid JSON", path.display(), e.line()))?;
        each(&name, doc)?;
    }
    Ok(())
}

/// The resources inside a document: a Bundle's entries, or the document itself.
pub(crate) fn resources(doc: Json) -> Vec<Json> {
    if doc.get("resourceType").and_then(Json::as_str) == Some("Bundle")
        && let Some(Json::Array(entries)) = doc.get("entry")
    {
        return entries.iter().filter_map(|e| e.get("resource").cloned()).collect();
    }
    vec![doc]
}

/// The NDJSON files at `path`: the file itself, or every `*.ndjson` in a
/// folder and its subfolders (a Bulk Data export's output), in name order.
pub(crate) fn ndjson_files(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.is_dir() {
        if !path.exists() {
            return Err(crate::UsageError(format!("{}: no such file or folder", path.display())).into());
        }
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut folders = vec![path.to_path_buf()];
    while let Some(dir) = folders.pop() {
        for e in std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
            let p = e?.path();
            if p.is_dir() {
                folders.push(p);
            } else if p.extension().is_some_and(|x| x == "ndjson") {
                files.push(p);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Parses every line of NDJSON `files` and applies `map` to it on every
/// core, a batch of lines at a time (`veil_deid::map_lines_in_parallel`,
/// as de-identification reads), then hands the results to `each` in input
/// order. Errors say file and line, never the content; the first in input
/// order stops the run.
pub(crate) fn map_ndjson_in_parallel<T: Send>(
    files: &[PathBuf],
    map: impl Fn(Json) -> Result<T> + Sync,
    mut each: impl FnMut(T) -> Result<()>,
) -> Result<()> {
    for file in files {
        let name = file.display().to_string();
        let reader = BufReader::new(File::open(file).with_context(|| format!("cannot open {name}"))?);
        let parse_and_map = |line: Result<&str, &str>| -> Option<Result<T>> {
            match line {
                Ok(line) if line.trim().is_empty() => None,
                Ok(line) => Some(match serde_json::from_str(line) {
                    Ok(doc) => map(doc),
                    Err(e) => Err(anyhow::anyhow!("not valid JSON ({})", e.classify_name())),
                }),
                Err(reason) => Some(Err(anyhow::anyhow!("{reason}"))),
            }
        };
        veil_deid::map_lines_in_parallel(reader, parse_and_map, |at, result| match result {
            Some(result) => each(result.with_context(|| format!("{name}:{at}"))?),
            None => Ok(()),
        })?;
    }
    Ok(())
}

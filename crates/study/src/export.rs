//! `data_export/<study>/`: a built study as the Cumulus aggregator takes it
//! (reference: cumulus.md §2.5) — each table as `<table>.<kind>.parquet`
//! and `.csv`, sorted by every column descending with nulls first, a
//! `manifest.toml`, and `<study>.zip` holding the Parquet files and the
//! manifest. Every file is written beside its final name and renamed into
//! place, the zip last, so that an interrupted export never leaves a
//! package that looks complete.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use veil_util::csv;
use veil_views::{ColumnType, ParquetWriter};

use crate::{Built, BuiltTable, StudyError, TableKind};

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    /// `data_export/<study>`.
    pub folder: PathBuf,
    /// Every file written, the zip last.
    pub files: Vec<PathBuf>,
    /// Tables left out because no cell survived (Cumulus skips empty tables).
    pub empty: Vec<String>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StudyError + '_ {
    move |e| StudyError(format!("cannot write {}: {e}", path.display()))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StudyError> {
    veil_util::atomic::write(path, bytes).map_err(io(path))
}

fn parquet(table: &BuiltTable) -> Result<Vec<u8>, StudyError> {
    let columns: Vec<(&str, ColumnType)> = table
        .columns
        .iter()
        .map(|c| {
            ColumnType::from_sql_name(&c.sql_type)
                .map(|t| (c.name.as_str(), t))
                .ok_or_else(|| StudyError(format!("{}: unknown column type {}", table.name, c.sql_type)))
        })
        .collect::<Result<_, _>>()?;
    let mut bytes = Vec::new();
    let mut writer = ParquetWriter::with_columns(&columns, &mut bytes).map_err(|e| StudyError(e.to_string()))?;
    for row in &table.rows {
        writer.write(veil_views::Row { values: row.clone() }).map_err(|e| StudyError(e.to_string()))?;
    }
    writer.finish().map_err(|e| StudyError(e.to_string()))?;
    Ok(bytes)
}

fn csv(table: &BuiltTable) -> Vec<u8> {
    let header: Vec<serde_json::Value> = table.columns.iter().map(|c| c.name.clone().into()).collect();
    let mut text = csv::line(&header);
    for row in &table.rows {
        text.push_str(&csv::line(row));
    }
    text.into_bytes()
}

/// `manifest.toml` in Cumulus' current form (stages of export actions).
fn manifest(built: &Built) -> Result<String, StudyError> {
    #[derive(Serialize)]
    struct Manifest<'a> {
        study_prefix: &'a str,
        description: &'a str,
        stages: Stages<'a>,
    }
    #[derive(Serialize)]
    struct Stages<'a> {
        default: Vec<Stage<'a>>,
    }
    #[derive(Serialize)]
    struct Stage<'a> {
        #[serde(rename = "type")]
        action: &'static str,
        tables: Vec<Entry<'a>>,
    }
    #[derive(Serialize)]
    struct Entry<'a> {
        name: &'a str,
        description: &'a str,
    }
    let stage = |action, kind| Stage {
        action,
        tables: built
            .tables
            .iter()
            .filter(|t| t.kind == kind)
            .map(|t| Entry { name: &t.name, description: &t.description })
            .collect(),
    };
    let m = Manifest {
        study_prefix: &built.study,
        description: &built.description,
        stages: Stages {
            default: vec![stage("export:counts", TableKind::Cube), stage("export:meta", TableKind::Meta)],
        },
    };
    toml::to_string(&m).map_err(|e| StudyError(format!("manifest.toml: {e}")))
}

/// Writes `data_path/<study>/`: first removing what an earlier export of
/// this study left there (only files named for the study), then the
/// tables, `manifest.toml`, and `<study>.zip`.
pub fn export(built: &Built, data_path: &Path) -> Result<Exported, StudyError> {
    let folder = data_path.join(&built.study);
    std::fs::create_dir_all(&folder).map_err(io(&folder))?;
    let ours = |name: &str| {
        name.starts_with(&format!("{}__", built.study))
            || name == format!("{}.zip", built.study)
            || name == "manifest.toml"
    };
    for entry in std::fs::read_dir(&folder).map_err(io(&folder))? {
        let entry = entry.map_err(io(&folder))?;
        if entry.file_type().map_err(io(&folder))?.is_file() && ours(&entry.file_name().to_string_lossy()) {
            std::fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
        }
    }
    let mut files = Vec::new();
    let mut zipped: Vec<(String, Vec<u8>)> = Vec::new();
    let mut empty = Vec::new();
    for table in &built.tables {
        if table.rows.is_empty() {
            empty.push(table.name.clone());
            continue;
        }
        let stem = format!("{}.{}", table.name, table.kind.as_str());
        let bytes = parquet(table)?;
        for (name, content) in [(format!("{stem}.parquet"), &bytes), (format!("{stem}.csv"), &csv(table))] {
            let path = folder.join(&name);
            write_atomically(&path, content)?;
            files.push(path);
        }
        zipped.push((format!("{stem}.parquet"), bytes));
    }
    let manifest = manifest(built)?;
    let path = folder.join("manifest.toml");
    write_atomically(&path, manifest.as_bytes())?;
    files.push(path);
    zipped.push(("manifest.toml".into(), manifest.into_bytes()));

    let zip_path = folder.join(format!("{}.zip", built.study));
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in &zipped {
        zip.start_file(name.as_str(), options).map_err(|e| StudyError(format!("{}: {e}", zip_path.display())))?;
        zip.write_all(bytes).map_err(io(&zip_path))?;
    }
    let bytes = zip.finish().map_err(|e| StudyError(format!("{}: {e}", zip_path.display())))?.into_inner();
    write_atomically(&zip_path, &bytes)?;
    files.push(zip_path);
    Ok(Exported { folder, files, empty })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BuiltColumn, TableKind};
    use serde_json::json;
    use std::io::Read;

    fn built() -> Built {
        let col = |n: &str, t: &str| BuiltColumn { name: n.into(), sql_type: t.into() };
        Built {
            study: "demo".into(),
            description: "A \"quoted\" description".into(),
            data_package_version: 3,
            resources: 10,
            tables: vec![
                BuiltTable {
                    name: "demo__count_x".into(),
                    kind: TableKind::Cube,
                    description: "x".into(),
                    columns: vec![col("cnt", "BIGINT"), col("sex", "VARCHAR")],
                    rows: vec![vec![json!(12), json!(null)], vec![json!(11), json!("a, b")]],
                    min_cell: Some(10),
                    suppressed: 1,
                    complementary: 0,
                },
                BuiltTable {
                    name: "demo__count_empty".into(),
                    kind: TableKind::Cube,
                    description: String::new(),
                    columns: vec![col("cnt", "BIGINT")],
                    rows: vec![],
                    min_cell: Some(10),
                    suppressed: 4,
                    complementary: 0,
                },
                BuiltTable {
                    name: "demo__meta_date".into(),
                    kind: TableKind::Meta,
                    description: String::new(),
                    columns: vec![col("min_date", "DATE"), col("max_date", "DATE")],
                    rows: vec![vec![json!("2020-01-01"), json!("2021-12-31")]],
                    min_cell: None,
                    suppressed: 0,
                    complementary: 0,
                },
            ],
        }
    }

    #[test]
    fn writes_the_cumulus_layout() {
        let dir = std::env::temp_dir().join(format!("veil-study-export-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("demo")).unwrap();
        std::fs::write(dir.join("demo/demo__count_stale.cube.csv"), "old").unwrap();
        std::fs::write(dir.join("demo/notes.txt"), "the user's").unwrap();
        let out = export(&built(), &dir).unwrap();
        assert_eq!(out.empty, ["demo__count_empty"]);
        let mut names: Vec<String> = std::fs::read_dir(dir.join("demo"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "demo.zip",
                "demo__count_x.cube.csv",
                "demo__count_x.cube.parquet",
                "demo__meta_date.meta.csv",
                "demo__meta_date.meta.parquet",
                "manifest.toml",
                "notes.txt"
            ]
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("demo/demo__count_x.cube.csv")).unwrap(),
            "cnt,sex\r\n12,\r\n11,\"a, b\"\r\n"
        );
        let manifest: toml::Table =
            toml::from_str(&std::fs::read_to_string(dir.join("demo/manifest.toml")).unwrap()).unwrap();
        assert_eq!(manifest["study_prefix"].as_str(), Some("demo"));
        assert_eq!(manifest["description"].as_str(), Some("A \"quoted\" description"));
        let stages = manifest["stages"]["default"].as_array().unwrap();
        assert_eq!(stages[0]["type"].as_str(), Some("export:counts"));
        assert_eq!(stages[1]["tables"][0]["name"].as_str(), Some("demo__meta_date"));

        let mut zip = zip::ZipArchive::new(std::fs::File::open(dir.join("demo/demo.zip")).unwrap()).unwrap();
        let mut members: Vec<String> = zip.file_names().map(|n| n.unwrap().into_owned()).collect();
        members.sort();
        assert_eq!(members, ["demo__count_x.cube.parquet", "demo__meta_date.meta.parquet", "manifest.toml"]);
        let mut inside = Vec::new();
        zip.by_name("demo__count_x.cube.parquet").unwrap().read_to_end(&mut inside).unwrap();
        assert_eq!(inside, std::fs::read(dir.join("demo/demo__count_x.cube.parquet")).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

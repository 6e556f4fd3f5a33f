//! Reading an uploaded data package, and refusing it before anything of it
//! is kept (reference: cumulus.md §4.5, §7): a zip of
//! `<study>__<table>.<kind>.parquet` members and `manifest.toml`, checked
//! for size, names, schema, types and small cells.
//!
//! Every message names files, tables and columns; none carries a value from
//! the data.

use std::io::Read as _;

use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use serde_json::Value as Json;

/// Why an upload was refused. The message is for the site that sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

fn refuse<T>(msg: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(msg.into()))
}

/// Caps that keep a hostile zip from exhausting the aggregator.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The zip itself, as uploaded.
    pub zip_bytes: u64,
    /// Members in the zip.
    pub members: usize,
    /// Uncompressed bytes of all members together.
    pub unpacked_bytes: u64,
    /// Uncompressed over compressed size of a member above which it is
    /// taken for a zip bomb (Parquet is already compressed: real members
    /// stay far below).
    pub ratio: u64,
    /// Rows of all tables together. Parquet compresses repeated rows to
    /// almost nothing, so this is checked from each file's metadata before
    /// anything is decoded, and again while decoding.
    pub rows: u64,
    /// Columns of one table.
    pub columns: usize,
    /// Bytes the decoded tables may take in memory, all together: checked
    /// against the sizes the Parquet metadata declares before decoding, and
    /// counted cell by cell while decoding (strings are read through their
    /// dictionary, so a repeated value is not copied per row before it is
    /// counted).
    pub decoded_bytes: u64,
    /// Bytes of one text cell.
    pub cell_bytes: usize,
}

impl Default for Limits {
    /// Sized so that one upload, however hostile, stays within 256 MiB of
    /// memory: a 64 MiB zip, 64 MiB of members unpacked, 96 MiB of decoded
    /// cells; a real cube holds thousands of rows, not millions.
    fn default() -> Limits {
        Limits {
            zip_bytes: 64 << 20,
            members: 1000,
            unpacked_bytes: 64 << 20,
            ratio: 100,
            rows: 1_000_000,
            columns: 64,
            decoded_bytes: 96 << 20,
            cell_bytes: 4096,
        }
    }
}

/// What is left of an upload's row and byte caps as its tables are read.
struct Budget {
    rows: u64,
    bytes: u64,
}

/// What a decoded cell costs in memory besides its text: the JSON value and
/// its share of the row.
const CELL_COST: u64 = 48;

/// What a member holds, from its name's infix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `.cube.`: counts over every combination of strata, merged across sites.
    Cube,
    /// `.annotated_cube.`: a cube with descriptive columns, merged likewise.
    AnnotatedCube,
    /// `.flat.`: a per-site table, never merged.
    Flat,
    /// `.meta.`: `meta_date`, `meta_version` and the like.
    Meta,
}

impl Kind {
    /// The infix as it appears in file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Cube => "cube",
            Kind::AnnotatedCube => "annotated_cube",
            Kind::Flat => "flat",
            Kind::Meta => "meta",
        }
    }

    /// The inverse of [`Kind::as_str`].
    pub fn parse(text: &str) -> Option<Kind> {
        [Kind::Cube, Kind::AnnotatedCube, Kind::Flat, Kind::Meta].into_iter().find(|k| k.as_str() == text)
    }

    /// Whether its tables are summed across sites.
    pub fn merged(self) -> bool {
        matches!(self, Kind::Cube | Kind::AnnotatedCube)
    }
}

/// A column's type as the query API reports it (Cumulus' column types:
/// dates by the name's suffix, then integer, float, boolean, string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// Text.
    String,
    /// A whole number.
    Integer,
    /// A decimal number.
    Float,
    /// true or false.
    Boolean,
    /// A date, by day (also a date column named for no period).
    Day,
    /// A date standing for its week.
    Week,
    /// A date standing for its month.
    Month,
    /// A date standing for its year.
    Year,
}

impl ColumnType {
    fn of(name: &str, data_type: &DataType) -> Option<ColumnType> {
        // A dictionary-encoded column (as pyarrow writes categories) is its values' type.
        if let DataType::Dictionary(_, values) = data_type {
            return ColumnType::of(name, values);
        }
        let by_name = [
            ("year", ColumnType::Year),
            ("month", ColumnType::Month),
            ("week", ColumnType::Week),
            ("day", ColumnType::Day),
        ]
        .into_iter()
        .find(|(suffix, _)| name.ends_with(suffix))
        .map(|(_, t)| t);
        let by_type = match data_type {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ColumnType::String,
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32 => ColumnType::Integer,
            DataType::Float32 | DataType::Float64 => ColumnType::Float,
            DataType::Boolean => ColumnType::Boolean,
            DataType::Date32 | DataType::Date64 => ColumnType::Day,
            _ => return None,
        };
        Some(match (by_name, by_type) {
            (Some(date), ColumnType::String | ColumnType::Day) => date,
            _ => by_type,
        })
    }

    /// A date type (day, week, month or year).
    pub fn is_date(self) -> bool {
        matches!(self, ColumnType::Day | ColumnType::Week | ColumnType::Month | ColumnType::Year)
    }
}

/// A column's name and type.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Column {
    /// Its name (lower-case letters, digits and `_`).
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub column_type: ColumnType,
}

/// One table of a data package, read into memory (cubes are small: their
/// rows are strata combinations, not patients).
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// The data package: the table's name without the study prefix.
    pub package: String,
    /// Its kind.
    pub kind: Kind,
    /// Its columns, `cnt` among them for cubes.
    pub columns: Vec<Column>,
    /// Its rows, one value per column: strings, numbers, booleans, dates as
    /// `YYYY-MM-DD`, `null`.
    pub rows: Vec<Vec<Json>>,
}

impl Table {
    /// The position of a column.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// A data package that passed every check.
#[derive(Debug, Clone)]
pub struct Package {
    /// Cubes, annotated cubes and flat tables.
    pub tables: Vec<Table>,
    /// `meta_date`'s `min_date` and `max_date`, when present.
    pub period: Option<(String, String)>,
    /// `manifest.toml`, when present.
    pub manifest: Option<String>,
}

/// Reads `zip` as a data package of `study` at `version`, refusing it
/// unless every member is safe to unpack and fit to merge, and every count
/// is at least `min_cell`.
pub fn read(zip: &[u8], study: &str, version: i64, min_cell: u64, limits: &Limits) -> Result<Package, Refusal> {
    if zip.len() as u64 > limits.zip_bytes {
        return refuse(format!("the zip is larger than the aggregator accepts ({} MiB)", limits.zip_bytes >> 20));
    }
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip))
        .or_else(|e| refuse(format!("the upload is not a readable zip: {e}")))?;
    if archive.len() > limits.members {
        return refuse(format!(
            "the zip holds {} files; the aggregator accepts at most {}",
            archive.len(),
            limits.members
        ));
    }
    let mut unpacked = 0u64;
    let mut package = Package { tables: Vec::new(), period: None, manifest: None };
    let mut seen_version = None;
    let mut names = std::collections::BTreeSet::new();
    let mut decoding = Budget { rows: limits.rows, bytes: limits.decoded_bytes };
    for i in 0..archive.len() {
        let mut member = archive.by_index(i).or_else(|e| refuse(format!("the zip's member {i} is unreadable: {e}")))?;
        let name =
            member.name().or_else(|e| refuse(format!("the zip's member {i} has an unreadable name: {e}")))?.to_string();
        let shown = printable(&name);
        if !names.insert(name.clone()) {
            return refuse(format!("{shown} appears twice in the zip"));
        }
        if member.is_dir() {
            return refuse(format!("{shown}: the zip must hold files only, no folders"));
        }
        let member_kind = member_name(&name, study)?;
        // The declared size can lie; the read below is capped whatever it says.
        let budget = limits.unpacked_bytes - unpacked;
        let declared = member.size();
        if declared > budget {
            return refuse(format!(
                "{shown} unpacks to more than the aggregator accepts ({} MiB in all)",
                limits.unpacked_bytes >> 20
            ));
        }
        let mut bytes = Vec::with_capacity(declared.min(1 << 20) as usize);
        (&mut member)
            .take(budget + 1)
            .read_to_end(&mut bytes)
            .or_else(|e| refuse(format!("{shown} cannot be unpacked: {e}")))?;
        if bytes.len() as u64 > budget || bytes.len() as u64 != declared {
            return refuse(format!("{shown} unpacks to a different size than the zip declares, or to too much"));
        }
        let compressed = member.compressed_size().max(1);
        if bytes.len() as u64 > 1 << 20 && bytes.len() as u64 / compressed > limits.ratio {
            return refuse(format!(
                "{shown} expands {}-fold: refused as a possible zip bomb",
                bytes.len() as u64 / compressed
            ));
        }
        unpacked += bytes.len() as u64;
        match member_kind {
            None => {
                let text = String::from_utf8(bytes).or_else(|_| refuse("manifest.toml is not UTF-8"))?;
                let manifest: toml::Table = text.parse().or_else(|e: toml::de::Error| {
                    refuse(format!("manifest.toml is not valid TOML: {}", e.message()))
                })?;
                match manifest.get("study_prefix").and_then(|p| p.as_str()) {
                    Some(p) if p == study => {}
                    Some(_) => return refuse(format!("manifest.toml names another study than {study}")),
                    None => return refuse("manifest.toml has no study_prefix"),
                }
                package.manifest = Some(text);
            }
            Some((package_name, kind)) => {
                let table = read_parquet(bytes, &shown, package_name, kind, limits, &mut decoding)?;
                if kind == Kind::Meta {
                    match package_name {
                        "meta_version" => seen_version = Some(meta_version(&table, &shown)?),
                        "meta_date" => package.period = meta_date(&table, &shown)?,
                        _ => {}
                    }
                } else {
                    check_counts(&table, &shown, min_cell)?;
                    package.tables.push(table);
                }
            }
        }
    }
    if let Some(found) = seen_version
        && found != version
    {
        return refuse(format!(
            "{study}__meta_version says data package version {found}, but the upload was announced as version {version}"
        ));
    }
    if package.period.is_none() && study != "discovery" {
        return refuse(format!("the zip has no {study}__meta_date.meta.parquet"));
    }
    if package.tables.is_empty() {
        return refuse("the zip holds no cube or flat table");
    }
    Ok(package)
}

/// A name safe to put in a message: printable ASCII, at most 120 characters.
fn printable(name: &str) -> String {
    name.chars().take(120).map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect()
}

/// `None` for `manifest.toml`, else the data package and kind of a
/// `<study>__<package>.<kind>.parquet` member; anything else is refused,
/// paths above all (no folder may be named, so nothing can climb out).
fn member_name<'a>(name: &'a str, study: &str) -> Result<Option<(&'a str, Kind)>, Refusal> {
    if name == "manifest.toml" {
        return Ok(None);
    }
    let shown = printable(name);
    if name.contains(['/', '\\']) || name.contains("..") || name.contains(':') {
        return refuse(format!("{shown}: members must be plain file names, without folders"));
    }
    let Some(stem) = name.strip_suffix(".parquet") else {
        return refuse(format!("{shown}: only Parquet tables and manifest.toml are accepted"));
    };
    let Some((table, kind)) = stem.rsplit_once('.') else {
        return refuse(format!("{shown}: the name must be <study>__<table>.<kind>.parquet"));
    };
    if kind == "archive" {
        return refuse(format!("{shown}: archive tables are line-level data, which an aggregator never accepts"));
    }
    let Some(kind) = Kind::parse(kind) else {
        return refuse(format!("{shown}: the kind must be cube, annotated_cube, flat or meta"));
    };
    let Some(package) = table.strip_prefix(study).and_then(|t| t.strip_prefix("__")) else {
        return refuse(format!("{shown} does not belong to the study {study}"));
    };
    if !is_identifier(package) {
        return refuse(format!("{shown}: table names are lower-case letters, digits and _"));
    }
    Ok(Some((package, kind)))
}

/// Lower-case letters, digits and `_`, starting with a letter: safe as a
/// name in paths, ids and messages.
pub fn is_identifier(name: &str) -> bool {
    name.len() <= 100
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn read_parquet(
    bytes: Vec<u8>,
    shown: &str,
    package: &str,
    kind: Kind,
    limits: &Limits,
    budget: &mut Budget,
) -> Result<Table, Refusal> {
    use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
    let unreadable = |e: &dyn std::fmt::Display| Refusal(format!("{shown} is not a readable Parquet file: {e}"));
    let bytes = bytes::Bytes::from(bytes);
    let metadata = ArrowReaderMetadata::load(&bytes, ArrowReaderOptions::new()).map_err(|e| unreadable(&e))?;
    // The caps, from the metadata, before a single value is decoded.
    let file = metadata.metadata();
    let rows = u64::try_from(file.file_metadata().num_rows()).unwrap_or(u64::MAX);
    if rows > budget.rows {
        return refuse(format!(
            "{shown} holds {rows} rows; the aggregator accepts at most {} in one upload",
            limits.rows
        ));
    }
    let declared: u64 = file
        .row_groups()
        .iter()
        .flat_map(|g| g.columns())
        .map(|c| u64::try_from(c.uncompressed_size()).unwrap_or(u64::MAX))
        .fold(0, u64::saturating_add);
    if declared > budget.bytes {
        return refuse(format!(
            "{shown} declares {} MiB of data; the aggregator accepts at most {} MiB in one upload",
            declared >> 20,
            limits.decoded_bytes >> 20
        ));
    }
    let schema = metadata.schema().clone();
    if schema.fields().len() > limits.columns {
        return refuse(format!(
            "{shown} has {} columns; the aggregator accepts at most {}",
            schema.fields().len(),
            limits.columns
        ));
    }
    let mut columns = Vec::new();
    let mut read_as = Vec::new();
    for field in schema.fields() {
        let name = field.name();
        if !is_identifier(name) {
            return refuse(format!("{shown}: column names are lower-case letters, digits and _"));
        }
        if name == "site" && kind != Kind::Meta {
            return refuse(format!("{shown}: the column name site is the aggregator's own"));
        }
        let Some(column_type) = ColumnType::of(name, field.data_type()) else {
            return refuse(format!(
                "{shown}: column {name} has the type {}, which a count table cannot hold",
                field.data_type()
            ));
        };
        columns.push(Column { name: name.clone(), column_type });
        // Text through its dictionary: a value repeated in every row is
        // held once until each cell is counted against the budget.
        let plain = match field.data_type() {
            DataType::Dictionary(_, values) => values.as_ref(),
            other => other,
        };
        let data_type = match plain {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
            }
            other => other.clone(),
        };
        read_as.push(field.as_ref().clone().with_data_type(data_type));
    }
    let options = ArrowReaderOptions::new().with_schema(std::sync::Arc::new(arrow_schema::Schema::new(read_as)));
    let metadata = ArrowReaderMetadata::try_new(file.clone(), options).map_err(|e| unreadable(&e))?;
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(bytes, metadata)
        .with_batch_size(4096)
        .build()
        .map_err(|e| unreadable(&e))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| unreadable(&e))?;
        append_rows(&batch, &mut rows, shown, limits, budget)?;
    }
    Ok(Table { package: package.to_string(), kind, columns, rows })
}

fn append_rows(
    batch: &RecordBatch,
    rows: &mut Vec<Vec<Json>>,
    shown: &str,
    limits: &Limits,
    budget: &mut Budget,
) -> Result<(), Refusal> {
    let n = batch.num_rows() as u64;
    if n > budget.rows {
        return refuse(format!("{shown} holds more rows than the aggregator accepts in one upload ({})", limits.rows));
    }
    budget.rows -= n;
    for i in 0..batch.num_rows() {
        let mut row = Vec::with_capacity(batch.num_columns());
        for column in batch.columns() {
            let cell = value(column.as_ref(), i);
            let text = match &cell {
                Json::String(t) => t.len(),
                _ => 0,
            };
            if text > limits.cell_bytes {
                return refuse(format!(
                    "{shown} has a text cell longer than the aggregator accepts ({} bytes)",
                    limits.cell_bytes
                ));
            }
            let cost = CELL_COST + text as u64;
            if cost > budget.bytes {
                return refuse(format!(
                    "{shown}: the upload's tables decode to more than the aggregator accepts ({} MiB)",
                    limits.decoded_bytes >> 20
                ));
            }
            budget.bytes -= cost;
            row.push(cell);
        }
        rows.push(row);
    }
    Ok(())
}

/// One cell as JSON. The types are those [`ColumnType::of`] admits.
fn value(column: &dyn Array, i: usize) -> Json {
    use arrow_array::cast::AsArray as _;
    use arrow_array::types::*;
    if column.is_null(i) {
        return Json::Null;
    }
    if let Some(dictionary) = column.as_dictionary_opt::<Int32Type>() {
        let key = dictionary.keys().value(i);
        return usize::try_from(key)
            .ok()
            .filter(|k| *k < dictionary.values().len())
            .map_or(Json::Null, |k| value(dictionary.values().as_ref(), k));
    }
    match column.data_type() {
        DataType::Utf8 => column.as_string::<i32>().value(i).into(),
        DataType::LargeUtf8 => column.as_string::<i64>().value(i).into(),
        DataType::Utf8View => column.as_string_view().value(i).into(),
        DataType::Int8 => column.as_primitive::<Int8Type>().value(i).into(),
        DataType::Int16 => column.as_primitive::<Int16Type>().value(i).into(),
        DataType::Int32 => column.as_primitive::<Int32Type>().value(i).into(),
        DataType::Int64 => column.as_primitive::<Int64Type>().value(i).into(),
        DataType::UInt8 => column.as_primitive::<UInt8Type>().value(i).into(),
        DataType::UInt16 => column.as_primitive::<UInt16Type>().value(i).into(),
        DataType::UInt32 => column.as_primitive::<UInt32Type>().value(i).into(),
        DataType::Float32 => f64::from(column.as_primitive::<Float32Type>().value(i)).into(),
        DataType::Float64 => column.as_primitive::<Float64Type>().value(i).into(),
        DataType::Boolean => column.as_boolean().value(i).into(),
        DataType::Date32 => date(i64::from(column.as_primitive::<Date32Type>().value(i))).into(),
        DataType::Date64 => date(column.as_primitive::<Date64Type>().value(i).div_euclid(86_400_000)).into(),
        _ => Json::Null,
    }
}

fn date(days: i64) -> String {
    let (y, m, d) = veil_util::calendar::civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Every table needs a whole-number `cnt` with no cell under `min_cell`:
/// the aggregator re-checks what each site should have suppressed, because
/// a merged cell is only as safe as the cells summed into it, and a flat
/// table (served per site) is only as safe as its own cells. A table
/// without counts could hold rows about patients, so it is refused.
fn check_counts(table: &Table, shown: &str, min_cell: u64) -> Result<(), Refusal> {
    let Some(cnt) = table.position("cnt") else {
        return refuse(format!("{shown} has no cnt column: the aggregator takes counts only"));
    };
    if table.columns[cnt].column_type != ColumnType::Integer {
        return refuse(format!("{shown}: cnt must be a whole number"));
    }
    let mut small = 0usize;
    for row in &table.rows {
        match row[cnt].as_i64() {
            None => return refuse(format!("{shown}: cnt is empty in some rows")),
            Some(n) if n < 0 || (n as u64) < min_cell => small += 1,
            Some(_) => {}
        }
    }
    if small > 0 {
        return refuse(format!(
            "{shown}: {small} cell(s) count fewer than {min_cell}, this network's minimum cell size; suppress them at the site (count tables' min_subject) and export again"
        ));
    }
    if table.kind.merged() {
        let strata: Vec<usize> = (0..table.columns.len()).filter(|&i| i != cnt).collect();
        let mut keys = std::collections::HashSet::new();
        for row in &table.rows {
            let key: Vec<&Json> = strata.iter().map(|&i| &row[i]).collect();
            if !keys.insert(serde_json::to_string(&key).expect("JSON values serialise")) {
                return refuse(format!("{shown}: some strata combination appears in more than one row"));
            }
        }
    }
    Ok(())
}

/// A data package version as sites send it (a number, or its text, as the
/// Cumulus client writes `int(float(v))`): a whole number from 0 to 999,
/// `3.0` included; `NaN`, `-0.5`, `2.5` and the like are not versions.
pub fn package_version(v: &Json) -> Option<i64> {
    let f = match v {
        Json::Number(n) => n.as_f64()?,
        Json::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (f.is_finite() && f.fract() == 0.0 && (0.0..=999.0).contains(&f) && !(f == 0.0 && f.is_sign_negative()))
        .then_some(f as i64)
}

fn meta_version(table: &Table, shown: &str) -> Result<i64, Refusal> {
    let cell = table.position("data_package_version").and_then(|i| table.rows.first().map(|r| &r[i]));
    cell.and_then(package_version)
        .ok_or_else(|| Refusal(format!("{shown} holds no data_package_version that is a whole number from 0 to 999")))
}

fn meta_date(table: &Table, shown: &str) -> Result<Option<(String, String)>, Refusal> {
    let (Some(min), Some(max)) = (table.position("min_date"), table.position("max_date")) else {
        return refuse(format!("{shown} needs min_date and max_date columns"));
    };
    let Some(row) = table.rows.first() else { return Ok(Some((String::new(), String::new()))) };
    let text = |v: &Json| v.as_str().map(|s| s.chars().take(10).collect::<String>()).unwrap_or_default();
    Ok(Some((text(&row[min]), text(&row[max]))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_are_plain_and_of_the_study() {
        assert_eq!(member_name("flu__count_doses.cube.parquet", "flu").unwrap(), Some(("count_doses", Kind::Cube)));
        assert_eq!(member_name("manifest.toml", "flu").unwrap(), None);
        for bad in [
            "../flu__x.cube.parquet",
            "/etc/flu__x.cube.parquet",
            "sub/flu__x.cube.parquet",
            "flu__..x.cube.parquet",
            "C:flu__x.cube.parquet",
            "flu__x.archive.parquet",
            "flu__x.csv",
            "covid__x.cube.parquet",
            "flu__X.cube.parquet",
            "flu__x.weird.parquet",
        ] {
            assert!(member_name(bad, "flu").is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn versions_are_whole_numbers_from_0_to_999() {
        use serde_json::json;
        for (v, want) in [
            (json!(3), Some(3)),
            (json!(3.0), Some(3)),
            (json!("7"), Some(7)),
            (json!("7.0"), Some(7)),
            (json!(0), Some(0)),
            (json!(999), Some(999)),
        ] {
            assert_eq!(package_version(&v), want, "{v}");
        }
        for bad in [
            json!("NaN"),
            json!("nan"),
            json!(-0.5),
            json!("-0.5"),
            json!("-0"),
            json!(2.5),
            json!(1000),
            json!(-1),
            json!("inf"),
            json!(null),
            json!(true),
        ] {
            assert_eq!(package_version(&bad), None, "{bad}");
        }
    }

    #[test]
    fn dates_are_typed_by_name_as_cumulus_does() {
        assert_eq!(ColumnType::of("year", &DataType::Utf8), Some(ColumnType::Year));
        assert_eq!(ColumnType::of("period_start_month", &DataType::Date32), Some(ColumnType::Month));
        assert_eq!(ColumnType::of("cnt", &DataType::Int64), Some(ColumnType::Integer));
        assert_eq!(ColumnType::of("birthday", &DataType::Int32), Some(ColumnType::Integer), "a number stays a number");
        assert_eq!(ColumnType::of("x", &DataType::Binary), None);
    }
}

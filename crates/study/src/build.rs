//! Building a study: resources stream through the views into rows; at the
//! end, tables are joined, count cubes are computed over every combination
//! of strata, and cells under the minimum are dropped. Only what survives
//! suppression leaves this module.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use veil_views::ColumnType;

use crate::definition::{AgeBandDef, CountDef, Suppression, TableDef};
use crate::{NONE, Study, StudyError, err};

/// Rows of a view or table, with their column names.
struct Table {
    columns: Vec<String>,
    rows: Vec<Vec<Json>>,
}

impl Table {
    fn index(&self, column: &str) -> usize {
        self.columns.iter().position(|c| c == column).expect("columns are checked when the study loads")
    }
}

/// One resource's rows, per view.
pub struct ViewRows(Vec<(usize, Vec<Vec<Json>>)>);

impl Study {
    /// The rows one resource gives in each of the study's views.
    pub fn rows(&self, resource: &Json) -> Result<ViewRows, StudyError> {
        let mut out = Vec::new();
        let Some(ty) = resource.get("resourceType").and_then(Json::as_str) else { return Ok(ViewRows(out)) };
        for (i, (name, view)) in self.views.iter().enumerate() {
            if view.resource == ty {
                let new = view.rows(resource).map_err(|e| StudyError(format!("view '{name}': {e}")))?;
                out.push((i, new.into_iter().map(|r| r.values).collect()));
            }
        }
        Ok(ViewRows(out))
    }
}

/// Streams resources through a study's views.
pub struct Builder<'a> {
    study: &'a Study,
    rows: Vec<Vec<Vec<Json>>>,
    resources: u64,
}

/// What a built table is, in Cumulus' file naming (`<table>.<kind>.parquet`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableKind {
    /// A count cube.
    Cube,
    /// `meta_date` or `meta_version`.
    Meta,
}

impl TableKind {
    /// The infix in file names.
    pub fn as_str(self) -> &'static str {
        match self {
            TableKind::Cube => "cube",
            TableKind::Meta => "meta",
        }
    }
}

/// A column of a built table: its name and its SQL type (`BIGINT`,
/// `VARCHAR`, `DATE`, `INTEGER`), as DuckDB names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuiltColumn {
    /// Its name.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub sql_type: String,
}

impl BuiltColumn {
    fn new(name: &str, ty: ColumnType) -> BuiltColumn {
        BuiltColumn { name: name.to_string(), sql_type: ty.sql_name().to_string() }
    }
}

/// A table ready to export: a suppressed cube or a meta table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuiltTable {
    /// `<study>__<name>`.
    pub name: String,
    /// Cube or meta.
    pub kind: TableKind,
    /// From `study.toml`.
    pub description: String,
    /// The columns, `cnt` first in cubes.
    pub columns: Vec<BuiltColumn>,
    /// The rows (`null` where a cube rolls a stratum up).
    pub rows: Vec<Vec<Json>>,
    /// The minimum cell size applied (cubes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_cell: Option<u64>,
    /// How many cells were dropped for being under it (primary suppression).
    #[serde(default)]
    pub suppressed: u64,
    /// How many more were dropped so that those cannot be worked out from
    /// the rest (complementary suppression).
    #[serde(default)]
    pub complementary: u64,
}

impl BuiltTable {
    /// For a cube, what suppression did, in words: `288 cells kept, 12
    /// under 10 dropped, 30 more so that those cannot be worked out`.
    pub fn suppression_summary(&self) -> Option<String> {
        let min = self.min_cell?;
        Some(format!(
            "{} cells kept, {} under {min} dropped, {} more so that those cannot be worked out",
            self.rows.len(),
            self.suppressed,
            self.complementary
        ))
    }
}

/// A built study: what `veil study export` writes out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Built {
    /// The study prefix.
    pub study: String,
    /// The study's description.
    pub description: String,
    /// `meta_version.data_package_version`.
    pub data_package_version: u32,
    /// Resources read.
    pub resources: u64,
    /// Cubes first, then `meta_date` and `meta_version`.
    pub tables: Vec<BuiltTable>,
}

impl<'a> Builder<'a> {
    /// Starts a build.
    pub fn new(study: &'a Study) -> Builder<'a> {
        Builder { study, rows: vec![Vec::new(); study.views.len()], resources: 0 }
    }

    /// Resources seen so far.
    pub fn resources(&self) -> u64 {
        self.resources
    }

    /// Passes one resource through the views.
    pub fn add(&mut self, resource: &Json) -> Result<(), StudyError> {
        let rows = self.study.rows(resource)?;
        self.add_rows(rows);
        Ok(())
    }

    /// Adds what [`Study::rows`] gave for one resource (which may run on
    /// another thread).
    pub fn add_rows(&mut self, rows: ViewRows) {
        self.resources += 1;
        for (view, new) in rows.0 {
            self.rows[view].extend(new);
        }
    }

    /// Joins, counts and suppresses. `today` (`YYYY-MM-DD`) caps
    /// `meta_date.max_date`, as Cumulus advises.
    pub fn finish(self, today: &str) -> Result<Built, StudyError> {
        let study = self.study;
        let mut sources: HashMap<String, Table> = HashMap::new();
        for ((name, view), rows) in study.views.iter().zip(self.rows) {
            sources.insert(name.clone(), Table { columns: view.columns().to_vec(), rows });
        }
        for def in &study.tables {
            let table = make_table(def, &sources)?;
            sources.insert(def.name.clone(), table);
        }
        let mut tables = Vec::new();
        for def in &study.counts {
            tables.push(count(&study.prefix, def, &sources[&def.from])?);
        }
        let (min, max) = match &study.meta_date {
            Some(m) => date_range(&sources[&m.from], &m.column, today),
            None => (None, None),
        };
        tables.push(BuiltTable {
            name: format!("{}__meta_date", study.prefix),
            kind: TableKind::Meta,
            description: "The earliest and latest dates in the data the study counted.".into(),
            columns: vec![
                BuiltColumn::new("min_date", ColumnType::Date),
                BuiltColumn::new("max_date", ColumnType::Date),
            ],
            rows: vec![vec![min.map_or(Json::Null, Json::String), max.map_or(Json::Null, Json::String)]],
            min_cell: None,
            suppressed: 0,
            complementary: 0,
        });
        tables.push(BuiltTable {
            name: format!("{}__meta_version", study.prefix),
            kind: TableKind::Meta,
            description: "The version of this study's output format.".into(),
            columns: vec![BuiltColumn::new("data_package_version", ColumnType::Integer)],
            rows: vec![vec![Json::from(study.data_package_version)]],
            min_cell: None,
            suppressed: 0,
            complementary: 0,
        });
        Ok(Built {
            study: study.prefix.clone(),
            description: study.description.clone(),
            data_package_version: study.data_package_version,
            resources: self.resources,
            tables,
        })
    }
}

/// A value as a join key or stratum: text, with numbers and booleans as
/// written; `None` for null.
fn text(v: &Json) -> Option<String> {
    match v {
        Json::Null => None,
        Json::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn make_table(def: &TableDef, sources: &HashMap<String, Table>) -> Result<Table, StudyError> {
    let base = &sources[&def.from];
    let mut columns = base.columns.clone();
    let mut rows = base.rows.clone();
    for j in &def.join {
        let right = &sources[&j.view];
        let key = right.index(&j.on);
        let keep: Vec<usize> = (0..right.columns.len()).filter(|&i| i != key).collect();
        let mut by_key: HashMap<String, &Vec<Json>> = HashMap::with_capacity(right.rows.len());
        for row in &right.rows {
            if let Some(k) = text(&row[key])
                && by_key.insert(k, row).is_some()
            {
                // Joining would count the left row twice; the message names
                // the view and column, not the key.
                return err(format!(
                    "table '{}': view '{}' has two rows with the same {}; a join needs one row per key",
                    def.name, j.view, j.on
                ));
            }
        }
        let left_key = columns.iter().position(|c| *c == j.on).expect("checked when the study loads");
        for row in &mut rows {
            let matched = text(&row[left_key]).and_then(|k| by_key.get(&k).copied());
            row.extend(keep.iter().map(|&i| matched.map_or(Json::Null, |m| m[i].clone())));
        }
        columns.extend(keep.iter().map(|&i| right.columns[i].clone()));
    }
    for band in &def.age_bands {
        let (born, at) = (columns.iter().position(|c| *c == band.born), columns.iter().position(|c| *c == band.at));
        let (born, at) = (born.expect("checked"), at.expect("checked"));
        for row in &mut rows {
            let label = age_band(band, row[born].as_str(), row[at].as_str());
            row.push(label.map_or(Json::Null, Json::String));
        }
        columns.push(band.column.clone());
    }
    Ok(Table { columns, rows })
}

/// `(year, month, day)` of a FHIR date or dateTime given to the day.
fn ymd(value: &str) -> Option<(i32, u32, u32)> {
    let b = value.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    Some((value[0..4].parse().ok()?, value[5..7].parse().ok()?, value[8..10].parse().ok()?))
}

/// The age band of someone born on `born` at `at`; `None` unless both are
/// given to the day. A negative age counts as 0: dates shifted
/// independently per resource can put an infant's event before its birth.
fn age_band(def: &AgeBandDef, born: Option<&str>, at: Option<&str>) -> Option<String> {
    let (by, bm, bd) = ymd(born?)?;
    let (ay, am, ad) = ymd(at?)?;
    let age = (ay - by - i32::from((am, ad) < (bm, bd))).max(0) as u32;
    Some(if age >= def.top {
        format!("{}+", def.top)
    } else {
        let low = age / def.width * def.width;
        format!("{low}-{}", low + def.width - 1)
    })
}

use veil_suppress::ALL;

/// One count cube: distinct values of the counted column per cell of every
/// grouping set (all 2^k subsets of the strata), cells under the minimum
/// dropped, and (unless the study asks for primary suppression only) the
/// cells that would let a reader work them out ([`veil_suppress::complementary`]).
fn count(prefix: &str, def: &CountDef, table: &Table) -> Result<BuiltTable, StudyError> {
    let strata: Vec<usize> = def.strata.iter().map(|s| table.index(s)).collect();
    let counted = table.index(&def.count_distinct);
    // Values are interned per column so that cells are keyed by small integers.
    let mut dictionaries: Vec<Vec<String>> = vec![Vec::new(); strata.len()];
    let mut lookups: Vec<HashMap<String, u32>> = vec![HashMap::new(); strata.len()];
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut cells: HashMap<Vec<u32>, HashSet<u32>> = HashMap::new();
    // A stratum is additive when every counted id has one value of it.
    let mut value_of: Vec<HashMap<u32, u32>> = vec![HashMap::new(); strata.len()];
    let mut additive = vec![true; strata.len()];
    let sets = 1u32 << strata.len();
    for row in &table.rows {
        let Some(id) = text(&row[counted]) else { continue };
        let next = ids.len() as u32;
        let id = *ids.entry(id).or_insert(next);
        let values: Vec<u32> = strata
            .iter()
            .enumerate()
            .map(|(i, &col)| {
                let value = text(&row[col]).unwrap_or_else(|| NONE.to_string());
                if let Some(&known) = lookups[i].get(&value) {
                    return known;
                }
                let next = dictionaries[i].len() as u32;
                dictionaries[i].push(value.clone());
                lookups[i].insert(value, next);
                next
            })
            .collect();
        for (i, &v) in values.iter().enumerate() {
            if *value_of[i].entry(id).or_insert(v) != v {
                additive[i] = false;
            }
        }
        for set in 0..sets {
            let key: Vec<u32> =
                values.iter().enumerate().map(|(i, &v)| if set & (1 << i) != 0 { v } else { ALL }).collect();
            cells.entry(key).or_default().insert(id);
        }
    }
    let counts: HashMap<Vec<u32>, u64> = cells.into_iter().map(|(k, ids)| (k, ids.len() as u64)).collect();
    let primary: HashSet<Vec<u32>> =
        counts.iter().filter(|(_, n)| **n < def.min_cell).map(|(k, _)| k.clone()).collect();
    let complementary = match def.suppression {
        Suppression::Primary => HashSet::new(),
        Suppression::Complementary => {
            let values: Vec<u32> = dictionaries.iter().map(|d| d.len() as u32).collect();
            veil_suppress::complementary(
                &veil_suppress::Cube { counts: &counts, values: &values, additive: &additive },
                &primary,
            )
            .map_err(|e| {
                StudyError(format!(
                    "{prefix}__{}: {e}: use fewer strata or strata with fewer values, or suppression = \"primary\"",
                    def.name
                ))
            })?
        }
    };
    let mut rows: Vec<Vec<Json>> =
        counts
            .iter()
            .filter(|(key, _)| !primary.contains(*key) && !complementary.contains(*key))
            .map(|(key, &n)| {
                let mut row = vec![Json::from(n)];
                row.extend(key.iter().enumerate().map(|(i, &v)| {
                    if v == ALL { Json::Null } else { Json::String(dictionaries[i][v as usize].clone()) }
                }));
                row
            })
            .collect();
    sort_rows(&mut rows);
    let mut columns = vec![BuiltColumn::new("cnt", ColumnType::BigInt)];
    columns.extend(def.strata.iter().map(|s| BuiltColumn::new(s, ColumnType::Text)));
    Ok(BuiltTable {
        name: format!("{prefix}__{}", def.name),
        kind: TableKind::Cube,
        description: def.description.clone(),
        columns,
        suppressed: primary.len() as u64,
        complementary: complementary.len() as u64,
        rows,
        min_cell: Some(def.min_cell),
    })
}

/// Cumulus' export order: by every column, descending, nulls first.
pub(crate) fn sort_rows(rows: &mut [Vec<Json>]) {
    use std::cmp::Ordering;
    fn cmp(a: &Json, b: &Json) -> Ordering {
        match (a, b) {
            (Json::Null, Json::Null) => Ordering::Equal,
            (Json::Null, _) => Ordering::Less,
            (_, Json::Null) => Ordering::Greater,
            (Json::Number(x), Json::Number(y)) => y.as_i64().cmp(&x.as_i64()),
            (x, y) => text(y).cmp(&text(x)),
        }
    }
    rows.sort_by(|a, b| a.iter().zip(b).map(|(x, y)| cmp(x, y)).find(|o| o.is_ne()).unwrap_or(Ordering::Equal));
}

/// The first and last day in a date column, the last capped at `today`.
fn date_range(table: &Table, column: &str, today: &str) -> (Option<String>, Option<String>) {
    let col = table.index(column);
    let (mut min, mut max): (Option<String>, Option<String>) = (None, None);
    for (first, last) in table.rows.iter().filter_map(|r| r[col].as_str()).filter_map(day_span) {
        min = Some(min.map_or(first.clone(), |m| m.min(first)));
        max = Some(max.map_or(last.clone(), |m| m.max(last)));
    }
    (min, max.map(|m| m.as_str().min(today).to_string()))
}

/// The first and last day a date stands for: itself when given to the day,
/// its month or its whole year when cut to that (as Safe Harbor cuts them).
fn day_span(value: &str) -> Option<(String, String)> {
    if ymd(value).is_some() {
        return Some((value[..10].to_string(), value[..10].to_string()));
    }
    let year: i32 = value.get(..4)?.parse().ok()?;
    match value.len() {
        4 => Some((format!("{year:04}-01-01"), format!("{year:04}-12-31"))),
        7 if value.as_bytes()[4] == b'-' => {
            let month: u32 = value[5..7].parse().ok().filter(|m| (1..=12).contains(m))?;
            let last = veil_util::calendar::days_in_month(year, month);
            Some((format!("{year:04}-{month:02}-01"), format!("{year:04}-{month:02}-{last:02}")))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn study(min_cell: u64) -> Study {
        let patient = r#"{"resource": "Patient", "select": [{"column": [{"name": "patient_ref", "path": "getResourceKey()"}, {"name": "birth_date", "path": "birthDate"}, {"name": "sex", "path": "gender"}]}]}"#;
        let visit = r#"{"resource": "Encounter", "select": [{"column": [{"name": "visit_ref", "path": "getResourceKey()"}, {"name": "patient_ref", "path": "subject.getReferenceKey(Patient)"}, {"name": "start", "path": "period.start"}, {"name": "class", "path": "class.code"}]}]}"#;
        let toml = format!(
            "study_prefix = 't'\n[views]\npatient = 'p'\nvisit = 'v'\n\
             [[tables]]\nname = 'visits'\nfrom = 'visit'\njoin = [{{ view = 'patient', on = 'patient_ref' }}]\n\
             age_bands = [{{ column = 'age', born = 'birth_date', at = 'start' }}]\n\
             [[counts]]\nname = 'count_patients'\nfrom = 'visits'\nstrata = ['sex', 'age']\ncount_distinct = 'patient_ref'\nmin_cell = {min_cell}\n\
             [meta_date]\nfrom = 'visits'\ncolumn = 'start'\n"
        );
        Study::parse(&toml, |f| Ok(if f == "p" { patient } else { visit }.to_string())).unwrap()
    }

    /// Five patients: three women (two in their thirties), two men; one
    /// visit without a known patient; one patient with no sex recorded.
    fn build(min_cell: u64) -> Built {
        let study = study(min_cell);
        let mut b = Builder::new(&study);
        let patients = [
            ("a", "1990-06-01", Some("female")),
            ("b", "1985-01-01", Some("female")),
            ("c", "1930-01-01", Some("female")),
            ("d", "2000-01-01", Some("male")),
            ("e", "2001-01-01", None),
        ];
        for (id, born, sex) in patients {
            let mut p = json!({"resourceType": "Patient", "id": id, "birthDate": born});
            if let Some(s) = sex {
                p["gender"] = json!(s);
            }
            b.add(&p).unwrap();
        }
        for (i, (who, when)) in [
            ("a", "2021-05-31"),
            ("a", "2021-06-01"),
            ("b", "2021-03-01T10:00:00Z"),
            ("c", "2021-01-01"),
            ("d", "2021-01-01"),
            ("e", "2030-01-01"),
            ("zz", "2021-01-01"),
        ]
        .iter()
        .enumerate()
        {
            b.add(&json!({"resourceType": "Encounter", "id": format!("v{i}"), "subject": {"reference": format!("Patient/{who}")}, "period": {"start": when}})).unwrap();
        }
        b.finish("2026-11-22").unwrap()
    }

    fn cells(t: &BuiltTable) -> Vec<String> {
        t.rows
            .iter()
            .map(|r| r.iter().map(|v| text(v).unwrap_or_else(|| "*".into())).collect::<Vec<_>>().join(","))
            .collect()
    }

    #[test]
    fn cubes_count_distinct_values_in_every_grouping_set() {
        let built = build(1);
        let cube = &built.tables[0];
        assert_eq!(cube.name, "t__count_patients");
        assert_eq!(
            cube.columns.iter().map(|c| format!("{} {}", c.name, c.sql_type)).collect::<Vec<_>>(),
            ["cnt BIGINT", "sex VARCHAR", "age VARCHAR"]
        );
        let got = cells(cube);
        // Patient a is 30 at one visit and 31 at the other: one patient,
        // counted once in the 30-39 band. zz has no patient row: its sex
        // and age are real nulls.
        for want in [
            "6,*,*",
            "3,female,*",
            "1,male,*",
            "2,cumulus__none,*",
            "1,cumulus__none,cumulus__none",
            "2,female,30-39",
            "1,female,90+",
            "2,*,30-39",
            "2,*,20-29",
            "1,cumulus__none,20-29",
        ] {
            assert!(got.contains(&want.to_string()), "{want} not in {got:?}");
        }
        assert_eq!(got[0], "6,*,*", "sorted by cnt descending first");
        assert_eq!(cube.suppressed, 0);
    }

    #[test]
    fn cells_under_the_minimum_are_dropped() {
        let built = build(3);
        let cube = &built.tables[0];
        assert_eq!(cells(cube), ["6,*,*", "3,female,*"]);
        assert!(cube.suppressed > 5);
        assert!(cube.rows.iter().all(|r| r[0].as_u64().unwrap() >= 3));
    }

    #[test]
    fn dates_cut_to_the_year_or_month_span_it() {
        assert_eq!(day_span("2019"), Some(("2019-01-01".into(), "2019-12-31".into())));
        assert_eq!(day_span("2020-02"), Some(("2020-02-01".into(), "2020-02-29".into())));
        assert_eq!(day_span("2020-02-03T10:00:00Z"), Some(("2020-02-03".into(), "2020-02-03".into())));
        assert_eq!(day_span("20x9"), None);
    }

    #[test]
    fn meta_tables_give_the_date_range_and_version() {
        let built = build(1);
        let meta: Vec<_> = built.tables.iter().filter(|t| t.kind == TableKind::Meta).collect();
        assert_eq!(meta[0].name, "t__meta_date");
        // 2030-01-01 lies in the future: capped at today.
        assert_eq!(meta[0].rows, [vec![json!("2021-01-01"), json!("2026-11-22")]]);
        assert_eq!(meta[1].rows, [vec![json!(0)]]);
    }

    #[test]
    fn age_bands() {
        let def = AgeBandDef { column: "a".into(), born: "b".into(), at: "c".into(), width: 10, top: 90 };
        let band = |born, at| age_band(&def, Some(born), Some(at));
        assert_eq!(band("2000-02-29", "2010-02-28").as_deref(), Some("0-9"));
        assert_eq!(band("2000-02-29", "2010-03-01").as_deref(), Some("10-19"));
        assert_eq!(band("1930-05-05", "2020-05-05").as_deref(), Some("90+"));
        assert_eq!(band("1930-05-05", "2020-05-04").as_deref(), Some("80-89"));
        assert_eq!(band("2020-05-05", "2020-04-01").as_deref(), Some("0-9"));
        assert_eq!(band("1990", "2020-04-01"), None);
    }

    #[test]
    fn a_join_needs_one_row_per_key() {
        let study = study(1);
        let mut b = Builder::new(&study);
        for _ in 0..2 {
            b.add(&json!({"resourceType": "Patient", "id": "same", "gender": "secret-value"})).unwrap();
        }
        let e = b.finish("2026-01-01").unwrap_err();
        assert!(
            e.0.contains("two rows with the same patient_ref") && !e.0.contains("same\"") && !e.0.contains("secret"),
            "{e}"
        );
    }
}

//! `study.toml`: what a study reads, how it joins, what it counts. Every
//! name is checked here, so that a mistake is reported before any data is
//! read.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value as Json;
use veil_views::View;

use crate::{DEFAULT_MIN_CELL, StudyError, err};

/// The studies compiled into Veil: name → files (`study.toml` first).
const BUILTIN: &[(&str, &[(&str, &str)])] = &[(
    "flu",
    &[
        ("study.toml", include_str!("../studies/flu/study.toml")),
        ("patient.json", include_str!("../studies/flu/patient.json")),
        ("vaccination.json", include_str!("../studies/flu/vaccination.json")),
    ],
)];

/// A study's `study.toml`, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    study_prefix: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    data_package_version: u32,
    views: BTreeMap<String, String>,
    #[serde(default)]
    tables: Vec<TableDef>,
    counts: Vec<CountDef>,
    meta_date: Option<MetaDateDef>,
    #[serde(default)]
    export: ExportPreset,
}

/// A table: a view's rows, left-joined to other views, with derived columns.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TableDef {
    pub(crate) name: String,
    pub(crate) from: String,
    #[serde(default)]
    pub(crate) join: Vec<JoinDef>,
    #[serde(default)]
    pub(crate) age_bands: Vec<AgeBandDef>,
}

/// A left join on a column both views have; the joined view must have at
/// most one row per key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JoinDef {
    pub(crate) view: String,
    pub(crate) on: String,
}

/// Whole years from `born` to `at`, as a band `width` years wide (`20-29`),
/// with every age from `top` on in one band (`90+`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AgeBandDef {
    pub(crate) column: String,
    pub(crate) born: String,
    pub(crate) at: String,
    #[serde(default = "default_width")]
    pub(crate) width: u32,
    #[serde(default = "default_top")]
    pub(crate) top: u32,
}

fn default_width() -> u32 {
    10
}

fn default_top() -> u32 {
    90
}

/// A count cube.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CountDef {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) description: String,
    pub(crate) from: String,
    pub(crate) strata: Vec<String>,
    /// The column whose distinct values are counted: a patient key counts
    /// patients, a resource key counts resources.
    pub(crate) count_distinct: String,
    #[serde(default = "default_min_cell")]
    pub(crate) min_cell: u64,
    /// `complementary` (the default) or `primary` (cells under `min_cell`
    /// only, as Cumulus does: a reader can work some of them out).
    #[serde(default)]
    pub(crate) suppression: Suppression,
}

/// How a count cube's small cells are hidden.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Suppression {
    /// Cells under the minimum are dropped, nothing else.
    Primary,
    /// Then the cells that would let a reader recover them are dropped too.
    #[default]
    Complementary,
}

fn default_min_cell() -> u64 {
    DEFAULT_MIN_CELL
}

/// Where `meta_date`'s `min_date` and `max_date` come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MetaDateDef {
    pub(crate) from: String,
    pub(crate) column: String,
}

/// The minimum-necessary Bulk Data `$export` for a study: the resource
/// types and elements it reads, and the de-identification rules to place
/// ahead of Veil's Safe Harbor policy for what the study needs that Safe
/// Harbor would remove.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportPreset {
    /// `_type`.
    #[serde(default)]
    pub types: Vec<String>,
    /// `_elements` (`Type.element`).
    #[serde(default)]
    pub elements: Vec<String>,
    /// Anonymizer rules to place first.
    #[serde(default)]
    pub rules: Vec<PresetRule>,
}

/// An anonymizer rule of a preset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresetRule {
    /// A FHIRPath expression.
    pub path: String,
    /// `keep`, `dateShift`, …
    pub method: String,
}

/// A loaded and checked study.
#[derive(Debug, Clone)]
pub struct Study {
    /// The prefix of every table name (`flu` → `flu__count_vaccinated`).
    pub prefix: String,
    /// Shown by the aggregator's dashboard.
    pub description: String,
    /// `meta_version.data_package_version`: bump it when the output changes
    /// shape, so that the aggregator keeps versions apart.
    pub data_package_version: u32,
    /// The minimum-necessary export for this study.
    pub export: ExportPreset,
    pub(crate) views: Vec<(String, View)>,
    pub(crate) tables: Vec<TableDef>,
    pub(crate) counts: Vec<CountDef>,
    pub(crate) meta_date: Option<MetaDateDef>,
}

/// A lowercase identifier without the reserved `__`.
fn is_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.contains("__")
}

impl Study {
    /// The names of the built-in studies.
    pub fn builtin_names() -> impl Iterator<Item = &'static str> {
        BUILTIN.iter().map(|(name, _)| *name)
    }

    /// A built-in study by name.
    pub fn builtin(name: &str) -> Option<Study> {
        let (_, files) = BUILTIN.iter().find(|(n, _)| *n == name)?;
        let read = |file: &str| {
            files
                .iter()
                .find(|(f, _)| *f == file)
                .map(|(_, text)| text.to_string())
                .ok_or_else(|| StudyError(format!("{file}: not found")))
        };
        Some(Study::parse(&read("study.toml").expect("listed first"), read).expect("built-in studies are valid"))
    }

    /// Loads `DIR/study.toml` and the view files it names (relative to DIR).
    pub fn load(dir: &Path) -> Result<Study, StudyError> {
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read_to_string(&path).map_err(|e| StudyError(format!("cannot read {}: {e}", path.display())))
        };
        let manifest = read("study.toml")?;
        Study::parse(&manifest, read).map_err(|e| StudyError(format!("{}: {e}", dir.join("study.toml").display())))
    }

    /// Parses `study.toml` text; `read` gives the text of a file it names.
    pub fn parse(text: &str, read: impl Fn(&str) -> Result<String, StudyError>) -> Result<Study, StudyError> {
        let m: Manifest = toml::from_str(text).map_err(|e| StudyError(e.to_string()))?;
        if !is_name(&m.study_prefix) || m.study_prefix == "cohorts" {
            return err(format!(
                "study_prefix '{}' must be lowercase letters, digits and single underscores (and not 'cohorts')",
                m.study_prefix
            ));
        }
        let mut views = Vec::new();
        for (name, file) in &m.views {
            let text = read(file)?;
            let json: Json = serde_json::from_str(&text)
                .map_err(|e| StudyError(format!("view '{name}' ({file}): not JSON (line {})", e.line())))?;
            let view = View::parse(&json).map_err(|e| StudyError(format!("view '{name}' ({file}): {e}")))?;
            views.push((name.clone(), view));
        }
        let study = Study {
            prefix: m.study_prefix,
            description: m.description,
            data_package_version: m.data_package_version,
            export: m.export,
            views,
            tables: m.tables,
            counts: m.counts,
            meta_date: m.meta_date,
        };
        study.check()?;
        Ok(study)
    }

    pub(crate) fn view(&self, name: &str) -> Option<&View> {
        self.views.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The columns of a view or table, in order.
    pub(crate) fn columns_of(&self, source: &str) -> Option<Vec<String>> {
        match self.tables.iter().find(|t| t.name == source) {
            Some(t) => self.table_columns(t).ok(),
            None => self.view(source).map(|v| v.columns().to_vec()),
        }
    }

    /// A table's columns: its view's, each joined view's but the key, then
    /// the derived ones; or why the table is wrong.
    fn table_columns(&self, t: &TableDef) -> Result<Vec<String>, StudyError> {
        let Some(from) = self.view(&t.from) else { return err(format!("table '{}': no view '{}'", t.name, t.from)) };
        let mut cols: Vec<String> = from.columns().to_vec();
        for j in &t.join {
            let Some(right) = self.view(&j.view) else {
                return err(format!("table '{}': no view '{}' to join", t.name, j.view));
            };
            if !cols.contains(&j.on) || !right.columns().contains(&j.on) {
                return err(format!("table '{}': join on '{}' needs that column on both sides", t.name, j.on));
            }
            for c in right.columns().iter().filter(|c| **c != j.on) {
                if cols.contains(c) {
                    return err(format!("table '{}': column '{c}' comes from two views", t.name));
                }
                cols.push(c.clone());
            }
        }
        for a in &t.age_bands {
            for c in [&a.born, &a.at] {
                if !cols.contains(c) {
                    return err(format!(
                        "table '{}': age band '{}' reads '{c}', which is not a column",
                        t.name, a.column
                    ));
                }
            }
            if a.width == 0 || a.top == 0 || a.top % a.width != 0 {
                return err(format!("table '{}': age band '{}' needs a width that divides top", t.name, a.column));
            }
            if cols.contains(&a.column) {
                return err(format!("table '{}': column '{}' is defined twice", t.name, a.column));
            }
            cols.push(a.column.clone());
        }
        Ok(cols)
    }

    fn check(&self) -> Result<(), StudyError> {
        for (i, t) in self.tables.iter().enumerate() {
            if !is_name(&t.name) || self.view(&t.name).is_some() || self.tables[..i].iter().any(|o| o.name == t.name) {
                return err(format!("table '{}': needs a unique lowercase name unlike any view's", t.name));
            }
            self.table_columns(t)?;
        }
        let mut names: Vec<&str> = Vec::new();
        for c in &self.counts {
            let reserved = ["etl_", "nlp_", "lib_", "meta_"].iter().any(|p| c.name.starts_with(p));
            if !is_name(&c.name) || reserved || names.contains(&c.name.as_str()) {
                return err(format!(
                    "count table '{}': needs a unique lowercase name not starting with etl_, nlp_, lib_ or meta_",
                    c.name
                ));
            }
            names.push(&c.name);
            let Some(cols) = self.columns_of(&c.from) else {
                return err(format!("count table '{}': no table or view '{}'", c.name, c.from));
            };
            for s in c.strata.iter().chain([&c.count_distinct]) {
                if !cols.contains(s) {
                    return err(format!("count table '{}': '{s}' is not a column of '{}'", c.name, c.from));
                }
            }
            if c.strata.iter().any(|s| s == "cnt") || (1..c.strata.len()).any(|i| c.strata[..i].contains(&c.strata[i]))
            {
                return err(format!("count table '{}': strata must be distinct and not named cnt", c.name));
            }
            // 2^k cells per combination of values: past 10 strata the cube
            // is both too large and too thin to survive suppression.
            if c.strata.is_empty() || c.strata.len() > 10 {
                return err(format!("count table '{}': needs 1 to 10 strata", c.name));
            }
            if c.min_cell == 0 {
                return err(format!("count table '{}': min_cell must be at least 1", c.name));
            }
            if let Some(col) = self.collection_column(&c.from, c.strata.iter().chain([&c.count_distinct])) {
                return err(format!(
                    "count table '{}': '{col}' holds collections; count and stratify by single values",
                    c.name
                ));
            }
        }
        if self.counts.is_empty() {
            return err("a study needs at least one [[counts]] table");
        }
        if let Some(m) = &self.meta_date {
            match self.columns_of(&m.from) {
                Some(cols) if cols.contains(&m.column) => {}
                _ => return err(format!("meta_date: '{}' is not a column of a table or view '{}'", m.column, m.from)),
            }
        }
        Ok(())
    }

    /// The first of `columns` that a view behind `source` declares as a collection.
    fn collection_column<'a>(&self, source: &str, mut columns: impl Iterator<Item = &'a String>) -> Option<&'a String> {
        let mut views: Vec<&View> = Vec::new();
        match self.tables.iter().find(|t| t.name == source) {
            Some(t) => views
                .extend(std::iter::once(&t.from).chain(t.join.iter().map(|j| &j.view)).filter_map(|v| self.view(v))),
            None => views.extend(self.view(source)),
        }
        columns.find(|c| views.iter().any(|v| v.column_defs().iter().any(|d| d.name == **c && d.collection)))
    }

    /// The views, by name.
    pub fn views(&self) -> impl Iterator<Item = (&str, &View)> {
        self.views.iter().map(|(n, v)| (n.as_str(), v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<Study, StudyError> {
        let view = r#"{"resource": "Patient", "select": [{"column": [{"name": "id", "path": "getResourceKey()"}, {"name": "sex", "path": "gender"}, {"name": "names", "path": "name.given", "collection": true}]}]}"#;
        Study::parse(toml, |_| Ok(view.to_string()))
    }

    #[test]
    fn the_builtin_flu_study_loads() {
        let flu = Study::builtin("flu").unwrap();
        assert_eq!(flu.prefix, "flu");
        assert_eq!(flu.columns_of("vaccination").unwrap().len(), 9);
        assert!(Study::builtin("nope").is_none());
    }

    #[test]
    fn mistakes_are_named_before_any_data_is_read() {
        let base = "study_prefix = 'demo'\n[views]\np = 'p.json'\n";
        let ok = format!("{base}[[counts]]\nname = 'count_sex'\nfrom = 'p'\nstrata = ['sex']\ncount_distinct = 'id'\n");
        assert_eq!(parse(&ok).unwrap().counts[0].min_cell, 10);
        for (bad, says) in [
            (ok.replace("'demo'", "'Demo'"), "study_prefix"),
            (ok.replace("'count_sex'", "'lib_x'"), "lib_"),
            (ok.replace("['sex']", "['age']"), "'age' is not a column"),
            (ok.replace("['sex']", "['names']"), "holds collections"),
            (ok.replace("from = 'p'", "from = 'q'"), "no table or view 'q'"),
            (ok.replace("count_distinct = 'id'", "count_distinct = 'id'\nmin_cel = 5"), "unknown field"),
            (
                format!("{ok}[[tables]]\nname = 't'\nfrom = 'p'\njoin = [{{ view = 'p', on = 'id' }}]\n"),
                "comes from two views",
            ),
            (format!("{ok}[meta_date]\nfrom = 'p'\ncolumn = 'when'\n"), "meta_date"),
        ] {
            let e = parse(&bad).err().unwrap_or_else(|| panic!("accepted: {bad}"));
            assert!(e.0.contains(says), "{e} (wanted {says})");
        }
    }
}

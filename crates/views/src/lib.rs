//! SQL on FHIR v2 ViewDefinitions: flatten FHIR resources into rows with
//! FHIRPath (reference: sql-on-fhir-and-fhirpath.md part A).
//!
//! [`View::parse`] validates a ViewDefinition before any data is read
//! (unknown keys, duplicate columns, inconsistent `unionAll` branches, bad
//! FHIRPath); [`View::rows`] turns one resource into its rows, following the
//! specification's processing algorithm: `where`, `select`, `column`,
//! `forEach`, `forEachOrNull`, `unionAll`, `repeat`, `constant`,
//! `%rowIndex`, `getResourceKey()` and `getReferenceKey()`.
//!
//! ```
//! use serde_json::json;
//! let view = veil_views::View::parse(&json!({
//!     "resource": "Patient",
//!     "select": [{"column": [{"name": "id", "path": "getResourceKey()"}, {"name": "family", "path": "name.first().family"}]}]
//! }))?;
//! let rows = view.rows(&json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "Chalmers"}]}))?;
//! assert_eq!(rows[0].values, [json!("p1"), json!("Chalmers")]);
//! # Ok::<(), veil_views::ViewError>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod parquet_out;

pub use parquet_out::{ColumnType, ParquetWriter};

use serde_json::{Map, Value as Json};
use veil_fhirpath::{Context, Expression, Item, Temporal, Value};

/// Why a view is invalid or could not be applied. Messages name columns and
/// paths (from the view), never resource values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ViewError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ViewError> {
    Err(ViewError(msg.into()))
}

/// A column as the view declares it.
#[derive(Debug, Clone)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its declared type, if any (`string`, `integer`, …).
    pub ty: Option<String>,
    /// Whether it holds a collection.
    pub collection: bool,
    path: Expression,
    /// Its position in the view's output (set once the view is parsed).
    index: usize,
}

#[derive(Debug, Clone)]
struct Select {
    columns: Vec<Column>,
    selects: Vec<Select>,
    union_all: Vec<Select>,
    for_each: Option<(Expression, bool)>,
    repeat: Vec<Expression>,
}

/// A validated ViewDefinition.
#[derive(Debug, Clone)]
pub struct View {
    /// The resource type it reads.
    pub resource: String,
    root: Select,
    wheres: Vec<Expression>,
    constants: Vec<(String, Value)>,
    columns: Vec<String>,
}

/// One output row: values in the order of [`View::columns`].
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Column values (`null` for none, arrays for collection columns).
    pub values: Vec<Json>,
}

fn compile(path: &Json, what: &str) -> Result<Expression, ViewError> {
    let Some(src) = path.as_str() else { return err(format!("{what} must be a FHIRPath string")) };
    Expression::compile(src).map_err(|e| ViewError(format!("{what} '{src}': {e}")))
}

fn constant_value(c: &Map<String, Json>) -> Result<(String, Value), ViewError> {
    let name = c.get("name").and_then(Json::as_str).ok_or_else(|| ViewError("a constant needs a name".into()))?;
    let (key, v) = c
        .iter()
        .find(|(k, _)| k.starts_with("value"))
        .ok_or_else(|| ViewError(format!("constant '{name}' has no value")))?;
    let text =
        || v.as_str().map(str::to_string).ok_or_else(|| ViewError(format!("constant '{name}' has a malformed value")));
    let value = match key.as_str() {
        "valueBoolean" => {
            Value::Boolean(v.as_bool().ok_or_else(|| ViewError(format!("constant '{name}' is not a boolean")))?)
        }
        "valueInteger" | "valuePositiveInt" | "valueUnsignedInt" => {
            Value::Integer(v.as_i64().ok_or_else(|| ViewError(format!("constant '{name}' is not an integer")))?)
        }
        "valueDecimal" => {
            Value::Decimal(v.to_string().parse().map_err(|_| ViewError(format!("constant '{name}' is not a decimal")))?)
        }
        "valueDate" => Value::Temporal(
            Temporal::parse_date(&text()?).ok_or_else(|| ViewError(format!("constant '{name}' is not a date")))?,
        ),
        "valueDateTime" | "valueInstant" => Value::Temporal(
            Temporal::parse_datetime(&text()?)
                .ok_or_else(|| ViewError(format!("constant '{name}' is not a dateTime")))?,
        ),
        "valueTime" => Value::Temporal(
            Temporal::parse_time(&text()?).ok_or_else(|| ViewError(format!("constant '{name}' is not a time")))?,
        ),
        _ => Value::String(text()?),
    };
    Ok((name.to_string(), value))
}

const SELECT_KEYS: [&str; 6] = ["column", "select", "unionAll", "forEach", "forEachOrNull", "repeat"];

fn parse_select(v: &Json, names: &mut Vec<String>) -> Result<Select, ViewError> {
    let Some(obj) = v.as_object() else { return err("a select must be an object") };
    if let Some(k) = obj.keys().find(|k| !SELECT_KEYS.contains(&k.as_str())) {
        return err(format!("unknown select property '{k}'"));
    }
    let mut columns = Vec::new();
    for c in obj.get("column").and_then(Json::as_array).into_iter().flatten() {
        let name = c.get("name").and_then(Json::as_str).ok_or_else(|| ViewError("a column needs a name".into()))?;
        if !name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
            || name.starts_with(|ch: char| ch.is_ascii_digit())
        {
            return err(format!("column name '{name}' is not a valid identifier"));
        }
        if names.iter().any(|n| n == name) {
            return err(format!("Column Already Defined: '{name}'"));
        }
        names.push(name.to_string());
        columns.push(Column {
            name: name.to_string(),
            ty: c.get("type").and_then(Json::as_str).map(str::to_string),
            collection: c.get("collection").and_then(Json::as_bool).unwrap_or(false),
            path: compile(c.get("path").unwrap_or(&Json::Null), &format!("column '{name}' path"))?,
            index: 0,
        });
    }
    let mut selects = Vec::new();
    for s in obj.get("select").and_then(Json::as_array).into_iter().flatten() {
        selects.push(parse_select(s, names)?);
    }
    let for_each = match (obj.get("forEach"), obj.get("forEachOrNull")) {
        (Some(_), Some(_)) => return err("a select has both forEach and forEachOrNull"),
        (Some(p), None) => Some((compile(p, "forEach")?, false)),
        (None, Some(p)) => Some((compile(p, "forEachOrNull")?, true)),
        (None, None) => None,
    };
    let repeat = match obj.get("repeat") {
        None => Vec::new(),
        Some(Json::Array(paths)) => paths.iter().map(|p| compile(p, "repeat")).collect::<Result<_, _>>()?,
        Some(_) => return err("repeat must be a list of FHIRPath strings"),
    };
    let mut union_all = Vec::new();
    if let Some(branches) = obj.get("unionAll") {
        let Some(branches) = branches.as_array() else { return err("unionAll must be a list of selects") };
        let mut first: Option<Vec<String>> = None;
        for b in branches {
            // Each branch declares the same columns; they count once.
            let mut branch_names = Vec::new();
            union_all.push(parse_select(b, &mut branch_names)?);
            match &first {
                None => first = Some(branch_names),
                Some(f) if *f != branch_names => {
                    return err(
                        "Union Branches Inconsistent: every unionAll branch needs the same columns in the same order",
                    );
                }
                Some(_) => {}
            }
        }
        for n in first.unwrap_or_default() {
            if names.contains(&n) {
                return err(format!("Column Already Defined: '{n}'"));
            }
            names.push(n);
        }
    }
    Ok(Select { columns, selects, union_all, for_each, repeat })
}

/// Every column a selection emits, in output order: its own, nested
/// selects', then its unionAll's.
fn all_columns<'s>(s: &'s Select, out: &mut Vec<&'s Column>) {
    out.extend(s.columns.iter());
    for n in &s.selects {
        all_columns(n, out);
    }
    if let Some(b) = s.union_all.first() {
        all_columns(b, out);
    }
}

/// Numbers each column by its output position; unionAll branches' columns
/// share the positions of the first branch's, by name.
fn number_columns(s: &mut Select, names: &[String]) {
    for c in &mut s.columns {
        c.index = names.iter().position(|n| *n == c.name).expect("every column is an output column");
    }
    for n in s.selects.iter_mut().chain(s.union_all.iter_mut()) {
        number_columns(n, names);
    }
}

/// Partial rows: (output position, value) pairs.
type Partial = Vec<(usize, Json)>;

impl View {
    /// Validates a ViewDefinition (JSON), before any data is read.
    pub fn parse(v: &Json) -> Result<View, ViewError> {
        let Some(obj) = v.as_object() else { return err("a ViewDefinition must be a JSON object") };
        let resource = obj
            .get("resource")
            .and_then(Json::as_str)
            .ok_or_else(|| ViewError("the view needs a resource type".into()))?;
        if !veil_fhir::r4().is_resource_type(resource) {
            return err(format!("'{resource}' is not a FHIR R4 resource type"));
        }
        let mut names = Vec::new();
        let mut root = parse_select(
            &serde_json::json!({"select": obj.get("select").cloned().unwrap_or(Json::Array(vec![]))}),
            &mut names,
        )?;
        let wheres = obj
            .get("where")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .map(|w| compile(w.get("path").unwrap_or(&Json::Null), "where path"))
            .collect::<Result<_, _>>()?;
        let constants = obj
            .get("constant")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .map(|c| {
                c.as_object().ok_or_else(|| ViewError("a constant must be an object".into())).and_then(constant_value)
            })
            .collect::<Result<_, _>>()?;
        let mut cols = Vec::new();
        all_columns(&root, &mut cols);
        let columns: Vec<String> = cols.into_iter().map(|c| c.name.clone()).collect();
        number_columns(&mut root, &columns);
        Ok(View { resource: resource.to_string(), root, wheres, constants, columns })
    }

    /// The output columns, in order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The output columns' declarations, in order.
    pub fn column_defs(&self) -> Vec<&Column> {
        let mut cols = Vec::new();
        all_columns(&self.root, &mut cols);
        cols
    }

    fn context<'a>(&self, resource: &'a Json, focus: Item<'a>, row_index: i64) -> Context<'a> {
        let mut ctx = Context::new(resource).with_focus(vec![focus]).with_var("rowIndex", Value::Integer(row_index));
        for (name, value) in &self.constants {
            ctx = ctx.with_var(name, value.clone());
        }
        ctx
    }

    /// The rows one resource gives (none for another resource type, or when
    /// a `where` does not hold).
    pub fn rows(&self, resource: &Json) -> Result<Vec<Row>, ViewError> {
        if resource.get("resourceType").and_then(Json::as_str) != Some(self.resource.as_str()) {
            return Ok(Vec::new());
        }
        let root = Item::root(resource);
        for w in &self.wheres {
            let r = w
                .evaluate_with(&self.context(resource, root.clone(), 0))
                .map_err(|e| ViewError(format!("where: {e}")))?;
            match r.as_slice() {
                [] => return Ok(Vec::new()),
                [one] => match one.value() {
                    Some(Value::Boolean(true)) => {}
                    Some(Value::Boolean(false)) => return Ok(Vec::new()),
                    _ => return err(format!("where '{}' must give a boolean", w.source())),
                },
                _ => return err(format!("where '{}' must give a single boolean", w.source())),
            }
        }
        let partials = self.process(&self.root, resource, root, 0)?;
        Ok(partials
            .into_iter()
            .map(|p| {
                let mut values = vec![Json::Null; self.columns.len()];
                for (i, v) in p {
                    values[i] = v;
                }
                Row { values }
            })
            .collect())
    }

    fn process<'a>(
        &self,
        s: &Select,
        resource: &'a Json,
        node: Item<'a>,
        row_index: i64,
    ) -> Result<Vec<Partial>, ViewError> {
        let foci: Vec<Item<'a>> = if !s.repeat.is_empty() {
            let mut out = Vec::new();
            self.repeat(s, resource, node, &mut out, 0)?;
            out
        } else if let Some((expr, _)) = &s.for_each {
            expr.evaluate_with(&self.context(resource, node.clone(), row_index))
                .map_err(|e| ViewError(format!("forEach '{}': {e}", expr.source())))?
        } else {
            vec![node]
        };
        let iterating = !s.repeat.is_empty() || s.for_each.is_some();
        let mut rows = Vec::new();
        for (i, focus) in foci.iter().enumerate() {
            let index = if iterating { i as i64 } else { row_index };
            let ctx = self.context(resource, focus.clone(), index);
            // One row of this selection's own columns…
            let mut own = Partial::new();
            for c in &s.columns {
                let r = c.path.evaluate_with(&ctx).map_err(|e| ViewError(format!("column '{}': {e}", c.name)))?;
                let value = if c.collection {
                    Json::Array(r.iter().map(Item::to_json).collect())
                } else {
                    match r.as_slice() {
                        [] => Json::Null,
                        [one] => one.to_json(),
                        _ => return err(format!("column '{}' gives several values: declare it a collection", c.name)),
                    }
                };
                own.push((c.index, value));
            }
            // …times each nested select's rows, times the union's rows.
            let mut product = vec![own];
            for nested in &s.selects {
                let sub = self.process(nested, resource, focus.clone(), index)?;
                product = cross(product, sub);
            }
            if !s.union_all.is_empty() {
                let mut union = Vec::new();
                for b in &s.union_all {
                    union.extend(self.process(b, resource, focus.clone(), index)?);
                }
                product = cross(product, union);
            }
            rows.extend(product);
        }
        if foci.is_empty() && matches!(s.for_each, Some((_, true))) {
            // forEachOrNull with nothing to iterate: one row of nulls, except
            // that a column that is just %rowIndex reads 0 (the spec's rule).
            let mut cols = Vec::new();
            all_columns(s, &mut cols);
            rows.push(
                cols.into_iter()
                    .map(|c| {
                        let v = if c.path.source().trim() == "%rowIndex" { Json::from(0) } else { Json::Null };
                        (c.index, v)
                    })
                    .collect(),
            );
        }
        Ok(rows)
    }

    /// `repeat`: every node reached by applying the paths again and again,
    /// depth first, in document order.
    fn repeat<'a>(
        &self,
        s: &Select,
        resource: &'a Json,
        node: Item<'a>,
        out: &mut Vec<Item<'a>>,
        depth: usize,
    ) -> Result<(), ViewError> {
        if depth > 64 {
            return err("repeat nests deeper than 64 levels");
        }
        for p in &s.repeat {
            let found = p
                .evaluate_with(&self.context(resource, node.clone(), 0))
                .map_err(|e| ViewError(format!("repeat '{}': {e}", p.source())))?;
            for f in found {
                out.push(f.clone());
                self.repeat(s, resource, f, out, depth + 1)?;
            }
        }
        Ok(())
    }
}

fn cross(left: Vec<Partial>, mut right: Vec<Partial>) -> Vec<Partial> {
    // The common case, one row on a side, moves values instead of cloning.
    if left.len() == 1 {
        let l = &left[0];
        for r in &mut right {
            r.extend(l.iter().cloned());
        }
        return right;
    }
    let mut out = Vec::with_capacity(left.len() * right.len());
    for l in left {
        for r in &right {
            let mut row = l.clone();
            row.extend(r.iter().cloned());
            out.push(row);
        }
    }
    out
}

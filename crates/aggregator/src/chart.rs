//! Chart data, as the Cumulus dashboard asks for it (reference: cumulus.md
//! §4.8): the counts of one column, optionally per stratifier value, read
//! from the cube's rollup rows, with filters in the grammar
//! `col:type[:value]` (commas within one `filter` mean OR, repeated
//! `filter` parameters mean AND).
//!
//! Cumulus builds SQL from these strings; here a filter is parsed into a
//! [`Filter`] and evaluated over the merged rows, so no query text is ever
//! made from a request.

use std::collections::BTreeMap;

use serde_json::{Value as Json, json};

use crate::merge::Aggregate;
use crate::package::ColumnType;

/// A request the chart cannot answer; the message is for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

/// The sentinel for "the data held no value" (`cumulus__none`).
const NONE: &str = veil_util::CUMULUS_NONE;

/// What a chart is asked for.
#[derive(Debug, Clone, Default)]
pub struct ChartQuery {
    /// The column whose values make the x axis.
    pub column: String,
    /// The column whose values split the series.
    pub stratifier: Option<String>,
    /// Each `filter` parameter as given.
    pub filters: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Period {
    Day,
    Week,
    Month,
    Year,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    Same,
    SameOrBefore,
    SameOrAfter,
    Before,
    After,
}

#[derive(Debug, Clone)]
enum Test {
    Str { op: StrOp, negated: bool, case_insensitive: bool, value: String },
    Matches { negated: bool, regex: regex::Regex },
    Date { order: Order, period: Period, value: i64 },
    Bool { want: bool, negated: bool },
    Null { negated: bool },
    None { negated: bool },
    Number { op: &'static str, value: Json },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StrOp {
    Eq,
    Contains,
    StartsWith,
    EndsWith,
}

/// One `col:type[:value]` condition.
#[derive(Debug, Clone)]
pub struct Filter {
    column: usize,
    test: Test,
}

/// Parses one `filter` parameter: conditions joined by commas (OR).
fn parse_any(text: &str, aggregate: &Aggregate) -> Result<Vec<Filter>, BadRequest> {
    text.split(',').map(|one| parse_one(one, aggregate)).collect()
}

fn parse_one(text: &str, aggregate: &Aggregate) -> Result<Filter, BadRequest> {
    let mut parts = text.splitn(3, ':');
    let (name, kind, value) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next());
    let column = column(aggregate, name)?;
    let need = |v: Option<&str>| {
        v.map(str::to_string)
            .ok_or_else(|| BadRequest(format!("the filter {kind} on {name} needs a value (col:{kind}:value)")))
    };
    let test = if let Some(rest) = kind.strip_prefix("str") {
        let (negated, rest) = rest.strip_prefix("Not").map_or((false, rest), |r| (true, r));
        let (case_insensitive, rest) = rest.strip_suffix("CI").map_or((false, rest), |r| (true, r));
        let op = match rest {
            "Eq" => StrOp::Eq,
            "Contains" => StrOp::Contains,
            "StartsWith" => StrOp::StartsWith,
            "EndsWith" => StrOp::EndsWith,
            _ => return Err(unknown(kind)),
        };
        let value = need(value)?;
        let value = if case_insensitive { value.to_lowercase() } else { value };
        Test::Str { op, negated, case_insensitive, value }
    } else if let Some(rest) = kind.strip_suffix("atches").or_else(|| kind.strip_suffix("atchesCI")) {
        let negated = match rest {
            "m" => false,
            "notM" => true,
            _ => return Err(unknown(kind)),
        };
        let pattern = need(value)?;
        let pattern = if kind.ends_with("CI") { format!("(?i){pattern}") } else { pattern };
        // The regex crate matches in linear time, and the size limit keeps
        // a request from compiling a huge automaton.
        let regex = regex::RegexBuilder::new(&pattern)
            .size_limit(1 << 20)
            .build()
            .map_err(|_| BadRequest(format!("the filter {kind} on {name} has an invalid pattern")))?;
        Test::Matches { negated, regex }
    } else if let Some((order, period)) = date_kind(kind) {
        let value = need(value)?;
        let day = parse_date(&value)
            .ok_or_else(|| BadRequest(format!("the filter {kind} on {name} needs a date YYYY-MM-DD")))?;
        Test::Date { order, period, value: truncate(day, period) }
    } else {
        match kind {
            "isTrue" => Test::Bool { want: true, negated: false },
            "isNotTrue" => Test::Bool { want: true, negated: true },
            "isFalse" => Test::Bool { want: false, negated: false },
            "isNotFalse" => Test::Bool { want: false, negated: true },
            "isNull" => Test::Null { negated: false },
            "isNotNull" => Test::Null { negated: true },
            "isNone" => Test::None { negated: false },
            "isNotNone" => Test::None { negated: true },
            "eq" | "ne" | "gt" | "gte" | "lt" | "lte" => {
                let op = ["eq", "ne", "gt", "gte", "lt", "lte"].into_iter().find(|o| *o == kind).expect("listed");
                let text = need(value)?;
                let value = text.parse::<f64>().map_or(Json::String(text), Json::from);
                Test::Number { op, value }
            }
            _ => return Err(unknown(kind)),
        }
    };
    Ok(Filter { column, test })
}

fn unknown(kind: &str) -> BadRequest {
    let shown: String = kind.chars().take(40).filter(|c| c.is_ascii_alphanumeric()).collect();
    BadRequest(format!("unknown filter type {shown}"))
}

fn date_kind(kind: &str) -> Option<(Order, Period)> {
    let (order, rest) = [("same", Order::Same), ("before", Order::Before), ("after", Order::After)]
        .into_iter()
        .find_map(|(p, o)| kind.strip_prefix(p).map(|r| (o, r)))?;
    let (order, rest) = match (order, rest.strip_suffix("OrBefore"), rest.strip_suffix("OrAfter")) {
        (Order::Same, Some(r), _) => (Order::SameOrBefore, r),
        (Order::Same, _, Some(r)) => (Order::SameOrAfter, r),
        _ => (order, rest),
    };
    let period = match rest {
        "Day" => Period::Day,
        "Week" => Period::Week,
        "Month" => Period::Month,
        "Year" => Period::Year,
        _ => return None,
    };
    Some((order, period))
}

/// Days since 1970-01-01 of `YYYY`, `YYYY-MM` or `YYYY-MM-DD…`.
fn parse_date(text: &str) -> Option<i64> {
    let mut parts = text.get(..text.len().min(10))?.split('-');
    let year: i32 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next().map_or(Some(1), |m| m.parse().ok())?;
    let day: u32 = parts.next().map_or(Some(1), |d| d.parse().ok())?;
    if !(1..=12).contains(&month) || day == 0 || day > veil_util::calendar::days_in_month(year, month) {
        return None;
    }
    Some(veil_util::calendar::days_from_civil(year, month, day))
}

/// The first day of the period holding `day` (weeks start on Monday).
fn truncate(day: i64, period: Period) -> i64 {
    use veil_util::calendar::{civil_from_days, days_from_civil};
    match period {
        Period::Day => day,
        // 1970-01-01 was a Thursday.
        Period::Week => day - (day + 3).rem_euclid(7),
        Period::Month => {
            let (y, m, _) = civil_from_days(day);
            days_from_civil(y, m, 1)
        }
        Period::Year => days_from_civil(civil_from_days(day).0, 1, 1),
    }
}

fn text_of(value: &Json) -> Option<String> {
    match value {
        Json::String(s) => Some(s.clone()),
        Json::Null => None,
        other => Some(other.to_string()),
    }
}

impl Filter {
    fn passes(&self, row: &[Json]) -> bool {
        let cell = &row[self.column];
        let is_none = cell.as_str() == Some(NONE);
        match &self.test {
            Test::Null { negated } => cell.is_null() != *negated,
            Test::None { negated } => is_none != *negated,
            // A typed test never holds for a missing value or the sentinel:
            // neither is a string, date, boolean or number of the data.
            _ if cell.is_null() || is_none => false,
            Test::Str { op, negated, case_insensitive, value } => {
                let Some(text) = text_of(cell) else { return false };
                let text = if *case_insensitive { text.to_lowercase() } else { text };
                let hit = match op {
                    StrOp::Eq => text == *value,
                    StrOp::Contains => text.contains(value.as_str()),
                    StrOp::StartsWith => text.starts_with(value.as_str()),
                    StrOp::EndsWith => text.ends_with(value.as_str()),
                };
                hit != *negated
            }
            Test::Matches { negated, regex } => text_of(cell).is_some_and(|t| regex.is_match(&t) != *negated),
            Test::Date { order, period, value } => {
                let Some(day) = text_of(cell).and_then(|t| parse_date(&t)) else { return false };
                let day = truncate(day, *period);
                match order {
                    Order::Same => day == *value,
                    Order::SameOrBefore => day <= *value,
                    Order::SameOrAfter => day >= *value,
                    Order::Before => day < *value,
                    Order::After => day > *value,
                }
            }
            Test::Bool { want, negated } => {
                let truth = cell.as_bool().or_else(|| cell.as_str().and_then(|s| s.parse().ok()));
                (truth == Some(*want)) != *negated
            }
            Test::Number { op, value } => {
                let ordering =
                    match (cell.as_f64().or_else(|| cell.as_str().and_then(|s| s.parse().ok())), value.as_f64()) {
                        (Some(a), Some(b)) => a.partial_cmp(&b),
                        _ => text_of(cell).map(|a| a.as_str().cmp(text_of(value).as_deref().unwrap_or(""))),
                    };
                let Some(ordering) = ordering else { return false };
                match *op {
                    "eq" => ordering.is_eq(),
                    "ne" => ordering.is_ne(),
                    "gt" => ordering.is_gt(),
                    "gte" => ordering.is_ge(),
                    "lt" => ordering.is_lt(),
                    _ => ordering.is_le(),
                }
            }
        }
    }
}

fn column(aggregate: &Aggregate, name: &str) -> Result<usize, BadRequest> {
    match aggregate.columns.iter().position(|c| c.name == name) {
        Some(i) if name != "cnt" => Ok(i),
        _ => {
            let shown: String = name.chars().take(60).filter(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            Err(BadRequest(format!("the data package has no column {shown} to chart or filter")))
        }
    }
}

/// Orders values for the axis: numbers by value, text by text, `null` last.
fn axis_order(a: &Json, b: &Json) -> std::cmp::Ordering {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        _ => text_of(a).cmp(&text_of(b)),
    }
}

/// Counts by value, keyed by the value's JSON text.
type Sums = BTreeMap<String, (Json, i64)>;

/// The chart response: `{column, stratifier?, filters, rowCount,
/// totalCount, counts?, data: [{stratifier?, rows: [[value, cnt]…]}]}`.
pub fn chart(aggregate: &Aggregate, query: &ChartQuery) -> Result<Json, BadRequest> {
    let x = column(aggregate, &query.column)?;
    let strat = query.stratifier.as_deref().map(|s| column(aggregate, s)).transpose()?;
    if strat == Some(x) {
        return Err(BadRequest("the stratifier must be another column than the one charted".into()));
    }
    let all_of: Vec<Vec<Filter>> = query.filters.iter().map(|f| parse_any(f, aggregate)).collect::<Result<_, _>>()?;
    let filtered: Vec<usize> = all_of.iter().flatten().map(|f| f.column).collect();
    // merge() puts cnt first; flat tables (laid out as sent) are not charted.
    let cnt = 0;
    // The rollup rows: every column not charted, stratified or filtered is
    // NULL ("all values"). A filter on another column sums over its rows.
    let free = |i: usize| i != cnt && Some(i) != strat && !filtered.contains(&i);
    let passes = |row: &[Json]| all_of.iter().all(|any| any.iter().any(|f| f.passes(row)));
    let selected = |row: &&Vec<Json>, shown: &[usize]| {
        shown.iter().all(|&i| !row[i].is_null())
            && (0..row.len()).filter(|&i| free(i) && !shown.contains(&i)).all(|i| row[i].is_null())
            && passes(row)
    };
    let count = |row: &Vec<Json>| row[cnt].as_i64().unwrap_or(0);

    let shown: Vec<usize> = strat.into_iter().chain([x]).collect();
    let lower_bound = lower_bounds(aggregate, free);
    let mut series: BTreeMap<String, (Json, Sums)> = BTreeMap::new();
    let mut partial: BTreeMap<(String, String), (Json, Json)> = BTreeMap::new();
    for row in aggregate.rows.iter().filter(|r| selected(r, &shown)) {
        let s = strat.map_or(Json::Null, |i| row[i].clone());
        if lower_bound(row) {
            partial.insert((s.to_string(), row[x].to_string()), (s.clone(), row[x].clone()));
        }
        let entry = series.entry(s.to_string()).or_insert_with(|| (s, BTreeMap::new()));
        entry.1.entry(row[x].to_string()).or_insert_with(|| (row[x].clone(), 0)).1 += count(row);
    }
    let row_count: usize = series.values().map(|(_, rows)| rows.len()).sum();
    let total = aggregate.rows.iter().find(|r| (1..r.len()).all(|i| r[i].is_null())).map(count);
    let mut series: Vec<(Json, Vec<(Json, i64)>)> =
        series.into_values().map(|(s, rows)| (s, rows.into_values().collect())).collect();
    series.sort_by(|a, b| axis_order(&a.0, &b.0));
    for (_, rows) in &mut series {
        rows.sort_by(|a, b| axis_order(&a.0, &b.0));
    }
    let data: Vec<Json> = series
        .iter()
        .map(|(s, rows)| {
            let rows: Vec<Json> = rows.iter().map(|(v, n)| json!([v, n])).collect();
            if strat.is_some() { json!({"stratifier": s, "rows": rows}) } else { json!({"rows": rows}) }
        })
        .collect();
    let mut response = json!({
        "column": query.column,
        "filters": query.filters,
        "rowCount": row_count,
        "totalCount": total,
        "data": data,
        // Veil's addition to Cumulus' shape: the cells that sum fewer sites
        // than sent the package (a site suppressed them), so lower bounds.
        "partial": partial.into_values().map(|(s, v)| if strat.is_some() { json!({"stratifier": s, "value": v}) } else { json!({"value": v}) }).collect::<Vec<_>>(),
    });
    if let Some(s) = strat {
        // Each stratum's own total, from its rollup row (the charted column
        // NULL), so that a patient in several values is not counted twice.
        let mut counts = serde_json::Map::new();
        for row in aggregate.rows.iter().filter(|r| r[x].is_null() && selected(r, &[s])) {
            let key = text_of(&row[s]).unwrap_or_default();
            let sum = counts.get(&key).and_then(Json::as_i64).unwrap_or(0) + count(row);
            counts.insert(key, sum.into());
        }
        response["stratifier"] = json!(query.stratifier);
        response["counts"] = Json::Object(counts);
    }
    Ok(response)
}

/// Whether a row summed over sites (its `site` NULL, and `site` not charted,
/// stratified or filtered) lacks some site that sent the package: that site
/// had the cell under the minimum and left it out.
fn lower_bounds(aggregate: &Aggregate, free: impl Fn(usize) -> bool) -> impl Fn(&[Json]) -> bool {
    let site = aggregate.columns.iter().position(|c| c.name == "site").filter(|&i| free(i));
    let strata_key = move |row: &[Json], site: usize| -> String {
        row.iter()
            .enumerate()
            .skip(1)
            .filter(|&(i, _)| i != site)
            .map(|(_, v)| v.to_string())
            .collect::<Vec<_>>()
            .join("\u{1f}")
    };
    let mut reporting: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut sites = std::collections::BTreeSet::new();
    if let Some(site) = site {
        for row in aggregate.rows.iter().filter(|r| !r[site].is_null()) {
            sites.insert(row[site].to_string());
            *reporting.entry(strata_key(row, site)).or_default() += 1;
        }
    }
    move |row: &[Json]| {
        site.is_some_and(|site| {
            row[site].is_null() && reporting.get(&strata_key(row, site)).copied().unwrap_or(0) < sites.len()
        })
    }
}

/// The columns as `/data-packages` reports them:
/// `{type, distinct_values_count}` (the latter for non-count columns).
pub fn column_summary(aggregate: &Aggregate) -> Json {
    let mut columns = serde_json::Map::new();
    for (i, c) in aggregate.columns.iter().enumerate() {
        let mut entry = json!({"type": type_name(c.column_type)});
        if c.name != "cnt" {
            let distinct: std::collections::HashSet<String> =
                aggregate.rows.iter().filter(|r| !r[i].is_null()).map(|r| r[i].to_string()).collect();
            entry["distinct_values_count"] = distinct.len().into();
        }
        columns.insert(c.name.clone(), entry);
    }
    Json::Object(columns)
}

fn type_name(t: ColumnType) -> &'static str {
    match t {
        ColumnType::String => "string",
        ColumnType::Integer => "integer",
        ColumnType::Float => "float",
        ColumnType::Boolean => "boolean",
        ColumnType::Day => "day",
        ColumnType::Week => "week",
        ColumnType::Month => "month",
        ColumnType::Year => "year",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::Column;

    fn aggregate() -> Aggregate {
        let col = |name: &str, column_type| Column { name: name.into(), column_type };
        let rows = [
            (100, Json::Null, Json::Null, Json::Null),
            (60, json!("2020"), Json::Null, Json::Null),
            (40, json!("2021"), Json::Null, Json::Null),
            (55, Json::Null, json!("female"), Json::Null),
            (45, Json::Null, json!("male"), Json::Null),
            (30, json!("2020"), json!("female"), Json::Null),
            (30, json!("2020"), json!("male"), Json::Null),
            (25, json!("2021"), json!("female"), Json::Null),
            (15, json!("2021"), json!("male"), Json::Null),
            (60, Json::Null, Json::Null, json!("a")),
            (40, Json::Null, Json::Null, json!("b")),
            (35, json!("2020"), Json::Null, json!("a")),
            (25, json!("2020"), Json::Null, json!("b")),
            (25, json!("2021"), Json::Null, json!("a")),
            (15, json!("2021"), Json::Null, json!("b")),
            (12, Json::Null, json!(NONE), Json::Null),
        ];
        Aggregate {
            columns: vec![
                col("cnt", ColumnType::Integer),
                col("year", ColumnType::Year),
                col("sex", ColumnType::String),
                col("site", ColumnType::String),
            ],
            rows: rows.into_iter().map(|(n, y, s, site)| vec![json!(n), y, s, site]).collect(),
        }
    }

    fn query(column: &str, stratifier: Option<&str>, filters: &[&str]) -> ChartQuery {
        ChartQuery {
            column: column.into(),
            stratifier: stratifier.map(Into::into),
            filters: filters.iter().map(|f| f.to_string()).collect(),
        }
    }

    #[test]
    fn cells_a_site_left_out_are_lower_bounds() {
        let mut agg = aggregate();
        assert_eq!(chart(&agg, &query("year", None, &[])).unwrap()["partial"], json!([]), "both sites sent both years");
        // Site b suppressed 2021: the sum over sites is a lower bound there.
        agg.rows.retain(|r| !(r[1] == json!("2021") && r[3] == json!("b")));
        assert_eq!(chart(&agg, &query("year", None, &[])).unwrap()["partial"], json!([{"value": "2021"}]));
        // Per site, every number is the site's own.
        assert_eq!(chart(&agg, &query("year", Some("site"), &[])).unwrap()["partial"], json!([]));
        assert_eq!(chart(&agg, &query("year", None, &["site:strEq:a"])).unwrap()["partial"], json!([]));
    }

    #[test]
    fn the_rollup_rows_of_one_column() {
        let c = chart(&aggregate(), &query("year", None, &[])).unwrap();
        assert_eq!(c["data"], json!([{"rows": [["2020", 60], ["2021", 40]]}]));
        assert_eq!((c["rowCount"].as_i64(), c["totalCount"].as_i64()), (Some(2), Some(100)));
    }

    #[test]
    fn a_stratifier_splits_the_series_and_counts_each_stratum() {
        let c = chart(&aggregate(), &query("year", Some("site"), &[])).unwrap();
        assert_eq!(
            c["data"],
            json!([{"stratifier": "a", "rows": [["2020", 35], ["2021", 25]]}, {"stratifier": "b", "rows": [["2020", 25], ["2021", 15]]}])
        );
        assert_eq!(c["counts"], json!({"a": 60, "b": 40}));
        assert_eq!(c["rowCount"], 4);
    }

    #[test]
    fn filters_and_within_or_across() {
        let female = chart(&aggregate(), &query("year", None, &["sex:strEq:female"])).unwrap();
        assert_eq!(female["data"], json!([{"rows": [["2020", 30], ["2021", 25]]}]));
        let either = chart(&aggregate(), &query("year", None, &["sex:strEq:female,sex:strEqCI:MALE"])).unwrap();
        assert_eq!(either["data"], json!([{"rows": [["2020", 60], ["2021", 40]]}]), "OR sums both sexes' rows");
        let both =
            chart(&aggregate(), &query("year", None, &["sex:strEq:female", "year:afterYear:2020-06-01"])).unwrap();
        assert_eq!(both["data"], json!([{"rows": [["2021", 25]]}]));
        let none = chart(&aggregate(), &query("sex", None, &["sex:isNone"])).unwrap();
        assert_eq!(none["data"], json!([{"rows": [[NONE, 12]]}]));
        let not_none = chart(&aggregate(), &query("sex", None, &["sex:isNotNone", "sex:strStartsWith:f"])).unwrap();
        assert_eq!(not_none["data"], json!([{"rows": [["female", 55]]}]));
        let dates = chart(&aggregate(), &query("year", None, &["year:sameYearOrBefore:2020-12-31"])).unwrap();
        assert_eq!(dates["data"], json!([{"rows": [["2020", 60]]}]));
        let regex = chart(&aggregate(), &query("sex", None, &["sex:notMatches:^fe"])).unwrap();
        assert_eq!(regex["data"], json!([{"rows": [["male", 45]]}]), "the sentinel is no value for a pattern");
    }

    #[test]
    fn bad_requests_name_the_problem() {
        let a = aggregate();
        assert!(chart(&a, &query("cnt", None, &[])).unwrap_err().0.contains("no column"));
        assert!(chart(&a, &query("nope", None, &[])).unwrap_err().0.contains("no column nope"));
        assert!(chart(&a, &query("year", Some("year"), &[])).is_err());
        assert!(chart(&a, &query("year", None, &["sex:explode:x"])).unwrap_err().0.contains("unknown filter type"));
        assert!(chart(&a, &query("year", None, &["sex:strEq"])).unwrap_err().0.contains("needs a value"));
        assert!(chart(&a, &query("year", None, &["year:sameDay:yesterday"])).unwrap_err().0.contains("YYYY-MM-DD"));
        assert!(chart(&a, &query("year", None, &["sex:matches:("])).unwrap_err().0.contains("invalid pattern"));
    }

    #[test]
    fn weeks_start_on_monday() {
        let monday = parse_date("2026-11-16").unwrap();
        assert_eq!(truncate(parse_date("2026-11-22").unwrap(), Period::Week), monday);
        assert_eq!(truncate(monday, Period::Week), monday);
        assert_eq!(parse_date("2021"), parse_date("2021-01-01"));
        assert_eq!(parse_date("2021-02-30"), None);
    }
}

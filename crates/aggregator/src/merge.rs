//! The cross-site merge (reference: cumulus.md §4.6): every site's cube
//! rows twice, once under `site = NULL` (summed over sites) and once under
//! the site's own name, so that the result is a cube over the study's
//! strata plus `site`, whose all-`NULL` row is the network's total.
//!
//! A cell a site suppressed is absent from that site, so a cross-site cell
//! is the sum of the sites that reported it. Every summed cell passed the
//! network's minimum at ingest ([`crate::package::read`]), so no merged cell
//! is smaller than it.
//!
//! **Protection.** A site may have dropped only its small cells (Cumulus'
//! primary suppression), which a reader recovers by subtraction from the
//! site's other rows. So before anything is summed, each site's rows pass
//! through [`veil_suppress::shield`]: the rows that would let a reader pin
//! a dropped cell to one value are
//! withheld, from the site's own rows and from the sums alike. A cross-site
//! cell is then the sum of the site rows published beside it, and whether
//! it is partial ("≥ n" in the chart API) follows from which are; neither
//! tells a reader more than the published site rows do, so the cross-site
//! table cannot be attacked past them. A site whose cube spans too many
//! cells to check is withheld whole.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value as Json;

use crate::package::{Column, ColumnType, Table};

/// A merged cube: `cnt` first, the strata, then `site`.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// `cnt`, the strata in the sites' order, `site`.
    pub columns: Vec<Column>,
    /// One row per combination, `cnt` first.
    pub rows: Vec<Vec<Json>>,
}

/// Merges the same data package from several sites. The tables must have
/// the same columns (ingest refuses a schema that differs from the other
/// sites'); columns are matched by name, whatever their order.
pub fn merge(sites: &[(&str, &Table)]) -> Aggregate {
    let Some((_, first)) = sites.first() else {
        return Aggregate { columns: Vec::new(), rows: Vec::new() };
    };
    let strata: Vec<&Column> = first.columns.iter().filter(|c| c.name != "cnt").collect();
    // Each site's cells: its count and its strata's values, in `strata`'s order.
    let cells: Vec<Vec<(i64, Vec<Json>)>> = sites
        .iter()
        .map(|(_, table)| {
            let cnt = table.position("cnt").expect("ingest requires cnt in cubes");
            let positions: Vec<usize> =
                strata.iter().map(|c| table.position(&c.name).expect("ingest requires the same columns")).collect();
            let n = |row: &[Json]| row[cnt].as_i64().expect("ingest requires whole counts");
            table.rows.iter().map(|row| (n(row), positions.iter().map(|&i| row[i].clone()).collect())).collect()
        })
        .collect();
    let shown = shield(sites, &cells, strata.len());
    let mut sums: BTreeMap<Vec<String>, (Vec<Json>, i64)> = BTreeMap::new();
    for (((site, _), cells), shown) in sites.iter().zip(&cells).zip(&shown) {
        for ((n, values), _) in cells.iter().zip(shown).filter(|(_, shown)| **shown) {
            let (n, mut values) = (*n, values.clone());
            for site_value in [Json::Null, Json::String(site.to_string())] {
                values.push(site_value);
                let key = values.iter().map(Json::to_string).collect();
                sums.entry(key).or_insert_with(|| (values.clone(), 0)).1 += n;
                values.pop();
            }
        }
    }
    let mut columns = vec![Column { name: "cnt".into(), column_type: ColumnType::Integer }];
    columns.extend(strata.into_iter().cloned());
    columns.push(Column { name: "site".into(), column_type: ColumnType::String });
    let mut rows: Vec<Vec<Json>> = sums
        .into_values()
        .map(|(values, n)| {
            let mut row = Vec::with_capacity(values.len() + 1);
            row.push(Json::from(n));
            row.extend(values);
            row
        })
        .collect();
    // As Cumulus sorts them: largest counts first.
    rows.sort_by(|a, b| b[0].as_i64().cmp(&a[0].as_i64()));
    Aggregate { columns, rows }
}

/// Per site, per row, whether it may be published ([`veil_suppress::shield`]).
fn shield(sites: &[(&str, &Table)], cells: &[Vec<(i64, Vec<Json>)>], strata: usize) -> Vec<Vec<bool>> {
    // Every stratum's values, as any site reported them, numbered; `NULL`
    // is "all values".
    let mut numbers: Vec<HashMap<String, u32>> = vec![HashMap::new(); strata];
    for (_, values) in cells.iter().flatten() {
        for (j, v) in values.iter().enumerate().filter(|(_, v)| !v.is_null()) {
            let next = numbers[j].len() as u32;
            numbers[j].entry(v.to_string()).or_insert(next);
        }
    }
    let key = |values: &[Json]| -> Vec<u32> {
        values
            .iter()
            .enumerate()
            .map(|(j, v)| if v.is_null() { veil_suppress::ALL } else { numbers[j][&v.to_string()] })
            .collect()
    };
    sites
        .iter()
        .zip(cells)
        .map(|((site, _), cells)| {
            let published: HashMap<Vec<u32>, u64> = cells.iter().map(|(n, v)| (key(v), *n as u64)).collect();
            match veil_suppress::shield(&published, veil_suppress::Hidden::Dropped) {
                Ok(withheld) => cells.iter().map(|(_, v)| !withheld.contains(&key(v))).collect(),
                Err(e) => {
                    eprintln!("veil aggregator: withholding the rows of site {site}: {e}");
                    vec![false; cells.len()]
                }
            }
        })
        .collect()
}

/// Whether two sites' tables can be merged: the same column names with the
/// same types, in any order.
pub fn same_schema(a: &[Column], b: &[Column]) -> bool {
    let sorted = |c: &[Column]| {
        let mut v: Vec<(String, ColumnType)> = c.iter().map(|c| (c.name.clone(), c.column_type)).collect();
        v.sort_by(|x, y| x.0.cmp(&y.0));
        v
    };
    sorted(a) == sorted(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::Kind;
    use serde_json::json;

    fn cube(rows: &[(i64, Json)]) -> Table {
        Table {
            package: "count".into(),
            kind: Kind::Cube,
            columns: vec![
                Column { name: "cnt".into(), column_type: ColumnType::Integer },
                Column { name: "sex".into(), column_type: ColumnType::String },
            ],
            rows: rows.iter().map(|(n, s)| vec![json!(n), s.clone()]).collect(),
        }
    }

    #[test]
    fn each_row_counts_for_its_site_and_for_all_sites() {
        let a = cube(&[(30, Json::Null), (12, json!("female")), (18, json!("male"))]);
        let b = cube(&[(25, Json::Null), (25, json!("female"))]);
        let merged = merge(&[("a", &a), ("b", &b)]);
        let names: Vec<&str> = merged.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["cnt", "sex", "site"]);
        let find = |sex: Json, site: Json| {
            merged.rows.iter().find(|r| r[1] == sex && r[2] == site).map(|r| r[0].as_i64().unwrap())
        };
        assert_eq!(find(Json::Null, Json::Null), Some(55), "the network's total");
        assert_eq!(find(json!("female"), Json::Null), Some(37));
        assert_eq!(find(json!("male"), Json::Null), Some(18), "b suppressed male: the sum of those who reported it");
        assert_eq!(find(json!("male"), json!("b")), None);
        assert_eq!(find(json!("female"), json!("b")), Some(25));
        assert_eq!(merged.rows.len(), 3 + 5);
    }
}

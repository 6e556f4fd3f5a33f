//! The attack on what the aggregator publishes for three sites that
//! dropped only their small cells (Cumulus' primary suppression): from the
//! merged table alone, bound each site's dropped cells by the relations a
//! count cube obeys ([`veil_suppress::attack`], every stratum additive as
//! it truly is here) and see which come out as a single value.
//!
//! The merged table holds per-site rows and sums over sites. The test also
//! checks that every sum is the sum of the site rows published beside it,
//! so that the sums (and whether a cell is partial, "≥ n" in the chart API,
//! which follows from which site rows are there) tell a reader nothing the
//! site rows do not: attacking the site rows is attacking everything.
//!
//! Before the merge shielded sites' rows, it published them as sent, and
//! the attack recovered cells; now it recovers none.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value as Json, json};
use veil_aggregator::merge::{Aggregate, merge};
use veil_aggregator::package::{Column, ColumnType, Kind, Table};
use veil_suppress::ALL;
use veil_suppress::attack::{Lattice, bounds};

const STRATA: [&str; 3] = ["sex", "state", "marital"];
const MIN_CELL: u64 = 10;

/// A cell's key: per stratum a value, or `None` for "all values".
type Key = Vec<Option<String>>;

/// A site's patients (sex, state, marital status), many cells small, and
/// a state with three patients: the single suppressed child of its margins.
fn patients(seed: u64, n: usize) -> Vec<[String; 3]> {
    let mut state = seed;
    let mut next = |m: u64| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) % m
    };
    (0..n)
        .map(|i| {
            let place = if i < 3 { "Z".to_string() } else { format!("S{}", next(6)) };
            let sex = ["female", "male"][next(2) as usize].to_string();
            let marital = ["M", "S", "D", "W", "U"][next(5) as usize].to_string();
            [sex, place, marital]
        })
        .collect()
}

/// Every cell's count, over every combination of the strata.
fn cube(patients: &[[String; 3]]) -> HashMap<Key, u64> {
    let mut counts = HashMap::new();
    for p in patients {
        for set in 0..8u32 {
            let key: Key = (0..3).map(|j| (set & (1 << j) != 0).then(|| p[j].clone())).collect();
            *counts.entry(key).or_insert(0) += 1;
        }
    }
    counts
}

/// What a site sends: the cells at or over the minimum, nothing more.
fn primary(truth: &HashMap<Key, u64>) -> Table {
    let mut columns = vec![Column { name: "cnt".into(), column_type: ColumnType::Integer }];
    columns.extend(STRATA.iter().map(|s| Column { name: s.to_string(), column_type: ColumnType::String }));
    let rows = truth
        .iter()
        .filter(|(_, n)| **n >= MIN_CELL)
        .map(|(k, n)| std::iter::once(json!(n)).chain(k.iter().map(|v| json!(v))).collect())
        .collect();
    Table { package: "count_patients".into(), kind: Kind::Cube, columns, rows }
}

fn key_of(row: &[Json]) -> Key {
    row[1..=STRATA.len()].iter().map(|v| v.as_str().map(str::to_string)).collect()
}

/// Site `site`'s cells that the attack pins to one value above zero, from
/// the merged table's rows for it (each checked against the truth). The
/// reader is given every value of every stratum, `domains`, those that no
/// site published included (more than a real one would know).
fn recovered(merged: &Aggregate, site: &str, truth: &HashMap<Key, u64>, domains: &[Vec<String>]) -> Vec<Key> {
    let site_column = STRATA.len() + 1;
    let values: Vec<u32> = domains.iter().map(|d| d.len() as u32).collect();
    let lattice = Lattice::new(&values, usize::MAX).unwrap();
    let number = |key: &Key| -> Option<usize> {
        let key: Option<Vec<u32>> = key
            .iter()
            .enumerate()
            .map(|(j, v)| match v {
                None => Some(ALL),
                Some(v) => domains[j].iter().position(|d| d == v).map(|p| p as u32),
            })
            .collect();
        lattice.index(&key?)
    };
    let shown: HashMap<usize, u64> = merged
        .rows
        .iter()
        .filter(|r| r[site_column] == json!(site))
        .map(|r| (number(&key_of(r)).unwrap(), r[0].as_u64().unwrap()))
        .collect();
    let b = bounds(&lattice, &[true; 3], &shown);
    let mut found = Vec::new();
    for (key, &n) in truth {
        let i = number(key).unwrap();
        assert!(b.lo[i] <= n as i64 && n as i64 <= b.hi[i], "the attack is sound");
        // The site's suppressed cells: those it dropped for counting under
        // the minimum. (Cells the aggregator withheld to protect them may
        // come out: each counts at least the minimum, as the site sent it.)
        if n < MIN_CELL && b.pinned(i) {
            found.push(key.clone());
        }
    }
    found
}

/// Every sum over sites is the sum of the site rows published with it.
fn sums_are_of_published_rows(merged: &Aggregate) {
    let site_column = STRATA.len() + 1;
    let mut by_site: BTreeMap<Key, u64> = BTreeMap::new();
    let mut sums: BTreeMap<Key, u64> = BTreeMap::new();
    for row in &merged.rows {
        let n = row[0].as_u64().unwrap();
        let target = if row[site_column].is_null() { &mut sums } else { &mut by_site };
        *target.entry(key_of(row)).or_insert(0) += n;
    }
    assert_eq!(sums, by_site);
}

#[test]
fn three_sites_with_primary_suppression_alone_give_nothing_away() {
    let sites = ["a", "b", "c"];
    let truths: Vec<HashMap<Key, u64>> =
        [(1u64, 300usize), (2, 220), (3, 400)].iter().map(|&(seed, n)| cube(&patients(seed, n))).collect();
    let tables: Vec<Table> = truths.iter().map(primary).collect();
    let sent: Vec<(&str, &Table)> = sites.iter().copied().zip(&tables).collect();
    let mut domains: Vec<Vec<String>> = vec![Vec::new(); STRATA.len()];
    for key in truths.iter().flat_map(HashMap::keys) {
        for (j, v) in key.iter().enumerate() {
            if let Some(v) = v.as_ref().filter(|v| !domains[j].contains(v)) {
                domains[j].push(v.clone());
            }
        }
    }

    // What each site sent, attacked as the aggregator would publish it
    // without protection: cells come out.
    let unprotected = Aggregate {
        columns: merge(&sent).columns,
        rows: sent
            .iter()
            .flat_map(|(site, t)| t.rows.iter().map(move |r| [r.clone(), vec![json!(site)]].concat()))
            .collect(),
    };
    let before: usize = sites.iter().zip(&truths).map(|(s, t)| recovered(&unprotected, s, t, &domains).len()).sum();
    assert!(before > 0, "primary suppression alone gives cells away");

    let merged = merge(&sent);
    sums_are_of_published_rows(&merged);
    let mut published = 0;
    for (site, truth) in sites.iter().zip(&truths) {
        let leaks = recovered(&merged, site, truth, &domains);
        assert!(leaks.is_empty(), "site {site}: {leaks:?}");
        published += merged.rows.iter().filter(|r| r[STRATA.len() + 1] == json!(site)).count();
    }
    let sent_rows: usize = tables.iter().map(|t| t.rows.len()).sum();
    eprintln!("{sent_rows} site rows sent, {before} dropped cells recovered from them; {published} published");
    assert!(published > 0, "something is still published");
}

//! The attack a reader can make on what a study publishes: from each
//! table's published cells alone, bound every unpublished cell by the
//! relations a count cube obeys, and see which suppressed cells come out
//! as a single value.
//!
//! The attack is [`veil_suppress::attack`]'s propagation of bounds along
//! the relations a count cube obeys, given every stratum's full set of
//! values (more than a real reader would know) and which strata are
//! additive. (`tests/python/test_suppression.py` bounds each cell by
//! linear programming over the whole system, on cubes small enough for it.)
//!
//! Before (Cumulus' primary suppression only) the attack recovers cells;
//! with complementary suppression, none.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;

use serde_json::{Value as Json, json};
use veil_study::{Builder, Built, BuiltTable, Study};
use veil_suppress::ALL;
use veil_suppress::attack::{Lattice, bounds};

/// A cell's key: per stratum a value, or `None` for "all values".
type Key = Vec<Option<String>>;

/// Every cell's count, as the data holds them (a build with `min_cell = 1`
/// and primary suppression, which drops nothing).
fn truth(table: &BuiltTable) -> HashMap<Key, u64> {
    table.rows.iter().map(|r| (key_of(r), r[0].as_u64().unwrap())).collect()
}

fn key_of(row: &[Json]) -> Key {
    row[1..].iter().map(|v| v.as_str().map(str::to_string)).collect()
}

/// The suppressed cells whose bounds, from the published cells alone,
/// close on a single value ([`veil_suppress::attack`]).
fn recovered(published: &BuiltTable, truth: &HashMap<Key, u64>, additive: &[bool]) -> Vec<(Key, u64)> {
    // Every stratum's values (more than a reader would know), numbered.
    let mut domains: Vec<Vec<String>> = vec![Vec::new(); additive.len()];
    for key in truth.keys() {
        for (j, v) in key.iter().enumerate() {
            if let Some(v) = v.as_ref().filter(|v| !domains[j].contains(v)) {
                domains[j].push(v.clone());
            }
        }
    }
    let number = |key: &Key| -> Vec<u32> {
        key.iter()
            .enumerate()
            .map(|(j, v)| v.as_ref().map_or(ALL, |v| domains[j].iter().position(|d| d == v).unwrap() as u32))
            .collect()
    };
    let values: Vec<u32> = domains.iter().map(|d| d.len() as u32).collect();
    let lattice = Lattice::new(&values, usize::MAX).unwrap();
    let shown: HashMap<usize, u64> =
        published.rows.iter().map(|r| (lattice.index(&number(&key_of(r))).unwrap(), r[0].as_u64().unwrap())).collect();
    let truth: HashMap<usize, (Key, u64)> =
        truth.iter().map(|(k, &n)| (lattice.index(&number(k)).unwrap(), (k.clone(), n))).collect();
    let b = bounds(&lattice, additive, &shown);
    let mut found = Vec::new();
    for i in 0..lattice.len() {
        let actual = truth.get(&i).map_or(0, |(_, n)| *n) as i64;
        // The attack is sound: the truth always lies within its bounds.
        assert!(
            b.lo[i] <= actual && actual <= b.hi[i],
            "{:?}: {actual} outside [{}, {}]",
            lattice.key(i),
            b.lo[i],
            b.hi[i]
        );
        if !shown.contains_key(&i) && b.pinned(i) {
            found.push((truth[&i].0.clone(), actual as u64));
        }
    }
    found
}

/// Builds `study_toml` (its views given) over `resources`, with primary
/// suppression only or the default, and `min_cell` as given.
fn build(study_toml: &str, views: &[(&str, &str)], resources: &[Json], suppression: &str, min_cell: u64) -> Built {
    let toml = study_toml.replace("min_cell = 10", &format!("min_cell = {min_cell}\nsuppression = '{suppression}'"));
    let study =
        Study::parse(&toml, |f| Ok(views.iter().find(|(n, _)| *n == f).map(|(_, t)| t.to_string()).expect("a view")))
            .unwrap();
    let mut b = Builder::new(&study);
    for r in resources {
        b.add(r).unwrap();
    }
    b.finish("2026-12-05").unwrap()
}

/// Runs the attack on every cube of a study, before and after.
fn attack_study(toml: &str, views: &[(&str, &str)], resources: &[Json], additive: &[&[bool]]) -> (usize, usize) {
    let truths = build(toml, views, resources, "primary", 1);
    let before = build(toml, views, resources, "primary", 10);
    let after = build(toml, views, resources, "complementary", 10);
    let (mut n_before, mut n_after) = (0, 0);
    for (i, additive) in additive.iter().enumerate() {
        let truth = truth(&truths.tables[i]);
        let found_before = recovered(&before.tables[i], &truth, additive).len();
        n_before += found_before;
        let t = &after.tables[i];
        eprintln!(
            "{}: {} cells; primary suppression alone: {} published, {found_before} hidden cells recovered; complementary: {} published ({} + {} hidden)",
            t.name,
            truth.len(),
            before.tables[i].rows.len(),
            t.rows.len(),
            t.suppressed,
            t.complementary
        );
        let leaks = recovered(&after.tables[i], &truth, additive);
        n_after += leaks.len();
        assert!(leaks.is_empty(), "{}: recovered {leaks:?}", after.tables[i].name);
        let published: HashSet<Key> = after.tables[i].rows.iter().map(|r| key_of(r)).collect();
        assert!(!published.is_empty(), "{}: something is still published", after.tables[i].name);
    }
    (n_before, n_after)
}

/// Patients with three additive strata, many cells small, and one state
/// with three patients: the single suppressed child of its margins.
#[test]
fn a_cube_built_to_be_hard_gives_nothing_away() {
    let toml = "study_prefix = 'h'\n[views]\np = 'p.json'\n[[counts]]\nname = 'count_patients'\nfrom = 'p'\nstrata = ['sex', 'state', 'marital']\ncount_distinct = 'id'\nmin_cell = 10\n";
    let view = r#"{"resource": "Patient", "select": [{"column": [{"name": "id", "path": "getResourceKey()"}, {"name": "sex", "path": "gender"}, {"name": "state", "path": "address.state"}, {"name": "marital", "path": "maritalStatus.coding.code"}]}]}"#;
    let mut seed: u64 = 42;
    let mut next = |n: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let mut patients = Vec::new();
    for i in 0..400 {
        let state = if i < 3 { "Z".to_string() } else { format!("S{}", next(6)) };
        let gender = ["female", "male"][next(2) as usize];
        let marital = ["M", "S", "D", "W", "U"][next(5) as usize];
        patients.push(json!({"resourceType": "Patient", "id": format!("p{i}"), "gender": gender,
            "address": [{"state": state}], "maritalStatus": {"coding": [{"code": marital}]}}));
    }
    let (before, after) = attack_study(toml, &[("p.json", view)], &patients, &[&[true, true, true]]);
    assert!(before > 0, "primary suppression alone gives cells away ({before})");
    assert_eq!(after, 0);
}

/// The `flu` study on a site's own data (the bundled sample, full dates:
/// months and age bands), as a site builds it before anything leaves.
#[test]
fn the_flu_study_gives_nothing_away() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("studies/flu");
    let toml = std::fs::read_to_string(dir.join("study.toml")).unwrap();
    let toml = toml.replace("count_distinct = \"patient_ref\"", "count_distinct = \"patient_ref\"\nmin_cell = 10");
    let toml =
        toml.replace("count_distinct = \"immunization_ref\"", "count_distinct = \"immunization_ref\"\nmin_cell = 10");
    let views: Vec<(String, String)> = ["patient.json", "vaccination.json"]
        .iter()
        .map(|f| (f.to_string(), std::fs::read_to_string(dir.join(f)).unwrap()))
        .collect();
    let views: Vec<(&str, &str)> = views.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/synthea-r4-100.tar.gz");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()));
    let mut resources = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut text = String::new();
        entry.unwrap().read_to_string(&mut text).unwrap();
        let Ok(bundle) = serde_json::from_str::<Json>(&text) else { continue };
        for e in bundle["entry"].as_array().into_iter().flatten() {
            if matches!(e["resource"]["resourceType"].as_str(), Some("Patient" | "Immunization")) {
                resources.push(e["resource"].clone());
            }
        }
    }
    // Vaccinated patients: only sex is additive (a patient counts in every
    // year, month, age band and vaccine of theirs); doses: all of them.
    let (before, after) =
        attack_study(&toml, &views, &resources, &[&[false, false, false, true, false], &[true, true, true]]);
    assert!(before > 0, "primary suppression alone gives cells away ({before})");
    assert_eq!(after, 0);
}

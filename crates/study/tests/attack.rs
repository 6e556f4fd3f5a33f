//! The attack a reader can make on what a study publishes: from each
//! table's published cells alone, bound every unpublished cell by the
//! relations a count cube obeys, and see which suppressed cells come out
//! as a single value.
//!
//! Relations: along an additive stratum (one value per counted patient or
//! resource) a marginal is the sum of the cells below it; along a
//! non-additive one it is at least each of them and at most their sum;
//! every cell is at least zero. The reader is given every stratum's full
//! set of values (more than a real one would know) and which strata are
//! additive. Bounds are propagated through these relations until nothing
//! changes: single subtractions, and chains of them across strata, are
//! found this way. (`tests/python/test_suppression.py` bounds each cell by
//! linear programming over the whole system, on cubes small enough for it.)
//!
//! Before (Cumulus' primary suppression only) the attack recovers cells;
//! with complementary suppression, none.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;

use serde_json::{Value as Json, json};
use veil_study::{Builder, Built, BuiltTable, Study};

const INF: i64 = i64::MAX / 4;

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
/// close on a single value.
fn recovered(published: &BuiltTable, truth: &HashMap<Key, u64>, additive: &[bool]) -> Vec<(Key, u64)> {
    let d = additive.len();
    // The lattice: every combination of each stratum's values and "all".
    let mut domains: Vec<Vec<Option<String>>> = vec![vec![None]; d];
    for key in truth.keys() {
        for (j, v) in key.iter().enumerate() {
            if v.is_some() && !domains[j].contains(v) {
                domains[j].push(v.clone());
            }
        }
    }
    let mut cells: Vec<Key> = vec![Vec::new()];
    for domain in &domains {
        cells = cells.iter().flat_map(|k| domain.iter().map(move |v| [k.clone(), vec![v.clone()]].concat())).collect();
    }
    let index: HashMap<&Key, usize> = cells.iter().enumerate().map(|(i, k)| (k, i)).collect();
    let shown: HashMap<Key, u64> = published.rows.iter().map(|r| (key_of(r), r[0].as_u64().unwrap())).collect();
    let mut lo: Vec<i64> = cells.iter().map(|k| shown.get(k).map_or(0, |&n| n as i64)).collect();
    let mut hi: Vec<i64> = cells.iter().map(|k| shown.get(k).map_or(INF, |&n| n as i64)).collect();
    // Relations: (stratum, parent, children).
    let mut relations: Vec<(usize, usize, Vec<usize>)> = Vec::new();
    for (i, k) in cells.iter().enumerate() {
        for j in 0..d {
            if k[j].is_none() {
                let children = domains[j][1..]
                    .iter()
                    .map(|v| {
                        let mut c = k.clone();
                        c[j] = v.clone();
                        index[&c]
                    })
                    .collect();
                relations.push((j, i, children));
            }
        }
    }
    for _round in 0..500 {
        let mut changed = false;
        let mut tighten = |v: &mut i64, new: i64, up: bool| {
            if (up && new > *v) || (!up && new < *v) {
                *v = new;
                changed = true;
            }
        };
        for (j, p, children) in &relations {
            // Sums of the children's bounds, counting unbounded ones apart.
            let sum_lo: i64 = children.iter().map(|&c| lo[c]).sum();
            let unbounded = children.iter().filter(|&&c| hi[c] >= INF).count();
            let finite_hi: i64 = children.iter().filter(|&&c| hi[c] < INF).map(|&c| hi[c]).sum();
            let others_hi = |c: usize| match (unbounded, hi[c] >= INF) {
                (0, _) => finite_hi - hi[c],
                (1, true) => finite_hi,
                _ => INF,
            };
            let sum_hi = if unbounded > 0 { INF } else { finite_hi };
            let others_hi: Vec<i64> = children.iter().map(|&c| others_hi(c)).collect();
            if additive[*j] {
                tighten(&mut lo[*p], sum_lo, true);
                tighten(&mut hi[*p], sum_hi, false);
                for (n, &c) in children.iter().enumerate() {
                    let others_lo = sum_lo - lo[c];
                    let (p_lo, p_hi) = (lo[*p], hi[*p]);
                    tighten(&mut lo[c], p_lo - others_hi[n], true);
                    tighten(&mut hi[c], p_hi - others_lo, false);
                }
            } else {
                let max_lo = children.iter().map(|&c| lo[c]).max().unwrap_or(0);
                tighten(&mut lo[*p], max_lo, true);
                tighten(&mut hi[*p], sum_hi, false);
                for (n, &c) in children.iter().enumerate() {
                    let (p_lo, p_hi) = (lo[*p], hi[*p]);
                    tighten(&mut hi[c], p_hi, false);
                    tighten(&mut lo[c], p_lo - others_hi[n], true);
                }
            }
        }
        if !changed {
            break;
        }
    }
    let mut found = Vec::new();
    for (i, k) in cells.iter().enumerate() {
        let actual = truth.get(k).copied().unwrap_or(0) as i64;
        // The attack is sound: the truth always lies within its bounds.
        assert!(lo[i] <= actual && actual <= hi[i], "{k:?}: {actual} outside [{}, {}]", lo[i], hi[i]);
        if !shown.contains_key(k) && actual > 0 && lo[i] == hi[i] {
            found.push((k.clone(), actual as u64));
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

//! Complementary (secondary) suppression of a count cube, so that no
//! suppressed cell can be worked out from the published ones.
//!
//! A cube holds a cell for every combination of its strata's values, `ALL`
//! standing for "any value" (the marginals). Along an **additive** stratum
//! (each counted patient or resource has one value: sex, for patients) a
//! marginal is the sum of the cells below it; along a **non-additive** one
//! (a patient vaccinated in two years counts in both) the marginal is at
//! most that sum and at least each cell. A reader who knows every published
//! cell can solve these relations, one subtraction or a chain of them, or
//! bound a hidden cell by linear programming.
//!
//! The method is the hypercube method (Repsilber; tau-Argus, sdcTable's
//! `HYPERCUBE`). For each primary suppressed cell `x`, it picks a set `J`
//! of the strata where `x` has a value and, for each, another value `a_j`;
//! the cells at the corners (`x_j` or `a_j` for each `j` in `J`), each
//! also with every other stratum either as in `x` or `ALL` (where `x` is
//! `ALL`, a value `c_l` of `x`'s largest refinement or `ALL`), are all
//! suppressed. Adding `t` to the corners of even parity and taking it from
//! the others, in every such variant, changes no published cell and breaks
//! no relation: every marginal along `J` loses and gains the same `t`, and
//! along the other strata a cell and its marginal move together. So every
//! cell of the hypercube, `x` included, has at least two values consistent
//! with what is published. A hypercube is usable when one of the two
//! directions keeps every cell at or above zero and, along a non-additive
//! stratum in `J`, at or below its marginal (checked on the true counts).
//!
//! **Cost** (the information lost): the sum of the counts of the cells it
//! newly suppresses; cells absent from the data (zero, which a reader
//! cannot tell from suppressed) and cells already suppressed cost nothing.
//! The cheapest usable hypercube is chosen among every `J` (up to all of
//! `x`'s strata) and, per stratum, the two other values whose cells cost
//! least. Primary cells are taken smallest first; a cell already inside a
//! chosen hypercube is protected by it. The choice is greedy and can leave
//! a cell open; a last pass with [`crate::shield`] (what the aggregator
//! applies) withholds what the bound-propagation attack would still pin.
//!
//! The grand total has no other value to trade with: when it is under the
//! minimum, so is every cell, and nothing is published.

use std::collections::{HashMap, HashSet};

use crate::{ALL, TooLarge};

/// A cube to protect: cell counts by key, and per stratum its values and
/// whether it is additive.
pub struct Cube<'a> {
    /// Every cell's true count (a missing key counts zero).
    pub counts: &'a HashMap<Vec<u32>, u64>,
    /// Values per stratum (`0..values[j]`).
    pub values: &'a [u32],
    /// Per stratum, whether each counted patient or resource has one value.
    pub additive: &'a [bool],
}

/// The cells to suppress besides `primary` (which it never repeats):
/// hypercubes, then what [`crate::shield`] still withholds from the cells
/// left published. A cube spanning more than [`crate::shield::MAX_CELLS`]
/// cells cannot be checked, and is refused.
pub fn complementary(cube: &Cube, primary: &HashSet<Vec<u32>>) -> Result<HashSet<Vec<u32>>, TooLarge> {
    let mut suppressed: HashSet<Vec<u32>> = primary.clone();
    let mut protected: HashSet<Vec<u32>> = HashSet::new();
    let mut order: Vec<&Vec<u32>> = primary.iter().collect();
    order.sort_by_key(|k| (cube.count(k), (*k).clone()));
    for x in order {
        if protected.contains(x) {
            continue;
        }
        let Some(cells) = best_hypercube(cube, x, &suppressed) else { continue };
        for cell in cells {
            if cube.count(&cell) > 0 {
                suppressed.insert(cell.clone());
            }
            protected.insert(cell);
        }
    }
    // The greedy choice can leave a cell open: a primary cell with no
    // usable hypercube, or one counted as protected by a hypercube whose
    // cells later choices changed. The attack the aggregator makes finds
    // those, and the shield closes them, so that what a site publishes
    // passes the aggregator as it is.
    let published: HashMap<Vec<u32>, u64> =
        cube.counts.iter().filter(|(k, n)| **n > 0 && !suppressed.contains(*k)).map(|(k, n)| (k.clone(), *n)).collect();
    suppressed.extend(crate::shield(&published, crate::Hidden::All)?);
    suppressed.retain(|k| !primary.contains(k));
    Ok(suppressed)
}

impl Cube<'_> {
    fn count(&self, key: &[u32]) -> u64 {
        self.counts.get(key).copied().unwrap_or(0)
    }
}

/// The cheapest usable hypercube around `x`: its cells, `x` first.
fn best_hypercube(cube: &Cube, x: &[u32], suppressed: &HashSet<Vec<u32>>) -> Option<Vec<Vec<u32>>> {
    let d = x.len();
    let specific: Vec<usize> = (0..d).filter(|&j| x[j] != ALL).collect();
    if specific.is_empty() {
        return None;
    }
    // Where `x` is ALL, the value whose refinement of `x` is largest, one
    // stratum after another, so that every refinement used is non-zero.
    let mut anchor = x.to_vec();
    for l in (0..d).filter(|&l| x[l] == ALL) {
        let best = (0..cube.values[l]).max_by_key(|&v| {
            let mut k = anchor.clone();
            k[l] = v;
            cube.count(&k)
        });
        if let Some(v) = best {
            anchor[l] = v;
        }
    }
    let cost_of = |k: &Vec<u32>| if suppressed.contains(k) { 0 } else { cube.count(k) };
    // Per stratum, the two other values whose cell costs least.
    let alternatives: Vec<Vec<u32>> = (0..d)
        .map(|j| {
            if x[j] == ALL {
                return Vec::new();
            }
            let mut options: Vec<(u64, u32)> = (0..cube.values[j])
                .filter(|&v| v != x[j])
                .map(|v| {
                    let mut k = x.to_vec();
                    k[j] = v;
                    (cost_of(&k), v)
                })
                .collect();
            options.sort_unstable();
            options.into_iter().take(2).map(|(_, v)| v).collect()
        })
        .collect();
    let mut best: Option<(u64, Vec<Vec<u32>>)> = None;
    for subset in 1u32..(1 << specific.len()) {
        let dims: Vec<usize> =
            specific.iter().enumerate().filter(|(i, _)| subset & (1 << i) != 0).map(|(_, &j)| j).collect();
        if dims.iter().any(|&j| alternatives[j].is_empty()) {
            continue;
        }
        // Every choice of one alternative per stratum in `dims`.
        let mut choice = vec![0usize; dims.len()];
        loop {
            let others: Vec<u32> = dims.iter().zip(&choice).map(|(&j, &c)| alternatives[j][c]).collect();
            let cells = hypercube(x, &anchor, &dims, &others);
            if usable(cube, &cells, &dims) {
                let cost: u64 = cells.iter().map(|(k, _)| cost_of(k)).sum();
                if best.as_ref().is_none_or(|(c, _)| cost < *c) {
                    best = Some((cost, cells.into_iter().map(|(k, _)| k).collect()));
                }
            }
            // Next combination (an odometer over the alternatives).
            let mut i = 0;
            while i < choice.len() {
                choice[i] += 1;
                if choice[i] < alternatives[dims[i]].len() {
                    break;
                }
                choice[i] = 0;
                i += 1;
            }
            if i == choice.len() {
                break;
            }
        }
    }
    best.map(|(_, cells)| cells)
}

/// The cells of the hypercube spanned by `dims` (value `x_j` or `other_j`)
/// with every other stratum as in `x` or `ALL` (where `x` is `ALL`: the
/// anchor's value or `ALL`), each with its sign (`true`: even parity, as `x`).
fn hypercube(x: &[u32], anchor: &[u32], dims: &[usize], others: &[u32]) -> Vec<(Vec<u32>, bool)> {
    let rest: Vec<usize> = (0..x.len()).filter(|j| !dims.contains(j)).collect();
    let mut cells = Vec::with_capacity(1 << x.len());
    for corner in 0u32..(1 << dims.len()) {
        for variant in 0u32..(1 << rest.len()) {
            let mut key = x.to_vec();
            for (i, &j) in dims.iter().enumerate() {
                if corner & (1 << i) != 0 {
                    key[j] = others[i];
                }
            }
            for (i, &l) in rest.iter().enumerate() {
                // Bit clear: as in x (x's value, or ALL); bit set: the other
                // of the pair {x_l, ALL} or {anchor_l, ALL}.
                let set = variant & (1 << i) != 0;
                key[l] = match (x[l] == ALL, set) {
                    (false, false) => x[l],
                    (false, true) => ALL,
                    (true, false) => ALL,
                    (true, true) => anchor[l],
                };
            }
            cells.push((key, corner.count_ones() % 2 == 0));
        }
    }
    cells
}

/// Whether moving the hypercube by one, in one of the two directions,
/// keeps every cell at or above zero and, along the non-additive strata it
/// spans, at or below the marginal (which the move leaves as it is).
fn usable(cube: &Cube, cells: &[(Vec<u32>, bool)], dims: &[usize]) -> bool {
    let fits = |decreasing: bool| {
        cells.iter().all(|(key, even)| {
            let count = cube.count(key);
            if *even == decreasing {
                count >= 1
            } else {
                dims.iter().filter(|&&j| !cube.additive[j]).all(|&j| {
                    let mut parent = key.clone();
                    parent[j] = ALL;
                    count < cube.count(&parent)
                })
            }
        })
    };
    fits(true) || fits(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2×2 table with margins: one small cell (3) alone is recovered by
    /// subtraction; protected, its row, column and diagonal partners go too,
    /// and no margin does.
    #[test]
    fn a_two_by_two_table_gets_its_rectangle() {
        let mut counts = HashMap::new();
        let cells = [([0, 0], 3u64), ([0, 1], 20), ([1, 0], 30), ([1, 1], 40)];
        for (k, n) in cells {
            counts.insert(k.to_vec(), n);
        }
        counts.insert(vec![0, ALL], 23);
        counts.insert(vec![1, ALL], 70);
        counts.insert(vec![ALL, 0], 33);
        counts.insert(vec![ALL, 1], 60);
        counts.insert(vec![ALL, ALL], 93);
        let cube = Cube { counts: &counts, values: &[2, 2], additive: &[true, true] };
        let primary: HashSet<Vec<u32>> = [vec![0, 0]].into_iter().collect();
        let extra = complementary(&cube, &primary).unwrap();
        let expected: HashSet<Vec<u32>> = [vec![0, 1], vec![1, 0], vec![1, 1]].into_iter().collect();
        assert_eq!(extra, expected);
    }
}

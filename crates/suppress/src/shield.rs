//! The shield: what one who republishes a cube, holding only its published
//! cells, must withhold so that no hidden cell can be worked out.
//!
//! The aggregator receives each site's cube with the small cells already
//! dropped, and does not know their counts; a site may have applied only
//! primary suppression (Cumulus does), leaving cells that one subtraction
//! recovers. The hypercube method needs the hidden counts, so the shield is
//! driven by the attack instead: bound every cell from what would be
//! published ([`crate::attack`]); while some hidden cell is pinned to one
//! value, withhold, for each such cell, the published cell in a relation
//! with it that counts least (the cost: counts withheld, as for
//! [`crate::complementary`]), and attack again.
//!
//! The reader is assumed as strong as the data allows: every stratum
//! additive unless the published cells contradict it (a marginal smaller
//! than the sum of its published cells, or different from the sum of all
//! of them); if the bounds still contradict each other, every stratum is
//! taken as non-additive, the relations that always hold for counts of
//! distinct patients.
//!
//! Protection is as strong as the attack: against the propagation of
//! bounds it is complete; a linear program may still bound a hidden cell
//! tighter (`tests/python/test_suppression.py` checks the aggregator's
//! output with one).

use std::collections::{HashMap, HashSet};

use crate::ALL;
use crate::attack::{Lattice, bounds};

/// The most cells a cube may span (every combination of its strata's
/// values and `ALL`) for the shield to bound them: two 8-byte bounds each.
pub const MAX_CELLS: usize = 4 << 20;

/// A cube too large to shield: it spans more than [`MAX_CELLS`] cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the cube spans more than {MAX_CELLS} cells (every combination of its strata's values), too many to check")]
pub struct TooLarge;

/// The published cells (keys with `ALL` for rolled-up strata, stratum `j`
/// taking values `0..values[j]`) to withhold as well. Cells with a value
/// outside `values` are ignored.
pub fn shield(values: &[u32], published: &HashMap<Vec<u32>, u64>) -> Result<HashSet<Vec<u32>>, TooLarge> {
    let lattice = Lattice::new(values, MAX_CELLS).ok_or(TooLarge)?;
    let shown: HashMap<usize, u64> = published.iter().filter_map(|(k, &n)| Some((lattice.index(k)?, n))).collect();
    let mut additive = additivity(&lattice, values, &shown);
    let mut withheld: HashSet<usize> = HashSet::new();
    loop {
        let visible: HashMap<usize, u64> =
            shown.iter().filter(|(i, _)| !withheld.contains(i)).map(|(&i, &n)| (i, n)).collect();
        let b = bounds(&lattice, &additive, &visible);
        if b.contradictory() && additive.iter().any(|&a| a) {
            additive.iter_mut().for_each(|a| *a = false);
            continue;
        }
        let mut more: Vec<usize> = Vec::new();
        for i in (0..lattice.len()).filter(|i| !visible.contains_key(i) && b.pinned(*i)) {
            // The cheapest published cell in a relation with it; failing
            // that (all withheld already), with one of those.
            let cheapest = |cells: &mut dyn Iterator<Item = usize>| {
                cells.filter_map(|c| visible.get(&c).map(|&n| (n, c))).min().map(|(_, c)| c)
            };
            let near = lattice.neighbours(i);
            let pick = cheapest(&mut near.iter().copied())
                .or_else(|| cheapest(&mut near.iter().flat_map(|&n| lattice.neighbours(n))));
            more.extend(pick);
        }
        let before = withheld.len();
        withheld.extend(more);
        if withheld.len() == before {
            // Nothing left near a pinned cell to withhold (never seen; the
            // grand total alone would be such a cube): withhold everything.
            if (0..lattice.len()).any(|i| !visible.contains_key(&i) && b.pinned(i)) {
                withheld.extend(shown.keys());
            }
            break;
        }
    }
    Ok(withheld.into_iter().map(|i| lattice.key(i)).collect())
}

/// Per stratum, whether a reader may take it as additive: no published
/// marginal is smaller than the sum of its published cells along it, or
/// differs from the sum when all of them are published.
fn additivity(lattice: &Lattice, values: &[u32], shown: &HashMap<usize, u64>) -> Vec<bool> {
    let mut additive = vec![true; values.len()];
    for (&p, &n) in shown {
        let key = lattice.key(p);
        for j in (0..values.len()).filter(|&j| key[j] == ALL) {
            let mut child = key.clone();
            let (mut sum, mut all_shown) = (0u64, true);
            for v in 0..values[j] {
                child[j] = v;
                match lattice.index(&child).and_then(|c| shown.get(&c)) {
                    Some(&m) => sum += m,
                    None => all_shown = false,
                }
            }
            if sum > n || (all_shown && sum != n) {
                additive[j] = false;
            }
        }
    }
    additive
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cube(cells: &[(&[u32], u64)]) -> HashMap<Vec<u32>, u64> {
        cells.iter().map(|(k, n)| (k.to_vec(), *n)).collect()
    }

    /// A 2×2 table published with one cell dropped (primary suppression
    /// only): the shield withholds enough that the attack no longer pins it.
    #[test]
    fn a_dropped_cell_of_a_two_by_two_table_is_shielded() {
        let published = cube(&[
            (&[0, 1], 20),
            (&[1, 0], 30),
            (&[1, 1], 40),
            (&[0, ALL], 23),
            (&[1, ALL], 70),
            (&[ALL, 0], 33),
            (&[ALL, 1], 60),
            (&[ALL, ALL], 93),
        ]);
        let withheld = shield(&[2, 2], &published).unwrap();
        assert!(!withheld.is_empty());
        let lattice = Lattice::new(&[2, 2], 100).unwrap();
        let visible: HashMap<usize, u64> = published
            .iter()
            .filter(|(k, _)| !withheld.contains(*k))
            .map(|(k, &n)| (lattice.index(k).unwrap(), n))
            .collect();
        let b = bounds(&lattice, &[true, true], &visible);
        assert!(!b.pinned(lattice.index(&[0, 0]).unwrap()));
        assert!(withheld.len() < published.len(), "not everything: {withheld:?}");
    }

    /// Marginals that are not the sums of their cells (patients in several
    /// years) make the stratum non-additive for the reader.
    #[test]
    fn a_marginal_over_its_cells_sum_is_not_additive() {
        let lattice = Lattice::new(&[2], 10).unwrap();
        let shown: HashMap<usize, u64> = [(0usize, 20u64), (1, 30), (2, 40)].into_iter().collect();
        assert_eq!(additivity(&lattice, &[2], &shown), [false]);
        let shown: HashMap<usize, u64> = [(0usize, 20u64), (1, 30), (2, 50)].into_iter().collect();
        assert_eq!(additivity(&lattice, &[2], &shown), [true]);
    }
}

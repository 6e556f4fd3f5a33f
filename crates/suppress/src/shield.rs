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

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::ALL;
use crate::attack::{Lattice, bounds};

/// The most cells a cube may span (every combination of its strata's
/// values and `ALL`) for the shield to bound them: two 8-byte bounds each.
pub const MAX_CELLS: usize = 4 << 20;

/// A cube too large to shield: it spans more than [`MAX_CELLS`] cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the cube spans more than {MAX_CELLS} cells (every combination of its strata's values), too many to check")]
pub struct TooLarge;

/// The published cells (keys with [`ALL`] for rolled-up strata) to
/// withhold as well.
///
/// Two readers are guarded against, since which one is real depends on
/// what the published cells do not show: one who knows each stratum has
/// exactly the values shown (where the cells do not prove otherwise), and
/// one who knows of others, all of whose cells were dropped but whom the
/// marginals count. The second reader's
/// lattice has one more value per stratum standing for all of them: he can
/// tell only their sum from the marginals, so they are protected together.
///
/// Which pinned cells count is the caller's [`Hidden`]. A site guards
/// every hidden cell; the aggregator only those a site can have dropped.
/// What a site's build publishes therefore passes the aggregator as it is.
pub fn shield(published: &HashMap<Vec<u32>, u64>, hidden: Hidden) -> Result<HashSet<Vec<u32>>, TooLarge> {
    let Some(d) = published.keys().next().map(Vec::len) else { return Ok(HashSet::new()) };
    // Each stratum's shown values, numbered densely in order.
    let mut numbers: Vec<BTreeMap<u32, u32>> = vec![BTreeMap::new(); d];
    for key in published.keys() {
        for (j, &v) in key.iter().enumerate().filter(|(_, v)| **v != ALL) {
            numbers[j].insert(v, 0);
        }
    }
    for n in &mut numbers {
        for (i, slot) in n.values_mut().enumerate() {
            *slot = i as u32;
        }
    }
    // The first reader is exact only where nothing shows values beyond
    // those shown: a marginal larger than the sum of all its shown cells.
    let beyond = values_beyond_those_shown(&numbers, published);
    let mut readers = [Reader::new(&numbers, &beyond, published)?, Reader::new(&numbers, &vec![1; d], published)?];
    let mut withheld: HashSet<&Vec<u32>> = HashSet::new();
    loop {
        let more: Vec<&Vec<u32>> =
            readers.iter_mut().flat_map(|r| r.cells_to_withhold(published, &withheld, hidden)).collect();
        let before = withheld.len();
        withheld.extend(more);
        if withheld.len() == before {
            break;
        }
    }
    Ok(withheld.into_iter().cloned().collect())
}

/// Which hidden cells a shield keeps from being pinned to one value. A cell
/// is dropped for counting under the minimum, which no published count
/// does, so a hidden cell pinned at or above the smallest count shown is
/// no dropped cell: a sum of several unseen values, or a cell the cube's
/// shape leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hidden {
    /// Every hidden cell of the shown values (complementary ones too; the
    /// one who holds the counts); sums of unseen values only below the
    /// smallest count shown.
    All,
    /// Only cells below the smallest count shown (the aggregator: what a
    /// site dropped).
    Dropped,
}

/// One reader's view: the lattice he bounds, where each published cell
/// sits in it, and which strata he takes as additive.
struct Reader<'a> {
    lattice: Lattice,
    cells: HashMap<usize, &'a Vec<u32>>,
    additive: Vec<bool>,
    /// The smallest published count.
    smallest: i64,
    /// Per stratum, the number standing for its unseen values, if any.
    unseen: Vec<Option<u32>>,
}

impl<'a> Reader<'a> {
    /// The reader who knows of `unseen[j]` (0 or 1) more values of
    /// stratum `j` than the published cells show.
    fn new(
        numbers: &[BTreeMap<u32, u32>],
        unseen: &[u32],
        published: &'a HashMap<Vec<u32>, u64>,
    ) -> Result<Self, TooLarge> {
        let values: Vec<u32> = numbers.iter().zip(unseen).map(|(n, u)| n.len() as u32 + u).collect();
        let lattice = Lattice::new(&values, MAX_CELLS).ok_or(TooLarge)?;
        let cells: HashMap<usize, &Vec<u32>> = published
            .keys()
            .map(|k| {
                let dense: Vec<u32> =
                    k.iter().enumerate().map(|(j, &v)| if v == ALL { ALL } else { numbers[j][&v] }).collect();
                (lattice.index(&dense).expect("a shown value"), k)
            })
            .collect();
        let shown: HashMap<usize, u64> = cells.iter().map(|(&i, k)| (i, published[*k])).collect();
        let additive = additivity(&lattice, &values, &shown);
        let smallest = published.values().min().map_or(0, |&n| n as i64);
        let unseen = numbers.iter().zip(unseen).map(|(n, &u)| (u == 1).then_some(n.len() as u32)).collect();
        Ok(Reader { lattice, cells, additive, smallest, unseen })
    }

    /// For each hidden cell this reader pins to one value, the cheapest
    /// published cell in a relation with it (failing that, with one of
    /// those); everything, if nothing near is left.
    fn cells_to_withhold(
        &mut self,
        published: &HashMap<Vec<u32>, u64>,
        withheld: &HashSet<&Vec<u32>>,
        hidden: Hidden,
    ) -> Vec<&'a Vec<u32>> {
        let visible: HashMap<usize, u64> =
            self.cells.iter().filter(|(_, k)| !withheld.contains(*k)).map(|(&i, k)| (i, published[*k])).collect();
        let mut b = bounds(&self.lattice, &self.additive, &visible);
        if b.contradictory() && self.additive.iter().any(|&a| a) {
            // The data are not additive where they seemed: the relations
            // that always hold for counts of distinct patients.
            self.additive.iter_mut().for_each(|a| *a = false);
            b = bounds(&self.lattice, &self.additive, &visible);
        }
        let cheapest = |cells: &mut dyn Iterator<Item = usize>| {
            cells.filter_map(|c| visible.get(&c).map(|&n| (n, c))).min().map(|(_, c)| c)
        };
        let mut more = Vec::new();
        let disclosed = |i: usize| {
            let lumped = || self.lattice.key(i).iter().zip(&self.unseen).any(|(v, u)| Some(*v) == *u);
            b.pinned(i) && (b.lo[i] < self.smallest || (hidden == Hidden::All && !lumped()))
        };
        for i in (0..self.lattice.len()).filter(|&i| !visible.contains_key(&i) && disclosed(i)) {
            let near = self.lattice.neighbours(i);
            let pick = cheapest(&mut near.iter().copied())
                .or_else(|| cheapest(&mut near.iter().flat_map(|&n| self.lattice.neighbours(n))));
            match pick {
                Some(c) => more.push(self.cells[&c]),
                // Nothing near is published any more (never seen; a cube
                // of the grand total alone would be such): withhold all.
                None => return visible.keys().map(|i| self.cells[i]).collect(),
            }
        }
        more
    }
}

/// Per stratum, 1 where the published cells show that it has values they
/// do not: a marginal larger than the sum of all its cells along the
/// stratum, every one shown (a count of distinct patients is never larger
/// than the sum over the whole domain). Else 0.
fn values_beyond_those_shown(numbers: &[BTreeMap<u32, u32>], published: &HashMap<Vec<u32>, u64>) -> Vec<u32> {
    let mut beyond = vec![0; numbers.len()];
    for (key, &n) in published {
        for j in 0..key.len() {
            if key[j] != ALL || beyond[j] == 1 {
                continue;
            }
            let mut child = key.clone();
            let sum: Option<u64> = numbers[j]
                .keys()
                .map(|&v| {
                    child[j] = v;
                    published.get(&child).copied()
                })
                .sum();
            if sum.is_some_and(|sum| sum < n) {
                beyond[j] = 1;
            }
        }
    }
    beyond
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
        let withheld = shield(&published, Hidden::All).unwrap();
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

    /// A site that sends only its total (every cell by sex dropped) keeps
    /// it: the one lumped cell of unseen values equals the total, which
    /// no dropped cell could (it would be smaller than what is shown).
    #[test]
    fn a_lone_total_is_published() {
        let published = cube(&[(&[ALL], 11)]);
        assert!(shield(&published, Hidden::All).unwrap().is_empty());
        // One shown value under a larger total: the rest, one value or
        // several, is 4, which may be a dropped cell.
        let published = cube(&[(&[ALL], 30), (&[0], 26)]);
        assert_eq!(shield(&published, Hidden::All).unwrap().len(), 1);
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

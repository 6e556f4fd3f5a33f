//! The attack a reader can make on a published cube: bound every cell
//! that is not published by the relations a count cube obeys, and see which
//! come out as a single value.
//!
//! Relations: along an additive stratum (one value per counted patient or
//! resource) a marginal is the sum of the cells below it; along a
//! non-additive one (a patient vaccinated in two years counts in both) it
//! is at least each of them and at most their sum; every cell is at least
//! zero. Bounds are propagated through these relations until nothing
//! changes, which finds single subtractions and chains of them across
//! strata. It is sound (the truth always lies within the bounds) but not
//! complete: a linear program over the whole system can bound tighter
//! (`tests/python/test_suppression.py` runs one).
//!
//! The additive relations imply the non-additive ones, so assuming a
//! stratum additive gives the reader at least as tight bounds: protection
//! checked under that assumption holds for the weaker reader too.

use std::collections::HashMap;

use crate::ALL;

/// Stands for "no upper bound": more than any count, and safe to add a few.
pub const UNBOUNDED: i64 = i64::MAX / 4;

/// How many sweeps over the relations before the bounds are taken as they
/// are: still sound, perhaps looser than the fixed point.
const MAX_SWEEPS: usize = 1000;

/// Every cell of a cube, each stratum's values and [`ALL`], numbered in
/// mixed radix (digit `values[j]` standing for `ALL`).
#[derive(Debug, Clone)]
pub struct Lattice {
    values: Vec<u32>,
    strides: Vec<usize>,
    len: usize,
}

impl Lattice {
    /// The lattice of a cube whose stratum `j` takes `values[j]` values;
    /// `None` when it has more than `max_cells` cells.
    pub fn new(values: &[u32], max_cells: usize) -> Option<Lattice> {
        let mut strides = Vec::with_capacity(values.len());
        let mut len = 1usize;
        for &n in values {
            strides.push(len);
            len = len.checked_mul(n as usize + 1).filter(|&l| l <= max_cells)?;
        }
        Some(Lattice { values: values.to_vec(), strides, len })
    }

    /// The number of cells.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the lattice has no cells (never: the grand total is one).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A cell's number; `None` for a value outside the stratum's.
    pub fn index(&self, key: &[u32]) -> Option<usize> {
        let mut i = 0;
        for (j, &v) in key.iter().enumerate() {
            let digit = if v == ALL { self.values[j] } else { v };
            if digit > self.values[j] {
                return None;
            }
            i += digit as usize * self.strides[j];
        }
        Some(i)
    }

    /// The key of cell `i`.
    pub fn key(&self, i: usize) -> Vec<u32> {
        (0..self.values.len())
            .map(|j| {
                let digit = (i / self.strides[j]) as u32 % (self.values[j] + 1);
                if digit == self.values[j] { ALL } else { digit }
            })
            .collect()
    }

    /// Whether cell `i` is rolled up along stratum `j`.
    fn is_all(&self, i: usize, j: usize) -> bool {
        (i / self.strides[j]) as u32 % (self.values[j] + 1) == self.values[j]
    }

    /// The children of cell `p` along stratum `j` (where `p` is `ALL`).
    fn children(&self, p: usize, j: usize) -> impl Iterator<Item = usize> + '_ {
        let base = p - self.values[j] as usize * self.strides[j];
        (0..self.values[j] as usize).map(move |v| base + v * self.strides[j])
    }

    /// The cells in a relation with `i`: its parent and siblings along each
    /// stratum where it has a value, its children along each where it is
    /// `ALL`.
    pub fn neighbours(&self, i: usize) -> Vec<usize> {
        let mut out = Vec::new();
        for j in 0..self.values.len() {
            if self.is_all(i, j) {
                out.extend(self.children(i, j));
            } else {
                let digit = (i / self.strides[j]) % (self.values[j] as usize + 1);
                let parent = i + (self.values[j] as usize - digit) * self.strides[j];
                out.push(parent);
                out.extend(self.children(parent, j).filter(|&c| c != i));
            }
        }
        out
    }
}

/// Each cell's least and greatest value ([`UNBOUNDED`]: none), by cell
/// number. Where the published cells contradict the relations (a stratum
/// assumed additive that is not) some cell ends with `lo > hi`.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// Least values.
    pub lo: Vec<i64>,
    /// Greatest values.
    pub hi: Vec<i64>,
}

impl Bounds {
    /// Whether the bounds contradict each other somewhere.
    pub fn contradictory(&self) -> bool {
        self.lo.iter().zip(&self.hi).any(|(lo, hi)| lo > hi)
    }

    /// Whether cell `i` is pinned to one value above zero (a zero is no
    /// count to protect).
    pub fn pinned(&self, i: usize) -> bool {
        self.lo[i] == self.hi[i] && self.lo[i] > 0
    }
}

/// Bounds every cell of `lattice` from the `published` cells (by number)
/// and the relations, stratum `j` additive where `additive[j]`.
pub fn bounds(lattice: &Lattice, additive: &[bool], published: &HashMap<usize, u64>) -> Bounds {
    let mut b = Bounds { lo: vec![0i64; lattice.len], hi: vec![UNBOUNDED; lattice.len] };
    for (&i, &n) in published {
        b.lo[i] = n as i64;
        b.hi[i] = n as i64;
    }
    let d = lattice.values.len();
    let mut children: Vec<usize> = Vec::new();
    for _ in 0..MAX_SWEEPS {
        let mut changed = false;
        for p in 0..lattice.len {
            for j in (0..d).filter(|&j| lattice.is_all(p, j)) {
                children.clear();
                children.extend(lattice.children(p, j));
                changed |= propagate(&mut b.lo, &mut b.hi, p, &children, additive[j]);
            }
        }
        // A contradiction only grows from here on (a stratum assumed
        // additive that is not): stop, and let the caller see it.
        if !changed || b.contradictory() {
            break;
        }
    }
    b
}

/// One relation, parent `p` over `children`: tightens every bound it can,
/// and says whether it did.
fn propagate(lo: &mut [i64], hi: &mut [i64], p: usize, children: &[usize], additive: bool) -> bool {
    let sum_lo: i64 = children.iter().fold(0i64, |sum, &c| sum.saturating_add(lo[c])).min(UNBOUNDED);
    let unbounded = children.iter().filter(|&&c| hi[c] >= UNBOUNDED).count();
    let finite_hi: i64 =
        children.iter().filter(|&&c| hi[c] < UNBOUNDED).fold(0i64, |sum, &c| sum.saturating_add(hi[c])).min(UNBOUNDED);
    let sum_hi = if unbounded > 0 { UNBOUNDED } else { finite_hi };
    let parent_lo = if additive { sum_lo } else { children.iter().map(|&c| lo[c]).max().unwrap_or(0) };
    let mut changed = raise(&mut lo[p], parent_lo) | lower(&mut hi[p], sum_hi);
    let (p_lo, p_hi) = (lo[p], hi[p]);
    for &c in children {
        // The sum of every other child's upper bound.
        let others_hi = match (unbounded, hi[c] >= UNBOUNDED) {
            (0, _) => finite_hi - hi[c],
            (1, true) => finite_hi,
            _ => UNBOUNDED,
        };
        if others_hi < UNBOUNDED {
            changed |= raise(&mut lo[c], p_lo - others_hi);
        }
        if p_hi < UNBOUNDED {
            let cap = if additive { p_hi - (sum_lo - lo[c]) } else { p_hi };
            changed |= lower(&mut hi[c], cap);
        }
    }
    changed
}

fn raise(bound: &mut i64, to: i64) -> bool {
    let raised = to > *bound;
    if raised {
        *bound = to;
    }
    raised
}

fn lower(bound: &mut i64, to: i64) -> bool {
    let lowered = to < *bound;
    if lowered {
        *bound = to;
    }
    lowered
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lattice_2x2() -> Lattice {
        Lattice::new(&[2, 2], 100).unwrap()
    }

    #[test]
    fn keys_and_numbers_round_trip() {
        let l = lattice_2x2();
        assert_eq!(l.len(), 9);
        for i in 0..l.len() {
            assert_eq!(l.index(&l.key(i)), Some(i));
        }
        assert_eq!(l.index(&[ALL, ALL]), Some(8));
        assert_eq!(l.index(&[3, 0]), None);
        assert!(Lattice::new(&[1000, 1000, 1000], 1 << 20).is_none());
    }

    /// One hidden cell in a 2×2 table with its margins comes out by one
    /// subtraction when the strata are additive, and not when neither is.
    #[test]
    fn a_single_subtraction_is_found() {
        let l = lattice_2x2();
        let cells = [([0, 1], 20u64), ([1, 0], 30), ([1, 1], 40), ([0, ALL], 23), ([1, ALL], 70)];
        let mut published: HashMap<usize, u64> = cells.iter().map(|(k, n)| (l.index(k).unwrap(), *n)).collect();
        published.insert(l.index(&[ALL, 0]).unwrap(), 33);
        published.insert(l.index(&[ALL, 1]).unwrap(), 60);
        published.insert(l.index(&[ALL, ALL]).unwrap(), 93);
        let hidden = l.index(&[0, 0]).unwrap();
        let b = bounds(&l, &[true, true], &published);
        assert!(b.pinned(hidden));
        assert_eq!(b.lo[hidden], 3);
        let b = bounds(&l, &[false, false], &published);
        assert!(!b.pinned(hidden), "{}..{}", b.lo[hidden], b.hi[hidden]);
        assert!(b.lo[hidden] <= 3 && 3 <= b.hi[hidden]);
    }

    #[test]
    fn neighbours_are_parent_siblings_and_children() {
        let l = Lattice::new(&[3, 2], 100).unwrap();
        let mut n: Vec<Vec<u32>> = l.neighbours(l.index(&[1, ALL]).unwrap()).into_iter().map(|i| l.key(i)).collect();
        n.sort();
        assert_eq!(n, vec![vec![0, ALL], vec![1, 0], vec![1, 1], vec![2, ALL], vec![ALL, ALL]]);
    }
}

//! Statistical disclosure control for count cubes: what keeps a cell that
//! was counted under the minimum from being worked out from the cells that
//! are published.
//!
//! A cube holds a cell for every combination of its strata's values, a
//! stratum's value being a small integer or [`ALL`] ("any value": the
//! marginals). Three parts, one per party:
//!
//! * [`complementary`], for the one who holds the true counts (a site
//!   building a study): after primary suppression, the further cells to
//!   hide, by the hypercube method ([`hypercube`] module).
//! * [`attack`], for anyone checking a publication: every cell's least and
//!   greatest value consistent with the published cells and the relations
//!   a count cube obeys, propagated until nothing changes.
//! * [`shield`], for one who republishes a cube without its hidden counts
//!   (the aggregator, with each site's upload): the further cells to
//!   withhold so that the attack pins no hidden cell to one value.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod attack;
mod hypercube;
pub mod shield;

pub use hypercube::{Cube, complementary};
pub use shield::{Hidden, TooLarge, shield};

/// Marks a stratum rolled up ("all values") in a cell's key.
pub const ALL: u32 = u32::MAX;

//! The scoring kernels: the arrays a model scores from, and the loops (SIMD where it pays) that
//! turn one user's history into a score per item.

use pulp::Simd;

use crate::algo::knn::SparseItemItem;
use crate::algo::vector::{axpy, dispatch};

/// The arrays a model scores from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scorer {
    Popularity,
    /// Row-major items × items.
    DenseItemItem {
        weights: Vec<f32>,
    },
    SparseItemItem(SparseItemItem),
    Factors(crate::algo::ials::Factors),
    /// Parts standardised per user, then mixed with these weights.
    Blend(Vec<(f32, Scorer)>),
}

/// What a scorer needs to know about one user.
pub(crate) struct UserView<'a> {
    pub index: usize,
    pub items: &'a [u32],
    pub weights: &'a [f32],
}

impl Scorer {
    /// Writes a score for every item into `out` (length = items).
    pub fn score_into(
        &self,
        user: &UserView<'_>,
        popularity: &[f32],
        out: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        let n = out.len();
        match self {
            Scorer::Popularity => out.copy_from_slice(popularity),
            Scorer::DenseItemItem { weights } => dispatch(SumOfRows { weights, user, out }),
            Scorer::SparseItemItem(s) => {
                out.fill(0.0);
                for (&i, &w) in user.items.iter().zip(user.weights) {
                    let (idx, val) = s.row(i as usize);
                    for (&j, &v) in idx.iter().zip(val) {
                        out[j as usize] += w * v;
                    }
                }
            }
            Scorer::Factors(f) => dispatch(FactorScores { factors: f, user: user.index, out }),
            Scorer::Blend(parts) => {
                out.fill(0.0);
                let mut part_scores = std::mem::take(scratch);
                part_scores.resize(n, 0.0);
                let mut inner = Vec::new();
                for (weight, part) in parts {
                    part.score_into(user, popularity, &mut part_scores, &mut inner);
                    standardise(&mut part_scores);
                    for (o, p) in out.iter_mut().zip(&part_scores) {
                        *o += weight * p;
                    }
                }
                *scratch = part_scores;
            }
        }
    }
}

/// Dense item-item scores: the sum of the rows of the user's items, weighted.
struct SumOfRows<'a> {
    weights: &'a [f32],
    user: &'a UserView<'a>,
    out: &'a mut [f32],
}

impl pulp::WithSimd for SumOfRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let n = self.out.len();
        self.out.fill(0.0);
        for (&i, &w) in self.user.items.iter().zip(self.user.weights) {
            axpy(simd, w, &self.weights[i as usize * n..(i as usize + 1) * n], self.out);
        }
    }
}

/// Factor scores: the user's factors against every item's.
struct FactorScores<'a> {
    factors: &'a crate::algo::ials::Factors,
    user: usize,
    out: &'a mut [f32],
}

impl pulp::WithSimd for FactorScores<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        self.factors.score_user(simd, self.user, self.out);
    }
}

/// Rescales to mean 0 and standard deviation 1, so parts on different scales mix fairly.
pub(crate) fn standardise(scores: &mut [f32]) {
    if scores.is_empty() {
        return;
    }
    let n = scores.len() as f64;
    let mean = scores.iter().map(|&s| f64::from(s)).sum::<f64>() / n;
    let var = scores.iter().map(|&s| (f64::from(s) - mean).powi(2)).sum::<f64>() / n;
    let scale = if var > 0.0 { 1.0 / var.sqrt() } else { 0.0 };
    for s in scores {
        *s = ((f64::from(*s) - mean) * scale) as f32;
    }
}

/// Scores of the items a user's neighbours reach, for an item-kNN top-N that touches a few
/// thousand entries instead of zeroing, filling and scanning the whole catalog. An item is
/// touched in this query when its stamp equals `generation`, so nothing needs resetting between
/// queries (and a panicking filter cannot leave stale scores behind).
pub(super) struct SparseScores {
    pub(super) scores: Vec<f32>,
    stamp: Vec<u32>,
    pub(super) generation: u32,
    pub(super) touched: Vec<u32>,
}

impl SparseScores {
    pub(super) const fn new() -> Self {
        Self { scores: Vec::new(), stamp: Vec::new(), generation: 0, touched: Vec::new() }
    }

    pub(super) fn begin(&mut self, items: usize) {
        if self.stamp.len() != items {
            self.stamp.clear();
            self.stamp.resize(items, 0);
            self.scores.resize(items, 0.0);
            self.generation = 0;
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.stamp.fill(0);
            self.generation = 1;
        }
        self.touched.clear();
    }

    pub(super) fn is_touched(&self, j: usize) -> bool {
        self.stamp[j] == self.generation
    }

    /// Adds in the order the dense sum does, starting from the same `0.0`, so the scores are
    /// bit-identical to [`Scorer::score_into`]'s.
    #[inline]
    pub(super) fn add(&mut self, j: u32, x: f32) {
        let k = j as usize;
        if self.stamp[k] == self.generation {
            self.scores[k] += x;
        } else {
            self.stamp[k] = self.generation;
            self.scores[k] = 0.0 + x;
            self.touched.push(j);
        }
    }

    /// Marks an item excluded (touched or not).
    pub(super) fn exclude(&mut self, j: u32) {
        let k = j as usize;
        self.stamp[k] = self.generation;
        self.scores[k] = f32::NEG_INFINITY;
    }
}

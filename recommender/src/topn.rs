//! Partial selection of the best `n` scores: a bounded min-heap, so ranking 10,000 items for a
//! top-25 costs one comparison for most items and never sorts the whole catalog.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// An entry that is "greater" when it ranks higher: a higher score, or on equal scores the lower
/// index, so that results are deterministic.
#[derive(Debug, Clone, Copy)]
struct Ranked {
    score: f32,
    index: u32,
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.total_cmp(&other.score).then_with(|| other.index.cmp(&self.index))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked {}

/// Keeps the `n` best `(index, score)` pairs offered.
pub(crate) struct TopN {
    n: usize,
    heap: BinaryHeap<Reverse<Ranked>>,
}

impl TopN {
    pub fn new(n: usize) -> Self {
        Self { n, heap: BinaryHeap::with_capacity(n + 1) }
    }

    /// Whether an item with this score and index would enter the selection now; lets callers skip
    /// costly checks (a caller's filter) for items that would be dropped anyway.
    #[inline]
    pub fn would_accept(&self, score: f32, index: u32) -> bool {
        if self.n == 0 || score.is_nan() {
            return false;
        }
        match self.heap.peek() {
            Some(Reverse(worst)) if self.heap.len() == self.n => Ranked { score, index } > *worst,
            _ => true,
        }
    }

    #[inline]
    pub fn offer(&mut self, score: f32, index: u32) {
        if !self.would_accept(score, index) {
            return;
        }
        if self.heap.len() == self.n {
            self.heap.pop();
        }
        self.heap.push(Reverse(Ranked { score, index }));
    }

    /// The worst score in a full selection (`-inf` until it is full): anything below it cannot
    /// enter, which a caller can check with one comparison.
    #[inline]
    pub fn bar(&self) -> f32 {
        match self.heap.peek() {
            Some(Reverse(worst)) if self.heap.len() == self.n => worst.score,
            _ => f32::NEG_INFINITY,
        }
    }

    /// Best first.
    pub fn into_sorted(self) -> Vec<(u32, f32)> {
        // Sorting `Reverse` ascending puts the highest-ranked entry first.
        self.heap.into_sorted_vec().into_iter().map(|Reverse(r)| (r.index, r.score)).collect()
    }
}

/// The best `n` of `scores` (best first), skipping NaN and `-inf` (the marker for excluded items)
/// and any index `admit` refuses. `admit` is only asked about items that would make the cut.
pub(crate) fn select(scores: &[f32], n: usize, mut admit: impl FnMut(u32) -> bool) -> Vec<(u32, f32)> {
    let mut top = TopN::new(n);
    // Once the selection is full, most items lose to its worst score on one comparison; only
    // those at or above it take the full (tie-aware) path.
    let mut bar = f32::NEG_INFINITY;
    for (i, &s) in scores.iter().enumerate() {
        // `s < bar` is false for NaN, so NaN goes on to `would_accept`, which drops it.
        if s < bar || s == f32::NEG_INFINITY {
            continue;
        }
        let i = i as u32;
        if top.would_accept(s, i) && admit(i) {
            top.offer(s, i);
            bar = top.bar();
        }
    }
    top.into_sorted()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ties_go_to_the_lower_index_and_excluded_items_never_appear() {
        let scores = [1.0, 3.0, f32::NEG_INFINITY, 3.0, f32::NAN, 2.0];
        assert_eq!(select(&scores, 3, |_| true), [(1, 3.0), (3, 3.0), (5, 2.0)]);
        assert_eq!(select(&scores, 10, |i| i != 3), [(1, 3.0), (5, 2.0), (0, 1.0)]);
        assert!(select(&scores, 0, |_| true).is_empty());
    }

    proptest! {
        #[test]
        fn agrees_with_a_full_sort(scores in proptest::collection::vec(-100i32..100, 0..200), n in 0usize..30) {
            let scores: Vec<f32> = scores.into_iter().map(|s| s as f32).collect();
            let mut expected: Vec<(u32, f32)> = scores.iter().enumerate().map(|(i, &s)| (i as u32, s)).collect();
            expected.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            expected.truncate(n);
            prop_assert_eq!(select(&scores, n, |_| true), expected);
        }
    }
}

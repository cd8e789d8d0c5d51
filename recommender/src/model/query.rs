//! The queries the ranking API makes of a model: top-N recommendations, reranking a given list,
//! popular items, and the ranking offline evaluation scores.

use std::cell::RefCell;
use std::fmt;

use super::Model;
use super::kernels::{Scorer, SparseScores, UserView};
use crate::algo::knn::SparseItemItem;
use crate::topn;

/// Options of [`Model::recommend`]. The default excludes items the user has already interacted
/// with and keeps every other item.
#[derive(Clone, Copy)]
pub struct QueryOptions<'a> {
    pub exclude_seen: bool,
    /// Only items for which this returns true are recommended (for example: classes open for
    /// enrolment). It is only asked about items that would otherwise make the cut.
    pub filter: Option<&'a dyn Fn(&str) -> bool>,
}

impl Default for QueryOptions<'_> {
    fn default() -> Self {
        Self { exclude_seen: true, filter: None }
    }
}

impl<'a> QueryOptions<'a> {
    /// Also recommends items the user already has.
    pub fn include_seen(mut self) -> Self {
        self.exclude_seen = false;
        self
    }

    pub fn with_filter(mut self, filter: &'a dyn Fn(&str) -> bool) -> Self {
        self.filter = Some(filter);
        self
    }
}

impl fmt::Debug for QueryOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryOptions")
            .field("exclude_seen", &self.exclude_seen)
            .field("filter", &self.filter.map(|_| "<fn>"))
            .finish()
    }
}

/// The answer to [`Model::recommend`]: item ids with scores, best first. Scores are comparable
/// within one response only.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendations {
    pub items: Vec<(String, f32)>,
    /// False when the user was unknown (or the model is popularity): the items are the popular ones.
    pub personalized: bool,
}

thread_local! {
    /// Per-thread score buffers, so a query does not allocate one per item.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    static SPARSE: RefCell<SparseScores> = const { RefCell::new(SparseScores::new()) };
}

impl Model {
    /// The `n` most popular items (recency-weighted), best first.
    pub fn popular(&self, n: usize) -> Vec<(String, f32)> {
        self.popular_where(n, &[], None)
    }

    fn popular_where(
        &self,
        n: usize,
        seen: &[u32],
        filter: Option<&dyn Fn(&str) -> bool>,
    ) -> Vec<(String, f32)> {
        self.popular_order
            .iter()
            .filter(|&&i| seen.binary_search(&i).is_err())
            .map(|&i| (self.item_ids[i as usize].as_str(), i))
            .filter(|(id, _)| filter.is_none_or(|f| f(id)))
            .take(n)
            .map(|(id, i)| (id.to_owned(), self.popularity[i as usize]))
            .collect()
    }

    /// Runs `f` on every item's score for a known user.
    fn with_scores<T>(&self, u: usize, f: impl FnOnce(&mut [f32]) -> T) -> T {
        SCRATCH.with(|cell| {
            let mut guard = cell.borrow_mut();
            let (scores, scratch) = &mut *guard;
            scores.resize(self.item_ids.len(), 0.0);
            self.scorer.score_into(&self.view(u), &self.popularity, scores, scratch);
            f(scores)
        })
    }

    /// The top `n` items for a user, best first. An unknown user gets the popular items
    /// (`personalized: false`); a known user's already-seen items are left out unless
    /// `opts.exclude_seen` is false.
    pub fn recommend(&self, user_id: &str, n: usize, opts: &QueryOptions<'_>) -> Recommendations {
        let Some(&u) = self.user_index.get(user_id) else {
            return Recommendations { items: self.popular_where(n, &[], opts.filter), personalized: false };
        };
        let view = self.view(u as usize);
        let seen = if opts.exclude_seen { view.items } else { &[] };
        if matches!(self.scorer, Scorer::Popularity) {
            return Recommendations { items: self.popular_where(n, seen, opts.filter), personalized: false };
        }
        let admit = |i: u32| opts.filter.is_none_or(|f| f(&self.item_ids[i as usize]));
        let top = match &self.scorer {
            Scorer::SparseItemItem(knn) => self.sparse_top(knn, &view, seen, n, admit),
            _ => self.with_scores(u as usize, |scores| {
                for &i in seen {
                    scores[i as usize] = f32::NEG_INFINITY;
                }
                topn::select(scores, n, admit)
            }),
        };
        Recommendations {
            items: top.into_iter().map(|(i, s)| (self.item_ids[i as usize].clone(), s)).collect(),
            personalized: true,
        }
    }

    /// Item-kNN's top `n`, equal to a full scan of [`Scorer::score_into`]'s scores (same scores,
    /// same tie order) without one: the items the user's neighbours reach compete on their
    /// scores; every other item scores exactly 0, so only the first `n` of those by index can make
    /// the cut, and they go in the same selection.
    fn sparse_top(
        &self,
        knn: &SparseItemItem,
        user: &UserView<'_>,
        seen: &[u32],
        n: usize,
        mut admit: impl FnMut(u32) -> bool,
    ) -> Vec<(u32, f32)> {
        SPARSE.with(|cell| {
            let mut sparse = cell.borrow_mut();
            sparse.begin(self.item_ids.len());
            for (&i, &w) in user.items.iter().zip(user.weights) {
                let (idx, val) = knn.row(i as usize);
                for (&j, &v) in idx.iter().zip(val) {
                    sparse.add(j, w * v);
                }
            }
            for &i in seen {
                sparse.exclude(i);
            }
            let mut top = topn::TopN::new(n);
            for &j in &sparse.touched {
                let s = sparse.scores[j as usize];
                // `s < bar` is false for NaN, which `would_accept` then drops.
                if s < top.bar() || s == f32::NEG_INFINITY {
                    continue;
                }
                if top.would_accept(s, j) && admit(j) {
                    top.offer(s, j);
                }
            }
            let mut zeros = 0;
            for j in 0..self.item_ids.len() as u32 {
                if zeros == n || !top.would_accept(0.0, j) {
                    break; // later indices score the same and lose the tie
                }
                if !sparse.is_touched(j as usize) && admit(j) {
                    top.offer(0.0, j);
                    zeros += 1;
                }
            }
            top.into_sorted()
        })
    }

    /// Orders the given items for a user, best first. Items the model does not know keep their
    /// input order at the end with no score, as Personalize does; a repeated item is kept once.
    /// An unknown user's list is ordered by popularity.
    pub fn rerank(&self, user_id: &str, items: &[&str]) -> Vec<(String, Option<f32>)> {
        let mut known: Vec<(usize, u32)> = Vec::with_capacity(items.len());
        let mut unknown: Vec<&str> = Vec::new();
        let mut listed = std::collections::HashSet::with_capacity(items.len());
        for (pos, id) in items.iter().enumerate() {
            if !listed.insert(*id) {
                continue;
            }
            match self.item_index.get(*id) {
                Some(&i) => known.push((pos, i)),
                None => unknown.push(id),
            }
        }
        let score_known = |scores: &[f32]| -> Vec<(usize, u32, f32)> {
            let mut scored: Vec<(usize, u32, f32)> =
                known.iter().map(|&(pos, i)| (pos, i, scores[i as usize])).collect();
            scored.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
            scored
        };
        let scored = match self.user_index.get(user_id) {
            Some(&u) if !matches!(self.scorer, Scorer::Popularity) => {
                self.with_scores(u as usize, |s| score_known(s))
            }
            _ => score_known(&self.popularity),
        };
        scored
            .into_iter()
            .map(|(_, i, s)| (self.item_ids[i as usize].clone(), Some(s)))
            .chain(unknown.into_iter().map(|id| (id.to_owned(), None)))
            .collect()
    }

    /// The indices of a known user's top `n` unseen items, best first, for evaluation; `None`
    /// for a user the model does not know.
    pub(crate) fn rank_for_evaluation(&self, user_id: &str, n: usize) -> Option<Vec<u32>> {
        let u = *self.user_index.get(user_id)? as usize;
        let seen = self.view(u).items;
        Some(self.with_scores(u, |scores| {
            for &i in seen {
                scores[i as usize] = f32::NEG_INFINITY;
            }
            topn::select(scores, n, |_| true).into_iter().map(|(i, _)| i).collect()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelSpec;
    use crate::synthetic::{SyntheticSpec, generate};
    use crate::train::{TrainConfig, train};

    fn knn_model(items: usize, neighbours: usize) -> Model {
        let rows = generate(&SyntheticSpec {
            users: 300,
            items,
            min_per_user: 1,
            max_per_user: 12,
            seed: 5,
            ..SyntheticSpec::default()
        });
        let config = TrainConfig {
            model: Some(ModelSpec::ItemKnn { neighbours, shrink: 10.0 }),
            trained_at: Some(1_767_225_600),
            ..TrainConfig::default()
        };
        train(rows, &config).unwrap()
    }

    /// The full scan the sparse path replaces.
    fn dense_top(model: &Model, user: &str, n: usize, admit: impl FnMut(u32) -> bool) -> Vec<(u32, f32)> {
        let u = model.user_index[user] as usize;
        model.with_scores(u, |scores| {
            for &i in model.view(u).items {
                scores[i as usize] = f32::NEG_INFINITY;
            }
            topn::select(scores, n, admit)
        })
    }

    #[test]
    fn item_knn_top_n_equals_the_full_scan_bit_for_bit() {
        // Few neighbours on a large catalog: most items score 0, so the zero-score fill and its
        // tie order matter; many neighbours: most items are reached.
        for (items, neighbours) in [(400, 3), (60, 50)] {
            let model = knn_model(items, neighbours);
            let Scorer::SparseItemItem(knn) = &model.scorer else { panic!("item-knn was forced") };
            for user in model.user_ids.iter().take(120) {
                let u = model.user_index[user] as usize;
                let view = model.view(u);
                for n in [0, 1, 7, 25, items] {
                    let odd = |i: u32| i % 3 != 1;
                    assert_eq!(
                        model.sparse_top(knn, &view, view.items, n, |_| true),
                        dense_top(&model, user, n, |_| true),
                        "{items} items, {neighbours} neighbours, {user}, n {n}"
                    );
                    assert_eq!(
                        model.sparse_top(knn, &view, view.items, n, odd),
                        dense_top(&model, user, n, odd),
                        "filtered: {items} items, {neighbours} neighbours, {user}, n {n}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_sparse_scratch_survives_a_catalog_change_and_generation_wrap() {
        let small = knn_model(60, 5);
        let large = knn_model(400, 5);
        let user = &large.user_ids[0];
        let expected = dense_top(&large, user, 25, |_| true);
        let got = |m: &Model| m.recommend(user, 25, &QueryOptions::default());
        let _ = got(&small);
        SPARSE.with(|c| c.borrow_mut().generation = u32::MAX - 1);
        for _ in 0..3 {
            let ids: Vec<u32> = got(&large).items.iter().map(|(id, _)| large.item_index[id]).collect();
            assert_eq!(ids, expected.iter().map(|&(i, _)| i).collect::<Vec<_>>());
        }
    }
}

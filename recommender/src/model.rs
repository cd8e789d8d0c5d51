//! A trained model and the queries the ranking API makes of it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::algo::ials::IalsParams;
use crate::algo::knn::SparseItemItem;
use pulp::Simd;

use crate::algo::vector::{axpy, dispatch};
use crate::topn;

/// Which model, with the settings it was fitted with. Also what [`TrainConfig`](crate::TrainConfig)
/// forces and what the selection records for each candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "kebab-case")]
pub enum ModelSpec {
    /// Most interacted-with items, decayed by age with this half-life (`None`: no decay).
    Popularity { half_life_days: Option<f64> },
    /// Item-kNN with shrunk cosine similarity; sparse, linear memory in the catalog.
    ItemKnn { neighbours: usize, shrink: f32 },
    /// EASE with L2 penalty `lambda`; a dense items × items matrix.
    Ease { lambda: f64 },
    /// Implicit ALS; linear memory in users + items.
    Ials(IalsParams),
    /// EASE and iALS scores, each standardised per user, mixed as
    /// `ease_weight × ease + (1 - ease_weight) × ials`.
    #[serde(rename = "ease+ials")]
    EaseIals { lambda: f64, ials: IalsParams, ease_weight: f32 },
}

impl ModelSpec {
    /// The short name used in `evaluate` output and in [`ModelInfo::model`].
    pub fn name(&self) -> &'static str {
        match self {
            ModelSpec::Popularity { .. } => "popularity",
            ModelSpec::ItemKnn { .. } => "item-knn",
            ModelSpec::Ease { .. } => "ease",
            ModelSpec::Ials(_) => "ials",
            ModelSpec::EaseIals { .. } => "ease+ials",
        }
    }

    pub fn is_personalized(&self) -> bool {
        !matches!(self, ModelSpec::Popularity { .. })
    }

    /// Whether the model holds a dense items × items matrix (bounded by the memory budget).
    pub fn is_dense(&self) -> bool {
        matches!(self, ModelSpec::Ease { .. } | ModelSpec::EaseIals { .. })
    }
}

/// How one candidate did on the time-held-out validation slice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateFigures {
    pub spec: ModelSpec,
    #[serde(rename = "ndcg@10")]
    pub ndcg_at_10: f64,
    #[serde(rename = "recall@20")]
    pub recall_at_20: f64,
    pub fit_seconds: f64,
}

/// How the model was chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// `"forced"` when the configuration named the model, `"time-held-out validation"` otherwise,
    /// `"default (too little data to validate)"` when no user had enough history to hold some out.
    pub method: String,
    /// Share of each user's most recent interactions held out for validation.
    pub holdout_fraction: f64,
    /// Users with at least one held-out interaction.
    pub validation_users: usize,
    /// Every candidate tried, best first; empty when forced.
    pub candidates: Vec<CandidateFigures>,
    /// Why some models were not tried (for example the memory budget).
    pub skipped: Vec<String>,
}

/// What a model is and how it came to be; stored in the model file and shown by the CLI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// `<trained-at UTC>-<data fingerprint>`, e.g. `20261122T042100Z-3fa9c2d1e0b4`; sorts by time.
    pub version: String,
    /// Short name of the chosen model (`ease`, `ials`, `ease+ials`, `item-knn`, `popularity`).
    pub model: String,
    pub spec: ModelSpec,
    pub selection: Selection,
    pub users: usize,
    pub items: usize,
    /// Distinct (user, item) pairs after weighting and deduplication.
    pub interactions: usize,
    /// Rows read from the input, before deduplication.
    pub rows: u64,
    /// Epoch seconds.
    pub trained_at: i64,
    /// Oldest and newest interaction, epoch seconds.
    pub data_from: Option<i64>,
    pub data_to: Option<i64>,
    /// Wall time of the whole `train` call, selection included.
    pub fit_seconds: f64,
    pub event_weights: std::collections::BTreeMap<String, f32>,
    pub default_event_weight: f32,
    pub data_fingerprint: String,
}

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

/// A trained model: cheap to query from many threads (`&self` only), loaded from a model file or
/// made by [`train`](crate::train).
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub(crate) info: ModelInfo,
    pub(crate) item_ids: Vec<String>,
    pub(crate) user_ids: Vec<String>,
    /// Per user, the items seen (sorted) and their weights: needed to exclude them and to score
    /// item-item models.
    pub(crate) history_ptr: Vec<u32>,
    pub(crate) history_items: Vec<u32>,
    pub(crate) history_weights: Vec<f32>,
    pub(crate) popularity: Vec<f32>,
    pub(crate) scorer: Scorer,
    // Derived on construction, never stored.
    pub(crate) item_index: HashMap<String, u32>,
    pub(crate) user_index: HashMap<String, u32>,
    pub(crate) popular_order: Vec<u32>,
}

thread_local! {
    /// Per-thread score buffers, so a query does not allocate one per item.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    static SPARSE: RefCell<SparseScores> = const { RefCell::new(SparseScores::new()) };
}

/// Scores of the items a user's neighbours reach, for an item-kNN top-N that touches a few
/// thousand entries instead of zeroing, filling and scanning the whole catalog. An item is
/// touched in this query when its stamp equals `generation`, so nothing needs resetting between
/// queries (and a panicking filter cannot leave stale scores behind).
struct SparseScores {
    scores: Vec<f32>,
    stamp: Vec<u32>,
    generation: u32,
    touched: Vec<u32>,
}

impl SparseScores {
    const fn new() -> Self {
        Self { scores: Vec::new(), stamp: Vec::new(), generation: 0, touched: Vec::new() }
    }

    fn begin(&mut self, items: usize) {
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

    fn is_touched(&self, j: usize) -> bool {
        self.stamp[j] == self.generation
    }

    /// Adds in the order the dense sum does, starting from the same `0.0`, so the scores are
    /// bit-identical to [`Scorer::score_into`]'s.
    #[inline]
    fn add(&mut self, j: u32, x: f32) {
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
    fn exclude(&mut self, j: u32) {
        let k = j as usize;
        self.stamp[k] = self.generation;
        self.scores[k] = f32::NEG_INFINITY;
    }
}

impl Model {
    /// Assembles a model and derives its lookup tables.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn assemble(
        info: ModelInfo,
        item_ids: Vec<String>,
        user_ids: Vec<String>,
        history_ptr: Vec<u32>,
        history_items: Vec<u32>,
        history_weights: Vec<f32>,
        popularity: Vec<f32>,
        scorer: Scorer,
    ) -> Self {
        let item_index = item_ids.iter().enumerate().map(|(i, id)| (id.clone(), i as u32)).collect();
        let user_index = user_ids.iter().enumerate().map(|(i, id)| (id.clone(), i as u32)).collect();
        let mut popular_order: Vec<u32> = (0..item_ids.len() as u32).collect();
        popular_order
            .sort_by(|&a, &b| popularity[b as usize].total_cmp(&popularity[a as usize]).then(a.cmp(&b)));
        Self {
            info,
            item_ids,
            user_ids,
            history_ptr,
            history_items,
            history_weights,
            popularity,
            scorer,
            item_index,
            user_index,
            popular_order,
        }
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn knows_user(&self, user_id: &str) -> bool {
        self.user_index.contains_key(user_id)
    }

    pub fn knows_item(&self, item_id: &str) -> bool {
        self.item_index.contains_key(item_id)
    }

    pub fn n_items(&self) -> usize {
        self.item_ids.len()
    }

    pub fn n_users(&self) -> usize {
        self.user_ids.len()
    }

    /// The items a known user interacted with in the training data (empty for unknown users).
    pub fn history(&self, user_id: &str) -> Vec<&str> {
        self.user_index.get(user_id).map_or_else(Vec::new, |&u| {
            self.view(u as usize).items.iter().map(|&i| self.item_ids[i as usize].as_str()).collect()
        })
    }

    fn view(&self, u: usize) -> UserView<'_> {
        let r = self.history_ptr[u] as usize..self.history_ptr[u + 1] as usize;
        UserView { index: u, items: &self.history_items[r.clone()], weights: &self.history_weights[r] }
    }

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

    /// Scores of every item for a known user, in item order, for evaluation.
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

    pub(crate) fn item_position(&self, item_id: &str) -> Option<u32> {
        self.item_index.get(item_id).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

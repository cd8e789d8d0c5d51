//! Training: weight and deduplicate the interactions, pick a model on a time-held-out slice,
//! refit it on everything.

use std::collections::BTreeMap;
use std::time::Instant;

use schemas::EventType;

use crate::algo::ials::IalsParams;
use crate::algo::{ease, ials, knn, popularity, sparse_ease};
use crate::data::Dataset;
use crate::input::InteractionRow;
use crate::metrics;
use crate::model::{CandidateFigures, Model, ModelInfo, ModelSpec, Scorer, Selection, UserView};
use crate::topn;

/// Default memory budget for fitting: 1 GiB. Dense EASE needs 24 × items² bytes at its peak,
/// so it runs up to 6,688 items; larger catalogs use the sparse/linear models.
pub const DEFAULT_MEMORY_BUDGET_BYTES: u64 = 1 << 30;

/// Environment variable read by [`TrainConfig::default`] for the memory budget, in MiB.
pub const MEMORY_BUDGET_ENV: &str = "RECOMMENDER_MEMORY_BUDGET_MB";

/// How to train.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Weight of each EVENT_TYPE. A pair's weight is the largest of its events' weights;
    /// a weight of 0 ignores that event type.
    pub event_weights: BTreeMap<String, f32>,
    /// Weight of event types not listed above.
    pub default_event_weight: f32,
    /// Rows whose EVENT_VALUE is below this are ignored (as Personalize's event value threshold).
    pub min_event_value: Option<f32>,
    /// `None`: choose on validation. `Some(spec)`: fit exactly this model.
    pub model: Option<ModelSpec>,
    pub seed: u64,
    /// Peak bytes a dense model may take while fitting; see [`DEFAULT_MEMORY_BUDGET_BYTES`].
    pub memory_budget_bytes: u64,
    /// Threads for iALS; 0 means all available cores.
    pub threads: usize,
    /// Share of each user's most recent interactions held out to choose the model.
    pub holdout_fraction: f64,
    /// EASE penalties tried during selection.
    pub ease_lambdas: Vec<f64>,
    /// Mixing weights of EASE in the EASE+iALS blend tried during selection.
    pub blend_ease_weights: Vec<f32>,
    pub ials: IalsParams,
    pub knn_neighbours: usize,
    pub knn_shrink: f32,
    /// Neighbours per item of sparse EASE, the EASE of catalogs over the dense memory line.
    pub sparse_ease_neighbours: usize,
    pub popularity_half_life_days: Option<f64>,
    /// Epoch seconds to stamp the model with; `None` uses the clock. Fixed in tests so that two
    /// trainings of the same data give the same bytes.
    pub trained_at: Option<i64>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        let memory_budget_bytes = std::env::var(MEMORY_BUDGET_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(DEFAULT_MEMORY_BUDGET_BYTES, |mb| mb << 20);
        Self {
            event_weights: BTreeMap::from([
                (EventType::ENROLLED.to_owned(), 1.0),
                (EventType::SUBMITTED_ASSIGNMENT.to_owned(), 0.5),
            ]),
            default_event_weight: 1.0,
            min_event_value: None,
            model: None,
            seed: 42,
            memory_budget_bytes,
            threads: 0,
            holdout_fraction: 0.2,
            ease_lambdas: vec![100.0, 300.0, 900.0],
            blend_ease_weights: vec![0.3, 0.5, 0.7],
            ials: IalsParams::default(),
            knn_neighbours: 100,
            knn_shrink: 10.0,
            sparse_ease_neighbours: 200,
            popularity_half_life_days: Some(60.0),
            trained_at: None,
        }
    }
}

impl TrainConfig {
    pub fn weight_of(&self, event_type: &str) -> f32 {
        self.event_weights.get(event_type).copied().unwrap_or(self.default_event_weight)
    }

    fn threads(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Input(#[from] crate::input::InputError),
    #[error("no interactions to train on (after event weights and the event value threshold)")]
    NoInteractions,
    #[error(
        "{model} needs about {needed_mib} MiB for {items} items, over the memory budget of {budget_mib} MiB \
         (set {MEMORY_BUDGET_ENV} or choose item-knn / ials)"
    )]
    OverMemoryBudget { model: &'static str, items: usize, needed_mib: u64, budget_mib: u64 },
    #[error("EASE failed: {0}")]
    Ease(#[from] ease::NotPositiveDefinite),
    #[error("{0}")]
    SparseEase(sparse_ease::SparseEaseError),
    #[error("{0} is too large for this model format (more than 4 billion)")]
    TooLarge(&'static str),
}

/// Trains a model on interaction rows. With `config.model == None` every candidate that fits the
/// memory budget is fitted on all but each user's most recent interactions, scored by NDCG@10 on
/// those, and the best is refitted on everything; the figures are kept in [`ModelInfo::selection`].
pub fn train(
    rows: impl IntoIterator<Item = InteractionRow>,
    config: &TrainConfig,
) -> Result<Model, TrainError> {
    try_train(rows.into_iter().map(Ok), config)
}

/// As [`train`], for a stream that can fail (the readers in [`crate::input`]).
pub fn try_train(
    rows: impl IntoIterator<Item = Result<InteractionRow, crate::input::InputError>>,
    config: &TrainConfig,
) -> Result<Model, TrainError> {
    let started = Instant::now();
    let mut count = 0u64;
    let mut error = None;
    let events = rows.into_iter().map_while(|row| match row {
        Ok(r) => Some(r),
        Err(e) => {
            error = Some(e);
            None
        }
    });
    let events = events
        .inspect(|_| count += 1)
        .filter(|r| match (config.min_event_value, r.event_value) {
            (Some(min), Some(v)) => v >= min,
            _ => true,
        })
        .map(|r| {
            let w = config.weight_of(&r.event_type);
            (r.user_id, r.item_id, w, r.timestamp)
        });
    let data = Dataset::from_events(events);
    if let Some(e) = error {
        return Err(e.into());
    }
    fit_dataset(&data, count, config, started)
}

pub(crate) fn fit_dataset(
    data: &Dataset,
    rows: u64,
    config: &TrainConfig,
    started: Instant,
) -> Result<Model, TrainError> {
    if data.n_entries() == 0 {
        return Err(TrainError::NoInteractions);
    }
    if data.n_entries() > u32::MAX as usize {
        return Err(TrainError::TooLarge("the number of interactions"));
    }
    let (spec, selection) = match &config.model {
        Some(spec) => {
            check_budget(spec, data.n_items(), config.memory_budget_bytes)?;
            let selection = Selection {
                method: "forced".into(),
                holdout_fraction: 0.0,
                validation_users: 0,
                candidates: Vec::new(),
                skipped: Vec::new(),
            };
            (spec.clone(), selection)
        }
        None => select(data, config)?,
    };
    let scorer = fit_spec(&spec, data, config)?;
    let trained_at = config.trained_at.unwrap_or_else(now_epoch_seconds);
    let fingerprint = data.fingerprint();
    let (data_from, data_to) = data.time_range().unzip();
    let info = ModelInfo {
        version: version_name(trained_at, &fingerprint),
        model: spec.name().into(),
        spec: spec.clone(),
        selection,
        users: data.n_users(),
        items: data.n_items(),
        interactions: data.n_entries(),
        rows,
        trained_at,
        data_from,
        data_to,
        fit_seconds: started.elapsed().as_secs_f64(),
        event_weights: config.event_weights.clone(),
        default_event_weight: config.default_event_weight,
        data_fingerprint: fingerprint,
    };
    let popularity = popularity::fit(data, config.popularity_half_life_days);
    Ok(Model::assemble(
        info,
        data.item_ids.clone(),
        data.user_ids.clone(),
        data.user_ptr.iter().map(|&p| p as u32).collect(),
        data.items.clone(),
        data.weights.clone(),
        popularity,
        scorer,
    ))
}

fn now_epoch_seconds() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// `20261122T042100Z-3fa9c2d1e0b4`: sorts by training time, and the suffix tells whether two
/// versions were trained on the same data.
fn version_name(trained_at: i64, fingerprint: &str) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(trained_at).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z-{}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        &fingerprint[..12]
    )
}

fn dense_bytes(spec: &ModelSpec, items: usize) -> Option<u64> {
    spec.is_dense().then(|| ease::bytes_needed(items))
}

fn check_budget(spec: &ModelSpec, items: usize, budget: u64) -> Result<(), TrainError> {
    match dense_bytes(spec, items) {
        Some(needed) if needed > budget => Err(TrainError::OverMemoryBudget {
            model: spec.name(),
            items,
            needed_mib: needed >> 20,
            budget_mib: budget >> 20,
        }),
        _ => Ok(()),
    }
}

/// Fits one model on `data`.
pub(crate) fn fit_spec(spec: &ModelSpec, data: &Dataset, config: &TrainConfig) -> Result<Scorer, TrainError> {
    Ok(match spec {
        ModelSpec::Popularity { .. } => Scorer::Popularity,
        ModelSpec::ItemKnn { neighbours, shrink } => {
            Scorer::SparseItemItem(knn::fit(data, *neighbours, *shrink))
        }
        ModelSpec::Ease { lambda } => {
            Scorer::DenseItemItem { weights: ease::fit(data, *lambda, config.threads())? }
        }
        ModelSpec::SparseEase { lambda, neighbours } => Scorer::SparseItemItem(
            sparse_ease::fit(data, *lambda, *neighbours, config.threads(), config.memory_budget_bytes)
                .map_err(|e| match e {
                    sparse_ease::SparseEaseError::OverMemoryBudget { items, needed_mib, budget_mib } => {
                        TrainError::OverMemoryBudget { model: "sparse-ease", items, needed_mib, budget_mib }
                    }
                    other => TrainError::SparseEase(other),
                })?,
        ),
        ModelSpec::Ials(p) => Scorer::Factors(ials::fit(data, p, config.seed, config.threads())),
        ModelSpec::EaseIals { lambda, ials: p, ease_weight } => Scorer::Blend(vec![
            (*ease_weight, Scorer::DenseItemItem { weights: ease::fit(data, *lambda, config.threads())? }),
            (1.0 - *ease_weight, Scorer::Factors(ials::fit(data, p, config.seed, config.threads()))),
        ]),
    })
}

/// Splits off each user's most recent interactions: `round(fraction × n)` of them, for users with
/// at least three (so that every validated user keeps at least two to learn from). Ties in time
/// break by item number, so the split is deterministic.
pub(crate) fn time_holdout(data: &Dataset, fraction: f64) -> (Dataset, Vec<Vec<u32>>) {
    let mut held = vec![false; data.n_entries()];
    let mut heldout = vec![Vec::new(); data.n_users()];
    for (u, held_items) in heldout.iter_mut().enumerate() {
        let start = data.user_ptr[u];
        let times = data.user_times(u);
        let n = times.len();
        let k = ((n as f64) * fraction).round() as usize;
        if n < 3 || k == 0 {
            continue;
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&e| (std::cmp::Reverse(times[e]), std::cmp::Reverse(data.items[start + e])));
        for &e in &order[..k.min(n - 2)] {
            held[start + e] = true;
            held_items.push(data.items[start + e]);
        }
        held_items.sort_unstable();
    }
    let train = data.filter(|_, e| !held[e]);
    (train, heldout)
}

/// NDCG@10 and Recall@20 of a scorer over the users that have held-out items.
pub(crate) fn validate(
    scorer: &Scorer,
    train: &Dataset,
    popularity: &[f32],
    heldout: &[Vec<u32>],
) -> (f64, f64) {
    let mut scores = vec![0f32; train.n_items()];
    let mut scratch = Vec::new();
    let (mut ndcg, mut recall, mut users) = (0.0, 0.0, 0usize);
    for (u, relevant) in heldout.iter().enumerate() {
        if relevant.is_empty() {
            continue;
        }
        let row = train.user(u);
        let view = UserView { index: u, items: row.idx, weights: row.weights };
        scorer.score_into(&view, popularity, &mut scores, &mut scratch);
        for &i in row.idx {
            scores[i as usize] = f32::NEG_INFINITY;
        }
        let ranked: Vec<u32> = topn::select(&scores, 20, |_| true).into_iter().map(|(i, _)| i).collect();
        let is_relevant = |i: &u32| relevant.binary_search(i).is_ok();
        ndcg += metrics::ndcg_at_k(&ranked, relevant.len(), 10, is_relevant);
        recall += metrics::recall_at_k(&ranked, relevant.len(), 20, is_relevant);
        users += 1;
    }
    if users == 0 { (0.0, 0.0) } else { (ndcg / users as f64, recall / users as f64) }
}

/// Tries every candidate on the time-held-out slice and returns the best.
fn select(data: &Dataset, config: &TrainConfig) -> Result<(ModelSpec, Selection), TrainError> {
    let (train, heldout) = time_holdout(data, config.holdout_fraction);
    let validation_users = heldout.iter().filter(|h| !h.is_empty()).count();
    let mut skipped = Vec::new();
    let dense_ok = ease::bytes_needed(data.n_items()) <= config.memory_budget_bytes;
    if !dense_ok {
        skipped.push(format!(
            "ease and ease+ials: {} items need {} MiB, over the {} MiB budget",
            data.n_items(),
            ease::bytes_needed(data.n_items()) >> 20,
            config.memory_budget_bytes >> 20
        ));
    }
    let popularity_spec = ModelSpec::Popularity { half_life_days: config.popularity_half_life_days };
    let knn_spec = ModelSpec::ItemKnn { neighbours: config.knn_neighbours, shrink: config.knn_shrink };
    let ials_spec = ModelSpec::Ials(config.ials.clone());
    let default_spec = if dense_ok {
        ModelSpec::Ease { lambda: config.ease_lambdas.first().copied().unwrap_or(300.0) }
    } else {
        knn_spec.clone()
    };
    if validation_users == 0 {
        let selection = Selection {
            method: "default (too little data to validate)".into(),
            holdout_fraction: config.holdout_fraction,
            validation_users,
            candidates: Vec::new(),
            skipped,
        };
        return Ok((default_spec, selection));
    }

    let popularity = popularity::fit(&train, config.popularity_half_life_days);
    let mut candidates: Vec<CandidateFigures> = Vec::new();
    let mut try_candidate = |spec: &ModelSpec| -> Result<(Scorer, f64), TrainError> {
        let t = Instant::now();
        let scorer = fit_spec(spec, &train, config)?;
        let fit_seconds = t.elapsed().as_secs_f64();
        let (ndcg_at_10, recall_at_20) = validate(&scorer, &train, &popularity, &heldout);
        candidates.push(CandidateFigures { spec: spec.clone(), ndcg_at_10, recall_at_20, fit_seconds });
        Ok((scorer, ndcg_at_10))
    };
    try_candidate(&popularity_spec)?;
    try_candidate(&knn_spec)?;
    let (ials_scorer, _) = try_candidate(&ials_spec)?;
    if !dense_ok {
        // Past the dense line, EASE's regression over each item's neighbourhood instead.
        let lambda = config.ease_lambdas.get(config.ease_lambdas.len() / 2).copied().unwrap_or(300.0);
        let spec = ModelSpec::SparseEase { lambda, neighbours: config.sparse_ease_neighbours };
        match try_candidate(&spec) {
            Err(e @ TrainError::OverMemoryBudget { .. }) => skipped.push(e.to_string()),
            other => drop(other?),
        }
    }
    let mut best_ease: Option<(f64, f64, Scorer)> = None;
    if dense_ok {
        for &lambda in &config.ease_lambdas {
            let (scorer, ndcg) = try_candidate(&ModelSpec::Ease { lambda })?;
            if best_ease.as_ref().is_none_or(|b| ndcg > b.0) {
                best_ease = Some((ndcg, lambda, scorer));
            }
        }
    }
    // The blend reuses the fitted parts: mixing is cheap, refitting is not.
    if let Some((_, lambda, ease_scorer)) = best_ease {
        let parts_fit_seconds: f64 = candidates
            .iter()
            .filter(|c| c.spec == ModelSpec::Ease { lambda } || c.spec == ials_spec)
            .map(|c| c.fit_seconds)
            .sum();
        let mut blend = Scorer::Blend(vec![(0.0, ease_scorer), (0.0, ials_scorer)]);
        for &ease_weight in &config.blend_ease_weights {
            if let Scorer::Blend(parts) = &mut blend {
                parts[0].0 = ease_weight;
                parts[1].0 = 1.0 - ease_weight;
            }
            let (ndcg_at_10, recall_at_20) = validate(&blend, &train, &popularity, &heldout);
            candidates.push(CandidateFigures {
                spec: ModelSpec::EaseIals { lambda, ials: config.ials.clone(), ease_weight },
                ndcg_at_10,
                recall_at_20,
                fit_seconds: parts_fit_seconds,
            });
        }
    }
    // Best NDCG@10 first; on a tie the earlier (simpler, cheaper) candidate wins.
    candidates.sort_by(|a, b| b.ndcg_at_10.total_cmp(&a.ndcg_at_10));
    let chosen = candidates[0].spec.clone();
    let selection = Selection {
        method: "time-held-out validation".into(),
        holdout_fraction: config.holdout_fraction,
        validation_users,
        candidates,
        skipped,
    };
    Ok((chosen, selection))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_out_the_most_recent_fifth_of_each_long_enough_history() {
        let mut events = Vec::new();
        for t in 0..10 {
            events.push(("long".to_string(), format!("i{t}"), 1.0, t));
        }
        events.push(("short".to_string(), "i0".to_string(), 1.0, 5));
        events.push(("short".to_string(), "i1".to_string(), 1.0, 6));
        let data = Dataset::from_events(events);
        let (train, heldout) = time_holdout(&data, 0.2);
        let long = data.user_ids.iter().position(|u| u == "long").unwrap();
        let names: Vec<&str> = heldout[long].iter().map(|&i| data.item_ids[i as usize].as_str()).collect();
        assert_eq!(names, ["i8", "i9"]);
        assert_eq!(train.user(long).idx.len(), 8);
        let short = data.user_ids.iter().position(|u| u == "short").unwrap();
        assert!(heldout[short].is_empty());
        assert_eq!(train.user(short).idx.len(), 2);
    }

    #[test]
    fn past_the_dense_line_sparse_ease_is_a_candidate_within_the_budget() {
        use crate::synthetic::{SyntheticSpec, generate};
        let rows = generate(&SyntheticSpec {
            users: 400,
            items: 300,
            min_per_user: 3,
            max_per_user: 10,
            seed: 3,
            ..SyntheticSpec::default()
        });
        // 288 of the items are taken. Dense EASE needs 24 × 288² bytes (2.0 MB); 1.9 MB holds
        // sparse EASE's 200 neighbours per item (0.9 MB), two threads' 200 × 200 systems (0.6 MB)
        // and these co-occurrences (about 0.15 MB).
        let config = TrainConfig {
            memory_budget_bytes: 1_900_000,
            threads: 2,
            ials: IalsParams { factors: 8, iterations: 3, ..IalsParams::default() },
            trained_at: Some(1_767_225_600),
            ..TrainConfig::default()
        };
        let model = crate::train(rows, &config).unwrap();
        let selection = &model.info().selection;
        assert!(
            selection.skipped.len() == 1 && selection.skipped[0].starts_with("ease and ease+ials"),
            "{:?}",
            selection.skipped
        );
        let names: Vec<&str> = selection.candidates.iter().map(|c| c.spec.name()).collect();
        assert!(names.contains(&"sparse-ease"), "{names:?}");
        assert!(selection.candidates.iter().all(|c| !c.spec.is_dense()));
    }

    #[test]
    fn version_names_sort_by_time() {
        assert_eq!(version_name(1_767_225_600, "0123456789abcdef"), "20260101T000000Z-0123456789ab");
    }
}

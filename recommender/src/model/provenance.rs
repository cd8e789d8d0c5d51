//! What a model is and how it came to be: the spec it was fitted with, how it was chosen, and
//! the figures stored beside it in the model file.

use serde::{Deserialize, Serialize};

use crate::algo::ials::IalsParams;

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
    /// EASE's regression restricted to each item's `neighbours` most similar items; sparse,
    /// memory linear in the co-occurrences and the catalog.
    SparseEase { lambda: f64, neighbours: usize },
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
            ModelSpec::SparseEase { .. } => "sparse-ease",
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

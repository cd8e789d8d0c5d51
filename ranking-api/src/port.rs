//! The `Recommender` port: what the API needs from any backend, whatever it is.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use schemas::{ItemId, UserId};
use serde::Serialize;
use utoipa::ToSchema;

/// One recommended or reranked item. Scores are comparable within one response.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScoredItem {
    #[schema(value_type = String, example = "math-201")]
    pub item_id: ItemId,
    /// Higher is better. Absent when the backend gives no score.
    #[schema(example = 0.0731)]
    pub score: Option<f64>,
}

/// "Recommend items for this user."
#[derive(Debug, Clone, PartialEq)]
pub struct RecommendRequest {
    pub user_id: UserId,
    pub num_results: usize,
    /// A filter already resolved from its configured name.
    pub filter: Option<ResolvedFilter>,
    pub context: BTreeMap<String, String>,
}

/// "Order these items for this user."
#[derive(Debug, Clone, PartialEq)]
pub struct RerankRequest {
    pub user_id: UserId,
    /// Distinct ids, in the order the caller gave them.
    pub items: Vec<ItemId>,
    pub filter: Option<ResolvedFilter>,
    pub context: BTreeMap<String, String>,
}

/// A filter the request named, with the Personalize ARN configuration maps it to.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedFilter {
    pub name: String,
    pub arn: String,
    pub values: BTreeMap<String, String>,
}

/// What a backend answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    pub items: Vec<ScoredItem>,
    pub recommendation_id: Option<String>,
}

/// Which backend answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Personalize,
    Embedded,
    Fallback,
}

/// Why the fallback answered instead of the configured backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FallbackReason {
    /// Personalize answered with throttling.
    Throttled,
    /// Personalize answered with a 5xx or could not be reached.
    BackendError,
    /// Personalize did not answer within the client timeout.
    Timeout,
    /// The campaign (or recommender) does not exist.
    CampaignNotFound,
    /// No backend is configured for this kind of request.
    NotConfigured,
    /// The backend has no model yet.
    NoModel,
    /// The user has no history the backend knows.
    UnknownUser,
}

impl fmt::Display for FallbackReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            FallbackReason::Throttled => "throttled",
            FallbackReason::BackendError => "backend_error",
            FallbackReason::Timeout => "timeout",
            FallbackReason::CampaignNotFound => "campaign_not_found",
            FallbackReason::NotConfigured => "not_configured",
            FallbackReason::NoModel => "no_model",
            FallbackReason::UnknownUser => "unknown_user",
        };
        f.write_str(text)
    }
}

/// Why a backend could not answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackendError {
    /// The backend cannot answer now; the fallback should.
    #[error("{reason}: {detail}")]
    Unavailable { reason: FallbackReason, detail: String },
    /// The backend refused the request itself (Personalize `InvalidInputException`).
    #[error("the recommender refused the request: {0}")]
    InvalidInput(String),
}

impl BackendError {
    pub fn unavailable(reason: FallbackReason, detail: impl Into<String>) -> Self {
        BackendError::Unavailable { reason, detail: detail.into() }
    }
}

/// The port. Personalize in AWS, the embedded recommender locally.
#[async_trait]
pub trait Recommender: Send + Sync {
    /// Which source this backend reports in responses.
    fn source(&self) -> Source;

    async fn recommend(&self, request: &RecommendRequest) -> Result<Ranked, BackendError>;

    async fn rerank(&self, request: &RerankRequest) -> Result<Ranked, BackendError>;

    /// Whether this backend has what it needs to answer right now. Personalize always may
    /// (whether it does is only known by asking); the embedded recommender needs a model.
    fn is_ready(&self) -> bool {
        true
    }
}

/// Popular items held in memory: the answer of last resort.
pub trait Fallback: Send + Sync {
    /// The `n` most popular items, minus what `user` already has when that is known.
    /// `None` when there is no data to answer from at all.
    fn popular(&self, user: &UserId, n: usize) -> Option<Vec<ScoredItem>>;

    /// `items` ordered by popularity; items without data keep their order at the end.
    fn rerank(&self, items: &[ItemId]) -> Option<Vec<ScoredItem>>;

    /// Whether `popular` has data to answer from right now. It is false for a moment after
    /// a local start (the store's popularity loads in the background) and in a deployment
    /// without a model; `/health` reports it so that callers can tell.
    fn has_data(&self) -> bool;

    /// Why there is no data, when the fallback knows (the 503's message says it).
    fn why_no_data(&self) -> Option<String> {
        None
    }
}

/// The model the embedded backend or the fallback serves, as `/health` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ModelStatus {
    pub status: ModelState,
    /// The version serving now; `null` when none is.
    #[schema(example = "20261122T042100Z-3fa9c2d1e0b4")]
    pub version: Option<String>,
    /// What went wrong the last time a model was fetched or loaded; `null` when nothing did.
    pub problem: Option<ModelProblem>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelState {
    /// A model is serving and the last fetch and load went well.
    Loaded,
    /// A model is serving, but the last fetch or load failed (see `problem`): it may not be the newest.
    Stale,
    /// No model has been published yet.
    Missing,
    /// No model is serving because fetching or loading it failed (see `problem`).
    Failed,
}

impl ModelStatus {
    pub fn new(version: Option<String>, problem: Option<ModelProblem>) -> Self {
        let status = match (&version, &problem) {
            (Some(_), None) => ModelState::Loaded,
            (Some(_), Some(_)) => ModelState::Stale,
            (None, None) => ModelState::Missing,
            (None, Some(_)) => ModelState::Failed,
        };
        Self { status, version, problem }
    }
}

/// Why a model could not be fetched or loaded: which object, which version, what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema, thiserror::Error)]
#[error("{message}")]
pub struct ModelProblem {
    pub kind: ModelProblemKind,
    /// The object found wrong: `s3://<bucket>/models/...` or a path on disk.
    #[schema(example = "s3://ranking-data/models/LATEST")]
    pub object: String,
    /// The version concerned, when it is known.
    #[schema(example = "20261122T042100Z-3fa9c2d1e0b4")]
    pub version: Option<String>,
    /// What was wrong, for a person.
    #[schema(example = "models/LATEST is empty")]
    pub message: String,
    /// Whether the next refresh may succeed with nothing republished (a network failure may pass;
    /// a corrupt file stays corrupt).
    pub retryable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelProblemKind {
    /// The model file is not a model this build can load (truncated, checksum, format).
    CorruptModel,
    /// `LATEST` is empty or does not hold a version name.
    BadLatest,
    /// `LATEST` names a version whose model file does not exist.
    MissingVersion,
    /// The bucket did not answer in time, could not be reached, or refused the request.
    BucketUnreachable,
    /// A local file (the model directory or the cache of fetched models) could not be read or written.
    StorageError,
}

impl fmt::Display for ModelProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ModelProblemKind::CorruptModel => "corrupt_model",
            ModelProblemKind::BadLatest => "bad_latest",
            ModelProblemKind::MissingVersion => "missing_version",
            ModelProblemKind::BucketUnreachable => "bucket_unreachable",
            ModelProblemKind::StorageError => "storage_error",
        })
    }
}

/// Where `/health` reads the model's status: the model slot.
pub trait ModelHealth: Send + Sync {
    fn model_status(&self) -> ModelStatus;
}

/// Students the API has data for: what the demo page offers to pick from.
#[derive(Debug, Clone, PartialEq, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StudentList {
    /// How many students the data has (the list may be shorter).
    pub total: usize,
    /// The first students by id, each with how many classes they interacted with.
    pub students: Vec<StudentSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StudentSummary {
    #[schema(value_type = String, example = "s-0001")]
    pub user_id: UserId,
    /// Distinct classes in the student's history.
    #[schema(example = 12)]
    pub classes: usize,
}

/// Where the list of students comes from: the embedded store locally; nothing inside Lambda.
pub trait StudentDirectory: Send + Sync {
    fn students(&self, limit: usize) -> StudentList;
}

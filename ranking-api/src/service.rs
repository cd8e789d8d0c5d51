//! The domain of the API: ask the configured backend, and when it cannot answer,
//! answer from popular items and say why. Plain Rust over the ports; no HTTP here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use schemas::UserId;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::port::{
    BackendError, Fallback, FallbackReason, Ranked, RecommendRequest, Recommender, RerankRequest, Source,
};
use crate::query::{DEFAULT_NUM_RESULTS, RankingQuery};

pub use crate::port::ScoredItem;

/// The 200 answer of `GET /ranking/{userId}`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RankingResponse {
    #[schema(value_type = String, example = "s-0042")]
    pub user_id: UserId,
    pub items: Vec<ScoredItem>,
    /// Personalize's recommendation id, or one of ours for embedded and fallback answers.
    #[schema(example = "RID-5f1c-4b7e-9e0e-8f2b")]
    pub recommendation_id: String,
    pub source: Source,
    /// Present exactly when `source` is `fallback`: why the backend did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FallbackInfo {
    pub reason: FallbackReason,
    #[schema(example = "Personalize did not answer within 300 ms")]
    pub message: String,
}

/// How long a client should wait before retrying a 503.
pub const RETRY_AFTER_SECONDS: u32 = 5;

pub struct RankingService {
    /// `None` when no backend is configured (Personalize absent): every answer is a fallback.
    backend: Option<Arc<dyn Recommender>>,
    fallback: Arc<dyn Fallback>,
    ids: RecommendationIds,
}

impl RankingService {
    pub fn new(backend: Option<Arc<dyn Recommender>>, fallback: Arc<dyn Fallback>) -> Self {
        Self { backend, fallback, ids: RecommendationIds::new() }
    }

    /// The source answers come from when all is well.
    pub fn backend_source(&self) -> Option<Source> {
        self.backend.as_ref().map(|b| b.source())
    }

    /// Whether the fallback could answer right now.
    pub fn fallback_has_data(&self) -> bool {
        self.fallback.has_data()
    }

    pub async fn rank(&self, user_id: UserId, query: RankingQuery) -> Result<RankingResponse, ApiError> {
        let outcome = match &self.backend {
            None => {
                Err(BackendError::unavailable(FallbackReason::NotConfigured, "no recommender is configured"))
            }
            Some(backend) => {
                self.ask(backend.as_ref(), &user_id, &query).await.map(|r| (backend.source(), r))
            }
        };
        match outcome {
            Ok((source, ranked)) => Ok(self.answer(user_id, source, ranked, None, query.num_results)),
            Err(BackendError::InvalidInput(message)) => Err(ApiError::RejectedByRecommender(message)),
            Err(BackendError::Unavailable { reason, detail }) => {
                if reason == FallbackReason::UnknownUser {
                    tracing::debug!(%reason, "answering from popular items");
                } else {
                    tracing::warn!(%reason, detail = %detail, "backend unavailable; answering from popular items");
                }
                let items = match &query.items {
                    Some(items) => self.fallback.rerank(items),
                    None => self.fallback.popular(&user_id, query.num_results.unwrap_or(DEFAULT_NUM_RESULTS)),
                };
                let Some(items) = items else {
                    tracing::error!(%reason, "the fallback has no data either; answering 503");
                    let why = match self.fallback.why_no_data() {
                        // The embedded backend already said it (the same slot backs both).
                        Some(why) if why != detail => format!(" ({why})"),
                        _ => String::new(),
                    };
                    return Err(ApiError::Unavailable {
                        message: format!(
                            "no recommendations available ({reason}: {detail}), and no popular items to fall back on{why}"
                        ),
                        retry_after_seconds: RETRY_AFTER_SECONDS,
                    });
                };
                let info = FallbackInfo { reason, message: detail };
                let ranked = Ranked { items, recommendation_id: None };
                Ok(self.answer(user_id, Source::Fallback, ranked, Some(info), query.num_results))
            }
        }
    }

    async fn ask(
        &self,
        backend: &dyn Recommender,
        user_id: &UserId,
        query: &RankingQuery,
    ) -> Result<Ranked, BackendError> {
        match &query.items {
            None => {
                let request = RecommendRequest {
                    user_id: user_id.clone(),
                    num_results: query.num_results.unwrap_or(DEFAULT_NUM_RESULTS),
                    filter: query.filter.clone(),
                    context: query.context.clone(),
                };
                backend.recommend(&request).await
            }
            Some(items) => {
                let request = RerankRequest {
                    user_id: user_id.clone(),
                    items: items.clone(),
                    filter: query.filter.clone(),
                    context: query.context.clone(),
                };
                backend.rerank(&request).await
            }
        }
    }

    fn answer(
        &self,
        user_id: UserId,
        source: Source,
        ranked: Ranked,
        fallback: Option<FallbackInfo>,
        limit: Option<usize>,
    ) -> RankingResponse {
        let mut items = ranked.items;
        if let Some(limit) = limit {
            items.truncate(limit);
        }
        let recommendation_id = ranked.recommendation_id.unwrap_or_else(|| self.ids.next(source));
        RankingResponse { user_id, items, recommendation_id, source, fallback }
    }
}

/// Recommendation ids for answers Personalize did not give: unique per process and
/// cheap (no syscall per request), prefixed with a random instance tag.
struct RecommendationIds {
    instance: String,
    counter: AtomicU64,
}

impl RecommendationIds {
    fn new() -> Self {
        let instance = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        Self { instance, counter: AtomicU64::new(0) }
    }

    fn next(&self, source: Source) -> String {
        let prefix = match source {
            Source::Personalize => "personalize",
            Source::Embedded => "emb",
            Source::Fallback => "fb",
        };
        format!("{prefix}-{}-{:x}", self.instance, self.counter.fetch_add(1, Ordering::Relaxed))
    }
}

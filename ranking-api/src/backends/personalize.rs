//! The Personalize adapter: `GetRecommendations` on the recommendation campaign,
//! `GetPersonalizedRanking` on the ranking campaign. Anything that is not the
//! caller's fault (throttling, 5xx, timeout, a missing campaign) becomes
//! [`BackendError::Unavailable`], so the fallback answers and the response says why.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_personalizeruntime::Client;
use aws_sdk_personalizeruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_personalizeruntime::operation::get_personalized_ranking::GetPersonalizedRankingError;
use aws_sdk_personalizeruntime::operation::get_recommendations::GetRecommendationsError;
use aws_sdk_personalizeruntime::types::PredictedItem;
use schemas::ItemId;

use crate::port::{
    BackendError, FallbackReason, Ranked, RecommendRequest, Recommender, RerankRequest, ScoredItem, Source,
};

/// Throttling arrives unmodeled: these are the codes Personalize and the SDK use for it.
const THROTTLING_CODES: &[&str] = &["ThrottlingException", "TooManyRequestsException", "Throttling"];

pub struct PersonalizeRecommender {
    client: Client,
    campaign_arn: Option<String>,
    ranking_campaign_arn: Option<String>,
    timeout: Duration,
}

/// Client settings for the request path: one attempt inside a hard deadline
/// (`PERSONALIZE_TIMEOUT_MS`) that bounds the connection, the attempt and the operation. A
/// retry that cannot finish within the deadline is worth less than the fallback now.
pub fn client_config(base: &aws_config::SdkConfig, timeout: Duration) -> aws_sdk_personalizeruntime::Config {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(timeout)
        .operation_attempt_timeout(timeout)
        .operation_timeout(timeout)
        .build();
    aws_sdk_personalizeruntime::config::Builder::from(base)
        .timeout_config(timeouts)
        .retry_config(RetryConfig::disabled())
        .build()
}

impl PersonalizeRecommender {
    pub fn new(
        client: Client,
        campaign_arn: Option<String>,
        ranking_campaign_arn: Option<String>,
        timeout: Duration,
    ) -> Self {
        Self { client, campaign_arn, ranking_campaign_arn, timeout }
    }

    fn classify<E>(
        &self,
        operation: &str,
        err: SdkError<E, aws_sdk_personalizeruntime::config::http::HttpResponse>,
    ) -> BackendError
    where
        E: RuntimeError + std::error::Error + 'static,
    {
        let timeout = || {
            BackendError::unavailable(
                FallbackReason::Timeout,
                format!("Personalize did not answer within {} ms", self.timeout.as_millis()),
            )
        };
        match &err {
            SdkError::TimeoutError(_) => timeout(),
            SdkError::DispatchFailure(failure) if failure.is_timeout() => timeout(),
            SdkError::DispatchFailure(_) => BackendError::unavailable(
                FallbackReason::BackendError,
                format!("{operation}: Personalize could not be reached"),
            ),
            SdkError::ServiceError(service) => {
                let status = service.raw().status().as_u16();
                let code = service.err().code().unwrap_or("Unknown");
                match service.err().modeled() {
                    Modeled::InvalidInput(message) => BackendError::InvalidInput(message),
                    Modeled::NotFound => BackendError::unavailable(
                        FallbackReason::CampaignNotFound,
                        format!("{operation}: the Personalize campaign was not found"),
                    ),
                    _ if status == 429 || THROTTLING_CODES.contains(&code) => BackendError::unavailable(
                        FallbackReason::Throttled,
                        format!("{operation}: Personalize throttled the request"),
                    ),
                    _ => BackendError::unavailable(
                        FallbackReason::BackendError,
                        format!("{operation}: Personalize answered {status} {code}"),
                    ),
                }
            }
            _ => BackendError::unavailable(FallbackReason::BackendError, format!("{operation}: {err}")),
        }
    }
}

/// The two errors the runtime API models, shared by both operations' error enums.
pub enum Modeled {
    InvalidInput(String),
    NotFound,
    Other,
}

pub trait RuntimeError: ProvideErrorMetadata {
    fn modeled(&self) -> Modeled;
}

impl RuntimeError for GetRecommendationsError {
    fn modeled(&self) -> Modeled {
        match self {
            Self::InvalidInputException(e) => {
                Modeled::InvalidInput(e.message().unwrap_or("invalid input").to_owned())
            }
            Self::ResourceNotFoundException(_) => Modeled::NotFound,
            _ => Modeled::Other,
        }
    }
}

impl RuntimeError for GetPersonalizedRankingError {
    fn modeled(&self) -> Modeled {
        match self {
            Self::InvalidInputException(e) => {
                Modeled::InvalidInput(e.message().unwrap_or("invalid input").to_owned())
            }
            Self::ResourceNotFoundException(_) => Modeled::NotFound,
            _ => Modeled::Other,
        }
    }
}

fn scored(items: &[PredictedItem]) -> Vec<ScoredItem> {
    items
        .iter()
        .filter_map(|p| {
            let id = p.item_id()?;
            match ItemId::parse(id) {
                Ok(item_id) => Some(ScoredItem { item_id, score: p.score() }),
                Err(e) => {
                    tracing::warn!(error = %e, "Personalize returned an item id we cannot serve; skipped");
                    None
                }
            }
        })
        .collect()
}

fn non_empty(map: &std::collections::BTreeMap<String, String>) -> Option<HashMap<String, String>> {
    (!map.is_empty()).then(|| map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

#[async_trait]
impl Recommender for PersonalizeRecommender {
    fn source(&self) -> Source {
        Source::Personalize
    }

    async fn recommend(&self, request: &RecommendRequest) -> Result<Ranked, BackendError> {
        let Some(campaign) = &self.campaign_arn else {
            return Err(BackendError::unavailable(
                FallbackReason::NotConfigured,
                "no recommendation campaign is configured",
            ));
        };
        let output = self
            .client
            .get_recommendations()
            .campaign_arn(campaign)
            .user_id(request.user_id.as_str())
            .num_results(request.num_results as i32)
            .set_filter_arn(request.filter.as_ref().map(|f| f.arn.clone()))
            .set_filter_values(request.filter.as_ref().and_then(|f| non_empty(&f.values)))
            .set_context(non_empty(&request.context))
            .send()
            .await
            .map_err(|e: SdkError<GetRecommendationsError, _>| self.classify("GetRecommendations", e))?;
        Ok(Ranked {
            items: scored(output.item_list()),
            recommendation_id: output.recommendation_id().map(str::to_owned),
        })
    }

    async fn rerank(&self, request: &RerankRequest) -> Result<Ranked, BackendError> {
        let Some(campaign) = &self.ranking_campaign_arn else {
            return Err(BackendError::unavailable(
                FallbackReason::NotConfigured,
                "no ranking campaign is configured",
            ));
        };
        let output = self
            .client
            .get_personalized_ranking()
            .campaign_arn(campaign)
            .user_id(request.user_id.as_str())
            .set_input_list(Some(request.items.iter().map(|i| i.to_string()).collect()))
            .set_filter_arn(request.filter.as_ref().map(|f| f.arn.clone()))
            .set_filter_values(request.filter.as_ref().and_then(|f| non_empty(&f.values)))
            .set_context(non_empty(&request.context))
            .send()
            .await
            .map_err(|e: SdkError<GetPersonalizedRankingError, _>| {
                self.classify("GetPersonalizedRanking", e)
            })?;
        Ok(Ranked {
            items: scored(output.personalized_ranking()),
            recommendation_id: output.recommendation_id().map(str::to_owned),
        })
    }
}

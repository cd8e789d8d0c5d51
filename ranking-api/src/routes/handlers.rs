//! The route handlers: rankings, the student list, health, the document and the demo page, and
//! the answers for unknown paths and methods.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use schemas::UserId;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::port::{ModelStatus, Source, StudentList};
use crate::query;
use crate::service::RankingResponse;

/// Recommend items for a student, or rerank the items given.
///
/// Without `items`, asks the recommendation campaign (`GetRecommendations`) for the
/// user's top `numResults` items. With `items`, reranks those ids for the user
/// (`GetPersonalizedRanking`). When the backend is throttled, slow, failing, absent,
/// or does not know the user, popular items answer instead, with `source: fallback`
/// and the reason. Personalize filter values are passed as `filterValues.<NAME>=<value>`
/// (only together with `filter`) and context as `context.<NAME>=<value>` (names: letters,
/// digits, underscores). Any other query parameter, or one given twice, is a 400.
#[utoipa::path(
    get,
    path = "/ranking/{userId}",
    tag = "ranking",
    // The parameters are in `ranking_parameters`: the macro cannot say `pattern`,
    // `propertyNames` or this deployment's filter names.
    responses(
        (status = 200, description = "Recommended or reranked items", body = RankingResponse),
        (status = 400, description = "A bad user id or query parameter, or input Personalize refused", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "How to authenticate: `ApiKey header=\"x-api-key\"`"))),
        (status = 414, description = "The URL is longer than the HTTP layer takes (64 KiB locally; API Gateway takes 10,240 characters); no body. A long `items` list is the usual cause"),
        (status = 503, description = "Neither the backend nor the fallback could answer", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ),
    security(("api_key" = []))
)]
pub(super) async fn ranking(
    State(state): State<AppState>,
    user_id: Result<Path<String>, PathRejection>,
    RawQuery(raw_query): RawQuery,
) -> Result<Response, ApiError> {
    let Path(raw_user) =
        user_id.map_err(|e| ApiError::InvalidUserId(format!("the user id does not decode: {e}")))?;
    // `.` and `..` are refused here too: `UserId::parse` is the one rule, the document's included.
    let user_id = UserId::parse(raw_user).map_err(|e| ApiError::InvalidUserId(e.to_string()))?;
    let query = query::parse(raw_query.as_deref(), &state.0.filters)?;
    let response = state.0.service.rank(user_id, query).await?;
    Ok(json_response(&response))
}

/// Serializes into a buffer sized for the answer up front: on the hot path, growing
/// a small buffer by doubling was a visible share of the time (copies and allocations).
fn json_response(response: &RankingResponse) -> Response {
    let mut body = Vec::with_capacity(160 + response.items.len() * 64);
    match serde_json::to_writer(&mut body, response) {
        Ok(()) => {
            ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
        }
        Err(e) => ApiError::Unavailable {
            message: format!("could not encode the answer: {e}"),
            retry_after_seconds: 1,
        }
        .into_response(),
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StudentsQuery {
    limit: Option<String>,
}

/// Students the API has data for, first by id: what the demo page offers to pick.
///
/// Locally these are the students in the embedded store; inside Lambda the API has no
/// store and the list is empty.
#[utoipa::path(
    get,
    path = "/students",
    tag = "operations",
    params(("limit" = Option<u32>, Query, description = "How many students to list (default 100)", minimum = 1, maximum = 1000)),
    responses(
        (status = 200, description = "Students and how many classes each has", body = StudentList),
        (status = 400, description = "A bad query parameter", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "How to authenticate: `ApiKey header=\"x-api-key\"`"))),
        (status = 414, description = "The URL is longer than the HTTP layer takes (64 KiB); no body"),
    ),
    security(("api_key" = []))
)]
pub(super) async fn students(
    State(state): State<AppState>,
    RawQuery(raw_query): RawQuery,
) -> Result<Response, ApiError> {
    let query: StudentsQuery = serde_urlencoded::from_str(raw_query.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::InvalidParameter(format!("bad query: {e} (the only parameter is limit)")))?;
    let limit = match query.limit.as_deref() {
        None => 100,
        Some(raw) => raw.parse::<usize>().ok().filter(|n| (1..=1000).contains(n)).ok_or_else(|| {
            ApiError::InvalidParameter("limit must be a whole number from 1 to 1000".to_owned())
        })?,
    };
    let list = state.0.students.as_ref().map_or_else(StudentList::default, |d| d.students(limit));
    Ok(Json(list).into_response())
}

/// Whether the API is up, and where its answers come from.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
    /// The backend answers come from when all is well; `null` when only the fallback is configured.
    pub backend: Option<Source>,
    /// Whether the fallback has popular items to answer with right now: false for a moment after
    /// a local start while the store's popularity loads, and in a deployment without a model.
    #[serde(rename = "fallbackReady")]
    pub fallback_ready: bool,
    /// The embedded model (which the embedded backend and, inside Lambda, the fallback answer from):
    /// the version serving and, when the last fetch or load failed, which object and why. `null`
    /// when the API serves no model. A problem here never takes the API down: it answers without it.
    pub model: Option<ModelStatus>,
}

#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, description = "The API is up (even when its model is not: see `model`)", body = Health)))]
pub(super) async fn health(State(state): State<AppState>) -> Json<Health> {
    let service = &state.0.service;
    Json(Health {
        status: "ok",
        backend: service.backend_source(),
        fallback_ready: service.fallback_has_data(),
        model: state.0.model.as_ref().map(|m| m.model_status()),
    })
}

/// This document, generated from the code.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
pub(super) async fn openapi_json(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], state.0.document.clone()).into_response()
}

/// A page for frontend developers: pick a student, see the answer and its source.
pub(super) async fn demo_page() -> Response {
    let headers = [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")];
    (headers, include_str!("../demo.html")).into_response()
}

pub(super) async fn not_found(request: Request) -> ApiError {
    let shown: String = request.uri().path().chars().take(200).collect();
    ApiError::NotFound(shown)
}

pub(super) async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}

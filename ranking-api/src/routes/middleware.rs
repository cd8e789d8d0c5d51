//! The layers around the routes: the API key check, one log line per request, CORS.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::AppState;
use crate::error::ApiError;

/// Checks `x-api-key` in constant time: both sides are hashed first, so neither the
/// key's content nor its length shows in the timing.
pub(super) async fn require_api_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(expected) = &state.0.api_key_digest {
        let given = request.headers().get("x-api-key").map(|v| Sha256::digest(v.as_bytes()));
        let ok = given.is_some_and(|given| bool::from(given.as_slice().ct_eq(expected.as_slice())));
        if !ok {
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(request).await
}

/// One structured log line per request: failures at info, the rest at debug.
pub(super) async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request.extensions().get::<axum::extract::MatchedPath>().cloned();
    let route = route.as_ref().map_or("unmatched", |p| p.as_str());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let micros = started.elapsed().as_micros() as u64;
    if response.status().is_success() {
        tracing::debug!(%method, route, status, micros, "request");
    } else {
        tracing::info!(%method, route, status, micros, "request");
    }
    response
}

pub(super) fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::OPTIONS])
            .allow_headers([HeaderName::from_static("x-api-key"), header::CONTENT_TYPE])
            .expose_headers([header::RETRY_AFTER])
            .max_age(Duration::from_secs(600)),
    )
}

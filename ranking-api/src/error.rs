//! Every HTTP status the API returns for a failure is decided here, in one place.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response: `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code such as `invalid_parameter`.
    #[schema(example = "invalid_parameter")]
    pub code: &'static str,
    /// What went wrong, for a person.
    #[schema(example = "numResults must be a whole number from 1 to 500")]
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidUserId(String),
    #[error("{0}")]
    InvalidParameter(String),
    /// Personalize refused the request (`InvalidInputException`): the caller's input, so a 400.
    #[error("{0}")]
    RejectedByRecommender(String),
    #[error("a valid x-api-key header is required")]
    Unauthorized,
    #[error("no route for {0}")]
    NotFound(String),
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    /// Neither the backend nor the fallback could answer.
    #[error("{message}")]
    Unavailable { message: String, retry_after_seconds: u32 },
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::InvalidUserId(_) => (StatusCode::BAD_REQUEST, "invalid_user_id"),
            ApiError::InvalidParameter(_) => (StatusCode::BAD_REQUEST, "invalid_parameter"),
            ApiError::RejectedByRecommender(_) => (StatusCode::BAD_REQUEST, "invalid_input"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let retry_after = match &self {
            ApiError::Unavailable { retry_after_seconds, .. } => Some(*retry_after_seconds),
            _ => None,
        };
        let body = ErrorBody { error: ErrorDetail { code, message: self.to_string() } };
        let mut response = (status, Json(body)).into_response();
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::UNAUTHORIZED {
            // API Gateway's usage plans use this header too; saying so helps callers.
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("ApiKey header=\"x-api-key\""));
        }
        response
    }
}

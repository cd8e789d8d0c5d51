//! The HTTP surface: one axum `Router` for Lambda and for local runs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use schemas::UserId;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::port::{ModelHealth, ModelStatus, Source, StudentDirectory, StudentList};
use crate::query;
use crate::service::{RankingResponse, RankingService};

/// Everything a request handler needs, built once at start. Cloned per request by
/// axum, so it is one `Arc`.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

struct Shared {
    service: RankingService,
    filters: HashMap<String, String>,
    /// SHA-256 of the API key, when the local server must check one.
    api_key_digest: Option<[u8; 32]>,
    cors_origins: Vec<String>,
    /// Who `/students` lists; `None` inside Lambda, where the API has no store.
    students: Option<Arc<dyn StudentDirectory>>,
    /// The embedded model's state for `/health`; `None` when the API serves no model.
    model: Option<Arc<dyn ModelHealth>>,
    /// `/openapi.json`: the generated document, with this deployment's filter names.
    document: String,
}

impl AppState {
    pub fn new(service: RankingService, filters: HashMap<String, String>) -> Self {
        // Only Personalize evaluates filters (the embedded recommender refuses them with a 400),
        // so only a Personalize deployment offers them in its document.
        let mut names: Vec<&str> = match service.backend_source() {
            Some(Source::Personalize) => filters.keys().map(String::as_str).collect(),
            _ => Vec::new(),
        };
        names.sort_unstable();
        let document = ApiDoc::for_filters(&names).to_pretty_json().expect("the OpenAPI document serializes");
        Self(Arc::new(Shared {
            service,
            filters,
            api_key_digest: None,
            cors_origins: Vec::new(),
            students: None,
            model: None,
            document,
        }))
    }

    fn shared_mut(&mut self) -> &mut Shared {
        Arc::get_mut(&mut self.0).expect("configured before the router is built")
    }

    /// Require `x-api-key: <key>` on `/ranking` requests.
    pub fn with_api_key(mut self, key: &str) -> Self {
        self.shared_mut().api_key_digest = Some(Sha256::digest(key.as_bytes()).into());
        self
    }

    /// List these students at `/students` (the demo page's picker).
    pub fn with_students(mut self, students: Arc<dyn StudentDirectory>) -> Self {
        self.shared_mut().students = Some(students);
        self
    }

    /// Report this model's state (version, and what went wrong fetching or loading it) at `/health`.
    pub fn with_model_health(mut self, model: Arc<dyn ModelHealth>) -> Self {
        self.shared_mut().model = Some(model);
        self
    }

    pub fn with_cors_origins(mut self, origins: Vec<String>) -> Self {
        self.shared_mut().cors_origins = origins;
        self
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ranking API",
        description = "Course recommendations and rankings for students, from Amazon Personalize or the embedded recommender, degrading to popular items.",
    ),
    paths(ranking, students, health, openapi_json),
    components(schemas(RankingResponse, StudentList, ErrorBody, Health)),
    modifiers(&ApiKeyScheme, &RankingParameters),
    tags((name = "ranking", description = "Recommendations and rankings"), (name = "operations", description = "Health and discovery"))
)]
pub struct ApiDoc;

struct ApiKeyScheme;

impl Modify for ApiKeyScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
        );
    }
}

/// No control characters (Rust's `char::is_control`: U+0000–U+001F, U+007F–U+009F); not `.` or
/// `..`, which HTTP clients and gateways resolve as path segments before the API sees them.
pub const USER_ID_PATTERN: &str = r"^(?!\.\.?$)[^\u0000-\u001F\u007F-\u009F]+$";
/// An ITEM_ID inside `items=`: no control characters, no comma (the separator).
pub const ITEM_ID_PATTERN: &str = r"^[^,\u0000-\u001F\u007F-\u009F]+$";

/// The ranking parameters of a deployment without filters; [`ApiDoc::for_filters`] names them.
struct RankingParameters;

impl Modify for RankingParameters {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        set_ranking_parameters(openapi, &[]);
    }
}

fn set_ranking_parameters(doc: &mut utoipa::openapi::OpenApi, filters: &[&str]) {
    let operation = doc.paths.paths.get_mut("/ranking/{userId}").and_then(|item| item.get.as_mut());
    let operation = operation.expect("the ranking operation is documented");
    operation.parameters = Some(ranking_parameters(filters));
}

impl ApiDoc {
    /// The document a deployment serves: the generated one, with `filter` limited to the
    /// filters configured (and `filter`, `filterValues` left out when there are none), so the
    /// document says exactly what this API accepts.
    pub fn for_filters(filters: &[&str]) -> utoipa::openapi::OpenApi {
        let mut doc = ApiDoc::openapi();
        set_ranking_parameters(&mut doc, filters);
        doc
    }
}

/// `<prefix>.<NAME>=<value>` pairs as one exploded form object whose property names carry the
/// prefix: valid OpenAPI, and clients (schemathesis among them) send them exactly so.
fn prefixed_parameter(
    prefix: &str,
    description: String,
    max_entries: usize,
    max_key_chars: usize,
) -> serde_json::Value {
    serde_json::json!({
        "name": prefix, "in": "query", "required": false,
        "description": description,
        "style": "form", "explode": true,
        "schema": {
            "type": "object", "maxProperties": max_entries,
            "propertyNames": {"type": "string", "pattern": format!("^{prefix}\\.[A-Za-z0-9_]{{1,{max_key_chars}}}$")},
            "additionalProperties": {"type": "string", "maxLength": crate::query::MAX_VALUE_CHARS},
        },
    })
}

/// The parameters of `GET /ranking/{userId}`, with the limits `query::parse` enforces.
///
/// `filterValues.<NAME>` and `context.<NAME>` have no OpenAPI form of their own: each is an object
/// parameter in `form` style, exploded, whose property names carry the prefix, so
/// `{"context.DEVICE": "mobile"}` goes on the wire as `context.DEVICE=mobile`.
fn ranking_parameters(filters: &[&str]) -> Vec<utoipa::openapi::RefOr<utoipa::openapi::path::Parameter>> {
    use crate::query::{
        MAX_CONTEXT_ENTRIES, MAX_CONTEXT_KEY_CHARS, MAX_FILTER_KEY_CHARS, MAX_FILTER_VALUES, MAX_NUM_RESULTS,
        MAX_RERANK_ITEMS,
    };
    use schemas::MAX_ID_CHARS;
    let mut parameters = vec![
        serde_json::json!({
            "name": "userId", "in": "path", "required": true,
            "description": format!("The student's USER_ID: 1 to {MAX_ID_CHARS} characters, no control characters"),
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS, "pattern": USER_ID_PATTERN},
        }),
        serde_json::json!({
            "name": "numResults", "in": "query", "required": false,
            "description": format!("How many items to return (default {})", crate::query::DEFAULT_NUM_RESULTS),
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_NUM_RESULTS},
        }),
        serde_json::json!({
            "name": "items", "in": "query", "required": false,
            "description": format!("ITEM_IDs to rerank instead of recommending, comma-separated (at most {MAX_RERANK_ITEMS}; repeats are dropped)"),
            "style": "form", "explode": false,
            "schema": {
                "type": "array", "minItems": 1, "maxItems": MAX_RERANK_ITEMS,
                "items": {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS, "pattern": ITEM_ID_PATTERN},
            },
        }),
        prefixed_parameter(
            "context",
            format!(
                "Personalize context, as `context.<NAME>=<value>` (at most {MAX_CONTEXT_ENTRIES} entries)"
            ),
            MAX_CONTEXT_ENTRIES,
            MAX_CONTEXT_KEY_CHARS,
        ),
    ];
    if !filters.is_empty() {
        parameters.push(serde_json::json!({
            "name": "filter", "in": "query", "required": false,
            "description": "Name of a configured Personalize filter",
            "schema": {"type": "string", "enum": filters},
        }));
        parameters.push(prefixed_parameter(
            "filterValues",
            format!("The filter's placeholder values, as `filterValues.<NAME>=<value>` (at most {MAX_FILTER_VALUES}); only with `filter`"),
            MAX_FILTER_VALUES,
            MAX_FILTER_KEY_CHARS,
        ));
    }
    parameters
        .into_iter()
        .map(|p| {
            utoipa::openapi::RefOr::T(serde_json::from_value(p).expect("a well-formed OpenAPI parameter"))
        })
        .collect()
}

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
async fn ranking(
    State(state): State<AppState>,
    user_id: Result<Path<String>, PathRejection>,
    RawQuery(raw_query): RawQuery,
) -> Result<Response, ApiError> {
    let Path(raw_user) =
        user_id.map_err(|e| ApiError::InvalidUserId(format!("the user id does not decode: {e}")))?;
    if raw_user == "." || raw_user == ".." {
        // Clients and gateways resolve these as path segments; the document excludes them too.
        return Err(ApiError::InvalidUserId(format!("{raw_user:?} is a path segment, not a user id")));
    }
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
async fn students(
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
async fn health(State(state): State<AppState>) -> Json<Health> {
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
async fn openapi_json(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], state.0.document.clone()).into_response()
}

/// A page for frontend developers: pick a student, see the answer and its source.
async fn demo_page() -> Response {
    let headers = [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")];
    (headers, include_str!("demo.html")).into_response()
}

async fn not_found(request: Request) -> ApiError {
    let shown: String = request.uri().path().chars().take(200).collect();
    ApiError::NotFound(shown)
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}

/// Checks `x-api-key` in constant time: both sides are hashed first, so neither the
/// key's content nor its length shows in the timing.
async fn require_api_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
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
async fn log_request(request: Request, next: Next) -> Response {
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

fn cors(origins: &[String]) -> Option<CorsLayer> {
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

/// Inside Lambda behind API Gateway, `lambda_http` puts the stage in front of the
/// path (`/prod/ranking/s-1`) unless `AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH` is set.
/// Strip it here, once, so the routes are the same everywhere whatever the setting.
pub fn strip_stage(mut request: lambda_http::Request) -> lambda_http::Request {
    use lambda_http::request::RequestContext;
    let stage = match request.extensions().get::<RequestContext>() {
        Some(RequestContext::ApiGatewayV1(ctx)) => ctx.stage.clone(),
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.stage.clone(),
        _ => None,
    };
    let Some(stage) = stage.filter(|s| !s.is_empty() && s != "$default") else { return request };
    let prefix = format!("/{stage}");
    let path = request.uri().path();
    let rest = match path.strip_prefix(&prefix) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
        _ => return request,
    };
    let rest = if rest.is_empty() { "/" } else { rest };
    let path_and_query = match request.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_owned(),
    };
    let mut parts = request.uri().clone().into_parts();
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    request
}

/// The application: the same Router serves Lambda and local runs.
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/ranking/{userId}", get(ranking))
        .route("/students", get(students))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_api_key));
    let mut app = Router::new()
        .merge(protected)
        .route("/", get(demo_page))
        .route("/health", get(health))
        .route("/openapi.json", get(openapi_json))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(log_request));
    // CORS sits outside everything, so preflights and even 401s carry its headers.
    if let Some(cors) = cors(&state.0.cors_origins) {
        app = app.layer(cors);
    }
    app.with_state(state)
}

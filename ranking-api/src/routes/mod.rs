//! The HTTP surface: one axum `Router` for Lambda and for local runs. By job: [`handlers`] answer
//! the routes, [`openapi`] documents them, [`middleware`] checks the key, logs and adds CORS,
//! [`stage`] strips API Gateway's stage from Lambda requests.

mod handlers;
mod middleware;
mod openapi;
mod stage;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use sha2::{Digest, Sha256};

use crate::port::{ModelHealth, Source, StudentDirectory};
use crate::service::RankingService;

pub use handlers::Health;
pub use openapi::{ApiDoc, ITEM_ID_PATTERN, USER_ID_PATTERN};
pub use stage::strip_stage;

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

/// The application: the same Router serves Lambda and local runs.
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/ranking/{userId}", get(handlers::ranking))
        .route("/students", get(handlers::students))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), middleware::require_api_key));
    let mut app = Router::new()
        .merge(protected)
        .route("/", get(handlers::demo_page))
        .route("/health", get(handlers::health))
        .route("/openapi.json", get(handlers::openapi_json))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(axum::middleware::from_fn(middleware::log_request));
    // CORS sits outside everything, so preflights and even 401s carry its headers.
    if let Some(cors) = middleware::cors(&state.0.cors_origins) {
        app = app.layer(cors);
    }
    app.with_state(state)
}

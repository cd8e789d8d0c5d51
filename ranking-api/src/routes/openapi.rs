//! The OpenAPI document: generated from the handlers' annotations, with the ranking parameters
//! (patterns, prefixed objects, this deployment's filters) written by hand where the macro cannot.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::handlers::{self, Health};
use crate::error::ErrorBody;
use crate::port::StudentList;
use crate::service::RankingResponse;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ranking API",
        description = "Course recommendations and rankings for students, from Amazon Personalize or the embedded recommender, degrading to popular items.",
    ),
    paths(handlers::ranking, handlers::students, handlers::health, handlers::openapi_json),
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

/// `{userId}`'s pattern is the id rule's own, so the document and the parser cannot drift.
pub use schemas::USER_ID_PATTERN;
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
            "description": format!("The student's USER_ID: 1 to {MAX_ID_CHARS} characters, no control characters, not `.` or `..`"),
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

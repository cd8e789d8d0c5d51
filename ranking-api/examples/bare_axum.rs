//! The peer of the API benchmark: a bare axum handler returning a fixed JSON body of
//! the same shape and size as a 25-item ranking response. What we add on top of
//! axum (parsing, recommending, logging middleware) is measured against this.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

fn body() -> String {
    let items: Vec<String> = (0..25)
        .map(|n| format!(r#"{{"itemId":"math-{:04}","score":{:.6}}}"#, n, 1.0 / (n + 1) as f64))
        .collect();
    format!(
        r#"{{"userId":"s-0001","items":[{}],"recommendationId":"emb-0123456789ab-0","source":"embedded"}}"#,
        items.join(",")
    )
}

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:3001".to_owned());
    let body: &'static str = Box::leak(body().into_boxed_str());
    let app = Router::new().route(
        "/ranking/{userId}",
        get(move || async move { ([(header::CONTENT_TYPE, "application/json")], body).into_response() }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    axum::serve(listener, app).await.expect("serve");
}

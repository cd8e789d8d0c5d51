use axum::body::Body;
use axum::http::Request;
use clap::Parser;
use http_body_util::BodyExt;
use std::time::Instant;
use tower::ServiceExt;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = ranking_api::config::Cli::parse_from(["x", "--no-demo-seed"]);
    let (state, _s) = ranking_api::startup::build_state(&cli.config, false).await.unwrap();
    let app = ranking_api::router(state);
    let n = 50_000;
    for pass in 0..3 {
        let t = Instant::now();
        let mut bytes = 0;
        for i in 0..n {
            let uri = format!("/ranking/s-{:04}?numResults=25", (i % 9999) + 1);
            let resp = app.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
            bytes += resp.into_body().collect().await.unwrap().to_bytes().len();
        }
        println!("pass {pass}: {:.2} us/request ({bytes} bytes)", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    }
}

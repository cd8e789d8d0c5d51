//! The Lambda: the 2 a.m. and 10-minute schedules and manual invokes send a JSON
//! payload (`{"action": ...}`); see the crate README for the contract.

use std::sync::Arc;

use clap::Parser;
use lambda_runtime::{LambdaEvent, service_fn};
use training_export::{app, config::Config};

#[derive(Parser)]
struct Env {
    #[command(flatten)]
    config: Config,
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = Env::try_parse_from(["training-export-lambda"])?.config;
    let pipeline = Arc::new(app::build(&config, true).await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let pipeline = pipeline.clone();
        async move { app::handle_lambda(&pipeline, event.payload, event.context.deadline()).await }
    }))
    .await
}

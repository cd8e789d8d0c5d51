//! The Lambda entry: EventBridge invokes the function asynchronously with the
//! event JSON. Any error makes Lambda retry (twice) and then send the event to the
//! function's dead-letter queue or on-failure destination. That is right for both
//! kinds: a retryable failure gets its retries, a bad event lands in the DLQ; the
//! `errorType` (`Retryable.*` / `NonRetryable.*`) and the `retryable` log field say
//! which it was.

use lambda_runtime::{LambdaEvent, service_fn};

use crate::config::{ConsumerConfig, Runtime};

pub async fn run() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = ConsumerConfig::from_env()?;
    let consumer = config
        .build(Runtime::Lambda)
        .await
        .inspect_err(|e| tracing::error!(error = %e, "bad configuration"))?;
    for line in config.describe(Runtime::Lambda) {
        tracing::info!(adapter = %line, "configured");
    }
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let consumer = consumer.clone();
        async move { consumer.handle_value(event.payload).await }
    }))
    .await
}

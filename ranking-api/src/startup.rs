//! Start-up: read the configuration once, build the backends, then serve through
//! Lambda or a local socket.

use std::sync::Arc;

use store::embedded::EmbeddedStore;
use tracing_subscriber::EnvFilter;

use crate::backends::embedded::{EmbeddedRecommender, ModelFallback, ModelSlot, train_first_model};
use crate::backends::popularity::{PopularFallback, SharedPopularity};
use crate::config::{Cli, Command, Config};
use crate::port::{Fallback, Recommender};
use crate::routes::{AppState, router};
use crate::service::RankingService;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Whether this process is a Lambda function (the runtime API is only there).
pub fn in_lambda() -> bool {
    aws_failure::lambda::running_in_lambda()
}

fn init_tracing(lambda: bool) {
    if lambda {
        // Honours AWS_LAMBDA_LOG_FORMAT=JSON and AWS_LAMBDA_LOG_LEVEL from the function's LoggingConfig.
        lambda_http::tracing::init_default_subscriber();
    } else {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        tracing_subscriber::fmt().with_env_filter(filter).with_target(false).init();
    }
}

/// Builds everything the router needs. Local runs get the embedded store under
/// `DATA_DIR` (seeded with demo data when empty) and models from `$DATA_DIR/models`;
/// with `DATA_BUCKET`, models come from the bucket instead. Lambda never seeds.
pub async fn build_state(
    config: &Config,
    lambda: bool,
) -> Result<(AppState, Option<EmbeddedStore>), BoxError> {
    let aws = if config.uses_personalize() || config.data_bucket.is_some() {
        Some(aws::load().await?)
    } else {
        None
    };

    let (popularity, store) = if lambda {
        (SharedPopularity::default(), None)
    } else {
        let store = EmbeddedStore::open_in(&config.data_dir)?;
        if !config.no_demo_seed
            && let Some(written) = store::demo::seed_if_empty(&store)?
        {
            tracing::info!(
                interactions = written,
                path = %store.path().display(),
                "the data directory was empty: seeded the demo dataset (600 students, 48 classes)"
            );
        }
        // The popularity snapshot loads in the background (its first refresh runs at once):
        // reading a large store must not delay the first answer, which the model gives.
        (SharedPopularity::default(), Some(store))
    };

    // Nothing a model file, `LATEST` or the bucket holds (or fails to answer) stops the start:
    // the slot stays empty or on an older version, `/health` says why, a refresh recovers.
    let slot = match (&config.data_bucket, &store) {
        (Some(bucket), _) => {
            let aws = aws.as_ref().expect("loaded when DATA_BUCKET is set");
            let slot = Arc::new(aws::bucket_slot(aws, bucket, config).await);
            slot.refresh_in_background(config.refresh_every());
            Some(slot)
        }
        (None, Some(store)) => {
            let slot = Arc::new(ModelSlot::local(&config.data_dir.join("models")).await);
            if let Some(problem) = slot.problem() {
                // A broken model directory is the pipeline's to fix; training over it would hide that.
                tracing::warn!(
                    kind = %problem.kind,
                    object = %problem.object,
                    "no usable model in the model directory: answering from popular items until a good \
                     version is published (GET /health says why)"
                );
            } else if slot.current().is_none() && store.count_blocking()? > 0 {
                tracing::info!(
                    "no model yet: training the first one from the embedded store in the background"
                );
                let (store, slot) = (store.clone(), slot.clone());
                tokio::spawn(async move {
                    match train_first_model(&store, &slot).await {
                        Ok(version) => tracing::info!(%version, "first model trained and published"),
                        Err(e) => {
                            tracing::warn!(error = %e, "could not train a first model; answering from popular items")
                        }
                    }
                });
            }
            slot.refresh_in_background(config.refresh_every());
            Some(slot)
        }
        (None, None) => None,
    };

    let backend: Option<Arc<dyn Recommender>> = if config.uses_personalize() {
        Some(aws::personalize(aws.as_ref().expect("loaded when Personalize is configured"), config))
    } else if let Some(slot) = &slot {
        tracing::info!(answer_cache_mb = config.answer_cache_mb, "answering from the embedded recommender");
        Some(Arc::new(EmbeddedRecommender::new(slot.clone()).with_answer_cache(config.answer_cache_bytes())))
    } else {
        tracing::error!(
            "neither a Personalize campaign nor DATA_BUCKET is configured: no backend, no fallback data"
        );
        None
    };

    // The fallback: the store's popularity where there is a store (always as fresh as the
    // store), else the newest model's.
    let fallback: Arc<dyn Fallback> = match (&store, &slot) {
        (None, Some(slot)) => Arc::new(ModelFallback::new(slot.clone())),
        _ => Arc::new(PopularFallback::new(popularity.clone())),
    };
    let service = RankingService::new(backend, fallback);
    let mut state =
        AppState::new(service, config.filters.0.clone()).with_cors_origins(config.cors_origins.clone());
    if let Some(slot) = &slot {
        state = state.with_model_health(slot.clone());
    }
    if store.is_some() {
        state = state.with_students(Arc::new(popularity.clone()));
    }
    match (&config.api_key, lambda) {
        (Some(key), false) => state = state.with_api_key(key),
        (Some(_), true) => tracing::info!("API_KEY is ignored inside Lambda: API Gateway checks keys there"),
        (None, _) => {}
    }
    if let Some(store) = &store {
        popularity.refresh_in_background(store.clone(), config.refresh_every());
    }
    Ok((state, store))
}

/// The AWS adapters (Personalize Runtime, models from the bucket), in builds with the `aws` feature.
#[cfg(feature = "aws")]
mod aws {
    use std::sync::Arc;
    use std::time::Duration;

    use aws_config::SdkConfig;
    use aws_failure::config::AwsSetup;
    use aws_failure::timeouts::{ClientTimeouts, Service};

    use super::BoxError;
    use crate::backends::embedded::ModelSlot;
    use crate::backends::personalize::{PersonalizeRecommender, client_config};
    use crate::config::Config;
    use crate::port::Recommender;

    /// Every client's configuration and timeouts (overridable, see `aws_failure::timeouts`), read once.
    pub async fn load() -> Result<AwsSetup, BoxError> {
        Ok(AwsSetup::load().await.map_err(|e| format!("configuration: {e}"))?)
    }

    /// Models read straight from the bucket into memory: the model lives in memory anyway, and
    /// a local copy would be a second registry to keep consistent.
    pub async fn bucket_slot(aws: &AwsSetup, bucket: &str, config: &Config) -> ModelSlot {
        let timeouts = aws.timeouts().get(Service::S3);
        let s3 =
            artifacts::s3::client(&super::s3_config(aws.shared(), timeouts, config.model_sync_timeout()));
        let objects = Arc::new(artifacts::S3Store::new(s3, bucket.to_owned()));
        ModelSlot::bucket(objects, config.model_sync_timeout()).await
    }

    /// Personalize Runtime has its own budget (PERSONALIZE_TIMEOUT_MS, one attempt): see `client_config`.
    pub fn personalize(aws: &AwsSetup, config: &Config) -> Arc<dyn Recommender> {
        let client = aws_sdk_personalizeruntime::Client::from_conf(client_config(
            aws.shared(),
            config.personalize_timeout(),
        ));
        tracing::info!(
            campaign = config.campaign_arn.as_deref().unwrap_or("-"),
            ranking_campaign = config.ranking_campaign_arn.as_deref().unwrap_or("-"),
            timeout_ms = config.personalize_timeout_ms,
            "answering from Personalize"
        );
        Arc::new(PersonalizeRecommender::new(
            client,
            config.campaign_arn.clone(),
            config.ranking_campaign_arn.clone(),
            config.personalize_timeout(),
        ))
    }

    pub(super) fn bounded(s3: ClientTimeouts, sync_timeout: Duration) -> ClientTimeouts {
        ClientTimeouts {
            connect: s3.connect.min(sync_timeout),
            attempt: s3.attempt.min(sync_timeout),
            operation: s3.operation.min(sync_timeout),
        }
    }

    pub(super) fn apply(t: ClientTimeouts, base: &SdkConfig) -> SdkConfig {
        t.apply(base)
    }
}

/// Without the `aws` feature: a configuration that names an AWS resource is refused at start,
/// saying how to get a build that has the adapter, instead of being silently ignored.
#[cfg(not(feature = "aws"))]
mod aws {
    use std::sync::Arc;

    use super::BoxError;
    use crate::backends::embedded::ModelSlot;
    use crate::config::Config;
    use crate::port::Recommender;

    /// Never built: `load` refuses first.
    pub enum Unavailable {}

    pub async fn load() -> Result<Unavailable, BoxError> {
        Err("PERSONALIZE_CAMPAIGN_ARN, PERSONALIZE_RANKING_CAMPAIGN_ARN or DATA_BUCKET is set, but this \
             ranking-api was built without its AWS adapters: build it with `--features aws` (the Lambda \
             build has them)"
            .into())
    }

    pub async fn bucket_slot(never: &Unavailable, _: &str, _: &Config) -> ModelSlot {
        match *never {}
    }

    pub fn personalize(never: &Unavailable, _: &Config) -> Arc<dyn Recommender> {
        match *never {}
    }
}

/// The S3 client's bounds for the model sync: the workspace's S3 timeouts (`S3_*_TIMEOUT_MS`), each
/// cut to the sync's own deadline (`MODEL_SYNC_TIMEOUT_MS`), which no call of it may outlast.
#[cfg(feature = "aws")]
pub fn s3_config(
    base: &aws_config::SdkConfig,
    s3: aws_failure::timeouts::ClientTimeouts,
    sync_timeout: std::time::Duration,
) -> aws_config::SdkConfig {
    aws::apply(aws::bounded(s3, sync_timeout), base)
}

/// The whole program: `main` only parses the command line and calls this.
pub async fn run(cli: Cli) -> Result<(), BoxError> {
    let lambda = in_lambda();
    init_tracing(lambda);
    if let Some(Command::SeedDemo { students, classes, seed }) = cli.command {
        let store = EmbeddedStore::open_in(&cli.config.data_dir)?;
        let data = store::demo::generate(&store::demo::DemoSpec { students, classes, seed });
        let written = store.put_many_blocking(&data.interactions)?;
        tracing::info!(written, students, classes, path = %store.path().display(), "demo data seeded");
        return Ok(());
    }

    let (state, _store) = build_state(&cli.config, lambda).await?;
    let app = router(state);
    if lambda {
        use tower::ServiceExt;
        return lambda_http::run(app.map_request(crate::routes::strip_stage)).await;
    }
    let listener = tokio::net::TcpListener::bind(cli.config.addr).await.map_err(|e| {
        format!("cannot listen on {}: {e} (choose another with --addr HOST:PORT)", cli.config.addr)
    })?;
    tracing::info!(addr = %listener.local_addr()?, "listening: try GET /ranking/s-0001");
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = terminate => {} }
    tracing::info!("shutting down");
}

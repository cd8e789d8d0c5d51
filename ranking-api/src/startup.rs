//! Start-up: read the configuration once, build the backends, then serve through
//! Lambda or a local socket.

use std::path::PathBuf;
use std::sync::Arc;

use store::embedded::EmbeddedStore;
use tracing_subscriber::EnvFilter;

use crate::backends::embedded::{EmbeddedRecommender, ModelFallback, ModelSlot};
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

/// Where the model the embedded recommender serves comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Models {
    /// `models/` in the data bucket, read straight into memory.
    Bucket(String),
    /// `$DATA_DIR/models`, where `training-export run` publishes.
    Directory(PathBuf),
    /// Neither: in Lambda without `DATA_BUCKET`.
    Nothing,
}

/// Who answers `GET /ranking/{userId}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answers {
    Personalize { campaign: Option<String>, ranking_campaign: Option<String> },
    Embedded,
    Nobody,
}

/// Where the popular items of a graceful answer come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Popular {
    /// The embedded store's counts, as fresh as the store.
    Store,
    /// The newest model's.
    Model,
    Nothing,
}

/// Which adapter serves each port. [`describe`](Composition::describe) and [`build_state`]
/// both read this one decision, so what the start-up log says is what runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composition {
    /// The embedded store (`$DATA_DIR/store.db`): local runs only; Lambda never has one.
    pub store: Option<PathBuf>,
    pub models: Models,
    pub answers: Answers,
    pub popular: Popular,
}

impl Composition {
    pub fn of(config: &Config, lambda: bool) -> Self {
        let store = (!lambda).then(|| config.data_dir.join(store::embedded::FILE_NAME));
        let models = match (&config.data_bucket, &store) {
            (Some(bucket), _) => Models::Bucket(bucket.clone()),
            (None, Some(_)) => Models::Directory(config.data_dir.join("models")),
            (None, None) => Models::Nothing,
        };
        let answers = if config.uses_personalize() {
            Answers::Personalize {
                campaign: config.campaign_arn.clone(),
                ranking_campaign: config.ranking_campaign_arn.clone(),
            }
        } else if models != Models::Nothing {
            Answers::Embedded
        } else {
            Answers::Nobody
        };
        let popular = match (&store, &models) {
            (Some(_), _) => Popular::Store,
            (None, Models::Nothing) => Popular::Nothing,
            (None, _) => Popular::Model,
        };
        Self { store, models, answers, popular }
    }

    pub fn needs_aws(&self) -> bool {
        matches!(self.models, Models::Bucket(_)) || matches!(self.answers, Answers::Personalize { .. })
    }

    /// One line per port saying which adapter serves it.
    pub fn describe(&self) -> Vec<String> {
        vec![
            match &self.store {
                Some(file) => format!("interactions: embedded store {}", file.display()),
                None => "interactions: none (Lambda)".to_owned(),
            },
            match &self.models {
                Models::Bucket(b) => format!("models: S3 bucket {b}"),
                Models::Directory(d) => format!("models: directory {}", d.display()),
                Models::Nothing => "models: none (DATA_BUCKET is unset)".to_owned(),
            },
            match &self.answers {
                Answers::Personalize { campaign, ranking_campaign } => format!(
                    "answers: Personalize (campaign {}, ranking campaign {})",
                    campaign.as_deref().unwrap_or("-"),
                    ranking_campaign.as_deref().unwrap_or("-")
                ),
                Answers::Embedded => "answers: the embedded recommender".to_owned(),
                Answers::Nobody => {
                    "answers: nobody (neither a Personalize campaign nor DATA_BUCKET)".to_owned()
                }
            },
            match &self.popular {
                Popular::Store => "popular items: the embedded store".to_owned(),
                Popular::Model => "popular items: the newest model".to_owned(),
                Popular::Nothing => "popular items: none".to_owned(),
            },
        ]
    }
}

/// Builds everything the router needs, as [`Composition::of`] decides. Local runs get the
/// embedded store under `DATA_DIR` (seeded with demo data when empty) and models from
/// `$DATA_DIR/models`; with `DATA_BUCKET`, models come from the bucket instead. Lambda never seeds.
pub async fn build_state(
    config: &Config,
    lambda: bool,
) -> Result<(AppState, Option<EmbeddedStore>), BoxError> {
    let composition = Composition::of(config, lambda);
    for line in composition.describe() {
        tracing::info!("{line}");
    }
    let aws = if composition.needs_aws() { Some(aws::load().await?) } else { None };
    let aws = || aws.as_ref().expect("loaded whenever the composition has an AWS adapter");

    let store = match &composition.store {
        Some(path) => {
            let store = EmbeddedStore::open(path)?;
            if !config.no_demo_seed
                && let Some(written) = store::demo::seed_if_empty(&store)?
            {
                tracing::info!(
                    interactions = written,
                    path = %store.path().display(),
                    "the data directory was empty: seeded the demo dataset (600 students, 48 classes)"
                );
            }
            Some(store)
        }
        None => None,
    };
    // The popularity snapshot loads in the background (its first refresh runs at once):
    // reading a large store must not delay the first answer, which the model gives.
    let popularity = SharedPopularity::default();

    // Nothing a model file, `LATEST` or the bucket holds (or fails to answer) stops the start:
    // the slot stays empty or on an older version, `/health` says why, a refresh recovers.
    let slot = match &composition.models {
        Models::Bucket(bucket) => Some(Arc::new(aws::bucket_slot(aws(), bucket, config).await)),
        Models::Directory(dir) => {
            let slot = Arc::new(ModelSlot::local(dir).await);
            if let Some(problem) = slot.problem() {
                // A broken model directory is the pipeline's to fix; training over it would hide that.
                tracing::warn!(
                    kind = %problem.kind,
                    object = %problem.object,
                    "no usable model in the model directory: answering from popular items until a good \
                     version is published (GET /health says why)"
                );
            } else if let Some(store) = &store
                && slot.current().is_none()
                && store.count_blocking()? > 0
            {
                tracing::info!(
                    "no model yet: running the pipeline once in the background (as `training-export run` would)"
                );
                let (data_dir, slot) = (config.data_dir.clone(), slot.clone());
                tokio::spawn(async move {
                    match first_model(&data_dir, &slot).await {
                        Ok(version) => tracing::info!(%version, "first model trained and published"),
                        Err(e) => {
                            tracing::warn!(error = %e, "no first model; answering from popular items")
                        }
                    }
                });
            }
            Some(slot)
        }
        Models::Nothing => None,
    };
    if let Some(slot) = &slot {
        slot.refresh_in_background(config.refresh_every());
    }

    let backend: Option<Arc<dyn Recommender>> = match (&composition.answers, &slot) {
        (Answers::Personalize { .. }, _) => Some(aws::personalize(aws(), config)),
        (Answers::Embedded, Some(slot)) => {
            tracing::info!(
                answer_cache_mb = config.answer_cache_mb,
                "answering from the embedded recommender"
            );
            Some(Arc::new(
                EmbeddedRecommender::new(slot.clone()).with_answer_cache(config.answer_cache_bytes()),
            ))
        }
        (Answers::Embedded, None) => unreachable!("the embedded recommender is chosen only with models"),
        (Answers::Nobody, _) => {
            tracing::error!(
                "neither a Personalize campaign nor DATA_BUCKET is configured: no backend, no fallback data"
            );
            None
        }
    };

    let fallback: Arc<dyn Fallback> = match (&composition.popular, &slot) {
        (Popular::Model, Some(slot)) => Arc::new(ModelFallback::new(slot.clone())),
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

/// A fresh data directory's first model comes from one run of the pipeline over the embedded
/// adapters: the same export (CSV; this build writes no Parquet), the same validation and
/// quality gate, the same registry as `training-export run`, whose later runs replace it.
async fn first_model(data_dir: &std::path::Path, slot: &ModelSlot) -> Result<String, BoxError> {
    use training_export::pipeline::{Deadline, Request};
    let pipeline =
        training_export::app::build(&training_export::config::Config::embedded(data_dir), false).await?;
    let response = pipeline.handle(Request::run("ranking-api", None), Deadline::none()).await?;
    let run = response.run.as_ref();
    if response.exit_code() != 0 || run.is_some_and(|r| r.status != "Done") {
        return Err(format!(
            "the pipeline run {} ended {}: {}",
            run.map_or("-", |r| r.run_id.as_str()),
            run.map_or("without a run", |r| r.status),
            run.and_then(|r| r.reason.clone()).unwrap_or(response.message)
        )
        .into());
    }
    slot.refresh().await?;
    slot.current().map(|m| m.info().version.clone()).ok_or_else(|| "the run published no model".into())
}

/// The AWS adapters (Personalize Runtime, models from the bucket), in builds with the `aws` feature.
#[cfg(feature = "aws")]
mod aws {
    use std::sync::Arc;

    use aws_failure::config::AwsSetup;
    use aws_failure::timeouts::Service;

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
    aws_failure::timeouts::ClientTimeouts {
        connect: s3.connect.min(sync_timeout),
        attempt: s3.attempt.min(sync_timeout),
        operation: s3.operation.min(sync_timeout),
    }
    .apply(base)
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn config(args: &[&str]) -> Config {
        Cli::try_parse_from(["ranking-api", "--data-dir", "/d"].iter().chain(args)).unwrap().config
    }

    #[test]
    fn one_choice_decides_what_runs_and_what_the_log_says() {
        let local = Composition::of(&config(&[]), false);
        assert_eq!(local.store, Some(PathBuf::from("/d/store.db")));
        assert_eq!(local.models, Models::Directory(PathBuf::from("/d/models")));
        assert_eq!((&local.answers, &local.popular), (&Answers::Embedded, &Popular::Store));
        assert!(!local.needs_aws());

        let lambda = Composition::of(&config(&["--data-bucket", "b"]), true);
        assert_eq!(lambda.store, None, "Lambda never has an embedded store");
        assert_eq!(lambda.models, Models::Bucket("b".into()));
        assert_eq!((&lambda.answers, &lambda.popular), (&Answers::Embedded, &Popular::Model));
        assert!(lambda.needs_aws());
        assert!(lambda.describe().contains(&"models: S3 bucket b".to_owned()), "{:?}", lambda.describe());

        let bare = Composition::of(&config(&[]), true);
        assert_eq!(
            (&bare.models, &bare.answers, &bare.popular),
            (&Models::Nothing, &Answers::Nobody, &Popular::Nothing)
        );

        let arn = "arn:aws:personalize:eu-west-1:123456789012:campaign/c";
        let personalize = Composition::of(&config(&["--campaign-arn", arn]), false);
        assert_eq!(
            personalize.answers,
            Answers::Personalize { campaign: Some(arn.into()), ranking_campaign: None }
        );
        assert!(personalize.needs_aws());
        assert_eq!(personalize.describe().len(), 4, "one line per port");
    }
}

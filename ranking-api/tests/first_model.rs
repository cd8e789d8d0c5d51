//! A fresh data directory's first model comes from one run of training-export's pipeline over the
//! embedded adapters, not from a training path of the API's own: the run is recorded, the export is
//! the Personalize CSV with its manifest, and the pipeline's validation
//! decides, so a store too small for Personalize's rules gets no model.

mod common;

use std::time::Duration;

use clap::Parser;
use common::*;
use ranking_api::router;
use training_export::run::RunState;
use training_export::runs::{EmbeddedRunStore, RunStore};

async fn start(dir: &std::path::Path, seed: bool) -> axum::Router {
    let dir = dir.to_str().unwrap();
    let mut args = vec!["ranking-api", "--data-dir", dir, "--refresh-seconds", "1"];
    if !seed {
        args.push("--no-demo-seed");
    }
    let cli = ranking_api::config::Cli::try_parse_from(args).unwrap();
    let (state, _store) = ranking_api::startup::build_state(&cli.config, false).await.unwrap();
    router(state)
}

async fn runs(dir: &std::path::Path) -> Vec<training_export::run::Run> {
    EmbeddedRunStore::open(&dir.join(store::embedded::FILE_NAME)).unwrap().recent(10).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_data_directory_gets_its_first_model_from_one_pipeline_run() {
    let dir = tempfile::tempdir().unwrap();
    let app = start(dir.path(), true).await;

    let mut answer = serde_json::Value::Null;
    for _ in 0..600 {
        answer = get(app.clone(), "/ranking/s-0001?numResults=3").await.1;
        if answer["source"] == "embedded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(answer["source"], "embedded", "no model within two minutes: {answer}");

    let runs = runs(dir.path()).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0];
    assert_eq!((run.trigger.as_str(), &run.state), ("ranking-api", &RunState::Done), "{run:?}");
    let deployed = run.deploy.as_ref().expect("the run deployed").target.clone();
    let latest = std::fs::read_to_string(dir.path().join("models/LATEST")).unwrap();
    assert_eq!(latest.trim(), deployed, "the model served is the one the run deployed");

    let export = dir.path().join("exports").join(&run.run_id);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(export.join("manifest.json")).unwrap()).unwrap();
    assert!(export.join("interactions.csv").is_file());
    // The README's build links the pipeline without Parquet; a workspace-wide build (these tests under
    // `cargo nextest run --workspace`) unifies training-export's features and has it. Either way the
    // manifest says what the export holds.
    assert_eq!(export.join("interactions.parquet").exists(), manifest.get("parquet").is_some(), "{manifest}");
    assert_eq!(manifest["rows"], run.export.as_ref().unwrap().rows);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_too_small_for_personalize_gets_no_first_model() {
    let data = test_data(ROWS);
    let app = start(data.dir.path(), false).await;

    let mut runs_seen = Vec::new();
    for _ in 0..300 {
        runs_seen = runs(data.dir.path()).await;
        if runs_seen.first().is_some_and(|r| r.state.is_terminal()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let run = runs_seen.first().expect("the API started a pipeline run");
    assert!(matches!(&run.state, RunState::Failed { reason, .. } if reason.contains("users")), "{run:?}");
    assert!(!data.dir.path().join("models/LATEST").exists(), "no model was published");
    let (status, answer) = get(app, "/ranking/u1").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["source"].as_str(), answer["fallback"]["reason"].as_str()),
        (Some("fallback"), Some("no_model"))
    );
}

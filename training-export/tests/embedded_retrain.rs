//! The local default end to end: an empty data directory is seeded with the demo data,
//! `run` exports it, trains the embedded recommender on the exported CSV, gates it and
//! publishes it in `$DATA_DIR/models` where the ranking API looks; `rollback` puts the
//! previous version back.

use std::time::{Duration, SystemTime};

use clap::Parser;
use serde_json::json;
use training_export::app;
use training_export::config::Config;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    config: Config,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_trains_gates_and_publishes_an_embedded_model_and_rollback_restores_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let config = Args::try_parse_from(["t", "--data-dir", dir.path().to_str().unwrap()]).unwrap().config;
    let pipeline = app::build(&config, false).await.unwrap();
    let deadline = SystemTime::now() + Duration::from_secs(900);
    let registry = recommender::ModelRegistry::in_dir(dir.path().join("models"));

    let first = app::handle_lambda(&pipeline, json!({"action": "run"}), deadline).await.unwrap().run.unwrap();
    assert_eq!(first.status, "Done", "{first:?}");
    let first_version = first.deployed.clone().expect("a Done run names what it deployed");
    assert_eq!(registry.latest().await.unwrap().unwrap().as_str(), first_version);
    let (_, live) = registry.load_latest().await.unwrap();
    assert!(
        live.n_users() >= 500 && live.n_items() == 48,
        "{} users, {} items",
        live.n_users(),
        live.n_items()
    );
    let gate = first.gate.unwrap();
    assert_eq!(gate.live, None, "nothing was live before the first model");
    assert!(gate.candidate.is_some_and(|ndcg| ndcg > 0.0), "{gate:?}");
    assert!(
        !dir.path().join("models").join(".candidates").exists(),
        "candidates are kept outside the registry directory"
    );

    // More data, a second model: gated against the first, which stays as the rollback target.
    let store = store::embedded::EmbeddedStore::open_in(dir.path()).unwrap();
    let more = store::demo::generate(&store::demo::DemoSpec { seed: 7, ..store::demo::DemoSpec::default() });
    let fresh: Vec<_> = more
        .interactions
        .into_iter()
        .map(|mut i| {
            i.event_id = schemas::EventId::parse(format!("more-{}", i.event_id)).unwrap();
            i
        })
        .collect();
    store.put_many_blocking(&fresh).unwrap();
    let second =
        app::handle_lambda(&pipeline, json!({"action": "run"}), deadline).await.unwrap().run.unwrap();
    let gate = second.gate.clone().unwrap();
    assert!(gate.live.is_some() && gate.candidate.is_some(), "{gate:?}");
    if second.status == "Done" {
        let second_version = second.deployed.unwrap();
        assert_ne!(second_version, first_version);
        assert_eq!(registry.latest().await.unwrap().unwrap().as_str(), second_version);
        let rollback = app::handle_lambda(&pipeline, json!({"action": "rollback"}), deadline)
            .await
            .unwrap()
            .run
            .unwrap();
        assert_eq!(rollback.status, "Done", "{rollback:?}");
        assert_eq!(registry.latest().await.unwrap().unwrap().as_str(), first_version);
    } else {
        // The gate may refuse a model that validates worse; then the first stays live.
        assert_eq!(second.status, "Rejected", "{second:?}");
        assert_eq!(registry.latest().await.unwrap().unwrap().as_str(), first_version);
    }
}

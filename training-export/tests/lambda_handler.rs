//! The Lambda handler on the local wiring: payloads as the Scheduler and people send
//! them, and a malformed one refused with a reason Lambda reports as not retryable.

use std::time::{Duration, SystemTime};

use clap::Parser;
use serde_json::json;
use training_export::app;
use training_export::config::Config;
use training_export::pipeline::Outcome;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    config: Config,
}

async fn local_pipeline(dir: &std::path::Path) -> training_export::pipeline::Pipeline {
    let config = Args::try_parse_from(["t", "--data-dir", dir.to_str().unwrap()]).unwrap().config;
    app::build(&config, false).await.unwrap()
}

#[tokio::test]
async fn scheduler_and_manual_payloads_drive_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = local_pipeline(dir.path()).await;
    let deadline = SystemTime::now() + Duration::from_secs(900);

    let idle = app::handle_lambda(&pipeline, json!({"action": "advance"}), deadline).await.unwrap();
    assert_eq!(idle.outcome, Outcome::Idle);

    // An empty data directory gets the demo data, so the export has something to export.
    let export = app::handle_lambda(&pipeline, json!({"action": "export"}), deadline).await.unwrap();
    let run = export.run.unwrap();
    assert_eq!((run.status, run.trigger.as_str()), ("Done", "manual"));
    assert!(run.rows.unwrap() > 1_000);
    assert!(dir.path().join(format!("exports/{}/manifest.json", run.run_id)).is_file());

    let status = app::handle_lambda(&pipeline, json!({"action": "status"}), deadline).await.unwrap();
    assert_eq!(status.runs[0].run_id, run.run_id);
    let events = std::fs::read_to_string(dir.path().join(app::EVENTS_FILE)).unwrap();
    assert!(events.contains(&run.run_id) && events.contains("\"status\":\"Done\""), "{events}");
}

#[tokio::test]
async fn a_deadline_too_close_starts_no_step() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = local_pipeline(dir.path()).await;
    // 10 s left, under the 60 s safety margin: the run is created and left for the next tick.
    let deadline = SystemTime::now() + Duration::from_secs(10);
    let run = app::handle_lambda(&pipeline, json!({"action": "run", "trigger": "schedule"}), deadline)
        .await
        .unwrap()
        .run
        .unwrap();
    assert_eq!((run.status, run.trigger.as_str()), ("Exporting", "schedule"));
}

#[tokio::test]
async fn a_malformed_payload_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = local_pipeline(dir.path()).await;
    let deadline = SystemTime::now() + Duration::from_secs(900);
    for payload in [json!({"action": "retrain"}), json!({"detail-type": "Scheduled Event"}), json!("run")] {
        let err = app::handle_lambda(&pipeline, payload.clone(), deadline).await.unwrap_err();
        assert!(err.to_string().contains("is not a request"), "{err}");
        let diagnostic = lambda_runtime::Diagnostic::from(err);
        assert_eq!(diagnostic.error_type, "NonRetryable.BadPayload", "{payload}");
    }
}

#[tokio::test]
async fn lambda_error_types_say_whether_invoking_again_can_help() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = local_pipeline(dir.path()).await;
    let deadline = SystemTime::now() + Duration::from_secs(900);
    let err = app::handle_lambda(&pipeline, json!({"action": "rollback"}), deadline).await.unwrap_err();
    assert!(!err.is_retryable());
    let diagnostic = lambda_runtime::Diagnostic::from(err);
    assert_eq!(diagnostic.error_type, "NonRetryable.NothingToRollBack");
    assert!(diagnostic.error_message.contains("nothing to roll back"), "{}", diagnostic.error_message);
}

#[tokio::test]
async fn a_run_started_for_another_backend_fails_instead_of_mixing_them() {
    use training_export::run::{Backend, Run, RunKind, RunState, Step};
    let dir = tempfile::tempdir().unwrap();
    let pipeline = local_pipeline(dir.path()).await;
    // Started with Personalize configured; now the embedded backend is.
    let run = Run::new(
        "20261122T020000000Z-abcd".into(),
        RunKind::Full,
        Backend::Personalize,
        "t",
        RunState::Imported,
        // Recent: a run older than the age limit would be given up on instead.
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64,
    );
    pipeline.runs.create(&run).await.unwrap();
    let deadline = SystemTime::now() + Duration::from_secs(900);
    let advanced = app::handle_lambda(&pipeline, json!({"action": "advance"}), deadline).await.unwrap();
    assert_eq!(advanced.outcome, Outcome::Advanced);
    let stored = pipeline.runs.get(&run.run_id).await.unwrap().unwrap();
    let RunState::Failed { step, reason } = stored.state else { panic!("{:?}", stored.state) };
    assert_eq!(step, Step::Train);
    assert!(reason.contains("was started for Personalize, which is not configured now"), "{reason}");
    assert_eq!(advanced.exit_code(), 1, "a failed run exits 1");
}

//! The crash hook the end-to-end tests use (`TRAINING_EXPORT_CRASH_AFTER=<state>`): the
//! CLI really dies (SIGABRT) right after the run is saved in that state, holding the
//! lease a crashed invocation holds; once the lease has expired, `advance` carries on
//! from the saved state without redoing the export.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output};

use training_export::run::RunState;
use training_export::runs::{EmbeddedRunStore, RunStore};

fn cli(data_dir: &Path, args: &[&str], crash_after: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_training-export"));
    command
        .args(args)
        .env("DATA_DIR", data_dir)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("TRAINING_EXPORT_CRASH_AFTER");
    for name in
        ["INTERACTIONS_TABLE", "DATA_BUCKET", "RUNS_TABLE", "EVENT_BUS_NAME", "PERSONALIZE_CAMPAIGN_ARN"]
    {
        command.env_remove(name);
    }
    if let Some(state) = crash_after {
        command.env("TRAINING_EXPORT_CRASH_AFTER", state);
    }
    command.output().expect("run the training-export binary")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn a_crash_after_a_saved_state_kills_the_process_and_advance_resumes_there() {
    let dir = tempfile::tempdir().unwrap();

    let crashed = cli(dir.path(), &["export"], Some("Exported"));
    assert_eq!(crashed.status.signal(), Some(libc_sigabrt()), "{:?}\n{}", crashed.status, stderr(&crashed));
    assert!(stderr(&crashed).contains("TRAINING_EXPORT_CRASH_AFTER: aborting"), "{}", stderr(&crashed));
    assert!(crashed.stdout.is_empty(), "a crashed invocation answers nothing");

    let runs = EmbeddedRunStore::open(&dir.path().join(store::embedded::FILE_NAME)).unwrap();
    let mut run = runs.active().await.unwrap().expect("the crashed run is still active");
    assert_eq!(run.state, RunState::Exported, "saved before the crash");
    assert!(run.lease_until.is_some(), "a crash does not release the lease");
    let manifest = dir.path().join("exports").join(&run.run_id).join("manifest.json");
    let written =
        std::fs::metadata(&manifest).expect("the export finished before the crash").modified().unwrap();

    // While the dead invocation's lease lasts, the next one leaves the run alone.
    let held = cli(dir.path(), &["advance"], None);
    assert!(held.status.success(), "{}", stderr(&held));
    assert!(stderr(&held).contains("another invocation is advancing this run"), "{}", stderr(&held));
    assert_eq!(runs.get(&run.run_id).await.unwrap().unwrap().state, RunState::Exported);

    // Sixteen minutes later (the lease moved into the past), it carries on from Exported.
    run.lease_until = Some(0);
    runs.save(&mut run).await.unwrap();
    let resumed = cli(dir.path(), &["advance"], None);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let done = runs.get(&run.run_id).await.unwrap().unwrap();
    assert_eq!(done.state, RunState::Done);
    assert_eq!(done.lease_until, None);
    assert!(stderr(&resumed).contains(r#"from="Exported" to="Done""#), "{}", stderr(&resumed));
    assert_eq!(
        std::fs::metadata(&manifest).unwrap().modified().unwrap(),
        written,
        "the export was not redone"
    );
}

#[test]
fn a_misspelt_state_stops_the_cli_before_it_touches_anything() {
    let dir = tempfile::tempdir().unwrap();
    let refused = cli(dir.path(), &["export"], Some("exported"));
    assert_eq!(refused.status.code(), Some(2), "clap's usage error: {}", stderr(&refused));
    assert!(stderr(&refused).contains("is not a run state"), "{}", stderr(&refused));
    assert!(!dir.path().join(store::embedded::FILE_NAME).exists(), "nothing was written");
}

/// SIGABRT, which `std::process::abort` raises (6 on every Unix this runs on).
fn libc_sigabrt() -> i32 {
    6
}

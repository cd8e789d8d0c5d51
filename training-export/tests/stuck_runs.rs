//! Runs that cannot get stuck, with the real CLI binary: a table export killed in the
//! middle of converting a file resumes there and gives the scan's rows; a step that keeps
//! dying ends the run `Failed` once its attempts are spent, the invocation exits with an
//! error, and the next run starts; `cancel` ends an active run on demand.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output};

use training_export::run::{Run, RunState, Step};
use training_export::runs::{EmbeddedRunStore, RunStore};

const SIGABRT: i32 = 6;

fn cli(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_training-export"));
    command.args(args).env("DATA_DIR", data_dir).env("RUST_LOG", "info").env("NO_COLOR", "1");
    for name in [
        "TRAINING_EXPORT_CRASH_AFTER",
        "TABLE_EXPORT_ABOVE_BYTES",
        "STEP_MAX_ATTEMPTS",
        "RUN_MAX_AGE_HOURS",
        "INTERACTIONS_TABLE",
        "DATA_BUCKET",
        "RUNS_TABLE",
        "EVENT_BUS_NAME",
        "PERSONALIZE_CAMPAIGN_ARN",
    ] {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    command.output().expect("run the training-export binary")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The demo data (a few thousand interactions): several data files of 1,000 items.
fn seeded() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = store::embedded::EmbeddedStore::open_in(dir.path()).unwrap();
    store::demo::seed_if_empty(&store).unwrap();
    dir
}

fn runs(dir: &Path) -> EmbeddedRunStore {
    EmbeddedRunStore::open(&dir.join(store::embedded::FILE_NAME)).unwrap()
}

/// As if the dead invocation's lease had run out (sixteen minutes later).
async fn expire_lease(runs: &EmbeddedRunStore, run_id: &str) -> Run {
    let mut run = runs.get(run_id).await.unwrap().unwrap();
    run.lease_until = Some(0);
    runs.save(&mut run).await.unwrap();
    run
}

/// Every data row of the CSV files under `folder`, counted (the header once per file, left out).
fn csv_rows(files: impl IntoIterator<Item = std::path::PathBuf>) -> BTreeMap<String, usize> {
    let mut rows = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines().skip(1) {
            *rows.entry(line.to_owned()).or_default() += 1;
        }
    }
    rows
}

fn parts(folder: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(folder).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

#[tokio::test]
async fn a_table_export_killed_mid_file_resumes_there_and_gives_the_scans_rows() {
    let dir = seeded();
    let table_path = [("TABLE_EXPORT_ABOVE_BYTES", "0")];

    let crashed =
        cli(dir.path(), &["export"], &[table_path[0], ("TRAINING_EXPORT_CRASH_AFTER", "Converting")]);
    assert_eq!(crashed.status.signal(), Some(SIGABRT), "{:?}\n{}", crashed.status, stderr(&crashed));
    let runs = runs(dir.path());
    let run = runs.active().await.unwrap().expect("the killed run is still active");
    assert_eq!(run.state, RunState::Exporting);
    let record = run.table_export.clone().expect("the table export was started and recorded");
    assert!(record.data_files.unwrap_or(0) >= 3, "several data files: {:?}", record.data_files);
    assert_eq!(record.converted, 0, "killed in the middle of the first file");
    let csv_folder = dir.path().join("exports").join(&run.run_id).join("csv");
    // The killed file's part may be there (parts appear whole); the manifest is not.
    assert!(!dir.path().join("exports").join(&run.run_id).join("manifest.json").exists());

    expire_lease(&runs, &run.run_id).await;
    let resumed = cli(dir.path(), &["advance"], &table_path);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let done = runs.get(&run.run_id).await.unwrap().unwrap();
    assert_eq!(done.state, RunState::Done, "{}", stderr(&resumed));
    let record = done.table_export.unwrap();
    assert_eq!(Some(record.converted), record.data_files);
    let table_rows = csv_rows(parts(&csv_folder));
    assert_eq!(
        Some(parts(&csv_folder).len() as u32),
        record.data_files,
        "one part per data file, no duplicate"
    );

    // The same table through the scan: the same multiset of rows.
    let scanned = cli(dir.path(), &["export"], &[("TABLE_EXPORT_ABOVE_BYTES", "off")]);
    assert!(scanned.status.success(), "{}", stderr(&scanned));
    let scan_run = runs.recent(1).await.unwrap().remove(0);
    assert_ne!(scan_run.run_id, run.run_id);
    assert!(scan_run.table_export.is_none(), "the scan path");
    let scan_rows = csv_rows([dir.path().join("exports").join(&scan_run.run_id).join("interactions.csv")]);
    assert!(scan_rows.values().sum::<usize>() > 3_000, "the demo data is all there");
    assert_eq!(table_rows, scan_rows);
}

#[tokio::test]
async fn a_step_that_keeps_dying_ends_the_run_failed_and_the_invocation_errs() {
    let dir = seeded();
    let dying = [
        ("TABLE_EXPORT_ABOVE_BYTES", "0"),
        ("TRAINING_EXPORT_CRASH_AFTER", "Converting"),
        ("STEP_MAX_ATTEMPTS", "2"),
    ];
    let runs = runs(dir.path());

    let first = cli(dir.path(), &["export"], &dying);
    assert_eq!(first.status.signal(), Some(SIGABRT), "{}", stderr(&first));
    let run_id = runs.active().await.unwrap().unwrap().run_id;
    // It started the table export and saw it complete before it died: that was progress.
    assert_eq!(runs.get(&run_id).await.unwrap().unwrap().attempts, 0);
    for attempts in 1..=2 {
        expire_lease(&runs, &run_id).await;
        let again = cli(dir.path(), &["advance"], &dying);
        assert_eq!(again.status.signal(), Some(SIGABRT), "{}", stderr(&again));
        let run = runs.get(&run_id).await.unwrap().unwrap();
        assert_eq!(run.attempts, attempts, "the dead invocation counted");
        assert_eq!(run.table_export.unwrap().converted, 0, "no file got through");
    }

    // The next invocation does not try a third time: the run ends, the invocation fails.
    expire_lease(&runs, &run_id).await;
    let third = cli(dir.path(), &["advance"], &dying);
    assert_eq!(third.status.code(), Some(1), "{}", stderr(&third));
    assert!(stderr(&third).contains(&format!("run {run_id} gave up at Export")), "{}", stderr(&third));
    let failed = runs.get(&run_id).await.unwrap().unwrap();
    let RunState::Failed { step, reason } = &failed.state else { panic!("{:?}", failed.state) };
    assert_eq!(*step, Step::Export);
    assert!(reason.contains("2 invocations at Exporting without progress"), "{reason}");
    assert!(reason.contains("a timeout or a crash"), "{reason}");
    assert_eq!(failed.lease_until, None);

    // It holds nothing up: the next run starts and finishes.
    let next = cli(dir.path(), &["export"], &[("TABLE_EXPORT_ABOVE_BYTES", "0")]);
    assert!(next.status.success(), "{}", stderr(&next));
    let latest = runs.recent(1).await.unwrap().remove(0);
    assert_ne!(latest.run_id, run_id);
    assert_eq!(latest.state, RunState::Done);
}

#[tokio::test]
async fn cancel_ends_the_active_run_and_the_next_one_starts() {
    let dir = seeded();
    let runs = runs(dir.path());
    let idle = cli(dir.path(), &["cancel"], &[]);
    assert!(idle.status.success(), "{}", stderr(&idle));
    assert!(String::from_utf8_lossy(&idle.stdout).contains("no active run to cancel"));

    // A run left active by a dead invocation, still holding its lease.
    let crashed = cli(dir.path(), &["export"], &[("TRAINING_EXPORT_CRASH_AFTER", "Exporting")]);
    assert_eq!(crashed.status.signal(), Some(SIGABRT), "{}", stderr(&crashed));
    let run_id = runs.active().await.unwrap().unwrap().run_id;
    let refused = cli(dir.path(), &["export"], &[]);
    assert_eq!(refused.status.code(), Some(2), "refused while it is active: {}", stderr(&refused));

    let wrong = cli(dir.path(), &["cancel", "--run-id", "20000101T000000Z-0000"], &[]);
    assert_eq!(wrong.status.code(), Some(1), "{}", stderr(&wrong));
    assert!(stderr(&wrong).contains("is not the active run"), "{}", stderr(&wrong));
    assert!(runs.get(&run_id).await.unwrap().unwrap().is_active(), "the wrong id cancels nothing");

    let cancelled = cli(dir.path(), &["cancel", "--run-id", &run_id, "--reason", "stuck export"], &[]);
    assert!(cancelled.status.success(), "{}", stderr(&cancelled));
    let answer: serde_json::Value = serde_json::from_slice(&cancelled.stdout).unwrap();
    assert_eq!(answer["outcome"], "cancelled");
    assert_eq!(answer["run"]["status"], "Failed");
    assert_eq!(answer["run"]["reason"], "cancelled by cli at Exporting: stuck export");
    assert!(runs.active().await.unwrap().is_none());

    let next = cli(dir.path(), &["export"], &[]);
    assert!(next.status.success(), "{}", stderr(&next));
    let status = cli(dir.path(), &["status"], &[]);
    let table = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(table.contains("cancelled by cli at Exporting: stuck export"), "{table}");
}

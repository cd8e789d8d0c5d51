//! Incremental table exports through the real pipeline, on the embedded adapters (the
//! store, the table exporter writing DynamoDB's layout, the run store, a directory for the
//! bucket) with Personalize behind its port as a fake that finishes every job at once.
//!
//! The first run exports the whole table and imports FULL; a later run exports what was
//! written since the last imported export (offline, an item's write time is its event
//! timestamp) and imports it INCREMENTAL; a delta too small to import falls back to a full
//! export within the run; a window is at most 24 h and the next run catches up.
//!
//! The runs happen within seconds, so each test moves the previous run's recorded export
//! time back (as if it had run hours ago) rather than waiting for the window to open.

mod common;

use common::FailOnce;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use artifacts::{DirectoryStore, ObjectStore};
use async_trait::async_trait;
use schemas::{EventId, EventType, Interaction, Timestamp};
use store::embedded::EmbeddedStore;
use training_export::backend::{JobStatus, PersonalizeBackend, PersonalizeSettings};
use training_export::events::LocalEvents;
use training_export::manifest::Manifest;
use training_export::personalize::{CampaignState, Personalize, PersonalizeError};
use training_export::pipeline::{Deadline, Pipeline, Request, Settings};
use training_export::run::{ExportWindow, ImportMode, Run, RunState, TrainingMode};
use training_export::runs::EmbeddedRunStore;
use training_export::table_export::embedded::EmbeddedTableExporter;
use training_export::table_export::{
    MAX_WINDOW_SECS, StartedExport, TableExportError, TableExportStatus, TableExporter, WINDOW_END_LAG_SECS,
};
use training_export::trainer::{ModelTrainer, ModelVersion, TrainerError};

const HOUR: i64 = 3600;

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Personalize whose jobs are ACTIVE at the first look; it keeps the imports it was asked for.
#[derive(Default)]
struct FakePersonalize {
    imports: Mutex<Vec<(String, String, ImportMode)>>,
    serving: Mutex<Option<String>>,
}

#[async_trait]
impl Personalize for FakePersonalize {
    async fn start_import(
        &self,
        name: &str,
        source: &str,
        mode: ImportMode,
    ) -> Result<String, PersonalizeError> {
        let mut imports = self.imports.lock().unwrap();
        if !imports.iter().any(|(n, _, _)| n == name) {
            imports.push((name.to_owned(), source.to_owned(), mode));
        }
        Ok(format!("arn:import/{name}"))
    }

    async fn import_status(&self, _: &str) -> Result<JobStatus, PersonalizeError> {
        Ok(JobStatus::Active)
    }

    async fn start_training(&self, name: &str, _: TrainingMode, _: i64) -> Result<String, PersonalizeError> {
        Ok(format!("arn:solution-version/{name}"))
    }

    async fn training_status(&self, _: &str) -> Result<JobStatus, PersonalizeError> {
        Ok(JobStatus::Active)
    }

    async fn metrics(&self, _: &str) -> Result<BTreeMap<String, f64>, PersonalizeError> {
        Ok(BTreeMap::from([("normalized_discounted_cumulative_gain_at_10".to_owned(), 0.3)]))
    }

    async fn campaign(&self) -> Result<CampaignState, PersonalizeError> {
        let serving = self.serving.lock().unwrap().clone();
        Ok(CampaignState { latest_update: serving.clone().map(|s| (s, JobStatus::Active)), serving })
    }

    async fn update_campaign(&self, version: &str) -> Result<(), PersonalizeError> {
        *self.serving.lock().unwrap() = Some(version.to_owned());
        Ok(())
    }
}

/// The fallback model's trainer: counts what it trained on.
#[derive(Default)]
struct CountingTrainer {
    trained: AtomicU32,
}

#[async_trait]
impl ModelTrainer for CountingTrainer {
    async fn train(&self, _: &Manifest, version: &str) -> Result<ModelVersion, TrainerError> {
        self.trained.fetch_add(1, Ordering::SeqCst);
        Ok(ModelVersion { version: version.to_owned(), metrics: BTreeMap::new() })
    }

    async fn live(&self) -> Result<Option<ModelVersion>, TrainerError> {
        Ok(None)
    }

    async fn publish(&self, _: &str) -> Result<(), TrainerError> {
        Ok(())
    }
}

/// `count` interactions of 60 students, one every `step` seconds from `from`; event ids
/// start at `first_id`.
fn rows(first_id: usize, count: usize, from: i64, step: i64) -> Vec<Interaction> {
    (0..count)
        .map(|k| {
            let n = first_id + k;
            Interaction {
                user_id: format!("student-{:03}", n % 60).parse().unwrap(),
                item_id: format!("cs-{:03}", n % 37).parse().unwrap(),
                timestamp: Timestamp::from_epoch_seconds(from + k as i64 * step).unwrap(),
                event_type: EventType::enrolled(),
                event_value: None,
                event_id: EventId::parse(format!("e-{n:07}")).unwrap(),
            }
        })
        .collect()
}

struct World {
    dir: tempfile::TempDir,
    store: EmbeddedStore,
    personalize: Arc<FakePersonalize>,
    trainer: Arc<CountingTrainer>,
    pipeline: Pipeline,
}

impl World {
    /// 1,500 interactions from ten days ago.
    fn new(items_per_file: usize) -> Self {
        Self::with_objects(items_per_file, |dir| Arc::new(DirectoryStore::new(dir)))
    }

    fn with_objects(items_per_file: usize, objects: impl FnOnce(PathBuf) -> Arc<dyn ObjectStore>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_in(&dir.path().join("data")).unwrap();
        store.put_many_blocking(&rows(0, 1_500, now() - 10 * 86_400, 60)).unwrap();
        let objects = objects(dir.path().join("objects"));
        let personalize = Arc::new(FakePersonalize::default());
        let trainer = Arc::new(CountingTrainer::default());
        let interactions: Arc<dyn store::InteractionSource> =
            Arc::new(EmbeddedStore::open_in(&dir.path().join("data")).unwrap());
        let exporter: Arc<dyn TableExporter> = Arc::new(
            EmbeddedTableExporter::new(interactions.clone(), objects.clone())
                .with_items_per_file(items_per_file),
        );
        let pipeline = Pipeline {
            interactions,
            objects: objects.clone(),
            runs: Arc::new(EmbeddedRunStore::open(&dir.path().join("runs.db")).unwrap()),
            events: Arc::new(LocalEvents::new(dir.path().join("events.jsonl"))),
            backend: Arc::new(PersonalizeBackend::new(
                personalize.clone(),
                objects,
                PersonalizeSettings::default(),
            )),
            fallback_models: Some(trainer.clone()),
            settings: Settings { table_export_above_bytes: Some(0), ..Settings::default() },
            progress: None,
            table_exporter: Some(exporter),
        };
        Self { dir, store, personalize, trainer, pipeline }
    }

    fn objects(&self) -> PathBuf {
        self.dir.path().join("objects")
    }

    /// A nightly run, advanced until it ends.
    async fn nightly(&self) -> Run {
        let answer = self.pipeline.handle(Request::run("schedule", None), Deadline::none()).await.unwrap();
        let run_id = answer.run.expect("a run").run_id;
        self.to_the_end(&run_id).await
    }

    async fn to_the_end(&self, run_id: &str) -> Run {
        for _ in 0..20 {
            let run = self.pipeline.runs.get(run_id).await.unwrap().unwrap();
            if !run.is_active() {
                return run;
            }
            self.pipeline.handle(Request::Advance {}, Deadline::none()).await.unwrap();
        }
        panic!("run {run_id} did not end");
    }

    /// Pretends `run`'s table export happened at `at`.
    async fn exported_at(&self, run: &Run, at: i64) {
        let mut stored = self.pipeline.runs.get(&run.run_id).await.unwrap().unwrap();
        stored.table_export.as_mut().expect("a table export").export_time = Some(at);
        self.pipeline.runs.save(&mut stored).await.unwrap();
    }

    fn last_import(&self) -> (String, String, ImportMode) {
        self.personalize.imports.lock().unwrap().last().cloned().expect("an import")
    }

    fn manifest(&self, run: &Run) -> Manifest {
        let prefix = &run.export.as_ref().expect("an export").prefix;
        Manifest::parse(&std::fs::read(self.objects().join(prefix).join("manifest.json")).unwrap()).unwrap()
    }
}

/// Every data row of the export's CSV parts as (user, item, timestamp), sorted.
fn csv_rows(objects: &Path, m: &Manifest) -> Vec<(String, String, i64)> {
    let mut out = Vec::new();
    for part in m.csv.objects() {
        let mut reader = csv::Reader::from_path(objects.join(&part.key)).unwrap();
        for record in reader.records() {
            let r = record.unwrap();
            out.push((r[0].to_owned(), r[1].to_owned(), r[2].parse().unwrap()));
        }
    }
    out.sort();
    out
}

fn expected(rows: &[Interaction]) -> Vec<(String, String, i64)> {
    let mut out: Vec<_> = rows
        .iter()
        .map(|i| (i.user_id.as_str().to_owned(), i.item_id.as_str().to_owned(), i.timestamp.epoch_seconds()))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn the_second_run_exports_and_imports_only_what_was_written_since_the_first() {
    let world = World::new(400);
    let first = world.nightly().await;
    assert_eq!(first.state, RunState::Done, "{first:?}");
    let record = first.table_export.clone().expect("the table-export path");
    assert_eq!(record.incremental, None, "nothing imported before: a full export");
    let exported_at = record.export_time.expect("the export time is recorded");
    assert!((now() - exported_at).abs() < 60, "{exported_at}");
    let (_, source, mode) = world.last_import();
    assert_eq!(mode, ImportMode::Full);
    assert!(source.ends_with(&format!("exports/{}/csv/", first.run_id)), "{source}");
    assert_eq!(world.trainer.trained.load(Ordering::SeqCst), 1);

    let from = now() - 2 * HOUR;
    world.exported_at(&first, from).await;
    let new = rows(10_000, 1_200, from + 30, 5);
    world.store.put_many_blocking(&new).unwrap();
    let second = world.nightly().await;
    assert_eq!(second.state, RunState::Done, "{second:?}");
    let record = second.table_export.clone().unwrap();
    let window = record.incremental.expect("an incremental export");
    assert_eq!(window.from, from, "from the first run's export time");
    assert!((now() - WINDOW_END_LAG_SECS - window.to).abs() < 60, "to now, less the lag: {window:?}");
    assert_eq!(record.export_time, Some(window.to), "the next window starts at this one's end");
    assert_eq!(record.replaced_incremental, None);

    let export = second.export.clone().unwrap();
    assert_eq!(export.incremental, Some(window));
    assert_eq!(export.rows, 1_200, "exactly the new rows");
    let m = world.manifest(&second);
    let scope = m.incremental.clone().expect("the manifest says delta-only");
    assert_eq!((scope.from, scope.to, scope.deletes_skipped), (window.from, window.to, 0));
    assert_eq!(csv_rows(&world.objects(), &m), expected(&new));
    assert_eq!(m.csv.parts.len(), 3, "1,200 rows at 400 a file");

    let (_, source, mode) = world.last_import();
    assert_eq!(mode, ImportMode::Incremental);
    assert!(source.ends_with(&format!("exports/{}/incremental/csv/", second.run_id)), "{source}");
    let fallback = second.fallback_model.clone().unwrap();
    assert_eq!(fallback.version, None);
    assert!(fallback.error.unwrap().contains("delta-only"), "the reason is recorded");
    assert_eq!(world.trainer.trained.load(Ordering::SeqCst), 1, "not trained on a delta");
}

#[tokio::test]
async fn a_delta_too_small_to_import_falls_back_to_a_full_export_in_the_same_run() {
    let world = World::new(400);
    let first = world.nightly().await;
    world.exported_at(&first, now() - 2 * HOUR).await;
    let new = rows(10_000, 10, now() - HOUR, 60);
    world.store.put_many_blocking(&new).unwrap();

    let second = world.nightly().await;
    assert_eq!(second.state, RunState::Done, "{second:?}");
    let record = second.table_export.clone().unwrap();
    assert_eq!(record.incremental, None, "the record is a full export's now");
    let why = record.replaced_incremental.expect("the fallback is recorded");
    assert!(why.contains("10 new rows"), "{why}");
    let incremental = world.objects().join(format!("exports/{}/incremental/manifest.json", second.run_id));
    assert_eq!(Manifest::parse(&std::fs::read(incremental).unwrap()).unwrap().rows, 10, "it was tried");

    let export = second.export.clone().unwrap();
    assert_eq!(export.incremental, None);
    assert_eq!(export.rows, 1_510, "the whole table: nothing skipped");
    let (_, source, mode) = world.last_import();
    assert_eq!(mode, ImportMode::Full, "10 new rows are too few for an INCREMENTAL import");
    assert!(source.ends_with(&format!("exports/{}/csv/", second.run_id)), "{source}");
    assert_eq!(world.trainer.trained.load(Ordering::SeqCst), 2, "a full export refreshes the fallback");
}

#[tokio::test]
async fn a_window_over_a_day_is_capped_and_the_next_run_catches_up() {
    let world = World::new(500);
    let first = world.nightly().await;
    let start = now() - 30 * HOUR;
    world.exported_at(&first, start).await;
    let day_one = rows(10_000, 1_100, start + 60, 60);
    let today = rows(20_000, 1_050, now() - 5 * HOUR, 10);
    world.store.put_many_blocking(&day_one).unwrap();
    world.store.put_many_blocking(&today).unwrap();

    let second = world.nightly().await;
    assert_eq!(second.state, RunState::Done, "{second:?}");
    let window = second.table_export.as_ref().unwrap().incremental.expect("incremental");
    assert_eq!((window.from, window.to), (start, start + MAX_WINDOW_SECS), "capped at 24 h");
    assert_eq!(csv_rows(&world.objects(), &world.manifest(&second)), expected(&day_one));

    let third = world.nightly().await;
    assert_eq!(third.state, RunState::Done, "{third:?}");
    let window = third.table_export.as_ref().unwrap().incremental.expect("incremental");
    assert_eq!(window.from, start + MAX_WINDOW_SECS, "from where the capped window ended");
    assert!((now() - WINDOW_END_LAG_SECS - window.to).abs() < 60, "caught up: {window:?}");
    assert_eq!(csv_rows(&world.objects(), &world.manifest(&third)), expected(&today));
    let modes: Vec<ImportMode> = world.personalize.imports.lock().unwrap().iter().map(|i| i.2).collect();
    assert_eq!(modes, [ImportMode::Full, ImportMode::Incremental, ImportMode::Incremental]);
}

#[tokio::test]
async fn an_export_only_run_exports_the_whole_table() {
    let world = World::new(400);
    let first = world.nightly().await;
    world.exported_at(&first, now() - 2 * HOUR).await;
    world.store.put_many_blocking(&rows(10_000, 1_200, now() - HOUR, 1)).unwrap();
    let answer =
        world.pipeline.handle(Request::Export { trigger: "t".into() }, Deadline::none()).await.unwrap();
    let run = world.to_the_end(&answer.run.unwrap().run_id).await;
    assert_eq!(run.table_export.unwrap().incremental, None);
    assert_eq!(run.export.unwrap().rows, 2_700);
}

#[tokio::test]
async fn an_incremental_conversion_resumes_at_the_file_it_stopped_on() {
    let world = World::with_objects(300, |dir| {
        Arc::new(FailOnce::new(DirectoryStore::new(dir), "incremental/parts/part-00002.json"))
    });
    let first = world.nightly().await;
    assert_eq!(first.state, RunState::Done, "{first:?}");
    world.exported_at(&first, now() - 2 * HOUR).await;
    let new = rows(10_000, 1_200, now() - HOUR, 2);
    world.store.put_many_blocking(&new).unwrap();

    let answer = world.pipeline.handle(Request::run("schedule", None), Deadline::none()).await.unwrap();
    let run_id = answer.run.unwrap().run_id;
    let stopped = world.pipeline.runs.get(&run_id).await.unwrap().unwrap();
    assert_eq!(stopped.state, RunState::Exporting);
    let record = stopped.table_export.clone().unwrap();
    assert!(record.incremental.is_some());
    assert_eq!((record.converted, record.data_files), (2, Some(4)), "files 0 and 1 checkpointed");
    assert!(stopped.last_error.as_deref().unwrap_or("").contains("injected"), "{:?}", stopped.last_error);
    let first_part = world.objects().join(format!("exports/{run_id}/incremental/csv/part-00000.csv"));
    let written = std::fs::metadata(&first_part).unwrap().modified().unwrap();

    let done = world.to_the_end(&run_id).await;
    assert_eq!(done.state, RunState::Done, "{done:?}");
    assert_eq!(std::fs::metadata(&first_part).unwrap().modified().unwrap(), written, "file 0 not redone");
    let m = world.manifest(&done);
    assert_eq!(m.rows, 1_200, "every new row once");
    assert_eq!(csv_rows(&world.objects(), &m), expected(&new));
    assert_eq!(world.last_import().2, ImportMode::Incremental);
}

/// Refuses every incremental export for good, as DynamoDB does a window PITR does not
/// cover (`InvalidExportTimeException`); full exports go through.
struct RefusingIncremental(EmbeddedTableExporter);

#[async_trait]
impl TableExporter for RefusingIncremental {
    async fn table_size_bytes(&self) -> Result<Option<u64>, TableExportError> {
        self.0.table_size_bytes().await
    }

    async fn start(
        &self,
        client_token: &str,
        s3_prefix: &str,
        window: Option<ExportWindow>,
    ) -> Result<StartedExport, TableExportError> {
        if window.is_some() {
            return Err(TableExportError {
                message: "InvalidExportTimeException: ExportFromTime is before the earliest restorable time"
                    .into(),
                retryable: false,
            });
        }
        self.0.start(client_token, s3_prefix, window).await
    }

    async fn status(&self, export_id: &str) -> Result<TableExportStatus, TableExportError> {
        self.0.status(export_id).await
    }
}

#[tokio::test]
async fn an_incremental_export_dynamodb_refuses_is_replaced_by_a_full_one() {
    let mut world = World::new(400);
    let first = world.nightly().await;
    world.exported_at(&first, now() - 2 * HOUR).await;
    world.store.put_many_blocking(&rows(10_000, 1_200, now() - HOUR, 1)).unwrap();
    let inner =
        EmbeddedTableExporter::new(world.pipeline.interactions.clone(), world.pipeline.objects.clone());
    world.pipeline.table_exporter = Some(Arc::new(RefusingIncremental(inner)));

    let second = world.nightly().await;
    assert_eq!(second.state, RunState::Done, "{second:?}");
    let record = second.table_export.clone().unwrap();
    assert_eq!(record.incremental, None);
    let why = record.replaced_incremental.expect("recorded");
    assert!(why.contains("InvalidExportTimeException"), "{why}");
    assert_eq!(second.export.unwrap().rows, 2_700, "the whole table");
    assert_eq!(world.last_import().2, ImportMode::Incremental, "by the row delta: 1,200 new rows");
}

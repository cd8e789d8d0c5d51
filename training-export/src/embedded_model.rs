//! The [`ModelTrainer`] port on the embedded recommender (crate `recommender`): train on
//! the export's CSV (the very file Personalize imports), keep the result as a candidate
//! until the quality gate passes, then publish it as a model version the ranking API
//! picks up.
//!
//! Candidates and live versions both go through the recommender's `ModelRegistry`, over the
//! pipeline's object store: `$DATA_DIR` locally, the data bucket with `DATA_BUCKET`. The
//! registry owns the layout; a candidate is kept aside, not live, until the gate passes.
//!
//! The CSV reaches the trainer as one local file ([`input`]): in place in a directory store,
//! otherwise streamed from the store into the temporary directory, never whole in memory.

mod input;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use artifacts::ObjectStore;
use async_trait::async_trait;
use recommender::{ModelInfo, ModelRegistry, RegistryError, TrainConfig, Version};

use crate::manifest::Manifest;
use crate::trainer::{ModelTrainer, ModelVersion, TrainerError};

/// The least of the function's memory kept out of the training budget, in MiB.
pub const MIN_HEADROOM_MIB: u64 = 256;

/// The recommender's memory budget (peak bytes its dense models may take while fitting):
///
/// 1. `explicit_mib`, `RECOMMENDER_MEMORY_BUDGET_MB`, when set: whoever sets it knows best;
/// 2. in Lambda, `function_memory_mib` (its `MemorySize`, `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`)
///    minus a quarter of it, and at least [`MIN_HEADROOM_MIB`]: the budget bounds only the dense model's matrices, while the rest
///    of the process also lives in that memory: the runtime and SDK buffers (about 50 MiB in
///    the export's measurements), the interactions as the recommender holds them and its
///    sparse models, which grow with the rows, not with `MemorySize`. A quarter keeps room for
///    them in proportion, and 256 MiB keeps a small function from spending everything
///    on the matrix. Over budget the recommender does not fail: it trains the sparse models
///    instead (see its README). So 512 MiB gives 256, 1024 gives 768, 10240 gives 7680;
/// 3. otherwise the recommender's default ([`recommender::DEFAULT_MEMORY_BUDGET_BYTES`], 1 GiB).
pub fn memory_budget_bytes(explicit_mib: Option<u64>, function_memory_mib: Option<u64>) -> u64 {
    if let Some(mib) = explicit_mib {
        return mib << 20;
    }
    match function_memory_mib {
        Some(mib) => mib.saturating_sub(MIN_HEADROOM_MIB.max(mib / 4)) << 20,
        None => recommender::DEFAULT_MEMORY_BUDGET_BYTES,
    }
}

/// `RECOMMENDER_MEMORY_BUDGET_MB`, read as [`TrainConfig::default`] reads it (a value that is
/// not a number is ignored).
pub fn explicit_memory_budget_mib() -> Option<u64> {
    std::env::var(recommender::MEMORY_BUDGET_ENV).ok().and_then(|v| v.trim().parse().ok())
}

pub struct EmbeddedTrainer {
    objects: Arc<dyn ObjectStore>,
    /// The directory the object store writes to, when it is one: the CSV is read in place.
    local_root: Option<PathBuf>,
    /// Where a copy of the CSV is staged when it cannot be read in place.
    temp_dir: PathBuf,
    registry: ModelRegistry,
    config: TrainConfig,
}

fn failure(message: impl Into<String>, retryable: bool) -> TrainerError {
    TrainerError { message: message.into(), retryable }
}

impl From<RegistryError> for TrainerError {
    fn from(e: RegistryError) -> Self {
        failure(e.to_string(), e.is_retryable())
    }
}

/// The figures the quality gate compares, under our names and Personalize's, so one
/// `QUALITY_METRIC` setting works for both backends.
pub fn figures(info: &ModelInfo) -> BTreeMap<String, f64> {
    let mut metrics = BTreeMap::new();
    // Candidates are listed best first; the chosen model is the first.
    if let Some(best) = info.selection.candidates.first() {
        metrics.insert("ndcg_at_10".to_owned(), best.ndcg_at_10);
        metrics.insert("normalized_discounted_cumulative_gain_at_10".to_owned(), best.ndcg_at_10);
        metrics.insert("recall_at_20".to_owned(), best.recall_at_20);
    }
    metrics
}

impl EmbeddedTrainer {
    /// Over the pipeline's object store. `local_root` is the directory that store writes to,
    /// when it is one, so that the export's CSV is trained on in place.
    pub fn new(objects: Arc<dyn ObjectStore>, local_root: Option<PathBuf>) -> Self {
        let registry = ModelRegistry::new(objects.clone());
        Self { objects, local_root, temp_dir: std::env::temp_dir(), registry, config: TrainConfig::default() }
    }

    /// In AWS without Personalize: everything in the bucket.
    pub fn in_bucket(objects: Arc<dyn ObjectStore>) -> Self {
        Self::new(objects, None)
    }

    /// Sets the training configuration (tests fix the seed and clock).
    pub fn with_config(mut self, config: TrainConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the memory budget of the training configuration; see [`memory_budget_bytes`].
    pub fn with_memory_budget(mut self, bytes: u64) -> Self {
        self.config.memory_budget_bytes = bytes;
        self
    }

    /// Where the CSV is copied when it is not read in place (default: the system's temporary
    /// directory, `/tmp` in Lambda). It needs the CSV's size free.
    pub fn with_temp_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.temp_dir = dir.into();
        self
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }
}

#[async_trait]
impl ModelTrainer for EmbeddedTrainer {
    async fn train(&self, manifest: &Manifest, _version: &str) -> Result<ModelVersion, TrainerError> {
        // Removed when dropped: after training, or on any error on the way.
        let input =
            input::training_input(&*self.objects, self.local_root.as_deref(), &self.temp_dir, manifest)
                .await?;
        let config = self.config.clone();
        let training_path = input.path().to_owned();
        // Training is CPU work for seconds to minutes: off the async threads.
        let trained = tokio::task::spawn_blocking(move || {
            let rows = recommender::read_csv(&training_path).map_err(|e| e.to_string())?;
            recommender::try_train(rows, &config).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| failure(format!("the training task failed: {e}"), true))?;
        drop(input);
        let model = trained.map_err(|e| failure(e, false))?;
        let info = model.info();
        let version = self.registry.store_candidate(&model).await?.to_string();
        tracing::info!(
            %version, model = %info.model, users = info.users, items = info.items,
            fit_seconds = info.fit_seconds, "embedded model trained"
        );
        Ok(ModelVersion { version, metrics: figures(info) })
    }

    async fn live(&self) -> Result<Option<ModelVersion>, TrainerError> {
        let live = self.registry.live().await?;
        Ok(live.map(|(version, info)| ModelVersion { version: version.to_string(), metrics: figures(&info) }))
    }

    async fn publish(&self, version: &str) -> Result<(), TrainerError> {
        let parsed = Version::parse(version)?;
        self.registry.promote(&parsed).await?;
        tracing::info!(%version, "embedded model version published");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use artifacts::DirectoryStore;
    use schemas::EventType;

    use super::*;
    use crate::manifest::{ExportedFile, MANIFEST_SCHEMA_VERSION, RejectedSummary};

    const HEADER: &str = "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE,EVENT_VALUE\n";

    #[test]
    fn the_budget_is_the_override_else_three_quarters_of_memory_size_else_the_default() {
        let mib = |n: u64| n << 20;
        assert_eq!(memory_budget_bytes(Some(300), Some(1024)), mib(300), "the override wins");
        assert_eq!(memory_budget_bytes(Some(300), None), mib(300));
        assert_eq!(memory_budget_bytes(None, Some(1024)), mib(768), "a quarter kept back");
        assert_eq!(memory_budget_bytes(None, Some(10_240)), mib(7_680));
        assert_eq!(memory_budget_bytes(None, Some(512)), mib(256), "at least 256 MiB kept back");
        assert_eq!(memory_budget_bytes(None, Some(128)), 0, "too small for a dense model at all");
        assert_eq!(memory_budget_bytes(None, None), recommender::DEFAULT_MEMORY_BUDGET_BYTES);
    }

    /// Rows of a small catalogue: 60 users, 40 items, timestamps increasing.
    fn rows() -> Vec<String> {
        (0..1_500_u64)
            .map(|k| {
                let user = k % 60;
                let item = (k * 7 + k / 60) % 40;
                let event = if k % 3 == 0 { EventType::SUBMITTED_ASSIGNMENT } else { EventType::ENROLLED };
                let value = if k % 5 == 0 { "0.5".to_owned() } else { String::new() };
                format!("u-{user},c-{item},{},{event},{value}\n", 1_790_000_000 + k * 60)
            })
            .collect()
    }

    fn manifest(run_id: &str, csv: ExportedFile) -> Manifest {
        Manifest {
            schema_version: MANIFEST_SCHEMA_VERSION,
            run_id: run_id.to_owned(),
            created_at: 1_790_100_000,
            csv_header: HEADER.trim_end().split(',').map(str::to_owned).collect(),
            rows: csv.rows,
            csv,
            parquet: None,
            delta: None,
            distinct_users: 60,
            distinct_items: 40,
            users_with_two_or_more: 60,
            min_timestamp: None,
            max_timestamp: None,
            max_user_id_chars: 4,
            max_item_id_chars: 4,
            rows_with_empty_fields: 0,
            rows_with_event_value: 300,
            event_types: BTreeMap::new(),
            rejected: RejectedSummary::default(),
            incremental: None,
        }
    }

    async fn put(store: &DirectoryStore, key: &str, content: &str, rows: usize) -> ExportedFile {
        let info = store.put(key, content.as_bytes()).await.unwrap();
        ExportedFile::new(info.key, rows as u64, info.size, info.sha256)
    }

    /// The same rows as one file and as parts of uneven sizes (one with no rows, the last
    /// without a final line end).
    async fn both_layouts(store: &DirectoryStore) -> (Manifest, Manifest) {
        let rows = rows();
        let single =
            put(store, "exports/r1/interactions.csv", &(HEADER.to_owned() + &rows.concat()), rows.len())
                .await;
        let mut parts = Vec::new();
        let cuts = [0, 700, 700, 1_333, rows.len()];
        for (index, window) in cuts.windows(2).enumerate() {
            let mut content = HEADER.to_owned() + &rows[window[0]..window[1]].concat();
            if window[1] == rows.len() {
                content.pop();
            }
            let key = format!("exports/r2/csv/part-{index:05}.csv");
            parts.push(put(store, &key, &content, window[1] - window[0]).await);
        }
        let in_parts = ExportedFile::in_parts("exports/r2/csv/".to_owned(), parts);
        (manifest("r1", single), manifest("r2", in_parts))
    }

    fn read_rows(path: &Path) -> Vec<recommender::InteractionRow> {
        recommender::read_csv(path).unwrap().collect::<Result<_, _>>().unwrap()
    }

    fn files_in(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[tokio::test]
    async fn parts_are_staged_as_the_same_rows_as_one_file_and_removed_after() {
        let dir = tempfile::tempdir().unwrap();
        let temp = tempfile::tempdir().unwrap();
        let store = DirectoryStore::new(dir.path());
        let (single, in_parts) = both_layouts(&store).await;

        // A directory store and one file: in place, nothing copied.
        let in_place = input::training_input(&store, Some(dir.path()), temp.path(), &single).await.unwrap();
        assert!(!in_place.is_staged());
        assert_eq!(in_place.path(), dir.path().join("exports/r1/interactions.csv"));
        let expected = read_rows(in_place.path());
        assert_eq!(expected.len(), 1_500);
        drop(in_place);
        assert!(dir.path().join("exports/r1/interactions.csv").exists(), "the export itself stays");

        // Parts (in a directory store too) and one file from a store that is not a directory: copied.
        for (manifest, root) in [(&in_parts, Some(dir.path())), (&in_parts, None), (&single, None)] {
            let staged = input::training_input(&store, root, temp.path(), manifest).await.unwrap();
            assert!(staged.is_staged());
            assert!(staged.path().starts_with(temp.path()));
            assert_eq!(read_rows(staged.path()), expected, "{}", manifest.run_id);
            let text = std::fs::read_to_string(staged.path()).unwrap();
            assert_eq!(text.matches("USER_ID").count(), 1, "the header is kept once");
            drop(staged);
            assert_eq!(files_in(temp.path()), Vec::<String>::new(), "the copy is removed");
        }
    }

    fn trainer(store: DirectoryStore, root: Option<&Path>, temp: &Path) -> EmbeddedTrainer {
        let config = TrainConfig { trained_at: Some(1_790_200_000), threads: 1, ..TrainConfig::default() };
        EmbeddedTrainer::new(Arc::new(store), root.map(Path::to_owned))
            .with_config(config)
            .with_temp_dir(temp)
    }

    #[tokio::test]
    async fn a_manifest_in_parts_trains_the_same_model_as_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let temp = tempfile::tempdir().unwrap();
        let store = DirectoryStore::new(dir.path());
        let (single, in_parts) = both_layouts(&store).await;
        let from_file =
            trainer(store.clone(), Some(dir.path()), temp.path()).train(&single, "v").await.unwrap();
        let from_parts = trainer(store.clone(), None, temp.path()).train(&in_parts, "v").await.unwrap();
        assert!(!from_file.metrics.is_empty());
        // A version is `<trained-at>-<fingerprint of the data>`: the same version, the same input.
        assert_eq!(from_parts.version, from_file.version);
        assert_eq!(from_parts.metrics, from_file.metrics);
        assert_eq!(files_in(temp.path()), Vec::<String>::new(), "the copy is removed after training");
    }

    #[tokio::test]
    async fn a_bad_part_fails_for_good_and_leaves_no_copy() {
        let dir = tempfile::tempdir().unwrap();
        let temp = tempfile::tempdir().unwrap();
        let store = DirectoryStore::new(dir.path());
        let (_, in_parts) = both_layouts(&store).await;
        let trainer = trainer(store.clone(), None, temp.path());

        let mut other_header = in_parts.clone();
        let odd = put(
            &store,
            "exports/r2/odd/part-00000.csv",
            "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE\nu,i,1,x\n",
            1,
        )
        .await;
        other_header.csv.parts.insert(2, odd);
        let mut missing = in_parts.clone();
        missing.csv.parts[1].key = "exports/r2/csv/part-00042.csv".into();
        let mut resized = in_parts.clone();
        resized.csv.parts[3].size += 1;
        let mut empty = in_parts.clone();
        empty.csv.parts.insert(1, put(&store, "exports/r2/empty/part-00000.csv", "", 0).await);
        for (manifest, expected) in [
            (other_header, "differs from the first part's"),
            (missing, "exports/r2/csv/part-00042.csv is missing"),
            (resized, "the manifest says"),
            (empty, "is empty"),
        ] {
            let err = trainer.train(&manifest, "v").await.unwrap_err();
            assert!(err.message.contains(expected), "{expected}: {err}");
            assert!(!err.retryable, "{err}");
            assert_eq!(files_in(temp.path()), Vec::<String>::new(), "no copy left after: {err}");
        }

        let gone = trainer.with_temp_dir(temp.path().join("no-such-dir"));
        let err = gone.train(&in_parts, "v").await.unwrap_err();
        assert!(err.message.contains("no-such-dir") && err.retryable, "{err}");
    }

    #[tokio::test]
    async fn a_header_split_across_writes_is_still_recognised() {
        let (mut first, mut second) = (Vec::new(), Vec::new());
        let body = format!("{HEADER}u-1,c-1,1790000000,enrolled,\n");
        let mut writer = input::PartWriter::new(&mut first, None);
        for byte in body.as_bytes() {
            tokio::io::AsyncWriteExt::write_all(&mut writer, std::slice::from_ref(byte)).await.unwrap();
        }
        let header = writer.finish().await.ok().unwrap();
        assert_eq!(header, HEADER.as_bytes());
        assert_eq!(first, body.as_bytes());
        let mut writer = input::PartWriter::new(&mut second, Some(&header));
        for chunk in format!("{HEADER}u-2,c-2,1790000001,enrolled,0.5").as_bytes().chunks(7) {
            tokio::io::AsyncWriteExt::write_all(&mut writer, chunk).await.unwrap();
        }
        writer.finish().await.ok().unwrap();
        assert_eq!(second, b"u-2,c-2,1790000001,enrolled,0.5\n", "header dropped, line end added");
    }
}

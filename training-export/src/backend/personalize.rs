//! Amazon Personalize as a [`ModelBackend`]: the export is imported by a dataset import
//! job, a solution version is trained, its metrics gate it, and the campaign is updated.
//! Job names derive from the run id (`<prefix>-import-<runId>`, `<prefix>-<runId>`), so
//! a step repeated after a crash finds its job instead of starting a second one.

use std::collections::BTreeMap;
use std::sync::Arc;

use artifacts::ObjectStore;
use async_trait::async_trait;

use super::{BackendError, Deployment, JobStatus, ModelBackend, ModelVersion, Preparation};
use crate::personalize::{Personalize, PersonalizeError};
use crate::run::{Backend, ExportRecord, ImportMode, ImportRecord, Run, TrainingMode, TrainingRecord};

/// The largest delta Personalize imports INCREMENTALLY.
pub const INCREMENTAL_MAX_BYTES: u64 = 1 << 30;
/// The fewest new rows an INCREMENTAL import may carry.
pub const INCREMENTAL_MIN_ROWS: u64 = 1_000;

/// What the Personalize backend is told by the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonalizeSettings {
    /// Prefix of job names: `<prefix>-import-<runId>`, `<prefix>-<runId>`.
    pub name_prefix: String,
    pub training_mode: TrainingMode,
    pub full_training_every_days: u32,
}

impl Default for PersonalizeSettings {
    fn default() -> Self {
        Self { name_prefix: "ranking".into(), training_mode: TrainingMode::Full, full_training_every_days: 7 }
    }
}

pub struct PersonalizeBackend {
    personalize: Arc<dyn Personalize>,
    /// The bucket the exports are in: Personalize imports from an `s3://` location.
    objects: Arc<dyn ObjectStore>,
    settings: PersonalizeSettings,
}

impl PersonalizeBackend {
    pub fn new(
        personalize: Arc<dyn Personalize>,
        objects: Arc<dyn ObjectStore>,
        settings: PersonalizeSettings,
    ) -> Self {
        Self { personalize, objects, settings }
    }
}

impl From<PersonalizeError> for BackendError {
    fn from(e: PersonalizeError) -> Self {
        BackendError { message: e.to_string(), retryable: e.retryable }
    }
}

fn described(what: &str, status: JobStatus) -> JobStatus {
    match status {
        JobStatus::InProgress(s) => JobStatus::InProgress(format!("{what} {s}")),
        other => other,
    }
}

#[async_trait]
impl ModelBackend for PersonalizeBackend {
    fn kind(&self) -> Backend {
        Backend::Personalize
    }

    /// A weekly whole-table export (`full_training_every_days`) keeps the fallback model
    /// and the dataset in step with the table; so does every FULL training (UPDATE mode's
    /// weekly FULL one). In between, Personalize's dataset already has the earlier rows.
    fn full_export_due(&self, history: &[Run], now: i64) -> Option<String> {
        full_export_due(&self.settings, history, now)
    }

    async fn prepare(&self, run: &Run, export: &ExportRecord) -> Result<Preparation, BackendError> {
        if export.incremental.is_some()
            && (export.rows < INCREMENTAL_MIN_ROWS || export.csv_size >= INCREMENTAL_MAX_BYTES)
        {
            // The export step falls back to a full export before this; a FULL import of a
            // delta-only export would replace the dataset with the delta.
            return Err(BackendError::permanent(format!(
                "run {}: a delta-only export of {} rows ({} bytes) cannot be imported INCREMENTAL",
                run.run_id, export.rows, export.csv_size
            )));
        }
        let (mode, key) = choose_import(export, run.delta_since.is_some());
        let name = format!("{}-import-{}", self.settings.name_prefix, run.run_id);
        let source = self.objects.location(&key);
        let arn = self.personalize.start_import(&name, &source, mode).await?;
        tracing::info!(run_id = %run.run_id, job = %name, ?mode, %source, "import job started");
        Ok(Preparation::Started(ImportRecord {
            job_name: name,
            job_arn: Some(arn),
            mode,
            source,
            max_timestamp: export.max_timestamp,
            completed: false,
        }))
    }

    async fn preparation_status(&self, import: &ImportRecord) -> Result<JobStatus, BackendError> {
        let arn = import.job_arn.as_deref().ok_or_else(|| {
            BackendError::permanent(format!("import job {} has no recorded ARN", import.job_name))
        })?;
        Ok(described("import job", self.personalize.import_status(arn).await?))
    }

    async fn start_training(&self, run: &Run, history: &[Run]) -> Result<TrainingRecord, BackendError> {
        let mode = choose_training_mode(
            self.settings.training_mode,
            history,
            time::OffsetDateTime::now_utc().unix_timestamp(),
            self.settings.full_training_every_days,
        );
        let name = format!("{}-{}", self.settings.name_prefix, run.run_id);
        let arn = self.personalize.start_training(&name, mode, run.created_at).await?;
        Ok(TrainingRecord { name, version: Some(arn), mode, completed: false, metrics: BTreeMap::new() })
    }

    async fn training_status(&self, training: &TrainingRecord) -> Result<JobStatus, BackendError> {
        let arn = training.version.as_deref().ok_or_else(|| {
            BackendError::permanent(format!("solution version {} has no recorded ARN", training.name))
        })?;
        Ok(described("solution version", self.personalize.training_status(arn).await?))
    }

    async fn candidate_metrics(
        &self,
        training: &TrainingRecord,
    ) -> Result<BTreeMap<String, f64>, BackendError> {
        let arn = training.version.as_deref().ok_or_else(|| {
            BackendError::permanent(format!("solution version {} has no recorded ARN", training.name))
        })?;
        Ok(self.personalize.metrics(arn).await?)
    }

    async fn live(&self, candidate: &str) -> Result<Option<ModelVersion>, BackendError> {
        let Some(serving) = self.personalize.campaign().await?.serving else { return Ok(None) };
        let metrics =
            if serving == candidate { BTreeMap::new() } else { self.personalize.metrics(&serving).await? };
        Ok(Some(ModelVersion { version: serving, metrics }))
    }

    async fn deploy(&self, target: &str) -> Result<Deployment, BackendError> {
        let campaign = self.personalize.campaign().await?;
        Ok(match campaign.latest_update {
            Some((to, status)) if to == target => match status {
                JobStatus::Active => Deployment::Done,
                JobStatus::InProgress(s) => Deployment::Wait(format!("campaign update {s}")),
                JobStatus::Failed(reason) => {
                    let serving = campaign.serving.unwrap_or_else(|| "its previous version".into());
                    Deployment::Failed(format!("{reason}; the campaign still serves {serving}"))
                }
            },
            // Someone else's update is running; ours waits for it.
            Some((_, JobStatus::InProgress(s))) => {
                Deployment::Wait(format!("another campaign update is {s}"))
            }
            _ if campaign.serving.as_deref() == Some(target) => Deployment::Done,
            _ => {
                self.personalize.update_campaign(target).await?;
                tracing::info!(%target, "campaign update requested");
                Deployment::Wait("campaign update requested".into())
            }
        })
    }
}

/// INCREMENTAL of the CSV folder for a delta-only export (an incremental table export,
/// which exists only after an import); otherwise FULL the first time; INCREMENTAL (the
/// delta file) when it carries at least 1,000 new rows and is under 1 GB; FULL (the
/// whole file) otherwise.
pub fn choose_import(export: &ExportRecord, imported_before: bool) -> (ImportMode, String) {
    if export.incremental.is_some() {
        return (ImportMode::Incremental, export.csv_key.clone());
    }
    if imported_before
        && let (Some(key), Some(size), Some(new_rows)) =
            (&export.delta_key, export.delta_size, export.delta_new_rows)
        && new_rows >= INCREMENTAL_MIN_ROWS
        && size < INCREMENTAL_MAX_BYTES
    {
        return (ImportMode::Incremental, key.clone());
    }
    (ImportMode::Full, export.csv_key.clone())
}

/// FULL when configured; UPDATE otherwise, unless no completed FULL training is
/// younger than `every_days` (UPDATE needs a FULL version, and a weekly FULL keeps
/// the model from drifting).
pub fn choose_training_mode(
    configured: TrainingMode,
    history: &[Run],
    now: i64,
    every_days: u32,
) -> TrainingMode {
    if configured == TrainingMode::Full {
        return TrainingMode::Full;
    }
    let last_full = history
        .iter()
        .filter(|r| r.backend == Backend::Personalize)
        .filter(|r| r.training.as_ref().is_some_and(|t| t.mode == TrainingMode::Full && t.completed))
        .map(|r| r.created_at)
        .max();
    match last_full {
        Some(at) if now - at < i64::from(every_days) * 86_400 => TrainingMode::Update,
        _ => TrainingMode::Full,
    }
}

/// Why the next run must export the whole table: in UPDATE training mode, its weekly
/// FULL training is due; in either mode, no completed FULL import is younger than
/// `full_training_every_days`.
///
/// In FULL training mode every training is FULL, yet Personalize trains on its whole
/// dataset, not on the export: what the weekly rule protects is the dataset's and the
/// fallback model's agreement with the table, so the age of the last FULL import decides.
pub fn full_export_due(settings: &PersonalizeSettings, history: &[Run], now: i64) -> Option<String> {
    let every = i64::from(settings.full_training_every_days) * 86_400;
    if settings.training_mode == TrainingMode::Update
        && choose_training_mode(settings.training_mode, history, now, settings.full_training_every_days)
            == TrainingMode::Full
    {
        return Some("a FULL training is due".into());
    }
    let last_full_import = history
        .iter()
        .filter(|r| r.backend == Backend::Personalize)
        .filter(|r| r.import.as_ref().is_some_and(|i| i.completed && i.mode == ImportMode::Full))
        .map(|r| r.created_at)
        .max();
    match last_full_import {
        Some(at) if now - at < every => None,
        Some(_) => Some(format!(
            "the last FULL import is {} days old or more (the weekly full export)",
            settings.full_training_every_days
        )),
        None => Some("no FULL import yet".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{RunKind, RunState};

    fn export(delta: Option<(u64, u64)>) -> ExportRecord {
        ExportRecord {
            prefix: "exports/r".into(),
            rows: 50_000,
            distinct_users: 100,
            distinct_items: 10,
            max_timestamp: Some(1),
            csv_key: "exports/r/interactions.csv".into(),
            csv_size: 5_000_000,
            delta_key: delta.map(|_| "exports/r/interactions-delta.csv".into()),
            delta_size: delta.map(|(_, size)| size),
            delta_new_rows: delta.map(|(rows, _)| rows),
            rejected: 0,
            incremental: None,
        }
    }

    #[test]
    fn import_mode_rules() {
        assert_eq!(choose_import(&export(None), false).0, ImportMode::Full, "first import");
        assert_eq!(choose_import(&export(Some((5_000, 1_000))), false).0, ImportMode::Full, "first import");
        let (mode, key) = choose_import(&export(Some((1_000, 100_000))), true);
        assert_eq!((mode, key.as_str()), (ImportMode::Incremental, "exports/r/interactions-delta.csv"));
        assert_eq!(
            choose_import(&export(Some((999, 100_000))), true).0,
            ImportMode::Full,
            "too few new rows"
        );
        assert_eq!(choose_import(&export(Some((5_000, 1 << 30))), true).0, ImportMode::Full, "1 GB or more");
        let mut delta_only = export(None);
        delta_only.incremental = Some(crate::run::ExportWindow { from: 1, to: 2 });
        let (mode, key) = choose_import(&delta_only, true);
        assert_eq!((mode, key.as_str()), (ImportMode::Incremental, "exports/r/interactions.csv"));
    }

    #[test]
    fn a_full_export_is_due_weekly_and_with_every_full_training() {
        let day = 86_400;
        let now = 100 * day;
        let imported = |mode, at, training| {
            let mut r = Run::new("r".into(), RunKind::Full, Backend::Personalize, "t", RunState::Done, at);
            r.import = Some(ImportRecord {
                job_name: "j".into(),
                job_arn: None,
                mode,
                source: "s".into(),
                max_timestamp: None,
                completed: true,
            });
            r.training = Some(TrainingRecord {
                name: "n".into(),
                version: None,
                mode: training,
                completed: true,
                metrics: BTreeMap::new(),
            });
            r
        };
        let full = PersonalizeSettings::default();
        let update = PersonalizeSettings { training_mode: TrainingMode::Update, ..full.clone() };
        assert!(full_export_due(&full, &[], now).is_some(), "nothing imported");
        let recent = [
            imported(ImportMode::Incremental, now - day, TrainingMode::Full),
            imported(ImportMode::Full, now - 6 * day, TrainingMode::Full),
        ];
        assert_eq!(full_export_due(&full, &recent, now), None);
        assert_eq!(full_export_due(&update, &recent, now), None, "a FULL training 6 days ago");
        let old = [
            imported(ImportMode::Incremental, now - day, TrainingMode::Full),
            imported(ImportMode::Full, now - 7 * day, TrainingMode::Full),
        ];
        assert!(full_export_due(&full, &old, now).unwrap().contains("weekly"));
        let update_due = [
            imported(ImportMode::Incremental, now - day, TrainingMode::Update),
            imported(ImportMode::Full, now - 2 * day, TrainingMode::Update),
        ];
        assert!(full_export_due(&update, &update_due, now).unwrap().contains("FULL training"));
    }

    #[test]
    fn update_training_needs_a_recent_full_one() {
        let day = 86_400;
        let trained = |mode, at| {
            let mut r = Run::new("r".into(), RunKind::Full, Backend::Personalize, "t", RunState::Done, at);
            r.training = Some(TrainingRecord {
                name: "n".into(),
                version: None,
                mode,
                completed: true,
                metrics: BTreeMap::new(),
            });
            r
        };
        let now = 100 * day;
        assert_eq!(choose_training_mode(TrainingMode::Full, &[], now, 7), TrainingMode::Full);
        assert_eq!(
            choose_training_mode(TrainingMode::Update, &[], now, 7),
            TrainingMode::Full,
            "no FULL yet"
        );
        let history = [trained(TrainingMode::Update, now - day), trained(TrainingMode::Full, now - 6 * day)];
        assert_eq!(choose_training_mode(TrainingMode::Update, &history, now, 7), TrainingMode::Update);
        let history = [trained(TrainingMode::Update, now - day), trained(TrainingMode::Full, now - 7 * day)];
        assert_eq!(
            choose_training_mode(TrainingMode::Update, &history, now, 7),
            TrainingMode::Full,
            "weekly FULL"
        );
    }
}

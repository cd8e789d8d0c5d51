//! The state machine. Each invocation loads the active run, advances it as far as it
//! can without waiting (an export finishes and its import job is created in the same
//! invocation; a job still running ends the invocation), saves after every step, and
//! returns. The next invocation (the 10-minute schedule, or a person) carries on.
//!
//! ```text
//! Exporting ─▶ Exported ─▶ Importing ─▶ Imported ─▶ Training ─▶ Trained ─▶ (gate) ─▶ Deploying ─▶ Done
//!     │            │ (embedded: straight to Training)               │          │            │
//!     └─ Failed{Export|Validate}   Failed{Import}      Failed{Train} ┘  Rejected ┘  Failed{Deploy}
//! ```
//!
//! Crash safety: every external effect is either idempotent by name (import job and
//! solution version names derive from the run id), or checked before it is repeated
//! (an export whose manifest exists is not redone; a campaign already updating to the
//! target is not updated again; what was live is recorded before the update starts).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use artifacts::ObjectStore;
use serde::Serialize;
use store::InteractionStore;

use crate::events::{PipelineEvent, PipelineEvents};
use crate::export::{self, ExportPlan};
use crate::manifest::Manifest;
use crate::personalize::{JobStatus, Personalize};
use crate::run::{
    Backend, DeployRecord, ExportRecord, FallbackRecord, GateRecord, ImportMode, ImportRecord, Run, RunKind,
    RunState, Step, TrainingMode, TrainingRecord, new_run_id,
};
use crate::runs::{RunStore, RunStoreError};
use crate::trainer::ModelTrainer;

/// The largest delta Personalize imports INCREMENTALLY.
pub const INCREMENTAL_MAX_BYTES: u64 = 1 << 30;
/// The fewest new rows an INCREMENTAL import may carry.
pub const INCREMENTAL_MIN_ROWS: u64 = 1_000;
/// How many past runs the decisions (import mode, weekly FULL, rollback) look at.
const HISTORY: usize = 60;

/// Tunables, from the environment (see `config`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub scan_segments: u32,
    /// Prefix of Personalize job names: `<prefix>-import-<runId>`, `<prefix>-<runId>`.
    pub name_prefix: String,
    pub training_mode: TrainingMode,
    pub full_training_every_days: u32,
    /// A higher-is-better metric, e.g. `normalized_discounted_cumulative_gain_at_10`.
    pub quality_metric: String,
    /// How much worse than the live version a new one may be (0.02 = 2 %).
    pub quality_tolerance: f64,
    /// No step starts with less than this left before the deadline.
    pub safety_margin: Duration,
    /// How long an invocation holds a run it is advancing (longer than a Lambda lives).
    pub lease: Duration,
    /// Test hook (`TRAINING_EXPORT_CRASH_AFTER`): abort the process right after a run is
    /// saved in this state. `None` everywhere but the end-to-end crash tests.
    pub crash_after: Option<&'static str>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            scan_segments: 4,
            name_prefix: "ranking".into(),
            training_mode: TrainingMode::Full,
            full_training_every_days: 7,
            quality_metric: "normalized_discounted_cumulative_gain_at_10".into(),
            quality_tolerance: 0.02,
            safety_margin: Duration::from_secs(60),
            lease: Duration::from_secs(16 * 60),
            crash_after: None,
        }
    }
}

/// Where models come from.
#[derive(Clone)]
pub enum Models {
    Personalize(Arc<dyn Personalize>),
    Embedded(Arc<dyn ModelTrainer>),
}

impl Models {
    fn backend(&self) -> Backend {
        match self {
            Models::Personalize(_) => Backend::Personalize,
            Models::Embedded(_) => Backend::Embedded,
        }
    }
}

/// An invocation payload: the type every sender shares (`schemas::pipeline`).
pub use schemas::PipelineRequest as Request;

/// A run, as reported to whoever invoked.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    pub run_id: String,
    pub kind: RunKind,
    pub backend: Backend,
    pub trigger: String,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<Step>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl From<&Run> for RunSummary {
    fn from(run: &Run) -> Self {
        let (step, reason) = match &run.state {
            RunState::Failed { step, reason } => (Some(*step), Some(reason.clone())),
            RunState::Rejected { reason } => (Some(Step::QualityGate), Some(reason.clone())),
            _ => (None, None),
        };
        Self {
            run_id: run.run_id.clone(),
            kind: run.kind,
            backend: run.backend,
            trigger: run.trigger.clone(),
            status: run.state.name(),
            step,
            reason,
            created_at: run.created_at,
            updated_at: run.updated_at,
            rows: run.export.as_ref().map(|e| e.rows),
            gate: run.gate.clone(),
            deployed: matches!(run.state, RunState::Done)
                .then(|| run.deploy.as_ref().map(|d| d.target.clone()))
                .flatten(),
            last_error: run.last_error.clone(),
        }
    }
}

/// What an invocation did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    /// `started`, `advanced`, `idle`, `refused` or `status`.
    pub outcome: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<RunSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_run_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<RunSummary>,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Runs(#[from] RunStoreError),
    #[error("nothing to roll back: no deployed run records a previous version")]
    NothingToRollBack,
}

impl PipelineError {
    pub fn is_retryable(&self) -> bool {
        match self {
            PipelineError::Runs(e) => e.is_retryable(),
            PipelineError::NothingToRollBack => false,
        }
    }
}

/// When the invocation must have returned by (the Lambda deadline), if ever.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    pub fn none() -> Self {
        Self(None)
    }

    pub fn at(instant: Instant) -> Self {
        Self(Some(instant))
    }

    fn too_close(&self, margin: Duration) -> bool {
        self.0.is_some_and(|d| d.saturating_duration_since(Instant::now()) < margin)
    }
}

/// A step could not complete.
#[derive(Debug)]
struct StepFailure {
    step: Step,
    message: String,
    retryable: bool,
}

enum Progress {
    /// The run changed; save it and go on.
    Moved,
    /// Nothing more to do now; the reason is logged.
    Wait(String),
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

pub struct Pipeline {
    pub interactions: Arc<dyn InteractionStore>,
    pub objects: Arc<dyn ObjectStore>,
    pub runs: Arc<dyn RunStore>,
    pub events: Arc<dyn PipelineEvents>,
    pub models: Models,
    /// With Personalize: the embedded recommender, trained on every full export and
    /// published under `models/`, so the ranking API's fallback serves fresh popular
    /// items (it has no data of its own inside Lambda). `None` skips the refresh.
    pub fallback_models: Option<Arc<dyn ModelTrainer>>,
    pub settings: Settings,
    /// Told the number of rows exported so far (the CLI's progress bar).
    pub progress: Option<Arc<dyn Fn(u64) + Send + Sync>>,
}

impl Pipeline {
    pub async fn handle(&self, request: Request, deadline: Deadline) -> Result<Response, PipelineError> {
        match request {
            Request::Run { trigger, request_id } => {
                if let Some(request_id) = &request_id {
                    tracing::info!(%request_id, %trigger, "run requested by an event");
                }
                self.start(RunKind::Full, &trigger, deadline).await
            }
            Request::Export { trigger } => self.start(RunKind::ExportOnly, &trigger, deadline).await,
            Request::Rollback { trigger } => self.rollback(&trigger, deadline).await,
            Request::Advance {} => match self.runs.active().await? {
                Some(run) => {
                    let run = self.advance(run, deadline).await?;
                    Ok(Response {
                        outcome: "advanced",
                        message: format!("run {} is {}", run.run_id, run.state.name()),
                        run: Some(RunSummary::from(&run)),
                        active_run_id: None,
                        runs: vec![],
                    })
                }
                None => Ok(Response {
                    outcome: "idle",
                    message: "no active run".into(),
                    run: None,
                    active_run_id: None,
                    runs: vec![],
                }),
            },
            Request::Status {} => {
                let runs = self.runs.recent(10).await?;
                let active = runs.iter().find(|r| r.is_active()).map(|r| r.run_id.clone());
                Ok(Response {
                    outcome: "status",
                    message: format!("{} recent runs", runs.len()),
                    run: None,
                    active_run_id: active,
                    runs: runs.iter().map(RunSummary::from).collect(),
                })
            }
        }
    }

    fn refused(active_run_id: String) -> Response {
        tracing::warn!(%active_run_id, "run refused: another run is active");
        Response {
            outcome: "refused",
            message: format!("run {active_run_id} is still active; try again when it has finished"),
            run: None,
            active_run_id: Some(active_run_id),
            runs: vec![],
        }
    }

    async fn start(
        &self,
        kind: RunKind,
        trigger: &str,
        deadline: Deadline,
    ) -> Result<Response, PipelineError> {
        let history = self.runs.recent(HISTORY).await?;
        let mut run = Run::new(
            new_run_id(time::OffsetDateTime::now_utc()),
            kind,
            self.models.backend(),
            trigger,
            RunState::Exporting,
            now(),
        );
        // The previous import's newest row: the delta file starts after it.
        run.delta_since = history
            .iter()
            .filter(|r| r.backend == Backend::Personalize)
            .filter_map(|r| r.import.as_ref())
            .find(|i| i.completed)
            .and_then(|i| i.max_timestamp);
        match self.runs.create(&run).await {
            Ok(()) => self.crash_point(&run),
            Err(RunStoreError::Busy { active_run_id }) => return Ok(Self::refused(active_run_id)),
            Err(e) => return Err(e.into()),
        }
        tracing::info!(run_id = %run.run_id, ?kind, trigger, "run started");
        let run = self.advance(run, deadline).await?;
        Ok(Response {
            outcome: "started",
            message: format!("run {} is {}", run.run_id, run.state.name()),
            run: Some(RunSummary::from(&run)),
            active_run_id: None,
            runs: vec![],
        })
    }

    async fn rollback(&self, trigger: &str, deadline: Deadline) -> Result<Response, PipelineError> {
        let history = self.runs.recent(HISTORY).await?;
        let last_deploy = history
            .iter()
            .filter(|r| r.state == RunState::Done && r.kind != RunKind::ExportOnly)
            .find_map(|r| r.deploy.clone())
            .ok_or(PipelineError::NothingToRollBack)?;
        let previous = last_deploy.previous.ok_or(PipelineError::NothingToRollBack)?;
        let mut run = Run::new(
            new_run_id(time::OffsetDateTime::now_utc()),
            RunKind::Rollback,
            self.models.backend(),
            trigger,
            RunState::Deploying,
            now(),
        );
        run.deploy = Some(DeployRecord { target: previous.clone(), previous: Some(last_deploy.target) });
        match self.runs.create(&run).await {
            Ok(()) => self.crash_point(&run),
            Err(RunStoreError::Busy { active_run_id }) => return Ok(Self::refused(active_run_id)),
            Err(e) => return Err(e.into()),
        }
        tracing::info!(run_id = %run.run_id, target = %previous, "rollback started");
        let run = self.advance(run, deadline).await?;
        Ok(Response {
            outcome: "started",
            message: format!("rollback {} to {previous} is {}", run.run_id, run.state.name()),
            run: Some(RunSummary::from(&run)),
            active_run_id: None,
            runs: vec![],
        })
    }

    /// Advances `run` until it waits, ends, or the deadline comes near, holding its
    /// lease meanwhile so that an overlapping invocation does not redo the same step.
    pub async fn advance(&self, mut run: Run, deadline: Deadline) -> Result<Run, PipelineError> {
        if let Some(until) = run.lease_until.filter(|&until| until > now()) {
            tracing::info!(run_id = %run.run_id, lease_until = until, "another invocation is advancing this run");
            return Ok(run);
        }
        run.lease_until = Some(now() + self.settings.lease.as_secs() as i64);
        match self.runs.save(&mut run).await {
            Ok(()) => {}
            Err(RunStoreError::Conflict { .. }) => {
                tracing::info!(run_id = %run.run_id, "another invocation took this run first");
                return Ok(self.runs.get(&run.run_id).await?.unwrap_or(run));
            }
            Err(e) => return Err(e.into()),
        }
        let (mut run, still_ours) = self.advance_holding_lease(run, deadline).await?;
        if !still_ours {
            return Ok(run);
        }
        run.lease_until = None;
        match self.runs.save(&mut run).await {
            Ok(()) | Err(RunStoreError::Conflict { .. }) => Ok(run),
            Err(e) => Err(e.into()),
        }
    }

    /// Returns the run and whether this invocation still holds it.
    async fn advance_holding_lease(
        &self,
        mut run: Run,
        deadline: Deadline,
    ) -> Result<(Run, bool), PipelineError> {
        while run.is_active() {
            if deadline.too_close(self.settings.safety_margin) {
                tracing::info!(run_id = %run.run_id, state = run.state.name(), "deadline near; next invocation continues");
                break;
            }
            let before = run.state.name();
            match self.step(&mut run).await {
                Ok(Progress::Moved) => {
                    match self.runs.save(&mut run).await {
                        Ok(()) => self.crash_point(&run),
                        Err(RunStoreError::Conflict { .. }) => {
                            tracing::warn!(run_id = %run.run_id, "another invocation advanced this run; stopping");
                            return Ok((self.runs.get(&run.run_id).await?.unwrap_or(run), false));
                        }
                        Err(e) => return Err(e.into()),
                    }
                    tracing::info!(run_id = %run.run_id, from = before, to = run.state.name(), "run advanced");
                }
                Ok(Progress::Wait(why)) => {
                    tracing::info!(run_id = %run.run_id, state = run.state.name(), waiting_for = %why, "waiting");
                    break;
                }
                Err(failure) if failure.retryable => {
                    tracing::warn!(
                        run_id = %run.run_id, state = run.state.name(), step = %failure.step,
                        error = %failure.message, "retryable failure; the next invocation tries again"
                    );
                    run.last_error = Some(failure.message);
                    match self.runs.save(&mut run).await {
                        Ok(()) | Err(RunStoreError::Conflict { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                    break;
                }
                Err(failure) => {
                    let state = RunState::Failed { step: failure.step, reason: failure.message };
                    if let Err(e) = self.finish(&mut run, state).await {
                        tracing::error!(run_id = %run.run_id, error = %e.message, "could not announce the failure; will retry");
                        break;
                    }
                    match self.runs.save(&mut run).await {
                        Ok(()) => self.crash_point(&run),
                        Err(RunStoreError::Conflict { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok((run, true))
    }

    /// The crash hook of the end-to-end tests: when `run` was just saved in the state
    /// `crash_after` names, the process dies here as a killed one would: no unwinding, no
    /// lease released, nothing more written. Never configured outside those tests.
    fn crash_point(&self, run: &Run) {
        if self.settings.crash_after == Some(run.state.name()) {
            tracing::error!(
                run_id = %run.run_id, state = run.state.name(),
                "TRAINING_EXPORT_CRASH_AFTER: aborting the process right after saving this state"
            );
            std::process::abort();
        }
    }

    /// Enters a terminal state: announce first, so that a state is never terminal
    /// without its event (a failed publish leaves the run where it was, to retry).
    async fn finish(&self, run: &mut Run, state: RunState) -> Result<(), StepFailure> {
        let event = PipelineEvent::for_run(run, &state);
        self.events.publish(&event).await.map_err(|e| StepFailure {
            step: failed_step(run),
            message: e.to_string(),
            retryable: true,
        })?;
        match &state {
            RunState::Failed { step, reason } => {
                tracing::error!(run_id = %run.run_id, %step, %reason, "run failed")
            }
            RunState::Rejected { reason } => tracing::warn!(run_id = %run.run_id, %reason, "run rejected"),
            _ => tracing::info!(run_id = %run.run_id, "run done"),
        }
        run.enter(state, now());
        Ok(())
    }

    async fn step(&self, run: &mut Run) -> Result<Progress, StepFailure> {
        match run.state.clone() {
            RunState::Exporting => self.export(run).await,
            RunState::Exported => match (run.kind, &self.models) {
                (RunKind::ExportOnly, _) => {
                    self.finish(run, RunState::Done).await?;
                    Ok(Progress::Moved)
                }
                (_, Models::Personalize(p)) => {
                    if run.fallback_model.is_none()
                        && let Some(trainer) = &self.fallback_models
                    {
                        run.fallback_model = Some(self.refresh_fallback(run, trainer.as_ref()).await);
                        // Saved before the import starts, so a retry does not train it again.
                        return Ok(Progress::Moved);
                    }
                    self.start_import(run, p.as_ref()).await
                }
                (_, Models::Embedded(_)) => {
                    run.enter(RunState::Training, now());
                    Ok(Progress::Moved)
                }
            },
            RunState::Importing => {
                let Models::Personalize(p) = &self.models else { return Err(wrong_backend(run)) };
                let arn = run
                    .import
                    .as_ref()
                    .and_then(|i| i.job_arn.clone())
                    .ok_or_else(|| missing(run, Step::Import))?;
                match p.import_status(&arn).await.map_err(|e| fail(Step::Import, e))? {
                    JobStatus::Active => {
                        run.import.as_mut().expect("checked").completed = true;
                        run.enter(RunState::Imported, now());
                        Ok(Progress::Moved)
                    }
                    JobStatus::InProgress(s) => Ok(Progress::Wait(format!("import job {s}"))),
                    JobStatus::Failed(reason) => {
                        self.finish(run, RunState::Failed { step: Step::Import, reason }).await?;
                        Ok(Progress::Moved)
                    }
                }
            }
            RunState::Imported => {
                let Models::Personalize(p) = &self.models else { return Err(wrong_backend(run)) };
                let history = self.runs.recent(HISTORY).await.map_err(|e| StepFailure {
                    step: Step::Train,
                    message: e.to_string(),
                    retryable: e.is_retryable(),
                })?;
                let mode = choose_training_mode(
                    self.settings.training_mode,
                    &history,
                    now(),
                    self.settings.full_training_every_days,
                );
                let name = format!("{}-{}", self.settings.name_prefix, run.run_id);
                let arn =
                    p.start_training(&name, mode, run.created_at).await.map_err(|e| fail(Step::Train, e))?;
                run.training = Some(TrainingRecord {
                    name,
                    version: Some(arn),
                    mode,
                    completed: false,
                    metrics: BTreeMap::new(),
                });
                run.enter(RunState::Training, now());
                Ok(Progress::Moved)
            }
            RunState::Training => match &self.models {
                Models::Personalize(p) => {
                    let arn = run
                        .training
                        .as_ref()
                        .and_then(|t| t.version.clone())
                        .ok_or_else(|| missing(run, Step::Train))?;
                    match p.training_status(&arn).await.map_err(|e| fail(Step::Train, e))? {
                        JobStatus::Active => {
                            run.training.as_mut().expect("checked").completed = true;
                            run.enter(RunState::Trained, now());
                            Ok(Progress::Moved)
                        }
                        JobStatus::InProgress(s) => Ok(Progress::Wait(format!("solution version {s}"))),
                        JobStatus::Failed(reason) => {
                            self.finish(run, RunState::Failed { step: Step::Train, reason }).await?;
                            Ok(Progress::Moved)
                        }
                    }
                }
                Models::Embedded(trainer) => {
                    let prefix = run
                        .export
                        .as_ref()
                        .map(|e| e.prefix.clone())
                        .ok_or_else(|| missing(run, Step::Train))?;
                    let manifest = export::read_manifest(self.objects.as_ref(), &prefix)
                        .await
                        .map_err(|message| StepFailure { step: Step::Train, message, retryable: false })?;
                    let model = trainer.train(&manifest, &run.run_id).await.map_err(|e| StepFailure {
                        step: Step::Train,
                        message: e.message,
                        retryable: e.retryable,
                    })?;
                    run.training = Some(TrainingRecord {
                        name: run.run_id.clone(),
                        version: Some(model.version),
                        mode: TrainingMode::Full,
                        completed: true,
                        metrics: model.metrics,
                    });
                    run.enter(RunState::Trained, now());
                    Ok(Progress::Moved)
                }
            },
            RunState::Trained => self.gate(run).await,
            RunState::Deploying => self.deploy(run).await,
            RunState::Done | RunState::Failed { .. } | RunState::Rejected { .. } => {
                Ok(Progress::Wait("terminal".into()))
            }
        }
    }

    async fn export(&self, run: &mut Run) -> Result<Progress, StepFailure> {
        let mut plan = ExportPlan::new(&run.run_id);
        plan.delta_since = run.delta_since;
        // An export whose manifest exists finished before a crash: keep it.
        let manifest = match export::read_manifest(self.objects.as_ref(), &plan.prefix).await {
            Ok(m) if m.run_id == run.run_id => {
                tracing::info!(run_id = %run.run_id, "export already complete; resuming after it");
                m
            }
            _ => {
                let progress = self.progress.clone();
                let report = move |rows: u64| {
                    if let Some(p) = &progress {
                        p(rows)
                    }
                };
                let pages = export::scan_all_in_tasks(self.interactions.clone(), self.settings.scan_segments);
                export::export(pages, self.objects.as_ref(), &plan, &report).await.map_err(|e| {
                    StepFailure { step: Step::Export, retryable: e.is_retryable(), message: e.to_string() }
                })?
            }
        };
        run.export = Some(export_record(&plan, &manifest));
        tracing::info!(
            run_id = %run.run_id, rows = manifest.rows, users = manifest.distinct_users,
            items = manifest.distinct_items, rejected = manifest.rejected.count, "export written"
        );
        match manifest.validate() {
            Ok(()) => {
                run.enter(RunState::Exported, now());
            }
            Err(failure) => {
                self.finish(run, RunState::Failed { step: Step::Validate, reason: failure.to_string() })
                    .await?;
            }
        }
        Ok(Progress::Moved)
    }

    /// Trains the embedded model on this run's export and publishes it for the API's
    /// fallback. Never fails the run: the outcome is recorded and logged.
    async fn refresh_fallback(&self, run: &Run, trainer: &dyn ModelTrainer) -> FallbackRecord {
        let outcome = async {
            let prefix = run.export.as_ref().map(|e| e.prefix.clone()).ok_or("the run has no export")?;
            let manifest = export::read_manifest(self.objects.as_ref(), &prefix).await?;
            let model = trainer.train(&manifest, &run.run_id).await.map_err(|e| e.message)?;
            trainer.publish(&model.version).await.map_err(|e| e.message)?;
            Ok::<_, String>(model.version)
        }
        .await;
        match outcome {
            Ok(version) => {
                tracing::info!(run_id = %run.run_id, %version, "fallback model refreshed");
                FallbackRecord { version: Some(version), error: None }
            }
            Err(error) => {
                tracing::warn!(run_id = %run.run_id, %error, "fallback model not refreshed; the API keeps the previous one");
                FallbackRecord { version: None, error: Some(error) }
            }
        }
    }

    async fn start_import(&self, run: &mut Run, p: &dyn Personalize) -> Result<Progress, StepFailure> {
        let export = run.export.clone().ok_or_else(|| missing(run, Step::Import))?;
        let (mode, key) = choose_import(&export, run.delta_since.is_some());
        let name = format!("{}-import-{}", self.settings.name_prefix, run.run_id);
        let source = self.objects.location(&key);
        let arn = p.start_import(&name, &source, mode).await.map_err(|e| fail(Step::Import, e))?;
        tracing::info!(run_id = %run.run_id, job = %name, ?mode, %source, "import job started");
        run.import = Some(ImportRecord {
            job_name: name,
            job_arn: Some(arn),
            mode,
            source,
            max_timestamp: export.max_timestamp,
            completed: false,
        });
        run.enter(RunState::Importing, now());
        Ok(Progress::Moved)
    }

    /// Compares the new version with the live one, records both and what was live,
    /// then moves to Deploying or ends Rejected. Two steps, so what was live is saved
    /// before the campaign is touched.
    async fn gate(&self, run: &mut Run) -> Result<Progress, StepFailure> {
        if let Some(gate) = run.gate.clone() {
            if gate.passed {
                run.enter(RunState::Deploying, now());
            } else {
                self.finish(run, RunState::Rejected { reason: gate.reason }).await?;
            }
            return Ok(Progress::Moved);
        }
        let training = run.training.clone().ok_or_else(|| missing(run, Step::QualityGate))?;
        let candidate_version = training.version.clone().ok_or_else(|| missing(run, Step::QualityGate))?;
        let metric = &self.settings.quality_metric;
        let gate_failure =
            |e: String, retryable| StepFailure { step: Step::QualityGate, message: e, retryable };
        let (candidate, live_version, live) = match &self.models {
            Models::Personalize(p) => {
                let candidate =
                    p.metrics(&candidate_version).await.map_err(|e| fail(Step::QualityGate, e))?;
                let serving = p.campaign().await.map_err(|e| fail(Step::QualityGate, e))?.serving;
                let live = match &serving {
                    Some(s) if *s != candidate_version => {
                        p.metrics(s).await.map_err(|e| fail(Step::QualityGate, e))?.get(metric).copied()
                    }
                    _ => None,
                };
                (candidate.get(metric).copied(), serving, live)
            }
            Models::Embedded(trainer) => {
                let live = trainer.live().await.map_err(|e| gate_failure(e.message, e.retryable))?;
                let live_metric = live.as_ref().and_then(|m| m.metrics.get(metric).copied());
                (training.metrics.get(metric).copied(), live.map(|m| m.version), live_metric)
            }
        };
        let gate = quality_gate(metric, candidate, live, self.settings.quality_tolerance);
        tracing::info!(
            run_id = %run.run_id, metric = %metric, candidate = ?candidate, live = ?live,
            passed = gate.passed, "quality gate"
        );
        run.gate = Some(gate);
        run.deploy = Some(DeployRecord { target: candidate_version, previous: live_version });
        Ok(Progress::Moved)
    }

    async fn deploy(&self, run: &mut Run) -> Result<Progress, StepFailure> {
        let step = failed_step(run);
        let target = run.deploy.as_ref().map(|d| d.target.clone()).ok_or_else(|| missing(run, step))?;
        match &self.models {
            Models::Personalize(p) => {
                let campaign = p.campaign().await.map_err(|e| fail(step, e))?;
                match campaign.latest_update {
                    Some((to, status)) if to == target => match status {
                        JobStatus::Active => {
                            self.finish(run, RunState::Done).await?;
                            Ok(Progress::Moved)
                        }
                        JobStatus::InProgress(s) => Ok(Progress::Wait(format!("campaign update {s}"))),
                        JobStatus::Failed(reason) => {
                            let serving = campaign.serving.unwrap_or_else(|| "its previous version".into());
                            let reason = format!("{reason}; the campaign still serves {serving}");
                            self.finish(run, RunState::Failed { step, reason }).await?;
                            Ok(Progress::Moved)
                        }
                    },
                    Some((_, JobStatus::InProgress(s))) => {
                        // Someone else's update is running; ours waits for it.
                        Ok(Progress::Wait(format!("another campaign update is {s}")))
                    }
                    _ if campaign.serving.as_deref() == Some(target.as_str()) => {
                        self.finish(run, RunState::Done).await?;
                        Ok(Progress::Moved)
                    }
                    _ => {
                        p.update_campaign(&target).await.map_err(|e| fail(step, e))?;
                        tracing::info!(run_id = %run.run_id, %target, "campaign update requested");
                        Ok(Progress::Wait("campaign update requested".into()))
                    }
                }
            }
            Models::Embedded(trainer) => {
                trainer.publish(&target).await.map_err(|e| StepFailure {
                    step,
                    message: e.message,
                    retryable: e.retryable,
                })?;
                self.finish(run, RunState::Done).await?;
                Ok(Progress::Moved)
            }
        }
    }
}

fn failed_step(run: &Run) -> Step {
    match (&run.kind, &run.state) {
        (RunKind::Rollback, _) => Step::Rollback,
        (_, RunState::Exporting) => Step::Export,
        (_, RunState::Exported | RunState::Importing) => Step::Import,
        (_, RunState::Imported | RunState::Training) => Step::Train,
        (_, RunState::Trained) => Step::QualityGate,
        _ => Step::Deploy,
    }
}

fn fail(step: Step, e: crate::personalize::PersonalizeError) -> StepFailure {
    StepFailure { step, retryable: e.retryable, message: e.to_string() }
}

fn missing(run: &Run, step: Step) -> StepFailure {
    StepFailure {
        step,
        message: format!(
            "run {} is {} but lacks the record of an earlier step",
            run.run_id,
            run.state.name()
        ),
        retryable: false,
    }
}

fn wrong_backend(run: &Run) -> StepFailure {
    StepFailure {
        step: failed_step(run),
        message: format!("run {} was started for {:?}, which is not configured now", run.run_id, run.backend),
        retryable: false,
    }
}

fn export_record(plan: &ExportPlan, m: &Manifest) -> ExportRecord {
    ExportRecord {
        prefix: plan.prefix.clone(),
        rows: m.rows,
        distinct_users: m.distinct_users,
        distinct_items: m.distinct_items,
        max_timestamp: m.max_timestamp,
        csv_key: m.csv.key.clone(),
        csv_size: m.csv.size,
        delta_key: m.delta.as_ref().map(|d| d.file.key.clone()),
        delta_size: m.delta.as_ref().map(|d| d.file.size),
        delta_new_rows: m.delta.as_ref().map(|d| d.new_rows),
        rejected: m.rejected.count,
    }
}

/// FULL the first time; INCREMENTAL (the delta file) when it carries at least 1,000
/// new rows and is under 1 GB; FULL (the whole file) otherwise.
pub fn choose_import(export: &ExportRecord, imported_before: bool) -> (ImportMode, String) {
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

/// Passes when there is nothing live to compare with, or when the candidate is at
/// most `tolerance` (relative) worse than the live version. Metrics are higher-is-better.
pub fn quality_gate(metric: &str, candidate: Option<f64>, live: Option<f64>, tolerance: f64) -> GateRecord {
    let (passed, reason) = match (candidate, live) {
        (None, None) => (true, format!("no {metric} for the new version, and nothing live to protect")),
        (None, Some(_)) => (false, format!("the new version reports no {metric}")),
        (Some(c), None) => (true, format!("{metric} {c:.4}; nothing live to compare with")),
        (Some(c), Some(l)) => {
            let floor = l * (1.0 - tolerance);
            if c >= floor {
                (true, format!("{metric} {c:.4} vs live {l:.4} (floor {floor:.4})"))
            } else {
                (
                    false,
                    format!(
                        "{metric} {c:.4} is below the live version's {l:.4} by more than {:.1}% (floor {floor:.4})",
                        tolerance * 100.0
                    ),
                )
            }
        }
    };
    GateRecord { metric: metric.to_owned(), candidate, live, tolerance, passed, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_allows_the_tolerance_and_no_more() {
        let m = "ndcg";
        assert!(quality_gate(m, Some(0.30), Some(0.30), 0.02).passed);
        assert!(quality_gate(m, Some(0.2941), Some(0.30), 0.02).passed, "1.97% worse is within 2%");
        let rejected = quality_gate(m, Some(0.29), Some(0.30), 0.02);
        assert!(!rejected.passed);
        assert!(
            rejected.reason.contains("0.2900") && rejected.reason.contains("0.3000"),
            "{}",
            rejected.reason
        );
        assert!(quality_gate(m, Some(0.1), None, 0.02).passed, "nothing live: first deploy");
        assert!(!quality_gate(m, None, Some(0.3), 0.02).passed, "no figure, no replacing a live version");
        assert!(
            quality_gate(m, None, None, 0.02).passed,
            "no figure but nothing live: the first model goes out"
        );
    }

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

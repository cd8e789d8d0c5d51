//! The state machine. Each invocation loads the active run, advances it as far as it
//! can without waiting (an export finishes and its import job is created in the same
//! invocation; a job still running ends the invocation), saves after every step, and
//! returns. The next invocation (the 10-minute schedule, or a person) carries on.
//!
//! ```text
//! Exporting ─▶ Exported ─▶ Importing ─▶ Imported ─▶ Training ─▶ Trained ─▶ (gate) ─▶ Deploying ─▶ Done
//!     │            │ (no preparation: straight to Training)         │          │            │
//!     └─ Failed{Export|Validate}   Failed{Import}      Failed{Train} ┘  Rejected ┘  Failed{Deploy}
//! ```
//!
//! What each step does to a model is the [`ModelBackend`]'s business (Personalize: an
//! import job, a solution version, a campaign update; embedded: train and publish);
//! this module only decides which step comes next and records it.
//!
//! Crash safety: every external effect is either idempotent by name (import job and
//! solution version names derive from the run id), or checked before it is repeated
//! (an export whose manifest exists is not redone; a campaign already updating to the
//! target is not updated again; what was live is recorded before the update starts).

use std::sync::Arc;
use std::time::{Duration, Instant};

use artifacts::ObjectStore;
use serde::Serialize;
use store::InteractionSource;

use crate::backend::personalize::{INCREMENTAL_MAX_BYTES, INCREMENTAL_MIN_ROWS};
use crate::backend::{BackendError, Deployment, JobStatus, ModelBackend, Preparation};
use crate::events::{PipelineEvent, PipelineEvents};
use crate::export::{self, ExportError, ExportPlan};
use crate::manifest::Manifest;
use crate::run::{
    Backend, DeployRecord, ExportRecord, ExportWindow, FallbackRecord, GateRecord, Run, RunKind, RunState,
    Step, TableExportRecord, new_run_id,
};
use crate::runs::{RunStore, RunStoreError};
use crate::table_export::{self, ExportChoice, TableExportError, TableExportStatus, TableExporter};
use crate::trainer::ModelTrainer;

/// How many past runs the decisions (import mode, weekly FULL, rollback) look at.
const HISTORY: usize = 60;

/// Five invocations without progress: at the 10-minute tick, under an hour of retrying.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Two days: longer than Personalize's longest FULL training we plan for (hours), short
/// enough that a stuck run costs at most one missed nightly run after the first.
pub const DEFAULT_MAX_RUN_AGE_HOURS: u64 = 48;

/// Tunables, from the environment (see `config`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub scan_segments: u32,
    /// A higher-is-better metric, e.g. `normalized_discounted_cumulative_gain_at_10`.
    pub quality_metric: String,
    /// How much worse than the live version a new one may be (0.02 = 2 %).
    pub quality_tolerance: f64,
    /// No step starts with less than this left before the deadline.
    pub safety_margin: Duration,
    /// How long an invocation holds a run it is advancing (longer than a Lambda lives).
    pub lease: Duration,
    /// Tables at least this big (as the table exporter reports them) are exported with
    /// the service's own export instead of a scan; `None` always scans.
    pub table_export_above_bytes: Option<u64>,
    /// Invocations a step may take without moving the run on before the run ends
    /// `Failed` (`STEP_MAX_ATTEMPTS`).
    pub max_attempts: u32,
    /// A run older than this ends `Failed` at its next invocation (`RUN_MAX_AGE_HOURS`),
    /// whatever it waits for, so that no run holds off the nightly runs for ever.
    pub max_run_age: Duration,
    /// Test hook (`TRAINING_EXPORT_CRASH_AFTER`): abort the process right after a run is
    /// saved in this state. Only in builds with the `test-hooks` feature.
    #[cfg(feature = "test-hooks")]
    pub crash_after: Option<&'static str>,
    /// Test hook: how far ahead of the system clock the table-export windows are reckoned,
    /// to follow a stand-in whose clock was advanced (a window needs 15 minutes). Only in
    /// builds with the `test-hooks` feature.
    #[cfg(feature = "test-hooks")]
    pub export_clock_offset_secs: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            scan_segments: 4,
            quality_metric: "normalized_discounted_cumulative_gain_at_10".into(),
            quality_tolerance: 0.02,
            safety_margin: Duration::from_secs(60),
            lease: Duration::from_secs(16 * 60),
            table_export_above_bytes: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            max_run_age: Duration::from_secs(DEFAULT_MAX_RUN_AGE_HOURS * 3600),
            #[cfg(feature = "test-hooks")]
            crash_after: None,
            #[cfg(feature = "test-hooks")]
            export_clock_offset_secs: 0,
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

/// What an invocation did, as its answer says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// A run (or rollback) was created and advanced as far as it could go.
    Started,
    /// The active run was advanced.
    Advanced,
    /// There was no active run to advance.
    Idle,
    /// Another run is active; nothing was started.
    Refused,
    /// The latest runs, as asked.
    Status,
    /// The active run was ended `Failed` on request.
    Cancelled,
}

/// What an invocation did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub outcome: Outcome,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<RunSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_run_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<RunSummary>,
}

impl Response {
    fn new(outcome: Outcome, message: String) -> Self {
        Self { outcome, message, run: None, active_run_id: None, runs: vec![] }
    }

    fn with_run(outcome: Outcome, message: String, run: &Run) -> Self {
        Self { run: Some(RunSummary::from(run)), ..Self::new(outcome, message) }
    }

    fn advanced(run: &Run) -> Self {
        Self::with_run(Outcome::Advanced, format!("run {} is {}", run.run_id, run.state.name()), run)
    }

    fn idle() -> Self {
        Self::new(Outcome::Idle, "no active run".into())
    }

    fn refused(active_run_id: String) -> Self {
        tracing::warn!(%active_run_id, "run refused: another run is active");
        Self {
            active_run_id: Some(active_run_id.clone()),
            ..Self::new(
                Outcome::Refused,
                format!("run {active_run_id} is still active; try again when it has finished"),
            )
        }
    }

    fn status(runs: &[Run]) -> Self {
        Self {
            active_run_id: runs.iter().find(|r| r.is_active()).map(|r| r.run_id.clone()),
            runs: runs.iter().map(RunSummary::from).collect(),
            ..Self::new(Outcome::Status, format!("{} recent runs", runs.len()))
        }
    }

    /// The CLI's exit status: 2 when refused (try later), 1 when the run ended Failed or
    /// Rejected, 0 otherwise (a run still waiting for a job is not a failure).
    pub fn exit_code(&self) -> u8 {
        match (self.outcome, self.run.as_ref().map(|r| r.status)) {
            (Outcome::Refused, _) => 2,
            (Outcome::Cancelled, _) => 0,
            (_, Some("Failed" | "Rejected")) => 1,
            _ => 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Runs(#[from] RunStoreError),
    #[error("nothing to roll back: no deployed run records a previous version")]
    NothingToRollBack,
    /// The run was ended `Failed` by its attempt or age limit. An error, not an answer,
    /// so that the invocation fails and CloudWatch's `Errors` alarm sees it.
    #[error("run {run_id} gave up at {step}: {reason}")]
    RunGaveUp { run_id: String, step: Step, reason: String },
    #[error("run {run_id} is not the active run (the active run is {active})")]
    NotActive { run_id: String, active: String },
}

impl PipelineError {
    pub fn is_retryable(&self) -> bool {
        match self {
            PipelineError::Runs(e) => e.is_retryable(),
            PipelineError::NothingToRollBack
            | PipelineError::RunGaveUp { .. }
            | PipelineError::NotActive { .. } => false,
        }
    }

    /// A short stable name for the kind of failure (Lambda's `errorType`).
    pub fn kind(&self) -> &'static str {
        match self {
            PipelineError::Runs(_) => "RunStore",
            PipelineError::NothingToRollBack => "NothingToRollBack",
            PipelineError::RunGaveUp { .. } => "RunGaveUp",
            PipelineError::NotActive { .. } => "NotActive",
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

/// A step could not complete. Which step is told by the run's state where the failure
/// is handled ([`failed_step`]): no step changes the state before it fails.
#[derive(Debug)]
struct StepFailure {
    message: String,
    retryable: bool,
}

impl StepFailure {
    fn permanent(message: String) -> Self {
        Self { message, retryable: false }
    }
}

impl From<BackendError> for StepFailure {
    fn from(e: BackendError) -> Self {
        Self { message: e.message, retryable: e.retryable }
    }
}

impl From<RunStoreError> for StepFailure {
    fn from(e: RunStoreError) -> Self {
        Self { retryable: e.is_retryable(), message: e.to_string() }
    }
}

impl From<TableExportError> for StepFailure {
    fn from(e: TableExportError) -> Self {
        Self { message: e.message, retryable: e.retryable }
    }
}

impl From<ExportError> for StepFailure {
    fn from(e: ExportError) -> Self {
        Self { retryable: e.is_retryable(), message: e.to_string() }
    }
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
    pub interactions: Arc<dyn InteractionSource>,
    pub objects: Arc<dyn ObjectStore>,
    pub runs: Arc<dyn RunStore>,
    pub events: Arc<dyn PipelineEvents>,
    /// Where models come from.
    pub backend: Arc<dyn ModelBackend>,
    /// With Personalize: the embedded recommender, trained on every full export and
    /// published under `models/`, so the ranking API's fallback serves fresh popular
    /// items (it has no data of its own inside Lambda). `None` skips the refresh.
    pub fallback_models: Option<Arc<dyn ModelTrainer>>,
    pub settings: Settings,
    /// Told the number of rows exported so far (the CLI's progress bar).
    pub progress: Option<Arc<dyn Fn(u64) + Send + Sync>>,
    /// The table's own export, for tables above `settings.table_export_above_bytes`.
    pub table_exporter: Option<Arc<dyn TableExporter>>,
}

/// The crash hook's name for "in the middle of converting a table export's data file".
pub const CONVERTING: &str = "Converting";

/// How the export step goes on.
enum ExportStep {
    /// A step of the table export was taken (or waits); the run says which.
    TableExport(Progress),
    /// Every part is converted and the manifest written.
    Assembled(Box<Manifest>),
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
            Request::Cancel { trigger, run_id, reason } => self.cancel(&trigger, run_id, reason).await,
            Request::Advance {} => match self.runs.active().await? {
                Some(run) => Ok(Response::advanced(&self.advance(run, deadline).await?)),
                None => Ok(Response::idle()),
            },
            Request::Status {} => Ok(Response::status(&self.runs.recent(10).await?)),
        }
    }

    fn new_run(&self, kind: RunKind, trigger: &str, state: RunState) -> Run {
        Run::new(
            new_run_id(time::OffsetDateTime::now_utc()),
            kind,
            self.backend.kind(),
            trigger,
            state,
            now(),
        )
    }

    async fn start(
        &self,
        kind: RunKind,
        trigger: &str,
        deadline: Deadline,
    ) -> Result<Response, PipelineError> {
        self.end_expired_active_run().await?;
        let history = self.runs.recent(HISTORY).await?;
        let mut run = self.new_run(kind, trigger, RunState::Exporting);
        // The previous import's newest row: the delta file starts after it. (Only a
        // backend that imports leaves import records.)
        run.delta_since = history
            .iter()
            .filter_map(|r| r.import.as_ref())
            .find(|i| i.completed)
            .and_then(|i| i.max_timestamp);
        self.create_and_advance(run, deadline, |run| format!("run {} is {}", run.run_id, run.state.name()))
            .await
    }

    async fn rollback(&self, trigger: &str, deadline: Deadline) -> Result<Response, PipelineError> {
        let history = self.runs.recent(HISTORY).await?;
        let last_deploy = history
            .iter()
            .filter(|r| r.state == RunState::Done && r.kind != RunKind::ExportOnly)
            .find_map(|r| r.deploy.clone())
            .ok_or(PipelineError::NothingToRollBack)?;
        let previous = last_deploy.previous.ok_or(PipelineError::NothingToRollBack)?;
        let mut run = self.new_run(RunKind::Rollback, trigger, RunState::Deploying);
        run.deploy = Some(DeployRecord { target: previous.clone(), previous: Some(last_deploy.target) });
        self.create_and_advance(run, deadline, |run| {
            format!("rollback {} to {previous} is {}", run.run_id, run.state.name())
        })
        .await
    }

    /// Stores the new `run` (refused while another is active) and advances it; the
    /// answer's message is `describe(run)` once it stopped.
    async fn create_and_advance(
        &self,
        run: Run,
        deadline: Deadline,
        describe: impl FnOnce(&Run) -> String,
    ) -> Result<Response, PipelineError> {
        match self.runs.create(&run).await {
            Ok(()) => self.crash_point(&run),
            Err(RunStoreError::Busy { active_run_id }) => return Ok(Response::refused(active_run_id)),
            Err(e) => return Err(e.into()),
        }
        tracing::info!(
            run_id = %run.run_id, kind = ?run.kind, trigger = %run.trigger,
            target = ?run.deploy.as_ref().map(|d| &d.target), "run started"
        );
        let run = self.advance(run, deadline).await?;
        Ok(Response::with_run(Outcome::Started, describe(&run), &run))
    }

    /// Advances `run` until it waits, ends, or the deadline comes near, holding its
    /// lease meanwhile so that an overlapping invocation does not redo the same step.
    pub async fn advance(&self, mut run: Run, deadline: Deadline) -> Result<Run, PipelineError> {
        if let Some(until) = run.lease_until.filter(|&until| until > now()) {
            tracing::info!(run_id = %run.run_id, lease_until = until, "another invocation is advancing this run");
            return Ok(run);
        }
        if let Some(reason) = self.limit_reached(&run, now()) {
            return self.give_up(run, reason).await;
        }
        run.attempts += 1;
        run.lease_until = Some(now() + self.settings.lease.as_secs() as i64);
        match self.runs.save(&mut run).await {
            Ok(()) => {}
            Err(RunStoreError::Conflict { .. }) => {
                tracing::info!(run_id = %run.run_id, "another invocation took this run first");
                return Ok(self.runs.get(&run.run_id).await?.unwrap_or(run));
            }
            Err(e) => return Err(e.into()),
        }
        let (mut run, still_ours, gave_up) = self.advance_holding_lease(run, deadline).await?;
        if let Some(reason) = gave_up {
            return self.give_up(run, reason).await;
        }
        if !still_ours {
            return Ok(run);
        }
        run.lease_until = None;
        match self.runs.save(&mut run).await {
            Ok(()) | Err(RunStoreError::Conflict { .. }) => Ok(run),
            Err(e) => Err(e.into()),
        }
    }

    /// Returns the run, whether this invocation still holds it, and why to give it up
    /// when its last retryable failure spent its attempts.
    async fn advance_holding_lease(
        &self,
        mut run: Run,
        deadline: Deadline,
    ) -> Result<(Run, bool, Option<String>), PipelineError> {
        while run.is_active() {
            if deadline.too_close(self.settings.safety_margin) {
                tracing::info!(run_id = %run.run_id, state = run.state.name(), "deadline near; next invocation continues");
                break;
            }
            let before = run.state.name();
            match self.step(&mut run).await {
                Ok(Progress::Moved) => {
                    run.attempts = 0;
                    match self.runs.save(&mut run).await {
                        Ok(()) => self.crash_point(&run),
                        Err(RunStoreError::Conflict { .. }) => {
                            tracing::warn!(run_id = %run.run_id, "another invocation advanced this run; stopping");
                            return Ok((self.runs.get(&run.run_id).await?.unwrap_or(run), false, None));
                        }
                        Err(e) => return Err(e.into()),
                    }
                    tracing::info!(run_id = %run.run_id, from = before, to = run.state.name(), "run advanced");
                }
                Ok(Progress::Wait(why)) => {
                    // Waiting for a job that is still running is progress: it can take hours.
                    run.attempts = 0;
                    tracing::info!(run_id = %run.run_id, state = run.state.name(), waiting_for = %why, "waiting");
                    break;
                }
                Err(failure) if failure.retryable => {
                    tracing::warn!(
                        run_id = %run.run_id, state = run.state.name(), step = %failed_step(&run),
                        error = %failure.message, attempts = run.attempts, max_attempts = self.settings.max_attempts,
                        "retryable failure; the next invocation tries again"
                    );
                    run.last_error = Some(failure.message);
                    if run.attempts >= self.settings.max_attempts {
                        let reason = self.attempts_spent(&run);
                        return Ok((run, true, Some(reason)));
                    }
                    match self.runs.save(&mut run).await {
                        Ok(()) | Err(RunStoreError::Conflict { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                    break;
                }
                Err(failure) => {
                    let state = RunState::Failed { step: failed_step(&run), reason: failure.message };
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
        Ok((run, true, None))
    }

    /// A new run is refused while another is active; an active run past its age or attempt
    /// limit is ended first (announced, so the alarm still fires), so that a stuck run never
    /// holds off the nightly run.
    async fn end_expired_active_run(&self) -> Result<(), PipelineError> {
        let Some(mut active) = self.runs.active().await? else { return Ok(()) };
        if active.lease_until.is_some_and(|until| until > now()) {
            return Ok(());
        }
        if let Some(reason) = self.limit_reached(&active, now()) {
            let step = failed_step(&active);
            tracing::error!(run_id = %active.run_id, %step, %reason, "giving up on the run before starting a new one");
            self.end_failed(&mut active, step, reason).await?;
        }
        Ok(())
    }

    /// Why `run` must end now, if it must: too old, or out of attempts at its step.
    fn limit_reached(&self, run: &Run, now: i64) -> Option<String> {
        let age = now.saturating_sub(run.created_at);
        let limit = self.settings.max_run_age.as_secs() as i64;
        if age > limit {
            return Some(format!(
                "the run is {:.1} h old, over the age limit of {:.1} h (RUN_MAX_AGE_HOURS); it was {}",
                age as f64 / 3600.0,
                limit as f64 / 3600.0,
                run.state.name()
            ));
        }
        (run.attempts >= self.settings.max_attempts).then(|| self.attempts_spent(run))
    }

    fn attempts_spent(&self, run: &Run) -> String {
        let last = match &run.last_error {
            Some(e) => format!("last error: {e}"),
            None => "no error was recorded: each invocation ended before the step did (a timeout or a crash)"
                .into(),
        };
        format!(
            "{} invocations at {} without progress (STEP_MAX_ATTEMPTS={}); {last}",
            run.attempts,
            run.state.name(),
            self.settings.max_attempts
        )
    }

    /// Ends `run` `Failed` with `reason` (announced like every failure) and reports it as
    /// the invocation's error.
    async fn give_up(&self, mut run: Run, reason: String) -> Result<Run, PipelineError> {
        let step = failed_step(&run);
        tracing::error!(run_id = %run.run_id, %step, %reason, "giving up on the run");
        self.end_failed(&mut run, step, reason.clone()).await?;
        Err(PipelineError::RunGaveUp { run_id: run.run_id, step, reason })
    }

    /// Saves `run` as `Failed` at `step`, announced first, releasing its lease. Another
    /// invocation saving meanwhile (a conflict) makes it read the run again and retry, unless
    /// that one ended it already.
    async fn end_failed(&self, run: &mut Run, step: Step, reason: String) -> Result<(), PipelineError> {
        for _ in 0..3 {
            let state = RunState::Failed { step, reason: reason.clone() };
            if let Err(e) = self.finish(run, state).await {
                // Not ended without its event: the next invocation tries again.
                tracing::error!(run_id = %run.run_id, error = %e.message, "could not announce the failure; will retry");
                return Ok(());
            }
            run.lease_until = None;
            match self.runs.save(run).await {
                Ok(()) => return Ok(()),
                Err(RunStoreError::Conflict { .. }) => match self.runs.get(&run.run_id).await? {
                    Some(fresh) if fresh.is_active() => *run = fresh,
                    Some(fresh) => {
                        *run = fresh;
                        return Ok(());
                    }
                    None => return Ok(()),
                },
                Err(e) => return Err(e.into()),
            }
        }
        Err(RunStoreError::Conflict { run_id: run.run_id.clone() }.into())
    }

    /// Ends the active run `Failed` on request (`{"action":"cancel"}`, `training-export
    /// cancel`), whoever holds its lease: the holder's next save conflicts and it stops.
    /// Jobs already started in Personalize or DynamoDB run to their end; nothing uses them.
    async fn cancel(
        &self,
        trigger: &str,
        run_id: Option<String>,
        reason: Option<String>,
    ) -> Result<Response, PipelineError> {
        let Some(mut run) = self.runs.active().await? else {
            return Ok(Response::new(Outcome::Idle, "no active run to cancel".into()));
        };
        if let Some(wanted) = run_id.filter(|id| *id != run.run_id) {
            return Err(PipelineError::NotActive { run_id: wanted, active: run.run_id });
        }
        let step = failed_step(&run);
        let reason = match reason {
            Some(why) => format!("cancelled by {trigger} at {}: {why}", run.state.name()),
            None => format!("cancelled by {trigger} at {}", run.state.name()),
        };
        tracing::warn!(run_id = %run.run_id, %step, %reason, "cancelling the run");
        self.end_failed(&mut run, step, reason).await?;
        let message = format!("run {} is {}", run.run_id, run.state.name());
        Ok(Response::with_run(Outcome::Cancelled, message, &run))
    }

    /// The crash hook of the end-to-end tests: when `run` was just saved in the state
    /// `crash_after` names, the process dies here as a killed one would: no unwinding, no
    /// lease released, nothing more written. Compiled in only with the `test-hooks` feature.
    #[cfg(feature = "test-hooks")]
    fn crash_point(&self, run: &Run) {
        if self.settings.crash_after == Some(run.state.name()) {
            tracing::error!(
                run_id = %run.run_id, state = run.state.name(),
                "TRAINING_EXPORT_CRASH_AFTER: aborting the process right after saving this state"
            );
            std::process::abort();
        }
    }

    #[cfg(not(feature = "test-hooks"))]
    fn crash_point(&self, _: &Run) {}

    /// The crash hook at a point inside a step that has a name of its own.
    #[cfg(feature = "test-hooks")]
    fn crash_point_named(&self, run: &Run, point: &'static str) {
        if self.settings.crash_after == Some(point) {
            tracing::error!(run_id = %run.run_id, point, "TRAINING_EXPORT_CRASH_AFTER: aborting the process here");
            std::process::abort();
        }
    }

    #[cfg(not(feature = "test-hooks"))]
    fn crash_point_named(&self, _: &Run, _: &'static str) {}

    /// Enters a terminal state: announce first, so that a state is never terminal
    /// without its event (a failed publish leaves the run where it was, to retry).
    async fn finish(&self, run: &mut Run, state: RunState) -> Result<(), StepFailure> {
        let event = PipelineEvent::for_run(run, &state);
        self.events
            .publish(&event)
            .await
            .map_err(|e| StepFailure { message: e.to_string(), retryable: true })?;
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

    /// Follows a backend job (an import, a training): done moves the run to `next` after
    /// `complete` records it; running waits; failed ends the run failed at `step`.
    async fn follow_job(
        &self,
        run: &mut Run,
        status: JobStatus,
        step: Step,
        next: RunState,
        complete: impl FnOnce(&mut Run),
    ) -> Result<Progress, StepFailure> {
        match status {
            JobStatus::Active => {
                complete(run);
                run.enter(next, now());
                Ok(Progress::Moved)
            }
            JobStatus::InProgress(what) => Ok(Progress::Wait(what)),
            JobStatus::Failed(reason) => self.finished(run, RunState::Failed { step, reason }).await,
        }
    }

    /// Ends `run` in `state`; the step moved it.
    async fn finished(&self, run: &mut Run, state: RunState) -> Result<Progress, StepFailure> {
        self.finish(run, state).await?;
        Ok(Progress::Moved)
    }

    async fn step(&self, run: &mut Run) -> Result<Progress, StepFailure> {
        let exporting = matches!(run.state, RunState::Exporting) || run.kind == RunKind::ExportOnly;
        if !exporting && run.is_active() && run.backend != self.backend.kind() {
            return Err(StepFailure::permanent(format!(
                "run {} was started for {:?}, which is not configured now",
                run.run_id, run.backend
            )));
        }
        match run.state.clone() {
            RunState::Exporting => self.export(run).await,
            RunState::Exported if run.kind == RunKind::ExportOnly => self.finished(run, RunState::Done).await,
            RunState::Exported => {
                if run.fallback_model.is_none()
                    && let Some(trainer) = &self.fallback_models
                {
                    run.fallback_model = Some(match run.export.as_ref().and_then(|e| e.incremental) {
                        Some(w) => {
                            let error = format!(
                                "the export is delta-only (written from {} to {}): the fallback model \
                                 keeps its previous version until the weekly full export",
                                w.from, w.to
                            );
                            tracing::info!(run_id = %run.run_id, %error, "fallback model not refreshed");
                            FallbackRecord { version: None, error: Some(error) }
                        }
                        None => self.refresh_fallback(run, trainer.as_ref()).await,
                    });
                    // Saved before the preparation starts, so a retry does not train it again.
                    return Ok(Progress::Moved);
                }
                let export = run.export.clone().ok_or_else(|| missing(run))?;
                match self.backend.prepare(run, &export).await? {
                    Preparation::Started(import) => {
                        run.import = Some(import);
                        run.enter(RunState::Importing, now());
                    }
                    Preparation::NotNeeded => run.enter(RunState::Training, now()),
                }
                Ok(Progress::Moved)
            }
            RunState::Importing => {
                let import = run.import.clone().ok_or_else(|| missing(run))?;
                let status = self.backend.preparation_status(&import).await?;
                self.follow_job(run, status, Step::Import, RunState::Imported, |run| {
                    run.import.as_mut().expect("checked").completed = true
                })
                .await
            }
            RunState::Imported => {
                self.start_training(run).await?;
                run.enter(RunState::Training, now());
                Ok(Progress::Moved)
            }
            RunState::Training => {
                // Without a preparation, training starts here (and may be done at once).
                let training = match run.training.clone() {
                    Some(training) => training,
                    None => self.start_training(run).await?,
                };
                if training.completed {
                    run.enter(RunState::Trained, now());
                    return Ok(Progress::Moved);
                }
                let status = self.backend.training_status(&training).await?;
                self.follow_job(run, status, Step::Train, RunState::Trained, |run| {
                    run.training.as_mut().expect("recorded").completed = true
                })
                .await
            }
            RunState::Trained => self.gate(run).await,
            RunState::Deploying => self.deploy(run).await,
            RunState::Done | RunState::Failed { .. } | RunState::Rejected { .. } => {
                Ok(Progress::Wait("terminal".into()))
            }
        }
    }

    /// Starts the training of `run` and records it; returns the record.
    async fn start_training(&self, run: &mut Run) -> Result<crate::run::TrainingRecord, StepFailure> {
        let history = self.runs.recent(HISTORY).await?;
        let training = self.backend.start_training(run, &history).await?;
        tracing::info!(
            run_id = %run.run_id, name = %training.name, mode = ?training.mode,
            completed = training.completed, "training started"
        );
        run.training = Some(training.clone());
        Ok(training)
    }

    async fn export(&self, run: &mut Run) -> Result<Progress, StepFailure> {
        let mut plan = ExportPlan::new(&run.run_id);
        match run.table_export.as_ref().and_then(|t| t.incremental) {
            // Delta-only: its CSV folder is the delta, under a prefix of its own.
            Some(_) => plan.prefix = export::incremental_prefix(&run.run_id),
            None => plan.delta_since = run.delta_since,
        }
        // An export whose manifest exists finished before a crash: keep it.
        let manifest = match export::read_manifest(self.objects.as_ref(), &plan.prefix).await {
            Ok(m) if m.run_id == run.run_id => {
                tracing::info!(run_id = %run.run_id, "export already complete; resuming after it");
                m
            }
            _ if run.table_export.is_some() || self.table_export_wanted().await? => {
                match self.table_export(run, &plan).await? {
                    ExportStep::TableExport(progress) => return Ok(progress),
                    ExportStep::Assembled(manifest) => *manifest,
                }
            }
            _ => {
                let progress = self.progress.clone();
                let report = move |rows: u64| {
                    if let Some(p) = &progress {
                        p(rows)
                    }
                };
                let pages = export::scan_all_in_tasks(self.interactions.clone(), self.settings.scan_segments);
                export::export(pages, self.objects.as_ref(), &plan, &report).await?
            }
        };
        if manifest.incremental.is_some()
            && let Some(reason) = unimportable_delta(&manifest)
        {
            let window = run.table_export.as_ref().and_then(|t| t.incremental);
            return self.replace_incremental(run, window, reason).await;
        }
        run.export = Some(export_record(&plan, &manifest));
        tracing::info!(
            run_id = %run.run_id, rows = manifest.rows, users = manifest.distinct_users,
            items = manifest.distinct_items, rejected = manifest.rejected.count, "export written"
        );
        match manifest.validate() {
            Ok(()) => {
                run.enter(RunState::Exported, now());
                Ok(Progress::Moved)
            }
            Err(failure) => {
                self.finished(run, RunState::Failed { step: Step::Validate, reason: failure.to_string() })
                    .await
            }
        }
    }

    /// Whether the table is big enough for its own export (only asked before a run's
    /// export starts: once started, the run's record decides).
    async fn table_export_wanted(&self) -> Result<bool, StepFailure> {
        let (Some(exporter), Some(above)) = (&self.table_exporter, self.settings.table_export_above_bytes)
        else {
            return Ok(false);
        };
        if above == u64::MAX {
            return Ok(false);
        }
        let size = exporter.table_size_bytes().await?;
        tracing::info!(table_bytes = ?size, threshold = above, "export path chosen by table size");
        Ok(size.map_or(above == 0, |bytes| bytes >= above))
    }

    /// One step of the table-export path: start the export; wait for it; convert its next
    /// data file; or, with every file converted, assemble the manifest. Each step but the
    /// last is saved before the next, which is what makes the conversion resumable.
    async fn table_export(&self, run: &mut Run, plan: &ExportPlan) -> Result<ExportStep, StepFailure> {
        let exporter = self.table_exporter.as_ref().ok_or_else(|| {
            StepFailure::permanent(format!(
                "run {} exports through a table export, which is not configured now",
                run.run_id
            ))
        })?;
        let Some(mut record) = run.table_export.clone() else {
            let window = match self.export_choice(run).await? {
                ExportChoice::Incremental(window) => Some(window),
                ExportChoice::Full(why) => {
                    tracing::info!(run_id = %run.run_id, reason = %why, "a full table export");
                    None
                }
            };
            let prefix = match window {
                Some(_) => export::incremental_prefix(&run.run_id),
                None => plan.prefix.clone(),
            };
            // The run id is the client token: a retried start finds the same export.
            match self.start_table_export(exporter.as_ref(), &run.run_id, &prefix, window).await {
                Ok(record) => run.table_export = Some(record),
                // Refused for good (a window PITR no longer covers, say): a full export
                // instead, or every night would fail the same way.
                Err(e) if window.is_some() && !e.retryable => {
                    let reason = format!("DynamoDB refused it: {}", e.message);
                    return Ok(ExportStep::TableExport(self.replace_incremental(run, window, reason).await?));
                }
                Err(e) => return Err(e),
            }
            return Ok(ExportStep::TableExport(Progress::Moved));
        };
        let Some(manifest_key) = record.manifest_key.clone() else {
            return Ok(ExportStep::TableExport(match exporter.status(&record.export_arn).await? {
                TableExportStatus::InProgress(what) => Progress::Wait(what),
                TableExportStatus::Failed(reason) if record.incremental.is_some() => {
                    self.replace_incremental(run, record.incremental, format!("it failed: {reason}")).await?
                }
                TableExportStatus::Failed(reason) => {
                    self.finished(run, RunState::Failed { step: Step::Export, reason }).await?
                }
                TableExportStatus::Completed { manifest_key } => {
                    let files = table_export::data_files(self.objects.as_ref(), &manifest_key).await?;
                    let count = u32::try_from(files.len()).map_err(|_| {
                        StepFailure::permanent(format!("{} data files are too many", files.len()))
                    })?;
                    tracing::info!(run_id = %run.run_id, data_files = count, "table export completed");
                    record.manifest_key = Some(manifest_key);
                    record.data_files = Some(count);
                    run.table_export = Some(record);
                    Progress::Moved
                }
            }));
        };
        let total = record.data_files.unwrap_or(0);
        if record.converted < total {
            let files = table_export::data_files(self.objects.as_ref(), &manifest_key).await?;
            let index = record.converted;
            let file = files.get(index as usize).ok_or_else(|| {
                StepFailure::permanent(format!(
                    "{manifest_key} lists {} data files, not {total}",
                    files.len()
                ))
            })?;
            let started = Instant::now();
            let rows = export::convert::convert_file(self.objects.as_ref(), plan, index, file, &|| {
                self.crash_point_named(run, CONVERTING)
            })
            .await?;
            tracing::info!(
                run_id = %run.run_id, file = index + 1, of = total, rows,
                seconds = started.elapsed().as_secs_f64(), "table export file converted"
            );
            record.converted += 1;
            run.table_export = Some(record);
            return Ok(ExportStep::TableExport(Progress::Moved));
        }
        Ok(ExportStep::Assembled(Box::new(
            export::convert::assemble(self.objects.as_ref(), plan, total, record.incremental).await?,
        )))
    }

    /// Starts a table export (of the whole table, or of `window`) under `prefix` and
    /// returns the run's record of it.
    async fn start_table_export(
        &self,
        exporter: &dyn TableExporter,
        client_token: &str,
        prefix: &str,
        window: Option<ExportWindow>,
    ) -> Result<TableExportRecord, StepFailure> {
        let s3_prefix = format!("{prefix}/dynamodb");
        let asked_at = self.export_now();
        let started = exporter.start(client_token, &s3_prefix, window).await?;
        // A full export's data is as of its ExportTime; when the service does not say,
        // the time it was asked is no later, so the next window misses nothing.
        let export_time = match window {
            Some(w) => w.to,
            None => started.export_time.unwrap_or(asked_at),
        };
        tracing::info!(
            export_arn = %started.export_id, incremental = ?window, export_time,
            "table export started"
        );
        Ok(TableExportRecord {
            export_arn: started.export_id,
            s3_prefix,
            manifest_key: None,
            data_files: None,
            converted: 0,
            export_time: Some(export_time),
            incremental: window,
            replaced_incremental: None,
        })
    }

    /// Full or incremental, for a run starting its table export: incremental only for a
    /// nightly run whose backend does not need the whole table now (see
    /// [`table_export::choose_export`] and [`ModelBackend::full_export_due`]).
    async fn export_choice(&self, run: &Run) -> Result<ExportChoice, StepFailure> {
        if run.kind != RunKind::Full {
            return Ok(ExportChoice::Full("an export-only run exports the whole table".into()));
        }
        let history = self.runs.recent(HISTORY).await?;
        let history: Vec<Run> = history.into_iter().filter(|r| r.run_id != run.run_id).collect();
        let at = self.export_now();
        Ok(table_export::choose_export(&history, at, self.backend.full_export_due(&history, at)))
    }

    /// The clock the table-export windows are reckoned by: the system's (ahead by the
    /// `test-hooks` offset in tests against a stand-in).
    fn export_now(&self) -> i64 {
        #[cfg(feature = "test-hooks")]
        return now() + self.settings.export_clock_offset_secs;
        #[cfg(not(feature = "test-hooks"))]
        now()
    }

    /// The run's incremental export (of `window`) cannot be imported, or was refused or
    /// failed (`reason`): a full export replaces it within the same run, under the run's
    /// usual prefix, so no data is skipped.
    async fn replace_incremental(
        &self,
        run: &mut Run,
        window: Option<ExportWindow>,
        reason: String,
    ) -> Result<Progress, StepFailure> {
        let exporter = self.table_exporter.as_ref().ok_or_else(|| {
            StepFailure::permanent(format!("run {} has no table exporter to fall back with", run.run_id))
        })?;
        tracing::warn!(
            run_id = %run.run_id, incremental = ?window, %reason,
            "the incremental export will not do; a full export replaces it"
        );
        let prefix = ExportPlan::new(&run.run_id).prefix;
        let token = format!("{}-full", run.run_id);
        let mut record = self.start_table_export(exporter.as_ref(), &token, &prefix, None).await?;
        record.replaced_incremental = Some(match window {
            Some(w) => format!("the incremental export from {} to {}: {reason}", w.from, w.to),
            None => reason,
        });
        run.table_export = Some(record);
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

    /// Compares the new version with the live one, records both and what was live,
    /// then moves to Deploying or ends Rejected. Two steps, so what was live is saved
    /// before anything is deployed.
    async fn gate(&self, run: &mut Run) -> Result<Progress, StepFailure> {
        if let Some(gate) = run.gate.clone() {
            if gate.passed {
                run.enter(RunState::Deploying, now());
                return Ok(Progress::Moved);
            }
            return self.finished(run, RunState::Rejected { reason: gate.reason }).await;
        }
        let training = run.training.clone().ok_or_else(|| missing(run))?;
        let candidate_version = training.version.clone().ok_or_else(|| missing(run))?;
        let metric = &self.settings.quality_metric;
        let candidate = self.backend.candidate_metrics(&training).await?.get(metric).copied();
        let live_model = self.backend.live(&candidate_version).await?;
        let live = live_model.as_ref().and_then(|m| m.metrics.get(metric).copied());
        let gate = quality_gate(metric, candidate, live, self.settings.quality_tolerance);
        tracing::info!(
            run_id = %run.run_id, metric = %metric, candidate = ?candidate, live = ?live,
            passed = gate.passed, "quality gate"
        );
        run.gate = Some(gate);
        run.deploy =
            Some(DeployRecord { target: candidate_version, previous: live_model.map(|m| m.version) });
        Ok(Progress::Moved)
    }

    async fn deploy(&self, run: &mut Run) -> Result<Progress, StepFailure> {
        let target = run.deploy.as_ref().map(|d| d.target.clone()).ok_or_else(|| missing(run))?;
        match self.backend.deploy(&target).await? {
            Deployment::Done => self.finished(run, RunState::Done).await,
            Deployment::Wait(why) => Ok(Progress::Wait(why)),
            Deployment::Failed(reason) => {
                let step = failed_step(run);
                self.finished(run, RunState::Failed { step, reason }).await
            }
        }
    }
}

/// The step a failure in `run`'s current state belongs to.
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

fn missing(run: &Run) -> StepFailure {
    StepFailure::permanent(format!(
        "run {} is {} but lacks the record of an earlier step",
        run.run_id,
        run.state.name()
    ))
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
        incremental: m.incremental.as_ref().map(|s| ExportWindow { from: s.from, to: s.to }),
    }
}

/// Why a delta-only export cannot be imported INCREMENTAL, if it cannot: Personalize needs
/// 1,000 records in an import job and takes at most 1 GB incrementally.
fn unimportable_delta(m: &Manifest) -> Option<String> {
    if m.rows < INCREMENTAL_MIN_ROWS {
        return Some(format!("{} new rows; an import job needs at least {INCREMENTAL_MIN_ROWS}", m.rows));
    }
    (m.csv.size >= INCREMENTAL_MAX_BYTES)
        .then(|| format!("{} bytes; an INCREMENTAL import takes under {INCREMENTAL_MAX_BYTES}", m.csv.size))
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
    fn outcomes_serialize_as_before_and_decide_the_exit_code() {
        let run = |state| Run::new("r".into(), RunKind::Full, Backend::Embedded, "t", state, 1);
        let started = Response::with_run(Outcome::Started, "m".into(), &run(RunState::Training));
        assert_eq!(serde_json::to_value(&started).unwrap()["outcome"], "started");
        assert_eq!(started.exit_code(), 0, "waiting is not failing");
        let refused = Response::refused("other".into());
        assert_eq!(serde_json::to_value(&refused).unwrap()["outcome"], "refused");
        assert_eq!(refused.exit_code(), 2);
        let rejected = Response::advanced(&run(RunState::Rejected { reason: "worse".into() }));
        assert_eq!(serde_json::to_value(&rejected).unwrap()["outcome"], "advanced");
        assert_eq!(rejected.exit_code(), 1);
        let failed = Response::advanced(&run(RunState::Failed { step: Step::Train, reason: "x".into() }));
        assert_eq!(failed.exit_code(), 1);
        assert_eq!(serde_json::to_value(Response::idle()).unwrap()["outcome"], "idle");
        assert_eq!(serde_json::to_value(Response::status(&[])).unwrap()["outcome"], "status");
    }

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
}

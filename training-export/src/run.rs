//! A pipeline run: its id, what it is for, where it stands, and everything it learnt
//! on the way (export counts, job names and ARNs, the gate's figures), persisted after
//! every step so that any invocation can pick it up where the last one stopped.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunKind {
    /// Export, import, train, gate, deploy: the nightly run.
    Full,
    /// Export (and validate) only.
    ExportOnly,
    /// Put the previously deployed version back.
    Rollback,
}

/// Where the models come from: Amazon Personalize, or the embedded recommender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backend {
    Personalize,
    Embedded,
}

/// The step that failed, for `Failed { step, .. }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    Export,
    Validate,
    Import,
    Train,
    QualityGate,
    Deploy,
    Rollback,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The states of the machine. Terminal: `Done`, `Failed`, `Rejected`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status")]
pub enum RunState {
    Exporting,
    Exported,
    Importing,
    Imported,
    Training,
    Trained,
    Deploying,
    Done,
    Failed { step: Step, reason: String },
    Rejected { reason: String },
}

impl RunState {
    /// Every state's [`RunState::name`], in the order of the machine.
    pub const NAMES: [&'static str; 10] = [
        "Exporting",
        "Exported",
        "Importing",
        "Imported",
        "Training",
        "Trained",
        "Deploying",
        "Done",
        "Failed",
        "Rejected",
    ];

    pub fn is_terminal(&self) -> bool {
        matches!(self, RunState::Done | RunState::Failed { .. } | RunState::Rejected { .. })
    }

    pub fn name(&self) -> &'static str {
        match self {
            RunState::Exporting => "Exporting",
            RunState::Exported => "Exported",
            RunState::Importing => "Importing",
            RunState::Imported => "Imported",
            RunState::Training => "Training",
            RunState::Trained => "Trained",
            RunState::Deploying => "Deploying",
            RunState::Done => "Done",
            RunState::Failed { .. } => "Failed",
            RunState::Rejected { .. } => "Rejected",
        }
    }
}

/// Personalize's import modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ImportMode {
    Full,
    Incremental,
}

/// Personalize's training modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "UPPERCASE")]
#[value(rename_all = "UPPERCASE")]
pub enum TrainingMode {
    Full,
    Update,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportRecord {
    pub prefix: String,
    pub rows: u64,
    pub distinct_users: u64,
    pub distinct_items: u64,
    pub max_timestamp: Option<i64>,
    pub csv_key: String,
    pub csv_size: u64,
    /// The delta file, with the count of rows newer than the previous import.
    pub delta_key: Option<String>,
    pub delta_size: Option<u64>,
    pub delta_new_rows: Option<u64>,
    pub rejected: u64,
    /// Set when the export is delta-only (an incremental table export): its CSV folder
    /// holds only the items written in this window, and is imported INCREMENTAL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<ExportWindow>,
}

/// The window of an incremental table export: the items written from `from` (inclusive)
/// to `to` (exclusive), epoch seconds, as DynamoDB's `ExportFromTime` / `ExportToTime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportWindow {
    pub from: i64,
    pub to: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportRecord {
    pub job_name: String,
    pub job_arn: Option<String>,
    pub mode: ImportMode,
    pub source: String,
    /// The export's newest timestamp: the next run's delta starts after it.
    pub max_timestamp: Option<i64>,
    pub completed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrainingRecord {
    /// Solution version name (Personalize) or model version (embedded).
    pub name: String,
    /// Solution version ARN (Personalize) or model version (embedded), once known.
    pub version: Option<String>,
    pub mode: TrainingMode,
    pub completed: bool,
    /// Offline metrics of the new version, when the backend reports them at once.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GateRecord {
    pub metric: String,
    pub candidate: Option<f64>,
    pub live: Option<f64>,
    pub tolerance: f64,
    pub passed: bool,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployRecord {
    /// The version being put live.
    pub target: String,
    /// What was live before, kept so that one rollback puts it back.
    pub previous: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    pub at: i64,
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    pub run_id: String,
    pub kind: RunKind,
    pub backend: Backend,
    /// Who asked: `schedule`, `manual`, `cli`.
    pub trigger: String,
    pub state: RunState,
    /// Optimistic-concurrency version: a save succeeds only if the stored run still
    /// has this version, so two invocations cannot both advance the same run.
    pub version: u64,
    pub created_at: i64,
    pub updated_at: i64,
    /// The previous import's newest timestamp (rows after it are new).
    pub delta_since: Option<i64>,
    pub export: Option<ExportRecord>,
    pub import: Option<ImportRecord>,
    pub training: Option<TrainingRecord>,
    pub gate: Option<GateRecord>,
    pub deploy: Option<DeployRecord>,
    /// The last retryable problem met while waiting (throttling, a busy campaign).
    pub last_error: Option<String>,
    /// Epoch seconds until which one invocation is working on the run: a second one
    /// (the 10-minute tick during a long export) leaves it alone instead of redoing
    /// the same step. Expires by itself if its holder dies.
    #[serde(default)]
    pub lease_until: Option<i64>,
    /// Invocations that took this run without moving it on since it last moved (entered a
    /// state, checkpointed, or found its job still running): a step that keeps failing,
    /// timing out or crashing the process counts up here until the attempt limit ends
    /// the run. Counted when an invocation takes the run, so a killed one counts too.
    #[serde(default)]
    pub attempts: u32,
    /// With Personalize: the embedded model refreshed from this export for the ranking
    /// API's fallback (popular items, what each student has had). Best effort: a failure
    /// is recorded and the run goes on, since Personalize is what users are served.
    #[serde(default)]
    pub fallback_model: Option<FallbackRecord>,
    /// When the table was too big to scan in one invocation: DynamoDB's own export of it
    /// and how far its conversion got (the checkpoint of the export step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_export: Option<TableExportRecord>,
    pub history: Vec<Transition>,
}

/// A DynamoDB table export (`ExportTableToPointInTime`) and its conversion, file by file,
/// into the run's CSV and Parquet parts. Saved after every file converted, so an
/// invocation that stops (its deadline, a crash) costs at most the file it was on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TableExportRecord {
    pub export_arn: String,
    /// Where DynamoDB writes it, under the run's export prefix.
    pub s3_prefix: String,
    /// `manifest-summary.json`, once the export completed.
    #[serde(default)]
    pub manifest_key: Option<String>,
    /// How many data files it has (known once it completed).
    #[serde(default)]
    pub data_files: Option<u32>,
    /// Data files converted so far, in `manifest-files.json` order: the next one to
    /// convert is this index.
    #[serde(default)]
    pub converted: u32,
    /// The time the export's data is as of: DynamoDB's `ExportTime` for a full export,
    /// the window's end (`ExportToTime`) for an incremental one. The next run's
    /// incremental export starts there. Absent in runs from before incremental exports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_time: Option<i64>,
    /// Set for an incremental export (`INCREMENTAL_EXPORT`, `NEW_IMAGE`): its window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<ExportWindow>,
    /// Why this run's incremental export was replaced by this full one (too few rows for
    /// an import job, or too big for an INCREMENTAL import), when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_incremental: Option<String>,
}

/// What became of a run's fallback-model refresh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FallbackRecord {
    /// The published model version, when the refresh succeeded.
    pub version: Option<String>,
    /// Why it did not, otherwise.
    pub error: Option<String>,
}

/// The length of every run id, for the Personalize name budget (63 characters).
pub const RUN_ID_LEN: usize = 24;

/// A run id that sorts by creation time and is safe in Personalize names
/// (`[a-zA-Z0-9-_]`) and object keys: `20261122T020000123Z-1a2b`, UTC to the
/// millisecond. The milliseconds matter: an export-only run can finish within the
/// second it started, and the next run's id must still sort after it, because the
/// history (the last import, the last deploy to roll back from) is read newest first
/// by id. The random suffix only tells apart ids made in the same millisecond.
pub fn new_run_id(now: time::OffsetDateTime) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}{:03}Z-{}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.millisecond(),
        &random[..4]
    )
}

impl Run {
    pub fn new(
        run_id: String,
        kind: RunKind,
        backend: Backend,
        trigger: &str,
        state: RunState,
        now: i64,
    ) -> Self {
        Self {
            run_id,
            kind,
            backend,
            trigger: trigger.to_owned(),
            history: vec![Transition { at: now, state: state.name().to_owned() }],
            state,
            version: 0,
            created_at: now,
            updated_at: now,
            delta_since: None,
            export: None,
            import: None,
            training: None,
            gate: None,
            deploy: None,
            last_error: None,
            fallback_model: None,
            table_export: None,
            lease_until: None,
            attempts: 0,
        }
    }

    /// Moves to `state`, noting the transition.
    pub fn enter(&mut self, state: RunState, now: i64) {
        self.history.push(Transition { at: now, state: state.name().to_owned() });
        self.state = state;
        self.updated_at = now;
        self.last_error = None;
        self.attempts = 0;
    }

    pub fn is_active(&self) -> bool {
        !self.state.is_terminal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_sort_by_time_and_fit_personalize_names() {
        let t = time::macros::datetime!(2026-11-22 02:00:05.042 UTC);
        let id = new_run_id(t);
        assert!(id.starts_with("20261122T020005042Z-"), "{id}");
        assert_eq!(id.len(), RUN_ID_LEN);
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        // Within one second, too: a CI run caught two runs of the same second misordered.
        for later in [time::Duration::milliseconds(1), time::Duration::seconds(1)] {
            for _ in 0..50 {
                assert!(new_run_id(t + later) > new_run_id(t), "{later}");
            }
        }
    }

    #[test]
    fn names_lists_every_state_in_order() {
        let states = [
            RunState::Exporting,
            RunState::Exported,
            RunState::Importing,
            RunState::Imported,
            RunState::Training,
            RunState::Trained,
            RunState::Deploying,
            RunState::Done,
            RunState::Failed { step: Step::Export, reason: String::new() },
            RunState::Rejected { reason: String::new() },
        ];
        // A state added to the enum fails `name()`'s match; one added there without a
        // place in NAMES fails here.
        let names: Vec<&str> = states.iter().map(RunState::name).collect();
        assert_eq!(names, RunState::NAMES);
    }

    #[test]
    fn states_serialize_with_their_reason() {
        let failed = RunState::Failed { step: Step::Import, reason: "bad csv".into() };
        let json = serde_json::to_value(&failed).unwrap();
        assert_eq!(json, serde_json::json!({"status": "Failed", "step": "Import", "reason": "bad csv"}));
        assert!(failed.is_terminal());
        assert!(!RunState::Training.is_terminal());
        assert_eq!(serde_json::from_value::<RunState>(json).unwrap(), failed);
    }
}

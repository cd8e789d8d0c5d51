//! Every terminal state is announced: an EventBridge event with detail-type
//! `ranking.pipeline` (source `svc.training-export`) in AWS, a JSON line in
//! `$DATA_DIR/pipeline-events.jsonl` locally, so alarms and people hear of it.
//!
//! Operation called: `PutEvents`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use async_trait::async_trait;
use schemas::DetailType;
use serde::Serialize;

use crate::run::{Run, RunKind, RunState, Step};

#[cfg(feature = "aws")]
mod eventbridge;
#[cfg(feature = "aws")]
pub use eventbridge::EventBridgeEvents;

/// The `detail` of a `ranking.pipeline` event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineEvent {
    pub run_id: String,
    pub kind: RunKind,
    /// `Done`, `Failed` or `Rejected`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<Step>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The quality gate's figures (`candidate`, `live`, `tolerance`) when it ran.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployed: Option<String>,
}

impl PipelineEvent {
    /// The event for `run` entering the terminal `state`.
    pub fn for_run(run: &Run, state: &RunState) -> Self {
        let (step, reason) = match state {
            RunState::Failed { step, reason } => (Some(*step), Some(reason.clone())),
            RunState::Rejected { reason } => (Some(Step::QualityGate), Some(reason.clone())),
            _ => (None, None),
        };
        let mut metrics = BTreeMap::new();
        if let Some(gate) = &run.gate {
            metrics.extend(gate.candidate.map(|v| ("candidate".to_owned(), v)));
            metrics.extend(gate.live.map(|v| ("live".to_owned(), v)));
            metrics.insert("tolerance".to_owned(), gate.tolerance);
        }
        let deployed =
            matches!(state, RunState::Done).then(|| run.deploy.as_ref().map(|d| d.target.clone())).flatten();
        Self {
            run_id: run.run_id.clone(),
            kind: run.kind,
            status: state.name(),
            step,
            reason,
            metrics,
            deployed,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("publishing the pipeline event: {message}")]
pub struct PublishError {
    pub message: String,
    pub retryable: bool,
}

#[async_trait]
pub trait PipelineEvents: Send + Sync {
    async fn publish(&self, event: &PipelineEvent) -> Result<(), PublishError>;
}

/// Appends events to a JSON-lines file (and logs them).
pub struct LocalEvents {
    path: PathBuf,
}

impl LocalEvents {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

#[async_trait]
impl PipelineEvents for LocalEvents {
    async fn publish(&self, event: &PipelineEvent) -> Result<(), PublishError> {
        let line = serde_json::json!({
            "detail-type": DetailType::RankingPipeline.as_str(),
            "source": DetailType::RankingPipeline.source(),
            "time": time::OffsetDateTime::now_utc().unix_timestamp(),
            "detail": event,
        });
        let fail = |e: std::io::Error| PublishError {
            message: format!("{}: {e}", self.path.display()),
            retryable: true,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let mut file =
            std::fs::OpenOptions::new().create(true).append(true).open(&self.path).map_err(fail)?;
        writeln!(file, "{line}").map_err(fail)?;
        tracing::info!(run_id = %event.run_id, status = event.status, reason = ?event.reason, "pipeline finished");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(feature = "aws")]
    use aws_sdk_eventbridge::Client;
    #[cfg(feature = "aws")]
    use aws_sdk_eventbridge::operation::put_events::PutEventsOutput;
    #[cfg(feature = "aws")]
    use aws_sdk_eventbridge::types::PutEventsResultEntry;
    #[cfg(feature = "aws")]
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    use crate::run::{Backend, GateRecord};

    fn rejected_run() -> (Run, RunState) {
        let mut run =
            Run::new("r1".into(), RunKind::Full, Backend::Personalize, "schedule", RunState::Trained, 1);
        run.gate = Some(GateRecord {
            metric: "ndcg".into(),
            candidate: Some(0.2),
            live: Some(0.3),
            tolerance: 0.02,
            passed: false,
            reason: "worse".into(),
        });
        (run, RunState::Rejected { reason: "worse".into() })
    }

    #[cfg(feature = "aws")]
    #[tokio::test]
    async fn eventbridge_gets_the_detail_and_a_refused_entry_is_an_error() {
        let ok = mock!(Client::put_events)
            .match_requests(|r| {
                let e = &r.entries()[0];
                e.detail_type() == Some("ranking.pipeline")
                    && e.source() == Some("svc.training-export")
                    && e.event_bus_name() == Some("student-event-bus")
                    && e.detail()
                        .is_some_and(|d| d.contains("\"status\":\"Rejected\"") && d.contains("\"live\":0.3"))
            })
            .then_output(|| PutEventsOutput::builder().failed_entry_count(0).build());
        let refused = mock!(Client::put_events).then_output(|| {
            PutEventsOutput::builder()
                .failed_entry_count(1)
                .entries(
                    PutEventsResultEntry::builder()
                        .error_code("InternalFailure")
                        .error_message("try later")
                        .build(),
                )
                .build()
        });
        let client = mock_client!(aws_sdk_eventbridge, RuleMode::Sequential, [&ok, &refused]);
        let events = EventBridgeEvents::new(client, "student-event-bus");
        let (run, state) = rejected_run();
        let event = PipelineEvent::for_run(&run, &state);
        events.publish(&event).await.unwrap();
        let err = events.publish(&event).await.unwrap_err();
        assert!(err.message.contains("InternalFailure: try later"), "{err}");
    }

    #[tokio::test]
    async fn local_events_are_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let events = LocalEvents::new(dir.path().join("pipeline-events.jsonl"));
        let (run, state) = rejected_run();
        events.publish(&PipelineEvent::for_run(&run, &state)).await.unwrap();
        events.publish(&PipelineEvent::for_run(&run, &RunState::Done)).await.unwrap();
        let text = std::fs::read_to_string(dir.path().join("pipeline-events.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["detail-type"], "ranking.pipeline");
        assert_eq!(lines[0]["detail"]["status"], "Rejected");
        assert_eq!(lines[0]["detail"]["step"], "QualityGate");
        assert_eq!(lines[0]["detail"]["metrics"]["candidate"], 0.2);
        assert_eq!(lines[1]["detail"]["status"], "Done");
    }
}

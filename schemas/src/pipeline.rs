//! What training-export accepts as its Lambda input. The schedules (`infra/template.yaml`),
//! the event consumer's retrain invoke and manual invokes all send one of these, so the
//! sender and the receiver share this one type instead of two copies that can drift apart.

use serde::{Deserialize, Serialize};

/// One request to the training pipeline: `{"action": "<name>", ...}`. Unknown actions and
/// unknown fields are refused, so a typo fails loudly instead of running with defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase", deny_unknown_fields)]
pub enum PipelineRequest {
    /// Start a full run (export, import, train, gate, deploy).
    Run {
        #[serde(default = "manual")]
        trigger: String,
        /// The id of the event that asked for this run (`ranking.requestUpdate`), when one did:
        /// logged with the run so a retrain can be traced back to its request.
        #[serde(default, rename = "requestId", skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
    },
    /// Start an export-only run.
    Export {
        #[serde(default = "manual")]
        trigger: String,
    },
    /// Advance the active run, if any (the 10-minute schedule). Braced, so that an unknown
    /// field is refused here too (serde ignores extra fields of a unit variant).
    Advance {},
    /// Report the latest runs.
    Status {},
    /// Put back the version that was live before the last deploy.
    Rollback {
        #[serde(default = "manual")]
        trigger: String,
    },
    /// End the active run `Failed` now, whatever it is doing (a stuck export, a job that
    /// is no longer wanted). With `runId`, only if that is the active run.
    Cancel {
        #[serde(default = "manual")]
        trigger: String,
        #[serde(default, rename = "runId", skip_serializing_if = "Option::is_none")]
        run_id: Option<String>,
        /// Why, recorded in the run's reason.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

fn manual() -> String {
    "manual".into()
}

impl PipelineRequest {
    /// A full run started by `trigger`, on behalf of the request with id `request_id`.
    pub fn run(trigger: impl Into<String>, request_id: Option<String>) -> Self {
        Self::Run { trigger: trigger.into(), request_id }
    }

    /// The JSON a Lambda invoke carries.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a request of strings serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<PipelineRequest, serde_json::Error> {
        serde_json::from_str(s)
    }

    #[test]
    fn every_sender_shape_parses() {
        // The schedules' inputs in infra/template.yaml.
        assert_eq!(
            parse(r#"{"action":"run","trigger":"schedule"}"#).unwrap(),
            PipelineRequest::run("schedule", None)
        );
        assert_eq!(parse(r#"{"action":"advance"}"#).unwrap(), PipelineRequest::Advance {});
        // The event consumer's retrain.
        assert_eq!(
            parse(r#"{"action":"run","trigger":"bus","requestId":"ev-9"}"#).unwrap(),
            PipelineRequest::run("bus", Some("ev-9".into()))
        );
        assert_eq!(
            parse(r#"{"action":"export"}"#).unwrap(),
            PipelineRequest::Export { trigger: "manual".into() }
        );
        assert_eq!(parse(r#"{"action":"status"}"#).unwrap(), PipelineRequest::Status {});
        assert_eq!(
            parse(r#"{"action":"rollback"}"#).unwrap(),
            PipelineRequest::Rollback { trigger: "manual".into() }
        );
        assert_eq!(
            parse(r#"{"action":"cancel"}"#).unwrap(),
            PipelineRequest::Cancel { trigger: "manual".into(), run_id: None, reason: None }
        );
        assert_eq!(
            parse(r#"{"action":"cancel","runId":"r-1","reason":"export stuck"}"#).unwrap(),
            PipelineRequest::Cancel {
                trigger: "manual".into(),
                run_id: Some("r-1".into()),
                reason: Some("export stuck".into())
            }
        );
        assert!(parse(r#"{"action":"cancel","run":"r-1"}"#).is_err(), "unknown fields are refused");
    }

    #[test]
    fn what_is_sent_is_what_is_parsed() {
        for request in [
            PipelineRequest::run("bus", Some("ev-1".into())),
            PipelineRequest::run("schedule", None),
            PipelineRequest::Export { trigger: "cli".into() },
            PipelineRequest::Advance {},
            PipelineRequest::Status {},
            PipelineRequest::Rollback { trigger: "manual".into() },
            PipelineRequest::Cancel {
                trigger: "cli".into(),
                run_id: Some("20261203T020000Z-ab12".into()),
                reason: Some("stuck".into()),
            },
            PipelineRequest::Cancel { trigger: "manual".into(), run_id: None, reason: None },
        ] {
            assert_eq!(parse(&request.to_json()).unwrap(), request);
        }
        assert_eq!(
            PipelineRequest::run("schedule", None).to_json(),
            r#"{"action":"run","trigger":"schedule"}"#
        );
    }

    #[test]
    fn unknown_actions_and_fields_are_refused() {
        assert!(parse(r#"{"action":"retrain"}"#).is_err());
        assert!(parse(r#"{"action":"run","triger":"typo"}"#).is_err());
        assert!(parse(r#"{"action":"advance","requestId":"ev-1"}"#).is_err());
        assert!(parse(r#"{"trigger":"schedule"}"#).is_err());
    }
}

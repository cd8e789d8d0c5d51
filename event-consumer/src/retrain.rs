//! `ranking.requestUpdate` → a training-export run (a manual retrain through the
//! bus). The port is [`RetrainTrigger`]; adapters:
//!
//! * [`LambdaRetrainTrigger`]: asynchronous `Invoke` (`InvocationType::Event`) of
//!   the training-export function named by `TRAINING_EXPORT_FUNCTION`, payload
//!   `{"action":"run","trigger":"<trigger>","requestId":"<event id>"}`. The run is
//!   a resumable state machine that takes hours; the consumer never waits for it.
//! * [`LocalTrainingExport`]: the local composition's slot. It runs the sibling
//!   `training-export` binary (`run --trigger <trigger>`) found next to this
//!   executable (or at `TRAINING_EXPORT_BIN`) and says plainly when it is not built.
//! * [`RetrainNotConfigured`]: in AWS without `TRAINING_EXPORT_FUNCTION`; every
//!   request fails with a clear, non-retryable error instead of vanishing.

use std::path::{Path, PathBuf};
use std::process::Command;

use async_trait::async_trait;
use aws_sdk_lambda::Client;
use aws_sdk_lambda::error::SdkError;
use aws_sdk_lambda::operation::invoke::InvokeError;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use schemas::{EventId, PipelineRequest};

/// Name of the training-export binary the local slot looks for.
pub const TRAINING_EXPORT_BINARY: &str = "training-export";

/// One retrain request, carried to training-export. `request_id` (the event id)
/// lets the pipeline recognise a request it has already started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrainRequest {
    pub trigger: String,
    pub request_id: EventId,
}

impl RetrainRequest {
    /// The training-export Lambda's input for a run, in the type training-export parses.
    pub fn payload(&self) -> String {
        PipelineRequest::run(&self.trigger, Some(self.request_id.as_str().to_owned())).to_json()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RetrainError {
    #[error("invoking training-export function {function}: {message}")]
    Invoke { function: String, message: String, retryable: bool },
    #[error(
        "no local retrain runner: {} does not exist. Build it with `cargo build --release -p training-export` \
         (it must sit next to event-consumer), or point TRAINING_EXPORT_BIN at it",
        binary.display()
    )]
    LocalRunnerMissing { binary: PathBuf },
    #[error("starting {}: {source}", binary.display())]
    LocalRunnerUnstartable {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} run --trigger {trigger} failed with {status}", binary.display())]
    LocalRunFailed { binary: PathBuf, trigger: String, status: std::process::ExitStatus },
    #[error("retraining is not configured here: {0}")]
    NotConfigured(String),
    #[error("retrain task failed: {0}")]
    Task(String),
}

impl RetrainError {
    pub fn is_retryable(&self) -> bool {
        match self {
            RetrainError::Invoke { retryable, .. } => *retryable,
            // Each needs a person: build the binary, fix the run, set the variable.
            RetrainError::LocalRunnerMissing { .. }
            | RetrainError::LocalRunnerUnstartable { .. }
            | RetrainError::LocalRunFailed { .. }
            | RetrainError::NotConfigured(_) => false,
            RetrainError::Task(_) => true,
        }
    }
}

/// Starts a retrain. Returns a receipt for the idempotency ledger.
#[async_trait]
pub trait RetrainTrigger: Send + Sync {
    async fn start(&self, request: &RetrainRequest) -> Result<String, RetrainError>;
}

/// Asynchronous invocation of the training-export Lambda.
#[derive(Debug, Clone)]
pub struct LambdaRetrainTrigger {
    client: Client,
    function: String,
}

impl LambdaRetrainTrigger {
    pub fn new(client: Client, function: impl Into<String>) -> Self {
        Self { client, function: function.into() }
    }
}

/// Invoke errors that go away by themselves (besides 429 and 5xx).
fn invoke_error_is_transient(err: &InvokeError) -> bool {
    matches!(
        err,
        InvokeError::TooManyRequestsException(_)
            | InvokeError::ServiceException(_)
            | InvokeError::ResourceNotReadyException(_)
            | InvokeError::ResourceConflictException(_)
            | InvokeError::CodeArtifactUserPendingException(_)
            | InvokeError::Ec2ThrottledException(_)
            | InvokeError::EniNotReadyException(_)
            | InvokeError::SnapStartNotReadyException(_)
    )
}

#[async_trait]
impl RetrainTrigger for LambdaRetrainTrigger {
    async fn start(&self, request: &RetrainRequest) -> Result<String, RetrainError> {
        let output = self
            .client
            .invoke()
            .function_name(&self.function)
            .invocation_type(InvocationType::Event)
            .payload(Blob::new(request.payload()))
            .send()
            .await
            .map_err(|err| {
                let failure = aws_failure::classify(&err, &[]);
                let transient_invoke_error = match &err {
                    SdkError::ServiceError(e) => invoke_error_is_transient(e.err()),
                    _ => false,
                };
                RetrainError::Invoke {
                    function: self.function.clone(),
                    message: failure.summary,
                    retryable: failure.retryable || transient_invoke_error,
                }
            })?;
        // An asynchronous invocation is accepted with 202 and runs later.
        Ok(format!("lambda {} accepted the run (status {})", self.function, output.status_code()))
    }
}

/// The local slot: runs the sibling `training-export` binary to completion.
#[derive(Debug, Clone)]
pub struct LocalTrainingExport {
    binary: PathBuf,
}

impl LocalTrainingExport {
    pub fn at(binary: impl Into<PathBuf>) -> Self {
        Self { binary: binary.into() }
    }

    /// `training-export` in the same folder as the running executable (cargo
    /// builds all workspace binaries into one folder).
    pub fn next_to_current_exe() -> Self {
        let dir = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf));
        Self::at(dir.unwrap_or_default().join(TRAINING_EXPORT_BINARY))
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    fn run_blocking(&self, request: &RetrainRequest) -> Result<String, RetrainError> {
        if !self.binary.is_file() {
            return Err(RetrainError::LocalRunnerMissing { binary: self.binary.clone() });
        }
        // Output goes straight to our terminal: a local run reports its own progress.
        let status = Command::new(&self.binary)
            .args(["run", "--trigger", &request.trigger])
            .env("TRAINING_EXPORT_REQUEST_ID", request.request_id.as_str())
            .status()
            .map_err(|source| RetrainError::LocalRunnerUnstartable { binary: self.binary.clone(), source })?;
        if !status.success() {
            return Err(RetrainError::LocalRunFailed {
                binary: self.binary.clone(),
                trigger: request.trigger.clone(),
                status,
            });
        }
        Ok(format!("{} run --trigger {} finished", self.binary.display(), request.trigger))
    }
}

#[async_trait]
impl RetrainTrigger for LocalTrainingExport {
    async fn start(&self, request: &RetrainRequest) -> Result<String, RetrainError> {
        let runner = self.clone();
        let request = request.clone();
        tokio::task::spawn_blocking(move || runner.run_blocking(&request))
            .await
            .map_err(|e| RetrainError::Task(e.to_string()))?
    }
}

/// Used in AWS when no training-export function is configured.
#[derive(Debug, Clone)]
pub struct RetrainNotConfigured {
    pub reason: String,
}

#[async_trait]
impl RetrainTrigger for RetrainNotConfigured {
    async fn start(&self, _request: &RetrainRequest) -> Result<String, RetrainError> {
        Err(RetrainError::NotConfigured(self.reason.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_lambda::operation::invoke::InvokeOutput;
    use aws_sdk_lambda::types::error::{ResourceNotFoundException, TooManyRequestsException};
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    fn request() -> RetrainRequest {
        RetrainRequest { trigger: "manual".into(), request_id: EventId::parse("ev-9").unwrap() }
    }

    #[test]
    fn the_payload_is_a_run_training_export_accepts() {
        let parsed: PipelineRequest = serde_json::from_str(&request().payload()).unwrap();
        assert_eq!(parsed, PipelineRequest::run("manual", Some("ev-9".into())));
    }

    #[test]
    fn payload_is_what_training_export_expects() {
        assert_eq!(request().payload(), r#"{"action":"run","trigger":"manual","requestId":"ev-9"}"#);
    }

    #[tokio::test]
    async fn invokes_asynchronously_with_the_run_payload() {
        let accepted = mock!(Client::invoke)
            .match_requests(|r| {
                r.function_name() == Some("training-export-prod")
                    && r.invocation_type() == Some(&InvocationType::Event)
                    && r.payload().map(|p| p.as_ref())
                        == Some(br#"{"action":"run","trigger":"manual","requestId":"ev-9"}"#.as_slice())
            })
            .then_output(|| InvokeOutput::builder().status_code(202).build());
        let client = mock_client!(aws_sdk_lambda, RuleMode::Sequential, [&accepted]);
        let receipt =
            LambdaRetrainTrigger::new(client, "training-export-prod").start(&request()).await.unwrap();
        assert!(receipt.contains("202"), "{receipt}");
        assert_eq!(accepted.num_calls(), 1);
    }

    #[tokio::test]
    async fn throttling_is_retryable_and_a_missing_function_is_not() {
        let throttled = mock!(Client::invoke).then_error(|| {
            InvokeError::TooManyRequestsException(TooManyRequestsException::builder().build())
        });
        let missing = mock!(Client::invoke).then_error(|| {
            InvokeError::ResourceNotFoundException(ResourceNotFoundException::builder().build())
        });
        let client = mock_client!(aws_sdk_lambda, RuleMode::Sequential, [&throttled, &missing]);
        let trigger = LambdaRetrainTrigger::new(client, "training-export-prod");
        let err = trigger.start(&request()).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        let err = trigger.start(&request()).await.unwrap_err();
        assert!(!err.is_retryable(), "{err}");
    }

    #[tokio::test]
    async fn a_missing_local_binary_says_how_to_build_it() {
        let dir = tempfile::tempdir().unwrap();
        let err =
            LocalTrainingExport::at(dir.path().join("training-export")).start(&request()).await.unwrap_err();
        assert!(!err.is_retryable());
        let message = err.to_string();
        assert!(message.contains("no local retrain runner"), "{message}");
        assert!(message.contains("cargo build --release -p training-export"), "{message}");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_local_binary_runs_with_the_trigger() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("training-export");
        let record = dir.path().join("args.txt");
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho \"$@ $TRAINING_EXPORT_REQUEST_ID\" > '{}'\n", record.display()),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        LocalTrainingExport::at(&script).start(&request()).await.unwrap();
        assert_eq!(std::fs::read_to_string(&record).unwrap(), "run --trigger manual ev-9\n");

        std::fs::write(&script, "#!/bin/sh\nexit 3\n").unwrap();
        let err = LocalTrainingExport::at(&script).start(&request()).await.unwrap_err();
        assert!(matches!(err, RetrainError::LocalRunFailed { .. }), "{err}");
    }
}

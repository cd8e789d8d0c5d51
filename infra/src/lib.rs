//! Checks of `infra/template.yaml` against the code it deploys.
//!
//! * [`scan`]: the AWS SDK operations a crate's sources call, as IAM actions.
//! * [`FUNCTIONS`]: each Lambda function, the sources its code runs in Lambda, its role in
//!   the template and the resources that are its own.
//! * [`template`]: the template parsed (short tags like `!Ref` kept as tagged values), the
//!   statements of a role, the names a `Resource` refers to, and the least-privilege
//!   checks, written as functions that return the problems so that a test can show they
//!   catch a bad grant.

pub mod scan;
pub mod template;

use std::path::{Path, PathBuf};

/// The workspace root (this crate lives in `<root>/infra`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("infra/ has a parent").to_path_buf()
}

/// Source files (or whole directories) whose SDK calls a function makes.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    /// Relative to the workspace root; a directory means every `.rs` file under it.
    pub path: &'static str,
    /// Only the calls inside these `fn`s: shared adapters have methods other functions use.
    pub only_fns: Option<&'static [&'static str]>,
}

/// A grant the function's role needs although its code makes no such call.
#[derive(Debug, Clone, Copy)]
pub struct PlatformGrant {
    pub action: &'static str,
    pub why: &'static str,
}

#[derive(Debug, Clone, Copy)]
pub struct Function {
    pub crate_name: &'static str,
    /// Logical ids in the template.
    pub function_id: &'static str,
    pub role_id: &'static str,
    /// Where its Lambda code's SDK calls are.
    pub sources: &'static [Source],
    /// Files with SDK calls in this crate or the crates it uses that its Lambda never runs, and why.
    pub not_in_lambda: &'static [(&'static str, &'static str)],
    /// Local crates it depends on (their `src/` is searched for SDK calls).
    pub local_deps: &'static [&'static str],
    /// Logical ids and parameters its grants may name as `Resource`.
    pub own: &'static [&'static str],
    pub platform: &'static [PlatformGrant],
    /// Actions of its code that the Service Authorization Reference lists with no resource type:
    /// a statement of those actions only may (and must) have `Resource: '*'`; every other grant
    /// still names the function's own resources.
    pub no_resource_type: &'static [PlatformGrant],
}

const LOGS: [PlatformGrant; 2] = [
    PlatformGrant { action: "logs:CreateLogStream", why: "the Lambda runtime writes the function's logs" },
    PlatformGrant { action: "logs:PutLogEvents", why: "the Lambda runtime writes the function's logs" },
];

pub const FUNCTIONS: [Function; 3] = [
    Function {
        crate_name: "ranking-api",
        function_id: "RankingApiFunction",
        role_id: "RankingApiRole",
        sources: &[
            Source { path: "ranking-api/src", only_fns: None },
            // ModelSlot::bucket reads models/LATEST and the version's files through the model registry: ObjectStore::get only (its GetObject is in `body`, which get and copy_to share).
            Source { path: "artifacts/src/s3.rs", only_fns: Some(&["body"]) },
        ],
        not_in_lambda: &[
            (
                "store/src/dynamodb.rs",
                "the API has no interactions store in Lambda: popularity comes from the model (startup.rs)",
            ),
            // ranking-api runs training-export's pipeline only for a local data directory's first model,
            // over the embedded adapters: never in Lambda, where it has no store (startup.rs).
            (
                "training-export/src/personalize/aws.rs",
                "the API runs the pipeline locally only, over embedded adapters",
            ),
            (
                "training-export/src/runs/dynamo.rs",
                "the API runs the pipeline locally only, over embedded adapters",
            ),
            (
                "training-export/src/events/eventbridge.rs",
                "the API runs the pipeline locally only, over embedded adapters",
            ),
            (
                "training-export/src/table_export/dynamo.rs",
                "the API runs the pipeline locally only, over embedded adapters",
            ),
        ],
        local_deps: &["schemas", "store", "recommender", "artifacts", "training-export"],
        own: &[
            "DataBucket",
            "PersonalizeCampaignArn",
            "PersonalizeRankingCampaignArn",
            "PersonalizeNamePrefix",
            "RankingApiLogGroup",
        ],
        platform: &LOGS,
        no_resource_type: &[],
    },
    Function {
        crate_name: "event-consumer",
        function_id: "EventConsumerFunction",
        role_id: "EventConsumerRole",
        sources: &[
            Source { path: "event-consumer/src", only_fns: None },
            // The consumer only ever puts interactions (consumer.rs: self.store.put).
            Source { path: "store/src/dynamodb.rs", only_fns: Some(&["put"]) },
        ],
        not_in_lambda: &[(
            "event-consumer/src/publisher.rs",
            "EventPublisher serves the CLI's `publish` command (cli.rs), never the Lambda handler",
        )],
        local_deps: &["schemas", "store"],
        own: &[
            "InteractionsTable",
            "IdempotencyTable",
            "StudentsTable",
            "SesIdentity",
            "EmailIdentity",
            "EmailConfigurationSet",
            "TrainingExportFunction",
            "EventConsumerDeadLetterQueue",
            "EventConsumerLogGroup",
        ],
        platform: &[
            LOGS[0],
            LOGS[1],
            PlatformGrant {
                action: "sqs:SendMessage",
                why: "Lambda sends an event that failed every retry to the on-failure queue with the function's role",
            },
        ],
        no_resource_type: &[PlatformGrant {
            action: "ses:PutSuppressedDestination",
            why: "the account-level suppression list is no resource: the action has no resource type, so only '*' grants it",
        }],
    },
    Function {
        crate_name: "training-export",
        function_id: "TrainingExportFunction",
        role_id: "TrainingExportRole",
        sources: &[
            Source { path: "training-export/src", only_fns: None },
            // The export scans (scan_segment -> scan_page); it never writes interactions.
            Source { path: "store/src/dynamodb.rs", only_fns: Some(&["scan_page"]) },
            // Exports and model versions: everything but listing.
            Source {
                path: "artifacts/src/s3.rs",
                only_fns: Some(&["body", "upload_buffer_as_part", "complete", "abort_upload", "drop"]),
            },
        ],
        not_in_lambda: &[],
        local_deps: &["schemas", "store", "artifacts", "recommender"],
        own: &[
            "InteractionsTable",
            "PipelineRunsTable",
            "DataBucket",
            "EventBus",
            "DatasetGroup",
            "InteractionsDataset",
            "Solution",
            "PersonalizeCampaignArn",
            "PersonalizeNamePrefix",
            "PersonalizeImportRole",
            "TrainingExportLogGroup",
            "TrainingExportFailedInvocationsQueue",
        ],
        platform: &[
            LOGS[0],
            LOGS[1],
            PlatformGrant {
                action: "sqs:SendMessage",
                why: "Lambda sends an invocation that failed every retry to the on-failure queue with the function's role",
            },
            PlatformGrant {
                action: "s3:PutObjectAcl",
                why: "DynamoDB writes an ExportTableToPointInTime export into the bucket with the caller's permissions, s3:PutObjectAcl among them",
            },
        ],
        no_resource_type: &[],
    },
];

/// The SDK calls a function's Lambda code makes, read from its [`Source`]s.
pub fn function_calls(f: &Function) -> Result<Vec<(PathBuf, scan::SdkCall)>, String> {
    let root = workspace_root();
    let mut out = Vec::new();
    for source in f.sources {
        let path = root.join(source.path);
        let files = if path.is_dir() { scan::rust_files(&path) } else { vec![path.clone()] };
        if files.is_empty() || !files.iter().all(|p| p.exists()) {
            return Err(format!("{}: no such source {}", f.crate_name, source.path));
        }
        for file in files {
            let rel = file.strip_prefix(&root).unwrap_or(&file).to_string_lossy().to_string();
            if f.not_in_lambda.iter().any(|(p, _)| *p == rel) {
                continue;
            }
            let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let calls = scan::sdk_calls_in(&text).map_err(|e| format!("{rel}: {e}"))?;
            if let Some(only) = source.only_fns {
                for name in only {
                    if !calls.iter().any(|c| c.function == *name) {
                        return Err(format!(
                            "{rel}: fn {name} makes no SDK call any more; update the sources of {}",
                            f.crate_name
                        ));
                    }
                }
            }
            out.extend(
                calls
                    .into_iter()
                    .filter(|c| source.only_fns.is_none_or(|only| only.contains(&c.function.as_str())))
                    .map(|c| (file.clone(), c)),
            );
        }
    }
    Ok(out)
}

/// How a function's `AWS_ACTIONS` list differs from the SDK calls in its sources (empty = none).
pub fn action_drift(f: &Function, listed: &[&str]) -> Result<Vec<String>, String> {
    let root = workspace_root();
    let calls = function_calls(f)?;
    let found: std::collections::BTreeSet<&str> =
        calls.iter().flat_map(|(_, c)| c.actions.iter().map(String::as_str)).collect();
    let listed_set: std::collections::BTreeSet<&str> = listed.iter().copied().collect();
    let mut problems = Vec::new();
    if listed_set.len() != listed.len() {
        problems.push(format!("{}: AWS_ACTIONS has duplicates", f.crate_name));
    }
    for a in found.difference(&listed_set) {
        let at: Vec<String> = calls
            .iter()
            .filter(|(_, c)| c.actions.iter().any(|x| x == a))
            .map(|(p, c)| format!("{} {c}", p.strip_prefix(&root).unwrap_or(p).display()))
            .collect();
        problems.push(format!(
            "{}: the code calls {a} ({}) but AWS_ACTIONS lacks it",
            f.crate_name,
            at.join("; ")
        ));
    }
    for a in listed_set.difference(&found) {
        problems
            .push(format!("{}: AWS_ACTIONS lists {a} but no SDK call in its sources needs it", f.crate_name));
    }
    Ok(problems)
}

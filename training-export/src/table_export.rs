//! DynamoDB's own export of the interactions table: the export step's path for a table
//! too big to scan within one invocation. `ExportTableToPointInTime` writes the table to
//! S3 as gzipped DynamoDB JSON, as many data files as the service likes, listed in
//! `manifest-files.json` (named by `manifest-summary.json`); the pipeline waits for it
//! as it waits for a Personalize job, then converts the files one by one
//! ([`crate::export::convert`]).
//!
//! One port, [`TableExporter`], with two adapters: [`dynamo::DynamoTableExporter`] in AWS,
//! and [`embedded::EmbeddedTableExporter`], which writes the same layout from any
//! [`store::InteractionSource`] so the path runs with no AWS account (tests, a laptop).

use artifacts::ObjectStore;
use async_trait::async_trait;
use serde::Deserialize;

#[cfg(feature = "aws")]
pub mod dynamo;
pub mod embedded;

/// Where a table export stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableExportStatus {
    /// Still being written; says what (`DynamoDB export IN_PROGRESS`).
    InProgress(String),
    /// Done: the key of its `manifest-summary.json`.
    Completed { manifest_key: String },
    /// Failed, with the service's code and message.
    Failed(String),
}

/// A table-export call that failed; `retryable` as for the other ports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TableExportError {
    pub message: String,
    pub retryable: bool,
}

#[async_trait]
pub trait TableExporter: Send + Sync {
    /// The table's size in bytes as the service reports it (DynamoDB refreshes it about
    /// every six hours), or `None` when the adapter cannot tell.
    async fn table_size_bytes(&self) -> Result<Option<u64>, TableExportError>;

    /// Starts an export of the whole table under `s3_prefix` and returns its id (ARN).
    /// Idempotent by `client_token`: the same token gives the same export.
    async fn start(&self, client_token: &str, s3_prefix: &str) -> Result<String, TableExportError>;

    async fn status(&self, export_id: &str) -> Result<TableExportStatus, TableExportError>;
}

/// One data file of a completed export.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataFile {
    pub data_file_s3_key: String,
    pub item_count: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestSummary {
    manifest_files_s3_key: String,
    output_format: String,
}

/// The data files of the completed export whose `manifest-summary.json` is at
/// `manifest_key`, in the order `manifest-files.json` lists them (the conversion's order,
/// so a checkpoint's index means the same file in every invocation).
pub async fn data_files(
    objects: &dyn ObjectStore,
    manifest_key: &str,
) -> Result<Vec<DataFile>, TableExportError> {
    let summary: ManifestSummary = serde_json::from_slice(&read(objects, manifest_key).await?)
        .map_err(|e| permanent(format!("{manifest_key} is not a DynamoDB export summary: {e}")))?;
    if summary.output_format != "DYNAMODB_JSON" {
        return Err(permanent(format!(
            "{manifest_key}: the export is {}, but only DYNAMODB_JSON is converted",
            summary.output_format
        )));
    }
    let listing = read(objects, &summary.manifest_files_s3_key).await?;
    let text = String::from_utf8(listing)
        .map_err(|_| permanent(format!("{} is not UTF-8", summary.manifest_files_s3_key)))?;
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .enumerate()
        .map(|(n, line)| {
            serde_json::from_str(line).map_err(|e| {
                permanent(format!(
                    "{} line {}: not a data file entry: {e}",
                    summary.manifest_files_s3_key,
                    n + 1
                ))
            })
        })
        .collect()
}

async fn read(objects: &dyn ObjectStore, key: &str) -> Result<Vec<u8>, TableExportError> {
    objects
        .get(key)
        .await
        .map_err(|e| TableExportError { message: e.to_string(), retryable: e.is_retryable() })?
        .ok_or_else(|| permanent(format!("{} is missing", objects.location(key))))
}

fn permanent(message: String) -> TableExportError {
    TableExportError { message, retryable: false }
}

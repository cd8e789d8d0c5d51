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
//!
//! Two kinds of export ([`choose_export`]): FULL (the whole table as of its `ExportTime`),
//! or INCREMENTAL (the items written in a window since the last imported export, as
//! `NEW_IMAGE` lines) when the backend imports into Personalize and has the earlier data.

use artifacts::ObjectStore;
use async_trait::async_trait;
use serde::Deserialize;

use crate::run::{ExportWindow, Run};

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

    /// Starts an export under `s3_prefix`: of the whole table (`window` `None`), or of
    /// the items written in `window` (an incremental export, new images). Idempotent by
    /// `client_token`: the same token gives the same export.
    async fn start(
        &self,
        client_token: &str,
        s3_prefix: &str,
        window: Option<ExportWindow>,
    ) -> Result<StartedExport, TableExportError>;

    async fn status(&self, export_id: &str) -> Result<TableExportStatus, TableExportError>;
}

/// An export that was started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedExport {
    /// Its id (the ARN in AWS).
    pub export_id: String,
    /// The time its data is as of (`ExportTime` of a full export), when the service said.
    pub export_time: Option<i64>,
}

/// DynamoDB's shortest incremental export window.
pub const MIN_WINDOW_SECS: i64 = 15 * 60;
/// DynamoDB's longest incremental export window: a run further behind catches up over
/// the next runs, a day's window each.
pub const MAX_WINDOW_SECS: i64 = 24 * 3600;
/// How far behind now an incremental window ends: point-in-time recovery's latest
/// restorable time trails the clock by up to about 5 minutes, and an `ExportToTime` after
/// it (or a clock a little ahead of DynamoDB's) would be refused.
pub const WINDOW_END_LAG_SECS: i64 = 5 * 60;
/// Point-in-time recovery keeps 35 days (the most, and the template's setting): an
/// incremental export cannot start earlier.
pub const PITR_WINDOW_SECS: i64 = 35 * 86_400;

/// What kind of table export a run starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportChoice {
    /// The whole table, and why not an incremental one.
    Full(String),
    /// The items written in the window.
    Incremental(ExportWindow),
}

/// The export a new run's table export should be, from `history` (newest first) at `now`:
/// incremental from where the last completed import's table export ended (its
/// `export_time`), up to `now` less [`WINDOW_END_LAG_SECS`] but at most 24 h; full when `full_due` says why the backend
/// needs the whole data, when the last import did not come from a table export with a
/// recorded time, when less than 15 minutes passed since, or when that time is older
/// than the point-in-time recovery window.
pub fn choose_export(history: &[Run], now: i64, full_due: Option<String>) -> ExportChoice {
    if let Some(reason) = full_due {
        return ExportChoice::Full(reason);
    }
    let Some(last) = history.iter().find(|r| r.import.as_ref().is_some_and(|i| i.completed)) else {
        return ExportChoice::Full("nothing was imported before".into());
    };
    let Some(from) = last.table_export.as_ref().and_then(|t| t.export_time) else {
        return ExportChoice::Full(format!(
            "the last import (run {}) did not come from a table export with a recorded time",
            last.run_id
        ));
    };
    let latest = now - WINDOW_END_LAG_SECS;
    let since = now - from;
    if latest - from < MIN_WINDOW_SECS {
        return ExportChoice::Full(format!(
            "{since} s since the last imported export (run {}); an incremental export needs at least {} s",
            last.run_id,
            MIN_WINDOW_SECS + WINDOW_END_LAG_SECS
        ));
    }
    if since > PITR_WINDOW_SECS {
        return ExportChoice::Full(format!(
            "the last imported export (run {}) is {:.1} days old, beyond the point-in-time recovery window",
            last.run_id,
            since as f64 / 86_400.0
        ));
    }
    ExportChoice::Incremental(ExportWindow { from, to: latest.min(from + MAX_WINDOW_SECS) })
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
    #[serde(default)]
    export_type: Option<String>,
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
    if let Some(kind) =
        summary.export_type.as_deref().filter(|k| !["FULL_EXPORT", "INCREMENTAL_EXPORT"].contains(k))
    {
        return Err(permanent(format!("{manifest_key}: unknown exportType {kind}")));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{Backend, ImportMode, ImportRecord, RunKind, RunState, TableExportRecord};

    const NOW: i64 = 1_796_000_000;

    /// A run that imported (`completed`) what its table export had as of `export_time`.
    fn imported(id: &str, completed: bool, export_time: Option<i64>) -> Run {
        let mut run = Run::new(id.into(), RunKind::Full, Backend::Personalize, "t", RunState::Done, NOW);
        run.import = Some(ImportRecord {
            job_name: "j".into(),
            job_arn: None,
            mode: ImportMode::Full,
            source: "s".into(),
            max_timestamp: None,
            completed,
        });
        run.table_export = Some(TableExportRecord {
            export_arn: "a".into(),
            s3_prefix: "p".into(),
            manifest_key: None,
            data_files: None,
            converted: 0,
            export_time,
            incremental: None,
            replaced_incremental: None,
        });
        run
    }

    fn full(choice: ExportChoice) -> String {
        match choice {
            ExportChoice::Full(why) => why,
            ExportChoice::Incremental(w) => panic!("incremental {w:?}"),
        }
    }

    #[test]
    fn incremental_from_the_last_imported_export_for_at_most_a_day() {
        let hour = 3600;
        let history =
            [imported("failed-import", false, Some(NOW - hour)), imported("r1", true, Some(NOW - 5 * hour))];
        assert_eq!(
            choose_export(&history, NOW, None),
            ExportChoice::Incremental(ExportWindow { from: NOW - 5 * hour, to: NOW - WINDOW_END_LAG_SECS }),
            "the newest completed import counts, not a failed one"
        );
        let behind = [imported("r1", true, Some(NOW - 30 * hour))];
        assert_eq!(
            choose_export(&behind, NOW, None),
            ExportChoice::Incremental(ExportWindow { from: NOW - 30 * hour, to: NOW - 6 * hour }),
            "capped at 24 h; the next run catches up"
        );
        let from = NOW - MIN_WINDOW_SECS - WINDOW_END_LAG_SECS;
        assert_eq!(
            choose_export(&[imported("r1", true, Some(from))], NOW, None),
            ExportChoice::Incremental(ExportWindow { from, to: from + MIN_WINDOW_SECS }),
            "15 minutes exactly is allowed"
        );
    }

    #[test]
    fn full_when_due_first_too_soon_too_old_or_untimed() {
        let recent = [imported("r1", true, Some(NOW - 3600))];
        assert_eq!(full(choose_export(&recent, NOW, Some("weekly".into()))), "weekly");
        assert!(full(choose_export(&[], NOW, None)).contains("nothing was imported"));
        let pending = [imported("r1", false, Some(NOW - 3600))];
        assert!(full(choose_export(&pending, NOW, None)).contains("nothing was imported"));
        let soon = [imported("r1", true, Some(NOW - MIN_WINDOW_SECS - WINDOW_END_LAG_SECS + 1))];
        assert!(full(choose_export(&soon, NOW, None)).contains("at least 1200 s"));
        let old = [imported("r1", true, Some(NOW - PITR_WINDOW_SECS - 1))];
        assert!(full(choose_export(&old, NOW, None)).contains("point-in-time recovery"));
        let untimed = [imported("r1", true, None)];
        assert!(full(choose_export(&untimed, NOW, None)).contains("recorded time"));
        let mut scanned = imported("r1", true, None);
        scanned.table_export = None;
        assert!(full(choose_export(&[scanned], NOW, None)).contains("recorded time"));
    }

    #[test]
    fn a_table_export_record_from_before_incremental_exports_still_parses() {
        let old = r#"{"exportArn":"arn","s3Prefix":"exports/r/dynamodb","manifestKey":null,"dataFiles":3,"converted":1}"#;
        let record: TableExportRecord = serde_json::from_str(old).unwrap();
        assert_eq!((record.export_time, record.incremental, record.converted), (None, None, 1));
    }
}

//! The table export over the AWS SDK (the `aws` feature): `DescribeTable` for the size,
//! `ExportTableToPointInTime` into the artifacts bucket, `DescribeExport` to follow it.
//! Point-in-time recovery must be on (the template turns it on).

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::primitives::DateTime;
use aws_sdk_dynamodb::types::{
    ExportFormat, ExportStatus, ExportType, ExportViewType, IncrementalExportSpecification,
};
use tokio::sync::OnceCell;

use super::{StartedExport, TableExportError, TableExportStatus, TableExporter};
use crate::run::ExportWindow;

pub struct DynamoTableExporter {
    client: Client,
    table: String,
    bucket: String,
    /// The table's ARN, which the export call needs: read once by `DescribeTable`.
    table_arn: OnceCell<String>,
}

fn error<E>(operation: &'static str, table: &str, err: SdkError<E>) -> TableExportError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    // Another export of the same table may still be starting; the limit on concurrent
    // exports is the service's business, retried like throttling.
    let failure = aws_failure::classify(&err, &["LimitExceededException"]);
    TableExportError {
        message: format!("DynamoDB {operation} on {table}: {}", failure.summary),
        retryable: failure.retryable,
    }
}

impl DynamoTableExporter {
    pub fn new(client: Client, table: impl Into<String>, bucket: impl Into<String>) -> Self {
        Self { client, table: table.into(), bucket: bucket.into(), table_arn: OnceCell::new() }
    }

    async fn describe(&self) -> Result<(String, Option<u64>), TableExportError> {
        let table = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| error("DescribeTable", &self.table, e))?
            .table
            .ok_or_else(|| TableExportError {
                message: format!("DescribeTable {} gave no table", self.table),
                retryable: true,
            })?;
        let arn = table.table_arn.ok_or_else(|| TableExportError {
            message: format!("DescribeTable {} gave no TableArn", self.table),
            retryable: true,
        })?;
        Ok((arn, table.table_size_bytes.map(|b| b.max(0) as u64)))
    }

    async fn arn(&self) -> Result<&str, TableExportError> {
        self.table_arn
            .get_or_try_init(|| async { self.describe().await.map(|(arn, _)| arn) })
            .await
            .map(String::as_str)
    }
}

#[async_trait]
impl TableExporter for DynamoTableExporter {
    async fn table_size_bytes(&self) -> Result<Option<u64>, TableExportError> {
        let (arn, size) = self.describe().await?;
        let _ = self.table_arn.set(arn);
        Ok(size)
    }

    async fn start(
        &self,
        client_token: &str,
        s3_prefix: &str,
        window: Option<ExportWindow>,
    ) -> Result<StartedExport, TableExportError> {
        let table_arn = self.arn().await?.to_owned();
        let incremental = window.map(|ExportWindow { from, to }| {
            IncrementalExportSpecification::builder()
                .export_from_time(DateTime::from_secs(from))
                .export_to_time(DateTime::from_secs(to))
                .export_view_type(ExportViewType::NewImage)
                .build()
        });
        let export_type = match window {
            None => ExportType::FullExport,
            Some(_) => ExportType::IncrementalExport,
        };
        // One chain, client to send(): how infra's least-privilege scan finds the call.
        let output = self
            .client
            .export_table_to_point_in_time()
            .table_arn(table_arn)
            .s3_bucket(&self.bucket)
            .s3_prefix(s3_prefix)
            .client_token(client_token)
            .export_format(ExportFormat::DynamodbJson)
            .export_type(export_type)
            .set_incremental_export_specification(incremental)
            .send()
            .await
            .map_err(|e| error("ExportTableToPointInTime", &self.table, e))?;
        let description = output.export_description;
        let export_time = description.as_ref().and_then(|d| d.export_time).map(|t| t.secs());
        let export_id = description.and_then(|d| d.export_arn).ok_or_else(|| TableExportError {
            message: "ExportTableToPointInTime gave no ExportArn".into(),
            retryable: true,
        })?;
        Ok(StartedExport { export_id, export_time })
    }

    async fn status(&self, export_arn: &str) -> Result<TableExportStatus, TableExportError> {
        let d = self
            .client
            .describe_export()
            .export_arn(export_arn)
            .send()
            .await
            .map_err(|e| error("DescribeExport", &self.table, e))?
            .export_description
            .ok_or_else(|| TableExportError {
                message: "DescribeExport gave no description".into(),
                retryable: true,
            })?;
        Ok(match d.export_status {
            Some(ExportStatus::Completed) => match d.export_manifest {
                Some(manifest_key) => TableExportStatus::Completed { manifest_key },
                None => TableExportStatus::Failed(format!(
                    "export {export_arn} completed without an ExportManifest"
                )),
            },
            Some(ExportStatus::Failed) => TableExportStatus::Failed(format!(
                "DynamoDB export failed: {}: {}",
                d.failure_code.as_deref().unwrap_or("no FailureCode"),
                d.failure_message.as_deref().unwrap_or("no FailureMessage")
            )),
            other => TableExportStatus::InProgress(format!(
                "DynamoDB export {}",
                other.as_ref().map_or("UNKNOWN", |s| s.as_str())
            )),
        })
    }
}

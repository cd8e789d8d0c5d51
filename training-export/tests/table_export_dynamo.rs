//! The DynamoDB table exporter's requests, through the real SDK with `aws-smithy-mocks`:
//! a full export asks `FULL_EXPORT` and reports DynamoDB's `ExportTime`; an incremental one
//! asks `INCREMENTAL_EXPORT` with the window and `NEW_IMAGE`.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput;
use aws_sdk_dynamodb::operation::export_table_to_point_in_time::ExportTableToPointInTimeOutput;
use aws_sdk_dynamodb::types::{ExportDescription, ExportType, ExportViewType, TableDescription};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use aws_smithy_types::DateTime;
use training_export::run::ExportWindow;
use training_export::table_export::TableExporter;
use training_export::table_export::dynamo::DynamoTableExporter;

const TABLE_ARN: &str = "arn:aws:dynamodb:us-east-1:123456789012:table/interactions";

fn described() -> DescribeTableOutput {
    DescribeTableOutput::builder()
        .table(TableDescription::builder().table_arn(TABLE_ARN).table_size_bytes(10).build())
        .build()
}

fn exported(at: i64) -> ExportTableToPointInTimeOutput {
    ExportTableToPointInTimeOutput::builder()
        .export_description(
            ExportDescription::builder()
                .export_arn(format!("{TABLE_ARN}/export/1"))
                .export_time(DateTime::from_secs(at))
                .build(),
        )
        .build()
}

#[tokio::test]
async fn a_full_export_reports_its_export_time() {
    let describe = mock!(Client::describe_table).then_output(described);
    let export = mock!(Client::export_table_to_point_in_time)
        .match_requests(|r| {
            r.export_type() == Some(&ExportType::FullExport)
                && r.incremental_export_specification().is_none()
                && r.client_token() == Some("run-1")
                && r.s3_prefix() == Some("exports/run-1/dynamodb")
        })
        .then_output(|| exported(1_796_000_000));
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&describe, &export]);
    let exporter = DynamoTableExporter::new(client, "interactions", "bucket");
    let started = exporter.start("run-1", "exports/run-1/dynamodb", None).await.unwrap();
    assert_eq!(started.export_id, format!("{TABLE_ARN}/export/1"));
    assert_eq!(started.export_time, Some(1_796_000_000));
    assert_eq!(export.num_calls(), 1);
}

#[tokio::test]
async fn an_incremental_export_asks_for_the_window_s_new_images() {
    let (from, to) = (1_796_000_000, 1_796_000_000 + 86_400);
    let describe = mock!(Client::describe_table).then_output(described);
    let export = mock!(Client::export_table_to_point_in_time)
        .match_requests(move |r| {
            let spec = r.incremental_export_specification();
            r.export_type() == Some(&ExportType::IncrementalExport)
                && r.export_time().is_none()
                && spec.and_then(|s| s.export_from_time()) == Some(&DateTime::from_secs(from))
                && spec.and_then(|s| s.export_to_time()) == Some(&DateTime::from_secs(to))
                && spec.and_then(|s| s.export_view_type()) == Some(&ExportViewType::NewImage)
        })
        .then_output(|| exported(1));
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&describe, &export]);
    let exporter = DynamoTableExporter::new(client, "interactions", "bucket");
    let window = ExportWindow { from, to };
    let started = exporter.start("run-2", "exports/run-2/incremental/dynamodb", Some(window)).await.unwrap();
    assert_eq!(started.export_id, format!("{TABLE_ARN}/export/1"));
    assert_eq!(export.num_calls(), 1, "the request had the window");
}

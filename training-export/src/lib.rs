//! The 2 a.m. pipeline: export the interactions table to Personalize CSV + Parquet,
//! validate it, import it, train a new solution version, gate it on quality and update
//! the campaign, as a resumable state machine that each invocation advances without
//! ever waiting for Personalize. See the crate README for the contract with infra.

pub mod app;
pub mod backend;
#[doc(hidden)]
pub mod bench;
pub mod cli;
pub mod config;
pub mod embedded_model;
pub mod events;
pub mod export;
pub mod manifest;
pub mod personalize;
pub mod pipeline;
pub mod run;
pub mod runs;
pub mod table_export;
pub mod trainer;

/// The IAM actions the Lambda's code needs, nothing more: the infra template grants
/// exactly these (`infra/tests`), and a test there scans the sources for the AWS SDK calls
/// behind them, so the list cannot drift from the code.
///
/// * interactions table: `dynamodb:Scan` (the export); above the table-export threshold
///   `DescribeTable` (its size), `ExportTableToPointInTime` and `DescribeExport` on the
///   export (`<table-arn>/export/*`), whose files DynamoDB writes into the bucket with this
///   role's `s3:PutObject`, `s3:AbortMultipartUpload` and `s3:PutObjectAcl` (the last a
///   platform grant in `infra/src/lib.rs`: no call here makes it).
/// * runs table: `GetItem`, `PutItem`, `Query`, and `TransactWriteItems`, which IAM checks
///   as the `PutItem` and `DeleteItem` inside it.
/// * bucket: `s3:PutObject` (also multipart create, part and complete), `s3:AbortMultipartUpload`,
///   `s3:GetObject`; `s3:ListBucket` so that a missing manifest or `models/LATEST` reads as a
///   404, not a 403.
/// * bus: `events:PutEvents` (`ranking.pipeline` announcements).
/// * Personalize: the eight operations of [`personalize::AwsPersonalize`], and `iam:PassRole` on
///   the import role that `CreateDatasetImportJob` hands to Personalize.
pub const AWS_ACTIONS: &[&str] = &[
    "dynamodb:Scan",
    "dynamodb:DescribeTable",
    "dynamodb:ExportTableToPointInTime",
    "dynamodb:DescribeExport",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:DeleteItem",
    "dynamodb:Query",
    "s3:GetObject",
    "s3:ListBucket",
    "s3:PutObject",
    "s3:AbortMultipartUpload",
    "events:PutEvents",
    "personalize:CreateDatasetImportJob",
    "personalize:DescribeDatasetImportJob",
    "personalize:CreateSolutionVersion",
    "personalize:ListSolutionVersions",
    "personalize:DescribeSolutionVersion",
    "personalize:GetSolutionMetrics",
    "personalize:DescribeCampaign",
    "personalize:UpdateCampaign",
    "iam:PassRole",
];

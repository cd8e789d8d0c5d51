//! The S3 adapter. A writer buffers one part; when the buffer reaches the part size it
//! starts a multipart upload (once) and uploads the part, so memory holds one part
//! however large the object grows. An object smaller than one part goes up with a
//! single `PutObject`. Any failure, an explicit abort, or dropping an unfinished writer
//! calls `AbortMultipartUpload`: S3 never shows a partial object, and no orphaned parts
//! are left to bill (infra also sets an `AbortIncompleteMultipartUpload` lifecycle rule
//! for the case where the process dies before it can abort).
//!
//! S3 operations called: `PutObject`, `CreateMultipartUpload`, `UploadPart`,
//! `CompleteMultipartUpload`, `AbortMultipartUpload`, `GetObject`, `ListObjectsV2`.

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use tokio::io::AsyncWriteExt;

use crate::{ArtifactError, ObjectInfo, ObjectStore, ObjectWriter, Tally, check_key, copy_out_error};

/// S3's smallest allowed part (except the last).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// Default part size: large enough for few requests, small enough for a 128 MB Lambda.
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;

/// Builds an S3 client from shared configuration, with path-style addressing when a
/// custom endpoint (`AWS_ENDPOINT_URL`, moto) is configured: such endpoints rarely
/// resolve `bucket.host` names. Timeouts come from `config`: pass it through
/// `aws_failure::timeouts` (`timeouts.s3.apply(&aws)`), whose S3 bounds leave room for a
/// part upload.
pub fn client(config: &aws_config::SdkConfig) -> Client {
    let s3_config =
        aws_sdk_s3::config::Builder::from(config).force_path_style(config.endpoint_url().is_some()).build();
    Client::from_conf(s3_config)
}

/// Objects in one S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    part_size: usize,
}

fn s3_error<E>(operation: &'static str, bucket: &str, key: &str, err: SdkError<E>) -> ArtifactError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    // S3's own answer in one line: this message ends up as a run's reason and in its pipeline event.
    let failure = aws_failure::classify(&err, &[]);
    ArtifactError::S3 {
        operation,
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        message: failure.summary,
        retryable: failure.retryable,
    }
}

impl S3Store {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self { client, bucket: bucket.into(), part_size: DEFAULT_PART_SIZE }
    }

    /// Sets the multipart part size (at least 5 MiB, S3's minimum).
    pub fn with_part_size(mut self, part_size: usize) -> Result<Self, ArtifactError> {
        if part_size < MIN_PART_SIZE {
            return Err(ArtifactError::PartTooSmall(part_size));
        }
        self.part_size = part_size;
        Ok(self)
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn part_size(&self) -> usize {
        self.part_size
    }

    /// `GetObject`'s body, not yet read; `None` for a missing key.
    async fn body(&self, key: &str) -> Result<Option<ByteStream>, ArtifactError> {
        check_key(key)?;
        let result = self.client.get_object().bucket(&self.bucket).key(key).send().await;
        match result {
            Ok(output) => Ok(Some(output.body)),
            Err(SdkError::ServiceError(e)) if e.err().is_no_such_key() => Ok(None),
            Err(e) => Err(s3_error("GetObject", &self.bucket, key, e)),
        }
    }

    /// A failure while reading a body: the connection broke or timed out; trying again may work.
    fn body_error(&self, key: &str, e: impl std::fmt::Display) -> ArtifactError {
        ArtifactError::S3 {
            operation: "GetObject",
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            message: format!("reading the body: {e}"),
            retryable: true,
        }
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn begin(&self, key: &str) -> Result<Box<dyn ObjectWriter>, ArtifactError> {
        check_key(key)?;
        Ok(Box::new(S3Writer {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            part_size: self.part_size,
            buffer: Vec::new(),
            upload_id: None,
            parts: Vec::new(),
            tally: Tally::default(),
            closed: false,
        }))
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ArtifactError> {
        let Some(body) = self.body(key).await? else { return Ok(None) };
        let bytes = body.collect().await.map_err(|e| self.body_error(key, e))?;
        Ok(Some(bytes.to_vec()))
    }

    async fn copy_to(
        &self,
        key: &str,
        writer: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    ) -> Result<Option<u64>, ArtifactError> {
        let Some(mut body) = self.body(key).await? else { return Ok(None) };
        // Chunk by chunk as the HTTP body delivers them: memory holds one chunk.
        let mut copied = 0_u64;
        while let Some(chunk) = body.try_next().await.map_err(|e| self.body_error(key, e))? {
            writer.write_all(&chunk).await.map_err(|e| copy_out_error(key, e))?;
            copied += chunk.len() as u64;
        }
        writer.flush().await.map_err(|e| copy_out_error(key, e))?;
        Ok(Some(copied))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, ArtifactError> {
        let mut keys = Vec::new();
        let mut pages =
            self.client.list_objects_v2().bucket(&self.bucket).prefix(prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| s3_error("ListObjectsV2", &self.bucket, prefix, e))?;
            keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
        }
        keys.sort();
        Ok(keys)
    }

    fn location(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }
}

struct S3Writer {
    client: Client,
    bucket: String,
    key: String,
    part_size: usize,
    buffer: Vec<u8>,
    /// Set once the first full part is uploaded.
    upload_id: Option<String>,
    parts: Vec<CompletedPart>,
    tally: Tally,
    closed: bool,
}

impl S3Writer {
    fn err<E>(&self, operation: &'static str, e: SdkError<E>) -> ArtifactError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        s3_error(operation, &self.bucket, &self.key, e)
    }

    async fn upload_buffer_as_part(&mut self) -> Result<(), ArtifactError> {
        let upload_id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                let created = self
                    .client
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&self.key)
                    .send()
                    .await
                    .map_err(|e| self.err("CreateMultipartUpload", e))?;
                let id = created.upload_id().map(str::to_owned).ok_or_else(|| ArtifactError::S3 {
                    operation: "CreateMultipartUpload",
                    bucket: self.bucket.clone(),
                    key: self.key.clone(),
                    message: "the response has no upload id".into(),
                    retryable: true,
                })?;
                self.upload_id = Some(id.clone());
                id
            }
        };
        let part_number = self.parts.len() as i32 + 1;
        let body = std::mem::replace(&mut self.buffer, Vec::with_capacity(self.part_size));
        let uploaded = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .part_number(part_number)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.err("UploadPart", e))?;
        self.parts.push(
            CompletedPart::builder()
                .part_number(part_number)
                .set_e_tag(uploaded.e_tag().map(str::to_owned))
                .build(),
        );
        Ok(())
    }

    async fn complete(&mut self) -> Result<(), ArtifactError> {
        let Some(upload_id) = self.upload_id.clone() else {
            // Smaller than one part: a single PutObject, visible atomically.
            let body = std::mem::take(&mut self.buffer);
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(&self.key)
                .body(ByteStream::from(body))
                .send()
                .await
                .map_err(|e| self.err("PutObject", e))?;
            return Ok(());
        };
        if !self.buffer.is_empty() {
            // The last part may be smaller than the minimum.
            self.upload_buffer_as_part().await?;
        }
        let parts = CompletedMultipartUpload::builder().set_parts(Some(self.parts.clone())).build();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .multipart_upload(parts)
            .send()
            .await
            .map_err(|e| self.err("CompleteMultipartUpload", e))?;
        self.upload_id = None;
        Ok(())
    }

    /// Aborts the multipart upload, if one was started. Errors are logged, not
    /// returned, when this runs after another failure: the first error is the story.
    async fn abort_upload(&mut self) -> Result<(), ArtifactError> {
        self.closed = true;
        self.buffer = Vec::new();
        let Some(upload_id) = self.upload_id.take() else { return Ok(()) };
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| self.err("AbortMultipartUpload", e))?;
        tracing::info!(bucket = %self.bucket, key = %self.key, "aborted multipart upload");
        Ok(())
    }

    async fn fail(&mut self, err: ArtifactError) -> ArtifactError {
        if let Err(abort_err) = self.abort_upload().await {
            tracing::warn!(error = %abort_err, "could not abort the multipart upload after a failure");
        }
        err
    }
}

#[async_trait]
impl ObjectWriter for S3Writer {
    async fn write_all(&mut self, mut bytes: &[u8]) -> Result<(), ArtifactError> {
        if self.closed {
            return Err(ArtifactError::Closed(self.key.clone()));
        }
        self.tally.update(bytes);
        // Fill the buffer to exactly one part at a time, so memory is one part plus
        // nothing, however large a single write is.
        while !bytes.is_empty() {
            let room = self.part_size - self.buffer.len();
            let (now, later) = bytes.split_at(room.min(bytes.len()));
            self.buffer.extend_from_slice(now);
            bytes = later;
            if self.buffer.len() == self.part_size
                && let Err(e) = self.upload_buffer_as_part().await
            {
                return Err(self.fail(e).await);
            }
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<ObjectInfo, ArtifactError> {
        if self.closed {
            return Err(ArtifactError::Closed(self.key.clone()));
        }
        if let Err(e) = self.complete().await {
            return Err(self.fail(e).await);
        }
        self.closed = true;
        Ok(std::mem::take(&mut self.tally).into_info(&self.key))
    }

    async fn abort(mut self: Box<Self>) -> Result<(), ArtifactError> {
        self.abort_upload().await
    }

    fn bytes_written(&self) -> u64 {
        self.tally.size()
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        // Dropped mid-upload (an error upstream, a cancelled task): abort in the
        // background if a runtime is still there to run it.
        let Some(upload_id) = self.upload_id.take() else { return };
        let (client, bucket, key) = (self.client.clone(), self.bucket.clone(), self.key.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    let result = client
                        .abort_multipart_upload()
                        .bucket(&bucket)
                        .key(&key)
                        .upload_id(upload_id)
                        .send()
                        .await;
                    if let Err(e) = result {
                        tracing::warn!(%bucket, %key, error = %aws_failure::summary(&e), "abort after drop failed");
                    }
                });
            }
            Err(_) => tracing::warn!(%bucket, %key, "unfinished multipart upload dropped outside a runtime"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::operation::abort_multipart_upload::AbortMultipartUploadOutput;
    use aws_sdk_s3::operation::create_multipart_upload::CreateMultipartUploadOutput;
    use aws_sdk_s3::operation::upload_part::{UploadPartError, UploadPartOutput};
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    use aws_smithy_types::error::ErrorMetadata;

    #[tokio::test]
    async fn a_failed_part_aborts_the_upload_and_reports_the_operation() {
        let create = mock!(Client::create_multipart_upload)
            .then_output(|| CreateMultipartUploadOutput::builder().upload_id("up-1").build());
        let first_part = mock!(Client::upload_part)
            .match_requests(|r| r.part_number() == Some(1))
            .then_output(|| UploadPartOutput::builder().e_tag("\"e1\"").build());
        let second_part =
            mock!(Client::upload_part).match_requests(|r| r.part_number() == Some(2)).then_error(|| {
                UploadPartError::generic(ErrorMetadata::builder().code("AccessDenied").message("no").build())
            });
        let abort = mock!(Client::abort_multipart_upload)
            .match_requests(|r| r.upload_id() == Some("up-1"))
            .then_output(|| AbortMultipartUploadOutput::builder().build());
        let client =
            mock_client!(aws_sdk_s3, RuleMode::Sequential, [&create, &first_part, &second_part, &abort]);
        let store = S3Store::new(client, "bucket").with_part_size(MIN_PART_SIZE).unwrap();
        let mut writer = store.begin("exports/r/interactions.csv").await.unwrap();
        let err = writer.write_all(&vec![7_u8; MIN_PART_SIZE * 2]).await.unwrap_err();
        assert!(err.to_string().contains("UploadPart"), "{err}");
        assert!(!err.is_retryable(), "AccessDenied is not retryable");
        assert_eq!(abort.num_calls(), 1, "the upload was aborted");
        assert!(matches!(writer.write_all(b"x").await, Err(ArtifactError::Closed(_))));
        assert!(matches!(writer.finish().await, Err(ArtifactError::Closed(_))));
    }

    #[tokio::test]
    async fn an_s3_error_is_reported_in_one_line_with_code_message_and_status() {
        use aws_sdk_s3::config::retry::RetryConfig;
        use aws_smithy_types::body::SdkBody;

        let create = mock!(Client::create_multipart_upload)
            .then_output(|| CreateMultipartUploadOutput::builder().upload_id("up-1").build());
        let failing_part = mock!(Client::upload_part).then_http_response(|| {
            aws_sdk_s3::config::http::HttpResponse::new(
                500.try_into().expect("a status code"),
                SdkBody::from(
                    "<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message>\
                     <RequestId>R1</RequestId></Error>",
                ),
            )
        });
        let abort = mock!(Client::abort_multipart_upload)
            .then_output(|| AbortMultipartUploadOutput::builder().build());
        let client = mock_client!(aws_sdk_s3, RuleMode::Sequential, [&create, &failing_part, &abort], |c| c
            .retry_config(RetryConfig::disabled()));
        let store = S3Store::new(client, "bucket").with_part_size(MIN_PART_SIZE).unwrap();
        let mut writer = store.begin("exports/r/interactions.csv").await.unwrap();
        let err = writer.write_all(&vec![7_u8; MIN_PART_SIZE]).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "S3 UploadPart on s3://bucket/exports/r/interactions.csv: \
             InternalError: We encountered an internal error. (HTTP 500)"
        );
        assert!(err.is_retryable());
    }

    #[test]
    fn parts_below_the_s3_minimum_are_refused() {
        let client = mock_client!(aws_sdk_s3, RuleMode::Sequential, [] as [&aws_smithy_mocks::Rule; 0]);
        let err = S3Store::new(client, "b").with_part_size(1024).unwrap_err();
        assert!(matches!(err, ArtifactError::PartTooSmall(1024)));
    }
}

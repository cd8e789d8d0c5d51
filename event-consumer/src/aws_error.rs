//! One short line for an AWS SDK failure. `DisplayErrorContext` prints the whole
//! raw response (headers and body) into the log; operators need the code, the
//! message and the status.

// Every SDK crate re-exports the same smithy `SdkError`, so one helper serves all.
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

pub(crate) fn summary<E>(err: &SdkError<E>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::ServiceError(e) => format!(
            "{}: {} (HTTP {})",
            e.err().code().unwrap_or("Unknown"),
            e.err().message().unwrap_or("no message"),
            e.raw().status().as_u16()
        ),
        SdkError::TimeoutError(_) => "timed out".to_owned(),
        other => DisplayErrorContext(other).to_string(),
    }
}

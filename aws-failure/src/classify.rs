//! The reading of an SDK failure (see the crate docs).

use std::error::Error as StdError;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::{ConnectorError, SdkError};
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// Error codes that mean "too much, too soon" or "the service had a problem" in the AWS services we
/// call. A 5xx or 429 status counts as transient whatever its code.
pub const TRANSIENT_CODES: &[&str] = &[
    // throttling, named differently by each service
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ProvisionedThroughputExceededException",
    "SlowDown",
    "LimitExceededException",
    // the service's own trouble
    "InternalServerError",
    "InternalFailure",
    "InternalError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    // DynamoDB: another transaction holds the item right now
    "TransactionConflictException",
];

/// What an adapter needs to know about one failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The service's error code (`ThrottlingException`), when the service answered.
    pub code: Option<String>,
    /// The HTTP status, when the service answered.
    pub status: Option<u16>,
    /// One line: `Code: message (HTTP status)`, `timed out`, or the transport failure.
    pub summary: String,
    /// Whether the same request may succeed later.
    pub retryable: bool,
    /// Whether the request may have reached the service and taken effect although the call
    /// failed: a timeout, a 5xx, a connection lost or a response unreadable after the request
    /// went out. False only when the service refused it (4xx, throttling) or it was never sent
    /// (not built, no connection). Only a caller whose call is not idempotent cares
    /// (SES `SendEmail`, say).
    pub ambiguous: bool,
}

/// Reads a failed SDK call. `also_transient` adds codes that are transient for this caller only
/// (Personalize's `ResourceInUseException` while a campaign update is in progress, say).
pub fn classify<E>(err: &SdkError<E, HttpResponse>, also_transient: &[&str]) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::ServiceError(service) => {
            let code = service.err().code();
            let status = service.raw().status().as_u16();
            let transient_code =
                code.is_some_and(|c| TRANSIENT_CODES.contains(&c) || also_transient.contains(&c));
            Failure {
                code: code.map(str::to_owned),
                status: Some(status),
                summary: summary(err),
                retryable: status == 429 || status >= 500 || transient_code,
                ambiguous: status >= 500,
            }
        }
        // Our request could not be built: a bug, and the same bug next time.
        SdkError::ConstructionFailure(_) => {
            Failure { code: None, status: None, summary: summary(err), retryable: false, ambiguous: false }
        }
        // Timeouts, connection failures and unreadable responses are transient.
        _ => Failure {
            code: None,
            status: None,
            summary: summary(err),
            retryable: true,
            ambiguous: may_have_been_sent(err),
        },
    }
}

/// Whether a failed call's request may have reached the service. Conservative: "yes"
/// unless the failure proves otherwise, because a wrong "no" repeats a non-idempotent
/// call while a wrong "yes" only delays its retry.
///
/// * not built ([`SdkError::ConstructionFailure`]), refused by the HTTP client before
///   sending (a user error), or no connection was ever made (refused, DNS, TLS handshake,
///   connect timeout): not sent;
/// * the service answered: it was sent; whether it *took effect* is the status's business
///   (see [`Failure::ambiguous`]);
/// * a timeout of the attempt or the operation, a connection lost after it was made, a
///   response that could not be read: may have been sent.
pub fn may_have_been_sent<E>(err: &SdkError<E, HttpResponse>) -> bool {
    match err {
        SdkError::ConstructionFailure(_) => false,
        SdkError::DispatchFailure(dispatch) => match dispatch.as_connector_error() {
            Some(connector) => !(connector.is_user() || never_connected(connector)),
            None => true,
        },
        _ => true,
    }
}

/// The connection was never established: the SDK's hyper client says `Connect` for a
/// refused connection, a failed DNS lookup or TLS handshake and a connect timeout alike.
fn never_connected(err: &ConnectorError) -> bool {
    let mut next: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = next {
        if e.downcast_ref::<hyper_util::client::legacy::Error>().is_some_and(|h| h.is_connect()) {
            return true;
        }
        next = e.source();
    }
    false
}

/// One line for a failed SDK call: the service's code, message and status when it answered.
pub fn summary<E>(err: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::ServiceError(service) => format!(
            "{}: {} (HTTP {})",
            service.err().code().unwrap_or("Unknown"),
            service.err().message().unwrap_or("no message"),
            service.raw().status().as_u16()
        ),
        SdkError::TimeoutError(_) => "timed out".to_owned(),
        other => DisplayErrorContext(other).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_runtime_api::client::result::ConstructionFailure;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    #[derive(Debug)]
    struct ServiceFault(ErrorMetadata);

    impl std::fmt::Display for ServiceFault {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "service fault")
        }
    }
    impl std::error::Error for ServiceFault {}
    impl ProvideErrorMetadata for ServiceFault {
        fn meta(&self) -> &ErrorMetadata {
            &self.0
        }
    }

    fn answered(code: &str, message: &str, status: u16) -> SdkError<ServiceFault, HttpResponse> {
        let meta = ErrorMetadata::builder().code(code).message(message).build();
        let raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::from("<huge raw body>"));
        SdkError::service_error(ServiceFault(meta), raw)
    }

    #[test]
    fn a_service_answer_is_one_line_without_the_raw_body() {
        let failure = classify(&answered("ValidationException", "bad key", 400), &[]);
        assert_eq!(failure.summary, "ValidationException: bad key (HTTP 400)");
        assert_eq!(failure.code.as_deref(), Some("ValidationException"));
        assert_eq!(failure.status, Some(400));
        assert!(!failure.retryable);
        assert!(!failure.ambiguous, "a 4xx is a refusal");
    }

    #[test]
    fn throttling_codes_429_and_5xx_are_transient() {
        assert!(
            classify(&answered("ProvisionedThroughputExceededException", "slow down", 400), &[]).retryable
        );
        assert!(classify(&answered("SlowDown", "s3 says", 503), &[]).retryable);
        assert!(classify(&answered("Whatever", "x", 429), &[]).retryable);
        assert!(classify(&answered("Whatever", "x", 500), &[]).retryable);
        assert!(!classify(&answered("AccessDeniedException", "no", 403), &[]).retryable);
    }

    #[test]
    fn a_5xx_or_a_timeout_may_have_taken_effect_and_a_refusal_did_not() {
        assert!(classify(&answered("InternalFailure", "oops", 500), &[]).ambiguous);
        assert!(classify(&answered("ServiceUnavailable", "later", 503), &[]).ambiguous);
        assert!(!classify(&answered("TooManyRequestsException", "slow", 429), &[]).ambiguous);
        let timeout: SdkError<ServiceFault, HttpResponse> = SdkError::timeout_error("deadline");
        assert!(classify(&timeout, &[]).ambiguous);
        let unreadable: SdkError<ServiceFault, HttpResponse> = SdkError::response_error(
            "truncated",
            HttpResponse::new(200.try_into().unwrap(), SdkBody::from("{")),
        );
        assert!(classify(&unreadable, &[]).ambiguous, "a 200 that did not parse may well have worked");
        let lost: SdkError<ServiceFault, HttpResponse> =
            SdkError::dispatch_failure(ConnectorError::io("connection reset by peer".into()));
        assert!(classify(&lost, &[]).ambiguous);
        let refused_by_client: SdkError<ServiceFault, HttpResponse> =
            SdkError::dispatch_failure(ConnectorError::user("bad header".into()));
        assert!(!classify(&refused_by_client, &[]).ambiguous);
    }

    #[test]
    fn a_caller_can_add_its_own_transient_codes() {
        let busy = answered("ResourceInUseException", "update in progress", 400);
        assert!(!classify(&busy, &[]).retryable);
        assert!(classify(&busy, &["ResourceInUseException"]).retryable);
    }

    #[test]
    fn timeouts_are_transient_and_construction_failures_are_not() {
        let timeout: SdkError<ServiceFault, HttpResponse> = SdkError::timeout_error("deadline");
        let failure = classify(&timeout, &[]);
        assert_eq!(failure.summary, "timed out");
        assert!(failure.retryable);

        let bug: SdkError<ServiceFault, HttpResponse> =
            SdkError::ConstructionFailure(ConstructionFailure::builder().source("missing field").build());
        assert!(!classify(&bug, &[]).retryable);
        assert!(!classify(&bug, &[]).ambiguous);
    }
}

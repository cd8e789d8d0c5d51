//! The AWS mail transport: SES v2 `SendEmail` with simple content (an HTML and a
//! plain-text body, UTF-8).
//!
//! SES has no idempotency key for `SendEmail`: two calls send two emails. The
//! consumer's ledger is what makes a send happen once per event; see
//! [`crate::consumer`] for the one narrow window that remains. So the client makes
//! exactly one attempt (the SDK's own retry would resend after a timeout), bounded by
//! `SES_TIMEOUT_MS` (see [`aws_failure::timeouts`]), and a failure says whether the email
//! may have gone out anyway ([`MailError::may_have_been_sent`]).

use async_trait::async_trait;
use aws_sdk_sesv2::Client;
use aws_sdk_sesv2::config::retry::RetryConfig;
use aws_sdk_sesv2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sesv2::types::{
    Body, Content, Destination, EmailContent, Message, MessageTag, SuppressionListReason,
};
use schemas::EmailAddress;

use super::outbox::file_stem;
use super::{MailError, MailReceipt, Mailer, OutgoingEmail, scrub_addresses};
use crate::suppression::SuppressionReason;

#[derive(Debug, Clone)]
pub struct SesMailer {
    client: Client,
    configuration_set: Option<String>,
}

impl SesMailer {
    /// Sends through `client`, with its retries turned off whatever it was built with.
    pub fn new(client: Client) -> Self {
        let one_attempt =
            client.config().to_builder().retry_config(RetryConfig::standard().with_max_attempts(1)).build();
        Self { client: Client::from_conf(one_attempt), configuration_set: None }
    }

    /// The client the mailer sends through (its configuration, for tests).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Sends through a configuration set (bounce and complaint tracking).
    pub fn with_configuration_set(mut self, name: impl Into<String>) -> Self {
        self.configuration_set = Some(name.into());
        self
    }
}

fn utf8(data: &str) -> Result<Content, MailError> {
    Content::builder().data(data).charset("UTF-8").build().map_err(|e| MailError::Ses {
        operation: "SendEmail",
        code: "BuildRequest".into(),
        message: e.to_string(),
        retryable: false,
        may_have_been_sent: false,
    })
}

#[async_trait]
impl Mailer for SesMailer {
    async fn send(&self, email: &OutgoingEmail) -> Result<MailReceipt, MailError> {
        let message = Message::builder()
            .subject(utf8(&email.content.subject)?)
            .body(Body::builder().html(utf8(&email.content.html)?).text(utf8(&email.content.text)?).build())
            .build();
        // Lets bounce and delivery notifications be traced back to the event.
        let tag =
            MessageTag::builder().name("eventId").value(file_stem(&email.event_id)).build().map_err(|e| {
                MailError::Ses {
                    operation: "SendEmail",
                    code: "BuildRequest".into(),
                    message: e.to_string(),
                    retryable: false,
                    may_have_been_sent: false,
                }
            })?;
        let output = self
            .client
            .send_email()
            .from_email_address(email.from.as_str())
            .destination(Destination::builder().to_addresses(email.to.as_str()).build())
            .content(EmailContent::builder().simple(message).build())
            .email_tags(tag)
            .set_configuration_set_name(self.configuration_set.clone())
            .send()
            .await
            .map_err(|e| classify("SendEmail", e))?;
        Ok(MailReceipt { message_id: output.message_id().unwrap_or_default().to_owned(), outbox_file: None })
    }

    async fn suppress_destination(
        &self,
        address: &EmailAddress,
        reason: SuppressionReason,
    ) -> Result<(), MailError> {
        let reason = match reason {
            SuppressionReason::Bounce => SuppressionListReason::Bounce,
            SuppressionReason::Complaint => SuppressionListReason::Complaint,
        };
        // Putting an address that is already listed updates its reason: idempotent.
        self.client
            .put_suppressed_destination()
            .email_address(address.as_str())
            .reason(reason)
            .send()
            .await
            .map_err(|e| classify("PutSuppressedDestination", e))?;
        Ok(())
    }
}

/// Sorts an SES failure into "try again later" or "this will never work", and says
/// whether the email may have gone out all the same.
///
/// Ambiguous (the email may be on its way): a timeout, a 5xx, a connection lost or a
/// response unreadable after the request went out. Definite (nothing was sent): a 4xx
/// (validation, rejection, throttling), a request that could not be built, a connection
/// that was never made. See [`aws_failure::may_have_been_sent`].
pub(crate) fn classify<E>(operation: &'static str, err: SdkError<E>) -> MailError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match &err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let e = service.err();
            let code = e.code().unwrap_or("Unknown");
            let retryable = status == 429
                || status >= 500
                || matches!(code, "TooManyRequestsException" | "LimitExceededException");
            MailError::Ses {
                operation,
                code: code.to_owned(),
                message: format!("{} (HTTP {status})", scrub_addresses(e.message().unwrap_or("no message"))),
                retryable,
                // SES may have queued the email before failing to say so.
                may_have_been_sent: status >= 500,
            }
        }
        // Our request could not be built: a bug, and the same bug next time.
        SdkError::ConstructionFailure(_) => MailError::Ses {
            operation,
            code: "ConstructionFailure".into(),
            message: scrub_addresses(&aws_failure::summary(&err)),
            retryable: false,
            may_have_been_sent: false,
        },
        // Timeouts, connection failures, unreadable responses: transient.
        _ => MailError::Ses {
            operation,
            code: if matches!(err, SdkError::TimeoutError(_)) { "Timeout" } else { "Transport" }.into(),
            message: scrub_addresses(&aws_failure::summary(&err)),
            retryable: true,
            may_have_been_sent: aws_failure::may_have_been_sent(&err),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::RenderedEmail;
    use aws_sdk_sesv2::operation::send_email::{SendEmailError, SendEmailOutput};
    use aws_sdk_sesv2::types::error::{MessageRejected, TooManyRequestsException};
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;
    use schemas::EventId;

    fn email() -> OutgoingEmail {
        OutgoingEmail {
            event_id: EventId::parse("0d079340-135a-c8c6-95c2-41fb8f496c53").unwrap(),
            recipient: None,
            from: EmailAddress::parse("no-reply@student.vn").unwrap(),
            to: EmailAddress::parse("an.nguyen@example.edu.vn").unwrap(),
            content: RenderedEmail {
                subject: "Xác nhận đăng ký lớp".into(),
                html: "<p>Chào</p>".into(),
                text: "Chào".into(),
            },
        }
    }

    #[tokio::test]
    async fn throttling_and_5xx_are_retryable_and_rejection_is_not() {
        let throttled = mock!(aws_sdk_sesv2::Client::send_email).then_error(|| {
            // The code SES sends in `__type`, as the SDK's deserializer records it.
            SendEmailError::TooManyRequestsException(
                TooManyRequestsException::builder()
                    .meta(ErrorMetadata::builder().code("TooManyRequestsException").build())
                    .build(),
            )
        });
        let unavailable = mock!(aws_sdk_sesv2::Client::send_email).then_http_response(|| {
            Response::new(
                StatusCode::try_from(503).unwrap(),
                SdkBody::from(r#"{"__type":"InternalFailure","message":"try later"}"#),
            )
        });
        let rejected = mock!(aws_sdk_sesv2::Client::send_email).then_error(|| {
            SendEmailError::MessageRejected(
                MessageRejected::builder()
                    .message("Email address is not verified: an.nguyen@example.edu.vn")
                    .build(),
            )
        });
        let sent = mock!(aws_sdk_sesv2::Client::send_email)
            .match_requests(|r| {
                let simple = r.content().and_then(|c| c.simple());
                r.from_email_address() == Some("no-reply@student.vn")
                    && r.destination().map(|d| d.to_addresses())
                        == Some(&["an.nguyen@example.edu.vn".to_owned()][..])
                    && simple.and_then(|m| m.subject()).map(|s| (s.data(), s.charset()))
                        == Some(("Xác nhận đăng ký lớp", Some("UTF-8")))
                    && simple.and_then(|m| m.body()).is_some_and(|b| b.html().is_some() && b.text().is_some())
                    && r.email_tags().first().map(|t| t.value())
                        == Some("0d079340-135a-c8c6-95c2-41fb8f496c53")
            })
            .then_output(|| SendEmailOutput::builder().message_id("ses-1").build());
        let client = mock_client!(
            aws_sdk_sesv2,
            RuleMode::Sequential,
            [&throttled, &unavailable, &rejected, &sent],
            |c| c.retry_config(RetryConfig::disabled())
        );
        let mailer = SesMailer::new(client);

        let err = mailer.send(&email()).await.unwrap_err();
        assert!(err.is_retryable() && !err.may_have_been_sent(), "throttled: refused, not sent: {err}");
        let err = mailer.send(&email()).await.unwrap_err();
        assert!(err.is_retryable() && err.to_string().contains("503"), "{err}");
        assert!(err.may_have_been_sent(), "a 5xx leaves it open whether SES queued the email");
        let err = mailer.send(&email()).await.unwrap_err();
        assert!(!err.is_retryable() && !err.may_have_been_sent(), "{err}");
        assert!(!err.to_string().contains('@'), "addresses are scrubbed: {err}");
        let receipt = mailer.send(&email()).await.unwrap();
        assert_eq!(receipt, MailReceipt { message_id: "ses-1".into(), outbox_file: None });
    }

    #[tokio::test]
    async fn a_suppression_reaches_the_account_list_and_a_throttle_is_retryable() {
        use aws_sdk_sesv2::operation::put_suppressed_destination::{
            PutSuppressedDestinationError, PutSuppressedDestinationOutput,
        };
        let listed = mock!(aws_sdk_sesv2::Client::put_suppressed_destination)
            .match_requests(|r| {
                r.email_address() == Some("bounce@simulator.amazonses.com")
                    && r.reason() == Some(&SuppressionListReason::Bounce)
            })
            .then_output(|| PutSuppressedDestinationOutput::builder().build());
        let complaint = mock!(aws_sdk_sesv2::Client::put_suppressed_destination)
            .match_requests(|r| r.reason() == Some(&SuppressionListReason::Complaint))
            .then_output(|| PutSuppressedDestinationOutput::builder().build());
        let throttled = mock!(aws_sdk_sesv2::Client::put_suppressed_destination).then_error(|| {
            PutSuppressedDestinationError::TooManyRequestsException(
                TooManyRequestsException::builder()
                    .meta(ErrorMetadata::builder().code("TooManyRequestsException").build())
                    .build(),
            )
        });
        let client =
            mock_client!(aws_sdk_sesv2, RuleMode::Sequential, [&listed, &complaint, &throttled], |c| c
                .retry_config(RetryConfig::disabled()));
        let mailer = SesMailer::new(client);
        let address = EmailAddress::parse("bounce@simulator.amazonses.com").unwrap();

        mailer.suppress_destination(&address, SuppressionReason::Bounce).await.unwrap();
        mailer.suppress_destination(&address, SuppressionReason::Complaint).await.unwrap();
        let err = mailer.suppress_destination(&address, SuppressionReason::Bounce).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(err.to_string().contains("PutSuppressedDestination"), "names the operation: {err}");
        assert_eq!(listed.num_calls(), 1);
        assert_eq!(complaint.num_calls(), 1);
    }
}

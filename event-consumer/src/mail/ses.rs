//! The AWS mail transport: SES v2 `SendEmail` with simple content (an HTML and a
//! plain-text body, UTF-8).
//!
//! SES has no idempotency key for `SendEmail`: two calls send two emails. The
//! consumer's ledger is what makes a send happen once per event; see
//! [`crate::consumer`] for the one narrow window that remains.

use async_trait::async_trait;
use aws_sdk_sesv2::Client;
use aws_sdk_sesv2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sesv2::operation::send_email::SendEmailError;
use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message, MessageTag};

use super::outbox::file_stem;
use super::{MailError, MailReceipt, Mailer, OutgoingEmail, scrub_addresses};

#[derive(Debug, Clone)]
pub struct SesMailer {
    client: Client,
    configuration_set: Option<String>,
}

impl SesMailer {
    pub fn new(client: Client) -> Self {
        Self { client, configuration_set: None }
    }

    /// Sends through a configuration set (bounce and complaint tracking).
    pub fn with_configuration_set(mut self, name: impl Into<String>) -> Self {
        self.configuration_set = Some(name.into());
        self
    }
}

fn utf8(data: &str) -> Result<Content, MailError> {
    Content::builder().data(data).charset("UTF-8").build().map_err(|e| MailError::Ses {
        code: "BuildRequest".into(),
        message: e.to_string(),
        retryable: false,
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
                MailError::Ses { code: "BuildRequest".into(), message: e.to_string(), retryable: false }
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
            .map_err(classify)?;
        Ok(MailReceipt { message_id: output.message_id().unwrap_or_default().to_owned(), outbox_file: None })
    }
}

/// Sorts an SES failure into "try again later" or "this email will never go".
pub(crate) fn classify(err: SdkError<SendEmailError>) -> MailError {
    match &err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let e = service.err();
            let retryable = status == 429
                || status >= 500
                || matches!(
                    e,
                    SendEmailError::TooManyRequestsException(_) | SendEmailError::LimitExceededException(_)
                );
            MailError::Ses {
                code: e.code().unwrap_or("Unknown").to_owned(),
                message: scrub_addresses(e.message().unwrap_or("no message")),
                retryable,
            }
        }
        // Our request could not be built: a bug, and the same bug next time.
        SdkError::ConstructionFailure(_) => MailError::Ses {
            code: "ConstructionFailure".into(),
            message: scrub_addresses(&crate::aws_error::summary(&err)),
            retryable: false,
        },
        // Timeouts, connection failures, unreadable responses: transient.
        _ => MailError::Ses {
            code: "Transport".into(),
            message: scrub_addresses(&crate::aws_error::summary(&err)),
            retryable: true,
        },
    }
}

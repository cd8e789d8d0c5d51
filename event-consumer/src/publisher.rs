//! The app side: publishing a domain event on the bus with the source and
//! detail-type the consumer (and the bus's rules) expect.

use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use schemas::DomainEvent;

/// Per-entry error codes that a later attempt may get past.
const RETRYABLE_ENTRY_CODES: &[&str] = &["InternalFailure", "ThrottlingException", "ServiceUnavailable"];

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("PutEvents on bus {bus}: {message}")]
    Request { bus: String, message: String, retryable: bool },
    #[error("EventBridge refused the {detail_type} event on bus {bus} ({code}): {message}")]
    EntryRejected { bus: String, detail_type: &'static str, code: String, message: String, retryable: bool },
}

impl PublishError {
    pub fn is_retryable(&self) -> bool {
        match self {
            PublishError::Request { retryable, .. } | PublishError::EntryRejected { retryable, .. } => {
                *retryable
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct EventPublisher {
    client: Client,
    bus_name: String,
}

impl EventPublisher {
    pub fn new(client: Client, bus_name: impl Into<String>) -> Self {
        Self { client, bus_name: bus_name.into() }
    }

    pub fn bus_name(&self) -> &str {
        &self.bus_name
    }

    /// The `PutEvents` entry for `event`: source and detail-type from its kind.
    pub fn entry(&self, event: &DomainEvent) -> PutEventsRequestEntry {
        let detail_type = event.detail_type();
        PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus_name)
            .source(detail_type.source())
            .detail_type(detail_type.as_str())
            .detail(event.detail_json().to_string())
            .build()
    }

    /// Publishes one event; returns the id EventBridge gave it.
    pub async fn publish(&self, event: &DomainEvent) -> Result<String, PublishError> {
        let detail_type = event.detail_type().as_str();
        let output = self.client.put_events().entries(self.entry(event)).send().await.map_err(|err| {
            let failure = aws_failure::classify(&err, &[]);
            PublishError::Request {
                bus: self.bus_name.clone(),
                message: failure.summary,
                retryable: failure.retryable,
            }
        })?;
        // PutEvents answers 200 even when entries fail; each entry says for itself.
        let entry = output.entries().first();
        match entry {
            Some(e) if e.error_code().is_none() && output.failed_entry_count() == 0 => {
                Ok(e.event_id().unwrap_or_default().to_owned())
            }
            other => {
                let code = other.and_then(|e| e.error_code()).unwrap_or("Unknown").to_owned();
                let message =
                    other.and_then(|e| e.error_message()).unwrap_or("no result for the entry").to_owned();
                Err(PublishError::EntryRejected {
                    bus: self.bus_name.clone(),
                    detail_type,
                    retryable: RETRYABLE_ENTRY_CODES.contains(&code.as_str()),
                    code,
                    message,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_eventbridge::operation::put_events::PutEventsOutput;
    use aws_sdk_eventbridge::types::PutEventsResultEntry;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    use schemas::events::RankingUpdateRequested;

    fn request_update() -> DomainEvent {
        DomainEvent::RankingUpdateRequested(RankingUpdateRequested { trigger: "manual".into() })
    }

    #[tokio::test]
    async fn a_failed_entry_is_an_error_even_when_the_call_succeeds() {
        let throttled = mock!(Client::put_events).then_output(|| {
            PutEventsOutput::builder()
                .failed_entry_count(1)
                .entries(
                    PutEventsResultEntry::builder()
                        .error_code("ThrottlingException")
                        .error_message("Rate exceeded")
                        .build(),
                )
                .build()
        });
        let malformed = mock!(Client::put_events).then_output(|| {
            PutEventsOutput::builder()
                .failed_entry_count(1)
                .entries(PutEventsResultEntry::builder().error_code("MalformedDetail").build())
                .build()
        });
        let accepted = mock!(Client::put_events)
            .match_requests(|r| {
                let e = &r.entries()[0];
                e.source() == Some("api.ranking")
                    && e.detail_type() == Some("ranking.requestUpdate")
                    && e.event_bus_name() == Some("student-event-bus")
                    && e.detail() == Some(r#"{"trigger":"manual"}"#)
            })
            .then_output(|| {
                PutEventsOutput::builder()
                    .failed_entry_count(0)
                    .entries(PutEventsResultEntry::builder().event_id("ev-1").build())
                    .build()
            });
        let client =
            mock_client!(aws_sdk_eventbridge, RuleMode::Sequential, [&throttled, &malformed, &accepted]);
        let publisher = EventPublisher::new(client, "student-event-bus");
        let err = publisher.publish(&request_update()).await.unwrap_err();
        assert!(err.is_retryable() && err.to_string().contains("Rate exceeded"), "{err}");
        let err = publisher.publish(&request_update()).await.unwrap_err();
        assert!(!err.is_retryable() && err.to_string().contains("MalformedDetail"), "{err}");
        assert_eq!(publisher.publish(&request_update()).await.unwrap(), "ev-1");
    }
}

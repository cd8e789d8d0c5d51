//! Pipeline events on an EventBridge bus (the `aws` feature).

use async_trait::async_trait;
use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use schemas::DetailType;

use super::{PipelineEvent, PipelineEvents, PublishError};

pub struct EventBridgeEvents {
    client: Client,
    bus: String,
}

impl EventBridgeEvents {
    pub fn new(client: Client, bus: impl Into<String>) -> Self {
        Self { client, bus: bus.into() }
    }
}

#[async_trait]
impl PipelineEvents for EventBridgeEvents {
    async fn publish(&self, event: &PipelineEvent) -> Result<(), PublishError> {
        let detail_type = DetailType::RankingPipeline;
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(detail_type.source())
            .detail_type(detail_type.as_str())
            .detail(serde_json::to_string(event).expect("events serialize"))
            .build();
        let out = self.client.put_events().entries(entry).send().await.map_err(|e| {
            let failure = aws_failure::classify(&e, &[]);
            PublishError { message: failure.summary, retryable: failure.retryable }
        })?;
        // PutEvents succeeds as a call even when an entry is refused: check the count.
        if out.failed_entry_count() > 0 {
            let why = out
                .entries()
                .iter()
                .filter_map(|e| e.error_code().map(|c| format!("{c}: {}", e.error_message().unwrap_or(""))))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(PublishError {
                message: format!("EventBridge refused the event ({why})"),
                retryable: true,
            });
        }
        tracing::info!(run_id = %event.run_id, status = event.status, bus = %self.bus, "pipeline event published");
        Ok(())
    }
}

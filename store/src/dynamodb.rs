//! The DynamoDB adapter. Table layout: see [`crate::item`]. Keying by the event id
//! makes a put of a redelivered event a conditional no-op.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use futures::stream::{self, BoxStream, StreamExt};
use schemas::Interaction;

use crate::item::{self, Attribute};
use crate::{
    InteractionSink, InteractionSource, PutOutcome, RejectedRecord, ScanPage, StoreError, check_segment,
};

pub use crate::item::{EVENT_ID, EVENT_TYPE, EVENT_VALUE, ITEM_ID, TIMESTAMP, USER_ID};

/// The interactions table in DynamoDB.
#[derive(Debug, Clone)]
pub struct DynamoInteractionStore {
    client: Client,
    table: String,
}

fn dynamo_error<E>(operation: &'static str, table: &str, err: SdkError<E>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let failure = aws_failure::classify(&err, &[]);
    StoreError::Dynamo {
        operation,
        table: table.to_owned(),
        message: failure.summary,
        retryable: failure.retryable,
    }
}

impl DynamoInteractionStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    async fn scan_page(
        &self,
        segment: u32,
        total: u32,
        start: Option<HashMap<String, AttributeValue>>,
    ) -> Result<(ScanPage, Option<HashMap<String, AttributeValue>>), StoreError> {
        let output = self
            .client
            .scan()
            .table_name(&self.table)
            .segment(segment as i32)
            .total_segments(total as i32)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| dynamo_error("Scan", &self.table, e))?;
        let mut page = ScanPage::default();
        for item in output.items() {
            match from_item(item) {
                Ok(i) => page.interactions.push(i),
                Err(reason) => page.rejected.push(RejectedRecord { key: key_of(item), reason }),
            }
        }
        Ok((page, output.last_evaluated_key().cloned()))
    }
}

/// The attribute map stored for one interaction.
pub fn to_item(i: &Interaction) -> HashMap<String, AttributeValue> {
    item::attributes(i)
        .into_iter()
        .map(|(name, value)| {
            let value = match value {
                item::Stored::S(s) => AttributeValue::S(s),
                item::Stored::N(n) => AttributeValue::N(n),
            };
            (name.to_owned(), value)
        })
        .collect()
}

fn attribute<'a>(item: &'a HashMap<String, AttributeValue>) -> impl Fn(&str) -> Option<Attribute<'a>> {
    move |name| {
        item.get(name).map(|v| match v {
            AttributeValue::S(s) => Attribute::S(s),
            AttributeValue::N(n) => Attribute::N(n),
            AttributeValue::Null(_) => Attribute::Null,
            _ => Attribute::Other,
        })
    }
}

/// Parses a stored item back into an interaction, or says which attribute is wrong.
pub fn from_item(item: &HashMap<String, AttributeValue>) -> Result<Interaction, String> {
    item::decode(attribute(item))
}

fn key_of(item: &HashMap<String, AttributeValue>) -> String {
    item::key_of(attribute(item))
}

#[async_trait]
impl InteractionSink for DynamoInteractionStore {
    async fn put(&self, interaction: &Interaction) -> Result<PutOutcome, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(interaction)))
            .condition_expression("attribute_not_exists(#e)")
            .expression_attribute_names("#e", EVENT_ID)
            .send()
            .await;
        match result {
            Ok(_) => Ok(PutOutcome::Inserted),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                Ok(PutOutcome::Duplicate)
            }
            Err(e) => Err(dynamo_error("PutItem", &self.table, e)),
        }
    }
}

impl InteractionSource for DynamoInteractionStore {
    fn scan_segment(&self, segment: u32, total: u32) -> BoxStream<'_, Result<ScanPage, StoreError>> {
        if let Err(e) = check_segment(segment, total) {
            return stream::once(async { Err(e) }).boxed();
        }
        // State: Some(start key) while pages remain; the first page starts at None.
        stream::unfold(Some(None), move |state| async move {
            let start = state?;
            match self.scan_page(segment, total, start).await {
                Ok((page, Some(next))) => Some((Ok(page), Some(Some(next)))),
                Ok((page, None)) => Some((Ok(page), None)),
                Err(e) => Some((Err(e), None)),
            }
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemOutput};
    use aws_sdk_dynamodb::operation::scan::ScanOutput;
    use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    use schemas::{EventId, EventType, Timestamp};

    fn sample() -> Interaction {
        Interaction {
            user_id: "s-1".parse().unwrap(),
            item_id: "math-101".parse().unwrap(),
            timestamp: Timestamp::from_epoch_seconds(1_767_225_600).unwrap(),
            event_type: EventType::enrolled(),
            event_value: Some(0.5),
            event_id: EventId::parse("e-1").unwrap(),
        }
    }

    #[test]
    fn items_round_trip() {
        assert_eq!(from_item(&to_item(&sample())), Ok(sample()));
        let mut broken = to_item(&sample());
        broken.insert(TIMESTAMP.into(), AttributeValue::N("1767225600000".into()));
        assert!(from_item(&broken).unwrap_err().contains("not epoch seconds"));
        broken.remove(ITEM_ID);
        assert_eq!(key_of(&broken), "s-1/e-1");
    }

    #[tokio::test]
    async fn a_failed_condition_is_a_duplicate_not_an_error() {
        let inserted = mock!(Client::put_item).then_output(|| PutItemOutput::builder().build());
        let duplicate = mock!(Client::put_item).then_error(|| {
            PutItemError::ConditionalCheckFailedException(ConditionalCheckFailedException::builder().build())
        });
        let client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&inserted, &duplicate]);
        let store = DynamoInteractionStore::new(client, "interactions");
        assert_eq!(store.put(&sample()).await.unwrap(), PutOutcome::Inserted);
        assert_eq!(store.put(&sample()).await.unwrap(), PutOutcome::Duplicate);
    }

    #[tokio::test]
    async fn scans_follow_the_last_evaluated_key_and_report_bad_rows() {
        let mut bad = to_item(&sample());
        bad.insert(USER_ID.into(), AttributeValue::S(String::new()));
        let first = mock!(Client::scan).match_requests(|r| r.exclusive_start_key().is_none()).then_output(
            move || {
                ScanOutput::builder()
                    .items(to_item(&sample()))
                    .items(bad.clone())
                    .set_last_evaluated_key(Some(HashMap::from([(
                        EVENT_ID.into(),
                        AttributeValue::S("e-1".into()),
                    )])))
                    .build()
            },
        );
        let second = mock!(Client::scan)
            .match_requests(|r| r.exclusive_start_key().is_some() && r.segment() == Some(1))
            .then_output(|| ScanOutput::builder().items(to_item(&sample())).build());
        let client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&first, &second]);
        let store = DynamoInteractionStore::new(client, "interactions");
        let pages: Vec<_> = store.scan_segment(1, 4).collect().await;
        let pages: Vec<ScanPage> = pages.into_iter().map(Result::unwrap).collect();
        assert_eq!(pages.len(), 2);
        assert_eq!(pages[0].interactions, vec![sample()]);
        assert_eq!(pages[0].rejected[0].reason, "userId is empty");
        assert_eq!(pages[1].interactions.len(), 1);
    }
}

//! The DynamoDB adapter. Table layout: partition key `userId` (S), sort key
//! `eventId` (S); attributes `itemId` (S), `timestamp` (N, epoch seconds),
//! `eventType` (S), `eventValue` (N, optional). Keying by the event id makes a put
//! of a redelivered event a conditional no-op.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use futures::stream::{self, BoxStream, StreamExt};
use schemas::{EventId, EventType, Interaction, ItemId, Timestamp, UserId};

use crate::{
    InteractionSink, InteractionSource, PutOutcome, RejectedRecord, ScanPage, StoreError, check_segment,
};

pub const USER_ID: &str = "userId";
pub const EVENT_ID: &str = "eventId";
pub const ITEM_ID: &str = "itemId";
pub const TIMESTAMP: &str = "timestamp";
pub const EVENT_TYPE: &str = "eventType";
pub const EVENT_VALUE: &str = "eventValue";

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
    let mut item = HashMap::from([
        (USER_ID.to_owned(), AttributeValue::S(i.user_id.to_string())),
        (EVENT_ID.to_owned(), AttributeValue::S(i.event_id.to_string())),
        (ITEM_ID.to_owned(), AttributeValue::S(i.item_id.to_string())),
        (TIMESTAMP.to_owned(), AttributeValue::N(i.timestamp.epoch_seconds().to_string())),
        (EVENT_TYPE.to_owned(), AttributeValue::S(i.event_type.to_string())),
    ]);
    if let Some(v) = i.event_value {
        item.insert(EVENT_VALUE.to_owned(), AttributeValue::N(v.to_string()));
    }
    item
}

fn string<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Result<&'a str, String> {
    match item.get(name) {
        Some(AttributeValue::S(s)) => Ok(s),
        Some(_) => Err(format!("{name} is not a string")),
        None => Err(format!("{name} is missing")),
    }
}

fn number<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Result<Option<&'a str>, String> {
    match item.get(name) {
        Some(AttributeValue::N(n)) => Ok(Some(n)),
        Some(AttributeValue::Null(_)) | None => Ok(None),
        Some(_) => Err(format!("{name} is not a number")),
    }
}

/// Parses a stored item back into an interaction, or says which attribute is wrong.
pub fn from_item(item: &HashMap<String, AttributeValue>) -> Result<Interaction, String> {
    let ts = number(item, TIMESTAMP)?.ok_or_else(|| format!("{TIMESTAMP} is missing"))?;
    let ts: i64 = ts.parse().map_err(|_| format!("{TIMESTAMP} {ts:?} is not whole seconds"))?;
    let value = match number(item, EVENT_VALUE)? {
        Some(v) => Some(v.parse::<f32>().map_err(|_| format!("{EVENT_VALUE} {v:?} is not a float"))?),
        None => None,
    };
    Ok(Interaction {
        user_id: UserId::parse(string(item, USER_ID)?).map_err(|e| e.to_string())?,
        item_id: ItemId::parse(string(item, ITEM_ID)?).map_err(|e| e.to_string())?,
        timestamp: Timestamp::from_epoch_seconds(ts).map_err(|e| e.to_string())?,
        event_type: EventType::parse(string(item, EVENT_TYPE)?).map_err(|e| e.to_string())?,
        event_value: Interaction::validate_value(value).map_err(|e| e.to_string())?,
        event_id: EventId::parse(string(item, EVENT_ID)?).map_err(|e| e.to_string())?,
    })
}

fn key_of(item: &HashMap<String, AttributeValue>) -> String {
    let part = |name| string(item, name).unwrap_or("?");
    format!("{}/{}", part(USER_ID), part(EVENT_ID))
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

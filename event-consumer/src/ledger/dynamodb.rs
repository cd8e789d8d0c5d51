//! The DynamoDB ledger (`IDEMPOTENCY_TABLE`). Table layout: partition key
//! `effectKey` (S), e.g. `confirmation-email#0d079340-…`; attributes `effect` (S),
//! `eventId` (S), `state` (S: `claimed` | `done`), `claimToken` (S, while claimed),
//! `leaseExpiresAt` (N, epoch seconds, while claimed), `receipt` (S, once done),
//! `updatedAt` (N) and `expiresAt` (N, epoch seconds: enable TTL on it).
//!
//! Every transition is one conditional write, so concurrent Lambda instances
//! cannot both claim: DynamoDB evaluates the condition and the write atomically.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::{
    Claim, ClaimToken, Completion, EffectKey, IdempotencyLedger, LedgerError, lease_secs, retention_secs,
};

pub const EFFECT_KEY: &str = "effectKey";
pub const EFFECT: &str = "effect";
pub const EVENT_ID: &str = "eventId";
pub const STATE: &str = "state";
pub const CLAIM_TOKEN: &str = "claimToken";
pub const LEASE_EXPIRES_AT: &str = "leaseExpiresAt";
pub const RECEIPT: &str = "receipt";
pub const UPDATED_AT: &str = "updatedAt";
/// The TTL attribute.
pub const EXPIRES_AT: &str = "expiresAt";

const CLAIMED: &str = "claimed";
const DONE: &str = "done";

#[derive(Debug, Clone)]
pub struct DynamoLedger {
    client: Client,
    table: String,
}

pub(crate) fn dynamo_error<E>(operation: &'static str, table: &str, err: SdkError<E>) -> LedgerError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let failure = aws_failure::classify(&err, &[]);
    LedgerError::Dynamo {
        operation,
        table: table.to_owned(),
        message: failure.summary,
        retryable: failure.retryable,
    }
}

pub(crate) fn is_condition_failure<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    matches!(err, SdkError::ServiceError(e) if e.err().code() == Some("ConditionalCheckFailedException"))
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

impl DynamoLedger {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// The record for `key`, read consistently (a claim just written is seen).
    pub async fn record(
        &self,
        key: &EffectKey,
    ) -> Result<Option<HashMap<String, AttributeValue>>, LedgerError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(EFFECT_KEY, s(key.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| dynamo_error("GetItem", &self.table, e))?;
        Ok(output.item)
    }
}

pub(crate) fn text<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str)
}

pub(crate) fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Option<i64> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok())
}

#[async_trait]
impl IdempotencyLedger for DynamoLedger {
    async fn claim(&self, key: &EffectKey, now: i64, lease: Duration) -> Result<Claim, LedgerError> {
        // A claim can be released between our failed write and our read; then the
        // record is gone and claiming again is right. Three rounds are plenty.
        for _ in 0..3 {
            let token = ClaimToken::generate();
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .item(EFFECT_KEY, s(key.to_string()))
                .item(EFFECT, s(key.effect.as_str()))
                .item(EVENT_ID, s(key.event_id.as_str()))
                .item(STATE, s(CLAIMED))
                .item(CLAIM_TOKEN, s(token.as_str()))
                .item(LEASE_EXPIRES_AT, n(now + lease_secs(lease)))
                .item(UPDATED_AT, n(now))
                .item(EXPIRES_AT, n(now + retention_secs()))
                .condition_expression("attribute_not_exists(#key) OR (#state = :claimed AND #lease <= :now)")
                .expression_attribute_names("#key", EFFECT_KEY)
                .expression_attribute_names("#state", STATE)
                .expression_attribute_names("#lease", LEASE_EXPIRES_AT)
                .expression_attribute_values(":claimed", s(CLAIMED))
                .expression_attribute_values(":now", n(now))
                .send()
                .await;
            match result {
                Ok(_) => return Ok(Claim::Acquired(token)),
                Err(e) if is_condition_failure(&e) => {}
                Err(e) => return Err(dynamo_error("PutItem", &self.table, e)),
            }
            let Some(item) = self.record(key).await? else { continue };
            return match text(&item, STATE) {
                Some(DONE) => {
                    Ok(Claim::Done { receipt: text(&item, RECEIPT).unwrap_or_default().to_owned() })
                }
                Some(CLAIMED) => Ok(Claim::HeldElsewhere {
                    lease_expires_at: number(&item, LEASE_EXPIRES_AT).unwrap_or(now + lease_secs(lease)),
                }),
                other => Err(LedgerError::Corrupt {
                    key: key.to_string(),
                    reason: format!("state is {other:?}, expected claimed or done"),
                }),
            };
        }
        Err(LedgerError::Dynamo {
            operation: "PutItem",
            table: self.table.clone(),
            message: format!("{key} was claimed and released three times while we tried to claim it"),
            retryable: true,
        })
    }

    async fn complete(
        &self,
        key: &EffectKey,
        token: &ClaimToken,
        receipt: &str,
        now: i64,
    ) -> Result<Completion, LedgerError> {
        // Done wins over any claim, ours or a successor's: our effect happened, so
        // nobody must perform it again. Only an existing "done" is left alone.
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(EFFECT_KEY, s(key.to_string()))
            .update_expression(
                "SET #state = :done, #receipt = :receipt, #effect = :effect, #event = :event, \
                 #updated = :now, #expires = :expires REMOVE #token, #lease",
            )
            .condition_expression("attribute_not_exists(#key) OR #state = :claimed")
            .expression_attribute_names("#key", EFFECT_KEY)
            .expression_attribute_names("#state", STATE)
            .expression_attribute_names("#receipt", RECEIPT)
            .expression_attribute_names("#effect", EFFECT)
            .expression_attribute_names("#event", EVENT_ID)
            .expression_attribute_names("#updated", UPDATED_AT)
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_names("#token", CLAIM_TOKEN)
            .expression_attribute_names("#lease", LEASE_EXPIRES_AT)
            .expression_attribute_values(":done", s(DONE))
            .expression_attribute_values(":claimed", s(CLAIMED))
            .expression_attribute_values(":receipt", s(receipt))
            .expression_attribute_values(":effect", s(key.effect.as_str()))
            .expression_attribute_values(":event", s(key.event_id.as_str()))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":expires", n(now + retention_secs()))
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => {
                let previous_token = output.attributes.as_ref().and_then(|old| text(old, CLAIM_TOKEN));
                Ok(if previous_token == Some(token.as_str()) {
                    Completion::Recorded
                } else {
                    Completion::RecordedAfterTakeover
                })
            }
            Err(e) if is_condition_failure(&e) => Ok(Completion::AlreadyDone),
            Err(e) => Err(dynamo_error("UpdateItem", &self.table, e)),
        }
    }

    async fn release(&self, key: &EffectKey, token: &ClaimToken) -> Result<(), LedgerError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(EFFECT_KEY, s(key.to_string()))
            .condition_expression("#state = :claimed AND #token = :token")
            .expression_attribute_names("#state", STATE)
            .expression_attribute_names("#token", CLAIM_TOKEN)
            .expression_attribute_values(":claimed", s(CLAIMED))
            .expression_attribute_values(":token", s(token.as_str()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Not ours any more (taken over, or done): leave it.
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(dynamo_error("DeleteItem", &self.table, e)),
        }
    }
}

//! Suppression records in the idempotency table (`IDEMPOTENCY_TABLE`): partition key
//! `effectKey` = `suppression#<address key>`, attributes `effect` (`suppression`),
//! `reason` (S: `bounce` | `complaint`, once suppressed), `detail` (S), `suppressedAt`
//! (N), `transientBounces` (N) and `updatedAt` (N). A suppressed record has no
//! `expiresAt`, so TTL never lifts it; a record of transient bounces only expires with
//! the ledger's retention.

use async_trait::async_trait;

use super::{AddressKey, Suppression, SuppressionList, SuppressionReason};
use crate::ledger::dynamodb::{
    DynamoLedger, EFFECT, EFFECT_KEY, EXPIRES_AT, UPDATED_AT, dynamo_error, is_condition_failure, n, number,
    s, text,
};
use crate::ledger::{LedgerError, retention_secs};

const REASON: &str = "reason";
const DETAIL: &str = "detail";
const SUPPRESSED_AT: &str = "suppressedAt";
const TRANSIENT_BOUNCES: &str = "transientBounces";
const SUPPRESSION: &str = "suppression";

fn record_key(key: &AddressKey) -> String {
    format!("{SUPPRESSION}#{}", key.as_str())
}

#[async_trait]
impl SuppressionList for DynamoLedger {
    async fn lookup(&self, key: &AddressKey) -> Result<Option<Suppression>, LedgerError> {
        let output = self
            .client()
            .get_item()
            .table_name(self.table())
            .key(EFFECT_KEY, s(record_key(key)))
            // A suppression written a moment ago must stop the next send.
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| dynamo_error("GetItem", self.table(), e))?;
        let Some(item) = output.item else { return Ok(None) };
        let Some(raw_reason) = text(&item, REASON) else { return Ok(None) };
        let reason = SuppressionReason::parse(raw_reason).ok_or_else(|| LedgerError::Corrupt {
            key: record_key(key),
            reason: format!("reason is {raw_reason:?}, expected bounce or complaint"),
        })?;
        Ok(Some(Suppression {
            reason,
            detail: text(&item, DETAIL).unwrap_or_default().to_owned(),
            since: number(&item, SUPPRESSED_AT).unwrap_or_default(),
        }))
    }

    async fn suppress(&self, key: &AddressKey, suppression: &Suppression) -> Result<bool, LedgerError> {
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .key(EFFECT_KEY, s(record_key(key)))
            .update_expression(
                "SET #effect = :effect, #reason = :reason, #detail = :detail, #since = :since, \
                 #updated = :since REMOVE #expires",
            )
            .condition_expression("attribute_not_exists(#reason)")
            .expression_attribute_names("#effect", EFFECT)
            .expression_attribute_names("#reason", REASON)
            .expression_attribute_names("#detail", DETAIL)
            .expression_attribute_names("#since", SUPPRESSED_AT)
            .expression_attribute_names("#updated", UPDATED_AT)
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_values(":effect", s(SUPPRESSION))
            .expression_attribute_values(":reason", s(suppression.reason.as_str()))
            .expression_attribute_values(":detail", s(&suppression.detail))
            .expression_attribute_values(":since", n(suppression.since))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(dynamo_error("UpdateItem", self.table(), e)),
        }
    }

    async fn count_transient_bounce(&self, key: &AddressKey, now: i64) -> Result<u64, LedgerError> {
        // Expire the count with the ledger, unless the address is suppressed (kept for good).
        let update = |expires: bool| {
            let builder = self
                .client()
                .update_item()
                .table_name(self.table())
                .key(EFFECT_KEY, s(record_key(key)))
                .expression_attribute_names("#effect", EFFECT)
                .expression_attribute_names("#count", TRANSIENT_BOUNCES)
                .expression_attribute_names("#updated", UPDATED_AT)
                .expression_attribute_values(":effect", s(SUPPRESSION))
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":now", n(now))
                .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew);
            if expires {
                builder
                    .update_expression(
                        "SET #effect = :effect, #updated = :now, #expires = :expires ADD #count :one",
                    )
                    .condition_expression("attribute_not_exists(#reason)")
                    .expression_attribute_names("#expires", EXPIRES_AT)
                    .expression_attribute_names("#reason", REASON)
                    .expression_attribute_values(":expires", n(now + retention_secs()))
            } else {
                builder.update_expression("SET #effect = :effect, #updated = :now ADD #count :one")
            }
        };
        let output = match update(true).send().await {
            Ok(output) => output,
            Err(e) if is_condition_failure(&e) => {
                update(false).send().await.map_err(|e| dynamo_error("UpdateItem", self.table(), e))?
            }
            Err(e) => return Err(dynamo_error("UpdateItem", self.table(), e)),
        };
        Ok(output.attributes.as_ref().and_then(|a| number(a, TRANSIENT_BOUNCES)).unwrap_or(1).max(0) as u64)
    }
}

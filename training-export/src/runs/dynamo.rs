//! Runs in DynamoDB (the `aws` feature).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem};

use super::{RunStore, RunStoreError, body, parse};
use crate::run::Run;

/// Runs in DynamoDB. Table: partition key `pk` (S), sort key `sk` (S). A run is
/// `pk = "run", sk = <run id>` with `version` (N), `status` (S) and `body` (the run
/// as JSON); run ids sort by time, so the latest runs are one Query. The guard is
/// `pk = "guard", sk = "active"` with `runId`: created with the run in one
/// transaction, deleted with its terminal save in another.
///
/// Operations: `TransactWriteItems`, `PutItem`, `GetItem`, `Query`.
#[derive(Debug, Clone)]
pub struct DynamoRunStore {
    client: Client,
    table: String,
}

const PK: &str = "pk";
const SK: &str = "sk";
const RUN_PK: &str = "run";
const GUARD_PK: &str = "guard";
const GUARD_SK: &str = "active";

fn dynamo_error<E>(operation: &str, table: &str, err: SdkError<E>) -> RunStoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let failure = aws_failure::classify(&err, &[]);
    RunStoreError::Backend {
        message: format!("DynamoDB {operation} on {table}: {}", failure.summary),
        retryable: failure.retryable,
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

impl DynamoRunStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    fn run_item(run: &Run) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (PK.to_owned(), s(RUN_PK)),
            (SK.to_owned(), s(&run.run_id)),
            ("version".to_owned(), AttributeValue::N(run.version.to_string())),
            ("status".to_owned(), s(run.state.name())),
            ("body".to_owned(), s(body(run))),
        ])
    }

    fn key(pk: &str, sk: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([(PK.to_owned(), s(pk)), (SK.to_owned(), s(sk))])
    }

    fn from_item(item: &HashMap<String, AttributeValue>) -> Result<Run, RunStoreError> {
        let id = item.get(SK).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
        let body = item
            .get("body")
            .and_then(|v| v.as_s().ok())
            .ok_or_else(|| RunStoreError::Corrupt { run_id: id.clone(), message: "no body".into() })?;
        parse(&id, body)
    }

    async fn guard_holder(&self) -> Result<Option<String>, RunStoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(GUARD_PK, GUARD_SK)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| dynamo_error("GetItem", &self.table, e))?;
        Ok(out.item().and_then(|i| i.get("runId")).and_then(|v| v.as_s().ok()).cloned())
    }
}

#[async_trait]
impl RunStore for DynamoRunStore {
    async fn create(&self, run: &Run) -> Result<(), RunStoreError> {
        let guard = Put::builder()
            .table_name(&self.table)
            .set_item(Some(HashMap::from([
                (PK.to_owned(), s(GUARD_PK)),
                (SK.to_owned(), s(GUARD_SK)),
                ("runId".to_owned(), s(&run.run_id)),
            ])))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .expect("table, item set");
        let item = Put::builder()
            .table_name(&self.table)
            .set_item(Some(Self::run_item(run)))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .expect("table, item set");
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(guard).build())
            .transact_items(TransactWriteItem::builder().put(item).build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) if e.err().is_transaction_canceled_exception() => {
                match self.guard_holder().await? {
                    Some(active_run_id) => Err(RunStoreError::Busy { active_run_id }),
                    // The guard went away between the two calls: the caller may try again.
                    None => Err(RunStoreError::Conflict { run_id: run.run_id.clone() }),
                }
            }
            Err(e) => Err(dynamo_error("TransactWriteItems", &self.table, e)),
        }
    }

    async fn save(&self, run: &mut Run) -> Result<(), RunStoreError> {
        let mut next = run.clone();
        next.version += 1;
        let expected = AttributeValue::N(run.version.to_string());
        let conflict = || RunStoreError::Conflict { run_id: run.run_id.clone() };
        if next.is_active() {
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(Self::run_item(&next)))
                .condition_expression("version = :v")
                .expression_attribute_values(":v", expected)
                .send()
                .await;
            match result {
                Ok(_) => {}
                Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                    return Err(conflict());
                }
                Err(e) => return Err(dynamo_error("PutItem", &self.table, e)),
            }
        } else {
            let item = Put::builder()
                .table_name(&self.table)
                .set_item(Some(Self::run_item(&next)))
                .condition_expression("version = :v")
                .expression_attribute_values(":v", expected)
                .build()
                .expect("table, item set");
            // Release the guard only if it is ours (or already gone).
            let release = Delete::builder()
                .table_name(&self.table)
                .set_key(Some(Self::key(GUARD_PK, GUARD_SK)))
                .condition_expression("attribute_not_exists(pk) OR runId = :id")
                .expression_attribute_values(":id", s(&run.run_id))
                .build()
                .expect("table, key set");
            let result = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(item).build())
                .transact_items(TransactWriteItem::builder().delete(release).build())
                .send()
                .await;
            match result {
                Ok(_) => {}
                Err(SdkError::ServiceError(e)) if e.err().is_transaction_canceled_exception() => {
                    return Err(conflict());
                }
                Err(e) => return Err(dynamo_error("TransactWriteItems", &self.table, e)),
            }
        }
        *run = next;
        Ok(())
    }

    async fn get(&self, run_id: &str) -> Result<Option<Run>, RunStoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(RUN_PK, run_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| dynamo_error("GetItem", &self.table, e))?;
        out.item().map(Self::from_item).transpose()
    }

    async fn active(&self) -> Result<Option<Run>, RunStoreError> {
        match self.guard_holder().await? {
            Some(id) => self.get(&id).await,
            None => Ok(None),
        }
    }

    async fn recent(&self, limit: usize) -> Result<Vec<Run>, RunStoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(RUN_PK))
            .scan_index_forward(false)
            .limit(limit.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(|e| dynamo_error("Query", &self.table, e))?;
        out.items().iter().map(Self::from_item).collect()
    }
}

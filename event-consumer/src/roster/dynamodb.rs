//! The roster in DynamoDB (`STUDENTS_TABLE`): partition key `classId` (S), sort key
//! `studentId` (S), attributes `email` (S), `studentName` (S, optional) and
//! `enrolledAt` (N, the enrollment event's time). Its own table, not the interactions
//! table: that one is exported for training, and addresses must never be.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use schemas::{ItemId, UserId};

use super::embedded::decode;
use super::{Roster, RosterPage, Student};
use crate::ledger::LedgerError;
use crate::ledger::dynamodb::{dynamo_error, is_condition_failure, n, s, text};

const CLASS_ID: &str = "classId";
const STUDENT_ID: &str = "studentId";
const EMAIL: &str = "email";
const STUDENT_NAME: &str = "studentName";
const ENROLLED_AT: &str = "enrolledAt";

#[derive(Debug, Clone)]
pub struct DynamoRoster {
    client: Client,
    table: String,
}

impl DynamoRoster {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    pub fn table(&self) -> &str {
        &self.table
    }
}

#[async_trait]
impl Roster for DynamoRoster {
    async fn enroll(
        &self,
        class_id: &ItemId,
        student: &Student,
        enrolled_at: i64,
    ) -> Result<(), LedgerError> {
        let mut item = HashMap::from([
            (CLASS_ID.to_owned(), s(class_id.as_str())),
            (STUDENT_ID.to_owned(), s(student.student_id.as_str())),
            (EMAIL.to_owned(), s(student.email.as_str())),
            (ENROLLED_AT.to_owned(), n(enrolled_at)),
        ]);
        if let Some(name) = &student.name {
            item.insert(STUDENT_NAME.to_owned(), s(name.as_str()));
        }
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            // A reordered, older enrollment must not bring back an old address.
            .condition_expression("attribute_not_exists(#class) OR #at <= :at")
            .expression_attribute_names("#class", CLASS_ID)
            .expression_attribute_names("#at", ENROLLED_AT)
            .expression_attribute_values(":at", n(enrolled_at))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(dynamo_error("PutItem", &self.table, e)),
        }
    }

    async fn page(
        &self,
        class_id: &ItemId,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<RosterPage, LedgerError> {
        // DynamoDB refuses names and values an expression does not use, so the
        // "after" part brings its own.
        let mut names = HashMap::from([("#class".to_owned(), CLASS_ID.to_owned())]);
        let mut values = HashMap::from([(":class".to_owned(), s(class_id.as_str()))]);
        let condition = match after {
            Some(after) => {
                names.insert("#student".to_owned(), STUDENT_ID.to_owned());
                values.insert(":after".to_owned(), s(after.as_str()));
                "#class = :class AND #student > :after"
            }
            None => "#class = :class",
        };
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| dynamo_error("Query", &self.table, e))?;
        let students = output
            .items()
            .iter()
            .map(|item| {
                let field = |name| text(item, name).map(str::to_owned);
                let missing = |name: &str| LedgerError::Corrupt {
                    key: format!("roster#{}", class_id.as_str()),
                    reason: format!("an entry has no {name}"),
                };
                decode(
                    class_id,
                    field(STUDENT_ID).ok_or_else(|| missing(STUDENT_ID))?,
                    field(EMAIL).ok_or_else(|| missing(EMAIL))?,
                    field(STUDENT_NAME),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        // DynamoDB may stop before `limit` (1 MB per page) and then says where it stopped.
        let more = output.last_evaluated_key().is_some() || students.len() == limit;
        let next_after = if more { students.last().map(|s| s.student_id.clone()) } else { None };
        Ok(RosterPage { students, next_after })
    }
}

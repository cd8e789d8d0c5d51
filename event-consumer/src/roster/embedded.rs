//! The roster in the embedded ledger's SQLite file (table `roster`).

use async_trait::async_trait;
use rusqlite::params;
use schemas::events::DisplayName;
use schemas::{EmailAddress, ItemId, UserId};

use super::{Roster, RosterPage, Student};
use crate::ledger::LedgerError;
use crate::ledger::embedded::EmbeddedLedger;

#[async_trait]
impl Roster for EmbeddedLedger {
    async fn enroll(
        &self,
        class_id: &ItemId,
        student: &Student,
        enrolled_at: i64,
    ) -> Result<(), LedgerError> {
        let (class_id, student) = (class_id.clone(), student.clone());
        self.run(move |ledger| {
            ledger.with_conn(|c| {
                c.execute(
                    "INSERT INTO roster (class_id, student_id, email, student_name, enrolled_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (class_id, student_id) DO UPDATE SET
                        email = excluded.email, student_name = excluded.student_name,
                        enrolled_at = excluded.enrolled_at
                     WHERE excluded.enrolled_at >= roster.enrolled_at",
                    params![
                        class_id.as_str(),
                        student.student_id.as_str(),
                        student.email.as_str(),
                        student.name.as_ref().map(|n| n.as_str()),
                        enrolled_at
                    ],
                )
                .map(drop)
            })
        })
        .await
    }

    async fn page(
        &self,
        class_id: &ItemId,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<RosterPage, LedgerError> {
        let (class_id, after) = (class_id.clone(), after.cloned());
        self.run(move |ledger| {
            let rows: Vec<(String, String, Option<String>)> = ledger.with_conn(|c| {
                let mut statement = c.prepare_cached(
                    "SELECT student_id, email, student_name FROM roster
                     WHERE class_id = ?1 AND student_id > ?2 ORDER BY student_id LIMIT ?3",
                )?;
                let after = after.as_ref().map_or("", |a| a.as_str());
                let limit = i64::try_from(limit).unwrap_or(i64::MAX);
                statement
                    .query_map(params![class_id.as_str(), after, limit], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })?
                    .collect()
            })?;
            let full = rows.len() == limit;
            let students = rows
                .into_iter()
                .map(|(id, email, name)| decode(&class_id, id, email, name))
                .collect::<Result<Vec<_>, _>>()?;
            let next_after = if full { students.last().map(|s| s.student_id.clone()) } else { None };
            Ok(RosterPage { students, next_after })
        })
        .await
    }
}

/// A stored row back into a student; a row that no longer parses is corruption, named.
pub(crate) fn decode(
    class_id: &ItemId,
    id: String,
    email: String,
    name: Option<String>,
) -> Result<Student, LedgerError> {
    let corrupt =
        |reason: String| LedgerError::Corrupt { key: format!("roster#{}", class_id.as_str()), reason };
    Ok(Student {
        student_id: UserId::parse(id).map_err(|e| corrupt(format!("studentId: {e}")))?,
        email: EmailAddress::parse(email).map_err(|e| corrupt(e.to_string()))?,
        name: name
            .map(|n| DisplayName::parse("studentName", n))
            .transpose()
            .map_err(|e| corrupt(e.to_string()))?,
    })
}

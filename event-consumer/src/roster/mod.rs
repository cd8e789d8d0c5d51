//! Who is enrolled in which class, for announcements: the students table.
//!
//! Fed by `student.enrolled` (one entry per class and student, the latest enrollment's
//! address and name winning), read by `teacher.sendAnnouncement` a page at a time in
//! student-id order. Addresses and names live only here and in the emails: never in the
//! interactions table, the exports, the models or the logs (`Student`'s `Debug` hides
//! them).

pub mod dynamodb;
pub mod embedded;

use async_trait::async_trait;
use schemas::events::{DisplayName, StudentEnrolled};
use schemas::{EmailAddress, ItemId, UserId};

use crate::ledger::LedgerError;

/// One student on a class's roster.
#[derive(Clone, PartialEq, Eq)]
pub struct Student {
    pub student_id: UserId,
    pub email: EmailAddress,
    pub name: Option<DisplayName>,
}

impl Student {
    pub fn of(enrolled: &StudentEnrolled) -> Self {
        Self {
            student_id: enrolled.student_id.clone(),
            email: enrolled.email.clone(),
            name: enrolled.student_name.clone(),
        }
    }
}

impl std::fmt::Debug for Student {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Student").field("student_id", &self.student_id.as_str()).finish_non_exhaustive()
    }
}

/// Part of a roster, and where the next part starts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RosterPage {
    pub students: Vec<Student>,
    /// The last student id of this page when there may be more.
    pub next_after: Option<UserId>,
}

/// Students per roster page read by an announcement.
pub const PAGE_SIZE: usize = 100;

#[async_trait]
pub trait Roster: Send + Sync {
    /// Puts the student on the class's roster, or refreshes the entry; an enrollment
    /// older (by event time) than the one stored changes nothing, so reordered
    /// deliveries keep the newest address.
    async fn enroll(&self, class_id: &ItemId, student: &Student, enrolled_at: i64)
    -> Result<(), LedgerError>;

    /// Up to `limit` students of the class with ids after `after`, in id order.
    async fn page(
        &self,
        class_id: &ItemId,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<RosterPage, LedgerError>;
}

//! `teacher.sendAnnouncement` with a `classId`: one email per student on the class's
//! roster (fed by `student.enrolled`), once each however the event is delivered,
//! suppressed addresses skipped, within a time budget per delivery.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use event_consumer::consumer::Consumer;
use event_consumer::ledger::embedded::EmbeddedLedger;
use event_consumer::mail::outbox::OutboxMailer;
use event_consumer::{ConsumerError, EffectOutcome};
use store::embedded::EmbeddedStore;

const CLASS: &str = "math-101";
const ANNOUNCEMENT_ID: &str = "3b8d2f6e-1a9c-4e7b-8d5f-0c6a2e9b1f47";

fn student_address(n: usize) -> String {
    format!("student{n:03}@example.edu.vn")
}

/// Enrolls `students` students in CLASS through the consumer, as the app would.
async fn enroll_class(consumer: &Consumer, students: usize) {
    let events: Vec<Vec<u8>> = (0..students)
        .map(|n| {
            enrollment(
                &format!("00000000-0000-4000-8000-{n:012}"),
                &format!("s{n:03}"),
                CLASS,
                &student_address(n),
            )
        })
        .collect();
    deliver_until_done(consumer, events, 8, 1, false).await;
}

#[tokio::test]
async fn a_500_student_class_gets_500_emails_once_each_across_duplicated_concurrent_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let world = embedded(dir.path());
    let consumer = world.consumer.clone().with_announcement_pacing(0.0, Duration::from_secs(60));
    enroll_class(&consumer, 500).await;
    let confirmations = world.mailer.total_sends();
    assert_eq!(confirmations, 500);

    let raw = announcement(ANNOUNCEMENT_ID, CLASS, "Lớp nghỉ vào thứ Sáu.", None);
    let report = deliver_until_done(&consumer, duplicated_and_shuffled(&[raw], 4, 7), 4, 7, false).await;

    assert_eq!(world.mailer.total_sends() - confirmations, 500, "one copy per student");
    assert_eq!(world.mailer.max_sends_per_event(), 1, "no student got two");
    // Deliveries overlapping on a copy fail retryably (another holds it) and are redelivered.
    assert_eq!(report.outcomes.len(), 4, "every delivery ends handled");
    for outcome in &report.outcomes {
        let a = outcome.announcement.as_ref().unwrap();
        assert_eq!((a.students, a.sent + a.already_done), (500, 500), "{a:?}");
    }
    let copies = std::fs::read_dir(dir.path().join("outbox"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("{ANNOUNCEMENT_ID}.")))
        .count();
    assert_eq!(copies, 500, "one .eml per student in the outbox");

    // A later, separate redelivery (Lambda's retry, a DLQ redrive) sends nothing.
    let again = consumer
        .handle_json(&announcement(ANNOUNCEMENT_ID, CLASS, "Lớp nghỉ vào thứ Sáu.", None))
        .await
        .unwrap();
    assert_eq!(again.announcement.as_ref().map(|a| (a.sent, a.already_done)), Some((0, 500)));
    assert!(again.wrote_nothing());
}

#[tokio::test]
async fn a_spent_budget_stops_the_delivery_and_the_redelivery_goes_on_from_there() {
    let dir = tempfile::tempdir().unwrap();
    let world = embedded(dir.path());
    enroll_class(&world.consumer, 60).await;
    let before = world.mailer.total_sends();
    // 40 a second for one second: about 40 of the 60 copies fit in the first delivery.
    let consumer = world.consumer.clone().with_announcement_pacing(40.0, Duration::from_secs(1));
    let raw = announcement(ANNOUNCEMENT_ID, CLASS, "Kiểm tra 15 phút.", None);

    let err = consumer.handle_json(&raw).await.unwrap_err();
    let ConsumerError::AnnouncementIncomplete { sent, unfinished, retryable, .. } = &err else {
        panic!("{err}")
    };
    assert!(*retryable, "{err}");
    assert!(*sent > 0 && sent + unfinished == 60, "{err}");
    assert!(err.to_string().contains("budget"), "{err}");

    let first = *sent;
    let outcome = consumer.handle_json(&raw).await.unwrap();
    let a = outcome.announcement.unwrap();
    assert_eq!((a.sent, a.already_done), (60 - first, first), "the redelivery sends only the rest: {a:?}");
    assert_eq!(world.mailer.total_sends() - before, 60);
    assert_eq!(world.mailer.max_sends_per_event(), 1);
}

#[tokio::test]
async fn suppressed_students_are_skipped_and_said_so() {
    let dir = tempfile::tempdir().unwrap();
    let world = embedded(dir.path());
    let consumer = world.consumer.clone().with_announcement_pacing(0.0, Duration::from_secs(60));
    enroll_class(&consumer, 5).await;
    // student001 bounced for good, student003 complained.
    for (n, kind) in [(1, "permanent"), (3, "complaint")] {
        let raw = ses_event(&format!("ses-{n}"), kind, &format!("feedback-{n}"), &student_address(n));
        consumer.handle_json(&raw).await.unwrap();
    }
    let before = world.mailer.total_sends();
    let outcome = consumer
        .handle_json(&announcement(ANNOUNCEMENT_ID, CLASS, "Nộp bài trước 17h.", None))
        .await
        .unwrap();
    let a = outcome.announcement.clone().unwrap();
    assert_eq!((a.students, a.sent, a.suppressed, a.already_done), (5, 3, 2, 0), "{a:?}");
    assert_eq!(world.mailer.total_sends() - before, 3);
    let line = outcome.report_lines().join("\n");
    assert!(line.contains("5 student(s), 3 sent, 2 suppressed"), "{line}");
    // Recorded as suppressed, not retried: a redelivery finds all five done.
    let again = consumer
        .handle_json(&announcement(ANNOUNCEMENT_ID, CLASS, "Nộp bài trước 17h.", None))
        .await
        .unwrap();
    assert_eq!(again.announcement.map(|a| a.already_done), Some(5));
}

#[tokio::test]
async fn the_class_language_escaping_and_the_newest_address_reach_the_email() {
    let dir = tempfile::tempdir().unwrap();
    let world = embedded(dir.path());
    // An enrollment, then a newer one with a new address, delivered newest first.
    let mut older: serde_json::Value = serde_json::from_slice(&enrollment(
        "00000000-0000-4000-8000-000000000001",
        "s1",
        CLASS,
        "old@example.edu.vn",
    ))
    .unwrap();
    let mut newer = older.clone();
    newer["id"] = "00000000-0000-4000-8000-000000000002".into();
    newer["time"] = "2026-11-25T10:00:00Z".into();
    newer["detail"]["email"] = "new@example.edu.vn".into();
    older["detail"]["studentName"] = "<b>An</b>".into();
    newer["detail"]["studentName"] = "<b>An</b>".into();
    for event in [&newer, &older] {
        world.consumer.handle_json(&serde_json::to_vec(event).unwrap()).await.unwrap();
    }
    let content = "Quiz on <Friday> & bring \"calculators\".\nRoom A1";
    let outcome =
        world.consumer.handle_json(&announcement(ANNOUNCEMENT_ID, CLASS, content, Some("en"))).await.unwrap();
    assert_eq!(outcome.announcement.map(|a| a.sent), Some(1));
    let sent = world.mailer.sent.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        sent.to.as_str(),
        "new@example.edu.vn",
        "the newest enrollment's address, though delivered first"
    );
    assert_eq!(sent.content.subject, "Announcement: math-101");
    let html = &sent.content.html;
    assert!(
        html.contains("Quiz on &#60;Friday&#62; &#38;") || html.contains("Quiz on &lt;Friday&gt; &amp;"),
        "{html}"
    );
    assert!(sent.content.text.contains(content), "verbatim in the text part: {}", sent.content.text);
    assert!(sent.content.text.starts_with("Hello <b>An</b>,"), "{}", sent.content.text);
    assert!(!html.contains("<b>An</b>"), "the name is escaped in HTML: {html}");
}

#[tokio::test]
async fn an_empty_class_sends_nothing_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_in(dir.path()).unwrap();
    let ledger = EmbeddedLedger::open_in(dir.path()).unwrap();
    let mailer = Arc::new(CountingMailer::new(OutboxMailer::in_data_dir(dir.path())));
    let consumer = Consumer::new(
        Arc::new(store),
        mailer.clone(),
        Arc::new(ledger),
        Arc::new(RecordingRetrain::default()),
        sender(),
    );
    let outcome =
        consumer.handle_json(&announcement(ANNOUNCEMENT_ID, "nobody-101", "Hi", None)).await.unwrap();
    assert_eq!(outcome.announcement.as_ref().map(|a| (a.students, a.sent)), Some((0, 0)));
    assert_eq!(mailer.total_sends(), 0);
    assert!(outcome.report_lines().join("\n").contains("0 student(s)"));
    assert!(!matches!(outcome.email, Some(EffectOutcome::Performed { .. })));
}

//! The consumer on its embedded adapters (SQLite store and ledger, outbox): what
//! each event does, what a redelivery does, what bad input does, and what a
//! retry after a partial failure completes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use event_consumer::consumer::Consumer;
use event_consumer::ledger::embedded::EmbeddedLedger;
use event_consumer::ledger::{Effect, EffectKey};
use event_consumer::mail::outbox::OutboxMailer;
use event_consumer::{ConsumerError, EffectOutcome, InteractionOutcome};
use schemas::{EventError, EventId};
use store::embedded::EmbeddedStore;

fn outbox_files(data_dir: &std::path::Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("outbox")) else { return Vec::new() };
    let mut names: Vec<String> =
        entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn an_enrollment_stores_one_interaction_and_writes_one_email() {
    let dir = tempfile::tempdir().unwrap();
    let world = embedded(dir.path());
    let outcome = world.consumer.handle_json(&fixture("student_enrolled.json")).await.unwrap();
    assert_eq!(outcome.interaction, InteractionOutcome::Stored);
    assert_eq!(outcome.interaction_summary.as_deref(), Some("student 1024 → class math-101 (enrolled)"));
    let Some(EffectOutcome::Performed { outbox_file: Some(path), .. }) = &outcome.email else {
        panic!("expected a written email, got {:?}", outcome.email)
    };
    assert_eq!(path, &dir.path().join("outbox/0d079340-135a-c8c6-95c2-41fb8f496c53.eml"));
    let eml = std::fs::read_to_string(path).unwrap();
    assert!(eml.contains("To: <an.nguyen@example.edu.vn>"), "{eml}");

    let stored = world.store.scan_segment_all().await;
    assert_eq!(stored.len(), 1);
    let i = &stored[0];
    assert_eq!(
        (i.user_id.as_str(), i.item_id.as_str(), i.event_type.as_str(), i.timestamp.epoch_seconds()),
        ("1024", "math-101", "enrolled", 1_795_168_800)
    );
    assert_eq!(i.event_id.as_str(), "0d079340-135a-c8c6-95c2-41fb8f496c53");

    // The same delivery again: nothing new anywhere, and the outcome says so.
    let again = world.consumer.handle_json(&fixture("student_enrolled.json")).await.unwrap();
    assert_eq!(again.interaction, InteractionOutcome::Duplicate);
    assert!(matches!(again.email, Some(EffectOutcome::AlreadyDone { .. })), "{:?}", again.email);
    assert!(again.wrote_nothing());
    assert!(again.report_lines()[0].starts_with("duplicate: nothing written"), "{:?}", again.report_lines());
    assert_eq!(world.store.count_blocking().unwrap(), 1);
    assert_eq!(outbox_files(dir.path()), vec!["0d079340-135a-c8c6-95c2-41fb8f496c53.eml"]);
    assert_eq!(world.mailer.total_sends(), 1);
}

#[tokio::test]
async fn each_student_event_kind_does_what_it_should() {
    let dir = tempfile::tempdir().unwrap();
    let world = embedded(dir.path());

    let submitted = world.consumer.handle_json(&fixture("student_submit_assignment.json")).await.unwrap();
    assert_eq!(submitted.interaction, InteractionOutcome::Stored);
    assert_eq!(submitted.email, None);
    let stored = world.store.scan_segment_all().await;
    assert_eq!(stored[0].event_type.as_str(), "submitAssignment");
    assert_eq!(stored[0].timestamp.epoch_seconds(), 1_795_249_800);

    // No class named: acknowledged, nothing written.
    let no_class =
        world.consumer.handle_json(&fixture("student_submit_assignment_no_class.json")).await.unwrap();
    assert_eq!(no_class.interaction, InteractionOutcome::NotAnInteraction);

    let announcement = world.consumer.handle_json(&fixture("teacher_send_announcement.json")).await.unwrap();
    assert_eq!(announcement.interaction, InteractionOutcome::NotAnInteraction);
    assert_eq!((announcement.email.clone(), announcement.retrain.clone()), (None, None));

    assert_eq!(world.store.count_blocking().unwrap(), 1);
    assert!(outbox_files(dir.path()).is_empty());
    assert!(world.retrain.starts.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_retrain_request_starts_one_run_however_often_it_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let world = embedded(dir.path());
    let first = world.consumer.handle_json(&fixture("ranking_request_update.json")).await.unwrap();
    assert_eq!(first.interaction, InteractionOutcome::NotAnInteraction);
    assert!(matches!(first.retrain, Some(EffectOutcome::Performed { .. })), "{:?}", first.retrain);
    for _ in 0..3 {
        let again = world.consumer.handle_json(&fixture("ranking_request_update.json")).await.unwrap();
        assert!(matches!(again.retrain, Some(EffectOutcome::AlreadyDone { .. })), "{:?}", again.retrain);
    }
    let starts = world.retrain.starts.lock().unwrap();
    assert_eq!(starts.len(), 1);
    assert_eq!(starts[0].trigger, "manual");
    assert_eq!(starts[0].request_id.as_str(), "e2a7c4f1-8b3d-4a6e-9c1f-5d0b7e3a2c84");
}

#[tokio::test]
async fn an_internationalised_domain_is_mailed_in_its_idna_form() {
    let dir = tempfile::tempdir().unwrap();
    let world = embedded(dir.path());
    let outcome = world.consumer.handle_json(&fixture("student_enrolled_idn_domain.json")).await.unwrap();
    let Some(EffectOutcome::Performed { outbox_file: Some(path), .. }) = &outcome.email else {
        panic!("expected a written email, got {:?}", outcome.email)
    };
    let eml = std::fs::read_to_string(path).unwrap();
    assert!(eml.contains("To: <an.nguyen@xn--trng-rib8295b.edu.vn>"), "{eml}");
    assert!(!eml.contains("trường"), "the address is sent in ASCII only: {eml}");
}

#[tokio::test]
async fn bad_events_are_rejected_clearly_and_write_nothing() {
    let cases = [
        ("bad_malformed.json", "malformed event"),
        ("bad_unknown_detail_type.json", "unknown detail-type \"student.graduated\""),
        ("bad_wrong_source.json", "must come from source \"api.student\""),
        ("bad_invalid_email.json", "invalid email"),
        ("bad_email_non_ascii_mailbox.json", "outside ASCII, which SES cannot send to"),
        ("bad_student_name_bidi_override.json", "format character U+202E"),
        ("bad_missing_email.json", "missing field `email`"),
        ("bad_student_id_too_long.json", "257 characters"),
        ("bad_event_id_too_long.json", "eventId must be 1 to 256 characters"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let world = embedded(dir.path());
    for (name, expected) in cases {
        let err = world.consumer.handle_json(&fixture(name)).await.unwrap_err();
        assert!(matches!(err, ConsumerError::Rejected(_)), "{name}: {err:?}");
        assert!(!err.is_retryable(), "{name}");
        let message = err.to_string();
        assert!(message.contains(expected), "{name}: {message:?} should mention {expected:?}");
        assert!(!message.contains("an.nguyen"), "{name}: the reason must not quote the address: {message}");
        let diagnostic: lambda_runtime::Diagnostic = err.into();
        assert_eq!(diagnostic.error_type, "NonRetryable.RejectedEvent", "{name}");
    }
    // The Lambda path (a JSON value, not bytes) refuses the same way.
    let value: serde_json::Value = serde_json::from_slice(&fixture("bad_invalid_email.json")).unwrap();
    let err = world.consumer.handle_value(value).await.unwrap_err();
    assert!(
        matches!(&err, ConsumerError::Rejected(EventError::Malformed(m)) if m.contains("invalid email")),
        "{err}"
    );
    let not_an_envelope = serde_json::json!({"hello": "world"});
    let err = world.consumer.handle_value(not_an_envelope).await.unwrap_err();
    assert!(err.to_string().contains("malformed event: envelope"), "{err}");

    assert_eq!(world.store.count_blocking().unwrap(), 0);
    assert_eq!(world.ledger.done_count_blocking().unwrap(), 0);
    assert!(outbox_files(dir.path()).is_empty());
    assert_eq!(world.mailer.total_sends(), 0);
}

#[tokio::test]
async fn a_throttled_email_is_completed_by_the_retry_without_a_second_interaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_in(dir.path()).unwrap();
    let ledger = EmbeddedLedger::open_in(dir.path()).unwrap();
    let mailer = Arc::new(CountingMailer::failing_first(OutboxMailer::in_data_dir(dir.path()), 2));
    let consumer = Consumer::new(
        Arc::new(store.clone()),
        mailer.clone(),
        Arc::new(ledger.clone()),
        Arc::new(RecordingRetrain::default()),
        sender(),
    );
    let raw = fixture("student_enrolled.json");

    for attempt in 1..=2 {
        let err = consumer.handle_json(&raw).await.unwrap_err();
        assert!(matches!(err, ConsumerError::Mail(_)) && err.is_retryable(), "attempt {attempt}: {err}");
        // The interaction landed on the first attempt; the failed send left no claim behind.
        assert_eq!(store.count_blocking().unwrap(), 1);
        let key = EffectKey::new(
            Effect::ConfirmationEmail,
            EventId::parse("0d079340-135a-c8c6-95c2-41fb8f496c53").unwrap(),
        );
        assert_eq!(ledger.row_blocking(&key).unwrap(), None, "claim released at once");
    }
    let third = consumer.handle_json(&raw).await.unwrap();
    assert_eq!(third.interaction, InteractionOutcome::Duplicate, "the retry completes only what was missing");
    assert!(matches!(third.email, Some(EffectOutcome::Performed { .. })));
    assert_eq!(mailer.total_sends(), 1);
    assert_eq!(outbox_files(dir.path()).len(), 1);
}

#[tokio::test]
async fn a_failing_store_writes_nothing_and_the_retry_writes_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_in(dir.path()).unwrap();
    let mailer = Arc::new(CountingMailer::new(OutboxMailer::in_data_dir(dir.path())));
    let consumer = Consumer::new(
        Arc::new(FlakyStore::failing_first(store.clone(), 1)),
        mailer.clone(),
        Arc::new(EmbeddedLedger::open_in(dir.path()).unwrap()),
        Arc::new(RecordingRetrain::default()),
        sender(),
    );
    let raw = fixture("student_enrolled.json");
    let err = consumer.handle_json(&raw).await.unwrap_err();
    assert!(matches!(err, ConsumerError::Store(_)) && err.is_retryable(), "{err}");
    // Interaction first, email second: a store failure sends no email.
    assert_eq!((store.count_blocking().unwrap(), mailer.total_sends()), (0, 0));
    let outcome = consumer.handle_json(&raw).await.unwrap();
    assert_eq!(outcome.interaction, InteractionOutcome::Stored);
    assert_eq!((store.count_blocking().unwrap(), mailer.total_sends()), (1, 1));
    consumer.handle_json(&raw).await.unwrap();
    assert_eq!((store.count_blocking().unwrap(), mailer.total_sends()), (1, 1));
}

#[tokio::test]
async fn a_rejected_email_is_not_retryable_and_holds_no_claim() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = EmbeddedLedger::open_in(dir.path()).unwrap();
    let consumer = Consumer::new(
        Arc::new(EmbeddedStore::open_in(dir.path()).unwrap()),
        Arc::new(RejectingMailer),
        Arc::new(ledger.clone()),
        Arc::new(RecordingRetrain::default()),
        sender(),
    );
    let err = consumer.handle_json(&fixture("student_enrolled.json")).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    let diagnostic: lambda_runtime::Diagnostic = err.into();
    assert_eq!(diagnostic.error_type, "NonRetryable.MailFailure");
    assert_eq!(ledger.done_count_blocking().unwrap(), 0);
}

#[tokio::test]
async fn a_transient_ledger_failure_after_sending_is_absorbed_without_a_second_email() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = EmbeddedLedger::open_in(dir.path()).unwrap();
    let mailer = Arc::new(CountingMailer::new(OutboxMailer::in_data_dir(dir.path())));
    let consumer = Consumer::new(
        Arc::new(EmbeddedStore::open_in(dir.path()).unwrap()),
        mailer.clone(),
        // Two failures: inside the consumer's own four attempts at recording.
        Arc::new(FlakyLedger::failing_first_completions(ledger.clone(), 2)),
        Arc::new(RecordingRetrain::default()),
        sender(),
    );
    let raw = fixture("student_enrolled.json");
    consumer.handle_json(&raw).await.unwrap();
    let again = consumer.handle_json(&raw).await.unwrap();
    assert!(matches!(again.email, Some(EffectOutcome::AlreadyDone { .. })));
    assert_eq!(mailer.total_sends(), 1);
}

/// The documented window: the email went out, recording it failed for good (the
/// process "crashed"). Until the lease expires redeliveries are told to retry later
/// and send nothing; after it, the next delivery sends again (at most one repeat).
#[tokio::test]
async fn an_unrecorded_send_blocks_redeliveries_until_the_lease_expires() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = EmbeddedLedger::open_in(dir.path()).unwrap();
    let mailer = Arc::new(CountingMailer::new(OutboxMailer::new(dir.path().join("outbox"))));
    let now = Arc::new(std::sync::atomic::AtomicI64::new(1_795_168_800));
    let clock_now = now.clone();
    let clock: event_consumer::consumer::Clock =
        Arc::new(move || clock_now.load(std::sync::atomic::Ordering::SeqCst));
    let build = |failures| {
        Consumer::new(
            Arc::new(EmbeddedStore::open_in(dir.path()).unwrap()),
            mailer.clone(),
            Arc::new(FlakyLedger::failing_first_completions(ledger.clone(), failures)),
            Arc::new(RecordingRetrain::default()),
            sender(),
        )
        .with_lease(Duration::from_secs(60))
        .with_clock(clock.clone())
    };
    let raw = enrollment("ev-window", "s-1", "A1", "an@example.com");

    let err = build(4).handle_json(&raw).await.unwrap_err();
    assert!(matches!(err, ConsumerError::Ledger(_)) && err.is_retryable(), "{err}");
    assert_eq!(mailer.total_sends(), 1);

    now.fetch_add(30, std::sync::atomic::Ordering::SeqCst);
    let err = build(0).handle_json(&raw).await.unwrap_err();
    assert!(matches!(err, ConsumerError::InProgressElsewhere { remaining_secs: 30, .. }), "{err}");
    assert_eq!(mailer.total_sends(), 1, "no resend while the lease holds");

    now.fetch_add(30, std::sync::atomic::Ordering::SeqCst);
    let outcome = build(0).handle_json(&raw).await.unwrap();
    assert!(matches!(outcome.email, Some(EffectOutcome::Performed { .. })));
    // The outbox, which has its own idempotency key, still holds one file; a
    // transport without one (SES) would have sent a second email here.
    assert_eq!(mailer.total_sends(), 2);
    assert_eq!(outbox_files(dir.path()).len(), 1);
    let last = build(0).handle_json(&raw).await.unwrap();
    assert!(matches!(last.email, Some(EffectOutcome::AlreadyDone { .. })));
    assert_eq!(mailer.total_sends(), 2);
}

/// An SES call that timed out may have sent the email: the claim is kept, so
/// redeliveries within the lease send nothing, and only after it does a delivery try again.
#[tokio::test]
async fn an_ambiguous_send_failure_keeps_the_claim_until_the_lease_expires() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = EmbeddedLedger::open_in(dir.path()).unwrap();
    let mailer = Arc::new(TimingOutMailer::default());
    let now = Arc::new(std::sync::atomic::AtomicI64::new(1_795_168_800));
    let clock_now = now.clone();
    let clock: event_consumer::consumer::Clock =
        Arc::new(move || clock_now.load(std::sync::atomic::Ordering::SeqCst));
    let consumer = Consumer::new(
        Arc::new(EmbeddedStore::open_in(dir.path()).unwrap()),
        mailer.clone(),
        Arc::new(ledger.clone()),
        Arc::new(RecordingRetrain::default()),
        sender(),
    )
    .with_lease(Duration::from_secs(60))
    .with_clock(clock);
    let raw = enrollment("ev-ambiguous", "s-1", "A1", "an@example.com");
    let key = EffectKey::new(Effect::ConfirmationEmail, EventId::parse("ev-ambiguous").unwrap());

    let err = consumer.handle_json(&raw).await.unwrap_err();
    assert!(
        matches!(err, ConsumerError::Mail(_)) && err.is_retryable() && err.may_have_taken_effect(),
        "{err}"
    );
    assert!(ledger.row_blocking(&key).unwrap().is_some(), "the claim is kept, not released");

    now.fetch_add(59, std::sync::atomic::Ordering::SeqCst);
    let err = consumer.handle_json(&raw).await.unwrap_err();
    assert!(matches!(err, ConsumerError::InProgressElsewhere { .. }), "{err}");
    assert_eq!(mailer.attempts.load(std::sync::atomic::Ordering::SeqCst), 1, "no resend inside the lease");

    now.fetch_add(2, std::sync::atomic::Ordering::SeqCst);
    let err = consumer.handle_json(&raw).await.unwrap_err();
    assert!(matches!(err, ConsumerError::Mail(_)), "after the lease a delivery tries again: {err}");
    assert_eq!(mailer.attempts.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_duplicated_reordered_concurrent_deliveries_make_one_of_each() {
    let dir = tempfile::tempdir().unwrap();
    let world = embedded(dir.path());
    let events: Vec<Vec<u8>> = (0..200)
        .map(|n| {
            enrollment(
                &format!("{n:08x}-0000-4000-8000-000000000000"),
                &format!("student-{}", n % 37),
                &format!("class-{n}"),
                &format!("student{n}@example.edu.vn"),
            )
        })
        .collect();
    let deliveries = duplicated_and_shuffled(&events, 5, 42);
    assert_eq!(deliveries.len(), 1_000);

    let report = deliver_until_done(&world.consumer, deliveries, 16, 7, false).await;

    assert_eq!(report.outcomes.len(), 1_000, "every delivery ends acknowledged");
    let stored = world.store.scan_segment_all().await;
    assert_eq!(stored.len(), 200);
    let mut ids: Vec<&str> = stored.iter().map(|i| i.event_id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 200);
    assert_eq!(world.mailer.total_sends(), 200);
    assert_eq!(world.mailer.max_sends_per_event(), 1);
    assert_eq!(world.mailer.sends.lock().unwrap().len(), 200);
    assert_eq!(outbox_files(dir.path()).len(), 200);
    assert_eq!(world.ledger.done_count_blocking().unwrap(), 200);
    // A delivery that stored its interaction and then met a concurrent claim on the
    // email is retried; the retry reports the interaction as a duplicate. Emails are
    // reported performed exactly once per event.
    let emailed_now =
        report.outcomes.iter().filter(|o| matches!(o.email, Some(EffectOutcome::Performed { .. }))).count();
    assert_eq!(emailed_now, 200);
    eprintln!("{} redeliveries over {} rounds", report.redeliveries, report.rounds);
}

/// Reads the whole embedded store, sorted by event id.
trait ScanAll {
    async fn scan_segment_all(&self) -> Vec<schemas::Interaction>;
}

impl ScanAll for EmbeddedStore {
    async fn scan_segment_all(&self) -> Vec<schemas::Interaction> {
        scan_all(self).await
    }
}

/// A writer the test subscriber appends to.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_carry_ids_and_outcomes_but_never_addresses_or_names() {
    let logs = CapturedLogs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let world = embedded(dir.path());
    world.consumer.handle_json(&fixture("student_enrolled.json")).await.unwrap();
    world.consumer.handle_json(&fixture("student_enrolled.json")).await.unwrap();
    for bad in ["bad_invalid_email.json", "bad_wrong_source.json", "bad_student_id_too_long.json"] {
        world.consumer.handle_json(&fixture(bad)).await.unwrap_err();
    }
    // A failing transport whose error would name the address, through the SES path.
    let rejecting = Consumer::new(
        Arc::new(EmbeddedStore::open_in(dir.path()).unwrap()),
        Arc::new(RejectingMailer),
        Arc::new(EmbeddedLedger::open_in(dir.path()).unwrap()),
        Arc::new(RecordingRetrain::default()),
        sender(),
    );
    rejecting.handle_json(&fixture("student_enrolled_minimal.json")).await.unwrap_err();

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    // The logs are there and useful...
    assert!(logs.contains("0d079340-135a-c8c6-95c2-41fb8f496c53"), "{logs}");
    assert!(logs.contains("event handled") && logs.contains("event rejected"), "{logs}");
    assert!(logs.contains("\"retryable\":false"), "{logs}");
    // ...and hold nothing personal.
    for personal in ["an.nguyen", "binh.tran", "example.edu.vn", "Nguyễn", "Văn An", "Toán cao cấp"] {
        assert!(!logs.contains(personal), "logs leak {personal:?}:\n{logs}");
    }
}

//! SES's feedback loop on the embedded adapters: bounces and complaints suppress an
//! address once however they are delivered, a suppressed address is never mailed,
//! and the outbox's mailbox simulator closes the loop with no AWS account.

mod common;

use std::sync::atomic::Ordering;

use common::*;
use event_consumer::consumer::{FeedbackOutcome, SUPPRESSED_RECEIPT};
use event_consumer::ledger::{Effect, EffectKey};
use event_consumer::mail::simulator;
use event_consumer::suppression::{AddressKey, SuppressionList, SuppressionReason};
use event_consumer::{ConsumerError, EffectOutcome};
use schemas::{EmailAddress, EventError, EventId};

fn key(address: &str) -> AddressKey {
    AddressKey::of(&EmailAddress::parse(address).unwrap())
}

fn applied(outcome: &event_consumer::Outcome) -> (usize, usize, usize) {
    match &outcome.feedback {
        Some(FeedbackOutcome::Applied { suppressed, already_suppressed, transient_bounces, .. }) => {
            (*suppressed, *already_suppressed, *transient_bounces)
        }
        other => panic!("expected an applied SES event, got {other:?}"),
    }
}

#[tokio::test]
async fn a_permanent_bounce_suppresses_and_the_next_enrollment_sends_nothing_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let world = embedded(dir.path());
    let bounce = fixture("ses_bounce_permanent.json");

    let outcome = world.consumer.handle_json(&bounce).await.unwrap();
    assert_eq!(applied(&outcome), (1, 0, 0));
    assert_eq!(world.mailer.account_suppressions.load(Ordering::SeqCst), 1, "SES's account list too");
    let suppression = world.ledger.lookup(&key("AN.NGUYEN@example.edu.vn")).await.unwrap().unwrap();
    assert_eq!(suppression.reason, SuppressionReason::Bounce);
    assert_eq!(suppression.detail, "Permanent/General");

    // The same report again (another envelope id, as SES may publish it twice): nothing new.
    let mut again: serde_json::Value = serde_json::from_slice(&bounce).unwrap();
    again["id"] = "another-envelope".into();
    let again = world.consumer.handle_value(again).await.unwrap();
    assert!(matches!(again.feedback, Some(FeedbackOutcome::AlreadyHandled { .. })), "{:?}", again.feedback);
    assert!(again.wrote_nothing());
    assert_eq!(world.mailer.account_suppressions.load(Ordering::SeqCst), 1);

    let enrolled = enrollment("e-after-bounce", "1", "A1", "an.nguyen@example.edu.vn");
    let outcome = world.consumer.handle_json(&enrolled).await.unwrap();
    let Some(EffectOutcome::Suppressed { reason }) = &outcome.email else {
        panic!("expected a suppressed email, got {:?}", outcome.email)
    };
    assert_eq!(reason, "bounce (Permanent/General)");
    assert_eq!(world.mailer.total_sends(), 0, "nothing sent");
    assert!(
        outcome.report_lines().iter().any(|l| l.contains("suppressed (bounce (Permanent/General))")),
        "{:?}",
        outcome.report_lines()
    );
    // Recorded as done, so a redelivery neither sends nor retries.
    let row = world
        .ledger
        .row_blocking(&EffectKey::new(Effect::ConfirmationEmail, EventId::parse("e-after-bounce").unwrap()))
        .unwrap()
        .unwrap();
    assert_eq!(row.state, "done");
    assert!(row.receipt.unwrap().starts_with(SUPPRESSED_RECEIPT));
    let redelivered = world.consumer.handle_json(&enrolled).await.unwrap();
    assert!(matches!(redelivered.email, Some(EffectOutcome::AlreadyDone { .. })));
    assert_eq!(world.mailer.total_sends(), 0);
    // The interaction itself is kept: suppression is about mail, not learning.
    assert_eq!(scan_all(&world.store).await.len(), 1);

    // Another student's email still goes.
    let other =
        world.consumer.handle_json(&enrollment("e-other", "2", "A1", "binh@example.edu.vn")).await.unwrap();
    assert!(matches!(other.email, Some(EffectOutcome::Performed { .. })));
}

#[tokio::test]
async fn transient_bounces_and_deliveries_are_counted_or_acknowledged_not_suppressed() {
    let dir = tempfile::tempdir().unwrap();
    let world = embedded(dir.path());
    for n in 0..3 {
        let outcome = world
            .consumer
            .handle_json(&ses_event(
                &format!("t-{n}"),
                "transient",
                &format!("fb-t-{n}"),
                "an@example.edu.vn",
            ))
            .await
            .unwrap();
        assert_eq!(applied(&outcome), (0, 0, 1));
    }
    let delivered =
        world.consumer.handle_json(&ses_event("d-1", "delivery", "d-1", "an@example.edu.vn")).await.unwrap();
    assert_eq!(applied(&delivered), (0, 0, 0));
    assert_eq!(world.ledger.lookup(&key("an@example.edu.vn")).await.unwrap(), None);
    assert_eq!(
        world.ledger.count_transient_bounce(&key("an@example.edu.vn"), 0).await.unwrap(),
        4,
        "3 + this one"
    );
    let sent = world.consumer.handle_json(&enrollment("e-1", "1", "A1", "an@example.edu.vn")).await.unwrap();
    assert!(matches!(sent.email, Some(EffectOutcome::Performed { .. })), "{:?}", sent.email);
    assert_eq!(world.mailer.account_suppressions.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_thousand_duplicated_and_reordered_bounces_and_complaints_make_one_suppression_each() {
    let dir = tempfile::tempdir().unwrap();
    let world = embedded(dir.path());
    // 100 addresses, each with a permanent bounce and a complaint; every report is
    // published twice (two envelope ids) and each publication delivered 5 times: 2,000.
    let mut events = Vec::new();
    for n in 0..100 {
        let address = format!("student{n}@example.edu.vn");
        for (kind, fb) in [("permanent", format!("fb-b-{n}")), ("complaint", format!("fb-c-{n}"))] {
            events.push(ses_event(&format!("{fb}-env-1"), kind, &fb, &address));
            events.push(ses_event(&format!("{fb}-env-2"), kind, &fb, &address));
        }
    }
    let deliveries = duplicated_and_shuffled(&events, 5, 7);
    assert_eq!(deliveries.len(), 2_000);
    let report = deliver_until_done(&world.consumer, deliveries, 16, 7, false).await;
    assert_eq!(report.outcomes.len(), 2_000);

    let applied: Vec<_> = report
        .outcomes
        .iter()
        .filter_map(|o| match &o.feedback {
            Some(FeedbackOutcome::Applied { suppressed, already_suppressed, .. }) => {
                Some((*suppressed, *already_suppressed))
            }
            _ => None,
        })
        .collect();
    assert_eq!(applied.len(), 200, "each SES report applied once");
    assert_eq!(applied.iter().map(|a| a.0).sum::<usize>(), 100, "one suppression per address");
    assert_eq!(applied.iter().map(|a| a.1).sum::<usize>(), 100, "the other report found it suppressed");
    assert_eq!(world.mailer.account_suppressions.load(Ordering::SeqCst), 200, "SES's list once per report");
    for n in [0, 42, 99] {
        assert!(world.ledger.lookup(&key(&format!("student{n}@example.edu.vn"))).await.unwrap().is_some());
    }
}

#[tokio::test]
async fn a_malformed_ses_event_is_refused_with_the_reason_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let world = embedded(dir.path());
    let err =
        world.consumer.handle_json(&fixture("bad_ses_bounce_without_feedback_id.json")).await.unwrap_err();
    assert!(
        matches!(&err, ConsumerError::Rejected(EventError::InvalidField { field: "feedbackId", .. })),
        "{err}"
    );
    assert!(!err.is_retryable());
    assert_eq!(world.ledger.done_count_blocking().unwrap(), 0);
    assert_eq!(world.ledger.lookup(&key("an.nguyen@example.edu.vn")).await.unwrap(), None);
    assert_eq!(world.mailer.account_suppressions.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_failed_account_level_suppression_is_retried_by_the_redelivery_and_completes() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::embedded::EmbeddedStore::open_in(dir.path()).unwrap();
    let ledger = event_consumer::ledger::embedded::EmbeddedLedger::open_in(dir.path()).unwrap();
    let timing_out = std::sync::Arc::new(TimingOutMailer::default());
    let consumer = event_consumer::Consumer::new(
        std::sync::Arc::new(store),
        timing_out.clone(),
        std::sync::Arc::new(ledger.clone()),
        std::sync::Arc::new(RecordingRetrain::default()),
        sender(),
    );
    let bounce = fixture("ses_bounce_permanent.json");
    let err = consumer.handle_json(&bounce).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    // Our own record is written first, and the claim is released for the retry.
    assert!(ledger.lookup(&key("an.nguyen@example.edu.vn")).await.unwrap().is_some());
    let world = embedded(dir.path());
    let outcome = world.consumer.handle_json(&bounce).await.unwrap();
    assert_eq!(applied(&outcome), (0, 1, 0), "the retry finds it suppressed and completes SES's list");
    assert_eq!(world.mailer.account_suppressions.load(Ordering::SeqCst), 1);
    assert_eq!(timing_out.attempts.load(Ordering::SeqCst), 1);
}

/// The whole loop offline: the outbox plays SES's mailbox simulator.
#[tokio::test]
async fn offline_the_simulator_closes_the_loop_send_bounce_suppression_no_second_send() {
    let dir = tempfile::tempdir().unwrap();
    let world = embedded(dir.path());
    let outbox = dir.path().join("outbox");

    for (n, mailbox) in ["bounce", "complaint", "success", "ooto", "suppressionlist"].iter().enumerate() {
        let address = format!("{mailbox}+t1@simulator.amazonses.com");
        let sent = world
            .consumer
            .handle_json(&enrollment(&format!("e-{n}"), &n.to_string(), "A1", &address))
            .await
            .unwrap();
        let wrote_eml = matches!(sent.email, Some(EffectOutcome::Performed { outbox_file: Some(_), .. }));
        assert_eq!(wrote_eml, *mailbox != "suppressionlist", "{mailbox}: {:?}", sent.email);
    }
    let pending = simulator::pending_events(&outbox).unwrap();
    // bounce: Bounce; complaint: Delivery + Complaint; success, ooto: Delivery; suppressionlist: Bounce.
    assert_eq!(pending.len(), 6, "{pending:?}");
    let mut suppressed = 0;
    for file in &pending {
        let outcome = world.consumer.handle_json(&std::fs::read(file).unwrap()).await.unwrap();
        suppressed += applied(&outcome).0;
        simulator::mark_handled(file).unwrap();
    }
    assert_eq!(suppressed, 3, "bounce, complaint and suppressionlist");
    assert!(simulator::pending_events(&outbox).unwrap().is_empty());

    for (n, mailbox) in ["bounce", "complaint", "success", "suppressionlist"].iter().enumerate() {
        let address = format!("{mailbox}+t1@simulator.amazonses.com");
        let again = world
            .consumer
            .handle_json(&enrollment(&format!("again-{n}"), &n.to_string(), "B2", &address))
            .await
            .unwrap();
        let was_suppressed = matches!(again.email, Some(EffectOutcome::Suppressed { .. }));
        assert_eq!(was_suppressed, *mailbox != "success", "{mailbox}: {:?}", again.email);
    }
    // The suppressed ones produced no new SES events either; success delivered again.
    assert_eq!(simulator::pending_events(&outbox).unwrap().len(), 1);
    // The outbox's account-level list holds keys, never addresses.
    let list =
        std::fs::read_to_string(outbox.join(event_consumer::mail::outbox::ACCOUNT_SUPPRESSION_FILE)).unwrap();
    assert_eq!(list.lines().count(), 3);
    assert!(!list.contains('@'), "{list}");
}

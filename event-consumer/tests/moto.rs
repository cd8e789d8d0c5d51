//! The AWS adapters against moto (started by `scripts/test`, found through
//! `MOTO_ENDPOINT`): DynamoDB store and ledger, SES v2, EventBridge. Every test
//! makes its own tables and sender, so tests share moto without sharing state.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use event_consumer::consumer::{Consumer, EmailSettings};
use event_consumer::ledger::dynamodb::DynamoLedger;
use event_consumer::ledger::{Claim, Completion, Effect, EffectKey, IdempotencyLedger};
use event_consumer::mail::MailError;
use event_consumer::mail::ses::SesMailer;
use event_consumer::publisher::EventPublisher;
use event_consumer::roster::dynamodb::DynamoRoster;
use event_consumer::{ConsumerError, EffectOutcome, InteractionOutcome, Language};
use schemas::events::{RankingUpdateRequested, StudentEnrolled};
use schemas::{DomainEvent, EmailAddress, EventId, ParsedEvent};
use store::dynamodb::DynamoInteractionStore;

struct AwsWorld {
    consumer: Consumer,
    store: DynamoInteractionStore,
    ledger: DynamoLedger,
    roster: DynamoRoster,
    mailer: Arc<CountingMailer<SesMailer>>,
    sender: String,
}

/// Fresh tables and a verified sender of our own on the shared moto.
async fn aws_world(language: Language, verify_sender: bool) -> AwsWorld {
    let config = testkit::moto_config().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&config);
    let interactions = testkit::unique_name("interactions");
    let ledger_table = testkit::unique_name("ledger");
    create_interactions_table(&dynamo, &interactions).await;
    create_ledger_table(&dynamo, &ledger_table).await;
    let ses = aws_sdk_sesv2::Client::new(&config);
    let sender = format!("{}@student-system.test", testkit::unique_name("no-reply"));
    if verify_sender {
        ses.create_email_identity().email_identity(&sender).send().await.unwrap();
    }
    let store = DynamoInteractionStore::new(dynamo.clone(), &interactions);
    let ledger = DynamoLedger::new(dynamo.clone(), &ledger_table);
    let mailer = Arc::new(CountingMailer::new(SesMailer::new(ses)));
    let students = testkit::unique_name("students");
    create_students_table(&dynamo, &students).await;
    let roster = DynamoRoster::new(dynamo.clone(), &students);
    let consumer = Consumer::with_ports(
        Arc::new(store.clone()),
        mailer.clone(),
        Arc::new(ledger.clone()),
        Arc::new(ledger.clone()),
        Arc::new(roster.clone()),
        Arc::new(RecordingRetrain::default()),
        EmailSettings { sender: EmailAddress::parse(&sender).unwrap(), language },
    );
    AwsWorld { consumer, store, ledger, roster, mailer, sender }
}

#[tokio::test]
async fn an_enrollment_lands_in_dynamodb_and_ses_once() {
    let world = aws_world(Language::Vi, true).await;
    let raw = fixture("student_enrolled.json");
    let outcome = world.consumer.handle_json(&raw).await.unwrap();
    assert_eq!(outcome.interaction, InteractionOutcome::Stored);
    let Some(EffectOutcome::Performed { receipt: message_id, outbox_file: None }) = outcome.email.clone()
    else {
        panic!("{:?}", outcome.email)
    };

    let sent = moto_sent_emails(&world.sender);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].id, message_id, "the ledger keeps SES's message id");
    assert_eq!(sent[0].subject, "Xác nhận đăng ký lớp");
    assert_eq!(sent[0].destinations["ToAddresses"], vec!["an.nguyen@example.edu.vn".to_owned()]);
    assert!(sent[0].body.contains("Chào Nguyễn Văn An,"), "{}", sent[0].body);
    assert!(sent[0].body.contains("<strong>Toán cao cấp 1</strong>"), "{}", sent[0].body);

    let stored = scan_all(&world.store).await;
    assert_eq!(stored.len(), 1);
    assert_eq!((stored[0].user_id.as_str(), stored[0].item_id.as_str()), ("1024", "math-101"));

    let again = world.consumer.handle_json(&raw).await.unwrap();
    assert!(again.wrote_nothing(), "{again:?}");
    assert_eq!(again.email, Some(EffectOutcome::AlreadyDone { receipt: message_id }));
    assert_eq!(moto_sent_emails(&world.sender).len(), 1);
    assert_eq!(scan_all(&world.store).await.len(), 1);
}

#[tokio::test]
async fn english_is_one_setting_away() {
    let world = aws_world(Language::En, true).await;
    world.consumer.handle_json(&fixture("student_enrolled_minimal.json")).await.unwrap();
    let sent = moto_sent_emails(&world.sender);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].subject, "Enrollment confirmed");
    // No names sent: greeting and class fall back.
    assert!(
        sent[0].body.contains("Hello,") && sent[0].body.contains("<strong>physics-201</strong>"),
        "{}",
        sent[0].body
    );
}

#[tokio::test]
async fn an_unverified_sender_is_rejected_for_good_without_naming_addresses() {
    let world = aws_world(Language::Vi, false).await;
    let err = world.consumer.handle_json(&fixture("student_enrolled.json")).await.unwrap_err();
    assert!(
        matches!(&err, ConsumerError::Mail(MailError::Ses { code, .. }) if code == "MessageRejected"),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    let message = err.to_string();
    assert!(!message.contains('@'), "moto names the address; the error must not: {message}");
    // The claim was released: once the sender is verified, the retry sends.
    let config = testkit::moto_config().await;
    aws_sdk_sesv2::Client::new(&config)
        .create_email_identity()
        .email_identity(&world.sender)
        .send()
        .await
        .unwrap();
    let outcome = world.consumer.handle_json(&fixture("student_enrolled.json")).await.unwrap();
    assert_eq!(outcome.interaction, InteractionOutcome::Duplicate);
    assert!(matches!(outcome.email, Some(EffectOutcome::Performed { .. })));
    assert_eq!(moto_sent_emails(&world.sender).len(), 1);
}

#[tokio::test]
async fn bad_events_write_nothing_to_dynamodb_or_ses() {
    let world = aws_world(Language::Vi, true).await;
    for name in [
        "bad_malformed.json",
        "bad_unknown_detail_type.json",
        "bad_wrong_source.json",
        "bad_invalid_email.json",
        "bad_student_id_too_long.json",
        "bad_event_id_too_long.json",
    ] {
        let err = world.consumer.handle_json(&fixture(name)).await.unwrap_err();
        assert!(matches!(err, ConsumerError::Rejected(_)) && !err.is_retryable(), "{name}: {err}");
    }
    assert!(scan_all(&world.store).await.is_empty());
    assert!(moto_sent_emails(&world.sender).is_empty());
}

#[tokio::test]
async fn the_dynamodb_ledger_claims_once_and_survives_takeover() {
    let world = aws_world(Language::Vi, true).await;
    let ledger = &world.ledger;
    let key = EffectKey::new(Effect::ConfirmationEmail, EventId::parse("ev-ledger").unwrap());
    let lease = Duration::from_secs(60);
    let t0 = 1_795_168_800;
    let Claim::Acquired(first) = ledger.claim(&key, t0, lease).await.unwrap() else { panic!("fresh key") };
    assert_eq!(
        ledger.claim(&key, t0 + 59, lease).await.unwrap(),
        Claim::HeldElsewhere { lease_expires_at: t0 + 60 }
    );
    // A failed send gives the claim back; someone else's token cannot.
    ledger.release(&key, &event_consumer::ledger::ClaimToken::generate()).await.unwrap();
    assert!(matches!(ledger.claim(&key, t0 + 1, lease).await.unwrap(), Claim::HeldElsewhere { .. }));
    ledger.release(&key, &first).await.unwrap();
    let Claim::Acquired(second) = ledger.claim(&key, t0 + 2, lease).await.unwrap() else {
        panic!("released")
    };
    // Its holder "crashes"; after the lease a third delivery takes over.
    let Claim::Acquired(third) = ledger.claim(&key, t0 + 62, lease).await.unwrap() else { panic!("expired") };
    assert_eq!(ledger.complete(&key, &third, "msg-3", t0 + 63).await.unwrap(), Completion::Recorded);
    // The crashed one was only slow: it finishes late and learns done was there first.
    assert_eq!(ledger.complete(&key, &second, "msg-2", t0 + 64).await.unwrap(), Completion::AlreadyDone);
    assert_eq!(
        ledger.claim(&key, t0 + 999_999, lease).await.unwrap(),
        Claim::Done { receipt: "msg-3".into() }
    );

    let item = ledger.record(&key).await.unwrap().unwrap();
    let ttl: i64 = item["expiresAt"].as_n().unwrap().parse().unwrap();
    assert_eq!(ttl, t0 + 63 + 30 * 24 * 3600, "TTL attribute set from the last change");
    assert!(!item.contains_key("claimToken") && !item.contains_key("leaseExpiresAt"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_duplicated_reordered_deliveries_on_moto_make_one_of_each() {
    let world = aws_world(Language::Vi, true).await;
    let events: Vec<Vec<u8>> = (0..200)
        .map(|n| {
            enrollment(
                &format!("{n:08x}-1111-4000-8000-000000000000"),
                &format!("student-{}", n % 37),
                &format!("class-{n}"),
                &format!("student{n}@example.edu.vn"),
            )
        })
        .collect();
    let deliveries = duplicated_and_shuffled(&events, 5, 1234);
    assert_eq!(deliveries.len(), 1_000);
    // Moto's conditional writes are not atomic across its request threads (real
    // DynamoDB's are), so deliveries of one event do not overlap in time here;
    // distinct events still run 8 at a time, in shuffled order. The embedded test
    // races duplicates truly concurrently.
    let report = deliver_until_done(&world.consumer, deliveries, 8, 99, true).await;
    assert_eq!(report.outcomes.len(), 1_000);

    let stored = scan_all(&world.store).await;
    assert_eq!(stored.len(), 200);
    let sent = moto_sent_emails(&world.sender);
    assert_eq!(sent.len(), 200, "one email per event in moto's SES");
    let mut recipients: Vec<&str> = sent.iter().map(|m| m.destinations["ToAddresses"][0].as_str()).collect();
    recipients.sort();
    recipients.dedup();
    assert_eq!(recipients.len(), 200, "and each to its own student");
    assert_eq!(world.mailer.max_sends_per_event(), 1);
}

// ---- publisher --------------------------------------------------------------

fn sqs_call(target: &str, body: serde_json::Value) -> serde_json::Value {
    let (status, response) = moto_http(
        "POST",
        "/",
        &[
            ("Content-Type", "application/x-amz-json-1.0"),
            ("X-Amz-Target", &format!("AmazonSQS.{target}")),
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=test/20261120/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0",
            ),
        ],
        &body.to_string(),
    );
    assert_eq!(status, 200, "SQS {target}: {response}");
    serde_json::from_str(&response).unwrap()
}

#[tokio::test]
async fn published_events_reach_a_rule_target_and_parse_back() {
    let config = testkit::moto_config().await;
    let eventbridge = aws_sdk_eventbridge::Client::new(&config);
    let bus = testkit::unique_name("student-event-bus");
    eventbridge.create_event_bus().name(&bus).send().await.unwrap();

    let queue_name = testkit::unique_name("enrollments");
    let queue_url = sqs_call("CreateQueue", serde_json::json!({"QueueName": queue_name}))["QueueUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    let rule = testkit::unique_name("enrollments-to-queue");
    eventbridge
        .put_rule()
        .name(&rule)
        .event_bus_name(&bus)
        .event_pattern(r#"{"source":["api.student"],"detail-type":["student.enrolled"]}"#)
        .send()
        .await
        .unwrap();
    eventbridge
        .put_targets()
        .rule(&rule)
        .event_bus_name(&bus)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(format!("arn:aws:sqs:us-east-1:123456789012:{queue_name}"))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    let publisher = EventPublisher::new(eventbridge, &bus);
    let enrolled = DomainEvent::StudentEnrolled(StudentEnrolled {
        student_id: "1024".parse().unwrap(),
        class_id: "math-101".parse().unwrap(),
        email: EmailAddress::parse("an.nguyen@example.edu.vn").unwrap(),
        student_name: None,
        class_name: None,
    });
    let event_id = publisher.publish(&enrolled).await.unwrap();
    // Not matched by the rule: must not reach the queue.
    publisher
        .publish(&DomainEvent::RankingUpdateRequested(RankingUpdateRequested { trigger: "manual".into() }))
        .await
        .unwrap();

    let received = sqs_call(
        "ReceiveMessage",
        serde_json::json!({"QueueUrl": queue_url, "MaxNumberOfMessages": 10, "WaitTimeSeconds": 1}),
    );
    let messages = received["Messages"].as_array().cloned().unwrap_or_default();
    assert_eq!(messages.len(), 1, "{received}");
    let delivered = messages[0]["Body"].as_str().unwrap();
    // What the bus delivers is exactly what the consumer parses.
    let parsed = ParsedEvent::from_json(delivered.as_bytes()).unwrap();
    assert_eq!(parsed.event, enrolled);
    assert_eq!(parsed.id.as_str(), event_id);
}

/// The suppression list lives in the ledger table: a first suppression wins and is
/// kept, a second one changes nothing, transient bounces count without suppressing,
/// and the item never carries the address.
#[tokio::test]
async fn the_dynamodb_suppression_list_keeps_the_first_record_and_counts_transients() {
    use event_consumer::suppression::{AddressKey, Suppression, SuppressionList, SuppressionReason};
    let config = testkit::moto_config().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&config);
    let table = testkit::unique_name("ledger");
    create_ledger_table(&dynamo, &table).await;
    let ledger = DynamoLedger::new(dynamo.clone(), &table);
    let bounced = AddressKey::of(&EmailAddress::parse("bounce@simulator.amazonses.com").unwrap());
    let full = AddressKey::of(&EmailAddress::parse("ooto@simulator.amazonses.com").unwrap());

    assert_eq!(ledger.lookup(&bounced).await.unwrap(), None);
    let first = Suppression {
        reason: SuppressionReason::Bounce,
        detail: "Permanent/General".into(),
        since: 1_800_000_000,
    };
    assert!(ledger.suppress(&bounced, &first).await.unwrap(), "the first suppression is applied");
    let later =
        Suppression { reason: SuppressionReason::Complaint, detail: "abuse".into(), since: 1_800_000_100 };
    assert!(!ledger.suppress(&bounced, &later).await.unwrap(), "already suppressed: nothing changes");
    assert_eq!(ledger.lookup(&bounced).await.unwrap(), Some(first));

    assert_eq!(ledger.count_transient_bounce(&full, 1_800_000_000).await.unwrap(), 1);
    assert_eq!(ledger.count_transient_bounce(&full, 1_800_000_060).await.unwrap(), 2);
    assert_eq!(ledger.lookup(&full).await.unwrap(), None, "transient bounces do not suppress");

    let items = dynamo.scan().table_name(&table).send().await.unwrap();
    let dump = format!("{:?}", items.items());
    assert!(!dump.contains("simulator.amazonses.com"), "no address in the table: {dump}");
}

/// The students table on moto: pages in student-id order across DynamoDB pages, and a
/// reordered older enrollment does not bring back an old address.
#[tokio::test]
async fn the_dynamodb_roster_pages_in_order_and_keeps_the_newest_address() {
    use event_consumer::roster::{PAGE_SIZE, Roster, Student};
    use schemas::{ItemId, UserId};
    let world = aws_world(Language::Vi, true).await;
    let class = ItemId::parse("math-101").unwrap();
    let student = |n: usize, email: &str| Student {
        student_id: UserId::parse(format!("s{n:04}")).unwrap(),
        email: EmailAddress::parse(email).unwrap(),
        name: None,
    };
    for n in (0..250).rev() {
        world
            .roster
            .enroll(&class, &student(n, &format!("s{n}@example.edu.vn")), 1_800_000_000)
            .await
            .unwrap();
    }
    world.roster.enroll(&class, &student(7, "new7@example.edu.vn"), 1_800_000_500).await.unwrap();
    world.roster.enroll(&class, &student(7, "old7@example.edu.vn"), 1_800_000_100).await.unwrap();
    let other = ItemId::parse("math-102").unwrap();
    world.roster.enroll(&other, &student(1, "s1@example.edu.vn"), 1_800_000_000).await.unwrap();

    let (mut all, mut after, mut pages) = (Vec::new(), None, 0);
    loop {
        let page = world.roster.page(&class, after.as_ref(), PAGE_SIZE).await.unwrap();
        pages += 1;
        all.extend(page.students);
        match page.next_after {
            Some(last) => after = Some(last),
            None => break,
        }
    }
    assert_eq!(all.len(), 250, "every student of the class, none of the other's");
    assert!(pages >= 3, "{pages} pages of at most {PAGE_SIZE}");
    let ids: Vec<&str> = all.iter().map(|s| s.student_id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "in student-id order");
    assert_eq!(all[7].email.as_str(), "new7@example.edu.vn", "the newest enrollment's address stands");
}

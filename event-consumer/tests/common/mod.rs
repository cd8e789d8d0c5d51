//! Helpers shared by the integration tests: fixtures, fakes that fail on purpose,
//! a redelivering driver, and the moto plumbing.
#![allow(dead_code)] // each test binary uses its own share of these

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use event_consumer::consumer::{Consumer, EmailSettings, Outcome};
use event_consumer::ledger::embedded::EmbeddedLedger;
use event_consumer::ledger::{Claim, ClaimToken, Completion, EffectKey, IdempotencyLedger, LedgerError};
use event_consumer::mail::outbox::OutboxMailer;
use event_consumer::mail::{MailError, MailReceipt, Mailer, OutgoingEmail};
use event_consumer::retrain::{RetrainError, RetrainRequest, RetrainTrigger};
use event_consumer::roster::{Roster, RosterPage, Student};
use event_consumer::suppression::{AddressKey, Suppression, SuppressionList, SuppressionReason};
use event_consumer::{ConsumerError, Language};
use futures::stream::{self, StreamExt};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;
use schemas::{EmailAddress, Interaction, ItemId, UserId};
use store::embedded::EmbeddedStore;
use store::{InteractionSink, InteractionSource, InteractionStore, PutOutcome, ScanPage, StoreError};

pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

pub fn sender() -> EmailSettings {
    EmailSettings {
        sender: EmailAddress::parse("no-reply@student-system.local").unwrap(),
        language: Language::Vi,
    }
}

/// A real-shaped `student.enrolled` delivery.
pub fn enrollment(event_id: &str, student: &str, class: &str, email: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "version": "0",
        "id": event_id,
        "detail-type": "student.enrolled",
        "source": "api.student",
        "account": "123456789012",
        "time": "2026-11-20T10:00:00Z",
        "region": "ap-southeast-1",
        "resources": [],
        "detail": {"studentId": student, "classId": class, "email": email, "studentName": "Nguyễn Văn An"}
    }))
    .unwrap()
}

/// A real-shaped `teacher.sendAnnouncement` delivery.
pub fn announcement(event_id: &str, class: &str, content: &str, language: Option<&str>) -> Vec<u8> {
    let mut detail = serde_json::json!({"teacherId": "t-7", "classId": class, "content": content});
    if let Some(language) = language {
        detail["language"] = language.into();
    }
    serde_json::to_vec(&serde_json::json!({
        "version": "0",
        "id": event_id,
        "detail-type": "teacher.sendAnnouncement",
        "source": "api.teacher",
        "account": "123456789012",
        "time": "2026-11-21T09:00:00Z",
        "region": "ap-southeast-1",
        "resources": [],
        "detail": detail
    }))
    .unwrap()
}

/// Counts starts per request id; fails nothing.
#[derive(Default)]
pub struct RecordingRetrain {
    pub starts: Mutex<Vec<RetrainRequest>>,
}

#[async_trait]
impl RetrainTrigger for RecordingRetrain {
    async fn start(&self, request: &RetrainRequest) -> Result<String, RetrainError> {
        let mut starts = self.starts.lock().unwrap();
        starts.push(request.clone());
        Ok(format!("run #{}", starts.len()))
    }
}

/// Wraps a mailer: fails the first `failures` calls with a throttling error (and
/// sends nothing then), and counts real sends per event id.
pub struct CountingMailer<M> {
    pub inner: M,
    failures_left: AtomicUsize,
    pub sends: Mutex<HashMap<String, usize>>,
    /// Calls that put an address on the transport's account-level list.
    pub account_suppressions: AtomicUsize,
    /// Every email the transport took, in order.
    pub sent: Mutex<Vec<OutgoingEmail>>,
}

impl<M> CountingMailer<M> {
    pub fn new(inner: M) -> Self {
        Self::failing_first(inner, 0)
    }

    pub fn failing_first(inner: M, failures: usize) -> Self {
        Self {
            inner,
            failures_left: AtomicUsize::new(failures),
            sends: Mutex::default(),
            account_suppressions: AtomicUsize::new(0),
            sent: Mutex::default(),
        }
    }

    pub fn total_sends(&self) -> usize {
        self.sends.lock().unwrap().values().sum()
    }

    pub fn max_sends_per_event(&self) -> usize {
        self.sends.lock().unwrap().values().copied().max().unwrap_or(0)
    }
}

fn take_failure(counter: &AtomicUsize) -> bool {
    counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
}

#[async_trait]
impl<M: Mailer> Mailer for CountingMailer<M> {
    async fn send(&self, email: &OutgoingEmail) -> Result<MailReceipt, MailError> {
        if take_failure(&self.failures_left) {
            return Err(MailError::Ses {
                operation: "SendEmail",
                code: "TooManyRequestsException".into(),
                message: "Maximum sending rate exceeded.".into(),
                retryable: true,
                may_have_been_sent: false,
            });
        }
        let receipt = self.inner.send(email).await?;
        // One count per email: the event's, or one student's copy of an announcement.
        let copy = match &email.recipient {
            Some(student) => format!("{}#{}", email.event_id, student.as_str()),
            None => email.event_id.to_string(),
        };
        *self.sends.lock().unwrap().entry(copy).or_default() += 1;
        self.sent.lock().unwrap().push(email.clone());
        Ok(receipt)
    }

    async fn suppress_destination(
        &self,
        address: &EmailAddress,
        reason: SuppressionReason,
    ) -> Result<(), MailError> {
        self.inner.suppress_destination(address, reason).await?;
        self.account_suppressions.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A mailer that always refuses: the message would never be accepted.
pub struct RejectingMailer;

#[async_trait]
impl Mailer for RejectingMailer {
    async fn send(&self, _email: &OutgoingEmail) -> Result<MailReceipt, MailError> {
        Err(MailError::Ses {
            operation: "SendEmail",
            code: "MessageRejected".into(),
            message: "rejected".into(),
            retryable: false,
            may_have_been_sent: false,
        })
    }

    async fn suppress_destination(&self, _: &EmailAddress, _: SuppressionReason) -> Result<(), MailError> {
        Err(MailError::Ses {
            operation: "PutSuppressedDestination",
            code: "AccessDeniedException".into(),
            message: "not authorized".into(),
            retryable: false,
            may_have_been_sent: false,
        })
    }
}

/// A mailer whose calls time out after the request went out: SES may or may not have
/// accepted the email. Counts the attempts.
#[derive(Default)]
pub struct TimingOutMailer {
    pub attempts: AtomicUsize,
}

#[async_trait]
impl Mailer for TimingOutMailer {
    async fn send(&self, _email: &OutgoingEmail) -> Result<MailReceipt, MailError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        Err(MailError::Ses {
            operation: "SendEmail",
            code: "Timeout".into(),
            message: "operation timeout (all attempts including retries) occurred after 5s".into(),
            retryable: true,
            may_have_been_sent: true,
        })
    }

    async fn suppress_destination(&self, _: &EmailAddress, _: SuppressionReason) -> Result<(), MailError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        Err(MailError::Ses {
            operation: "PutSuppressedDestination",
            code: "Timeout".into(),
            message: "operation timeout occurred after 5s".into(),
            retryable: true,
            may_have_been_sent: false,
        })
    }
}

/// Wraps a store: the first `failures` puts fail as if DynamoDB throttled.
pub struct FlakyStore<S> {
    pub inner: S,
    failures_left: AtomicUsize,
}

impl<S> FlakyStore<S> {
    pub fn failing_first(inner: S, failures: usize) -> Self {
        Self { inner, failures_left: AtomicUsize::new(failures) }
    }
}

#[async_trait]
impl<S: InteractionStore> InteractionSink for FlakyStore<S> {
    async fn put(&self, interaction: &Interaction) -> Result<PutOutcome, StoreError> {
        if take_failure(&self.failures_left) {
            return Err(StoreError::Dynamo {
                operation: "PutItem",
                table: "interactions".into(),
                message: "ProvisionedThroughputExceededException".into(),
                retryable: true,
            });
        }
        self.inner.put(interaction).await
    }
}

impl<S: InteractionStore> InteractionSource for FlakyStore<S> {
    fn scan_segment(
        &self,
        segment: u32,
        total: u32,
    ) -> futures::stream::BoxStream<'_, Result<ScanPage, StoreError>> {
        self.inner.scan_segment(segment, total)
    }
}

/// Wraps a ledger: the first `failures` completions fail (the effect happened,
/// recording it did not), as when DynamoDB is briefly unreachable.
pub struct FlakyLedger<L> {
    pub inner: L,
    complete_failures_left: AtomicUsize,
}

impl<L> FlakyLedger<L> {
    pub fn failing_first_completions(inner: L, failures: usize) -> Self {
        Self { inner, complete_failures_left: AtomicUsize::new(failures) }
    }
}

#[async_trait]
impl<L: IdempotencyLedger> IdempotencyLedger for FlakyLedger<L> {
    async fn claim(
        &self,
        key: &EffectKey,
        now: i64,
        lease: std::time::Duration,
    ) -> Result<Claim, LedgerError> {
        self.inner.claim(key, now, lease).await
    }

    async fn complete(
        &self,
        key: &EffectKey,
        token: &ClaimToken,
        receipt: &str,
        now: i64,
    ) -> Result<Completion, LedgerError> {
        if take_failure(&self.complete_failures_left) {
            return Err(LedgerError::Dynamo {
                operation: "UpdateItem",
                table: "ledger".into(),
                message: "ServiceUnavailable".into(),
                retryable: true,
            });
        }
        self.inner.complete(key, token, receipt, now).await
    }

    async fn release(&self, key: &EffectKey, token: &ClaimToken) -> Result<(), LedgerError> {
        self.inner.release(key, token).await
    }
}

/// The suppression list passes through untouched: only completions are flaky.
#[async_trait]
impl<L: SuppressionList> SuppressionList for FlakyLedger<L> {
    async fn lookup(&self, key: &AddressKey) -> Result<Option<Suppression>, LedgerError> {
        self.inner.lookup(key).await
    }

    async fn suppress(&self, key: &AddressKey, suppression: &Suppression) -> Result<bool, LedgerError> {
        self.inner.suppress(key, suppression).await
    }

    async fn count_transient_bounce(&self, key: &AddressKey, now: i64) -> Result<u64, LedgerError> {
        self.inner.count_transient_bounce(key, now).await
    }
}

/// The roster passes through untouched too.
#[async_trait]
impl<L: Roster> Roster for FlakyLedger<L> {
    async fn enroll(
        &self,
        class_id: &ItemId,
        student: &Student,
        enrolled_at: i64,
    ) -> Result<(), LedgerError> {
        self.inner.enroll(class_id, student, enrolled_at).await
    }

    async fn page(
        &self,
        class_id: &ItemId,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<RosterPage, LedgerError> {
        self.inner.page(class_id, after, limit).await
    }
}

/// The embedded world in one data directory, with a counting outbox.
pub struct Embedded {
    pub consumer: Consumer,
    pub store: EmbeddedStore,
    pub ledger: EmbeddedLedger,
    pub mailer: Arc<CountingMailer<OutboxMailer>>,
    pub retrain: Arc<RecordingRetrain>,
}

pub fn embedded(data_dir: &Path) -> Embedded {
    let store = EmbeddedStore::open_in(data_dir).unwrap();
    let ledger = EmbeddedLedger::open_in(data_dir).unwrap();
    let mailer = Arc::new(CountingMailer::new(OutboxMailer::in_data_dir(data_dir)));
    let retrain = Arc::new(RecordingRetrain::default());
    let consumer = Consumer::new(
        Arc::new(store.clone()),
        mailer.clone(),
        Arc::new(ledger.clone()),
        retrain.clone(),
        sender(),
    );
    Embedded { consumer, store, ledger, mailer, retrain }
}

/// How a batch of deliveries ended.
#[derive(Debug, Default)]
pub struct DeliveryReport {
    pub outcomes: Vec<Outcome>,
    /// Deliveries that failed retryably and were delivered again.
    pub redeliveries: usize,
    pub rounds: usize,
}

/// Delivers every event like EventBridge + Lambda would: in the given order,
/// `concurrency` at a time; a delivery that fails retryably is delivered again in a
/// later round (shuffled again); a non-retryable failure fails the test.
/// With `serialize_same_event`, deliveries of one event never overlap in time
/// (for moto, whose conditional writes are not atomic across its threads).
pub async fn deliver_until_done(
    consumer: &Consumer,
    deliveries: Vec<Vec<u8>>,
    concurrency: usize,
    seed: u64,
    serialize_same_event: bool,
) -> DeliveryReport {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pending = deliveries;
    let mut report = DeliveryReport::default();
    let locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>> = Mutex::default();
    while !pending.is_empty() {
        report.rounds += 1;
        assert!(report.rounds <= 50, "deliveries still failing after 50 rounds");
        if report.rounds > 1 {
            pending.shuffle(&mut rng);
            // Lambda's retry comes later; let in-flight holders finish.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let results: Vec<(Vec<u8>, Result<Outcome, ConsumerError>)> = stream::iter(pending.drain(..))
            .map(|raw| {
                let lock = serialize_same_event.then(|| {
                    let id = serde_json::from_slice::<serde_json::Value>(&raw).unwrap()["id"].to_string();
                    locks.lock().unwrap().entry(id).or_default().clone()
                });
                async move {
                    let _guard = match &lock {
                        Some(l) => Some(l.lock().await),
                        None => None,
                    };
                    let result = consumer.handle_json(&raw).await;
                    (raw, result)
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        for (raw, result) in results {
            match result {
                Ok(outcome) => report.outcomes.push(outcome),
                Err(e) if e.is_retryable() => {
                    report.redeliveries += 1;
                    pending.push(raw);
                }
                Err(e) => panic!("a valid delivery failed for good: {e}"),
            }
        }
    }
    report
}

/// `events` × `copies` deliveries, shuffled with a fixed seed.
pub fn duplicated_and_shuffled(events: &[Vec<u8>], copies: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut all: Vec<Vec<u8>> = events.iter().flat_map(|e| std::iter::repeat_n(e.clone(), copies)).collect();
    all.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    all
}

// ---- moto -------------------------------------------------------------------

/// One raw HTTP/1.0 request to moto (for its own API and the odd call the SDKs
/// we depend on do not cover). Returns status and body.
pub fn moto_http(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let endpoint = testkit::moto_endpoint();
    let authority = endpoint.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let mut stream = std::net::TcpStream::connect(&authority)
        .unwrap_or_else(|e| panic!("moto at {endpoint} does not answer: {e}"));
    let mut request =
        format!("{method} {path} HTTP/1.0\r\nHost: {authority}\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = String::from_utf8(response).expect("moto answers UTF-8");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    (status, body.to_owned())
}

/// An email moto's SES recorded.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct MotoSentEmail {
    pub id: String,
    pub source: String,
    pub subject: String,
    pub body: String,
    pub destinations: HashMap<String, Vec<String>>,
}

/// Every email moto's SES has accepted from `sender` (moto is shared by the run).
pub fn moto_sent_emails(sender: &str) -> Vec<MotoSentEmail> {
    let (status, body) = moto_http("GET", "/moto-api/data.json", &[], "");
    assert_eq!(status, 200, "{body}");
    let data: serde_json::Value = serde_json::from_str(&body).unwrap();
    let messages = data["ses"]["Message"].as_array().cloned().unwrap_or_default();
    messages
        .into_iter()
        .map(|m| serde_json::from_value::<MotoSentEmail>(m).unwrap())
        .filter(|m| m.source == sender)
        .collect()
}

pub async fn create_interactions_table(client: &aws_sdk_dynamodb::Client, name: &str) {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("userId")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("eventId")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder().attribute_name("userId").key_type(KeyType::Hash).build().unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder().attribute_name("eventId").key_type(KeyType::Range).build().unwrap(),
        )
        .send()
        .await
        .unwrap();
}

/// The students table as the template declares it: `classId` hash, `studentId` range.
pub async fn create_students_table(client: &aws_sdk_dynamodb::Client, name: &str) {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    let key =
        |name: &str, kind| KeySchemaElement::builder().attribute_name(name).key_type(kind).build().unwrap();
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("classId"))
        .attribute_definitions(attribute("studentId"))
        .key_schema(key("classId", KeyType::Hash))
        .key_schema(key("studentId", KeyType::Range))
        .send()
        .await
        .unwrap();
}

pub async fn create_ledger_table(client: &aws_sdk_dynamodb::Client, name: &str) {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("effectKey")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder().attribute_name("effectKey").key_type(KeyType::Hash).build().unwrap(),
        )
        .send()
        .await
        .unwrap();
}

/// Every interaction in a DynamoDB table, by event id.
pub async fn scan_all(store: &dyn InteractionStore) -> Vec<Interaction> {
    let mut all = Vec::new();
    let mut pages = store.scan_segment(0, 1);
    while let Some(page) = pages.next().await {
        let page = page.unwrap();
        assert!(page.rejected.is_empty(), "{:?}", page.rejected);
        all.extend(page.interactions);
    }
    all.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    all
}

// ---- SES events ---------------------------------------------------------------

/// An SES event as a configuration set's EventBridge destination delivers it.
/// `envelope_id` differs between two publications of one report, as it may in AWS.
pub fn ses_event(envelope_id: &str, kind: &str, feedback_id: &str, address: &str) -> Vec<u8> {
    let mail = serde_json::json!({
        "timestamp": "2026-12-07T02:00:02Z", "source": "no-reply@student-system.local",
        "messageId": format!("msg-{feedback_id}"), "destination": [address],
        "tags": {"ses:configuration-set": ["ranking-email"]},
    });
    let (detail_type, detail) = match kind {
        "permanent" | "transient" => (
            "Email Bounced",
            serde_json::json!({"eventType": "Bounce", "mail": mail, "bounce": {
                "bounceType": if kind == "permanent" { "Permanent" } else { "Transient" },
                "bounceSubType": if kind == "permanent" { "General" } else { "MailboxFull" },
                "feedbackId": feedback_id, "timestamp": "2026-12-07T02:00:04Z",
                "bouncedRecipients": [{"emailAddress": address, "action": "failed", "status": "5.1.1"}]}}),
        ),
        "complaint" => (
            "Email Complaint Received",
            serde_json::json!({"eventType": "Complaint", "mail": mail, "complaint": {
                "feedbackId": feedback_id, "complaintFeedbackType": "abuse", "timestamp": "2026-12-07T02:00:09Z",
                "complainedRecipients": [{"emailAddress": address}]}}),
        ),
        "delivery" => (
            "Email Delivered",
            serde_json::json!({"eventType": "Delivery", "mail": mail, "delivery": {"recipients": [address]}}),
        ),
        other => panic!("no SES event kind {other}"),
    };
    serde_json::to_vec(&serde_json::json!({
        "version": "0", "id": envelope_id, "detail-type": detail_type, "source": "aws.ses",
        "account": "123456789012", "time": "2026-12-07T02:00:05Z", "region": "us-east-1",
        "resources": [], "detail": detail,
    }))
    .unwrap()
}

//! How fast the consumer handles deliveries on its embedded adapters (SQLite store
//! and ledger in WAL mode, outbox of `.eml` files): first deliveries, pure
//! redeliveries, interaction-only events, and first deliveries 16 at a time; then
//! announcements to a class of 500: unpaced, paced, and against a transport with
//! SES-like latency, with the rate the sends actually kept.
//! Run with `scripts/bench-event-consumer`; prints two Markdown tables.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use event_consumer::mail::{MailError, MailReceipt, Mailer, OutgoingEmail};
use event_consumer::suppression::SuppressionReason;

use event_consumer::consumer::{Consumer, EmailSettings};
use event_consumer::ledger::embedded::EmbeddedLedger;
use event_consumer::mail::outbox::OutboxMailer;
use event_consumer::retrain::RetrainNotConfigured;
use event_consumer::{ConsumerError, Language};
use futures::stream::{self, StreamExt};
use schemas::EmailAddress;
use store::embedded::EmbeddedStore;

const DELIVERIES: usize = 2_000;

fn consumer(data_dir: &std::path::Path) -> Consumer {
    consumer_with(data_dir, Arc::new(OutboxMailer::in_data_dir(data_dir)))
}

fn consumer_with(data_dir: &std::path::Path, mailer: Arc<dyn Mailer>) -> Consumer {
    Consumer::new(
        Arc::new(EmbeddedStore::open_in(data_dir).unwrap()),
        mailer,
        Arc::new(EmbeddedLedger::open_in(data_dir).unwrap()),
        Arc::new(RetrainNotConfigured { reason: "not benchmarked".into() }),
        EmailSettings {
            sender: EmailAddress::parse("no-reply@student-system.local").unwrap(),
            language: Language::Vi,
        },
    )
}

fn event(n: usize, detail_type: &str, source: &str, detail: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "version": "0", "id": format!("{n:08x}-bench-4000-8000-000000000000"), "detail-type": detail_type,
        "source": source, "account": "123456789012", "time": "2026-11-20T10:00:00Z",
        "region": "ap-southeast-1", "resources": [], "detail": detail
    }))
    .unwrap()
}

fn enrollment(n: usize) -> Vec<u8> {
    event(
        n,
        "student.enrolled",
        "api.student",
        serde_json::json!({"studentId": format!("s-{}", n % 500), "classId": format!("c-{n}"),
                           "email": format!("student{n}@example.edu.vn"), "studentName": "Nguyễn Văn An"}),
    )
}

fn submission(n: usize) -> Vec<u8> {
    event(
        n,
        "student.submitAssignment",
        "api.assignment",
        serde_json::json!({"studentId": format!("s-{}", n % 500), "classId": format!("c-{}", n % 300),
                           "fileUrl": "s3://uploads/hw.pdf"}),
    )
}

async fn run(consumer: &Consumer, events: &[Vec<u8>], concurrency: usize) -> Duration {
    let started = Instant::now();
    let results: Vec<Result<_, ConsumerError>> = stream::iter(events)
        .map(|raw| consumer.handle_json(raw))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = started.elapsed();
    for r in results {
        r.expect("every benchmark delivery succeeds");
    }
    elapsed
}

/// The outbox, after `latency` (SES's round trip), noting when each email left.
struct TimedMailer {
    inner: OutboxMailer,
    latency: Duration,
    sent_at: Mutex<Vec<Instant>>,
}

#[async_trait]
impl Mailer for TimedMailer {
    async fn send(&self, email: &OutgoingEmail) -> Result<MailReceipt, MailError> {
        tokio::time::sleep(self.latency).await;
        let receipt = self.inner.send(email).await?;
        self.sent_at.lock().unwrap().push(Instant::now());
        Ok(receipt)
    }

    async fn suppress_destination(&self, a: &EmailAddress, r: SuppressionReason) -> Result<(), MailError> {
        self.inner.suppress_destination(a, r).await
    }
}

const CLASS_SIZE: usize = 500;

fn announcement(n: usize, class: &str) -> Vec<u8> {
    event(
        n,
        "teacher.sendAnnouncement",
        "api.teacher",
        serde_json::json!({"teacherId": "t-7", "classId": class, "content": "Lớp nghỉ vào thứ Sáu.\nHọc bù thứ Bảy."}),
    )
}

/// One announcement to a fresh class of CLASS_SIZE: (seconds, copies sent, kept rate,
/// most sends in any one second) and the seconds a redelivery takes.
async fn announce(rate: f64, latency: Duration) -> (f64, usize, f64, usize, f64) {
    let dir = tempfile::tempdir().unwrap();
    let mailer = Arc::new(TimedMailer {
        inner: OutboxMailer::in_data_dir(dir.path()),
        latency: Duration::ZERO,
        sent_at: Mutex::default(),
    });
    let enroll = consumer_with(dir.path(), mailer.clone());
    let class: Vec<Vec<u8>> = (0..CLASS_SIZE)
        .map(|n| {
            event(n, "student.enrolled", "api.student",
                serde_json::json!({"studentId": format!("s-{n:04}"), "classId": "math-101",
                                   "email": format!("student{n}@example.edu.vn"), "studentName": "Nguyễn Văn An"}))
        })
        .collect();
    run(&enroll, &class, 8).await;
    let mailer = Arc::new(TimedMailer {
        inner: OutboxMailer::in_data_dir(dir.path()),
        latency,
        sent_at: Mutex::default(),
    });
    let consumer =
        consumer_with(dir.path(), mailer.clone()).with_announcement_pacing(rate, Duration::from_secs(600));
    let raw = announcement(CLASS_SIZE + 1, "math-101");
    let started = Instant::now();
    let outcome = consumer.handle_json(&raw).await.expect("the announcement is sent");
    let secs = started.elapsed().as_secs_f64();
    let sent = outcome.announcement.expect("an announcement outcome").sent;
    let times = mailer.sent_at.lock().unwrap().clone();
    let span = times.last().unwrap().duration_since(times[0]).as_secs_f64();
    let kept = (times.len() - 1) as f64 / span;
    let busiest = times
        .iter()
        .enumerate()
        .map(|(i, t)| times[i..].iter().take_while(|u| u.duration_since(*t) < Duration::from_secs(1)).count())
        .max()
        .unwrap();
    let again = Instant::now();
    let redelivery = consumer.handle_json(&raw).await.expect("a redelivery is fine");
    assert_eq!(redelivery.announcement.unwrap().sent, 0, "a redelivery sends nothing");
    (secs, sent, kept, busiest, again.elapsed().as_secs_f64())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let enrollments: Vec<Vec<u8>> = (0..DELIVERIES).map(enrollment).collect();
    let submissions: Vec<Vec<u8>> = (DELIVERIES..2 * DELIVERIES).map(submission).collect();
    let concurrent: Vec<Vec<u8>> = (2 * DELIVERIES..3 * DELIVERIES).map(enrollment).collect();

    let dir = tempfile::tempdir().unwrap();
    let consumer = consumer(dir.path());
    let rows = [
        (
            "enrollment, first delivery (interaction + claim + .eml + done)",
            run(&consumer, &enrollments, 1).await,
        ),
        ("enrollment, redelivery (nothing written)", run(&consumer, &enrollments, 1).await),
        ("submission, first delivery (interaction only)", run(&consumer, &submissions, 1).await),
        ("enrollment, first delivery, 16 concurrent", run(&consumer, &concurrent, 16).await),
    ];

    println!("| scenario | deliveries | total (s) | per delivery (ms) | deliveries/s |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (name, elapsed) in rows {
        let secs = elapsed.as_secs_f64();
        println!(
            "| {name} | {DELIVERIES} | {secs:.2} | {:.3} | {:.0} |",
            secs * 1000.0 / DELIVERIES as f64,
            DELIVERIES as f64 / secs
        );
    }

    println!();
    println!(
        "| announcement to {CLASS_SIZE} students | total (s) | sent | kept rate (/s) | most in 1 s | redelivery (s) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (name, rate, latency_ms) in [
        ("unpaced, outbox", 0.0, 0),
        ("unpaced, 50 ms per send (SES-like), 4 in flight", 0.0, 50),
        ("paced at 10/s (the default), 50 ms per send", 10.0, 50),
        ("paced at 50/s, 50 ms per send", 50.0, 50),
    ] {
        let (secs, sent, kept, busiest, redelivery) = announce(rate, Duration::from_millis(latency_ms)).await;
        println!("| {name} | {secs:.2} | {sent} | {kept:.1} | {busiest} | {redelivery:.2} |");
    }
}

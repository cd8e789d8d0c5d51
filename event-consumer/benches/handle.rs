//! How fast the consumer handles deliveries on its embedded adapters (SQLite store
//! and ledger in WAL mode, outbox of `.eml` files): first deliveries, pure
//! redeliveries, interaction-only events, and first deliveries 16 at a time.
//! Run with `scripts/bench-event-consumer`; prints a Markdown table.

use std::sync::Arc;
use std::time::{Duration, Instant};

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
    Consumer::new(
        Arc::new(EmbeddedStore::open_in(data_dir).unwrap()),
        Arc::new(OutboxMailer::in_data_dir(data_dir)),
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
}

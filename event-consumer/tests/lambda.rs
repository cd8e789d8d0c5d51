//! The binary as a Lambda: a stand-in for the Lambda Runtime API on 127.0.0.1
//! hands it EventBridge events, and records what it answers; the AWS adapters
//! talk to moto. Shows the one binary switches to Lambda mode on
//! `AWS_LAMBDA_RUNTIME_API`, answers bad events with a `NonRetryable.*` error
//! type, and logs (JSON, as Lambda's advanced logging wants) without personal data.

mod common;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_event-consumer");

/// What the function posted back for one invocation.
#[derive(Debug)]
struct Answer {
    request_id: String,
    kind: String,
    body: serde_json::Value,
}

struct FakeRuntimeApi {
    address: String,
    answers: mpsc::Receiver<Answer>,
}

/// Serves `/runtime/invocation/next` from `events` (then holds the request open,
/// as the real API does between invocations) and records every answer.
fn fake_runtime_api(events: Vec<(String, Vec<u8>)>) -> FakeRuntimeApi {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let queue = Arc::new(Mutex::new(VecDeque::from(events)));
    let (sender, answers) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (queue, sender) = (queue.clone(), sender.clone());
            std::thread::spawn(move || serve_connection(stream, &queue, &sender));
        }
    });
    FakeRuntimeApi { address, answers }
}

fn serve_connection(
    stream: TcpStream,
    queue: &Mutex<VecDeque<(String, Vec<u8>)>>,
    answers: &mpsc::Sender<Answer>,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut content_length = 0;
        let mut chunked = false;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => content_length = value.trim().parse().unwrap(),
                "transfer-encoding" => chunked = value.trim().eq_ignore_ascii_case("chunked"),
                _ => {}
            }
        }
        let body = if chunked { read_chunked(&mut reader) } else { read_exact(&mut reader, content_length) };
        let path = request_line.split_whitespace().nth(1).unwrap_or("").to_owned();
        if path.ends_with("/invocation/next") {
            let next = queue.lock().unwrap().pop_front();
            let Some((request_id, event)) = next else {
                // No more events: hold the request, like the real API between invocations.
                std::thread::sleep(Duration::from_secs(3600));
                return;
            };
            let deadline =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
                    + 60_000;
            write!(
                writer,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLambda-Runtime-Aws-Request-Id: {request_id}\r\n\
                 Lambda-Runtime-Deadline-Ms: {deadline}\r\n\
                 Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:123456789012:function:event-consumer\r\n\
                 Content-Length: {}\r\n\r\n",
                event.len()
            )
            .unwrap();
            writer.write_all(&event).unwrap();
        } else {
            // .../invocation/{id}/response or .../invocation/{id}/error
            let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            if parts.len() == 5 {
                let _ = answers.send(Answer {
                    request_id: parts[3].to_owned(),
                    kind: parts[4].to_owned(),
                    body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
                });
            }
            writer.write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        }
        writer.flush().unwrap();
    }
}

fn read_exact(reader: &mut impl Read, len: usize) -> Vec<u8> {
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    body
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size).unwrap();
        let size = usize::from_str_radix(size.trim().split(';').next().unwrap(), 16).unwrap();
        let chunk = read_exact(reader, size + 2);
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

#[tokio::test]
async fn the_binary_serves_eventbridge_invocations_as_a_lambda() {
    let config = testkit::moto_config().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&config);
    let interactions = testkit::unique_name("interactions");
    let ledger = testkit::unique_name("ledger");
    create_interactions_table(&dynamo, &interactions).await;
    create_ledger_table(&dynamo, &ledger).await;
    let students = testkit::unique_name("students");
    create_students_table(&dynamo, &students).await;
    let sender = format!("{}@student-system.test", testkit::unique_name("no-reply"));
    aws_sdk_sesv2::Client::new(&config).create_email_identity().email_identity(&sender).send().await.unwrap();

    let api = fake_runtime_api(vec![
        ("req-1".into(), fixture("student_enrolled.json")),
        ("req-2".into(), fixture("student_enrolled.json")),
        ("req-3".into(), fixture("bad_invalid_email.json")),
        ("req-4".into(), fixture("ranking_request_update.json")),
        // To math-101, whose roster req-1 put student 1024 on.
        ("req-5".into(), fixture("teacher_send_announcement.json")),
    ]);
    let mut child = Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", &api.address)
        .env("AWS_LAMBDA_FUNCTION_NAME", "event-consumer")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .env("AWS_ENDPOINT_URL", testkit::moto_endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("INTERACTIONS_TABLE", &interactions)
        .env("IDEMPOTENCY_TABLE", &ledger)
        .env("STUDENTS_TABLE", &students)
        .env("MAIL_TRANSPORT", "ses")
        .env("EMAIL_SENDER", &sender)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let mut answers = Vec::new();
    for _ in 0..5 {
        match api.answers.recv_timeout(Duration::from_secs(60)) {
            Ok(answer) => answers.push(answer),
            Err(e) => {
                child.kill().unwrap();
                let output = child.wait_with_output().unwrap();
                panic!(
                    "no answer from the function ({e}); so far {answers:?}\nstdout:\n{}\nstderr:\n{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
    }
    child.kill().unwrap();
    let output = child.wait_with_output().unwrap();
    let logs =
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    answers.sort_by(|a, b| a.request_id.cmp(&b.request_id));

    let kinds: Vec<(&str, &str)> = answers.iter().map(|a| (a.request_id.as_str(), a.kind.as_str())).collect();
    assert_eq!(
        kinds,
        [
            ("req-1", "response"),
            ("req-2", "response"),
            ("req-3", "error"),
            ("req-4", "error"),
            ("req-5", "response")
        ]
    );
    let announcement = &answers[4].body["announcement"];
    assert_eq!(
        (announcement["students"].as_u64(), announcement["sent"].as_u64()),
        (Some(1), Some(1)),
        "{announcement}"
    );
    assert_eq!(answers[0].body["interaction"], "stored", "{:?}", answers[0].body);
    assert_eq!(answers[0].body["email"]["status"], "performed", "{:?}", answers[0].body);
    assert_eq!(answers[1].body["interaction"], "duplicate", "{:?}", answers[1].body);
    assert_eq!(answers[1].body["email"]["status"], "alreadyDone", "{:?}", answers[1].body);
    assert_eq!(answers[2].body["errorType"], "NonRetryable.RejectedEvent", "{:?}", answers[2].body);
    assert!(
        answers[2].body["errorMessage"].as_str().unwrap().contains("invalid email"),
        "{:?}",
        answers[2].body
    );
    assert_eq!(answers[3].body["errorType"], "NonRetryable.RetrainFailure", "{:?}", answers[3].body);
    assert!(
        answers[3].body["errorMessage"].as_str().unwrap().contains("TRAINING_EXPORT_FUNCTION is not set"),
        "{:?}",
        answers[3].body
    );

    let sent = moto_sent_emails(&sender);
    assert_eq!(sent.len(), 2, "the confirmation and the announcement: {sent:?}");
    assert_eq!(sent[1].subject, "Thông báo lớp math-101");
    assert_eq!(sent[1].destinations["ToAddresses"], vec!["an.nguyen@example.edu.vn".to_owned()]);
    let store = store::dynamodb::DynamoInteractionStore::new(dynamo, &interactions);
    assert_eq!(scan_all(&store).await.len(), 1);

    // JSON logs, with the fields an operator filters on, and nothing personal.
    assert!(logs.contains("\"retryable\":false"), "{logs}");
    assert!(logs.contains("0d079340-135a-c8c6-95c2-41fb8f496c53"), "{logs}");
    // A rejected event is still traceable by its id, for the dead-letter queue.
    assert!(logs.contains("a1b2c3d4-0000-4000-8000-000000000003"), "{logs}");
    assert!(logs.contains("retrain: not configured"), "{logs}");
    for personal in ["an.nguyen", "example.edu.vn", "Nguyễn", "Toán cao cấp", "Lớp nghỉ", &sender] {
        assert!(!logs.contains(personal), "logs leak {personal:?}:\n{logs}");
    }
}

//! The binary as a person uses it locally: `event-consumer handle --event FILE`
//! (or stdin), with no AWS configuration at all.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_event-consumer");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// The binary with a clean environment: nothing from AWS, data in `data_dir`.
fn consumer(data_dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    for var in [
        "AWS_LAMBDA_RUNTIME_API",
        "INTERACTIONS_TABLE",
        "IDEMPOTENCY_TABLE",
        "MAIL_TRANSPORT",
        "EMAIL_SENDER",
        "EMAIL_LANGUAGE",
        "TRAINING_EXPORT_FUNCTION",
        "AWS_ENDPOINT_URL",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("DATA_DIR", data_dir)
        // Never find a real training-export that happens to be built next to us.
        .env("TRAINING_EXPORT_BIN", data_dir.join("no-such-training-export"));
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run(cmd: &mut Command) -> (Option<i32>, String, String) {
    let Output { status, stdout, stderr } = cmd.output().expect("the binary runs");
    (status.code(), text(&stdout), text(&stderr))
}

fn stored_count(data_dir: &Path) -> u64 {
    store::embedded::EmbeddedStore::open_in(data_dir).unwrap().count_blocking().unwrap()
}

#[test]
fn handle_writes_once_and_says_so_the_second_time() {
    let dir = tempfile::tempdir().unwrap();
    let event = fixture("student_enrolled.json");
    let (code, out, err) = run(consumer(dir.path()).args(["handle", "--event"]).arg(&event));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("stored interaction: student 1024 → class math-101 (enrolled)"), "{out}");
    let eml = dir.path().join("outbox/0d079340-135a-c8c6-95c2-41fb8f496c53.eml");
    assert!(out.contains(&format!("email written to {}", eml.display())), "{out}");
    assert!(std::fs::read_to_string(&eml).unwrap().contains("Subject: =?utf-8?"));

    let (code, out, err) = run(consumer(dir.path()).args(["handle", "--event"]).arg(&event));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("duplicate: nothing written"), "{out}");
    assert!(out.contains("duplicate: email already sent for this event"), "{out}");
    assert_eq!(stored_count(dir.path()), 1);
    assert_eq!(std::fs::read_dir(dir.path().join("outbox")).unwrap().count(), 1);
}

#[test]
fn handle_reads_the_event_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = consumer(dir.path())
        .arg("handle")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&std::fs::read(fixture("student_submit_assignment.json")).unwrap())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let out = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{out}{}", text(&output.stderr));
    assert!(out.contains("from standard input"), "{out}");
    assert!(out.contains("stored interaction: student 1024 → class math-101 (submitAssignment)"), "{out}");
    assert_eq!(stored_count(dir.path()), 1);
}

#[test]
fn a_bad_event_exits_non_zero_with_the_reason_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for (name, reason) in [
        ("bad_invalid_email.json", "invalid email"),
        ("bad_unknown_detail_type.json", "unknown detail-type"),
        ("bad_student_id_too_long.json", "257 characters"),
        ("bad_malformed.json", "malformed event"),
        ("bad_announcement_without_class.json", "invalid classId: is required"),
    ] {
        let (code, out, err) = run(consumer(dir.path()).args(["handle", "--event"]).arg(fixture(name)));
        assert_eq!(code, Some(65), "{name}: {out}{err}");
        assert!(err.contains(reason), "{name}: {err}");
        assert!(err.contains("nothing was written"), "{name}: {err}");
    }
    assert_eq!(stored_count(dir.path()), 0);
    assert!(!dir.path().join("outbox").exists());
}

#[test]
fn a_missing_event_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) =
        run(consumer(dir.path()).args(["handle", "--event"]).arg(dir.path().join("nope.json")));
    assert_eq!(code, Some(65));
    assert!(err.contains("reading the event"), "{err}");
}

#[test]
fn a_retrain_request_without_a_local_runner_fails_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) =
        run(consumer(dir.path()).args(["handle", "--event"]).arg(fixture("ranking_request_update.json")));
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("no local retrain runner"), "{err}");
    assert!(err.contains("cargo build --release -p training-export"), "{err}");
}

#[cfg(unix)]
#[test]
fn a_retrain_request_runs_the_local_training_export_once() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let runner = dir.path().join("training-export");
    let calls = dir.path().join("calls.txt");
    std::fs::write(&runner, format!("#!/bin/sh\necho \"$@\" >> '{}'\n", calls.display())).unwrap();
    std::fs::set_permissions(&runner, std::fs::Permissions::from_mode(0o755)).unwrap();
    let event = fixture("ranking_request_update.json");
    for expected in ["retrain: ", "duplicate: retrain already started"] {
        let (code, out, err) = run(consumer(dir.path())
            .env("TRAINING_EXPORT_BIN", &runner)
            .args(["handle", "--event"])
            .arg(&event));
        assert_eq!(code, Some(0), "{out}{err}");
        assert!(out.contains(expected), "{out}");
    }
    assert_eq!(std::fs::read_to_string(&calls).unwrap(), "run --trigger manual\n");
}

#[test]
fn english_emails_by_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run(consumer(dir.path())
        .env("EMAIL_LANGUAGE", "en")
        .args(["handle", "--event"])
        .arg(fixture("student_enrolled.json")));
    assert_eq!(code, Some(0), "{out}{err}");
    let eml =
        std::fs::read_to_string(dir.path().join("outbox/0d079340-135a-c8c6-95c2-41fb8f496c53.eml")).unwrap();
    assert!(eml.contains("Subject: Enrollment confirmed"), "{eml}");
}

#[test]
fn bad_configuration_exits_with_the_variable_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(consumer(dir.path())
        .env("MAIL_TRANSPORT", "ses")
        .args(["handle", "--event"])
        .arg(fixture("student_enrolled.json")));
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("EMAIL_SENDER"), "{err}");
    assert_eq!(stored_count(dir.path()), 0, "nothing handled with a bad configuration");
}

/// `publish` against moto: the app-side publisher from the command line.
#[tokio::test]
async fn publish_puts_the_event_on_the_bus_or_says_why_not() {
    let config = testkit::moto_config().await;
    let bus = testkit::unique_name("student-event-bus");
    aws_sdk_eventbridge::Client::new(&config).create_event_bus().name(&bus).send().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let publish = |bus: &str, detail_type: &str, detail: &str| {
        let mut cmd = consumer(dir.path());
        cmd.env("AWS_ENDPOINT_URL", testkit::moto_endpoint())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("EVENT_BUS_NAME", bus)
            .args(["publish", "--detail-type", detail_type, "--detail", detail]);
        run(&mut cmd)
    };

    let (code, out, err) = publish(&bus, "ranking.requestUpdate", r#"{"trigger":"manual"}"#);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(&format!("published ranking.requestUpdate from api.ranking on {bus}: event id ")),
        "{out}"
    );

    let (code, _, err) = publish(&bus, "student.graduated", "{}");
    assert_eq!(code, Some(65), "{err}");
    assert!(err.contains("unknown detail-type \"student.graduated\""), "{err}");
    let (code, _, err) = publish(&bus, "ranking.requestUpdate", r#"{"trigger":""}"#);
    assert_eq!(code, Some(65), "{err}");
    assert!(err.contains("invalid trigger"), "{err}");
    let (code, _, err) = publish(&bus, "student.enrolled", "not json");
    assert_eq!(code, Some(65), "{err}");
    assert!(err.contains("--detail is not JSON"), "{err}");

    let (code, _, err) =
        publish(&testkit::unique_name("no-such-bus"), "ranking.requestUpdate", r#"{"trigger":"manual"}"#);
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("error:"), "{err}");
}

/// An enrollment for `address` with its own event id, written into `dir`.
fn enrollment_to(dir: &Path, event_id: &str, address: &str) -> PathBuf {
    let mut event: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("student_enrolled.json")).unwrap()).unwrap();
    event["id"] = event_id.into();
    event["detail"]["email"] = address.into();
    let path = dir.join(format!("{event_id}.json"));
    std::fs::write(&path, serde_json::to_vec(&event).unwrap()).unwrap();
    path
}

#[test]
fn the_mailbox_simulator_bounces_offline_and_the_next_email_is_suppressed() {
    let dir = tempfile::tempdir().unwrap();
    let events = tempfile::tempdir().unwrap();
    let first = enrollment_to(
        events.path(),
        "7f1e0a52-0000-4000-8000-000000000001",
        "bounce@simulator.amazonses.com",
    );
    let (code, out, err) = run(consumer(dir.path()).args(["handle", "--event"]).arg(&first));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("email written to"), "the first email goes out: {out}");
    assert!(out.contains("simulated SES event"), "the simulator answers with a bounce: {out}");
    assert!(out.contains("SES Bounce: 1 address(es) suppressed"), "{out}");
    let pending = dir.path().join("outbox/ses-events");
    let still_pending: Vec<_> =
        std::fs::read_dir(&pending).unwrap().filter_map(Result::ok).filter(|e| e.path().is_file()).collect();
    assert!(still_pending.is_empty(), "a delivered event moves to handled/: {still_pending:?}");
    assert_eq!(std::fs::read_dir(pending.join("handled")).unwrap().count(), 1);

    // The same address (any case) on a new enrollment: no email, and it says why.
    let second = enrollment_to(
        events.path(),
        "7f1e0a52-0000-4000-8000-000000000002",
        "Bounce@Simulator.AmazonSES.com",
    );
    let (code, out, err) = run(consumer(dir.path()).args(["handle", "--event"]).arg(&second));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("stored interaction"), "the enrollment itself is kept: {out}");
    assert!(out.contains("email not sent: the address is suppressed"), "{out}");
    assert!(!out.contains("simulated SES event"), "nothing sent, nothing bounced: {out}");
    let emails = std::fs::read_dir(dir.path().join("outbox"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .count();
    assert_eq!(emails, 1, "only the first enrollment wrote an email");
    assert_eq!(stored_count(dir.path()), 2);
}

#[test]
fn an_announcement_reaches_the_class_enrolled_locally() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) =
        run(consumer(dir.path()).args(["handle", "--event"]).arg(fixture("student_enrolled.json")));
    assert_eq!(code, Some(0), "{out}{err}");
    let announcement = fixture("teacher_send_announcement.json");
    let (code, out, err) = run(consumer(dir.path()).args(["handle", "--event"]).arg(&announcement));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("announcement to class math-101: 1 student(s), 1 sent"), "{out}");
    let copy = dir.path().join("outbox/3b8d2f6e-1a9c-4e7b-8d5f-0c6a2e9b1f47.1024.eml");
    assert!(copy.exists(), "the student's copy is in the outbox: {out}");
    let (code, out, err) = run(consumer(dir.path()).args(["handle", "--event"]).arg(&announcement));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("0 sent, 0 suppressed (not sent), 1 already sent earlier"), "{out}");
}

/// Two people (or a script) running `handle` at once on one data directory is a
/// legitimate local use: every process waits for the shared store.db instead of
/// failing to open it, however fresh the file is.
#[test]
fn concurrent_handles_on_one_fresh_data_dir_all_succeed() {
    for round in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let events: Vec<PathBuf> = (0..16)
            .map(|i| {
                let event = enrollment_to(
                    dir.path(),
                    &format!("00000000-0000-4000-8000-00000{round:02}00{i:02}"),
                    &format!("student{i}@example.edu.vn"),
                );
                // A student per event, so each one is a new interaction.
                let mut value: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&event).unwrap()).unwrap();
                value["detail"]["studentId"] = format!("s{i}").into();
                std::fs::write(&event, serde_json::to_vec(&value).unwrap()).unwrap();
                event
            })
            .collect();
        let children: Vec<_> = events
            .iter()
            .map(|event| {
                consumer(dir.path())
                    .args(["handle", "--event"])
                    .arg(event)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let Output { status, stdout, stderr } = child.wait_with_output().unwrap();
            assert_eq!(status.code(), Some(0), "round {round}: {}{}", text(&stdout), text(&stderr));
        }
        assert_eq!(stored_count(dir.path()), 16, "round {round}");
        assert_eq!(std::fs::read_dir(dir.path().join("outbox")).unwrap().count(), 16, "round {round}");
    }
}

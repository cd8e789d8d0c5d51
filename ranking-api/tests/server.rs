//! The local server as a process: on bad model data it starts, listens and says why at `/health`,
//! instead of exiting 1.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The server process, stopped when the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `ranking-api` with only `env` set (and no demo seed), and waits for it to listen.
/// Returns the server, its address and how long it took to listen.
fn start(data_dir: &Path, env: &[(&str, &str)]) -> (Server, String, Duration) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ranking-api"))
        .args(["--addr", "127.0.0.1:0", "--no-demo-seed"])
        .env_clear()
        .env("DATA_DIR", data_dir)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let (tx, rx) = std::sync::mpsc::channel();
    // Reads the log to the end (a full pipe would block the server), reporting the address.
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("listening")
                && let Some(at) = line.find("addr=")
            {
                let _ = tx.send(line[at + 5..].split_whitespace().next().unwrap_or("").to_owned());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(20)).expect("the server listens within 20 s, not exits");
    (server, addr, started.elapsed())
}

async fn get(addr: &str, path: &str) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = &response[response.find("\r\n\r\n").unwrap() + 4..];
    (status, serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}")))
}

#[tokio::test]
async fn a_corrupt_models_dir_does_not_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let version = "20261122T020000Z-0123456789ab";
    std::fs::create_dir_all(models.join(version)).unwrap();
    std::fs::write(models.join(version).join("model.bin"), b"definitely not a model").unwrap();
    std::fs::write(models.join("LATEST"), format!("{version}\n")).unwrap();

    let (_server, addr, _) = start(dir.path(), &[]);
    let (status, health) = get(&addr, "/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["model"]["status"], "failed", "{health}");
    assert_eq!(health["model"]["problem"]["kind"], "corrupt_model", "{health}");
    assert_eq!(health["model"]["problem"]["version"], version);
    // An empty store: no popular items either, so a 503 that says why.
    let (status, body) = get(&addr, "/ranking/s-0001").await;
    assert_eq!(status, 503, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("corrupt_model"), "{message}");
}

#[tokio::test]
async fn an_unreachable_bucket_does_not_hold_the_start_past_its_deadline() {
    // A listener that never answers: only the deadline ends the model sync.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr, took) = start(
        dir.path(),
        &[
            ("DATA_BUCKET", "ranking-data"),
            ("MODEL_SYNC_TIMEOUT_MS", "500"),
            ("AWS_ENDPOINT_URL", &endpoint),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "AKIDTEST"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    assert!(took < Duration::from_secs(5), "listening after {took:?}");
    let (status, health) = get(&addr, "/health").await;
    assert_eq!(status, 200);
    let problem = &health["model"]["problem"];
    assert_eq!(problem["kind"], "bucket_unreachable", "{health}");
    assert_eq!(problem["object"], "s3://ranking-data/models/LATEST");
    // The S3 client's own timeouts are cut to the deadline: it or the deadline ends the call.
    let message = problem["message"].as_str().unwrap();
    assert!(message.contains("timed out") || message.contains("500 ms"), "{health}");
    drop(silent);
}

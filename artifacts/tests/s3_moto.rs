//! The S3 adapter against moto: single-shot puts, multipart uploads of several parts,
//! aborted and abandoned uploads. Uses the moto that `scripts/test` starts for multipart
//! uploads (`MOTO_MULTIPART_ENDPOINT`; see `testkit::moto_multipart_endpoint`).

use artifacts::{ObjectStore, S3Store, s3};
use aws_sdk_s3::Client;

async fn bucket() -> (Client, S3Store) {
    let config = testkit::moto_multipart_config().await;
    let client = s3::client(&config);
    let name = testkit::unique_name("artifacts");
    client.create_bucket().bucket(&name).send().await.expect("create bucket on moto");
    let store = S3Store::new(client.clone(), &name).with_part_size(s3::MIN_PART_SIZE).unwrap();
    (client, store)
}

async fn open_uploads(client: &Client, store: &S3Store) -> usize {
    let out = client.list_multipart_uploads().bucket(store.bucket()).send().await.unwrap();
    out.uploads().len()
}

/// Deterministic bytes that are not all alike, so misplaced parts would show.
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

#[tokio::test]
async fn small_objects_round_trip_with_one_put() {
    let (client, store) = bucket().await;
    let info = store.put("exports/r1/manifest.json", b"{\"rows\":3}").await.unwrap();
    assert_eq!(info.size, 10);
    assert_eq!(info.sha256, artifacts::sha256_hex(b"{\"rows\":3}"));
    assert_eq!(store.get("exports/r1/manifest.json").await.unwrap().unwrap(), b"{\"rows\":3}");
    assert_eq!(store.get("exports/r1/missing.json").await.unwrap(), None);
    assert_eq!(store.list("exports/").await.unwrap(), vec!["exports/r1/manifest.json"]);
    assert_eq!(open_uploads(&client, &store).await, 0);
    assert_eq!(store.location("a/b"), format!("s3://{}/a/b", store.bucket()));
}

#[tokio::test]
async fn large_objects_go_up_in_parts_and_read_back_whole() {
    let (client, store) = bucket().await;
    // 2.4 parts, written in uneven chunks that straddle part boundaries.
    let data = payload(s3::MIN_PART_SIZE * 12 / 5);
    let mut writer = store.begin("exports/r2/interactions.csv").await.unwrap();
    for chunk in data.chunks(1_234_567) {
        writer.write_all(chunk).await.unwrap();
    }
    assert_eq!(writer.bytes_written(), data.len() as u64);
    assert_eq!(open_uploads(&client, &store).await, 1, "the upload started before finish");
    assert_eq!(store.get("exports/r2/interactions.csv").await.unwrap(), None, "nothing visible yet");
    let info = writer.finish().await.unwrap();
    assert_eq!(info.size, data.len() as u64);
    assert_eq!(info.sha256, artifacts::sha256_hex(&data));
    let back = store.get("exports/r2/interactions.csv").await.unwrap().unwrap();
    assert!(back == data, "the object read back differs from what was written");
    let head = client.head_object().bucket(store.bucket()).key("exports/r2/interactions.csv").send().await;
    let etag = head.unwrap().e_tag().unwrap_or_default().to_owned();
    assert!(etag.ends_with("-3\""), "three parts make a multipart ETag: {etag}");
    assert_eq!(open_uploads(&client, &store).await, 0);
}

#[tokio::test]
async fn copy_to_streams_a_multipart_object_chunk_by_chunk() {
    let (_client, store) = bucket().await;
    let data = payload(s3::MIN_PART_SIZE * 12 / 5);
    let mut writer = store.begin("exports/r4/interactions.csv").await.unwrap();
    writer.write_all(&data).await.unwrap();
    writer.finish().await.unwrap();

    let mut out = Recorder::default();
    let copied = store.copy_to("exports/r4/interactions.csv", &mut out).await.unwrap();
    assert_eq!(copied, Some(data.len() as u64));
    assert!(out.bytes == data, "the copy differs from the object");
    assert!(out.writes > 1, "the body arrived in chunks, not collected: {} writes", out.writes);
    assert!(out.largest_write < data.len(), "no write held the whole object");

    let mut out = Recorder::default();
    assert_eq!(store.copy_to("exports/r4/missing.csv", &mut out).await.unwrap(), None);
    assert_eq!(out.writes, 0);
}

/// What `copy_to` writes, and how: how many writes, the largest.
#[derive(Default)]
struct Recorder {
    bytes: Vec<u8>,
    writes: usize,
    largest_write: usize,
}

impl tokio::io::AsyncWrite for Recorder {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.writes += 1;
        self.largest_write = self.largest_write.max(buf.len());
        self.bytes.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn an_aborted_upload_leaves_the_old_object_and_no_parts() {
    let (client, store) = bucket().await;
    store.put("models/current.json", b"old").await.unwrap();
    let mut writer = store.begin("models/current.json").await.unwrap();
    writer.write_all(&payload(s3::MIN_PART_SIZE + 10)).await.unwrap();
    assert_eq!(open_uploads(&client, &store).await, 1);
    writer.abort().await.unwrap();
    assert_eq!(open_uploads(&client, &store).await, 0);
    assert_eq!(store.get("models/current.json").await.unwrap().unwrap(), b"old");
}

#[tokio::test]
async fn a_dropped_writer_aborts_its_upload() {
    let (client, store) = bucket().await;
    let mut writer = store.begin("exports/r3/interactions.parquet").await.unwrap();
    writer.write_all(&payload(s3::MIN_PART_SIZE)).await.unwrap();
    assert_eq!(open_uploads(&client, &store).await, 1);
    drop(writer);
    // The abort runs in the background; give it a bounded number of chances.
    let mut open = 1;
    for _ in 0..50 {
        open = open_uploads(&client, &store).await;
        if open == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(open, 0, "the dropped upload was not aborted");
    assert_eq!(store.get("exports/r3/interactions.parquet").await.unwrap(), None);
}

#[tokio::test]
async fn a_missing_bucket_is_a_clear_error() {
    let config = testkit::moto_multipart_config().await;
    let store = S3Store::new(s3::client(&config), testkit::unique_name("no-such-bucket"));
    let err = store.put("k", b"x").await.unwrap_err();
    assert!(err.to_string().contains("PutObject"), "{err}");
    assert!(!err.is_retryable(), "a missing bucket does not appear by retrying: {err}");
}

//! Model versions in the data bucket, for the API inside Lambda: the pipeline publishes
//! `models/<version>/model.bin` and `models/LATEST` there; this copies the version
//! `LATEST` names into a local cache laid out like a model registry, so the same
//! [`ModelSlot`](super::embedded::ModelSlot) serves it and swaps versions.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use artifacts::{ArtifactError, ObjectStore};
use recommender::Version;
use tokio::time::Instant;

use super::embedded::bad_latest_message;
use crate::port::{ModelProblem, ModelProblemKind};

const MODELS: &str = "models";
const LATEST: &str = "LATEST";
const MODEL_FILE: &str = "model.bin";

/// How long one [`BucketModels::sync`] may take unless told otherwise (`MODEL_SYNC_TIMEOUT_MS`).
pub const DEFAULT_SYNC_TIMEOUT: Duration = Duration::from_secs(3);

pub struct BucketModels {
    objects: Arc<dyn ObjectStore>,
    cache: PathBuf,
    /// How long one sync may take, every request and the download included.
    timeout: Duration,
    /// A version refused as corrupt, and why: not downloaded again while `LATEST` names it.
    refused: Mutex<Option<(Version, ModelProblem)>>,
}

impl BucketModels {
    pub fn new(objects: Arc<dyn ObjectStore>, cache: impl Into<PathBuf>) -> Self {
        Self { objects, cache: cache.into(), timeout: DEFAULT_SYNC_TIMEOUT, refused: Mutex::new(None) }
    }

    /// Bounds each sync: past `timeout` it gives up with a `bucket_unreachable` problem.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    /// Copies the version the bucket's `LATEST` names into the cache, if it is new and loads.
    /// Returns the version copied, or `None` when there was nothing new. On failure the cache
    /// is unchanged (its `LATEST` never names a corrupt or partial copy) and the problem says
    /// which object was wrong and how.
    pub async fn sync(&self) -> Result<Option<String>, ModelProblem> {
        let deadline = Instant::now() + self.timeout;
        let latest_key = format!("{MODELS}/{LATEST}");
        let Some(latest) = self.get(&latest_key, None, deadline).await? else {
            return Ok(None);
        };
        let bad_latest = |message| ModelProblem {
            kind: ModelProblemKind::BadLatest,
            object: self.objects.location(&latest_key),
            version: None,
            message,
            retryable: false,
        };
        let name =
            std::str::from_utf8(&latest).map_err(|_| bad_latest(format!("{latest_key} is not text")))?;
        let name = name.trim();
        let version = Version::parse(name).map_err(|_| bad_latest(bad_latest_message(&latest_key, name)))?;
        let cached_latest = self.cache.join(LATEST);
        if std::fs::read_to_string(&cached_latest).is_ok_and(|v| v.trim() == version.as_str()) {
            return Ok(None);
        }
        if let Some((refused, problem)) = &*self.refused.lock().unwrap_or_else(|p| p.into_inner())
            && *refused == version
        {
            return Err(problem.clone());
        }
        let version_dir = self.cache.join(version.as_str());
        if !version_dir.join(MODEL_FILE).exists() {
            let key = format!("{MODELS}/{version}/{MODEL_FILE}");
            let named = Some(version.as_str());
            let bytes = self.get(&key, named, deadline).await?.ok_or_else(|| ModelProblem {
                kind: ModelProblemKind::MissingVersion,
                object: self.objects.location(&key),
                version: Some(version.to_string()),
                message: format!("{latest_key} names {version}, but {key} is missing"),
                retryable: false,
            })?;
            // Checked before it enters the cache: a corrupt file would otherwise be refused by
            // the slot on every cold start, and never fetched again once cached.
            let bytes = match tokio::task::spawn_blocking(move || {
                recommender::Model::from_bytes(&bytes).map(|_| bytes)
            })
            .await
            {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(e)) => {
                    let problem = ModelProblem {
                        kind: ModelProblemKind::CorruptModel,
                        object: self.objects.location(&key),
                        version: Some(version.to_string()),
                        message: format!("{key} is not a model this build can load: {e}"),
                        retryable: false,
                    };
                    *self.refused.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((version.clone(), problem.clone()));
                    return Err(problem);
                }
                Err(e) => return Err(self.storage_problem(&version_dir, format!("checking {key}: {e}"))),
            };
            write_version(&self.cache, &version_dir, &bytes)
                .map_err(|e| self.storage_problem(&self.cache, format!("{}: {e}", self.cache.display())))?;
        }
        // LATEST last, replaced whole: the registry never follows it to a partial copy.
        let tmp = self.cache.join(format!(".{LATEST}.tmp-{}", std::process::id()));
        std::fs::write(&tmp, format!("{version}\n"))
            .and_then(|()| std::fs::rename(&tmp, &cached_latest))
            .map_err(|e| self.storage_problem(&cached_latest, format!("{}: {e}", cached_latest.display())))?;
        Ok(Some(version.to_string()))
    }

    /// One object, by the sync's deadline.
    async fn get(
        &self,
        key: &str,
        version: Option<&str>,
        deadline: Instant,
    ) -> Result<Option<Vec<u8>>, ModelProblem> {
        let problem = |kind, message, retryable| ModelProblem {
            kind,
            object: self.objects.location(key),
            version: version.map(str::to_owned),
            message,
            retryable,
        };
        match tokio::time::timeout_at(deadline, self.objects.get(key)).await {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(e)) => {
                let kind = match e {
                    ArtifactError::S3 { .. } => ModelProblemKind::BucketUnreachable,
                    _ => ModelProblemKind::StorageError,
                };
                Err(problem(kind, e.to_string(), e.is_retryable()))
            }
            Err(_) => Err(problem(
                ModelProblemKind::BucketUnreachable,
                format!(
                    "no answer for {} within the {} ms the model sync may take (MODEL_SYNC_TIMEOUT_MS)",
                    self.objects.location(key),
                    self.timeout.as_millis()
                ),
                true,
            )),
        }
    }

    fn storage_problem(&self, path: &Path, message: String) -> ModelProblem {
        ModelProblem {
            kind: ModelProblemKind::StorageError,
            object: path.display().to_string(),
            version: None,
            message,
            retryable: true,
        }
    }
}

fn write_version(cache: &Path, version_dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(cache)?;
    let tmp = cache.join(format!(".tmp-download-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir(&tmp)?;
    std::fs::write(tmp.join(MODEL_FILE), bytes)?;
    std::fs::rename(&tmp, version_dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use artifacts::DirectoryStore;

    fn model(users: &[(&str, &str)]) -> recommender::Model {
        let rows = users.iter().enumerate().map(|(n, (u, i))| recommender::InteractionRow {
            user_id: (*u).into(),
            item_id: (*i).into(),
            timestamp: 1_767_225_600 + n as i64,
            event_type: "enrolled".into(),
            event_value: None,
        });
        recommender::train(rows, &recommender::TrainConfig::default()).unwrap()
    }

    async fn publish(bucket: &DirectoryStore, model: &recommender::Model) -> String {
        let version = model.info().version.clone();
        bucket.put(&format!("models/{version}/model.bin"), &model.to_bytes()).await.unwrap();
        bucket.put("models/LATEST", format!("{version}\n").as_bytes()).await.unwrap();
        version
    }

    #[tokio::test]
    async fn copies_the_latest_version_once_and_follows_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = DirectoryStore::new(dir.path().join("bucket"));
        let sync = BucketModels::new(Arc::new(bucket.clone()), dir.path().join("cache"));
        assert_eq!(sync.sync().await.unwrap(), None, "an empty bucket has nothing to copy");

        let first = publish(&bucket, &model(&[("u1", "A"), ("u1", "B"), ("u2", "A")])).await;
        assert_eq!(sync.sync().await.unwrap(), Some(first.clone()));
        assert_eq!(sync.sync().await.unwrap(), None, "nothing new the second time");
        let registry = recommender::ModelRegistry::open(sync.cache_dir()).unwrap();
        let (version, loaded) = registry.load_latest().unwrap();
        assert_eq!((version.as_str(), loaded.knows_user("u2")), (first.as_str(), true));

        let mut newer = model(&[("u1", "A"), ("u3", "C")]);
        // Versions sort by training time; make sure this one sorts after the first.
        while newer.info().version <= first {
            std::thread::sleep(std::time::Duration::from_millis(1100));
            newer = model(&[("u1", "A"), ("u3", "C")]);
        }
        let second = publish(&bucket, &newer).await;
        assert_eq!(sync.sync().await.unwrap(), Some(second.clone()));
        assert_eq!(registry.latest_version().unwrap().unwrap().as_str(), second);
    }

    #[tokio::test]
    async fn a_latest_pointing_nowhere_is_an_error_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = DirectoryStore::new(dir.path().join("bucket"));
        bucket.put("models/LATEST", b"20261122T020000Z-0123456789ab\n").await.unwrap();
        let sync = BucketModels::new(Arc::new(bucket), dir.path().join("cache"));
        let err = sync.sync().await.unwrap_err();
        assert_eq!(err.kind, ModelProblemKind::MissingVersion);
        assert_eq!(err.version.as_deref(), Some("20261122T020000Z-0123456789ab"));
        assert!(err.object.ends_with("models/20261122T020000Z-0123456789ab/model.bin"), "{}", err.object);
        assert!(err.message.contains("is missing"), "{err}");
        assert!(!dir.path().join("cache").join(LATEST).exists());
    }

    #[tokio::test]
    async fn a_corrupt_model_file_is_refused_before_it_is_cached() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = DirectoryStore::new(dir.path().join("bucket"));
        let good = model(&[("u1", "A"), ("u1", "B"), ("u2", "A")]);
        let version = good.info().version.clone();
        let bytes = good.to_bytes();
        let key = format!("models/{version}/model.bin");
        bucket.put(&key, &bytes[..bytes.len() / 2]).await.unwrap();
        bucket.put("models/LATEST", format!("{version}\n").as_bytes()).await.unwrap();
        let sync = BucketModels::new(Arc::new(bucket.clone()), dir.path().join("cache"));

        let err = sync.sync().await.unwrap_err();
        assert_eq!(err.kind, ModelProblemKind::CorruptModel, "{err}");
        assert_eq!(
            (err.object.as_str(), err.version.as_deref()),
            (bucket.location(&key).as_str(), Some(&*version))
        );
        assert!(err.message.contains(&key), "{err}");
        assert!(!err.retryable, "a corrupt file stays corrupt");
        let cache = dir.path().join("cache");
        assert!(!cache.join(LATEST).exists() && !cache.join(&version).exists(), "nothing corrupt is cached");
        assert_eq!(sync.sync().await.unwrap_err(), err, "still refused, and said so, while LATEST names it");

        // A good version published next is what recovers (a refused name is not fetched again).
        let newer = loop {
            let m = model(&[("u1", "A"), ("u3", "C")]);
            if m.info().version > version {
                break m;
            }
            std::thread::sleep(std::time::Duration::from_millis(1100));
        };
        let newer_version = newer.info().version.clone();
        bucket.put(&format!("models/{newer_version}/model.bin"), &newer.to_bytes()).await.unwrap();
        bucket.put("models/LATEST", format!("{newer_version}\n").as_bytes()).await.unwrap();
        assert_eq!(sync.sync().await.unwrap(), Some(newer_version));
    }

    #[tokio::test]
    async fn an_empty_or_garbled_latest_is_a_bad_latest() {
        for (content, expected) in [
            (&b""[..], "models/LATEST is empty"),
            (b"\n  \n", "models/LATEST is empty"),
            (b"../../etc/passwd", "not a model version name"),
            (b"\xff\xfe", "is not text"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let bucket = DirectoryStore::new(dir.path().join("bucket"));
            bucket.put("models/LATEST", content).await.unwrap();
            let sync = BucketModels::new(Arc::new(bucket.clone()), dir.path().join("cache"));
            let err = sync.sync().await.unwrap_err();
            assert_eq!(err.kind, ModelProblemKind::BadLatest, "{content:?}: {err}");
            assert_eq!(err.object, bucket.location("models/LATEST"));
            assert!(err.message.contains(expected), "{content:?}: {err}");
            assert!(!dir.path().join("cache").join(LATEST).exists());
        }
    }

    /// An S3 store at `endpoint`, with test credentials, bounded as the API bounds it.
    async fn s3_at(endpoint: &str, timeout: Duration) -> Arc<dyn ObjectStore> {
        let base = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(aws_sdk_personalizeruntime::config::Credentials::new(
                "AKIDTEST", "secret", None, None, "test",
            ))
            .load()
            .await;
        let config = crate::startup::s3_config(&base, aws_failure::timeouts::Service::S3.defaults(), timeout);
        Arc::new(artifacts::S3Store::new(artifacts::s3::client(&config), "models-bucket"))
    }

    #[tokio::test]
    async fn an_unreachable_bucket_is_reported_within_the_deadline() {
        // Nothing listens on a port just released; a listener that never answers holds the
        // connection open, so only the deadline ends the wait.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let silent_addr = silent.local_addr().unwrap();
        let timeout = Duration::from_millis(400);
        for endpoint in [format!("http://{closed}"), format!("http://{silent_addr}")] {
            let dir = tempfile::tempdir().unwrap();
            let objects = s3_at(&endpoint, timeout).await;
            let sync = BucketModels::new(objects, dir.path().join("cache")).with_timeout(timeout);
            let started = std::time::Instant::now();
            let err = sync.sync().await.unwrap_err();
            let took = started.elapsed();
            assert!(took < timeout + Duration::from_millis(600), "{endpoint}: took {took:?}");
            assert_eq!(err.kind, ModelProblemKind::BucketUnreachable, "{endpoint}: {err}");
            assert_eq!(err.object, "s3://models-bucket/models/LATEST");
            assert!(err.retryable, "{endpoint}: the network may come back");
            assert!(!dir.path().join("cache").join(LATEST).exists());
        }
        drop(silent);
    }
}

//! Model versions in the data bucket, for the API inside Lambda: the pipeline publishes
//! `models/<version>/model.bin` and `models/LATEST` there; this copies the version
//! `LATEST` names into a local cache laid out like a model registry, so the same
//! [`ModelSlot`](super::embedded::ModelSlot) serves it and swaps versions.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use artifacts::ObjectStore;
use recommender::Version;

const MODELS: &str = "models";
const LATEST: &str = "LATEST";
const MODEL_FILE: &str = "model.bin";

pub struct BucketModels {
    objects: Arc<dyn ObjectStore>,
    cache: PathBuf,
}

impl BucketModels {
    pub fn new(objects: Arc<dyn ObjectStore>, cache: impl Into<PathBuf>) -> Self {
        Self { objects, cache: cache.into() }
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    /// Copies the version the bucket's `LATEST` names into the cache, if it is new.
    /// Returns the version copied, or `None` when there was nothing new.
    pub async fn sync(&self) -> Result<Option<String>, String> {
        let latest_key = format!("{MODELS}/{LATEST}");
        let Some(latest) = self.objects.get(&latest_key).await.map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let name = String::from_utf8_lossy(&latest).trim().to_owned();
        let version = Version::parse(&name).map_err(|e| format!("{latest_key}: {e}"))?;
        let cached_latest = self.cache.join(LATEST);
        if std::fs::read_to_string(&cached_latest).is_ok_and(|v| v.trim() == version.as_str()) {
            return Ok(None);
        }
        let version_dir = self.cache.join(version.as_str());
        if !version_dir.join(MODEL_FILE).exists() {
            let key = format!("{MODELS}/{version}/{MODEL_FILE}");
            let bytes = self
                .objects
                .get(&key)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("{latest_key} names {version}, but {key} is missing"))?;
            write_version(&self.cache, &version_dir, &bytes)
                .map_err(|e| format!("{}: {e}", self.cache.display()))?;
        }
        // LATEST last, replaced whole: the registry never follows it to a partial copy.
        let tmp = self.cache.join(format!(".{LATEST}.tmp-{}", std::process::id()));
        std::fs::write(&tmp, format!("{version}\n"))
            .and_then(|()| std::fs::rename(&tmp, &cached_latest))
            .map_err(|e| format!("{}: {e}", cached_latest.display()))?;
        Ok(Some(version.to_string()))
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
        assert!(err.contains("is missing"), "{err}");
        assert!(!dir.path().join("cache").join(LATEST).exists());
    }
}

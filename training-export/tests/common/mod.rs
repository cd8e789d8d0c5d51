//! Test doubles shared by this crate's integration tests (each test file that needs them
//! says `mod common;`).

use std::sync::atomic::{AtomicBool, Ordering};

use artifacts::{ArtifactError, DirectoryStore, ObjectInfo, ObjectStore, ObjectWriter};
use async_trait::async_trait;

/// A directory store that fails, once and retryably, the put of the object whose key ends
/// with `key_suffix`: with a part's record, the conversion stops in the middle of that
/// file, after its CSV and Parquet parts were written.
pub struct FailOnce {
    inner: DirectoryStore,
    key_suffix: &'static str,
    failed: AtomicBool,
}

impl FailOnce {
    pub fn new(inner: DirectoryStore, key_suffix: &'static str) -> Self {
        Self { inner, key_suffix, failed: AtomicBool::new(false) }
    }
}

#[async_trait]
impl ObjectStore for FailOnce {
    async fn begin(&self, key: &str) -> Result<Box<dyn ObjectWriter>, ArtifactError> {
        if key.ends_with(self.key_suffix) && !self.failed.swap(true, Ordering::SeqCst) {
            return Err(ArtifactError::Io {
                path: key.to_owned(),
                source: std::io::Error::new(std::io::ErrorKind::TimedOut, "injected"),
            });
        }
        self.inner.begin(key).await
    }

    async fn put(&self, key: &str, bytes: &[u8]) -> Result<ObjectInfo, ArtifactError> {
        let mut writer = self.begin(key).await?;
        writer.write_all(bytes).await?;
        writer.finish().await
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ArtifactError> {
        self.inner.get(key).await
    }

    async fn copy_to(
        &self,
        key: &str,
        writer: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    ) -> Result<Option<u64>, ArtifactError> {
        self.inner.copy_to(key, writer).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, ArtifactError> {
        self.inner.list(prefix).await
    }

    fn location(&self, key: &str) -> String {
        self.inner.location(key)
    }
}

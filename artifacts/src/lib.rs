//! Where exports and model versions live. One port, [`ObjectStore`], with two adapters:
//!
//! * [`s3::S3Store`] in AWS: large objects go up as S3 multipart uploads while they are
//!   being written, so memory holds one part (8 MiB by default), never the whole file;
//!   a failed or abandoned upload is aborted, so no partial object is ever visible.
//! * [`dir::DirectoryStore`] on a laptop: a temporary file in the target directory,
//!   fsynced and renamed into place on finish, so a failed write leaves nothing behind.
//!
//! Writers hash what they write: [`ObjectWriter::finish`] returns the size and SHA-256
//! of the object, which is what an export's manifest records.

pub mod dir;
#[cfg(feature = "s3")]
pub mod s3;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

pub use dir::DirectoryStore;
#[cfg(feature = "s3")]
pub use s3::S3Store;

/// What was stored: the key, its size in bytes and the hex SHA-256 of its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("S3 {operation} on s3://{bucket}/{key}: {message}")]
    S3 { operation: &'static str, bucket: String, key: String, message: String, retryable: bool },
    #[error("part size {0} bytes is below the S3 minimum of 5 MiB")]
    PartTooSmall(usize),
    #[error("the writer for {0} was already finished or aborted")]
    Closed(String),
}

impl ArtifactError {
    /// Whether trying again later may succeed (network, throttling, a full disk being
    /// cleaned up); a bad key or a closed writer will fail the same way every time.
    pub fn is_retryable(&self) -> bool {
        match self {
            ArtifactError::InvalidKey { .. } | ArtifactError::PartTooSmall(_) | ArtifactError::Closed(_) => {
                false
            }
            ArtifactError::Io { source, .. } => !matches!(
                source.kind(),
                std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::InvalidInput
                    | std::io::ErrorKind::NotFound
            ),
            ArtifactError::S3 { retryable, .. } => *retryable,
        }
    }
}

/// A streaming writer for one object. Nothing is visible under the key until
/// [`finish`](ObjectWriter::finish) succeeds; dropping the writer without finishing it
/// aborts it, as [`abort`](ObjectWriter::abort) does explicitly.
#[async_trait]
pub trait ObjectWriter: Send {
    async fn write_all(&mut self, bytes: &[u8]) -> Result<(), ArtifactError>;
    /// Makes the object visible and returns what was stored.
    async fn finish(self: Box<Self>) -> Result<ObjectInfo, ArtifactError>;
    /// Throws away everything written; afterwards the key holds what it held before.
    async fn abort(self: Box<Self>) -> Result<(), ArtifactError>;
    /// Bytes accepted so far.
    fn bytes_written(&self) -> u64;
}

/// The port: a flat namespace of keys like `exports/<run-id>/manifest.json`.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Starts writing `key`. The object appears only when the writer finishes.
    async fn begin(&self, key: &str) -> Result<Box<dyn ObjectWriter>, ArtifactError>;

    /// Stores a small object in one call.
    async fn put(&self, key: &str, bytes: &[u8]) -> Result<ObjectInfo, ArtifactError> {
        let mut writer = self.begin(key).await?;
        writer.write_all(bytes).await?;
        writer.finish().await
    }

    /// The whole content of `key`, or `None` if there is no such object. For the small
    /// objects (manifests, model files) that readers need in memory anyway.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ArtifactError>;

    /// Streams the content of `key` into `writer`, a bounded chunk at a time (never the whole
    /// object in memory), flushes it and returns the number of bytes copied; `None`, with
    /// nothing written, if there is no such object. On an error part of the object may
    /// already have been written: the caller throws its copy away. A failure to write is
    /// [`ArtifactError::Io`] naming the key and `(copying out)`.
    ///
    /// No default on purpose: one over [`get`](ObjectStore::get) would hold the whole object.
    async fn copy_to(
        &self,
        key: &str,
        writer: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    ) -> Result<Option<u64>, ArtifactError>;

    /// Every key that starts with `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, ArtifactError>;

    /// Where `key` lives, for people and for services that read it themselves
    /// (`s3://bucket/key` for Personalize, a path on disk locally).
    fn location(&self, key: &str) -> String;
}

/// The error for a failed write to the destination of [`ObjectStore::copy_to`].
pub(crate) fn copy_out_error(key: &str, source: std::io::Error) -> ArtifactError {
    ArtifactError::Io { path: format!("{key} (copying out)"), source }
}

/// Keys are relative, `/`-separated, with no empty, `.` or `..` segments: the same key
/// must name the same object in a bucket and under a directory.
pub fn check_key(key: &str) -> Result<(), ArtifactError> {
    let bad = |reason| Err(ArtifactError::InvalidKey { key: key.to_owned(), reason });
    if key.is_empty() || key.len() > 1024 {
        return bad("must be 1 to 1024 bytes");
    }
    if key.starts_with('/') || key.ends_with('/') {
        return bad("must not start or end with /");
    }
    if key.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return bad("must not have empty, . or .. segments");
    }
    if key.chars().any(|c| c.is_control() || c == '\\') {
        return bad("must not contain control characters or backslashes");
    }
    Ok(())
}

/// Counts and hashes bytes as they pass, so `finish` can report size and checksum
/// without reading the object back.
#[derive(Default, Clone)]
pub(crate) struct Tally {
    hasher: Sha256,
    size: u64,
}

impl Tally {
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn into_info(self, key: &str) -> ObjectInfo {
        ObjectInfo { key: key.to_owned(), size: self.size, sha256: hex::encode(self.hasher.finalize()) }
    }
}

/// The SHA-256 of `bytes` in hex, as [`ObjectInfo::sha256`] reports it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_mean_the_same_everywhere() {
        for ok in ["manifest.json", "exports/20261122T020000Z-1a2b/interactions.csv", "models/v1/model.bin"] {
            assert!(check_key(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/abs", "dir/", "a//b", "a/../b", "./a", "a\\b", "a\nb"] {
            assert!(matches!(check_key(bad), Err(ArtifactError::InvalidKey { .. })), "{bad:?}");
        }
    }

    #[test]
    fn tally_hashes_like_a_one_shot_digest() {
        let mut t = Tally::default();
        t.update(b"hello ");
        t.update(b"world");
        let info = t.into_info("k");
        assert_eq!(info.size, 11);
        assert_eq!(info.sha256, sha256_hex(b"hello world"));
        assert_eq!(info.sha256, "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
    }
}

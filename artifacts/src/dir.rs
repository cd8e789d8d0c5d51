//! The directory adapter: keys are paths under a root directory. A writer fills a
//! hidden temporary file next to its target, fsyncs it and renames it into place, so a
//! reader sees either the previous object or the complete new one, never a part.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{ArtifactError, ObjectInfo, ObjectStore, ObjectWriter, Tally, check_key, copy_out_error};

/// Objects as files under `root`.
#[derive(Debug, Clone)]
pub struct DirectoryStore {
    root: PathBuf,
}

fn io(path: &Path, source: std::io::Error) -> ArtifactError {
    ArtifactError::Io { path: path.display().to_string(), source }
}

impl DirectoryStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file that holds `key` once it is finished.
    pub fn path_of(&self, key: &str) -> Result<PathBuf, ArtifactError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }
}

/// Prefix of in-progress files; `list` never reports them.
const TEMP_PREFIX: &str = ".tmp-";

/// Bytes read per step by `copy_to`: each read is one blocking call on tokio's pool, so few
/// large ones rather than many of tokio's default 8 KiB.
const COPY_CHUNK: usize = 1 << 20;

#[async_trait]
impl ObjectStore for DirectoryStore {
    async fn begin(&self, key: &str) -> Result<Box<dyn ObjectWriter>, ArtifactError> {
        let target = self.path_of(key)?;
        let dir = target.parent().expect("a key has at least one segment").to_owned();
        fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let file_name = target.file_name().expect("keys do not end with /").to_string_lossy();
        let temp = dir.join(format!("{TEMP_PREFIX}{}-{file_name}", uuid::Uuid::new_v4().simple()));
        let file = File::create_new(&temp).map_err(|e| io(&temp, e))?;
        Ok(Box::new(DirectoryWriter {
            key: key.to_owned(),
            target,
            temp,
            // Writes are plain blocking file writes: with a large buffer they are few and
            // fast, and keeping them synchronous keeps the finish/rename order obvious.
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            tally: Tally::default(),
        }))
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ArtifactError> {
        let path = self.path_of(key)?;
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path, e)),
        }
    }

    async fn copy_to(
        &self,
        key: &str,
        writer: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    ) -> Result<Option<u64>, ArtifactError> {
        let path = self.path_of(key)?;
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path, e)),
        };
        let mut buffer = vec![0_u8; COPY_CHUNK];
        let mut copied = 0_u64;
        loop {
            let n = file.read(&mut buffer).await.map_err(|e| io(&path, e))?;
            if n == 0 {
                break;
            }
            writer.write_all(&buffer[..n]).await.map_err(|e| copy_out_error(key, e))?;
            copied += n as u64;
        }
        writer.flush().await.map_err(|e| copy_out_error(key, e))?;
        Ok(Some(copied))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, ArtifactError> {
        let mut keys = Vec::new();
        let mut pending = vec![self.root.clone()];
        while let Some(dir) = pending.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(&dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| io(&dir, e))?;
                let path = entry.path();
                let kind = entry.file_type().map_err(|e| io(&path, e))?;
                if kind.is_dir() {
                    pending.push(path);
                } else if !entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                    let relative = path.strip_prefix(&self.root).expect("walked from the root");
                    let key = relative.iter().map(|s| s.to_string_lossy()).collect::<Vec<_>>().join("/");
                    if key.starts_with(prefix) {
                        keys.push(key);
                    }
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    fn location(&self, key: &str) -> String {
        self.root.join(key).display().to_string()
    }
}

struct DirectoryWriter {
    key: String,
    target: PathBuf,
    temp: PathBuf,
    /// `None` once finished or aborted.
    file: Option<BufWriter<File>>,
    tally: Tally,
}

impl DirectoryWriter {
    fn discard(&mut self) {
        if self.file.take().is_some() {
            // Best effort: the file is hidden from `list` even if removal fails.
            let _ = fs::remove_file(&self.temp);
        }
    }
}

#[async_trait]
impl ObjectWriter for DirectoryWriter {
    async fn write_all(&mut self, bytes: &[u8]) -> Result<(), ArtifactError> {
        let file = self.file.as_mut().ok_or_else(|| ArtifactError::Closed(self.key.clone()))?;
        if let Err(e) = file.write_all(bytes) {
            let err = io(&self.temp, e);
            self.discard();
            return Err(err);
        }
        self.tally.update(bytes);
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<ObjectInfo, ArtifactError> {
        let file = self.file.take().ok_or_else(|| ArtifactError::Closed(self.key.clone()))?;
        let result = file
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .and_then(|()| fs::rename(&self.temp, &self.target));
        if let Err(e) = result {
            let _ = fs::remove_file(&self.temp);
            return Err(io(&self.target, e));
        }
        // The rename is durable only once the directory entry is: fsync the directory.
        if let Some(dir) = self.target.parent()
            && let Ok(d) = File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(std::mem::take(&mut self.tally).into_info(&self.key))
    }

    async fn abort(mut self: Box<Self>) -> Result<(), ArtifactError> {
        self.discard();
        Ok(())
    }

    fn bytes_written(&self) -> u64 {
        self.tally.size()
    }
}

impl Drop for DirectoryWriter {
    fn drop(&mut self) {
        self.discard();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nothing_is_visible_until_finish() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirectoryStore::new(dir.path());
        let mut w = store.begin("exports/r1/data.csv").await.unwrap();
        w.write_all(b"USER_ID,").await.unwrap();
        w.write_all(b"ITEM_ID\n").await.unwrap();
        assert_eq!(store.get("exports/r1/data.csv").await.unwrap(), None);
        assert!(store.list("").await.unwrap().is_empty(), "temporary files are not listed");
        let info = w.finish().await.unwrap();
        assert_eq!(info.size, 16);
        assert_eq!(info.sha256, crate::sha256_hex(b"USER_ID,ITEM_ID\n"));
        assert_eq!(store.get("exports/r1/data.csv").await.unwrap().unwrap(), b"USER_ID,ITEM_ID\n");
        assert_eq!(store.list("exports/").await.unwrap(), vec!["exports/r1/data.csv"]);
        assert!(store.list("models/").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn abort_and_drop_leave_the_old_object_and_no_debris() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirectoryStore::new(dir.path());
        store.put("m.json", b"old").await.unwrap();
        let mut w = store.begin("m.json").await.unwrap();
        w.write_all(b"new but unfinished").await.unwrap();
        w.abort().await.unwrap();
        let mut w = store.begin("m.json").await.unwrap();
        w.write_all(b"also unfinished").await.unwrap();
        drop(w);
        assert_eq!(store.get("m.json").await.unwrap().unwrap(), b"old");
        let files: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(files, vec!["m.json"], "no temporary files left behind");
    }

    #[tokio::test]
    async fn copy_to_streams_the_object_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirectoryStore::new(dir.path());
        // Two and a half read chunks, bytes that are not all alike.
        let data: Vec<u8> = (0..COPY_CHUNK * 5 / 2).map(|i| (i * 7 % 251) as u8).collect();
        store.put("exports/r1/interactions.csv", &data).await.unwrap();
        let mut out = CountingWriter::default();
        let copied = store.copy_to("exports/r1/interactions.csv", &mut out).await.unwrap();
        assert_eq!(copied, Some(data.len() as u64));
        assert!(out.bytes == data, "the copy differs from the object");
        assert!(out.writes >= 3, "written in chunks, not at once: {} writes", out.writes);
        assert!(out.flushed);

        let mut out = CountingWriter::default();
        assert_eq!(store.copy_to("exports/r1/missing.csv", &mut out).await.unwrap(), None);
        assert_eq!(out.writes, 0, "nothing written for a missing object");
        assert!(matches!(store.copy_to("../escape", &mut out).await, Err(ArtifactError::InvalidKey { .. })));
    }

    #[tokio::test]
    async fn copy_to_reports_a_failing_destination_with_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirectoryStore::new(dir.path());
        store.put("k.csv", b"USER_ID\n").await.unwrap();
        let mut full = [0_u8; 3];
        let mut out = std::io::Cursor::new(&mut full[..]);
        let err = store.copy_to("k.csv", &mut out).await.unwrap_err();
        assert!(matches!(&err, ArtifactError::Io { path, .. } if path == "k.csv (copying out)"), "{err}");
    }

    /// Records what `copy_to` hands it, and in how many writes.
    #[derive(Default)]
    struct CountingWriter {
        bytes: Vec<u8>,
        writes: usize,
        flushed: bool,
    }

    impl tokio::io::AsyncWrite for CountingWriter {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.writes += 1;
            self.bytes.extend_from_slice(buf);
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            self.flushed = true;
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
    async fn a_failing_disk_reports_the_path_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // A file where a directory should be: begin cannot create the parent.
        fs::write(dir.path().join("exports"), b"not a dir").unwrap();
        let store = DirectoryStore::new(dir.path());
        let err = store.begin("exports/r1/data.csv").await.err().expect("begin fails");
        assert!(err.to_string().contains("exports"), "{err}");
        assert!(matches!(store.begin("../escape").await, Err(ArtifactError::InvalidKey { .. })));
    }
}

//! The export's CSV as one local file for `recommender::read_csv`: the file itself when the
//! object store is a directory and the CSV one object; otherwise a copy streamed from the
//! store into the temporary directory, the parts (if any) concatenated in order with the
//! header line kept once and checked identical in every part. Memory holds one copy buffer
//! (1 MiB) and one chunk of the store's stream, whatever the size of the CSV; the
//! temporary directory needs the CSV's size. The copy is removed when the
//! [`TrainingInput`] is dropped: after training, or at the first error.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use artifacts::{ArtifactError, ObjectStore};
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};

use crate::manifest::Manifest;
use crate::trainer::TrainerError;

/// Bytes buffered between the store's stream and the temporary file.
const WRITE_BUFFER: usize = 1 << 20;
/// The longest header line accepted: the real one is 46 bytes; anything near this is not a CSV.
const MAX_HEADER_LINE: usize = 64 * 1024;

fn failure(message: impl Into<String>, retryable: bool) -> TrainerError {
    TrainerError { message: message.into(), retryable }
}

/// The CSV to train on; a staged copy is deleted on drop.
#[derive(Debug)]
pub(crate) struct TrainingInput {
    path: PathBuf,
    staged: bool,
}

impl TrainingInput {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this is a copy in the temporary directory (removed on drop).
    #[cfg(test)]
    pub(crate) fn is_staged(&self) -> bool {
        self.staged
    }
}

impl Drop for TrainingInput {
    fn drop(&mut self) {
        if self.staged
            && let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove the staged training CSV");
        }
    }
}

/// The manifest's CSV as one local file. `local_root` is the directory the store writes to,
/// when it is one; `temp_dir` is where a copy goes.
pub(crate) async fn training_input(
    objects: &dyn ObjectStore,
    local_root: Option<&Path>,
    temp_dir: &Path,
    manifest: &Manifest,
) -> Result<TrainingInput, TrainerError> {
    let files = manifest.csv.objects();
    if let (Some(root), [single]) = (local_root, files.as_slice()) {
        return Ok(TrainingInput { path: root.join(&single.key), staged: false });
    }
    if files.is_empty() {
        return Err(failure(format!("{} has no parts: nothing to train on", manifest.csv.key), false));
    }
    let input = TrainingInput {
        path: temp_dir.join(format!(
            "training-export-{}-{}.csv",
            manifest.run_id,
            uuid::Uuid::new_v4().simple()
        )),
        staged: true,
    };
    let local = |e: io::Error| local_failure(&input.path, manifest.csv.size, e);
    // From here on `input` removes the file, whatever happens.
    let file = tokio::fs::File::create_new(&input.path).await.map_err(local)?;
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
    let mut header: Option<Vec<u8>> = None;
    for part in &files {
        let mut writer = PartWriter::new(&mut out, header.as_deref());
        let copied = objects.copy_to(&part.key, &mut writer).await;
        if let Some(problem) = writer.problem.take() {
            return Err(failure(format!("{}: {problem}", part.key), false));
        }
        let copied = copied
            .map_err(|e| store_failure(&input.path, manifest.csv.size, e))?
            .ok_or_else(|| failure(format!("{} is missing", part.key), false))?;
        if copied != part.size {
            return Err(failure(
                format!("{} is {copied} bytes; the manifest says {}", part.key, part.size),
                false,
            ));
        }
        let line = writer.finish().await.map_err(|e| match e {
            PartError::Problem(problem) => failure(format!("{}: {problem}", part.key), false),
            PartError::Io(e) => local(e),
        })?;
        header.get_or_insert(line);
    }
    out.flush().await.map_err(local)?;
    tracing::info!(
        parts = files.len(), bytes = manifest.csv.size, path = %input.path.display(),
        "export CSV staged for training"
    );
    Ok(input)
}

/// The temporary file could not be written: a full disk says what it needs.
fn local_failure(path: &Path, needed: u64, e: io::Error) -> TrainerError {
    let hint = if e.kind() == io::ErrorKind::StorageFull {
        format!(
            " (training needs the CSV's {} MiB free in the temporary directory; in Lambda, EphemeralStorage)",
            needed.div_ceil(1 << 20)
        )
    } else {
        String::new()
    };
    failure(format!("{}: {e}{hint}", path.display()), true)
}

fn store_failure(path: &Path, needed: u64, e: ArtifactError) -> TrainerError {
    match e {
        // The store could not write to our file: the destination's fault.
        ArtifactError::Io { path: ref what, source } if what.ends_with("(copying out)") => {
            local_failure(path, needed, source)
        }
        e => failure(e.to_string(), e.is_retryable()),
    }
}

pub(crate) enum PartError {
    Problem(String),
    Io(io::Error),
}

enum State {
    /// Reading the header line into `line`.
    Header,
    /// Writing the (first part's) header line out; this many bytes of it are written.
    Emit(usize),
    /// Passing the rows through.
    Rows,
}

/// Between one part's stream and the staged file: holds back the part's header line, writes
/// it out for the first part (whose header is `None`), drops it for later parts after
/// checking that it is identical to the first part's, and passes the rows through.
pub(crate) struct PartWriter<'a, W> {
    out: &'a mut W,
    expected: Option<&'a [u8]>,
    /// The header line so far, with its `\n` once complete.
    line: Vec<u8>,
    state: State,
    /// The last byte written out, to end a part whose last row has no line end.
    last: Option<u8>,
    /// Why the part was refused (a write then fails with `InvalidData`).
    problem: Option<String>,
}

impl<'a, W: AsyncWrite + Unpin> PartWriter<'a, W> {
    pub(crate) fn new(out: &'a mut W, expected: Option<&'a [u8]>) -> Self {
        Self { out, expected, line: Vec::new(), state: State::Header, last: None, problem: None }
    }

    /// The header line is complete: keep it (first part), skip it, or refuse the part.
    fn header_complete(&mut self) -> Result<(), String> {
        self.state = match self.expected {
            None => State::Emit(0),
            Some(expected) if expected == self.line.as_slice() => State::Rows,
            Some(expected) => {
                return Err(format!(
                    "the header {:?} differs from the first part's {:?}",
                    String::from_utf8_lossy(self.line.trim_ascii_end()),
                    String::from_utf8_lossy(expected.trim_ascii_end())
                ));
            }
        };
        Ok(())
    }

    fn refuse(&mut self, problem: String) -> io::Error {
        let err = io::Error::new(io::ErrorKind::InvalidData, problem.clone());
        self.problem = Some(problem);
        err
    }

    /// Writes out what is held back of the header line.
    fn poll_emit(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let State::Emit(written) = self.state {
            if written == self.line.len() {
                self.state = State::Rows;
                break;
            }
            let n = ready!(Pin::new(&mut *self.out).poll_write(cx, &self.line[written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.last = Some(self.line[written + n - 1]);
            self.state = State::Emit(written + n);
        }
        Poll::Ready(Ok(()))
    }

    /// After the part's last byte: the header line it had (with its `\n`). A part that is only
    /// a header without a line end is accepted; an empty one is not.
    pub(crate) async fn finish(mut self) -> Result<Vec<u8>, PartError> {
        if let State::Header = self.state {
            if self.line.is_empty() {
                return Err(PartError::Problem("is empty; expected at least the CSV header".into()));
            }
            self.line.push(b'\n');
            self.header_complete().map_err(PartError::Problem)?;
        }
        if let State::Emit(written) = self.state {
            self.out.write_all(&self.line[written..]).await.map_err(PartError::Io)?;
            self.last = Some(b'\n');
        }
        if self.last.is_some_and(|b| b != b'\n') {
            // The last row has no line end: give it one, or the next part's first row joins it.
            self.out.write_all(b"\n").await.map_err(PartError::Io)?;
        }
        Ok(self.line)
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for PartWriter<'_, W> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let State::Header = this.state {
            if buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            let end = buf.iter().position(|&b| b == b'\n');
            let take = end.map_or(buf.len(), |i| i + 1);
            this.line.extend_from_slice(&buf[..take]);
            if this.line.len() > MAX_HEADER_LINE {
                let problem =
                    format!("the first line is longer than {MAX_HEADER_LINE} bytes: not a CSV header");
                return Poll::Ready(Err(this.refuse(problem)));
            }
            if end.is_some()
                && let Err(problem) = this.header_complete()
            {
                return Poll::Ready(Err(this.refuse(problem)));
            }
            return Poll::Ready(Ok(take));
        }
        ready!(this.poll_emit(cx))?;
        let n = ready!(Pin::new(&mut *this.out).poll_write(cx, buf))?;
        if n > 0 {
            this.last = Some(buf[n - 1]);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !matches!(this.state, State::Header) {
            ready!(this.poll_emit(cx))?;
        }
        Pin::new(&mut *this.out).poll_flush(cx)
    }

    /// Only flushes: the staged file stays open for the next part.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

//! The model file: a 52-byte header, then the payload.
//!
//! ```text
//! offset  size  field
//! 0       8     magic  b"RECMODEL"
//! 8       4     format version, u32 little-endian (currently 1)
//! 12      8     payload length in bytes, u64 LE
//! 20      32    SHA-256 of the payload
//! 52      …     payload
//! ```
//!
//! The payload is a sequence of length-prefixed sections, all little-endian: the [`ModelInfo`] as
//! JSON, item ids, user ids, the users' histories (CSR), popularity, then the scorer (a tag and
//! its arrays). Arrays are raw `f32`/`u32`, so loading is a checksum and a few `memcpy`-like loops.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::algo::ials::Factors;
use crate::algo::knn::SparseItemItem;
use crate::model::{Model, ModelInfo, Scorer};

pub const MAGIC: &[u8; 8] = b"RECMODEL";
pub const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 8 + 32;

/// Why bytes are not a model this build can load.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a model file: it is {len} bytes, shorter than the {HEADER_LEN}-byte header")]
    TooShort { len: usize },
    #[error("not a model file: it does not start with the magic bytes \"RECMODEL\"")]
    BadMagic,
    #[error("model format version {found} is not supported; this build reads version {FORMAT_VERSION}")]
    UnsupportedVersion { found: u32 },
    #[error("truncated or padded: the header announces {expected} payload bytes, the file holds {actual}")]
    LengthMismatch { expected: u64, actual: u64 },
    #[error("corrupted: the payload's SHA-256 is {actual}, the header says {expected}")]
    ChecksumMismatch { expected: String, actual: String },
    #[error("inconsistent payload: {0}")]
    Malformed(String),
}

/// A model file that could not be read, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    #[error("cannot read model file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("refusing model file {path}: {source}")]
    Invalid { path: PathBuf, source: DecodeError },
}

impl Model {
    /// The model file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut p = Encoder::default();
        p.bytes(&serde_json::to_vec(&self.info).expect("model info serialises to JSON"));
        p.strings(&self.item_ids);
        p.strings(&self.user_ids);
        p.u32s(&self.history_ptr);
        p.u32s(&self.history_items);
        p.f32s(&self.history_weights);
        p.f32s(&self.popularity);
        p.scorer(&self.scorer);
        let payload = p.0;
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&Sha256::digest(&payload));
        out.extend_from_slice(&payload);
        out
    }

    /// Reads a model from the bytes of [`Model::to_bytes`], checking magic, version, length and
    /// checksum before anything else.
    pub fn from_bytes(bytes: &[u8]) -> Result<Model, DecodeError> {
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::TooShort { len: bytes.len() });
        }
        if &bytes[..8] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version != FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion { found: version });
        }
        let expected = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
        let payload = &bytes[HEADER_LEN..];
        if payload.len() as u64 != expected {
            return Err(DecodeError::LengthMismatch { expected, actual: payload.len() as u64 });
        }
        let digest = Sha256::digest(payload);
        if digest.as_slice() != &bytes[20..52] {
            return Err(DecodeError::ChecksumMismatch {
                expected: hex::encode(&bytes[20..52]),
                actual: hex::encode(digest),
            });
        }
        decode_payload(payload)
    }

    /// Writes the model file to `path` (not atomically: [`ModelRegistry`](crate::ModelRegistry)
    /// publishes atomically).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), ModelFileError> {
        let path = path.as_ref();
        std::fs::write(path, self.to_bytes())
            .map_err(|source| ModelFileError::Io { path: path.into(), source })
    }

    /// Reads and checks a model file.
    pub fn load(path: impl AsRef<Path>) -> Result<Model, ModelFileError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| ModelFileError::Io { path: path.into(), source })?;
        Model::from_bytes(&bytes).map_err(|source| ModelFileError::Invalid { path: path.into(), source })
    }
}

fn decode_payload(payload: &[u8]) -> Result<Model, DecodeError> {
    let mut d = Decoder { rest: payload };
    let info: ModelInfo = serde_json::from_slice(d.bytes("info")?)
        .map_err(|e| DecodeError::Malformed(format!("model info is not valid JSON: {e}")))?;
    let item_ids = d.strings("item ids")?;
    let user_ids = d.strings("user ids")?;
    let history_ptr = d.u32s("history offsets")?;
    let history_items = d.u32s("history items")?;
    let history_weights = d.f32s("history weights")?;
    let popularity = d.f32s("popularity")?;
    let scorer = d.scorer(0)?;
    if !d.rest.is_empty() {
        return Err(DecodeError::Malformed(format!("{} unexpected bytes after the scorer", d.rest.len())));
    }
    let (n_items, n_users) = (item_ids.len(), user_ids.len());
    let malformed = |what: &str| Err(DecodeError::Malformed(what.to_owned()));
    if history_ptr.len() != n_users + 1
        || history_ptr.first() != Some(&0)
        || history_ptr.windows(2).any(|w| w[0] > w[1])
        || history_ptr.last().map(|&p| p as usize) != Some(history_items.len())
    {
        return malformed("history offsets do not match the users");
    }
    if history_weights.len() != history_items.len() || history_items.iter().any(|&i| i as usize >= n_items) {
        return malformed("history items out of range");
    }
    if popularity.len() != n_items {
        return malformed("popularity does not cover the items");
    }
    check_scorer(&scorer, n_items, n_users)?;
    Ok(Model::assemble(
        info,
        item_ids,
        user_ids,
        history_ptr,
        history_items,
        history_weights,
        popularity,
        scorer,
    ))
}

fn check_scorer(scorer: &Scorer, n_items: usize, n_users: usize) -> Result<(), DecodeError> {
    let ok = match scorer {
        Scorer::Popularity => true,
        Scorer::DenseItemItem { weights } => weights.len() == n_items * n_items,
        Scorer::SparseItemItem(s) => {
            s.ptr.len() == n_items + 1
                && s.ptr.first() == Some(&0)
                && s.ptr.windows(2).all(|w| w[0] <= w[1])
                && s.ptr.last().map(|&p| p as usize) == Some(s.idx.len())
                && s.val.len() == s.idx.len()
                && s.idx.iter().all(|&j| (j as usize) < n_items)
        }
        Scorer::Factors(f) => {
            f.dim > 0 && f.users.len() == n_users * f.dim && f.items.len() == n_items * f.dim
        }
        Scorer::Blend(parts) => {
            for (_, part) in parts {
                check_scorer(part, n_items, n_users)?;
            }
            true
        }
    };
    if ok { Ok(()) } else { Err(DecodeError::Malformed("scorer arrays do not match the catalog".into())) }
}

const TAG_POPULARITY: u8 = 0;
const TAG_DENSE: u8 = 1;
const TAG_SPARSE: u8 = 2;
const TAG_FACTORS: u8 = 3;
const TAG_BLEND: u8 = 4;

#[derive(Default)]
struct Encoder(Vec<u8>);

impl Encoder {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn u32s(&mut self, v: &[u32]) {
        self.u64(v.len() as u64);
        self.0.reserve(v.len() * 4);
        for x in v {
            self.0.extend_from_slice(&x.to_le_bytes());
        }
    }
    fn f32s(&mut self, v: &[f32]) {
        self.u64(v.len() as u64);
        self.0.reserve(v.len() * 4);
        for x in v {
            self.0.extend_from_slice(&x.to_le_bytes());
        }
    }
    /// Offsets then one blob: decoding is one pass without per-string length checks.
    fn strings(&mut self, v: &[String]) {
        let mut offsets = Vec::with_capacity(v.len() + 1);
        let mut blob = Vec::new();
        offsets.push(0u32);
        for s in v {
            blob.extend_from_slice(s.as_bytes());
            offsets.push(blob.len() as u32);
        }
        self.u32s(&offsets);
        self.bytes(&blob);
    }
    fn scorer(&mut self, s: &Scorer) {
        match s {
            Scorer::Popularity => self.u8(TAG_POPULARITY),
            Scorer::DenseItemItem { weights } => {
                self.u8(TAG_DENSE);
                self.f32s(weights);
            }
            Scorer::SparseItemItem(m) => {
                self.u8(TAG_SPARSE);
                self.u32s(&m.ptr);
                self.u32s(&m.idx);
                self.f32s(&m.val);
            }
            Scorer::Factors(f) => {
                self.u8(TAG_FACTORS);
                self.u64(f.dim as u64);
                self.f32s(&f.users);
                self.f32s(&f.items);
            }
            Scorer::Blend(parts) => {
                self.u8(TAG_BLEND);
                self.u64(parts.len() as u64);
                for (w, part) in parts {
                    self.f32s(&[*w]);
                    self.scorer(part);
                }
            }
        }
    }
}

struct Decoder<'a> {
    rest: &'a [u8],
}

impl<'a> Decoder<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], DecodeError> {
        if n > self.rest.len() as u64 {
            return Err(DecodeError::Malformed(format!("{what}: needs {n} bytes, {} left", self.rest.len())));
        }
        let (head, tail) = self.rest.split_at(n as usize);
        self.rest = tail;
        Ok(head)
    }
    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }
    fn bytes(&mut self, what: &str) -> Result<&'a [u8], DecodeError> {
        let n = self.u64(what)?;
        self.take(n, what)
    }
    fn words(&mut self, what: &str) -> Result<&'a [u8], DecodeError> {
        let n = self.u64(what)?;
        self.take(n.saturating_mul(4), what)
    }
    fn u32s(&mut self, what: &str) -> Result<Vec<u32>, DecodeError> {
        Ok(self
            .words(what)?
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect())
    }
    fn f32s(&mut self, what: &str) -> Result<Vec<f32>, DecodeError> {
        Ok(self
            .words(what)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect())
    }
    fn strings(&mut self, what: &str) -> Result<Vec<String>, DecodeError> {
        let offsets = self.u32s(what)?;
        let blob = std::str::from_utf8(self.bytes(what)?)
            .map_err(|_| DecodeError::Malformed(format!("{what} are not UTF-8")))?;
        if offsets.first() != Some(&0) || offsets.last().map(|&o| o as usize) != Some(blob.len()) {
            return Err(DecodeError::Malformed(format!("{what}: offsets do not match the text")));
        }
        offsets
            .windows(2)
            .map(|w| {
                blob.get(w[0] as usize..w[1] as usize)
                    .map(str::to_owned)
                    .ok_or_else(|| DecodeError::Malformed(format!("{what}: bad offsets")))
            })
            .collect()
    }
    fn scorer(&mut self, depth: usize) -> Result<Scorer, DecodeError> {
        Ok(match self.u8("scorer tag")? {
            TAG_POPULARITY => Scorer::Popularity,
            TAG_DENSE => Scorer::DenseItemItem { weights: self.f32s("dense weights")? },
            TAG_SPARSE => Scorer::SparseItemItem(SparseItemItem {
                ptr: self.u32s("neighbour offsets")?,
                idx: self.u32s("neighbours")?,
                val: self.f32s("neighbour weights")?,
            }),
            TAG_FACTORS => {
                let dim = self.u64("factor count")? as usize;
                let (users, items) = (self.f32s("user factors")?, self.f32s("item factors")?);
                if dim == 0 || users.len() % dim != 0 || items.len() % dim != 0 {
                    return Err(DecodeError::Malformed("factor arrays do not match their dimension".into()));
                }
                Scorer::Factors(Factors::new(dim, users, items))
            }
            TAG_BLEND if depth == 0 => {
                let n = self.u64("blend size")?;
                if n > 16 {
                    return Err(DecodeError::Malformed(format!("a blend of {n} parts")));
                }
                let mut parts = Vec::new();
                for _ in 0..n {
                    let w = self.f32s("blend weight")?;
                    let [w] = w[..] else { return Err(DecodeError::Malformed("blend weight".into())) };
                    parts.push((w, self.scorer(depth + 1)?));
                }
                Scorer::Blend(parts)
            }
            tag => return Err(DecodeError::Malformed(format!("unknown scorer tag {tag}"))),
        })
    }
}

//! Model versions in an object store (a bucket, or a directory such as `$DATA_DIR`). This module
//! is the only place that knows the layout:
//!
//! ```text
//! models/
//!   LATEST                          the live version's name, one line
//!   20261122T042100Z-3fa9c2d1e0b4/
//!     model.bin                     the model file (see crate::codec)
//!     info.json                     the same ModelInfo, for people and scripts
//! model-candidates/
//!   <version>/model.bin             trained, not live yet (waiting for the quality gate)
//! ```
//!
//! Publishing writes the version's objects first and `LATEST` last. Every object is written
//! atomically by the store's writer, so a reader that follows `LATEST` finds a complete version.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use artifacts::{ArtifactError, DirectoryStore, ObjectStore};

use crate::codec::DecodeError;
use crate::model::{Model, ModelInfo};

const LATEST: &str = "LATEST";
const MODEL_FILE: &str = "model.bin";
const INFO_FILE: &str = "info.json";
const VERSIONS: &str = "models/";
const CANDIDATES: &str = "model-candidates/";
/// Candidates of a registry opened on a models directory itself: hidden beside the versions
/// (a version name never starts with `.`).
const DIR_CANDIDATES: &str = ".candidates/";

/// A version name: ASCII letters, digits, `-`, `_` and `.`, not starting with `.`, so that it
/// is one safe key segment (and one safe directory name) everywhere.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(String);

impl Version {
    pub fn parse(name: &str) -> Result<Self, RegistryError> {
        let ok = !name.is_empty()
            && name.len() <= 128
            && !name.starts_with('.')
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok { Ok(Self(name.to_owned())) } else { Err(RegistryError::BadVersionName(name.to_owned())) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What went wrong, with the location (`s3://…` or a path) of the object concerned.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The store failed to read or write (network, permissions, disk).
    #[error("{source}")]
    Store { location: String, source: ArtifactError },
    #[error("no answer for {location} within {} ms", .after.as_millis())]
    Timeout { location: String, after: Duration },
    /// `LATEST` is empty, not text, or not a version name; the message says which.
    #[error("{message}")]
    BadLatest { location: String, message: String },
    #[error("model version {version} is missing: there is no {key}")]
    MissingVersion { version: Version, key: String, location: String },
    #[error("{key} is not a model this build can load: {source}")]
    Corrupt { version: Version, key: String, location: String, source: DecodeError },
    #[error("no model has been published in {0}")]
    NoModel(String),
    #[error("{0:?} is not a valid model version name")]
    BadVersionName(String),
    #[error("version {version} already exists in {location} with different content")]
    VersionConflict { version: Version, location: String },
    #[error("model version {0} is neither a candidate nor published")]
    UnknownVersion(Version),
}

impl RegistryError {
    /// Whether trying again later may succeed: a corrupt file or a bad name stays bad.
    pub fn is_retryable(&self) -> bool {
        match self {
            RegistryError::Store { source, .. } => source.is_retryable(),
            RegistryError::Timeout { .. } => true,
            _ => false,
        }
    }

    /// The object the error is about, when there is one.
    pub fn location(&self) -> Option<&str> {
        match self {
            RegistryError::Store { location, .. }
            | RegistryError::Timeout { location, .. }
            | RegistryError::BadLatest { location, .. }
            | RegistryError::MissingVersion { location, .. }
            | RegistryError::Corrupt { location, .. }
            | RegistryError::NoModel(location)
            | RegistryError::VersionConflict { location, .. } => Some(location),
            RegistryError::BadVersionName(_) | RegistryError::UnknownVersion(_) => None,
        }
    }
}

/// `LATEST` holds something that is not a version name: say what, briefly (it may be anything).
fn bad_latest_message(latest: &str, content: &str) -> String {
    if content.is_empty() {
        return format!("{latest} is empty");
    }
    let shown: String = content.chars().take(64).collect();
    let more = if shown.len() < content.len() { "..." } else { "" };
    format!("{latest} holds {shown:?}{more}, not a model version name")
}

/// The model versions in one object store.
#[derive(Clone)]
pub struct ModelRegistry {
    objects: Arc<dyn ObjectStore>,
    /// Key prefix of the versions and of `LATEST` (`models/`, or empty in a models directory).
    versions: &'static str,
    candidates: &'static str,
    /// Bounds each read, so a store that does not answer cannot hold a caller.
    timeout: Option<Duration>,
}

impl std::fmt::Debug for ModelRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelRegistry").field("latest", &self.location(&self.latest_key())).finish()
    }
}

impl ModelRegistry {
    /// The versions under `models/` and the candidates under `model-candidates/` of `objects`
    /// (the data bucket, or a `DirectoryStore` at `$DATA_DIR`).
    pub fn new(objects: Arc<dyn ObjectStore>) -> Self {
        Self { objects, versions: VERSIONS, candidates: CANDIDATES, timeout: None }
    }

    /// A models directory itself (`$DATA_DIR/models`, `recommender train --out DIR`).
    pub fn in_dir(models_dir: impl Into<PathBuf>) -> Self {
        Self {
            objects: Arc::new(DirectoryStore::new(models_dir.into())),
            versions: "",
            candidates: DIR_CANDIDATES,
            timeout: None,
        }
    }

    /// Gives up on any one read after `timeout` with [`RegistryError::Timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    fn latest_key(&self) -> String {
        format!("{}{LATEST}", self.versions)
    }

    fn model_key(&self, version: &Version) -> String {
        format!("{}{version}/{MODEL_FILE}", self.versions)
    }

    fn candidate_key(&self, version: &Version) -> String {
        format!("{}{version}/{MODEL_FILE}", self.candidates)
    }

    /// Where `key` lives, for messages (`s3://bucket/models/LATEST`, a path on disk).
    fn location(&self, key: &str) -> String {
        self.objects.location(key)
    }

    /// Where `LATEST` lives.
    pub fn latest_location(&self) -> String {
        self.location(&self.latest_key())
    }

    /// Where a version's model file lives.
    pub fn model_location(&self, version: &Version) -> String {
        self.location(&self.model_key(version))
    }

    async fn bounded<T>(
        &self,
        key: &str,
        call: impl std::future::Future<Output = Result<T, ArtifactError>>,
    ) -> Result<T, RegistryError> {
        let result = match self.timeout {
            Some(after) => tokio::time::timeout(after, call)
                .await
                .map_err(|_| RegistryError::Timeout { location: self.location(key), after })?,
            None => call.await,
        };
        result.map_err(|source| RegistryError::Store { location: self.location(key), source })
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, RegistryError> {
        self.bounded(key, self.objects.get(key)).await
    }

    async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), RegistryError> {
        self.bounded(key, self.objects.put(key, bytes)).await.map(drop)
    }

    /// Checks the file off the async threads: hashing and decoding a large model takes a while.
    async fn decode(&self, version: &Version, key: String, bytes: Vec<u8>) -> Result<Model, RegistryError> {
        let decoded = tokio::task::spawn_blocking(move || Model::from_bytes(&bytes))
            .await
            .expect("decoding a model does not panic");
        decoded.map_err(|source| RegistryError::Corrupt {
            version: version.clone(),
            location: self.location(&key),
            key,
            source,
        })
    }

    /// Publishes the model under its own version name and makes it live unless a newer version
    /// already is (a slow training that finishes late does not roll serving back; use
    /// [`point_latest_to`](Self::point_latest_to) to roll back on purpose). Publishing the same
    /// model twice is harmless; a different model under an existing name is refused.
    pub async fn publish(&self, model: &Model) -> Result<Version, RegistryError> {
        let version = Version::parse(&model.info().version)?;
        let bytes = model.to_bytes();
        let key = self.model_key(&version);
        match self.get(&key).await? {
            Some(existing) if existing != bytes => {
                return Err(RegistryError::VersionConflict { version, location: self.location(&key) });
            }
            Some(_) => {}
            None => {
                self.put(&key, &bytes).await?;
                let info = serde_json::to_vec_pretty(model.info()).expect("model info serialises to JSON");
                self.put(&format!("{}{version}/{INFO_FILE}", self.versions), &info).await?;
            }
        }
        if self.latest().await?.is_none_or(|latest| latest < version) {
            self.point_latest_to(&version).await?;
        }
        Ok(version)
    }

    /// Makes `version` the one [`load_latest`](Self::load_latest) serves (also a rollback).
    pub async fn point_latest_to(&self, version: &Version) -> Result<(), RegistryError> {
        self.put(&self.latest_key(), format!("{version}\n").as_bytes()).await
    }

    /// The version `LATEST` names, if any: one small read, cheap enough to poll every few
    /// seconds from a server that then loads and swaps when it changes.
    pub async fn latest(&self) -> Result<Option<Version>, RegistryError> {
        let key = self.latest_key();
        let Some(bytes) = self.get(&key).await? else { return Ok(None) };
        let bad = |message| RegistryError::BadLatest { location: self.location(&key), message };
        let text = std::str::from_utf8(&bytes).map_err(|_| bad(format!("{key} is not text")))?;
        let name = text.trim();
        Version::parse(name).map(Some).map_err(|_| bad(bad_latest_message(&key, name)))
    }

    /// Published versions, oldest first (names sort by training time).
    pub async fn versions(&self) -> Result<Vec<Version>, RegistryError> {
        let keys = self.bounded(self.versions, self.objects.list(self.versions)).await?;
        let mut out: Vec<Version> = keys
            .iter()
            .filter_map(|key| key.strip_prefix(self.versions)?.strip_suffix(MODEL_FILE)?.strip_suffix('/'))
            .filter_map(|name| Version::parse(name).ok())
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Loads and checks one version; a corrupt file is refused, never served in part.
    pub async fn load(&self, version: &Version) -> Result<Model, RegistryError> {
        let key = self.model_key(version);
        let bytes = self.get(&key).await?.ok_or_else(|| RegistryError::MissingVersion {
            version: version.clone(),
            location: self.location(&key),
            key: key.clone(),
        })?;
        self.decode(version, key, bytes).await
    }

    /// Loads the version `LATEST` names.
    pub async fn load_latest(&self) -> Result<(Version, Model), RegistryError> {
        let version = self.latest().await?.ok_or_else(|| RegistryError::NoModel(self.latest_location()))?;
        let model = self.load(&version).await?;
        Ok((version, model))
    }

    /// For a cold start: the latest version if it loads, else the newest older one that does.
    /// Returns the refusals met on the way (the latest's first) so the caller can report them.
    pub async fn load_newest_valid(&self) -> Result<(Version, Model, Vec<RegistryError>), RegistryError> {
        let latest = self.latest().await?.ok_or_else(|| RegistryError::NoModel(self.latest_location()))?;
        let first = match self.load(&latest).await {
            Ok(model) => return Ok((latest, model, Vec::new())),
            Err(e) => e,
        };
        let mut refused = vec![first];
        let mut older = self.versions().await?;
        older.retain(|v| *v < latest);
        for version in older.into_iter().rev() {
            match self.load(&version).await {
                Ok(model) => return Ok((version, model, refused)),
                Err(e) => refused.push(e),
            }
        }
        Err(refused.swap_remove(0))
    }

    /// The live version and its figures, if any.
    pub async fn live(&self) -> Result<Option<(Version, ModelInfo)>, RegistryError> {
        let Some(version) = self.latest().await? else { return Ok(None) };
        let model = self.load(&version).await?;
        Ok(Some((version, model.info().clone())))
    }

    /// Keeps a trained model aside, not live, until [`promote`](Self::promote) publishes it
    /// (a model the quality gate may yet reject must not go through `publish`).
    pub async fn store_candidate(&self, model: &Model) -> Result<Version, RegistryError> {
        let version = Version::parse(&model.info().version)?;
        self.put(&self.candidate_key(&version), &model.to_bytes()).await?;
        Ok(version)
    }

    /// A candidate stored by [`store_candidate`](Self::store_candidate), if there is one.
    pub async fn load_candidate(&self, version: &Version) -> Result<Option<Model>, RegistryError> {
        let key = self.candidate_key(version);
        match self.get(&key).await? {
            Some(bytes) => self.decode(version, key, bytes).await.map(Some),
            None => Ok(None),
        }
    }

    /// Makes `version` live: a candidate is published first; a version published before is
    /// simply pointed at again (a rollback, even to an older version).
    pub async fn promote(&self, version: &Version) -> Result<(), RegistryError> {
        if let Some(model) = self.load_candidate(version).await? {
            self.publish(&model).await?;
        } else if self.get(&self.model_key(version)).await?.is_none() {
            return Err(RegistryError::UnknownVersion(version.clone()));
        }
        // `publish` moves LATEST only forward; a rollback to an older version needs this.
        self.point_latest_to(version).await
    }
}

/// A model that a long-running server shares between requests and swaps when a newer version is
/// published, without a restart. Call [`refresh`](Self::refresh) every few seconds.
#[derive(Debug)]
pub struct LiveModel {
    registry: ModelRegistry,
    current: RwLock<(Version, Arc<Model>)>,
    /// The last version that failed to load, so polling does not re-read a broken file forever.
    refused: std::sync::Mutex<Option<Version>>,
}

/// What [`LiveModel::refresh`] did.
#[derive(Debug)]
pub enum Refresh {
    Unchanged,
    Swapped { from: Version, to: Version },
}

impl LiveModel {
    /// Starts from the newest version that loads (the refusals met on the way are returned).
    pub async fn open(registry: ModelRegistry) -> Result<(Self, Vec<RegistryError>), RegistryError> {
        let (version, model, refused) = registry.load_newest_valid().await?;
        Ok((Self::serving(registry, version, model), refused))
    }

    /// Starts from the version `LATEST` names, or not at all (where listing versions is not
    /// allowed, as in the bucket the API reads).
    pub async fn open_latest(registry: ModelRegistry) -> Result<Self, RegistryError> {
        let (version, model) = registry.load_latest().await?;
        Ok(Self::serving(registry, version, model))
    }

    fn serving(registry: ModelRegistry, version: Version, model: Model) -> Self {
        Self {
            registry,
            current: RwLock::new((version, Arc::new(model))),
            refused: std::sync::Mutex::new(None),
        }
    }

    pub fn registry(&self) -> &ModelRegistry {
        &self.registry
    }

    /// The model to answer the current request with.
    pub fn current(&self) -> Arc<Model> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).1.clone()
    }

    pub fn version(&self) -> Version {
        self.current.read().unwrap_or_else(|p| p.into_inner()).0.clone()
    }

    /// Loads the latest version if it changed. When it cannot be loaded the error is returned
    /// once, the current model keeps serving, and that version is not tried again.
    pub async fn refresh(&self) -> Result<Refresh, RegistryError> {
        let Some(latest) = self.registry.latest().await? else { return Ok(Refresh::Unchanged) };
        let current = self.version();
        let already_refused =
            self.refused.lock().unwrap_or_else(|p| p.into_inner()).as_ref() == Some(&latest);
        if latest == current || already_refused {
            return Ok(Refresh::Unchanged);
        }
        let model = match self.registry.load(&latest).await {
            Ok(m) => Arc::new(m),
            Err(e) => {
                *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(latest);
                return Err(e);
            }
        };
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (latest.clone(), model);
        Ok(Refresh::Swapped { from: current, to: latest })
    }
}

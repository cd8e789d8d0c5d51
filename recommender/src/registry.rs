//! Model versions in a directory (locally `$DATA_DIR/models`):
//!
//! ```text
//! models/
//!   LATEST                          the newest published version's name, one line
//!   20261122T042100Z-3fa9c2d1e0b4/
//!     model.bin                     the model file (see crate::codec)
//!     info.json                     the same ModelInfo, for people and scripts
//! ```
//!
//! Publishing writes into a hidden temporary directory beside the versions, syncs it, renames it
//! into place, and only then replaces `LATEST` (write a temporary file, sync, rename). A reader
//! therefore sees either the old version or the complete new one, never a partial one.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::codec::ModelFileError;
use crate::model::Model;

const LATEST: &str = "LATEST";
const MODEL_FILE: &str = "model.bin";
const INFO_FILE: &str = "info.json";

/// A version name: a directory name made of ASCII letters, digits, `-`, `_` and `.`, not starting
/// with `.` (temporary directories do).
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

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    ModelFile(#[from] ModelFileError),
    #[error("no model has been published in {0}")]
    NoModel(PathBuf),
    #[error("{0:?} is not a valid model version name")]
    BadVersionName(String),
    #[error("version {version} already exists in {dir} with different content")]
    VersionConflict { version: Version, dir: PathBuf },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io { path: path.to_path_buf(), source }
}

/// Makes a rename or a new file durable: sync the directory that holds it.
fn sync_dir(dir: &Path) -> Result<(), RegistryError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    let mut f = File::create(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// The versions of one model directory.
#[derive(Debug, Clone)]
pub struct ModelRegistry {
    root: PathBuf,
}

impl ModelRegistry {
    /// Opens (creating if needed) the registry directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, RegistryError> {
        let root = dir.into();
        fs::create_dir_all(&root).map_err(io(&root))?;
        Ok(Self { root })
    }

    pub fn dir(&self) -> &Path {
        &self.root
    }

    pub fn model_path(&self, version: &Version) -> PathBuf {
        self.root.join(version.as_str()).join(MODEL_FILE)
    }

    /// Publishes the model under its own version name and makes it the latest unless a newer
    /// version already is (a slow training that finishes late does not roll serving back; use
    /// [`point_latest_to`](Self::point_latest_to) to roll back on purpose). Publishing the same
    /// model twice is harmless; a different model under an existing name is refused.
    pub fn publish(&self, model: &Model) -> Result<Version, RegistryError> {
        let version = Version::parse(&model.info().version)?;
        let bytes = model.to_bytes();
        let final_dir = self.root.join(version.as_str());
        if final_dir.exists() {
            let existing = fs::read(final_dir.join(MODEL_FILE)).ok();
            if existing.as_deref() != Some(bytes.as_slice()) {
                return Err(RegistryError::VersionConflict { version, dir: self.root.clone() });
            }
        } else {
            let tmp = self.root.join(format!(".tmp-{}-{}", version, std::process::id()));
            if tmp.exists() {
                fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
            }
            fs::create_dir(&tmp).map_err(io(&tmp))?;
            write_synced(&tmp.join(MODEL_FILE), &bytes)?;
            let info = serde_json::to_vec_pretty(model.info()).expect("model info serialises to JSON");
            write_synced(&tmp.join(INFO_FILE), &info)?;
            sync_dir(&tmp)?;
            fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
            sync_dir(&self.root)?;
        }
        if self.latest_version()?.is_none_or(|latest| latest < version) {
            self.point_latest_to(&version)?;
        }
        Ok(version)
    }

    /// Makes `version` the one [`load_latest`](Self::load_latest) serves (also a rollback).
    pub fn point_latest_to(&self, version: &Version) -> Result<(), RegistryError> {
        let tmp = self.root.join(format!(".{LATEST}.tmp-{}", std::process::id()));
        write_synced(&tmp, format!("{version}\n").as_bytes())?;
        let latest = self.root.join(LATEST);
        fs::rename(&tmp, &latest).map_err(io(&latest))?;
        sync_dir(&self.root)
    }

    /// The version `LATEST` names, if any: one small file read, cheap enough to poll every few
    /// seconds from a server that then loads and swaps when it changes.
    pub fn latest_version(&self) -> Result<Option<Version>, RegistryError> {
        let path = self.root.join(LATEST);
        match fs::read_to_string(&path) {
            Ok(s) => Ok(Some(Version::parse(s.trim())?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(RegistryError::Io { path, source: e }),
        }
    }

    /// Complete versions on disk, oldest first (names sort by training time).
    pub fn versions(&self) -> Result<Vec<Version>, RegistryError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(io(&self.root))? {
            let entry = entry.map_err(io(&self.root))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if entry.path().is_dir()
                && let Ok(v) = Version::parse(name)
            {
                out.push(v);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Loads and checks one version.
    pub fn load(&self, version: &Version) -> Result<Model, RegistryError> {
        Ok(Model::load(self.model_path(version))?)
    }

    /// Loads the version `LATEST` names; a corrupted file is an error, never a partial model.
    pub fn load_latest(&self) -> Result<(Version, Model), RegistryError> {
        let version = self.latest_version()?.ok_or_else(|| RegistryError::NoModel(self.root.clone()))?;
        let model = self.load(&version)?;
        Ok((version, model))
    }

    /// For a cold start: the latest version if it loads, else the newest older one that does.
    /// Returns the refusals met on the way so the caller can log them.
    pub fn load_newest_valid(&self) -> Result<(Version, Model, Vec<RegistryError>), RegistryError> {
        let mut refused = Vec::new();
        let latest = self.latest_version()?;
        let mut candidates = self.versions()?;
        candidates.retain(|v| latest.as_ref().is_none_or(|l| v <= l));
        if let Some(l) = &latest
            && !candidates.contains(l)
        {
            candidates.push(l.clone());
        }
        for version in candidates.into_iter().rev() {
            match self.load(&version) {
                Ok(model) => return Ok((version, model, refused)),
                Err(e) => refused.push(e),
            }
        }
        Err(refused.pop().unwrap_or_else(|| RegistryError::NoModel(self.root.clone())))
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
    /// Starts from the newest version that loads.
    pub fn open(registry: ModelRegistry) -> Result<(Self, Vec<RegistryError>), RegistryError> {
        let (version, model, refused) = registry.load_newest_valid()?;
        let live = Self {
            registry,
            current: RwLock::new((version, Arc::new(model))),
            refused: std::sync::Mutex::new(None),
        };
        Ok((live, refused))
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
    pub fn refresh(&self) -> Result<Refresh, RegistryError> {
        let Some(latest) = self.registry.latest_version()? else { return Ok(Refresh::Unchanged) };
        let current = self.version();
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        if latest == current || refused.as_ref() == Some(&latest) {
            return Ok(Refresh::Unchanged);
        }
        let model = match self.registry.load(&latest) {
            Ok(m) => Arc::new(m),
            Err(e) => {
                *refused = Some(latest);
                return Err(e);
            }
        };
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (latest.clone(), model);
        Ok(Refresh::Swapped { from: current, to: latest })
    }
}

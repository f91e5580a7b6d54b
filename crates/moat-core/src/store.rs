//! The run store: one directory per run under `MOAT_HOME/runs`, holding its
//! `metadata.json` (written atomically), logs and lock. Listing never drops a
//! run whose metadata cannot be read: it is reported as unreadable.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::atomic::{create_private_dir, write_atomic};
use crate::id::RunId;
use crate::metadata::RunMetadata;
use crate::paths::{MoatHome, run_files};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("run {0} not found")]
    NotFound(String),
    #[error("no run matches {query:?}")]
    NoMatch { query: String },
    #[error("{query:?} is ambiguous; it matches: {}", matches.join(", "))]
    Ambiguous { query: String, matches: Vec<String> },
    #[error("no runs yet")]
    Empty,
    #[error("{path}: corrupt run metadata: {source}")]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One entry of a listing.
#[derive(Debug)]
pub enum RunEntry {
    Readable(Box<RunMetadata>),
    /// The directory exists but its metadata is missing or corrupt.
    Unreadable {
        id: RunId,
        dir: PathBuf,
        reason: String,
    },
}

impl RunEntry {
    pub fn id(&self) -> &RunId {
        match self {
            RunEntry::Readable(meta) => &meta.id,
            RunEntry::Unreadable { id, .. } => id,
        }
    }
}

/// Access to the runs of one `MOAT_HOME`.
#[derive(Clone, Debug)]
pub struct RunStore {
    home: MoatHome,
}

impl RunStore {
    pub fn new(home: MoatHome) -> Self {
        RunStore { home }
    }

    pub fn home(&self) -> &MoatHome {
        &self.home
    }

    pub fn run_dir(&self, id: &RunId) -> PathBuf {
        self.home.run_dir(id)
    }

    /// Creates the run's directory (0700) and writes its first metadata.
    pub fn create(&self, meta: &RunMetadata) -> Result<PathBuf, StoreError> {
        let dir = self.run_dir(&meta.id);
        create_private_dir(&dir).map_err(io_err(&dir))?;
        self.save(meta)?;
        Ok(dir)
    }

    /// Atomically replaces the run's `metadata.json` (0600).
    pub fn save(&self, meta: &RunMetadata) -> Result<(), StoreError> {
        let path = self.run_dir(&meta.id).join(run_files::METADATA);
        let json = serde_json::to_vec_pretty(meta).map_err(|source| StoreError::Corrupt {
            path: path.clone(),
            source,
        })?;
        write_atomic(&path, &json, 0o600).map_err(io_err(&path))
    }

    pub fn load(&self, id: &RunId) -> Result<RunMetadata, StoreError> {
        let path = self.run_dir(id).join(run_files::METADATA);
        let bytes = fs::read(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::NotFound(id.to_string()),
            _ => StoreError::Io {
                path: path.clone(),
                source: e,
            },
        })?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt { path, source })
    }

    /// Ids of every run directory (unsorted).
    pub fn ids(&self) -> Result<Vec<RunId>, StoreError> {
        let dir = self.home.runs_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(StoreError::Io { path: dir, source: e });
            }
        };
        Ok(entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
            .collect())
    }

    /// Every run, newest first; unreadable ones last.
    pub fn list(&self) -> Result<Vec<RunEntry>, StoreError> {
        let mut entries: Vec<RunEntry> = self
            .ids()?
            .into_iter()
            .map(|id| match self.load(&id) {
                Ok(meta) => RunEntry::Readable(Box::new(meta)),
                Err(e) => RunEntry::Unreadable {
                    dir: self.run_dir(&id),
                    id,
                    reason: e.to_string(),
                },
            })
            .collect();
        entries.sort_by(|a, b| match (a, b) {
            (RunEntry::Readable(a), RunEntry::Readable(b)) => b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)),
            (RunEntry::Readable(_), RunEntry::Unreadable { .. }) => std::cmp::Ordering::Less,
            (RunEntry::Unreadable { .. }, RunEntry::Readable(_)) => std::cmp::Ordering::Greater,
            (a, b) => a.id().cmp(b.id()),
        });
        Ok(entries)
    }

    /// Deletes a run's directory and everything in it.
    pub fn destroy(&self, id: &RunId) -> Result<(), StoreError> {
        let dir = self.run_dir(id);
        fs::remove_dir_all(&dir).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::NotFound(id.to_string()),
            _ => StoreError::Io {
                path: dir.clone(),
                source: e,
            },
        })
    }

    /// Resolves a user's run reference: a full id, an id prefix (`run_…`) or
    /// a name (newest first). With `unique`, a name or prefix that matches
    /// several runs is an error listing them; otherwise the newest wins.
    /// `None` means the most recently created run.
    pub fn resolve(&self, query: Option<&str>, unique: bool) -> Result<RunId, StoreError> {
        let entries = self.list()?;
        let Some(query) = query else {
            return entries.first().map(|e| e.id().clone()).ok_or(StoreError::Empty);
        };
        if let Some(entry) = entries.iter().find(|e| e.id().as_str() == query) {
            return Ok(entry.id().clone());
        }
        let matches: Vec<&RunEntry> = if query.starts_with("run_") {
            entries.iter().filter(|e| e.id().as_str().starts_with(query)).collect()
        } else {
            entries
                .iter()
                .filter(|e| matches!(e, RunEntry::Readable(m) if m.name.as_deref() == Some(query)))
                .collect()
        };
        match matches.as_slice() {
            [] => Err(StoreError::NoMatch {
                query: query.to_string(),
            }),
            [only] => Ok(only.id().clone()),
            [newest, ..] if !unique => Ok(newest.id().clone()),
            many => Err(StoreError::Ambiguous {
                query: query.to_string(),
                matches: many.iter().map(|e| e.id().to_string()).collect(),
            }),
        }
    }
}

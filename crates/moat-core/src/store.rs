//! The run store: one directory per run under `MOAT_HOME/runs`, holding its
//! `metadata.json` (written atomically), logs and lock. Listing never drops a
//! run whose metadata cannot be read: it is reported as unreadable. A
//! listing of the newest runs only ([`RunStore::list_recent`]) reads just the
//! records it may show, with the help of the list index (`run_index`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::atomic::{create_private_dir, write_atomic};
use crate::id::RunId;
use crate::metadata::RunMetadata;
use crate::paths::{MoatHome, run_files};
use crate::run_index::{INDEX_FILE, RunIndex};

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

/// Reads a file expected to be a few KiB. Unlike `fs::read` it skips the
/// `statx` for a size hint: one syscall fewer per run when listing.
fn read_small(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::with_capacity(8 * 1024);
    fs::File::open(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
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

/// Some of a home's runs, and how many it holds in all.
#[derive(Debug)]
pub struct Listing {
    /// Newest first; unreadable ones last.
    pub entries: Vec<RunEntry>,
    pub total: usize,
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
        let bytes = read_small(&path).map_err(|e| match e.kind() {
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
        // An entry that cannot be read is an error, never a missing run:
        // the reaper must not take an unreadable directory for a dead run.
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::Io {
                path: dir.clone(),
                source,
            })?;
            if let Some(id) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Every run, newest first; unreadable ones last.
    pub fn list(&self) -> Result<Vec<RunEntry>, StoreError> {
        let mut entries = self.load_entries(self.ids()?);
        sort_entries(&mut entries);
        Ok(entries)
    }

    /// At least the `recent` newest runs, every live run and every
    /// unreadable one, in the order of [`RunStore::list`], without reading
    /// the record of an older finished run: the list index says which those
    /// are. Records not in the index are read, and the finished ones added
    /// to it; a failure to update the index only costs the next listing
    /// time.
    pub fn list_recent(&self, recent: usize) -> Result<Listing, StoreError> {
        let ids = self.ids()?;
        let total = ids.len();
        let index_path = self.home.runs_dir().join(INDEX_FILE);
        let mut index = RunIndex::load(&index_path);
        let mut finished = Vec::new();
        let mut unknown = Vec::new();
        for id in &ids {
            match index.created(id) {
                Some(created) => finished.push((created, id.clone())),
                None => unknown.push(id.clone()),
            }
        }
        let stale = finished.len() < index.len();
        if stale {
            let present: std::collections::HashSet<&RunId> = ids.iter().collect();
            index.retain(|id| present.contains(id));
        }
        if finished.len() > recent {
            finished.select_nth_unstable_by(recent, |a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            finished.truncate(recent);
        }
        let mut entries = self.load_entries(unknown);
        let mut added = false;
        for entry in &entries {
            if let RunEntry::Readable(meta) = entry
                && meta.state.is_terminal()
                && let Some(created) = meta.created_at.timestamp_nanos_opt()
            {
                index.insert(meta.id.clone(), created);
                added = true;
            }
        }
        if added || stale {
            let _ = index.save(&index_path);
        }
        entries.extend(self.load_entries(finished.into_iter().map(|(_, id)| id).collect()));
        sort_entries(&mut entries);
        Ok(Listing { entries, total })
    }

    /// Loads the metadata of `ids`, spread over a few threads when there are
    /// many: listing a large home is one open/read/close per run, and the
    /// waits overlap well.
    fn load_entries(&self, ids: Vec<RunId>) -> Vec<RunEntry> {
        const MIN_PER_THREAD: usize = 128;
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 4)
            .min(ids.len() / MIN_PER_THREAD)
            .max(1);
        if threads == 1 {
            return ids.into_iter().map(|id| self.entry(id)).collect();
        }
        let chunk = ids.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let workers: Vec<_> = ids
                .chunks(chunk)
                .map(|part| scope.spawn(move || part.iter().map(|id| self.entry(id.clone())).collect::<Vec<_>>()))
                .collect();
            workers
                .into_iter()
                .flat_map(|worker| worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                .collect()
        })
    }

    fn entry(&self, id: RunId) -> RunEntry {
        match self.load(&id) {
            Ok(meta) => RunEntry::Readable(Box::new(meta)),
            Err(e) => RunEntry::Unreadable {
                dir: self.run_dir(&id),
                id,
                reason: e.to_string(),
            },
        }
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
        let Some(query) = query else {
            let newest = self.list_recent(1)?.entries.into_iter().next();
            return newest.map(|e| e.id().clone()).ok_or(StoreError::Empty);
        };
        if let Ok(id) = query.parse::<RunId>()
            && self.run_dir(&id).is_dir()
        {
            return Ok(id);
        }
        let entries = self.list()?;
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

/// Newest first (ties by id); unreadable entries last, by id.
fn sort_entries(entries: &mut [RunEntry]) {
    entries.sort_by(|a, b| match (a, b) {
        (RunEntry::Readable(a), RunEntry::Readable(b)) => b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)),
        (RunEntry::Readable(_), RunEntry::Unreadable { .. }) => std::cmp::Ordering::Less,
        (RunEntry::Unreadable { .. }, RunEntry::Readable(_)) => std::cmp::Ordering::Greater,
        (a, b) => a.id().cmp(b.id()),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::RunState;

    #[test]
    fn listing_many_runs_keeps_every_run_in_order() {
        let scratch = tempfile::tempdir().unwrap();
        let root = scratch.path().join("moat-store");
        let store = RunStore::new(MoatHome::new(&root));
        let base = chrono::Utc::now();
        let mut created = Vec::new();
        for i in 0..600 {
            let mut meta = RunMetadata::new(RunId::generate(), "/w".into(), "img".into(), "docker".into());
            meta.created_at = base - chrono::Duration::seconds(i);
            meta.state = RunState::Exited;
            store.create(&meta).unwrap();
            created.push(meta.id);
        }
        std::fs::write(store.run_dir(&created[7]).join(run_files::METADATA), "{").unwrap();
        let listed: Vec<RunId> = store.list().unwrap().iter().map(|e| e.id().clone()).collect();
        let mut expected: Vec<RunId> = created.iter().filter(|id| **id != created[7]).cloned().collect();
        expected.push(created[7].clone());
        assert_eq!(listed, expected);
        std::fs::remove_dir_all(root).unwrap();
    }

    /// `count` runs a second apart, newest first; every `live_every`th is
    /// running (none with 0), the rest exited.
    fn store_with_runs(count: usize, live_every: usize) -> (tempfile::TempDir, RunStore, Vec<RunId>) {
        let scratch = tempfile::tempdir().unwrap();
        let store = RunStore::new(MoatHome::new(scratch.path()));
        let base = chrono::Utc::now();
        let ids = (0..count)
            .map(|i| {
                let mut meta = RunMetadata::new(RunId::generate(), "/w".into(), "img".into(), "docker".into());
                meta.created_at = base - chrono::Duration::seconds(i64::try_from(i).unwrap());
                let live = live_every != 0 && i % live_every == 0;
                meta.state = if live { RunState::Running } else { RunState::Exited };
                store.create(&meta).unwrap();
                meta.id
            })
            .collect();
        (scratch, store, ids)
    }

    /// What `moat list` shows of a listing: the `recent` first, live and unreadable ones.
    fn shown(entries: Vec<RunEntry>, recent: usize) -> Vec<RunId> {
        entries
            .into_iter()
            .enumerate()
            .filter(|(i, e)| *i < recent || !matches!(e, RunEntry::Readable(m) if m.state.is_terminal()))
            .map(|(_, e)| e.id().clone())
            .collect()
    }

    #[test]
    fn recent_listing_shows_what_the_full_listing_shows() {
        let (_scratch, store, ids) = store_with_runs(300, 37);
        std::fs::write(store.run_dir(&ids[250]).join(run_files::METADATA), "{").unwrap();
        let expected = shown(store.list().unwrap(), 20);
        for _ in 0..2 {
            let listing = store.list_recent(20).unwrap();
            assert_eq!(listing.total, 300);
            assert_eq!(shown(listing.entries, 20), expected);
        }
        let index = RunIndex::load(&store.home().runs_dir().join(INDEX_FILE));
        assert_eq!(index.len(), 300 - 9 - 1, "every readable finished run is indexed");
    }

    #[test]
    fn recent_listing_reads_no_older_finished_record() {
        let (_scratch, store, ids) = store_with_runs(100, 0);
        store.list_recent(5).unwrap();
        // Once indexed, an old finished run's record is not read again: a
        // record broken after indexing goes unnoticed without `--all`.
        std::fs::write(store.run_dir(&ids[90]).join(run_files::METADATA), "{").unwrap();
        let listing = store.list_recent(5).unwrap();
        assert_eq!(listing.entries.len(), 5);
        assert!(listing.entries.iter().all(|e| matches!(e, RunEntry::Readable(_))));
    }

    #[test]
    fn corrupt_or_stale_index_is_rebuilt() {
        let (_scratch, store, ids) = store_with_runs(50, 0);
        let index_path = store.home().runs_dir().join(INDEX_FILE);
        let expected = shown(store.list().unwrap(), 10);
        std::fs::write(&index_path, "moat-run-index 1\nrun_0000 garbage\n").unwrap();
        assert_eq!(shown(store.list_recent(10).unwrap().entries, 10), expected);
        assert_eq!(RunIndex::load(&index_path).len(), 50);
        store.destroy(&ids[0]).unwrap();
        let listing = store.list_recent(10).unwrap();
        assert_eq!(listing.total, 49);
        assert_eq!(listing.entries.first().map(|e| e.id().clone()), Some(ids[1].clone()));
        assert_eq!(RunIndex::load(&index_path).len(), 49);
    }

    #[test]
    fn full_ids_resolve_without_a_listing() {
        let (_scratch, store, ids) = store_with_runs(3, 0);
        assert_eq!(store.resolve(Some(ids[2].as_str()), true).unwrap(), ids[2]);
        assert_eq!(store.resolve(None, true).unwrap(), ids[0]);
        assert!(matches!(
            store.resolve(Some("run_ffffffffffff"), true),
            Err(StoreError::NoMatch { .. })
        ));
    }
}

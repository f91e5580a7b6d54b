//! Which runs are live (daemon-and-reaper.md §5), decided conservatively by
//! one pure function over the evidence, and the fallible scan that gathers
//! that evidence. Fail closed: any error while reading run records aborts
//! the sweep; it never shrinks the live set.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use moat_core::lock::{FileLock, LockError};
use moat_core::paths::run_files;
use moat_core::store::{RunStore, StoreError};
use moat_core::{RunId, RunState};

/// A run directory without readable metadata younger than this is a
/// creation in progress; older, it is a crashed creation.
pub const NO_METADATA_GRACE: Duration = Duration::from_secs(600);

/// What a run directory's `metadata.json` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Readable {
        state: RunState,
        /// Started with `--keep`: its objects stay until it is destroyed.
        keep: bool,
        /// `cleaned_at` is set: every object of the run was removed.
        cleaned: bool,
        /// The run's network (a warm-pool network it took, or its own).
        network: Option<String>,
    },
    /// Missing, or present but not valid JSON.
    Unreadable,
}

/// What the reaper knows about one run directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunDirFacts {
    pub id: RunId,
    pub lock_held: bool,
    pub record: Record,
    pub age: Duration,
}

/// Everything known about one run when its objects are judged.
#[derive(Clone, Copy, Debug)]
pub struct Evidence<'a> {
    pub in_registry: bool,
    /// `None` when the run has no directory.
    pub dir: Option<&'a RunDirFacts>,
    /// One of the run's containers is running.
    pub container_running: bool,
}

/// Pure: whether a run is live, or might be. The only dead cases are a
/// run whose record is terminal and cleaned (and not `--keep`), and a run
/// with no record (no directory, or unreadable metadata past the grace
/// period) and no running container.
pub fn is_live(evidence: Evidence<'_>) -> bool {
    if evidence.in_registry {
        return true;
    }
    let Some(dir) = evidence.dir else {
        return evidence.container_running;
    };
    if dir.lock_held {
        return true;
    }
    match dir.record {
        Record::Readable {
            state, keep, cleaned, ..
        } => !state.is_terminal() || keep || !cleaned,
        Record::Unreadable => dir.age < NO_METADATA_GRACE || evidence.container_running,
    }
}

/// Why the live set could not be taken; the sweep is aborted.
#[derive(Debug, thiserror::Error)]
pub enum LiveSetError {
    #[error("listing run directories failed: {0}")]
    Enumerate(String),
    #[error("reading {path} failed: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("checking the lock {path} failed: {reason}")]
    Lock { path: PathBuf, reason: String },
    #[error("the run registry could not be read: {0}")]
    Registry(String),
}

/// Where the scan reads run directories from: the store in production; a
/// store that fails on demand in tests.
pub trait RunRecords {
    fn ids(&self) -> Result<Vec<RunId>, LiveSetError>;
    /// The facts of one run directory; `None` when it vanished meanwhile.
    fn facts(&self, id: &RunId, now: SystemTime) -> Result<Option<RunDirFacts>, LiveSetError>;
}

impl RunRecords for RunStore {
    fn ids(&self) -> Result<Vec<RunId>, LiveSetError> {
        RunStore::ids(self).map_err(|e| LiveSetError::Enumerate(e.to_string()))
    }

    fn facts(&self, id: &RunId, now: SystemTime) -> Result<Option<RunDirFacts>, LiveSetError> {
        let dir = self.run_dir(id);
        let modified = match std::fs::metadata(&dir).and_then(|m| m.modified()) {
            Ok(modified) => modified,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(LiveSetError::Read { path: dir, source }),
        };
        let lock_path = dir.join(run_files::LOCK);
        let lock_held = lock_held(&lock_path)?;
        let record = match self.load(id) {
            Ok(meta) => Record::Readable {
                state: meta.state,
                keep: meta.keep,
                cleaned: meta.cleaned_at.is_some(),
                network: meta.network,
            },
            Err(StoreError::NotFound(_) | StoreError::Corrupt { .. }) => Record::Unreadable,
            Err(StoreError::Io { path, source }) => return Err(LiveSetError::Read { path, source }),
            Err(other) => return Err(LiveSetError::Enumerate(other.to_string())),
        };
        Ok(Some(RunDirFacts {
            id: id.clone(),
            lock_held,
            record,
            age: now.duration_since(modified).unwrap_or_default(),
        }))
    }
}

/// Whether the lock file is held; an error checking it is an error, not
/// "free". A missing lock file (or run directory, removed meanwhile) is
/// free, and the scan never creates one.
fn lock_held(path: &std::path::Path) -> Result<bool, LiveSetError> {
    let failed = |reason: String| LiveSetError::Lock {
        path: path.to_path_buf(),
        reason,
    };
    match std::fs::symlink_metadata(path) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(failed(e.to_string())),
    }
    match FileLock::try_acquire(path) {
        Ok(Some(_free)) => Ok(false),
        Ok(None) => Ok(true),
        Err(LockError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(failed(e.to_string())),
    }
}

/// Reads the facts of every run directory, or fails as a whole.
pub fn scan_run_dirs(records: &impl RunRecords) -> Result<Vec<RunDirFacts>, LiveSetError> {
    let now = SystemTime::now();
    let mut facts = Vec::new();
    for id in records.ids()? {
        facts.extend(records.facts(&id, now)?);
    }
    Ok(facts)
}

/// The runs that recorded each network as theirs (how a warm-pool network,
/// which carries no run id, is mapped to the run that took it).
pub fn network_takers(dirs: &[RunDirFacts]) -> BTreeMap<String, Vec<RunId>> {
    let mut takers: BTreeMap<String, Vec<RunId>> = BTreeMap::new();
    for dir in dirs {
        if let Record::Readable {
            network: Some(network), ..
        } = &dir.record
        {
            takers.entry(network.clone()).or_default().push(dir.id.clone());
        }
    }
    takers
}

/// Whether some run directory may have taken a network without the
/// reaper being able to tell: its record is unreadable and young (a
/// creation in progress or a damaged record).
pub fn takers_unknown(dirs: &[RunDirFacts]) -> bool {
    dirs.iter()
        .any(|d| d.record == Record::Unreadable && d.age < NO_METADATA_GRACE)
}

/// The live runs among `runs`, from the registry, the run directories and
/// the runs with a running container.
pub fn live_runs<'a>(
    runs: impl IntoIterator<Item = &'a RunId>,
    registry: &HashSet<RunId>,
    dirs: &[RunDirFacts],
    running: &HashSet<RunId>,
) -> HashSet<RunId> {
    runs.into_iter()
        .filter(|id| {
            is_live(Evidence {
                in_registry: registry.contains(*id),
                dir: dirs.iter().find(|d| &d.id == *id),
                container_running: running.contains(*id),
            })
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(n: u8) -> RunId {
        format!("run_{n:012x}").parse().unwrap()
    }

    fn readable(state: RunState, keep: bool, cleaned: bool) -> Record {
        Record::Readable {
            state,
            keep,
            cleaned,
            network: None,
        }
    }

    fn dir(lock_held: bool, record: Record, age_secs: u64) -> RunDirFacts {
        RunDirFacts {
            id: run(1),
            lock_held,
            record,
            age: Duration::from_secs(age_secs),
        }
    }

    #[test]
    fn liveness_table() {
        use RunState::*;
        // (case, in registry, run directory, container running, live?)
        let cases: Vec<(&str, bool, Option<RunDirFacts>, bool, bool)> = vec![
            (
                "in the registry",
                true,
                Some(dir(false, readable(Exited, false, true), 9999)),
                false,
                true,
            ),
            ("in the registry without a directory", true, None, false, true),
            (
                "lock held",
                false,
                Some(dir(true, readable(Exited, false, true), 9999)),
                false,
                true,
            ),
            (
                "running record nobody supervises",
                false,
                Some(dir(false, readable(Running, false, false), 9999)),
                false,
                true,
            ),
            (
                "creating record nobody supervises",
                false,
                Some(dir(false, readable(Creating, false, false), 9999)),
                false,
                true,
            ),
            (
                "stopping record",
                false,
                Some(dir(false, readable(Stopping, false, false), 9999)),
                false,
                true,
            ),
            (
                "exited, cleanup not finished",
                false,
                Some(dir(false, readable(Exited, false, false), 9999)),
                false,
                true,
            ),
            (
                "failed, cleanup not finished",
                false,
                Some(dir(false, readable(Failed, false, false), 9999)),
                false,
                true,
            ),
            (
                "exited and cleaned",
                false,
                Some(dir(false, readable(Exited, false, true), 5)),
                false,
                false,
            ),
            (
                "failed and cleaned",
                false,
                Some(dir(false, readable(Failed, false, true), 5)),
                false,
                false,
            ),
            (
                "exited and cleaned, container restarted by hand",
                false,
                Some(dir(false, readable(Exited, false, true), 5)),
                true,
                false,
            ),
            (
                "--keep run until destroyed",
                false,
                Some(dir(false, readable(Exited, true, true), 9999)),
                false,
                true,
            ),
            (
                "young directory without metadata",
                false,
                Some(dir(false, Record::Unreadable, 30)),
                false,
                true,
            ),
            (
                "old directory without metadata",
                false,
                Some(dir(false, Record::Unreadable, 601)),
                false,
                false,
            ),
            (
                "old directory without metadata, container running",
                false,
                Some(dir(false, Record::Unreadable, 601)),
                true,
                true,
            ),
            ("no directory, container stopped", false, None, false, false),
            ("no directory, container running", false, None, true, true),
        ];
        for (name, in_registry, dir, container_running, expect) in cases {
            let evidence = Evidence {
                in_registry,
                dir: dir.as_ref(),
                container_running,
            };
            assert_eq!(is_live(evidence), expect, "{name}");
        }
    }

    /// A store whose reads fail the way a full file table or a permission
    /// change makes them fail.
    struct FailingRecords {
        fail_ids: bool,
    }

    impl RunRecords for FailingRecords {
        fn ids(&self) -> Result<Vec<RunId>, LiveSetError> {
            if self.fail_ids {
                return Err(LiveSetError::Enumerate("Too many open files (os error 24)".into()));
            }
            Ok(vec![run(1), run(2)])
        }

        fn facts(&self, id: &RunId, _now: SystemTime) -> Result<Option<RunDirFacts>, LiveSetError> {
            if *id == run(2) {
                return Err(LiveSetError::Read {
                    path: PathBuf::from("runs/run_000000000002/metadata.json"),
                    source: io::Error::from_raw_os_error(13),
                });
            }
            Ok(Some(dir(false, readable(RunState::Exited, false, true), 5)))
        }
    }

    #[test]
    fn enumeration_errors_fail_the_scan_instead_of_shrinking_it() {
        let err = scan_run_dirs(&FailingRecords { fail_ids: true }).unwrap_err();
        assert!(err.to_string().contains("Too many open files"), "{err}");
        let err = scan_run_dirs(&FailingRecords { fail_ids: false }).unwrap_err();
        assert!(err.to_string().contains("Permission denied"), "{err}");
    }

    #[test]
    fn the_scan_creates_no_lock_files() {
        let scratch = tempfile::tempdir().unwrap();
        let root = scratch.path().join("moat-live");
        let store = RunStore::new(moat_core::MoatHome::new(&root));
        let meta = moat_core::RunMetadata::new(RunId::generate(), "/w".into(), "img".into(), "fake".into());
        store.create(&meta).unwrap();
        let facts = scan_run_dirs(&store).unwrap();
        assert_eq!(facts.len(), 1);
        assert!(!facts[0].lock_held);
        assert!(!store.run_dir(&meta.id).join(run_files::LOCK).exists());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn an_unreadable_metadata_file_is_an_error_not_a_dead_run() {
        let scratch = tempfile::tempdir().unwrap();
        let root = scratch.path().join("moat-live");
        let store = RunStore::new(moat_core::MoatHome::new(&root));
        let id = RunId::generate();
        // A directory where the file should be: reading it fails (EISDIR)
        // even for root, like EACCES would for a user.
        std::fs::create_dir_all(store.run_dir(&id).join(run_files::METADATA)).unwrap();
        let err = scan_run_dirs(&store).unwrap_err();
        assert!(matches!(err, LiveSetError::Read { .. }), "{err}");
        std::fs::remove_dir_all(root).unwrap();
    }
}

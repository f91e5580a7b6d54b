//! The live set (daemon-and-reaper.md §5), taken after the candidates are
//! listed: registry runs ∪ run directories whose `.lock` is held ∪ run
//! directories without metadata younger than the grace period.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use moat_core::lock::FileLock;
use moat_core::paths::run_files;
use moat_core::store::RunStore;
use moat_core::{RunId, RunState};

/// A run directory without metadata younger than this is a creation in
/// progress; older, it is a crashed creation.
pub const NO_METADATA_GRACE: Duration = Duration::from_secs(600);

/// What the reaper knows about one run directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunDirFacts {
    pub id: RunId,
    pub lock_held: bool,
    /// `None` when `metadata.json` is missing or unreadable.
    pub state: Option<RunState>,
    /// The run was started with `--keep`: its objects stay until the
    /// record is destroyed.
    pub keep: bool,
    pub age: Duration,
}

/// Pure: which runs are live.
pub fn live_set(registry: impl IntoIterator<Item = RunId>, dirs: &[RunDirFacts]) -> HashSet<RunId> {
    let mut live: HashSet<RunId> = registry.into_iter().collect();
    for dir in dirs {
        let creating = dir.state.is_none() && dir.age < NO_METADATA_GRACE;
        if dir.lock_held || creating || dir.keep {
            live.insert(dir.id.clone());
        }
    }
    live
}

/// Reads the facts of every run directory of the store.
pub fn scan_run_dirs(store: &RunStore) -> Vec<RunDirFacts> {
    let now = SystemTime::now();
    store
        .ids()
        .unwrap_or_default()
        .into_iter()
        .map(|id| {
            let dir = store.run_dir(&id);
            let age = std::fs::metadata(&dir)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|modified| now.duration_since(modified).ok())
                .unwrap_or_default();
            let meta = store.load(&id).ok();
            RunDirFacts {
                lock_held: FileLock::is_held(&dir.join(run_files::LOCK)),
                state: meta.as_ref().map(|m| m.state),
                keep: meta.is_some_and(|m| m.keep),
                age,
                id,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(n: u8) -> RunId {
        format!("run_{n:012x}").parse().unwrap()
    }

    fn dir(n: u8, lock_held: bool, state: Option<RunState>, age_secs: u64) -> RunDirFacts {
        RunDirFacts {
            id: run(n),
            lock_held,
            state,
            keep: false,
            age: Duration::from_secs(age_secs),
        }
    }

    #[test]
    fn live_set_table() {
        let cases: Vec<(&str, Vec<RunId>, RunDirFacts, bool)> = vec![
            (
                "run in the registry",
                vec![run(1)],
                dir(1, false, Some(RunState::Running), 9999),
                true,
            ),
            (
                "run dir with a held lock",
                vec![],
                dir(1, true, Some(RunState::Creating), 9999),
                true,
            ),
            ("young run dir without metadata", vec![], dir(1, false, None, 30), true),
            ("old run dir without metadata", vec![], dir(1, false, None, 601), false),
            (
                "terminal run dir with a free lock",
                vec![],
                dir(1, false, Some(RunState::Exited), 5),
                false,
            ),
            (
                "non-terminal record nobody supervises",
                vec![],
                dir(1, false, Some(RunState::Running), 5),
                false,
            ),
            (
                "terminal run kept with --keep",
                vec![],
                RunDirFacts {
                    keep: true,
                    ..dir(1, false, Some(RunState::Exited), 5)
                },
                true,
            ),
        ];
        for (name, registry, facts, expect_live) in cases {
            let live = live_set(registry, std::slice::from_ref(&facts));
            assert_eq!(live.contains(&facts.id), expect_live, "{name}");
        }
    }
}

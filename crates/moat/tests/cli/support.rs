//! A temporary MOAT_HOME with fabricated runs, and a way to run the binary
//! against it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chrono::{Duration, Utc};
use moat_core::logs::{LogRecord, LogWriter, Stream};
use moat_core::paths::run_files;
use moat_core::store::RunStore;
use moat_core::{MoatHome, RunId, RunMetadata, RunState};

pub struct TestHome {
    pub root: PathBuf,
    pub store: RunStore,
    /// Removes `root` when the home goes (after the daemon is stopped).
    _scratch: tempfile::TempDir,
}

impl TestHome {
    pub fn new() -> Self {
        let scratch = tempfile::tempdir().unwrap();
        let root = scratch.path().to_path_buf();
        let store = RunStore::new(MoatHome::new(root.join("home")));
        TestHome {
            root,
            store,
            _scratch: scratch,
        }
    }

    /// Writes a run created `age_secs` ago.
    pub fn run(&self, name: Option<&str>, state: RunState, age_secs: i64) -> RunMetadata {
        let mut meta = RunMetadata::new(
            RunId::generate(),
            PathBuf::from("/srv/project"),
            "debian:bookworm-slim".into(),
            "docker".into(),
        );
        meta.name = name.map(str::to_string);
        meta.state = state;
        meta.created_at = Utc::now() - Duration::seconds(age_secs);
        if state == RunState::Exited {
            meta.exit_code = Some(3);
        }
        if state == RunState::Failed {
            meta.failure = Some("image not found".into());
        }
        self.store.create(&meta).unwrap();
        meta
    }

    pub fn logs_path(&self, id: &RunId) -> PathBuf {
        self.store.run_dir(id).join(run_files::LOGS)
    }

    pub fn append_logs(&self, id: &RunId, lines: &[(Stream, &str)]) {
        let mut writer = LogWriter::open(&self.logs_path(id)).unwrap();
        for (stream, line) in lines {
            let record = LogRecord {
                ts: Utc::now(),
                stream: *stream,
                line: line.to_string(),
            };
            writer.append(&record).unwrap();
        }
        writer.flush().unwrap();
    }

    pub fn set_state(&self, id: &RunId, state: RunState) {
        let mut meta = self.store.load(id).unwrap();
        meta.state = state;
        self.store.save(&meta).unwrap();
    }

    /// `moat ARGS` with this home, no colour, run in `cwd` (default: root).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_moat"));
        cmd.args(args)
            .current_dir(&self.root)
            .env("MOAT_HOME", self.root.join("home"))
            .env("NO_COLOR", "1")
            // Never touch the developer's real OS keyring.
            .env("MOAT_KEYRING_BACKEND", "file")
            .env("MOAT_DAEMON_EXECUTABLE", crate::moatd::moatd())
            .env_remove("MOAT_RUNTIME")
            .env_remove("MOAT_BASE_IMAGE")
            .env_remove("MOAT_PROFILE");
        cmd
    }

    pub fn moat(&self, args: &[&str]) -> Outcome {
        Outcome::from(self.command(args).output().unwrap())
    }

    /// A path under the test's directory (workspaces live here).
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// A path under its MOAT_HOME (`root/home`, beside the workspaces: a
    /// workspace inside MOAT_HOME is refused).
    pub fn home_path(&self, rel: &str) -> PathBuf {
        self.root.join("home").join(rel)
    }
}

impl Drop for TestHome {
    /// Stops the daemon a command started (`policy suggest` asks one); the
    /// home is removed next, with the temporary directory.
    fn drop(&mut self) {
        if self.root.join("home/daemon/daemon.json").exists() {
            let _ = self.command(&["daemon", "stop"]).output();
        }
    }
}

pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Outcome {
    fn from(out: Output) -> Self {
        Outcome {
            code: out.status.code(),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }
}

impl Outcome {
    #[track_caller]
    pub fn success(&self) -> &Self {
        assert_eq!(self.code, Some(0), "stderr: {}\nstdout: {}", self.stderr, self.stdout);
        self
    }

    #[track_caller]
    pub fn failure(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "stderr: {}\nstdout: {}",
            self.stderr,
            self.stdout
        );
        self
    }
}

/// Replaces each of `ids` in `text` with `run_<index, 12 digits>`, which
/// keeps column widths.
pub fn redact_ids(text: &str, ids: &[&RunId]) -> String {
    ids.iter().enumerate().fold(text.to_string(), |acc, (i, id)| {
        acc.replace(id.as_str(), &format!("run_{i:0>12}"))
    })
}

pub fn write_file(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

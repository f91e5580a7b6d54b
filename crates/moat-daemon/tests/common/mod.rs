//! Shared by the daemon's test binaries: a daemon over the in-memory fake
//! runtime on a temporary MOAT_HOME (no proxy).
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use moat_core::logs::LogRecord;
use moat_core::paths::run_files;
use moat_core::{MoatHome, RunId};
use moat_daemon::api::RunSpec;
use moat_daemon::{Daemon, DaemonClient, DaemonConfig, Runtimes};
use moat_runtime::fake::FakeRuntime;
use moat_runtime::{Runtime, RuntimeError};

pub struct FakeRuntimes(pub FakeRuntime);

#[async_trait]
impl Runtimes for FakeRuntimes {
    async fn get(&self, _kind: &str) -> Result<Arc<dyn Runtime>, RuntimeError> {
        Ok(Arc::new(self.0.clone()))
    }
    async fn available(&self) -> Vec<Arc<dyn Runtime>> {
        vec![Arc::new(self.0.clone())]
    }
}

pub struct Fixture {
    pub root: std::path::PathBuf,
    /// Removes `root` when the fixture goes.
    _scratch: tempfile::TempDir,
    pub fake: FakeRuntime,
    pub daemon: Daemon,
}

impl Fixture {
    /// A daemon (not serving) over a fake runtime that has image `img`.
    pub fn new(configure: impl FnOnce(&mut DaemonConfig)) -> Self {
        Self::with_fake(FakeRuntime::new(), configure)
    }

    /// Like [`Fixture::new`] over `fake` (e.g. one with other timeouts).
    pub fn with_fake(fake: FakeRuntime, configure: impl FnOnce(&mut DaemonConfig)) -> Self {
        let scratch = tempfile::tempdir().unwrap();
        let root = scratch.path().to_path_buf();
        let home = MoatHome::new(&root);
        std::fs::create_dir_all(home.daemon_dir()).unwrap();
        std::fs::create_dir_all(root.join("workspace")).unwrap();
        fake.add_image("img");
        let mut config = DaemonConfig::new(home);
        config.egress = None;
        configure(&mut config);
        let daemon = Daemon::new(config, Arc::new(FakeRuntimes(fake.clone())), None);
        Fixture {
            root,
            _scratch: scratch,
            fake,
            daemon,
        }
    }

    pub fn spec(&self) -> RunSpec {
        RunSpec {
            workspace: self.root.join("workspace"),
            image: "img".into(),
            runtime: "fake".into(),
            command: vec!["work".into()],
            ..Default::default()
        }
    }

    pub fn logs(&self, id: &RunId) -> Vec<LogRecord> {
        let text = std::fs::read_to_string(self.daemon.store().run_dir(id).join(run_files::LOGS)).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// Serves this fixture's daemon on its socket; returns once it answers.
    pub async fn serve(&self) -> Served {
        let config = self.daemon.config().clone();
        let task = tokio::spawn(moat_daemon::run(config, Arc::new(FakeRuntimes(self.fake.clone()))));
        let client = DaemonClient::new(self.daemon.home().daemon_socket());
        for _ in 0..100 {
            if client.health().await.is_ok() {
                return Served { client, task };
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("daemon never answered");
    }

    pub async fn wait_until_gone(&self, id: &RunId) {
        for _ in 0..200 {
            if self.daemon.registry().get(id).is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("run {id} never left the registry");
    }
}

/// A daemon serving its socket in a task.
pub struct Served {
    pub client: DaemonClient,
    task: tokio::task::JoinHandle<Result<(), moat_daemon::DaemonError>>,
}

impl Served {
    /// Asks the daemon to shut down and waits for it to exit cleanly.
    pub async fn shutdown(self) {
        self.client.shutdown().await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

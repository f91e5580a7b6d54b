//! `moat run --runtime kubernetes` end to end: the real `moat` and `moatd`
//! binaries against the mock Kubernetes API server (a kubeconfig pointing
//! at it): the run's output and exit code come back, its objects are
//! created with moat's labels and removed after the run, and what the
//! runtime cannot do yet is refused with the reason. Needs no cluster.

#[path = "kubernetes/cluster_proxy.rs"]
mod cluster_proxy;
#[path = "common/moatd.rs"]
mod moatd;
#[path = "../../moat-daemon/tests/proxy_process/mod.rs"]
mod proxy_process;
// Shared with the Docker suite, which uses all of it.
#[allow(dead_code)]
#[path = "docker/upstream.rs"]
mod upstream;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use moat_kube::mock::{MockApiServer, PodScript};

struct Setup {
    scratch: tempfile::TempDir,
}

impl Setup {
    fn new(mock: &MockApiServer, moat_yaml: &str) -> Setup {
        let scratch = tempfile::Builder::new().prefix("moat-kube-").tempdir().unwrap();
        std::fs::create_dir_all(scratch.path().join("ws")).unwrap();
        std::fs::write(scratch.path().join("kubeconfig"), mock.kubeconfig("agents")).unwrap();
        std::fs::write(scratch.path().join("ws/moat.yaml"), moat_yaml).unwrap();
        // No warm pool: these daemons need no Docker networks, and one
        // killed by a test would leave its pool behind.
        std::fs::create_dir_all(scratch.path().join("home")).unwrap();
        std::fs::write(scratch.path().join("home/config.yaml"), NO_POOL).unwrap();
        Setup { scratch }
    }

    fn root(&self) -> &Path {
        self.scratch.path()
    }

    fn moat(&self, args: &[&str]) -> Output {
        self.command(args).stdin(Stdio::null()).output().unwrap()
    }

    /// `moat ARGS` with `input` on its standard input.
    fn moat_with_stdin(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write as _;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// `moat ARGS` started, its output captured.
    fn spawn_moat(&self, args: &[&str]) -> std::process::Child {
        self.command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_moat"));
        command
            .args(args)
            .env("MOAT_HOME", self.root().join("home"))
            .env("KUBECONFIG", self.root().join("kubeconfig"))
            .env_remove("MOAT_FAULT")
            .env_remove("MOAT_RUNTIME")
            .env("NO_COLOR", "1")
            .env("MOAT_KEYRING_BACKEND", "file")
            .env("MOAT_DAEMON_EXECUTABLE", moatd::moatd())
            .current_dir(self.root().join("ws"));
        command
    }

    fn home(&self) -> PathBuf {
        self.root().join("home")
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = self.moat(&["daemon", "stop"]);
    }
}

/// The daemon's `config.yaml` in these tests.
const NO_POOL: &str = "network_pool_size: 0\n";

const MOAT_YAML: &str = "runtime: kubernetes\nkubernetes:\n  namespace: agents\n  workspace_claim: project\n";

/// Runs `moat ARGS` while the namespace's proxy pod is started (its
/// creation waits for the proxy); returns its output and the proxy.
async fn moat_with_proxy(mock: &MockApiServer, setup: &Setup, args: &[&str]) -> (Output, proxy_process::ProxyProcess) {
    let child = setup.spawn_moat(args);
    let proxy = cluster_proxy::start_proxy_pod(mock, &setup.root().join("proxy-pod"), None).await;
    let out = tokio::task::block_in_place(|| child.wait_with_output()).unwrap();
    (out, proxy)
}

/// The names of `kind` objects of runs: the namespace's proxy's left out.
fn run_objects(mock: &MockApiServer, kind: &str) -> Vec<String> {
    let mut names = mock.names(kind);
    names.retain(|name| !name.starts_with("moat-proxy"));
    names
}

/// Polls `done` for up to ten seconds.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moat_run_on_kubernetes_prints_the_output_and_exits_with_the_code() {
    let mock = MockApiServer::start().await.unwrap();
    mock.script(PodScript {
        output: "hello from the cluster\n".into(),
        exit_code: 7,
        ..Default::default()
    });
    let setup = Setup::new(&mock, MOAT_YAML);
    let (out, _proxy) = moat_with_proxy(
        &mock,
        &setup,
        &["run", "--runtime", "kubernetes", "--", "sh", "-c", "exit 7"],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("hello from the cluster"),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert_eq!(out.status.code(), Some(7), "stdout: {stdout}\nstderr: {stderr}");

    let created: Vec<String> = mock.requests().into_iter().filter(|r| r.starts_with("POST")).collect();
    for kind in ["configmaps", "networkpolicies", "pods"] {
        assert!(
            created.iter().any(|r| r.contains(kind)),
            "no {kind} created: {created:?}"
        );
    }
    let run_dir = std::fs::read_dir(setup.home().join("runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.path().join("metadata.json")).unwrap()).unwrap();
    assert_eq!(meta["runtime"], "kubernetes", "{meta}");
    eventually("the run's objects were not removed", || {
        ["pods", "configmaps", "networkpolicies", "secrets"]
            .iter()
            .all(|kind| run_objects(&mock, kind).is_empty())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_kubernetes_cannot_do_yet_is_refused_before_anything_is_created() {
    let mock = MockApiServer::start().await.unwrap();
    let setup = Setup::new(&mock, &format!("{MOAT_YAML}ports:\n  web: 8080\n"));
    let out = tokio::task::block_in_place(|| setup.moat(&["run", "--trust", "--", "true"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("`ports:` endpoints") && stderr.contains("kubernetes"),
        "{stderr}"
    );
    assert!(mock.names("pods").is_empty() && mock.names("configmaps").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_without_a_workspace_claim_is_refused_with_the_fix() {
    let mock = MockApiServer::start().await.unwrap();
    let setup = Setup::new(&mock, "runtime: kubernetes\nkubernetes:\n  namespace: agents\n");
    let out = tokio::task::block_in_place(|| setup.moat(&["run", "--", "true"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("workspace_claim"), "{stderr}");
    assert!(mock.names("pods").is_empty(), "no pod was started");
}

/// A pod (ended) and a policy of `run`, labelled for the home `home`.
fn orphan_objects(mock: &MockApiServer, run: &str, home: &str) {
    let object = run.replace('_', "-");
    let labels = serde_json::json!({
        "dev.moat.managed": "true", "dev.moat.run-id": run, "dev.moat.home": home, "dev.moat.role": "main",
    });
    mock.insert(
        "pods",
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": object, "namespace": "agents", "labels": labels},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]},
            "status": {"phase": "Succeeded", "containerStatuses": [{"name": "main", "image": "", "imageID": "",
                "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0}}}]},
        }),
    );
    let mut network_labels = labels;
    network_labels["dev.moat.role"] = "network".into();
    mock.insert(
        "networkpolicies",
        serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": format!("moat-{object}"), "namespace": "agents", "labels": network_labels},
            "spec": {"podSelector": {}},
        }),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_sweeps_orphans_of_this_home_from_the_cluster_and_nothing_else() {
    let mock = MockApiServer::start().await.unwrap();
    let setup = Setup::new(&mock, MOAT_YAML);
    // A run connects the daemon to the cluster; the reaper sweeps the
    // clusters its runs used.
    let (out, _proxy) = moat_with_proxy(&mock, &setup, &["run", "--", "true"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let home = moat_core::MoatHome::new(setup.home()).label();
    orphan_objects(&mock, "run_0000deadbeef", &home);
    orphan_objects(&mock, "run_00000other0", "otherhome000");

    let out = tokio::task::block_in_place(|| setup.moat(&["system", "prune", "--force"]));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    assert_eq!(run_objects(&mock, "pods"), ["run-00000other0"], "{report}");
    assert_eq!(mock.names("networkpolicies"), ["moat-run-00000other0"], "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moat_stop_deletes_the_pod_and_the_run_is_cleaned_up() {
    let mock = MockApiServer::start().await.unwrap();
    mock.script(PodScript {
        runs_for: Duration::from_secs(120),
        ..Default::default()
    });
    let setup = Setup::new(&mock, MOAT_YAML);
    let (out, _proxy) = moat_with_proxy(&mock, &setup, &["run", "-d", "--", "sleep", "120"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run_id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    eventually("the pod never ran", || {
        mock.object("pods", &run_id.replace('_', "-"))
            .is_some_and(|pod| pod["status"]["containerStatuses"][0]["state"]["running"].is_object())
    });
    let out = tokio::task::block_in_place(|| setup.moat(&["stop", &run_id]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eventually("the run's objects were not removed", || {
        ["pods", "configmaps", "networkpolicies"]
            .iter()
            .all(|kind| run_objects(&mock, kind).is_empty())
    });
    let meta_path = setup.home().join("runs").join(&run_id).join("metadata.json");
    eventually("the run was not recorded cleaned up", || {
        std::fs::read_to_string(&meta_path).is_ok_and(|text| text.contains("cleaned_at"))
    });
}

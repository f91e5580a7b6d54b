//! A strict run with a grant on Kubernetes, end to end through the
//! namespace's proxy: the real `moat` and `moatd` against the mock API
//! server, which port-forwards the proxy's control port to a real `moatd
//! proxy` started with the Secrets the daemon deployed. The test plays the
//! run's pod: it reads its proxy settings from the run's Secret and sends
//! requests through the proxy to a fake HTTPS upstream. Proves injection,
//! the strict policy, revoke reaching the live run, the trace pulled into
//! `network.jsonl`, the token stopping when the run ends, and that the
//! credential is nowhere in the cluster's objects or moat's records.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use moat_kube::mock::{MockApiServer, PodScript};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::proxy_process::{self, ProxyProcess, TestUpstream, write_file};
use super::upstream::Upstream;
use super::{NO_POOL, Setup, moatd};

const API_HOST: &str = "api.moat-test.example";
/// Obviously fake; searched for everywhere it must not be.
const TOKEN: &str = "moat-kube-credential-6b2d41e0c9";
const CONTROL_PORT: u16 = 8443;

/// Waits (up to `bound`) for `found` to give something.
async fn wait_for<T>(what: &str, bound: Duration, found: impl Fn() -> Option<T>) -> T {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(value) = found() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Secret's entries, decoded.
fn secret_data(mock: &MockApiServer, name: &str) -> Option<Vec<(String, String)>> {
    let secret = mock.object("secrets", name)?;
    let data = secret["data"].as_object()?;
    Some(
        data.iter()
            .map(|(key, value)| {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(value.as_str().unwrap_or_default())
                    .unwrap();
                (key.clone(), String::from_utf8(bytes).unwrap())
            })
            .collect(),
    )
}

fn entry(data: &[(String, String)], key: &str) -> String {
    let found = data.iter().find(|(k, _)| k == key);
    let keys: Vec<&String> = data.iter().map(|(k, _)| k).collect();
    found.unwrap_or_else(|| panic!("no {key} in {keys:?}")).1.clone()
}

/// Starts `moatd proxy` as the Deployment would, with the Secrets' files,
/// once the daemon has deployed them, and points the mock's port-forward
/// of the control port at it.
pub(super) async fn start_proxy_pod(mock: &MockApiServer, dir: &Path, upstream: Option<&Upstream>) -> ProxyProcess {
    let (ca, control) = wait_for("the proxy's Secrets", Duration::from_secs(60), || {
        Some((
            secret_data(mock, "moat-proxy-ca")?,
            secret_data(mock, "moat-proxy-control")?,
        ))
    })
    .await;
    let (ca_dir, control_dir) = (dir.join("ca"), dir.join("control"));
    std::fs::create_dir_all(&ca_dir).unwrap();
    std::fs::create_dir_all(&control_dir).unwrap();
    for (key, value) in &ca {
        write_file(&ca_dir.join(key), value, 0o600);
    }
    for (key, value) in &control {
        write_file(&control_dir.join(key), value, 0o600);
    }
    let upstream = upstream.map(|upstream| TestUpstream {
        ca_file: &upstream.ca_file,
        host: API_HOST,
    });
    let pod = proxy_process::start(&moatd::moatd(), dir, upstream);
    mock.forward_port(CONTROL_PORT, pod.control_addr);
    pod
}

/// What the pod's client gets for `GET https://host:port/user` through
/// the proxy with `token`: the CONNECT answer's status line, and the
/// upstream's answer when the tunnel opened.
async fn get_through_proxy(proxy: SocketAddr, token: &str, ca_pem: &str, host: &str, port: u16) -> (String, String) {
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!("moat:{token}"));
    let connect = format!(
        "CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\nProxy-Authorization: Basic {credentials}\r\n\r\n"
    );
    tcp.write_all(connect.as_bytes()).await.unwrap();
    let head = read_head(&mut tcp).await;
    let status = head.lines().next().unwrap_or_default().to_string();
    if !status.contains(" 200") {
        return (status, String::new());
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut tls = connector
        .connect(ServerName::try_from(host.to_string()).unwrap(), tcp)
        .await
        .unwrap();
    let request = format!("GET /user HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer)).await;
    (status, String::from_utf8_lossy(&answer).into_owned())
}

async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// The upstream's provider `echo` and [`TOKEN`] granted for it.
fn grant_echo(setup: &Setup, upstream: &Upstream) {
    let home = setup.home();
    std::fs::create_dir_all(home.join("providers")).unwrap();
    let config = format!(
        "{NO_POOL}extra_ca_file: {}\nresolve:\n  {API_HOST}: 127.0.0.1\n",
        upstream.ca_file.display()
    );
    std::fs::write(home.join("config.yaml"), config).unwrap();
    std::fs::write(
        home.join("providers/echo.yaml"),
        format!(
            "name: echo\nhosts: [\"{API_HOST}:{}\"]\nheader: Authorization\nprefix: \"Bearer \"\n\
             placeholder: moat-echo-placeholder-0000000000\nenv: ECHO_TOKEN\n",
            upstream.port
        ),
    )
    .unwrap();
    let granted = setup.moat_with_stdin(&["grant", "echo"], &format!("{TOKEN}\n"));
    assert!(granted.status.success(), "{}", String::from_utf8_lossy(&granted.stderr));
}

fn trace_records(home: &Path, run_id: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(home.join("runs").join(run_id).join("network.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Every file under `dir`, read as text.
fn files_under(dir: &Path) -> Vec<(std::path::PathBuf, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            found.push((path, String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    found
}

/// A detached strict run with the `echo` grant on the mock cluster, its
/// proxy pod started, and what its pod was given.
struct ClusterRun {
    mock: MockApiServer,
    setup: Setup,
    upstream: Option<Upstream>,
    proxy: ProxyProcess,
    run_id: String,
    pod_name: String,
    run_token: String,
    ca_pem: String,
}

impl ClusterRun {
    async fn start(runs_for: Duration) -> ClusterRun {
        let mock = MockApiServer::start().await.unwrap();
        mock.script(PodScript {
            output: "the agent ran\n".into(),
            exit_code: 0,
            runs_for,
            cannot_start: None,
        });
        let setup = Setup::new(&mock, "");
        // Both block: the upstream starts its own runtime, the grant runs `moat`.
        let upstream = tokio::task::block_in_place(|| Upstream::start(API_HOST, setup.root()));
        // The upstream is on loopback, which the proxy reaches only when a
        // rule names it with its port.
        let moat_yaml = format!(
            "runtime: kubernetes\nkubernetes:\n  namespace: agents\n  workspace_claim: project\n  \
             proxy_image: moat-proxy:test\ngrants: [echo]\nnetwork:\n  policy: strict\n  rules: ['{API_HOST}:{}']\n",
            upstream.port
        );
        std::fs::write(setup.root().join("ws/moat.yaml"), moat_yaml).unwrap();
        tokio::task::block_in_place(|| grant_echo(&setup, &upstream));

        // Creation waits for the proxy, which this test starts meanwhile.
        let detached = setup.spawn_moat(&[
            "run",
            "-d",
            "--trust",
            "--",
            "sh",
            "-c",
            "curl https://api.example/user",
        ]);
        let proxy = start_proxy_pod(&mock, &setup.root().join("proxy-pod"), Some(&upstream)).await;
        let out = tokio::task::block_in_place(|| detached.wait_with_output()).unwrap();
        let run_id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            run_id.starts_with("run_"),
            "{run_id:?} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pod_name = run_id.replace('_', "-");
        let files = secret_data(&mock, &format!("{pod_name}-files")).unwrap();
        let proxy_url = entry(&files, "env-HTTPS_PROXY");
        assert!(
            proxy_url.ends_with("@moat-proxy.agents.svc:8080"),
            "the run names its namespace's proxy: {proxy_url}"
        );
        let run_token = proxy_url
            .trim_start_matches("http://moat:")
            .split('@')
            .next()
            .unwrap()
            .to_string();
        let ca_pem = entry(&secret_data(&mock, "moat-proxy-ca").unwrap(), "ca.crt");
        assert!(
            files.iter().any(|(_, value)| *value == ca_pem),
            "the namespace's CA certificate is among the run's files"
        );
        ClusterRun {
            mock,
            setup,
            upstream: Some(upstream),
            proxy,
            run_id,
            pod_name,
            run_token,
            ca_pem,
        }
    }

    fn upstream(&self) -> &Upstream {
        self.upstream.as_ref().unwrap()
    }

    /// `GET /user` of the upstream, as the run's pod.
    async fn call_api(&self) -> (String, String) {
        let port = self.upstream().port;
        get_through_proxy(self.proxy.proxy_addr, &self.run_token, &self.ca_pem, API_HOST, port).await
    }

    /// Whether the upstream's latest request carried the credential.
    fn last_was_injected(&self) -> bool {
        let seen = self.upstream().seen();
        seen.last().and_then(|s| s.header("authorization")) == Some(&format!("Bearer {TOKEN}"))
    }

    /// Revokes the grant and waits until the run's requests go out without it.
    async fn revoke_and_see_it_reach_the_run(&self) {
        let revoked = tokio::task::block_in_place(|| self.setup.moat_with_stdin(&["revoke", "echo"], ""));
        assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, _) = self.call_api().await;
            assert!(
                status.contains(" 200"),
                "the granted host stays reachable after the revoke: {status}"
            );
            if !self.last_was_injected() {
                return;
            }
            assert!(Instant::now() < deadline, "the revoke never reached the run");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `moat attach`: the run's end, once it comes.
    fn attach(&self) -> std::process::Output {
        tokio::task::block_in_place(|| self.setup.moat(&["attach", &self.run_id]))
    }

    /// Waits until the run's token no longer opens the proxy (its cleanup).
    async fn wait_token_dropped(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, _) = self.call_api().await;
            if !status.contains(" 200") {
                return;
            }
            assert!(Instant::now() < deadline, "the ended run's token still works: {status}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn trace(&self) -> Vec<serde_json::Value> {
        trace_records(&self.setup.home(), &self.run_id)
    }

    fn daemon_pid(&self) -> u32 {
        let text = std::fs::read_to_string(self.setup.home().join("daemon/daemon.json")).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        json["pid"].as_u64().unwrap() as u32
    }

    fn finish(mut self) {
        // Its own runtime may not be dropped by this one's thread.
        let upstream = self.upstream.take();
        tokio::task::block_in_place(|| drop(upstream));
    }
}

/// The trace's records of requests to `host` (`method`, or any when `None`).
fn requests_to(records: &[serde_json::Value], host: &str, method: Option<&str>) -> usize {
    let wanted = |r: &&serde_json::Value| r["host"] == host && method.is_none_or(|m| r["method"] == m);
    records.iter().filter(wanted).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_run_with_a_grant_gets_its_credential_from_the_namespaces_proxy_and_never_holds_it() {
    let run = ClusterRun::start(Duration::from_secs(15)).await;
    let deployment = run.mock.object("deployments", "moat-proxy").unwrap();
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"], "moat-proxy:test",
        "kubernetes.proxy_image names the proxy's image"
    );
    let pod = run.mock.object("pods", &run.pod_name).unwrap().to_string();
    assert!(
        !pod.contains(&run.run_token),
        "the proxy token is not in the pod's spec"
    );

    // Injected by the proxy; the pod never had it.
    let (status, answer) = run.call_api().await;
    assert!(status.contains(" 200"), "{status}");
    assert!(answer.contains(" 200 "), "{answer}");
    assert!(run.last_was_injected(), "{:?}", run.upstream().seen());

    // Strict: a host without a rule is refused.
    let (refused, _) = get_through_proxy(
        run.proxy.proxy_addr,
        &run.run_token,
        &run.ca_pem,
        "elsewhere.example",
        443,
    )
    .await;
    assert!(!refused.contains(" 200"), "strict run reached another host: {refused}");

    run.revoke_and_see_it_reach_the_run().await;

    let out = run.attach();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("the agent ran"), "{stdout}");
    run.wait_token_dropped().await;

    // The run's trace came back from the cluster into its record.
    let records = run.trace();
    assert!(
        requests_to(&records, API_HOST, Some("GET")) >= 2,
        "no trace records of {API_HOST}: {records:?}"
    );
    assert!(
        requests_to(&records, "elsewhere.example", None) >= 1,
        "the refused request is traced: {records:?}"
    );

    // The credential is in no object of the cluster and no file of moat's
    // records (only in the encrypted credential store).
    for kind in [
        "pods",
        "secrets",
        "configmaps",
        "deployments",
        "services",
        "networkpolicies",
    ] {
        for name in run.mock.names(kind) {
            let object = run.mock.object(kind, &name).unwrap().to_string();
            assert!(!object.contains(TOKEN), "{kind}/{name} holds the credential");
        }
    }
    for (path, text) in files_under(&run.setup.home().join("runs")) {
        assert!(!text.contains(TOKEN), "{} holds the credential", path.display());
    }
    // The namespace's key material stays private on this machine.
    let material = files_under(&run.setup.home().join("kubernetes"))
        .into_iter()
        .find(|(path, _)| path.ends_with("proxy-material.json"))
        .expect("the namespace's material is kept in MOAT_HOME");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&material.0).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "{} is readable by others", material.0.display());
    run.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_daemon_readopts_a_cluster_run_drives_its_proxy_and_keeps_its_trace_whole() {
    let run = ClusterRun::start(Duration::from_secs(20)).await;
    let (status, _) = run.call_api().await;
    assert!(status.contains(" 200") && run.last_was_injected(), "{status}");
    // The first daemon has pulled that record before it dies.
    let deadline = Instant::now() + Duration::from_secs(10);
    while requests_to(&run.trace(), API_HOST, Some("GET")) < 1 {
        assert!(Instant::now() < deadline, "the first request's record never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first_daemon = run.daemon_pid();
    Command::new("kill")
        .args(["-9", &first_daemon.to_string()])
        .status()
        .unwrap();
    // A request while no daemon lives: the proxy keeps serving the run.
    let (status, _) = run.call_api().await;
    assert!(status.contains(" 200") && run.last_was_injected(), "{status}");

    // The next command brings a new daemon, which re-adopts the run and
    // drives the proxy: a revoke reaches the run through it.
    let restarted = tokio::task::block_in_place(|| run.setup.moat(&["daemon", "restart"]));
    assert!(
        restarted.status.success(),
        "{}",
        String::from_utf8_lossy(&restarted.stderr)
    );
    assert_ne!(run.daemon_pid(), first_daemon);
    run.revoke_and_see_it_reach_the_run().await;

    let out = run.attach();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    run.wait_token_dropped().await;
    // Every request is in the record once: none lost across the restart,
    // none pulled twice.
    let made = run.upstream().seen().len();
    assert_eq!(
        requests_to(&run.trace(), API_HOST, Some("GET")),
        made,
        "{:?}",
        run.trace()
    );
    run.finish();
}

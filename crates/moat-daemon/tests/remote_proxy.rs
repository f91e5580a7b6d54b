//! The proxy's remote mode as real processes on loopback: `moatd proxy`
//! started with material moat generates, driven over its mutual-TLS control
//! API by the daemon's client, with a run's requests going through it to a
//! fake HTTPS upstream. Proves injection, revoke on the next request,
//! refusal of a control client the namespace's CA did not issue, trace
//! pulls by cursor, and that the credential is in no trace.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use moat_proxy::remote::{CertifiedKey, ControlClient, RemoteProxyMaterial, RemoteRun, TcpTransport};
use moat_proxy::{InjectionRule, NetworkPolicy, ProxyToken};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

mod proxy_process;

use proxy_process::{ProxyProcess, TestUpstream, write_file};

const SECRET: &str = "Bearer real-secret-7f3a9c";
const UPSTREAM_HOST: &str = "api.fake.test";
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes the material where a Secret volume would put it and starts the proxy.
fn start_remote_proxy(dir: &Path, material: &RemoteProxyMaterial, upstream: &Upstream) -> ProxyProcess {
    let ca_dir = dir.join("ca");
    let control_dir = dir.join("control");
    std::fs::create_dir_all(&ca_dir).unwrap();
    std::fs::create_dir_all(&control_dir).unwrap();
    write_file(&ca_dir.join("ca.crt"), &material.interception_ca.cert_pem, 0o644);
    write_file(&ca_dir.join("ca.key"), &material.interception_ca.key_pem, 0o600);
    write_file(&control_dir.join("ca.crt"), &material.control_ca_pem, 0o644);
    write_file(&control_dir.join("tls.crt"), &material.control_server.cert_pem, 0o644);
    write_file(&control_dir.join("tls.key"), &material.control_server.key_pem, 0o600);
    let upstream = TestUpstream {
        ca_file: &upstream.ca_path,
        host: UPSTREAM_HOST,
    };
    proxy_process::start(Path::new(env!("CARGO_BIN_EXE_moatd")), dir, Some(upstream))
}

fn control_client(material: &RemoteProxyMaterial, identity: &CertifiedKey, addr: SocketAddr) -> ControlClient {
    ControlClient::new(
        Arc::new(TcpTransport(addr)),
        &material.control_ca_pem,
        identity,
        "localhost",
        CALL_TIMEOUT,
    )
    .unwrap()
}

// === Fake HTTPS upstream: answers with the Authorization header it got ===

struct Upstream {
    addr: SocketAddr,
    ca_path: std::path::PathBuf,
}

async fn start_upstream(dir: &Path) -> Upstream {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![UPSTREAM_HOST.to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let ca_path = dir.join("upstream-ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::from_pem_slice(leaf_key.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = service_fn(|req: hyper::Request<Incoming>| async move {
                    let seen = req
                        .headers()
                        .get("authorization")
                        .map_or("<none>".to_string(), |v| v.to_str().unwrap().to_string());
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(seen))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Upstream { addr, ca_path }
}

// === A run's client: CONNECT through the proxy, TLS trusting the namespace's CA ===

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Opens a tunnel with `token`; `Err(status)` when the proxy refuses it.
async fn open_tunnel(proxy: SocketAddr, token: &str, upstream: SocketAddr, ca_pem: &str) -> Result<Sender, u16> {
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("moat:{token}"));
    let authority = format!("{UPSTREAM_HOST}:{}", upstream.port());
    let connect =
        format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nProxy-Authorization: Basic {auth}\r\n\r\n");
    tcp.write_all(connect.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if tcp.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let status: u16 = String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    if status != 200 {
        return Err(status);
    }
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(UPSTREAM_HOST).unwrap(), tcp)
        .await
        .unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(connection);
    Ok(sender)
}

/// What Authorization the upstream saw for one GET.
async fn authorization_seen(sender: &mut Sender) -> String {
    let request = hyper::Request::get("/v1/things")
        .header("host", UPSTREAM_HOST)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

fn injection(upstream: &Upstream) -> InjectionRule {
    InjectionRule {
        host_pattern: format!("{UPSTREAM_HOST}:{}", upstream.addr.port()),
        header_name: "Authorization".to_string(),
        header_value: SECRET.to_string(),
        placeholder: None,
        grant: "fake".to_string(),
        plaintext: false,
        list_additions: Vec::new(),
        removals: Vec::new(),
    }
}

fn strict_policy(upstream: &Upstream) -> NetworkPolicy {
    // Loopback is reachable only when a rule names it as host:port.
    serde_json::from_value(serde_json::json!({
        "mode": "strict",
        "rules": [format!("{UPSTREAM_HOST}:{}", upstream.addr.port())],
    }))
    .unwrap()
}

/// Pulls the run's trace until it holds `lines` records (the proxy writes in batches).
async fn pull_until(client: &ControlClient, run_id: &str, lines: usize) -> (String, u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let chunk = client.pull_trace(run_id, 0).await.unwrap();
        let text = String::from_utf8(chunk.records).unwrap();
        if text.lines().count() >= lines || Instant::now() > deadline {
            return (text, chunk.next_cursor);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_proxy_injects_revokes_refuses_strangers_and_returns_traces() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = start_upstream(dir.path()).await;
    let material = RemoteProxyMaterial::generate(&["localhost".to_string()]).unwrap();
    let proxy = start_remote_proxy(dir.path(), &material, &upstream);
    let client = control_client(&material, &material.control_client, proxy.control_addr);
    client.health().await.unwrap();

    // A run registered over the control API gets the credential injected.
    let token = ProxyToken::generate();
    let run = RemoteRun {
        token: token.as_str().to_string(),
        policy: strict_policy(&upstream),
        injections: vec![injection(&upstream)],
        redact_values: Vec::new(),
        mcp_servers: Vec::new(),
    };
    client.put_run("run_remote1", &run).await.unwrap();
    let ca_pem = &material.interception_ca.cert_pem;
    let mut tunnel = open_tunnel(proxy.proxy_addr, token.as_str(), upstream.addr, ca_pem)
        .await
        .unwrap();
    assert_eq!(authorization_seen(&mut tunnel).await, SECRET);

    // A client whose certificate another CA issued is refused, and cannot
    // change the run (here: re-register it with the attacker's token).
    let stranger = RemoteProxyMaterial::generate(&["localhost".to_string()]).unwrap();
    let attacker = control_client(&material, &stranger.control_client, proxy.control_addr);
    assert!(
        attacker.health().await.is_err(),
        "a foreign client certificate was accepted"
    );
    let stolen = RemoteRun {
        token: ProxyToken::generate().as_str().to_string(),
        ..run.clone()
    };
    assert!(attacker.put_run("run_remote1", &stolen).await.is_err());
    assert!(
        open_tunnel(proxy.proxy_addr, &stolen.token, upstream.addr, ca_pem)
            .await
            .is_err(),
        "the attacker's token works"
    );

    // Revoking (empty injections) stops injection on the open tunnel's next request.
    client.set_injections("run_remote1", &[]).await.unwrap();
    assert_eq!(authorization_seen(&mut tunnel).await, "<none>");

    // Traces come back by cursor, without the credential.
    let (trace, next) = pull_until(&client, "run_remote1", 2).await;
    let records: Vec<serde_json::Value> = trace.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 2, "{trace}");
    assert_eq!(records[0]["host"], UPSTREAM_HOST);
    assert_eq!(records[0]["grants"], serde_json::json!(["fake"]));
    assert!(
        records[1].get("grants").is_none_or(|g| g == &serde_json::json!([])),
        "{trace}"
    );
    assert!(!trace.contains("real-secret"), "the credential is in the trace");
    assert_eq!(next, trace.len() as u64);
    let rest = client.pull_trace("run_remote1", next).await.unwrap();
    assert!(rest.records.is_empty());
    assert_eq!(rest.next_cursor, next);

    // Removing the run makes its token useless; forgetting drops its trace.
    client.remove_run("run_remote1").await.unwrap();
    assert_eq!(
        open_tunnel(proxy.proxy_addr, token.as_str(), upstream.addr, ca_pem)
            .await
            .err(),
        Some(407)
    );
    client.forget_trace("run_remote1").await.unwrap();
    assert!(client.pull_trace("run_remote1", 0).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_client_without_a_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = start_upstream(dir.path()).await;
    let material = RemoteProxyMaterial::generate(&["localhost".to_string()]).unwrap();
    let proxy = start_remote_proxy(dir.path(), &material, &upstream);
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(material.control_ca_pem.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(proxy.control_addr).await.unwrap();
    let outcome = async {
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await?;
        tls.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n").await?;
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(CALL_TIMEOUT, outcome).await.unwrap();
    match answer {
        Err(_) => {}
        Ok(bytes) => assert!(
            !bytes.starts_with(b"HTTP/1.1 200"),
            "answered without a client certificate"
        ),
    }
}

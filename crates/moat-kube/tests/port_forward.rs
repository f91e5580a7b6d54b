//! Reaching the proxy's control port through the API server's
//! port-forward, against the mock API server: bytes round-trip to a TCP
//! echo server behind the forwarded port (large payloads included), and
//! each way it fails says why (no ready pod, RBAC, a refused port).

use std::net::SocketAddr;
use std::time::Duration;

use moat_kube::mock::{Fault, MockApiServer};
use moat_kube::proxy_manifest::{CONTROL_PORT, ProxyPlacement, ProxySecrets};
use moat_kube::{KubeOptions, KubeRuntime, ProxyControlStream};
use moat_runtime::Timeouts;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;

use common::NS;

struct Harness {
    mock: MockApiServer,
    runtime: KubeRuntime,
    _kubeconfig: tempfile::NamedTempFile,
}

async fn harness() -> Harness {
    let mock = MockApiServer::start().await.unwrap();
    let (runtime, kubeconfig) = common::connect(&mock, KubeOptions::default()).await;
    Harness {
        mock,
        runtime,
        _kubeconfig: kubeconfig,
    }
}

/// Deploys the proxy on the mock, which gives it a running, ready pod.
async fn deploy_proxy(runtime: &KubeRuntime) {
    let pem = |what: &str| format!("-----BEGIN {what}-----\nnot a real one\n-----END {what}-----\n");
    let secrets = ProxySecrets {
        interception_ca_cert: pem("CERTIFICATE"),
        interception_ca_key: pem("PRIVATE KEY"),
        control_ca_cert: pem("CERTIFICATE"),
        control_server_cert: pem("CERTIFICATE"),
        control_server_key: pem("PRIVATE KEY"),
    };
    let placement = ProxyPlacement {
        namespace: NS.into(),
        home: "aaaaaaaaaaaa".into(),
        image: "registry.example/moat-proxy:0.1.0".into(),
        material: "sha256:material".into(),
    };
    runtime
        .ensure_proxy(&placement, &secrets, Duration::from_secs(5))
        .await
        .unwrap();
}

/// A TCP server on loopback that sends back what it reads.
async fn echo_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut connection, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut reader, mut writer) = connection.split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            });
        }
    });
    address
}

/// Writes `payload` while reading as many bytes back.
async fn round_trip(stream: &mut ProxyControlStream, payload: &[u8]) -> Vec<u8> {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut echoed = vec![0_u8; payload.len()];
    let (written, read) = tokio::join!(writer.write_all(payload), reader.read_exact(&mut echoed));
    written.unwrap();
    read.unwrap();
    echoed
}

const CONTROL: u16 = CONTROL_PORT as u16;

#[tokio::test]
async fn bytes_round_trip_through_the_port_forward() {
    let h = harness().await;
    h.mock.forward_port(CONTROL, echo_server().await);
    deploy_proxy(&h.runtime).await;

    let mut stream = h.runtime.open_proxy_control().await.unwrap();
    for message in [&b"PUT /v1/runs/1"[..], b"x", b"\x00\x01\x02 channel-looking bytes"] {
        assert_eq!(round_trip(&mut stream, message).await, message);
    }
    let large: Vec<u8> = (0..256 * 1024).map(|i: u32| (i % 251) as u8).collect();
    assert_eq!(round_trip(&mut stream, &large).await, large);

    // Our side closing closes the forward: the echo server sees the end
    // and the stream reads to its end.
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
        .await
        .expect("the forward did not close")
        .unwrap();
    assert!(rest.is_empty(), "{rest:?}");

    let forwards: Vec<String> = h
        .mock
        .requests()
        .into_iter()
        .filter(|r| r.contains("/portforward"))
        .collect();
    assert_eq!(
        forwards,
        ["GET /api/v1/namespaces/agents/pods/moat-proxy-0/portforward?ports=8443"]
    );
}

#[tokio::test]
async fn without_a_ready_proxy_pod_the_error_names_the_namespace() {
    let h = harness().await;
    let err = h.runtime.open_proxy_control().await.unwrap_err().to_string();
    assert!(err.contains("no ready moat-proxy pod in namespace agents"), "{err}");

    // A proxy pod that exists but is not ready is not chosen either.
    h.mock.insert(
        "pods",
        serde_json::json!({"metadata": {"name": "moat-proxy-1", "labels": {"app.kubernetes.io/name": "moat-proxy"}},
            "status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}]}}),
    );
    let err = h.runtime.open_proxy_control().await.unwrap_err().to_string();
    assert!(err.contains("no ready moat-proxy pod in namespace agents"), "{err}");
    assert!(!h.mock.requests().iter().any(|r| r.contains("/portforward")));
}

#[tokio::test]
async fn a_forbidden_port_forward_points_at_rbac() {
    let h = harness().await;
    h.mock.forward_port(CONTROL, echo_server().await);
    deploy_proxy(&h.runtime).await;
    h.mock.inject(Fault {
        method: hyper::Method::GET,
        path_contains: "/portforward".into(),
        status: 403,
        delay: Duration::ZERO,
        times: 1,
    });
    let err = h.runtime.open_proxy_control().await.unwrap_err().to_string();
    assert!(
        err.contains("forbidden") && err.contains("RBAC") && err.contains("`create` and `get` on `pods/portforward`"),
        "{err}"
    );
    assert!(
        err.contains("namespace agents") && err.contains("injected 403"),
        "{err}"
    );
    // The fault is spent: the next attempt goes through.
    let mut stream = h.runtime.open_proxy_control().await.unwrap();
    assert_eq!(round_trip(&mut stream, b"after").await, b"after");
}

#[tokio::test]
async fn a_port_the_pod_refuses_reads_as_the_kubelets_error() {
    let h = harness().await;
    deploy_proxy(&h.runtime).await;
    let mut stream = h.runtime.open_proxy_control().await.unwrap();
    let mut buffer = [0_u8; 16];
    let err = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
        .await
        .expect("the failure was not reported")
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("error forwarding port 8443 to pod moat-proxy-0") && text.contains("connection refused"),
        "{text}"
    );
    // Writing after the failure reports it too.
    let err = stream.write_all(b"more").await.unwrap_err();
    assert!(err.to_string().contains("connection refused"), "{err}");
}

#[tokio::test]
async fn a_slow_api_server_times_the_opening_out() {
    let mock = MockApiServer::start().await.unwrap();
    let options = KubeOptions {
        timeouts: Timeouts {
            call: Duration::from_millis(300),
            ..Timeouts::default()
        },
        ..Default::default()
    };
    let (runtime, _kubeconfig) = common::connect(&mock, options).await;
    deploy_proxy(&runtime).await;
    mock.inject(Fault {
        method: hyper::Method::GET,
        path_contains: "/portforward".into(),
        status: 200,
        delay: Duration::from_secs(2),
        times: 1,
    });
    let err = runtime.open_proxy_control().await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(
        err.to_string()
            .contains("open a port-forward to port 8443 of the moat proxy in namespace agents"),
        "{err}"
    );
}

#[tokio::test]
async fn the_mock_answers_a_port_forward_of_an_unknown_pod_with_404() {
    let mock = MockApiServer::start().await.unwrap();
    let address = mock.url().trim_start_matches("http://").to_string();
    let mut connection = tokio::net::TcpStream::connect(&address).await.unwrap();
    let request = format!(
        "GET /api/v1/namespaces/{NS}/pods/nowhere/portforward?ports=8443 HTTP/1.1\r\nHost: {address}\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n"
    );
    connection.write_all(request.as_bytes()).await.unwrap();
    let mut answer = vec![0_u8; 1024];
    let read = connection.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains(r#"pods \"nowhere\" not found"#), "{answer}");
}

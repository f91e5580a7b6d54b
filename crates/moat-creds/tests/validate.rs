//! Grant validation against a local HTTPS server whose certificate is signed
//! by a CA made for the test: trusted only when passed as the extra root.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use moat_creds::{Credential, CredentialKind, Provider, Providers, ValidationOptions, ValidationOutcome};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const GOOD_TOKEN: &str = "fake-valid-token-for-tests";

/// A TLS server on 127.0.0.1 answering 200 to `Authorization: Bearer
/// GOOD_TOKEN` and 401 otherwise; it records the headers it saw.
struct TestServer {
    port: u16,
    ca_pem: String,
    seen: Arc<Mutex<Vec<hyper::HeaderMap>>>,
}

fn test_ca_and_server_config() -> (String, rustls::ServerConfig) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let chain = vec![leaf.der().clone(), CertificateDer::from(ca.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    (ca.pem(), config)
}

async fn start_server() -> TestServer {
    let (ca_pem, config) = test_ca_and_server_config();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            let recorded = recorded.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    recorded.lock().unwrap().push(req.headers().clone());
                    let good = req
                        .headers()
                        .get("authorization")
                        .is_some_and(|v| v == format!("Bearer {GOOD_TOKEN}").as_str());
                    let status = if good { StatusCode::OK } else { StatusCode::UNAUTHORIZED };
                    let mut response = Response::new(Empty::<Bytes>::new());
                    *response.status_mut() = status;
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    TestServer { port, ca_pem, seen }
}

impl TestServer {
    fn options(&self) -> ValidationOptions {
        ValidationOptions {
            endpoint: Some(format!("https://localhost:{}/user", self.port)),
            extra_root_pem: Some(self.ca_pem.clone().into_bytes()),
            ..ValidationOptions::default()
        }
    }
}

fn github() -> Provider {
    Providers::built_in().get("github").unwrap().clone()
}

#[tokio::test]
async fn a_good_token_is_valid_and_sent_as_the_api_header() {
    let server = start_server().await;
    let credential = Credential::new(GOOD_TOKEN, CredentialKind::Token);
    let outcome = github().validate(&credential, &server.options()).await.unwrap();
    assert_eq!(outcome, ValidationOutcome::Valid);

    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["authorization"], format!("Bearer {GOOD_TOKEN}").as_str());
    assert_eq!(seen[0]["host"], format!("localhost:{}", server.port).as_str());
    assert!(seen[0]["user-agent"].to_str().unwrap().starts_with("moat/"));
    assert_eq!(seen[0]["accept"], "application/vnd.github+json");
}

#[tokio::test]
async fn a_wrong_token_is_rejected() {
    let server = start_server().await;
    let credential = Credential::new("fake-revoked-token", CredentialKind::Token);
    let outcome = github().validate(&credential, &server.options()).await.unwrap();
    assert_eq!(outcome, ValidationOutcome::Rejected { status: 401 });
}

#[tokio::test]
async fn an_untrusted_certificate_is_unreachable_and_sends_no_token() {
    let server = start_server().await;
    let options = ValidationOptions {
        extra_root_pem: None,
        ..server.options()
    };
    let credential = Credential::new(GOOD_TOKEN, CredentialKind::Token);
    let outcome = github().validate(&credential, &options).await.unwrap();
    let ValidationOutcome::Unreachable(reason) = outcome else {
        panic!("expected Unreachable, got {outcome:?}");
    };
    assert!(reason.contains("TLS handshake"), "{reason}");
    assert!(server.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_closed_port_is_unreachable_not_an_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let options = ValidationOptions {
        endpoint: Some(format!("https://127.0.0.1:{port}/user")),
        ..ValidationOptions::default()
    };
    let credential = Credential::new(GOOD_TOKEN, CredentialKind::Token);
    let outcome = github().validate(&credential, &options).await.unwrap();
    let ValidationOutcome::Unreachable(reason) = outcome else {
        panic!("expected Unreachable, got {outcome:?}");
    };
    assert!(reason.contains(&format!("127.0.0.1:{port}")), "{reason}");
}

#[tokio::test]
async fn a_silent_server_is_cut_off_at_the_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts and then never speaks: the TLS handshake stalls.
    let holder = tokio::spawn(async move {
        let _held = listener.accept().await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let options = ValidationOptions {
        endpoint: Some(format!("https://127.0.0.1:{port}/user")),
        timeout: Duration::from_millis(300),
        ..ValidationOptions::default()
    };
    let start = Instant::now();
    let credential = Credential::new(GOOD_TOKEN, CredentialKind::Token);
    let outcome = github().validate(&credential, &options).await.unwrap();
    assert_eq!(
        outcome,
        ValidationOutcome::Unreachable(format!("no answer from 127.0.0.1:{port} within 300ms"))
    );
    assert!(start.elapsed() < Duration::from_secs(3));
    holder.abort();
}

#[tokio::test]
async fn a_clear_text_endpoint_is_refused() {
    let options = ValidationOptions {
        endpoint: Some("http://127.0.0.1:1/user".into()),
        ..ValidationOptions::default()
    };
    let credential = Credential::new(GOOD_TOKEN, CredentialKind::Token);
    let err = github().validate(&credential, &options).await.unwrap_err();
    assert!(err.to_string().contains("only https://"), "{err}");
}

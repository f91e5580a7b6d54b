//! A local HTTPS server standing in for a public API in the end-to-end
//! tests: its own test CA (written to a file the daemon is told to trust),
//! listening on every interface, answering each request with a JSON echo of
//! what it received and recording it for assertions.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// One request as the upstream saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct Upstream {
    pub port: u16,
    pub ca_file: PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Upstream {
    /// Serves HTTPS for `host` on 0.0.0.0 (a free port); the CA goes to
    /// `dir/upstream-ca.pem`.
    pub fn start(host: &str, dir: &Path) -> Upstream {
        Self::start_for(&[host], dir)
    }

    /// [`Upstream::start`] with a certificate for each of `hosts`.
    pub fn start_for(hosts: &[&str], dir: &Path) -> Upstream {
        let (acceptor, ca_file) = tls_acceptor(hosts, dir);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("0.0.0.0:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        runtime.spawn(serve(listener, acceptor, seen.clone()));
        Upstream {
            port,
            ca_file,
            seen,
            _runtime: runtime,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A TLS acceptor with a certificate for each of `hosts` (and 127.0.0.1)
/// from a fresh test CA, written to `dir/upstream-ca.pem`.
pub fn tls_acceptor(hosts: &[&str], dir: &Path) -> (tokio_rustls::TlsAcceptor, PathBuf) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca_file = dir.join("upstream-ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let mut names: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    names.push("127.0.0.1".to_string());
    let leaf = CertificateParams::new(names)
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let chain = vec![
        CertificateDer::from(leaf.der().to_vec()),
        CertificateDer::from(ca_cert.der().to_vec()),
    ];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), ca_file)
}

async fn serve(listener: tokio::net::TcpListener, acceptor: tokio_rustls::TlsAcceptor, seen: Arc<Mutex<Vec<Seen>>>) {
    loop {
        let Ok((stream, _peer)): std::io::Result<(_, SocketAddr)> = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let seen = seen.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else { return };
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let seen = seen.clone();
                async move {
                    let record = Seen {
                        path: req.uri().path().to_string(),
                        headers: req
                            .headers()
                            .iter()
                            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                            .collect(),
                    };
                    // Never echo header values: the container must not
                    // learn the injected credential from the response.
                    let body = format!(
                        "{{\"path\":{:?},\"authorized\":{}}}\n",
                        record.path,
                        record.header("authorization").is_some()
                    );
                    seen.lock().unwrap().push(record);
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(body))))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

/// The host's address on Docker's default bridge: reachable by the proxy on
/// the host, and by containers only through a route out of their network.
pub fn docker_bridge_address() -> String {
    let out = std::process::Command::new("docker")
        .args([
            "network",
            "inspect",
            "bridge",
            "-f",
            "{{(index .IPAM.Config 0).Subnet}}",
        ])
        .output()
        .unwrap();
    let subnet = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let network: std::net::Ipv4Addr = subnet.split('/').next().unwrap().parse().unwrap();
    std::net::Ipv4Addr::from(u32::from(network) + 1).to_string()
}

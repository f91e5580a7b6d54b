//! Data-path benchmark (proxy.md § Performance): requests/s and latency
//! percentiles for HTTPS requests made directly and through moat's proxy,
//! side by side on loopback, plus any external intercepting proxies given
//! with `--external NAME=http://host:port,CA_PEM` (see scripts/bench-proxy.sh).
//!
//! Scenarios: keep-alive at 1 and 32 connections; a new connection/tunnel per
//! request; a new tunnel to a never-seen host name per request (leaf minting
//! and a fresh upstream connection). These measure the data path, so moat's
//! per-run limits are lifted for them.
//!
//! Run: `cargo bench -p moat-proxy --bench throughput -- [--seconds N]
//!       [--upstream-dir DIR] [--upstream-port PORT] [--threads C,P,U] [--rounds N]
//!       [--scenario keep-alive-1|keep-alive-32|new-connection|fresh-host]... [--external ...]`;
//! each scenario's ratio to direct is also given per interleaved round
//! (median, min, max);
//! `--prepare-upstream` only writes the upstream CA to `--upstream-dir`.
//!
//! `--fairness [--flood N] [--in-flight N] [--requests N] [--limits default|off|both]`
//! runs the noisy-neighbour scenario instead (one run floods the proxy with
//! tunnels while another's latency is measured; see [`fairness`] and
//! scripts/bench-fairness.sh).

#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "throughput/fairness.rs"]
mod fairness;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use moat_proxy::{
    CertificateAuthority, NetworkPolicy, ProxyConfig, ProxyHandle, ProxyToken, RunLimits, RunRegistration,
};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The name clients ask for; every `*.bench.example.test` name also resolves to the upstream.
const UPSTREAM_HOST: &str = "bench.example.test";
/// First-seen host names the proxy is told about.
const FRESH_HOSTS: usize = 20_000;
const RESPONSE_BODY: &[u8] =
    br#"{"id":"msg_0001","type":"message","content":[{"type":"text","text":"hello from the bench upstream"}]}"#;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// === Options ===

struct Options {
    seconds: f64,
    upstream_dir: Option<PathBuf>,
    upstream_port: u16,
    externals: Vec<External>,
    threads: Threads,
    /// Turns each route takes per scenario (the time is split between them).
    rounds: usize,
    /// Only create the upstream CA in `upstream_dir`, then exit.
    prepare_only: bool,
    /// The scenarios to run (`--scenario`, repeatable); every one when empty.
    scenarios: Vec<Scenario>,
    /// Run the noisy-neighbour scenario instead of the throughput table.
    fairness: bool,
    fairness_options: fairness::FairnessOptions,
}

struct External {
    name: String,
    proxy: SocketAddr,
    ca_pem: PathBuf,
}

fn parse_options() -> Result<Options, Error> {
    let mut options = Options {
        seconds: 3.0,
        upstream_dir: None,
        upstream_port: 0,
        externals: Vec::new(),
        prepare_only: false,
        scenarios: Vec::new(),
        fairness: false,
        fairness_options: fairness::FairnessOptions::default(),
        rounds: 5,
        threads: Threads {
            client: 2,
            proxy: 2,
            upstream: 2,
        },
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--seconds" => options.seconds = value()?.parse()?,
            "--upstream-dir" => options.upstream_dir = Some(PathBuf::from(value()?)),
            "--upstream-port" => options.upstream_port = value()?.parse()?,
            "--external" => options.externals.push(parse_external(&value()?)?),
            "--rounds" => options.rounds = value()?.parse::<usize>()?.max(1),
            "--threads" => options.threads = parse_threads(&value()?)?,
            "--prepare-upstream" => options.prepare_only = true,
            "--scenario" => options.scenarios.push(value()?.parse()?),
            "--fairness" => options.fairness = true,
            "--flood" => options.fairness_options.attempts = value()?.parse()?,
            "--in-flight" => options.fairness_options.in_flight = value()?.parse()?,
            "--requests" => options.fairness_options.requests = value()?.parse()?,
            "--limits" => options.fairness_options.limits = value()?.parse()?,
            "--bench" => {}
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(options)
}

/// Worker threads of the three runtimes.
struct Threads {
    client: usize,
    proxy: usize,
    upstream: usize,
}

/// `CLIENT,PROXY,UPSTREAM`, e.g. `2,1,1`.
fn parse_threads(text: &str) -> Result<Threads, Error> {
    let counts: Vec<usize> = text.split(',').map(str::parse).collect::<Result<_, _>>()?;
    let [client, proxy, upstream] = counts[..] else {
        return Err("--threads wants CLIENT,PROXY,UPSTREAM".into());
    };
    Ok(Threads {
        client,
        proxy,
        upstream,
    })
}

/// `NAME=http://host:port,/path/to/ca.pem`
fn parse_external(text: &str) -> Result<External, Error> {
    let (name, rest) = text.split_once('=').ok_or("expected NAME=URL,CA")?;
    let (url, ca) = rest.split_once(',').ok_or("expected NAME=URL,CA")?;
    let address = url.trim_start_matches("http://").trim_end_matches('/');
    Ok(External {
        name: name.to_string(),
        proxy: address.parse()?,
        ca_pem: PathBuf::from(ca),
    })
}

// === Upstream ===

/// Test CA + leaf for `bench.example.test` and `*.bench.example.test`, kept
/// in `dir` when given so external proxies can be configured to trust it.
fn upstream_tls(dir: &Path) -> Result<(rustls::ServerConfig, PathBuf), Error> {
    let ca_path = dir.join("upstream-ca.pem");
    let ca_key_path = dir.join("upstream-ca.key");
    let (ca_key, ca_params) = if ca_path.exists() && ca_key_path.exists() {
        (
            KeyPair::from_pem(&std::fs::read_to_string(&ca_key_path)?)?,
            upstream_ca_params(),
        )
    } else {
        let key = KeyPair::generate()?;
        let cert = upstream_ca_params().self_signed(&key)?;
        std::fs::create_dir_all(dir)?;
        std::fs::write(&ca_path, cert.pem())?;
        std::fs::write(&ca_key_path, key.serialize_pem())?;
        (key, upstream_ca_params())
    };
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate()?;
    let names = vec![
        UPSTREAM_HOST.to_string(),
        format!("*.{UPSTREAM_HOST}"),
        "127.0.0.1".to_string(),
    ];
    let leaf = CertificateParams::new(names)?.signed_by(&leaf_key, &issuer)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((config, ca_path))
}

fn upstream_ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "moat bench upstream CA");
    params
}

async fn serve_upstream(listener: TcpListener, acceptor: TlsAcceptor) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let service = service_fn(|_req: Request<Incoming>| async {
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(RESPONSE_BODY))))
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

// === Clients ===

#[derive(Clone)]
enum Route {
    Direct(SocketAddr),
    /// Through a proxy at `proxy`, authenticating with `auth` when set.
    Proxy {
        proxy: SocketAddr,
        auth: Option<String>,
    },
}

#[derive(Clone)]
struct ClientSetup {
    route: Route,
    tls: TlsConnector,
    upstream_port: u16,
}

static FRESH_COUNTER: AtomicU64 = AtomicU64::new(0);

impl ClientSetup {
    /// A connection (or tunnel) to `host`, ready for HTTP/1.1 requests.
    async fn connect(&self, host: &str) -> Result<SendRequest<Empty<Bytes>>, Error> {
        let tcp = match &self.route {
            Route::Direct(addr) => TcpStream::connect(addr).await?,
            Route::Proxy { proxy, auth } => self.open_tunnel(*proxy, auth.as_deref(), host).await?,
        };
        tcp.set_nodelay(true)?;
        let tls = self.tls.connect(ServerName::try_from(host.to_string())?, tcp).await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(connection);
        Ok(sender)
    }

    /// CONNECT over a raw socket (so the tunnel is the socket itself).
    async fn open_tunnel(&self, proxy: SocketAddr, auth: Option<&str>, host: &str) -> Result<TcpStream, Error> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut tcp = TcpStream::connect(proxy).await?;
        tcp.set_nodelay(true)?;
        let authority = format!("{host}:{}", self.upstream_port);
        let auth_line = auth
            .map(|a| format!("Proxy-Authorization: {a}\r\n"))
            .unwrap_or_default();
        let connect = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{auth_line}\r\n");
        tcp.write_all(connect.as_bytes()).await?;
        let mut head = Vec::with_capacity(256);
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if tcp.read(&mut byte).await? == 0 {
                return Err("proxy closed during CONNECT".into());
            }
            head.push(byte[0]);
        }
        if !(head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200")) {
            return Err(format!("CONNECT refused: {}", String::from_utf8_lossy(&head)).into());
        }
        Ok(tcp)
    }
}

async fn request(sender: &mut SendRequest<Empty<Bytes>>, authority: &str) -> Result<(), Error> {
    sender.ready().await?;
    let req = Request::get("/v1/messages")
        .header("host", authority)
        .body(Empty::new())?;
    let response = sender.send_request(req).await?;
    if response.status() != StatusCode::OK {
        return Err(format!("status {}", response.status()).into());
    }
    let body = response.into_body().collect().await?.to_bytes();
    if body.len() != RESPONSE_BODY.len() {
        return Err("short body".into());
    }
    Ok(())
}

// === Scenarios ===

#[derive(Clone, Copy, PartialEq)]
enum Scenario {
    KeepAlive(usize),
    NewConnection,
    FreshHost,
}

impl std::str::FromStr for Scenario {
    type Err = Error;
    fn from_str(name: &str) -> Result<Self, Error> {
        Ok(match name {
            "keep-alive-1" => Self::KeepAlive(1),
            "keep-alive-32" => Self::KeepAlive(32),
            "new-connection" => Self::NewConnection,
            "fresh-host" => Self::FreshHost,
            other => {
                return Err(format!(
                    "unknown scenario {other}: keep-alive-1, keep-alive-32, new-connection or fresh-host"
                )
                .into());
            }
        })
    }
}

impl Scenario {
    const ALL: [Scenario; 4] = [
        Scenario::KeepAlive(1),
        Scenario::KeepAlive(32),
        Scenario::NewConnection,
        Scenario::FreshHost,
    ];

    fn label(self) -> String {
        match self {
            Self::KeepAlive(n) => format!("keep-alive, {n} conn"),
            Self::NewConnection => "new tunnel/conn per request".to_string(),
            Self::FreshHost => "first-seen host per request".to_string(),
        }
    }

    fn concurrency(self) -> usize {
        match self {
            Self::KeepAlive(n) => n,
            _ => 1,
        }
    }
}

#[derive(Default)]
struct Stats {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
    }

    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let index = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        self.latencies[index].as_secs_f64() * 1000.0
    }
}

async fn run_scenario(setup: &ClientSetup, scenario: Scenario, seconds: f64) -> Stats {
    let warmup = Duration::from_secs_f64((seconds / 5.0).min(0.5));
    let started = Instant::now();
    let measure_from = started + warmup;
    let deadline = measure_from + Duration::from_secs_f64(seconds);
    let workers: Vec<_> = (0..scenario.concurrency())
        .map(|_| tokio::spawn(worker(setup.clone(), scenario, measure_from, deadline)))
        .collect();
    let mut stats = Stats {
        requests: 0,
        errors: 0,
        elapsed: deadline - measure_from,
        latencies: Vec::new(),
    };
    for worker in workers {
        if let Ok((latencies, errors)) = worker.await {
            stats.requests += latencies.len();
            stats.errors += errors;
            stats.latencies.extend(latencies);
        }
    }
    stats
}

async fn worker(
    setup: ClientSetup,
    scenario: Scenario,
    measure_from: Instant,
    deadline: Instant,
) -> (Vec<Duration>, usize) {
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut kept: Option<SendRequest<Empty<Bytes>>> = None;
    while Instant::now() < deadline {
        let host = match scenario {
            Scenario::FreshHost => {
                let n = FRESH_COUNTER.fetch_add(1, Ordering::Relaxed) as usize % FRESH_HOSTS;
                format!("h{n}.{UPSTREAM_HOST}")
            }
            _ => UPSTREAM_HOST.to_string(),
        };
        let begin = Instant::now();
        let outcome = async {
            let mut sender = match kept.take() {
                Some(sender) => sender,
                None => setup.connect(&host).await?,
            };
            request(&mut sender, &format!("{host}:{}", setup.upstream_port)).await?;
            if matches!(scenario, Scenario::KeepAlive(_)) {
                kept = Some(sender);
            }
            Ok::<_, Error>(())
        }
        .await;
        let took = begin.elapsed();
        match outcome {
            Ok(()) if begin >= measure_from && Instant::now() <= deadline => latencies.push(took),
            Ok(()) => {}
            Err(e) => {
                errors += 1;
                if errors == 1 {
                    eprintln!("request failed: {e}");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    (latencies, errors)
}

// === Setup ===

fn client_tls(ca_pem: &Path) -> Result<TlsConnector, Error> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca_pem)?;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert: CertificateDer<'static> = cert?;
        roots.add(cert)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

fn runtime(name: &str, threads: usize) -> Result<tokio::runtime::Runtime, Error> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()?)
}

fn main() -> Result<(), Error> {
    let options = parse_options()?;
    let scratch_dir = tempfile::Builder::new().prefix("moat-bench-").tempdir()?;
    let scratch = scratch_dir.path().to_path_buf();
    if options.prepare_only {
        let dir = options
            .upstream_dir
            .clone()
            .ok_or("--prepare-upstream needs --upstream-dir")?;
        let (_, ca) = upstream_tls(&dir)?;
        println!("{}", ca.display());
        return Ok(());
    }
    std::fs::create_dir_all(&scratch)?;
    let upstream_dir = options.upstream_dir.clone().unwrap_or_else(|| scratch.join("upstream"));

    // Upstream, proxy and load generator each get their own runtime (threads).
    let upstream_rt = runtime("upstream", options.threads.upstream)?;
    let proxy_rt = runtime("moat-proxy", options.threads.proxy)?;

    let (server_tls, upstream_ca) = upstream_tls(&upstream_dir)?;
    let upstream_listener = upstream_rt.block_on(TcpListener::bind((Ipv4Addr::LOCALHOST, options.upstream_port)))?;
    let upstream_addr = upstream_listener.local_addr()?;
    upstream_rt.spawn(serve_upstream(
        upstream_listener,
        TlsAcceptor::from(Arc::new(server_tls)),
    ));

    if options.fairness {
        let measured = fairness::run(
            &options.fairness_options,
            &options.threads,
            &scratch,
            &upstream_ca,
            upstream_addr,
            &proxy_rt,
        );
        let _ = std::fs::remove_dir_all(&scratch);
        return measured;
    }

    let client_rt = runtime("client", options.threads.client)?;
    let (proxy_addr, _proxy, tokens) = proxy_rt.block_on(start_moat(
        &scratch,
        &upstream_ca,
        upstream_addr,
        LIFTED_LIMITS,
        &["bench"],
    ))?;
    let moat_auth = basic_auth(tokens[0].as_str());

    let mut routes = vec![
        ("direct".to_string(), Route::Direct(upstream_addr), upstream_ca.clone()),
        (
            "moat".to_string(),
            Route::Proxy {
                proxy: proxy_addr,
                auth: Some(moat_auth),
            },
            scratch.join("ca/public/ca.crt"),
        ),
    ];
    for external in &options.externals {
        routes.push((
            external.name.clone(),
            Route::Proxy {
                proxy: external.proxy,
                auth: None,
            },
            external.ca_pem.clone(),
        ));
    }

    println!(
        "moat proxy benchmark: upstream {upstream_addr}, {} s per scenario and route in {} rounds, {} CPUs, \
         runtime threads client/proxy/upstream {}/{}/{}",
        options.seconds,
        options.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        options.threads.client,
        options.threads.proxy,
        options.threads.upstream,
    );
    let scenarios = if options.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        options.scenarios.clone()
    };
    let mut results: HashMap<(String, usize), Stats> = HashMap::new();
    let mut ratios: HashMap<(String, usize), Vec<f64>> = HashMap::new();
    for (index, scenario) in scenarios.iter().enumerate() {
        // Routes take turns in short rounds so that load from elsewhere on
        // the machine hits all of them alike; each round's ratio to direct
        // compares routes measured seconds apart.
        let round_seconds = options.seconds / options.rounds as f64;
        for _ in 0..options.rounds {
            let mut direct_rps = f64::NAN;
            for (name, route, ca) in &routes {
                let setup = ClientSetup {
                    route: route.clone(),
                    tls: client_tls(ca)?,
                    upstream_port: upstream_addr.port(),
                };
                let stats = client_rt.block_on(run_scenario(&setup, *scenario, round_seconds));
                if matches!(route, Route::Direct(_)) {
                    direct_rps = stats.rps();
                } else {
                    ratios
                        .entry((name.clone(), index))
                        .or_default()
                        .push(stats.rps() / direct_rps);
                }
                results.entry((name.clone(), index)).or_default().merge(stats);
            }
        }
        for stats in results.values_mut() {
            stats.latencies.sort_unstable();
        }
    }
    let names: Vec<String> = routes.iter().map(|r| r.0.clone()).collect();
    print_table(&scenarios, &names, &results);
    print_round_ratios(&scenarios, &names, &mut ratios);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// Per-run limits no scenario reaches.
const LIFTED_LIMITS: RunLimits = RunLimits {
    max_tunnels: 1_000_000,
    max_streams_per_tunnel: 1_000,
    handshakes_per_second: 1_000_000,
};

/// A moat proxy with `limits`, serving on loopback, with one registered run
/// (and its token) per entry of `run_ids`.
async fn start_moat(
    scratch: &Path,
    upstream_ca: &Path,
    upstream: SocketAddr,
    limits: RunLimits,
    run_ids: &[&str],
) -> Result<(SocketAddr, ProxyHandle, Vec<ProxyToken>), Error> {
    let ca = Arc::new(CertificateAuthority::load_or_create(&scratch.join("ca"))?);
    let mut resolve_overrides: HashMap<String, IpAddr> = HashMap::new();
    resolve_overrides.insert(UPSTREAM_HOST.to_string(), upstream.ip());
    for n in 0..FRESH_HOSTS {
        resolve_overrides.insert(format!("h{n}.{UPSTREAM_HOST}"), upstream.ip());
    }
    let config = ProxyConfig {
        extra_root_ca: Some(upstream_ca.to_path_buf()),
        use_system_roots: false,
        resolve_overrides,
        limits,
        ..ProxyConfig::default()
    };
    let proxy = ProxyHandle::new(config, ca)?;
    let mut tokens = Vec::new();
    for run_id in run_ids {
        let token = ProxyToken::generate();
        proxy.register_run(RunRegistration {
            run_id: run_id.to_string(),
            token: token.clone(),
            policy: NetworkPolicy::default(),
            injections: vec![moat_proxy::InjectionRule {
                host_pattern: format!("{UPSTREAM_HOST}:{}", upstream.port()),
                header_name: "x-api-key".to_string(),
                header_value: "bench-placeholder-value".to_string(),
                placeholder: None,
                grant: "bench".to_string(),
                plaintext: false,
                list_additions: Vec::new(),
                removals: Vec::new(),
            }],
            trace_path: scratch.join(format!("{run_id}-network.jsonl")),
            host_ports: vec![upstream.port()],
            redact_values: vec![],
            events: None,
            mcp_servers: vec![],
            credential_endpoints: vec![],
        })?;
        tokens.push(token);
    }
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let serving = proxy.clone();
    tokio::spawn(async move { serving.serve(listener).await });
    Ok((addr, proxy, tokens))
}

fn basic_auth(token: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("moat:{token}"))
    )
}

fn print_table(scenarios: &[Scenario], names: &[String], results: &HashMap<(String, usize), Stats>) {
    println!();
    println!(
        "{:<30} {:<8} {:>10} {:>9} {:>9} {:>7} {:>10}",
        "scenario", "route", "req/s", "p50 ms", "p99 ms", "errors", "vs direct"
    );
    for (index, scenario) in scenarios.iter().enumerate() {
        let direct = &results[&("direct".to_string(), index)];
        for name in names {
            let stats = &results[&(name.clone(), index)];
            println!(
                "{:<30} {:<8} {:>10.0} {:>9.3} {:>9.3} {:>7} {:>9.1}%",
                scenario.label(),
                name,
                stats.rps(),
                stats.percentile_ms(0.50),
                stats.percentile_ms(0.99),
                stats.errors,
                100.0 * stats.rps() / direct.rps()
            );
        }
        for name in names.iter().filter(|n| *n != "direct") {
            let stats = &results[&(name.clone(), index)];
            println!(
                "{:<30} {:<8} added p50 {:+.3} ms, added p99 {:+.3} ms",
                "",
                name,
                stats.percentile_ms(0.50) - direct.percentile_ms(0.50),
                stats.percentile_ms(0.99) - direct.percentile_ms(0.99)
            );
        }
    }
}

/// Each scenario's throughput ratio to direct over the rounds: median, min
/// and max, so one noisy round neither makes nor breaks a result.
fn print_round_ratios(scenarios: &[Scenario], names: &[String], ratios: &mut HashMap<(String, usize), Vec<f64>>) {
    println!();
    println!(
        "{:<30} {:<10} {:>8} {:>8} {:>8}  (req/s vs direct, per interleaved round)",
        "scenario", "route", "median", "min", "max"
    );
    for (index, scenario) in scenarios.iter().enumerate() {
        for name in names.iter().filter(|n| *n != "direct") {
            let Some(rounds) = ratios.get_mut(&(name.clone(), index)) else {
                continue;
            };
            rounds.sort_by(f64::total_cmp);
            let median = match rounds.len() {
                0 => f64::NAN,
                n if n % 2 == 1 => rounds[n / 2],
                n => f64::midpoint(rounds[n / 2 - 1], rounds[n / 2]),
            };
            println!(
                "{:<30} {:<10} {:>7.1}% {:>7.1}% {:>7.1}%  ({} rounds)",
                scenario.label(),
                name,
                100.0 * median,
                100.0 * rounds.first().copied().unwrap_or(f64::NAN),
                100.0 * rounds.last().copied().unwrap_or(f64::NAN),
                rounds.len()
            );
        }
    }
}

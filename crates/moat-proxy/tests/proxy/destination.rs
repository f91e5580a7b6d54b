//! Where the proxy connects: only to the addresses its destination check
//! judged (DNS rebinding), never to restricted ranges or the host's own
//! addresses without an exact `host:port` rule, and RFC 1918 addresses only
//! in permissive mode (flagged in the trace).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use http::StatusCode;
use hyper_util::rt::TokioIo;
use moat_proxy::{
    HostRule, LookupFuture, NameResolver, NetworkPolicy, PolicyMode, ProxyConfig, ProxyToken, RunRegistration,
};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{TestProxy, body_text, get, get_h2};

/// The name the attacker's DNS answers for (the upstream certificate covers it).
const REBOUND: &str = "evil.example.test";

/// An attacker's DNS server: answers `first` to the first lookup of
/// [`REBOUND`] and `then` to every later one; counts lookups.
#[derive(Debug)]
struct Rebinding {
    answers: Mutex<(IpAddr, IpAddr)>,
    lookups: AtomicUsize,
}

impl Rebinding {
    fn new() -> Arc<Self> {
        let unset = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        Arc::new(Self {
            answers: Mutex::new((unset, unset)),
            lookups: AtomicUsize::new(0),
        })
    }

    /// Starts over: the next lookup answers `first` again.
    fn script(&self, first: IpAddr, then: IpAddr) {
        *self.answers.lock().unwrap() = (first, then);
        self.lookups.store(0, Ordering::SeqCst);
    }

    fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }
}

impl NameResolver for Rebinding {
    fn lookup<'a>(&'a self, host: &'a str) -> LookupFuture<'a> {
        let answer = if host == REBOUND {
            let (first, then) = *self.answers.lock().unwrap();
            let n = self.lookups.fetch_add(1, Ordering::SeqCst);
            Ok(vec![if n == 0 { first } else { then }])
        } else {
            Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("no {host}")))
        };
        Box::pin(async move { answer })
    }
}

/// A proxy whose only DNS is `stub` (for [`REBOUND`]; the other test names
/// stay resolve overrides).
async fn proxy_with_dns(label: &str, stub: &Arc<Rebinding>) -> TestProxy {
    let resolver: Arc<dyn NameResolver> = stub.clone();
    TestProxy::start_with(label, move |config: &mut ProxyConfig| {
        config.resolve_overrides.remove(REBOUND);
        config.name_resolver = Some(resolver);
    })
    .await
}

/// Counts TCP connections on one loopback address at the upstream's ports:
/// the place a rebound name must never lead.
struct Canary {
    ip: IpAddr,
    hits: Arc<AtomicUsize>,
}

impl Canary {
    /// Binds 127.0.0.1 (or, if that is the upstream's or taken, another
    /// loopback address) on every port in `ports`.
    async fn bind(ports: &[u16], avoid: IpAddr) -> Self {
        let candidates = [[127, 0, 0, 1], [127, 0, 0, 2], [127, 1, 0, 1], [127, 1, 0, 2]];
        'candidates: for octets in candidates {
            let ip = IpAddr::V4(Ipv4Addr::from(octets));
            if ip == avoid {
                continue;
            }
            let mut listeners = Vec::new();
            for port in ports {
                match TcpListener::bind((ip, *port)).await {
                    Ok(listener) => listeners.push(listener),
                    Err(_) => continue 'candidates,
                }
            }
            let hits = Arc::new(AtomicUsize::new(0));
            for listener in listeners {
                let hits = hits.clone();
                tokio::spawn(async move {
                    while let Ok((stream, _)) = listener.accept().await {
                        hits.fetch_add(1, Ordering::SeqCst);
                        drop(stream);
                    }
                });
            }
            return Self { ip, hits };
        }
        panic!("no loopback address free for the canary on ports {ports:?}");
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn rule(pattern: String) -> HostRule {
    HostRule {
        host: pattern,
        requests: vec![],
    }
}

/// Registers a run without `network.host` ports.
fn register_plain(proxy: &TestProxy, run_id: &str, policy: NetworkPolicy) -> (ProxyToken, std::path::PathBuf) {
    let token = ProxyToken::generate();
    let trace_path = proxy.dir.join(format!("{run_id}.jsonl"));
    proxy
        .handle
        .register_run(RunRegistration {
            run_id: run_id.into(),
            token: token.clone(),
            policy,
            injections: vec![],
            trace_path: trace_path.clone(),
            host_ports: vec![],
            redact_values: vec![],
            events: None,
            mcp_servers: vec![],
            credential_endpoints: vec![],
        })
        .unwrap();
    (token, trace_path)
}

async fn trace_records(path: &std::path::Path, count: usize) -> Vec<serde_json::Value> {
    for _ in 0..300 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let records: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        if records.len() >= count {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("trace {} never reached {count} records", path.display());
}

/// Attack: DNS rebinding. The agent's name answers an allowed upstream to
/// the lookup the proxy checks and 127.0.0.1 (a canary standing in for a
/// host service) to every later lookup. A proxy that looks the name up again
/// to connect (the pool's connector, the per-request re-check, the upgrade's
/// connector) dials the canary. Each path must resolve once and dial what it
/// judged: the canary never sees a connection.
#[tokio::test]
async fn a_rebinding_name_is_dialled_at_the_address_that_was_checked() {
    let stub = Rebinding::new();
    let proxy = proxy_with_dns("rebinding", &stub).await;
    let up = &proxy.upstream;
    let upstream_ip = up.addr.ip();
    let canary = Canary::bind(&[up.addr.port(), up.plain_addr.port()], upstream_ip).await;
    // The rules name the rebinding host exactly, so both answers pass the
    // check: only dialling the checked answer keeps the canary untouched.
    let policy = NetworkPolicy {
        mode: PolicyMode::Permissive,
        rules: vec![
            rule(format!("{REBOUND}:{}", up.addr.port())),
            rule(format!("{REBOUND}:{}", up.plain_addr.port())),
        ],
    };
    let run = proxy.register("run", policy, vec![]);
    let client = proxy.client(&run.token);
    let authority = up.authority(REBOUND);

    // Intercepted tunnels, HTTP/1.1 and HTTP/2 (pooled upstream connections).
    for h2 in [false, true] {
        stub.script(upstream_ip, canary.ip);
        let mut tunnel = client.tunnel(&authority, h2).await;
        for n in 0..3 {
            let path = format!("/{n}");
            let request = if h2 {
                get_h2(&authority, &path)
            } else {
                get(REBOUND, &path, &[])
            };
            let seen = tunnel.echo(request).await;
            assert_eq!(seen["path"], path.as_str());
        }
        assert_eq!(
            stub.lookups(),
            1,
            "h2={h2}: the tunnel resolved its target more than once"
        );
    }

    // A WebSocket upgrade inside a tunnel (a dedicated upstream connection).
    stub.script(upstream_ip, canary.ip);
    let (response, upgraded) = client.connect(&authority).await;
    assert_eq!(response.status(), StatusCode::OK);
    let tls = client.tls(upgraded.unwrap(), REBOUND, &[b"http/1.1"]).await;
    let (mut ws, _) = tokio_tungstenite::client_async(format!("wss://{authority}/ws"), TokioIo::new(tls).into_inner())
        .await
        .unwrap();
    ws.next().await.unwrap().unwrap();
    ws.send(Message::text("ping")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("ping"));
    assert_eq!(stub.lookups(), 1, "the upgrade resolved its target again");

    // A plain absolute-form request.
    stub.script(upstream_ip, canary.ip);
    let url = format!("http://{REBOUND}:{}/plain", up.plain_addr.port());
    let response = client.absolute(&url, &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(stub.lookups(), 1, "the request resolved its target more than once");

    assert_eq!(canary.hits(), 0, "the proxy dialled an address it had not checked");
}

/// Attack: a name the agent controls answers 127.0.0.1 on a port the run
/// lists under `network.host`, to reach host services under a name of its
/// choosing. `network.host` opens loopback only for names whose address the
/// configuration chose (`moat-host`, overrides, literals), not DNS answers.
#[tokio::test]
async fn a_dns_answer_cannot_open_loopback_through_network_host_ports() {
    let stub = Rebinding::new();
    let proxy = proxy_with_dns("dns-loopback", &stub).await;
    let up = &proxy.upstream;
    stub.script(up.addr.ip(), up.addr.ip());
    let run = proxy.register("run", NetworkPolicy::default(), vec![]);
    let client = proxy.client(&run.token);

    let (response, tunnel) = client.connect(&up.authority(REBOUND)).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(tunnel.is_none());
    let body = body_text(response).await;
    assert!(body.contains("loopback"), "{body}");

    // The configured name for host services still works on the listed port.
    let (response, _) = client.connect(&up.authority("moat-host")).await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// Attack: spelling a restricted address so that a naive check misses it
/// (IPv4-mapped, IPv4-compatible, NAT64), or aiming at cloud metadata, the
/// carrier-grade NAT range, unique-local IPv6, or the host's own LAN/docker0
/// address. All refused at CONNECT, before any upstream traffic.
#[tokio::test]
async fn restricted_literals_and_this_hosts_addresses_are_refused() {
    let proxy = TestProxy::start("restricted-literals").await;
    let port = proxy.upstream.addr.port();
    let (token, _) = register_plain(&proxy, "run", NetworkPolicy::default());
    let client = proxy.client(&token);
    let mut authorities = vec![
        format!("[::ffff:127.0.0.1]:{port}"),
        format!("[::127.0.0.1]:{port}"),
        format!("[64:ff9b::7f00:1]:{port}"),
        "[fd00:ec2::254]:80".to_string(),
        "100.100.100.200:80".to_string(),
        "169.254.169.254:80".to_string(),
        "[::ffff:169.254.169.254]:80".to_string(),
        "0.0.0.0:80".to_string(),
    ];
    // Stable interfaces only (docker0, the LAN): other tests' Docker
    // networks (br-*) come and go while this one runs.
    let own: Vec<IpAddr> = nix::ifaddrs::getifaddrs()
        .unwrap()
        .filter(|i| !i.interface_name.starts_with("br-") && !i.interface_name.starts_with("veth"))
        .filter_map(|i| i.address?.as_sockaddr_in().map(|a| IpAddr::V4(a.ip())))
        .filter(|ip| !ip.is_loopback())
        .collect();
    proxy.handle.refresh_host_addresses();
    for ip in &own {
        authorities.push(format!("{ip}:{port}"));
    }
    for authority in &authorities {
        let (response, tunnel) = client.connect(authority).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{authority}");
        assert!(tunnel.is_none(), "{authority}");
        assert!(
            response.headers()["x-moat-blocked"]
                .to_str()
                .unwrap()
                .starts_with("restricted address"),
            "{authority}"
        );
    }

    // Named exactly as host:port in the rules, a host address is allowed.
    if let Some(ip) = own.first() {
        let policy = NetworkPolicy {
            mode: PolicyMode::Permissive,
            rules: vec![rule(format!("{ip}:{port}"))],
        };
        let (token, _) = register_plain(&proxy, "explicit", policy);
        let (response, _) = proxy.client(&token).connect(&format!("{ip}:{port}")).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
}

/// Attack: a strict run reaching the LAN (RFC 1918) through a name it
/// controls. Strict refuses it unless the rules name `host:port`; permissive
/// allows it and marks the trace record. (The CONNECT is answered before any
/// upstream connection, and the client then abandons the tunnel, so nothing
/// leaves loopback.)
#[tokio::test]
async fn private_addresses_are_refused_in_strict_and_flagged_in_permissive() {
    let stub = Rebinding::new();
    let proxy = proxy_with_dns("private", &stub).await;
    let lan: IpAddr = "10.255.1.2".parse().unwrap();
    stub.script(lan, lan);
    let authority = format!("{REBOUND}:443");

    let strict = NetworkPolicy {
        mode: PolicyMode::Strict,
        rules: vec![rule(REBOUND.to_string())],
    };
    let (token, _) = register_plain(&proxy, "strict", strict);
    let (response, _) = proxy.client(&token).connect(&authority).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body = body_text(response).await;
    assert!(
        body.contains("private (RFC 1918)") && body.contains(&authority),
        "{body}"
    );

    let strict_named = NetworkPolicy {
        mode: PolicyMode::Strict,
        rules: vec![rule(authority.clone())],
    };
    let (token, _) = register_plain(&proxy, "strict-named", strict_named);
    let (response, _) = proxy.client(&token).connect(&authority).await;
    assert_eq!(response.status(), StatusCode::OK);

    let (token, trace_path) = register_plain(&proxy, "permissive", NetworkPolicy::default());
    let (response, upgraded) = proxy.client(&token).connect(&authority).await;
    assert_eq!(response.status(), StatusCode::OK);
    // Abandon the tunnel: the failed client handshake is traced.
    drop(upgraded);
    let records = trace_records(&trace_path, 1).await;
    assert_eq!(records[0]["host"], REBOUND);
    assert_eq!(records[0]["private_address"], true, "{}", records[0]);
}

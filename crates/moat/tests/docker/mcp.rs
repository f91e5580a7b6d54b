//! `mcp:` end to end: a fake remote MCP server (HTTPS, streamable HTTP
//! answering with server-sent events, a bearer token required) reached from
//! a real container through the proxy's relay, once through the proxy
//! variables and once straight to the relay with the run token as bearer.
//! The fake sees the real token; the container, its trace and its audit
//! log never do; the event arrives while the server still holds the
//! stream open; a redirect to another host comes back to the client and
//! the request that follows it carries no token.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use super::support::{Home, text};
use super::upstream::{Seen, docker_bridge_address, tls_acceptor};

const MCP_HOST: &str = "mcp.moat-test.example";
const OTHER_HOST: &str = "elsewhere.moat-test.example";
/// Obviously fake; searched for everywhere it must not be.
const TOKEN: &str = "moat-test-mcp-token-4c2b9e0d13";
/// How long the fake keeps an event stream open after its event.
const HOLD: Duration = Duration::from_secs(3);

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The fake MCP server: what it saw, and when it ended each stream.
struct FakeMcp {
    port: u16,
    ca_file: std::path::PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
    stream_ends: Arc<Mutex<Vec<f64>>>,
    _runtime: tokio::runtime::Runtime,
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

impl FakeMcp {
    fn start(dir: &std::path::Path) -> FakeMcp {
        let (acceptor, ca_file) = tls_acceptor(&[MCP_HOST, OTHER_HOST], dir);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("0.0.0.0:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stream_ends = Arc::new(Mutex::new(Vec::new()));
        let (s, e) = (seen.clone(), stream_ends.clone());
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, seen, ends) = (acceptor.clone(), s.clone(), e.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = service_fn(move |req| answer(req, port, seen.clone(), ends.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        FakeMcp {
            port,
            ca_file,
            seen,
            stream_ends,
            _runtime: runtime,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    ends: Arc<Mutex<Vec<f64>>>,
) -> Result<Response<Body>, Infallible> {
    let record = Seen {
        path: req.uri().path().to_string(),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
    };
    let authorized = record.header("authorization") == Some(format!("Bearer {TOKEN}").as_str());
    seen.lock().unwrap().push(record.clone());
    let plain = |status: u16, text: &'static str| {
        Response::builder()
            .status(status)
            .body(Full::new(Bytes::from_static(text.as_bytes())).boxed_unsync())
            .unwrap()
    };
    Ok(match record.path.as_str() {
        "/mcp/moved" => Response::builder()
            .status(307)
            .header("location", format!("https://{OTHER_HOST}:{port}/landing"))
            .body(Full::new(Bytes::new()).boxed_unsync())
            .unwrap(),
        "/landing" => plain(200, "landed\n"),
        "/mcp" if !authorized => plain(401, "missing bearer token\n"),
        "/mcp" => tools_stream(ends),
        _ => plain(404, "no such route\n"),
    })
}

/// The `tools/list` answer as one server-sent event, then the stream held
/// open for [`HOLD`] before it ends (the end time recorded).
fn tools_stream(ends: Arc<Mutex<Vec<f64>>>) -> Response<Body> {
    let event = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"search_docs\",\
                 \"inputSchema\":{\"type\":\"object\"}}]}}\n\n";
    let frames = futures_util::stream::unfold(0, move |step| {
        let ends = ends.clone();
        async move {
            match step {
                0 => Some((Ok(Frame::data(Bytes::from_static(event.as_bytes()))), 1)),
                1 => {
                    tokio::time::sleep(HOLD).await;
                    ends.lock().unwrap().push(unix_now());
                    None
                }
                _ => None,
            }
        }
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(BodyExt::boxed_unsync(StreamBody::new(frames)))
        .unwrap()
}

/// The script the container runs: `tools/list` through the proxy variables
/// and straight to the relay, each line stamped with its arrival time;
/// then the redirect, followed by curl; then the environment.
const SCRIPT: &str = r#"
list='{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}'
stamp() { while IFS= read -r line; do [ -n "$line" ] && echo "$1 $(date +%s.%N) $line"; done; }
curl -sN --max-time 20 -X POST -H 'content-type: application/json' \
  -H 'accept: application/json, text/event-stream' --data "$list" "$MOAT_MCP_DOCS_URL" | stamp via-proxy
token=$(printf '%s' "$HTTP_PROXY" | sed 's|^http://moat:\([^@]*\)@.*|\1|')
curl -sN --noproxy '*' --max-time 20 -X POST -H "Authorization: Bearer $token" \
  -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
  --data "$list" "$MOAT_MCP_DOCS_URL" | stamp direct
curl -sS -L --max-time 20 -D - -o /dev/null "$MOAT_MCP_DOCS_URL/moved" | sed 's/^/redirect /'
env
"#;

/// `(arrival time, line)` of the stamped lines with `label`.
fn stamped<'a>(stdout: &'a str, label: &str) -> Vec<(f64, &'a str)> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix(label)?.strip_prefix(' '))
        .filter_map(|l| {
            let (at, line) = l.split_once(' ')?;
            Some((at.parse().ok()?, line))
        })
        .collect()
}

fn grant_mcp(home: &Home, url: &str) {
    home.run_with_input(&["grant", "mcp", "docs", "--url", url], &format!("{TOKEN}\n"));
}

#[test]
fn an_mcp_server_is_reached_through_the_relay_with_its_token_never_in_the_container() {
    let Some(home) = Home::new() else { return };
    std::fs::create_dir_all(home.home()).unwrap();
    let fake = FakeMcp::start(&home.root);
    let bridge = docker_bridge_address();
    std::fs::write(
        home.home().join("config.yaml"),
        format!(
            "extra_ca_file: {}\nresolve:\n  {MCP_HOST}: {bridge}\n  {OTHER_HOST}: {bridge}\n",
            fake.ca_file.display()
        ),
    )
    .unwrap();
    let url = format!("https://{MCP_HOST}:{}/mcp", fake.port);
    grant_mcp(&home, &url);
    // The fake listens on this host, an address the proxy reaches only
    // when a rule names it as host:port.
    let port = fake.port;
    std::fs::write(
        home.root.join("ws/moat.yaml"),
        format!(
            "mcp:\n  - name: docs\n    url: {url}\n    grant: mcp-docs\n    headers: {{X-Org: acme}}\n\
             network:\n  rules: ['{MCP_HOST}:{port}', '{OTHER_HOST}:{port}']\n"
        ),
    )
    .unwrap();

    let out = home.run(&["run", "--trust", "--", "sh", "-c", SCRIPT]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(!stdout.contains(TOKEN), "the container saw the token: {stdout}");
    let relay_var = stdout
        .lines()
        .find_map(|l| l.strip_prefix("MOAT_MCP_DOCS_URL="))
        .unwrap_or_else(|| panic!("no MOAT_MCP_DOCS_URL: {stdout}"));
    assert!(
        relay_var.starts_with("http://moat-proxy:") && relay_var.ends_with("/mcp/docs"),
        "{relay_var}"
    );

    // The fake saw the real token on both ways in, and the file's header.
    let seen = fake.seen();
    let listed: Vec<&Seen> = seen.iter().filter(|s| s.path == "/mcp").collect();
    assert_eq!(listed.len(), 2, "{seen:?}\n{stdout}");
    for request in &listed {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert_eq!(request.header("x-org"), Some("acme"));
        assert_eq!(request.header("proxy-authorization"), None);
    }

    // Each event arrived while the fake still held its stream open.
    let ends = fake.stream_ends.lock().unwrap().clone();
    assert_eq!(ends.len(), 2, "both streams ended");
    // The two requests ran one after the other: each stream has its own end.
    for (label, end) in ["via-proxy", "direct"].into_iter().zip(ends) {
        let lines = stamped(&stdout, label);
        let (arrived, data) = lines
            .iter()
            .find(|(_, line)| line.starts_with("data:"))
            .unwrap_or_else(|| panic!("no event {label}: {stdout}"));
        assert!(data.contains("search_docs"), "{data}");
        assert!(
            *arrived < end - 1.0,
            "{label}: the event arrived at {arrived}, the stream ended at {end}: buffered"
        );
    }

    // The redirect came back to curl, which followed it without the token.
    let redirect: Vec<&str> = stdout.lines().filter_map(|l| l.strip_prefix("redirect ")).collect();
    assert!(redirect.iter().any(|l| l.starts_with("HTTP/1.1 307")), "{redirect:?}");
    assert!(redirect.iter().any(|l| l.starts_with("HTTP/1.1 200")), "{redirect:?}");
    let landing = seen
        .iter()
        .find(|s| s.path == "/landing")
        .unwrap_or_else(|| panic!("the redirect was not followed: {stdout}"));
    assert_eq!(landing.header("authorization"), None, "the token followed the redirect");
    assert!(landing.header("host").is_some_and(|h| h.starts_with(OTHER_HOST)));

    // The trace names the real URL and the grant; neither it nor the audit log holds the token.
    let run_id = home.only_run()["id"].as_str().unwrap().to_string();
    let run_dir = home.home().join("runs").join(&run_id);
    let trace = std::fs::read_to_string(run_dir.join("network.jsonl")).unwrap();
    let relayed: Vec<serde_json::Value> = trace
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r["url"] == url.as_str())
        .collect();
    assert_eq!(relayed.len(), 2, "{trace}");
    assert!(relayed.iter().all(|r| r["grants"] == serde_json::json!(["mcp-docs"])));
    assert!(!trace.contains(TOKEN));
    let audit = std::fs::read_to_string(run_dir.join("audit.jsonl")).unwrap_or_default();
    assert!(
        audit.contains("credential_injected") && audit.contains("mcp-docs"),
        "{audit}"
    );
    assert!(!audit.contains(TOKEN));
}

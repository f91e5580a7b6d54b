//! The noisy-neighbour scenario (`--fairness`): two runs share one moat
//! proxy. Run B sends requests on one keep-alive tunnel, one every 2 ms,
//! first alone and then while run A tries to open 5,000 tunnels as fast as
//! it can: 500 attempts in flight, each bounded by a timeout; a tunnel the
//! proxy accepts completes its TLS handshake (a handshake the proxy pays
//! for) and is held open until the flood ends, as an attacker hoarding
//! connections would.
//!
//! Reported side by side: B's p50/p90 alone and under the flood, the ratio
//! of the two p50s, and how many of A's tunnels were accepted or refused
//! with `429`, under the proxy's default per-run limits and with the limits
//! lifted (what the limits buy).
//!
//! Everything is on loopback and bounded: the flood by its attempt count,
//! the per-attempt timeout and an overall deadline; B by its request count
//! (alone) or the flood's end (under flood) and a per-request timeout.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::http1::SendRequest;
use moat_proxy::RunLimits;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

use crate::{
    ClientSetup, Error, Route, Stats, Threads, UPSTREAM_HOST, basic_auth, client_tls, request, runtime, start_moat,
};

/// B's pace: one request per interval, like an agent talking to its API.
const B_INTERVAL: Duration = Duration::from_millis(2);
/// Requests on B's tunnel before anything is measured.
const B_WARMUP: usize = 20;
/// The longest any one of B's requests may take before it counts as failed.
const B_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest any one of A's attempts (CONNECT and TLS handshake) may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// The flood is cut off here whatever is left (keeps the bench under a minute).
const FLOOD_DEADLINE: Duration = Duration::from_secs(15);

/// What `--fairness` measures.
pub(crate) struct FairnessOptions {
    /// Tunnels run A tries to open (`--flood`).
    pub(crate) attempts: usize,
    /// A's attempts in flight at once (`--in-flight`).
    pub(crate) in_flight: usize,
    /// B's measured requests alone (`--requests`).
    pub(crate) requests: usize,
    /// Which limits to measure under (`--limits default|off|both`).
    pub(crate) limits: LimitChoice,
}

impl Default for FairnessOptions {
    fn default() -> Self {
        Self {
            attempts: 5_000,
            in_flight: 500,
            requests: 300,
            limits: LimitChoice::Both,
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum LimitChoice {
    Default,
    Off,
    Both,
}

impl std::str::FromStr for LimitChoice {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        match text {
            "default" => Ok(Self::Default),
            "off" => Ok(Self::Off),
            "both" => Ok(Self::Both),
            _ => Err("--limits wants default, off or both".into()),
        }
    }
}

impl LimitChoice {
    fn sets(self) -> Vec<(String, RunLimits)> {
        let default = RunLimits::default();
        let with_defaults = (
            format!(
                "default ({} tunnels, {}/s)",
                default.max_tunnels, default.handshakes_per_second
            ),
            default,
        );
        let off = (
            "off".to_string(),
            RunLimits {
                max_tunnels: 1_000_000,
                handshakes_per_second: 1_000_000,
                ..default
            },
        );
        match self {
            Self::Default => vec![with_defaults],
            Self::Off => vec![off],
            Self::Both => vec![with_defaults, off],
        }
    }
}

/// What became of run A's attempts.
#[derive(Default)]
struct FloodReport {
    accepted: usize,
    /// `429` because of `proxy_handshakes_per_second`.
    refused_rate: usize,
    /// `429` because of `proxy_max_tunnels`.
    refused_tunnels: usize,
    /// Any other answer or an I/O error.
    other: usize,
    timed_out: usize,
    /// Never finished: cut off by [`FLOOD_DEADLINE`].
    cut_off: usize,
    first_other: Option<String>,
    elapsed: Duration,
}

enum Outcome {
    Accepted(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Refused { tunnels: bool },
    Other(String),
}

struct Row {
    label: String,
    alone: Stats,
    flooded: Stats,
    flood: FloodReport,
}

/// Runs the scenario once per limit set and prints one table.
pub(crate) fn run(
    options: &FairnessOptions,
    threads: &Threads,
    scratch: &Path,
    upstream_ca: &Path,
    upstream: SocketAddr,
    proxy_rt: &Runtime,
) -> Result<(), Error> {
    let flood_rt = runtime("run-a", threads.client)?;
    let measured_rt = runtime("run-b", 1)?;
    println!(
        "moat proxy noisy neighbour: run A tries to open {} tunnels ({} attempts in flight, {} s timeout each, \
         accepted tunnels held) while run B sends requests on one keep-alive tunnel, one every {} ms; \
         {} CPUs, runtime threads A/B/proxy/upstream {}/1/{}/{}",
        options.attempts,
        options.in_flight,
        ATTEMPT_TIMEOUT.as_secs(),
        B_INTERVAL.as_millis(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        threads.client,
        threads.proxy,
        threads.upstream,
    );
    let mut rows = Vec::new();
    for (index, (label, limits)) in options.limits.sets().into_iter().enumerate() {
        let dir = scratch.join(format!("fairness-{index}"));
        let (proxy, handle, tokens) =
            proxy_rt.block_on(start_moat(&dir, upstream_ca, upstream, limits, &["a", "b"]))?;
        let setup = |token: &moat_proxy::ProxyToken| -> Result<ClientSetup, Error> {
            Ok(ClientSetup {
                route: Route::Proxy {
                    proxy,
                    auth: Some(basic_auth(token.as_str())),
                },
                tls: client_tls(&dir.join("ca/public/ca.crt"))?,
                upstream_port: upstream.port(),
            })
        };
        let row = measure(
            label,
            options,
            &flood_rt,
            &measured_rt,
            setup(&tokens[0])?,
            setup(&tokens[1])?,
        );
        handle.shutdown();
        rows.push(row?);
    }
    flood_rt.shutdown_timeout(Duration::from_secs(1));
    measured_rt.shutdown_timeout(Duration::from_secs(1));
    print_rows(&rows);
    Ok(())
}

fn measure(
    label: String,
    options: &FairnessOptions,
    flood_rt: &Runtime,
    measured_rt: &Runtime,
    a: ClientSetup,
    b: ClientSetup,
) -> Result<Row, Error> {
    let authority = format!("{UPSTREAM_HOST}:{}", b.upstream_port);
    let mut sender = measured_rt.block_on(async {
        let mut sender = b.connect(UPSTREAM_HOST).await?;
        for _ in 0..B_WARMUP {
            request(&mut sender, &authority).await?;
        }
        Ok::<_, Error>(sender)
    })?;
    let alone = measured_rt.block_on(paced(&mut sender, &authority, options.requests, None));
    let flood = flood_rt.spawn(flood(a, options.attempts, options.in_flight));
    // Bounded by the flood, which ends by FLOOD_DEADLINE plus one attempt.
    let flooded = measured_rt.block_on(paced(&mut sender, &authority, usize::MAX, Some(&flood)));
    let flood = flood_rt.block_on(flood)?;
    Ok(Row {
        label,
        alone,
        flooded,
        flood,
    })
}

/// B's requests at [`B_INTERVAL`]: `count` of them, or as many as fit
/// until `until` finishes.
async fn paced(
    sender: &mut SendRequest<Empty<Bytes>>,
    authority: &str,
    count: usize,
    until: Option<&JoinHandle<FloodReport>>,
) -> Stats {
    let mut tick = tokio::time::interval(B_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let mut stats = Stats::default();
    while stats.requests + stats.errors < count && !until.is_some_and(JoinHandle::is_finished) {
        tick.tick().await;
        let begin = Instant::now();
        match tokio::time::timeout(B_REQUEST_TIMEOUT, request(sender, authority)).await {
            Ok(Ok(())) => {
                stats.latencies.push(begin.elapsed());
                stats.requests += 1;
            }
            Ok(Err(e)) => {
                stats.errors += 1;
                if stats.errors == 1 {
                    eprintln!("run B: request failed: {e}");
                }
            }
            Err(_) => stats.errors += 1,
        }
    }
    stats.elapsed = started.elapsed();
    stats.latencies.sort_unstable();
    stats
}

/// Run A: `attempts` CONNECTs, `in_flight` at a time; accepted tunnels are
/// held until the last attempt is answered.
async fn flood(setup: ClientSetup, attempts: usize, in_flight: usize) -> FloodReport {
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started + FLOOD_DEADLINE);
    let slots = Arc::new(Semaphore::new(in_flight.max(1)));
    let setup = Arc::new(setup);
    let mut report = FloodReport::default();
    let mut held = Vec::new();
    let mut tasks = JoinSet::new();
    let mut launched = 0;
    while launched < attempts {
        let Ok(Ok(slot)) = tokio::time::timeout_at(deadline, slots.clone().acquire_owned()).await else {
            break;
        };
        let setup = setup.clone();
        tasks.spawn(async move {
            let _slot = slot;
            tokio::time::timeout(ATTEMPT_TIMEOUT, attempt(&setup)).await
        });
        launched += 1;
        while let Some(finished) = tasks.try_join_next() {
            tally(&mut report, &mut held, finished);
        }
    }
    while let Ok(Some(finished)) = tokio::time::timeout_at(deadline, tasks.join_next()).await {
        tally(&mut report, &mut held, finished);
    }
    report.cut_off =
        attempts - (report.accepted + report.refused_rate + report.refused_tunnels) - (report.other + report.timed_out);
    report.elapsed = started.elapsed();
    tasks.abort_all();
    drop(held);
    report
}

fn tally(
    report: &mut FloodReport,
    held: &mut Vec<tokio_rustls::client::TlsStream<TcpStream>>,
    finished: Result<Result<Outcome, tokio::time::error::Elapsed>, tokio::task::JoinError>,
) {
    match finished {
        Ok(Ok(Outcome::Accepted(tunnel))) => {
            report.accepted += 1;
            held.push(*tunnel);
        }
        Ok(Ok(Outcome::Refused { tunnels: true })) => report.refused_tunnels += 1,
        Ok(Ok(Outcome::Refused { tunnels: false })) => report.refused_rate += 1,
        Ok(Ok(Outcome::Other(what))) => {
            report.other += 1;
            report.first_other.get_or_insert(what);
        }
        Ok(Err(_)) => report.timed_out += 1,
        Err(e) => {
            report.other += 1;
            report.first_other.get_or_insert(e.to_string());
        }
    }
}

/// One CONNECT by run A; on `200`, the TLS handshake through the tunnel.
async fn attempt(setup: &ClientSetup) -> Outcome {
    let Route::Proxy { proxy, auth } = &setup.route else {
        return Outcome::Other("run A needs a proxy route".to_string());
    };
    let answer = async {
        let mut tcp = TcpStream::connect(proxy).await?;
        tcp.set_nodelay(true)?;
        let authority = format!("{UPSTREAM_HOST}:{}", setup.upstream_port);
        let auth = auth.as_deref().unwrap_or_default();
        let connect =
            format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nProxy-Authorization: {auth}\r\n\r\n");
        tcp.write_all(connect.as_bytes()).await?;
        let (status, body) = read_response(&mut tcp).await?;
        Ok::<_, Error>((tcp, status, body))
    };
    match answer.await {
        Ok((tcp, 200, _)) => match setup
            .tls
            .connect(ServerName::try_from(UPSTREAM_HOST).expect("a valid name"), tcp)
            .await
        {
            Ok(tls) => Outcome::Accepted(Box::new(tls)),
            Err(e) => Outcome::Other(format!("TLS through an accepted tunnel: {e}")),
        },
        Ok((_, 429, body)) => Outcome::Refused {
            tunnels: body.contains("proxy_max_tunnels"),
        },
        Ok((_, status, body)) => Outcome::Other(format!("CONNECT answered {status}: {}", body.trim())),
        Err(e) => Outcome::Other(e.to_string()),
    }
}

/// The proxy's answer to a CONNECT: status and body. A `200` is followed by
/// nothing until the client's TLS hello, so reading past the head is safe.
async fn read_response(tcp: &mut TcpStream) -> Result<(u16, String), Error> {
    let mut buffer = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let read = tcp.read(&mut chunk).await?;
        if read == 0 {
            return Err("proxy closed during CONNECT".into());
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {head:?}"))?;
    let length: usize = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0);
    if status == 200 && buffer.len() > head_end {
        return Err("bytes after the CONNECT answer".into());
    }
    while buffer.len() < head_end + length {
        let read = tcp.read(&mut chunk).await?;
        if read == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    Ok((status, String::from_utf8_lossy(&buffer[head_end..]).into_owned()))
}

fn print_rows(rows: &[Row]) {
    println!();
    println!(
        "{:<28} {:>17} {:>25} {:>9} {:>10} {:>24} {:>7} {:>8}",
        "limits",
        "B alone p50/p90",
        "B flooded p50/p90 (n)",
        "p50 ratio",
        "A accepted",
        "A 429 (rate / tunnels)",
        "A other",
        "flood s"
    );
    for row in rows {
        let (alone, flooded, flood) = (&row.alone, &row.flooded, &row.flood);
        println!(
            "{:<28} {:>7.3} / {:>7.3} {:>7.3} / {:>7.3} ({:>5}) {:>8.2}x {:>10} {:>8} ({:>5} / {:>5}) {:>7} {:>8.2}",
            row.label,
            alone.percentile_ms(0.50),
            alone.percentile_ms(0.90),
            flooded.percentile_ms(0.50),
            flooded.percentile_ms(0.90),
            flooded.requests,
            flooded.percentile_ms(0.50) / alone.percentile_ms(0.50),
            flood.accepted,
            flood.refused_rate + flood.refused_tunnels,
            flood.refused_rate,
            flood.refused_tunnels,
            flood.other + flood.timed_out + flood.cut_off,
            flood.elapsed.as_secs_f64(),
        );
        if alone.errors + flooded.errors > 0 {
            println!(
                "{:<28} run B: {} failed requests alone, {} under the flood",
                "", alone.errors, flooded.errors
            );
        }
        if flood.other + flood.timed_out + flood.cut_off > 0 {
            println!(
                "{:<28} run A: {} other failures, {} timed out, {} cut off by the {} s deadline{}",
                "",
                flood.other,
                flood.timed_out,
                flood.cut_off,
                FLOOD_DEADLINE.as_secs(),
                flood
                    .first_other
                    .as_deref()
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default()
            );
        }
    }
    println!("(ms; the ratio is B's p50 under the flood over B's p50 alone)");
}

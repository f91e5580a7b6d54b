//! A noisy neighbour at CI scale: run A floods the proxy with CONNECTs while
//! run B keeps making requests on its own tunnel. The test is about B's
//! availability and A's refusals; the latency numbers themselves are
//! reported by the bench (`scripts/bench-fairness.sh`), not asserted here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use http_body_util::BodyExt as _;
use moat_proxy::{NetworkPolicy, RunLimits};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::client::TlsStream;

use crate::support::{CPU, ProxyClient, TestProxy, Tunnel, get};

/// Tunnels run A tries to open, and how many of those attempts are in
/// flight at once (few enough for a machine with 1,024 file descriptors).
const ATTEMPTS: usize = 2_000;
const IN_FLIGHT: usize = 128;
/// Bounds on one attempt by A (CONNECT, then TLS when accepted), on one
/// request by B, and on the flood as a whole.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const FLOOD_DEADLINE: Duration = Duration::from_secs(60);
/// B's pace, and its requests measured before the flood.
const B_INTERVAL: Duration = Duration::from_millis(5);
const B_BASELINE: usize = 50;

/// Attack: one run tries to open 2,000 tunnels as fast as it can (128 in
/// flight), completing the TLS handshake of each tunnel it gets and holding
/// it open, to take the proxy from the other runs. Under the default
/// limits its CONNECTs past the burst are refused with 429 (never more are
/// accepted than the burst plus the rate over the flood's duration, which
/// is what fails without the limits: then A gets all 2,000), and another
/// run's requests all succeed while it happens.
///
/// B's latency is checked loosely, as availability rather than
/// performance: its median under the flood must stay within
/// max(2 × its median alone, its median alone + 50 ms), both measured in
/// this test on the same tunnel. The 2× is a claim about the bench
/// (release build, nothing else running), which reports it. Here the
/// proxy, both clients and the upstream share an unoptimised build and two
/// cores with the other tests: the flood's few hundred milliseconds of
/// 429s and burst handshakes keep both cores busy, and B's sub-millisecond
/// median rises to a few milliseconds whatever the limits, since it is the
/// same machine's CPU. The 50 ms allowance absorbs that and still catches
/// B being starved, its requests left waiting behind A's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_flooding_the_proxy_with_tunnels_leaves_another_run_served() {
    // Tests with a latency bound of their own wait until the flood is over.
    let _flooding = CPU.write().await;
    let proxy = TestProxy::start("fairness").await;
    let limits = RunLimits::default();
    let authority = proxy.upstream.authority("api.example.test");
    let a = proxy.register("a", NetworkPolicy::default(), vec![]);
    let b = proxy.register("b", NetworkPolicy::default(), vec![]);

    let mut tunnel = proxy.client(&b.token).tunnel(&authority, false).await;
    for _ in 0..10 {
        b_request(&mut tunnel).await;
    }
    let mut alone = Vec::new();
    for _ in 0..B_BASELINE {
        tokio::time::sleep(B_INTERVAL).await;
        alone.push(b_request(&mut tunnel).await);
    }

    // A's load generator gets a runtime of its own, so that B's requests
    // do not wait behind A's client tasks in the test's scheduler.
    let flood_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let flooding = flood_rt.spawn(flood(Arc::new(proxy.client(&a.token)), authority.clone()));
    let mut flooded = Vec::new();
    let started = Instant::now();
    while !flooding.is_finished() && started.elapsed() < FLOOD_DEADLINE {
        tokio::time::sleep(B_INTERVAL).await;
        flooded.push(b_request(&mut tunnel).await);
    }
    let report = tokio::time::timeout(ATTEMPT_TIMEOUT, flooding)
        .await
        .expect("run A's flood did not end in time")
        .unwrap();
    flood_rt.shutdown_background();

    assert!(
        report.failures.is_empty(),
        "{} of run A's attempts were neither accepted nor refused with 429, e.g. {:?}",
        report.failures.len(),
        &report.failures[..report.failures.len().min(3)]
    );
    assert_eq!(report.accepted + report.refused, ATTEMPTS);
    let allowed = f64::from(limits.handshakes_per_second) * (1.0 + report.elapsed.as_secs_f64());
    assert!(
        report.accepted >= 1
            && report.accepted as f64 <= allowed.ceil()
            && report.accepted <= limits.max_tunnels as usize,
        "run A got {} tunnels in {:?} (limits {limits:?})",
        report.accepted,
        report.elapsed
    );
    assert!(report.refused > 0, "run A was never refused");

    assert!(
        flooded.len() >= 5,
        "the flood ended after {} of B's requests",
        flooded.len()
    );
    let (p50_alone, p50_flooded) = (median(alone), median(flooded.clone()));
    let bound = (p50_alone * 2).max(p50_alone + Duration::from_millis(50));
    assert!(
        p50_flooded <= bound,
        "run B's median latency went from {p50_alone:?} alone to {p50_flooded:?} under the flood \
         ({} requests; bound {bound:?}); run A got {} tunnels, {} refused",
        flooded.len(),
        report.accepted,
        report.refused
    );
}

/// One request by B on its tunnel; it must succeed. Returns its latency.
async fn b_request(tunnel: &mut Tunnel) -> Duration {
    let begin = Instant::now();
    let request = async {
        let response = tunnel.send(get("api.example.test", "/", &[])).await;
        assert_eq!(response.status(), StatusCode::OK, "run B's request was not served");
        response.into_body().collect().await.unwrap();
    };
    tokio::time::timeout(REQUEST_TIMEOUT, request)
        .await
        .expect("run B's request timed out");
    begin.elapsed()
}

fn median(mut latencies: Vec<Duration>) -> Duration {
    latencies.sort_unstable();
    latencies[latencies.len() / 2]
}

#[derive(Default)]
struct FloodReport {
    accepted: usize,
    /// Refused with 429, naming the limit.
    refused: usize,
    /// Anything else: another status, an I/O error, a timeout.
    failures: Vec<String>,
    elapsed: Duration,
}

type Attempt = Result<Result<TlsStream<TcpStream>, (StatusCode, String)>, String>;

/// Run A: [`ATTEMPTS`] CONNECTs, [`IN_FLIGHT`] at a time; the tunnels it
/// gets are held until the last attempt is answered.
async fn flood(client: Arc<ProxyClient>, authority: String) -> FloodReport {
    let sni = ServerName::try_from(authority.rsplit_once(':').unwrap().0.to_string()).unwrap();
    let tls = client.tls_connector(&[b"http/1.1"]);
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let started = Instant::now();
    let mut report = FloodReport::default();
    let mut held = Vec::new();
    let mut tasks = JoinSet::new();
    for _ in 0..ATTEMPTS {
        let slot = slots.clone().acquire_owned().await.unwrap();
        let (client, authority, sni, tls) = (client.clone(), authority.clone(), sni.clone(), tls.clone());
        tasks.spawn(async move {
            let _slot = slot;
            let attempt = async {
                let (status, body, tcp) = client.connect_raw(&authority).await.map_err(|e| e.to_string())?;
                if status != StatusCode::OK {
                    return Ok(Err((status, body)));
                }
                let tunnel = tls.connect(sni, tcp).await.map_err(|e| format!("TLS: {e}"))?;
                Ok(Ok(tunnel))
            };
            tokio::time::timeout(ATTEMPT_TIMEOUT, attempt)
                .await
                .unwrap_or_else(|_| Err("timed out".to_string()))
        });
        while let Some(finished) = tasks.try_join_next() {
            tally(&mut report, &mut held, finished);
        }
    }
    while let Some(finished) = tasks.join_next().await {
        tally(&mut report, &mut held, finished);
    }
    report.elapsed = started.elapsed();
    report
}

fn tally(
    report: &mut FloodReport,
    held: &mut Vec<TlsStream<TcpStream>>,
    finished: Result<Attempt, tokio::task::JoinError>,
) {
    match finished {
        Ok(Ok(Ok(tunnel))) => {
            report.accepted += 1;
            held.push(tunnel);
        }
        Ok(Ok(Err((StatusCode::TOO_MANY_REQUESTS, body))))
            if body.contains("proxy_handshakes_per_second") || body.contains("proxy_max_tunnels") =>
        {
            report.refused += 1;
        }
        Ok(Ok(Err((status, body)))) => report.failures.push(format!("{status}: {}", body.trim())),
        Ok(Err(e)) => report.failures.push(e),
        Err(e) => report.failures.push(e.to_string()),
    }
}

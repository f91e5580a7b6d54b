//! CONNECT tunnels: the run's tunnel and handshake limits, host-level policy
//! and destination check, `200`, then TLS termination with a leaf for the
//! CONNECT host and an HTTP/1.1 or HTTP/2 server (by ALPN, with the run's
//! stream limit) whose requests all go to the CONNECT target, at the
//! addresses judged when the tunnel opened (never looked up again).

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio_rustls::TlsAcceptor;

use crate::body::{ProxyBody, local_body};
use crate::forward::{Refusal, Target, forward, local_response, refuse, start_trace};
use crate::limits::TunnelSlot;
use crate::policy::normalize_host;
use crate::proxy::{Shared, check_host_and_destination, until_shutdown};
use crate::registry::RunEntry;
use crate::tls::ALPN_H2;

/// Answers a CONNECT: refuses it, or accepts and intercepts the tunnel.
pub(crate) async fn open(shared: Arc<Shared>, run: Arc<RunEntry>, req: Request<Incoming>) -> Response<ProxyBody> {
    let Some(mut target) = connect_target(&req) else {
        return local_response(
            StatusCode::BAD_REQUEST,
            "request",
            "moat proxy: CONNECT needs host:port\n".to_string(),
        );
    };
    // Before the policy check: the agent chooses how many CONNECTs it sends,
    // and each may cost a DNS lookup.
    let slot = match run.limiter.open_tunnel() {
        Ok(slot) => slot,
        Err(exceeded) => {
            let refusal = Refusal {
                status: StatusCode::TOO_MANY_REQUESTS,
                rule: "limit".to_string(),
                body: format!("moat proxy: {exceeded}\n"),
            };
            return refuse(start_trace(&run, &target, req.method(), ""), refusal);
        }
    };
    match check_host_and_destination(&shared, &run, &target, req.method()).await {
        Ok(destination) => target.destination = Some(destination),
        Err(refusal) => return refuse(start_trace(&run, &target, req.method(), ""), refusal),
    }
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => intercept(shared, run, Arc::new(target), upgraded, slot).await,
            Err(e) => tracing::debug!("CONNECT upgrade to {} failed: {e}", target.host),
        }
    });
    Response::new(local_body(""))
}

fn connect_target<B>(req: &Request<B>) -> Option<Target> {
    let authority = req.uri().authority()?;
    Some(Target {
        tls: true,
        host: normalize_host(authority.host()),
        port: authority.port_u16()?,
        destination: None,
    })
}

/// Terminates the client's TLS and serves its requests; the run's tunnel
/// slot is held until the connection ends.
async fn intercept(
    shared: Arc<Shared>,
    run: Arc<RunEntry>,
    target: Arc<Target>,
    upgraded: Upgraded,
    _slot: TunnelSlot,
) {
    let handshake = async {
        let config = shared
            .ca
            .server_config_for(&target.host)
            .await
            .map_err(|e| e.to_string())?;
        TlsAcceptor::from(config)
            .accept(TokioIo::new(upgraded))
            .await
            .map_err(|e| e.to_string())
    };
    let timeout = shared.timeouts.client_handshake;
    let tls = match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return trace_handshake_failure(&run, &target, e),
        Err(_) => return trace_handshake_failure(&run, &target, format!("timed out after {timeout:?}")),
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(ALPN_H2);
    let max_streams = run.limiter.max_streams_per_tunnel();
    let io = TokioIo::new(tls);
    let mut stop = shared.shutdown.subscribe();
    let service = service_fn(move |req| {
        let (shared, run, target) = (shared.clone(), run.clone(), target.clone());
        async move { Ok::<_, std::convert::Infallible>(forward(shared, run, target, req).await) }
    });
    let served = if h2 {
        let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_concurrent_streams(max_streams)
            .serve_connection(io, service);
        until_shutdown(connection, &mut stop, |c| c.graceful_shutdown()).await
    } else {
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .serve_connection(io, service)
            .with_upgrades();
        until_shutdown(connection, &mut stop, |c| c.graceful_shutdown()).await
    };
    if let Err(e) = served {
        tracing::debug!("intercepted connection ended: {e}");
    }
}

/// A client that rejects moat's certificate (or stalls) leaves a trace line,
/// which is how pinned or CA-unaware tools get diagnosed.
fn trace_handshake_failure(run: &Arc<RunEntry>, target: &Target, detail: String) {
    let trace = start_trace(run, target, &http::Method::CONNECT, "");
    trace.finish(0, Some(format!("client TLS handshake failed: {detail}")));
}

//! Protocol upgrades (WebSocket): the upgrade request, credentials already
//! injected, goes over a dedicated HTTP/1.1 connection to the target's judged
//! addresses; on `101` both sides are spliced byte for byte and the trace is
//! recorded when the splice ends. A splice is cut when its run is
//! unregistered or a grant injected into its upgrade request is revoked.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::body::{CountingBody, ProxyBody, TracedBody};
use crate::destination::Destination;
use crate::forward::{PendingTrace, Target, gateway_error, refuse};
use crate::proxy::Shared;
use crate::registry::RunEntry;

/// Bytes read per step when splicing an upgraded connection.
const SPLICE_BUFFER: usize = 16 * 1024;

/// Sends an upgrade request and, on `101`, splices client and upstream.
pub(crate) async fn forward_upgrade(
    shared: &Shared,
    target: &Target,
    destination: &Destination,
    upstream: Request<CountingBody<Incoming>>,
    client_upgrade: OnUpgrade,
    mut trace: PendingTrace,
) -> Response<ProxyBody> {
    let timeout = shared.timeouts.upstream_response;
    let exchange = async {
        let stream = shared
            .connector
            .connect_http1(&destination.addresses, &target.host, target.port, target.tls)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!("upgraded upstream connection ended: {e}");
            }
        });
        sender.send_request(upstream).await.map_err(|e| e.to_string())
    };
    let mut response = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(response)) => response,
        Ok(Err(detail)) => return refuse(trace, gateway_error(StatusCode::BAD_GATEWAY, detail)),
        Err(_) => {
            let detail = format!("upgrade response not received within {timeout:?}");
            return refuse(trace, gateway_error(StatusCode::GATEWAY_TIMEOUT, detail));
        }
    };
    trace.status = Some(response.status().as_u16());
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (parts, body) = response.into_parts();
        return Response::from_parts(parts, TracedBody::new(body, trace).boxed_unsync());
    }
    let upstream_upgrade = hyper::upgrade::on(&mut response);
    tokio::spawn(splice(client_upgrade, upstream_upgrade, trace));
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, crate::body::local_body(""))
}

async fn splice(client: OnUpgrade, upstream: OnUpgrade, trace: PendingTrace) {
    // Subscribed before anything can be missed; checked before splicing.
    let run = trace.run.clone();
    let mut changes = run.watch_changes();
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => return trace.finish(0, Some(format!("upgrade failed: {e}"))),
    };
    let (client_read, client_write) = tokio::io::split(TokioIo::new(client));
    let (upstream_read, upstream_write) = tokio::io::split(TokioIo::new(upstream));
    let (to_upstream, to_client) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let pumping = async {
        tokio::join!(
            pump(client_read, upstream_write, &to_upstream),
            pump(upstream_read, client_write, &to_client)
        )
    };
    let error = tokio::select! {
        (up, down) = pumping => up.or(down),
        // Dropping the pumps drops both connections.
        reason = revoked(&run, &trace.grants, &mut changes) => Some(reason),
    };
    trace.add_bytes_out(to_upstream.load(Ordering::Relaxed));
    trace.finish(to_client.load(Ordering::Relaxed), error);
}

/// Completes, with the reason, once the run is unregistered or a grant in
/// `grants` (those injected into the upgrade request) is no longer granted.
async fn revoked(run: &RunEntry, grants: &[String], changes: &mut tokio::sync::watch::Receiver<u64>) -> String {
    loop {
        if !run.is_active() {
            return "closed: the run was unregistered".to_string();
        }
        if let Some(grant) = grants.iter().find(|g| !run.has_grant(g)) {
            return format!("closed: grant {grant} was revoked");
        }
        if changes.changed().await.is_err() {
            return "closed: the run was unregistered".to_string();
        }
    }
}

/// Copies until end of stream, then shuts the writer down, counting bytes
/// into `bytes`; returns how it ended. A peer that vanishes without a TLS
/// close_notify counts as an ordinary end.
async fn pump(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin, bytes: &AtomicU64) -> Option<String> {
    let mut buffer = vec![0u8; SPLICE_BUFFER];
    let error = loop {
        match from.read(&mut buffer).await {
            Ok(0) => break None,
            Ok(n) => {
                if let Err(e) = to.write_all(&buffer[..n]).await {
                    break Some(format!("upgraded stream write failed: {e}"));
                }
                bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break None,
            Err(e) => break Some(format!("upgraded stream read failed: {e}")),
        }
    };
    let _ = to.shutdown().await;
    error
}

//! The API server's port-forward of one port (a WebSocket speaking
//! `v4.channel.k8s.io`) as a plain byte stream, [`ProxyControlStream`].
//! Every binary message starts with its channel: 0 carries the port's
//! bytes, 1 the kubelet's errors; the server's first message on each
//! channel names the port (`u16`, little endian). A background task pumps
//! between the WebSocket and the stream; an error message from the kubelet
//! becomes an `io::Error` carrying its text.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf, ReadHalf, WriteHalf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// The WebSocket subprotocol of port-forward.
pub(crate) const PROTOCOL: &str = "v4.channel.k8s.io";
/// The channel of the forwarded port's bytes.
pub(crate) const DATA_CHANNEL: u8 = 0;
/// The channel of the kubelet's errors about the forward.
pub(crate) const ERROR_CHANNEL: u8 = 1;
/// How many bytes wait between the WebSocket and the stream's user, each way.
const BUFFER: usize = 64 * 1024;
/// How long, once our side has closed, the pod's last bytes and the
/// server's close are waited for.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// The first message of `channel`: the port it is about.
#[cfg(any(test, feature = "mock"))]
pub(crate) fn port_announcement(channel: u8, port: u16) -> Vec<u8> {
    let [low, high] = port.to_le_bytes();
    vec![channel, low, high]
}

/// Why the forward failed, once it has; read by the stream's user.
type Failure = Arc<Mutex<Option<String>>>;

/// A byte stream to a port of a pod through the API server's port-forward
/// (from [`crate::KubeRuntime::open_proxy_control`]). Shutting it down or
/// dropping it closes the forward; the forward closing reads as the end of
/// the stream, a failure the kubelet reports as an `io::Error` with its text.
#[derive(Debug)]
pub struct ProxyControlStream {
    stream: DuplexStream,
    failure: Failure,
}

impl ProxyControlStream {
    /// Starts pumping between `socket`, a port-forward of `port`, and the
    /// returned stream.
    pub(crate) fn over<S>(socket: WebSocketStream<S>, port: u16) -> ProxyControlStream
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (ours, theirs) = tokio::io::duplex(BUFFER);
        let failure = Failure::default();
        tokio::spawn(pump(socket, theirs, port, failure.clone()));
        ProxyControlStream { stream: ours, failure }
    }

    fn failure(&self) -> Option<io::Error> {
        let failure = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
        failure.clone().map(io::Error::other)
    }
}

impl AsyncRead for ProxyControlStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        let at_end = matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() == before && buf.remaining() > 0;
        match self.failure() {
            Some(failure) if at_end => Poll::Ready(Err(failure)),
            _ => polled,
        }
    }
}

impl AsyncWrite for ProxyControlStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write(cx, data) {
            Poll::Ready(Err(error)) => Poll::Ready(Err(self.failure().unwrap_or(error))),
            polled => polled,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Runs the forward until the pod's side ends, or until ours does and the
/// pod's side has had `CLOSE_WAIT` to finish.
async fn pump<S>(socket: WebSocketStream<S>, local: DuplexStream, port: u16, failure: Failure)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (to_pod, from_pod) = socket.split();
    let (local_reader, local_writer) = tokio::io::split(local);
    let inbound = receive(from_pod, local_writer, port, failure);
    tokio::pin!(inbound);
    tokio::select! {
        () = &mut inbound => {}
        () = send(local_reader, to_pod) => {
            let _ = tokio::time::timeout(CLOSE_WAIT, inbound).await;
        }
    }
}

/// Our bytes to the pod, each write one data message; a close when our
/// side ends.
async fn send<S>(mut local: ReadHalf<DuplexStream>, mut to_pod: SplitSink<WebSocketStream<S>, Message>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buffer = vec![0_u8; BUFFER + 1];
    loop {
        buffer[0] = DATA_CHANNEL;
        let read = match local.read(&mut buffer[1..]).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if to_pod.send(Message::binary(buffer[..=read].to_vec())).await.is_err() {
            return;
        }
    }
    let _ = to_pod.close().await;
}

/// The pod's bytes to us until the forward closes; a failure is recorded
/// before our side of the stream is dropped, so the user's read finds it.
async fn receive<S>(
    mut from_pod: SplitStream<WebSocketStream<S>>,
    mut local: WriteHalf<DuplexStream>,
    port: u16,
    failure: Failure,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Err(message) = relay(&mut from_pod, &mut local, port).await {
        tracing::debug!("port-forward of port {port}: {message}");
        *failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(message);
    }
}

/// Pings are answered by tungstenite on the next read, which this loop
/// always comes back to.
async fn relay<S>(
    from_pod: &mut SplitStream<WebSocketStream<S>>,
    local: &mut WriteHalf<DuplexStream>,
    port: u16,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut announced = [false; 2];
    while let Some(message) = from_pod.next().await {
        let message = message.map_err(|e| format!("the port-forward of port {port} broke: {e}"))?;
        let Message::Binary(frame) = message else {
            continue;
        };
        let Some((&channel, payload)) = frame.split_first() else {
            continue;
        };
        let Some(seen) = announced.get_mut(usize::from(channel)) else {
            return Err(format!(
                "the port-forward of port {port} sent on unknown channel {channel}"
            ));
        };
        if !std::mem::replace(seen, true) {
            check_announcement(payload, port)?;
            continue;
        }
        if channel == ERROR_CHANNEL && !payload.is_empty() {
            return Err(format!(
                "the port-forward of port {port} failed: {}",
                String::from_utf8_lossy(payload)
            ));
        }
        if channel == DATA_CHANNEL && local.write_all(payload).await.is_err() {
            // The user dropped the stream.
            return Ok(());
        }
    }
    Ok(())
}

fn check_announcement(payload: &[u8], port: u16) -> Result<(), String> {
    match payload {
        [low, high] if u16::from_le_bytes([*low, *high]) == port => Ok(()),
        [low, high] => Err(format!(
            "the port-forward announced port {} instead of {port}",
            u16::from_le_bytes([*low, *high])
        )),
        _ => Err(format!(
            "the port-forward of port {port} began with {} bytes instead of the port",
            payload.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_announcement_names_the_port_little_endian() {
        assert_eq!(port_announcement(ERROR_CHANNEL, 8443), [1, 0xfb, 0x20]);
        assert_eq!(check_announcement(&[0xfb, 0x20], 8443), Ok(()));
        let other = check_announcement(&[0x20, 0xfb], 8443).unwrap_err();
        assert!(other.contains("port 64288 instead of 8443"), "{other}");
        let short = check_announcement(b"x", 8443).unwrap_err();
        assert!(short.contains("1 bytes"), "{short}");
    }
}

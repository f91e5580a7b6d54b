//! Body wrappers on the data path: frames pass through one by one as they
//! arrive (never read ahead); the wrappers only count bytes and, for
//! responses, emit the request's trace record when the body ends or is dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body, Frame, SizeHint};

use crate::forward::PendingTrace;

/// The body type the proxy answers with.
pub(crate) type ProxyBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// A complete local body (refusals, errors).
pub(crate) fn local_body(text: impl Into<Bytes>) -> ProxyBody {
    http_body_util::Full::new(text.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Counts the data bytes of a request body as it streams upstream.
pub(crate) struct CountingBody<B> {
    inner: B,
    counted: Arc<AtomicU64>,
}

impl<B> CountingBody<B> {
    pub(crate) fn new(inner: B, counted: Arc<AtomicU64>) -> Self {
        Self { inner, counted }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for CountingBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.counted.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that records the trace once it has been fully sent (or
/// abandoned by the client).
pub(crate) struct TracedBody<B> {
    inner: B,
    bytes_in: u64,
    /// The body needs no polling (e.g. HEAD, 204): dropping it is completion.
    empty: bool,
    trace: Option<PendingTrace>,
}

impl<B: Body> TracedBody<B> {
    pub(crate) fn new(inner: B, trace: PendingTrace) -> Self {
        Self {
            empty: inner.is_end_stream(),
            inner,
            bytes_in: 0,
            trace: Some(trace),
        }
    }
}

impl<B> TracedBody<B> {
    fn finish(&mut self, error: Option<String>) {
        if let Some(trace) = self.trace.take() {
            trace.finish(self.bytes_in, error);
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for TracedBody<B>
where
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes_in += data.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.finish(None);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                let message = format!("upstream body failed: {e}");
                self.finish(Some(message));
            }
            Poll::Ready(None) => self.finish(None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for TracedBody<B> {
    fn drop(&mut self) {
        let abandoned = (!self.empty).then(|| "client closed before the body ended".to_string());
        self.finish(abandoned);
    }
}

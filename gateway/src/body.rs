//! Body types: what the gateway answers with, and what it sends upstream.
//!
//! Both are small enums rather than boxed trait objects: a request's body goes to the
//! backend as the very `Incoming` stream hyper gave us, and the backend's body comes
//! back the same way, frame by frame — nothing is buffered except by the response
//! cache, which tees the frames it forwards (see [`crate::cache`]).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::cache::CachingBody;

pin_project_lite::pin_project! {
    /// A response body: the gateway's own (errors, cache hits, health) or a backend's.
    #[project = GatewayBodyProj]
    pub enum GatewayBody {
        /// A complete body in memory.
        Full { #[pin] body: Full<Bytes> },
        /// The backend's body, streamed through; `first` is a frame already taken from
        /// it (see [`GatewayBody::upstream_prefetched`]), sent before the rest.
        Upstream { first: Option<Result<Frame<Bytes>, hyper::Error>>, #[pin] body: Incoming },
        /// The backend's body, streamed through while a copy goes to the response cache.
        Caching { #[pin] body: CachingBody },
    }
}

impl GatewayBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        GatewayBody::Full {
            body: Full::new(bytes.into()),
        }
    }

    pub fn empty() -> Self {
        Self::full(Bytes::new())
    }

    pub fn upstream(body: Incoming) -> Self {
        GatewayBody::Upstream { first: None, body }
    }

    /// The backend's body, with its first frame fetched if it is (nearly) ready.
    ///
    /// hyper's client hands over a response as soon as its head is parsed, and reads the
    /// body only once the body is polled. Sent as is, the head would go out in one write
    /// and the body in another, each after a task wake-up. Polling the first frame once,
    /// yielding once so the connection task can deliver it, and polling again lets the
    /// server write head and first frame together. If it is not there by then, nothing
    /// waits: the body streams as usual. Nothing beyond the first frame is held.
    pub async fn upstream_prefetched(mut body: Incoming) -> Self {
        if body.is_end_stream() {
            return GatewayBody::upstream(body);
        }
        let mut first = poll_once(&mut body).await;
        if first.is_none() {
            tokio::task::yield_now().await;
            first = poll_once(&mut body).await;
        }
        match first {
            Some(Some(frame)) => GatewayBody::Upstream {
                first: Some(frame),
                body,
            },
            // Ended without a frame, or not ready yet.
            _ => GatewayBody::upstream(body),
        }
    }
}

/// Polls `body` for a frame once: `None` if it is not ready.
async fn poll_once(body: &mut Incoming) -> Option<Option<Result<Frame<Bytes>, hyper::Error>>> {
    std::future::poll_fn(|cx| match Pin::new(&mut *body).poll_frame(cx) {
        Poll::Ready(frame) => Poll::Ready(Some(frame)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.project() {
            GatewayBodyProj::Full { body } => body
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(|never| match never {}))),
            GatewayBodyProj::Upstream { first, body } => match first.take() {
                Some(frame) => Poll::Ready(Some(frame)),
                None => body.poll_frame(cx),
            },
            GatewayBodyProj::Caching { body } => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GatewayBody::Full { body } => body.is_end_stream(),
            GatewayBody::Upstream { first, body } => first.is_none() && body.is_end_stream(),
            GatewayBody::Caching { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            GatewayBody::Full { body } => body.size_hint(),
            GatewayBody::Upstream { first, body } => {
                let inner = body.size_hint();
                let n = match first {
                    Some(Ok(frame)) => frame.data_ref().map_or(0, |d| d.len() as u64),
                    _ => 0,
                };
                // Upper bound first: a lower bound above the upper one panics.
                let mut hint = SizeHint::new();
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + n);
                }
                hint.set_lower(inner.lower() + n);
                hint
            }
            GatewayBody::Caching { body } => body.size_hint(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request body on its way to the backend.
    #[project = UpstreamBodyProj]
    pub enum UpstreamBody {
        /// No body (GET, HEAD, ...): such a request can be retried on another endpoint.
        Empty,
        /// The client's body, streamed through (never retried: it is consumed once).
        Incoming { #[pin] body: Incoming },
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.project() {
            UpstreamBodyProj::Empty => Poll::Ready(None),
            UpstreamBodyProj::Incoming { body } => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Empty => true,
            UpstreamBody::Incoming { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Empty => SizeHint::with_exact(0),
            UpstreamBody::Incoming { body } => body.size_hint(),
        }
    }
}

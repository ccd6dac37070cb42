//! The one body type, both ways: what the gateway answers with, and what it sends to a
//! backend.
//!
//! A small enum rather than a boxed trait object: a request's body goes to the backend
//! as the very `Incoming` stream hyper gave us, and the backend's body comes back the
//! same way, frame by frame — nothing is buffered except by the response cache, which
//! keeps a copy of the frames it passes on (see [`crate::cache`]).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::cache::CacheCopy;

pin_project_lite::pin_project! {
    /// A body: the gateway's own (errors, cache hits, health, a request without a
    /// body), or an `Incoming` stream passed through.
    #[project = GatewayBodyProj]
    pub enum GatewayBody {
        /// A complete body in memory.
        Full { #[pin] body: Full<Bytes> },
        /// An `Incoming` stream passed through: a client's request body on its way to a
        /// backend, or a backend's response body on its way to the client. `first` is a
        /// frame already taken from it (see [`GatewayBody::streamed_prefetched`]), sent
        /// before the rest.
        Streamed { first: Option<Result<Frame<Bytes>, hyper::Error>>, #[pin] body: Incoming },
        /// A backend's body passed through while `copy` keeps its frames for the response
        /// cache (`None` once the copy is stored or given up).
        Caching { #[pin] body: Incoming, copy: Option<CacheCopy> },
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

    pub fn streamed(body: Incoming) -> Self {
        GatewayBody::Streamed { first: None, body }
    }

    /// A backend's body, with its first frame fetched if it is (nearly) ready.
    ///
    /// hyper's client hands over a response as soon as its head is parsed, and reads the
    /// body only once the body is polled. Sent as is, the head would go out in one write
    /// and the body in another, each after a task wake-up. Polling the first frame once,
    /// yielding once so the connection task can deliver it, and polling again lets the
    /// server write head and first frame together. If it is not there by then, nothing
    /// waits: the body streams as usual. Nothing beyond the first frame is held.
    pub async fn streamed_prefetched(mut body: Incoming) -> Self {
        if body.is_end_stream() {
            return GatewayBody::streamed(body);
        }
        let mut first = poll_once(&mut body).await;
        if first.is_none() {
            tokio::task::yield_now().await;
            first = poll_once(&mut body).await;
        }
        match first {
            Some(Some(frame)) => GatewayBody::Streamed {
                first: Some(frame),
                body,
            },
            // Ended without a frame, or not ready yet.
            _ => GatewayBody::streamed(body),
        }
    }
}

impl std::fmt::Debug for GatewayBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            GatewayBody::Full { .. } => "Full",
            GatewayBody::Streamed { .. } => "Streamed",
            GatewayBody::Caching { .. } => "Caching",
        };
        f.debug_tuple("GatewayBody").field(&kind).finish()
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
            GatewayBodyProj::Streamed { first, body } => match first.take() {
                Some(frame) => Poll::Ready(Some(frame)),
                None => body.poll_frame(cx),
            },
            GatewayBodyProj::Caching { mut body, copy } => {
                let polled = body.as_mut().poll_frame(cx);
                CacheCopy::observe(copy, &polled, body.is_end_stream());
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GatewayBody::Full { body } => body.is_end_stream(),
            GatewayBody::Streamed { first, body } => first.is_none() && body.is_end_stream(),
            GatewayBody::Caching { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            GatewayBody::Full { body } => body.size_hint(),
            GatewayBody::Streamed { first, body } => {
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
            GatewayBody::Caching { body, .. } => body.size_hint(),
        }
    }
}

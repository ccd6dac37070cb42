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
        /// The backend's body, streamed through.
        Upstream { #[pin] body: Incoming },
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
        GatewayBody::Upstream { body }
    }
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
            GatewayBodyProj::Upstream { body } => body.poll_frame(cx),
            GatewayBodyProj::Caching { body } => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GatewayBody::Full { body } => body.is_end_stream(),
            GatewayBody::Upstream { body } => body.is_end_stream(),
            GatewayBody::Caching { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            GatewayBody::Full { body } => body.size_hint(),
            GatewayBody::Upstream { body } => body.size_hint(),
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

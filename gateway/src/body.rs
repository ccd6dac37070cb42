//! The one body type, both ways: what the gateway answers with, and what it sends to a
//! backend.
//!
//! A small enum rather than a boxed trait object: a request's body goes to the backend
//! as the very `Incoming` stream hyper gave us, and the backend's body comes back the
//! same way, frame by frame — nothing is buffered except by the response cache, which
//! keeps a copy of the frames it passes on (see [`crate::cache`]).
//!
//! A request body on its way to a backend is [metered](GatewayBody::metered): it may
//! not pass the API's size limit, and the client may not make the gateway wait too long
//! for it (see [`BodyLimits`]). Either refusal ends the body with a [`BodyError`]
//! (the backend's connection is then reset: it never takes a cut body for a whole
//! one) and is noted in a [`RefusalSlot`] that the upstream call reads, so the client
//! gets 413 or 408 unless the backend has answered already.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::cache::CacheCopy;
use crate::limits::BodyLimits;

/// Why the gateway stopped a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyRefusal {
    /// More bytes than the API accepts.
    #[error("the request body passed its limit of {0} bytes")]
    TooLarge(u64),
    /// The client let the gateway wait too long for the next bytes, or sends too slowly.
    #[error("the request body arrived too slowly")]
    TooSlow,
}

/// The error of a [`GatewayBody`]: hyper's (the peer's stream failed) or the gateway's
/// own refusal.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    #[error(transparent)]
    Refused(BodyRefusal),
}

/// Where a metered body notes its refusal for the upstream call to read: the backend
/// client reports a failed body only as its own error.
pub type RefusalSlot = Arc<OnceLock<BodyRefusal>>;

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
        /// A client's request body on its way to a backend, within `meter`'s limits.
        Metered { #[pin] body: Incoming, meter: Box<Meter> },
    }
}

/// What a metered body has cost so far, against its [`BodyLimits`].
pub struct Meter {
    limits: BodyLimits,
    /// Data bytes received.
    received: u64,
    /// Time spent waiting for the client so far (not counting the current wait).
    waited: Duration,
    /// When the current wait for the client began (`None`: not waiting).
    waiting_since: Option<Instant>,
    /// Fires at the current wait's deadline.
    timer: Option<Pin<Box<Sleep>>>,
    slot: RefusalSlot,
}

impl Meter {
    /// The latest moment the current wait (begun at `since`) may last to: the read
    /// timeout after its start, and no later than the minimum rate allows given what
    /// has arrived (after a grace of one read timeout). `None`: no limit.
    fn deadline(&self, since: Instant) -> Option<Instant> {
        let gap = self.limits.read_timeout?;
        let mut deadline = since + gap;
        if self.limits.min_rate > 0 {
            let allowed =
                gap + Duration::from_secs_f64(self.received as f64 / self.limits.min_rate as f64);
            deadline = deadline.min(since + allowed.saturating_sub(self.waited));
        }
        Some(deadline)
    }

    fn refuse(&mut self, refusal: BodyRefusal) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let _ = self.slot.set(refusal);
        Poll::Ready(Some(Err(BodyError::Refused(refusal))))
    }

    /// Follows one poll of the client's body.
    fn poll(
        &mut self,
        body: Pin<&mut Incoming>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(refusal) = self.slot.get() {
            return Poll::Ready(Some(Err(BodyError::Refused(*refusal))));
        }
        match body.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(since) = self.waiting_since.take() {
                    self.waited += since.elapsed();
                }
                if let Some(data) = frame.data_ref() {
                    self.received += data.len() as u64;
                    if self.received > self.limits.max_bytes {
                        return self.refuse(BodyRefusal::TooLarge(self.limits.max_bytes));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let since = *self.waiting_since.get_or_insert_with(Instant::now);
                let Some(deadline) = self.deadline(since) else {
                    return Poll::Pending;
                };
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return self.refuse(BodyRefusal::TooSlow);
                }
                Poll::Pending
            }
        }
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

    /// A client's request body, streamed to a backend within `limits`; a refusal ends
    /// it with an error and is noted in `slot`.
    pub fn metered(body: Incoming, limits: BodyLimits, slot: RefusalSlot) -> Self {
        GatewayBody::Metered {
            body,
            meter: Box::new(Meter {
                limits,
                received: 0,
                waited: Duration::ZERO,
                waiting_since: None,
                timer: None,
                slot,
            }),
        }
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
            GatewayBody::Metered { .. } => "Metered",
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
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let from_hyper = |polled: Poll<Option<Result<Frame<Bytes>, hyper::Error>>>| {
            polled.map(|frame| frame.map(|f| f.map_err(BodyError::from)))
        };
        match self.project() {
            GatewayBodyProj::Full { body } => body
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(|never| match never {}))),
            GatewayBodyProj::Streamed { first, body } => match first.take() {
                Some(frame) => Poll::Ready(Some(frame.map_err(BodyError::from))),
                None => from_hyper(body.poll_frame(cx)),
            },
            GatewayBodyProj::Caching { mut body, copy } => {
                let polled = body.as_mut().poll_frame(cx);
                CacheCopy::observe(copy, &polled, body.is_end_stream());
                from_hyper(polled)
            }
            GatewayBodyProj::Metered { body, meter } => meter.poll(body, cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GatewayBody::Full { body } => body.is_end_stream(),
            GatewayBody::Streamed { first, body } => first.is_none() && body.is_end_stream(),
            GatewayBody::Caching { body, .. } => body.is_end_stream(),
            GatewayBody::Metered { body, .. } => body.is_end_stream(),
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
            GatewayBody::Metered { body, .. } => body.size_hint(),
        }
    }
}

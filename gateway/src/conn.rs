//! One connection's clock: how long it may sit idle, and how long a request head may
//! take to arrive (see [`crate::limits`]).
//!
//! hyper's own HTTP/1 header timer starts when the connection becomes idle, so it
//! cannot tell a keep-alive connection waiting for its next request (fine for a minute)
//! from a client trickling a request head (slowloris: ten seconds is plenty), and HTTP/2
//! has no idle timer at all. So each connection has an [`Activity`], fed from three
//! places:
//!
//! - its I/O ([`Watched`]): on HTTP/1, the first bytes read while no request is in
//!   flight start a request head;
//! - its service ([`Activity::begin`]): a request whose head has been parsed is in
//!   flight until its response body has been sent or dropped ([`Tracked`]);
//! - and a [`watchdog`] beside the connection, which ends it when it has been idle
//!   (no request in flight) past the HTTP/1 keep-alive or HTTP/2 idle timeout — a
//!   graceful close, GOAWAY on HTTP/2 — or when a request head (or a new connection's
//!   first request) has taken longer than the header read timeout — closed at once.
//!
//! The watchdog wakes at the next deadline, and at least once per shortest timeout
//! while requests are in flight, so a busy connection costs one timer wake-up per
//! timeout period, not one per request.
//!
//! # Shared state
//!
//! An `Arc<Activity>` per connection, shared by its I/O wrapper, its requests' bodies
//! and its watchdog: atomics only. HTTP/1 drives reads and bodies from the connection's
//! one task; HTTP/2 requests end on their own tasks, which only ever decrement the
//! in-flight count and move the idle mark, and the watchdog reads both again before it
//! acts.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// What a connection is doing, in atomics. See the module docs.
#[derive(Debug)]
pub struct Activity {
    started: Instant,
    /// Requests whose head has been parsed and whose response is not done.
    in_flight: AtomicU32,
    /// Requests seen so far (0: the connection's first is still awaited).
    requests: AtomicU64,
    /// HTTP/1: bytes of a request head have arrived since the connection went idle.
    head: AtomicBool,
    /// Milliseconds after `started` when the connection last went idle, or when the
    /// current request head began.
    mark_ms: AtomicU64,
    /// The connection speaks HTTP/2 (by ALPN, or seen in a request).
    h2: AtomicBool,
}

/// A connection's timeouts (`None`: no limit).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header_read: Option<Duration>,
    pub http1_idle: Option<Duration>,
    pub http2_idle: Option<Duration>,
}

impl Timeouts {
    fn shortest(&self) -> Option<Duration> {
        [self.header_read, self.http1_idle, self.http2_idle]
            .into_iter()
            .flatten()
            .min()
    }
}

/// Why the [`watchdog`] ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Idle past its keep-alive or idle timeout: close gracefully.
    Idle,
    /// A request head, or the first request, took too long: close at once.
    SlowHead,
}

impl Activity {
    /// A connection just accepted; `h2` if ALPN chose HTTP/2.
    pub fn new(h2: bool) -> Arc<Activity> {
        Arc::new(Activity {
            started: Instant::now(),
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            head: AtomicBool::new(false),
            mark_ms: AtomicU64::new(0),
            h2: AtomicBool::new(h2),
        })
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn mark(&self) -> Instant {
        self.started + Duration::from_millis(self.mark_ms.load(Ordering::Acquire))
    }

    /// A request of `version` has its head parsed: in flight until the returned guard
    /// is dropped (with its response body, see [`Tracked`]).
    pub fn begin(self: &Arc<Self>, version: http::Version) -> InFlight {
        if version == http::Version::HTTP_2 {
            self.h2.store(true, Ordering::Relaxed);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head.store(false, Ordering::Release);
        InFlight(self.clone())
    }

    /// Bytes were read from the client. (A connection's first head counts from the
    /// accept, not from its first byte.)
    fn read(&self) {
        if !self.h2.load(Ordering::Relaxed)
            && self.requests.load(Ordering::Relaxed) > 0
            && self.in_flight.load(Ordering::Acquire) == 0
            && !self.head.load(Ordering::Acquire)
        {
            self.mark_ms.store(self.now_ms(), Ordering::Release);
            self.head.store(true, Ordering::Release);
        }
    }

    /// What the watchdog should do at `now`: end the connection, or look again at the
    /// returned instant.
    fn check(&self, now: Instant, t: &Timeouts) -> Result<Option<Instant>, Expired> {
        let recheck = t.shortest().map(|d| now + d);
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Ok(recheck);
        }
        let mark = self.mark();
        let first = self.requests.load(Ordering::Relaxed) == 0;
        let (limit, expired) =
            if self.head.load(Ordering::Acquire) || first && t.header_read.is_some() {
                (t.header_read, Expired::SlowHead)
            } else if self.h2.load(Ordering::Relaxed) {
                (t.http2_idle, Expired::Idle)
            } else {
                (t.http1_idle, Expired::Idle)
            };
        match limit {
            Some(limit) if now >= mark + limit => {
                // Look again: a request may have begun since the loads above.
                if self.in_flight.load(Ordering::Acquire) > 0 || self.mark() != mark {
                    Ok(recheck)
                } else {
                    Err(expired)
                }
            }
            Some(limit) => Ok(Some(match recheck {
                Some(recheck) => recheck.min(mark + limit),
                None => mark + limit,
            })),
            None => Ok(recheck),
        }
    }
}

/// A request in flight on its connection; dropping it ends the request.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.mark_ms.store(activity.now_ms(), Ordering::Release);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Resolves when the connection must end, and why. Never resolves if no timeout is
/// set.
pub async fn watchdog(activity: &Activity, timeouts: Timeouts) -> Expired {
    loop {
        match activity.check(Instant::now(), &timeouts) {
            Err(expired) => return expired,
            Ok(Some(next)) => tokio::time::sleep_until(next).await,
            Ok(None) => std::future::pending::<()>().await,
        }
    }
}

pin_project_lite::pin_project! {
    /// A connection's stream, telling its [`Activity`] when bytes arrive.
    pub struct Watched<S> {
        #[pin]
        stream: S,
        activity: Arc<Activity>,
    }
}

impl<S> Watched<S> {
    pub fn new(stream: S, activity: Arc<Activity>) -> Self {
        Watched { stream, activity }
    }
}

impl<S: AsyncRead> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.stream.poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.read();
        }
        polled
    }
}

impl<S: AsyncWrite> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().stream.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().stream.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in flight until it is sent or dropped.
    pub struct Tracked<B> {
        #[pin]
        body: B,
        request: InFlight,
    }
}

impl<B> Tracked<B> {
    pub fn new(body: B, request: InFlight) -> Self {
        Tracked { body, request }
    }
}

impl<B: Body<Data = Bytes>> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        header_read: Some(Duration::from_secs(10)),
        http1_idle: Some(Duration::from_secs(60)),
        http2_idle: Some(Duration::from_secs(30)),
    };

    fn at(activity: &Activity, seconds: u64) -> Instant {
        activity.started + Duration::from_secs(seconds)
    }

    #[test]
    fn the_first_request_must_come_within_the_header_timeout() {
        let a = Activity::new(false);
        assert_eq!(a.check(at(&a, 9), &T), Ok(Some(at(&a, 10))));
        a.read();
        assert_eq!(
            a.mark(),
            a.started,
            "counted from the accept, not the first byte"
        );
        assert_eq!(a.check(at(&a, 10), &T), Err(Expired::SlowHead));
    }

    #[test]
    fn idle_keep_alive_is_a_minute_and_a_head_ten_seconds() {
        let a = Activity::new(false);
        let request = a.begin(http::Version::HTTP_11);
        assert_eq!(
            a.check(at(&a, 100), &T),
            Ok(Some(at(&a, 110))),
            "busy: never expires"
        );
        drop(request);
        let idle = a.mark();
        assert_eq!(
            a.check(idle + Duration::from_secs(59), &T).map(|_| ()),
            Ok(())
        );
        assert_eq!(
            a.check(idle + Duration::from_secs(60), &T),
            Err(Expired::Idle)
        );
        // Bytes of a new head: ten seconds from them.
        a.read();
        let head = a.mark();
        assert_eq!(
            a.check(head + Duration::from_secs(10), &T),
            Err(Expired::SlowHead)
        );
        let _second = a.begin(http::Version::HTTP_11);
        assert!(a.check(head + Duration::from_secs(100), &T).is_ok());
    }

    #[test]
    fn http2_reads_do_not_start_heads_and_idle_is_its_own() {
        let a = Activity::new(true);
        drop(a.begin(http::Version::HTTP_2));
        a.read();
        let idle = a.mark();
        assert!(a.check(idle + Duration::from_secs(29), &T).is_ok());
        assert_eq!(
            a.check(idle + Duration::from_secs(30), &T),
            Err(Expired::Idle)
        );
    }

    #[test]
    fn no_timeouts_never_expire() {
        let none = Timeouts {
            header_read: None,
            http1_idle: None,
            http2_idle: None,
        };
        let a = Activity::new(false);
        a.read();
        assert_eq!(a.check(at(&a, 1_000_000), &none), Ok(None));
    }
}

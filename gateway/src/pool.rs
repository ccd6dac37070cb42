//! The gateway's own pool of backend connections, driven from each request's task.
//!
//! hyper-util's legacy client hands every request to a pool task and back through
//! channels, and spawns a future per request to return the connection to its pool;
//! here a request takes a connection's [`http1::SendRequest`] from the pool, writes its
//! request on it and puts it straight back, all on its own task. The connection's own task
//! (one per connection, spawned when it is opened) does the I/O.
//!
//! - **Keys**: one queue of connections per origin (`http` or `https`, and the
//!   authority).
//! - **HTTP/1**: a connection carries one exchange at a time. It goes back to the end of
//!   its queue as soon as its request is handed over; hyper reports it ready again
//!   ([`http1::SendRequest::is_ready`]) once the response body has been read to its
//!   end. A checkout walks the queue from the front (the connections returned longest ago,
//!   the likeliest to be done), takes the first ready one, drops closed or expired ones,
//!   and leaves busy ones in place; none ready → a new connection. So the pool grows to
//!   the concurrency the backend is asked for and no further, up to `max_idle` kept per
//!   origin (a connection past that is closed once its exchange ends).
//! - **HTTP/2** (HTTPS backends that choose `h2` by ALPN): one connection per origin,
//!   shared by every request (its sender is cloned), replaced once it closes.
//! - **A stale connection** (the backend closed it while it sat idle): hyper gives the
//!   request back unsent ([`hyper::client::conn::TrySendError::take_message`]), and the
//!   checkout goes on with the next connection or a new one. Nothing reached the backend, so this is not a
//!   failure of the call.
//! - **Connecting** has its own timeout; a failure to connect (TCP, TLS, or the HTTP/2
//!   preface) is [`PoolError::Connect`], the only error after which the caller may try
//!   another endpoint even for a request with a body (nothing was sent).
//!
//! # Shared state
//!
//! One `std::sync::Mutex` over the map of queues: held only to pop and push a few
//! senders (never across an `.await`), so it is cheap next to the exchange itself, and
//! simpler than sharding for the handful of worker threads a gateway runs.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::uri::{Authority, Scheme};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use crate::body::GatewayBody;

/// Why a request could not be exchanged with a backend.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// No connection could be opened: nothing was sent.
    #[error("cannot connect to {origin}: {reason}")]
    Connect { origin: String, reason: String },
    /// The exchange failed once the request was on its way.
    #[error(transparent)]
    Exchange(#[from] hyper::Error),
}

impl PoolError {
    /// Nothing reached the backend: another endpoint may be tried.
    pub fn is_connect(&self) -> bool {
        matches!(self, PoolError::Connect { .. })
    }
}

/// Settings of a [`ConnectionPool`].
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// How long to wait for a TCP connection and its TLS handshake.
    pub connect_timeout: Duration,
    /// How long an unused connection is kept.
    pub idle_timeout: Duration,
    /// How many connections are kept per origin.
    pub max_idle: usize,
}

/// A sender on one backend connection.
enum Sender {
    Http1(http1::SendRequest<GatewayBody>),
    Http2(http2::SendRequest<GatewayBody>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(s) => s.is_closed(),
            Sender::Http2(s) => s.is_closed(),
        }
    }
}

/// A pooled connection and when it was last handed a request.
struct Pooled {
    sender: Sender,
    used: Instant,
}

/// Connection queues by origin (`true` for HTTPS).
type Queues = HashMap<(bool, Authority), VecDeque<Pooled>>;

/// Backend connections, pooled per origin (see the module docs).
pub struct ConnectionPool {
    queues: Mutex<Queues>,
    tls: tokio_rustls::TlsConnector,
    settings: PoolSettings,
}

impl ConnectionPool {
    /// A pool whose HTTPS connections use `tls` (its ALPN list is set here: `h2`, then
    /// `http/1.1`).
    pub fn new(mut tls: rustls::ClientConfig, settings: PoolSettings) -> ConnectionPool {
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        ConnectionPool {
            queues: Mutex::default(),
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            settings,
        }
    }

    /// Sends `request` (its URI absolute: scheme, authority, path and query) to its
    /// origin on a pooled connection or a new one, and returns the response once its
    /// headers have arrived.
    pub async fn send(
        &self,
        request: Request<GatewayBody>,
    ) -> Result<Response<Incoming>, PoolError> {
        let https = request.uri().scheme() == Some(&Scheme::HTTPS);
        let Some(authority) = request.uri().authority().cloned() else {
            return Err(PoolError::Connect {
                origin: request.uri().to_string(),
                reason: "the URL has no host".into(),
            });
        };
        let key = (https, authority);
        let mut request = request;
        // Pooled connections first; one the backend closed meanwhile gives the request
        // back unsent. The number of tries is bounded by the queue's length.
        while let Some(sender) = self.checkout(&key) {
            match self.exchange(&key, sender, request).await {
                Ok(response) => return Ok(response),
                Err(Exchange::Unsent(back)) => request = *back,
                Err(Exchange::Failed(error)) => return Err(PoolError::Exchange(error)),
            }
        }
        let sender = self.connect(&key).await?;
        match self.exchange(&key, sender, request).await {
            Ok(response) => Ok(response),
            // A new connection that closed before taking its request (a backend that
            // accepts and drops): nothing was sent.
            Err(Exchange::Unsent(_)) => Err(PoolError::Connect {
                origin: origin(&key),
                reason: "the connection closed before the request was sent".into(),
            }),
            Err(Exchange::Failed(error)) => Err(PoolError::Exchange(error)),
        }
    }

    /// Hands `request` to `sender` and puts the sender back in its queue at once (an
    /// HTTP/1 connection is skipped by checkouts until its exchange is over).
    async fn exchange(
        &self,
        key: &(bool, Authority),
        sender: Sender,
        request: Request<GatewayBody>,
    ) -> Result<Response<Incoming>, Exchange> {
        let result = match sender {
            Sender::Http1(mut sender) => {
                let answer = sender.try_send_request(origin_form(request));
                self.put_back(key, Sender::Http1(sender));
                answer.await
            }
            Sender::Http2(mut sender) => {
                let mut request = request;
                *request.version_mut() = http::Version::HTTP_2;
                let answer = sender.try_send_request(request);
                self.put_back(key, Sender::Http2(sender));
                answer.await
            }
        };
        result.map_err(|mut error| match error.take_message() {
            Some(request) => Exchange::Unsent(Box::new(absolute_form(request, key))),
            None => Exchange::Failed(error.into_error()),
        })
    }

    /// A ready connection to `key`'s origin, if the pool has one (see the module docs).
    fn checkout(&self, key: &(bool, Authority)) -> Option<Sender> {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        let queue = queues.get_mut(key)?;
        let now = Instant::now();
        for _ in 0..queue.len() {
            let pooled = queue.pop_front()?;
            if pooled.sender.is_closed()
                || now.saturating_duration_since(pooled.used) > self.settings.idle_timeout
            {
                continue;
            }
            match &pooled.sender {
                Sender::Http2(shared) => {
                    let clone = Sender::Http2(shared.clone());
                    queue.push_front(pooled);
                    return Some(clone);
                }
                Sender::Http1(sender) if sender.is_ready() => return Some(pooled.sender),
                Sender::Http1(_) => queue.push_back(pooled),
            }
        }
        None
    }

    /// Returns a sender to the end of its queue. An HTTP/2 sender is a clone of the one
    /// that stays queued, so it is simply dropped; an HTTP/1 one past `max_idle` is
    /// dropped too (hyper closes its connection once the exchange ends).
    fn put_back(&self, key: &(bool, Authority), sender: Sender) {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        let queue = queues.entry(key.clone()).or_default();
        match sender {
            Sender::Http2(_) if queue.iter().any(|p| matches!(p.sender, Sender::Http2(_))) => {}
            _ if queue.len() >= self.settings.max_idle => {}
            sender => queue.push_back(Pooled {
                sender,
                used: Instant::now(),
            }),
        }
    }

    /// Opens a connection to `key`'s origin: TCP (no Nagle), TLS for HTTPS with ALPN,
    /// then the HTTP/1 or HTTP/2 handshake; the connection's task is spawned here.
    async fn connect(&self, key: &(bool, Authority)) -> Result<Sender, PoolError> {
        let (https, authority) = key;
        let failed = |reason: String| PoolError::Connect {
            origin: origin(key),
            reason,
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority
            .port_u16()
            .unwrap_or(if *https { 443 } else { 80 });
        let timeout = self.settings.connect_timeout;
        let tcp = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| failed(format!("no connection within {} ms", timeout.as_millis())))?
            .map_err(|e| failed(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        if !*https {
            return http1_handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| failed(e.to_string()));
        }
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| failed(format!("invalid server name: {e}")))?;
        let tls = tokio::time::timeout(timeout, self.tls.connect(name, tcp))
            .await
            .map_err(|_| {
                failed(format!(
                    "no TLS handshake within {} ms",
                    timeout.as_millis()
                ))
            })?
            .map_err(|e| failed(format!("TLS: {e}")))?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        if h2 {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .handshake(io)
                .await
                .map_err(|e| failed(format!("HTTP/2: {e}")))?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "backend HTTP/2 connection ended");
                }
            });
            Ok(Sender::Http2(sender))
        } else {
            http1_handshake(io).await.map_err(|e| failed(e.to_string()))
        }
    }
}

/// What became of an exchange that gave no response.
enum Exchange {
    /// The connection was closed before the request was written: it comes back whole.
    Unsent(Box<Request<GatewayBody>>),
    /// The request was (at least partly) sent.
    Failed(hyper::Error),
}

async fn http1_handshake<T>(io: TokioIo<T>) -> Result<Sender, hyper::Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = http1::handshake(io).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "backend HTTP/1 connection ended");
        }
    });
    Ok(Sender::Http1(sender))
}

fn origin((https, authority): &(bool, Authority)) -> String {
    format!("{}://{authority}", if *https { "https" } else { "http" })
}

/// An HTTP/1 request line carries the path and query only; the authority goes in
/// `Host`.
fn origin_form(mut request: Request<GatewayBody>) -> Request<GatewayBody> {
    let uri = request.uri().clone();
    if let Some(authority) = uri.authority()
        && let Ok(host) = http::HeaderValue::from_str(authority.as_str())
    {
        request.headers_mut().insert(http::header::HOST, host);
    }
    if let Some(path) = uri.path_and_query() {
        *request.uri_mut() = http::Uri::from(path.clone());
    }
    request
}

/// The absolute URI back on a request returned unsent, for its next connection.
fn absolute_form(
    mut request: Request<GatewayBody>,
    key: &(bool, Authority),
) -> Request<GatewayBody> {
    if request.uri().authority().is_some() {
        return request;
    }
    let mut parts = request.uri().clone().into_parts();
    parts.scheme = Some(if key.0 { Scheme::HTTPS } else { Scheme::HTTP });
    parts.authority = Some(key.1.clone());
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    request.headers_mut().remove(http::header::HOST);
    request
}

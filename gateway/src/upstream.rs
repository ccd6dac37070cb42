//! The upstream steps: choosing a backend endpoint, preparing the request for it,
//! forwarding the call (the phases [`upstream_peer`], [`upstream_request_filter`] and
//! [`forward`] of [`crate::proxy`] run on what this module provides).
//!
//! - **Connections** are pooled and kept alive by the gateway's own
//!   [`ConnectionPool`] (one for the whole gateway, keyed by scheme + host + port),
//!   driven from each request's task, over plain HTTP or HTTPS (rustls with the ring
//!   provider and the system's root certificates; HTTP/2 when the backend offers it by
//!   ALPN).
//! - **Which endpoints** ([`upstream_peer`]): production keys go to the production
//!   group, sandbox keys to the sandbox group (an API without one refuses those keys
//!   with 401 900901 when they authenticate). PROTOTYPED APIs and resources without
//!   authentication use the production group, else the sandbox one; an API with
//!   neither answers 503 / 101503.
//! - **Load balancing** ([`Upstream::peer`]): a LOAD_BALANCE group is walked
//!   round-robin, a FAILOVER group in its order. Endpoints that just failed to connect
//!   are passed over for [`DOWN_FOR`] (passive health checking) unless every endpoint is
//!   down. The result is a [`Peer`]: the group and the order to try it in.
//! - **Headers** ([`upstream_request_filter`], [`prepare_request_headers`]): hop-by-hop
//!   headers (`Connection` and those it names, `Keep-Alive`, `TE`, `Transfer-Encoding`,
//!   `Upgrade`, `Proxy-*`, `Trailer`) are removed both ways. `Authorization` is not
//!   forwarded (the backend trusts the gateway, as with WSO2's default).
//!   `X-Forwarded-*` come from the connection: `-For` is the TCP peer's address,
//!   `-Proto` the listener's scheme, `-Host` the authority the request was sent to
//!   (HTTP/2 `:authority` or `Host`, if it is a well-formed host and port). A client's
//!   own `X-Forwarded-*`, `Forwarded` and `X-Real-IP` are dropped, unless its peer is
//!   one of `--trusted-proxies`: then its `X-Forwarded-For` chain is kept with the peer
//!   appended, and its `-Proto`, `-Host` and `Forwarded` pass on. `Host` becomes the
//!   backend's; `traceparent`/`tracestate` pass on unchanged, or name the gateway's span
//!   when traces are exported.
//! - **Retries** ([`Upstream::forward`]): a call without a request body moves on to the
//!   next endpoint when the connection fails (nothing reached the backend). A call with
//!   a body streams it to the first endpoint tried and is never retried: the body is
//!   consumed once, never buffered. A timeout is never retried either (the backend may
//!   be acting on the call).
//! - **Timeout**: the API's `timeout_ms` (default 30 s) bounds the wait for the
//!   response headers of each attempt; 504 / 101504 when it passes. 503 / 101503 when no
//!   endpoint can be reached. Both say nothing of the backend: the endpoint and the
//!   error chain are in the warning logged and on the upstream span
//!   (`gatehouse.upstream_error`).
//! - **Bodies** stream both ways, frame by frame ([`GatewayBody`]); a request body is
//!   [metered](GatewayBody::metered): past the API's size limit, or too slow, it ends
//!   with an error (the backend's request is reset) and the client gets 413 or 408 —
//!   unless the backend has already answered, in which case that answer stands.
//!
//! [`upstream_peer`]: crate::proxy::Gateway::upstream_peer
//! [`upstream_request_filter`]: crate::proxy::Gateway::upstream_request_filter
//! [`forward`]: crate::proxy::Gateway::forward
//!
//! # Shared state
//!
//! The client (its pool is internally synchronised) and the endpoint health map, a
//! `RwLock<HashMap<url, down-until>>`: read on each call, written only when an endpoint
//! fails or recovers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri, Version, request};
use http_body::Body as _;
use hyper::body::Incoming;

use crate::body::{BodyRefusal, GatewayBody, RefusalSlot};
use crate::errors::GatewayError;
use crate::limits::BodyLimits;
use crate::metrics::Metrics;
use crate::pool::{ConnectionPool, PoolSettings};
use crate::table::{Endpoints, Target};

/// How long an endpoint that failed to connect is passed over.
pub const DOWN_FOR: Duration = Duration::from_secs(5);

/// How long to wait for a TCP connection to a backend.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How the client called the gateway, for the `X-Forwarded-*` headers.
#[derive(Debug, Clone, Copy)]
pub struct Forwarded<'a> {
    /// The TCP peer.
    pub client_ip: IpAddr,
    /// `http` or `https`.
    pub proto: &'static str,
    /// The authority the request was sent to (HTTP/2 `:authority` or `Host`), if well
    /// formed.
    pub host: Option<&'a str>,
    /// The peer is one of `--trusted-proxies`: its `X-Forwarded-*` are believed.
    pub trusted_peer: bool,
}

/// The peer chosen for one call: an endpoint group, and the order in which to try its
/// endpoints (the first that answers serves the call).
#[derive(Debug, Clone)]
pub struct Peer {
    pub endpoints: Arc<Endpoints>,
    /// Indexes into `endpoints.targets`.
    pub order: Vec<usize>,
}

/// The upstream client and endpoint health.
pub struct Upstream {
    pool: ConnectionPool,
    down_until: RwLock<HashMap<Arc<str>, Instant>>,
    metrics: Arc<Metrics>,
}

impl Upstream {
    /// A client with pooled keep-alive connections.
    pub fn new(metrics: Arc<Metrics>) -> anyhow::Result<Upstream> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::debug!(%error, "a system root certificate could not be loaded");
        }
        let (added, _ignored) = roots.add_parsable_certificates(native.certs);
        tracing::debug!(added, "system root certificates loaded for HTTPS backends");
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let pool = ConnectionPool::new(
            tls,
            PoolSettings {
                connect_timeout: CONNECT_TIMEOUT,
                idle_timeout: Duration::from_secs(90),
                max_idle: 1024,
            },
        );
        Ok(Upstream {
            pool,
            down_until: RwLock::default(),
            metrics,
        })
    }

    fn is_down(&self, url: &str, now: Instant) -> bool {
        let map = self.down_until.read().unwrap_or_else(|e| e.into_inner());
        map.get(url).is_some_and(|until| *until > now)
    }

    fn mark_down(&self, url: &Arc<str>) {
        self.down_until
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(url.clone(), Instant::now() + DOWN_FOR);
    }

    fn mark_up(&self, url: &str) {
        let known = {
            let map = self.down_until.read().unwrap_or_else(|e| e.into_inner());
            map.contains_key(url)
        };
        if known {
            self.down_until
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(url);
        }
    }

    /// The peer for one call to `endpoints`: the group, in [`order`](Self::order).
    pub fn peer(&self, endpoints: &Arc<Endpoints>) -> Peer {
        Peer {
            order: self.order(endpoints),
            endpoints: endpoints.clone(),
        }
    }

    /// The order in which to try the group's endpoints for one call: round-robin or
    /// failover order, endpoints marked down last.
    pub fn order(&self, endpoints: &Endpoints) -> Vec<usize> {
        let n = endpoints.targets.len();
        let start = if endpoints.failover || n == 1 {
            0
        } else {
            endpoints.next.fetch_add(1, Ordering::Relaxed) % n
        };
        let now = Instant::now();
        let mut up = Vec::with_capacity(n);
        let mut down = Vec::new();
        for i in (0..n).map(|k| (start + k) % n) {
            if self.is_down(&endpoints.targets[i].url, now) {
                down.push(i);
            } else {
                up.push(i);
            }
        }
        up.extend(down);
        up
    }

    /// Forwards a call to `peer` (its headers already prepared, see
    /// [`prepare_request_headers`]) and returns the backend's response (headers
    /// received; the body streams on). `resource_path` follows the endpoint's own path;
    /// the request body streams within `limits`.
    pub async fn forward(
        &self,
        peer: &Peer,
        timeout: Duration,
        parts: request::Parts,
        body: Incoming,
        resource_path: &str,
        limits: BodyLimits,
    ) -> Result<Response<Incoming>, GatewayError> {
        let failures = &self.metrics.upstream_failures;
        let mut headers = parts.headers;
        let query = parts.uri.query();
        let retryable = body.is_end_stream();
        let refusal = RefusalSlot::default();
        let mut body = Some(if retryable {
            GatewayBody::empty()
        } else {
            GatewayBody::metered(body, limits, refusal.clone())
        });
        let attempts = if retryable { peer.order.len() } else { 1 };
        for (attempt, &index) in peer.order.iter().take(attempts).enumerate() {
            let Some(attempt_body) = body.take() else {
                break;
            };
            if retryable {
                body = Some(GatewayBody::empty());
            }
            // The last attempt takes the headers; earlier ones need a copy.
            let attempt_headers = if attempt + 1 == attempts {
                std::mem::take(&mut headers)
            } else {
                headers.clone()
            };
            let target = &peer.endpoints.targets[index];
            let uri = upstream_uri(target, resource_path, query).map_err(|e| {
                backend_failed(&target.url, &format!("cannot build the backend URL: {e}"));
                GatewayError::backend_unreachable()
            })?;
            let mut request = Request::new(attempt_body);
            *request.method_mut() = parts.method.clone();
            *request.uri_mut() = uri;
            *request.version_mut() = Version::HTTP_11;
            *request.headers_mut() = attempt_headers;
            match tokio::time::timeout(timeout, self.pool.send(request)).await {
                Ok(Ok(mut response)) => {
                    self.mark_up(&target.url);
                    strip_hop_by_hop(response.headers_mut());
                    return Ok(response);
                }
                Ok(Err(error)) => {
                    // The gateway itself cut the request body off: the client's fault,
                    // not the backend's.
                    match refusal.get() {
                        Some(BodyRefusal::TooLarge(limit)) => {
                            return Err(GatewayError::request_too_large(*limit));
                        }
                        Some(BodyRefusal::TooSlow) => return Err(GatewayError::request_timeout()),
                        None => {}
                    }
                    failures.fetch_add(1, Ordering::Relaxed);
                    backend_failed(&target.url, &error_chain(&error));
                    if error.is_connect() {
                        self.mark_down(&target.url);
                        continue;
                    }
                    return Err(GatewayError::backend_unreachable());
                }
                Err(_elapsed) => {
                    failures.fetch_add(1, Ordering::Relaxed);
                    backend_failed(
                        &target.url,
                        &format!("no answer within {} ms", timeout.as_millis()),
                    );
                    return Err(GatewayError::backend_timeout());
                }
            }
        }
        Err(GatewayError::backend_unreachable())
    }
}

/// Logs a failed backend call and records it on the current (upstream) span: the
/// details the client's 503 / 504 leaves out.
fn backend_failed(endpoint: &str, error: &str) {
    tracing::warn!(endpoint, error, "backend call failed");
    let span = tracing::Span::current();
    span.record("server.address", endpoint);
    span.record("gatehouse.upstream_error", error);
    span.record("otel.status_code", "ERROR");
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `scheme://authority/<base path><resource path>?<query>`.
pub fn upstream_uri(
    target: &Target,
    resource_path: &str,
    query: Option<&str>,
) -> Result<Uri, http::Error> {
    let mut path = String::with_capacity(
        target.base_path.len() + resource_path.len() + query.map_or(0, |q| q.len() + 1) + 1,
    );
    path.push_str(&target.base_path);
    path.push_str(resource_path);
    if path.is_empty() {
        path.push('/');
    }
    if let Some(query) = query {
        path.push('?');
        path.push_str(query);
    }
    Uri::builder()
        .scheme(target.scheme.clone())
        .authority(target.authority.clone())
        .path_and_query(PathAndQuery::try_from(path)?)
        .build()
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes hop-by-hop headers, including those named by `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(connection) = headers.get(header::CONNECTION).cloned()
        && let Ok(names) = connection.to_str()
    {
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                headers.remove(name);
            }
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The request headers as the backend gets them (see the module docs).
pub fn prepare_request_headers(headers: &mut HeaderMap, forwarded: Forwarded<'_>) {
    const XFF: &str = "x-forwarded-for";
    const PROTO: &str = "x-forwarded-proto";
    const HOST: &str = "x-forwarded-host";
    strip_hop_by_hop(headers);
    headers.remove(header::AUTHORIZATION);
    headers.remove(header::HOST);
    let ip = forwarded.client_ip.to_string();
    let chain: Vec<&str> = if forwarded.trusted_peer {
        headers
            .get_all(XFF)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect()
    } else {
        Vec::new()
    };
    let xff = if chain.is_empty() {
        ip
    } else {
        format!("{}, {ip}", chain.join(", "))
    };
    match HeaderValue::from_str(&xff) {
        Ok(value) => {
            headers.insert(XFF, value);
        }
        Err(_) => {
            headers.remove(XFF);
        }
    }
    if !forwarded.trusted_peer {
        for name in [PROTO, HOST, "forwarded", "x-real-ip"] {
            headers.remove(name);
        }
    }
    if !headers.contains_key(PROTO) {
        headers.insert(PROTO, HeaderValue::from_static(forwarded.proto));
    }
    if !headers.contains_key(HOST)
        && let Some(host) = forwarded.host
        && let Ok(value) = HeaderValue::from_str(host)
    {
        headers.insert(HOST, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_stripped_and_forwarded_headers_set() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        h.insert(header::HOST, HeaderValue::from_static("gw:8243"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        );
        prepare_request_headers(
            &mut h,
            Forwarded {
                client_ip: "127.0.0.1".parse().unwrap(),
                proto: "https",
                host: Some("gw:8243"),
                trusted_peer: true,
            },
        );
        for gone in [
            "connection",
            "x-secret",
            "keep-alive",
            "transfer-encoding",
            "upgrade",
            "authorization",
            "host",
        ] {
            assert!(!h.contains_key(gone), "{gone} should be stripped");
        }
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "gw:8243");
        assert!(h.contains_key("traceparent"));
    }

    #[test]
    fn an_untrusted_peer_cannot_forge_forwarded_headers() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=10.0.0.1;host=evil.example"),
            ("x-real-ip", "10.0.0.1"),
        ] {
            h.append(name, HeaderValue::from_static(value));
        }
        let mut trusted = h.clone();
        prepare_request_headers(
            &mut h,
            Forwarded {
                client_ip: "192.0.2.9".parse().unwrap(),
                proto: "http",
                host: Some("gw:8280"),
                trusted_peer: false,
            },
        );
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "192.0.2.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "gw:8280");
        assert!(!h.contains_key("forwarded") && !h.contains_key("x-real-ip"));
        // From a trusted proxy, the chain and its view of the call are kept.
        prepare_request_headers(
            &mut trusted,
            Forwarded {
                client_ip: "192.0.2.9".parse().unwrap(),
                proto: "http",
                host: Some("gw:8280"),
                trusted_peer: true,
            },
        );
        assert_eq!(trusted["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 192.0.2.9");
        assert_eq!(trusted["x-forwarded-proto"], "https");
        assert_eq!(trusted["x-forwarded-host"], "evil.example");
        assert!(trusted.contains_key("forwarded"));
    }

    #[test]
    fn upstream_uris_join_base_path_resource_and_query() {
        let t = |url: &str| {
            let uri: Uri = url.parse().unwrap();
            Target {
                url: url.into(),
                scheme: uri.scheme().unwrap().clone(),
                authority: uri.authority().unwrap().clone(),
                base_path: uri.path().trim_end_matches('/').to_string(),
            }
        };
        assert_eq!(
            upstream_uri(&t("http://h:8000"), "/users/1", Some("a=b"))
                .unwrap()
                .to_string(),
            "http://h:8000/users/1?a=b"
        );
        assert_eq!(
            upstream_uri(&t("https://h/api/"), "/users", None)
                .unwrap()
                .to_string(),
            "https://h/api/users"
        );
        assert_eq!(
            upstream_uri(&t("http://h:8000"), "", None)
                .unwrap()
                .to_string(),
            "http://h:8000/"
        );
    }
}

//! The life of a request, as named phases (the way pingora's `ProxyHttp` names them).
//!
//! [`Gateway::handle`] runs, in this order:
//!
//! 1. [`own_endpoints`](Gateway::own_endpoints) — `/healthz`, `/readyz`, `/metrics`.
//!
//! Then the request head ([`request_head`](Gateway::request_head)), synchronous, on the
//! request's `http::request::Parts` (never its body), each phase after route matching
//! given the matched [`Route`]:
//!
//! 2. [`ready`](Gateway::ready) — no configuration loaded yet: 503 101503 with
//!    `Retry-After: 1`.
//! 3. [`normalize_path`](Gateway::normalize_path) — the one normal form of the path
//!    (see [`crate::paths`]): `//` merged and encoded unreserved characters decoded;
//!    400 for `%2F`, `%5C`, `\`, `;` or `%3B` path parameters, `.`/`..` segments (also
//!    encoded), encoded control characters and broken `%` escapes. Every later phase,
//!    and the backend, get the normalised path: the path matched is the path forwarded.
//! 4. [`route_match`](Gateway::route_match) — context (longest wins), version or the
//!    default version, resource template and method: 404 / 405.
//! 5. [`request_limits`](Gateway::request_limits) — a `Content-Length` over the API's
//!    body limit: 413 before anything else is spent on the call; more header fields than
//!    `--max-headers`: 431.
//! 6. [`api_state`](Gateway::api_state) — BLOCKED answers 503 700700; PROTOTYPED APIs
//!    and resources without authentication need no token ([`Security`]).
//! 7. [`cors_preflight`](Gateway::cors_preflight) — for APIs with CORS, answers
//!    preflights (200 with the `Access-Control-*` headers, 403 for an origin it does not
//!    allow) and says which origin the response may name; a preflight to an API without
//!    CORS is 405.
//! 8. [`authenticate`](Gateway::authenticate) — Bearer JWT (see [`crate::auth`]): 401
//!    900902 / 900901; the key type must have endpoints (401 900901).
//! 9. [`subscription`](Gateway::subscription) — the token's application is subscribed
//!    and not blocked: 403 900908 / 401 900907.
//! 10. [`scopes`](Gateway::scopes) — one of the resource's scopes, granted to the
//!     application on this API: 403 900910.
//! 11. [`throttle`](Gateway::throttle) — subscription, application, API, resource tiers:
//!     429 900804 / 900803 / 900800 / 900802 (see [`crate::throttle`]).
//! 12. [`response_cache`](Gateway::response_cache) — a fresh cached answer, if the API
//!     caches (see [`crate::cache`]).
//! 13. [`upstream_peer`](Gateway::upstream_peer) — the endpoint group of the key type
//!     and the order to try its endpoints in: 503 101503 when the API has none.
//!
//! The head ends in a [`Decision`]: an answer (a preflight, a cache hit) or a call to
//! [`Forward`]. Then the upstream ([`upstream`](Gateway::upstream)), asynchronous, with
//! the request body (see [`crate::upstream`]):
//!
//! 14. [`upstream_request_filter`](Gateway::upstream_request_filter) — the headers the
//!     backend gets (`X-Forwarded-*` from the connection).
//! 15. [`forward`](Gateway::forward) — the backend call, with the API's timeout and
//!     retries: 503 101503 / 504 101504 (generic: the details are logged and on the
//!     upstream span); the request body streams within the API's size limit and the
//!     body timeouts: 413 / 408 (see [`crate::body`]).
//! 16. [`cache_store`](Gateway::cache_store) — a cacheable answer is stored as it
//!     streams to the client.
//!
//! And for every response, refusals included ([`respond`](Gateway::respond)):
//!
//! 17. [`response_headers`](Gateway::response_headers) — CORS and `X-RateLimit-*`.
//! 18. [`logging`](Gateway::logging) — access log line and metrics.
//!
//! Every phase that can refuse (2–11, 13, 15) returns a `Result` whose error is a
//! [`GatewayError`], or becomes one (phase 4's [`Unrouted`], phase 11's [`Throttled`]):
//! the first refusal ends the request with its WSO2-shaped answer. Each phase takes
//! what it works on as parameters and returns what it found; [`RequestCtx`] only
//! records those results for the response phases and the trace. The request head
//! needs no socket: a test builds the `Parts` and a routing table in memory and runs
//! it, or any one phase (`tests/phases.rs`).
//!
//! What a connection may cost before any phase runs (connections, header bytes, idle
//! and header timeouts) is [`crate::server`]'s and [`crate::conn`]'s.
//!
//! # Shared state
//!
//! [`Gateway`] is shared by every connection behind an `Arc`. The routing table is an
//! `ArcSwap` loaded once per request into the [`RequestCtx`], so every phase of one
//! request sees the same configuration (see [`crate::table`]). Everything else it holds
//! is either immutable (its [`GatewayLimits`]) or internally synchronised (throttle
//! counters, token cache, response cache, connection pool, metrics), each explained in
//! its module.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use gatehouse_proto::events::{lifecycle::State as Lifecycle, subscription_status};
use gatehouse_tokens::{KeyType, Verifier};
use http::request::Parts;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use hyper::body::Incoming;
use tracing::Instrument;

use crate::auth::{Authenticator, Caller};
use crate::body::GatewayBody;
use crate::cache::ResponseCache;
use crate::errors::GatewayError;
use crate::limits::GatewayLimits;
use crate::metrics::Metrics;
use crate::paths;
use crate::table::{CompiledApi, Route, RouteMatch, RoutingTable};
use crate::throttle::{Check, RateLimitStatus, ThrottleKey, Throttled, Throttler};
use crate::upstream::{Forwarded, Peer, Upstream, prepare_request_headers};

/// Sync status the request path reports (`/readyz`) and gates on (phase 2), written by
/// [`crate::sync`]. Atomics: written by one task, read by every request.
#[derive(Debug, Default)]
pub struct SyncFlags {
    /// A configuration (snapshot, log replay or disk snapshot) has been loaded.
    pub has_config: AtomicBool,
    /// A live follower of the log (NATS or control's stream) is connected.
    pub following: AtomicBool,
}

/// How a connection reached the gateway.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    /// `http` or `https`.
    pub proto: &'static str,
}

/// Phase 6's verdict on authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// A Bearer token is required.
    Token,
    /// No token needed: a PROTOTYPED API, or a resource with authentication off.
    Anonymous,
}

/// Phase 4's refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unrouted {
    /// 404: no API, version or template matches.
    NotFound,
    /// 405: a template of API `api` (its label) matches, not with this method.
    MethodNotAllowed {
        api: Arc<str>,
        /// The `Allow` header value.
        allow: String,
    },
}

impl Unrouted {
    /// The API whose metrics count the refusal, if one was found.
    pub fn api_label(&self) -> Option<&Arc<str>> {
        match self {
            Unrouted::NotFound => None,
            Unrouted::MethodNotAllowed { api, .. } => Some(api),
        }
    }
}

impl From<Unrouted> for GatewayError {
    fn from(unrouted: Unrouted) -> Self {
        match unrouted {
            Unrouted::NotFound => GatewayError::no_matching_resource(),
            Unrouted::MethodNotAllowed { allow, .. } => GatewayError::method_not_allowed(allow),
        }
    }
}

/// Phase 7's outcome for a call it lets through.
#[derive(Debug)]
pub struct CorsDecision {
    /// The request's `Origin`, when the API's CORS policy allows it: phase 17 names it in
    /// `Access-Control-Allow-Origin`.
    pub allowed_origin: Option<HeaderValue>,
    /// The answer to a CORS preflight; `None` for any other call.
    pub preflight: Option<Response<GatewayBody>>,
}

/// What phase 12 found.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "returned once per request and moved at once: boxing would allocate on every hit"
)]
pub enum CacheLookup {
    /// The API does not cache, or the call is not a `GET`.
    Bypass,
    /// A fresh stored answer (`X-Cache: HIT`): the backend is not called.
    Hit(Response<GatewayBody>),
    /// Nothing fresh under this key: phase 16 stores the backend's answer there.
    Miss(String),
}

/// What the request head (phases 2–13) decided for a call it did not refuse.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "returned once per request and moved at once: boxing would allocate per answer"
)]
pub enum Decision {
    /// Answered at the gateway: a CORS preflight or a cache hit.
    Answer(Response<GatewayBody>),
    /// To be forwarded to a backend.
    Forward(Forward),
}

/// A call to forward: what the upstream phases (14–16) need from the head.
#[derive(Debug)]
pub struct Forward {
    pub route: Route,
    /// Phase 13's choice.
    pub peer: Peer,
    /// Where phase 16 stores the answer (phase 12 missed).
    pub cache_key: Option<String>,
    /// Phase 3's normal form of the path, when it differs from the request's: the path
    /// the route was matched on, and the one forwarded.
    pub path: Option<Box<str>>,
}

/// What the response phases (17, 18) and the trace know about one request: the
/// configuration it is served with, how it arrived, and the results of the phases that
/// ran. [`Gateway::request_head`] fills it in from what each phase returns; no phase
/// reads its inputs from it. Owned by the request's task.
pub struct RequestCtx {
    /// The configuration this request is served with, start to end.
    pub table: Arc<RoutingTable>,
    pub conn: ConnInfo,
    pub method: Method,
    /// The request's URI (a cheap, reference-counted clone).
    pub uri: Uri,
    pub started: Instant,
    /// The request's span, when traces are exported.
    pub span: Option<tracing::Span>,
    /// Phase 4's route, once matched.
    pub route: Option<Route>,
    /// The API of a 405 (for metrics), when there is no route.
    pub api_label: Option<Arc<str>>,
    /// Phase 8's caller (`None`: anonymous, or not authenticated yet).
    pub caller: Option<Arc<Caller>>,
    /// Phase 11's most constrained tier, or the tier that refused.
    pub rate_limit: Option<RateLimitStatus>,
    /// Phase 7's allowed origin.
    pub cors_origin: Option<HeaderValue>,
    /// Phase 12 answered.
    pub cache_hit: bool,
}

impl RequestCtx {
    /// A request about to enter phase 2 with `table`.
    pub fn new(table: Arc<RoutingTable>, conn: ConnInfo, parts: &Parts) -> RequestCtx {
        RequestCtx {
            table,
            conn,
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            started: Instant::now(),
            span: None,
            route: None,
            api_label: None,
            caller: None,
            rate_limit: None,
            cors_origin: None,
            cache_hit: false,
        }
    }

    /// The request path, as the client sent it.
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    fn api_label(&self) -> Option<&Arc<str>> {
        self.route
            .as_ref()
            .map(|r| &r.api.label)
            .or(self.api_label.as_ref())
    }
}

/// What a [`Gateway`] is built from (its listeners and syncer are [`crate::start`]'s).
pub struct GatewayOptions {
    /// This replica's id (`/readyz`, traces, status reports).
    pub gateway_id: String,
    pub metrics: Arc<Metrics>,
    /// Verifies the access tokens (issuer, audience, leeway).
    pub verifier: Verifier,
    /// N of the fallback share `ceil(limit / N)`, enforced while cut off from the other
    /// replicas' counts (see `throttle`).
    pub replica_count: u32,
    pub access_log: bool,
    pub trace_requests: bool,
    /// What one client may cost (connections, timeouts, bodies, cache memory, trusted
    /// proxies).
    pub limits: GatewayLimits,
}

/// The gateway's request path and everything it shares.
pub struct Gateway {
    /// The routing table in use, swapped in whole by the syncer.
    pub table: ArcSwap<RoutingTable>,
    pub sync: SyncFlags,
    pub metrics: Arc<Metrics>,
    pub throttler: Arc<Throttler>,
    pub auth: Authenticator,
    pub cache: Arc<ResponseCache>,
    pub upstream: Upstream,
    pub access_log: bool,
    /// Open a span per request (continuing the client's `traceparent`, passed on to the
    /// backend). Only when traces are exported: otherwise the hot path skips it.
    pub trace_requests: bool,
    pub gateway_id: String,
    /// What one client may cost; read by the listeners too.
    pub limits: GatewayLimits,
}

impl Gateway {
    /// A gateway with an empty routing table, answering 503 (phase 2) until the syncer
    /// (or a test) stores a table and sets `sync.has_config`. Opens no socket.
    pub fn new(options: GatewayOptions) -> anyhow::Result<Gateway> {
        let limits = options.limits;
        Ok(Gateway {
            table: ArcSwap::from_pointee(RoutingTable::empty(&options.metrics)),
            sync: SyncFlags::default(),
            throttler: Arc::new(Throttler::new(options.replica_count)),
            auth: Authenticator::new(options.verifier),
            cache: Arc::new(ResponseCache::new(
                limits.cache_max_bytes,
                limits.cache_max_entry_bytes,
            )),
            upstream: Upstream::new(options.metrics.clone())?,
            access_log: options.access_log,
            trace_requests: options.trace_requests,
            gateway_id: options.gateway_id,
            metrics: options.metrics,
            limits,
        })
    }

    /// Serves one request: every phase, then the response headers and the log line.
    pub async fn handle(
        self: Arc<Self>,
        conn: ConnInfo,
        request: Request<Incoming>,
    ) -> Result<Response<GatewayBody>, Infallible> {
        let (parts, body) = request.into_parts();
        if let Some(response) = self.own_endpoints(&parts) {
            self.metrics.unrouted.record(response.status().as_u16());
            return Ok(response);
        }
        let mut ctx = RequestCtx::new(self.table.load_full(), conn, &parts);
        let result = if self.trace_requests {
            let span = self.request_span(&parts);
            ctx.span = Some(span.clone());
            self.serve(&mut ctx, parts, body).instrument(span).await
        } else {
            self.serve(&mut ctx, parts, body).await
        };
        Ok(self.respond(&ctx, result))
    }

    /// The request's span, a child of the client's `traceparent` if it sent one.
    fn request_span(&self, parts: &Parts) -> tracing::Span {
        let span = tracing::info_span!(
            "gateway request",
            otel.name = %format!("{} {}", parts.method, parts.uri.path()),
            otel.kind = "server",
            http.request.method = %parts.method,
            url.path = %parts.uri.path(),
            http.response.status_code = tracing::field::Empty,
            gatehouse.api = tracing::field::Empty,
            gatehouse.api_version = tracing::field::Empty,
            gatehouse.application = tracing::field::Empty,
            gatehouse.gateway_id = %self.gateway_id,
            gatehouse.cache_hit = tracing::field::Empty,
            gatehouse.error_code = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        gatehouse_node::telemetry::set_parent_from(
            &span,
            parts
                .headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))),
        );
        span
    }

    /// Phases 2 to 16: the request head, then the upstream if the head forwards. With
    /// traces exported, the upstream is a child span of the request's span.
    async fn serve(
        &self,
        ctx: &mut RequestCtx,
        parts: Parts,
        body: Incoming,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        let forward = match self.request_head(ctx, &parts)? {
            Decision::Answer(response) => return Ok(response),
            Decision::Forward(forward) => forward,
        };
        if ctx.span.is_some() {
            let span = tracing::info_span!(
                "upstream",
                otel.name = "upstream",
                otel.kind = "client",
                otel.status_code = tracing::field::Empty,
                server.address = tracing::field::Empty,
                gatehouse.upstream_error = tracing::field::Empty,
            );
            self.upstream(ctx.conn, true, forward, parts, body)
                .instrument(span)
                .await
        } else {
            self.upstream(ctx.conn, false, forward, parts, body).await
        }
    }

    /// Phases 2 to 13, recording in `ctx` what the response phases need; the first
    /// refusal ends the request. With traces exported, each phase that can refuse or
    /// wait (authenticate, subscription, scopes, throttle, response cache) is a child
    /// span of the request's span.
    pub fn request_head(
        &self,
        ctx: &mut RequestCtx,
        parts: &Parts,
    ) -> Result<Decision, GatewayError> {
        let traced = ctx.span.is_some();
        self.ready()?;
        let path = self.normalize_path(parts)?;
        let table = ctx.table.clone();
        let route = self.route_match(&table, parts, &path).map_err(|unrouted| {
            ctx.api_label = unrouted.api_label().cloned();
            GatewayError::from(unrouted)
        })?;
        ctx.route = Some(route.clone());
        self.request_limits(&route, parts)?;
        let security = self.api_state(&route)?;
        let cors = self.cors_preflight(&route, parts)?;
        ctx.cors_origin = cors.allowed_origin;
        if let Some(response) = cors.preflight {
            return Ok(Decision::Answer(response));
        }
        let caller = phase(traced, "authenticate", || {
            self.authenticate(&table, &route, parts, security)
        })?;
        ctx.caller = caller.clone();
        let caller = caller.as_deref();
        phase(traced, "subscription", || {
            caller.map_or(Ok(()), |caller| self.subscription(&route, caller))
        })?;
        phase(traced, "scopes", || {
            caller.map_or(Ok(()), |caller| self.scopes(&route, caller))
        })?;
        match phase(traced, "throttle", || self.throttle(&table, &route, caller)) {
            Ok(status) => ctx.rate_limit = status,
            Err(refusal) => {
                ctx.rate_limit = Some(refusal.rate_limit());
                return Err(refusal.into());
            }
        }
        let cache_key = match phase(traced, "response cache", || {
            self.response_cache(&route, parts, &path, caller)
        }) {
            CacheLookup::Hit(response) => {
                ctx.cache_hit = true;
                return Ok(Decision::Answer(response));
            }
            CacheLookup::Miss(key) => Some(key),
            CacheLookup::Bypass => None,
        };
        let peer = self.upstream_peer(&route, caller.map(|c| c.key_type))?;
        Ok(Decision::Forward(Forward {
            route,
            peer,
            cache_key,
            path: match path {
                Cow::Owned(path) => Some(path.into_boxed_str()),
                Cow::Borrowed(_) => None,
            },
        }))
    }

    /// Phases 14 to 16 for a call the head forwards, with the request's body.
    /// `traced`: the backend's `traceparent` names the current span (the upstream one).
    pub async fn upstream(
        &self,
        conn: ConnInfo,
        traced: bool,
        forward: Forward,
        mut parts: Parts,
        body: Incoming,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        // A miss of a caching API: phase 16 needs the request's headers (`Vary`) as
        // the client sent them.
        let request_headers = forward.cache_key.as_ref().map(|_| parts.headers.clone());
        self.upstream_request_filter(&mut parts, conn, traced);
        let response = self.forward(&forward, parts, body).await?;
        Ok(self
            .cache_store(
                &forward.route.api,
                forward.cache_key,
                request_headers.as_ref(),
                response,
            )
            .await)
    }

    /// Phases 17 and 18 on the answer to a request (a refusal becomes its WSO2 JSON).
    pub fn respond(
        &self,
        ctx: &RequestCtx,
        result: Result<Response<GatewayBody>, GatewayError>,
    ) -> Response<GatewayBody> {
        let mut response = match result {
            Ok(response) => response,
            Err(error) => {
                if let Some(span) = ctx.span.as_ref() {
                    span.record("gatehouse.error_code", error.code);
                }
                error.into_response()
            }
        };
        self.response_headers(ctx, &mut response);
        self.logging(ctx, &response);
        if let Some(span) = ctx.span.as_ref() {
            Self::record_attributes(span, ctx, &response);
        }
        response
    }

    /// What an operator filters traces by: API, version, application, status, cache hit
    /// and, for refusals, WSO2's error code.
    fn record_attributes(span: &tracing::Span, ctx: &RequestCtx, response: &Response<GatewayBody>) {
        span.record("http.response.status_code", response.status().as_u16());
        if let Some(route) = ctx.route.as_ref() {
            span.record("gatehouse.api", route.api.name.as_str());
            span.record("gatehouse.api_version", route.api.version.as_str());
        }
        if let Some(caller) = ctx.caller.as_ref() {
            span.record(
                "gatehouse.application",
                caller.claims.application_name.as_str(),
            );
        }
        span.record("gatehouse.cache_hit", ctx.cache_hit);
    }

    /// Phase 1. `/healthz` (alive), `/readyz` (has a configuration and follows the log)
    /// and `/metrics` (Prometheus text). These paths are the gateway's own: no API can
    /// be served under them.
    pub fn own_endpoints(&self, parts: &Parts) -> Option<Response<GatewayBody>> {
        if parts.method != Method::GET {
            return None;
        }
        match parts.uri.path() {
            "/healthz" => Some(json(StatusCode::OK, r#"{"status":"alive"}"#.to_string())),
            "/readyz" => {
                let table = self.table.load();
                let has_config = self.sync.has_config.load(Ordering::Acquire);
                let following = self.sync.following.load(Ordering::Acquire);
                let stale = self.metrics.stale.load(Ordering::Acquire);
                let (status, word) = match (has_config, following, stale) {
                    (false, _, _) => (StatusCode::SERVICE_UNAVAILABLE, "starting"),
                    (true, _, true) => (StatusCode::SERVICE_UNAVAILABLE, "stale"),
                    (true, false, false) => (StatusCode::SERVICE_UNAVAILABLE, "not following"),
                    (true, true, false) => (StatusCode::OK, "ready"),
                };
                let body = serde_json::json!({
                    "status": word,
                    "ready": status == StatusCode::OK,
                    "stale": stale,
                    "following": following,
                    "gateway_id": self.gateway_id,
                    "applied_sequence": table.sequence,
                    "config_hash": table.config_hash,
                    "apis": table.api_count(),
                });
                Some(json(status, body.to_string()))
            }
            "/metrics" => {
                let mut response = Response::new(GatewayBody::full(self.metrics.render()));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                Some(response)
            }
            _ => None,
        }
    }

    /// Phase 2. Until a first configuration is loaded (a snapshot, a log replay or the
    /// disk snapshot), every call is 503 101503 with `Retry-After: 1`: an empty table
    /// would answer 404 to calls that will route a moment later.
    pub fn ready(&self) -> Result<(), GatewayError> {
        if self.sync.has_config.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(GatewayError::not_ready())
        }
    }

    /// Phase 3. The request path in its one normal form (see [`crate::paths`]), or 400
    /// for a path the gateway refuses. Borrowed from `parts` when already normal.
    pub fn normalize_path<'p>(&self, parts: &'p Parts) -> Result<Cow<'p, str>, GatewayError> {
        paths::normalize(parts.uri.path()).map_err(GatewayError::bad_request)
    }

    /// Phase 4. Finds the API and resource in `table` for `path` (phase 3's normal
    /// form). May refuse with 404 (no API, version or template matches) or 405 (the
    /// template matches, the method does not). A CORS preflight is matched with the
    /// method it announces.
    pub fn route_match(
        &self,
        table: &RoutingTable,
        parts: &Parts,
        path: &str,
    ) -> Result<Route, Unrouted> {
        let announced;
        let method = if is_preflight(parts) {
            announced = parts
                .headers
                .get(header::ACCESS_CONTROL_REQUEST_METHOD)
                .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
                .unwrap_or(Method::OPTIONS);
            &announced
        } else {
            &parts.method
        };
        match table.route(method, path) {
            RouteMatch::Matched(route) => Ok(route),
            RouteMatch::MethodNotAllowed { api, allow } => Err(Unrouted::MethodNotAllowed {
                api: api.label.clone(),
                allow,
            }),
            RouteMatch::NotFound => Err(Unrouted::NotFound),
        }
    }

    /// Phase 5. What the request head says it will cost, against the limits: a
    /// `Content-Length` over the API's body limit (its `max_request_body_bytes`, else
    /// `--max-request-body-bytes`) is 413 at once, before authentication or the backend
    /// (a body without a length is counted as it streams: phase 15); more header fields
    /// than `--max-headers` is 431 (HTTP/1 connections are held to it by hyper already,
    /// HTTP/2 ones here).
    pub fn request_limits(&self, route: &Route, parts: &Parts) -> Result<(), GatewayError> {
        if parts.headers.len() > self.limits.max_headers as usize {
            return Err(GatewayError::header_fields_too_large(
                self.limits.max_headers,
            ));
        }
        let max = self.limits.body(route.api.max_request_body).max_bytes;
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        match declared {
            Some(length) if length > max => Err(GatewayError::request_too_large(max)),
            _ => Ok(()),
        }
    }

    /// Phase 6. PUBLISHED and DEPRECATED serve, with a token unless the resource turns
    /// authentication off; PROTOTYPED serves without authentication; BLOCKED answers
    /// 503 / 700700. (CREATED and RETIRED APIs have no routes at all: they were 404 in
    /// phase 4.)
    pub fn api_state(&self, route: &Route) -> Result<Security, GatewayError> {
        match route.api.lifecycle {
            Lifecycle::Blocked => Err(GatewayError::api_blocked(&route.api.label)),
            Lifecycle::Prototyped => Ok(Security::Anonymous),
            _ if route.resource().auth_disabled => Ok(Security::Anonymous),
            _ => Ok(Security::Token),
        }
    }

    /// Phase 7. For an API with CORS enabled: the request's `Origin`, if the API allows
    /// it, is what the response names (phase 17); a preflight is answered here, without
    /// authentication: 200 with the `Access-Control-*` headers, or 403 for an origin
    /// the API does not allow. For an API without CORS a preflight is an `OPTIONS` call
    /// like any other: 405 unless the resource it matched is `OPTIONS` itself.
    pub fn cors_preflight(
        &self,
        route: &Route,
        parts: &Parts,
    ) -> Result<CorsDecision, GatewayError> {
        let preflight = is_preflight(parts);
        let Some(cors) = route.api.cors.as_ref() else {
            let method = &route.resource().method;
            if preflight && method != Method::OPTIONS {
                return Err(GatewayError::method_not_allowed(method.to_string()));
            }
            return Ok(CorsDecision {
                allowed_origin: None,
                preflight: None,
            });
        };
        let allowed_origin = parts
            .headers
            .get(header::ORIGIN)
            .filter(|o| o.to_str().is_ok_and(|o| cors.allows(o)))
            .cloned();
        if !preflight {
            return Ok(CorsDecision {
                allowed_origin,
                preflight: None,
            });
        }
        if allowed_origin.is_none() {
            return Err(GatewayError::cors_origin_not_allowed());
        }
        let mut response = Response::new(GatewayBody::empty());
        let headers = response.headers_mut();
        for (name, value) in [
            (
                header::ACCESS_CONTROL_ALLOW_METHODS,
                cors.allow_methods.as_str(),
            ),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                cors.allow_headers.as_str(),
            ),
        ] {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(name, value);
            }
        }
        if cors.max_age_seconds > 0 {
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from(cors.max_age_seconds),
            );
        }
        Ok(CorsDecision {
            allowed_origin,
            preflight: Some(response),
        })
    }

    /// Phase 8. Unless the call is anonymous, the Bearer token must verify against
    /// `table` (401 900902 when absent, 900901 when invalid, expired, revoked or of a
    /// revoked client), and the API must have endpoints for its key type (401 900901).
    /// Returns the caller, `None` for an anonymous call.
    pub fn authenticate(
        &self,
        table: &RoutingTable,
        route: &Route,
        parts: &Parts,
        security: Security,
    ) -> Result<Option<Arc<Caller>>, GatewayError> {
        if security == Security::Anonymous {
            return Ok(None);
        }
        let caller = self
            .auth
            .authenticate(table, parts.headers.get(header::AUTHORIZATION))?;
        if route.api.endpoints(caller.key_type).is_none() {
            let keys = caller.key_type.as_str().to_ascii_lowercase();
            return Err(GatewayError::invalid_credentials(format!(
                "{keys} keys offered to an API without {keys} endpoints"
            )));
        }
        Ok(Some(caller))
    }

    /// Phase 9, for an authenticated call. The caller's application must be subscribed
    /// to the API (403 900908), and the subscription not BLOCKED, nor PROD_ONLY_BLOCKED
    /// for a production key (401 900907).
    pub fn subscription(&self, route: &Route, caller: &Caller) -> Result<(), GatewayError> {
        let api = &route.api;
        let Some(subscription) = api.subscriptions.get(caller.claims.application_id.as_str())
        else {
            return Err(GatewayError::not_subscribed(&api.label));
        };
        let blocked = match subscription.state {
            subscription_status::State::Blocked => true,
            subscription_status::State::ProdOnlyBlocked => caller.key_type == KeyType::Production,
            _ => false,
        };
        if blocked {
            return Err(GatewayError::subscription_blocked(&api.label));
        }
        Ok(())
    }

    /// Phase 10, for an authenticated call. A resource that lists scopes needs a token
    /// with one of them, granted to the application on *this* API (its subscription's
    /// `GrantScopes`): a scope granted on another API that happens to declare the same
    /// name authorises nothing here (403 900910).
    pub fn scopes(&self, route: &Route, caller: &Caller) -> Result<(), GatewayError> {
        let resource = route.resource();
        if resource.scopes.is_empty() {
            return Ok(());
        }
        let granted_here = route
            .api
            .subscriptions
            .get(caller.claims.application_id.as_str())
            .map_or(&[][..], |s| &s.granted_scopes[..]);
        let allowed = resource.scopes.iter().any(|scope| {
            caller.claims.has_scope(scope) && granted_here.iter().any(|g| **g == **scope)
        });
        if allowed {
            Ok(())
        } else {
            Err(GatewayError::scope_not_allowed(&resource.template))
        }
    }

    /// Phase 11. Counts the call against the subscription and application tiers (for an
    /// authenticated caller), then the API and resource tiers, those that have a limit.
    /// Returns the most constrained tier's status (`X-RateLimit-*`), or the first tier
    /// that refuses: 429 with `Retry-After` (see [`crate::throttle`]).
    pub fn throttle(
        &self,
        table: &RoutingTable,
        route: &Route,
        caller: Option<&Caller>,
    ) -> Result<Option<RateLimitStatus>, Throttled> {
        let api = &route.api;
        let resource = route.resource();
        let mut checks: Vec<Check<'_>> = Vec::new();
        if let Some(caller) = caller {
            let application = caller.claims.application_id.as_str();
            let subscription = api.subscriptions.get(application);
            if let Some(limit) = subscription.and_then(|s| s.limit.as_ref()) {
                let key = ThrottleKey::Subscription {
                    application,
                    api: &api.id,
                };
                checks.push(Check { key, limit });
            }
            if let Some(limit) = table
                .application(application)
                .and_then(|a| a.limit.as_ref())
            {
                let key = ThrottleKey::Application { application };
                checks.push(Check { key, limit });
            }
        }
        if let Some(limit) = api.limit.as_ref() {
            let key = ThrottleKey::Api { api: &api.id };
            checks.push(Check { key, limit });
        }
        if let Some(limit) = resource.limit.as_ref() {
            let key = ThrottleKey::Resource {
                api: &api.id,
                method: &resource.method,
                template: &resource.template,
            };
            checks.push(Check { key, limit });
        }
        if checks.is_empty() {
            return Ok(None);
        }
        self.throttler.admit(&checks)
    }

    /// Phase 12. For an API with caching on, a `GET` is looked up by API, host, `path`
    /// (phase 3's normal form), query and caller (application, key type and scopes); a
    /// fresh answer whose `Vary` headers have the values this request has is the answer.
    /// A miss names the key for phase 16 to store the backend's answer under.
    pub fn response_cache(
        &self,
        route: &Route,
        parts: &Parts,
        path: &str,
        caller: Option<&Caller>,
    ) -> CacheLookup {
        if route.api.cache_ttl.is_none() || parts.method != Method::GET {
            return CacheLookup::Bypass;
        }
        let caller = caller.map_or(String::new(), |c| {
            format!(
                "{} {} {}",
                c.claims.application_id, c.key_type, c.claims.scope
            )
        });
        let path_and_query = match parts.uri.query() {
            Some(query) => Cow::Owned(format!("{path}?{query}")),
            None => Cow::Borrowed(path),
        };
        let key = ResponseCache::key(
            &route.api.id,
            parts.method.as_str(),
            request_host(parts).unwrap_or(""),
            &path_and_query,
            &caller,
        );
        match self.cache.lookup(&key, &parts.headers) {
            Some(hit) => {
                self.metrics.cache_hits.fetch_add(1, Ordering::Relaxed);
                CacheLookup::Hit(hit)
            }
            None => CacheLookup::Miss(key),
        }
    }

    /// Phase 13. Chooses the peer: the endpoint group of the caller's key type (`None`,
    /// an anonymous call: production, else sandbox), and the order to try its endpoints
    /// in (round-robin or failover, endpoints that just failed last; see
    /// [`crate::upstream`]). 503 101503 when the API has no such group.
    pub fn upstream_peer(
        &self,
        route: &Route,
        key_type: Option<KeyType>,
    ) -> Result<Peer, GatewayError> {
        let api = &route.api;
        let endpoints = match key_type {
            Some(key_type) => api.endpoints(key_type),
            None => api.production.as_ref().or(api.sandbox.as_ref()),
        };
        let endpoints = endpoints.ok_or_else(|| {
            tracing::warn!(api = %api.label, ?key_type, "the API has no usable endpoints for this call");
            GatewayError::backend_unreachable()
        })?;
        Ok(self.upstream.peer(endpoints))
    }

    /// Phase 14. The request headers as the backend gets them: hop-by-hop headers and
    /// `Authorization` removed, `X-Forwarded-For`/`-Proto`/`-Host` set from `conn` and
    /// the authority the request was sent to ([`request_host`]) — a client's own kept
    /// only from one of `--trusted-proxies` — and `Host` left to the backend's URL.
    /// With `traced`, `traceparent` names the current span (the gateway's upstream
    /// span); otherwise the client's passes on unchanged.
    pub fn upstream_request_filter(&self, parts: &mut Parts, conn: ConnInfo, traced: bool) {
        if traced {
            for (name, value) in gatehouse_node::telemetry::inject(&tracing::Span::current()) {
                if let (Ok(name), Ok(value)) = (
                    http::HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(&value),
                ) {
                    parts.headers.insert(name, value);
                }
            }
        }
        let host = request_host(parts).map(str::to_string);
        let forwarded = Forwarded {
            client_ip: conn.remote.ip(),
            proto: conn.proto,
            host: host.as_deref(),
            trusted_peer: self.limits.trusts(conn.remote.ip()),
        };
        prepare_request_headers(&mut parts.headers, forwarded);
    }

    /// Phase 15. Forwards the call to its peer with the API's timeout: the normalised
    /// path after the route's context and version follows the endpoint's own path, the
    /// query passes on. A call without a body moves on to the next endpoint when a
    /// connection fails; a body streams within the API's limits (413 past its size,
    /// 408 when it is too slow). 503 101503 when no endpoint can be reached, 504 101504
    /// on timeout.
    pub async fn forward(
        &self,
        forward: &Forward,
        parts: Parts,
        body: Incoming,
    ) -> Result<Response<Incoming>, GatewayError> {
        let route = &forward.route;
        let uri = parts.uri.clone();
        let path = forward.path.as_deref().unwrap_or(uri.path());
        self.upstream
            .forward(
                &forward.peer,
                route.api.timeout,
                parts,
                body,
                route.resource_path(path),
                self.limits.body(route.api.max_request_body),
            )
            .await
    }

    /// Phase 16. With a key from phase 12, a storable answer (see
    /// [`ResponseCache::storable`]) streams to the client while a copy is stored with the
    /// values `request_headers` has for its `Vary`; any other answer streams through as
    /// is.
    pub async fn cache_store(
        &self,
        api: &CompiledApi,
        cache_key: Option<String>,
        request_headers: Option<&http::HeaderMap>,
        response: Response<Incoming>,
    ) -> Response<GatewayBody> {
        if let (Some(key), Some(ttl), Some(request)) = (cache_key, api.cache_ttl, request_headers)
            && let Ok(vary) = ResponseCache::storable(response.status(), response.headers())
        {
            return self.cache.tee(key, ttl, &vary, request, response);
        }
        let (parts, body) = response.into_parts();
        Response::from_parts(parts, GatewayBody::streamed_prefetched(body).await)
    }

    /// Phase 17. Adds the CORS headers for the origin phase 7 allowed and the
    /// `X-RateLimit-*` headers of phase 11's tier, to every answer (refusals included).
    pub fn response_headers(&self, ctx: &RequestCtx, response: &mut Response<GatewayBody>) {
        let headers = response.headers_mut();
        if let (Some(origin), Some(route)) = (ctx.cors_origin.as_ref(), ctx.route.as_ref())
            && let Some(cors) = route.api.cors.as_ref()
        {
            if cors.allow_origins.iter().any(|o| o == "*") && !cors.allow_credentials {
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    HeaderValue::from_static("*"),
                );
            } else {
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
                headers.append(header::VARY, HeaderValue::from_static("Origin"));
            }
            if cors.allow_credentials {
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
        }
        if let Some(rl) = ctx.rate_limit {
            headers.insert("x-ratelimit-limit", HeaderValue::from(rl.limit));
            headers.insert("x-ratelimit-remaining", HeaderValue::from(rl.remaining));
            headers.insert("x-ratelimit-reset", HeaderValue::from(rl.reset));
        }
    }

    /// Phase 18. Metrics (requests by API and status, latency to response headers)
    /// and, unless turned off, one access-log line (target `gatehouse_gateway::access`).
    pub fn logging(&self, ctx: &RequestCtx, response: &Response<GatewayBody>) {
        let elapsed = ctx.started.elapsed();
        let status = response.status().as_u16();
        match ctx.route.as_ref() {
            Some(route) => route.api.metrics.record(status),
            None => match ctx.api_label.as_ref() {
                Some(label) => self.metrics.api(label).record(status),
                None => self.metrics.unrouted.record(status),
            },
        }
        self.metrics.observe_latency(elapsed);
        if self.access_log {
            tracing::info!(
                target: "gatehouse_gateway::access",
                client = %ctx.conn.remote.ip(),
                proto = ctx.conn.proto,
                method = %ctx.method,
                path = %ctx.path(),
                status,
                api = ctx.api_label().map_or("-", |l| &**l),
                application = ctx.caller.as_ref().map_or("-", |c| c.claims.application_id.as_str()),
                cache = if ctx.cache_hit { "hit" } else { "-" },
                micros = elapsed.as_micros() as u64,
            );
        }
    }
}

/// The authority a request was sent to: HTTP/2's `:authority` (or an absolute-form
/// URI's), else `Host` — if it is a well-formed `host[:port]` (no user info).
pub fn request_host(parts: &Parts) -> Option<&str> {
    let host = match parts.uri.authority() {
        Some(authority) => authority.as_str(),
        None => parts.headers.get(header::HOST)?.to_str().ok()?,
    };
    let well_formed =
        !host.is_empty() && !host.contains('@') && host.parse::<http::uri::Authority>().is_ok();
    well_formed.then_some(host)
}

/// An `OPTIONS` call with `Origin` and `Access-Control-Request-Method`.
fn is_preflight(parts: &Parts) -> bool {
    parts.method == Method::OPTIONS
        && parts.headers.contains_key(header::ORIGIN)
        && parts
            .headers
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

fn json(status: StatusCode, body: String) -> Response<GatewayBody> {
    let mut response = Response::new(GatewayBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Runs one synchronous phase, in a child span of the request's span when `traced`.
fn phase<T>(traced: bool, name: &'static str, run: impl FnOnce() -> T) -> T {
    if traced {
        tracing::info_span!("phase", otel.name = name, gatehouse.phase = name).in_scope(run)
    } else {
        run()
    }
}

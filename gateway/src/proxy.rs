//! The life of a request, as named phases (the way pingora's `ProxyHttp` names them).
//!
//! [`Gateway::handle`] runs, in this order:
//!
//! 1. [`own_endpoints`](Gateway::own_endpoints) — `/healthz`, `/readyz`, `/metrics`.
//! 2. [`route_match`](Gateway::route_match) — context (longest wins), version or the
//!    default version, resource template and method: 404 / 405.
//! 3. [`api_state`](Gateway::api_state) — BLOCKED answers 503; PROTOTYPED serves
//!    without authentication.
//! 4. [`cors_preflight`](Gateway::cors_preflight) — answered here for APIs with CORS.
//! 5. [`authenticate`](Gateway::authenticate) — Bearer JWT (see [`crate::auth`]): 401
//!    900902 / 900901; the key type must have endpoints.
//! 6. [`subscription`](Gateway::subscription) — the token's application is subscribed
//!    and not blocked: 403 900908 / 401 900907.
//! 7. [`scopes`](Gateway::scopes) — one of the resource's scopes: 403 900910.
//! 8. [`throttle`](Gateway::throttle) — subscription, application, API, resource tiers:
//!    429 (see [`crate::throttle`]).
//! 9. [`response_cache`](Gateway::response_cache) — a fresh cached answer, if the API
//!    caches.
//! 10. [`upstream`](Gateway::upstream) — the backend call (see [`crate::upstream`]): 503
//!     101503 / 504 101504.
//! 11. [`response_headers`](Gateway::response_headers) — CORS and `X-RateLimit-*`.
//! 12. [`logging`](Gateway::logging) — access log line and metrics.
//!
//! Phases 2–10 return `Result<_, GatewayError>`: the first refusal short-circuits to its
//! WSO2-shaped answer, and phases 11–12 run for every response, refusals included.
//!
//! # Shared state
//!
//! [`Gateway`] is shared by every connection behind an `Arc`. The routing table is an
//! `ArcSwap` loaded once per request into the [`RequestCtx`], so every phase of one
//! request sees the same configuration (see [`crate::table`]). Everything else it holds
//! is either immutable or internally synchronised (throttle counters, token cache,
//! response cache, connection pool, metrics), each explained in its module.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use gatehouse_proto::events::{lifecycle::State as Lifecycle, subscription_status};
use gatehouse_tokens::{AccessClaims, KEY_TYPE_SANDBOX};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::auth::Authenticator;
use crate::body::GatewayBody;
use crate::cache::ResponseCache;
use crate::errors::GatewayError;
use crate::metrics::Metrics;
use crate::table::{Endpoints, Route, RouteMatch, RoutingTable};
use crate::throttle::{Check, RateLimitStatus, ThrottleKey, Throttler};
use crate::upstream::{Forwarded, Upstream};

/// Sync status the request path reports (`/readyz`), written by [`crate::sync`].
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

/// Everything one request carries from phase to phase.
pub struct RequestCtx {
    /// The configuration this request is served with, start to end.
    pub table: Arc<RoutingTable>,
    pub conn: ConnInfo,
    pub method: Method,
    /// The request's URI (a cheap, reference-counted clone).
    pub uri: http::Uri,
    pub route: Option<Route>,
    /// The API of a 405 (for metrics), when there is no route.
    pub api_label: Option<Arc<str>>,
    pub claims: Option<Arc<AccessClaims>>,
    /// No authentication for this call (PROTOTYPED API or `auth_disabled` resource).
    pub anonymous: bool,
    pub rate_limit: Option<RateLimitStatus>,
    /// The request's `Origin`, when the API allows it.
    pub cors_origin: Option<HeaderValue>,
    pub cache_key: Option<String>,
    pub cache_hit: bool,
    pub started: Instant,
    /// The request's span, when traces are exported.
    pub span: Option<tracing::Span>,
}

impl RequestCtx {
    /// The request path.
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

/// The gateway's request path and everything it shares.
pub struct Gateway {
    pub table: ArcSwap<RoutingTable>,
    pub sync: SyncFlags,
    pub metrics: Arc<Metrics>,
    pub throttler: Throttler,
    pub auth: Authenticator,
    pub cache: Arc<ResponseCache>,
    pub upstream: Upstream,
    pub access_log: bool,
    /// Open a span per request (continuing the client's `traceparent`, passed on to the
    /// backend). Only when traces are exported: otherwise the hot path skips it.
    pub trace_requests: bool,
    pub gateway_id: String,
}

impl Gateway {
    /// Serves one request: every phase, then the response headers and the log line.
    pub async fn handle(
        self: Arc<Self>,
        conn: ConnInfo,
        request: Request<Incoming>,
    ) -> Result<Response<GatewayBody>, Infallible> {
        let started = Instant::now();
        if let Some(response) = self.own_endpoints(&request) {
            self.metrics.unrouted.record(response.status().as_u16());
            return Ok(response);
        }
        let mut ctx = RequestCtx {
            table: self.table.load_full(),
            conn,
            method: request.method().clone(),
            uri: request.uri().clone(),
            route: None,
            api_label: None,
            claims: None,
            anonymous: false,
            rate_limit: None,
            cors_origin: None,
            cache_key: None,
            cache_hit: false,
            started,
            span: None,
        };
        let result = if self.trace_requests {
            let span = tracing::info_span!(
                "gateway request",
                otel.name = %format!("{} {}", ctx.method, ctx.path()),
                otel.kind = "server",
                http.request.method = %ctx.method,
                url.path = %ctx.path(),
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
                request
                    .headers()
                    .iter()
                    .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))),
            );
            ctx.span = Some(span.clone());
            use tracing::Instrument;
            self.phases(&mut ctx, request).instrument(span).await
        } else {
            self.phases(&mut ctx, request).await
        };
        let mut response = match result {
            Ok(response) => response,
            Err(error) => {
                if let Some(span) = ctx.span.as_ref() {
                    span.record("gatehouse.error_code", error.code);
                }
                error.into_response()
            }
        };
        self.response_headers(&ctx, &mut response);
        self.logging(&ctx, &response);
        if let Some(span) = ctx.span.as_ref() {
            Self::record_attributes(span, &ctx, &response);
        }
        Ok(response)
    }

    /// Phases 2 to 10; the first refusal ends the request. With traces exported, each
    /// phase that can refuse or wait (authenticate, subscription, scopes, throttle,
    /// response cache, upstream) is a child span of the request's span.
    async fn phases(
        &self,
        ctx: &mut RequestCtx,
        request: Request<Incoming>,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        if !self.sync.has_config.load(Ordering::Acquire) {
            return Err(GatewayError::not_ready());
        }
        let traced = ctx.span.is_some();
        let preflight = Self::is_preflight(&request);
        self.route_match(ctx, &request, preflight)?;
        self.api_state(ctx)?;
        if let Some(response) = self.cors_preflight(ctx, &request, preflight)? {
            return Ok(response);
        }
        phase(traced, "authenticate", || self.authenticate(ctx, &request))?;
        phase(traced, "subscription", || self.subscription(ctx))?;
        phase(traced, "scopes", || self.scopes(ctx))?;
        phase(traced, "throttle", || self.throttle(ctx))?;
        if let Some(response) = phase(traced, "response cache", || {
            self.response_cache(ctx, &request)
        }) {
            return Ok(response);
        }
        if traced {
            use tracing::Instrument;
            let span =
                tracing::info_span!("upstream", otel.name = "upstream", otel.kind = "client");
            self.upstream(ctx, request).instrument(span).await
        } else {
            self.upstream(ctx, request).await
        }
    }

    /// What an operator filters traces by: API, version, application, status, cache hit
    /// and, for refusals, WSO2's error code.
    fn record_attributes(span: &tracing::Span, ctx: &RequestCtx, response: &Response<GatewayBody>) {
        span.record("http.response.status_code", response.status().as_u16());
        if let Some(route) = ctx.route.as_ref() {
            span.record("gatehouse.api", route.api.name.as_str());
            span.record("gatehouse.api_version", route.api.version.as_str());
        }
        if let Some(claims) = ctx.claims.as_ref() {
            span.record("gatehouse.application", claims.application_name.as_str());
        }
        span.record("gatehouse.cache_hit", ctx.cache_hit);
    }

    /// `/healthz` (alive), `/readyz` (has a configuration and follows the log) and
    /// `/metrics` (Prometheus text). These paths are the gateway's own: no API can be
    /// served under them.
    pub fn own_endpoints(&self, request: &Request<Incoming>) -> Option<Response<GatewayBody>> {
        if request.method() != Method::GET {
            return None;
        }
        match request.uri().path() {
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

    fn is_preflight(request: &Request<Incoming>) -> bool {
        request.method() == Method::OPTIONS
            && request.headers().contains_key(header::ORIGIN)
            && request
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// Phase 2. Finds the API and resource. May answer 404 (no API, version or
    /// template matches, or the path has `.`/`..` segments) or 405 (the template
    /// matches, the method does not). A CORS preflight is matched with the method it
    /// announces.
    pub fn route_match(
        &self,
        ctx: &mut RequestCtx,
        request: &Request<Incoming>,
        preflight: bool,
    ) -> Result<(), GatewayError> {
        let method = if preflight {
            request
                .headers()
                .get(header::ACCESS_CONTROL_REQUEST_METHOD)
                .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
                .unwrap_or(Method::OPTIONS)
        } else {
            ctx.method.clone()
        };
        match ctx.table.route(&method, ctx.path()) {
            RouteMatch::Matched(route) => {
                ctx.route = Some(route);
                Ok(())
            }
            RouteMatch::MethodNotAllowed { api, allow } => {
                ctx.api_label = Some(api.label.clone());
                Err(GatewayError::method_not_allowed(allow))
            }
            RouteMatch::NotFound => Err(GatewayError::no_matching_resource()),
        }
    }

    fn route(ctx: &RequestCtx) -> &Route {
        ctx.route
            .as_ref()
            .expect("phases after route_match run only with a route")
    }

    /// Phase 3. PUBLISHED and DEPRECATED serve; PROTOTYPED serves without
    /// authentication; BLOCKED answers 503 / 700700. (CREATED and RETIRED APIs have no
    /// routes at all: they were 404 in phase 2.)
    pub fn api_state(&self, ctx: &mut RequestCtx) -> Result<(), GatewayError> {
        let route = Self::route(ctx);
        match route.api.lifecycle {
            Lifecycle::Blocked => Err(GatewayError::api_blocked(&route.api.label)),
            Lifecycle::Prototyped => {
                ctx.anonymous = true;
                Ok(())
            }
            _ => {
                ctx.anonymous = route.resource().auth_disabled;
                Ok(())
            }
        }
    }

    /// Phase 4. For an API with CORS enabled, notes an allowed `Origin` (for phase 11)
    /// and answers preflight requests itself (200 with the `Access-Control-*` headers,
    /// or 403 for an origin it does not allow), without authentication.
    pub fn cors_preflight(
        &self,
        ctx: &mut RequestCtx,
        request: &Request<Incoming>,
        preflight: bool,
    ) -> Result<Option<Response<GatewayBody>>, GatewayError> {
        let route = Self::route(ctx);
        let api = route.api.clone();
        let Some(cors) = api.cors.as_ref() else {
            if preflight && route.resource().method != Method::OPTIONS {
                // No CORS on this API: a preflight is an OPTIONS call like any other.
                return Err(GatewayError::method_not_allowed(
                    route.resource().method.to_string(),
                ));
            }
            return Ok(None);
        };
        let origin = request.headers().get(header::ORIGIN);
        let allowed = origin.filter(|o| o.to_str().is_ok_and(|o| cors.allows(o)));
        ctx.cors_origin = allowed.cloned();
        if !preflight {
            return Ok(None);
        }
        if allowed.is_none() {
            let mut response = json(
                StatusCode::FORBIDDEN,
                r#"{"code":403,"message":"Forbidden","description":"CORS request from this origin is not allowed"}"#
                    .to_string(),
            );
            response
                .headers_mut()
                .insert(header::VARY, HeaderValue::from_static("Origin"));
            return Ok(Some(response));
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
        Ok(Some(response))
    }

    /// Phase 5. Unless the call is anonymous, the Bearer token must verify (401
    /// 900902 when absent, 900901 when invalid, expired, revoked or of a revoked
    /// client), and the API must have endpoints for its key type (401 900901).
    pub fn authenticate(
        &self,
        ctx: &mut RequestCtx,
        request: &Request<Incoming>,
    ) -> Result<(), GatewayError> {
        if ctx.anonymous {
            return Ok(());
        }
        let claims = self
            .auth
            .authenticate(&ctx.table, request.headers().get(header::AUTHORIZATION))?;
        let api = &Self::route(ctx).api;
        let sandbox = claims.key_type == KEY_TYPE_SANDBOX;
        let has_endpoints = if sandbox {
            api.sandbox.is_some()
        } else {
            api.production.is_some()
        };
        if !has_endpoints {
            return Err(GatewayError::invalid_credentials(format!(
                "{} keys offered to an API without {} endpoints",
                if sandbox { "sandbox" } else { "production" },
                if sandbox { "sandbox" } else { "production" },
            )));
        }
        ctx.claims = Some(claims);
        Ok(())
    }

    /// Phase 6. The token's application must be subscribed to the API (403 900908),
    /// and the subscription not BLOCKED, nor PROD_ONLY_BLOCKED for a production key
    /// (401 900907).
    pub fn subscription(&self, ctx: &mut RequestCtx) -> Result<(), GatewayError> {
        let Some(claims) = ctx.claims.as_ref() else {
            return Ok(());
        };
        let api = &Self::route(ctx).api;
        let Some(subscription) = api.subscriptions.get(claims.application_id.as_str()) else {
            return Err(GatewayError::not_subscribed(&api.label));
        };
        let blocked = match subscription.state {
            subscription_status::State::Blocked => true,
            subscription_status::State::ProdOnlyBlocked => claims.key_type != KEY_TYPE_SANDBOX,
            _ => false,
        };
        if blocked {
            return Err(GatewayError::subscription_blocked(&api.label));
        }
        Ok(())
    }

    /// Phase 7. A resource that lists scopes needs a token with one of them (403
    /// 900910).
    pub fn scopes(&self, ctx: &mut RequestCtx) -> Result<(), GatewayError> {
        let Some(claims) = ctx.claims.as_ref() else {
            return Ok(());
        };
        let resource = Self::route(ctx).resource();
        if resource.scopes.is_empty() || resource.scopes.iter().any(|s| claims.has_scope(s)) {
            Ok(())
        } else {
            Err(GatewayError::scope_not_allowed(&resource.template))
        }
    }

    /// Phase 8. Counts the call against the subscription, application, API and
    /// resource tiers that have a limit; 429 with `Retry-After` from the first that
    /// refuses (see [`crate::throttle`]).
    pub fn throttle(&self, ctx: &mut RequestCtx) -> Result<(), GatewayError> {
        let route = Self::route(ctx);
        let api = &route.api;
        let resource = route.resource();
        let mut checks: Vec<Check<'_>> = Vec::new();
        if let Some(claims) = ctx.claims.as_ref() {
            let application = claims.application_id.as_str();
            let subscription = api.subscriptions.get(application);
            if let Some(limit) = subscription.and_then(|s| s.limit.as_ref()) {
                let key = ThrottleKey::Subscription {
                    application,
                    api: &api.id,
                };
                checks.push(Check { key, limit });
            }
            if let Some(limit) = ctx
                .table
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
            return Ok(());
        }
        let admitted = self.throttler.admit(&checks);
        match admitted {
            Ok(status) => {
                ctx.rate_limit = status;
                Ok(())
            }
            Err(refusal) => {
                ctx.rate_limit = Some(refusal.rate_limit());
                Err(refusal.into())
            }
        }
    }

    /// Phase 9. For an API with caching on, a `GET` is looked up by API, path, query
    /// and caller (application and scopes); a hit is the answer. A miss leaves the key
    /// for phase 10 to store the backend's answer.
    pub fn response_cache(
        &self,
        ctx: &mut RequestCtx,
        request: &Request<Incoming>,
    ) -> Option<Response<GatewayBody>> {
        let route = Self::route(ctx);
        route.api.cache_ttl?;
        if ctx.method != Method::GET {
            return None;
        }
        let caller = ctx.claims.as_ref().map_or(String::new(), |c| {
            format!("{} {} {}", c.application_id, c.key_type, c.scope)
        });
        let path_and_query = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let key = ResponseCache::key(&route.api.id, ctx.method.as_str(), path_and_query, &caller);
        if let Some(hit) = self.cache.lookup(&key) {
            self.metrics.cache_hits.fetch_add(1, Ordering::Relaxed);
            ctx.cache_hit = true;
            return Some(hit);
        }
        ctx.cache_key = Some(key);
        None
    }

    /// Phase 10. Forwards to the endpoints for the key type (production for anonymous
    /// calls), with the API's timeout: 503 101503 when no endpoint can be reached, 504
    /// 101504 on timeout. Stores a cacheable answer when phase 9 asked for it. With
    /// traces exported, the backend's `traceparent` names the gateway's span; otherwise
    /// the client's passes on unchanged.
    pub async fn upstream(
        &self,
        ctx: &mut RequestCtx,
        request: Request<Incoming>,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        let route = Self::route(ctx).clone();
        let api = &route.api;
        let sandbox = ctx
            .claims
            .as_ref()
            .is_some_and(|c| c.key_type == KEY_TYPE_SANDBOX);
        let endpoints: &Endpoints = match (sandbox, &api.production, &api.sandbox) {
            (true, _, Some(e)) | (false, Some(e), _) => e,
            (false, None, Some(e)) if ctx.anonymous => e,
            _ => {
                return Err(GatewayError::backend_unreachable(
                    "the API has no endpoints for this call",
                ));
            }
        };
        let (mut parts, body) = request.into_parts();
        if ctx.span.is_some() {
            // The backend's parent is the gateway's upstream span (the current one).
            for (name, value) in gatehouse_node::telemetry::inject(&tracing::Span::current()) {
                if let (Ok(name), Ok(value)) = (
                    http::HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(&value),
                ) {
                    parts.headers.insert(name, value);
                }
            }
        }
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| parts.uri.authority().map(|a| a.to_string()));
        let forwarded = Forwarded {
            client_ip: ctx.conn.remote.ip(),
            proto: ctx.conn.proto,
            host: host.as_deref(),
        };
        let uri = ctx.uri.clone();
        let response = self
            .upstream
            .forward(
                endpoints,
                api.timeout,
                parts,
                body,
                route.resource_path(uri.path()),
                forwarded,
            )
            .await?;
        match (ctx.cache_key.take(), api.cache_ttl) {
            (Some(key), Some(ttl))
                if ResponseCache::cacheable(response.status(), response.headers()) =>
            {
                Ok(self.cache.tee(key, ttl, response))
            }
            _ => {
                let (parts, body) = response.into_parts();
                Ok(Response::from_parts(
                    parts,
                    GatewayBody::streamed_prefetched(body).await,
                ))
            }
        }
    }

    /// Phase 11. Adds the CORS headers for an allowed origin and the `X-RateLimit-*`
    /// headers of the most constrained tier, to every answer (refusals included).
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

    /// Phase 12. Metrics (requests by API and status, latency to response headers)
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
                application = ctx.claims.as_ref().map_or("-", |c| c.application_id.as_str()),
                cache = if ctx.cache_hit { "hit" } else { "-" },
                micros = elapsed.as_micros() as u64,
            );
        }
    }
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

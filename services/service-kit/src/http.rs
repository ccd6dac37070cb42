//! The routes and layers every backend shares.
//!
//! [`service_router`] takes a service's own routes and adds, in this order:
//!
//! 1. `GET /health` → `{"status":"UP"}` and `GET /openapi.json`;
//! 2. JSON fallbacks: unknown route → 404, known route but wrong method → 405;
//! 3. one middleware (`observe`) around everything that stamps the
//!    [`BACKEND_HEADER`] on every response — so a gateway test can tell which
//!    backend answered — and logs one line per request with the caller's W3C
//!    `traceparent`, if any. The request's span continues the caller's trace (W3C
//!    trace context), so with OpenTelemetry export on, the backend's spans join
//!    the gateway's trace in Jaeger.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;
use tracing::Instrument;

use crate::{ApiError, ServiceInfo};

/// Response header naming the backend that produced the response.
pub const BACKEND_HEADER: HeaderName = HeaderName::from_static("x-backend");

/// W3C trace-context header forwarded by the gateways.
pub const TRACEPARENT_HEADER: HeaderName = HeaderName::from_static("traceparent");

/// Wraps a service's `routes` with the shared routes, fallbacks and layers
/// (see the module docs). `openapi` is served verbatim at `/openapi.json`.
pub fn service_router(info: ServiceInfo, routes: Router, openapi: &Value) -> Router {
    // Serialised once; the document is immutable for the process lifetime.
    let openapi = Bytes::from(serde_json::to_vec(openapi).expect("a JSON value serialises"));
    routes
        .route("/health", get(health))
        .route(
            "/openapi.json",
            get(move || async move { ([(CONTENT_TYPE, "application/json")], openapi) }),
        )
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(info, observe))
}

/// The answer of a `GET /<things>/{id}`: `record`, the `kind` `id`, as JSON, or a 404
/// `<kind> <id> not found`.
pub fn found<T: Serialize>(kind: &str, id: u64, record: Option<T>) -> Result<Json<T>, ApiError> {
    record
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("{kind} {id} not found")))
}

/// The answer of a `POST` that made `record`: 201 Created, `Location: location`, and
/// the record as JSON.
pub fn created<T: Serialize>(location: String, record: T) -> impl IntoResponse {
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(record),
    )
}

async fn health() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "UP" }))
}

async fn route_not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}

/// Per-request middleware: tags the response with [`BACKEND_HEADER`] and logs
/// method, path, status, latency and `traceparent`. Health probes (every few
/// seconds under Docker) are logged at debug level to keep logs readable.
async fn observe(State(info): State<ServiceInfo>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let traceparent = request
        .headers()
        .get(TRACEPARENT_HEADER)
        .map(|v| v.to_str().unwrap_or("<non-ascii>").to_owned());
    let span = tracing::info_span!(
        "request",
        otel.name = %format!("{method} {path}"),
        otel.kind = "server",
        service = info.name,
        %method,
        %path,
        traceparent = traceparent.as_deref().unwrap_or("-"),
        http.response.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    gatehouse_telemetry::set_parent_from(
        &span,
        request
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))),
    );

    let mut response = next.run(request).instrument(span.clone()).await;
    response
        .headers_mut()
        .insert(BACKEND_HEADER, HeaderValue::from_static(info.name));

    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    span.in_scope(|| {
        if path == "/health" {
            tracing::debug!(status, latency_us, "handled");
        } else {
            tracing::info!(status, latency_us, "handled");
        }
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    const INFO: ServiceInfo = ServiceInfo {
        name: "test-service",
        version: "0.0.0",
        title: "Test",
        description: "A test service.",
    };

    fn app() -> Router {
        let routes = Router::new().route("/things", get(|| async { "things" }));
        service_router(INFO, routes, &serde_json::json!({ "openapi": "3.0.3" }))
    }

    async fn call(method: &str, uri: &str) -> (StatusCode, header::HeaderMap, Value) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let response = app().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (parts.status, parts.headers, json)
    }

    #[tokio::test]
    async fn every_response_names_the_backend() {
        for uri in ["/things", "/health", "/openapi.json", "/nope"] {
            let (_, headers, _) = call("GET", uri).await;
            assert_eq!(headers[BACKEND_HEADER], "test-service", "{uri}");
        }
    }

    #[tokio::test]
    async fn wrong_method_is_json_405() {
        let (status, headers, body) = call("DELETE", "/things").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(body["error"], "method not allowed");
        assert_eq!(headers[header::ALLOW], "GET,HEAD");
    }

    #[tokio::test]
    async fn unknown_route_is_json_404() {
        let (status, _, body) = call("GET", "/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"], "not found");
        assert_eq!(body["message"], "no route for GET /nope");
    }
}

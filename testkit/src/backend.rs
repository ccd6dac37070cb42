//! Backends served in-process, for gateways to route to: any axum router, the seed's
//! two backends, and an echo backend that tells a test what reached it.
//!
//! Each is served on a free loopback port by a Tokio task of the test's runtime, and
//! lives as long as that runtime.
//!
//! # Shared state
//!
//! None; [`echo_backend`]'s call counter is shared only with its caller.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::BodyExt;

/// Serves `router` on a free loopback port; its address.
pub async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("cannot bind a loopback port");
    let addr = listener.local_addr().expect("a bound address");
    tokio::spawn(async move {
        axum::serve(listener, router)
            .await
            .expect("the test backend stopped");
    });
    addr
}

/// The seed's two backends, in-process: (client-service, order-service) base URLs.
pub async fn seed_backends() -> (String, String) {
    let client = serve(client_service::router()).await;
    let order = serve(order_service::router()).await;
    (format!("http://{client}"), format!("http://{order}"))
}

/// A backend that answers every call with what it received (method, path and query,
/// headers, body) as JSON, after `?sleep_ms=` if asked; `X-Backend` is its name.
/// Returns its base URL and its call counter.
pub async fn echo_backend(name: &'static str) -> (String, Arc<AtomicU64>) {
    let calls = Arc::new(AtomicU64::new(0));
    let counter = calls.clone();
    let router = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let uri = request.uri().clone();
            if let Some(ms) = uri
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("sleep_ms=")))
                .and_then(|v| v.parse::<u64>().ok())
            {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let headers: BTreeMap<String, String> = request
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_string()))
                .collect();
            let method = request.method().to_string();
            let body = request
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            axum::response::Response::builder()
                .header("x-backend", name)
                .header("content-type", "application/json")
                .body(axum::body::Body::from(
                    serde_json::json!({
                        "method": method,
                        "uri": uri.to_string(),
                        "headers": headers,
                        "body": String::from_utf8_lossy(&body),
                    })
                    .to_string(),
                ))
                .expect("a valid response")
        }
    });
    let addr = serve(router).await;
    (format!("http://{addr}"), calls)
}

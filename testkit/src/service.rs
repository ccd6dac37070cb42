//! What the demo backends' own tests check: requests to the router in-process, the
//! OpenAPI document, and the real binary's life (ready line, healthcheck, SIGTERM).
//!
//! * [`TestClient`] drives a router in-process with `tower::ServiceExt::oneshot` and
//!   checks the invariants every response must keep (JSON body, `X-Backend` header);
//! * [`openapi_operations`] and [`dangling_schema_refs`] read an OpenAPI document;
//! * the `check_*` functions are the cases both backends must pass (JSON errors, the
//!   health route, the OpenAPI document, trace context), each asserting all it says;
//! * [`SpawnedService`] runs the real binary (a [`Process`]) and
//!   [`check_the_binary_serves_its_healthcheck_and_stops_on_sigterm`] is the test
//!   both backends run against theirs.
//!
//! # Shared state
//!
//! None.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use service_kit::BACKEND_HEADER;
use tower::ServiceExt;

use crate::process::Process;

/// Sends requests to an in-process router. Every reply is asserted to be
/// `application/json` (parsed into [`Reply::body`]) and to carry
/// `X-Backend: {backend}`, so each test also checks those invariants.
#[derive(Clone)]
pub struct TestClient {
    app: Router,
    backend: &'static str,
}

/// A response with its body parsed as JSON.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl TestClient {
    pub fn new(app: Router, backend: &'static str) -> Self {
        Self { app, backend }
    }

    /// Sends `method uri`, with `body` as `(content type, text)` if given.
    ///
    /// # Panics
    /// If the router fails, or the reply is not JSON from `backend`.
    pub async fn send(&self, method: &str, uri: &str, body: Option<(&str, &str)>) -> Reply {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some((content_type, _)) = body {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let body = body.map_or_else(Body::empty, |(_, text)| Body::from(text.to_owned()));
        let request = request.body(body).expect("valid request");
        let response = self.app.clone().oneshot(request).await.expect("infallible");

        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(
            parts
                .headers
                .get(header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap_or("?")),
            Some("application/json"),
            "{method} {uri}: not JSON: {text}"
        );
        assert_eq!(
            parts
                .headers
                .get(BACKEND_HEADER)
                .map(|v| v.to_str().unwrap_or("?")),
            Some(self.backend),
            "{method} {uri}: X-Backend"
        );
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{method} {uri}: bad JSON ({e}): {text}"));
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub async fn get(&self, uri: &str) -> Reply {
        self.send("GET", uri, None).await
    }

    /// POSTs `body` as `application/json`.
    pub async fn post_json(&self, uri: &str, body: &Value) -> Reply {
        self.send("POST", uri, Some(("application/json", &body.to_string())))
            .await
    }
}

impl Reply {
    /// Asserts a 422 `validation failed` whose `fields` are exactly
    /// `expected` `(field, message)` pairs, in order. `case` labels failures.
    pub fn assert_field_errors(&self, expected: &[(&str, &str)], case: &str) {
        assert_eq!(
            self.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{case}: {}",
            self.body
        );
        assert_eq!(self.body["error"], "validation failed", "{case}");
        let fields: Vec<(&str, &str)> = self.body["fields"]
            .as_array()
            .unwrap_or_else(|| panic!("{case}: no fields in {}", self.body))
            .iter()
            .map(|f| {
                (
                    f["field"].as_str().unwrap_or("<none>"),
                    f["message"].as_str().unwrap_or("<none>"),
                )
            })
            .collect();
        assert_eq!(fields, expected, "{case}");
    }

    /// The length of a JSON-array body.
    pub fn len(&self) -> usize {
        self.body
            .as_array()
            .unwrap_or_else(|| panic!("not an array: {}", self.body))
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `(METHOD, path)` of every operation in an OpenAPI document.
pub fn openapi_operations(doc: &Value) -> BTreeSet<(String, String)> {
    doc["paths"]
        .as_object()
        .expect("paths object")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("path item object")
                .keys()
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect()
}

/// Names referenced as `#/components/schemas/NAME` that `doc` does not define.
pub fn dangling_schema_refs(doc: &Value) -> Vec<String> {
    let text = doc.to_string();
    text.split("\"#/components/schemas/")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|name| doc["components"]["schemas"].get(name).is_none())
        .map(str::to_owned)
        .collect()
}

/// Every one of `texts`, POSTed to `path` as `application/json`, is refused with a JSON
/// 400 whose message says the body is not JSON.
pub async fn check_malformed_json_is_json_400(client: &TestClient, path: &str, texts: &[&str]) {
    for text in texts {
        let reply = client
            .send("POST", path, Some(("application/json", text)))
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{text:?}");
        assert_eq!(reply.body["error"], "bad request", "{text:?}");
        let message = reply.body["message"].as_str().unwrap();
        assert!(message.contains("as JSON"), "{text:?}: {message}");
    }
}

/// `GET <collection>/<id>` with an id that is not a plain number is a JSON 400.
pub async fn check_non_numeric_ids_are_json_400(client: &TestClient, collection: &str) {
    for id in ["abc", "-1", "1.5", "+1", "%20", "99999999999999999999999"] {
        let reply = client.get(&format!("{collection}/{id}")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{id}");
        assert_eq!(reply.body["error"], "bad request", "{id}");
        let message = reply.body["message"].as_str().unwrap();
        assert!(message.starts_with("invalid id"), "{id}: {message}");
    }
}

/// `GET uri` (an unknown id) is a JSON 404 with `message`.
pub async fn check_an_unknown_id_is_json_404(client: &TestClient, uri: &str, message: &str) {
    let reply = client.get(uri).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(
        reply.body,
        serde_json::json!({ "error": "not found", "message": message })
    );
}

/// `GET` on each of `uris` is a JSON 404 naming the route.
pub async fn check_unknown_routes_are_json_404(client: &TestClient, uris: &[&str]) {
    for uri in uris {
        let reply = client.get(uri).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(
            reply.body,
            serde_json::json!({ "error": "not found", "message": format!("no route for GET {uri}") })
        );
    }
}

/// `method uri` (a GET-only route) is a JSON 405 with `Allow: GET,HEAD`.
pub async fn check_a_wrong_method_is_json_405(client: &TestClient, method: &str, uri: &str) {
    let reply = client.send(method, uri, None).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.body["error"], "method not allowed");
    assert_eq!(reply.headers[header::ALLOW], "GET,HEAD");
}

/// A request carrying a W3C `traceparent` is served, by `backend`.
pub async fn check_a_traceparent_request_is_served(app: Router, uri: &str, backend: &str) {
    let request = Request::builder()
        .uri(uri)
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(Body::empty())
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-backend"], backend);
}

/// `/health` answers `{"status": "UP"}`.
pub async fn check_health_is_up(client: &TestClient) {
    let reply = client.get("/health").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, serde_json::json!({ "status": "UP" }));
}

/// `/openapi.json` is an OpenAPI 3.0 document of `version` listing exactly the
/// operations `expected` (method, path), with no dangling schema reference.
pub async fn check_the_openapi_document_lists(
    client: &TestClient,
    version: &str,
    expected: &[(&str, &str)],
) {
    let reply = client.get("/openapi.json").await;
    assert_eq!(reply.status, StatusCode::OK);
    let doc = reply.body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.0."));
    assert_eq!(doc["info"]["version"], version);
    let expected: BTreeSet<(String, String)> = expected
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(openapi_operations(&doc), expected);
    assert_eq!(dangling_schema_refs(&doc), Vec::<String>::new());
}

/// Every operation of `/openapi.json` is routed (no 404, no 405), with `{id}` = 1.
pub async fn check_every_documented_operation_is_routed(client: &TestClient) {
    let doc = client.get("/openapi.json").await.body;
    for (method, path) in openapi_operations(&doc) {
        let uri = path.replace("{id}", "1");
        let body = (method == "POST").then_some(("application/json", "{}"));
        let reply = client.send(&method, &uri, body).await;
        assert!(
            reply.status != StatusCode::NOT_FOUND && reply.status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri} is documented but answers {}",
            reply.status
        );
    }
}

/// How long a spawned binary may take to log `ready on`, or to exit.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(30);

/// A service binary started with `--port 0`, killed on drop.
pub struct SpawnedService {
    pub process: Process,
    /// The address from the `ready on ADDR` log line.
    pub addr: SocketAddr,
}

impl SpawnedService {
    /// Starts `bin --port 0` and waits for its `ready on ADDR` log line.
    ///
    /// # Panics
    ///
    /// If the binary does not start, exits early or is not ready within
    /// [`PROCESS_TIMEOUT`].
    pub fn start(bin: impl AsRef<Path>) -> Self {
        let bin = bin.as_ref();
        let name = bin.file_name().map_or_else(
            || "service".to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let mut process = Process::builder(name, bin)
            .args(["--port", "0"])
            .timeout(PROCESS_TIMEOUT)
            .spawn();
        let line = process.wait_for_line("ready on ");
        let addr = ready_addr(&line).unwrap_or_else(|| panic!("no address in {line:?}"));
        Self { process, addr }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Sends SIGTERM, waits for exit, and returns the exit status with the log lines
    /// printed after `ready on`.
    pub fn terminate(mut self) -> (ExitStatus, Vec<String>) {
        let status = self.process.terminate();
        let output = self.process.output_of_this_run();
        let rest = output
            .lines()
            .skip_while(|line| ready_addr(line).is_none())
            .skip(1)
            .map(str::to_owned)
            .collect();
        (status, rest)
    }
}

/// Runs `bin healthcheck --port PORT` and returns its exit status.
pub fn run_healthcheck(bin: impl AsRef<Path>, port: u16) -> ExitStatus {
    Process::builder("healthcheck", bin.as_ref())
        .args(["healthcheck", "--port", &port.to_string()])
        .timeout(PROCESS_TIMEOUT)
        .spawn()
        .wait_for_exit()
}

/// The real binary `bin` (a backend): it logs `ready on ADDR`, its `healthcheck`
/// subcommand passes against it, it stops gracefully on SIGTERM (and says so), and the
/// healthcheck then fails with exit code 1.
pub fn check_the_binary_serves_its_healthcheck_and_stops_on_sigterm(bin: &str) {
    let service = SpawnedService::start(bin);
    let port = service.port();
    assert_ne!(port, 0);

    let status = run_healthcheck(bin, port);
    assert!(
        status.success(),
        "healthcheck against live service: {status}"
    );

    let (exit, logs) = service.terminate();
    assert!(exit.success(), "graceful shutdown: {exit}; logs: {logs:#?}");
    assert!(
        logs.iter().any(|l| l.contains("SIGTERM")) && logs.iter().any(|l| l.contains("stopped")),
        "shutdown not logged: {logs:#?}"
    );

    let status = run_healthcheck(bin, port);
    assert_eq!(status.code(), Some(1), "healthcheck with nothing listening");
}

/// `... ready on 0.0.0.0:41234 ...` → the address.
fn ready_addr(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("ready on ")?;
    rest.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_ready_addr_in_log_line() {
        let line = "2025-01-01T00:00:00Z  INFO service_kit::server: ready on 0.0.0.0:41234 \
                    service=\"client-service\"";
        assert_eq!(
            super::ready_addr(line),
            Some("0.0.0.0:41234".parse().unwrap())
        );
        assert_eq!(super::ready_addr("starting"), None);
    }

    #[test]
    fn finds_dangling_refs() {
        let doc = serde_json::json!({
            "paths": { "/a": { "get": { "schema": { "$ref": "#/components/schemas/A" } } } },
            "components": { "schemas": { "B": { "$ref": "#/components/schemas/B" } } }
        });
        assert_eq!(super::dangling_schema_refs(&doc), ["A"]);
    }
}

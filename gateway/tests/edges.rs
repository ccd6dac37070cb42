//! The gateway's public edges under abuse (issue 11), over real sockets: each test
//! replays one attack against a gateway running in-process on an embedded log and
//! asserts the refusal — too many connections, slow request heads, idle HTTP/1 and
//! HTTP/2 connections, a chunked body over the limit, a slow body, a forged `Host`
//! poisoning the response cache, answers that must not be cached, `//admin` past an
//! open `/*`, forged `X-Forwarded-For`, and a 503 that would tell the backend's URL.
//!
//! What needs no socket (each path refusal, 413 by `Content-Length`) is in
//! `tests/phases.rs`; the cache's rules are unit tests of `src/cache.rs`.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use gatehouse_gateway::{GatewayConfig, RunningGateway};
use gatehouse_proto::events::{ApiDefinition, Resource};
use gatehouse_testkit::poll::Poll;
use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A world with `/edge/1.0.0`, whose backend is `backend`: `GET /users`, `POST /items`,
/// an open `GET /*` (authentication off) and `GET /admin` with scope `admin:read`
/// granted to `app1`'s subscription, tweaked by `api`; a gateway on it, tweaked by
/// `config`.
struct Edge {
    world: World,
    gw: RunningGateway,
    http: HttpClient,
    _dir: tempfile::TempDir,
}

impl Edge {
    async fn start(
        backend: String,
        api: impl FnOnce(&mut ApiDefinition),
        config: impl FnOnce(&mut GatewayConfig),
    ) -> Edge {
        let world = World::new().await;
        let mut definition = common::api(
            "Edge",
            "/edge",
            "1.0.0",
            resources(&[("GET", "/users"), ("POST", "/items")]),
            &[backend],
        );
        definition.resources.push(Resource {
            method: "GET".into(),
            path: "/*".into(),
            auth_disabled: true,
            ..Default::default()
        });
        definition.resources.push(Resource {
            method: "GET".into(),
            path: "/admin".into(),
            scopes: vec!["admin:read".into()],
            ..Default::default()
        });
        api(&mut definition);
        world.publish_api("edge", definition).await;
        world.application("app1", "").await;
        world.subscribe("sub1", "app1", "edge", "Unlimited").await;
        world
            .run(gatehouse_domain::Command::GrantSubscriptionScopes {
                subscription_id: "sub1".into(),
                scopes: vec!["admin:read".into()],
            })
            .await;
        let dir = tempfile::tempdir().unwrap();
        let gw = gateway(&world, dir.path(), config).await;
        Edge {
            world,
            gw,
            http: HttpClient::default(),
            _dir: dir,
        }
    }

    async fn echo(
        api: impl FnOnce(&mut ApiDefinition),
        config: impl FnOnce(&mut GatewayConfig),
    ) -> (Edge, Arc<AtomicU64>) {
        let (echo, calls) = echo_backend("echo").await;
        (Edge::start(echo, api, config).await, calls)
    }

    fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gw.http_addr)
    }

    fn token(&self) -> String {
        self.world.token("app1", false, "admin:read")
    }

    /// The value of the scalar metric `name` (read over HTTPS: the HTTP listener may
    /// be the one under test).
    async fn metric(&self, name: &str) -> u64 {
        let text = self
            .http
            .get(&format!("https://{}/metrics", self.gw.https_addr), None)
            .await
            .text();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .parse()
            .unwrap()
    }
}

/// Writes `bytes` on a new connection to `addr`.
async fn send(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// Reads until the gateway closes the connection (or `within` passes): what it sent,
/// and whether it closed.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into(), false),
        }
    }
}

/// Reads one HTTP/1.1 response head and its `Content-Length` body.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if out.len() >= end + 4 + length {
                return text;
            }
        }
        let n = tokio::time::timeout(CONVERGE, stream.read(&mut buf))
            .await
            .expect("a response")
            .unwrap();
        assert!(n > 0, "closed before a whole response: {text:?}");
        out.extend_from_slice(&buf[..n]);
    }
}

const HEALTH: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n";

/// Attack: open connections until the gateway runs out of file descriptors. Past
/// `--max-connections` a listener accepts and closes at once (counted), and serves
/// again once a connection has gone.
#[tokio::test]
async fn a_listener_past_its_connection_cap_closes_new_connections_at_once() {
    let (edge, _) = Edge::echo(|_| {}, |c| c.limits.max_connections = 2).await;
    let addr = edge.gw.http_addr;
    let first = TcpStream::connect(addr).await.unwrap();
    let _second = TcpStream::connect(addr).await.unwrap();
    // Both are counted before the third arrives.
    Poll::new("two open connections")
        .timeout(CONVERGE)
        .until_async(|| async {
            let open = edge.metric("gatehouse_gateway_connections_open").await;
            // The metrics call itself is one more, on the HTTPS listener.
            (open >= 3).then_some(())
        })
        .await;
    let started = Instant::now();
    let mut third = send(addr, HEALTH).await;
    let (answer, closed) = read_to_close(&mut third, Duration::from_secs(5)).await;
    assert!(closed && answer.is_empty(), "closed unanswered: {answer:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "at once");
    assert_eq!(
        edge.metric("gatehouse_gateway_connections_refused_total")
            .await,
        1
    );
    // The HTTPS listener has a cap of its own: it still serves.
    let https = edge
        .http
        .get(&format!("https://{}/healthz", edge.gw.https_addr), None)
        .await;
    assert_eq!(https.status, StatusCode::OK);
    // A connection goes: the listener serves again.
    drop(first);
    Poll::new("the HTTP listener to serve again")
        .timeout(CONVERGE)
        .until_async(|| async {
            let mut stream = send(addr, HEALTH).await;
            let (answer, _) = read_to_close(&mut stream, Duration::from_millis(500)).await;
            answer.starts_with("HTTP/1.1 200").then_some(())
        })
        .await;
}

/// Attack: slowloris, a request head sent a byte at a time. The head must be whole
/// within `--header-read-timeout-seconds` (here 1 s) of its first byte, while an idle
/// keep-alive connection may wait for its next request up to its own, longer timeout.
#[tokio::test]
async fn a_slow_request_head_is_cut_off_but_an_idle_keep_alive_connection_waits() {
    let (edge, _) = Edge::echo(
        |_| {},
        |c| {
            c.limits.header_read_timeout_seconds = 1;
            c.limits.http1_keep_alive_idle_seconds = 3;
        },
    )
    .await;
    let addr = edge.gw.http_addr;
    // A head that never ends.
    let started = Instant::now();
    let mut slow = send(addr, b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Slow: ").await;
    let (answer, closed) = read_to_close(&mut slow, Duration::from_secs(10)).await;
    assert!(closed, "the slow head's connection was closed");
    assert!(answer.is_empty(), "{answer:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "closed after the header timeout: {took:?}"
    );
    assert!(edge.metric("gatehouse_gateway_header_timeouts_total").await >= 1);
    // A keep-alive connection, idle longer than the header timeout between requests.
    let mut keep = send(addr, HEALTH).await;
    assert!(read_response(&mut keep).await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    keep.write_all(HEALTH).await.unwrap();
    assert!(
        read_response(&mut keep).await.starts_with("HTTP/1.1 200"),
        "idle 1.5 s (past the header timeout) is not a slow head"
    );
    // ... and then closed once idle past its keep-alive timeout.
    let idle = Instant::now();
    let (_, closed) = read_to_close(&mut keep, Duration::from_secs(10)).await;
    assert!(closed);
    assert!(
        idle.elapsed() >= Duration::from_millis(2500),
        "{:?}",
        idle.elapsed()
    );
    assert!(edge.metric("gatehouse_gateway_idle_closes_total").await >= 1);
}

/// Attack: request heads that fill the gateway's memory (huge or countless headers).
/// Past `--max-header-bytes` or `--max-headers`: 431, and the connection is closed.
#[tokio::test]
async fn an_oversized_request_head_is_431() {
    let (edge, calls) = Edge::echo(
        |_| {},
        |c| {
            c.limits.max_header_bytes = 16 * 1024;
            c.limits.max_headers = 20;
        },
    )
    .await;
    let big = format!(
        "GET /edge/1.0.0/page HTTP/1.1\r\nHost: gw\r\nX-Big: {}\r\n\r\n",
        "x".repeat(20 * 1024)
    );
    let many: String = (0..30).map(|i| format!("X-H{i}: 1\r\n")).collect();
    let many = format!("GET /edge/1.0.0/page HTTP/1.1\r\nHost: gw\r\n{many}\r\n");
    for head in [big, many] {
        let mut stream = send(edge.gw.http_addr, head.as_bytes()).await;
        let (answer, closed) = read_to_close(&mut stream, Duration::from_secs(10)).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
        assert!(closed);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // Within the limits, the same call is served.
    let ok = edge
        .http
        .get(&edge.http_url("/edge/1.0.0/page"), None)
        .await;
    assert_eq!(ok.status, StatusCode::OK);
}

/// Attack: park HTTP/2 connections, each holding gateway memory for ever. With no
/// request in flight for `--http2-idle-seconds` the gateway sends GOAWAY and closes;
/// a long request in flight keeps its connection.
#[tokio::test]
async fn an_idle_http2_connection_is_closed_but_not_one_with_a_request_in_flight() {
    let (edge, _) = Edge::echo(
        |_| {},
        |c| {
            c.limits.http2_idle_seconds = 1;
            c.limits.header_read_timeout_seconds = 1;
        },
    )
    .await;
    let tcp = TcpStream::connect(edge.gw.http_addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let connection = tokio::spawn(connection);
    let get = |path: &str| {
        http::Request::builder()
            .uri(format!("http://{}{path}", edge.gw.http_addr))
            .header("authorization", format!("Bearer {}", edge.token()))
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap()
    };
    // In flight for 2.5 s, longer than the idle timeout: served.
    let response = sender
        .send_request(get("/edge/1.0.0/users?sleep_ms=2500"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_2);
    drop(response);
    // Then idle: closed.
    let idle = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("the gateway closes the idle HTTP/2 connection")
        .unwrap()
        .unwrap();
    assert!(
        idle.elapsed() >= Duration::from_millis(900),
        "{:?}",
        idle.elapsed()
    );
    assert!(sender.ready().await.is_err(), "no more requests on it");
    assert!(edge.metric("gatehouse_gateway_idle_closes_total").await >= 1);
}

/// A chunked request: head, then `chunks` (no final chunk).
fn chunked(path: &str, token: &str, chunks: &[usize]) -> Vec<u8> {
    let mut out = format!(
        "POST {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\n\
         Transfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
    )
    .into_bytes();
    for &n in chunks {
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend(std::iter::repeat_n(b'x', n));
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Attack: a chunked upload with no `Content-Length`, past the API's body limit. It is
/// cut off as it passes the limit: the client gets 413 in WSO2's shape, the backend
/// never a whole body. A body within the limit still streams.
#[tokio::test]
async fn a_chunked_body_past_the_limit_is_413() {
    let (edge, calls) = Edge::echo(|d| d.max_request_body_bytes = 1000, |_| {}).await;
    let token = edge.token();
    let mut stream = send(
        edge.gw.http_addr,
        &chunked("/edge/1.0.0/items", &token, &[600, 600]),
    )
    .await;
    let (answer, _) = read_to_close(&mut stream, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["code"], 413);
    assert_eq!(json["message"], "Request Entity Too Large");
    // Within the limit: the whole body reaches the backend.
    let mut request = chunked("/edge/1.0.0/items", &token, &[400, 500]);
    request.extend_from_slice(b"0\r\n\r\n");
    let mut stream = send(edge.gw.http_addr, &request).await;
    let answer = read_response(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(&"x".repeat(900)), "{answer}");
    assert!(calls.load(Ordering::SeqCst) >= 1);
}

/// Attack: a body trickled slower than the gateway waits for (`--body-read-timeout-
/// seconds`, here 1 s), holding a backend connection. 408 in WSO2's shape.
#[tokio::test]
async fn a_stalled_body_is_408() {
    let (edge, _) = Edge::echo(|_| {}, |c| c.limits.body_read_timeout_seconds = 1).await;
    let started = Instant::now();
    let mut stream = send(
        edge.gw.http_addr,
        &chunked("/edge/1.0.0/items", &edge.token(), &[10]),
    )
    .await;
    let (answer, _) = read_to_close(&mut stream, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":408"#), "{answer}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(8),
        "{took:?}"
    );
}

/// Attack: cache poisoning by a forged `Host`. The backend builds links from
/// `X-Forwarded-Host`; a client sends `Host: evil.example` to a cached resource. The
/// answer is cached under that host only: another client never gets it.
#[tokio::test]
async fn a_forged_host_is_never_served_to_others_from_the_cache() {
    let (edge, calls) = Edge::echo(
        |d| {
            d.cache = Some(gatehouse_proto::events::ResponseCache {
                enabled: true,
                ttl_seconds: 300,
            })
        },
        |_| {},
    )
    .await;
    let url = edge.http_url("/edge/1.0.0/page");
    let forged = [("host", "evil.example")];
    let seen_host = |reply: &Reply| reply.json()["headers"]["x-forwarded-host"].clone();
    let attacker = edge.http.call(Method::GET, &url, None, &forged).await;
    assert_eq!(attacker.status, StatusCode::OK, "{attacker:?}");
    assert_eq!(seen_host(&attacker), "evil.example");
    let victim = edge.http.get(&url, None).await;
    assert_eq!(victim.header("x-cache"), None, "not the forged answer");
    assert_eq!(seen_host(&victim), edge.gw.http_addr.to_string());
    let again = edge.http.get(&url, None).await;
    assert_eq!(again.header("x-cache"), Some("HIT"));
    assert_eq!(seen_host(&again), edge.gw.http_addr.to_string());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // A Host that is not a host at all is not one to forward.
    let garbage = edge
        .http
        .call(Method::GET, &url, None, &[("host", "a@b c")])
        .await;
    assert!(
        garbage.status.is_client_error() || seen_host(&garbage).is_null(),
        "{garbage:?}"
    );
}

/// A backend whose answers say how they may be cached: `/cc/<value>` answers with
/// `Cache-Control: <value>`, `/vary/<value>` with `Vary: <value>` and the request's
/// `X-Tenant` in the body, `/cookie` with `Set-Cookie`. Counts its calls.
async fn directive_backend() -> (String, Arc<AtomicU64>) {
    use axum::extract::{Path, Request};
    use axum::response::IntoResponse;
    let calls = Arc::new(AtomicU64::new(0));
    let count = |calls: &Arc<AtomicU64>| {
        calls.fetch_add(1, Ordering::SeqCst);
    };
    let (c1, c2, c3) = (calls.clone(), calls.clone(), calls.clone());
    let router = axum::Router::new()
        .route(
            "/cc/{value}",
            axum::routing::get(move |Path(value): Path<String>| async move {
                count(&c1);
                ([("cache-control", value)], "cc").into_response()
            }),
        )
        .route(
            "/vary/{value}",
            axum::routing::get(
                move |Path(value): Path<String>, request: Request| async move {
                    count(&c2);
                    let tenant = request
                        .headers()
                        .get("x-tenant")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_string();
                    ([("vary", value)], tenant).into_response()
                },
            ),
        )
        .route(
            "/cookie",
            axum::routing::get(move || async move {
                count(&c3);
                ([("set-cookie", "session=1")], "cookie").into_response()
            }),
        );
    (format!("http://{}", serve(router).await), calls)
}

/// Attack: answers meant for one client (`no-store`, `no-cache`, `private`,
/// `Set-Cookie`, `Vary: *`) stored and served to the next. None is stored; a `Vary`'d
/// answer is served only to requests with the same header values.
#[tokio::test]
async fn answers_that_must_not_be_cached_are_not_and_vary_is_honoured() {
    let (backend, calls) = directive_backend().await;
    let edge = Edge::start(
        backend,
        |d| {
            d.cache = Some(gatehouse_proto::events::ResponseCache {
                enabled: true,
                ttl_seconds: 300,
            })
        },
        |_| {},
    )
    .await;
    let twice = |path: &'static str, headers: &'static [(&'static str, &'static str)]| {
        let edge = &edge;
        async move {
            let url = edge.http_url(path);
            let first = edge.http.call(Method::GET, &url, None, headers).await;
            assert_eq!(first.status, StatusCode::OK, "{path}: {first:?}");
            edge.http.call(Method::GET, &url, None, headers).await
        }
    };
    for path in [
        "/edge/1.0.0/cc/no-store",
        "/edge/1.0.0/cc/no-cache",
        "/edge/1.0.0/cc/private",
        "/edge/1.0.0/cookie",
        "/edge/1.0.0/vary/*",
    ] {
        let before = calls.load(Ordering::SeqCst);
        let second = twice(path, &[]).await;
        assert_eq!(second.header("x-cache"), None, "{path} was stored");
        assert_eq!(calls.load(Ordering::SeqCst), before + 2, "{path}");
    }
    // A cacheable answer, for contrast.
    let second = twice("/edge/1.0.0/cc/max-age=60", &[]).await;
    assert_eq!(second.header("x-cache"), Some("HIT"));
    // Vary: X-Tenant — tenant b never gets tenant a's answer.
    let a = twice("/edge/1.0.0/vary/x-tenant", &[("x-tenant", "a")]).await;
    assert_eq!((a.header("x-cache"), a.text().as_str()), (Some("HIT"), "a"));
    let b = edge
        .http
        .call(
            Method::GET,
            &edge.http_url("/edge/1.0.0/vary/x-tenant"),
            None,
            &[("x-tenant", "b")],
        )
        .await;
    assert_eq!((b.header("x-cache"), b.text().as_str()), (None, "b"));
}

/// Attack: `GET /edge/1.0.0//admin` matched the open `/*` and reached a backend that
/// merges slashes, i.e. its `/admin`, without a token. Now `//` is merged before
/// routing: the call is `/admin`'s, needs a token and its scope, and the backend gets
/// `/admin`. Encoded separators and path parameters are 400.
#[tokio::test]
async fn a_doubled_slash_never_reaches_an_open_wildcard() {
    let (edge, calls) = Edge::echo(|_| {}, |_| {}).await;
    let anonymous = edge
        .http
        .get(&edge.http_url("/edge/1.0.0//admin"), None)
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{anonymous:?}");
    assert_eq!(anonymous.code(), 900902);
    for path in [
        "/edge/1.0.0/x%2F..%2Fadmin",
        "/edge/1.0.0/x%5Cadmin",
        "/edge/1.0.0/admin;x=1",
        "/edge/1.0.0/%2e%2e/edge/1.0.0/admin",
    ] {
        let refused = edge.http.get(&edge.http_url(path), None).await;
        assert_eq!(
            (refused.status, refused.code()),
            (StatusCode::BAD_REQUEST, 400),
            "{path}: {refused:?}"
        );
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "nothing reached the backend"
    );
    let authorised = edge
        .http
        .get(
            &edge.http_url("/edge/1.0.0//admin?x=1"),
            Some(&edge.token()),
        )
        .await;
    assert_eq!(authorised.status, StatusCode::OK, "{authorised:?}");
    assert_eq!(
        authorised.json()["uri"],
        "/admin?x=1",
        "the path matched is the path forwarded"
    );
    let open = edge
        .http
        .get(&edge.http_url("/edge/1.0.0/%61bout"), None)
        .await;
    assert_eq!(open.json()["uri"], "/about");
}

/// Attack: a client forges `X-Forwarded-For` to pass for another address (allow lists,
/// audit logs). Only a trusted proxy's chain is kept.
#[tokio::test]
async fn forwarded_for_is_the_connections_unless_the_peer_is_a_trusted_proxy() {
    let forged = [
        ("x-forwarded-for", "10.9.9.9"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-proto", "https"),
    ];
    let (edge, _) = Edge::echo(|_| {}, |_| {}).await;
    let seen = edge
        .http
        .call(
            Method::GET,
            &edge.http_url("/edge/1.0.0/page"),
            None,
            &forged,
        )
        .await
        .json()["headers"]
        .clone();
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-host"], edge.gw.http_addr.to_string());
    assert_eq!(seen["x-forwarded-proto"], "http");
    let (trusting, _) = Edge::echo(
        |_| {},
        |c| c.limits.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()],
    )
    .await;
    let seen = trusting
        .http
        .call(
            Method::GET,
            &trusting.http_url("/edge/1.0.0/page"),
            None,
            &forged,
        )
        .await
        .json()["headers"]
        .clone();
    assert_eq!(seen["x-forwarded-for"], "10.9.9.9, 127.0.0.1");
    assert_eq!(seen["x-forwarded-host"], "evil.example");
    assert_eq!(seen["x-forwarded-proto"], "https");
}

/// Attack: reconnaissance through error bodies. A 503 named the backend's URL and the
/// error chain (`Connection refused`, the address). Now it is WSO2's generic answer;
/// the details are in the log.
#[tokio::test]
async fn a_503_says_nothing_of_the_backend() {
    let dead = dead_url();
    let edge = Edge::start(dead.clone(), |_| {}, |_| {}).await;
    let reply = edge
        .http
        .get(&edge.http_url("/edge/1.0.0/users"), Some(&edge.token()))
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::SERVICE_UNAVAILABLE, 101503)
    );
    let text = reply.text();
    let port = dead.rsplit(':').next().unwrap();
    for leak in [
        dead.as_str(),
        port,
        "refused",
        "127.0.0.1",
        "tcp",
        "error trying",
    ] {
        assert!(!text.contains(leak), "{leak:?} in {text}");
    }
    assert_eq!(
        reply.json()["description"],
        "Error connecting to the back end"
    );
}

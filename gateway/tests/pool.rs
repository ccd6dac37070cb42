//! The gateway's backend connection pool on its own, against real hyper backends on
//! loopback that count the TCP connections they accept: reuse, growth to the
//! concurrency asked for, a connection the backend closed while idle, answers without a
//! body (read or not), a body dropped half-read (its connection is not reused), a large
//! body streamed whole, HTTP/2 sharing, and connection failures.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use gatehouse_gateway::body::GatewayBody;
use gatehouse_gateway::pool::{ConnectionPool, PoolSettings};
use gatehouse_testkit::ports::dead_url;
use gatehouse_testkit::tls::accept_any;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// How a test backend treats its connections.
#[derive(Clone, Copy)]
enum Mode {
    /// HTTP/1.1, kept alive.
    KeepAlive,
    /// HTTP/1.1, the socket closed a moment after each response (an idle timeout far
    /// shorter than the pool's).
    CloseWhenIdle,
    /// HTTPS, HTTP/2 by ALPN.
    Http2,
}

struct Backend {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Backend {
    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// The backend's answer: `METHOD /path`, after `?delay=<ms>`; `?size=<bytes>` answers
/// that many bytes instead, `?empty=1` a 204 with no body.
async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let param = |name: &str| {
        request
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .and_then(|value| value.parse::<u64>().ok())
    };
    tokio::time::sleep(Duration::from_millis(param("delay").unwrap_or(0))).await;
    if param("empty").is_some() {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::NO_CONTENT;
        return Ok(response);
    }
    if let Some(size) = param("size") {
        return Ok(Response::new(Full::new(Bytes::from(vec![
            b'x';
            size as usize
        ]))));
    }
    Ok(Response::new(Full::new(Bytes::from(format!(
        "{} {}",
        request.method(),
        request.uri().path()
    )))))
}

async fn backend(mode: Mode) -> (Backend, bool) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let tls = matches!(mode, Mode::Http2).then(|| {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(answer);
                match (mode, tls) {
                    (Mode::Http2, Some(tls)) => {
                        let stream = tls.accept(tcp).await.unwrap();
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                    (Mode::CloseWhenIdle, _) => {
                        let connection = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tcp), service);
                        tokio::pin!(connection);
                        // Serve the first exchange, then close the socket once idle.
                        tokio::select! {
                            _ = connection.as_mut() => {}
                            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                                connection.as_mut().graceful_shutdown();
                                let _ = connection.await;
                            }
                        }
                    }
                    _ => {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tcp), service)
                            .await;
                    }
                }
            });
        }
    });
    (Backend { addr, accepted }, matches!(mode, Mode::Http2))
}

fn pool() -> ConnectionPool {
    ConnectionPool::new(
        accept_any(),
        PoolSettings {
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(90),
            max_idle: 64,
        },
    )
}

async fn get(pool: &ConnectionPool, url: &str) -> (StatusCode, String, http::Version) {
    let request = Request::get(url).body(GatewayBody::empty()).unwrap();
    let response = pool.send(request).await.expect("the exchange");
    let status = response.status();
    let version = response.version();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), version)
}

/// GETs every URL at once, answers in the URLs' order.
async fn get_all(
    pool: &Arc<ConnectionPool>,
    urls: impl Iterator<Item = String>,
) -> Vec<(StatusCode, String, http::Version)> {
    let calls: Vec<_> = urls
        .map(|url| {
            let pool = pool.clone();
            tokio::spawn(async move { get(&pool, &url).await })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap());
    }
    answers
}

fn url((backend, https): &(Backend, bool), path: &str) -> String {
    let scheme = if *https { "https" } else { "http" };
    let host = if *https {
        format!("localhost:{}", backend.addr.port())
    } else {
        backend.addr.to_string()
    };
    format!("{scheme}://{host}{path}")
}

#[tokio::test]
async fn sequential_calls_reuse_one_connection() {
    let b = backend(Mode::KeepAlive).await;
    let pool = pool();
    for i in 0..20 {
        let (status, body, _) = get(&pool, &url(&b, &format!("/n/{i}"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, format!("GET /n/{i}"));
    }
    assert_eq!(
        b.0.connections(),
        1,
        "20 calls one after the other, one connection"
    );
}

#[tokio::test]
async fn concurrent_calls_open_as_many_connections_as_are_busy_and_then_reuse_them() {
    let b = backend(Mode::KeepAlive).await;
    let pool = Arc::new(pool());
    for round in 0..3 {
        let urls = (0..8).map(|i| url(&b, &format!("/r{round}/{i}?delay=100")));
        for (i, (status, body, _)) in get_all(&pool, urls).await.into_iter().enumerate() {
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body, format!("GET /r{round}/{i}"));
        }
    }
    let opened = b.0.connections();
    assert!(
        (8..=9).contains(&opened),
        "8 calls at a time for 3 rounds opened {opened} connections (8 expected: reused after the first round)"
    );
}

#[tokio::test]
async fn a_connection_the_backend_closed_while_idle_is_replaced_without_failing_the_call() {
    let b = backend(Mode::CloseWhenIdle).await;
    let pool = pool();
    for i in 0..3 {
        let (status, body, _) = get(&pool, &url(&b, &format!("/idle/{i}"))).await;
        assert_eq!(status, StatusCode::OK, "call {i}");
        assert_eq!(body, format!("GET /idle/{i}"));
        // Longer than the backend keeps an idle connection.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        b.0.connections(),
        3,
        "each call after an idle close needs a new connection"
    );
}

#[tokio::test]
async fn an_http2_backend_is_shared_by_concurrent_calls_on_one_connection() {
    let b = backend(Mode::Http2).await;
    let pool = Arc::new(pool());
    let urls = (0..10).map(|i| url(&b, &format!("/h2/{i}?delay=50")));
    for (i, (status, body, version)) in get_all(&pool, urls).await.into_iter().enumerate() {
        assert_eq!(status, StatusCode::OK);
        assert_eq!(version, http::Version::HTTP_2);
        assert_eq!(body, format!("GET /h2/{i}"));
    }
    let (_, _, version) = get(&pool, &url(&b, "/h2/again")).await;
    assert_eq!(version, http::Version::HTTP_2);
    // The first calls may race to connect before one connection is pooled.
    let opened = b.0.connections();
    assert!((1..=10).contains(&opened), "opened {opened} connections");
    let before = opened;
    for i in 0..5 {
        get(&pool, &url(&b, &format!("/h2/seq/{i}"))).await;
    }
    assert_eq!(
        b.0.connections(),
        before,
        "later calls share the pooled connection"
    );
}

#[tokio::test]
async fn an_answer_without_a_body_gives_its_connection_back_read_or_not() {
    let b = backend(Mode::KeepAlive).await;
    let pool = pool();
    for i in 0..5 {
        let (status, body, _) = get(&pool, &url(&b, &format!("/e/{i}?empty=1"))).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(body, "");
    }
    for i in 0..5 {
        // The response dropped with its (empty) body unread.
        let request = Request::get(url(&b, &format!("/e/unread/{i}?empty=1")))
            .body(GatewayBody::empty())
            .unwrap();
        let response = pool.send(request).await.expect("the exchange");
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
    let (status, body, _) = get(&pool, &url(&b, "/after")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "GET /after"));
    assert_eq!(
        b.0.connections(),
        1,
        "11 calls one after the other, one connection"
    );
}

#[tokio::test]
async fn a_body_dropped_before_its_end_closes_its_connection_and_the_next_call_opens_one() {
    let b = backend(Mode::KeepAlive).await;
    let pool = pool();
    let request = Request::get(url(&b, "/big?size=4194304"))
        .body(GatewayBody::empty())
        .unwrap();
    let response = pool.send(request).await.expect("the exchange");
    let mut body = response.into_body();
    let first = body.frame().await.expect("a first frame").expect("data");
    assert!(
        first
            .data_ref()
            .is_some_and(|d| !d.is_empty() && d.len() < 4194304)
    );
    drop(body);
    for i in 0..3 {
        let (status, body, _) = get(&pool, &url(&b, &format!("/next/{i}"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, format!("GET /next/{i}"));
    }
    assert_eq!(
        b.0.connections(),
        2,
        "the half-read connection is closed, the next calls share a new one"
    );
}

#[tokio::test]
async fn a_large_body_streams_whole_and_its_connection_is_reused() {
    let b = backend(Mode::KeepAlive).await;
    let pool = pool();
    for i in 0..3 {
        let (status, body, _) = get(&pool, &url(&b, &format!("/big/{i}?size=3000000"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.len(), 3_000_000);
        assert!(body.bytes().all(|c| c == b'x'));
    }
    assert_eq!(b.0.connections(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    let pool = pool();
    let request = Request::get(format!("{}/x", dead_url()))
        .body(GatewayBody::empty())
        .unwrap();
    let error = pool.send(request).await.expect_err("nothing listens");
    assert!(error.is_connect(), "{error}");
    assert!(error.to_string().contains("cannot connect"), "{error}");
}

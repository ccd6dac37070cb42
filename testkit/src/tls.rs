//! An HTTPS client for tests: HTTP/1.1 or HTTP/2, accepting any server certificate.
//!
//! The gateway and token-service generate self-signed certificates; a test that is not
//! about certificates talks to them with [`HttpClient`], whose TLS configuration
//! ([`accept_any`]) verifies the handshake's signatures but not the certificate chain
//! nor the name, like `curl -k`. (A test of the certificate itself trusts only that
//! certificate instead.) Plain `http://` URLs work too.
//!
//! [`HttpClient::converge`] polls URLs until each answers an expected status: the way a
//! test waits for every replica to serve a change.
//!
//! ```no_run
//! # async fn example() {
//! use gatehouse_testkit::tls::HttpClient;
//! use http::StatusCode;
//!
//! let http = HttpClient::default(); // HTTP/1.1; HttpClient::new(true) for HTTP/2 only
//! let reply = http.get("https://127.0.0.1:8243/client/1.0.0/users", Some("token")).await;
//! let bases = ["https://127.0.0.1:8243", "https://127.0.0.1:8244"];
//! let took = http.converge(&bases, "/client/1.0.0/users", Some("token"), StatusCode::OK).await;
//! # }
//! ```
//!
//! # Shared state
//!
//! None (an `HttpClient` pools its own connections; clones share the pool).

use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::poll::{CONVERGE, Poll};

/// A rustls client configuration (ring) that accepts any server certificate: the
/// product's own, [`gatehouse_node::tls::accept_any_certificate`].
pub fn accept_any() -> rustls::ClientConfig {
    gatehouse_node::tls::accept_any_certificate()
}

/// `Basic <base64(id:secret)>`, an `authorization` header value.
pub fn basic_auth(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub version: http::Version,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON.
    ///
    /// # Panics
    ///
    /// If it is not JSON, showing it.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The WSO2 error code of the body.
    pub fn code(&self) -> u64 {
        self.json()["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("no code in {self:?}"))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An HTTP/1.1 or HTTP/2 client that accepts any server certificate.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new(false)
    }
}

impl HttpClient {
    /// `h2_only`: offer only `h2` by ALPN and speak HTTP/2 (else only `http/1.1`).
    pub fn new(h2_only: bool) -> Self {
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(accept_any())
            .https_or_http();
        let connector = if h2_only {
            builder.enable_http2().build()
        } else {
            builder.enable_http1().build()
        };
        let client = Client::builder(TokioExecutor::new())
            .http2_only(h2_only)
            .build(connector);
        HttpClient { client }
    }

    /// Sends a request; the whole response.
    ///
    /// # Panics
    ///
    /// If there is no answer (or none within 60 s).
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Reply {
        let uri = request.uri().clone();
        let response = tokio::time::timeout(CONVERGE, self.client.request(request))
            .await
            .unwrap_or_else(|_| panic!("{uri}: no answer within {CONVERGE:?}"))
            .unwrap_or_else(|e| panic!("{uri}: {e:?}"));
        let status = response.status();
        let version = response.version();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{uri}: reading the body: {e}"))
            .to_bytes();
        Reply {
            status,
            headers,
            version,
            body,
        }
    }

    /// `GET url`, with `authorization: Bearer <token>` if given.
    pub async fn get(&self, url: &str, token: Option<&str>) -> Reply {
        self.call(Method::GET, url, token, &[]).await
    }

    /// A request without a body.
    pub async fn call(
        &self,
        method: Method,
        url: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut builder = Request::builder().method(method).uri(url);
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        self.send(
            builder
                .body(Full::new(Bytes::new()))
                .expect("a valid request"),
        )
        .await
    }

    /// `POST url` of a form, with HTTP Basic credentials if given.
    pub async fn post_form(&self, url: &str, basic: Option<(&str, &str)>, form: &str) -> Reply {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some((id, secret)) = basic {
            builder = builder.header("authorization", basic_auth(id, secret));
        }
        self.send(
            builder
                .body(Full::new(Bytes::from(form.to_string())))
                .expect("a valid request"),
        )
        .await
    }

    /// Polls `<base><path>` for each base in turn, every 5 ms, until each answers
    /// `expected` (with the bearer `token` if given); returns the time from the call to
    /// the last one answering so.
    ///
    /// # Panics
    ///
    /// If they have not all answered so within [`CONVERGE`], with the last reply.
    pub async fn converge(
        &self,
        bases: &[impl AsRef<str>],
        path: &str,
        token: Option<&str>,
        expected: StatusCode,
    ) -> Duration {
        self.converge_every(Duration::from_millis(5), bases, path, token, expected)
            .await
    }

    /// [`converge`](Self::converge), polling every `interval` (zero: as fast as the
    /// answers come, for a measurement).
    pub async fn converge_every(
        &self,
        interval: Duration,
        bases: &[impl AsRef<str>],
        path: &str,
        token: Option<&str>,
        expected: StatusCode,
    ) -> Duration {
        let started = Instant::now();
        for base in bases {
            let url = format!("{}{path}", base.as_ref());
            Poll::new(format!("{url} to answer {expected}"))
                .timeout(CONVERGE.saturating_sub(started.elapsed()))
                .every(interval)
                .until_async(|| {
                    let url = &url;
                    async move {
                        let reply = self.get(url, token).await;
                        if reply.status == expected {
                            Ok(())
                        } else {
                            Err(format!("it answers {}: {reply:?}", reply.status))
                        }
                    }
                })
                .await;
        }
        started.elapsed()
    }
}

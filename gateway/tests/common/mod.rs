//! What the gateway's integration tests share: an event log with a command executor (the
//! admin side, without control), token signing, test backends, a gateway started
//! in-process, and an HTTP(S) client that trusts the gateway's self-signed certificate.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use gatehouse_domain::Command;
use gatehouse_eventlog::{EventLog, FileLog};
use gatehouse_gateway::{GatewayConfig, RunningGateway};
use gatehouse_node::commands::{CallContext, CommandExecutor};
use gatehouse_node::read_model::ReadModel;
use gatehouse_proto::events::{
    ApiDefinition, EndpointGroup, Endpoints, OAuthClient, Resource, endpoint_group, lifecycle,
    o_auth_client::KeyType, throttle_policy::Level,
};
use gatehouse_tokens::{AccessClaims, SigningKeyPair};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// How long a test waits for something that must happen (a replica catching up).
pub const CONVERGE: Duration = Duration::from_secs(30);

/// The admin side of a test: a log, a read model following it, and commands.
pub struct World {
    pub log: Arc<dyn EventLog>,
    pub model: Arc<ReadModel>,
    pub exec: CommandExecutor,
    pub key: SigningKeyPair,
    _dir: Option<tempfile::TempDir>,
}

impl World {
    /// An embedded file log in a temporary directory (shared in-process with the
    /// gateway), with a published ES256 signing key.
    pub async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn EventLog> = Arc::new(FileLog::open(dir.path().join("eventlog")).unwrap());
        World::on(log, Some(dir)).await
    }

    /// Commands on an existing log (NATS).
    pub async fn on(log: Arc<dyn EventLog>, dir: Option<tempfile::TempDir>) -> World {
        let model = ReadModel::new();
        tokio::spawn(model.clone().follow(log.clone()));
        let end = log.last_sequence().await.unwrap();
        assert!(model.wait_for(end, CONVERGE).await);
        let exec = CommandExecutor::new(log.clone(), model.clone());
        let key = SigningKeyPair::generate("ES256").unwrap();
        let world = World {
            log,
            model,
            exec,
            key,
            _dir: dir,
        };
        world
            .run(Command::PublishSigningKey {
                key: world.key.to_signing_key_record(),
                retire_previous_after: None,
            })
            .await;
        world
    }

    /// Executes a command; returns the log's sequence after it.
    pub async fn run(&self, command: Command) -> u64 {
        let ctx = CallContext {
            actor: "test".into(),
            ..Default::default()
        };
        match self.exec.execute(command.clone(), &ctx).await {
            Ok(seq) => seq,
            Err(e) => panic!("{command:?} failed: {e}"),
        }
    }

    pub fn sequence(&self) -> u64 {
        self.model.applied()
    }

    /// Creates and publishes an API.
    pub async fn publish_api(&self, id: &str, definition: ApiDefinition) -> u64 {
        self.run(Command::CreateApi {
            api_id: id.into(),
            definition,
        })
        .await;
        self.lifecycle(id, lifecycle::State::Published).await
    }

    pub async fn lifecycle(&self, id: &str, target: lifecycle::State) -> u64 {
        self.run(Command::ChangeLifecycle {
            api_id: id.into(),
            target,
            expected_version: None,
        })
        .await
    }

    /// An application (tier `app_tier`, "" for Unlimited) with production and sandbox
    /// keys (client ids `<id>-prod`, `<id>-sandbox`).
    pub async fn application(&self, id: &str, app_tier: &str) -> u64 {
        self.run(Command::CreateApplication {
            application_id: id.into(),
            name: id.into(),
            owner: "tester".into(),
            throttling_tier: if app_tier.is_empty() {
                "Unlimited".into()
            } else {
                app_tier.into()
            },
            description: String::new(),
        })
        .await;
        for (suffix, key_type) in [("prod", KeyType::Production), ("sandbox", KeyType::Sandbox)] {
            self.run(Command::RegisterClient {
                client: OAuthClient {
                    client_id: format!("{id}-{suffix}"),
                    application_id: id.into(),
                    key_type: key_type as i32,
                    secret_hash: "$argon2id$not-a-real-hash".into(),
                    ..Default::default()
                },
            })
            .await;
        }
        self.sequence()
    }

    pub async fn subscribe(&self, subscription_id: &str, app: &str, api: &str, tier: &str) -> u64 {
        self.run(Command::Subscribe {
            subscription_id: subscription_id.into(),
            application_id: app.into(),
            api_id: api.into(),
            tier: tier.into(),
        })
        .await
    }

    pub async fn policy(&self, name: &str, level: Level, count: u64, unit_seconds: u32) -> u64 {
        self.run(Command::CreatePolicy {
            name: name.into(),
            level,
            request_count: count,
            unit_seconds,
            unlimited: false,
            description: String::new(),
        })
        .await
    }

    /// A token for `app`'s production (or sandbox) keys.
    pub fn token(&self, app: &str, sandbox: bool, scope: &str) -> String {
        self.sign(claims(app, sandbox, scope))
    }

    pub fn sign(&self, claims: AccessClaims) -> String {
        self.key.sign(&claims).unwrap()
    }
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Valid claims for one hour.
pub fn claims(app: &str, sandbox: bool, scope: &str) -> AccessClaims {
    let now = now();
    AccessClaims {
        iss: gatehouse_tokens::DEFAULT_ISSUER.into(),
        sub: "tester".into(),
        aud: gatehouse_tokens::API_AUDIENCE.into(),
        exp: now + 3600,
        nbf: now - 5,
        iat: now - 5,
        jti: uuid::Uuid::new_v4().to_string(),
        scope: scope.into(),
        client_id: format!("{app}-{}", if sandbox { "sandbox" } else { "prod" }),
        application_id: app.into(),
        application_name: app.into(),
        key_type: if sandbox { "SANDBOX" } else { "PRODUCTION" }.into(),
        application_tier: "Unlimited".into(),
    }
}

/// `GET` resources on `paths`, each with the given scopes.
pub fn resources(specs: &[(&str, &str)]) -> Vec<Resource> {
    specs
        .iter()
        .map(|(method, path)| Resource {
            method: (*method).into(),
            path: (*path).into(),
            ..Default::default()
        })
        .collect()
}

pub fn group(mode: endpoint_group::Mode, urls: &[String]) -> Option<EndpointGroup> {
    Some(EndpointGroup {
        mode: mode as i32,
        urls: urls.to_vec(),
    })
}

/// An API definition with production endpoints `urls` (load-balanced).
pub fn api(
    name: &str,
    context: &str,
    version: &str,
    resources: Vec<Resource>,
    urls: &[String],
) -> ApiDefinition {
    ApiDefinition {
        name: name.into(),
        context: context.into(),
        version: version.into(),
        resources,
        endpoints: Some(Endpoints {
            production: group(endpoint_group::Mode::LoadBalance, urls),
            sandbox: None,
            timeout_ms: 0,
        }),
        ..Default::default()
    }
}

/// Serves an axum router on a free loopback port.
pub async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
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
/// headers) as JSON, after `?sleep_ms=` if asked; `X-Backend` is its name. Counts calls.
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
                .unwrap()
        }
    });
    let addr = serve(router).await;
    (format!("http://{addr}"), calls)
}

/// A loopback URL where nothing listens.
pub fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// A gateway in this process on the world's log, on free ports, with control
/// unreachable (it bootstraps by replaying the log).
pub async fn gateway(
    world: &World,
    dir: &std::path::Path,
    tweak: impl FnOnce(&mut GatewayConfig),
) -> RunningGateway {
    let mut config = test_config(dir);
    tweak(&mut config);
    let gw = gatehouse_gateway::start(config, Some(world.log.clone()))
        .await
        .unwrap();
    wait_for_sequence(&gw, world.sequence()).await;
    gw
}

/// A configuration on free ports, control unreachable, no access log.
pub fn test_config(dir: &std::path::Path) -> GatewayConfig {
    let mut config = GatewayConfig::defaults();
    config.https_listen = "127.0.0.1:0".parse().unwrap();
    config.http_listen = "127.0.0.1:0".parse().unwrap();
    config.control_url = dead_url();
    config.data_dir = dir.to_path_buf();
    config.gateway_id = Some("test-gw".into());
    config.access_log = false;
    config.report_interval_ms = 200;
    config
}

/// Waits until the gateway serves a table covering `sequence`.
pub async fn wait_for_sequence(gw: &RunningGateway, sequence: u64) {
    let deadline = tokio::time::Instant::now() + CONVERGE;
    loop {
        let applied = gw.gateway.table.load().sequence;
        if applied >= sequence && gw.gateway.sync.has_config.load(Ordering::Acquire) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gateway stuck at sequence {applied}, expected {sequence}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The WSO2 error code of the body.
    pub fn code(&self) -> u64 {
        self.json()["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("no code in {:?}", self))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An HTTP/1.1 + HTTP/2 client that accepts any server certificate (the gateway's is
/// self-signed).
#[derive(Clone)]
pub struct HttpClient {
    client: Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new(false)
    }
}

impl HttpClient {
    /// `h2_only`: offer only `h2` by ALPN (else only `http/1.1`).
    pub fn new(h2_only: bool) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth();
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
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

    pub async fn send(&self, request: Request<Full<Bytes>>) -> Reply {
        let uri = request.uri().clone();
        let response = tokio::time::timeout(Duration::from_secs(60), self.client.request(request))
            .await
            .unwrap_or_else(|_| panic!("{uri}: no answer within 60 s"))
            .unwrap_or_else(|e| panic!("{uri}: {e:?}"));
        let status = response.status();
        let version = response.version();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            version,
            body,
        }
    }

    pub async fn get(&self, url: &str, token: Option<&str>) -> Reply {
        self.call(Method::GET, url, token, &[]).await
    }

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
        self.send(builder.body(Full::new(Bytes::new())).unwrap())
            .await
    }
}

#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

//! Running the real `token-service` binary and talking to it: HTTPS (trusting the
//! self-signed certificate it generated), gRPC, and the event log underneath. The
//! process and the log's other writer (`World`) are the test kit's.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use gatehouse_domain::Command as DomainCommand;
use gatehouse_eventlog::{EventLog, Record};
use gatehouse_node::pki::NodeRole;
use gatehouse_proto::events::{
    ApiDefinition, EndpointGroup, Endpoints, EventEnvelope, Resource, lifecycle,
};
use gatehouse_proto::keymanager::key_manager_client::KeyManagerClient;
use gatehouse_testkit::grpc::Bearer;
use gatehouse_testkit::pki::TestPki;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use prost::Message;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A KeyManager client with a caller's bearer token.
pub type KeyManager = KeyManagerClient<InterceptedService<Channel, Bearer>>;

pub use gatehouse_testkit::World;
use gatehouse_testkit::process::Process;
pub use gatehouse_testkit::tls::basic_auth as basic_header;
pub use gatehouse_testkit::world::LogLocation;

/// How long the binary may take to say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the service's log is.
#[derive(Clone, Debug)]
pub enum Log {
    /// The embedded log in the service's data directory.
    Embedded,
    /// A NATS server (URL) and stream.
    Nats { url: String, stream: String },
}

/// How to start the service.
#[derive(Clone, Debug)]
pub struct Options {
    pub data_dir: PathBuf,
    pub log: Log,
    pub admin: Option<(String, String)>,
    /// The admin client's id and the file its secret is (or will be generated) in.
    pub admin_secret_file: Option<(String, PathBuf)>,
    pub signing_alg: Option<String>,
    /// Extra environment (e.g. the `GATEHOUSE_TOKEN_*` limits).
    pub env: Vec<(String, String)>,
}

impl Options {
    pub fn embedded(data_dir: &Path) -> Self {
        Options {
            data_dir: data_dir.to_path_buf(),
            log: Log::Embedded,
            admin: None,
            admin_secret_file: None,
            signing_alg: None,
            env: Vec::new(),
        }
    }

    pub fn nats(data_dir: &Path, url: &str) -> Self {
        Options {
            log: Log::Nats {
                url: url.to_string(),
                stream: "GATEHOUSE".into(),
            },
            ..Self::embedded(data_dir)
        }
    }

    pub fn with_admin(mut self, id: &str, secret: &str) -> Self {
        self.admin = Some((id.into(), secret.into()));
        self
    }

    pub fn with_admin_secret_file(mut self, id: &str, file: &Path) -> Self {
        self.admin_secret_file = Some((id.into(), file.to_path_buf()));
        self
    }

    pub fn with_alg(mut self, alg: &str) -> Self {
        self.signing_alg = Some(alg.into());
        self
    }

    /// With the environment variable `key` set to `value`.
    pub fn with_env(mut self, key: &str, value: impl ToString) -> Self {
        self.env.push((key.into(), value.to_string()));
        self
    }

    /// The test CA the service's node certificate is issued by (`<data dir>/pki`, kept
    /// across restarts).
    pub fn pki(&self) -> TestPki {
        TestPki::in_dir(&self.data_dir.join("pki"))
    }

    /// Where the service's log is, for the test to open it too.
    pub fn location(&self) -> LogLocation {
        match &self.log {
            Log::Embedded => LogLocation::Embedded(self.data_dir.clone()),
            Log::Nats { url, stream } => LogLocation::Nats {
                url: url.clone(),
                stream: stream.clone(),
            },
        }
    }
}

/// A running token-service process (killed on drop).
pub struct TokenService {
    process: Process,
    pub options: Options,
    pub https: SocketAddr,
    pub grpc: SocketAddr,
    /// The admin client printed at start-up, if one was generated.
    pub printed_admin: Option<(String, String)>,
    /// Everything the process printed before it was ready.
    pub stdout: String,
}

impl TokenService {
    pub fn start(options: Options) -> TokenService {
        let mut builder = Process::builder("token-service", env!("CARGO_BIN_EXE_token-service"))
            .arg("--data-dir")
            .arg(&options.data_dir)
            .args([
                "--listen-https",
                "127.0.0.1:0",
                "--listen-grpc",
                "127.0.0.1:0",
            ])
            .args(options.pki().args(NodeRole::TokenService, "token-service"))
            .env("RUST_LOG", "warn")
            .timeout(START_TIMEOUT);
        if let Log::Nats { url, stream } = &options.log {
            builder = builder.args(["--nats-url", url, "--nats-stream", stream]);
        }
        if let Some((id, secret)) = &options.admin {
            // The secret by environment, as documented.
            builder = builder
                .args(["--admin-client-id", id])
                .env("GATEHOUSE_ADMIN_CLIENT_SECRET", secret);
        }
        if let Some((id, file)) = &options.admin_secret_file {
            builder = builder
                .args(["--admin-client-id", id])
                .env("GATEHOUSE_ADMIN_CLIENT_SECRET_FILE", file);
        }
        if let Some(alg) = &options.signing_alg {
            builder = builder.env("GATEHOUSE_SIGNING_ALG", alg);
        }
        builder = builder.envs(options.env.iter().map(|(k, v)| (k, v)));
        let mut process = builder.spawn();
        let ready = process.wait_for_line("token-service ready on");
        let printed = process.output_of_this_run();
        let https = between(&ready, "https://", " ").parse().unwrap();
        let grpc = between(&ready, "grpc ", " ").parse().unwrap();
        let printed_admin = printed.lines().find_map(|line| {
            line.strip_prefix("admin client created: ").map(|rest| {
                (
                    between(rest, "client_id=", " ").to_string(),
                    between(rest, "client_secret=", " ").to_string(),
                )
            })
        });
        TokenService {
            process,
            options,
            https,
            grpc,
            printed_admin,
            stdout: printed,
        }
    }

    /// The admin credentials: configured, read from the secret file, or printed at
    /// start-up.
    pub fn admin(&self) -> (String, String) {
        self.options
            .admin
            .clone()
            .or_else(|| {
                let (id, file) = self.options.admin_secret_file.as_ref()?;
                Some((
                    id.clone(),
                    std::fs::read_to_string(file).ok()?.trim().to_string(),
                ))
            })
            .or_else(|| self.printed_admin.clone())
            .expect("an admin client")
    }

    /// Kills the process (like a crash) and waits for it.
    pub fn stop(&mut self) {
        self.process.kill();
    }

    /// Stops and starts again with the same options (same data directory).
    pub fn restart(mut self) -> TokenService {
        self.stop();
        TokenService::start(self.options)
    }

    /// The KeyManager as control calls it: control's node certificate, and an admin's
    /// token (the configured admin client's) forwarded with every call.
    pub async fn key_manager(&self) -> KeyManager {
        let (id, secret) = self.admin();
        let token = self.token(&id, &secret, "").await.access_token;
        self.key_manager_as(Some(NodeRole::Control), &token).await
    }

    /// The KeyManager as a caller presenting the certificate of a node of `role` (none:
    /// no client certificate) and `token` (empty: none).
    pub async fn key_manager_as(&self, role: Option<NodeRole>, token: &str) -> KeyManager {
        let pki = self.options.pki();
        let url = format!("https://127.0.0.1:{}", self.grpc.port());
        let channel = match role {
            Some(role) => pki
                .node_tls(role, &format!("test-{role}"))
                .channel(&url)
                .unwrap(),
            None => {
                gatehouse_testkit::grpc::channel(
                    &pki.target(format!("127.0.0.1:{}", self.grpc.port())),
                )
                .await
            }
        };
        KeyManagerClient::with_interceptor(channel, Bearer(token.to_string()))
    }

    /// The self-signed certificate the service generated.
    pub fn certificate(&self) -> PathBuf {
        self.options.data_dir.join("tls/cert.pem")
    }

    /// One HTTPS request over a fresh connection that trusts only the service's own
    /// certificate, for the name `localhost`.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        self.request_from(None, method, path, headers, body).await
    }

    /// A TLS connection to the HTTPS port (trusting only the service's certificate),
    /// from the loopback address `source` if given (any of 127.0.0.0/8: another client
    /// address, as the service sees it).
    pub async fn connect(
        &self,
        source: Option<std::net::IpAddr>,
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        self.try_connect(source)
            .await
            .expect("TLS handshake with the self-signed certificate")
    }

    /// [`connect`](Self::connect), or why it failed (refused, closed during the
    /// handshake).
    pub async fn try_connect(
        &self,
        source: Option<std::net::IpAddr>,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.certificate()).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = match source {
            None => tokio::net::TcpStream::connect(self.https).await?,
            Some(source) => {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(SocketAddr::new(source, 0))?;
                socket.connect(self.https).await?
            }
        };
        connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
    }

    /// [`request`](Self::request) from the loopback address `source` if given.
    pub async fn request_from(
        &self,
        source: Option<std::net::IpAddr>,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        let tls = self.connect(source).await;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body: body.to_vec(),
        }
    }

    /// A form POST, with HTTP Basic credentials if given.
    pub async fn post_form(&self, path: &str, basic: Option<(&str, &str)>, form: &str) -> Answer {
        self.post_form_from(None, path, basic, form).await
    }

    /// [`post_form`](Self::post_form) from the loopback address `source` if given.
    pub async fn post_form_from(
        &self,
        source: Option<std::net::IpAddr>,
        path: &str,
        basic: Option<(&str, &str)>,
        form: &str,
    ) -> Answer {
        let authorization = basic.map(|(id, secret)| basic_header(id, secret));
        let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
        if let Some(a) = &authorization {
            headers.push(("authorization", a));
        }
        self.request_from(source, "POST", path, &headers, form)
            .await
    }

    /// A token for (id, secret) by Basic with `extra` form parameters; panics unless 200.
    pub async fn token(&self, id: &str, secret: &str, extra: &str) -> TokenAnswer {
        let answer = self
            .post_form(
                "/oauth2/token",
                Some((id, secret)),
                &format!("grant_type=client_credentials{extra}"),
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let json = answer.json();
        TokenAnswer {
            access_token: json["access_token"].as_str().unwrap().to_string(),
            scope: json["scope"].as_str().unwrap().to_string(),
            json,
        }
    }

    pub async fn introspect(&self, by: (&str, &str), token: &str) -> serde_json::Value {
        let answer = self
            .post_form("/oauth2/introspect", Some(by), &format!("token={token}"))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        answer.json()
    }

    pub async fn jwks(&self) -> serde_json::Value {
        let answer = self.request("GET", "/oauth2/jwks", &[], "").await;
        assert_eq!(answer.status, 200);
        answer.json()
    }
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let rest = &text[text
        .find(start)
        .unwrap_or_else(|| panic!("{start} in {text}"))
        + start.len()..];
    rest.split(end).next().unwrap()
}

/// An HTTP answer.
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an RFC 6749 §5.2 error.
    pub fn assert_error(&self, status: u16, error: &str) {
        assert_eq!(self.status, status, "{}", self.text());
        let json = self.json();
        assert_eq!(json["error"], error, "{json}");
        assert!(json["error_description"].is_string(), "{json}");
        assert_eq!(self.header("cache-control"), Some("no-store"));
        assert_eq!(self.header("pragma"), Some("no-cache"));
        if status == 401 {
            assert_eq!(
                self.header("www-authenticate"),
                Some(r#"Basic realm="gatehouse""#)
            );
        }
    }
}

pub struct TokenAnswer {
    pub access_token: String,
    pub scope: String,
    pub json: serde_json::Value,
}

/// Verifies `token` with the JWKS as any third party would (jsonwebtoken, key by kid).
pub fn verify_with_jwks(
    token: &str,
    jwks: &serde_json::Value,
    audience: &str,
) -> serde_json::Value {
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks.clone()).unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let kid = header.kid.expect("kid in the header");
    let jwk = set
        .find(&kid)
        .unwrap_or_else(|| panic!("{kid} in the JWKS"));
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[gatehouse_tokens::DEFAULT_ISSUER]);
    validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub", "jti"]);
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
        .expect("the token verifies against the JWKS")
        .claims
}

/// The kid in a token's header.
pub fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

/// Opens the log the service uses (for the embedded log: only while it is stopped).
pub async fn open_log(options: &Options) -> Arc<dyn EventLog> {
    options.location().open().await
}

/// What [`seed_application`] made.
pub struct Seeded {
    pub application_id: String,
    pub api_id: String,
    pub subscription_id: String,
}

/// `MyPythonApp` (owner alice, tier Unlimited) subscribed to a published ClientServiceAPI
/// whose resources carry the scopes `read:users` and `write:users`.
pub async fn seed_application(writer: &World) -> Seeded {
    let seeded = Seeded {
        application_id: uuid::Uuid::new_v4().to_string(),
        api_id: uuid::Uuid::new_v4().to_string(),
        subscription_id: uuid::Uuid::new_v4().to_string(),
    };
    writer
        .run(DomainCommand::CreateApplication {
            application_id: seeded.application_id.clone(),
            name: "MyPythonApp".into(),
            owner: "alice".into(),
            throttling_tier: "Unlimited".into(),
            description: String::new(),
        })
        .await;
    writer
        .run(DomainCommand::CreateApi {
            api_id: seeded.api_id.clone(),
            definition: ApiDefinition {
                name: "ClientServiceAPI".into(),
                context: "/client".into(),
                version: "1.0.0".into(),
                resources: vec![
                    Resource {
                        method: "GET".into(),
                        path: "/users".into(),
                        scopes: vec!["read:users".into()],
                        ..Default::default()
                    },
                    Resource {
                        method: "POST".into(),
                        path: "/users".into(),
                        scopes: vec!["write:users".into()],
                        ..Default::default()
                    },
                ],
                endpoints: Some(Endpoints {
                    production: Some(EndpointGroup {
                        urls: vec!["http://localhost:8000".into()],
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                subscription_tiers: vec!["Unlimited".into()],
                ..Default::default()
            },
        })
        .await;
    writer
        .run(DomainCommand::ChangeLifecycle {
            api_id: seeded.api_id.clone(),
            target: lifecycle::State::Published,
            expected_version: None,
        })
        .await;
    writer
        .run(DomainCommand::Subscribe {
            subscription_id: seeded.subscription_id.clone(),
            application_id: seeded.application_id.clone(),
            api_id: seeded.api_id.clone(),
            tier: "Unlimited".into(),
        })
        .await;
    seeded
}

/// Every record of the log, decoded.
pub async fn events(log: &Arc<dyn EventLog>) -> Vec<(Record, EventEnvelope)> {
    log.read_to_end(1)
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            let e = EventEnvelope::decode(r.payload.as_ref()).unwrap();
            (r, e)
        })
        .collect()
}

/// Asserts that none of `needles` occurs in `haystack` (named `what` in the message).
pub fn assert_absent(haystack: &[u8], needles: &[(&str, Vec<u8>)], what: &str) {
    for (name, needle) in needles {
        assert!(!needle.is_empty(), "empty needle {name}");
        assert!(
            !haystack
                .windows(needle.len())
                .any(|w| w == needle.as_slice()),
            "{what} contains {name}"
        );
    }
}

/// Things that must never be on the log: the private key's PEM, its label, its DER,
/// and its private exponent (raw and base64url, as a JWK `d` would carry it).
pub fn private_key_needles(data_dir: &Path) -> Vec<(&'static str, Vec<u8>)> {
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::traits::PrivateKeyParts;
    let mut needles: Vec<(&'static str, Vec<u8>)> = vec![("PRIVATE KEY", b"PRIVATE KEY".to_vec())];
    for entry in std::fs::read_dir(data_dir.join("keys")).unwrap() {
        let path = entry.unwrap().path();
        let pem = std::fs::read_to_string(&path).unwrap();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        // Any line of the PEM body.
        for line in pem.lines().filter(|l| !l.starts_with("-----")).take(3) {
            needles.push(("a PEM line of a private key", line.as_bytes().to_vec()));
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(&body)
            .unwrap();
        needles.push(("a private key's DER", der.clone()));
        if path.to_string_lossy().ends_with(".RS256.pem") {
            let key = rsa::PrivateKey::from_pkcs8_der(&der).unwrap();
            let d = key.d().to_be_bytes_trimmed_vartime().to_vec();
            needles.push((
                "the private exponent (base64url)",
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(&d)
                    .into_bytes(),
            ));
            needles.push((
                "the private exponent (base64)",
                base64::engine::general_purpose::STANDARD
                    .encode(&d)
                    .into_bytes(),
            ));
            needles.push(("the private exponent (raw)", d[..64].to_vec()));
        }
    }
    needles
}

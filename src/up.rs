//! `gatehouse up`: the all-in-one. control, token-service, one gateway and the two demo
//! backends in this one process, on one event log — the embedded file log in the data
//! directory (no NATS, no Docker), or NATS with `--nats`.
//!
//! On first start it creates the admin client and seeds the demo through the admin API
//! (the same [`bootstrap`](crate::bootstrap) as compose's one-shot), then prints the
//! credentials and the exact curl and grpcurl lines to try. It remembers, in
//! `<data-dir>/all-in-one.json`, what a later start needs and may show: the admin
//! client's id, MyPythonApp's consumer key and the backends' ports — never a secret.
//!
//! Shutdown (Ctrl-C, SIGTERM) stops every node gracefully: in-flight calls finish, and
//! every change acknowledged before was fsync'd to the log when it was acknowledged.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use gatehouse_eventlog::{EventLog, FileLog, NatsLog, NatsLogConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::bootstrap::{self, BootstrapConfig};

/// The all-in-one's flags.
#[derive(clap::Args, Debug, Clone)]
pub struct UpConfig {
    /// Where the event log, keys and certificates live.
    #[arg(long = "data-dir", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Use this NATS server (JetStream) as the event log instead of the embedded one.
    #[arg(long = "nats", env = "GATEHOUSE_NATS_URL")]
    pub nats: Option<String>,
    /// control's gRPC admin API.
    #[arg(long = "control-listen", default_value = "0.0.0.0:50051")]
    pub control_listen: SocketAddr,
    /// token-service's HTTPS token endpoint.
    #[arg(long = "token-https-listen", default_value = "0.0.0.0:9443")]
    pub token_https_listen: SocketAddr,
    /// token-service's gRPC key manager (internal).
    #[arg(long = "token-grpc-listen", default_value = "127.0.0.1:50052")]
    pub token_grpc_listen: SocketAddr,
    /// The gateway's HTTPS listener.
    #[arg(long = "gateway-https-listen", default_value = "0.0.0.0:8243")]
    pub gateway_https_listen: SocketAddr,
    /// The gateway's plain HTTP listener (and /healthz, /readyz, /metrics).
    #[arg(long = "gateway-http-listen", default_value = "0.0.0.0:8280")]
    pub gateway_http_listen: SocketAddr,
    /// client-service's port on 127.0.0.1 (0: a free port, kept for later starts).
    #[arg(long = "client-service-port", default_value_t = 0)]
    pub client_service_port: u16,
    /// order-service's port on 127.0.0.1 (0: a free port, kept for later starts).
    #[arg(long = "order-service-port", default_value_t = 0)]
    pub order_service_port: u16,
    /// Start empty: no demo APIs, application or keys (do the seed's steps by hand).
    #[arg(long = "no-demo")]
    pub no_demo: bool,
}

/// What a later start needs from the first one (no secrets).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Remembered {
    admin_client_id: String,
    application_id: String,
    consumer_key: String,
    client_service_port: u16,
    order_service_port: u16,
}

const REMEMBERED: &str = "all-in-one.json";

impl Remembered {
    fn load(dir: &Path) -> anyhow::Result<Option<Remembered>> {
        let path = dir.join(REMEMBERED);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is damaged; delete the data directory to start over",
                    path.display()
                )
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(REMEMBERED);
        let tmp = dir.join(format!("{REMEMBERED}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// Parses a clap `Args` struct from no arguments: its defaults (and environment).
fn defaults<T: clap::Args + clap::FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("defaults")).no_binary_name(true);
    let matches = command
        .try_get_matches_from(std::iter::empty::<String>())
        .expect("defaults parse");
    T::from_arg_matches(&matches).expect("defaults parse")
}

/// Checks a port is free before anything starts, for a one-line error.
fn ensure_free(addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    std::net::TcpListener::bind(addr).map(drop).map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {addr} for {what}: {e} (is another Gatehouse running? stop it, or pick another port with the flags of `gatehouse up --help`)"
        )
    })
}

fn local(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

fn random_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

type Node = (&'static str, JoinHandle<anyhow::Result<()>>);

/// Runs the all-in-one until Ctrl-C. `tracing`: spans are exported, so the gateway
/// makes a span per request.
pub async fn run(config: UpConfig, tracing: bool) -> anyhow::Result<()> {
    let data = config.data_dir.clone();
    std::fs::create_dir_all(&data)
        .with_context(|| format!("cannot create the data directory {}", data.display()))?;
    let probe = data.join(".writable");
    std::fs::write(&probe, b"")
        .with_context(|| format!("the data directory {} is not writable", data.display()))?;
    let _ = std::fs::remove_file(&probe);
    let remembered = Remembered::load(&data)?;

    for (addr, what) in [
        (config.control_listen, "control's gRPC admin API"),
        (
            config.token_https_listen,
            "token-service's HTTPS token endpoint",
        ),
        (config.token_grpc_listen, "token-service's gRPC key manager"),
        (config.gateway_https_listen, "the gateway's HTTPS listener"),
        (config.gateway_http_listen, "the gateway's HTTP listener"),
    ] {
        ensure_free(addr, what)?;
    }

    let log: Arc<dyn EventLog> = match &config.nats {
        Some(url) => Arc::new(
            NatsLog::connect(NatsLogConfig::new(url.clone()))
                .await
                .with_context(|| format!("cannot use the event log on NATS at {url}"))?,
        ),
        None => {
            let dir = data.join("eventlog");
            Arc::new(
                FileLog::open(&dir)
                    .with_context(|| format!("cannot open the event log in {}", dir.display()))?,
            )
        }
    };
    let describe = match &config.nats {
        Some(url) => format!("event log on NATS at {url}"),
        None => format!("embedded event log in {}", data.join("eventlog").display()),
    };
    println!("Gatehouse all-in-one, {describe}");

    // The backends first: their ports go into the APIs' endpoints.
    let backend = |port: u16, name: &str| {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let name = name.to_string();
        async move {
            tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!("cannot listen on {addr} for {name} (its port was chosen at first start; free it, or delete the data directory to start over)")
            })
        }
    };
    // A port given on the command line wins; else the one kept from the first start;
    // else (0) a free one.
    let port = |flag: u16, kept: Option<u16>| if flag != 0 { flag } else { kept.unwrap_or(0) };
    let client_listener = backend(
        port(
            config.client_service_port,
            remembered.as_ref().map(|r| r.client_service_port),
        ),
        "client-service",
    )
    .await?;
    let order_listener = backend(
        port(
            config.order_service_port,
            remembered.as_ref().map(|r| r.order_service_port),
        ),
        "order-service",
    )
    .await?;
    let client_addr = client_listener.local_addr()?;
    let order_addr = order_listener.local_addr()?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stop = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let mut nodes: Vec<Node> = Vec::new();
    for (listener, info, router) in [
        (
            client_listener,
            client_service::SERVICE,
            client_service::router(),
        ),
        (
            order_listener,
            order_service::SERVICE,
            order_service::router(),
        ),
    ] {
        let shutdown = stop();
        let addr = listener.local_addr()?;
        println!("{} ready on http://{addr}", info.name);
        nodes.push((
            info.name,
            tokio::spawn(async move {
                service_kit::server::serve(info, listener, router, shutdown)
                    .await
                    .map_err(anyhow::Error::from)
            }),
        ));
    }

    let mut control: gatehouse_control::ControlConfig = defaults();
    control.listen = config.control_listen;
    control.data_dir = data.join("control");
    control.token_service_url = format!("http://{}", local(config.token_grpc_listen));
    nodes.push((
        "control",
        tokio::spawn(gatehouse_control::serve_on_log(
            control,
            log.clone(),
            stop(),
        )),
    ));

    // First start: a new admin client, whose secret only this run knows.
    let admin = match &remembered {
        Some(r) => (r.admin_client_id.clone(), None),
        None => ("gatehouse-admin".to_string(), Some(random_secret())),
    };
    let mut token: gatehouse_token_service::TokenServiceConfig = defaults();
    token.listen_https = config.token_https_listen;
    token.listen_grpc = config.token_grpc_listen;
    token.data_dir = data.join("token-service");
    token.admin_client_id = admin.1.as_ref().map(|_| admin.0.clone());
    token.admin_client_secret = admin.1.clone();
    nodes.push((
        "token-service",
        tokio::spawn(gatehouse_token_service::serve_on_log(
            token,
            log.clone(),
            stop(),
        )),
    ));

    let mut gateway: gatehouse_gateway::GatewayConfig = defaults();
    gateway.https_listen = config.gateway_https_listen;
    gateway.http_listen = config.gateway_http_listen;
    gateway.control_url = format!("http://{}", local(config.control_listen));
    gateway.data_dir = data.join("gateway");
    gateway.gateway_id = Some("gateway-1".into());
    gateway.access_log = false;
    gateway.trace_requests = tracing;
    nodes.push((
        "gateway",
        tokio::spawn(gatehouse_gateway::serve_with_log(
            gateway,
            log.clone(),
            stop(),
        )),
    ));

    let outcome = tokio::select! {
        r = wait_until_serving(&config) => r,
        failed = first_failure(&mut nodes) => Err(failed),
    };
    if let Err(e) = outcome {
        stop_all(&stop_tx, nodes).await;
        return Err(e);
    }

    let token_url = format!("https://localhost:{}", config.token_https_listen.port());
    let gateway_url = format!("https://localhost:{}", config.gateway_https_listen.port());
    let bootstrap_config = BootstrapConfig {
        control_url: format!("http://{}", local(config.control_listen)),
        token_url: format!("https://{}", local(config.token_https_listen)),
        admin_client_id: admin.0.clone(),
        admin_client_secret: admin.1.clone().unwrap_or_default(),
        client_service_url: format!("http://{client_addr}"),
        order_service_url: format!("http://{order_addr}"),
        public_token_url: token_url.clone(),
        public_gateway_url: gateway_url.clone(),
    };
    let seeded = match &remembered {
        None if config.no_demo => {
            Remembered {
                admin_client_id: admin.0.clone(),
                application_id: String::new(),
                consumer_key: String::new(),
                client_service_port: client_addr.port(),
                order_service_port: order_addr.port(),
            }
            .save(&data)?;
            None
        }
        None => {
            let seeded = match bootstrap::run(&bootstrap_config).await {
                Ok(seeded) => seeded,
                Err(e) => {
                    stop_all(&stop_tx, nodes).await;
                    return Err(e.context("seeding the demo failed"));
                }
            };
            Remembered {
                admin_client_id: admin.0.clone(),
                application_id: seeded.application_id.clone(),
                consumer_key: seeded.consumer_key.clone(),
                client_service_port: client_addr.port(),
                order_service_port: order_addr.port(),
            }
            .save(&data)?;
            Some(seeded)
        }
        Some(_) => None,
    };

    let demo = seeded.is_some()
        || remembered
            .as_ref()
            .is_some_and(|r| !r.consumer_key.is_empty());
    if demo {
        print_banner(
            &config,
            &bootstrap_config,
            &admin,
            remembered.as_ref(),
            seeded.as_ref(),
        );
    } else {
        print_empty_banner(&config, &bootstrap_config, &admin, client_addr, order_addr);
    }

    let failed = tokio::select! {
        () = gatehouse_node::shutdown_signal() => None,
        failed = first_failure(&mut nodes) => Some(failed),
    };
    println!("stopping Gatehouse...");
    stop_all(&stop_tx, nodes).await;
    match failed {
        None => {
            println!("stopped");
            Ok(())
        }
        Some(e) => Err(e),
    }
}

/// Polls until every node answers.
async fn wait_until_serving(config: &UpConfig) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    for (addr, what) in [
        (config.control_listen, "control"),
        (config.token_https_listen, "token-service"),
        (config.token_grpc_listen, "token-service (gRPC)"),
        (config.gateway_http_listen, "gateway"),
    ] {
        let addr = local(addr);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if tokio::time::Instant::now() > deadline {
                bail!("{what} did not start listening on {addr} within 2 minutes");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Completes when a node stops by itself: an error, or an unexpected end.
async fn first_failure(nodes: &mut [Node]) -> anyhow::Error {
    loop {
        for (name, handle) in nodes.iter_mut() {
            if handle.is_finished() {
                return match handle.await {
                    Ok(Err(e)) => e.context(format!("{name} failed")),
                    Ok(Ok(())) => anyhow::anyhow!("{name} stopped unexpectedly"),
                    Err(e) => anyhow::anyhow!("{name} crashed: {e}"),
                };
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stop_all(stop: &watch::Sender<bool>, nodes: Vec<Node>) {
    stop.send_replace(true);
    for (name, handle) in nodes {
        if handle.is_finished() {
            continue;
        }
        match tokio::time::timeout(Duration::from_secs(20), handle).await {
            Ok(Ok(Err(e))) => eprintln!("{name}: {e:#}"),
            Ok(_) => {}
            Err(_) => eprintln!("{name} did not stop within 20 s"),
        }
    }
}

/// For `--no-demo`: the admin client and the backends, for the seed's steps by hand.
fn print_empty_banner(
    config: &UpConfig,
    b: &BootstrapConfig,
    admin: &(String, Option<String>),
    client: SocketAddr,
    order: SocketAddr,
) {
    let secret = admin
        .1
        .clone()
        .unwrap_or_else(|| "<admin secret shown at first start>".into());
    println!(
        r#"
================================================================================
Gatehouse is up, empty (--no-demo): do the seed's steps by hand (README, "The
seed's walkthrough").

Admin client ({note}):
  client id:     {id}
  client secret: {secret}

Backends: client-service on http://{client}, order-service on http://{order}
Admin API: grpcurl -plaintext localhost:{grpc} list
Token endpoint: {token}/oauth2/token

Ctrl-C stops everything; data stays in {data}.
================================================================================"#,
        note = if admin.1.is_some() {
            "shown once: note it now"
        } else {
            "the secret was shown at first start only"
        },
        id = admin.0,
        grpc = config.control_listen.port(),
        token = b.public_token_url,
        data = config.data_dir.display(),
    );
}

fn print_banner(
    config: &UpConfig,
    b: &BootstrapConfig,
    admin: &(String, Option<String>),
    remembered: Option<&Remembered>,
    seeded: Option<&bootstrap::Seeded>,
) {
    let token_url = &b.public_token_url;
    let gateway = &b.public_gateway_url;
    let grpc = format!("localhost:{}", config.control_listen.port());
    let (admin_secret, admin_note) = match &admin.1 {
        Some(secret) => (secret.clone(), "shown once: note it now"),
        None => (
            "<admin secret shown at first start>".to_string(),
            "the secret was shown at first start only",
        ),
    };
    let consumer_key = seeded
        .map(|s| s.consumer_key.clone())
        .or_else(|| remembered.map(|r| r.consumer_key.clone()))
        .unwrap_or_default();
    let (app_secret, app_note) = match seeded.and_then(|s| s.consumer_secret.clone()) {
        Some(secret) => (secret, "shown once: note it now"),
        None => (
            "<consumer secret shown at first start>".to_string(),
            "the secret was shown at first start only; RegenerateSecret gives a new one",
        ),
    };
    println!(
        r#"
================================================================================
Gatehouse is up.{seeded_note}

Admin client ({admin_note}):
  client id:     {admin_id}
  client secret: {admin_secret}

MyPythonApp, production keys ({app_note}):
  consumer key:    {consumer_key}
  consumer secret: {app_secret}

Call the APIs through the gateway (the seed's commands):
  TOKEN=$(curl -sk -d grant_type=client_credentials -u '{consumer_key}:{app_secret}' {token_url}/oauth2/token | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
  curl -k -H "Authorization: Bearer $TOKEN" {gateway}/client/1.0.0/users
  curl -k -H "Authorization: Bearer $TOKEN" {gateway}/orders/1.0.0/items

Administer with grpcurl (reflection is on):
  grpcurl -plaintext {grpc} list
  ADMIN_TOKEN=$(curl -sk -d grant_type=client_credentials -u '{admin_id}:{admin_secret}' {token_url}/oauth2/token | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
  grpcurl -plaintext -H "authorization: Bearer $ADMIN_TOKEN" {grpc} gatehouse.admin.v1.ControlPlane/ListApis
  NEW_API=$(grpcurl -plaintext -H "authorization: Bearer $ADMIN_TOKEN" -d '{{"sourceApiId": "{client_api}", "newVersion": "2.0.0"}}' {grpc} gatehouse.admin.v1.ControlPlane/CreateApiVersion | sed -n 's/^  "id": "\(.*\)",$/\1/p')
  grpcurl -plaintext -H "authorization: Bearer $ADMIN_TOKEN" -d "{{\"apiId\": \"$NEW_API\", \"target\": \"PUBLISHED\"}}" {grpc} gatehouse.admin.v1.ControlPlane/ChangeLifecycle
  grpcurl -plaintext -H "authorization: Bearer $ADMIN_TOKEN" -d "{{\"applicationId\": \"{app_id}\", \"apiId\": \"$NEW_API\", \"tier\": \"Gold\"}}" {grpc} gatehouse.admin.v1.ControlPlane/Subscribe
  curl -k -H "Authorization: Bearer $TOKEN" {gateway}/client/2.0.0/users

Ctrl-C stops everything; data stays in {data}.
================================================================================"#,
        seeded_note = if seeded.is_some() {
            " First start: the demo is seeded."
        } else {
            " The demo was seeded at first start."
        },
        admin_id = admin.0,
        app_id = seeded
            .map(|s| s.application_id.clone())
            .or_else(|| remembered.map(|r| r.application_id.clone()))
            .unwrap_or_default(),
        client_api = seeded
            .map(|s| s.client_api_id.clone())
            .unwrap_or_else(|| "<ClientServiceAPI id, see ListApis>".into()),
        data = config.data_dir.display(),
    );
}

//! `gatehouse up`: the all-in-one. control, token-service, one gateway and the two demo
//! backends in this one process, on one event log — the embedded file log in the data
//! directory (no NATS, no Docker), or NATS with `--nats`.
//!
//! On first start it creates the admin client and seeds the demo through the admin API
//! (the same [`bootstrap`] as compose's one-shot), then prints the
//! credentials and the exact curl and grpcurl lines to try. It remembers, in
//! `<data-dir>/all-in-one.json`, what a later start needs and may show: the admin
//! client's id, MyPythonApp's consumer key and the backends' ports — never a secret.
//!
//! [`run`] is a sequence of named steps: [`DataDir::prepare`], [`check_ports_free`],
//! [`open_log`], [`start_backends`], [`start_nodes`], [`wait_until_serving`],
//! [`seed_first_start`], the banner, then [`Nodes::run_until`] the shutdown.
//!
//! Shutdown (Ctrl-C, SIGTERM) stops every node gracefully: in-flight calls finish, and
//! every change acknowledged before was fsync'd to the log when it was acknowledged.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use gatehouse_eventlog::{EventLog, FileLog, NatsLog, NatsLogConfig};
use gatehouse_node::pki::{ClusterCa, NodeIdentity, NodeRole};
use gatehouse_node::process::parse_defaults;
use gatehouse_node::tls::ClusterTlsArgs;
use gatehouse_node::{NodeContext, RuntimeArgs, Shutdown};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::bootstrap::{self, BootstrapConfig};

/// The all-in-one's flags.
#[derive(clap::Args, Debug, Clone)]
pub struct UpConfig {
    /// Where the event log, keys and certificates live.
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,
    /// Use this NATS server (JetStream) as the event log instead of the embedded one.
    #[arg(long, env = "GATEHOUSE_NATS_URL")]
    pub nats: Option<String>,
    /// control's gRPC admin API (TLS under the all-in-one's cluster CA).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub control_listen: SocketAddr,
    /// token-service's HTTPS token endpoint.
    #[arg(long, default_value = "127.0.0.1:9443")]
    pub token_https_listen: SocketAddr,
    /// token-service's gRPC key manager (internal: control only, mutual TLS; stays on
    /// loopback even with --listen-all).
    #[arg(long, default_value = "127.0.0.1:50052")]
    pub token_grpc_listen: SocketAddr,
    /// The gateway's HTTPS listener.
    #[arg(long, default_value = "127.0.0.1:8243")]
    pub gateway_https_listen: SocketAddr,
    /// The gateway's plain HTTP listener (and /healthz, /readyz, /metrics).
    #[arg(long, default_value = "127.0.0.1:8280")]
    pub gateway_http_listen: SocketAddr,
    /// Listen on every interface (0.0.0.0) instead of loopback only: the admin API, the
    /// token endpoint and the gateway become reachable from other machines.
    #[arg(long)]
    pub listen_all: bool,
    /// client-service's port on 127.0.0.1 (0: a free port, kept for later starts).
    #[arg(long, default_value_t = 0)]
    pub client_service_port: u16,
    /// order-service's port on 127.0.0.1 (0: a free port, kept for later starts).
    #[arg(long, default_value_t = 0)]
    pub order_service_port: u16,
    /// Start empty: no demo APIs, application or keys (do the seed's steps by hand).
    #[arg(long)]
    pub no_demo: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// `gatehouse up`'s main: quiet logs by default (the nodes print their own "ready on"
/// lines), a span per gateway request when traces are exported.
pub fn main(config: UpConfig) -> std::process::ExitCode {
    let runtime = config.runtime.clone();
    gatehouse_node::run_node("gatehouse", "warn", &runtime, |node| run(config, node))
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

/// The data directory, checked writable, and what an earlier start left in it.
pub struct DataDir {
    path: PathBuf,
    remembered: Option<Remembered>,
}

impl DataDir {
    /// Step 1: creates the directory if needed, checks it is writable, and reads what
    /// an earlier start remembered.
    pub fn prepare(path: &Path) -> anyhow::Result<DataDir> {
        std::fs::create_dir_all(path)
            .with_context(|| format!("cannot create the data directory {}", path.display()))?;
        let probe = path.join(".writable");
        std::fs::write(&probe, b"")
            .with_context(|| format!("the data directory {} is not writable", path.display()))?;
        let _ = std::fs::remove_file(&probe);
        let file = path.join(REMEMBERED);
        let remembered = match std::fs::read(&file) {
            Ok(bytes) => Some(serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is damaged; delete the data directory to start over",
                    file.display()
                )
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
        };
        Ok(DataDir {
            path: path.to_path_buf(),
            remembered,
        })
    }

    fn remember(&self, remembered: &Remembered) -> anyhow::Result<()> {
        let path = self.path.join(REMEMBERED);
        let tmp = self.path.join(format!("{REMEMBERED}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(remembered)?)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .with_context(|| format!("cannot write {}", path.display()))
    }

    fn first_start(&self) -> bool {
        self.remembered.is_none()
    }
}

/// The all-in-one's admin client: its id, and its secret on the first start only (then
/// token-service keeps its hash, and this process forgets it).
#[derive(Clone)]
pub struct AdminClient {
    pub client_id: String,
    /// `Some` only on the first start.
    pub secret: Option<String>,
}

impl AdminClient {
    /// A new client with a random secret on the first start; the remembered id after.
    fn for_start(data: &DataDir) -> AdminClient {
        match &data.remembered {
            Some(r) => AdminClient {
                client_id: r.admin_client_id.clone(),
                secret: None,
            },
            None => AdminClient {
                client_id: "gatehouse-admin".to_string(),
                secret: Some(format!(
                    "{}{}",
                    uuid::Uuid::new_v4().simple(),
                    uuid::Uuid::new_v4().simple()
                )),
            },
        }
    }

    /// The secret as the banner shows it, and a note on whether it is shown again.
    fn shown(&self) -> (String, &'static str) {
        match &self.secret {
            Some(secret) => (secret.clone(), SHOWN_ONCE),
            None => (
                "<admin secret shown at first start>".to_string(),
                "the secret was shown at first start only",
            ),
        }
    }
}

const SHOWN_ONCE: &str = "shown once: note it now";

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient")
            .field("client_id", &self.client_id)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Runs the all-in-one until `node.shutdown`.
pub async fn run(mut config: UpConfig, node: NodeContext) -> anyhow::Result<()> {
    if config.listen_all {
        for addr in [
            &mut config.control_listen,
            &mut config.token_https_listen,
            &mut config.gateway_https_listen,
            &mut config.gateway_http_listen,
        ] {
            addr.set_ip(std::net::Ipv4Addr::UNSPECIFIED.into());
        }
    }
    let data = DataDir::prepare(&config.data_dir)?;
    let identities = provision_identities(&data)?;
    check_ports_free(&config)?;
    let (log, described) = open_log(&config).await?;
    println!("Gatehouse all-in-one, {described}");

    let mut nodes = Nodes::new(node.shutdown.clone());
    let backends = start_backends(&config, &data, &mut nodes).await?;
    let admin = AdminClient::for_start(&data);
    start_nodes(
        &config,
        &data,
        &identities,
        log,
        &admin,
        node.tracing,
        &mut nodes,
    );
    let started = tokio::select! {
        r = wait_until_serving(&config) => r,
        failed = nodes.first_failure() => Err(failed),
    };
    if let Err(e) = started {
        nodes.stop().await;
        return Err(e);
    }

    let bootstrap_config = bootstrap_config(&config, &identities, &admin, &backends);
    let seeded = match seed_first_start(&config, &data, &admin, &backends, &bootstrap_config).await
    {
        Ok(seeded) => seeded,
        Err(e) => {
            nodes.stop().await;
            return Err(e);
        }
    };
    let remembered_demo = data
        .remembered
        .as_ref()
        .filter(|r| !r.consumer_key.is_empty());
    if seeded.is_some() || remembered_demo.is_some() {
        print_banner(
            &config,
            &identities,
            &bootstrap_config,
            &admin,
            remembered_demo,
            seeded.as_ref(),
        );
    } else {
        print_empty_banner(&config, &identities, &bootstrap_config, &admin, &backends);
    }
    nodes.run_until(&node.shutdown).await
}

/// The all-in-one's node identities: its own cluster CA and one certificate per node, in
/// `<data-dir>/pki/`, created on first start (see `gatehouse_node::pki`).
pub struct Identities {
    pub ca_dir: PathBuf,
}

impl Identities {
    fn cluster(&self, role: NodeRole, name: &str) -> ClusterTlsArgs {
        let identity = NodeIdentity::new(role, name).expect("a valid built-in name");
        ClusterTlsArgs::in_ca_dir(&self.ca_dir, &identity)
    }

    /// What grpcurl's `-cacert` takes.
    pub fn ca_cert(&self) -> PathBuf {
        self.ca_dir.join("ca.crt")
    }
}

/// Step 1b: the cluster CA and the nodes' certificates, issued on first start.
pub fn provision_identities(data: &DataDir) -> anyhow::Result<Identities> {
    let ca_dir = data.path.join("pki");
    let ca = ClusterCa::open_or_create(&ca_dir)
        .with_context(|| format!("cannot set up the cluster CA in {}", ca_dir.display()))?;
    let hosts = ["localhost", "127.0.0.1", "::1"].map(String::from);
    for (role, name) in NODES {
        let identity = NodeIdentity::new(role, name)?;
        if !ca_dir
            .join(format!("{}.crt", identity.file_stem()))
            .exists()
        {
            ca.issue(&identity, &hosts)?;
        }
    }
    Ok(Identities { ca_dir })
}

/// The all-in-one's nodes and their names.
const NODES: [(NodeRole, &str); 3] = [
    (NodeRole::Control, "control"),
    (NodeRole::TokenService, "token-service"),
    (NodeRole::Gateway, "gateway-1"),
];

/// Step 2: every port is free before anything starts, for a one-line error.
pub fn check_ports_free(config: &UpConfig) -> anyhow::Result<()> {
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
        std::net::TcpListener::bind(addr).map(drop).map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {addr} for {what}: {e} (is another Gatehouse running? stop it, or pick another port with the flags of `gatehouse up --help`)"
            )
        })?;
    }
    Ok(())
}

/// Step 3: the event log every node of this process shares, and how to describe it.
pub async fn open_log(config: &UpConfig) -> anyhow::Result<(Arc<dyn EventLog>, String)> {
    match &config.nats {
        Some(url) => {
            let log = NatsLog::connect(NatsLogConfig::new(url.clone()))
                .await
                .with_context(|| format!("cannot use the event log on NATS at {url}"))?;
            Ok((Arc::new(log), format!("event log on NATS at {url}")))
        }
        None => {
            let dir = config.data_dir.join("eventlog");
            let log = FileLog::open(&dir)
                .with_context(|| format!("cannot open the event log in {}", dir.display()))?;
            Ok((
                Arc::new(log),
                format!("embedded event log in {}", dir.display()),
            ))
        }
    }
}

/// Where the demo backends listen.
pub struct Backends {
    pub client_service: SocketAddr,
    pub order_service: SocketAddr,
}

/// Step 4: the backends first, since their ports go into the APIs' endpoints. A port
/// given on the command line wins; else the one kept from the first start; else (0) a
/// free one.
pub async fn start_backends(
    config: &UpConfig,
    data: &DataDir,
    nodes: &mut Nodes,
) -> anyhow::Result<Backends> {
    let kept = data.remembered.as_ref();
    let port = |flag: u16, kept: Option<u16>| if flag != 0 { flag } else { kept.unwrap_or(0) };
    let mut addrs = Vec::new();
    for (port, info, router) in [
        (
            port(
                config.client_service_port,
                kept.map(|r| r.client_service_port),
            ),
            client_service::SERVICE,
            client_service::router(),
        ),
        (
            port(
                config.order_service_port,
                kept.map(|r| r.order_service_port),
            ),
            order_service::SERVICE,
            order_service::router(),
        ),
    ] {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let listener = TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} for {} (its port was chosen at first start; free it, or delete the data directory to start over)", info.name)
        })?;
        let addr = listener.local_addr()?;
        println!("{} ready on http://{addr}", info.name);
        let shutdown = nodes.shutdown.wait_owned();
        nodes.spawn(info.name, async move {
            service_kit::server::serve(info, listener, router, shutdown)
                .await
                .map_err(anyhow::Error::from)
        });
        addrs.push(addr);
    }
    Ok(Backends {
        client_service: addrs[0],
        order_service: addrs[1],
    })
}

/// Step 5: control, token-service and the gateway on the shared log, each with its
/// flags' defaults except where the all-in-one decides.
pub fn start_nodes(
    config: &UpConfig,
    data: &DataDir,
    identities: &Identities,
    log: Arc<dyn EventLog>,
    admin: &AdminClient,
    tracing: bool,
    nodes: &mut Nodes,
) {
    let context = NodeContext {
        shutdown: nodes.shutdown.clone(),
        tracing,
        log: Some(log),
    };
    let control = config.control(data, identities);
    nodes.spawn(
        "control",
        gatehouse_control::serve(control, context.clone()),
    );
    let token = config.token_service(data, identities, admin);
    nodes.spawn(
        "token-service",
        gatehouse_token_service::serve(token, context.clone()),
    );
    let gateway = config.gateway(data, identities);
    nodes.spawn("gateway", gatehouse_gateway::serve(gateway, context));
}

impl UpConfig {
    /// control in the all-in-one: its defaults, on the all-in-one's address, files and
    /// identity, calling the all-in-one's token-service.
    fn control(&self, data: &DataDir, identities: &Identities) -> gatehouse_control::ControlConfig {
        let mut control: gatehouse_control::ControlConfig = parse_defaults();
        control.listen = self.control_listen;
        control.data_dir = data.path.join("control");
        control.token_service_url = format!("https://{}", local(self.token_grpc_listen));
        control.node.cluster = identities.cluster(NodeRole::Control, "control");
        control
    }

    /// token-service in the all-in-one: its defaults, on the all-in-one's addresses,
    /// files and identity, registering the admin client on the first start.
    fn token_service(
        &self,
        data: &DataDir,
        identities: &Identities,
        admin: &AdminClient,
    ) -> gatehouse_token_service::TokenServiceConfig {
        let mut token: gatehouse_token_service::TokenServiceConfig = parse_defaults();
        token.listen_https = self.token_https_listen;
        token.listen_grpc = self.token_grpc_listen;
        token.data_dir = data.path.join("token-service");
        token.node.cluster = identities.cluster(NodeRole::TokenService, "token-service");
        // Only the first start registers the admin client (the configured secret wins).
        if let Some(secret) = &admin.secret {
            token.admin.admin_client_id = Some(admin.client_id.clone());
            token.admin.admin_client_secret = Some(secret.clone());
        }
        token
    }

    /// The all-in-one's gateway: its defaults, on the all-in-one's addresses, files and
    /// identity, syncing with the all-in-one's control, without an access log.
    fn gateway(&self, data: &DataDir, identities: &Identities) -> gatehouse_gateway::GatewayConfig {
        let mut gateway: gatehouse_gateway::GatewayConfig = parse_defaults();
        gateway.https_listen = self.gateway_https_listen;
        gateway.http_listen = self.gateway_http_listen;
        gateway.control_url = format!("https://{}", local(self.control_listen));
        gateway.data_dir = data.path.join("gateway");
        gateway.node.cluster = identities.cluster(NodeRole::Gateway, "gateway-1");
        gateway.access_log = false;
        gateway
    }
}

fn bootstrap_config(
    config: &UpConfig,
    identities: &Identities,
    admin: &AdminClient,
    backends: &Backends,
) -> BootstrapConfig {
    BootstrapConfig {
        connection: bootstrap::ControlConnection {
            control_url: format!("https://{}", local(config.control_listen)),
            cluster_ca: Some(identities.ca_cert()),
            token_url: format!("https://{}", local(config.token_https_listen)),
            admin: bootstrap::AdminClientArgs {
                admin_client_id: admin.client_id.clone(),
                admin_client_secret: admin.secret.clone().unwrap_or_default(),
                admin_client_secret_file: None,
            },
        },
        client_service_url: format!("http://{}", backends.client_service),
        order_service_url: format!("http://{}", backends.order_service),
        public_token_url: format!("https://localhost:{}", config.token_https_listen.port()),
        public_gateway_url: format!("https://localhost:{}", config.gateway_https_listen.port()),
    }
}

/// Step 7: on the first start only, seeds the demo (unless `--no-demo`) and remembers
/// what later starts need. `Some` when this start seeded it.
pub async fn seed_first_start(
    config: &UpConfig,
    data: &DataDir,
    admin: &AdminClient,
    backends: &Backends,
    bootstrap_config: &BootstrapConfig,
) -> anyhow::Result<Option<bootstrap::Seeded>> {
    if !data.first_start() {
        return Ok(None);
    }
    let seeded = if config.no_demo {
        None
    } else {
        Some(
            bootstrap::run(bootstrap_config)
                .await
                .context("seeding the demo failed")?,
        )
    };
    data.remember(&Remembered {
        admin_client_id: admin.client_id.clone(),
        application_id: seeded
            .as_ref()
            .map(|s| s.application_id.clone())
            .unwrap_or_default(),
        consumer_key: seeded
            .as_ref()
            .map(|s| s.consumer_key.clone())
            .unwrap_or_default(),
        client_service_port: backends.client_service.port(),
        order_service_port: backends.order_service.port(),
    })?;
    Ok(seeded)
}

/// Step 6: polls until every node answers on its port.
pub async fn wait_until_serving(config: &UpConfig) -> anyhow::Result<()> {
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

/// The tasks of every node and backend of this process, and the shutdown they share.
pub struct Nodes {
    shutdown: Shutdown,
    tasks: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)>,
}

impl Nodes {
    fn new(shutdown: Shutdown) -> Nodes {
        Nodes {
            shutdown,
            tasks: Vec::new(),
        }
    }

    fn spawn(
        &mut self,
        name: &'static str,
        task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        self.tasks.push((name, tokio::spawn(task)));
    }

    /// Completes when a node stops by itself: an error, or an unexpected end.
    async fn first_failure(&mut self) -> anyhow::Error {
        loop {
            for (name, handle) in self.tasks.iter_mut() {
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

    /// Last step: serves until `shutdown` (or until a node fails), then stops them all.
    pub async fn run_until(mut self, shutdown: &Shutdown) -> anyhow::Result<()> {
        let failed = tokio::select! {
            () = shutdown.wait() => None,
            failed = self.first_failure() => Some(failed),
        };
        println!("stopping Gatehouse...");
        self.stop().await;
        match failed {
            None => {
                println!("stopped");
                Ok(())
            }
            Some(e) => Err(e),
        }
    }

    /// Triggers the shared shutdown and waits for every task (20 s each at most).
    async fn stop(self) {
        self.shutdown.trigger();
        for (name, handle) in self.tasks {
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
}

fn local(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

/// For `--no-demo`: the admin client and the backends, for the seed's steps by hand.
fn print_empty_banner(
    config: &UpConfig,
    identities: &Identities,
    b: &BootstrapConfig,
    admin: &AdminClient,
    backends: &Backends,
) {
    let (secret, note) = admin.shown();
    println!(
        r#"
================================================================================
Gatehouse is up, empty (--no-demo): do the seed's steps by hand (README, "The
seed's walkthrough").

Admin client ({note}):
  client id:     {id}
  client secret: {secret}

Backends: client-service on http://{client}, order-service on http://{order}
Admin API (TLS under the all-in-one's CA): grpcurl -cacert {ca} localhost:{grpc} list
Token endpoint: {token}/oauth2/token

Ctrl-C stops everything; data stays in {data}.
================================================================================"#,
        id = admin.client_id,
        client = backends.client_service,
        order = backends.order_service,
        grpc = config.control_listen.port(),
        ca = identities.ca_cert().display(),
        token = b.public_token_url,
        data = config.data_dir.display(),
    );
}

fn print_banner(
    config: &UpConfig,
    identities: &Identities,
    b: &BootstrapConfig,
    admin: &AdminClient,
    remembered: Option<&Remembered>,
    seeded: Option<&bootstrap::Seeded>,
) {
    let token_url = &b.public_token_url;
    let gateway = &b.public_gateway_url;
    let grpc = format!(
        "-cacert {} localhost:{}",
        identities.ca_cert().display(),
        config.control_listen.port()
    );
    let (admin_secret, admin_note) = admin.shown();
    let consumer_key = seeded
        .map(|s| s.consumer_key.clone())
        .or_else(|| remembered.map(|r| r.consumer_key.clone()))
        .unwrap_or_default();
    let (app_secret, app_note) = match seeded.and_then(|s| s.consumer_secret.clone()) {
        Some(secret) => (secret, SHOWN_ONCE),
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

Administer with grpcurl (reflection is on; TLS under the all-in-one's CA):
  grpcurl {grpc} list
  ADMIN_TOKEN=$(curl -sk -d grant_type=client_credentials -u '{admin_id}:{admin_secret}' {token_url}/oauth2/token | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
  grpcurl -H "authorization: Bearer $ADMIN_TOKEN" {grpc} gatehouse.admin.v1.ControlPlane/ListApis
  NEW_API=$(grpcurl -H "authorization: Bearer $ADMIN_TOKEN" -d '{{"sourceApiId": "{client_api}", "newVersion": "2.0.0"}}' {grpc} gatehouse.admin.v1.ControlPlane/CreateApiVersion | sed -n 's/^  "id": "\(.*\)",$/\1/p')
  grpcurl -H "authorization: Bearer $ADMIN_TOKEN" -d "{{\"apiId\": \"$NEW_API\", \"target\": \"PUBLISHED\"}}" {grpc} gatehouse.admin.v1.ControlPlane/ChangeLifecycle
  grpcurl -H "authorization: Bearer $ADMIN_TOKEN" -d "{{\"applicationId\": \"{app_id}\", \"apiId\": \"$NEW_API\", \"tier\": \"Gold\"}}" {grpc} gatehouse.admin.v1.ControlPlane/Subscribe
  curl -k -H "Authorization: Bearer $TOKEN" {gateway}/client/2.0.0/users

Ctrl-C stops everything; data stays in {data}.
================================================================================"#,
        seeded_note = if seeded.is_some() {
            " First start: the demo is seeded."
        } else {
            " The demo was seeded at first start."
        },
        admin_id = admin.client_id,
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

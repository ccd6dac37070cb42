//! Gatehouse's gateway: the data plane.
//!
//! Every API call goes through a gateway replica, which routes it, authenticates it,
//! authorises it, throttles it, maybe answers it from its cache, and proxies it to the
//! API's backend. Replicas hold no configuration of their own: each folds the event log
//! into a routing table and swaps it in as the log moves.
//!
//! | module | what it does |
//! |---|---|
//! | [`proxy`] | the request's life as named phases, pingora-style: ready → path normalisation → route match → request limits → API state → CORS preflight → authenticate → subscription → scopes → throttle → response cache → upstream peer → upstream request filter → forward → cache store → response headers → logging |
//! | [`table`] | the routing table compiled from the domain state, swapped atomically |
//! | [`routing`] | the segment tries behind route matching (longest context, templates) |
//! | [`auth`] | Bearer JWT verification with a verified-token cache |
//! | [`throttle`] | fixed-window counters; each replica enforces its share of a limit |
//! | [`cache`] | the opt-in response cache |
//! | [`shards`] | the sharded map behind the token cache, the response cache and the throttle counters |
//! | [`paths`] | the one path normalisation before routing (what is merged, what is refused) |
//! | [`limits`] | the edge limits as flags: connections, timeouts, header and body sizes, cache budgets, trusted proxies |
//! | [`conn`] | the per-connection watchdog: header-read, HTTP/1 keep-alive and HTTP/2 idle timeouts |
//! | [`upstream`] | pooled keep-alive client, load balancing, failover, timeouts |
//! | [`errors`] | WSO2's JSON error bodies and codes |
//! | [`sync`] | snapshot → follow the log → rebuild and swap; resync on gaps; status reports |
//! | [`disk`] | the snapshot kept on local disk for starts with control and the log down |
//! | [`server`] | HTTPS (h2 + http/1.1 by ALPN) and HTTP listeners, graceful drain |
//! | [`metrics`] | Prometheus text at `/metrics` |
//!
//! [`main`] is the process (the `gateway` binary and `gatehouse gateway`); [`serve`] runs
//! a gateway until its context's [`Shutdown`], on `config.node.log` or on an event log
//! the launcher already opened (the all-in-one shares its embedded log this way);
//! [`start`] returns a handle with the bound addresses (tests).
//!
//! # Shared state
//!
//! One [`proxy::Gateway`] per process behind an `Arc`, shared by every connection task,
//! the syncer and the housekeeping task. Its routing table is an `ArcSwap` written only
//! by the syncer; the rest is immutable or synchronised internally, as each module's
//! docs explain.

pub mod auth;
pub mod body;
pub mod cache;
pub mod conn;
pub mod disk;
pub mod errors;
pub mod limits;
pub mod metrics;
pub mod paths;
pub mod proxy;
pub mod routing;
pub mod server;
pub mod shards;
pub mod sync;
pub mod table;
pub mod throttle;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gatehouse_eventlog::EventLog;
use gatehouse_node::pki::NodeRole;
use gatehouse_node::tls::{NodeTls, https_url};
use gatehouse_node::{NodeArgs, NodeContext, Shutdown};
use gatehouse_tokens::DEFAULT_ISSUER;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;
use crate::proxy::{Gateway, GatewayOptions};
use crate::sync::{LogSource, SyncConfig, Syncer};

/// The gateway's configuration: flags, or the environment variables named beside them.
#[derive(clap::Args, Debug, Clone)]
pub struct GatewayConfig {
    /// Address of the HTTPS listener (HTTP/2 and HTTP/1.1 by ALPN).
    #[arg(
        long = "listen-https",
        env = "GATEHOUSE_GATEWAY_HTTPS_LISTEN",
        default_value = "0.0.0.0:8243"
    )]
    pub https_listen: SocketAddr,
    /// Address of the plain HTTP listener.
    #[arg(
        long = "listen-http",
        env = "GATEHOUSE_GATEWAY_HTTP_LISTEN",
        default_value = "0.0.0.0:8280"
    )]
    pub http_listen: SocketAddr,
    /// control's gRPC address (snapshots, status reports, and the event stream when
    /// there is no NATS), over mutual TLS.
    #[arg(long, env = "GATEHOUSE_CONTROL_URL", default_value = "https://127.0.0.1:50051")]
    pub control_url: String,
    /// This replica's id in control's `ListGateways`: the name in its node certificate
    /// (`gatehouse ca issue --role gateway --name <id>`). If given, it must be that name.
    #[arg(long, env = "GATEHOUSE_GATEWAY_ID")]
    pub gateway_id: Option<String>,
    /// Directory for the gateway's own files: the disk snapshot and the generated TLS
    /// certificate.
    #[arg(long, env = "GATEHOUSE_DATA_DIR", default_value = "./data/gateway")]
    pub data_dir: PathBuf,
    /// `iss` of the access tokens accepted (token-service's token endpoint URL).
    #[arg(long, env = "GATEHOUSE_TOKEN_ISSUER", default_value = DEFAULT_ISSUER)]
    pub token_issuer: String,
    /// Clock skew allowed on token `exp` and `nbf`, in seconds (at most 300: a revoked
    /// token's revocation is kept 300 s past its expiry, so it never verifies again).
    #[arg(
        long,
        env = "GATEHOUSE_TOKEN_LEEWAY_SECONDS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(0..=gatehouse_domain::REVOCATION_RETENTION_SECONDS as u64)
    )]
    pub token_leeway_seconds: u64,
    /// Number of gateway replicas sharing the traffic: each enforces
    /// `ceil(limit / N)` of every throttling limit.
    #[arg(long, env = "GATEHOUSE_GATEWAY_REPLICA_COUNT", default_value_t = 1)]
    pub replica_count: u32,
    /// PEM certificate chain of the HTTPS listener (default: a self-signed one in the
    /// data directory).
    #[arg(long, env = "GATEHOUSE_GATEWAY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the HTTPS listener.
    #[arg(long, env = "GATEHOUSE_GATEWAY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// How often the replica reports its status to control, in milliseconds.
    #[arg(long, env = "GATEHOUSE_GATEWAY_REPORT_INTERVAL_MS", default_value_t = 3000)]
    pub report_interval_ms: u64,
    /// One log line per request (target `gatehouse_gateway::access`).
    #[arg(
        long,
        env = "GATEHOUSE_GATEWAY_ACCESS_LOG",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub access_log: bool,
    /// Open a span per request and pass the gateway's trace context to the backend
    /// (set by the binary when OpenTelemetry export is on; not a flag).
    #[arg(skip)]
    pub trace_requests: bool,
    /// Its node identity, and the event log: with a NATS URL the replica follows the
    /// stream itself; without one it follows control's `WatchEvents` (the embedded file
    /// log belongs to one process and is never opened by a separate gateway).
    #[command(flatten)]
    pub node: NodeArgs,
    /// What one caller may cost this replica: connections, timeouts, sizes, the cache.
    #[command(flatten)]
    pub limits: limits::GatewayLimits,
}

impl GatewayConfig {
    /// The configuration with every default, as if no flag were given (tests and
    /// launchers adjust fields from there).
    pub fn defaults() -> GatewayConfig {
        gatehouse_node::process::parse_defaults()
    }

    /// The replica id: the name its node certificate proves (`--gateway-id`, if given,
    /// must agree: control accepts reports only under the certificate's name).
    pub fn id(&self, tls: &NodeTls) -> anyhow::Result<String> {
        if tls.identity.role != NodeRole::Gateway {
            anyhow::bail!(
                "--node-cert: this is the certificate of {}, not of a gateway",
                tls.identity
            );
        }
        match &self.gateway_id {
            Some(id) if *id != tls.identity.name => anyhow::bail!(
                "--gateway-id {id:?} differs from the name in the node certificate ({:?}); \
                 issue one for this id with `gatehouse ca issue --role gateway --name {id}`",
                tls.identity.name
            ),
            _ => Ok(tls.identity.name.clone()),
        }
    }
}

/// The machine's host name, or `gateway`.
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gateway".to_string())
}

/// A running gateway.
pub struct RunningGateway {
    pub id: String,
    pub https_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    shutdown: Shutdown,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningGateway {
    /// Stops accepting, drains in-flight requests, saves the state, and returns.
    pub async fn shutdown(self) {
        self.shutdown.trigger();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Binds the listeners and starts the syncer; returns once the gateway accepts calls
/// (it answers 503 until its first configuration is in). `log`: an event log the caller
/// already opened, shared in-process; `None` uses `config.node.log` (NATS) or control.
pub async fn start(
    config: GatewayConfig,
    log: Option<Arc<dyn EventLog>>,
) -> anyhow::Result<RunningGateway> {
    let node_tls = config.node.cluster.load("the gateway")?;
    let id = config.id(&node_tls)?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    let tls = server::tls_config(
        config.tls_cert.as_deref(),
        config.tls_key.as_deref(),
        &config.data_dir,
        &hostname(),
    )?;
    let https = TcpListener::bind(config.https_listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.https_listen))?;
    let http = TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.http_listen))?;
    let https_addr = https.local_addr()?;
    let http_addr = http.local_addr()?;

    let metrics = Arc::new(Metrics::default());
    let verifier = gatehouse_tokens::Verifier::new(
        config.token_issuer.clone(),
        gatehouse_tokens::API_AUDIENCE,
    )
    .with_leeway(config.token_leeway_seconds);
    let gateway = Arc::new(Gateway::new(GatewayOptions {
        gateway_id: id.clone(),
        metrics,
        verifier,
        replica_count: config.replica_count,
        access_log: config.access_log,
        trace_requests: config.trace_requests,
        limits: config.limits.clone(),
    })?);

    let log_source = match (log, config.node.log.nats_config()?) {
        (Some(log), _) => LogSource::Provided(log),
        (None, Some(nats)) => LogSource::Nats(Box::new(nats)),
        (None, None) => LogSource::None,
    };
    tracing::info!(gateway_id = %id, source = ?log_source, control = %config.control_url, "gateway starting");
    let syncer = Syncer::new(
        gateway.clone(),
        SyncConfig {
            control_url: https_url("--control-url", &config.control_url)?,
            tls: node_tls,
            gateway_id: id.clone(),
            address: format!("https://{https_addr} http://{http_addr}"),
            report_interval: Duration::from_millis(config.report_interval_ms.max(100)),
            data_dir: config.data_dir.clone(),
            log: log_source,
        },
    )?;

    let shutdown = Shutdown::new();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let tasks = vec![
        tokio::spawn(server::accept_loop(
            https,
            Some(acceptor),
            gateway.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(server::accept_loop(
            http,
            None,
            gateway.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(syncer.run(shutdown.clone())),
        tokio::spawn(housekeeping(gateway.clone(), shutdown.clone())),
    ];
    Ok(RunningGateway {
        id,
        https_addr,
        http_addr,
        gateway,
        shutdown,
        tasks,
    })
}

/// Sweeps expired throttle counters, tokens and cached responses.
async fn housekeeping(gateway: Arc<Gateway>, shutdown: Shutdown) {
    let mut ticker = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.wait() => return,
        }
        gateway.throttler.sweep();
        gateway.auth.cache().sweep();
        gateway.cache.sweep();
    }
}

/// `gateway`'s and `gatehouse gateway`'s main.
pub fn main(config: GatewayConfig) -> std::process::ExitCode {
    let runtime = config.node.runtime.clone();
    gatehouse_node::run_node("gateway", "info", &runtime, |node| serve(config, node))
}

/// Runs a gateway until `node.shutdown`, then drains in-flight requests: on `node.log`
/// if the launcher shares one (the all-in-one's embedded log), else on `config.node.log`
/// (NATS) or control. With spans exported (`node.tracing`), every request gets one.
pub async fn serve(mut config: GatewayConfig, node: NodeContext) -> anyhow::Result<()> {
    config.trace_requests = node.tracing;
    let running = start(config, node.log).await?;
    println!(
        "gateway {} ready on https://{} and http://{}",
        running.id, running.https_addr, running.http_addr
    );
    node.shutdown.wait().await;
    tracing::info!("gateway shutting down: draining in-flight requests");
    running.shutdown().await;
    Ok(())
}

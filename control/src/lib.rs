//! Gatehouse's control plane: the admin API over the event log.
//!
//! This is WSO2's publisher and devportal as one gRPC service
//! (`gatehouse.admin.v1.ControlPlane`, see `proto/`). Its parts:
//!
//! - the read model (`gatehouse_node::read_model`): the domain state folded from the log
//!   by a follower task. Every read RPC answers from it.
//! - the write path (`gatehouse_node::commands`): a command is decided against a state
//!   that covers the whole log, appended with an optimistic-concurrency guard, and
//!   acknowledged once the follower has folded it back.
//! - [`service`]: the gRPC handlers, thin translations between requests and commands.
//!
//! [`serve`] wires them with gRPC server reflection (v1 and v1alpha, for grpcurl) and
//! `grpc.health.v1`.

pub mod auth;
pub mod gateways;
pub mod service;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use gatehouse_node::LogArgs;
use gatehouse_node::read_model::ReadModel;
use std::sync::Arc;

use gatehouse_proto::admin::control_plane_server::ControlPlaneServer;
use gatehouse_proto::admin::gateway_sync_server::GatewaySyncServer;

use crate::auth::AdminAuth;
use crate::gateways::{GatewayRegistry, GatewaySyncService};
use tokio_stream::wrappers::TcpListenerStream;

use crate::service::ControlService;

/// control's configuration: flags, or the environment variables named beside them.
#[derive(clap::Args, Debug, Clone)]
pub struct ControlConfig {
    /// Address of the gRPC admin API.
    #[arg(
        long,
        env = "GATEHOUSE_CONTROL_LISTEN",
        default_value = "0.0.0.0:50051"
    )]
    pub listen: SocketAddr,
    /// Directory for control's own files (the embedded event log).
    #[arg(
        long = "data-dir",
        env = "GATEHOUSE_DATA_DIR",
        default_value = "./data/control"
    )]
    pub data_dir: PathBuf,
    /// token-service's gRPC address, for application keys.
    #[arg(
        long = "token-service-url",
        env = "GATEHOUSE_TOKEN_SERVICE_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub token_service_url: String,
    /// Serve Prometheus metrics at http://<this>/metrics (off when unset).
    #[arg(long = "metrics-listen", env = "GATEHOUSE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// The `iss` admin tokens must carry (token-service's token endpoint URL).
    #[arg(long = "token-issuer", env = "GATEHOUSE_TOKEN_ISSUER", default_value = gatehouse_tokens::DEFAULT_ISSUER)]
    pub token_issuer: String,
    #[command(flatten)]
    pub log: LogArgs,
}

/// How long start-up waits for the state to be rebuilt from the log.
const REBUILD_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs control until `shutdown` completes: rebuilds the state from the log, then
/// serves the admin API.
pub async fn serve(
    config: ControlConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let log = config.log.open(&config.data_dir).await?;
    serve_on_log(config, log, shutdown).await
}

/// [`serve`] on a log opened by the caller: the all-in-one shares one embedded log
/// between the nodes of its process.
pub async fn serve_on_log(
    config: ControlConfig,
    log: Arc<dyn gatehouse_eventlog::EventLog>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let model = ReadModel::new();
    let follower = tokio::spawn(model.clone().follow(log.clone()));

    let end = log.last_sequence().await?;
    if !model.wait_for(end, REBUILD_TIMEOUT).await {
        anyhow::bail!("state not rebuilt from the event log within {REBUILD_TIMEOUT:?}");
    }
    tracing::info!(events = end, "state rebuilt from the event log");

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr()?;

    let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics = config.metrics_listen.map(|addr| {
        tokio::spawn(gatehouse_node::metrics::serve(
            addr,
            "control",
            model.clone(),
            async move {
                let _ = metrics_stopped.await;
            },
        ))
    });

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ControlPlaneServer<ControlService>>()
        .await;
    let (reflection_v1, reflection_v1alpha) = gatehouse_node::grpc::reflection()?;

    let key_manager = tonic::transport::Endpoint::from_shared(config.token_service_url.clone())
        .with_context(|| format!("invalid token-service URL {:?}", config.token_service_url))?
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy();
    let registry = Arc::new(GatewayRegistry::default());
    let sync = GatewaySyncService {
        log: log.clone(),
        model: model.clone(),
        registry: registry.clone(),
    };
    let auth = AdminAuth::new(config.token_issuer.clone(), model.clone());
    println!(
        "control ready on {local} (gRPC admin API; {})",
        log.describe()
    );
    let service = ControlService::new(log, model, key_manager, registry, auth);
    let result = tonic::transport::Server::builder()
        .trace_fn(|request| {
            let span = tracing::info_span!(
                "grpc",
                otel.name = %request.uri().path(),
                otel.kind = "server",
                rpc.system = "grpc",
                trace_id = tracing::field::Empty,
            );
            gatehouse_node::telemetry::set_parent_from(
                &span,
                request
                    .headers()
                    .iter()
                    .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))),
            );
            span
        })
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(ControlPlaneServer::new(service))
        .add_service(GatewaySyncServer::new(sync))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await;
    follower.abort();
    let _ = metrics_stop.send(());
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    result.context("gRPC server failed")
}

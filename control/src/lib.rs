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
//! - [`service`]: the gRPC handlers, thin translations between requests and commands;
//!   its `declarative` part imports APIs (OpenAPI, apictl) and plans and applies
//!   declarative files with `gatehouse_gitops`.
//!
//! [`serve`] wires them on one gRPC port ([`GrpcServer`]: reflection v1 and v1alpha for
//! grpcurl, `grpc.health.v1`, a span per call); [`main`] is the process around it.

pub mod gateways;
pub mod service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use gatehouse_node::auth::AdminAuth;
use gatehouse_node::grpc::GrpcServer;
use gatehouse_node::metrics::MetricsArgs;
use gatehouse_node::snapshot::SnapshotArgs;
use gatehouse_node::tls::https_url;
use gatehouse_node::{NodeArgs, NodeContext};
use gatehouse_proto::admin::control_plane_server::ControlPlaneServer;
use gatehouse_proto::admin::gateway_sync_server::GatewaySyncServer;
use gatehouse_tokens::DEFAULT_ISSUER;

use crate::gateways::{GatewayRegistry, GatewayRegistryArgs, GatewaySyncService};
use crate::service::{ControlService, DeclarativeLimits};

/// control's configuration: flags, or the environment variables named beside them.
#[derive(clap::Args, Debug, Clone)]
pub struct ControlConfig {
    /// Address of the gRPC admin API.
    #[arg(long, env = "GATEHOUSE_CONTROL_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,
    /// Directory for control's own files (the embedded event log).
    #[arg(long, env = "GATEHOUSE_DATA_DIR", default_value = "./data/control")]
    pub data_dir: PathBuf,
    /// token-service's gRPC address, for application keys (mutual TLS: `https://`).
    #[arg(long, env = "GATEHOUSE_TOKEN_SERVICE_URL", default_value = "https://127.0.0.1:50052")]
    pub token_service_url: String,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    /// The `iss` admin tokens must carry (token-service's token endpoint URL).
    #[arg(long, env = "GATEHOUSE_TOKEN_ISSUER", default_value = DEFAULT_ISSUER)]
    pub token_issuer: String,
    #[command(flatten)]
    pub gateways: GatewayRegistryArgs,
    #[command(flatten)]
    pub declarative: DeclarativeLimits,
    #[command(flatten)]
    pub snapshots: SnapshotArgs,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// `control`'s and `gatehouse control`'s main.
pub fn main(config: ControlConfig) -> std::process::ExitCode {
    let runtime = config.node.runtime.clone();
    gatehouse_node::run_node("control", "info", &runtime, |node| serve(config, node))
}

/// Runs control until `node.shutdown`: rebuilds the state from the log (`node.log`, or
/// else `config.node.log`), then serves the admin API.
pub async fn serve(config: ControlConfig, node: NodeContext) -> anyhow::Result<()> {
    let folding = config
        .node
        .start_folding("control", &config.data_dir, node.log, &config.snapshots)
        .await?;
    let model = folding.follower.model.clone();

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr()?;

    let metrics = config.metrics.spawn("control", &model, &node.shutdown);

    let key_manager = folding
        .tls
        .channel(&https_url(
            "--token-service-url",
            &config.token_service_url,
        )?)
        .context("token-service's KeyManager")?;
    let registry = Arc::new(GatewayRegistry::new(&config.gateways));
    let sync = GatewaySyncService {
        log: folding.log.clone(),
        model: model.clone(),
        registry: registry.clone(),
    };
    let auth = AdminAuth::new(config.token_issuer.clone(), model.clone());
    println!(
        "control ready on {local} (gRPC admin API; {})",
        folding.log.describe()
    );
    let max_message = config.declarative.max_message_bytes();
    let service = ControlService::new(
        folding.log,
        model,
        key_manager,
        registry,
        auth,
        config.declarative.clone(),
    );
    let result = GrpcServer::new()
        .tls(folding.tls.server_config()?)
        .add_service(ControlPlaneServer::new(service).max_decoding_message_size(max_message))
        .add_service(GatewaySyncServer::new(sync))
        .serve(listener, node.shutdown)
        .await;
    folding.follower.close().await;
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    Ok(result?)
}

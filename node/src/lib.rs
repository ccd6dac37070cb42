//! The run-time pieces every Gatehouse node shares.
//!
//! - [`LogArgs`]: which event log to use (NATS JetStream or the embedded file log) and
//!   how to open it.
//! - [`read_model::ReadModel`]: the domain state folded from the log by a follower task;
//!   [`read_model::Follower`] starts one and waits for the rebuild before serving.
//! - [`commands::CommandExecutor`]: the write path — decide a command against a state
//!   that covers the whole log, append its events with an optimistic-concurrency guard,
//!   wait until the fold has them.
//! - [`status`]: domain and log errors as gRPC statuses.
//! - [`metrics`]: Prometheus metrics of the fold and the write path.
//! - [`grpc::GrpcServer`]: the one way a node serves gRPC (health, reflection of exactly
//!   the services served, a span per call, graceful shutdown).
//! - [`shutdown::Shutdown`]: the one stop signal every server of a process shares.
//! - [`process`]: a node as a process — its runtime flags and its `main`.
//! - [`pki`] and [`tls`]: the cluster CA, node identities, mutual TLS between nodes.
//! - [`telemetry`]: logs, and OpenTelemetry traces over OTLP with W3C propagation.

pub mod commands;
pub mod grpc;
pub mod metrics;
pub mod pki;
pub mod process;
pub mod read_model;
pub mod shutdown;
pub mod status;
pub mod tls;

/// Completes on Ctrl-C or SIGTERM.
pub use gatehouse_telemetry::shutdown_signal;
pub use process::{NodeContext, RuntimeArgs, run_node};
pub use shutdown::Shutdown;

/// Logs and traces (the `gatehouse-telemetry` crate).
pub use gatehouse_telemetry as telemetry;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use gatehouse_eventlog::{EventLog, FileLog, NatsLog, NatsLogConfig};

/// Where the event log lives: NATS JetStream when a URL is given, else an embedded file
/// log in the node's data directory.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LogArgs {
    /// NATS server URL (e.g. nats://localhost:4222). Without it: control and
    /// token-service use an embedded log in their data directory; a gateway follows
    /// control's WatchEvents stream.
    #[arg(long = "nats-url", env = "GATEHOUSE_NATS_URL")]
    pub nats_url: Option<String>,
    /// JetStream stream holding the events.
    #[arg(
        long = "nats-stream",
        env = "GATEHOUSE_NATS_STREAM",
        default_value = "GATEHOUSE"
    )]
    pub nats_stream: String,
    /// Replicas of the stream when it is created (3 on a NATS cluster).
    #[arg(
        long = "nats-replicas",
        env = "GATEHOUSE_NATS_REPLICAS",
        default_value_t = 1
    )]
    pub nats_replicas: usize,
}

impl LogArgs {
    /// Opens the configured log; `data_dir` holds the embedded one.
    pub async fn open(&self, data_dir: &Path) -> anyhow::Result<Arc<dyn EventLog>> {
        match &self.nats_url {
            Some(url) => {
                let log = NatsLog::connect(NatsLogConfig {
                    url: url.clone(),
                    stream: self.nats_stream.clone(),
                    replicas: self.nats_replicas,
                })
                .await
                .with_context(|| format!("cannot use the event log on NATS at {url}"))?;
                Ok(Arc::new(log))
            }
            None => {
                let dir = data_dir.join("eventlog");
                let log = FileLog::open(&dir).with_context(|| {
                    format!("cannot open the embedded event log in {}", dir.display())
                })?;
                Ok(Arc::new(log))
            }
        }
    }
}

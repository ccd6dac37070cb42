//! The run-time pieces every Gatehouse node shares.
//!
//! - [`LogArgs`]: which event log to use (NATS JetStream or the embedded file log) and
//!   how to open it.
//! - [`read_model::ReadModel`]: the domain state folded from the log by a follower task;
//!   [`read_model::Follower`] starts one and waits for the rebuild before serving.
//! - [`snapshot`]: snapshots of that state, written periodically and read at start, so
//!   a start folds the newest snapshot plus the events after it.
//! - [`commands::CommandExecutor`]: the write path — decide a command against a state
//!   that covers the whole log, append its events with an optimistic-concurrency guard,
//!   wait until the fold has them.
//! - [`fold`]: folding one record, with the checks that quarantine poison records.
//! - [`auth`]: admin bearer tokens verified against the signing keys on the log; the
//!   verified [`auth::Caller`] is every event's actor.
//! - [`status`]: domain and log errors as gRPC statuses.
//! - [`metrics`]: Prometheus metrics of the fold and the write path.
//! - [`grpc::GrpcServer`]: the one way a node serves gRPC (health, reflection of exactly
//!   the services served, a span per call, graceful shutdown).
//! - [`shutdown::Shutdown`]: the one stop signal every server of a process shares.
//! - [`process`]: a node as a process — the flags every node takes ([`NodeArgs`]) and
//!   its `main`.
//! - [`pki`] and [`tls`]: the cluster CA, node identities, mutual TLS between nodes.
//! - [`telemetry`]: logs, and OpenTelemetry traces over OTLP with W3C propagation.

pub mod auth;
pub mod commands;
pub mod fold;
pub mod grpc;
pub mod metrics;
pub mod pki;
pub mod process;
pub mod read_model;
pub mod shutdown;
pub mod snapshot;
pub mod status;
pub mod tls;

/// Completes on Ctrl-C or SIGTERM.
pub use gatehouse_telemetry::shutdown_signal;
pub use process::{NodeArgs, NodeContext, RuntimeArgs, run_node};
pub use shutdown::Shutdown;

/// Logs and traces (the `gatehouse-telemetry` crate).
pub use gatehouse_telemetry as telemetry;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use gatehouse_eventlog::{EventLog, FileLog, NatsCredentials, NatsLog, NatsLogConfig, NatsTls};

/// Where the event log lives: NATS JetStream when a URL is given, else an embedded file
/// log in the node's data directory. With NATS, also how this node proves who it is to
/// NATS (its own NATS user: see `nats/nats.conf`) and TLS to NATS.
#[derive(clap::Args, Clone, Default)]
pub struct LogArgs {
    /// NATS server URL, or a comma-separated seed list of a cluster's servers (e.g.
    /// nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222). Without it: control and
    /// token-service use an embedded log in their data directory; a gateway follows
    /// control's WatchEvents stream.
    #[arg(long, env = "GATEHOUSE_NATS_URL")]
    pub nats_url: Option<String>,
    /// JetStream stream holding the events.
    #[arg(long, env = "GATEHOUSE_NATS_STREAM", default_value = "GATEHOUSE")]
    pub nats_stream: String,
    /// Replicas of the stream when it is created (3 on a NATS cluster).
    #[arg(long, env = "GATEHOUSE_NATS_REPLICAS", default_value_t = 1)]
    pub nats_replicas: usize,
    /// This node's NATS user (with GATEHOUSE_NATS_PASSWORD).
    #[arg(long, env = "GATEHOUSE_NATS_USER")]
    pub nats_user: Option<String>,
    /// The NATS user's password (set it by environment, not on the command line).
    #[arg(long, env = "GATEHOUSE_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    /// A NATS token, instead of a user.
    #[arg(long, env = "GATEHOUSE_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,
    /// A file holding this node's NATS NKey seed (`SU...`), instead of a user.
    #[arg(long, env = "GATEHOUSE_NATS_NKEY_FILE")]
    pub nats_nkey_file: Option<PathBuf>,
    /// A NATS `.creds` file (JWT and NKey seed, for operator-mode NATS), instead of a user.
    #[arg(long, env = "GATEHOUSE_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// The CA certificate (PEM) that signed the NATS servers' certificates: turns TLS on.
    #[arg(long, env = "GATEHOUSE_NATS_CA")]
    pub nats_ca: Option<PathBuf>,
    /// This node's client certificate for NATS (PEM), when the servers verify clients.
    #[arg(long, env = "GATEHOUSE_NATS_CERT", requires = "nats_key")]
    pub nats_cert: Option<PathBuf>,
    /// The key of `--nats-cert` (PEM).
    #[arg(long, env = "GATEHOUSE_NATS_KEY", requires = "nats_cert")]
    pub nats_key: Option<PathBuf>,
    /// How long one publish of an event waits for the stream's ack before it is published
    /// again with the same message id (stored once), in milliseconds: what a write in
    /// flight on a NATS server that dies costs.
    #[arg(long, env = "GATEHOUSE_NATS_ACK_TIMEOUT_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub nats_ack_timeout_ms: u64,
    /// How long an append keeps retrying through a lost NATS server or a stream leader
    /// election before the write fails with UNAVAILABLE, in milliseconds.
    #[arg(long, env = "GATEHOUSE_NATS_RETRY_MS", default_value_t = 15_000,
          value_parser = clap::value_parser!(u64).range(1..=300_000))]
    pub nats_retry_ms: u64,
    /// Appends this node keeps in flight on NATS at most (published, answer not yet
    /// taken); one more is refused at once with UNAVAILABLE instead of waiting. At most
    /// 4096: the NATS client's own cap of unacknowledged publishes is 5,000.
    #[arg(long, env = "GATEHOUSE_NATS_MAX_APPENDS_IN_FLIGHT", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub nats_max_appends_in_flight: u64,
}

impl std::fmt::Debug for LogArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.nats_config() {
            Ok(Some(config)) => config.fmt(f),
            _ => f.write_str("embedded log"),
        }
    }
}

impl LogArgs {
    /// The NATS log these flags describe, if a URL is given.
    pub fn nats_config(&self) -> anyhow::Result<Option<NatsLogConfig>> {
        let Some(url) = &self.nats_url else {
            return Ok(None);
        };
        let nkey_seed = match &self.nats_nkey_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the NATS NKey seed {}", path.display()))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        Ok(Some(NatsLogConfig {
            url: url.clone(),
            stream: self.nats_stream.clone(),
            replicas: self.nats_replicas,
            credentials: NatsCredentials {
                user: self.nats_user.clone(),
                password: self.nats_password.clone(),
                token: self.nats_token.clone(),
                nkey_seed,
                creds_file: self.nats_creds.clone(),
            },
            tls: NatsTls {
                ca: self.nats_ca.clone(),
                cert: self.nats_cert.clone(),
                key: self.nats_key.clone(),
            },
            // Zero (a `LogArgs::default()` rather than parsed flags): the defaults.
            ack_timeout: match self.nats_ack_timeout_ms {
                0 => NatsLogConfig::default().ack_timeout,
                ms => std::time::Duration::from_millis(ms),
            },
            retry_for: match self.nats_retry_ms {
                0 => NatsLogConfig::default().retry_for,
                ms => std::time::Duration::from_millis(ms),
            },
            max_in_flight: self.nats_max_appends_in_flight as usize,
            ..NatsLogConfig::default()
        }))
    }

    /// Opens the configured log for `node` (its NATS connection is named
    /// `gatehouse-<node>`); `data_dir` holds the embedded one.
    pub async fn open(&self, node: &str, data_dir: &Path) -> anyhow::Result<Arc<dyn EventLog>> {
        Ok(self.open_log(node, data_dir).await?.0)
    }

    /// Opens the configured log for `node`, and says whether it is on NATS (the handle,
    /// to share its connection).
    pub async fn open_log(
        &self,
        node: &str,
        data_dir: &Path,
    ) -> anyhow::Result<(Arc<dyn EventLog>, Option<NatsLog>)> {
        match self.nats_config()? {
            Some(mut config) => {
                config.client_name = format!("gatehouse-{node}");
                let log = connect_nats(config).await?;
                Ok((Arc::new(log.clone()), Some(log)))
            }
            None => {
                let dir = data_dir.join("eventlog");
                let log = FileLog::open(&dir).with_context(|| {
                    format!("cannot open the embedded event log in {}", dir.display())
                })?;
                Ok((Arc::new(log), None))
            }
        }
    }

    /// A connection for `node` to the configured NATS, if one is configured.
    pub async fn connect_nats(&self, node: &str) -> anyhow::Result<Option<NatsLog>> {
        match self.nats_config()? {
            Some(mut config) => {
                config.client_name = format!("gatehouse-{node}");
                Ok(Some(connect_nats(config).await?))
            }
            None => Ok(None),
        }
    }
}

async fn connect_nats(config: NatsLogConfig) -> anyhow::Result<NatsLog> {
    let url = config.url.clone();
    NatsLog::connect(config)
        .await
        .with_context(|| format!("cannot use the event log on NATS at {url}"))
}

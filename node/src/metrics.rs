//! Prometheus metrics of control and token-service: how far their fold has come and how
//! their commands fare. (Gateways have their own, richer set.)
//!
//! Counters are process-wide atomics: a node has one fold and one write path, and the
//! all-in-one, which runs two nodes in one process, simply adds them up.

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use anyhow::Context;
use tokio::task::JoinHandle;

use crate::read_model::ReadModel;
use crate::shutdown::Shutdown;

/// Commands accepted and appended.
pub static COMMANDS_APPLIED: AtomicU64 = AtomicU64::new(0);
/// Commands refused by the domain's rules (bad input, not found, illegal transition...).
pub static COMMANDS_REFUSED: AtomicU64 = AtomicU64::new(0);
/// Commands that lost an optimistic-concurrency race (ABORTED).
pub static COMMANDS_CONFLICTED: AtomicU64 = AtomicU64::new(0);
/// Commands decided again after their guard failed (another writer came first).
pub static COMMAND_RETRIES: AtomicU64 = AtomicU64::new(0);
/// Events folded into the read model.
pub static EVENTS_APPLIED: AtomicU64 = AtomicU64::new(0);
/// Rebuilds of the state after a gap or a bad record.
pub static REBUILDS: AtomicU64 = AtomicU64::new(0);

/// The Prometheus text exposition for `node`.
pub fn render(node: &str, model: &ReadModel) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        let _ = writeln!(out, "{name}{{node=\"{node}\"}} {value}");
    };
    metric(
        "gatehouse_applied_sequence",
        "gauge",
        "Last event log sequence folded into the state.",
        model.applied(),
    );
    metric(
        "gatehouse_events_applied_total",
        "counter",
        "Events folded into the state.",
        EVENTS_APPLIED.load(Relaxed),
    );
    metric(
        "gatehouse_events_quarantined_total",
        "counter",
        "Records that could not be folded (undecodable, kind not matching the subject, refused by the fold): skipped by every node alike.",
        crate::fold::QUARANTINED.load(Relaxed),
    );
    metric(
        "gatehouse_state_rebuilds_total",
        "counter",
        "Rebuilds of the state after a gap or a fold error (from the newest usable snapshot, or the start of the log).",
        REBUILDS.load(Relaxed),
    );
    let snapshots = &model.snapshots;
    for (name, kind, help, value) in [
        (
            "gatehouse_state_restored_from_sequence",
            "gauge",
            "Sequence of the snapshot the state was last started or rebuilt from (0: replayed from the start of the log).",
            &snapshots.restored_from,
        ),
        (
            "gatehouse_snapshots_written_total",
            "counter",
            "Snapshots of the state saved.",
            &snapshots.written,
        ),
        (
            "gatehouse_snapshot_failures_total",
            "counter",
            "Snapshots of the state that could not be saved.",
            &snapshots.failed,
        ),
        (
            "gatehouse_snapshot_sequence",
            "gauge",
            "Sequence the last saved snapshot covers.",
            &snapshots.last_sequence,
        ),
        (
            "gatehouse_snapshot_bytes",
            "gauge",
            "Size of the last saved snapshot, in bytes.",
            &snapshots.last_bytes,
        ),
    ] {
        metric(name, kind, help, value.load(Relaxed));
    }
    metric(
        "gatehouse_command_retries_total",
        "counter",
        "Commands decided again on fresh state after another writer came first.",
        COMMAND_RETRIES.load(Relaxed),
    );
    let _ = writeln!(
        out,
        "# HELP gatehouse_commands_total Commands by outcome.\n# TYPE gatehouse_commands_total counter"
    );
    for (outcome, counter) in [
        ("applied", &COMMANDS_APPLIED),
        ("refused", &COMMANDS_REFUSED),
        ("conflict", &COMMANDS_CONFLICTED),
    ] {
        let _ = writeln!(
            out,
            "gatehouse_commands_total{{node=\"{node}\",outcome=\"{outcome}\"}} {}",
            counter.load(Relaxed)
        );
    }
    out
}

/// Where a node without an HTTP listener of its own (control, token-service) serves its
/// metrics; a gateway serves `/metrics` on its HTTP listener instead.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics at `http://<this>/metrics` (off when unset).
    #[arg(long, env = "GATEHOUSE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

impl MetricsArgs {
    /// Starts [`serve`] for `node` until `shutdown`, if `--metrics-listen` is set.
    pub fn spawn(
        &self,
        node: &'static str,
        model: &Arc<ReadModel>,
        shutdown: &Shutdown,
    ) -> Option<JoinHandle<anyhow::Result<()>>> {
        let listen = self.metrics_listen?;
        let serving = serve(listen, node, model.clone(), shutdown.wait_owned());
        Some(tokio::spawn(serving))
    }
}

/// Serves `GET /metrics` on `listen` until `shutdown`.
pub async fn serve(
    listen: SocketAddr,
    node: &'static str,
    model: Arc<ReadModel>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} for metrics"))?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let model = model.clone();
            async move {
                (
                    [("content-type", "text/plain; version=0.0.4")],
                    render(node, &model),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("metrics server failed")
}

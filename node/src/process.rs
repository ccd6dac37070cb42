//! A node as a process: the flags every node takes, its start and its `main`.
//!
//! Every node has two entry points, its own binary (`control`, `token-service`,
//! `gateway`) and a `gatehouse` subcommand. Both parse the node's one configuration
//! struct (which flattens [`NodeArgs`]) and hand it to the node's `main`, which is
//! [`run_node`]: build the Tokio runtime, set up logs and traces, serve until Ctrl-C or
//! SIGTERM, and turn the outcome into an exit code. So the two entry points cannot
//! drift: they are the same flags and the same code.
//!
//! A node's serve function gets a [`NodeContext`] (the shutdown, whether spans are
//! exported, and the event log when a launcher shares one); a node that folds the log
//! starts with [`NodeArgs::start_folding`].

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use gatehouse_eventlog::EventLog;

use crate::LogArgs;
use crate::read_model::{Follower, Snapshots};
use crate::shutdown::Shutdown;
use crate::snapshot::SnapshotArgs;
use crate::tls::{ClusterTlsArgs, NodeTls};

/// The flags every node's configuration flattens, whatever the node: who it is in the
/// cluster, which event log it folds, how its process runs.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct NodeArgs {
    #[command(flatten)]
    pub cluster: ClusterTlsArgs,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// What a node that folds the log (control, token-service) starts from, in the order
/// it gets them: its event log, its node identity, its state rebuilt from the newest
/// snapshot and the log (and the task writing its snapshots: stop it with
/// `follower.close()`).
pub struct Folding {
    pub log: Arc<dyn EventLog>,
    pub tls: NodeTls,
    pub follower: Follower,
}

impl NodeArgs {
    /// Opens the event log (`provided`, one the launcher shares, or else the configured
    /// one, embedded in `data_dir`) and the store of the node's snapshots (the bucket
    /// of role `node` on NATS when the node's own flags name NATS, else the file in
    /// `data_dir`), loads the node identity (`node` names the node in errors), and
    /// rebuilds the state from the newest usable snapshot and the log
    /// ([`Follower::REBUILD_TIMEOUT`]).
    pub async fn start_folding(
        &self,
        node: &str,
        data_dir: &Path,
        provided: Option<Arc<dyn EventLog>>,
        snapshots: &SnapshotArgs,
    ) -> anyhow::Result<Folding> {
        let (log, nats) = match provided {
            Some(log) => (log, self.log.connect_nats(node).await?),
            None => self.log.open_log(node, data_dir).await?,
        };
        let tls = self.cluster.load(node)?;
        let nats = nats.as_ref().map(|nats| (nats, self.log.nats_replicas));
        let store = snapshots.open(node, data_dir, nats).await;
        let snapshots = store.map(|store| Snapshots {
            store,
            args: snapshots.clone(),
        });
        let follower =
            Follower::start(node, log.clone(), snapshots, Follower::REBUILD_TIMEOUT).await?;
        Ok(Folding { log, tls, follower })
    }
}

/// How a node's process runs, whatever the node.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeArgs {
    /// Threads serving requests. 0: one per available core, and on a single core (e.g.
    /// pinned with taskset, or a one-CPU container) a current-thread runtime, which
    /// spares the work-stealing scheduler's synchronisation.
    #[arg(long, env = "GATEHOUSE_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,
}

impl RuntimeArgs {
    /// The Tokio runtime these flags ask for.
    pub fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut builder = match self.worker_threads {
            0 if cores == 1 => tokio::runtime::Builder::new_current_thread(),
            0 => tokio::runtime::Builder::new_multi_thread(),
            n => {
                let mut builder = tokio::runtime::Builder::new_multi_thread();
                builder.worker_threads(n);
                builder
            }
        };
        builder.enable_all().build()
    }
}

/// What a node's serve function runs with: [`run_node`] gives it to the one node of a
/// process; a launcher running several nodes in one process (the all-in-one) gives one
/// to each.
#[derive(Clone)]
pub struct NodeContext {
    /// Triggered on Ctrl-C or SIGTERM.
    pub shutdown: Shutdown,
    /// Spans are exported (OTLP is configured): worth making spans on hot paths.
    pub tracing: bool,
    /// An event log the launcher already opened, shared by the nodes of its process (the
    /// embedded log admits one opener only); `None`: the node opens its configured one.
    pub log: Option<Arc<dyn EventLog>>,
}

/// A node's `main`: runs `serve` on the runtime `runtime` asks for, with logs and traces
/// named `name` (default log filter `default_filter`), until Ctrl-C or SIGTERM. Errors
/// are printed as `<name>: <error chain>` and exit 1.
pub fn run_node<F, Fut>(
    name: &str,
    default_filter: &str,
    runtime: &RuntimeArgs,
    serve: F,
) -> ExitCode
where
    F: FnOnce(NodeContext) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let runtime = match runtime.runtime() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let telemetry = crate::telemetry::init_with_filter(name, default_filter);
        let context = NodeContext {
            shutdown: Shutdown::on_signals(),
            tracing: telemetry.is_exporting(),
            log: None,
        };
        match serve(context).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{name}: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

/// A configuration `C` as parsed from no flags: its defaults, and whatever the
/// environment sets. Launchers (the all-in-one) and tests adjust fields from there.
pub fn parse_defaults<C>() -> C
where
    C: clap::Args + clap::FromArgMatches,
{
    let command = C::augment_args(clap::Command::new("defaults")).no_binary_name(true);
    let matches = command
        .try_get_matches_from(std::iter::empty::<String>())
        .expect("defaults parse");
    C::from_arg_matches(&matches).expect("defaults parse")
}

/// A node's stand-alone binary (`control`, `token-service`, `gateway`): parses the
/// command line into the node's configuration `C` — the very struct `gatehouse <node>`
/// parses — and runs the node's `main` with it.
pub fn standalone<C>(name: &'static str, about: &'static str, main: fn(C) -> ExitCode) -> ExitCode
where
    C: clap::Args + clap::FromArgMatches,
{
    let command = C::augment_args(
        clap::Command::new(name)
            .about(about)
            .version(env!("CARGO_PKG_VERSION")),
    );
    match C::from_arg_matches(&command.get_matches()) {
        Ok(config) => main(config),
        Err(e) => e.exit(),
    }
}

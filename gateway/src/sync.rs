//! Keeping the routing table in step with the event log.
//!
//! One task, [`Syncer::run`], owns the gateway's domain [`State`] and is its only
//! writer. It loops through two steps:
//!
//! 1. **Bootstrap** a state, in this order of preference:
//!    - control's snapshot (`GatewaySync.GetSnapshot`): state + the sequence it covers;
//!    - if control does not answer, a replay of the log from the start (NATS, or the
//!      log handed over in-process);
//!    - if neither answers and this replica has no configuration yet, the snapshot it
//!      last saved on its own disk ([`crate::disk`]). It serves with it, and `/readyz` and
//!      the status reports say **stale** until a follower connects.
//!    - otherwise it waits and tries again (backing off up to 5 s), still serving the
//!      table it has.
//! 2. **Follow** the log from `sequence + 1`: over NATS when a NATS URL is configured
//!    (or a log was handed over in-process), else over control's
//!    `GatewaySync.WatchEvents` stream; if the log cannot be opened, control's stream is
//!    tried too. Events are applied in order with `State::apply`, which accepts exactly
//!    the next sequence. Whatever has arrived is applied as one batch, recording what it
//!    touches ([`gatehouse_domain::Effects`]); then the current [`RoutingTable`] is
//!    brought up to date with those effects alone ([`RoutingTable::apply`]: only the
//!    APIs, subscriptions, applications, clients, revocations and keys touched are
//!    recompiled) off the hot path (a blocking task), and the new table is swapped in
//!    atomically, once per batch. A whole table is compiled only after a bootstrap. The NATS follower survives broker restarts on its own (it recreates its
//!    consumer from the next sequence), so replicas resume following without a restart
//!    of their own; a broken control stream is reopened from the next sequence.
//!
//! **A gap or an event that cannot be decoded or applied never gets skipped**: the
//! state is dropped and step 1 runs again (a resync), while requests keep being served
//! by the last good table until the new one is in.
//!
//! Secret hashes never enter the gateway: the snapshot control serves has none, and the
//! syncer clears them from client events before applying them, so the state (and its
//! `config_hash`) is the public state, and the disk snapshot holds no secret.
//!
//! Two helpers run beside it: the **disk writer** saves the latest state at most once a
//! second, after changes, streaming it record by record to the file (no second copy
//! of the configuration in memory, see [`crate::disk`]); the **reporter** sends `GatewaySync.ReportStatus` (id, applied
//! sequence, config hash, address, stale) every few seconds.
//!
//! # Shared state
//!
//! The state itself is owned by the syncer task alone (no lock): it is the gateway's one
//! fold, and the routing table holds none of it, only what requests read. What others
//! read is published: the table through the gateway's `ArcSwap` (requests), and a copy
//! of the state through a `watch` channel (disk writer). That copy costs O(1): the
//! state's maps are persistent and share their nodes with the syncer's, which copies
//! only the paths it changes afterwards. Flags and gauges go through atomics in
//! `SyncFlags` and `Metrics`.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::{FutureExt, Stream, StreamExt};
use gatehouse_domain::redact::{redact_event, redact_snapshot};
use gatehouse_domain::{Effects, State};
use gatehouse_eventlog::{EventLog, LogError, NatsLog, NatsLogConfig};
use gatehouse_node::Shutdown;
use gatehouse_node::fold;
use gatehouse_proto::admin::gateway_sync_client::GatewaySyncClient;
use gatehouse_proto::admin::{GatewayStatus, GetSnapshotRequest, WatchEventsRequest};
use gatehouse_proto::events::{EventEnvelope, Snapshot};
use prost::Message;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::disk::DiskSnapshot;
use crate::proxy::Gateway;
use crate::table::RoutingTable;

/// How long a snapshot request or a log connection may take.
const SOURCE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest pause between two attempts to reach a source.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Most events applied before a table is rebuilt, when they keep coming.
const MAX_BATCH: usize = 10_000;

/// Longest time spent collecting one batch.
const MAX_BATCH_TIME: Duration = Duration::from_millis(50);

/// Where the log is, for the syncer.
#[derive(Clone)]
pub enum LogSource {
    /// No direct access: follow control's `WatchEvents`.
    None,
    /// NATS JetStream, connected (and reconnected) by the syncer.
    Nats(Box<NatsLogConfig>),
    /// A log opened by the caller (the all-in-one shares its embedded log).
    Provided(Arc<dyn EventLog>),
}

impl std::fmt::Debug for LogSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogSource::None => f.write_str("control's WatchEvents"),
            LogSource::Nats(c) => write!(f, "NATS {} stream {}", c.url, c.stream),
            LogSource::Provided(_) => f.write_str("in-process log"),
        }
    }
}

/// What the syncer needs to know.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// control's `https://` URL.
    pub control_url: String,
    /// This replica's node identity, presented to control.
    pub tls: gatehouse_node::tls::NodeTls,
    pub gateway_id: String,
    /// Reported to control (where this replica serves).
    pub address: String,
    pub report_interval: Duration,
    pub data_dir: PathBuf,
    pub log: LogSource,
}

/// Why following stopped.
#[derive(Debug)]
enum End {
    /// A gap, or an event that cannot be decoded or applied: start from a snapshot.
    Resync(String),
    /// The source went away: follow again from the next sequence.
    Disconnected(String),
}

/// One record of the log as the syncer receives it: from NATS, or from control's
/// `WatchEvents` (which forwards a record it cannot decode without its envelope).
struct StoredEvent {
    sequence: u64,
    subject: String,
    envelope: Option<EventEnvelope>,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<StoredEvent, End>> + Send>>;

/// The one writer of the gateway's state. See the module docs.
pub struct Syncer {
    gateway: Arc<Gateway>,
    config: SyncConfig,
    control: GatewaySyncClient<Channel>,
    log: Option<Arc<dyn EventLog>>,
    nats: Option<NatsLog>,
    disk: DiskSnapshot,
    /// The state of the latest table, for the disk writer.
    published: watch::Sender<Option<State>>,
}

impl Syncer {
    pub fn new(gateway: Arc<Gateway>, config: SyncConfig) -> anyhow::Result<Syncer> {
        let endpoint = config
            .tls
            .endpoint(&config.control_url)?
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        let control = GatewaySyncClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(512 * 1024 * 1024);
        let log = match &config.log {
            LogSource::Provided(log) => Some(log.clone()),
            _ => None,
        };
        Ok(Syncer {
            disk: DiskSnapshot::new(&config.data_dir),
            gateway,
            config,
            control,
            log,
            nats: None,
            published: watch::channel(None).0,
        })
    }

    /// Runs the syncer, the disk writer and the reporter until `shutdown`.
    pub async fn run(mut self, shutdown: Shutdown) {
        let writer = tokio::spawn(disk_writer(
            self.disk.clone(),
            self.published.subscribe(),
            shutdown.clone(),
        ));
        let reporter = tokio::spawn(reporter(
            self.gateway.clone(),
            self.control.clone(),
            self.config.clone(),
            shutdown.clone(),
        ));
        tokio::select! {
            () = self.sync_loop() => {}
            () = shutdown.wait() => {}
        }
        let _ = writer.await;
        reporter.abort();
    }

    async fn sync_loop(&mut self) {
        let mut state: Option<State> = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            if state.is_none() {
                match self.bootstrap().await {
                    Some((mut bootstrapped, stale)) => {
                        bootstrapped.record_effects();
                        self.publish(&bootstrapped, None, stale).await;
                        state = Some(bootstrapped);
                    }
                    None => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
            let current = state.as_mut().expect("bootstrapped above");
            let from = current.sequence() + 1;
            let stream = match self.open_stream(from).await {
                Ok(stream) => stream,
                Err(reason) => {
                    tracing::warn!(%reason, from, "cannot follow the log yet");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            self.gateway.sync.following.store(true, Ordering::Release);
            if self.gateway.metrics.stale.swap(false, Ordering::AcqRel) {
                tracing::info!(
                    from,
                    "following the log again: the disk snapshot is no longer stale"
                );
            }
            let end = self.follow(stream, current).await;
            self.gateway.sync.following.store(false, Ordering::Release);
            match end {
                End::Resync(reason) => {
                    tracing::error!(%reason, "cannot follow the log in order; resyncing from a snapshot");
                    self.gateway.metrics.resyncs.fetch_add(1, Ordering::Relaxed);
                    state = None;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                End::Disconnected(reason) => {
                    tracing::warn!(%reason, "event stream ended; following again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Step 1 (see the module docs): a state to start from, and whether it is stale.
    async fn bootstrap(&mut self) -> Option<(State, bool)> {
        match tokio::time::timeout(
            SOURCE_TIMEOUT,
            self.control.clone().get_snapshot(GetSnapshotRequest {}),
        )
        .await
        {
            Ok(Ok(snapshot)) => {
                let state = public_state(snapshot.into_inner());
                tracing::info!(
                    sequence = state.sequence(),
                    "configuration loaded from control's snapshot"
                );
                return Some((state, false));
            }
            Ok(Err(status)) => tracing::warn!(%status, "control's snapshot is not available"),
            Err(_) => tracing::warn!("control's snapshot did not come within {SOURCE_TIMEOUT:?}"),
        }
        if let Some(log) = self.ensure_log().await {
            match replay(log.as_ref()).await {
                Ok(state) => {
                    tracing::info!(
                        sequence = state.sequence(),
                        "configuration rebuilt by replaying the log"
                    );
                    return Some((state, false));
                }
                Err(reason) => tracing::warn!(%reason, "cannot replay the log"),
            }
        }
        if !self.gateway.sync.has_config.load(Ordering::Acquire) {
            let disk = self.disk.clone();
            match tokio::task::spawn_blocking(move || disk.load()).await {
                Ok(Ok(Some(snapshot))) => {
                    let state = public_state(snapshot);
                    tracing::warn!(
                        sequence = state.sequence(),
                        path = %self.disk.path().display(),
                        "control and the log are unreachable: serving the snapshot saved on disk (stale)"
                    );
                    return Some((state, true));
                }
                Ok(Ok(None)) => {}
                Ok(Err(error)) => {
                    tracing::warn!(error = %format!("{error:#}"), "ignoring the disk snapshot")
                }
                Err(error) => tracing::warn!(%error, "cannot read the disk snapshot"),
            }
        }
        None
    }

    /// The log, connecting to NATS if that is where it is.
    async fn ensure_log(&mut self) -> Option<Arc<dyn EventLog>> {
        if let Some(log) = &self.log {
            return Some(log.clone());
        }
        let LogSource::Nats(config) = &self.config.log else {
            return None;
        };
        match tokio::time::timeout(SOURCE_TIMEOUT, NatsLog::connect((**config).clone())).await {
            Ok(Ok(nats)) => {
                tracing::info!(url = %config.url, "connected to the event log on NATS");
                let log: Arc<dyn EventLog> = Arc::new(nats.clone());
                self.nats = Some(nats);
                self.log = Some(log.clone());
                Some(log)
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "the event log on NATS is unreachable");
                None
            }
            Err(_) => {
                tracing::warn!(url = %config.url, "connecting to NATS timed out");
                None
            }
        }
    }

    /// A stream of events from `from` on: the log if there is one, else (or if it fails)
    /// control's `WatchEvents`.
    async fn open_stream(&mut self, from: u64) -> Result<EventStream, String> {
        let mut reasons = Vec::new();
        if let Some(log) = self.ensure_log().await {
            match tokio::time::timeout(SOURCE_TIMEOUT, log.follow(from)).await {
                Ok(Ok(records)) => {
                    let stream = records.map(|record| {
                        let record = record.map_err(|e| match e {
                            LogError::Gap { .. } | LogError::Corrupt(_) => {
                                End::Resync(e.to_string())
                            }
                            other => End::Disconnected(other.to_string()),
                        })?;
                        Ok(StoredEvent {
                            envelope: EventEnvelope::decode(record.payload.as_ref()).ok(),
                            sequence: record.sequence,
                            subject: record.subject,
                        })
                    });
                    return Ok(Box::pin(stream));
                }
                Ok(Err(error)) => reasons.push(format!("log: {error}")),
                Err(_) => reasons.push("log: timed out".to_string()),
            }
        }
        let mut control = self.control.clone();
        let watch = control.watch_events(WatchEventsRequest {
            from_sequence: from,
        });
        match tokio::time::timeout(SOURCE_TIMEOUT, watch).await {
            Ok(Ok(response)) => {
                let stream = response.into_inner().map(|item| match item {
                    Ok(item) => Ok(StoredEvent {
                        sequence: item.sequence,
                        subject: item.subject,
                        envelope: item.event,
                    }),
                    Err(status) if status.code() == tonic::Code::DataLoss => {
                        Err(End::Resync(status.message().to_string()))
                    }
                    Err(status) => Err(End::Disconnected(status.to_string())),
                });
                Ok(Box::pin(stream))
            }
            Ok(Err(status)) => {
                reasons.push(format!("control: {status}"));
                Err(reasons.join("; "))
            }
            Err(_) => {
                reasons.push("control: timed out".to_string());
                Err(reasons.join("; "))
            }
        }
    }

    /// Step 2: applies events in batches until the stream ends or fails.
    async fn follow(&self, mut stream: EventStream, state: &mut State) -> End {
        loop {
            let first = match stream.next().await {
                Some(Ok(item)) => item,
                Some(Err(end)) => return end,
                None => return End::Disconnected("the event stream ended".to_string()),
            };
            let from = state.sequence();
            let mut changed = match apply(state, first) {
                Ok(changed) => changed,
                Err(end) => return end,
            };
            let started = Instant::now();
            let mut end = None;
            for _ in 0..MAX_BATCH {
                if started.elapsed() > MAX_BATCH_TIME {
                    break;
                }
                match stream.next().now_or_never() {
                    Some(Some(Ok(item))) => match apply(state, item) {
                        Ok(c) => changed |= c,
                        Err(e) => {
                            end = Some(e);
                            break;
                        }
                    },
                    Some(Some(Err(e))) => {
                        end = Some(e);
                        break;
                    }
                    Some(None) => {
                        end = Some(End::Disconnected("the event stream ended".to_string()));
                        break;
                    }
                    None => break,
                }
            }
            let effects = state.take_effects();
            if changed {
                self.publish(state, Some((from, effects)), false).await;
            }
            if let Some(end) = end {
                return end;
            }
        }
    }

    /// Brings the routing table up to `state` off the hot path and swaps it in: with
    /// `changes` (the sequence the batch started from and what it touched), by applying
    /// them to the current table, if that table is the one at that sequence; otherwise
    /// (a bootstrap) by compiling the whole state.
    async fn publish(&self, state: &State, changes: Option<(u64, Effects)>, stale: bool) {
        let metrics = self.gateway.metrics.clone();
        let current = self.gateway.table.load_full();
        let state = state.clone();
        let disk_copy = state.clone();
        let compile = move || match changes {
            Some((from, effects)) if current.sequence == from => {
                current.apply(&state, &effects, &metrics)
            }
            _ => RoutingTable::build(&state, &metrics),
        };
        let table = match tokio::task::spawn_blocking(compile).await {
            Ok(table) => Arc::new(table),
            Err(error) => {
                tracing::error!(%error, "building the routing table failed");
                return;
            }
        };
        let sequence = table.sequence;
        let metrics = &self.gateway.metrics;
        self.gateway.table.store(table.clone());
        metrics.applied_sequence.store(sequence, Ordering::Release);
        metrics
            .source_sequence
            .fetch_max(sequence, Ordering::Relaxed);
        metrics.table_swaps.fetch_add(1, Ordering::Relaxed);
        if stale {
            metrics.stale.store(true, Ordering::Release);
        }
        if !self.gateway.sync.has_config.swap(true, Ordering::AcqRel) {
            tracing::info!(
                sequence,
                apis = table.api_count(),
                config_hash = %table.config_hash,
                "first configuration in service"
            );
        } else {
            tracing::debug!(sequence, apis = table.api_count(), "routing table swapped");
        }
        self.published.send_replace(Some(disk_copy));
    }
}

/// Applies one event; `Ok(false)` for one already applied (a re-delivery). A record
/// that can never be folded is quarantined (see `gatehouse_node::fold`), a gap resyncs.
fn apply(state: &mut State, event: StoredEvent) -> Result<bool, End> {
    let StoredEvent {
        sequence,
        subject,
        envelope,
    } = event;
    if sequence <= state.sequence() {
        return Ok(false);
    }
    let Some(mut envelope) = envelope else {
        fold::quarantine_undecodable(state, sequence, &subject)
            .map_err(|e| End::Resync(e.to_string()))?;
        return Ok(true);
    };
    redact_event(&mut envelope);
    // The trace of the admin call that caused the event goes on into each replica.
    let span = tracing::info_span!(
        "apply event",
        otel.name = "gateway apply event",
        log.sequence = sequence,
        trace_id = tracing::field::Empty,
    );
    if !envelope.traceparent.is_empty() {
        gatehouse_node::telemetry::set_parent_from(
            &span,
            [
                ("traceparent", envelope.traceparent.as_str()),
                ("tracestate", envelope.tracestate.as_str()),
            ],
        );
    }
    let _entered = span.enter();
    fold::fold_event(state, sequence, &subject, &envelope)
        .map_err(|e| End::Resync(format!("gap in the log: {e}")))?;
    Ok(true)
}

/// The state of a snapshot, without secret hashes.
pub fn public_state(mut snapshot: Snapshot) -> State {
    redact_snapshot(&mut snapshot);
    State::from_snapshot(snapshot)
}

/// The whole log folded from the start, up to its last record when called.
async fn replay(log: &dyn EventLog) -> Result<State, String> {
    let records = tokio::time::timeout(Duration::from_secs(300), log.read_to_end(1))
        .await
        .map_err(|_| "replaying the log took too long".to_string())?
        .map_err(|e| e.to_string())?;
    let mut state = State::new();
    for record in records {
        let event = StoredEvent {
            envelope: EventEnvelope::decode(record.payload.as_ref()).ok(),
            sequence: record.sequence,
            subject: record.subject,
        };
        apply(&mut state, event).map_err(|end| format!("{end:?}"))?;
    }
    Ok(state)
}

/// Saves the state of the latest table to disk after changes, at most once a second,
/// and once more at shutdown.
async fn disk_writer(
    disk: DiskSnapshot,
    mut states: watch::Receiver<Option<State>>,
    shutdown: Shutdown,
) {
    let mut saved_sequence = None;
    loop {
        let stop = tokio::select! {
            changed = states.changed() => changed.is_err(),
            () = shutdown.wait() => true,
        };
        let state = states.borrow_and_update().clone();
        if let Some(state) = state
            && saved_sequence != Some(state.sequence())
        {
            let sequence = state.sequence();
            let disk = disk.clone();
            match tokio::task::spawn_blocking(move || disk.save_state(&state)).await {
                Ok(Ok(())) => saved_sequence = Some(sequence),
                Ok(Err(error)) => {
                    tracing::warn!(error = %format!("{error:#}"), "cannot save the snapshot to disk")
                }
                Err(error) => tracing::warn!(%error, "cannot save the snapshot to disk"),
            }
        }
        if stop {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = shutdown.wait() => {}
        }
    }
}

/// Reports this replica's status to control every `report_interval`.
async fn reporter(
    gateway: Arc<Gateway>,
    mut control: GatewaySyncClient<Channel>,
    config: SyncConfig,
    shutdown: Shutdown,
) {
    let mut ticker = tokio::time::interval(config.report_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.wait() => return,
        }
        if !gateway.sync.has_config.load(Ordering::Acquire) {
            continue;
        }
        let table = gateway.table.load_full();
        let status = GatewayStatus {
            gateway_id: config.gateway_id.clone(),
            applied_sequence: table.sequence,
            config_hash: table.config_hash.clone(),
            address: config.address.clone(),
            stale: gateway.metrics.stale.load(Ordering::Acquire),
        };
        match tokio::time::timeout(SOURCE_TIMEOUT, control.report_status(status)).await {
            Ok(Ok(response)) => {
                let control_sequence = response.into_inner().control_sequence;
                gateway
                    .metrics
                    .source_sequence
                    .store(control_sequence.max(table.sequence), Ordering::Relaxed);
            }
            Ok(Err(status)) => tracing::debug!(%status, "status report not delivered"),
            Err(_) => tracing::debug!("status report timed out"),
        }
    }
}

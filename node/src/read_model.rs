//! Control's read model: the domain [`State`] folded from the log, kept current by a
//! follower task.
//!
//! Control never writes its state directly, not even for its own commands: a command's
//! events are appended to the log, and the follower folds them back like everyone
//! else's. That is what lets two control instances on one NATS stream serve the same
//! reads — each follows the log — and what makes "reading state is folding events"
//! literally true.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use futures::StreamExt;
use gatehouse_domain::State;
use gatehouse_eventlog::{EventLog, LogError, Record, SnapshotStore};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::fold::{OutOfOrder, fold_record};
use crate::snapshot::{
    Origin, RestoreError, Restored, SnapshotArgs, SnapshotStats, SnapshotWriter,
};

/// How long a follower waits before trying again a rebuild that failed (the log's
/// history gone and no snapshot covering it: an operator has to act).
const REBUILD_RETRY: Duration = Duration::from_secs(5);

/// Why the follower could not fold a record.
#[derive(Debug, thiserror::Error)]
pub enum FoldError {
    #[error(transparent)]
    OutOfOrder(#[from] OutOfOrder),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Why a node could not rebuild its state before serving.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("cannot read the end of the event log: {0}")]
    Log(#[from] LogError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error("state not rebuilt from the event log within {timeout:?} (at {applied} of {end})")]
    TimedOut {
        timeout: Duration,
        applied: u64,
        end: u64,
    },
}

/// The folded state, shared by the gRPC handlers (readers) and the follower (the one
/// writer).
///
/// A `std::sync::RwLock` rather than tokio's: every critical section is a short,
/// synchronous read or apply, never held across an `.await`. The applied sequence is
/// published on a `watch` channel so a command can wait, without polling, until the log
/// has been folded up to its own append ("read your writes"). The `msg_id` of the last
/// record folded (a snapshot's anchor) is changed only under the state's write lock, so
/// a reader holding the read lock sees the two agree.
pub struct ReadModel {
    state: RwLock<State>,
    anchor: Mutex<String>,
    applied: watch::Sender<u64>,
    /// What this node's snapshots have done (see [`crate::snapshot`]).
    pub snapshots: SnapshotStats,
}

impl ReadModel {
    pub fn new() -> Arc<Self> {
        Arc::new(ReadModel {
            state: RwLock::new(State::new()),
            anchor: Mutex::new(String::new()),
            applied: watch::channel(0).0,
            snapshots: SnapshotStats::default(),
        })
    }

    /// A model starting from a restored state (a snapshot, or the empty state).
    pub fn restored(restored: Restored) -> Arc<Self> {
        let model = ReadModel::new();
        model.replace(restored);
        model
    }

    /// A copy of the current state (O(1): its maps are persistent) and the `msg_id` of
    /// the record at its sequence: what a snapshot is made of.
    pub fn snapshot_source(&self) -> (State, String) {
        let state = self.read();
        let anchor = self
            .anchor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        (state.clone(), anchor)
    }

    /// The current state. Hold the guard briefly.
    pub fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The last sequence folded.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until the state covers `sequence`, or `timeout` passes (false).
    pub async fn wait_for(&self, sequence: u64, timeout: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|applied| *applied >= sequence))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Decodes, checks and folds one record (see [`crate::fold`]: a poison record is
    /// quarantined, a gap is an error), in an "apply event" span that continues the trace
    /// of the call that caused the event (its `traceparent` header).
    pub fn apply_record(&self, record: &Record) -> Result<(), FoldError> {
        let span = tracing::info_span!(
            "apply event",
            otel.name = "apply event",
            log.sequence = record.sequence,
            log.subject = %record.subject,
            trace_id = tracing::field::Empty,
        );
        crate::telemetry::set_parent_from(
            &span,
            record.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let _entered = span.enter();
        {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            fold_record(
                &mut state,
                record.sequence,
                &record.subject,
                &record.payload,
            )?;
            record
                .msg_id
                .clone_into(&mut self.anchor.lock().unwrap_or_else(|e| e.into_inner()));
        }
        self.applied.send_replace(record.sequence);
        crate::metrics::EVENTS_APPLIED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Replaces the state wholesale (a start, or a rebuild).
    fn replace(&self, restored: Restored) {
        let sequence = restored.state.sequence();
        let from = match restored.origin {
            Origin::Snapshot { sequence } => sequence,
            Origin::Start { .. } => 0,
        };
        {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            *state = restored.state;
            *self.anchor.lock().unwrap_or_else(|e| e.into_inner()) = restored.anchor;
        }
        self.snapshots.restored_from.store(from, Relaxed);
        self.applied.send_replace(sequence);
    }

    /// Rebuilds the state from the newest usable snapshot of `snapshots`, or else from
    /// the start of the log; an error (the log's history is gone and no snapshot
    /// covers it) leaves the state as it is, to try again.
    async fn rebuild(&self, log: &dyn EventLog, snapshots: Option<&dyn SnapshotStore>) {
        crate::metrics::REBUILDS.fetch_add(1, Relaxed);
        match crate::snapshot::restore(log, snapshots).await {
            Ok(restored) => self.replace(restored),
            Err(e) => {
                tracing::error!(error = %e, "cannot rebuild the state; trying again in {REBUILD_RETRY:?}");
                tokio::time::sleep(REBUILD_RETRY).await;
            }
        }
    }

    /// Follows the log forever from the state's sequence + 1, folding every record.
    /// See [`ReadModel::follow_with`]; this one rebuilds from the start of the log.
    pub async fn follow(self: Arc<Self>, log: Arc<dyn EventLog>) {
        self.follow_with(log, None).await
    }

    /// Follows the log forever from the state's sequence + 1, folding every record.
    ///
    /// On a broken stream (broker restart) it follows again from where it stopped. On a
    /// gap it never skips: it logs the cause and rebuilds the state, after a pause, from
    /// the newest usable snapshot in `snapshots` or else the start of the log. (A record
    /// that can never be folded is quarantined by [`crate::fold`], the same way on every
    /// node, rather than replayed forever.)
    pub async fn follow_with(
        self: Arc<Self>,
        log: Arc<dyn EventLog>,
        snapshots: Option<Arc<dyn SnapshotStore>>,
    ) {
        loop {
            let from = self.applied() + 1;
            match self.follow_from(&log, from).await {
                Err(FoldError::Log(LogError::Unavailable(e))) => {
                    tracing::warn!(error = %e, "event log unavailable; following again shortly");
                }
                Err(FoldError::Log(LogError::Gap { expected, got })) => {
                    tracing::error!(expected, got, "gap in the event log; rebuilding the state");
                    self.rebuild(log.as_ref(), snapshots.as_deref()).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot fold the event log; rebuilding the state");
                    self.rebuild(log.as_ref(), snapshots.as_deref()).await;
                }
                Ok(()) => tracing::warn!("event log stream ended; following again"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn follow_from(&self, log: &Arc<dyn EventLog>, from: u64) -> Result<(), FoldError> {
        let mut records = log.follow(from).await?;
        while let Some(record) = records.next().await {
            self.apply_record(&record?)?;
        }
        Ok(())
    }
}

/// A [`ReadModel`] with its follower task, caught up with the log at start: what every
/// folding node (control, token-service) starts with, since neither may answer a call
/// from a state older than the log it starts on; and, with a snapshot store, the task
/// that writes its snapshots. Both stop when this is dropped; [`Follower::close`] writes
/// a last snapshot first.
pub struct Follower {
    pub model: Arc<ReadModel>,
    task: JoinHandle<()>,
    writer: Option<SnapshotWriter>,
}

/// Where a [`Follower`] keeps its snapshots, and when it writes them.
#[derive(Clone)]
pub struct Snapshots {
    pub store: Arc<dyn SnapshotStore>,
    pub args: SnapshotArgs,
}

impl Follower {
    /// How long a node's start-up waits, by default, for its state to be rebuilt from
    /// the log.
    pub const REBUILD_TIMEOUT: Duration = Duration::from_secs(300);

    /// Starts following `log` from the beginning and waits until the state covers every
    /// record the log held when this was called (at most `timeout`).
    pub async fn rebuild(
        log: Arc<dyn EventLog>,
        timeout: Duration,
    ) -> Result<Follower, RebuildError> {
        Follower::start("node", log, None, timeout).await
    }

    /// Starts node `node`'s state from the newest usable snapshot in `snapshots` (or
    /// else the start of the log, see [`crate::snapshot::restore`]), follows the log
    /// from there, waits until the state covers every record the log held when this was
    /// called (at most `timeout`), and starts writing snapshots.
    pub async fn start(
        node: &str,
        log: Arc<dyn EventLog>,
        snapshots: Option<Snapshots>,
        timeout: Duration,
    ) -> Result<Follower, RebuildError> {
        let store = snapshots.as_ref().map(|s| s.store.clone());
        let restored = crate::snapshot::restore(log.as_ref(), store.as_deref()).await?;
        let end = log.last_sequence().await?;
        crate::snapshot::log_origin(node, &restored, end);
        let model = ReadModel::restored(restored);
        let mut follower = Follower {
            task: tokio::spawn(model.clone().follow_with(log.clone(), store)),
            writer: None,
            model,
        };
        if !follower.model.wait_for(end, timeout).await {
            return Err(RebuildError::TimedOut {
                timeout,
                applied: follower.model.applied(),
                end,
            });
        }
        tracing::info!(node, events = end, "state caught up with the event log");
        follower.writer =
            snapshots.map(|s| SnapshotWriter::spawn(follower.model.clone(), s.store, &s.args));
        Ok(follower)
    }

    /// Writes a last snapshot (if the state moved since the last one), then stops.
    pub async fn close(mut self) {
        if let Some(writer) = self.writer.take() {
            writer.finish().await;
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

//! Control's read model: the domain [`State`] folded from the log, kept current by a
//! follower task.
//!
//! Control never writes its state directly, not even for its own commands: a command's
//! events are appended to the log, and the follower folds them back like everyone
//! else's. That is what lets two control instances on one NATS stream serve the same
//! reads — each follows the log — and what makes "reading state is folding events"
//! literally true.

use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use futures::StreamExt;
use gatehouse_domain::State;
use gatehouse_eventlog::{EventLog, LogError, Record};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::fold::{OutOfOrder, fold_record};

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
/// has been folded up to its own append ("read your writes").
pub struct ReadModel {
    state: RwLock<State>,
    applied: watch::Sender<u64>,
}

impl ReadModel {
    pub fn new() -> Arc<Self> {
        Arc::new(ReadModel {
            state: RwLock::new(State::new()),
            applied: watch::channel(0).0,
        })
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
        }
        self.applied.send_replace(record.sequence);
        crate::metrics::EVENTS_APPLIED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Replaces the state wholesale (a rebuild from the start of the log).
    fn reset(&self) {
        crate::metrics::REBUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = State::new();
        self.applied.send_replace(0);
    }

    /// Follows the log forever from the state's sequence + 1, folding every record.
    ///
    /// On a broken stream (broker restart) it follows again from where it stopped. On a
    /// gap it never skips: it logs the cause and rebuilds the state from the start of
    /// the log, after a pause. (A record that can never be folded is quarantined by
    /// [`crate::fold`], the same way on every node, rather than replayed forever.)
    pub async fn follow(self: Arc<Self>, log: Arc<dyn EventLog>) {
        loop {
            let from = self.applied() + 1;
            match self.follow_from(&log, from).await {
                Err(FoldError::Log(LogError::Unavailable(e))) => {
                    tracing::warn!(error = %e, "event log unavailable; following again shortly");
                }
                Err(FoldError::Log(LogError::Gap { expected, got })) => {
                    tracing::error!(
                        expected,
                        got,
                        "gap in the event log; rebuilding state from the start"
                    );
                    self.reset();
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot fold the event log; rebuilding state from the start");
                    self.reset();
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
/// from a state older than the log it starts on. The follower stops when this is
/// dropped.
pub struct Follower {
    pub model: Arc<ReadModel>,
    task: JoinHandle<()>,
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
        let model = ReadModel::new();
        let follower = Follower {
            task: tokio::spawn(model.clone().follow(log.clone())),
            model,
        };
        let end = log.last_sequence().await?;
        if !follower.model.wait_for(end, timeout).await {
            return Err(RebuildError::TimedOut {
                timeout,
                applied: follower.model.applied(),
                end,
            });
        }
        tracing::info!(events = end, "state rebuilt from the event log");
        Ok(follower)
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

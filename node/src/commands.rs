//! Turning a command into appended events: decide against a current state, append with
//! the decision's consistency guard, wait until the fold has caught up.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gatehouse_domain::{Command, Consistency, DomainError, EventMeta, handle};
use gatehouse_eventlog::{AppendRequest, EventLog, Expectation, LogError, subject};
use gatehouse_proto::Timestamp;
use prost::Message;

use crate::read_model::ReadModel;

/// How long a command waits for the read model to reach the log's end.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(10);

/// Who makes a call, and the trace it belongs to: recorded on every event it causes.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    pub actor: String,
    pub traceparent: String,
    pub tracestate: String,
}

/// Why a command did not go through.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("the state did not catch up with the event log within {0:?}")]
    NotCaughtUp(Duration),
}

/// Executes commands one at a time in this process.
///
/// The mutex serialises this instance's commands so they never race each other on a
/// stale state; commands from *other* instances (a second control on the same NATS
/// stream) are caught by the log's optimistic concurrency check instead, and come back
/// as [`LogError::Conflict`] (gRPC `ABORTED`).
pub struct CommandExecutor {
    log: Arc<dyn EventLog>,
    model: Arc<ReadModel>,
    serial: tokio::sync::Mutex<()>,
}

impl CommandExecutor {
    pub fn new(log: Arc<dyn EventLog>, model: Arc<ReadModel>) -> Self {
        CommandExecutor {
            log,
            model,
            serial: tokio::sync::Mutex::new(()),
        }
    }

    /// Decides `command` on a state that covers the whole log, appends its events and
    /// returns once control's state includes them. Returns the last appended sequence
    /// (or the current one when the command changed nothing).
    pub async fn execute(&self, command: Command, ctx: &CallContext) -> Result<u64, CommandError> {
        use crate::metrics::{COMMANDS_APPLIED, COMMANDS_CONFLICTED, COMMANDS_REFUSED};
        use std::sync::atomic::Ordering::Relaxed;
        let result = self.decide_and_append(command, ctx).await;
        match &result {
            Ok(_) => COMMANDS_APPLIED.fetch_add(1, Relaxed),
            Err(CommandError::Domain(DomainError::VersionMismatch { .. }))
            | Err(CommandError::Log(LogError::Conflict { .. })) => {
                COMMANDS_CONFLICTED.fetch_add(1, Relaxed)
            }
            Err(CommandError::Domain(_)) => COMMANDS_REFUSED.fetch_add(1, Relaxed),
            Err(_) => 0,
        };
        result
    }

    async fn decide_and_append(
        &self,
        command: Command,
        ctx: &CallContext,
    ) -> Result<u64, CommandError> {
        let _serial = self.serial.lock().await;
        let end = self.log.last_sequence().await?;
        if !self.model.wait_for(end, CATCH_UP_TIMEOUT).await {
            return Err(CommandError::NotCaughtUp(CATCH_UP_TIMEOUT));
        }
        let pending = {
            let state = self.model.read();
            handle(&state, command)?
        };
        let mut last = end;
        for (i, event) in pending.into_iter().enumerate() {
            let event_id = uuid::Uuid::new_v4().to_string();
            let envelope = event.envelope(EventMeta {
                event_id: event_id.clone(),
                time: Some(Timestamp::from(SystemTime::now())),
                actor: ctx.actor.clone(),
                traceparent: ctx.traceparent.clone(),
                tracestate: ctx.tracestate.clone(),
            });
            // Events after the first follow our own append, so they guard on it.
            let expect = match (i, event.consistency) {
                (0, Consistency::Aggregate { last_sequence }) => {
                    Expectation::LastSubjectSequence(last_sequence)
                }
                (0, Consistency::Log { last_sequence }) => Expectation::LastSequence(last_sequence),
                _ => Expectation::LastSequence(last),
            };
            let mut headers = Vec::new();
            if !ctx.traceparent.is_empty() {
                headers.push(("traceparent".to_string(), ctx.traceparent.clone()));
            }
            if !ctx.tracestate.is_empty() {
                headers.push(("tracestate".to_string(), ctx.tracestate.clone()));
            }
            let appended = self
                .log
                .append(AppendRequest {
                    subject: subject(event.kind.as_str(), &event.aggregate_id),
                    msg_id: event_id,
                    headers,
                    payload: bytes::Bytes::from(envelope.encode_to_vec()),
                    expect,
                })
                .await?;
            last = appended.sequence;
        }
        if !self.model.wait_for(last, CATCH_UP_TIMEOUT).await {
            return Err(CommandError::NotCaughtUp(CATCH_UP_TIMEOUT));
        }
        Ok(last)
    }
}

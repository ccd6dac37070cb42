//! The event log: the single source of truth of Gatehouse.
//!
//! Every change is appended here as a record; every reader (control's read model,
//! token-service's client registry, each gateway's routing table) folds the records in
//! sequence order. This crate knows nothing of what the records mean: payloads are opaque
//! bytes (encoded `gatehouse.events.v1.EventEnvelope`s) filed under a *subject* per
//! aggregate, `gatehouse.events.<kind>.<id>`.
//!
//! One trait, [`EventLog`], two backends that pass the same conformance suite
//! (`tests/conformance.rs`):
//!
//! - [`FileLog`]: an append-only file in a data directory, for one process (the
//!   all-in-one and single-node setups).
//! - [`NatsLog`]: a NATS JetStream stream with file storage, shared by every node of a
//!   distributed deployment.
//!
//! Both give the same guarantees:
//!
//! - **Total order.** Sequences start at 1 and grow by exactly 1 per stored record; a
//!   reader that sees a jump has missed something and must resync, never skip.
//! - **Optimistic concurrency.** An append may carry an [`Expectation`] on the last
//!   sequence of its subject (one aggregate) or of the whole log; a stale writer gets
//!   [`LogError::Conflict`] instead of silently overwriting a newer change.
//! - **Idempotent appends.** A retried append with the same `msg_id` is stored once; the
//!   retry gets the original's sequence back with `duplicate: true`.
//! - **Durability.** An append that returned `Ok` survives a restart of the process.
//! - **Pipelining.** [`EventLog::submit`] queues an append and returns before it is
//!   durable, so one writer can have many in flight; appends submitted one after the
//!   other through one handle are stored in that order, and
//!   [`Expectation::LastMsgId`] chains each to the one before it. Each is still
//!   acknowledged on its own, once durable.
//!
//! Beside the log, [`snapshot`]: a reader's state as of one sequence, kept in a
//! [`SnapshotStore`] (a file beside the embedded log, or a JetStream object-store bucket
//! per role), so a start folds only the records after it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

mod file;
mod nats;
pub mod snapshot;

pub use file::FileLog;
pub use nats::{MAX_APPENDS_IN_FLIGHT, NatsCredentials, NatsLog, NatsLogConfig, NatsTls};
pub use snapshot::{
    FileSnapshotStore, NatsSnapshotStore, SnapshotError, SnapshotHeader, SnapshotStore,
    StoredSnapshot,
};

/// Prefix of every Gatehouse subject.
pub const SUBJECT_PREFIX: &str = "gatehouse.events";

/// The subject of one aggregate: `gatehouse.events.<kind>.<id>`.
///
/// `kind` and `id` must be single NATS tokens (no `.`, `*`, `>` or whitespace); ids are
/// UUIDs or validated names, so this holds by construction in Gatehouse.
pub fn subject(kind: &str, id: &str) -> String {
    format!("{SUBJECT_PREFIX}.{kind}.{id}")
}

/// Whether `token` can be one element of a subject.
pub fn is_valid_subject_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .chars()
            .all(|c| !c.is_whitespace() && c != '.' && c != '*' && c != '>')
}

/// Whether `subject` is `gatehouse.events.<kind>.<id>` with `kind` and `id` valid tokens
/// (see [`is_valid_subject_token`]): the only subjects the log accepts.
pub fn is_valid_subject(subject: &str) -> bool {
    let Some(rest) = subject
        .strip_prefix(SUBJECT_PREFIX)
        .and_then(|rest| rest.strip_prefix('.'))
    else {
        return false;
    };
    let mut tokens = rest.split('.');
    matches!(
        (tokens.next(), tokens.next(), tokens.next()),
        (Some(kind), Some(id), None) if is_valid_subject_token(kind) && is_valid_subject_token(id)
    )
}

/// Checks an append request against the rules both backends share, before anything else:
///
/// - the subject, see [`is_valid_subject`] ([`LogError::InvalidSubject`]);
/// - `msg_id`, and the one an [`Expectation::LastMsgId`] names: not empty, and a valid
///   header value (they travel as `Nats-Msg-Id`, `Nats-Expected-Last-Msg-Id`);
/// - header names: visible ASCII without `:`, not `Nats-*` (the broker's control headers)
///   nor the NATS backend's own order header; header values: no line breaks and no
///   leading or trailing whitespace (NATS trims it, so it would not round-trip).
///
/// Bad ids and headers are programming errors: they are reported as [`LogError::Io`]
/// of kind [`std::io::ErrorKind::InvalidInput`].
pub(crate) fn check_request(request: &AppendRequest) -> Result<(), LogError> {
    fn invalid(message: String) -> LogError {
        LogError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            message,
        ))
    }
    fn valid_value(value: &str) -> bool {
        !value.contains(['\r', '\n']) && value.trim() == value
    }
    if !is_valid_subject(&request.subject) {
        return Err(LogError::InvalidSubject(request.subject.clone()));
    }
    if request.msg_id.is_empty() || !valid_value(&request.msg_id) {
        return Err(invalid(format!("invalid msg_id {:?}", request.msg_id)));
    }
    if let Expectation::LastMsgId(expected) = &request.expect
        && (expected.is_empty() || !valid_value(expected))
    {
        return Err(invalid(format!("invalid expected msg_id {expected:?}")));
    }
    for (name, value) in &request.headers {
        let reserved = name
            .get(..5)
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case("nats-"))
            || name.eq_ignore_ascii_case(nats::HEADER_ORDER);
        if name.is_empty() || reserved || name.chars().any(|c| !c.is_ascii_graphic() || c == ':') {
            return Err(invalid(format!("invalid or reserved header name {name:?}")));
        }
        if !valid_value(value) {
            return Err(invalid(format!(
                "invalid value for header {name}: {value:?}"
            )));
        }
    }
    Ok(())
}

/// A record as stored in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Position in the log, from 1, assigned by the log.
    pub sequence: u64,
    /// `gatehouse.events.<kind>.<id>`.
    pub subject: String,
    /// The de-duplication id given on append.
    pub msg_id: String,
    /// Free-form headers given on append (W3C `traceparent`, ...), in the order given.
    pub headers: Vec<(String, String)>,
    /// The encoded event.
    pub payload: Bytes,
}

/// What an append expects of the log's current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    /// No check.
    Any,
    /// The last record on this append's subject has this sequence (0: the subject has
    /// no record yet). Used for changes to one aggregate.
    LastSubjectSequence(u64),
    /// The last record of the whole log has this sequence (0: the log is empty). Used
    /// for changes whose rules span aggregates (uniqueness, cascades).
    LastSequence(u64),
    /// The last record of the whole log is the one appended with this `msg_id`: nothing
    /// came between it and this append. A writer with several appends in flight chains
    /// each to the one before it (the first expecting [`LastSequence`]): if any link
    /// fails, or another writer's record comes between, every later link fails too, so
    /// a chain holds exactly when the log since its start is the chain.
    /// `Nats-Expected-Last-Msg-Id` on NATS. Its conflict reports `expected: 0`.
    ///
    /// [`LastSequence`]: Expectation::LastSequence
    LastMsgId(String),
}

impl Expectation {
    /// The sequence this expectation names, for [`LogError::Conflict`] (0 for
    /// [`Expectation::Any`] and [`Expectation::LastMsgId`]).
    pub fn expected_sequence(&self) -> u64 {
        match self {
            Expectation::Any | Expectation::LastMsgId(_) => 0,
            Expectation::LastSubjectSequence(expected) | Expectation::LastSequence(expected) => {
                *expected
            }
        }
    }
}

/// One record to append.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    pub subject: String,
    /// De-duplication id: a second append with the same id is not stored again.
    pub msg_id: String,
    pub headers: Vec<(String, String)>,
    pub payload: Bytes,
    pub expect: Expectation,
}

/// The log's answer to an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The record's sequence (the original's, for a duplicate).
    pub sequence: u64,
    /// The `msg_id` had been stored already; nothing new was written.
    pub duplicate: bool,
}

/// What can go wrong with the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The append's [`Expectation`] did not hold: someone else wrote first. `expected`
    /// is the sequence the expectation named ([`Expectation::expected_sequence`]).
    #[error(
        "concurrent modification: expected last sequence {expected} for {subject}, the log has moved on"
    )]
    Conflict { subject: String, expected: u64 },
    /// A subject that is not `gatehouse.events.<kind>.<id>` with valid tokens.
    #[error("invalid subject {0:?}")]
    InvalidSubject(String),
    /// The log cannot be reached (broker down, timeout).
    #[error("event log unavailable: {0}")]
    Unavailable(String),
    /// Stored data that cannot be read back (bad checksum in the middle of the file,
    /// a jump in sequences).
    #[error("event log corrupt: {0}")]
    Corrupt(String),
    /// A follower fell behind a gap in sequences: it must resync from a snapshot.
    #[error("gap in the log: expected sequence {expected}, got {got}")]
    Gap { expected: u64, got: u64 },
    #[error("event log I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// A stream of records in sequence order.
pub type RecordStream = Pin<Box<dyn Stream<Item = Result<Record, LogError>> + Send>>;

/// An append on its way to the log ([`EventLog::submit`]): resolves once the record is
/// durable (or refused). Dropping it does not cancel the append: the record is stored
/// or refused all the same, only its answer is lost.
#[must_use = "an append's answer says whether it was stored"]
pub struct PendingAppend(Pin<Box<dyn Future<Output = Result<Appended, LogError>> + Send>>);

impl PendingAppend {
    /// The answer `answer` will give.
    pub fn new(answer: impl Future<Output = Result<Appended, LogError>> + Send + 'static) -> Self {
        PendingAppend(Box::pin(answer))
    }

    /// An answer known already.
    pub fn ready(result: Result<Appended, LogError>) -> Self {
        PendingAppend::new(std::future::ready(result))
    }
}

impl Future for PendingAppend {
    type Output = Result<Appended, LogError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl std::fmt::Debug for PendingAppend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingAppend")
    }
}

/// The event log, as every node sees it.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Queues one record, to be stored if its expectation holds, and returns once it is
    /// queued — before it is durable: the [`PendingAppend`] resolves then. Records
    /// submitted one after the other through one handle are stored in that order (others'
    /// records may come between; a chain of [`Expectation::LastMsgId`] rules that out).
    /// A request that breaks the rules both backends share (subject, `msg_id`, headers)
    /// is refused here.
    async fn submit(&self, request: AppendRequest) -> Result<PendingAppend, LogError>;

    /// Appends one record if its expectation holds; returns once it is durable.
    async fn append(&self, request: AppendRequest) -> Result<Appended, LogError> {
        self.submit(request).await?.await
    }

    /// Where the log is, for start-up messages (a file path, a NATS stream and URL).
    fn describe(&self) -> String;

    /// Sequence of the last stored record (0 for an empty log).
    async fn last_sequence(&self) -> Result<u64, LogError>;

    /// Sequence of the first record the log still holds: 1 for a log that keeps its whole
    /// history (the file log always does), more once older records were removed (a NATS
    /// stream with limits, or purged). An empty log answers `last_sequence() + 1`. A
    /// reader can rebuild a state from the start only when this is 1; else it needs a
    /// snapshot at `first_sequence() - 1` or later.
    async fn first_sequence(&self) -> Result<u64, LogError>;

    /// Every record from sequence `from` (1 or 0: the start) in order, then new records
    /// live as they are appended. The stream ends only on error.
    async fn follow(&self, from: u64) -> Result<RecordStream, LogError>;

    /// The records from `from` up to the last one stored when called.
    async fn read_to_end(&self, from: u64) -> Result<Vec<Record>, LogError> {
        use futures::StreamExt;
        let last = self.last_sequence().await?;
        let from = from.max(1);
        let mut records = Vec::new();
        if from > last {
            return Ok(records);
        }
        let mut stream = self.follow(from).await?;
        while let Some(record) = stream.next().await {
            let record = record?;
            let done = record.sequence >= last;
            records.push(record);
            if done {
                break;
            }
        }
        Ok(records)
    }
}

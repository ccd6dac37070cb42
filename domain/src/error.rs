//! Why a command was refused. Each variant maps to one gRPC status at control's edge.

/// A command refused by the rules of an aggregate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// Malformed input: `field` names the offending field (e.g. `definition.context`),
    /// `rule` says what it must be. gRPC `INVALID_ARGUMENT`.
    #[error("{field}: {rule}")]
    InvalidArgument { field: String, rule: String },
    /// gRPC `NOT_FOUND`.
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    /// A uniqueness rule (context + version, application name per owner, ...).
    /// gRPC `ALREADY_EXISTS`.
    #[error("{0}")]
    AlreadyExists(String),
    /// The aggregate's state does not allow the command (illegal lifecycle transition,
    /// deleting an API that has subscriptions...). gRPC `FAILED_PRECONDITION`.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller expected another version of the aggregate: someone changed it first.
    /// gRPC `ABORTED`.
    #[error(
        "{kind} {id} is at version {actual}, not the expected {expected}: it was changed concurrently; re-read and retry"
    )]
    VersionMismatch {
        kind: &'static str,
        id: String,
        expected: u64,
        actual: u64,
    },
    /// Something the command was planned against changed since (a guarded command of a
    /// declarative apply). gRPC `ABORTED`.
    #[error("{0}")]
    Concurrent(String),
}

impl DomainError {
    /// `field` breaks `rule`.
    pub(crate) fn invalid(field: impl Into<String>, rule: impl Into<String>) -> Self {
        DomainError::InvalidArgument {
            field: field.into(),
            rule: rule.into(),
        }
    }

    /// No `kind` aggregate has this id.
    pub(crate) fn not_found(kind: &'static str, id: &str) -> Self {
        DomainError::NotFound {
            kind,
            id: id.to_string(),
        }
    }

    /// A new aggregate's caller-chosen id is taken: `<kind> <id> already exists`.
    pub(crate) fn already_exists(kind: &str, id: &str) -> Self {
        DomainError::AlreadyExists(format!("{kind} {id} already exists"))
    }
}

/// Why an event could not be folded into the state. Readers treat this as a sign that
/// they and the log disagree, and resync from a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The event is not the one right after the state's sequence.
    #[error("event at sequence {got} does not follow the state at sequence {state}")]
    OutOfOrder { state: u64, got: u64 },
    /// The envelope carries no event (an unknown event type from a newer writer).
    #[error("event {0} has no known payload")]
    UnknownEvent(String),
    /// The event refers to an aggregate the state does not have.
    #[error("event {event_id} refers to unknown {kind} {id}")]
    UnknownAggregate {
        event_id: String,
        kind: &'static str,
        id: String,
    },
}

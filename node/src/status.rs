//! The one place where errors become gRPC statuses.

use gatehouse_domain::DomainError;
use gatehouse_eventlog::LogError;
use tonic::Status;

use crate::commands::CommandError;

impl From<CommandError> for Status {
    fn from(error: CommandError) -> Status {
        match error {
            CommandError::Domain(e) => domain_status(e),
            CommandError::Log(e) => log_status(e),
            e @ CommandError::NotCaughtUp(_) => Status::unavailable(e.to_string()),
            e @ CommandError::Unfoldable(_) => Status::internal(e.to_string()),
        }
    }
}

/// INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION or ABORTED.
pub fn domain_status(error: DomainError) -> Status {
    let message = error.to_string();
    match error {
        DomainError::InvalidArgument { .. } => Status::invalid_argument(message),
        DomainError::NotFound { .. } => Status::not_found(message),
        DomainError::AlreadyExists(_) => Status::already_exists(message),
        DomainError::FailedPrecondition(_) => Status::failed_precondition(message),
        DomainError::VersionMismatch { .. } | DomainError::Concurrent(_) => {
            Status::aborted(message)
        }
    }
}

/// A lost optimistic-concurrency race is ABORTED (retry on fresh state); an unreachable
/// log is UNAVAILABLE; anything else is INTERNAL.
pub fn log_status(error: LogError) -> Status {
    match error {
        LogError::Conflict { .. } => Status::aborted(format!(
            "{error}; another writer changed it first: re-read and retry"
        )),
        LogError::Unavailable(_) => Status::unavailable(error.to_string()),
        other => Status::internal(other.to_string()),
    }
}

/// INVALID_ARGUMENT for a request field.
pub fn invalid(field: &str, rule: &str) -> Status {
    Status::invalid_argument(format!("{field}: {rule}"))
}

/// INVALID_ARGUMENT unless the request field `field` holds more than white space: the
/// check every RPC makes on the ids it is given.
pub fn required(field: &str, value: &str) -> Result<(), Status> {
    if value.trim().is_empty() {
        Err(invalid(field, "must not be empty"))
    } else {
        Ok(())
    }
}

/// `aggregate`, the `kind` `id` looked up in the state, cloned; NOT_FOUND if there is
/// none (`<kind> <id> not found`).
pub fn found<T: Clone>(kind: &str, id: &str, aggregate: Option<&T>) -> Result<T, Status> {
    aggregate
        .cloned()
        .ok_or_else(|| Status::not_found(format!("{kind} {id} not found")))
}

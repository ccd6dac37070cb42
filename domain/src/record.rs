//! The folded record of an aggregate, as the command handlers and the fold see it.
//!
//! Every handler that changes an existing aggregate does the same two things: find its
//! record (or refuse with NOT_FOUND), then decide the record's next event — same kind,
//! same id, the version after the record's. Every event the fold applies to a record
//! stamps it with its version and sequence. [`Record`] says once, for each kind of record
//! that keeps a version, where those live, so no handler can pair the wrong kind, id or
//! version and no fold arm can forget one of the two stamps.

use gatehouse_proto::events::{Api, Application, OAuthClient, Subscription, event_envelope::Event};

use crate::command::{AggregateKind, Consistency, PendingEvent};
use crate::{DomainError, State};

/// A versioned aggregate record held by [`State`].
pub(crate) trait Record: Sized {
    /// The aggregate kind of the record.
    const KIND: AggregateKind;
    /// How NOT_FOUND names the kind (`api`, `application`, ...).
    const NAME: &'static str;

    /// The record with this id, if the state has it.
    fn find<'s>(state: &'s State, id: &str) -> Option<&'s Self>;
    /// The aggregate id.
    fn id(&self) -> &str;
    /// The version the aggregate is at.
    fn version(&self) -> u64;
    /// The sequence of the aggregate's last event.
    fn last_sequence(&self) -> u64;
    /// Records that the event at `sequence` brought the aggregate to `version`.
    fn stamp(&mut self, version: u64, sequence: u64);

    /// The record with this id, or NOT_FOUND.
    fn existing<'s>(state: &'s State, id: &str) -> Result<&'s Self, DomainError> {
        Self::find(state, id).ok_or_else(|| DomainError::not_found(Self::NAME, id))
    }

    /// The aggregate's next event, appended only if `consistency` still holds.
    fn next_event(&self, consistency: Consistency, event: Event) -> PendingEvent {
        PendingEvent::next(Self::KIND, self.id(), self.version(), consistency, event)
    }

    /// The aggregate's own subject must still end at its last event: the consistency of
    /// a command whose rules read this aggregate only.
    fn unchanged(&self) -> Consistency {
        Consistency::aggregate(self.last_sequence())
    }
}

/// `impl Record` for a protobuf record with `aggregate_version` and `last_sequence`
/// fields: its type, kind, NOT_FOUND name, [`State`] lookup and id field.
macro_rules! record {
    ($record:ty, $kind:ident, $name:literal, $find:ident, $id:ident) => {
        impl Record for $record {
            const KIND: AggregateKind = AggregateKind::$kind;
            const NAME: &'static str = $name;

            fn find<'s>(state: &'s State, id: &str) -> Option<&'s Self> {
                state.$find(id)
            }
            fn id(&self) -> &str {
                &self.$id
            }
            fn version(&self) -> u64 {
                self.aggregate_version
            }
            fn last_sequence(&self) -> u64 {
                self.last_sequence
            }
            fn stamp(&mut self, version: u64, sequence: u64) {
                self.aggregate_version = version;
                self.last_sequence = sequence;
            }
        }
    };
}

record!(Api, Api, "api", api, id);
record!(Application, Application, "application", application, id);
record!(Subscription, Subscription, "subscription", subscription, id);
record!(OAuthClient, Client, "client", client, client_id);

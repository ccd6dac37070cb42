//! What the domain's integration tests share: deciding a command and folding its
//! events back, as control, token-service and the log would together.
//!
//! One definition, so that every test file commits events the same way (each at the
//! next sequence, with an id, a time and an actor) and a change to how envelopes are
//! stamped is made once.

use gatehouse_domain::{Command, DomainError, EventMeta, PendingEvent, State, handle};
use gatehouse_proto::Timestamp;

/// Applies decided events as the log would store them: each at the next sequence,
/// stamped with an event id, a time and the actor `tester`. The time is a fixed start
/// plus one second a sequence: set and ordered, without a clock making runs differ.
pub fn commit(state: &mut State, events: Vec<PendingEvent>) {
    for event in events {
        let next = state.sequence() + 1;
        let envelope = event.envelope(EventMeta {
            event_id: format!("evt-{next}"),
            time: Some(Timestamp {
                seconds: 1_700_000_000 + i64::try_from(next).expect("sequence fits in i64"),
                nanos: 0,
            }),
            actor: "tester".into(),
            ..Default::default()
        });
        state.apply(next, &envelope).expect("apply");
    }
}

/// Decides `command` against `state` and commits the events; returns how many there were.
pub fn run(state: &mut State, command: Command) -> Result<usize, DomainError> {
    let events = handle(state, command)?;
    let n = events.len();
    commit(state, events);
    Ok(n)
}

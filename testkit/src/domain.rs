//! "Handle and apply": a domain command decided against a [`State`] and its events
//! folded into it, as the log would store them, with no log, no I/O and no clock unless
//! asked.
//!
//! Tests of what is built on the fold (routing tables, revocation checks) build their
//! states with real commands rather than by hand, so a state they test is one the rules
//! allow:
//!
//! ```
//! use gatehouse_domain::{Command, State};
//! use gatehouse_testkit::domain::run;
//!
//! let mut state = State::new();
//! let events = run(&mut state, Command::CreateApplication {
//!     application_id: "app".into(),
//!     name: "MyPythonApp".into(),
//!     owner: "alice".into(),
//!     throttling_tier: "Unlimited".into(),
//!     description: String::new(),
//! });
//! assert_eq!((events, state.sequence()), (1, 1));
//! ```
//!
//! Each event goes at the next sequence, with the event id `evt-<sequence>` and the
//! actor `tester`; [`run`] and [`try_run`] stamp no time (the fold is then
//! deterministic), [`run_at`] stamps one (what revocation checks compare).
//!
//! # Shared state
//!
//! None.

use std::time::SystemTime;

use gatehouse_domain::{Command, DomainError, EventMeta, PendingEvent, State, handle};
use gatehouse_proto::Timestamp;

/// Folds decided events into `state` at the next sequences, stamped with `time`;
/// returns how many.
///
/// # Panics
///
/// If the state refuses one (it cannot: they were decided against it).
pub fn commit(state: &mut State, events: Vec<PendingEvent>, time: Option<Timestamp>) -> usize {
    let count = events.len();
    for event in events {
        let sequence = state.sequence() + 1;
        let envelope = event.envelope(EventMeta {
            event_id: format!("evt-{sequence}"),
            time,
            actor: "tester".into(),
            ..Default::default()
        });
        state
            .apply(sequence, &envelope)
            .unwrap_or_else(|e| panic!("event {sequence} refused by the fold: {e}"));
    }
    count
}

/// Decides `command` against `state` and folds its events (no time); how many there
/// were, or why the command is refused (the state is then unchanged).
pub fn try_run(state: &mut State, command: Command) -> Result<usize, DomainError> {
    let events = handle(state, command)?;
    Ok(commit(state, events, None))
}

/// [`try_run`] for a command that must be accepted.
///
/// # Panics
///
/// If it is refused, naming the command and the reason.
pub fn run(state: &mut State, command: Command) -> usize {
    let described = format!("{command:?}");
    try_run(state, command).unwrap_or_else(|e| panic!("{described} refused: {e}"))
}

/// [`run`], with the events stamped at `time`.
pub fn run_at(state: &mut State, command: Command, time: SystemTime) -> usize {
    let described = format!("{command:?}");
    let events = handle(state, command).unwrap_or_else(|e| panic!("{described} refused: {e}"));
    commit(state, events, Some(Timestamp::from(time)))
}

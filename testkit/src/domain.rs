//! "Handle and apply": a domain command decided against a [`State`] and its events
//! folded into it, as the log would store them, with no log and no I/O.
//!
//! Tests of what is built on the fold (routing tables, revocation checks, the rules
//! themselves) build their states with real commands rather than by hand, so a state
//! they test is one the rules allow:
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
//! actor `tester`. [`commit`], [`try_run`] and [`run`] stamp it at a fixed start plus one
//! second a sequence: a time is set and ordered, and no clock makes two runs differ.
//! [`run_at`] stamps the time given (what revocation checks compare with the clock).
//!
//! # Shared state
//!
//! None.

use std::time::SystemTime;

use gatehouse_domain::{Command, DomainError, EventMeta, PendingEvent, State, handle};
use gatehouse_proto::Timestamp;

/// When [`commit`] says the event at sequence 0 happened (2023-11-14T22:13:20Z).
pub const EPOCH_SECONDS: i64 = 1_700_000_000;

/// The time [`commit`] stamps on the event at `sequence`.
pub fn time_of(sequence: u64) -> Timestamp {
    Timestamp {
        seconds: EPOCH_SECONDS + i64::try_from(sequence).expect("a sequence fits in i64"),
        nanos: 0,
    }
}

/// Folds decided events into `state` at the next sequences, each stamped
/// [`time_of`] its sequence; returns how many.
///
/// # Panics
///
/// If the state refuses one (it cannot: they were decided against it).
pub fn commit(state: &mut State, events: Vec<PendingEvent>) -> usize {
    fold(state, events, time_of)
}

/// [`commit`], every event stamped `time`.
pub fn commit_at(state: &mut State, events: Vec<PendingEvent>, time: SystemTime) -> usize {
    fold(state, events, |_| Timestamp::from(time))
}

fn fold(state: &mut State, events: Vec<PendingEvent>, time: impl Fn(u64) -> Timestamp) -> usize {
    let count = events.len();
    for event in events {
        let sequence = state.sequence() + 1;
        let envelope = event.envelope(EventMeta {
            event_id: format!("evt-{sequence}"),
            time: Some(time(sequence)),
            actor: "tester".into(),
            ..Default::default()
        });
        state
            .apply(sequence, &envelope)
            .unwrap_or_else(|e| panic!("event {sequence} refused by the fold: {e}"));
    }
    count
}

/// Decides `command` against `state` and commits its events; how many there were, or
/// why the command is refused (the state is then unchanged).
pub fn try_run(state: &mut State, command: Command) -> Result<usize, DomainError> {
    let events = handle(state, command)?;
    Ok(commit(state, events))
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

/// [`run`], the events stamped at `time`.
pub fn run_at(state: &mut State, command: Command, time: SystemTime) -> usize {
    let described = format!("{command:?}");
    let events = handle(state, command).unwrap_or_else(|e| panic!("{described} refused: {e}"));
    commit_at(state, events, time)
}

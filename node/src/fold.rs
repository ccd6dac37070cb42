//! Folding one stored record: the checks every folding node makes before it trusts a
//! record, and what it does with one that can never be folded.
//!
//! The log's transport is not trusted to hand a node only good records: anyone able to
//! publish on NATS could store anything there. So before folding, every node (control,
//! token-service, each gateway) checks that the record decodes as an event envelope,
//! that its subject is `gatehouse.events.<kind>.<id>` with the kind of the event it
//! carries and the id of the aggregate it names, and the fold's own rules
//! ([`State::apply`]) do the rest.
//!
//! A record that fails any of these is **poison**: the same bytes fail the same way on
//! every node and at every replay, so rebuilding from the start would only fail again,
//! forever. Instead each node **quarantines** it: the state moves past its sequence
//! unchanged ([`State::skip`]), an error log line names the record and the reason, and
//! the counter `gatehouse_events_quarantined_total` goes up. Every node skips the same
//! records, so they still agree. A *gap* (a sequence missing) is not poison: it means
//! this reader missed something, and it resyncs.

use std::sync::atomic::{AtomicU64, Ordering};

use gatehouse_domain::{AggregateKind, ApplyError, State};
use gatehouse_eventlog::SUBJECT_PREFIX;
use gatehouse_proto::events::EventEnvelope;
use prost::Message;

/// Records quarantined by this process (every folding node adds to it).
pub static QUARANTINED: AtomicU64 = AtomicU64::new(0);

/// What became of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Folded {
    Applied,
    /// Skipped, with the reason (already logged and counted).
    Quarantined(String),
}

/// The record does not follow the state: the reader missed or repeated records and
/// must resync (never skip).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {got} does not follow the state at sequence {state}")]
pub struct OutOfOrder {
    pub state: u64,
    pub got: u64,
}

impl OutOfOrder {
    /// `Ok` when `sequence` is the one right after `state`'s: the only record a reader
    /// may fold or skip next.
    fn check_next(state: &State, sequence: u64) -> Result<(), OutOfOrder> {
        if sequence == state.sequence() + 1 {
            Ok(())
        } else {
            Err(OutOfOrder {
                state: state.sequence(),
                got: sequence,
            })
        }
    }
}

/// Decodes and folds the record stored at `sequence` under `subject`.
pub fn fold_record(
    state: &mut State,
    sequence: u64,
    subject: &str,
    payload: &[u8],
) -> Result<Folded, OutOfOrder> {
    match EventEnvelope::decode(payload) {
        Ok(envelope) => fold_event(state, sequence, subject, &envelope),
        Err(e) => quarantine(
            state,
            sequence,
            subject,
            format!("not an event envelope: {e}"),
        ),
    }
}

/// Folds an already decoded envelope stored at `sequence` under `subject` (`None`: the
/// record was not an envelope).
pub fn fold_event(
    state: &mut State,
    sequence: u64,
    subject: &str,
    envelope: &EventEnvelope,
) -> Result<Folded, OutOfOrder> {
    OutOfOrder::check_next(state, sequence)?;
    if let Err(reason) = check_subject(subject, envelope) {
        return quarantine(state, sequence, subject, reason);
    }
    match state.apply(sequence, envelope) {
        Ok(()) => Ok(Folded::Applied),
        Err(ApplyError::OutOfOrder { state, got }) => Err(OutOfOrder { state, got }),
        Err(e) => quarantine(state, sequence, subject, e.to_string()),
    }
}

/// A record the reader received without a decodable envelope (e.g. from control's
/// stream, which forwards what it could not decode as an empty event).
pub fn quarantine_undecodable(
    state: &mut State,
    sequence: u64,
    subject: &str,
) -> Result<Folded, OutOfOrder> {
    OutOfOrder::check_next(state, sequence)?;
    quarantine(state, sequence, subject, "not an event envelope".into())
}

/// The subject must be `gatehouse.events.<kind of the event>.<aggregate id>`.
fn check_subject(subject: &str, envelope: &EventEnvelope) -> Result<(), String> {
    let Some(event) = envelope.event.as_ref() else {
        // An unknown event type: the fold refuses it next.
        return Ok(());
    };
    let expected_kind = AggregateKind::of(event).as_str();
    let rest = subject
        .strip_prefix(SUBJECT_PREFIX)
        .and_then(|r| r.strip_prefix('.'))
        .ok_or_else(|| format!("subject {subject:?} is not under {SUBJECT_PREFIX}"))?;
    let (kind, id) = rest
        .split_once('.')
        .ok_or_else(|| format!("subject {subject:?} has no aggregate id"))?;
    if kind != expected_kind {
        return Err(format!(
            "a {expected_kind} event on a {kind} subject ({subject})"
        ));
    }
    if id != envelope.aggregate_id {
        return Err(format!(
            "the event names aggregate {:?} but its subject {subject}",
            envelope.aggregate_id
        ));
    }
    Ok(())
}

fn quarantine(
    state: &mut State,
    sequence: u64,
    subject: &str,
    reason: String,
) -> Result<Folded, OutOfOrder> {
    state.skip(sequence).map_err(|_| OutOfOrder {
        state: state.sequence(),
        got: sequence,
    })?;
    QUARANTINED.fetch_add(1, Ordering::Relaxed);
    tracing::error!(
        sequence,
        subject,
        reason = %reason,
        "quarantined a record that cannot be folded: skipped on every node, state unchanged"
    );
    Ok(Folded::Quarantined(reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_proto::events::{
        ApplicationCreated, SigningKey, SigningKeyPublished, event_envelope::Event,
    };

    fn signing_key(kid: &str) -> EventEnvelope {
        EventEnvelope {
            event_id: "e".into(),
            aggregate_id: kid.into(),
            aggregate_version: 1,
            event: Some(Event::SigningKeyPublished(SigningKeyPublished {
                key: Some(SigningKey {
                    kid: kid.into(),
                    ..Default::default()
                }),
            })),
            ..Default::default()
        }
    }

    #[test]
    fn a_record_whose_kind_does_not_match_its_subject_is_quarantined() {
        let mut state = State::new();
        let before = QUARANTINED.load(Ordering::Relaxed);
        // A signing key published on an API subject: refused, state unchanged but past it.
        let forged = signing_key("evil").encode_to_vec();
        let folded = fold_record(&mut state, 1, "gatehouse.events.api.evil", &forged).unwrap();
        assert!(
            matches!(folded, Folded::Quarantined(r) if r.contains("signingkey event on a api subject"))
        );
        assert_eq!(state.sequence(), 1);
        assert!(state.signing_keys().next().is_none());
        // The id must match too.
        let folded =
            fold_record(&mut state, 2, "gatehouse.events.signingkey.other", &forged).unwrap();
        assert!(matches!(folded, Folded::Quarantined(_)));
        // Garbage bytes.
        let folded = fold_record(&mut state, 3, "gatehouse.events.api.x", b"\xff\xff\xff").unwrap();
        assert!(matches!(folded, Folded::Quarantined(_)));
        // An event the fold refuses (an unknown aggregate).
        let delete = EventEnvelope {
            aggregate_id: "nobody".into(),
            event: Some(Event::ApplicationDeleted(Default::default())),
            ..Default::default()
        };
        let folded = fold_event(
            &mut state,
            4,
            "gatehouse.events.application.nobody",
            &delete,
        );
        assert!(matches!(folded, Ok(Folded::Quarantined(_))));
        assert!(QUARANTINED.load(Ordering::Relaxed) >= before + 4);
        // A good record still applies after them.
        let good = EventEnvelope {
            aggregate_id: "app".into(),
            aggregate_version: 1,
            event: Some(Event::ApplicationCreated(ApplicationCreated {
                name: "A".into(),
                owner: "o".into(),
                throttling_tier: "Unlimited".into(),
                description: String::new(),
            })),
            ..Default::default()
        };
        assert_eq!(
            fold_event(&mut state, 5, "gatehouse.events.application.app", &good),
            Ok(Folded::Applied)
        );
        assert!(state.application("app").is_some());
        // A gap is not poison.
        assert_eq!(
            fold_event(&mut state, 7, "gatehouse.events.application.app", &good),
            Err(OutOfOrder { state: 5, got: 7 })
        );
        assert_eq!(
            fold_record(
                &mut state,
                6,
                "gatehouse.events.signingkey.k",
                &signing_key("k").encode_to_vec()
            ),
            Ok(Folded::Applied)
        );
    }
}

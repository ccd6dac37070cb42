//! WSO2 API Manager's API lifecycle: six states and exactly its transitions.
//!
//! ```text
//! CREATED    -> PUBLISHED | PROTOTYPED
//! PROTOTYPED -> PUBLISHED | CREATED
//! PUBLISHED  -> BLOCKED | DEPRECATED | PROTOTYPED | CREATED
//! BLOCKED    -> PUBLISHED | DEPRECATED
//! DEPRECATED -> RETIRED
//! RETIRED    (final)
//! ```

use gatehouse_proto::events::lifecycle::State;

/// The states reachable from `from` in one transition.
pub fn allowed_transitions(from: State) -> &'static [State] {
    use State::*;
    match from {
        Created => &[Published, Prototyped],
        Prototyped => &[Published, Created],
        Published => &[Blocked, Deprecated, Prototyped, Created],
        Blocked => &[Published, Deprecated],
        Deprecated => &[Retired],
        Retired | Unspecified => &[],
    }
}

/// Whether `from -> to` is one of WSO2's transitions.
pub fn can_transition(from: State, to: State) -> bool {
    allowed_transitions(from).contains(&to)
}

/// Whether a gateway serves calls to an API in this state (PROTOTYPED serves without
/// authentication; BLOCKED answers 503; the others are not deployed).
pub fn is_deployed(state: State) -> bool {
    matches!(
        state,
        State::Published | State::Deprecated | State::Prototyped | State::Blocked
    )
}

/// Whether applications may subscribe to an API in this state.
pub fn accepts_subscriptions(state: State) -> bool {
    matches!(state, State::Published | State::Prototyped)
}

/// The state's name as WSO2 writes it (`PUBLISHED`).
pub fn name(state: State) -> &'static str {
    state.as_str_name()
}

#[cfg(test)]
mod tests {
    use super::*;
    use State::*;

    const ALL: [State; 6] = [Created, Prototyped, Published, Blocked, Deprecated, Retired];

    /// The whole transition table, written out independently of `allowed_transitions`.
    const ALLOWED: &[(State, State)] = &[
        (Created, Published),
        (Created, Prototyped),
        (Prototyped, Published),
        (Prototyped, Created),
        (Published, Blocked),
        (Published, Deprecated),
        (Published, Prototyped),
        (Published, Created),
        (Blocked, Published),
        (Blocked, Deprecated),
        (Deprecated, Retired),
    ];

    #[test]
    fn every_pair_of_states_is_allowed_exactly_when_wso2_allows_it() {
        let mut allowed = 0;
        for from in ALL {
            for to in ALL {
                let expected = ALLOWED.contains(&(from, to));
                assert_eq!(
                    can_transition(from, to),
                    expected,
                    "{from:?} -> {to:?} should be {}",
                    if expected { "allowed" } else { "refused" }
                );
                allowed += usize::from(expected);
            }
        }
        assert_eq!(allowed, 11);
    }

    #[test]
    fn retired_is_final_and_unspecified_goes_nowhere() {
        assert!(allowed_transitions(Retired).is_empty());
        assert!(ALL.iter().all(|to| !can_transition(Unspecified, *to)));
        assert!(ALL.iter().all(|from| !can_transition(*from, Unspecified)));
    }

    #[test]
    fn no_state_transitions_to_itself() {
        for s in ALL {
            assert!(!can_transition(s, s), "{s:?}");
        }
    }
}

//! The application aggregate: what a consumer registers to subscribe to APIs and to get
//! keys for (WSO2's "application").
//!
//! # Rules
//!
//! An application has a caller-chosen id, a name unique per owner (case-insensitively,
//! as the developer portal shows them) and an APPLICATION-level throttling tier
//! (`Unlimited` when none is given). Creating one reads other aggregates (the tier, the
//! owner's other applications), so it guards the whole log; so does deleting one, which
//! ends its subscriptions and revokes its keys in the fold ([`crate::State`]).

use gatehouse_proto::events::{
    Application, ApplicationCreated, ApplicationDeleted, event_envelope::Event,
    throttle_policy::Level,
};

use crate::command::{AggregateKind, Consistency, Decision, PendingEvent, check_new_id};
use crate::record::Record;
use crate::{DomainError, State, policy, validate};

/// Registers an application under `application_id`; `created` carries what the caller
/// gave, trimmed and defaulted here.
pub(crate) fn create(
    state: &State,
    application_id: String,
    mut created: ApplicationCreated,
) -> Decision {
    check_new_id("application_id", &application_id)?;
    created.name = created.name.trim().to_string();
    validate::name("name", &created.name)?;
    validate::name("owner", &created.owner)?;
    if created.throttling_tier.is_empty() {
        created.throttling_tier = policy::UNLIMITED.to_string();
    }
    if state
        .policy(Level::Application, &created.throttling_tier)
        .is_none()
    {
        return Err(policy::unknown_tier(
            state,
            "throttling_tier",
            Level::Application,
            &created.throttling_tier,
        ));
    }
    if state.application(&application_id).is_some() {
        return Err(DomainError::already_exists("application", &application_id));
    }
    if state
        .applications_of_owner(&created.owner)
        .any(|a| a.name.eq_ignore_ascii_case(&created.name))
    {
        return Err(DomainError::AlreadyExists(format!(
            "{} already has an application named {}",
            created.owner, created.name
        )));
    }
    Ok(vec![PendingEvent::first(
        AggregateKind::Application,
        application_id,
        Consistency::log(state),
        Event::ApplicationCreated(created),
    )])
}

/// Deletes an application; its subscriptions and keys go with it.
pub(crate) fn delete(state: &State, application_id: &str) -> Decision {
    let app = Application::existing(state, application_id)?;
    // The fold also ends its subscriptions and revokes its keys: guard the whole log, so
    // that none made meanwhile outlives the application.
    let deleted = Event::ApplicationDeleted(ApplicationDeleted {});
    Ok(vec![app.next_event(Consistency::log(state), deleted)])
}

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
    Application, ApplicationCreated, ApplicationDeleted, ApplicationUpdated, event_envelope::Event,
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
    created.throttling_tier = application_tier(state, created.throttling_tier)?;
    check_description(&created.description)?;
    if state.application(&application_id).is_some() {
        return Err(DomainError::already_exists("application", &application_id));
    }
    if state.owner_has_application_named(&created.owner, &created.name) {
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

/// Replaces an application's tier and description; changing nothing decides nothing.
pub(crate) fn update(
    state: &State,
    application_id: &str,
    throttling_tier: String,
    description: String,
) -> Decision {
    validate::required("application_id", application_id)?;
    let app = Application::existing(state, application_id)?;
    let throttling_tier = application_tier(state, throttling_tier)?;
    check_description(&description)?;
    if app.throttling_tier == throttling_tier && app.description == description {
        return Ok(Vec::new());
    }
    // The rules read the application and its tier, and policies are never removed: the
    // application's own subject is guard enough.
    let updated = Event::ApplicationUpdated(ApplicationUpdated {
        throttling_tier,
        description,
    });
    Ok(vec![app.next_event(app.unchanged(), updated)])
}

/// An APPLICATION-level tier that exists (empty: `Unlimited`).
fn application_tier(state: &State, tier: String) -> Result<String, DomainError> {
    let tier = if tier.is_empty() {
        policy::UNLIMITED.to_string()
    } else {
        tier
    };
    policy::require_tier(state, "throttling_tier", Level::Application, &tier)?;
    Ok(tier)
}

fn check_description(description: &str) -> Result<(), DomainError> {
    if description.len() > 10_000 {
        return Err(DomainError::invalid(
            "description",
            "must be at most 10000 bytes",
        ));
    }
    Ok(())
}

/// Deletes an application; its subscriptions and keys go with it.
pub(crate) fn delete(state: &State, application_id: &str) -> Decision {
    let app = Application::existing(state, application_id)?;
    // The fold also ends its subscriptions and revokes its keys: guard the whole log, so
    // that none made meanwhile outlives the application.
    let deleted = Event::ApplicationDeleted(ApplicationDeleted {});
    Ok(vec![app.next_event(Consistency::log(state), deleted)])
}

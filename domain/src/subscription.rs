//! The subscription aggregate: an application's right to call one API at one
//! SUBSCRIPTION-level tier, and whether a gateway lets it through (active, blocked, or
//! blocked for production keys only).
//!
//! # Rules
//!
//! Subscribing reads the application, the API (only PUBLISHED or PROTOTYPED APIs accept
//! subscriptions, and only at a tier the API offers) and the other subscriptions (one per
//! application and API), so it guards the whole log. Blocking, unblocking and
//! unsubscribing read only the subscription itself, so they guard its own subject.

use gatehouse_proto::events::{
    Api, Application, Subscription, SubscriptionCreated, SubscriptionDeleted,
    SubscriptionScopesGranted, SubscriptionStateChanged, event_envelope::Event,
    subscription_status, throttle_policy::Level,
};

use crate::command::{AggregateKind, Consistency, Decision, PendingEvent, check_new_id};
use crate::record::Record;
use crate::{DomainError, State, lifecycle as lc, policy, validate};

/// Subscribes `application_id` to `api_id` at `tier`, under `subscription_id`.
pub(crate) fn create(
    state: &State,
    subscription_id: String,
    application_id: String,
    api_id: String,
    tier: String,
) -> Decision {
    check_new_id("subscription_id", &subscription_id)?;
    validate::required("application_id", &application_id)?;
    validate::required("api_id", &api_id)?;
    validate::required("tier", &tier)?;
    Application::existing(state, &application_id)?;
    let api = Api::existing(state, &api_id)?;
    let definition = api.definition.clone().unwrap_or_default();
    if !lc::accepts_subscriptions(api.lifecycle()) {
        return Err(DomainError::FailedPrecondition(format!(
            "API {} {} is {}: only PUBLISHED or PROTOTYPED APIs accept subscriptions",
            definition.name,
            definition.version,
            lc::name(api.lifecycle())
        )));
    }
    policy::require_tier(state, "tier", Level::Subscription, &tier)?;
    if !definition.subscription_tiers.contains(&tier) {
        return Err(DomainError::invalid(
            "tier",
            format!(
                "API {} {} does not offer tier {tier}; it offers: {}",
                definition.name,
                definition.version,
                definition.subscription_tiers.join(", ")
            ),
        ));
    }
    if let Some(existing) = state.subscription_of(&application_id, &api_id) {
        return Err(DomainError::AlreadyExists(format!(
            "application {application_id} is already subscribed to API {api_id} (subscription {})",
            existing.id
        )));
    }
    if state.subscription(&subscription_id).is_some() {
        return Err(DomainError::already_exists(
            "subscription",
            &subscription_id,
        ));
    }
    Ok(vec![PendingEvent::first(
        AggregateKind::Subscription,
        subscription_id,
        Consistency::log(state),
        Event::SubscriptionCreated(SubscriptionCreated {
            application_id,
            api_id,
            tier,
        }),
    )])
}

/// Blocks a subscription: for every key, or (`production_only`) for production keys,
/// leaving sandbox ones working.
pub(crate) fn block(state: &State, subscription_id: &str, production_only: bool) -> Decision {
    let target = if production_only {
        subscription_status::State::ProdOnlyBlocked
    } else {
        subscription_status::State::Blocked
    };
    change_state(state, subscription_id, target)
}

/// Lets a blocked subscription through again.
pub(crate) fn unblock(state: &State, subscription_id: &str) -> Decision {
    change_state(state, subscription_id, subscription_status::State::Active)
}

/// Ends a subscription.
pub(crate) fn delete(state: &State, subscription_id: &str) -> Decision {
    let s = Subscription::existing(state, subscription_id)?;
    let deleted = Event::SubscriptionDeleted(SubscriptionDeleted {});
    Ok(vec![s.next_event(s.unchanged(), deleted)])
}

/// Grants the subscribed application `scopes` on the subscription's API (replacing the
/// scopes granted before): each must be declared by a resource of that API. Granting
/// what is granted already changes nothing. The API is read for its declared scopes
/// only; a scope it stops declaring later is no longer honoured (token-service and the
/// gateways intersect the grant with the API's scopes when they use it), so the
/// subscription's own subject is guard enough.
pub(crate) fn grant_scopes(state: &State, subscription_id: &str, scopes: Vec<String>) -> Decision {
    let s = Subscription::existing(state, subscription_id)?;
    let api = Api::existing(state, &s.api_id)?;
    let declared: std::collections::BTreeSet<&str> = api
        .definition
        .iter()
        .flat_map(|d| &d.resources)
        .flat_map(|r| r.scopes.iter().map(String::as_str))
        .collect();
    let mut granted: Vec<String> = Vec::with_capacity(scopes.len());
    for (i, scope) in scopes.into_iter().enumerate() {
        let field = format!("scopes[{i}]");
        validate::scope(&field, &scope)?;
        if !declared.contains(scope.as_str()) {
            return Err(DomainError::invalid(
                field,
                format!(
                    "{scope:?} is declared by no resource of API {}; it declares: {}",
                    s.api_id,
                    declared.iter().copied().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        if !granted.contains(&scope) {
            granted.push(scope);
        }
    }
    granted.sort();
    if granted == s.granted_scopes {
        return Ok(Vec::new());
    }
    let event = Event::SubscriptionScopesGranted(SubscriptionScopesGranted { scopes: granted });
    Ok(vec![s.next_event(s.unchanged(), event)])
}

/// Block or unblock; asking for the state a subscription already has changes nothing.
fn change_state(
    state: &State,
    subscription_id: &str,
    target: subscription_status::State,
) -> Decision {
    let s = Subscription::existing(state, subscription_id)?;
    if s.state() == target {
        return Ok(Vec::new());
    }
    let changed = Event::SubscriptionStateChanged(SubscriptionStateChanged {
        from: s.state,
        to: target as i32,
    });
    Ok(vec![s.next_event(s.unchanged(), changed)])
}

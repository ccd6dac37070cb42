//! The throttling policy aggregate: WSO2's defaults, seeded into every state, and the
//! rules for custom ones.
//!
//! # Rules
//!
//! A policy limits requests at one level — SUBSCRIPTION (a subscription's tier),
//! APPLICATION (an application's tier) or API (an API's or a resource's tier) — to
//! `request_count` per `unit_seconds`, or not at all (`unlimited`). Its id is its level
//! and name ([`policy_id`]), so one name may exist at several levels (`Unlimited` does at
//! all three) and the subject itself guards uniqueness. Policies are only ever added:
//! the built-in ones are in every state from the start ([`built_in`]).

use gatehouse_proto::events::{
    PolicyCreated, PolicyUpdated, ThrottlePolicy, event_envelope::Event, throttle_policy::Level,
};

use crate::command::{AggregateKind, Consistency, Decision, PendingEvent};
use crate::{DomainError, State, validate};

/// The name every level has for "no limit".
pub const UNLIMITED: &str = "Unlimited";

/// The aggregate id of a policy: `<level>-<name>`, e.g. `subscription-Gold`.
pub fn policy_id(level: Level, name: &str) -> String {
    let level = match level {
        Level::Subscription => "subscription",
        Level::Application => "application",
        Level::Api => "api",
        Level::Unspecified => "unspecified",
    };
    format!("{level}-{name}")
}

fn limited(name: &str, level: Level, count: u64, description: &str) -> ThrottlePolicy {
    ThrottlePolicy {
        name: name.to_string(),
        level: level as i32,
        request_count: count,
        unit_seconds: 60,
        unlimited: false,
        description: description.to_string(),
        built_in: true,
        aggregate_version: 0,
        last_sequence: 0,
    }
}

fn unlimited(level: Level) -> ThrottlePolicy {
    ThrottlePolicy {
        name: UNLIMITED.to_string(),
        level: level as i32,
        unlimited: true,
        description: "Allows unlimited requests".to_string(),
        built_in: true,
        ..Default::default()
    }
}

/// WSO2 API Manager's default policies.
pub fn built_in() -> Vec<ThrottlePolicy> {
    use Level::*;
    vec![
        limited(
            "Bronze",
            Subscription,
            1000,
            "Allows 1000 requests per minute",
        ),
        limited(
            "Silver",
            Subscription,
            2000,
            "Allows 2000 requests per minute",
        ),
        limited(
            "Gold",
            Subscription,
            5000,
            "Allows 5000 requests per minute",
        ),
        unlimited(Subscription),
        limited("10PerMin", Application, 10, "Allows 10 requests per minute"),
        limited("20PerMin", Application, 20, "Allows 20 requests per minute"),
        limited("50PerMin", Application, 50, "Allows 50 requests per minute"),
        unlimited(Application),
        limited("10KPerMin", Api, 10_000, "Allows 10000 requests per minute"),
        limited("20KPerMin", Api, 20_000, "Allows 20000 requests per minute"),
        limited("50KPerMin", Api, 50_000, "Allows 50000 requests per minute"),
        unlimited(Api),
    ]
}

/// Human-readable limit, e.g. `1000/60s` or `unlimited`.
pub fn describe_limit(policy: &ThrottlePolicy) -> String {
    if policy.unlimited {
        "unlimited".to_string()
    } else {
        format!("{}/{}s", policy.request_count, policy.unit_seconds)
    }
}

/// A custom policy as [`Command::CreatePolicy`](crate::Command::CreatePolicy) and
/// [`Command::UpdatePolicy`](crate::Command::UpdatePolicy) give it: `request_count` calls
/// per `unit_seconds`, or unlimited. Owned plain fields: a command carries it by value,
/// and it becomes the event's [`ThrottlePolicy`] as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomPolicy {
    pub name: String,
    pub level: Level,
    pub request_count: u64,
    pub unit_seconds: u32,
    pub unlimited: bool,
    pub description: String,
}

impl From<CustomPolicy> for ThrottlePolicy {
    fn from(p: CustomPolicy) -> ThrottlePolicy {
        ThrottlePolicy {
            name: p.name,
            level: p.level as i32,
            request_count: p.request_count,
            unit_seconds: p.unit_seconds,
            unlimited: p.unlimited,
            description: p.description,
            ..Default::default()
        }
    }
}

/// Creates a custom policy.
pub(crate) fn create(state: &State, policy: ThrottlePolicy) -> Decision {
    check_limit(&policy)?;
    if state.policy(policy.level(), &policy.name).is_some() {
        return Err(DomainError::AlreadyExists(format!(
            "a {} policy named {} already exists",
            policy.level().as_str_name(),
            policy.name
        )));
    }
    Ok(vec![PendingEvent::first(
        AggregateKind::Policy,
        policy_id(policy.level(), &policy.name),
        // The id is the level and name, so the subject itself guards uniqueness.
        Consistency::aggregate(0),
        Event::PolicyCreated(PolicyCreated {
            policy: Some(policy),
        }),
    )])
}

/// Replaces a custom policy's limit and description. Built-in policies are WSO2's
/// defaults and stay as they are; changing nothing decides nothing.
pub(crate) fn update(state: &State, policy: ThrottlePolicy) -> Decision {
    check_limit(&policy)?;
    let Some(current) = state.policy(policy.level(), &policy.name) else {
        return Err(DomainError::not_found(
            "policy",
            &policy_id(policy.level(), &policy.name),
        ));
    };
    if current.built_in {
        return Err(DomainError::FailedPrecondition(format!(
            "{} policy {} is built in and cannot be changed; create a policy of your own",
            policy.level().as_str_name(),
            policy.name
        )));
    }
    let unchanged = current.unlimited == policy.unlimited
        && current.description == policy.description
        && (policy.unlimited
            || (current.request_count == policy.request_count
                && current.unit_seconds == policy.unit_seconds));
    if unchanged {
        return Ok(Vec::new());
    }
    Ok(vec![PendingEvent::next(
        AggregateKind::Policy,
        policy_id(policy.level(), &policy.name),
        current.aggregate_version,
        // The rules read this policy only.
        Consistency::aggregate(current.last_sequence),
        Event::PolicyUpdated(PolicyUpdated {
            policy: Some(policy),
        }),
    )])
}

/// A policy's name, level and limit are well formed.
fn check_limit(policy: &ThrottlePolicy) -> Result<(), DomainError> {
    validate::token_name("name", &policy.name)?;
    if policy.level() == Level::Unspecified {
        return Err(DomainError::invalid(
            "level",
            "must be SUBSCRIPTION, APPLICATION or API",
        ));
    }
    if !policy.unlimited {
        if policy.request_count == 0 {
            return Err(DomainError::invalid(
                "request_count",
                "must be greater than 0 (or set unlimited)",
            ));
        }
        if policy.unit_seconds == 0 {
            return Err(DomainError::invalid(
                "unit_seconds",
                "must be greater than 0 (or set unlimited)",
            ));
        }
    }
    Ok(())
}

/// Checks that the `level` policy `name`, which `field` names as a tier, exists: else an
/// INVALID_ARGUMENT listing the ones that do.
pub(crate) fn require_tier(
    state: &State,
    field: &str,
    level: Level,
    name: &str,
) -> Result<(), DomainError> {
    if state.policy(level, name).is_some() {
        return Ok(());
    }
    let known: Vec<&str> = state
        .policies()
        .filter(|p| p.level() == level)
        .map(|p| p.name.as_str())
        .collect();
    Err(DomainError::invalid(
        field,
        format!(
            "unknown {} tier {name:?}; known: {}",
            level.as_str_name(),
            known.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wso2_defaults_are_seeded_with_their_limits() {
        let all = built_in();
        let find = |level: Level, name: &str| {
            all.iter()
                .find(|p| p.level() == level && p.name == name)
                .unwrap_or_else(|| panic!("{name} at {level:?} missing"))
        };
        assert_eq!(find(Level::Subscription, "Bronze").request_count, 1000);
        assert_eq!(find(Level::Subscription, "Silver").request_count, 2000);
        assert_eq!(find(Level::Subscription, "Gold").request_count, 5000);
        assert_eq!(find(Level::Application, "10PerMin").request_count, 10);
        assert_eq!(find(Level::Application, "20PerMin").request_count, 20);
        assert_eq!(find(Level::Application, "50PerMin").request_count, 50);
        assert_eq!(find(Level::Api, "10KPerMin").request_count, 10_000);
        assert_eq!(find(Level::Api, "20KPerMin").request_count, 20_000);
        assert_eq!(find(Level::Api, "50KPerMin").request_count, 50_000);
        for level in [Level::Subscription, Level::Application, Level::Api] {
            assert!(find(level, UNLIMITED).unlimited);
        }
        assert!(
            all.iter()
                .filter(|p| !p.unlimited)
                .all(|p| p.unit_seconds == 60)
        );
        assert_eq!(all.len(), 12);
    }

    #[test]
    fn limits_read_well() {
        assert_eq!(describe_limit(&built_in()[0]), "1000/60s");
        assert_eq!(describe_limit(&unlimited(Level::Api)), "unlimited");
    }
}

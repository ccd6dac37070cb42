//! Commands and their decisions: `handle(&State, Command) -> Result<Vec<PendingEvent>>`.
//!
//! Handling is pure: it reads the state, checks the rules of the aggregate the command
//! targets, and returns the events to append — or the reason it refuses. Ids, times and
//! actors come from the caller, so the same command on the same state always decides the
//! same way. Appending, retrying and folding the events back are the edge's job.

use gatehouse_proto::Timestamp;
use gatehouse_proto::events::{
    ApiDefinition, ApplicationCreated, ApplicationDeleted, EventEnvelope, OAuthClient,
    PolicyCreated, SigningKey, SubscriptionCreated, SubscriptionDeleted, SubscriptionStateChanged,
    ThrottlePolicy, event_envelope::Event, lifecycle, subscription_status, throttle_policy::Level,
};

use crate::{DomainError, State, api, keys, lifecycle as lc, policy, validate};

/// The kinds of aggregate; each has its own log subject `gatehouse.events.<kind>.<id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggregateKind {
    Api,
    Policy,
    Application,
    Subscription,
    /// OAuth2 client credentials (token-service).
    Client,
    /// A token signing key (token-service).
    SigningKey,
    /// A revoked access token (token-service).
    Token,
}

impl AggregateKind {
    /// The subject token of this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            AggregateKind::Api => "api",
            AggregateKind::Policy => "policy",
            AggregateKind::Application => "application",
            AggregateKind::Subscription => "subscription",
            AggregateKind::Client => "client",
            AggregateKind::SigningKey => "signingkey",
            AggregateKind::Token => "token",
        }
    }

    /// The kind an event belongs to.
    pub fn of(event: &Event) -> Self {
        match event {
            Event::ApiCreated(_)
            | Event::ApiUpdated(_)
            | Event::ApiLifecycleChanged(_)
            | Event::ApiDeleted(_) => AggregateKind::Api,
            Event::PolicyCreated(_) => AggregateKind::Policy,
            Event::ApplicationCreated(_) | Event::ApplicationDeleted(_) => {
                AggregateKind::Application
            }
            Event::SubscriptionCreated(_)
            | Event::SubscriptionStateChanged(_)
            | Event::SubscriptionDeleted(_) => AggregateKind::Subscription,
            Event::ClientRegistered(_)
            | Event::ClientSecretRegenerated(_)
            | Event::ClientRevoked(_) => AggregateKind::Client,
            Event::SigningKeyPublished(_) | Event::SigningKeyDeactivated(_) => {
                AggregateKind::SigningKey
            }
            Event::TokenRevoked(_) => AggregateKind::Token,
        }
    }
}

/// What must still hold when the event is appended, for the decision to stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// The aggregate's own subject still ends at this sequence (0: a new aggregate).
    /// Enough when the command's rules read only that aggregate.
    Aggregate { last_sequence: u64 },
    /// The whole log still ends at this sequence. Needed when the rules read other
    /// aggregates: uniqueness of context + version, "only subscribe to a published
    /// API", "delete only without subscriptions".
    Log { last_sequence: u64 },
}

/// An event decided by a command, not yet appended.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingEvent {
    pub kind: AggregateKind,
    pub aggregate_id: String,
    /// The aggregate's version once this event is applied.
    pub aggregate_version: u64,
    pub consistency: Consistency,
    pub event: Event,
}

/// What the edge adds to a decided event: identity, time, actor and trace context.
#[derive(Debug, Clone, Default)]
pub struct EventMeta {
    pub event_id: String,
    pub time: Option<Timestamp>,
    pub actor: String,
    pub traceparent: String,
    pub tracestate: String,
}

impl PendingEvent {
    /// The envelope to append.
    pub fn envelope(&self, meta: EventMeta) -> EventEnvelope {
        EventEnvelope {
            event_id: meta.event_id,
            aggregate_id: self.aggregate_id.clone(),
            aggregate_version: self.aggregate_version,
            time: meta.time,
            actor: meta.actor,
            traceparent: meta.traceparent,
            tracestate: meta.tracestate,
            event: Some(self.event.clone()),
        }
    }
}

/// Every change an admin can ask for. Ids of new aggregates are chosen by the caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    CreateApi {
        api_id: String,
        definition: ApiDefinition,
    },
    CreateApiVersion {
        api_id: String,
        source_api_id: String,
        new_version: String,
        make_default: bool,
    },
    UpdateApi {
        api_id: String,
        definition: ApiDefinition,
        expected_version: Option<u64>,
    },
    ChangeLifecycle {
        api_id: String,
        target: lifecycle::State,
        expected_version: Option<u64>,
    },
    DeleteApi {
        api_id: String,
    },
    CreatePolicy {
        name: String,
        level: Level,
        request_count: u64,
        unit_seconds: u32,
        unlimited: bool,
        description: String,
    },
    CreateApplication {
        application_id: String,
        name: String,
        owner: String,
        throttling_tier: String,
        description: String,
    },
    DeleteApplication {
        application_id: String,
    },
    Subscribe {
        subscription_id: String,
        application_id: String,
        api_id: String,
        tier: String,
    },
    BlockSubscription {
        subscription_id: String,
        production_only: bool,
    },
    UnblockSubscription {
        subscription_id: String,
    },
    Unsubscribe {
        subscription_id: String,
    },
    /// New client credentials: an application's keys, or an admin client.
    RegisterClient {
        client: OAuthClient,
    },
    RegenerateSecret {
        client_id: String,
        secret_hash: String,
    },
    RevokeClient {
        client_id: String,
    },
    /// A new active signing key; the active one, if any, signs no more and stays in the
    /// JWKS until `retire_previous_after`.
    PublishSigningKey {
        key: SigningKey,
        retire_previous_after: Option<Timestamp>,
    },
    RevokeToken {
        jti: String,
        expires_at: Option<Timestamp>,
        client_id: String,
    },
}

/// Decides `command` against `state`.
pub fn handle(state: &State, command: Command) -> Result<Vec<PendingEvent>, DomainError> {
    match command {
        Command::CreateApi { api_id, definition } => api::create(state, api_id, definition),
        Command::CreateApiVersion {
            api_id,
            source_api_id,
            new_version,
            make_default,
        } => api::create_version(state, api_id, &source_api_id, new_version, make_default),
        Command::UpdateApi {
            api_id,
            definition,
            expected_version,
        } => api::update(state, &api_id, definition, expected_version),
        Command::ChangeLifecycle {
            api_id,
            target,
            expected_version,
        } => api::change_lifecycle(state, &api_id, target, expected_version),
        Command::DeleteApi { api_id } => api::delete(state, &api_id),
        Command::CreatePolicy {
            name,
            level,
            request_count,
            unit_seconds,
            unlimited,
            description,
        } => create_policy(
            state,
            ThrottlePolicy {
                name,
                level: level as i32,
                request_count,
                unit_seconds,
                unlimited,
                description,
                ..Default::default()
            },
        ),
        Command::CreateApplication {
            application_id,
            name,
            owner,
            throttling_tier,
            description,
        } => create_application(
            state,
            application_id,
            ApplicationCreated {
                name,
                owner,
                throttling_tier,
                description,
            },
        ),
        Command::DeleteApplication { application_id } => {
            let app = state
                .application(&application_id)
                .ok_or_else(|| not_found("application", &application_id))?;
            Ok(vec![PendingEvent {
                kind: AggregateKind::Application,
                aggregate_id: application_id,
                aggregate_version: app.aggregate_version + 1,
                consistency: Consistency::Log {
                    last_sequence: state.sequence(),
                },
                event: Event::ApplicationDeleted(ApplicationDeleted {}),
            }])
        }
        Command::Subscribe {
            subscription_id,
            application_id,
            api_id,
            tier,
        } => subscribe(state, subscription_id, application_id, api_id, tier),
        Command::BlockSubscription {
            subscription_id,
            production_only,
        } => {
            let target = if production_only {
                subscription_status::State::ProdOnlyBlocked
            } else {
                subscription_status::State::Blocked
            };
            change_subscription_state(state, subscription_id, target)
        }
        Command::UnblockSubscription { subscription_id } => {
            change_subscription_state(state, subscription_id, subscription_status::State::Active)
        }
        Command::Unsubscribe { subscription_id } => {
            let s = state
                .subscription(&subscription_id)
                .ok_or_else(|| not_found("subscription", &subscription_id))?;
            Ok(vec![PendingEvent {
                kind: AggregateKind::Subscription,
                aggregate_id: subscription_id,
                aggregate_version: s.aggregate_version + 1,
                consistency: Consistency::Aggregate {
                    last_sequence: s.last_sequence,
                },
                event: Event::SubscriptionDeleted(SubscriptionDeleted {}),
            }])
        }
        Command::RegisterClient { client } => keys::register_client(state, client),
        Command::RegenerateSecret {
            client_id,
            secret_hash,
        } => keys::regenerate_secret(state, &client_id, secret_hash),
        Command::RevokeClient { client_id } => keys::revoke_client(state, &client_id),
        Command::PublishSigningKey {
            key,
            retire_previous_after,
        } => keys::publish_signing_key(state, key, retire_previous_after),
        Command::RevokeToken {
            jti,
            expires_at,
            client_id,
        } => keys::revoke_token(state, jti, expires_at, client_id),
    }
}

pub(crate) fn not_found(kind: &'static str, id: &str) -> DomainError {
    DomainError::NotFound {
        kind,
        id: id.to_string(),
    }
}

/// Checks a caller-chosen id is usable as a subject token.
pub(crate) fn check_new_id(field: &str, id: &str) -> Result<(), DomainError> {
    validate::token_name(field, id)
}

fn create_policy(state: &State, policy: ThrottlePolicy) -> Result<Vec<PendingEvent>, DomainError> {
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
    if state.policy(policy.level(), &policy.name).is_some() {
        return Err(DomainError::AlreadyExists(format!(
            "a {} policy named {} already exists",
            policy.level().as_str_name(),
            policy.name
        )));
    }
    Ok(vec![PendingEvent {
        kind: AggregateKind::Policy,
        aggregate_id: policy::policy_id(policy.level(), &policy.name),
        aggregate_version: 1,
        // The id is the name, so the subject itself guards uniqueness.
        consistency: Consistency::Aggregate { last_sequence: 0 },
        event: Event::PolicyCreated(PolicyCreated {
            policy: Some(policy),
        }),
    }])
}

fn create_application(
    state: &State,
    application_id: String,
    mut created: ApplicationCreated,
) -> Result<Vec<PendingEvent>, DomainError> {
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
        return Err(unknown_tier(
            state,
            "throttling_tier",
            Level::Application,
            &created.throttling_tier,
        ));
    }
    if state.application(&application_id).is_some() {
        return Err(DomainError::AlreadyExists(format!(
            "application {application_id} already exists"
        )));
    }
    if state
        .applications()
        .any(|a| a.owner == created.owner && a.name.eq_ignore_ascii_case(&created.name))
    {
        return Err(DomainError::AlreadyExists(format!(
            "{} already has an application named {}",
            created.owner, created.name
        )));
    }
    Ok(vec![PendingEvent {
        kind: AggregateKind::Application,
        aggregate_id: application_id,
        aggregate_version: 1,
        consistency: Consistency::Log {
            last_sequence: state.sequence(),
        },
        event: Event::ApplicationCreated(created),
    }])
}

/// An INVALID_ARGUMENT for a tier that does not exist, listing the ones that do.
pub(crate) fn unknown_tier(state: &State, field: &str, level: Level, name: &str) -> DomainError {
    let known: Vec<&str> = state
        .policies()
        .filter(|p| p.level() == level)
        .map(|p| p.name.as_str())
        .collect();
    DomainError::invalid(
        field,
        format!(
            "unknown {} tier {name:?}; known: {}",
            level.as_str_name(),
            known.join(", ")
        ),
    )
}

fn subscribe(
    state: &State,
    subscription_id: String,
    application_id: String,
    api_id: String,
    tier: String,
) -> Result<Vec<PendingEvent>, DomainError> {
    check_new_id("subscription_id", &subscription_id)?;
    if application_id.is_empty() {
        return Err(DomainError::invalid("application_id", "must not be empty"));
    }
    if api_id.is_empty() {
        return Err(DomainError::invalid("api_id", "must not be empty"));
    }
    if tier.is_empty() {
        return Err(DomainError::invalid("tier", "must not be empty"));
    }
    state
        .application(&application_id)
        .ok_or_else(|| not_found("application", &application_id))?;
    let api = state
        .api(&api_id)
        .ok_or_else(|| not_found("api", &api_id))?;
    let definition = api.definition.clone().unwrap_or_default();
    if !lc::accepts_subscriptions(api.lifecycle()) {
        return Err(DomainError::FailedPrecondition(format!(
            "API {} {} is {}: only PUBLISHED or PROTOTYPED APIs accept subscriptions",
            definition.name,
            definition.version,
            lc::name(api.lifecycle())
        )));
    }
    if state.policy(Level::Subscription, &tier).is_none() {
        return Err(unknown_tier(state, "tier", Level::Subscription, &tier));
    }
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
        return Err(DomainError::AlreadyExists(format!(
            "subscription {subscription_id} already exists"
        )));
    }
    Ok(vec![PendingEvent {
        kind: AggregateKind::Subscription,
        aggregate_id: subscription_id,
        aggregate_version: 1,
        consistency: Consistency::Log {
            last_sequence: state.sequence(),
        },
        event: Event::SubscriptionCreated(SubscriptionCreated {
            application_id,
            api_id,
            tier,
        }),
    }])
}

/// Block or unblock; asking for the state a subscription already has changes nothing.
fn change_subscription_state(
    state: &State,
    subscription_id: String,
    target: subscription_status::State,
) -> Result<Vec<PendingEvent>, DomainError> {
    let s = state
        .subscription(&subscription_id)
        .ok_or_else(|| not_found("subscription", &subscription_id))?;
    if s.state() == target {
        return Ok(Vec::new());
    }
    Ok(vec![PendingEvent {
        kind: AggregateKind::Subscription,
        aggregate_id: subscription_id,
        aggregate_version: s.aggregate_version + 1,
        consistency: Consistency::Aggregate {
            last_sequence: s.last_sequence,
        },
        event: Event::SubscriptionStateChanged(SubscriptionStateChanged {
            from: s.state,
            to: target as i32,
        }),
    }])
}

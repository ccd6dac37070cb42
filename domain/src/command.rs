//! Commands and their decisions: `handle(&State, Command) -> Result<Vec<PendingEvent>>`.
//!
//! Handling is pure: it reads the state, checks the rules of the aggregate the command
//! targets, and returns the events to append — or the reason it refuses. Ids, times and
//! actors come from the caller, so the same command on the same state always decides the
//! same way. Appending, retrying and folding the events back are the edge's job.
//!
//! [`handle`] only dispatches: the rules of each aggregate live in its own module
//! ([`crate::api`], [`crate::policy`], [`crate::application`], [`crate::subscription`],
//! [`crate::keys`]).
//!
//! # Consistency
//!
//! A decision is only as good as the state it read. Each [`PendingEvent`] carries the
//! [`Consistency`] the edge must check when it appends: the aggregate's own subject is
//! unchanged when the rules read that aggregate only (updating an API, blocking a
//! subscription), the whole log is unchanged when they read others (context + version
//! uniqueness, "only subscribe to a published API"). The edge appends with that expected
//! sequence; if someone else appended first, it re-reads and decides again.

use gatehouse_proto::Timestamp;
use gatehouse_proto::events::{
    ApiDefinition, ApplicationCreated, EventEnvelope, OAuthClient, SigningKey,
    event_envelope::Event, lifecycle,
};

use crate::policy::CustomPolicy;
use crate::{DomainError, State, api, application, keys, policy, subscription, validate};

/// The kinds of aggregate; each has its own log subject `gatehouse.events.<kind>.<id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggregateKind {
    /// An API version (its definition and lifecycle).
    Api,
    /// A throttling policy.
    Policy,
    /// An application of a consumer.
    Application,
    /// An application's subscription to an API.
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
            Event::PolicyCreated(_) | Event::PolicyUpdated(_) => AggregateKind::Policy,
            Event::ApplicationCreated(_)
            | Event::ApplicationUpdated(_)
            | Event::ApplicationDeleted(_) => AggregateKind::Application,
            Event::SubscriptionCreated(_)
            | Event::SubscriptionStateChanged(_)
            | Event::SubscriptionDeleted(_)
            | Event::SubscriptionScopesGranted(_) => AggregateKind::Subscription,
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

impl Consistency {
    /// The whole log must still end where `state` has read it: for rules that read other
    /// aggregates.
    pub fn log(state: &State) -> Self {
        Consistency::Log {
            last_sequence: state.sequence(),
        }
    }

    /// The aggregate's own subject must still end at `last_sequence` (0: it has no event
    /// yet): for rules that read that aggregate only.
    pub fn aggregate(last_sequence: u64) -> Self {
        Consistency::Aggregate { last_sequence }
    }
}

/// An event decided by a command, not yet appended.
///
/// Build one with [`PendingEvent::first`] (a new aggregate) or [`PendingEvent::next`]
/// (an existing one): the version follows from which, and the [`Consistency`] is always
/// the caller's explicit choice, because only the command's rules know what they read.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingEvent {
    /// The aggregate kind: with `aggregate_id`, the log subject to append to.
    pub kind: AggregateKind,
    pub aggregate_id: String,
    /// The aggregate's version once this event is applied.
    pub aggregate_version: u64,
    /// What must still hold when the event is appended.
    pub consistency: Consistency,
    pub event: Event,
}

/// What the edge adds to a decided event: identity, time, actor and trace context.
#[derive(Debug, Clone, Default)]
pub struct EventMeta {
    /// A unique id, chosen by the edge (the domain has no randomness).
    pub event_id: String,
    /// When the event was decided (the domain has no clock).
    pub time: Option<Timestamp>,
    /// Who asked for it: the authenticated user or client.
    pub actor: String,
    /// W3C trace context of the request that decided it, so readers can join the trace.
    pub traceparent: String,
    pub tracestate: String,
}

impl PendingEvent {
    /// The first event of a new aggregate: it brings the aggregate to version 1.
    pub fn first(
        kind: AggregateKind,
        aggregate_id: impl Into<String>,
        consistency: Consistency,
        event: Event,
    ) -> Self {
        PendingEvent {
            kind,
            aggregate_id: aggregate_id.into(),
            aggregate_version: 1,
            consistency,
            event,
        }
    }

    /// The next event of an aggregate now at `version`: it brings it to `version + 1`.
    pub fn next(
        kind: AggregateKind,
        aggregate_id: impl Into<String>,
        version: u64,
        consistency: Consistency,
        event: Event,
    ) -> Self {
        PendingEvent {
            aggregate_version: version + 1,
            ..PendingEvent::first(kind, aggregate_id, consistency, event)
        }
    }

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
    /// A new API, in CREATED.
    CreateApi {
        api_id: String,
        definition: ApiDefinition,
    },
    /// A new API copied from `source_api_id` under another version of its context.
    CreateApiVersion {
        api_id: String,
        source_api_id: String,
        new_version: String,
        make_default: bool,
    },
    /// A new definition for an API; empty name, context and version keep the current ones.
    UpdateApi {
        api_id: String,
        definition: ApiDefinition,
        expected_version: Option<u64>,
    },
    /// A lifecycle transition (see [`crate::lifecycle`]).
    ChangeLifecycle {
        api_id: String,
        target: lifecycle::State,
        expected_version: Option<u64>,
    },
    /// Deletes an API without subscriptions.
    DeleteApi { api_id: String },
    /// A custom throttling policy.
    CreatePolicy(CustomPolicy),
    /// A custom policy's new limit and description (name and level stay).
    UpdatePolicy(CustomPolicy),
    /// A consumer's application; an empty tier means `Unlimited`.
    CreateApplication {
        application_id: String,
        name: String,
        owner: String,
        throttling_tier: String,
        description: String,
    },
    /// An application's new tier (empty: `Unlimited`) and description; its name and
    /// owner stay.
    UpdateApplication {
        application_id: String,
        throttling_tier: String,
        description: String,
    },
    /// Deletes an application, its subscriptions and its keys.
    DeleteApplication { application_id: String },
    /// Subscribes an application to a PUBLISHED or PROTOTYPED API at a tier it offers.
    Subscribe {
        subscription_id: String,
        application_id: String,
        api_id: String,
        tier: String,
    },
    /// Blocks a subscription, or only its production keys.
    BlockSubscription {
        subscription_id: String,
        production_only: bool,
    },
    /// Makes a blocked subscription active again.
    UnblockSubscription { subscription_id: String },
    /// Ends a subscription.
    Unsubscribe { subscription_id: String },
    /// Grants the subscribed application scopes of the API's resources (replacing the
    /// grant before).
    GrantSubscriptionScopes {
        subscription_id: String,
        scopes: Vec<String>,
    },
    /// New client credentials: an application's keys, or an admin client.
    RegisterClient { client: OAuthClient },
    /// A new secret (its hash) for live client credentials.
    RegenerateSecret {
        client_id: String,
        secret_hash: String,
    },
    /// Revokes client credentials; revoking revoked ones changes nothing.
    RevokeClient { client_id: String },
    /// A new active signing key; the active one, if any, signs no more and stays in the
    /// JWKS until `retire_previous_after`.
    PublishSigningKey {
        key: SigningKey,
        retire_previous_after: Option<Timestamp>,
    },
    /// Revokes an access token until it expires (RFC 7009); a second time changes nothing.
    RevokeToken {
        jti: String,
        expires_at: Option<Timestamp>,
        client_id: String,
    },
    /// `command`, decided only if the configuration's content is still the one a plan
    /// was made against ([`State::content_hash`] equals `expected_content_hash`), and
    /// appended only if the log has not moved since that check: how a declarative
    /// apply makes sure that nothing changed since it read.
    Guarded {
        expected_content_hash: u64,
        command: Box<Command>,
    },
}

/// Decides `command` against `state`.
pub fn handle(state: &State, command: Command) -> Result<Vec<PendingEvent>, DomainError> {
    match command {
        Command::Guarded {
            expected_content_hash,
            command,
        } => guarded(state, expected_content_hash, *command),
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
        Command::CreatePolicy(custom) => policy::create(state, custom.into()),
        Command::UpdatePolicy(custom) => policy::update(state, custom.into()),
        Command::UpdateApplication {
            application_id,
            throttling_tier,
            description,
        } => application::update(state, &application_id, throttling_tier, description),
        Command::CreateApplication {
            application_id,
            name,
            owner,
            throttling_tier,
            description,
        } => application::create(
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
            application::delete(state, &application_id)
        }
        Command::Subscribe {
            subscription_id,
            application_id,
            api_id,
            tier,
        } => subscription::create(state, subscription_id, application_id, api_id, tier),
        Command::BlockSubscription {
            subscription_id,
            production_only,
        } => subscription::block(state, &subscription_id, production_only),
        Command::UnblockSubscription { subscription_id } => {
            subscription::unblock(state, &subscription_id)
        }
        Command::Unsubscribe { subscription_id } => subscription::delete(state, &subscription_id),
        Command::GrantSubscriptionScopes {
            subscription_id,
            scopes,
        } => subscription::grant_scopes(state, &subscription_id, scopes),
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

/// [`Command::Guarded`]: `command` on a configuration whose content is the expected
/// one; its first event then guards the whole log at the state it was decided on, so a
/// change appended in between fails the append instead of slipping under the check.
fn guarded(state: &State, expected: u64, command: Command) -> Decision {
    let actual = state.content_hash();
    if actual != expected {
        return Err(DomainError::Concurrent(format!(
            "the configuration changed since it was read (content hash {actual:016x}, \
             expected {expected:016x}): read it again, then retry"
        )));
    }
    let mut events = handle(state, command)?;
    if let Some(first) = events.first_mut() {
        first.consistency = Consistency::log(state);
    }
    Ok(events)
}

/// What a command handler returns: the events to append, or why the command is refused.
pub(crate) type Decision = Result<Vec<PendingEvent>, DomainError>;

/// Checks a caller-chosen id is usable as a subject token.
pub(crate) fn check_new_id(field: &str, id: &str) -> Result<(), DomainError> {
    validate::token_name(field, id)
}

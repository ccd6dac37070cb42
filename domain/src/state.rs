//! The fold: [`State`] is what every reader of the log holds, and [`State::apply`] is the
//! only way it changes.
//!
//! The records are the protobuf messages of `gatehouse.events.v1` themselves (`Api`,
//! `Application`, ...), so a [`Snapshot`] is the state as it is, with no mapping layer
//! that could drift. Maps are `BTreeMap`s so that iteration (listings, snapshots, the
//! config hash of a gateway) is in a stable order on every node.
//!
//! # Shared state
//!
//! Each reader owns its `State` and is its only writer: control's read model, the
//! token-service's client registry and every gateway fold the same log into their own
//! copy, in log order, so two readers at the same sequence hold equal states. To keep
//! that true, an event the fold refuses must change nothing — every arm of the fold
//! checks what it needs (the aggregate exists) before it changes anything, so a refused
//! event leaves the state exactly as it was and the reader can resync from a snapshot.

use std::collections::{BTreeMap, BTreeSet};

use gatehouse_proto::Timestamp;
use gatehouse_proto::events::{
    Api, Application, EventEnvelope, OAuthClient, RevokedToken, SigningKey, Snapshot, Subscription,
    ThrottlePolicy, event_envelope::Event, lifecycle, o_auth_client, subscription_status,
    throttle_policy,
};

use crate::ApplyError;
use crate::policy;
use crate::record::Record;

/// How long after a revoked token's expiry its revocation is still kept: longer than
/// any clock skew a verifier allows on `exp` (gateways' `--token-leeway-seconds` is at
/// most this), so a revoked token never becomes valid again.
pub const REVOCATION_RETENTION_SECONDS: i64 = 300;

/// Where the hash chain of [`State::config_hash`] starts (FNV-1a's offset basis).
const CHAIN_START: u64 = 0xcbf2_9ce4_8422_2325;

/// One link of the chain: FNV-1a 64 over the previous hash, the sequence and the bytes.
fn chain(previous: u64, sequence: u64, bytes: &[u8]) -> u64 {
    let mut hash = CHAIN_START;
    for b in previous
        .to_le_bytes()
        .iter()
        .chain(&sequence.to_le_bytes())
        .chain(bytes)
    {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Everything the log says, as of `sequence`.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    sequence: u64,
    /// The hash chain of [`State::config_hash`].
    config_hash: u64,
    apis: BTreeMap<String, Api>,
    /// Keyed by [`policy::policy_id`] (`<level>-<name>`): one name may exist at several
    /// levels (`Unlimited` does at all three).
    policies: BTreeMap<String, ThrottlePolicy>,
    applications: BTreeMap<String, Application>,
    subscriptions: BTreeMap<String, Subscription>,
    /// OAuth2 clients by client id (consumer key).
    clients: BTreeMap<String, OAuthClient>,
    /// Public signing keys by kid.
    signing_keys: BTreeMap<String, SigningKey>,
    /// Revoked access tokens by jti.
    revoked_tokens: BTreeMap<String, RevokedToken>,
    /// The revoked tokens by expiry (seconds, jti): pruning takes the expired ones off
    /// the front, in time proportional to what it drops.
    revocations_by_expiry: BTreeSet<(i64, String)>,
}

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}

impl State {
    /// The state of an empty log: no APIs, and WSO2's default throttling policies.
    pub fn new() -> Self {
        State {
            sequence: 0,
            config_hash: CHAIN_START,
            apis: BTreeMap::new(),
            policies: by_key(policy::built_in(), policy_key),
            applications: BTreeMap::new(),
            subscriptions: BTreeMap::new(),
            clients: BTreeMap::new(),
            signing_keys: BTreeMap::new(),
            revoked_tokens: BTreeMap::new(),
            revocations_by_expiry: BTreeSet::new(),
        }
    }

    /// The state a snapshot describes. Built-in policies are restored even if the
    /// snapshot lacks them (a snapshot from an older version).
    pub fn from_snapshot(snapshot: Snapshot) -> Self {
        let mut state = State::new();
        state.sequence = snapshot.sequence;
        state.config_hash = if snapshot.config_hash == 0 && snapshot.sequence == 0 {
            CHAIN_START
        } else {
            snapshot.config_hash
        };
        state.policies.extend(by_key(snapshot.policies, policy_key));
        state.apis = by_key(snapshot.apis, |a| a.id.clone());
        state.applications = by_key(snapshot.applications, |a| a.id.clone());
        state.subscriptions = by_key(snapshot.subscriptions, |s| s.id.clone());
        state.clients = by_key(snapshot.clients, |c| c.client_id.clone());
        state.signing_keys = by_key(snapshot.signing_keys, |k| k.kid.clone());
        state.revoked_tokens = by_key(snapshot.revoked_tokens, |t| t.jti.clone());
        state.revocations_by_expiry = state
            .revoked_tokens
            .values()
            .filter_map(|t| Some((t.expires_at.as_ref()?.seconds, t.jti.clone())))
            .collect();
        state
    }

    /// The whole state and the sequence it covers.
    pub fn to_snapshot(&self) -> Snapshot {
        Snapshot {
            sequence: self.sequence,
            config_hash: self.config_hash,
            apis: self.apis.values().cloned().collect(),
            policies: self.policies.values().cloned().collect(),
            applications: self.applications.values().cloned().collect(),
            subscriptions: self.subscriptions.values().cloned().collect(),
            clients: self.clients.values().cloned().collect(),
            signing_keys: self.signing_keys.values().cloned().collect(),
            revoked_tokens: self.revoked_tokens.values().cloned().collect(),
        }
    }

    /// The log sequence this state covers (0: nothing applied yet).
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    pub fn api(&self, id: &str) -> Option<&Api> {
        self.apis.get(id)
    }

    pub fn apis(&self) -> impl Iterator<Item = &Api> {
        self.apis.values()
    }

    /// The API with this context and version, if any.
    pub fn api_by_context_version(&self, context: &str, version: &str) -> Option<&Api> {
        self.apis.values().find(|a| {
            let d = a.definition.as_ref();
            d.is_some_and(|d| d.context == context && d.version == version)
        })
    }

    pub fn policy(&self, level: throttle_policy::Level, name: &str) -> Option<&ThrottlePolicy> {
        self.policies.get(&policy::policy_id(level, name))
    }

    pub fn policies(&self) -> impl Iterator<Item = &ThrottlePolicy> {
        self.policies.values()
    }

    pub fn application(&self, id: &str) -> Option<&Application> {
        self.applications.get(id)
    }

    pub fn applications(&self) -> impl Iterator<Item = &Application> {
        self.applications.values()
    }

    pub fn subscription(&self, id: &str) -> Option<&Subscription> {
        self.subscriptions.get(id)
    }

    pub fn subscriptions(&self) -> impl Iterator<Item = &Subscription> {
        self.subscriptions.values()
    }

    /// The subscription of an application to an API, if any.
    pub fn subscription_of(&self, application_id: &str, api_id: &str) -> Option<&Subscription> {
        self.subscriptions
            .values()
            .find(|s| s.application_id == application_id && s.api_id == api_id)
    }

    pub fn client(&self, client_id: &str) -> Option<&OAuthClient> {
        self.clients.get(client_id)
    }

    pub fn clients(&self) -> impl Iterator<Item = &OAuthClient> {
        self.clients.values()
    }

    /// The live (not revoked) keys of an application for a key type.
    pub fn client_of(
        &self,
        application_id: &str,
        key_type: o_auth_client::KeyType,
    ) -> Option<&OAuthClient> {
        self.clients
            .values()
            .find(|c| c.application_id == application_id && c.key_type() == key_type && !c.revoked)
    }

    pub fn signing_key(&self, kid: &str) -> Option<&SigningKey> {
        self.signing_keys.get(kid)
    }

    pub fn signing_keys(&self) -> impl Iterator<Item = &SigningKey> {
        self.signing_keys.values()
    }

    /// The key new tokens are signed with.
    pub fn active_signing_key(&self) -> Option<&SigningKey> {
        self.signing_keys.values().find(|k| k.active)
    }

    pub fn revoked_token(&self, jti: &str) -> Option<&RevokedToken> {
        self.revoked_tokens.get(jti)
    }

    pub fn revoked_tokens(&self) -> impl Iterator<Item = &RevokedToken> {
        self.revoked_tokens.values()
    }

    /// A short fingerprint of the configuration at this sequence, in hex: a hash chain
    /// over every record folded (FNV-1a 64 of the previous hash, the sequence and the
    /// event with its secret hashes cleared; a skipped record chains its sequence alone).
    /// Two readers at the same sequence have read the same records, so they have the
    /// same state and the same hash, whether or not they hold the secret hashes
    /// (gateways never do). It costs one event's bytes per event, never the whole state.
    /// A gateway reports it so control can tell whether the replica serves exactly its
    /// state; snapshots carry it.
    pub fn config_hash(&self) -> String {
        format!("{:016x}", self.config_hash)
    }

    /// Folds the event stored at `sequence` into the state.
    ///
    /// `sequence` must be exactly the next one: a reader that sees anything else has
    /// missed events (or is replaying old ones) and must resync. On error the state is
    /// unchanged.
    pub fn apply(&mut self, sequence: u64, envelope: &EventEnvelope) -> Result<(), ApplyError> {
        if sequence != self.sequence + 1 {
            return Err(ApplyError::OutOfOrder {
                state: self.sequence,
                got: sequence,
            });
        }
        self.fold(sequence, envelope)?;
        self.sequence = sequence;
        let mut redacted = envelope.clone();
        crate::redact::redact_event(&mut redacted);
        self.config_hash = chain(
            self.config_hash,
            sequence,
            &prost::Message::encode_to_vec(&redacted),
        );
        Ok(())
    }

    /// Marks a log record that carries no event for this state (e.g. a record of another
    /// node's aggregates) as covered.
    pub fn skip(&mut self, sequence: u64) -> Result<(), ApplyError> {
        if sequence != self.sequence + 1 {
            return Err(ApplyError::OutOfOrder {
                state: self.sequence,
                got: sequence,
            });
        }
        self.sequence = sequence;
        self.config_hash = chain(self.config_hash, sequence, &[]);
        Ok(())
    }

    fn fold(&mut self, sequence: u64, envelope: &EventEnvelope) -> Result<(), ApplyError> {
        let id = envelope.aggregate_id.clone();
        let time = envelope.time;
        let version = envelope.aggregate_version;
        let unknown = |kind: &'static str| ApplyError::UnknownAggregate {
            event_id: envelope.event_id.clone(),
            kind,
            id: id.clone(),
        };
        let Some(event) = envelope.event.as_ref() else {
            return Err(ApplyError::UnknownEvent(envelope.event_id.clone()));
        };
        match event {
            Event::ApiCreated(e) => {
                let definition = e.definition.clone().unwrap_or_default();
                if definition.is_default_version {
                    self.clear_default_version(&definition.context, &id);
                }
                self.apis.insert(
                    id.clone(),
                    Api {
                        id,
                        definition: Some(definition),
                        lifecycle: lifecycle::State::Created as i32,
                        aggregate_version: version,
                        last_sequence: sequence,
                        created_at: time,
                        updated_at: time,
                        created_by: envelope.actor.clone(),
                        source_api_id: e.source_api_id.clone(),
                    },
                );
            }
            Event::ApiUpdated(e) => {
                // The lookup comes first: an unknown API must not take the default-version
                // flag from the other versions of its context.
                let api = self.apis.get_mut(&id).ok_or_else(|| unknown("api"))?;
                let definition = e.definition.clone().unwrap_or_default();
                let takes_default = definition
                    .is_default_version
                    .then(|| definition.context.clone());
                api.definition = Some(definition);
                touch_api(api, version, sequence, time);
                if let Some(context) = takes_default {
                    self.clear_default_version(&context, &id);
                }
            }
            Event::ApiLifecycleChanged(e) => {
                let api = self.apis.get_mut(&id).ok_or_else(|| unknown("api"))?;
                api.lifecycle = e.to;
                touch_api(api, version, sequence, time);
            }
            Event::ApiDeleted(_) => {
                self.apis.remove(&id).ok_or_else(|| unknown("api"))?;
                self.subscriptions.retain(|_, s| s.api_id != id);
            }
            Event::PolicyCreated(e) => {
                let mut policy = e.policy.clone().unwrap_or_default();
                policy.built_in = false;
                policy.aggregate_version = version;
                policy.last_sequence = sequence;
                self.policies.insert(policy_key(&policy), policy);
            }
            Event::ApplicationCreated(e) => {
                self.applications.insert(
                    id.clone(),
                    Application {
                        id,
                        name: e.name.clone(),
                        owner: e.owner.clone(),
                        throttling_tier: e.throttling_tier.clone(),
                        description: e.description.clone(),
                        aggregate_version: version,
                        last_sequence: sequence,
                        created_at: time,
                    },
                );
            }
            Event::ApplicationDeleted(_) => {
                self.applications
                    .remove(&id)
                    .ok_or_else(|| unknown("application"))?;
                self.subscriptions.retain(|_, s| s.application_id != id);
                // An application's keys die with it.
                for client in self.clients.values_mut() {
                    if client.application_id == id && !client.revoked {
                        client.revoked = true;
                        client.revoked_at = time;
                    }
                }
            }
            Event::SubscriptionCreated(e) => {
                self.subscriptions.insert(
                    id.clone(),
                    Subscription {
                        id,
                        application_id: e.application_id.clone(),
                        api_id: e.api_id.clone(),
                        tier: e.tier.clone(),
                        state: subscription_status::State::Active as i32,
                        aggregate_version: version,
                        last_sequence: sequence,
                        created_at: time,
                        granted_scopes: Vec::new(),
                    },
                );
            }
            Event::SubscriptionStateChanged(e) => {
                let s = self
                    .subscriptions
                    .get_mut(&id)
                    .ok_or_else(|| unknown("subscription"))?;
                s.state = e.to;
                s.stamp(version, sequence);
            }
            Event::SubscriptionDeleted(_) => {
                self.subscriptions
                    .remove(&id)
                    .ok_or_else(|| unknown("subscription"))?;
            }
            Event::SubscriptionScopesGranted(e) => {
                let s = self
                    .subscriptions
                    .get_mut(&id)
                    .ok_or_else(|| unknown("subscription"))?;
                s.granted_scopes.clone_from(&e.scopes);
                s.stamp(version, sequence);
            }
            Event::ClientRegistered(e) => {
                let mut client = e.client.clone().unwrap_or_default();
                client.client_id.clone_from(&id);
                client.revoked = false;
                client.created_at = time;
                client.secret_updated_at = time;
                client.stamp(version, sequence);
                self.clients.insert(id, client);
            }
            Event::ClientSecretRegenerated(e) => {
                let client = self.clients.get_mut(&id).ok_or_else(|| unknown("client"))?;
                client.secret_hash.clone_from(&e.secret_hash);
                client.secret_updated_at = time;
                client.stamp(version, sequence);
            }
            Event::ClientRevoked(_) => {
                let client = self.clients.get_mut(&id).ok_or_else(|| unknown("client"))?;
                client.revoked = true;
                client.revoked_at = time;
                client.stamp(version, sequence);
            }
            Event::SigningKeyPublished(e) => {
                // The key as published, but for what the log itself says.
                let key = SigningKey {
                    kid: id.clone(),
                    active: true,
                    created_at: time,
                    last_sequence: sequence,
                    ..e.key.clone().unwrap_or_default()
                };
                self.signing_keys.insert(id, key);
            }
            Event::SigningKeyDeactivated(e) => {
                let key = self
                    .signing_keys
                    .get_mut(&id)
                    .ok_or_else(|| unknown("signing key"))?;
                key.active = false;
                key.retire_after = e.retire_after;
                key.last_sequence = sequence;
            }
            Event::TokenRevoked(e) => {
                if let Some(before) = self.revoked_tokens.get(&id)
                    && let Some(expires) = before.expires_at.as_ref()
                {
                    self.revocations_by_expiry
                        .remove(&(expires.seconds, id.clone()));
                }
                if let Some(expires) = e.expires_at.as_ref() {
                    self.revocations_by_expiry
                        .insert((expires.seconds, id.clone()));
                }
                self.revoked_tokens.insert(
                    id.clone(),
                    RevokedToken {
                        jti: id,
                        expires_at: e.expires_at,
                        client_id: e.client_id.clone(),
                    },
                );
            }
        }
        if let Some(now) = time {
            self.forget_expired_revocations(now.seconds);
        }
        Ok(())
    }

    /// Drops the revocations of tokens that expired more than
    /// [`REVOCATION_RETENTION_SECONDS`] before `now` (the time of the event being
    /// folded): such a token is refused for its expiry alone, so its revocation no longer
    /// needs remembering, and a mint-and-revoke loop cannot grow the state without bound
    /// (the log keeps every revocation). The event's time, not a clock, decides: every
    /// node prunes the same entries at the same sequence.
    fn forget_expired_revocations(&mut self, now: i64) {
        let horizon = now.saturating_sub(REVOCATION_RETENTION_SECONDS);
        while let Some((expires, _)) = self.revocations_by_expiry.first()
            && *expires < horizon
        {
            if let Some((_, jti)) = self.revocations_by_expiry.pop_first() {
                self.revoked_tokens.remove(&jti);
            }
        }
    }

    /// One default version per context: the API `except` takes the flag from the others.
    fn clear_default_version(&mut self, context: &str, except: &str) {
        for api in self.apis.values_mut() {
            if api.id != except
                && let Some(d) = api.definition.as_mut()
                && d.context == context
            {
                d.is_default_version = false;
            }
        }
    }
}

/// Records keyed for one of the state's maps.
fn by_key<T>(records: Vec<T>, key: impl Fn(&T) -> String) -> BTreeMap<String, T> {
    records.into_iter().map(|r| (key(&r), r)).collect()
}

/// The key of a policy in [`State`]'s map: its [`policy::policy_id`].
fn policy_key(policy: &ThrottlePolicy) -> String {
    policy::policy_id(policy.level(), &policy.name)
}

fn touch_api(api: &mut Api, version: u64, sequence: u64, time: Option<Timestamp>) {
    api.stamp(version, sequence);
    api.updated_at = time;
}

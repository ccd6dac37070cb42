//! The fold: [`State`] is what every reader of the log holds, and [`State::apply`] is the
//! only way it changes.
//!
//! The records are the protobuf messages of `gatehouse.events.v1` themselves (`Api`,
//! `Application`, ...), so a [`Snapshot`] is the state as it is, with no mapping layer
//! that could drift. Maps are ordered (by id) so that iteration (listings, snapshots)
//! is in a stable order on every node.
//!
//! # Shared state
//!
//! Each reader owns its `State` and is its only writer: control's read model, the
//! token-service's client registry and every gateway fold the same log into their own
//! copy, in log order, so two readers at the same sequence hold equal states. To keep
//! that true, an event the fold refuses must change nothing — every arm of the fold
//! checks what it needs (the aggregate exists) before it changes anything, so a refused
//! event leaves the state exactly as it was and the reader can resync from a snapshot.
//!
//! The maps are persistent (`imbl`'s B+trees, 16 entries a node): **cloning a `State`
//! costs O(1)** and shares every node with the original; the first change to a shared
//! node afterwards copies that node and the path to it (O(log n)), never the rest. A
//! reader can therefore hand a copy to another task — a gateway's disk writer saving it
//! while the syncer goes on folding — without a second copy of the configuration in
//! memory. Records sit behind an `Arc` so that copying a node copies pointers, not
//! records.
//!
//! # Indexes
//!
//! Every lookup on a per-event or per-command path is O(log n): besides the records by
//! id, the state keeps the APIs by (context, version), the subscriptions by
//! (application, API) and by (API, application), the clients by application and the
//! applications by owner.
//!
//! Memory goes mostly to subscriptions (there are ten or a hundred times more of them
//! than of anything else), so their three sets — by id, by application, by API — hold
//! the very same record (one `Arc<Subscription>`), ordered by the record's own fields:
//! an index entry is one pointer, and no id is stored beside the record. The other
//! indexes hold [`Id`]s (`Arc<str>`) shared with the maps' keys — an application's id
//! is allocated once however many entries name it — and readers share them too (the
//! gateway's table keys its maps by them, see [`State::application_id`]).

//! # Effects
//!
//! A reader that derives something from the state can ask the fold what each event
//! touched ([`State::record_effects`], [`crate::Effects`]) and recompute only that.

use std::cmp::Ordering;
use std::sync::Arc;

use equivalent::{Comparable, Equivalent};
use gatehouse_proto::Timestamp;
use gatehouse_proto::events::{
    Api, Application, EventEnvelope, OAuthClient, RevokedToken, SigningKey, Snapshot, Subscription,
    ThrottlePolicy, event_envelope::Event, lifecycle, o_auth_client, subscription_status,
    throttle_policy,
};
use imbl::{OrdMap, OrdSet};

use crate::ApplyError;
use crate::effects::Effects;
use crate::policy;
use crate::record::Record;

/// How long after a revoked token's expiry its revocation is still kept: longer than
/// any clock skew a verifier allows on `exp` (gateways' `--token-leeway-seconds` is at
/// most this), so a revoked token never becomes valid again.
pub const REVOCATION_RETENTION_SECONDS: i64 = 300;

/// An aggregate id as the state's maps and indexes hold it: one allocation per id,
/// shared by every map and index entry naming it (and by readers that keep them).
pub type Id = Arc<str>;

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

/// A range bound over an index of id tuples: the tuples whose leading ids are `ids`
/// sort after `Prefix(ids, Low)` and before `Prefix(ids, High)`. Allocates nothing, so
/// a lookup by `&str` needs no `Id`.
struct Prefix<'a, const N: usize>([&'a str; N], Edge);

#[derive(Clone, Copy)]
enum Edge {
    Low,
    High,
}

impl<const N: usize> Prefix<'_, N> {
    fn against(&self, leading: [&str; N]) -> Ordering {
        for (mine, theirs) in self.0.iter().zip(leading) {
            match (*mine).cmp(theirs) {
                Ordering::Equal => continue,
                other => return other,
            }
        }
        match self.1 {
            Edge::Low => Ordering::Less,
            Edge::High => Ordering::Greater,
        }
    }
}

impl<A: AsRef<str>, B> Equivalent<(A, B)> for Prefix<'_, 1> {
    fn equivalent(&self, _: &(A, B)) -> bool {
        false
    }
}
impl<A: AsRef<str>, B> Comparable<(A, B)> for Prefix<'_, 1> {
    fn compare(&self, key: &(A, B)) -> Ordering {
        self.against([key.0.as_ref()])
    }
}
impl<A: AsRef<str>, B, C> Equivalent<(A, B, C)> for Prefix<'_, 1> {
    fn equivalent(&self, _: &(A, B, C)) -> bool {
        false
    }
}
impl<A: AsRef<str>, B, C> Comparable<(A, B, C)> for Prefix<'_, 1> {
    fn compare(&self, key: &(A, B, C)) -> Ordering {
        self.against([key.0.as_ref()])
    }
}
impl<A: AsRef<str>, B: AsRef<str>, C> Equivalent<(A, B, C)> for Prefix<'_, 2> {
    fn equivalent(&self, _: &(A, B, C)) -> bool {
        false
    }
}
impl<A: AsRef<str>, B: AsRef<str>, C> Comparable<(A, B, C)> for Prefix<'_, 2> {
    fn compare(&self, key: &(A, B, C)) -> Ordering {
        self.against([key.0.as_ref(), key.1.as_ref()])
    }
}

/// An application's entry in [`State`]'s index of names (keyed `key` in the state).
fn name_entry(application: &Application, key: &Id) -> (Id, Id, Id) {
    (
        Id::from(application.owner.as_str()),
        Id::from(application.name.to_ascii_lowercase().as_str()),
        key.clone(),
    )
}

/// The entries of `set` whose leading ids are `ids`, in order.
fn with_prefix<'s, const N: usize, T: Ord + Clone>(
    set: &'s OrdSet<T>,
    ids: [&str; N],
) -> impl Iterator<Item = &'s T> + use<'s, N, T>
where
    for<'q> Prefix<'q, N>: Comparable<T>,
{
    // The range is taken eagerly: its bounds borrow `ids`, the iterator does not.
    set.range(Prefix(ids, Edge::Low)..Prefix(ids, Edge::High))
}

/// A subscription ordered by its id: the state's set of subscriptions is keyed by the
/// records themselves (found by `&str` through `Borrow`), so no id is stored twice.
#[derive(Debug, Clone)]
struct ById(Arc<Subscription>);

/// A subscription ordered by (application, API, id): the index of subscriptions by
/// application × API holds the record itself, one pointer an entry.
#[derive(Debug, Clone)]
struct ByApplication(Arc<Subscription>);

/// A subscription ordered by (API, application, id).
#[derive(Debug, Clone)]
struct ByApi(Arc<Subscription>);

impl ById {
    fn key(&self) -> &str {
        &self.0.id
    }
}

impl ByApplication {
    fn key(&self) -> [&str; 3] {
        [&self.0.application_id, &self.0.api_id, &self.0.id]
    }
}

impl ByApi {
    fn key(&self) -> [&str; 3] {
        [&self.0.api_id, &self.0.application_id, &self.0.id]
    }
}

/// `Eq` and `Ord` by `key()` alone.
macro_rules! ordered_by_key {
    ($($wrapper:ident),*) => {$(
        impl PartialEq for $wrapper {
            fn eq(&self, other: &Self) -> bool {
                self.key() == other.key()
            }
        }
        impl Eq for $wrapper {}
        impl PartialOrd for $wrapper {
            fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
                Some(self.cmp(other))
            }
        }
        impl Ord for $wrapper {
            fn cmp(&self, other: &Self) -> Ordering {
                self.key().cmp(&other.key())
            }
        }
    )*};
}
ordered_by_key!(ById, ByApplication, ByApi);

impl std::borrow::Borrow<str> for ById {
    fn borrow(&self) -> &str {
        self.key()
    }
}

/// Prefix bounds over the subscription indexes, as over tuples of ids.
macro_rules! prefix_of_record {
    ($($wrapper:ident: $($n:literal)*),*) => {$($(
        impl Equivalent<$wrapper> for Prefix<'_, $n> {
            fn equivalent(&self, _: &$wrapper) -> bool {
                false
            }
        }
        impl Comparable<$wrapper> for Prefix<'_, $n> {
            fn compare(&self, record: &$wrapper) -> Ordering {
                let key = record.key();
                self.against(std::array::from_fn(|i| key[i]))
            }
        }
    )*)*};
}
prefix_of_record!(ByApplication: 1 2, ByApi: 1);

/// Everything the log says, as of `sequence`. See the module docs.
#[derive(Debug, Clone)]
pub struct State {
    sequence: u64,
    /// The hash chain of [`State::config_hash`].
    config_hash: u64,
    apis: OrdMap<Id, Arc<Api>>,
    /// `(context, version, API id)` of every API with a definition.
    api_versions: OrdSet<(Id, Id, Id)>,
    /// Keyed by [`policy::policy_id`] (`<level>-<name>`): one name may exist at several
    /// levels (`Unlimited` does at all three).
    policies: OrdMap<String, ThrottlePolicy>,
    applications: OrdMap<Id, Arc<Application>>,
    /// `(owner, application id)`.
    applications_by_owner: OrdSet<(Id, Id)>,
    /// `(owner, name in ASCII lower case, application id)`: the per-owner name
    /// uniqueness check of a new application is a lookup, not a walk over the owner's
    /// applications (an admin seeding 100k applications as one owner).
    application_names: OrdSet<(Id, Id, Id)>,
    /// The subscriptions, by id, then by (application, API) and by (API, application):
    /// the three sets share each record (one `Arc`) and store no id of their own.
    subscriptions: OrdSet<ById>,
    subscriptions_by_application: OrdSet<ByApplication>,
    subscriptions_by_api: OrdSet<ByApi>,
    /// OAuth2 clients by client id (consumer key).
    clients: OrdMap<Id, Arc<OAuthClient>>,
    /// `(application id, client id)`; admin clients under `""`.
    clients_by_application: OrdSet<(Id, Id)>,
    /// Public signing keys by kid.
    signing_keys: OrdMap<String, SigningKey>,
    /// Revoked access tokens by jti.
    revoked_tokens: OrdMap<Id, RevokedToken>,
    /// The revoked tokens by expiry (seconds, jti): pruning takes the expired ones off
    /// the front, in time proportional to what it drops.
    revocations_by_expiry: OrdSet<(i64, Id)>,
    /// What the fold touched since the last [`State::take_effects`], while recording.
    effects: Option<Box<Effects>>,
}

/// Two states are equal when they hold the same records at the same sequence and hash
/// (what is being recorded as effects is no part of the state).
impl PartialEq for State {
    fn eq(&self, other: &Self) -> bool {
        self.sequence == other.sequence
            && self.config_hash == other.config_hash
            && self.apis == other.apis
            && self.policies == other.policies
            && self.applications == other.applications
            && self.subscriptions.len() == other.subscriptions.len()
            && self.subscriptions().eq(other.subscriptions())
            && self.clients == other.clients
            && self.signing_keys == other.signing_keys
            && self.revoked_tokens == other.revoked_tokens
    }
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
            apis: OrdMap::new(),
            api_versions: OrdSet::new(),
            policies: policy::built_in()
                .into_iter()
                .map(|p| (policy_key(&p), p))
                .collect(),
            applications: OrdMap::new(),
            applications_by_owner: OrdSet::new(),
            application_names: OrdSet::new(),
            subscriptions: OrdSet::new(),
            subscriptions_by_application: OrdSet::new(),
            subscriptions_by_api: OrdSet::new(),
            clients: OrdMap::new(),
            clients_by_application: OrdSet::new(),
            signing_keys: OrdMap::new(),
            revoked_tokens: OrdMap::new(),
            revocations_by_expiry: OrdSet::new(),
            effects: None,
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
        for policy in snapshot.policies {
            state.policies.insert(policy_key(&policy), policy);
        }
        for api in snapshot.apis {
            state.put_api(api);
        }
        for application in snapshot.applications {
            state.put_application(application);
        }
        for subscription in snapshot.subscriptions {
            state.put_subscription(subscription);
        }
        for client in snapshot.clients {
            state.put_client(client);
        }
        for key in snapshot.signing_keys {
            state.signing_keys.insert(key.kid.clone(), key);
        }
        for token in snapshot.revoked_tokens {
            state.put_revocation(token);
        }
        state
    }

    /// The whole state and the sequence it covers.
    pub fn to_snapshot(&self) -> Snapshot {
        Snapshot {
            sequence: self.sequence,
            config_hash: self.config_hash,
            apis: self.apis().cloned().collect(),
            policies: self.policies().cloned().collect(),
            applications: self.applications().cloned().collect(),
            subscriptions: self.subscriptions().cloned().collect(),
            clients: self.clients().cloned().collect(),
            signing_keys: self.signing_keys().cloned().collect(),
            revoked_tokens: self.revoked_tokens().cloned().collect(),
        }
    }

    /// Writes the state as an encoded `gatehouse.events.v1.Snapshot` — the very bytes
    /// `self.to_snapshot().encode_to_vec()` gives — one record at a time, so that saving
    /// a large state never holds a second copy of it (a `Snapshot` message) in memory.
    pub fn write_snapshot(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        use prost::encoding::{message, uint64};
        let mut buf = Vec::new();
        let mut record = |encode: &dyn Fn(&mut Vec<u8>)| {
            buf.clear();
            encode(&mut buf);
            out.write_all(&buf)
        };
        if self.sequence != 0 {
            record(&|b| uint64::encode(1, &self.sequence, b))?;
        }
        for api in self.apis() {
            record(&|b| message::encode(2, api, b))?;
        }
        for policy in self.policies() {
            record(&|b| message::encode(3, policy, b))?;
        }
        for application in self.applications() {
            record(&|b| message::encode(4, application, b))?;
        }
        for subscription in self.subscriptions() {
            record(&|b| message::encode(5, subscription, b))?;
        }
        for client in self.clients() {
            record(&|b| message::encode(6, client, b))?;
        }
        for key in self.signing_keys() {
            record(&|b| message::encode(7, key, b))?;
        }
        for token in self.revoked_tokens() {
            record(&|b| message::encode(8, token, b))?;
        }
        if self.config_hash != 0 {
            record(&|b| uint64::encode(9, &self.config_hash, b))?;
        }
        Ok(())
    }

    /// The log sequence this state covers (0: nothing applied yet).
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    pub fn api(&self, id: &str) -> Option<&Api> {
        self.apis.get(id).map(|a| &**a)
    }

    /// The API with this id, with the [`Id`] the state keys it by.
    pub fn api_entry(&self, id: &str) -> Option<(&Id, &Api)> {
        self.apis.get_key_value(id).map(|(k, a)| (k, &**a))
    }

    pub fn apis(&self) -> impl Iterator<Item = &Api> {
        self.apis.values().map(|a| &**a)
    }

    /// Every API with the [`Id`] the state keys it by, in id order.
    pub fn api_entries(&self) -> impl Iterator<Item = (&Id, &Api)> {
        self.apis.iter().map(|(k, a)| (k, &**a))
    }

    /// The API with this context and version, if any (the first by id, should the log
    /// hold several).
    pub fn api_by_context_version(&self, context: &str, version: &str) -> Option<&Api> {
        with_prefix(&self.api_versions, [context, version])
            .next()
            .and_then(|(_, _, id)| self.api(id))
    }

    /// The APIs whose definition has this context, by version then id.
    pub fn apis_of_context<'s>(
        &'s self,
        context: &str,
    ) -> impl Iterator<Item = (&'s Id, &'s Api)> + use<'s> {
        with_prefix(&self.api_versions, [context]).filter_map(|(_, _, id)| self.api_entry(id))
    }

    pub fn policy(&self, level: throttle_policy::Level, name: &str) -> Option<&ThrottlePolicy> {
        self.policies.get(&policy::policy_id(level, name))
    }

    pub fn policies(&self) -> impl Iterator<Item = &ThrottlePolicy> {
        self.policies.values()
    }

    pub fn application(&self, id: &str) -> Option<&Application> {
        self.applications.get(id).map(|a| &**a)
    }

    /// The application with this id, with the [`Id`] the state keys it by.
    pub fn application_entry(&self, id: &str) -> Option<(&Id, &Application)> {
        self.applications.get_key_value(id).map(|(k, a)| (k, &**a))
    }

    pub fn applications(&self) -> impl Iterator<Item = &Application> {
        self.applications.values().map(|a| &**a)
    }

    /// Every application with the [`Id`] the state keys it by, in id order.
    pub fn application_entries(&self) -> impl Iterator<Item = (&Id, &Application)> {
        self.applications.iter().map(|(k, a)| (k, &**a))
    }

    /// `owner` has an application named `name`, ASCII case aside.
    pub fn owner_has_application_named(&self, owner: &str, name: &str) -> bool {
        with_prefix(
            &self.application_names,
            [owner, name.to_ascii_lowercase().as_str()],
        )
        .next()
        .is_some()
    }

    /// The applications of `owner`, by id.
    pub fn applications_of_owner<'s>(
        &'s self,
        owner: &str,
    ) -> impl Iterator<Item = &'s Application> + use<'s> {
        with_prefix(&self.applications_by_owner, [owner]).filter_map(|(_, id)| self.application(id))
    }

    pub fn subscription(&self, id: &str) -> Option<&Subscription> {
        self.subscriptions.get(id).map(|s| &*s.0)
    }

    pub fn subscriptions(&self) -> impl Iterator<Item = &Subscription> {
        self.subscriptions.iter().map(|s| &*s.0)
    }

    /// The subscription of an application to an API, if any (the first by id, should
    /// the log hold several).
    pub fn subscription_of(&self, application_id: &str, api_id: &str) -> Option<&Subscription> {
        with_prefix(&self.subscriptions_by_application, [application_id, api_id])
            .next()
            .map(|s| &*s.0)
    }

    /// The subscriptions to an API, by application then subscription id.
    pub fn subscriptions_of_api<'s>(
        &'s self,
        api_id: &str,
    ) -> impl Iterator<Item = &'s Subscription> + use<'s> {
        with_prefix(&self.subscriptions_by_api, [api_id]).map(|s| &*s.0)
    }

    /// The subscriptions of an application, by API then subscription id.
    pub fn subscriptions_of_application<'s>(
        &'s self,
        application_id: &str,
    ) -> impl Iterator<Item = &'s Subscription> + use<'s> {
        with_prefix(&self.subscriptions_by_application, [application_id]).map(|s| &*s.0)
    }

    pub fn client(&self, client_id: &str) -> Option<&OAuthClient> {
        self.clients.get(client_id).map(|c| &**c)
    }

    pub fn clients(&self) -> impl Iterator<Item = &OAuthClient> {
        self.clients.values().map(|c| &**c)
    }

    /// The clients of an application (revoked ones too), by client id; admin clients
    /// are those of `""`.
    pub fn clients_of_application<'s>(
        &'s self,
        application_id: &str,
    ) -> impl Iterator<Item = &'s OAuthClient> + use<'s> {
        with_prefix(&self.clients_by_application, [application_id])
            .filter_map(|(_, id)| self.client(id))
    }

    /// The live (not revoked) keys of an application for a key type.
    pub fn client_of(
        &self,
        application_id: &str,
        key_type: o_auth_client::KeyType,
    ) -> Option<&OAuthClient> {
        self.clients_of_application(application_id)
            .find(|c| c.key_type() == key_type && !c.revoked)
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

    /// The revoked token with this jti, with the [`Id`] the state keys it by.
    pub fn revoked_token_entry(&self, jti: &str) -> Option<(&Id, &RevokedToken)> {
        self.revoked_tokens.get_key_value(jti)
    }

    pub fn revoked_tokens(&self) -> impl Iterator<Item = &RevokedToken> {
        self.revoked_tokens.values()
    }

    /// Every revoked token with the [`Id`] the state keys it by, in jti order.
    pub fn revoked_token_entries(&self) -> impl Iterator<Item = (&Id, &RevokedToken)> {
        self.revoked_tokens.iter()
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

    /// The hash chain of [`State::config_hash`] as a number (a snapshot's
    /// `config_hash`).
    pub fn config_hash_value(&self) -> u64 {
        self.config_hash
    }

    /// From now on, records what each folded event touches (see [`Effects`]), until
    /// taken with [`State::take_effects`]. Readers that recompute only what changed call
    /// it once; the others never pay for it.
    pub fn record_effects(&mut self) {
        if self.effects.is_none() {
            self.effects = Some(Box::default());
        }
    }

    /// What the fold touched since recording started or since the last call (empty when
    /// not recording); recording goes on.
    pub fn take_effects(&mut self) -> Effects {
        match self.effects.as_deref_mut() {
            Some(effects) => std::mem::take(effects),
            None => Effects::default(),
        }
    }

    /// Notes what the event being folded touched, when recording.
    fn note(&mut self, touch: impl FnOnce(&mut Effects)) {
        if let Some(effects) = self.effects.as_deref_mut() {
            touch(effects);
        }
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
                self.put_api(Api {
                    id: id.clone(),
                    definition: Some(definition),
                    lifecycle: lifecycle::State::Created as i32,
                    aggregate_version: version,
                    last_sequence: sequence,
                    created_at: time,
                    updated_at: time,
                    created_by: envelope.actor.clone(),
                    source_api_id: e.source_api_id.clone(),
                });
                self.note(|t| {
                    t.apis.insert(id.clone());
                });
            }
            Event::ApiUpdated(e) => {
                // The lookup comes first: an unknown API must not take the default-version
                // flag from the other versions of its context.
                let mut api = self.api(&id).ok_or_else(|| unknown("api"))?.clone();
                let definition = e.definition.clone().unwrap_or_default();
                let takes_default = definition
                    .is_default_version
                    .then(|| definition.context.clone());
                api.definition = Some(definition);
                touch_api(&mut api, version, sequence, time);
                self.put_api(api);
                if let Some(context) = takes_default {
                    self.clear_default_version(&context, &id);
                }
                self.note(|t| {
                    t.apis.insert(id.clone());
                });
            }
            Event::ApiLifecycleChanged(e) => {
                let api = self
                    .apis
                    .get_mut(id.as_str())
                    .ok_or_else(|| unknown("api"))?;
                let api = Arc::make_mut(api);
                api.lifecycle = e.to;
                touch_api(api, version, sequence, time);
                self.note(|t| {
                    t.apis.insert(id.clone());
                });
            }
            Event::ApiDeleted(_) => {
                let api = self
                    .apis
                    .remove(id.as_str())
                    .ok_or_else(|| unknown("api"))?;
                self.unindex_api(&api);
                let ended: Vec<String> = self
                    .subscriptions_of_api(&id)
                    .map(|s| s.id.clone())
                    .collect();
                for sub in ended {
                    self.remove_subscription(&sub);
                }
                self.note(|t| {
                    t.apis.insert(id.clone());
                });
            }
            Event::PolicyCreated(e) => {
                let mut policy = e.policy.clone().unwrap_or_default();
                policy.built_in = false;
                policy.aggregate_version = version;
                policy.last_sequence = sequence;
                let touched = (policy.level(), policy.name.clone());
                self.policies.insert(policy_key(&policy), policy);
                self.note(|t| {
                    t.policies.insert(touched);
                });
            }
            Event::PolicyUpdated(e) => {
                let given = e.policy.clone().unwrap_or_default();
                let key = policy_key(&given);
                let policy = self
                    .policies
                    .get_mut(&key)
                    .ok_or_else(|| unknown("policy"))?;
                policy.request_count = given.request_count;
                policy.unit_seconds = given.unit_seconds;
                policy.unlimited = given.unlimited;
                policy.description = given.description;
                policy.aggregate_version = version;
                policy.last_sequence = sequence;
                let touched = (policy.level(), policy.name.clone());
                self.note(|t| {
                    t.policies.insert(touched);
                });
            }
            Event::ApplicationUpdated(e) => {
                let application = self
                    .applications
                    .get_mut(id.as_str())
                    .ok_or_else(|| unknown("application"))?;
                let application = Arc::make_mut(application);
                application.throttling_tier.clone_from(&e.throttling_tier);
                application.description.clone_from(&e.description);
                application.stamp(version, sequence);
                self.note(|t| {
                    t.applications.insert(id.clone());
                });
            }
            Event::ApplicationCreated(e) => {
                self.put_application(Application {
                    id: id.clone(),
                    name: e.name.clone(),
                    owner: e.owner.clone(),
                    throttling_tier: e.throttling_tier.clone(),
                    description: e.description.clone(),
                    aggregate_version: version,
                    last_sequence: sequence,
                    created_at: time,
                });
                self.note(|t| {
                    t.applications.insert(id.clone());
                });
            }
            Event::ApplicationDeleted(_) => {
                let (key, application) = self
                    .applications
                    .remove_with_key(id.as_str())
                    .ok_or_else(|| unknown("application"))?;
                self.application_names
                    .remove(&name_entry(&application, &key));
                self.applications_by_owner
                    .remove(&(Id::from(application.owner.as_str()), key));
                let ended: Vec<String> = self
                    .subscriptions_of_application(&id)
                    .map(|s| s.id.clone())
                    .collect();
                for sub in ended {
                    self.remove_subscription(&sub);
                }
                // An application's keys die with it.
                let keys: Vec<Id> = with_prefix(&self.clients_by_application, [id.as_str()])
                    .map(|(_, client)| client.clone())
                    .collect();
                for client_id in keys {
                    if let Some(client) = self.clients.get_mut(&client_id)
                        && !client.revoked
                    {
                        let client = Arc::make_mut(client);
                        client.revoked = true;
                        client.revoked_at = time;
                        self.note(|t| {
                            t.clients.insert(client_id.to_string());
                        });
                    }
                }
                self.note(|t| {
                    t.applications.insert(id.clone());
                });
            }
            Event::SubscriptionCreated(e) => {
                self.put_subscription(Subscription {
                    id,
                    application_id: e.application_id.clone(),
                    api_id: e.api_id.clone(),
                    tier: e.tier.clone(),
                    state: subscription_status::State::Active as i32,
                    aggregate_version: version,
                    last_sequence: sequence,
                    created_at: time,
                    granted_scopes: Vec::new(),
                });
            }
            Event::SubscriptionStateChanged(e) => {
                let mut s = self
                    .subscription(&id)
                    .ok_or_else(|| unknown("subscription"))?
                    .clone();
                s.state = e.to;
                s.stamp(version, sequence);
                self.put_subscription(s);
            }
            Event::SubscriptionDeleted(_) => {
                self.remove_subscription(&id)
                    .ok_or_else(|| unknown("subscription"))?;
            }
            Event::SubscriptionScopesGranted(e) => {
                let mut s = self
                    .subscription(&id)
                    .ok_or_else(|| unknown("subscription"))?
                    .clone();
                s.granted_scopes.clone_from(&e.scopes);
                s.stamp(version, sequence);
                self.put_subscription(s);
            }
            Event::ClientRegistered(e) => {
                let mut client = e.client.clone().unwrap_or_default();
                client.client_id.clone_from(&id);
                client.revoked = false;
                client.created_at = time;
                client.secret_updated_at = time;
                client.stamp(version, sequence);
                self.put_client(client);
            }
            Event::ClientSecretRegenerated(e) => {
                let client = self
                    .clients
                    .get_mut(id.as_str())
                    .ok_or_else(|| unknown("client"))?;
                let client = Arc::make_mut(client);
                client.secret_hash.clone_from(&e.secret_hash);
                client.secret_updated_at = time;
                client.stamp(version, sequence);
                self.note(|t| {
                    t.clients.insert(id.clone());
                });
            }
            Event::ClientRevoked(_) => {
                let client = self
                    .clients
                    .get_mut(id.as_str())
                    .ok_or_else(|| unknown("client"))?;
                let client = Arc::make_mut(client);
                client.revoked = true;
                client.revoked_at = time;
                client.stamp(version, sequence);
                self.note(|t| {
                    t.clients.insert(id.clone());
                });
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
                self.signing_keys.insert(id.clone(), key);
                self.note(|t| {
                    t.signing_keys.insert(id.clone());
                });
            }
            Event::SigningKeyDeactivated(e) => {
                let key = self
                    .signing_keys
                    .get_mut(id.as_str())
                    .ok_or_else(|| unknown("signing key"))?;
                key.active = false;
                key.retire_after = e.retire_after;
                key.last_sequence = sequence;
                self.note(|t| {
                    t.signing_keys.insert(id.clone());
                });
            }
            Event::TokenRevoked(e) => {
                self.put_revocation(RevokedToken {
                    jti: id.clone(),
                    expires_at: e.expires_at,
                    client_id: e.client_id.clone(),
                });
            }
        }
        if let Some(now) = time {
            self.forget_expired_revocations(now.seconds);
        }
        Ok(())
    }

    /// Inserts (or replaces) an API and its index entry.
    fn put_api(&mut self, api: Api) {
        let key = match self.apis.remove_with_key(api.id.as_str()) {
            Some((key, old)) => {
                self.unindex_api(&old);
                key
            }
            None => Id::from(api.id.as_str()),
        };
        if let Some(d) = api.definition.as_ref() {
            self.api_versions.insert((
                Id::from(d.context.as_str()),
                Id::from(d.version.as_str()),
                key.clone(),
            ));
        }
        self.apis.insert(key, Arc::new(api));
    }

    fn unindex_api(&mut self, api: &Api) {
        if let Some(d) = api.definition.as_ref() {
            self.api_versions.remove(&(
                Id::from(d.context.as_str()),
                Id::from(d.version.as_str()),
                Id::from(api.id.as_str()),
            ));
        }
    }

    /// Inserts (or replaces) an application and its index entry.
    fn put_application(&mut self, application: Application) {
        let key = match self.applications.remove_with_key(application.id.as_str()) {
            Some((key, old)) => {
                self.application_names.remove(&name_entry(&old, &key));
                self.applications_by_owner
                    .remove(&(Id::from(old.owner.as_str()), key.clone()));
                key
            }
            None => Id::from(application.id.as_str()),
        };
        let owner = with_prefix(&self.applications_by_owner, [application.owner.as_str()])
            .next()
            .map_or_else(|| Id::from(application.owner.as_str()), |(o, _)| o.clone());
        self.applications_by_owner
            .insert((owner.clone(), key.clone()));
        self.application_names.insert((
            owner,
            Id::from(application.name.to_ascii_lowercase().as_str()),
            key.clone(),
        ));
        self.applications.insert(key, Arc::new(application));
    }

    /// The [`Id`] the state keys the application `id` by, else a new one (for an
    /// application the state does not have): readers keyed by application share it.
    pub fn application_id(&self, id: &str) -> Id {
        self.applications
            .get_key_value(id)
            .map_or_else(|| Id::from(id), |(k, _)| k.clone())
    }

    /// Inserts (or replaces) a subscription and its index entries, noting the pairs.
    fn put_subscription(&mut self, subscription: Subscription) {
        self.remove_subscription(&subscription.id);
        let pair = (
            subscription.application_id.clone(),
            subscription.api_id.clone(),
        );
        let record = Arc::new(subscription);
        self.subscriptions_by_application
            .insert(ByApplication(record.clone()));
        self.subscriptions_by_api.insert(ByApi(record.clone()));
        self.subscriptions.insert(ById(record));
        self.note(|t| {
            t.subscriptions.insert(pair);
        });
    }

    /// Removes a subscription and its index entries, noting its pair; `None` if there
    /// is no such subscription.
    fn remove_subscription(&mut self, id: &str) -> Option<()> {
        let ById(record) = self.subscriptions.remove(id)?;
        self.subscriptions_by_application
            .remove(&ByApplication(record.clone()));
        self.subscriptions_by_api.remove(&ByApi(record.clone()));
        self.note(|t| {
            t.subscriptions
                .insert((record.application_id.clone(), record.api_id.clone()));
        });
        Some(())
    }

    /// Inserts (or replaces) a client and its index entry, noting it.
    fn put_client(&mut self, client: OAuthClient) {
        let key = match self.clients.remove_with_key(client.client_id.as_str()) {
            Some((key, old)) => {
                self.clients_by_application
                    .remove(&(Id::from(old.application_id.as_str()), key.clone()));
                key
            }
            None => Id::from(client.client_id.as_str()),
        };
        let application = self.application_id(&client.application_id);
        self.clients_by_application
            .insert((application, key.clone()));
        let touched = client.client_id.clone();
        self.clients.insert(key, Arc::new(client));
        self.note(|t| {
            t.clients.insert(touched);
        });
    }

    /// Records (or replaces) a revocation and its expiry entry, noting it.
    fn put_revocation(&mut self, token: RevokedToken) {
        let key = match self.revoked_tokens.remove_with_key(token.jti.as_str()) {
            Some((key, before)) => {
                if let Some(expires) = before.expires_at.as_ref() {
                    self.revocations_by_expiry
                        .remove(&(expires.seconds, key.clone()));
                }
                key
            }
            None => Id::from(token.jti.as_str()),
        };
        if let Some(expires) = token.expires_at.as_ref() {
            self.revocations_by_expiry
                .insert((expires.seconds, key.clone()));
        }
        let touched = token.jti.clone();
        self.revoked_tokens.insert(key, token);
        self.note(|t| {
            t.revoked_tokens.insert(touched);
        });
    }

    /// Drops the revocations of tokens that expired more than
    /// [`REVOCATION_RETENTION_SECONDS`] before `now` (the time of the event being
    /// folded): such a token is refused for its expiry alone, so its revocation no longer
    /// needs remembering, and a mint-and-revoke loop cannot grow the state without bound
    /// (the log keeps every revocation). The event's time, not a clock, decides: every
    /// node prunes the same entries at the same sequence.
    fn forget_expired_revocations(&mut self, now: i64) {
        let horizon = now.saturating_sub(REVOCATION_RETENTION_SECONDS);
        while let Some((expires, _)) = self.revocations_by_expiry.get_min()
            && *expires < horizon
        {
            if let Some((_, jti)) = self.revocations_by_expiry.remove_min() {
                self.revoked_tokens.remove(&jti);
                self.note(|t| {
                    t.revoked_tokens.insert(jti.to_string());
                });
            }
        }
    }

    /// One default version per context: the API `except` takes the flag from the others.
    fn clear_default_version(&mut self, context: &str, except: &str) {
        let others: Vec<Id> = with_prefix(&self.api_versions, [context])
            .map(|(_, _, id)| id.clone())
            .filter(|id| **id != *except)
            .collect();
        for other in others {
            if let Some(api) = self.apis.get_mut(&other)
                && api
                    .definition
                    .as_ref()
                    .is_some_and(|d| d.is_default_version)
            {
                let api = Arc::make_mut(api);
                if let Some(d) = api.definition.as_mut() {
                    d.is_default_version = false;
                }
                self.note(|t| {
                    t.apis.insert(other.to_string());
                });
            }
        }
    }
}

/// The key of a policy in [`State`]'s map: its [`policy::policy_id`].
fn policy_key(policy: &ThrottlePolicy) -> String {
    policy::policy_id(policy.level(), &policy.name)
}

fn touch_api(api: &mut Api, version: u64, sequence: u64, time: Option<Timestamp>) {
    api.stamp(version, sequence);
    api.updated_at = time;
}

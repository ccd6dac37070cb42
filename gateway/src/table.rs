//! The routing table: everything the request path needs, compiled from one domain
//! [`State`] and never changed afterwards.
//!
//! # Shared state
//!
//! A [`RoutingTable`] is immutable. The sync task ([`crate::sync`]) makes a new one off
//! the hot path whenever it has applied events, and publishes it with one atomic pointer
//! swap (`arc_swap::ArcSwap` in [`crate::proxy::Gateway`]). A request loads the current
//! table once, at its start, and uses that same table for every phase, so no request
//! ever sees half an update — a request that started before a swap finishes on the old
//! table, which is freed when its last reader drops it. Readers take no lock at all.
//!
//! A new table is not compiled from scratch: [`RoutingTable::apply`] starts from a copy
//! of the current one and recompiles only what the batch of events touched (the
//! [`Effects`] the fold recorded). That copy is cheap because every collection in the
//! table is persistent (`imbl`): cloning one is O(1) and shares all of its nodes, and
//! changing one entry copies only the O(log n) path to it, so the old table (still
//! serving requests) and the new one share everything the batch did not touch. The
//! big immutable parts of a compiled API (its resources, its path trie, its CORS
//! settings, its endpoints) sit behind `Arc`s, so recompiling an API for one
//! subscription copies pointers, not the API. [`RoutingTable::build`] compiles a whole
//! state (first load, resync) with the very same per-entry functions, so the two always
//! agree (`tests/incremental.rs` checks it over random histories).
//!
//! The table keeps no copy of the state: only what requests read. Ids are the state's
//! own [`Id`]s (`Arc<str>`), shared, not copied: an application's id is one allocation
//! however many APIs it is subscribed to.
//!
//! What must outlive a swap lives elsewhere, keyed by stable ids: throttling counters
//! ([`crate::throttle`]), cached tokens ([`crate::auth`]), cached responses
//! ([`crate::cache`]), endpoint health ([`crate::upstream`]) and per-API metrics
//! ([`crate::metrics`]).
//!
//! # What is compiled
//!
//! Only deployed APIs (PUBLISHED, DEPRECATED, PROTOTYPED and BLOCKED; see
//! `gatehouse_domain::lifecycle::is_deployed`) get routes; CREATED and RETIRED ones do
//! not exist for the gateway (404). The maps, and what one change costs (n entries):
//!
//! | map | key → value | read by | one change |
//! |---|---|---|---|
//! | `apis` | API id → [`CompiledApi`] | updates | O(log n) |
//! | `contexts` | context → its versions and default version | route matching | O(log n) + the context's versions |
//! | [`CompiledApi::subscriptions`] | application id → [`SubscriptionInfo`] | subscription, scopes, throttling | O(log n), and the API's entry in `apis` and `contexts` |
//! | `applications` | application id → [`ApplicationInfo`] | throttling | O(log n) |
//! | `revoked_tokens` | jti | authentication | O(log n) |
//! | `revoked_clients` | client id → latest `iat` refused | authentication | O(log n) |
//! | `keys` | the published signing keys | authentication | rebuilt (a handful) |
//!
//! Per API: a [`PathTrie`] of its resource templates with their methods, its parsed
//! endpoints, CORS and cache settings, throttling limits and its subscriptions by
//! application. Route matching looks the path's segment prefixes up in `contexts`,
//! longest first (at most as many as the deepest context has segments), then the
//! version, then the template. Secret hashes never reach the gateway (see
//! [`crate::sync`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, SystemTime};

use gatehouse_domain::lifecycle;
use gatehouse_domain::{Effects, Id, State};
use gatehouse_proto::events::{
    Api, EndpointGroup, Subscription, ThrottlePolicy, endpoint_group,
    lifecycle::State as Lifecycle, subscription_status, throttle_policy::Level,
};
use gatehouse_tokens::{AccessClaims, KeyType, TokenError, VerificationKeys};
use http::Method;
use http::uri::{Authority, Scheme};
use imbl::OrdMap;

use crate::metrics::{ApiMetrics, Metrics};
use crate::routing::{PathTrie, context_prefixes, has_dot_segments};

/// A persistent hash map with the gateway's fast, fixed hasher: O(1) clones, O(log n)
/// changes, lookups by `&str`.
type FastMap<K, V> =
    imbl::GenericHashMap<K, V, foldhash::fast::FixedState, imbl::shared_ptr::DefaultSharedPtr>;

/// A persistent hash set, as [`FastMap`].
type FastSet<K> =
    imbl::GenericHashSet<K, foldhash::fast::FixedState, imbl::shared_ptr::DefaultSharedPtr>;

/// Default upstream timeout when an API sets none.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// A throttling limit: `count` calls per `unit_seconds`. Unlimited tiers compile to no
/// limit at all (`Option<Limit>::None`), so they cost nothing per request.
/// Subscriptions and applications share one `Arc<Limit>` per tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub tier: Arc<str>,
    pub count: u64,
    pub unit_seconds: u32,
}

impl Limit {
    fn of(policy: Option<&ThrottlePolicy>) -> Option<Limit> {
        let policy = policy?;
        if policy.unlimited || policy.request_count == 0 && policy.unit_seconds == 0 {
            return None;
        }
        Some(Limit {
            tier: policy.name.as_str().into(),
            count: policy.request_count,
            unit_seconds: policy.unit_seconds.max(1),
        })
    }
}

/// One backend URL, parsed once.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as configured, for logs and health bookkeeping.
    pub url: Arc<str>,
    pub scheme: Scheme,
    pub authority: Authority,
    /// Path prefix of the URL without a trailing `/` (`""` for `http://host:8000`).
    pub base_path: String,
}

impl Target {
    fn parse(url: &str) -> Option<Target> {
        let uri: http::Uri = url.parse().ok()?;
        let scheme = uri.scheme()?.clone();
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return None;
        }
        let authority = uri.authority()?.clone();
        let base_path = uri.path().trim_end_matches('/').to_string();
        Some(Target {
            url: url.into(),
            scheme,
            authority,
            base_path,
        })
    }
}

/// A list of backend URLs and how they share the calls.
#[derive(Debug)]
pub struct Endpoints {
    pub failover: bool,
    pub targets: Vec<Target>,
    /// Round-robin position (load-balanced groups). Kept while the API's definition is
    /// (the group is shared by every table until the API is recompiled), then starts
    /// again at 0, which is harmless.
    pub next: AtomicUsize,
}

impl Endpoints {
    fn of(group: Option<&EndpointGroup>) -> Option<Arc<Endpoints>> {
        let group = group?;
        let targets: Vec<Target> = group
            .urls
            .iter()
            .filter_map(|url| {
                let target = Target::parse(url);
                if target.is_none() {
                    tracing::warn!(url, "ignoring an endpoint URL the gateway cannot use");
                }
                target
            })
            .collect();
        if targets.is_empty() {
            return None;
        }
        Some(Arc::new(Endpoints {
            failover: group.mode() == endpoint_group::Mode::Failover,
            targets,
            next: AtomicUsize::new(0),
        }))
    }
}

/// CORS settings of an API, ready to be written into headers.
#[derive(Debug, Clone)]
pub struct Cors {
    /// `*` allows any origin.
    pub allow_origins: Vec<String>,
    pub allow_methods: String,
    pub allow_headers: String,
    pub allow_credentials: bool,
    pub max_age_seconds: u32,
}

impl Cors {
    /// Whether `origin` may call the API. The opaque origin `null` (sandboxed frames,
    /// `file:` pages, redirects) never may: any page can claim it.
    pub fn allows(&self, origin: &str) -> bool {
        !origin.eq_ignore_ascii_case("null")
            && self
                .allow_origins
                .iter()
                .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    }
}

/// One resource of an API (a method on a template).
#[derive(Debug)]
pub struct Resource {
    pub method: Method,
    /// The template as declared (`/users/{id}`): a metrics and throttling key.
    pub template: Arc<str>,
    pub auth_disabled: bool,
    /// Any one of these is needed (empty: none).
    pub scopes: Vec<String>,
    pub limit: Option<Limit>,
}

/// The resources of one template, by method.
#[derive(Debug, Default)]
struct MethodSet {
    /// Few methods per template: a linear scan beats hashing.
    methods: Vec<(Method, usize)>,
}

/// A subscription as the request path sees it. Shared (`Arc`) by every subscription
/// compiled to the same value at once — most are active, at a tier, without granted
/// scopes — so an API's map holds a key and a pointer per application.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionInfo {
    pub state: subscription_status::State,
    /// The subscription tier's limit, shared by the subscriptions of that tier.
    pub limit: Option<Arc<Limit>>,
    /// The scopes an admin granted the application on this API (`GrantScopes`): the
    /// only ones a token of it may use on this API's resources.
    pub granted_scopes: Box<[Box<str>]>,
}

/// A deployed API, compiled.
///
/// Cloning one is cheap (reference counts, and an O(1) copy of the subscription map):
/// that is how one subscription's change makes a new `CompiledApi` without compiling
/// the API again.
#[derive(Debug, Clone)]
pub struct CompiledApi {
    /// The state's own id of the API.
    pub id: Id,
    pub name: String,
    pub context: String,
    pub version: String,
    /// `/client/1.0.0`, for errors, logs and metrics.
    pub label: Arc<str>,
    pub lifecycle: Lifecycle,
    pub resources: Arc<[Resource]>,
    paths: Arc<PathTrie<MethodSet>>,
    /// Whether the definition says this is its context's default version.
    is_default_version: bool,
    pub production: Option<Arc<Endpoints>>,
    pub sandbox: Option<Arc<Endpoints>>,
    pub timeout: Duration,
    /// The API's own request body limit, in bytes (0: the gateway's default).
    pub max_request_body: u32,
    pub cors: Option<Arc<Cors>>,
    pub cache_ttl: Option<Duration>,
    pub limit: Option<Limit>,
    /// By application id (the state's [`Id`]s).
    pub subscriptions: OrdMap<Id, Arc<SubscriptionInfo>>,
    pub metrics: Arc<ApiMetrics>,
}

impl CompiledApi {
    /// The endpoint group that keys of `key_type` reach, if the API has one.
    pub fn endpoints(&self, key_type: KeyType) -> Option<&Arc<Endpoints>> {
        match key_type {
            KeyType::Production => self.production.as_ref(),
            KeyType::Sandbox => self.sandbox.as_ref(),
        }
    }
}

/// The versions served under one context: immutable, replaced whole when one of them
/// changes (a context has a handful).
#[derive(Debug)]
struct ContextEntry {
    /// Sorted by version.
    versions: Box<[(Box<str>, Arc<CompiledApi>)]>,
    default: Option<Arc<CompiledApi>>,
}

impl ContextEntry {
    fn version(&self, version: &str) -> Option<&Arc<CompiledApi>> {
        self.versions
            .binary_search_by(|(v, _)| (**v).cmp(version))
            .ok()
            .map(|i| &self.versions[i].1)
    }
}

/// An application as the request path sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApplicationInfo {
    /// The application tier's limit, shared by the applications of that tier.
    pub limit: Option<Arc<Limit>>,
}

/// The outcome of route matching.
#[derive(Debug)]
pub enum RouteMatch {
    Matched(Route),
    /// The path matches a resource template, not with this method.
    MethodNotAllowed {
        api: Arc<CompiledApi>,
        /// The `Allow` header value.
        allow: String,
    },
    NotFound,
}

/// A matched request: the API, the resource, and where the path to forward starts.
#[derive(Debug, Clone)]
pub struct Route {
    pub api: Arc<CompiledApi>,
    /// Index into `api.resources`.
    pub resource_index: usize,
    /// Byte offset in the request path where the resource path starts: what follows
    /// context and version (`/users/1`; `""` for the API's root) is what is forwarded to
    /// the backend, after the endpoint's own path.
    pub resource_path_offset: usize,
}

impl Route {
    pub fn resource(&self) -> &Resource {
        &self.api.resources[self.resource_index]
    }

    /// The resource path within the request `path` this route was matched on.
    pub fn resource_path<'p>(&self, path: &'p str) -> &'p str {
        path.get(self.resource_path_offset..).unwrap_or("")
    }
}

/// Everything the request path reads, compiled from one [`State`]. See the module docs.
#[derive(Clone)]
pub struct RoutingTable {
    /// Deployed APIs by id.
    apis: OrdMap<Id, Arc<CompiledApi>>,
    /// By context, as the definitions spell it (`/shop/orders`).
    contexts: FastMap<Arc<str>, Arc<ContextEntry>>,
    /// How many contexts have each number of segments.
    context_depths: OrdMap<usize, usize>,
    /// The most segments a context has: route matching tries prefixes of at most as
    /// many.
    max_context_depth: usize,
    applications: FastMap<Id, ApplicationInfo>,
    /// The jtis of revoked tokens (until they expire).
    revoked_tokens: FastSet<Id>,
    /// Revoked clients: tokens issued (`iat`) at or before this second are refused
    /// (`i64::MAX`: all of them).
    revoked_clients: FastMap<Id, i64>,
    /// The keys of the published signing keys.
    pub keys: Arc<VerificationKeys>,
    /// Changes whenever the set of verification keys does: cached tokens verified under
    /// another generation are verified again.
    pub keys_generation: u64,
    /// When the first deactivated key among them stops being published (Unix seconds):
    /// the keys are computed again from then on, even without a key event.
    keys_until: Option<i64>,
    pub sequence: u64,
    pub config_hash: String,
    pub built_at: SystemTime,
}

impl std::fmt::Debug for RoutingTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutingTable")
            .field("sequence", &self.sequence)
            .field("apis", &self.apis.len())
            .field("config_hash", &self.config_hash)
            .finish()
    }
}

/// What one compilation shares between the entries it compiles: one `Arc<Limit>` per
/// tier, one `Arc<SubscriptionInfo>` per distinct subscription value.
#[derive(Default)]
struct Shared<'s> {
    limits: HashMap<(Level, &'s str), Option<Arc<Limit>>>,
    subscriptions: HashMap<(i32, &'s str, &'s [String]), Arc<SubscriptionInfo>>,
}

impl<'s> Shared<'s> {
    fn limit(&mut self, state: &'s State, level: Level, tier: &'s str) -> Option<Arc<Limit>> {
        self.limits
            .entry((level, tier))
            .or_insert_with(|| Limit::of(state.policy(level, tier)).map(Arc::new))
            .clone()
    }

    fn subscription(
        &mut self,
        state: &'s State,
        subscription: &'s Subscription,
    ) -> Arc<SubscriptionInfo> {
        let key = (
            subscription.state,
            subscription.tier.as_str(),
            &subscription.granted_scopes[..],
        );
        if let Some(info) = self.subscriptions.get(&key) {
            return info.clone();
        }
        let info = Arc::new(SubscriptionInfo {
            state: subscription.state(),
            limit: self.limit(state, Level::Subscription, &subscription.tier),
            granted_scopes: subscription
                .granted_scopes
                .iter()
                .map(|s| s.as_str().into())
                .collect(),
        });
        self.subscriptions.insert(key, info.clone());
        info
    }
}

impl RoutingTable {
    /// An empty table (no API routes anything).
    pub fn empty(metrics: &Metrics) -> RoutingTable {
        RoutingTable::build(&State::new(), metrics)
    }

    /// Compiles the whole of `state`. Off the hot path: the sync task calls it (first
    /// load, resync), never a request.
    pub fn build(state: &State, metrics: &Metrics) -> RoutingTable {
        let now = SystemTime::now();
        let mut table = RoutingTable {
            apis: OrdMap::new(),
            contexts: FastMap::default(),
            context_depths: OrdMap::new(),
            max_context_depth: 0,
            applications: FastMap::default(),
            revoked_tokens: FastSet::default(),
            revoked_clients: FastMap::default(),
            keys: Arc::default(),
            keys_generation: 0,
            keys_until: None,
            sequence: state.sequence(),
            config_hash: state.config_hash(),
            built_at: now,
        };
        let mut shared = Shared::default();
        let mut contexts = BTreeSet::new();
        for (id, _) in state.api_entries() {
            table.compile_api(state, id, &mut contexts, &mut shared, metrics);
        }
        for context in &contexts {
            table.compile_context(state, context);
        }
        table.max_context_depth = table.context_depths.get_max().map_or(0, |(d, _)| *d);
        for (id, _) in state.application_entries() {
            table.compile_application(state, id, &mut shared);
        }
        for client in state.clients() {
            table.compile_client(state, &client.client_id);
        }
        for (jti, _) in state.revoked_token_entries() {
            table.revoked_tokens.insert(jti.clone());
        }
        table.compile_keys(state, now);
        table
    }

    /// This table brought up to `state` by recompiling only what `effects` (recorded
    /// by the fold since this table's state) touched; equal to `build(state)`. Off the
    /// hot path, like [`RoutingTable::build`]; this table is not changed (requests may
    /// still be using it).
    pub fn apply(&self, state: &State, effects: &Effects, metrics: &Metrics) -> RoutingTable {
        let now = SystemTime::now();
        let mut next = self.clone();
        let mut shared = Shared::default();
        let mut apis: BTreeSet<&str> = effects.apis.iter().map(String::as_str).collect();
        let mut pairs: BTreeSet<(String, String)> = effects.subscriptions.clone();
        let mut applications: BTreeSet<&str> =
            effects.applications.iter().map(String::as_str).collect();
        // A new policy changes the limits of whatever names its tier (nothing, in a
        // history the handlers decided: a tier must exist before it is named). Rare, so
        // found by scanning.
        for (level, tier) in &effects.policies {
            match level {
                Level::Api => apis.extend(
                    state
                        .apis()
                        .filter(|a| names_api_tier(a, tier))
                        .map(|a| a.id.as_str()),
                ),
                Level::Subscription => pairs.extend(
                    state
                        .subscriptions()
                        .filter(|s| s.tier == *tier)
                        .map(|s| (s.application_id.clone(), s.api_id.clone())),
                ),
                Level::Application => applications.extend(
                    state
                        .applications()
                        .filter(|a| a.throttling_tier == *tier)
                        .map(|a| a.id.as_str()),
                ),
                Level::Unspecified => {}
            }
        }
        let mut contexts = BTreeSet::new();
        for id in apis {
            next.compile_api(state, id, &mut contexts, &mut shared, metrics);
        }
        // Subscriptions, one new `CompiledApi` per API however many of its pairs moved.
        let mut by_api: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (application, api) in &pairs {
            by_api.entry(api).or_default().push(application);
        }
        let pairs_by_api = by_api;
        for (api_id, applications) in pairs_by_api {
            let Some(compiled) = next.apis.get(api_id) else {
                continue; // not deployed: it has no routes, so no subscriptions either
            };
            let mut compiled = CompiledApi::clone(compiled);
            for application in applications {
                match state.subscription_of(application, api_id) {
                    Some(subscription) => {
                        let info = shared.subscription(state, subscription);
                        compiled
                            .subscriptions
                            .insert(state.application_id(application), info);
                    }
                    None => {
                        compiled.subscriptions.remove(application);
                    }
                }
            }
            contexts.insert(compiled.context.clone());
            next.apis.insert(compiled.id.clone(), Arc::new(compiled));
        }
        for context in &contexts {
            next.compile_context(state, context);
        }
        next.max_context_depth = next.context_depths.get_max().map_or(0, |(d, _)| *d);
        for id in applications {
            next.compile_application(state, id, &mut shared);
        }
        for client in &effects.clients {
            next.compile_client(state, client);
        }
        for jti in &effects.revoked_tokens {
            match state.revoked_token_entry(jti) {
                Some((key, _)) => {
                    next.revoked_tokens.insert(key.clone());
                }
                None => {
                    next.revoked_tokens.remove(jti.as_str());
                }
            }
        }
        let keys_expired = next
            .keys_until
            .is_some_and(|until| gatehouse_tokens::unix_seconds(now) >= until);
        if !effects.signing_keys.is_empty() || keys_expired {
            next.compile_keys(state, now);
        }
        next.sequence = state.sequence();
        next.config_hash = state.config_hash();
        next.built_at = now;
        next
    }

    /// Compiles the API `id` as `state` has it (or drops it, if it is gone or not
    /// deployed), noting the contexts whose entries must follow. Its subscriptions are
    /// kept from the compiled API it replaces (they are brought up to date pair by
    /// pair), else read from the state.
    fn compile_api<'s>(
        &mut self,
        state: &'s State,
        id: &str,
        contexts: &mut BTreeSet<String>,
        shared: &mut Shared<'s>,
        metrics: &Metrics,
    ) {
        let old = self.apis.remove(id);
        if let Some(old) = &old {
            contexts.insert(old.context.clone());
        }
        let Some((key, api)) = state.api_entry(id) else {
            return;
        };
        if !lifecycle::is_deployed(api.lifecycle()) {
            return;
        }
        let subscriptions = match &old {
            Some(old) => old.subscriptions.clone(),
            None => state
                .subscriptions_of_api(id)
                .map(|s| {
                    let application = state.application_id(&s.application_id);
                    (application, shared.subscription(state, s))
                })
                .collect(),
        };
        if let Some(compiled) = compile_api(state, key, api, subscriptions, metrics) {
            contexts.insert(compiled.context.clone());
            self.apis.insert(key.clone(), Arc::new(compiled));
        }
    }

    /// The entry of `context`, from the compiled APIs of the state's versions of it.
    /// Versions appear in version order; should the log hold two APIs of one version,
    /// or two default versions, the greater id wins (a history the handlers decided
    /// has neither).
    fn compile_context(&mut self, state: &State, context: &str) {
        let mut versions: Vec<(Box<str>, Arc<CompiledApi>)> = Vec::new();
        let mut default: Option<Arc<CompiledApi>> = None;
        for (id, _) in state.apis_of_context(context) {
            let Some(api) = self.apis.get(id) else {
                continue;
            };
            match versions.last_mut() {
                Some((version, last)) if **version == *api.version => *last = api.clone(),
                _ => versions.push((api.version.as_str().into(), api.clone())),
            }
            if api.is_default_version && default.as_ref().is_none_or(|d| d.id < api.id) {
                default = Some(api.clone());
            }
        }
        let depth = context.split('/').filter(|s| !s.is_empty()).count();
        let had = if versions.is_empty() {
            self.contexts.remove(context).is_some()
        } else {
            let entry = Arc::new(ContextEntry {
                versions: versions.into_boxed_slice(),
                default,
            });
            self.contexts.insert(context.into(), entry).is_some()
        };
        let has = self.contexts.contains_key(context);
        if had != has {
            let count = self.context_depths.get(&depth).copied().unwrap_or(0);
            let count = if has { count + 1 } else { count - 1 };
            if count == 0 {
                self.context_depths.remove(&depth);
            } else {
                self.context_depths.insert(depth, count);
            }
        }
    }

    fn compile_application<'s>(&mut self, state: &'s State, id: &str, shared: &mut Shared<'s>) {
        match state.application_entry(id) {
            Some((key, application)) => {
                let limit = shared.limit(state, Level::Application, &application.throttling_tier);
                self.applications
                    .insert(key.clone(), ApplicationInfo { limit });
            }
            None => {
                self.applications.remove(id);
            }
        }
    }

    /// Whether the client's tokens are refused, and up to which `iat`.
    fn compile_client(&mut self, state: &State, client_id: &str) {
        let through = state.client(client_id).and_then(|client| {
            if client.revoked {
                Some(i64::MAX)
            } else {
                client.revoked_at.map(|at| at.seconds)
            }
        });
        match through {
            Some(through) => {
                self.revoked_clients.insert(client_id.into(), through);
            }
            None => {
                self.revoked_clients.remove(client_id);
            }
        }
    }

    /// The published keys at `now`, and when the first deactivated one among them
    /// retires.
    fn compile_keys(&mut self, state: &State, now: SystemTime) {
        let published: Vec<_> = state
            .signing_keys()
            .filter(|k| gatehouse_tokens::is_published(k, now))
            .collect();
        let keys_generation = {
            use std::hash::{BuildHasher, Hash, Hasher};
            let mut hasher = foldhash::fast::FixedState::with_seed(7).build_hasher();
            for key in &published {
                (&key.kid, &key.alg, &key.public_jwk).hash(&mut hasher);
            }
            hasher.finish()
        };
        self.keys_until = published
            .iter()
            .filter(|k| !k.active)
            .filter_map(|k| k.retire_after.map(|t| t.seconds))
            .min();
        self.keys = Arc::new(VerificationKeys::new(published.iter().copied()));
        self.keys_generation = keys_generation;
    }

    /// Number of routed APIs.
    pub fn api_count(&self) -> usize {
        self.apis.len()
    }

    /// The routed API with this id.
    pub fn api(&self, id: &str) -> Option<&Arc<CompiledApi>> {
        self.apis.get(id)
    }

    /// The routed APIs, by id.
    pub fn apis(&self) -> impl Iterator<Item = &Arc<CompiledApi>> {
        self.apis.values()
    }

    /// The application with this id, if the state knows it.
    pub fn application(&self, id: &str) -> Option<&ApplicationInfo> {
        self.applications.get(id)
    }

    /// The applications, in no particular order.
    pub fn applications(&self) -> impl Iterator<Item = (&Id, &ApplicationInfo)> {
        self.applications.iter()
    }

    /// The jtis of the revoked tokens, in no particular order.
    pub fn revoked_tokens(&self) -> impl Iterator<Item = &Id> {
        self.revoked_tokens.iter()
    }

    /// The revoked clients, with the latest `iat` refused, in no particular order.
    pub fn revoked_clients(&self) -> impl Iterator<Item = (&Id, &i64)> {
        self.revoked_clients.iter()
    }

    /// The contexts routed, with their versions (API ids, in version order) and the
    /// default version's API id, in no particular order.
    pub fn contexts(&self) -> impl Iterator<Item = (&str, Vec<(&str, &str)>, Option<&str>)> {
        self.contexts.iter().map(|(context, entry)| {
            let versions = entry
                .versions
                .iter()
                .map(|(v, api)| (&**v, &*api.id))
                .collect();
            (&**context, versions, entry.default.as_ref().map(|d| &*d.id))
        })
    }

    /// The log's say on a verified token, as of this table: refused if its `jti` is
    /// revoked, or its client was revoked after issuing it (`gatehouse_tokens::
    /// check_revocation`'s rule, on the table's compact sets rather than the state).
    pub fn check_revocation(&self, claims: &AccessClaims) -> Result<(), TokenError> {
        if self.revoked_tokens.contains(claims.jti.as_str()) {
            return Err(TokenError::Revoked);
        }
        if let Some(&through) = self.revoked_clients.get(claims.client_id.as_str())
            && claims.iat <= through
        {
            return Err(TokenError::ClientRevoked);
        }
        Ok(())
    }

    /// Matches a request: longest context, then an explicit version or the context's
    /// default version, then the resource template and method.
    pub fn route(&self, method: &Method, path: &str) -> RouteMatch {
        if has_dot_segments(path) {
            return RouteMatch::NotFound;
        }
        let Some((entry, rest)) = context_prefixes(path, self.max_context_depth)
            .find_map(|(prefix, rest)| Some((self.contexts.get(prefix)?, rest)))
        else {
            return RouteMatch::NotFound;
        };
        let (version, after_version) = split_version(rest);
        let (api, resource_path) = match entry.version(version) {
            Some(api) => (api, after_version),
            None => match &entry.default {
                Some(api) => (api, rest),
                None => return RouteMatch::NotFound,
            },
        };
        let Some(set) = api.paths.at(resource_path) else {
            return RouteMatch::NotFound;
        };
        match set.methods.iter().find(|(m, _)| m == method) {
            Some(&(_, resource_index)) => RouteMatch::Matched(Route {
                api: api.clone(),
                resource_index,
                resource_path_offset: path.len() - resource_path.len(),
            }),
            None => RouteMatch::MethodNotAllowed {
                api: api.clone(),
                allow: set
                    .methods
                    .iter()
                    .map(|(m, _)| m.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            },
        }
    }
}

/// Whether an API's definition names `tier` (its own tier or a resource's).
fn names_api_tier(api: &Api, tier: &str) -> bool {
    api.definition.as_ref().is_some_and(|d| {
        d.api_throttling_tier == tier || d.resources.iter().any(|r| r.throttling_tier == tier)
    })
}

/// `/1.0.0/users` → `("1.0.0", "/users")`; `/1.0.0` → `("1.0.0", "")`.
fn split_version(rest: &str) -> (&str, &str) {
    let trimmed = rest.strip_prefix('/').unwrap_or(rest);
    match trimmed.find('/') {
        Some(i) => (&trimmed[..i], &trimmed[i..]),
        None => (trimmed, ""),
    }
}

fn compile_api(
    state: &State,
    id: &Id,
    api: &Api,
    subscriptions: OrdMap<Id, Arc<SubscriptionInfo>>,
    metrics: &Metrics,
) -> Option<CompiledApi> {
    let d = api.definition.as_ref()?;
    let label: Arc<str> = format!("{}/{}", d.context, d.version).into();
    let mut resources = Vec::with_capacity(d.resources.len());
    let mut paths: PathTrie<MethodSet> = PathTrie::default();
    for r in &d.resources {
        let Ok(method) = Method::from_bytes(r.method.as_bytes()) else {
            continue;
        };
        let set = paths.entry(&r.path, MethodSet::default);
        if set.methods.iter().any(|(m, _)| *m == method) {
            // Two templates that differ only by parameter names: the first wins.
            continue;
        }
        set.methods.push((method.clone(), resources.len()));
        resources.push(Resource {
            method,
            template: r.path.as_str().into(),
            auth_disabled: r.auth_disabled,
            scopes: r.scopes.clone(),
            limit: if r.throttling_tier.is_empty() {
                None
            } else {
                Limit::of(state.policy(Level::Api, &r.throttling_tier))
            },
        });
    }
    let endpoints = d.endpoints.as_ref();
    let timeout = match endpoints.map_or(0, |e| e.timeout_ms) {
        0 => DEFAULT_UPSTREAM_TIMEOUT,
        ms => Duration::from_millis(u64::from(ms)),
    };
    let cors = d.cors.as_ref().filter(|c| c.enabled).map(|c| Cors {
        allow_origins: if c.allow_origins.is_empty() {
            vec!["*".to_string()]
        } else {
            c.allow_origins.clone()
        },
        allow_methods: if c.allow_methods.is_empty() {
            "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS".to_string()
        } else {
            c.allow_methods.join(", ")
        },
        allow_headers: if c.allow_headers.is_empty() {
            "authorization, Access-Control-Allow-Origin, Content-Type, SOAPAction, apikey, Internal-Key"
                .to_string()
        } else {
            c.allow_headers.join(", ")
        },
        allow_credentials: c.allow_credentials,
        max_age_seconds: c.max_age_seconds,
    });
    let cache_ttl = d.cache.as_ref().filter(|c| c.enabled).map(|c| {
        Duration::from_secs(u64::from(if c.ttl_seconds == 0 {
            gatehouse_domain::api::DEFAULT_CACHE_TTL_SECONDS
        } else {
            c.ttl_seconds
        }))
    });
    let limit = if d.api_throttling_tier.is_empty() {
        None
    } else {
        Limit::of(state.policy(Level::Api, &d.api_throttling_tier))
    };
    Some(CompiledApi {
        id: id.clone(),
        name: d.name.clone(),
        context: d.context.clone(),
        version: d.version.clone(),
        metrics: metrics.api(&label),
        label,
        lifecycle: api.lifecycle(),
        resources: resources.into(),
        paths: Arc::new(paths),
        is_default_version: d.is_default_version,
        production: Endpoints::of(endpoints.and_then(|e| e.production.as_ref())),
        sandbox: Endpoints::of(endpoints.and_then(|e| e.sandbox.as_ref())),
        timeout,
        max_request_body: d.max_request_body_bytes,
        cors: cors.map(Arc::new),
        cache_ttl,
        limit,
        subscriptions,
    })
}

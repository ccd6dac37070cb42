//! The routing table: everything the request path needs, compiled from one domain
//! [`State`] and never changed afterwards.
//!
//! # Shared state
//!
//! A [`RoutingTable`] is immutable. The sync task ([`crate::sync`]) builds a new one off
//! the hot path whenever it has applied events, and publishes it with one atomic pointer
//! swap (`arc_swap::ArcSwap` in [`crate::proxy::Gateway`]). A request loads the current
//! table once, at its start, and uses that same table for every phase, so no request
//! ever sees half an update — a request that started before a swap finishes on the old
//! table, which is freed when its last reader drops it. Readers take no lock at all.
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
//! not exist for the gateway (404). Per context, a map of versions plus the default
//! version; per API, a [`PathTrie`] of its resource templates with their methods, its
//! parsed endpoints, CORS and cache settings, throttling limits and its subscriptions by
//! application. Secret hashes never reach the gateway (see [`crate::sync`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, SystemTime};

use gatehouse_domain::State;
use gatehouse_domain::lifecycle;
use gatehouse_proto::events::{
    Api, EndpointGroup, ThrottlePolicy, endpoint_group, lifecycle::State as Lifecycle,
    subscription_status, throttle_policy::Level,
};
use gatehouse_tokens::{KeyType, VerificationKeys};
use http::Method;
use http::uri::{Authority, Scheme};

use crate::metrics::{ApiMetrics, Metrics};
use crate::routing::{ContextTrie, PathTrie, has_dot_segments};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// Default upstream timeout when an API sets none.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// A throttling limit: `count` calls per `unit_seconds`. Unlimited tiers compile to no
/// limit at all (`Option<Limit>::None`), so they cost nothing per request.
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
    /// Round-robin position (load-balanced groups). Starts again at 0 when the table is
    /// rebuilt, which is harmless.
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

/// A subscription as the request path sees it.
#[derive(Debug, Clone)]
pub struct SubscriptionInfo {
    pub state: subscription_status::State,
    pub limit: Option<Limit>,
    /// The scopes an admin granted the application on this API (`GrantScopes`): the
    /// only ones a token of it may use on this API's resources.
    pub granted_scopes: Box<[Box<str>]>,
}

/// A deployed API, compiled.
#[derive(Debug)]
pub struct CompiledApi {
    pub id: Arc<str>,
    pub name: String,
    pub context: String,
    pub version: String,
    /// `/client/1.0.0`, for errors, logs and metrics.
    pub label: Arc<str>,
    pub lifecycle: Lifecycle,
    pub resources: Vec<Resource>,
    paths: PathTrie<MethodSet>,
    pub production: Option<Arc<Endpoints>>,
    pub sandbox: Option<Arc<Endpoints>>,
    pub timeout: Duration,
    /// The API's own request body limit, in bytes (0: the gateway's default).
    pub max_request_body: u32,
    pub cors: Option<Cors>,
    pub cache_ttl: Option<Duration>,
    pub limit: Option<Limit>,
    /// By application id.
    pub subscriptions: FastMap<Box<str>, SubscriptionInfo>,
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

/// The versions served under one context.
#[derive(Debug, Default)]
struct ContextEntry {
    versions: FastMap<Box<str>, usize>,
    default: Option<usize>,
}

/// An application as the request path sees it.
#[derive(Debug, Clone)]
pub struct ApplicationInfo {
    pub limit: Option<Limit>,
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

/// Everything the request path reads, built from one [`State`]. See the module docs.
pub struct RoutingTable {
    contexts: ContextTrie<ContextEntry>,
    apis: Vec<Arc<CompiledApi>>,
    applications: FastMap<Box<str>, ApplicationInfo>,
    /// The keys of the published signing keys.
    pub keys: VerificationKeys,
    /// Changes whenever the set of verification keys does: cached tokens verified under
    /// another generation are verified again.
    pub keys_generation: u64,
    /// The whole state: revocations are checked against it per request.
    pub state: State,
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

impl RoutingTable {
    /// An empty table (no API routes anything).
    pub fn empty(metrics: &Metrics) -> RoutingTable {
        RoutingTable::build(State::new(), metrics)
    }

    /// Compiles `state`. Off the hot path: the sync task calls it, never a request.
    pub fn build(state: State, metrics: &Metrics) -> RoutingTable {
        let now = SystemTime::now();
        let mut apis: Vec<Arc<CompiledApi>> = Vec::new();
        let mut index_of: FastMap<&str, usize> = FastMap::default();
        let mut subscriptions: FastMap<&str, FastMap<Box<str>, SubscriptionInfo>> =
            FastMap::default();
        for sub in state.subscriptions() {
            let limit = Limit::of(state.policy(Level::Subscription, &sub.tier));
            subscriptions
                .entry(sub.api_id.as_str())
                .or_default()
                .insert(
                    sub.application_id.as_str().into(),
                    SubscriptionInfo {
                        state: sub.state(),
                        limit,
                        granted_scopes: sub
                            .granted_scopes
                            .iter()
                            .map(|s| s.as_str().into())
                            .collect(),
                    },
                );
        }
        let mut contexts: ContextTrie<ContextEntry> = ContextTrie::default();
        for api in state.apis() {
            if !lifecycle::is_deployed(api.lifecycle()) {
                continue;
            }
            let Some(compiled) =
                compile_api(&state, api, subscriptions.remove(api.id.as_str()), metrics)
            else {
                continue;
            };
            let index = apis.len();
            let entry = contexts.entry(&compiled.context, ContextEntry::default);
            entry
                .versions
                .insert(compiled.version.as_str().into(), index);
            if api
                .definition
                .as_ref()
                .is_some_and(|d| d.is_default_version)
            {
                entry.default = Some(index);
            }
            index_of.insert(api.id.as_str(), index);
            apis.push(Arc::new(compiled));
        }
        let applications = state
            .applications()
            .map(|app| {
                (
                    app.id.as_str().into(),
                    ApplicationInfo {
                        limit: Limit::of(state.policy(Level::Application, &app.throttling_tier)),
                    },
                )
            })
            .collect();
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
        let keys = VerificationKeys::new(published.iter().copied());
        RoutingTable {
            contexts,
            apis,
            applications,
            keys,
            keys_generation,
            sequence: state.sequence(),
            config_hash: state.config_hash(),
            state,
            built_at: now,
        }
    }

    /// Number of routed APIs.
    pub fn api_count(&self) -> usize {
        self.apis.len()
    }

    /// The application with this id, if the state knows it.
    pub fn application(&self, id: &str) -> Option<&ApplicationInfo> {
        self.applications.get(id)
    }

    /// Matches a request: longest context, then an explicit version or the context's
    /// default version, then the resource template and method.
    pub fn route(&self, method: &Method, path: &str) -> RouteMatch {
        if has_dot_segments(path) {
            return RouteMatch::NotFound;
        }
        let Some((entry, rest)) = self.contexts.longest_prefix(path) else {
            return RouteMatch::NotFound;
        };
        let (version, after_version) = split_version(rest);
        let (api, resource_path) = match entry.versions.get(version) {
            Some(&index) => (&self.apis[index], after_version),
            None => match entry.default {
                Some(index) => (&self.apis[index], rest),
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
    api: &Api,
    subscriptions: Option<FastMap<Box<str>, SubscriptionInfo>>,
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
        id: api.id.as_str().into(),
        name: d.name.clone(),
        context: d.context.clone(),
        version: d.version.clone(),
        metrics: metrics.api(&label),
        label,
        lifecycle: api.lifecycle(),
        resources,
        paths,
        production: Endpoints::of(endpoints.and_then(|e| e.production.as_ref())),
        sandbox: Endpoints::of(endpoints.and_then(|e| e.sandbox.as_ref())),
        timeout,
        max_request_body: d.max_request_body_bytes,
        cors,
        cache_ttl,
        limit,
        subscriptions: subscriptions.unwrap_or_default(),
    })
}

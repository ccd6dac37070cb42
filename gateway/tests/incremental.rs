//! Incremental application equals a full rebuild (proptest, bounded so the suite stays
//! fast): over random histories of commands — APIs created, versioned (default versions
//! moving), updated, published, blocked, deprecated, retired and deleted; policies;
//! applications created and deleted; subscriptions made, blocked, unblocked, granted
//! scopes and ended; keys registered and revoked; signing keys rotated; tokens revoked
//! (and forgotten once expired) — decided with `gatehouse_domain::handle` and folded in
//! random batches, the table the syncer would serve (the previous table with the
//! batch's effects applied) is the table [`RoutingTable::build`] compiles from the same
//! state: same routes for a set of probe paths and methods, same compiled APIs and
//! subscriptions, same applications, revocations, keys, sequence and config hash.
//!
//! A few events the handlers would refuse but the fold accepts are mixed in (a built-in
//! policy replaced, an API deleted with its subscriptions): the two must agree on any
//! history the fold accepts, not only on the ones control writes.

use std::fmt::Write as _;
use std::sync::Arc;

use gatehouse_domain::{AggregateKind, Command, Consistency, PendingEvent, State};
use gatehouse_gateway::metrics::Metrics;
use gatehouse_gateway::table::{RouteMatch, RoutingTable};
use gatehouse_proto::Timestamp;
use gatehouse_proto::events::{
    ApiDefinition, ApiDeleted, CorsPolicy, EndpointGroup, Endpoints, OAuthClient, PolicyCreated,
    Resource, SigningKey, ThrottlePolicy, event_envelope::Event, lifecycle::State as Lifecycle,
    o_auth_client::KeyType, throttle_policy::Level,
};
use gatehouse_testkit::domain::{EPOCH_SECONDS, commit, try_run};
use gatehouse_testkit::world::custom_policy;
use gatehouse_tokens::AccessClaims;
use http::Method;
use proptest::prelude::*;

const APIS: usize = 5;
const APPS: usize = 4;
const SUBS: usize = 8;
const CLIENTS: usize = 5;
const KEYS: usize = 3;
const JTIS: usize = 4;
const CONTEXTS: &[&str] = &["/c0", "/c1", "/c1/sub"];
const VERSIONS: &[&str] = &["1.0.0", "2.0.0", "3.0.0"];
const SUBSCRIPTION_TIERS: &[&str] = &["Unlimited", "Gold", "Bronze", "Custom"];
const APPLICATION_TIERS: &[&str] = &["Unlimited", "10PerMin", "50PerMin", "Custom"];
const API_TIERS: &[&str] = &["", "10KPerMin", "50KPerMin", "Custom"];

fn api_id(i: usize) -> String {
    format!("api-{i}")
}
fn app_id(i: usize) -> String {
    format!("app-{i}")
}
fn sub_id(i: usize) -> String {
    format!("sub-{i}")
}
fn client_id(i: usize) -> String {
    format!("client-{i}")
}
fn kid(i: usize) -> String {
    format!("kid-{i}")
}
fn jti(i: usize) -> String {
    format!("jti-{i}")
}

/// One step of a history: a command (possibly refused by the rules, then a no-op) or,
/// for `Raw*`, an event folded without asking the handlers.
#[derive(Debug, Clone)]
enum Op {
    CreateApi {
        api: usize,
        context: usize,
        version: usize,
        default: bool,
        shape: u8,
    },
    CreateVersion {
        api: usize,
        source: usize,
        version: usize,
        default: bool,
    },
    UpdateApi {
        api: usize,
        default: bool,
        shape: u8,
    },
    Lifecycle {
        api: usize,
        target: Lifecycle,
    },
    DeleteApi {
        api: usize,
    },
    CreatePolicy {
        level: Level,
        count: u64,
    },
    CreateApplication {
        app: usize,
        tier: usize,
    },
    DeleteApplication {
        app: usize,
    },
    Subscribe {
        sub: usize,
        app: usize,
        api: usize,
        tier: usize,
    },
    Block {
        sub: usize,
        production_only: bool,
    },
    Unblock {
        sub: usize,
    },
    Unsubscribe {
        sub: usize,
    },
    Grant {
        sub: usize,
        scopes: u8,
    },
    RegisterClient {
        client: usize,
        app: usize,
        sandbox: bool,
    },
    RevokeClient {
        client: usize,
    },
    PublishKey {
        kid: usize,
        retire_previous: Option<bool>,
    },
    RevokeToken {
        jti: usize,
        expired: bool,
    },
    RawReplacePolicy {
        level: Level,
        tier: usize,
        count: u64,
    },
    RawDeleteApi {
        api: usize,
    },
}

fn level() -> impl Strategy<Value = Level> {
    prop::sample::select(vec![Level::Api, Level::Subscription, Level::Application])
}

fn lifecycle_target() -> impl Strategy<Value = Lifecycle> {
    prop::sample::select(vec![
        Lifecycle::Published,
        Lifecycle::Published,
        Lifecycle::Published,
        Lifecycle::Prototyped,
        Lifecycle::Blocked,
        Lifecycle::Blocked,
        Lifecycle::Deprecated,
        Lifecycle::Retired,
        Lifecycle::Created,
    ])
}

/// Where every history starts, so that the random steps find deployed APIs with
/// subscriptions, keys and revocations to change: three published APIs (two default
/// versions, one of them under a nested context), three applications with keys, four
/// subscriptions, a signing key.
fn setup() -> Vec<Op> {
    let mut ops = Vec::new();
    for (api, context, version, default) in [(0, 0, 0, true), (1, 1, 0, true), (2, 2, 1, false)] {
        ops.push(Op::CreateApi {
            api,
            context,
            version,
            default,
            shape: (api as u8) * 37,
        });
        ops.push(Op::Lifecycle {
            api,
            target: Lifecycle::Published,
        });
    }
    for app in 0..3 {
        ops.push(Op::CreateApplication { app, tier: app });
        ops.push(Op::RegisterClient {
            client: app,
            app,
            sandbox: app == 2,
        });
    }
    for (sub, app, api) in [(0, 0, 0), (1, 1, 0), (2, 0, 1), (3, 2, 2)] {
        ops.push(Op::Subscribe {
            sub,
            app,
            api,
            tier: sub % 3,
        });
    }
    ops.push(Op::PublishKey {
        kid: 0,
        retire_previous: None,
    });
    ops
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..APIS, 0..CONTEXTS.len(), 0..VERSIONS.len(), any::<bool>(), any::<u8>()).prop_map(
            |(api, context, version, default, shape)| Op::CreateApi { api, context, version, default, shape }
        ),
        2 => (0..APIS, 0..APIS, 0..VERSIONS.len(), any::<bool>()).prop_map(
            |(api, source, version, default)| Op::CreateVersion { api, source, version, default }
        ),
        2 => (0..APIS, any::<bool>(), any::<u8>()).prop_map(|(api, default, shape)| Op::UpdateApi { api, default, shape }),
        6 => (0..APIS, lifecycle_target()).prop_map(|(api, target)| Op::Lifecycle { api, target }),
        1 => (0..APIS).prop_map(|api| Op::DeleteApi { api }),
        1 => (level(), 1..100u64).prop_map(|(level, count)| Op::CreatePolicy { level, count }),
        3 => (0..APPS, 0..APPLICATION_TIERS.len()).prop_map(|(app, tier)| Op::CreateApplication { app, tier }),
        1 => (0..APPS).prop_map(|app| Op::DeleteApplication { app }),
        6 => (0..SUBS, 0..APPS, 0..APIS, 0..SUBSCRIPTION_TIERS.len()).prop_map(
            |(sub, app, api, tier)| Op::Subscribe { sub, app, api, tier }
        ),
        2 => (0..SUBS, any::<bool>()).prop_map(|(sub, production_only)| Op::Block { sub, production_only }),
        1 => (0..SUBS).prop_map(|sub| Op::Unblock { sub }),
        1 => (0..SUBS).prop_map(|sub| Op::Unsubscribe { sub }),
        2 => (0..SUBS, any::<u8>()).prop_map(|(sub, scopes)| Op::Grant { sub, scopes }),
        2 => (0..CLIENTS, 0..APPS, any::<bool>()).prop_map(|(client, app, sandbox)| Op::RegisterClient { client, app, sandbox }),
        1 => (0..CLIENTS).prop_map(|client| Op::RevokeClient { client }),
        1 => (0..KEYS, prop::option::of(any::<bool>())).prop_map(|(kid, retire_previous)| Op::PublishKey { kid, retire_previous }),
        2 => (0..JTIS, any::<bool>()).prop_map(|(jti, expired)| Op::RevokeToken { jti, expired }),
        1 => (level(), 0..4usize, 1..100u64).prop_map(|(level, tier, count)| Op::RawReplacePolicy { level, tier, count }),
        1 => (0..APIS).prop_map(|api| Op::RawDeleteApi { api }),
    ]
}

/// A definition whose details `shape` picks: tiers, scopes, CORS, cache, sandbox.
fn definition(context: &str, version: &str, default: bool, shape: u8) -> ApiDefinition {
    let tier = |bits: u8| API_TIERS[usize::from(bits) % API_TIERS.len()].to_string();
    let mut resources = vec![
        Resource {
            method: "GET".into(),
            path: "/items".into(),
            throttling_tier: tier(shape >> 2),
            ..Default::default()
        },
        Resource {
            method: "GET".into(),
            path: "/items/{id}".into(),
            scopes: vec!["read".into()],
            ..Default::default()
        },
    ];
    if shape & 1 == 1 {
        resources.push(Resource {
            method: "POST".into(),
            path: "/items".into(),
            scopes: vec!["write".into()],
            auth_disabled: shape & 2 == 2,
            ..Default::default()
        });
    }
    ApiDefinition {
        name: format!("N{}{}", context.replace('/', ""), version.replace('.', "")),
        context: context.into(),
        version: version.into(),
        is_default_version: default,
        resources,
        endpoints: Some(Endpoints {
            production: Some(EndpointGroup {
                urls: vec![format!(
                    "http://backend.invalid:{}",
                    8000 + u16::from(shape)
                )],
                ..Default::default()
            }),
            sandbox: (shape & 16 == 16).then(|| EndpointGroup {
                urls: vec!["http://sandbox.invalid:9000".into()],
                ..Default::default()
            }),
            timeout_ms: u32::from(shape & 32) * 10,
        }),
        subscription_tiers: vec!["Unlimited".into(), "Gold".into(), "Bronze".into()],
        api_throttling_tier: tier(shape >> 4),
        cors: (shape & 64 == 64).then(|| CorsPolicy {
            enabled: true,
            allow_origins: vec!["https://a.example".into()],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn policy(level: Level, name: &str, count: u64) -> ThrottlePolicy {
    ThrottlePolicy {
        name: name.into(),
        level: level as i32,
        request_count: count,
        unit_seconds: 60,
        ..Default::default()
    }
}

/// Runs one step against `state`; refused commands change nothing.
fn step(state: &mut State, op: &Op) {
    let command = match op.clone() {
        Op::CreateApi {
            api,
            context,
            version,
            default,
            shape,
        } => Command::CreateApi {
            api_id: api_id(api),
            definition: definition(CONTEXTS[context], VERSIONS[version], default, shape),
        },
        Op::CreateVersion {
            api,
            source,
            version,
            default,
        } => Command::CreateApiVersion {
            api_id: api_id(api),
            source_api_id: api_id(source),
            new_version: VERSIONS[version].into(),
            make_default: default,
        },
        Op::UpdateApi {
            api,
            default,
            shape,
        } => {
            let Some(current) = state.api(&api_id(api)).and_then(|a| a.definition.clone()) else {
                return;
            };
            Command::UpdateApi {
                api_id: api_id(api),
                definition: definition(&current.context, &current.version, default, shape),
                expected_version: None,
            }
        }
        Op::Lifecycle { api, target } => Command::ChangeLifecycle {
            api_id: api_id(api),
            target,
            expected_version: None,
        },
        Op::DeleteApi { api } => Command::DeleteApi {
            api_id: api_id(api),
        },
        Op::CreatePolicy { level, count } => {
            Command::CreatePolicy(custom_policy("Custom", level, count, 60))
        }
        Op::CreateApplication { app, tier } => Command::CreateApplication {
            application_id: app_id(app),
            name: format!("App{app}"),
            owner: format!("owner{}", app % 2),
            throttling_tier: APPLICATION_TIERS[tier].into(),
            description: String::new(),
        },
        Op::DeleteApplication { app } => Command::DeleteApplication {
            application_id: app_id(app),
        },
        Op::Subscribe {
            sub,
            app,
            api,
            tier,
        } => Command::Subscribe {
            subscription_id: sub_id(sub),
            application_id: app_id(app),
            api_id: api_id(api),
            tier: SUBSCRIPTION_TIERS[tier].into(),
        },
        Op::Block {
            sub,
            production_only,
        } => Command::BlockSubscription {
            subscription_id: sub_id(sub),
            production_only,
        },
        Op::Unblock { sub } => Command::UnblockSubscription {
            subscription_id: sub_id(sub),
        },
        Op::Unsubscribe { sub } => Command::Unsubscribe {
            subscription_id: sub_id(sub),
        },
        Op::Grant { sub, scopes } => Command::GrantSubscriptionScopes {
            subscription_id: sub_id(sub),
            scopes: [("read", 1u8), ("write", 2)]
                .into_iter()
                .filter(|(_, bit)| scopes & bit != 0)
                .map(|(s, _)| s.to_string())
                .collect(),
        },
        Op::RegisterClient {
            client,
            app,
            sandbox,
        } => Command::RegisterClient {
            client: OAuthClient {
                client_id: client_id(client),
                application_id: app_id(app),
                key_type: if sandbox {
                    KeyType::Sandbox
                } else {
                    KeyType::Production
                } as i32,
                secret_hash: "$argon2id$unused".into(),
                ..Default::default()
            },
        },
        Op::RevokeClient { client } => Command::RevokeClient {
            client_id: client_id(client),
        },
        Op::PublishKey {
            kid: k,
            retire_previous,
        } => Command::PublishSigningKey {
            key: SigningKey {
                kid: kid(k),
                alg: "ES256".into(),
                public_jwk: format!("{{\"kid\":\"{}\"}}", kid(k)),
                ..Default::default()
            },
            // Far from the clock either way: the keys a table holds depend on it.
            retire_previous_after: retire_previous.map(|future| Timestamp {
                seconds: if future { 4_000_000_000 } else { 1_000_000_000 },
                nanos: 0,
            }),
        },
        Op::RevokeToken { jti: j, expired } => Command::RevokeToken {
            jti: jti(j),
            // Expired long before the events' times: forgotten at the next event.
            expires_at: Some(Timestamp {
                seconds: if expired {
                    EPOCH_SECONDS - 10_000
                } else {
                    EPOCH_SECONDS + 1_000_000
                },
                nanos: 0,
            }),
            client_id: client_id(j % CLIENTS),
        },
        Op::RawReplacePolicy { level, tier, count } => {
            let name = match level {
                Level::Subscription => SUBSCRIPTION_TIERS[tier],
                Level::Application => APPLICATION_TIERS[tier],
                _ => API_TIERS[tier.max(1)],
            };
            let event = Event::PolicyCreated(PolicyCreated {
                policy: Some(policy(level, name, count)),
            });
            let id = format!("{}-{name}", level.as_str_name());
            raw(state, AggregateKind::Policy, id, event);
            return;
        }
        Op::RawDeleteApi { api } => {
            if state.api(&api_id(api)).is_some() {
                let event = Event::ApiDeleted(ApiDeleted {});
                raw(state, AggregateKind::Api, api_id(api), event);
            }
            return;
        }
    };
    let _ = try_run(state, command);
}

fn raw(state: &mut State, kind: AggregateKind, id: String, event: Event) {
    let pending = PendingEvent::first(kind, id, Consistency::log(state), event);
    commit(state, vec![pending]);
}

/// Paths every dump routes: each context with and without each version, below and at
/// the root of the resources, and beside the contexts.
fn probes() -> Vec<(Method, String)> {
    let mut paths = vec!["/".to_string(), "/c2/1.0.0/items".to_string()];
    for context in CONTEXTS {
        for rest in ["", "/items", "/items/7", "/other"] {
            paths.push(format!("{context}{rest}"));
            for version in VERSIONS {
                paths.push(format!("{context}/{version}{rest}"));
            }
        }
    }
    let mut probes = Vec::new();
    for path in paths {
        for method in [Method::GET, Method::POST, Method::DELETE] {
            probes.push((method, path.clone()));
        }
    }
    probes
}

/// Everything the request path can read from `table`, in a canonical order, as text.
fn dump(table: &RoutingTable, state: &State) -> String {
    let mut out = String::new();
    writeln!(
        out,
        "sequence {} hash {} apis {} keys {}",
        table.sequence,
        table.config_hash,
        table.api_count(),
        table.keys_generation
    )
    .unwrap();
    for k in 0..KEYS {
        writeln!(out, "key {} {}", kid(k), table.keys.contains(&kid(k))).unwrap();
    }
    for api in table.apis() {
        writeln!(
            out,
            "api {} {} {} {} {} {:?} timeout {:?} body {} cache {:?} limit {:?}",
            api.id,
            api.name,
            api.context,
            api.version,
            api.label,
            api.lifecycle,
            api.timeout,
            api.max_request_body,
            api.cache_ttl,
            api.limit
        )
        .unwrap();
        for r in api.resources.iter() {
            writeln!(
                out,
                "  resource {} {} auth-off {} scopes {:?} limit {:?}",
                r.method, r.template, r.auth_disabled, r.scopes, r.limit
            )
            .unwrap();
        }
        for (name, group) in [("production", &api.production), ("sandbox", &api.sandbox)] {
            if let Some(group) = group {
                let urls: Vec<_> = group.targets.iter().map(|t| &*t.url).collect();
                writeln!(out, "  {name} failover {} {urls:?}", group.failover).unwrap();
            }
        }
        if let Some(cors) = &api.cors {
            writeln!(
                out,
                "  cors {:?} {} {} {} {}",
                cors.allow_origins,
                cors.allow_methods,
                cors.allow_headers,
                cors.allow_credentials,
                cors.max_age_seconds
            )
            .unwrap();
        }
        for (application, s) in api.subscriptions.iter() {
            writeln!(
                out,
                "  subscription {application} {:?} {:?} {:?}",
                s.state, s.limit, s.granted_scopes
            )
            .unwrap();
        }
    }
    let mut contexts: Vec<_> = table.contexts().collect();
    contexts.sort();
    for context in contexts {
        writeln!(out, "context {context:?}").unwrap();
    }
    let mut applications: Vec<_> = table
        .applications()
        .map(|(id, a)| format!("application {id} {:?}", a.limit))
        .collect();
    applications.sort();
    let mut revoked: Vec<_> = table
        .revoked_tokens()
        .map(|j| format!("revoked {j}"))
        .chain(
            table
                .revoked_clients()
                .map(|(c, through)| format!("revoked client {c} {through}")),
        )
        .collect();
    revoked.sort();
    for line in applications.iter().chain(&revoked) {
        writeln!(out, "{line}").unwrap();
    }
    for (method, path) in probes() {
        let answer = match table.route(&method, &path) {
            // What the request path reads through the route, not through `apis`.
            RouteMatch::Matched(r) => format!(
                "{} {:?} {} {} {} subscriptions {:?}",
                r.api.id,
                r.api.lifecycle,
                r.resource().method,
                r.resource().template,
                r.resource_path(&path),
                r.api
                    .subscriptions
                    .iter()
                    .map(|(app, s)| (app.to_string(), s.clone()))
                    .collect::<Vec<_>>()
            ),
            RouteMatch::MethodNotAllowed { api, allow } => format!("405 {} {allow}", api.id),
            RouteMatch::NotFound => "404".into(),
        };
        writeln!(out, "route {method} {path}: {answer}").unwrap();
    }
    // The revocation check, against the rule on the whole state.
    for j in 0..JTIS + 1 {
        for c in 0..CLIENTS {
            for iat in [EPOCH_SECONDS, EPOCH_SECONDS + 10_000, i64::MAX - 1] {
                let claims = AccessClaims {
                    iss: String::new(),
                    sub: String::new(),
                    aud: String::new(),
                    exp: i64::MAX,
                    nbf: 0,
                    iat,
                    jti: jti(j),
                    scope: String::new(),
                    client_id: client_id(c),
                    application_id: String::new(),
                    application_name: String::new(),
                    key_type: String::new(),
                    application_tier: String::new(),
                };
                let table_says = table.check_revocation(&claims).map_err(|e| e.to_string());
                let state_says =
                    gatehouse_tokens::check_revocation(&claims, state).map_err(|e| e.to_string());
                assert_eq!(table_says, state_says, "revocation of {claims:?}");
                writeln!(out, "check {j} {c} {iat}: {table_says:?}").unwrap();
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn incremental_application_equals_a_full_rebuild(
        steps in prop::collection::vec(op(), 1..80),
        cuts in prop::collection::vec(any::<bool>(), 100),
    ) {
        let ops: Vec<Op> = setup().into_iter().chain(steps).collect();
        let metrics = Arc::new(Metrics::default());
        let mut state = State::new();
        state.record_effects();
        let mut table = RoutingTable::build(&state, &metrics);
        let mut batch = 0;
        for (i, op) in ops.iter().enumerate() {
            step(&mut state, op);
            // Batches end at random, and after the last step.
            if cuts[i % cuts.len()] || i + 1 == ops.len() {
                let effects = state.take_effects();
                table = table.apply(&state, &effects, &metrics);
                let full = RoutingTable::build(&state, &metrics);
                let (incremental, rebuilt) = (dump(&table, &state), dump(&full, &state));
                prop_assert!(
                    incremental == rebuilt,
                    "batch {batch} (after step {i}, {op:?}; effects {effects:?}):\n--- incremental\n{incremental}\n--- rebuilt\n{rebuilt}"
                );
                batch += 1;
            }
        }
    }
}

/// An old table is left as it was: requests that loaded it go on with it.
#[test]
fn applying_leaves_the_old_table_unchanged() {
    let metrics = Metrics::default();
    let mut state = State::new();
    state.record_effects();
    for op in [
        Op::CreateApi {
            api: 0,
            context: 0,
            version: 0,
            default: true,
            shape: 0,
        },
        Op::Lifecycle {
            api: 0,
            target: Lifecycle::Published,
        },
        Op::CreateApplication { app: 0, tier: 0 },
        Op::Subscribe {
            sub: 0,
            app: 0,
            api: 0,
            tier: 1,
        },
    ] {
        step(&mut state, &op);
    }
    let old = RoutingTable::build(&state, &metrics);
    let _ = state.take_effects();
    let before = dump(&old, &state);
    let kept = state.clone();
    step(
        &mut state,
        &Op::Lifecycle {
            api: 0,
            target: Lifecycle::Blocked,
        },
    );
    step(
        &mut state,
        &Op::Block {
            sub: 0,
            production_only: false,
        },
    );
    let effects = state.take_effects();
    let new = old.apply(&state, &effects, &metrics);
    assert_eq!(dump(&old, &kept), before);
    assert_ne!(dump(&new, &state), before);
    assert_eq!(
        dump(&new, &state),
        dump(&RoutingTable::build(&state, &metrics), &state)
    );
    let route = |t: &RoutingTable| match t.route(&Method::GET, "/c0/1.0.0/items") {
        RouteMatch::Matched(r) => format!("{:?}", r.api.lifecycle),
        _ => "no route".into(),
    };
    assert_eq!(route(&old), "Published");
    assert_eq!(route(&new), "Blocked");
}

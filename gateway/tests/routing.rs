//! Route matching on routing tables compiled from domain states built with real
//! commands (no I/O): default versions, the longest context, templates, 405, lifecycle
//! states, and a table of 10,000 APIs.

use std::time::Instant;

use gatehouse_domain::{Command, State};
use gatehouse_gateway::metrics::Metrics;
use gatehouse_gateway::table::{RouteMatch, RoutingTable};
use gatehouse_proto::events::{ApiDefinition, lifecycle};
// "Handle and apply": decide a command against the state and fold its events.
use gatehouse_testkit::domain::run as apply;
use gatehouse_testkit::world::{api, resources};
use http::Method;

fn definition(
    context: &str,
    version: &str,
    default: bool,
    paths: &[(&str, &str)],
) -> ApiDefinition {
    let name = format!("{context}-{version}").replace('/', "");
    let urls = ["http://127.0.0.1:9".to_string()];
    ApiDefinition {
        is_default_version: default,
        ..api(&name, context, version, resources(paths), &urls)
    }
}

fn add(state: &mut State, id: &str, d: ApiDefinition, target: lifecycle::State) {
    apply(
        state,
        Command::CreateApi {
            api_id: id.into(),
            definition: d,
        },
    );
    if target != lifecycle::State::Created {
        apply(
            state,
            Command::ChangeLifecycle {
                api_id: id.into(),
                target: lifecycle::State::Published,
                expected_version: None,
            },
        );
    }
    if !matches!(
        target,
        lifecycle::State::Published | lifecycle::State::Created
    ) {
        if target == lifecycle::State::Retired {
            apply(
                state,
                Command::ChangeLifecycle {
                    api_id: id.into(),
                    target: lifecycle::State::Deprecated,
                    expected_version: None,
                },
            );
        }
        apply(
            state,
            Command::ChangeLifecycle {
                api_id: id.into(),
                target,
                expected_version: None,
            },
        );
    }
}

/// `(api id, resource template, path forwarded)` or the kind of miss.
fn route(table: &RoutingTable, method: Method, path: &str) -> String {
    match table.route(&method, path) {
        RouteMatch::Matched(r) => format!(
            "{} {} {}",
            r.api.id,
            r.resource().template,
            r.resource_path(path)
        ),
        RouteMatch::MethodNotAllowed { allow, .. } => format!("405 {allow}"),
        RouteMatch::NotFound => "404".into(),
    }
}

fn table(state: &State) -> RoutingTable {
    RoutingTable::build(state, &Metrics::default())
}

#[test]
fn explicit_and_default_versions() {
    let mut state = State::new();
    let paths = [("GET", "/users"), ("GET", "/users/{id}")];
    add(
        &mut state,
        "v1",
        definition("/client", "1.0.0", false, &paths),
        lifecycle::State::Published,
    );
    add(
        &mut state,
        "v2",
        definition("/client", "2.0.0", true, &paths),
        lifecycle::State::Published,
    );
    let t = table(&state);
    assert_eq!(
        route(&t, Method::GET, "/client/1.0.0/users"),
        "v1 /users /users"
    );
    assert_eq!(
        route(&t, Method::GET, "/client/2.0.0/users/5"),
        "v2 /users/{id} /users/5"
    );
    assert_eq!(
        route(&t, Method::GET, "/client/users/5"),
        "v2 /users/{id} /users/5",
        "default version"
    );
    assert_eq!(route(&t, Method::GET, "/client/users"), "v2 /users /users");
    assert_eq!(route(&t, Method::GET, "/client/3.0.0/users"), "404");
    // Moving the default to v1 (a new version made default) re-routes the short form.
    apply(
        &mut state,
        Command::CreateApiVersion {
            api_id: "v3".into(),
            source_api_id: "v1".into(),
            new_version: "3.0.0".into(),
            make_default: true,
        },
    );
    let t = table(&state);
    assert_eq!(
        route(&t, Method::GET, "/client/users"),
        "404",
        "v3 is CREATED: no default route"
    );
    apply(
        &mut state,
        Command::ChangeLifecycle {
            api_id: "v3".into(),
            target: lifecycle::State::Published,
            expected_version: None,
        },
    );
    assert_eq!(
        route(&table(&state), Method::GET, "/client/users"),
        "v3 /users /users"
    );
}

#[test]
fn the_longest_context_wins() {
    let mut state = State::new();
    add(
        &mut state,
        "shop",
        definition(
            "/shop",
            "1.0.0",
            true,
            &[("GET", "/orders/items"), ("GET", "/*")],
        ),
        lifecycle::State::Published,
    );
    add(
        &mut state,
        "orders",
        definition("/shop/orders", "1.0.0", false, &[("GET", "/items")]),
        lifecycle::State::Published,
    );
    let t = table(&state);
    assert_eq!(
        route(&t, Method::GET, "/shop/orders/1.0.0/items"),
        "orders /items /items"
    );
    assert_eq!(
        route(&t, Method::GET, "/shop/1.0.0/orders/items"),
        "shop /orders/items /orders/items"
    );
    // The longest context owns everything under it, even with no match there.
    assert_eq!(route(&t, Method::GET, "/shop/orders/items"), "404");
    assert_eq!(
        route(&t, Method::GET, "/shop/ordersX/anything"),
        "shop /* /ordersX/anything"
    );
}

#[test]
fn templates_and_method_not_allowed() {
    let mut state = State::new();
    add(
        &mut state,
        "a",
        definition(
            "/a",
            "v1",
            false,
            &[
                ("GET", "/users/{id}"),
                ("PUT", "/users/{id}"),
                ("GET", "/users/me"),
                ("GET", "/files/*"),
                ("POST", "/"),
            ],
        ),
        lifecycle::State::Published,
    );
    let t = table(&state);
    assert_eq!(
        route(&t, Method::GET, "/a/v1/users/42"),
        "a /users/{id} /users/42"
    );
    assert_eq!(
        route(&t, Method::GET, "/a/v1/users/me"),
        "a /users/me /users/me"
    );
    assert_eq!(
        route(&t, Method::GET, "/a/v1/files/x/y.txt"),
        "a /files/* /files/x/y.txt"
    );
    assert_eq!(route(&t, Method::POST, "/a/v1"), "a / ");
    assert_eq!(route(&t, Method::POST, "/a/v1/"), "a / /");
    assert_eq!(route(&t, Method::DELETE, "/a/v1/users/42"), "405 GET, PUT");
    assert_eq!(route(&t, Method::GET, "/a/v1/users"), "404");
    assert_eq!(
        route(&t, Method::GET, "/a/v1/users/../../b"),
        "404",
        "dot segments never route"
    );
}

#[test]
fn only_deployed_apis_route() {
    let mut state = State::new();
    let paths = [("GET", "/x")];
    add(
        &mut state,
        "created",
        definition("/created", "1", false, &paths),
        lifecycle::State::Created,
    );
    add(
        &mut state,
        "published",
        definition("/published", "1", false, &paths),
        lifecycle::State::Published,
    );
    add(
        &mut state,
        "prototyped",
        definition("/prototyped", "1", false, &paths),
        lifecycle::State::Prototyped,
    );
    add(
        &mut state,
        "blocked",
        definition("/blocked", "1", false, &paths),
        lifecycle::State::Blocked,
    );
    add(
        &mut state,
        "deprecated",
        definition("/deprecated", "1", false, &paths),
        lifecycle::State::Deprecated,
    );
    add(
        &mut state,
        "retired",
        definition("/retired", "1", false, &paths),
        lifecycle::State::Retired,
    );
    let t = table(&state);
    for (context, routed) in [
        ("created", false),
        ("published", true),
        ("prototyped", true),
        ("blocked", true),
        ("deprecated", true),
        ("retired", false),
    ] {
        let got = route(&t, Method::GET, &format!("/{context}/1/x"));
        assert_eq!(got != "404", routed, "{context}: {got}");
    }
}

#[test]
fn ten_thousand_apis_route_in_constant_time() {
    let mut state = State::new();
    for i in 0..10_000 {
        add(
            &mut state,
            &format!("api{i}"),
            definition(
                &format!("/svc{i}/part"),
                "1.0.0",
                i % 2 == 0,
                &[("GET", "/items/{id}"), ("POST", "/items")],
            ),
            lifecycle::State::Published,
        );
    }
    let started = Instant::now();
    let t = table(&state);
    let build = started.elapsed();
    assert_eq!(t.api_count(), 10_000);
    assert_eq!(
        route(&t, Method::GET, "/svc9999/part/1.0.0/items/7"),
        "api9999 /items/{id} /items/7"
    );
    assert_eq!(
        route(&t, Method::GET, "/svc4242/part/items/7"),
        "api4242 /items/{id} /items/7"
    );
    assert_eq!(
        route(&t, Method::GET, "/svc4243/part/items/7"),
        "404",
        "odd APIs are not default versions"
    );
    // Not a timing assertion: the figures are printed for the record.
    let lookups = 100_000;
    let started = Instant::now();
    let mut hits = 0;
    for i in 0..lookups {
        let path = format!("/svc{}/part/1.0.0/items/{i}", i % 10_000);
        if matches!(t.route(&Method::GET, &path), RouteMatch::Matched(_)) {
            hits += 1;
        }
    }
    assert_eq!(hits, lookups);
    println!(
        "10,000 APIs: table built in {build:?}; {lookups} lookups in {:?} ({:?} each, debug build)",
        started.elapsed(),
        started.elapsed() / lookups
    );
}

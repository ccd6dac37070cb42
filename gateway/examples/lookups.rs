//! What the request path spends in the routing table per call, at scale: route
//! matching, the subscription (phases 9, 10 and 11 read it), the application's tier and
//! the revocation check, for calls spread over every API and application.
//!
//! ```text
//! cargo run --release -p gatehouse-gateway --example lookups -- 10000 10000 100000
//! ```
//!
//! Arguments as `examples/scale.rs` (APIs, applications, subscriptions), built the same
//! way; prints nanoseconds per call, best of five runs of 1,000,000 calls.

use std::hint::black_box;
use std::time::Instant;

use gatehouse_domain::{AggregateKind, Command, Consistency, PendingEvent, State};
use gatehouse_gateway::metrics::Metrics;
use gatehouse_gateway::table::{RouteMatch, RoutingTable};
use gatehouse_proto::events::{
    ApplicationCreated, SubscriptionCreated, event_envelope::Event, lifecycle,
};
use gatehouse_testkit::domain::{commit, run};
use gatehouse_testkit::world::{api, resources};
use gatehouse_tokens::AccessClaims;
use http::Method;

fn uuid(kind: u8, i: usize) -> String {
    format!("{:08x}-{kind:04x}-4000-8000-{:012x}", i, i * 7919)
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().unwrap());
    let (n_apis, n_apps, n_subs) = (
        args.next().unwrap_or(1000),
        args.next().unwrap_or(1000),
        args.next().unwrap_or(10_000),
    );
    let mut state = State::new();
    let urls = ["http://127.0.0.1:8000".to_string()];
    for i in 0..n_apis {
        let paths = [
            ("GET", "/items"),
            ("GET", "/items/{id}"),
            ("POST", "/items"),
        ];
        let definition = api(
            &format!("Api{i}"),
            &format!("/api{i}"),
            "1.0.0",
            resources(&paths),
            &urls,
        );
        run(
            &mut state,
            Command::CreateApi {
                api_id: uuid(1, i),
                definition,
            },
        );
        run(
            &mut state,
            Command::ChangeLifecycle {
                api_id: uuid(1, i),
                target: lifecycle::State::Published,
                expected_version: None,
            },
        );
    }
    for i in 0..n_apps {
        let created = Event::ApplicationCreated(ApplicationCreated {
            name: format!("App{i}"),
            owner: format!("owner{}", i % 100),
            throttling_tier: "10PerMin".into(),
            description: String::new(),
        });
        let e = PendingEvent::first(
            AggregateKind::Application,
            uuid(2, i),
            Consistency::log(&state),
            created,
        );
        commit(&mut state, vec![e]);
    }
    for i in 0..n_subs {
        let created = Event::SubscriptionCreated(SubscriptionCreated {
            application_id: uuid(2, i % n_apps),
            api_id: uuid(1, i / n_apps % n_apis),
            tier: "Gold".into(),
        });
        let e = PendingEvent::first(
            AggregateKind::Subscription,
            uuid(3, i),
            Consistency::log(&state),
            created,
        );
        commit(&mut state, vec![e]);
    }
    let table = RoutingTable::build(&state, &Metrics::default());
    // Calls: subscription i's application calling its API.
    let calls: Vec<(String, String, AccessClaims)> = (0..4096)
        .map(|k| {
            let i = (k * 7_919) % n_subs.max(1);
            let app = uuid(2, i % n_apps);
            let path = format!("/api{}/1.0.0/items/{k}", i / n_apps % n_apis);
            let claims = AccessClaims {
                iss: String::new(),
                sub: String::new(),
                aud: String::new(),
                exp: i64::MAX,
                nbf: 0,
                iat: 1,
                jti: uuid(9, k),
                scope: String::new(),
                client_id: uuid(8, i % n_apps),
                application_id: app.clone(),
                application_name: String::new(),
                key_type: String::new(),
                application_tier: String::new(),
            };
            (path, app, claims)
        })
        .collect();
    let calls_per_run = 1_000_000;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        let mut found = 0usize;
        for n in 0..calls_per_run {
            let (path, app, claims) = &calls[n % calls.len()];
            if let RouteMatch::Matched(route) = table.route(&Method::GET, path) {
                if route.api.subscriptions.get(app.as_str()).is_some() {
                    found += 1;
                }
                if table.application(app).is_some_and(|a| a.limit.is_some()) {
                    found += 1;
                }
                if table.check_revocation(claims).is_ok() {
                    found += 1;
                }
            }
        }
        black_box(found);
        best = best.min(started.elapsed().as_nanos() as f64 / calls_per_run as f64);
    }
    println!(
        "{n_apis} APIs, {n_apps} applications, {n_subs} subscriptions: {best:.0} ns per call (route, subscription, application, revocation)"
    );
}

//! Config propagation benchmark: the time from an admin change's return to the last of
//! three replicas serving it, over many changes; prints p50 / p99 / max.
//!
//! ```text
//! cargo run --release -p gatehouse-gateway --example propagation -- 200
//! cargo run --release -p gatehouse-gateway --example propagation -- 200 10000 10000 100000 1
//! ```
//!
//! Optional arguments after the number of changes: a configuration to serve beside the
//! API that changes — that many more APIs (published), applications and subscriptions,
//! appended straight to the log (as control would, without deciding each one) before
//! the replicas start — and the number of replicas (3 by default).
//!
//! A real nats-server (started here), three gateway replicas in this process following
//! it, and the admin side as a command executor on the same stream (control's write
//! path without its gRPC front: a change "returns" once the executor's own fold has it,
//! as control's RPCs do). Each change alternately blocks and re-publishes an API; a
//! replica "serves" the change when a call through it answers 503 (blocked) or 200
//! again. Polling is over HTTP, every replica in turn, so the figure includes what a
//! client would see.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use gatehouse_domain::{AggregateKind, Consistency, EventMeta, PendingEvent};
use gatehouse_eventlog::{AppendRequest, EventLog, Expectation, subject};
use gatehouse_proto::events::lifecycle::State as Lifecycle;
use gatehouse_proto::events::{
    ApiCreated, ApiLifecycleChanged, ApplicationCreated, SubscriptionCreated, event_envelope::Event,
};
use gatehouse_testkit::nats::NatsServer;
use gatehouse_testkit::world::LogLocation;
use gatehouse_testkit::world::{numbered_api, numbered_id};
use http::StatusCode;
use prost::Message;

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|n| n.parse().expect("numbers"))
        .collect();
    let changes = args.first().copied().unwrap_or(200);
    let (apis, apps, subs) = (
        args.get(1).copied().unwrap_or(0),
        args.get(2).copied().unwrap_or(0),
        args.get(3).copied().unwrap_or(0),
    );
    let replicas_wanted = args.get(4).copied().unwrap_or(3);
    let nats = NatsServer::start();
    let world = World::on(LogLocation::nats(nats.url()).open().await).await;
    let (echo, _) = echo_backend("echo").await;
    world.one_subscribed_api(&echo).await;
    if apis + apps + subs > 0 {
        let started = std::time::Instant::now();
        seed(world.log.as_ref(), apis, apps, subs).await;
        let end = world.log.last_sequence().await.unwrap();
        assert!(
            world.model.wait_for(end, Duration::from_secs(600)).await,
            "the seeded log was not read back"
        );
        println!(
            "seeded {apis} APIs, {apps} applications, {subs} subscriptions ({end} records) in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let dirs: Vec<_> = (0..replicas_wanted)
        .map(|_| tempfile::tempdir().unwrap())
        .collect();
    let mut replicas = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let mut config = test_config(dir.path());
        replica(&mut config, &format!("gw-{i}"));
        config.node.log.nats_url = Some(nats.url());
        let started = std::time::Instant::now();
        let gw = gatehouse_gateway::start(config, None).await.unwrap();
        wait_for_sequence(&gw, world.sequence()).await;
        println!(
            "replica gw-{i} serving sequence {} after {:.1} s",
            world.sequence(),
            started.elapsed().as_secs_f64()
        );
        replicas.push(gw);
    }
    let http = HttpClient::default();
    let token = world.token("app", false, "");
    let bases = bases(&replicas);
    let mut times = Vec::with_capacity(changes);
    for i in 0..changes {
        let (target, expected) = if i % 2 == 0 {
            (Lifecycle::Blocked, StatusCode::SERVICE_UNAVAILABLE)
        } else {
            (Lifecycle::Published, StatusCode::OK)
        };
        world.lifecycle("api", target).await;
        // Polled back to back: the figure is what a client would see.
        let took = http
            .converge_every(Duration::ZERO, &bases, "/a/1.0.0/x", Some(&token), expected)
            .await;
        times.push(took);
    }
    times.sort();
    let pick = |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "config propagation to the last of {replicas_wanted} replicas over {changes} changes: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(pick(0.50)),
        ms(pick(0.99)),
        ms(*times.last().unwrap())
    );
    for gw in replicas {
        gw.shutdown().await;
    }
}

/// Makes item `i` of one seeding stage: its aggregate, id, version and event.
type Stage<'a> = dyn Fn(usize) -> (AggregateKind, String, u64, Event) + 'a;

/// Appends `apis` published APIs, `apps` applications and `subs` subscriptions
/// (subscription `i`: application `i % apps` to API `i / apps % apis`), many appends in
/// flight at once; each kind after the one before, API creations before publications.
async fn seed(log: &dyn EventLog, apis: usize, apps: usize, subs: usize) {
    let urls = ["http://127.0.0.1:9".to_string()];
    let api_created = |i: usize| {
        let definition = numbered_api(i, &urls);
        (
            AggregateKind::Api,
            numbered_id(1, i),
            1,
            Event::ApiCreated(ApiCreated {
                definition: Some(definition),
                source_api_id: String::new(),
            }),
        )
    };
    let api_published = |i: usize| {
        (
            AggregateKind::Api,
            numbered_id(1, i),
            2,
            Event::ApiLifecycleChanged(ApiLifecycleChanged {
                from: Lifecycle::Created as i32,
                to: Lifecycle::Published as i32,
            }),
        )
    };
    let app_created = |i: usize| {
        (
            AggregateKind::Application,
            numbered_id(2, i),
            1,
            Event::ApplicationCreated(ApplicationCreated {
                name: format!("App{i}"),
                owner: format!("owner{}", i % 100),
                throttling_tier: "Unlimited".into(),
                description: String::new(),
            }),
        )
    };
    let sub_created = |i: usize| {
        (
            AggregateKind::Subscription,
            numbered_id(3, i),
            1,
            Event::SubscriptionCreated(SubscriptionCreated {
                application_id: numbered_id(2, i % apps.max(1)),
                api_id: numbered_id(1, i / apps.max(1) % apis.max(1)),
                tier: "Unlimited".into(),
            }),
        )
    };
    let stages: Vec<Box<Stage<'_>>> = vec![
        Box::new(api_created),
        Box::new(api_published),
        Box::new(app_created),
        Box::new(sub_created),
    ];
    for (stage, (make, count)) in stages.iter().zip([apis, apis, apps, subs]).enumerate() {
        futures::stream::iter(0..count)
            .map(|i| {
                let (kind, id, version, event) = make(i);
                let pending = PendingEvent {
                    kind,
                    aggregate_id: id.clone(),
                    aggregate_version: version,
                    consistency: Consistency::Aggregate { last_sequence: 0 },
                    event,
                };
                let event_id = format!("seed-{stage}-{i}");
                let envelope = pending.envelope(EventMeta {
                    event_id: event_id.clone(),
                    time: Some(gatehouse_proto::Timestamp::from(
                        std::time::SystemTime::now(),
                    )),
                    actor: "seed".into(),
                    ..Default::default()
                });
                log.append(AppendRequest {
                    subject: subject(kind.as_str(), &id),
                    msg_id: event_id,
                    headers: Vec::new(),
                    payload: envelope.encode_to_vec().into(),
                    expect: Expectation::Any,
                })
            })
            .buffer_unordered(128)
            .for_each(|appended| async move {
                appended.expect("cannot append");
            })
            .await;
    }
}

//! Config propagation benchmark: the time from an admin change's return to the last of
//! three replicas serving it, over many changes; prints p50 / p99 / max.
//!
//! ```text
//! cargo run --release -p gatehouse-gateway --example propagation -- 200
//! ```
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
use gatehouse_proto::events::lifecycle::State as Lifecycle;
use gatehouse_testkit::nats::NatsServer;
use gatehouse_testkit::world::LogLocation;
use http::StatusCode;

#[tokio::main]
async fn main() {
    let changes: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let nats = NatsServer::start();
    let world = World::on(LogLocation::nats(nats.url()).open().await).await;
    let (echo, _) = echo_backend("echo").await;
    world.one_subscribed_api(&echo).await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut replicas = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let mut config = test_config(dir.path());
        replica(&mut config, &format!("gw-{i}"));
        config.node.log.nats_url = Some(nats.url());
        let gw = gatehouse_gateway::start(config, None).await.unwrap();
        wait_for_sequence(&gw, world.sequence()).await;
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
        "config propagation to the last of 3 replicas over {changes} changes: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(pick(0.50)),
        ms(pick(0.99)),
        ms(*times.last().unwrap())
    );
    for gw in replicas {
        gw.shutdown().await;
    }
}

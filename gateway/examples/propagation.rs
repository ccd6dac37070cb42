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

use common::*;
use gatehouse_testkit::nats::NatsServer;
use gatehouse_testkit::world::LogLocation;

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
    let (replicas, _dirs) = nats_replicas(&world, &nats.url()).await;
    let times = propagation_times(&world, &bases(&replicas), changes).await;
    println!(
        "config propagation to the last of 3 replicas over {changes} changes: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        quantile_ms(&times, 0.50),
        quantile_ms(&times, 0.99),
        quantile_ms(&times, 1.0)
    );
    for gw in replicas {
        gw.shutdown().await;
    }
}

//! Chaos benchmark on a NATS cluster of three (JetStream, stream replicas 3): the write
//! unavailability when a NATS node dies (one that does not lead the stream, then the
//! stream leader), and the config propagation to three replicas; each figure printed
//! beside its target.
//!
//! ```text
//! cargo run --release -p gatehouse-gateway --example cluster_chaos -- 200 3
//! ```
//!
//! (200 changes for propagation, 3 kills of each kind.) Three nats-servers clustered on
//! loopback (started here), three gateway replicas in this process following the
//! cluster by its seed list, and the admin side as a command executor on the stream
//! (control's write path without its gRPC front: a write "returns" once the executor's
//! own fold has it, as control's RPCs do).
//!
//! - **Write unavailability**: three writers create applications back to back; a node
//!   is killed (SIGKILL); the figure is the longest time without an acknowledged write
//!   from the kill on. The node comes back before the next round.
//! - **Propagation**: each change blocks or re-publishes an API; the figure is the time
//!   from the write's return until every replica answers accordingly over HTTP.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use gatehouse_domain::Command;
use gatehouse_eventlog::{EventLog, NatsLog, NatsLogConfig};
use gatehouse_node::commands::CallContext;
use gatehouse_testkit::nats::NatsCluster;

/// Writers on `world` until stopped; the instants of their acknowledged writes.
struct Writers {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Instant>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(world: &Arc<World>, n: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acks: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let tasks = (0..n)
            .map(|_| {
                let (world, stop, acks) = (world.clone(), stop.clone(), acks.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let id = uuid::Uuid::new_v4().to_string();
                        let command = Command::CreateApplication {
                            application_id: id.clone(),
                            name: id,
                            owner: "bench".into(),
                            throttling_tier: "Unlimited".into(),
                            description: String::new(),
                        };
                        if world
                            .exec
                            .execute(command, &CallContext::default())
                            .await
                            .is_ok()
                        {
                            acks.lock().unwrap().push(Instant::now());
                        } else {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                })
            })
            .collect();
        Writers { stop, acks, tasks }
    }

    fn acked(&self) -> usize {
        self.acks.lock().unwrap().len()
    }

    /// Waits for `more` acknowledged writes (at most a minute).
    async fn wait_for_more(&self, more: usize) {
        let target = self.acked() + more;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.acked() < target && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The longest time without an ack from `since` on.
    fn longest_pause_after(&self, since: Instant) -> Duration {
        gatehouse_testkit::chaos::longest_pause_after(
            self.acks.lock().unwrap().iter().copied(),
            since,
        )
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let changes: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(200);
    let rounds: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(3);
    let mut cluster = NatsCluster::start(3);
    let log: Arc<dyn EventLog> = Arc::new(
        NatsLog::connect(NatsLogConfig {
            replicas: 3,
            client_name: "bench-admin".into(),
            ..NatsLogConfig::new(cluster.urls())
        })
        .await
        .unwrap(),
    );
    let world = Arc::new(World::on(log).await);
    let (echo, _) = echo_backend("echo").await;
    world.one_subscribed_api(&echo).await;
    let (replicas, _dirs) = nats_replicas(&world, &cluster.urls()).await;

    // Propagation.
    let times = propagation_times(&world, &bases(&replicas), changes).await;
    println!(
        "propagation to the last of 3 replicas on the cluster over {changes} changes: p50 {:.2} ms, p99 {:.2} ms (target <= 5 ms), max {:.2} ms",
        quantile_ms(&times, 0.50),
        quantile_ms(&times, 0.99),
        quantile_ms(&times, 1.0)
    );

    // Write unavailability.
    for leader in [false, true] {
        let mut pauses = Vec::new();
        for _ in 0..rounds {
            let writers = Writers::start(&world, 3);
            writers.wait_for_more(30).await;
            let stream_leader = cluster.stream_leader("GATEHOUSE").expect("a stream leader");
            let victim = if leader {
                stream_leader
            } else {
                (0..cluster.len())
                    .find(|&i| i != stream_leader)
                    .expect("a follower")
            };
            let at = Instant::now();
            cluster.kill(victim);
            writers.wait_for_more(30).await;
            let pause = writers.longest_pause_after(at);
            writers.stop().await;
            pauses.push(pause);
            cluster.restart(victim);
            for gw in &replicas {
                wait_for_sequence(gw, world.sequence()).await;
            }
        }
        let what = if leader {
            "the stream leader"
        } else {
            "a NATS node (not the stream leader)"
        };
        let shown: Vec<String> = pauses.iter().map(|p| seconds(*p)).collect();
        println!(
            "write unavailability on the loss of {what} (kill -9), {rounds} rounds: {} — max {} (target <= 3 s)",
            shown.join(", "),
            seconds(*pauses.iter().max().unwrap())
        );
    }
    for gw in replicas {
        gw.shutdown().await;
    }
}

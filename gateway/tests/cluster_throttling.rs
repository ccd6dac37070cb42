//! Throttling across replicas on a NATS cluster: the replicas share their counts over the
//! throttle exchange, so a limit holds (within ±10 %) whatever the spread of the calls,
//! and as replicas leave and join.
//!
//! Three replicas in this process follow a world on a three-node NATS cluster (stream
//! replicas 3), each with its own exchange connection to the cluster. Four applications
//! are subscribed to one API at a tier of 60 calls a minute; each sends 120 calls, paced
//! (a load, not a flood: what the replicas may admit beyond a limit is what they admit
//! within one report interval), all in one fixed window:
//!
//! - spread evenly over the three replicas (round-robin);
//! - all on one replica;
//! - 2:1 over two replicas;
//! - round-robin over three replicas, one of which leaves after 60 calls while a new one
//!   joins and takes its place.
//!
//! Each must be admitted between 54 and 66 times; every refusal is the subscription
//! tier's 429. A replica cut off from the exchange falls back to its share (the
//! throttle unit tests, and `tests/chaos.rs` for a gateway cut off from NATS).

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use gatehouse_eventlog::{EventLog, NatsLog, NatsLogConfig};
use gatehouse_gateway::RunningGateway;
use gatehouse_proto::events::throttle_policy::Level;
use gatehouse_testkit::nats::NatsCluster;
use gatehouse_testkit::poll::Poll;
use http::StatusCode;

const CALLS: usize = 120;
const LIMIT: u64 = 60;

/// Replica `id` on the world's log, exchanging counts over the cluster, falling back to
/// a third of each limit when cut off.
async fn replica_on(
    world: &World,
    cluster: &NatsCluster,
    id: &str,
) -> (RunningGateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(world, dir.path(), |config| {
        replica(config, id);
        config.replica_count = 3;
        config.throttle_sync_interval_ms = 100;
        config.node.log.nats_url = Some(cluster.urls());
    })
    .await;
    (gw, dir)
}

/// Waits until every replica counts the others' calls, hearing `peers` others.
async fn wait_shared(replicas: &[&RunningGateway], peers: u64) {
    Poll::new(format!(
        "every replica's throttle exchange live with {peers} peers"
    ))
    .timeout(Duration::from_secs(60))
    .every(Duration::from_millis(50))
    .until_async(|| async {
        for r in replicas {
            let m = &r.gateway.metrics;
            let (shared, heard) = (
                m.throttle_shared.load(Ordering::Relaxed),
                m.throttle_peers.load(Ordering::Relaxed),
            );
            if !shared || heard < peers {
                return Err(format!("{}: shared {shared}, peers {heard}", r.id));
            }
        }
        Ok(())
    })
    .await
}

/// One application's calls: `calls` calls paced `pace` apart, call `i` to the replica
/// at `target(i)`; returns how many were admitted.
async fn send(
    http: &HttpClient,
    token: &str,
    pace: Duration,
    calls: usize,
    mut target: impl FnMut(usize) -> String,
) -> usize {
    let mut admitted = 0;
    let mut ticker = tokio::time::interval(pace);
    for i in 0..calls {
        ticker.tick().await;
        let reply = http
            .get(&format!("{}/client/1.0.0/users", target(i)), Some(token))
            .await;
        match reply.status {
            StatusCode::OK => admitted += 1,
            StatusCode::TOO_MANY_REQUESTS => assert_eq!(reply.code(), 900804, "{reply:?}"),
            other => panic!("unexpected {other}: {reply:?}"),
        }
    }
    admitted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_limit_holds_across_replicas_whatever_the_spread() {
    let cluster = NatsCluster::start(3);
    let log: Arc<dyn EventLog> = Arc::new(
        NatsLog::connect(NatsLogConfig {
            replicas: 3,
            ..NatsLogConfig::new(cluster.urls())
        })
        .await
        .unwrap(),
    );
    let world = World::on(log).await;
    let (echo, _) = echo_backend("echo").await;
    world
        .policy("SixtyPerMinute", Level::Subscription, LIMIT, 60)
        .await;
    let mut definition = client_api(echo);
    definition.subscription_tiers = vec!["SixtyPerMinute".into()];
    world.publish_api("client-api", definition).await;
    let phases = ["even", "one", "two-to-one", "churn"];
    for app in phases {
        world.application(app, "").await;
        world
            .subscribe(&format!("sub-{app}"), app, "client-api", "SixtyPerMinute")
            .await;
    }
    let (a, _a) = replica_on(&world, &cluster, "gw-a").await;
    let (b, _b) = replica_on(&world, &cluster, "gw-b").await;
    let (c, _c) = replica_on(&world, &cluster, "gw-c").await;
    let (leaving, _l) = replica_on(&world, &cluster, "gw-leaving").await;
    wait_shared(&[&a, &b, &c, &leaving], 3).await;
    let base = |gw: &RunningGateway| format!("http://{}", gw.http_addr);
    let (a_url, b_url, c_url, leaving_url) = (base(&a), base(&b), base(&c), base(&leaving));

    // 120 calls 80 ms apart take about 10 s: start in the first 40 s of a minute so that
    // every phase falls in one fixed window.
    let into_minute = now() % 60;
    if into_minute > 40 {
        tokio::time::sleep(Duration::from_secs((61 - into_minute) as u64)).await;
    }
    let window = now() / 60;
    let pace = Duration::from_millis(80);
    let http = HttpClient::default();
    let token = |app: &str| world.token(app, false, "");

    let tokens = phases.map(token);
    let even = {
        let urls = [a_url.clone(), b_url.clone(), c_url.clone()];
        send(&http, &tokens[0], pace, CALLS, move |i| urls[i % 3].clone())
    };
    let one = send(&http, &tokens[1], pace, CALLS, |_| a_url.clone());
    let two_to_one = {
        let urls = [b_url.clone(), b_url.clone(), c_url.clone()];
        send(&http, &tokens[2], pace, CALLS, move |i| urls[i % 3].clone())
    };
    // Churn: round-robin over a, b and the leaving replica; after 60 calls it stops and
    // a new replica joins in its place.
    let churn = async {
        let urls = [a_url.clone(), b_url.clone(), leaving_url.clone()];
        let first = send(&http, &tokens[3], pace, CALLS / 2, |i| urls[i % 3].clone()).await;
        leaving.shutdown().await;
        let (joined, dir) = replica_on(&world, &cluster, "gw-joined").await;
        let urls = [a_url.clone(), b_url.clone(), base(&joined)];
        let second = send(&http, &tokens[3], pace, CALLS / 2, |i| urls[i % 3].clone()).await;
        (first + second, joined, dir)
    };
    let (even, one, two_to_one, (churn, _joined, _dir)) =
        tokio::join!(even, one, two_to_one, churn);
    assert_eq!(now() / 60, window, "the phases ran in one window");
    let admitted = [even, one, two_to_one, churn];
    println!("admitted of {CALLS} calls at {LIMIT}/min (even, one, 2:1, churn): {admitted:?}");
    for (phase, admitted) in phases.iter().zip(admitted) {
        assert!(
            (54..=66).contains(&admitted),
            "{phase}: {admitted} admitted, not within 10 % of {LIMIT}"
        );
    }
}

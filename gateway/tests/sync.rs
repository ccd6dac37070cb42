//! Replicas kept in sync by the event log, with a real nats-server: convergence after
//! every kind of admin change, a replica restarted, a replica started with control and
//! NATS both down (disk snapshot, stale), a replica started with control down on a
//! stream purged up to its disk snapshot (the snapshot plus the log after it, not
//! stale), a replica meeting a gap in the stream (resyncs, never skips), NATS
//! restarting under running replicas, and poison records (undecodable, or a kind its
//! subject does not name) quarantined.
//!
//! Convergence is asserted, never speed: each check polls until every replica answers
//! as expected, within a generous deadline.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use gatehouse_domain::Command;
use gatehouse_eventlog::{AppendRequest, Expectation};
use gatehouse_gateway::RunningGateway;
use gatehouse_proto::events::lifecycle::State as Lifecycle;
use gatehouse_testkit::nats::NatsServer;
use gatehouse_testkit::poll::Poll;
use gatehouse_testkit::world::LogLocation;
use http::StatusCode;

/// A replica in this process following NATS itself (control unreachable).
async fn nats_replica(nats: &NatsServer, dir: &std::path::Path, id: &str) -> RunningGateway {
    let mut config = test_config(dir);
    replica(&mut config, id);
    config.node.log.nats_url = Some(nats.url());
    gatehouse_gateway::start(config, None).await.unwrap()
}

async fn nats_world(nats: &NatsServer) -> World {
    World::on(LogLocation::nats(nats.url()).open().await).await
}

async fn seed(world: &World) -> (String, String) {
    let (client, order) = seed_backends().await;
    world
        .publish_api(
            "client-api",
            api(
                "Client",
                "/client",
                "1.0.0",
                resources(&[("GET", "/users")]),
                std::slice::from_ref(&client),
            ),
        )
        .await;
    world
        .publish_api(
            "order-api",
            api(
                "Order",
                "/orders",
                "1.0.0",
                resources(&[("GET", "/items")]),
                std::slice::from_ref(&order),
            ),
        )
        .await;
    world.application("app1", "").await;
    world
        .subscribe("sub1", "app1", "client-api", "Unlimited")
        .await;
    (client, order)
}

#[tokio::test]
async fn every_replica_applies_every_kind_of_admin_change() {
    let nats = NatsServer::start();
    let world = nats_world(&nats).await;
    seed(&world).await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut replicas = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        replicas.push(nats_replica(&nats, dir.path(), &format!("gw-{i}")).await);
    }
    let all = bases(&replicas);
    let http = HttpClient::default();
    let token = world.token("app1", false, "default");
    let t = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);

    let d = http
        .converge(&all, "/client/1.0.0/users", Some(&token), StatusCode::OK)
        .await;
    println!("initial configuration on 3 replicas: {}", t(d));

    // A new subscription.
    http.converge(
        &all,
        "/orders/1.0.0/items",
        Some(&token),
        StatusCode::FORBIDDEN,
    )
    .await;
    world
        .subscribe("sub2", "app1", "order-api", "Unlimited")
        .await;
    let d = http
        .converge(&all, "/orders/1.0.0/items", Some(&token), StatusCode::OK)
        .await;
    println!("new subscription: {}", t(d));

    // Block, then publish again.
    world.lifecycle("order-api", Lifecycle::Blocked).await;
    let d = http
        .converge(
            &all,
            "/orders/1.0.0/items",
            Some(&token),
            StatusCode::SERVICE_UNAVAILABLE,
        )
        .await;
    println!("block: {}", t(d));
    world.lifecycle("order-api", Lifecycle::Published).await;
    http.converge(&all, "/orders/1.0.0/items", Some(&token), StatusCode::OK)
        .await;

    // A new API published.
    let (echo, _) = echo_backend("new").await;
    world
        .publish_api(
            "new-api",
            api("New", "/new", "1.0.0", resources(&[("GET", "/x")]), &[echo]),
        )
        .await;
    world
        .subscribe("sub3", "app1", "new-api", "Unlimited")
        .await;
    let d = http
        .converge(&all, "/new/1.0.0/x", Some(&token), StatusCode::OK)
        .await;
    println!("publish: {}", t(d));

    // Retire.
    world.lifecycle("new-api", Lifecycle::Deprecated).await;
    world.lifecycle("new-api", Lifecycle::Retired).await;
    let d = http
        .converge(&all, "/new/1.0.0/x", Some(&token), StatusCode::NOT_FOUND)
        .await;
    println!("retire: {}", t(d));

    // A revoked token.
    let claims = claims("app1", false, "default");
    let doomed = world.sign(claims.clone());
    http.converge(&all, "/client/1.0.0/users", Some(&doomed), StatusCode::OK)
        .await;
    world
        .run(Command::RevokeToken {
            jti: claims.jti,
            expires_at: None,
            client_id: claims.client_id,
        })
        .await;
    let d = http
        .converge(
            &all,
            "/client/1.0.0/users",
            Some(&doomed),
            StatusCode::UNAUTHORIZED,
        )
        .await;
    println!("token revocation: {}", t(d));

    // Every replica serves exactly the same configuration.
    let sequence = world.sequence();
    for replica in &replicas {
        wait_for_sequence(replica, sequence).await;
    }
    let hashes: Vec<String> = replicas
        .iter()
        .map(|r| r.gateway.table.load().config_hash.clone())
        .collect();
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");
    for replica in replicas {
        replica.shutdown().await;
    }
}

#[tokio::test]
async fn a_restarted_replica_catches_up_and_a_replica_with_nothing_to_reach_serves_its_disk_snapshot()
 {
    let mut nats = NatsServer::start();
    let world = nats_world(&nats).await;
    seed(&world).await;
    let token = world.token("app1", false, "default");
    let dir = tempfile::tempdir().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let replica = nats_replica(&nats, dir.path(), "gw-a").await;
    let other = nats_replica(&nats, other_dir.path(), "gw-b").await;
    let http = HttpClient::default();
    http.converge(
        &bases([&replica, &other]),
        "/client/1.0.0/users",
        Some(&token),
        StatusCode::OK,
    )
    .await;

    // Killed (stopped), the log moves on, restarted: it catches up.
    replica.shutdown().await;
    world
        .subscribe("sub2", "app1", "order-api", "Unlimited")
        .await;
    let replica = nats_replica(&nats, dir.path(), "gw-a").await;
    http.converge(
        &bases([&replica, &other]),
        "/orders/1.0.0/items",
        Some(&token),
        StatusCode::OK,
    )
    .await;
    wait_for_sequence(&replica, world.sequence()).await;
    let saved = wait_for_disk_snapshot(dir.path(), world.sequence()).await;
    replica.shutdown().await;

    // Control is unreachable (it always is here) and NATS goes down: a replica started
    // now serves the snapshot it saved, and says it is stale.
    nats.stop();
    let stale = nats_replica(&nats, dir.path(), "gw-a").await;
    wait_for_sequence(&stale, saved).await;
    let ready = http
        .get(&format!("http://{}/readyz", stale.http_addr), None)
        .await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{ready:?}");
    assert_eq!(ready.json()["status"], "stale");
    assert_eq!(ready.json()["stale"], true);
    assert!(stale.gateway.metrics.stale.load(Ordering::Acquire));
    http.converge(
        &bases([&stale]),
        "/client/1.0.0/users",
        Some(&token),
        StatusCode::OK,
    )
    .await;
    http.converge(
        &bases([&stale]),
        "/orders/1.0.0/items",
        Some(&token),
        StatusCode::OK,
    )
    .await;

    // NATS is back: the stale replica follows the log from its snapshot, the running one
    // resumes following without a restart; both apply a new change.
    nats.restart();
    let ready = Poll::new("the stale replica ready after NATS came back")
        .every(Duration::from_millis(50))
        .until_async(|| async {
            let ready = http
                .get(&format!("http://{}/readyz", stale.http_addr), None)
                .await;
            if ready.status == StatusCode::OK {
                Ok(ready)
            } else {
                Err(format!("{ready:?}"))
            }
        })
        .await;
    assert_eq!(ready.json()["stale"], false);
    world.lifecycle("order-api", Lifecycle::Blocked).await;
    http.converge(
        &bases([&stale, &other]),
        "/orders/1.0.0/items",
        Some(&token),
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    stale.shutdown().await;
    other.shutdown().await;
}

/// Control unreachable, the log reachable: a replica replays the log from its own disk
/// snapshot when the snapshot fits the log — here after the stream lost every record the
/// snapshot covers, so a replay from the start is impossible — and serves the log's
/// end, not stale, with the configuration hash of a full fold.
/// A replica that followed NATS (control unreachable), wrote its disk snapshot and
/// stopped; then `sub2` (app1 to the order API) was appended, which it has not seen.
struct StoppedReplica {
    nats: NatsServer,
    world: World,
    /// app1's token.
    token: String,
    dir: tempfile::TempDir,
    /// The sequence of its disk snapshot.
    saved: u64,
}

impl StoppedReplica {
    async fn new() -> StoppedReplica {
        let nats = NatsServer::start();
        let world = nats_world(&nats).await;
        seed(&world).await;
        let token = world.token("app1", false, "default");
        let dir = tempfile::tempdir().unwrap();
        let replica = nats_replica(&nats, dir.path(), "gw-a").await;
        wait_for_sequence(&replica, world.sequence()).await;
        let saved = wait_for_disk_snapshot(dir.path(), world.sequence()).await;
        replica.shutdown().await;
        world
            .subscribe("sub2", "app1", "order-api", "Unlimited")
            .await;
        StoppedReplica {
            nats,
            world,
            token,
            dir,
            saved,
        }
    }

    /// The event stream, as anyone with the rights could change it behind the log's back.
    async fn stream(&self) -> async_nats::jetstream::stream::Stream {
        let client = async_nats::connect(self.nats.url()).await.unwrap();
        async_nats::jetstream::new(client)
            .get_stream("GATEHOUSE")
            .await
            .unwrap()
    }

    /// The replica started again on its data directory.
    async fn restart(&self) -> RunningGateway {
        nats_replica(&self.nats, self.dir.path(), "gw-a").await
    }
}

#[tokio::test]
async fn a_replica_replays_from_its_disk_snapshot_when_the_stream_lost_its_start() {
    let stopped = StoppedReplica::new().await;
    let (world, token) = (&stopped.world, &stopped.token);
    stopped
        .stream()
        .await
        .purge()
        .sequence(stopped.saved + 1)
        .await
        .unwrap();

    let replica = stopped.restart().await;
    wait_for_sequence(&replica, world.sequence()).await;
    // Its first table was already the log's end: it never served the older snapshot.
    assert_eq!(
        replica.gateway.metrics.table_swaps.load(Ordering::Relaxed),
        1
    );
    let http = HttpClient::default();
    let ready = http
        .get(&format!("http://{}/readyz", replica.http_addr), None)
        .await;
    assert_eq!(ready.status, StatusCode::OK, "{ready:?}");
    assert_eq!(ready.json()["stale"], false);
    assert_eq!(
        ready.json()["config_hash"],
        world.model.read().config_hash().as_str()
    );
    http.converge(
        &bases([&replica]),
        "/orders/1.0.0/items",
        Some(token),
        StatusCode::OK,
    )
    .await;
    replica.shutdown().await;
}

/// A record gone from the middle of the stream (deleted behind the log's back) after a
/// replica stopped: restarted with control unreachable, the replica meets the gap and
/// resyncs; with no snapshot from control and no whole log to replay, it never skips
/// the gap — it serves its table from before it, holding nothing of the change after
/// it, and keeps asking for a way past.
#[tokio::test]
async fn a_replica_that_meets_a_gap_resyncs_and_never_skips_it() {
    let stopped = StoppedReplica::new().await;
    let gap = stopped.world.sequence();
    assert!(gap > stopped.saved);
    stopped
        .world
        .lifecycle("client-api", Lifecycle::Blocked)
        .await;
    assert!(stopped.stream().await.delete_message(gap).await.unwrap());

    let replica = stopped.restart().await;
    Poll::new("a resync at the gap")
        .timeout(Duration::from_secs(60))
        .until_async(|| async { replica.gateway.metrics.resyncs.load(Ordering::Relaxed) >= 1 })
        .await;
    let applied = replica.gateway.table.load().sequence;
    assert!(
        applied < gap,
        "serves a table from before the gap, not {applied}"
    );
    // The API blocked after the gap is still served, from the table before it.
    HttpClient::default()
        .converge(
            &bases([&replica]),
            "/client/1.0.0/users",
            Some(&stopped.token),
            StatusCode::OK,
        )
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        replica.gateway.table.load().sequence < gap,
        "still before the gap"
    );
    replica.shutdown().await;
}

/// Waits until the replica's disk snapshot covers `sequence`; returns its sequence.
async fn wait_for_disk_snapshot(dir: &std::path::Path, sequence: u64) -> u64 {
    let disk = gatehouse_gateway::disk::DiskSnapshot::new(dir);
    let snapshot = Poll::new(format!("a disk snapshot at {sequence}"))
        .until_async(|| async {
            disk.load()
                .ok()
                .flatten()
                .filter(|snapshot| snapshot.sequence >= sequence)
        })
        .await;
    assert!(
        snapshot.clients.iter().all(|c| c.secret_hash.is_empty()),
        "no secret hash on the gateway's disk"
    );
    snapshot.sequence
}

#[tokio::test]
async fn poison_records_are_quarantined_not_replayed_forever() {
    let world = World::new().await;
    seed(&world).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&world, dir.path(), |_| {}).await;
    let http = HttpClient::default();
    let token = world.token("app1", false, "default");
    http.converge(
        &bases([&gw]),
        "/client/1.0.0/users",
        Some(&token),
        StatusCode::OK,
    )
    .await;
    let quarantined = || gatehouse_node::fold::QUARANTINED.load(Ordering::Relaxed);
    let before = quarantined();
    let good = world.sequence();
    // Bytes that are not an event, then a signing key of someone else's published on an
    // API subject: what anyone able to publish on NATS could store.
    let forged = gatehouse_tokens::SigningKeyPair::generate("ES256").unwrap();
    let forged_event = gatehouse_proto::events::EventEnvelope {
        event_id: "forged".into(),
        aggregate_id: forged.kid().to_string(),
        aggregate_version: 1,
        event: Some(
            gatehouse_proto::events::event_envelope::Event::SigningKeyPublished(
                gatehouse_proto::events::SigningKeyPublished {
                    key: Some(forged.to_signing_key_record()),
                },
            ),
        ),
        ..Default::default()
    };
    for (subject, payload) in [
        (
            "gatehouse.events.api.junk".to_string(),
            bytes::Bytes::from_static(b"\xff\xff\xff not protobuf"),
        ),
        (
            format!("gatehouse.events.api.{}", forged.kid()),
            bytes::Bytes::from(prost::Message::encode_to_vec(&forged_event)),
        ),
    ] {
        world
            .log
            .append(AppendRequest {
                subject,
                msg_id: uuid::Uuid::new_v4().to_string(),
                headers: vec![],
                payload,
                expect: Expectation::Any,
            })
            .await
            .unwrap();
    }
    // A good change after them still arrives: the replica moved past both, counting
    // them, without resyncing.
    world.lifecycle("order-api", Lifecycle::Blocked).await;
    wait_for_sequence(&gw, good + 3).await;
    assert!(
        quarantined() >= before + 2,
        "both records counted as quarantined"
    );
    assert_eq!(gw.gateway.metrics.resyncs.load(Ordering::Relaxed), 0);
    let metrics = http
        .get(&format!("http://{}/metrics", gw.http_addr), None)
        .await;
    assert!(
        String::from_utf8_lossy(&metrics.body)
            .contains("gatehouse_gateway_events_quarantined_total"),
        "the alert metric is exposed"
    );
    // The forged key is not trusted: its tokens are refused.
    let forged_token = forged.sign(&claims("app1", false, "default")).unwrap();
    let refused = http
        .get(
            &format!("https://{}/client/1.0.0/users", gw.https_addr),
            Some(&forged_token),
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    http.converge(
        &bases([&gw]),
        "/client/1.0.0/users",
        Some(&token),
        StatusCode::OK,
    )
    .await;
    http.converge(
        &bases([&gw]),
        "/orders/1.0.0/items",
        Some(&token),
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    let ready = http
        .get(&format!("http://{}/readyz", gw.http_addr), None)
        .await;
    assert_eq!(ready.status, StatusCode::OK, "still following: {ready:?}");
    gw.shutdown().await;
}

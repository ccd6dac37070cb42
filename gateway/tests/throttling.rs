//! Throttling with several replicas and no throttle exchange (no NATS: the fallback):
//! each replica enforces its share of a limit (`ceil(limit / replica_count)`), so the
//! replicas together admit the policy's limit. With NATS the replicas share their
//! counts instead: `cluster_throttling.rs`.

mod common;

use common::*;
use gatehouse_proto::events::throttle_policy::Level;
use http::StatusCode;

#[tokio::test]
async fn each_replica_enforces_its_share_and_together_they_admit_the_limit() {
    let world = World::new().await;
    let (echo, calls) = echo_backend("echo").await;
    world.policy("TenPerMinute", Level::Api, 10, 60).await;
    let mut definition = client_api(echo);
    definition.api_throttling_tier = "TenPerMinute".into();
    world.publish_api("client-api", definition).await;
    world.application("app1", "").await;
    world
        .subscribe("sub1", "app1", "client-api", "Unlimited")
        .await;
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut replicas = Vec::new();
    for dir in &dirs {
        replicas.push(gateway(&world, dir.path(), |c| c.replica_count = 2).await);
    }
    let http = HttpClient::default();
    let token = world.token("app1", false, "");
    // Fixed windows are aligned on the clock: keep the 14 calls (well under a second)
    // inside one minute by not starting in its last five seconds.
    let into_minute = now() % 60;
    if into_minute >= 55 {
        tokio::time::sleep(std::time::Duration::from_secs((61 - into_minute) as u64)).await;
    }
    // A round-robin load balancer: calls alternate between the replicas.
    let mut admitted = 0;
    for i in 0..14 {
        let replica = &replicas[i % 2];
        let reply = http
            .get(
                &format!("http://{}/client/1.0.0/users", replica.http_addr),
                Some(&token),
            )
            .await;
        match reply.status {
            StatusCode::OK => {
                admitted += 1;
                assert_eq!(
                    reply.header("x-ratelimit-limit"),
                    Some("5"),
                    "each replica advertises its share"
                );
            }
            StatusCode::TOO_MANY_REQUESTS => assert_eq!(reply.code(), 900800),
            other => panic!("unexpected {other}: {reply:?}"),
        }
    }
    assert_eq!(admitted, 10, "2 replicas x ceil(10 / 2)");
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        10,
        "refused calls never reach the backend"
    );
}

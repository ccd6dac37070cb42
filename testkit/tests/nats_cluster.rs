//! The cluster starter does what later tests will lean on: three nodes form a JetStream
//! cluster, a replicated stream takes writes through any node, and it keeps them when
//! its leader's node is killed.

use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, stream};
use gatehouse_testkit::nats::NatsCluster;
use gatehouse_testkit::poll::Poll;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_stream_survives_the_loss_of_its_leaders_node() {
    let mut cluster = NatsCluster::start(3);
    assert_eq!(cluster.len(), 3);
    let seeds = cluster.urls();
    assert_eq!(seeds.split(',').count(), 3, "{seeds}");
    assert!(seeds.split(',').all(|u| u.starts_with("nats://127.0.0.1:")));

    let first = jetstream::new(async_nats::connect(cluster.url(0)).await.unwrap());
    let mut created = Poll::new("a stream with 3 replicas")
        .every(Duration::from_millis(200))
        .until_async(|| {
            let first = first.clone();
            async move {
                first
                    .get_or_create_stream(stream::Config {
                        name: "TESTKIT".into(),
                        subjects: vec!["testkit.>".into()],
                        num_replicas: 3,
                        storage: stream::StorageType::File,
                        ..Default::default()
                    })
                    .await
            }
        })
        .await;
    first
        .publish("testkit.one", "before".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let info = created.info().await.unwrap();
    assert_eq!(info.config.num_replicas, 3);
    let leader = info
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .unwrap();
    let dead = cluster
        .index_of(&leader)
        .expect("the leader is one of ours");

    cluster.kill(dead);
    let survivor = (dead + 1) % 3;
    let other = jetstream::new(async_nats::connect(cluster.url(survivor)).await.unwrap());
    // A new stream leader is elected among the two left; until then a publish fails.
    Poll::new("a publish through a surviving node")
        .every(Duration::from_millis(200))
        .until_async(|| {
            let other = other.clone();
            async move {
                // The message id makes a retry of a publish that was stored count once.
                let message = PublishMessage::build()
                    .payload("after".into())
                    .message_id("two");
                match other.send_publish("testkit.two", message).await {
                    Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await;
    let mut stream = other.get_stream("TESTKIT").await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, 2, "{info:?}");
    let new_leader = info.cluster.as_ref().and_then(|c| c.leader.clone());
    assert_ne!(new_leader.as_deref(), Some(leader.as_str()));
    for (sequence, payload) in [(1, "before"), (2, "after")] {
        let message = stream.get_raw_message(sequence).await.unwrap();
        assert_eq!(message.payload, payload.as_bytes());
    }

    // The killed node comes back into the cluster.
    cluster.restart(dead);
    assert!(cluster.node_mut(dead).is_running());
}

//! control restarts from its snapshot: the real binary, on the embedded log (snapshot
//! file in its data directory) and on NATS (snapshot in the `gatehouse-snapshots-control`
//! bucket), killed and started again.
//!
//! - With a good snapshot it starts from it (`gatehouse_state_restored_from_sequence`)
//!   and folds the events after it: its state — what it serves to gateways, sequence and
//!   config hash included — is the one before the restart and the one a full replay of
//!   the log gives.
//! - With the snapshot damaged or missing it replays the whole log, says so, and serves
//!   the same state.
//! - NATS: after the stream is purged up to the snapshot, it starts from the snapshot;
//!   with the snapshot damaged too, it refuses to start and says what to do.

mod support;

use std::time::Duration;

use gatehouse_node::pki::NodeRole;
use gatehouse_node::read_model::Follower;
use gatehouse_proto::admin::gateway_sync_client::GatewaySyncClient;
use gatehouse_proto::admin::{
    CreateApiRequest, CreateApplicationRequest, GetSnapshotRequest, SubscribeRequest,
};
use gatehouse_proto::events::Snapshot;
use gatehouse_testkit::nats::NatsServer;
use gatehouse_testkit::poll::Poll;
use gatehouse_testkit::snapshot::{NodeSnapshot, node_metric};
use gatehouse_testkit::world::{api, resources};
use support::{AdminKeys, ControlProcess, LogLocation};

/// Snapshots every ten events, never by time.
const SNAPSHOT_FLAGS: &[&str] = &[
    "--snapshot-every-events",
    "10",
    "--snapshot-interval-seconds",
    "0",
];

/// control's state as it serves it to gateways (its config hash included).
async fn served(control: &ControlProcess) -> Snapshot {
    let channel = control
        .pki
        .node_tls(NodeRole::Gateway, "gateway-1")
        .channel(&control.url())
        .unwrap();
    GatewaySyncClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .get_snapshot(GetSnapshotRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// One of control's metrics.
async fn metric(control: &ControlProcess, name: &str) -> u64 {
    node_metric(control.metrics_addr, "control", name).await
}

/// `count` APIs, applications and subscriptions through the admin API.
async fn configure(control: &ControlProcess, prefix: &str, count: usize) {
    let mut client = control.client().await;
    for i in 0..count {
        let definition = api(
            &format!("{prefix}{i}"),
            &format!("/{prefix}{i}"),
            "1.0.0",
            resources(&[("GET", "/x")]),
            &["http://127.0.0.1:9".to_string()],
        );
        let api = client
            .create_api(CreateApiRequest {
                definition: Some(definition),
            })
            .await
            .unwrap()
            .into_inner();
        let app = client
            .create_application(CreateApplicationRequest {
                name: format!("{prefix}-app-{i}"),
                throttling_tier: "Unlimited".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let _ = (api, app);
    }
}

/// What a full replay of control's log gives, redacted as control serves it; control
/// must be stopped (the embedded log admits one process).
async fn replayed(location: &LogLocation) -> Snapshot {
    let log = location.open().await;
    let follower = Follower::rebuild(log, Duration::from_secs(60))
        .await
        .unwrap();
    let mut snapshot = follower.model.read().to_snapshot();
    gatehouse_domain::redact::redact_snapshot(&mut snapshot);
    snapshot
}

/// The cases every backend goes through; leaves control stopped.
async fn restarts(control: &mut ControlProcess, store: &NodeSnapshot) {
    configure(control, "before", 8).await;
    Poll::new("control's first snapshot")
        .timeout(Duration::from_secs(30))
        .until_async(|| async { metric(control, "gatehouse_snapshot_sequence").await >= 10 })
        .await;
    let snapshotted = metric(control, "gatehouse_snapshot_sequence").await;
    // A few events after the last snapshot: fewer than ten, none is due.
    let mut client = control.client().await;
    let apis = served(control).await.apis;
    let application = client
        .create_application(CreateApplicationRequest {
            name: "after".into(),
            throttling_tier: "Unlimited".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let _ = client
        .change_lifecycle(gatehouse_proto::admin::ChangeLifecycleRequest {
            api_id: apis[0].id.clone(),
            target: gatehouse_proto::events::lifecycle::State::Published as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    client
        .subscribe(SubscribeRequest {
            application_id: application.id.clone(),
            api_id: apis[0].id.clone(),
            tier: "Unlimited".into(),
        })
        .await
        .unwrap();
    let before = served(control).await;
    let last_snapshot = metric(control, "gatehouse_snapshot_sequence").await;
    assert!(before.sequence > last_snapshot, "events after the snapshot");

    // Killed, started again: from the snapshot, plus the events after it.
    control.restart().await;
    let restored = metric(control, "gatehouse_state_restored_from_sequence").await;
    assert!(
        restored >= snapshotted && restored == last_snapshot,
        "restored from {restored}, the last snapshot was at {last_snapshot}"
    );
    assert_eq!(served(control).await, before);
    assert_eq!(
        metric(control, "gatehouse_applied_sequence").await,
        before.sequence
    );

    // Damaged: a replay, said so, the same state.
    control.stop();
    store.damage().await;
    control.restart().await;
    assert_eq!(
        metric(control, "gatehouse_state_restored_from_sequence").await,
        0
    );
    assert_eq!(served(control).await, before);
    let output = control.output();
    assert!(
        output.contains("no usable snapshot") && output.contains("corrupt"),
        "control says why it replays:\n{output}"
    );

    // Missing: a replay, the same state.
    control.stop();
    store.remove().await;
    control.restart().await;
    assert_eq!(
        metric(control, "gatehouse_state_restored_from_sequence").await,
        0
    );
    assert_eq!(served(control).await, before);

    // A clean stop writes a snapshot at the end; the next start needs no event after it.
    control.terminate();
    control.restart().await;
    assert_eq!(
        metric(control, "gatehouse_state_restored_from_sequence").await,
        before.sequence
    );
    assert_eq!(served(control).await, before);
    control.stop();
    assert_eq!(
        replayed(&control.location).await,
        before,
        "a full replay agrees"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_from_its_snapshot_on_the_embedded_log() {
    let dir = tempfile::tempdir().unwrap();
    let location = LogLocation::Embedded(dir.path().to_path_buf());
    let keys = AdminKeys::publish(&location).await;
    let mut control =
        ControlProcess::start_with_args(dir.path(), location, keys, SNAPSHOT_FLAGS).await;
    let store = NodeSnapshot::file(dir.path());
    restarts(&mut control, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_from_its_snapshot_on_nats_and_across_a_purge() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start();
    let location = LogLocation::nats(nats.url());
    let keys = AdminKeys::publish(&location).await;
    let mut control =
        ControlProcess::start_with_args(dir.path(), location.clone(), keys, SNAPSHOT_FLAGS).await;
    let store = NodeSnapshot::nats(&nats.url(), "control");
    restarts(&mut control, &store).await;
    let before = replayed(&location).await;

    // The stream loses every record up to the snapshot (a clean stop wrote one at the
    // end): the snapshot still gives the whole state.
    control.restart().await;
    control.terminate();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream.get_stream("GATEHOUSE").await.unwrap();
    stream.purge().sequence(before.sequence + 1).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 0);
    control.restart().await;
    assert_eq!(
        metric(&control, "gatehouse_state_restored_from_sequence").await,
        before.sequence
    );
    assert_eq!(served(&control).await, before);
    // And goes on taking changes.
    configure(&control, "purged", 1).await;

    // Without a usable snapshot, there is no history to replay: control refuses to
    // start, and says what to do.
    control.stop();
    store.overwrite(b"damaged").await;
    let output = control.start_failing();
    assert!(
        output.contains("the event log starts at sequence")
            && output.contains("Restore the snapshot")
            && output.contains("gatehouse-snapshots-control"),
        "control says why it cannot start:\n{output}"
    );
}

//! token-service restarts from its snapshot: the real binary, on the embedded log
//! (snapshot file in its data directory) and on NATS (snapshot in the
//! `gatehouse-snapshots-token-service` bucket), killed and started again.
//!
//! Its snapshot holds what only it may hold, the clients' secret hashes: after a start
//! from the snapshot the admin client still authenticates, revocations made before the
//! snapshot and after it both hold, and live tokens still introspect as active. A damaged
//! or missing snapshot means a replay with the same answers; on NATS, after a purge of
//! the stream the snapshot alone carries the state, and without it the service refuses
//! to start, saying what to do.

mod support;

use std::time::Duration;

use gatehouse_testkit::nats::NatsServer;
use gatehouse_testkit::poll::Poll;
use gatehouse_testkit::snapshot::{NodeSnapshot, node_metric};
use support::*;

const ADMIN_ID: &str = "gatehouse-admin";
const ADMIN_SECRET: &str = "admin-secret-0123456789";

/// Options with snapshots every five events and metrics on `metrics`.
fn with_snapshots(options: Options, metrics: std::net::SocketAddr) -> Options {
    options
        .with_admin(ADMIN_ID, ADMIN_SECRET)
        .with_env("GATEHOUSE_SNAPSHOT_EVERY_EVENTS", 5)
        .with_env("GATEHOUSE_SNAPSHOT_INTERVAL_SECONDS", 0)
        .with_env("GATEHOUSE_METRICS_LISTEN", metrics)
}

async fn metric(metrics: std::net::SocketAddr, name: &str) -> u64 {
    node_metric(metrics, "token-service", name).await
}

/// Tokens revoked before and after the snapshot, and one live one.
struct Tokens {
    revoked: Vec<String>,
    live: String,
}

/// What a restarted service must still say about `tokens`, and that the admin client
/// (its hash from the snapshot or the replay) still authenticates.
async fn assert_remembers(ts: &TokenService, tokens: &Tokens) {
    let admin = (ADMIN_ID, ADMIN_SECRET);
    for token in &tokens.revoked {
        assert_eq!(
            ts.introspect(admin, token).await,
            serde_json::json!({"active": false})
        );
    }
    assert_eq!(ts.introspect(admin, &tokens.live).await["active"], true);
    let fresh = ts.token(ADMIN_ID, ADMIN_SECRET, "").await.access_token;
    assert_eq!(ts.introspect(admin, &fresh).await["active"], true);
}

async fn revoke(ts: &TokenService, token: &str) {
    let answer = ts
        .post_form(
            "/oauth2/revoke",
            Some((ADMIN_ID, ADMIN_SECRET)),
            &format!("token={token}"),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}

/// The cases every backend goes through; returns the service running.
async fn restarts(
    ts: TokenService,
    metrics: std::net::SocketAddr,
    store: &NodeSnapshot,
) -> (TokenService, Tokens) {
    let mut issued = Vec::new();
    for _ in 0..8 {
        issued.push(ts.token(ADMIN_ID, ADMIN_SECRET, "").await.access_token);
    }
    for token in &issued[..6] {
        revoke(&ts, token).await;
    }
    Poll::new("token-service's first snapshot")
        .timeout(Duration::from_secs(30))
        .until_async(|| async { metric(metrics, "gatehouse_snapshot_sequence").await >= 5 })
        .await;
    let snapshot = metric(metrics, "gatehouse_snapshot_sequence").await;
    // One revocation after the snapshot (fewer than five: no snapshot is due).
    revoke(&ts, &issued[6]).await;
    let applied = metric(metrics, "gatehouse_applied_sequence").await;
    let last_snapshot = metric(metrics, "gatehouse_snapshot_sequence").await;
    assert!(applied > last_snapshot && last_snapshot >= snapshot);
    let tokens = Tokens {
        revoked: issued[..7].to_vec(),
        live: issued[7].clone(),
    };

    // Killed, started again: from the snapshot, plus the revocation after it.
    let ts = ts.restart();
    assert_eq!(
        metric(metrics, "gatehouse_state_restored_from_sequence").await,
        last_snapshot
    );
    assert_eq!(metric(metrics, "gatehouse_applied_sequence").await, applied);
    assert_remembers(&ts, &tokens).await;

    // Damaged: a replay, said so, the same answers.
    let mut ts = ts;
    ts.stop();
    store.damage().await;
    let ts = ts.restart();
    assert_eq!(
        metric(metrics, "gatehouse_state_restored_from_sequence").await,
        0
    );
    let output = ts.output();
    assert!(
        output.contains("no usable snapshot") && output.contains("corrupt"),
        "token-service says why it replays:\n{output}"
    );
    assert_remembers(&ts, &tokens).await;

    // Missing: a replay, the same answers.
    let mut ts = ts;
    ts.stop();
    store.remove().await;
    let ts = ts.restart();
    assert_eq!(
        metric(metrics, "gatehouse_state_restored_from_sequence").await,
        0
    );
    assert_remembers(&ts, &tokens).await;
    (ts, tokens)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_from_its_snapshot_on_the_embedded_log() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = gatehouse_testkit::ports::free_addr();
    let ts = TokenService::start(with_snapshots(Options::embedded(dir.path()), metrics));
    let store = NodeSnapshot::file(dir.path());
    let (mut ts, _) = restarts(ts, metrics, &store).await;
    // The last start replayed (its snapshot removed); a clean stop writes one again,
    // and the file is the service's own.
    ts.terminate();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("state.snapshot"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    drop(ts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_from_its_snapshot_on_nats_and_across_a_purge() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start();
    let metrics = gatehouse_testkit::ports::free_addr();
    let ts = TokenService::start(with_snapshots(
        Options::nats(dir.path(), &nats.url()),
        metrics,
    ));
    let store = NodeSnapshot::nats(&nats.url(), "token-service");
    let (mut ts, tokens) = restarts(ts, metrics, &store).await;

    // A clean stop writes a snapshot at the end; then the stream loses every record.
    ts.terminate();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream.get_stream("GATEHOUSE").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    stream.purge().sequence(last + 1).await.unwrap();
    let ts = TokenService::start(ts.options.clone());
    assert_eq!(
        metric(metrics, "gatehouse_state_restored_from_sequence").await,
        last
    );
    assert_remembers(&ts, &tokens).await;

    // Without a usable snapshot there is no history to replay: it refuses to start.
    let mut ts = ts;
    ts.stop();
    store.overwrite(b"damaged").await;
    let output = ts.start_failing();
    assert!(
        output.contains("the event log starts at sequence")
            && output.contains("Restore the snapshot")
            && output.contains("gatehouse-snapshots-token-service"),
        "token-service says why it cannot start:\n{output}"
    );
}

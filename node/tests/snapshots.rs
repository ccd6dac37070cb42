//! Starting a folding node's state from a snapshot, on both backends: each case is
//! written once, in `cases`, against a [`Backend`] (the embedded log with the snapshot
//! file beside it; a real nats-server with the snapshot in an object-store bucket), and
//! checks what the start did against a full replay of the same log.
//!
//! - a good snapshot: the state and its config hash equal a full replay's, the events
//!   after the snapshot are folded, and the start read only those;
//! - a damaged snapshot, a missing one, one of another log (past the log's end, or
//!   anchored on another record): the log is replayed from the start;
//! - NATS only (the embedded log never drops records, `first_sequence` is always 1): a
//!   stream purged up to a sequence, with a snapshot at or after the purge (restored),
//!   an older one or none (the start fails, saying what to do);
//! - the writer: snapshots are written every N events, and once more at a clean stop.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use async_trait::async_trait;
use gatehouse_domain::{Command, State};
use gatehouse_eventlog::{EventLog, SnapshotStore};
use gatehouse_node::read_model::{Follower, ReadModel, RebuildError, Snapshots};
use gatehouse_node::snapshot::{Origin, RestoreError, SnapshotArgs, restore, write_snapshot};
use gatehouse_proto::Timestamp;
use gatehouse_testkit::poll::Poll;
use gatehouse_testkit::world::{World, api, resources};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A log, the store of its snapshots, and ways to damage them.
#[async_trait]
trait Backend: Send {
    /// A new empty log (each call another log).
    async fn new_log(&mut self) -> Arc<dyn EventLog>;
    /// The store of the node under test's snapshots.
    async fn store(&mut self) -> Arc<dyn SnapshotStore>;
    /// Replaces the stored snapshot's bytes.
    async fn overwrite(&mut self, bytes: Vec<u8>);
    /// Removes the records of the latest log before `sequence`, if the backend can.
    async fn purge_before(&mut self, sequence: u64) -> bool;
}

/// Some of everything: APIs, a policy, applications with keys (secret hashes),
/// subscriptions with granted scopes, a revoked token; returns the last sequence.
async fn configure(world: &World, prefix: &str) -> u64 {
    let urls = ["http://127.0.0.1:9".to_string()];
    for i in 0..3 {
        let definition = api(
            &format!("{prefix}Api{i}"),
            &format!("/{prefix}{i}"),
            "1.0.0",
            resources(&[("GET", "/x")]),
            &urls,
        );
        world
            .publish_api(&format!("{prefix}-api-{i}"), definition)
            .await;
    }
    world
        .policy(
            &format!("{prefix}Tier"),
            gatehouse_proto::events::throttle_policy::Level::Subscription,
            5,
            60,
        )
        .await;
    for i in 0..2 {
        let app = format!("{prefix}-app-{i}");
        world.application(&app, "").await;
        world
            .subscribe(
                &format!("{prefix}-sub-{i}"),
                &app,
                &format!("{prefix}-api-{i}"),
                "Unlimited",
            )
            .await;
    }
    world
        .run(Command::RevokeToken {
            jti: format!("{prefix}-jti"),
            expires_at: Some(Timestamp {
                seconds: gatehouse_testkit::world::now() + 3600,
                nanos: 0,
            }),
            client_id: format!("{prefix}-app-0-prod"),
        })
        .await
}

/// The state a full replay of `log` gives.
async fn replayed(log: &Arc<dyn EventLog>) -> State {
    let follower = Follower::rebuild(log.clone(), TIMEOUT).await.unwrap();
    follower.model.read().clone()
}

fn args() -> SnapshotArgs {
    SnapshotArgs {
        snapshot_every_events: 0,
        snapshot_interval_seconds: 0,
        ..SnapshotArgs::default()
    }
}

/// Starts a node's state on `log` with `store`.
async fn start(
    log: &Arc<dyn EventLog>,
    store: &Arc<dyn SnapshotStore>,
) -> Result<Follower, RebuildError> {
    let snapshots = Snapshots {
        store: store.clone(),
        args: args(),
    };
    Follower::start("test", log.clone(), Some(snapshots), TIMEOUT).await
}

/// Why a start on `log` with `store` replays from the start.
async fn replay_reason(log: &Arc<dyn EventLog>, store: &Arc<dyn SnapshotStore>) -> String {
    match restore(log.as_ref(), Some(store.as_ref()))
        .await
        .unwrap()
        .origin
    {
        Origin::Start { reason } => reason,
        other => panic!("expected a replay, got {other:?}"),
    }
}

/// Asserts that `follower` holds what a full replay of `log` gives, restored from the
/// snapshot at `from` (0: replayed from the start).
async fn assert_like_a_replay(follower: &Follower, log: &Arc<dyn EventLog>, from: u64) {
    let state = follower.model.read().clone();
    let replay = replayed(log).await;
    assert_eq!(state.sequence(), log.last_sequence().await.unwrap());
    assert_eq!(state.config_hash(), replay.config_hash());
    assert!(state == replay, "the restored state differs from a replay");
    assert_eq!(follower.model.snapshots.restored_from.load(Relaxed), from);
}

mod cases {
    use super::*;

    pub async fn a_good_snapshot_is_restored_and_followed(backend: &mut impl Backend) {
        let log = backend.new_log().await;
        let store = backend.store().await;
        let world = World::on(log.clone()).await;
        let at = configure(&world, "before").await;
        assert_eq!(write_snapshot(&world.model, store.as_ref()).await, Some(at));
        // Events after the snapshot, touching what it holds.
        configure(&world, "after").await;
        world
            .run(Command::Unsubscribe {
                subscription_id: "before-sub-1".into(),
            })
            .await;
        let follower = start(&log, &store).await.unwrap();
        assert_like_a_replay(&follower, &log, at).await;
        let state = follower.model.read().clone();
        assert!(
            state
                .client("before-app-0-prod")
                .is_some_and(|c| !c.secret_hash.is_empty())
        );
        assert!(state.subscription("before-sub-1").is_none());
        assert!(state.revoked_token("after-jti").is_some());
        // It goes on following.
        let next = world
            .lifecycle(
                "before-api-0",
                gatehouse_proto::events::lifecycle::State::Blocked,
            )
            .await;
        assert!(follower.model.wait_for(next, TIMEOUT).await);
    }

    pub async fn a_damaged_snapshot_means_a_replay(backend: &mut impl Backend) {
        let log = backend.new_log().await;
        let store = backend.store().await;
        let world = World::on(log.clone()).await;
        configure(&world, "a").await;
        write_snapshot(&world.model, store.as_ref()).await.unwrap();
        configure(&world, "b").await;
        let good = store.load().await.unwrap().unwrap().encode().unwrap();
        let mut damaged = good.clone();
        let middle = damaged.len() / 2;
        damaged[middle] ^= 0x10;
        backend.overwrite(damaged).await;
        let reason = replay_reason(&log, &store).await;
        assert!(reason.contains("corrupt"), "{reason}");
        let follower = start(&log, &store).await.unwrap();
        assert_like_a_replay(&follower, &log, 0).await;
        drop(follower);
        // Another format version: the same.
        let mut other = good;
        other[8] = 9;
        backend.overwrite(other).await;
        let reason = replay_reason(&log, &store).await;
        assert!(reason.contains("format 9"), "{reason}");
        let follower = start(&log, &store).await.unwrap();
        assert_like_a_replay(&follower, &log, 0).await;
    }

    pub async fn a_missing_snapshot_means_a_replay(backend: &mut impl Backend) {
        let log = backend.new_log().await;
        let store = backend.store().await;
        let world = World::on(log.clone()).await;
        configure(&world, "a").await;
        assert!(store.load().await.unwrap().is_none());
        let reason = replay_reason(&log, &store).await;
        assert!(reason.contains("no snapshot"), "{reason}");
        let follower = start(&log, &store).await.unwrap();
        assert_like_a_replay(&follower, &log, 0).await;
    }

    /// A snapshot taken on another log: past this log's end, or at a sequence this log
    /// holds another record at. Never restored.
    pub async fn a_snapshot_of_another_log_means_a_replay(backend: &mut impl Backend) {
        let store = backend.store().await;
        let other = backend.new_log().await;
        let other_world = World::on(other.clone()).await;
        configure(&other_world, "x").await;
        configure(&other_world, "y").await;
        write_snapshot(&other_world.model, store.as_ref())
            .await
            .unwrap();
        drop(other_world);

        // Shorter than the snapshot.
        let log = backend.new_log().await;
        let world = World::on(log.clone()).await;
        configure(&world, "a").await;
        assert!(
            log.last_sequence().await.unwrap()
                < store.load().await.unwrap().unwrap().header.sequence
        );
        let reason = replay_reason(&log, &store).await;
        assert!(reason.contains("past the log's last record"), "{reason}");
        let follower = start(&log, &store).await.unwrap();
        assert_like_a_replay(&follower, &log, 0).await;
        drop(follower);

        // Longer: at the snapshot's sequence it holds another record.
        configure(&world, "b").await;
        configure(&world, "c").await;
        assert!(
            log.last_sequence().await.unwrap()
                > store.load().await.unwrap().unwrap().header.sequence
        );
        let reason = replay_reason(&log, &store).await;
        assert!(
            reason.contains("not the one the snapshot was taken at"),
            "{reason}"
        );
        let follower = start(&log, &store).await.unwrap();
        assert_like_a_replay(&follower, &log, 0).await;
    }

    pub async fn snapshots_are_written_every_n_events_and_at_a_clean_stop(
        backend: &mut impl Backend,
    ) {
        let log = backend.new_log().await;
        let store = backend.store().await;
        let world = World::on(log.clone()).await;
        let snapshots = Snapshots {
            store: store.clone(),
            args: SnapshotArgs {
                snapshot_every_events: 10,
                snapshot_interval_seconds: 0,
                ..SnapshotArgs::default()
            },
        };
        let follower = Follower::start("test", log.clone(), Some(snapshots), TIMEOUT)
            .await
            .unwrap();
        let before = world.sequence();
        let mut rounds = 0;
        while world.sequence() < before + 25 {
            configure(&world, &format!("n{rounds}")).await;
            rounds += 1;
        }
        Poll::new("a snapshot of the first ten events after the start")
            .timeout(TIMEOUT)
            .until(|| follower.model.snapshots.last_sequence.load(Relaxed) >= before + 10);
        let saved = store.load().await.unwrap().unwrap();
        assert!(saved.header.sequence >= before + 10);
        assert!(follower.model.snapshots.written.load(Relaxed) >= 1);
        assert_eq!(follower.model.snapshots.failed.load(Relaxed), 0);
        // A few more events than a snapshot is due for, then a clean stop.
        world
            .lifecycle(
                "n0-api-0",
                gatehouse_proto::events::lifecycle::State::Blocked,
            )
            .await;
        let end = world.sequence();
        assert!(follower.model.wait_for(end, TIMEOUT).await);
        follower.close().await;
        assert_eq!(store.load().await.unwrap().unwrap().header.sequence, end);
        let restarted = start(&log, &store).await.unwrap();
        assert_like_a_replay(&restarted, &log, end).await;
    }
}

/// One `#[tokio::test]` per case, on the backend built by `$backend`.
macro_rules! recovery_tests {
    ($backend:expr) => {
        recovery_tests!(@case $backend;
            a_good_snapshot_is_restored_and_followed,
            a_damaged_snapshot_means_a_replay,
            a_missing_snapshot_means_a_replay,
            a_snapshot_of_another_log_means_a_replay,
            snapshots_are_written_every_n_events_and_at_a_clean_stop,
        );
    };
    (@case $backend:expr; $($case:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let mut backend = $backend;
                crate::cases::$case(&mut backend).await;
            }
        )*
    };
}

mod file {
    use gatehouse_eventlog::{FileLog, FileSnapshotStore};
    use tempfile::TempDir;

    use super::*;

    struct FileBackend {
        dir: TempDir,
        logs: usize,
    }

    impl FileBackend {
        fn new() -> FileBackend {
            FileBackend {
                dir: tempfile::tempdir().unwrap(),
                logs: 0,
            }
        }

        fn snapshot_path(&self) -> std::path::PathBuf {
            SnapshotArgs::file(&self.dir.path().join("node"))
        }
    }

    #[async_trait]
    impl Backend for FileBackend {
        async fn new_log(&mut self) -> Arc<dyn EventLog> {
            self.logs += 1;
            let dir = self.dir.path().join(format!("log-{}", self.logs));
            Arc::new(FileLog::open(dir).unwrap())
        }

        async fn store(&mut self) -> Arc<dyn SnapshotStore> {
            Arc::new(FileSnapshotStore::new(self.snapshot_path(), 1 << 30))
        }

        async fn overwrite(&mut self, bytes: Vec<u8>) {
            std::fs::write(self.snapshot_path(), bytes).unwrap();
        }

        async fn purge_before(&mut self, _: u64) -> bool {
            false
        }
    }

    recovery_tests!(FileBackend::new());
}

mod nats {
    use async_nats::jetstream;
    use gatehouse_eventlog::{NatsLog, NatsLogConfig, NatsSnapshotStore};

    use gatehouse_testkit::nats::NatsServer;

    use super::*;

    const BUCKET: &str = "gatehouse-snapshots-test";

    struct NatsBackend {
        server: NatsServer,
        /// Each log is another stream on the server.
        stream: String,
        logs: usize,
    }

    impl NatsBackend {
        fn new() -> NatsBackend {
            NatsBackend {
                server: NatsServer::start(),
                stream: String::new(),
                logs: 0,
            }
        }

        async fn connect(&self, stream: &str) -> NatsLog {
            NatsLog::connect(NatsLogConfig {
                stream: stream.to_string(),
                ..NatsLogConfig::new(self.server.url())
            })
            .await
            .unwrap()
        }
    }

    #[async_trait]
    impl Backend for NatsBackend {
        async fn new_log(&mut self) -> Arc<dyn EventLog> {
            // One stream takes the event subjects at a time.
            if !self.stream.is_empty() {
                let client = async_nats::connect(self.server.url()).await.unwrap();
                jetstream::new(client)
                    .delete_stream(&self.stream)
                    .await
                    .unwrap();
            }
            self.logs += 1;
            self.stream = format!("EVENTS_{}", self.logs);
            Arc::new(self.connect(&self.stream).await)
        }

        async fn store(&mut self) -> Arc<dyn SnapshotStore> {
            let client = async_nats::connect(self.server.url()).await.unwrap();
            Arc::new(
                NatsSnapshotStore::open(&client, BUCKET, 1, 1 << 30)
                    .await
                    .unwrap(),
            )
        }

        async fn overwrite(&mut self, bytes: Vec<u8>) {
            let client = async_nats::connect(self.server.url()).await.unwrap();
            jetstream::new(client)
                .get_object_store(BUCKET)
                .await
                .unwrap()
                .put("state", &mut std::io::Cursor::new(bytes))
                .await
                .unwrap();
        }

        async fn purge_before(&mut self, sequence: u64) -> bool {
            self.stream()
                .await
                .purge()
                .sequence(sequence)
                .await
                .unwrap();
            true
        }
    }

    impl NatsBackend {
        /// The latest log's stream, as anyone with the rights could change it behind the
        /// log's back.
        async fn stream(&self) -> jetstream::stream::Stream {
            let client = async_nats::connect(self.server.url()).await.unwrap();
            jetstream::new(client)
                .get_stream(&self.stream)
                .await
                .unwrap()
        }

        /// A new log, the store of its snapshots, and a world writing on the log.
        async fn with_world(&mut self) -> (Arc<dyn EventLog>, Arc<dyn SnapshotStore>, World) {
            let log = self.new_log().await;
            let store = self.store().await;
            let world = World::on(log.clone()).await;
            (log, store, world)
        }
    }

    recovery_tests!(NatsBackend::new());

    /// A record gone from the middle of the stream (deleted behind the log's back) while
    /// a follower is behind it: the follower never skips it. It rebuilds from the newest
    /// snapshot, which is older than the gap, meets the gap again and stays put, holding
    /// nothing past it; once a node that folded the record writes a newer snapshot, the
    /// follower rebuilds from that one and follows on, equal to that node.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_follower_that_meets_a_gap_never_skips_it_and_rebuilds_from_a_newer_snapshot() {
        let mut backend = NatsBackend::new();
        let (log, store, world) = backend.with_world().await;
        let before_gap = configure(&world, "a").await;
        write_snapshot(&world.model, store.as_ref()).await.unwrap();
        let end = configure(&world, "b").await;
        let deleted = backend.stream().await.delete_message(before_gap + 1).await;
        assert!(deleted.unwrap());

        let rebuilds = || gatehouse_node::metrics::REBUILDS.load(Relaxed);
        let rebuilds_before = rebuilds();
        let model = ReadModel::new();
        let following = tokio::spawn(model.clone().follow_with(log.clone(), Some(store.clone())));
        Poll::new("two rebuilds at the gap")
            .timeout(TIMEOUT)
            .until_async(|| async { rebuilds() >= rebuilds_before + 2 })
            .await;
        assert_eq!(model.applied(), before_gap, "stopped before the gap");
        assert!(
            model.read().application("b-app-0").is_none(),
            "nothing past the gap"
        );

        // A node that folded the record writes a snapshot past the gap.
        assert_eq!(
            write_snapshot(&world.model, store.as_ref()).await,
            Some(end)
        );
        assert!(model.wait_for(end, TIMEOUT).await, "rebuilt past the gap");
        let more = configure(&world, "c").await;
        assert!(model.wait_for(more, TIMEOUT).await, "following on");
        assert!(
            *model.read() == *world.model.read(),
            "equal to the node that folded every record"
        );
        following.abort();
    }

    /// A stream purged up to a sequence: a snapshot at the purge's edge or after it
    /// restores the state (equal to what the whole history gave), an older snapshot or
    /// none fails the start with what to do.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_purged_stream_needs_a_snapshot_that_covers_the_purge() {
        let mut backend = NatsBackend::new();
        let (log, store, world) = backend.with_world().await;
        let old = configure(&world, "a").await;
        write_snapshot(&world.model, store.as_ref()).await.unwrap();
        let old_snapshot = store.load().await.unwrap().unwrap();
        let at = configure(&world, "b").await;
        write_snapshot(&world.model, store.as_ref()).await.unwrap();
        configure(&world, "c").await;
        let whole = replayed(&log).await;

        // Records 1..=at gone: the snapshot at `at` is the edge of what remains.
        assert!(backend.purge_before(at + 1).await);
        assert_eq!(log.first_sequence().await.unwrap(), at + 1);
        let follower = start(&log, &store).await.unwrap();
        assert!(*follower.model.read() == whole, "restored across the purge");
        assert_eq!(follower.model.snapshots.restored_from.load(Relaxed), at);
        drop(follower);

        // An older snapshot (at `old`, before the first record) cannot be completed.
        store.save(&old_snapshot).await.unwrap();
        assert!(old + 1 < at + 1);
        match start(&log, &store).await {
            Err(RebuildError::Restore(RestoreError::HistoryGone { first, reason, .. })) => {
                assert_eq!(first, at + 1);
                assert!(
                    reason.contains("older than the log's first record"),
                    "{reason}"
                );
            }
            other => panic!("expected HistoryGone, got {:?}", other.map(|_| ())),
        }

        // None at all: the same, and the message says what to do.
        backend.overwrite(b"garbage".to_vec()).await;
        let error = start(&log, &store)
            .await
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&format!("starts at sequence {}", at + 1)),
            "{error}"
        );
        assert!(error.contains("Restore the snapshot"), "{error}");
        assert!(error.contains(BUCKET), "{error}");
    }
}

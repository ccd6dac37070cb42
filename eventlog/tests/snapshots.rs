//! The conformance suite of the snapshot stores, on the model of the log's: every case is
//! written once, in `cases`, against a [`Harness`], and runs against both backends —
//! `file::*` on a [`FileSnapshotStore`] in a temporary directory, `nats::*` on a
//! [`NatsSnapshotStore`] in a real `nats-server` (which must be on `PATH`).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use gatehouse_eventlog::{SnapshotError, SnapshotHeader, SnapshotStore, StoredSnapshot};

/// The largest snapshot the cases store.
const LIMIT: u64 = 16 << 20;

/// Opens the store under test, restarts what is under it, and reaches past the store to
/// the bytes it keeps.
#[async_trait]
trait Harness: Send {
    /// A new handle on the store under test, refusing snapshots past `max_bytes`.
    async fn store(&mut self, max_bytes: u64) -> Arc<dyn SnapshotStore>;

    /// Restarts the storage under the store (the NATS server); handles are dropped.
    async fn restart(&mut self);

    /// Replaces what the store keeps with `bytes`, as a damaged disk or someone with
    /// write access to the bucket would.
    async fn overwrite(&mut self, bytes: Vec<u8>);

    /// The bytes the store keeps.
    async fn stored(&mut self) -> Vec<u8>;
}

fn snapshot(sequence: u64, state: impl Into<Bytes>) -> StoredSnapshot {
    StoredSnapshot {
        header: SnapshotHeader {
            sequence,
            anchor: format!("event-{sequence}"),
            state_hash: sequence.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        },
        state: state.into(),
    }
}

/// `len` bytes that do not repeat in short cycles (a store cannot get them right by
/// chance).
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

mod cases {
    use super::*;

    pub async fn empty_store_has_no_snapshot(harness: &mut impl Harness) {
        let store = harness.store(LIMIT).await;
        assert!(store.load().await.unwrap().is_none());
    }

    /// What is saved loads back equal, through another handle too.
    pub async fn saved_snapshot_loads_back(harness: &mut impl Harness) {
        let store = harness.store(LIMIT).await;
        let saved = snapshot(7, "seven");
        store.save(&saved).await.unwrap();
        assert_eq!(store.load().await.unwrap(), Some(saved.clone()));
        let other = harness.store(LIMIT).await;
        assert_eq!(other.load().await.unwrap(), Some(saved.clone()));
        assert_eq!(harness.stored().await, saved.encode().unwrap());
        // The empty log's snapshot: sequence 0, no anchor, no state.
        let empty = StoredSnapshot {
            header: SnapshotHeader::default(),
            state: Bytes::new(),
        };
        store.save(&empty).await.unwrap();
        assert_eq!(store.load().await.unwrap(), Some(empty));
    }

    /// Each save replaces the one before; a smaller one after a larger one is whole.
    pub async fn newest_save_wins(harness: &mut impl Harness) {
        let store = harness.store(LIMIT).await;
        store.save(&snapshot(1, pattern(300_000))).await.unwrap();
        store.save(&snapshot(2, "two")).await.unwrap();
        assert_eq!(store.load().await.unwrap(), Some(snapshot(2, "two")));
        let third = snapshot(3, pattern(1000));
        store.save(&third).await.unwrap();
        assert_eq!(store.load().await.unwrap(), Some(third));
    }

    pub async fn durable_across_restart(harness: &mut impl Harness) {
        let saved = snapshot(11, pattern(50_000));
        harness.store(LIMIT).await.save(&saved).await.unwrap();
        harness.restart().await;
        let store = harness.store(LIMIT).await;
        assert_eq!(store.load().await.unwrap(), Some(saved));
    }

    /// Larger than one NATS message (1 MiB by default) and than a chunk: many chunks.
    pub async fn large_snapshot_round_trips(harness: &mut impl Harness) {
        let store = harness.store(LIMIT).await;
        let saved = snapshot(1_000_000, pattern(5 << 20));
        store.save(&saved).await.unwrap();
        assert_eq!(store.load().await.unwrap(), Some(saved));
    }

    /// A damaged byte anywhere (the state, the header) is reported, never returned.
    pub async fn damage_is_an_error(harness: &mut impl Harness) {
        let store = harness.store(LIMIT).await;
        store.save(&snapshot(5, pattern(10_000))).await.unwrap();
        let good = harness.stored().await;
        for at in [0, 13, 30, good.len() / 2, good.len() - 1] {
            let mut damaged = good.clone();
            damaged[at] ^= 0x40;
            harness.overwrite(damaged).await;
            match store.load().await {
                Err(SnapshotError::Corrupt(_) | SnapshotError::Format { .. }) => {}
                other => panic!("damage at byte {at}: expected an error, got {other:?}"),
            }
        }
        harness.overwrite(good[..good.len() - 10].to_vec()).await;
        assert!(matches!(store.load().await, Err(SnapshotError::Corrupt(_))));
        harness.overwrite(b"not a snapshot at all".to_vec()).await;
        assert!(matches!(store.load().await, Err(SnapshotError::Corrupt(_))));
        // A good save afterwards replaces the damage.
        store.save(&snapshot(6, "six")).await.unwrap();
        assert_eq!(store.load().await.unwrap(), Some(snapshot(6, "six")));
    }

    /// A snapshot of another format version is named as such.
    pub async fn another_format_is_an_error(harness: &mut impl Harness) {
        let mut bytes = snapshot(5, "five").encode().unwrap();
        bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
        harness.overwrite(bytes).await;
        let store = harness.store(LIMIT).await;
        match store.load().await {
            Err(SnapshotError::Format { found: 2 }) => {}
            other => panic!("expected format 2, got {other:?}"),
        }
    }

    /// A store writes nothing past its limit, and reads nothing past it either.
    pub async fn limit_is_enforced_both_ways(harness: &mut impl Harness) {
        let small = harness.store(1000).await;
        let before = snapshot(1, "small");
        small.save(&before).await.unwrap();
        match small.save(&snapshot(2, pattern(2000))).await {
            Err(SnapshotError::TooLarge { limit: 1000, .. }) => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert_eq!(small.load().await.unwrap(), Some(before), "left as it was");
        harness
            .store(LIMIT)
            .await
            .save(&snapshot(3, pattern(2000)))
            .await
            .unwrap();
        match small.load().await {
            Err(SnapshotError::TooLarge { limit: 1000, .. }) => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }
}

/// One `#[tokio::test]` per case, on the harness built by `$harness`.
macro_rules! conformance_tests {
    ($harness:expr) => {
        conformance_tests!(@case $harness;
            empty_store_has_no_snapshot,
            saved_snapshot_loads_back,
            newest_save_wins,
            durable_across_restart,
            large_snapshot_round_trips,
            damage_is_an_error,
            another_format_is_an_error,
            limit_is_enforced_both_ways,
        );
    };
    (@case $harness:expr; $($case:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let mut harness = $harness;
                crate::cases::$case(&mut harness).await;
            }
        )*
    };
}

mod file {
    use gatehouse_eventlog::FileSnapshotStore;
    use tempfile::TempDir;

    use super::*;

    struct FileHarness {
        dir: TempDir,
    }

    impl FileHarness {
        fn new() -> FileHarness {
            FileHarness {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn path(&self) -> std::path::PathBuf {
            self.dir.path().join("node").join("state.snapshot")
        }
    }

    #[async_trait]
    impl Harness for FileHarness {
        async fn store(&mut self, max_bytes: u64) -> Arc<dyn SnapshotStore> {
            Arc::new(FileSnapshotStore::new(self.path(), max_bytes))
        }

        async fn restart(&mut self) {}

        async fn overwrite(&mut self, bytes: Vec<u8>) {
            std::fs::create_dir_all(self.path().parent().unwrap()).unwrap();
            std::fs::write(self.path(), bytes).unwrap();
        }

        async fn stored(&mut self) -> Vec<u8> {
            std::fs::read(self.path()).unwrap()
        }
    }

    conformance_tests!(FileHarness::new());

    /// Only its owner may read a snapshot (it holds what the node holds).
    #[cfg(unix)]
    #[tokio::test]
    async fn the_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let mut harness = FileHarness::new();
        let store = harness.store(LIMIT).await;
        store.save(&snapshot(1, "one")).await.unwrap();
        let mode = std::fs::metadata(harness.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!harness.path().with_file_name("state.snapshot.tmp").exists());
    }

    /// A save that fails (here: no room for the directory) leaves the previous one.
    #[tokio::test]
    async fn a_failed_save_leaves_the_previous_snapshot() {
        let mut harness = FileHarness::new();
        let store = harness.store(LIMIT).await;
        store.save(&snapshot(1, "one")).await.unwrap();
        // The temporary file's name taken by a directory: the write fails.
        std::fs::create_dir(harness.path().with_file_name("state.snapshot.tmp")).unwrap();
        assert!(store.save(&snapshot(2, "two")).await.is_err());
        assert_eq!(store.load().await.unwrap(), Some(snapshot(1, "one")));
    }
}

mod nats {
    use async_nats::jetstream;
    use gatehouse_eventlog::NatsSnapshotStore;
    use gatehouse_testkit::nats::NatsServer;

    use super::*;

    const BUCKET: &str = "gatehouse-snapshots-test";

    struct NatsHarness {
        server: NatsServer,
    }

    impl NatsHarness {
        fn new() -> NatsHarness {
            NatsHarness {
                server: NatsServer::start(),
            }
        }

        async fn bucket(&self) -> jetstream::object_store::ObjectStore {
            let client = async_nats::connect(self.server.url()).await.unwrap();
            jetstream::new(client)
                .get_object_store(BUCKET)
                .await
                .unwrap()
        }
    }

    #[async_trait]
    impl Harness for NatsHarness {
        async fn store(&mut self, max_bytes: u64) -> Arc<dyn SnapshotStore> {
            let client = async_nats::connect(self.server.url()).await.unwrap();
            Arc::new(
                NatsSnapshotStore::open(&client, BUCKET, 1, max_bytes)
                    .await
                    .unwrap(),
            )
        }

        async fn restart(&mut self) {
            self.server.restart();
        }

        async fn overwrite(&mut self, bytes: Vec<u8>) {
            // The bucket exists once a store was opened on it.
            let _ = self.store(LIMIT).await;
            self.bucket()
                .await
                .put("state", &mut std::io::Cursor::new(bytes))
                .await
                .unwrap();
        }

        async fn stored(&mut self) -> Vec<u8> {
            use tokio::io::AsyncReadExt;
            let mut bytes = Vec::new();
            let mut object = self.bucket().await.get("state").await.unwrap();
            object.read_to_end(&mut bytes).await.unwrap();
            bytes
        }
    }

    conformance_tests!(NatsHarness::new());

    /// The bucket is created with file storage, and a save purges the chunks of the
    /// snapshot it replaces: the bucket holds one snapshot's worth, not a history.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_bucket_keeps_one_snapshot() {
        let mut harness = NatsHarness::new();
        let store = harness.store(LIMIT).await;
        for sequence in 1..=4 {
            store
                .save(&snapshot(sequence, pattern(400_000)))
                .await
                .unwrap();
        }
        let client = async_nats::connect(harness.server.url()).await.unwrap();
        let mut stream = jetstream::new(client)
            .get_stream(format!("OBJ_{BUCKET}"))
            .await
            .unwrap();
        let info = stream.info().await.unwrap();
        assert_eq!(info.config.storage, jetstream::stream::StorageType::File);
        assert!(
            info.state.bytes < 2 * 400_000,
            "the bucket keeps {} bytes for one snapshot of 400 kB",
            info.state.bytes
        );
        assert_eq!(
            store.load().await.unwrap(),
            Some(snapshot(4, pattern(400_000)))
        );
    }
}

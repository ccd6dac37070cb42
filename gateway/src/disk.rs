//! The last configuration, kept on the gateway's own disk: served (stale) when neither
//! control nor the log answers at start, and the base of a replay when control does not
//! answer but the log does (then folded up to the log's end, so not stale).
//!
//! One file, `<data dir>/snapshot.bin`, in the snapshot format every node shares
//! (`gatehouse_eventlog::snapshot`: format version, the sequence it covers, the `msg_id`
//! of the log's record at that sequence, the config hash, a CRC-32), holding an encoded
//! `gatehouse.events.v1.Snapshot` without secret hashes. It is written to a temporary
//! file, flushed to disk and renamed over the old one, so a crash leaves either the
//! previous snapshot or the new one, never half of one; a file that fails its checksum
//! is ignored.
//!
//! The syncer saves its [`State`] itself ([`DiskSnapshot::save_state`]): the payload is
//! encoded record by record as it is written — the bytes `Snapshot::encode` would give —
//! so saving never holds a second copy of the configuration (a `Snapshot` message, or
//! its encoding) in memory; the length and checksum are written last.

use std::path::Path;

use anyhow::Context;
use bytes::Bytes;
use gatehouse_domain::State;
use gatehouse_eventlog::{FileSnapshotStore, SnapshotHeader, StoredSnapshot};
use gatehouse_proto::events::Snapshot;
use prost::Message;

/// Where the snapshot lives.
#[derive(Debug, Clone)]
pub struct DiskSnapshot {
    store: FileSnapshotStore,
}

impl DiskSnapshot {
    pub fn new(data_dir: &Path) -> Self {
        // No limit of its own: the gateway reads back only what it wrote.
        DiskSnapshot {
            store: FileSnapshotStore::new(data_dir.join("snapshot.bin"), u64::MAX),
        }
    }

    pub fn path(&self) -> &Path {
        self.store.path()
    }

    /// The file as a snapshot store (to restore a state from it against the log).
    pub fn store(&self) -> &FileSnapshotStore {
        &self.store
    }

    /// Writes `snapshot`, not anchored on any record, atomically (blocking I/O: call from
    /// a blocking task).
    pub fn save(&self, snapshot: &Snapshot) -> anyhow::Result<()> {
        let stored = StoredSnapshot {
            header: SnapshotHeader {
                sequence: snapshot.sequence,
                anchor: String::new(),
                state_hash: snapshot.config_hash,
            },
            state: Bytes::from(snapshot.encode_to_vec()),
        };
        self.store
            .save_blocking(&stored)
            .with_context(|| format!("cannot write {}", self.path().display()))
    }

    /// Writes `state` as a snapshot anchored on the record `anchor` (the `msg_id` at its
    /// sequence; empty if unknown), atomically, encoding one record at a time (blocking
    /// I/O: call from a blocking task).
    pub fn save_state(&self, state: &State, anchor: &str) -> anyhow::Result<()> {
        let header = SnapshotHeader {
            sequence: state.sequence(),
            anchor: anchor.to_string(),
            state_hash: state.config_hash_value(),
        };
        self.store
            .save_streaming(&header, |out| state.write_snapshot(out))
            .with_context(|| format!("cannot write {}", self.path().display()))
    }

    /// The saved snapshot and its anchor; `Ok(None)` when there is none.
    pub fn load_anchored(&self) -> anyhow::Result<Option<(Snapshot, String)>> {
        let Some(stored) = self
            .store
            .load_blocking()
            .with_context(|| format!("{} is not a usable snapshot", self.path().display()))?
        else {
            return Ok(None);
        };
        let snapshot = Snapshot::decode(stored.state.as_ref())
            .with_context(|| format!("{} holds no state", self.path().display()))?;
        anyhow::ensure!(
            snapshot.sequence == stored.header.sequence,
            "{} is damaged (its state is at another sequence than its header)",
            self.path().display()
        );
        Ok(Some((snapshot, stored.header.anchor)))
    }

    /// The saved snapshot; `Ok(None)` when there is none.
    pub fn load(&self) -> anyhow::Result<Option<Snapshot>> {
        Ok(self.load_anchored()?.map(|(snapshot, _)| snapshot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskSnapshot::new(dir.path());
        assert!(disk.load().unwrap().is_none());
        let snapshot = Snapshot {
            sequence: 42,
            ..Default::default()
        };
        disk.save(&snapshot).unwrap();
        assert_eq!(disk.load().unwrap().unwrap().sequence, 42);
        let mut bytes = std::fs::read(disk.path()).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(disk.path(), bytes).unwrap();
        assert!(disk.load().is_err());
    }

    #[test]
    fn a_state_is_saved_as_its_snapshot() {
        use gatehouse_domain::Command;
        use gatehouse_testkit::domain::run;
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskSnapshot::new(dir.path());
        let mut state = State::new();
        run(
            &mut state,
            Command::CreateApplication {
                application_id: "app".into(),
                name: "App".into(),
                owner: "alice".into(),
                throttling_tier: String::new(),
                description: String::new(),
            },
        );
        run(
            &mut state,
            Command::RevokeToken {
                jti: "jti".into(),
                expires_at: Some(gatehouse_proto::Timestamp {
                    seconds: i64::MAX / 2,
                    nanos: 0,
                }),
                client_id: "c".into(),
            },
        );
        disk.save_state(&state, "anchor").unwrap();
        assert_eq!(disk.load_anchored().unwrap().unwrap().1, "anchor");
        let saved = disk.load().unwrap().unwrap();
        assert_eq!(saved, state.to_snapshot());
        assert_eq!(saved.encode_to_vec(), state.to_snapshot().encode_to_vec());
        assert_eq!(State::from_snapshot(saved), state);
    }
}

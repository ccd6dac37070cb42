//! Snapshots of a folding node's state (control, token-service): written periodically
//! off the hot path, read at start so that a start costs the newest snapshot plus the
//! events after it, not the whole history.
//!
//! # Where
//!
//! A node on NATS keeps its snapshot in the JetStream object-store bucket of its role,
//! `gatehouse-snapshots-<role>` (`--snapshot-bucket`); `nats/users.conf` lets only that
//! role's users read or write it, since a snapshot holds what its node holds (control's
//! and token-service's states carry the consumer secrets' argon2 hashes, which every
//! other reader gets redacted). A node on the embedded log keeps it in its data directory,
//! `<data-dir>/state.snapshot` (mode 0600). See `gatehouse_eventlog::snapshot` for the
//! stores and the format.
//!
//! # Written
//!
//! [`SnapshotWriter`] takes an O(1) copy of the state (its maps are persistent), encodes
//! it on a blocking thread and saves it, once `--snapshot-every-events` events were
//! folded since the last snapshot, or `--snapshot-interval-seconds` after it if any was;
//! and once more when the node stops cleanly. A failed save is logged and counted; the
//! node serves on. Each snapshot carries the sequence it covers, the config hash chain
//! at that sequence (the state's own, so a restored state hashes as a replay does), and
//! the `msg_id` of the log's record at that sequence (its *anchor*).
//!
//! # Read
//!
//! [`restore`] takes the newest snapshot if it is whole (format, checksum, the state's
//! sequence and hash matching its header) and fits the log: its sequence `S` is at most
//! the log's last, at least the log's first retained record − 1, and the log's record at
//! `S`, if it still holds it, is the anchor. The node then folds from `S + 1`. Otherwise
//! — missing, damaged, of another format, older than the log's first record, past the
//! log's end or anchored on another record (a snapshot of another log) — it replays the
//! log from the start, with a warning; and if the log no longer starts at sequence 1, so
//! no replay can rebuild the state, it fails with [`RestoreError::HistoryGone`], which
//! says what to do.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use futures::StreamExt;
use gatehouse_domain::State;
use gatehouse_eventlog::{
    EventLog, FileSnapshotStore, LogError, NatsLog, NatsSnapshotStore, SnapshotError,
    SnapshotHeader, SnapshotStore, StoredSnapshot,
};
use gatehouse_proto::events::Snapshot;
use prost::Message;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::read_model::ReadModel;

/// How long reading the log's record at a snapshot's sequence may take.
const ANCHOR_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the last snapshot at a clean stop may take.
const FINAL_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the writer looks whether a snapshot is due.
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// When a folding node writes snapshots, how large they may be, and where they go on
/// NATS.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct SnapshotArgs {
    /// Write a snapshot of the state once this many events were folded since the last
    /// one (0: not by count). A restart then folds at most about this many events after
    /// the snapshot
    #[arg(long, env = "GATEHOUSE_SNAPSHOT_EVERY_EVENTS", default_value_t = 10_000)]
    pub snapshot_every_events: u64,
    /// Write a snapshot this many seconds after the last one, if any event was folded
    /// since (0: not by time). A clean stop writes one too
    #[arg(long, env = "GATEHOUSE_SNAPSHOT_INTERVAL_SECONDS", default_value_t = 300)]
    pub snapshot_interval_seconds: u64,
    /// Largest snapshot written or read, in bytes: a larger state is not saved (a
    /// warning; the next start replays more of the log), and a larger stored snapshot is
    /// not read (the log is replayed)
    #[arg(long, env = "GATEHOUSE_SNAPSHOT_MAX_BYTES", default_value_t = 1 << 30)]
    pub snapshot_max_bytes: u64,
    /// On NATS, the JetStream object-store bucket of this node's snapshots (default
    /// `gatehouse-snapshots-<role>`, the bucket `nats/users.conf` gives the role). On the
    /// embedded log the snapshot is `<data-dir>/state.snapshot`
    #[arg(long, env = "GATEHOUSE_SNAPSHOT_BUCKET")]
    pub snapshot_bucket: Option<String>,
}

impl Default for SnapshotArgs {
    fn default() -> Self {
        crate::process::parse_defaults()
    }
}

impl SnapshotArgs {
    /// The bucket of `role`'s snapshots on NATS.
    pub fn bucket(&self, role: &str) -> String {
        self.snapshot_bucket
            .clone()
            .unwrap_or_else(|| format!("gatehouse-snapshots-{role}"))
    }

    /// The snapshot file of a node on the embedded log.
    pub fn file(data_dir: &Path) -> PathBuf {
        data_dir.join("state.snapshot")
    }

    /// The store of `role`'s snapshots: the bucket on `nats` (created with `replicas`
    /// replicas, the stream's) when the node's log is there, else the file in
    /// `data_dir`. A bucket that cannot be opened (NATS permissions, an old server)
    /// leaves the node without snapshots, with a warning: it still starts, by replaying
    /// the log.
    pub async fn open(
        &self,
        role: &str,
        data_dir: &Path,
        nats: Option<(&NatsLog, usize)>,
    ) -> Option<Arc<dyn SnapshotStore>> {
        match nats {
            Some((nats, replicas)) => {
                let bucket = self.bucket(role);
                let max = self.snapshot_max_bytes;
                match NatsSnapshotStore::open(nats.client(), &bucket, replicas.max(1), max).await {
                    Ok(store) => Some(Arc::new(store)),
                    Err(error) => {
                        tracing::warn!(%error, bucket, "no snapshots: every start replays the whole log");
                        None
                    }
                }
            }
            None => Some(Arc::new(FileSnapshotStore::new(
                Self::file(data_dir),
                self.snapshot_max_bytes,
            ))),
        }
    }
}

/// What a node's snapshots have done, for its metrics. Atomics: written by the snapshot
/// writer and the start, read by the metrics endpoint.
#[derive(Debug, Default)]
pub struct SnapshotStats {
    /// The sequence of the snapshot the state was last restored from (0: replayed from
    /// the start of the log).
    pub restored_from: AtomicU64,
    /// Snapshots saved.
    pub written: AtomicU64,
    /// Snapshots that could not be saved.
    pub failed: AtomicU64,
    /// The sequence of the last snapshot saved.
    pub last_sequence: AtomicU64,
    /// The size of the last snapshot saved, in bytes.
    pub last_bytes: AtomicU64,
}

/// Why a state could not be rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("cannot read the event log: {0}")]
    Log(#[from] LogError),
    /// The log no longer holds its first records, and no snapshot covers what is gone.
    #[error(
        "the event log starts at sequence {first}: records 1 to {} are gone (a stream limit or a purge), so replaying it cannot rebuild the state, and no usable snapshot covers sequence {} or later ({reason}). Restore the snapshot ({store}) or the removed records from a backup; a node never starts from part of the history",
        first - 1,
        first - 1
    )]
    HistoryGone {
        first: u64,
        reason: String,
        store: String,
    },
}

/// Where a rebuilt state comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The snapshot at this sequence; the log is folded after it.
    Snapshot { sequence: u64 },
    /// The start of the log: no usable snapshot, for this reason.
    Start { reason: String },
}

/// A state to follow the log from.
#[derive(Debug)]
pub struct Restored {
    pub state: State,
    /// The `msg_id` of the record at the state's sequence (empty at 0).
    pub anchor: String,
    pub origin: Origin,
}

/// The newest usable snapshot of `store` as a state, or else the empty state to replay
/// the log from (see the module docs). `None`: no store.
pub async fn restore(
    log: &dyn EventLog,
    store: Option<&dyn SnapshotStore>,
) -> Result<Restored, RestoreError> {
    let first = log.first_sequence().await?;
    let last = log.last_sequence().await?;
    let reason = match store {
        None => "no snapshot store".to_string(),
        Some(store) => match usable(log, store, first, last).await {
            Ok(restored) => return Ok(restored),
            Err(reason) => reason,
        },
    };
    if first > 1 {
        return Err(RestoreError::HistoryGone {
            first,
            reason,
            store: store.map_or_else(|| "none configured".to_string(), |s| s.describe()),
        });
    }
    Ok(Restored {
        state: State::new(),
        anchor: String::new(),
        origin: Origin::Start { reason },
    })
}

/// The snapshot in `store`, if it is whole and fits the log from `first` to `last`;
/// else why not.
async fn usable(
    log: &dyn EventLog,
    store: &dyn SnapshotStore,
    first: u64,
    last: u64,
) -> Result<Restored, String> {
    let stored = match store.load().await {
        Ok(Some(stored)) => stored,
        Ok(None) => return Err(format!("no snapshot in {}", store.describe())),
        Err(error) => return Err(format!("{}: {error}", store.describe())),
    };
    let SnapshotHeader {
        sequence,
        anchor,
        state_hash,
    } = stored.header.clone();
    if sequence > last {
        return Err(format!(
            "the snapshot covers sequence {sequence}, past the log's last record {last}: it is a snapshot of another log"
        ));
    }
    if sequence.saturating_add(1) < first {
        return Err(format!(
            "the snapshot covers sequence {sequence}, older than the log's first record {first}"
        ));
    }
    if sequence >= first && sequence > 0 {
        let record = anchor_of(log, sequence).await?;
        if record != anchor {
            return Err(format!(
                "the log's record {sequence} is not the one the snapshot was taken at (msg_id {record:?}, the snapshot's {anchor:?}): it is a snapshot of another log"
            ));
        }
    }
    let state = tokio::task::spawn_blocking(move || decode(&stored))
        .await
        .map_err(|e| format!("decoding the snapshot failed: {e}"))??;
    if state.sequence() != sequence || state.config_hash_value() != state_hash {
        return Err(format!(
            "the snapshot's state is at sequence {} with hash {:016x}, its header says {sequence} and {state_hash:016x}",
            state.sequence(),
            state.config_hash_value()
        ));
    }
    Ok(Restored {
        state,
        anchor,
        origin: Origin::Snapshot { sequence },
    })
}

/// The state a stored snapshot holds.
fn decode(stored: &StoredSnapshot) -> Result<State, String> {
    let snapshot = Snapshot::decode(stored.state.as_ref())
        .map_err(|e| format!("the snapshot's state does not decode: {e}"))?;
    Ok(State::from_snapshot(snapshot))
}

/// The `msg_id` of the log's record at `sequence`.
async fn anchor_of(log: &dyn EventLog, sequence: u64) -> Result<String, String> {
    let read = async {
        let mut records = log.follow(sequence).await?;
        match records.next().await {
            Some(Ok(record)) if record.sequence == sequence => Ok(record.msg_id),
            Some(Ok(record)) => Err(LogError::Gap {
                expected: sequence,
                got: record.sequence,
            }),
            Some(Err(error)) => Err(error),
            None => Err(LogError::Unavailable("the log ended".into())),
        }
    };
    match tokio::time::timeout(ANCHOR_TIMEOUT, read).await {
        Ok(Ok(msg_id)) => Ok(msg_id),
        Ok(Err(error)) => Err(format!("cannot read the log's record {sequence}: {error}")),
        Err(_) => Err(format!(
            "the log's record {sequence} did not come within {ANCHOR_TIMEOUT:?}"
        )),
    }
}

/// Logs where a rebuilt state came from.
pub fn log_origin(node: &str, restored: &Restored, end: u64) {
    match &restored.origin {
        Origin::Snapshot { sequence } => tracing::info!(
            node,
            sequence,
            events_after = end.saturating_sub(*sequence),
            "state restored from the snapshot; folding the events after it"
        ),
        Origin::Start { reason } if end == 0 => {
            tracing::debug!(node, %reason, "empty log: starting from the empty state")
        }
        Origin::Start { reason } => tracing::warn!(
            node,
            %reason,
            events = end,
            "no usable snapshot: replaying the whole event log"
        ),
    }
}

/// When snapshots are due.
#[derive(Debug, Clone, Copy)]
struct Policy {
    every_events: u64,
    interval: Option<Duration>,
}

impl Policy {
    fn of(args: &SnapshotArgs) -> Policy {
        Policy {
            every_events: args.snapshot_every_events,
            interval: (args.snapshot_interval_seconds > 0)
                .then(|| Duration::from_secs(args.snapshot_interval_seconds)),
        }
    }

    fn due(&self, applied: u64, written: u64, since: Duration) -> bool {
        if applied <= written {
            return false;
        }
        (self.every_events > 0 && applied - written >= self.every_events)
            || self.interval.is_some_and(|interval| since >= interval)
    }
}

/// The task that writes a node's snapshots (see the module docs). Stopped, without a
/// last snapshot, when dropped; [`SnapshotWriter::finish`] writes the last one first.
pub struct SnapshotWriter {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl SnapshotWriter {
    /// Starts writing `model`'s snapshots to `store` as `args` say.
    pub fn spawn(
        model: Arc<ReadModel>,
        store: Arc<dyn SnapshotStore>,
        args: &SnapshotArgs,
    ) -> SnapshotWriter {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(write_snapshots(model, store, Policy::of(args), stopped));
        SnapshotWriter {
            stop,
            task: Some(task),
        }
    }

    /// Writes a last snapshot if the state moved since the last one (at most
    /// [`FINAL_SNAPSHOT_TIMEOUT`]), then stops.
    pub async fn finish(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take()
            && tokio::time::timeout(FINAL_SNAPSHOT_TIMEOUT, task)
                .await
                .is_err()
        {
            tracing::warn!("the last snapshot did not finish within {FINAL_SNAPSHOT_TIMEOUT:?}");
        }
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn write_snapshots(
    model: Arc<ReadModel>,
    store: Arc<dyn SnapshotStore>,
    policy: Policy,
    mut stopped: watch::Receiver<bool>,
) {
    let mut written = model.snapshots.restored_from.load(Relaxed);
    let mut since = Instant::now();
    loop {
        let stop = tokio::select! {
            () = tokio::time::sleep(CHECK_EVERY) => false,
            _ = stopped.changed() => true,
        };
        let applied = model.applied();
        // A rebuild may take the state back before the last snapshot.
        written = written.min(applied);
        if (stop && applied > written) || policy.due(applied, written, since.elapsed()) {
            if let Some(sequence) = write_snapshot(&model, store.as_ref()).await {
                written = sequence;
            }
            since = Instant::now();
        }
        if stop {
            return;
        }
    }
}

/// Saves a snapshot of `model`'s current state; its sequence, or `None` on failure
/// (logged and counted).
pub async fn write_snapshot(model: &ReadModel, store: &dyn SnapshotStore) -> Option<u64> {
    let started = Instant::now();
    let (state, anchor) = model.snapshot_source();
    let header = SnapshotHeader {
        sequence: state.sequence(),
        anchor,
        state_hash: state.config_hash_value(),
    };
    let encoded = tokio::task::spawn_blocking(move || {
        let mut bytes = Vec::new();
        state.write_snapshot(&mut bytes).map(|()| bytes)
    })
    .await;
    let saved = match encoded {
        Ok(Ok(bytes)) => {
            let snapshot = StoredSnapshot {
                header,
                state: bytes.into(),
            };
            store
                .save(&snapshot)
                .await
                .map(|()| (snapshot.header.sequence, snapshot.encoded_len()))
        }
        Ok(Err(error)) => Err(SnapshotError::Io(error)),
        Err(error) => Err(SnapshotError::Io(std::io::Error::other(error))),
    };
    let stats = &model.snapshots;
    match saved {
        Ok((sequence, bytes)) => {
            stats.written.fetch_add(1, Relaxed);
            stats.last_sequence.store(sequence, Relaxed);
            stats.last_bytes.store(bytes, Relaxed);
            tracing::info!(
                sequence,
                bytes,
                took_ms = started.elapsed().as_millis() as u64,
                store = %store.describe(),
                "snapshot saved"
            );
            Some(sequence)
        }
        Err(error) => {
            stats.failed.fetch_add(1, Relaxed);
            tracing::warn!(%error, store = %store.describe(), "cannot save a snapshot; the next start replays more of the log");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_are_due_by_count_or_time_after_a_change() {
        let policy = Policy {
            every_events: 100,
            interval: Some(Duration::from_secs(60)),
        };
        assert!(!policy.due(50, 0, Duration::ZERO));
        assert!(policy.due(100, 0, Duration::ZERO));
        assert!(policy.due(150, 100, Duration::from_secs(60)));
        assert!(
            !policy.due(100, 100, Duration::from_secs(600)),
            "nothing new"
        );
        let never = Policy {
            every_events: 0,
            interval: None,
        };
        assert!(!never.due(1_000_000, 0, Duration::from_secs(1_000_000)));
    }
}

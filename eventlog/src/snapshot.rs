//! Snapshots: a reader's state as of one sequence of the log, kept beside the log so that
//! a start costs the snapshot plus the records after it, not the whole history.
//!
//! One trait, [`SnapshotStore`], two backends that pass the same conformance suite
//! (`tests/snapshots.rs`):
//!
//! - [`FileSnapshotStore`]: one file (mode 0600) in the node's data directory, beside
//!   the embedded log; written to a temporary file, `fsync`ed, renamed into place.
//! - [`NatsSnapshotStore`]: one object in a JetStream object-store bucket, one bucket per
//!   role (`gatehouse-snapshots-control`, `gatehouse-snapshots-token-service`), so the
//!   broker's permissions can give each bucket to its role's users alone
//!   (`nats/users.conf`): a snapshot holds what its node holds, secret hashes included.
//!
//! Like the log, the stores know nothing of what a state means: a snapshot is a
//! [`SnapshotHeader`] (the sequence it covers, the `msg_id` of the log's record at that
//! sequence, a hash of the state the reader computes) and the state's bytes, framed with
//! a format version and a checksum:
//!
//! ```text
//! snapshot := magic "GHSTATE\n" | format: u32 LE (1)
//!             sequence: u64 LE | state_hash: u64 LE
//!             anchor_len: u32 LE | anchor (UTF-8, at most 1 KiB)
//!             state_len: u64 LE | state
//!             crc32(everything before): u32 LE
//! ```
//!
//! Both backends give the same guarantees:
//!
//! - **Newest wins, whole.** [`save`](SnapshotStore::save) replaces the snapshot before
//!   it; a reader (or a crash) sees the old one or the new one, never a mix.
//! - **Damage is reported, never returned.** A snapshot that fails its checksum, is of
//!   another format or is larger than the store's limit is an error of
//!   [`load`](SnapshotStore::load), never a state to start from.
//! - **Bounded.** A store refuses to write or read a snapshot larger than its
//!   `max_bytes`.
//!
//! Whether a snapshot fits a log (its sequence within the log, its anchor the log's
//! record) is the reader's decision, see `gatehouse_node::snapshot`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::{self, object_store};
use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncReadExt;

/// The format version this code writes and reads.
pub const SNAPSHOT_FORMAT: u32 = 1;

const MAGIC: &[u8; 8] = b"GHSTATE\n";

/// Longest anchor (a `msg_id`) a snapshot carries.
const MAX_ANCHOR_BYTES: usize = 1024;

/// Bytes after the state: the checksum.
const TRAILER_LEN: u64 = 4;

/// The name of the one object a NATS bucket holds.
const OBJECT_NAME: &str = "state";

/// Longest a NATS snapshot may take to be read or written.
const NATS_TIMEOUT: Duration = Duration::from_secs(120);

/// `Err(TooLarge)` when `size` is past `limit`.
fn within(size: u64, limit: u64) -> Result<(), SnapshotError> {
    if size > limit {
        return Err(SnapshotError::TooLarge { size, limit });
    }
    Ok(())
}

/// What a snapshot says about the state it holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnapshotHeader {
    /// The last log sequence the state covers (0: the empty log).
    pub sequence: u64,
    /// The `msg_id` of the log's record at `sequence` (empty for sequence 0): a reader
    /// finding another record there knows the snapshot comes from another log.
    pub anchor: String,
    /// A hash the reader computes of its state (Gatehouse: the config hash chain at
    /// `sequence`), to check what it decodes.
    pub state_hash: u64,
}

/// A snapshot as stored: its header and the state's bytes (opaque here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSnapshot {
    pub header: SnapshotHeader,
    pub state: Bytes,
}

/// What can go wrong with a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The store cannot be reached (broker down, timeout, no permission).
    #[error("snapshot store unavailable: {0}")]
    Unavailable(String),
    /// Stored bytes that are not a whole snapshot (bad checksum, cut short, not one).
    #[error("snapshot corrupt: {0}")]
    Corrupt(String),
    /// A snapshot of a format this version does not read.
    #[error("snapshot of format {found}, this version reads format {SNAPSHOT_FORMAT}")]
    Format { found: u32 },
    /// Larger than the store's limit (`--snapshot-max-bytes`).
    #[error("snapshot of {size} bytes, more than the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    /// A header that cannot be stored (an anchor too long).
    #[error("invalid snapshot: {0}")]
    Invalid(String),
    #[error("snapshot store I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl SnapshotHeader {
    /// The frame before the state: magic, format, header, the state's length.
    fn prefix(&self, state_len: u64) -> Result<Vec<u8>, SnapshotError> {
        if self.anchor.len() > MAX_ANCHOR_BYTES {
            return Err(SnapshotError::Invalid(format!(
                "anchor of {} bytes, at most {MAX_ANCHOR_BYTES}",
                self.anchor.len()
            )));
        }
        let mut prefix = Vec::with_capacity(40 + self.anchor.len());
        prefix.extend_from_slice(MAGIC);
        prefix.extend_from_slice(&SNAPSHOT_FORMAT.to_le_bytes());
        prefix.extend_from_slice(&self.sequence.to_le_bytes());
        prefix.extend_from_slice(&self.state_hash.to_le_bytes());
        prefix.extend_from_slice(&(self.anchor.len() as u32).to_le_bytes());
        prefix.extend_from_slice(self.anchor.as_bytes());
        prefix.extend_from_slice(&state_len.to_le_bytes());
        Ok(prefix)
    }
}

impl StoredSnapshot {
    /// The snapshot's frame, whole (see the module docs).
    pub fn encode(&self) -> Result<Vec<u8>, SnapshotError> {
        let (prefix, trailer) = self.frame()?;
        let mut bytes = Vec::with_capacity(prefix.len() + self.state.len() + trailer.len());
        bytes.extend_from_slice(&prefix);
        bytes.extend_from_slice(&self.state);
        bytes.extend_from_slice(&trailer);
        Ok(bytes)
    }

    /// What goes before and after the state.
    fn frame(&self) -> Result<(Vec<u8>, [u8; 4]), SnapshotError> {
        let prefix = self.header.prefix(self.state.len() as u64)?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&prefix);
        crc.update(&self.state);
        Ok((prefix, crc.finalize().to_le_bytes()))
    }

    /// The size of the snapshot's frame.
    pub fn encoded_len(&self) -> u64 {
        40 + self.header.anchor.len() as u64 + self.state.len() as u64 + TRAILER_LEN
    }

    /// Reads a frame back; the state is a slice of `bytes` (no copy).
    pub fn decode(bytes: Bytes) -> Result<StoredSnapshot, SnapshotError> {
        fn corrupt(what: &str) -> SnapshotError {
            SnapshotError::Corrupt(what.to_string())
        }
        let u32_at = |at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
        };
        let u64_at = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
        };
        if bytes.get(..MAGIC.len()) != Some(MAGIC.as_slice()) {
            return Err(corrupt("not a snapshot (no GHSTATE magic)"));
        }
        let format = u32_at(8).ok_or_else(|| corrupt("cut short in its header"))?;
        if format != SNAPSHOT_FORMAT {
            return Err(SnapshotError::Format { found: format });
        }
        let sequence = u64_at(12).ok_or_else(|| corrupt("cut short in its header"))?;
        let state_hash = u64_at(20).ok_or_else(|| corrupt("cut short in its header"))?;
        let anchor_len = u32_at(28).ok_or_else(|| corrupt("cut short in its header"))? as usize;
        if anchor_len > MAX_ANCHOR_BYTES {
            return Err(corrupt("anchor length out of range"));
        }
        let anchor_end = 32 + anchor_len;
        let anchor = bytes
            .get(32..anchor_end)
            .ok_or_else(|| corrupt("cut short in its header"))?;
        let state_len = u64_at(anchor_end).ok_or_else(|| corrupt("cut short in its header"))?;
        let state_start = anchor_end + 8;
        let expected = (state_start as u64)
            .checked_add(state_len)
            .and_then(|n| n.checked_add(TRAILER_LEN))
            .ok_or_else(|| corrupt("state length out of range"))?;
        if bytes.len() as u64 != expected {
            return Err(SnapshotError::Corrupt(format!(
                "{} bytes where its header says {expected}",
                bytes.len()
            )));
        }
        let crc_at = bytes.len() - TRAILER_LEN as usize;
        let stored_crc = u32_at(crc_at).ok_or_else(|| corrupt("cut short"))?;
        if crc32fast::hash(&bytes[..crc_at]) != stored_crc {
            return Err(corrupt("checksum mismatch"));
        }
        let anchor = std::str::from_utf8(anchor)
            .map_err(|_| corrupt("anchor is not UTF-8"))?
            .to_string();
        Ok(StoredSnapshot {
            header: SnapshotHeader {
                sequence,
                anchor,
                state_hash,
            },
            state: bytes.slice(state_start..crc_at),
        })
    }
}

/// Where a reader keeps its snapshot.
#[async_trait]
pub trait SnapshotStore: Send + Sync + 'static {
    /// Where the snapshot lives, for messages (a file path, a NATS bucket).
    fn describe(&self) -> String;

    /// Stores `snapshot` in place of the one before, atomically: a reader sees the old
    /// one or the new one whole. Returns once it is durable.
    async fn save(&self, snapshot: &StoredSnapshot) -> Result<(), SnapshotError>;

    /// The newest snapshot; `Ok(None)` when none was saved. One that is damaged, of
    /// another format or too large is an error, never returned.
    async fn load(&self) -> Result<Option<StoredSnapshot>, SnapshotError>;
}

/// A snapshot in one file, beside the embedded log.
///
/// Saving writes `<path>.tmp` (mode 0600: a snapshot holds what its node holds), fsyncs
/// it, renames it over `path` and fsyncs the directory, so a crash leaves the old file or
/// the new one. Saves through one store are serialised by a mutex (they share the
/// temporary file); one node owns one path.
#[derive(Debug, Clone)]
pub struct FileSnapshotStore {
    path: PathBuf,
    max_bytes: u64,
    saving: std::sync::Arc<std::sync::Mutex<()>>,
}

impl FileSnapshotStore {
    /// The snapshot at `path`, at most `max_bytes` long.
    pub fn new(path: impl Into<PathBuf>, max_bytes: u64) -> FileSnapshotStore {
        FileSnapshotStore {
            path: path.into(),
            max_bytes,
            saving: Default::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Saves a snapshot whose state `write_state` streams (blocking I/O: call from a
    /// blocking task). The state is never held in memory whole: its length and the
    /// checksum are written last, over the header's placeholder.
    pub fn save_streaming(
        &self,
        header: &SnapshotHeader,
        write_state: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<(), SnapshotError> {
        use std::io::{Seek, SeekFrom};
        let _saving = self.saving.lock().unwrap_or_else(|e| e.into_inner());
        let tmp = self.tmp_path();
        let placeholder = header.prefix(0)?;
        let mut file = self.create_tmp(&tmp)?;
        let result = (|| {
            let mut out = std::io::BufWriter::new(&mut file);
            out.write_all(&placeholder)?;
            let mut counted = Counted {
                out: &mut out,
                crc: crc32fast::Hasher::new(),
                len: 0,
            };
            write_state(&mut counted)?;
            let Counted {
                crc: state_crc,
                len,
                ..
            } = counted;
            let size = placeholder.len() as u64 + len + TRAILER_LEN;
            within(size, self.max_bytes)?;
            let prefix = header.prefix(len)?;
            let mut crc = crc32fast::Hasher::new();
            crc.update(&prefix);
            crc.combine(&state_crc);
            out.write_all(&crc.finalize().to_le_bytes())?;
            out.flush()?;
            drop(out);
            file.seek(SeekFrom::Start(0))?;
            file.write_all(&prefix)?;
            Ok(())
        })();
        self.finish(file, &tmp, result)
    }

    fn tmp_path(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".tmp");
        self.path.with_file_name(name)
    }

    fn create_tmp(&self, tmp: &Path) -> Result<std::fs::File, SnapshotError> {
        if let Some(dir) = self.path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        Ok(options.open(tmp)?)
    }

    /// Makes the temporary file durable and moves it into place, or removes it.
    fn finish(
        &self,
        file: std::fs::File,
        tmp: &Path,
        written: Result<(), SnapshotError>,
    ) -> Result<(), SnapshotError> {
        let result = written.and_then(|()| {
            file.sync_all()?;
            drop(file);
            std::fs::rename(tmp, &self.path)?;
            if let Some(dir) = self.path.parent()
                && let Ok(dir) = std::fs::File::open(if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                })
            {
                let _ = dir.sync_all();
            }
            Ok(())
        });
        if result.is_err() {
            let _ = std::fs::remove_file(tmp);
        }
        result
    }

    /// Saves `snapshot` (blocking I/O).
    pub fn save_blocking(&self, snapshot: &StoredSnapshot) -> Result<(), SnapshotError> {
        let size = snapshot.encoded_len();
        within(size, self.max_bytes)?;
        let (prefix, trailer) = snapshot.frame()?;
        let _saving = self.saving.lock().unwrap_or_else(|e| e.into_inner());
        let tmp = self.tmp_path();
        let mut file = self.create_tmp(&tmp)?;
        let written = (|| {
            file.write_all(&prefix)?;
            file.write_all(&snapshot.state)?;
            file.write_all(&trailer)?;
            Ok(())
        })();
        self.finish(file, &tmp, written)
    }

    /// The snapshot saved at the path (blocking I/O).
    pub fn load_blocking(&self) -> Result<Option<StoredSnapshot>, SnapshotError> {
        let file = match std::fs::File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let size = file.metadata()?.len();
        within(size, self.max_bytes)?;
        let mut bytes = Vec::with_capacity(size as usize);
        let mut limited = std::io::Read::take(file, self.max_bytes.saturating_add(1));
        std::io::Read::read_to_end(&mut limited, &mut bytes)?;
        within(bytes.len() as u64, self.max_bytes)?;
        StoredSnapshot::decode(Bytes::from(bytes)).map(Some)
    }
}

#[async_trait]
impl SnapshotStore for FileSnapshotStore {
    fn describe(&self) -> String {
        format!("snapshot file {}", self.path.display())
    }

    async fn save(&self, snapshot: &StoredSnapshot) -> Result<(), SnapshotError> {
        let (store, snapshot) = (self.clone(), snapshot.clone());
        tokio::task::spawn_blocking(move || store.save_blocking(&snapshot))
            .await
            .map_err(|e| SnapshotError::Io(std::io::Error::other(e)))?
    }

    async fn load(&self) -> Result<Option<StoredSnapshot>, SnapshotError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.load_blocking())
            .await
            .map_err(|e| SnapshotError::Io(std::io::Error::other(e)))?
    }
}

/// A writer that counts and checksums what passes through it.
struct Counted<'a, W: Write> {
    out: &'a mut W,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.out.write(bytes)?;
        self.crc.update(&bytes[..written]);
        self.len += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// A snapshot in a JetStream object-store bucket: one object, `state`, replaced by each
/// save.
///
/// The object store writes a new object's chunks first and its metadata last (a
/// roll-up on the metadata subject), then purges the old object's chunks: a crash
/// before the metadata leaves the previous snapshot in place. The bucket (stream
/// `OBJ_<bucket>`, file storage) is created on first use if the user may.
#[derive(Clone)]
pub struct NatsSnapshotStore {
    store: object_store::ObjectStore,
    bucket: String,
    max_bytes: u64,
}

impl std::fmt::Debug for NatsSnapshotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSnapshotStore")
            .field("bucket", &self.bucket)
            .finish()
    }
}

impl NatsSnapshotStore {
    /// The bucket `bucket` on the NATS connection `client` (a [`NatsLog`]'s, to share
    /// it), created (with `replicas` replicas) if it does not exist yet; snapshots of at
    /// most `max_bytes`.
    ///
    /// [`NatsLog`]: crate::NatsLog
    pub async fn open(
        client: &async_nats::Client,
        bucket: &str,
        replicas: usize,
        max_bytes: u64,
    ) -> Result<NatsSnapshotStore, SnapshotError> {
        let jetstream = jetstream::new(client.clone());
        let store = match jetstream.get_object_store(bucket).await {
            Ok(store) => store,
            Err(found) => jetstream
                .create_object_store(object_store::Config {
                    bucket: bucket.to_string(),
                    description: Some("Gatehouse state snapshots".to_string()),
                    storage: jetstream::stream::StorageType::File,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .map_err(|created| {
                    SnapshotError::Unavailable(format!(
                        "cannot find or create the snapshot bucket {bucket}: {found}; {created}"
                    ))
                })?,
        };
        Ok(NatsSnapshotStore {
            store,
            bucket: bucket.to_string(),
            max_bytes,
        })
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }
}

#[async_trait]
impl SnapshotStore for NatsSnapshotStore {
    fn describe(&self) -> String {
        format!("NATS object store bucket {}", self.bucket)
    }

    async fn save(&self, snapshot: &StoredSnapshot) -> Result<(), SnapshotError> {
        let size = snapshot.encoded_len();
        within(size, self.max_bytes)?;
        let (prefix, trailer) = snapshot.frame()?;
        let mut frame = std::io::Cursor::new(prefix)
            .chain(std::io::Cursor::new(snapshot.state.clone()))
            .chain(std::io::Cursor::new(trailer));
        let put = self.store.put(OBJECT_NAME, &mut frame);
        match tokio::time::timeout(NATS_TIMEOUT, put).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(SnapshotError::Unavailable(format!(
                "cannot write the snapshot to bucket {}: {e}",
                self.bucket
            ))),
            Err(_) => Err(SnapshotError::Unavailable(format!(
                "writing the snapshot to bucket {} took more than {NATS_TIMEOUT:?}",
                self.bucket
            ))),
        }
    }

    async fn load(&self) -> Result<Option<StoredSnapshot>, SnapshotError> {
        let read = async {
            let mut object = match self.store.get(OBJECT_NAME).await {
                Ok(object) => object,
                Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
                Err(e) => {
                    return Err(SnapshotError::Unavailable(format!(
                        "cannot read the snapshot in bucket {}: {e}",
                        self.bucket
                    )));
                }
            };
            let size = object.info().size as u64;
            within(size, self.max_bytes)?;
            let mut bytes = Vec::with_capacity(size as usize);
            // Bounded whatever the metadata says: one byte past the limit is enough.
            let mut limited = (&mut object).take(self.max_bytes.saturating_add(1));
            limited.read_to_end(&mut bytes).await.map_err(|e| {
                if e.kind() == std::io::ErrorKind::InvalidData {
                    SnapshotError::Corrupt(format!("in bucket {}: {e}", self.bucket))
                } else {
                    SnapshotError::Unavailable(format!(
                        "cannot read the snapshot in bucket {}: {e}",
                        self.bucket
                    ))
                }
            })?;
            within(bytes.len() as u64, self.max_bytes)?;
            StoredSnapshot::decode(Bytes::from(bytes)).map(Some)
        };
        match tokio::time::timeout(NATS_TIMEOUT, read).await {
            Ok(result) => result,
            Err(_) => Err(SnapshotError::Unavailable(format!(
                "reading the snapshot in bucket {} took more than {NATS_TIMEOUT:?}",
                self.bucket
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> StoredSnapshot {
        StoredSnapshot {
            header: SnapshotHeader {
                sequence: 42,
                anchor: "event-42".into(),
                state_hash: 0xdead_beef,
            },
            state: Bytes::from_static(b"the state"),
        }
    }

    #[test]
    fn a_frame_round_trips() {
        let snapshot = snapshot();
        let bytes = snapshot.encode().unwrap();
        assert_eq!(bytes.len() as u64, snapshot.encoded_len());
        assert_eq!(
            StoredSnapshot::decode(Bytes::from(bytes)).unwrap(),
            snapshot
        );
    }

    #[test]
    fn every_damaged_byte_and_every_cut_is_refused() {
        let bytes = snapshot().encode().unwrap();
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x01;
            assert!(
                StoredSnapshot::decode(Bytes::from(damaged)).is_err(),
                "a flipped bit at {at} went unnoticed"
            );
        }
        for len in 0..bytes.len() {
            assert!(StoredSnapshot::decode(Bytes::copy_from_slice(&bytes[..len])).is_err());
        }
    }

    #[test]
    fn another_format_is_named() {
        let mut bytes = snapshot().encode().unwrap();
        bytes[8..12].copy_from_slice(&7u32.to_le_bytes());
        match StoredSnapshot::decode(Bytes::from(bytes)) {
            Err(SnapshotError::Format { found: 7 }) => {}
            other => panic!("expected format 7, got {other:?}"),
        }
    }

    #[test]
    fn a_streamed_save_is_the_same_frame() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileSnapshotStore::new(dir.path().join("s.bin"), 1 << 20);
        let snapshot = snapshot();
        store
            .save_streaming(&snapshot.header, |out| {
                out.write_all(b"the ")?;
                out.write_all(b"state")
            })
            .unwrap();
        let bytes = std::fs::read(store.path()).unwrap();
        assert_eq!(bytes, snapshot.encode().unwrap());
        let small = FileSnapshotStore::new(dir.path().join("s.bin"), 20);
        assert!(matches!(
            small.save_streaming(&snapshot.header, |out| out.write_all(&[0; 64])),
            Err(SnapshotError::TooLarge { .. })
        ));
        assert_eq!(
            std::fs::read(store.path()).unwrap(),
            bytes,
            "left as it was"
        );
        assert!(!dir.path().join("s.bin.tmp").exists());
    }
}

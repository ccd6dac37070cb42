//! The embedded backend: one append-only file in a data directory.
//!
//! [`FileLog`] serves one process (the all-in-one and single-node setups); nodes that run
//! as separate processes share the log through NATS instead. The data directory holds:
//!
//! - `events.log`: the records, appended and `fsync`ed one by one;
//! - `LOCK`: held with an exclusive lock while a [`FileLog`] is open, so that a second
//!   process (or a second `open` in this one) cannot write the same file.
//!
//! # File format
//!
//! The file starts with the 8-byte magic `GHEVLOG1` (format version 1), then holds one
//! frame per record, in sequence order:
//!
//! ```text
//! frame := body_len: u32 LE | crc32(body): u32 LE | body
//! body  := sequence: u64 LE
//!          subject_len: u16 LE | subject (UTF-8)
//!          msg_id_len: u16 LE | msg_id (UTF-8)
//!          header_count: u16 LE
//!          header_count x (name_len: u16 LE | name | value_len: u32 LE | value)
//!          payload (the rest of the body)
//! ```
//!
//! A body is at most 64 MiB. Sequences are contiguous from 1.
//!
//! # Crash recovery
//!
//! Appends are serialized and each is `fsync`ed before the next starts, so a crash can
//! only leave a *torn tail*: a prefix of the one frame being written, or a frame whose
//! checksum fails. On [`open`](FileLog::open) such a tail is truncated away (with a
//! warning): it was never acknowledged. A bad frame *followed by a valid one* is not a
//! torn write but damage to acknowledged data, and `open` refuses with
//! [`LogError::Corrupt`] rather than silently dropping records; so does a jump in
//! sequences.
//!
//! # Shared state
//!
//! - The writer state (file handle, last sequences, the `msg_id` index) sits in a
//!   [`tokio::sync::Mutex`]: appends are serialized, and the guard is moved into
//!   [`tokio::task::spawn_blocking`] for the write and `fsync` so the runtime's threads
//!   never block on disk. A caller that gives up on an append does not cancel it
//!   half-way: the blocking task finishes and the record is either fully durable or not
//!   written.
//! - The byte offset of every record is kept in a `std::sync::RwLock<Vec<u64>>` (8 bytes
//!   a record; payloads stay on disk), so a follower can start reading at any sequence.
//! - The last durable sequence is published on a [`tokio::sync::watch`] channel.
//!   Followers read records from the file with their own handle, up to that sequence,
//!   then wait for it to move. A watch never lags: a slow follower simply reads more
//!   from the file when it catches up, and misses nothing.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

use crate::{AppendRequest, Appended, EventLog, Expectation, LogError, Record, RecordStream};

/// Name of the record file in the data directory.
const LOG_FILE: &str = "events.log";
/// Name of the lock file in the data directory.
const LOCK_FILE: &str = "LOCK";
/// First bytes of the record file: format name and version.
const MAGIC: &[u8; 8] = b"GHEVLOG1";
/// `body_len` and `crc32`.
const FRAME_HEADER_LEN: usize = 8;
/// Largest body accepted, on append and when reading.
const MAX_BODY_LEN: usize = 64 << 20;
/// Smallest valid body: sequence, three empty lengths/counts, empty payload.
const MIN_BODY_LEN: usize = 8 + 2 + 2 + 2;

/// An event log in an append-only file, `<dir>/events.log`, for one process.
///
/// Every record is a length-prefixed, CRC32-checked frame, `fsync`ed before `append`
/// returns. On open, a torn last frame (a crash during an append) is truncated away;
/// damage before valid records is reported as [`LogError::Corrupt`]. De-duplication by
/// `msg_id` covers the whole history. The file format and the recovery rules are
/// documented in `eventlog/src/file.rs`.
///
/// Cheap to clone (every clone is the same log); usable as `Arc<dyn EventLog>`. The data
/// directory stays locked until the last clone is dropped.
#[derive(Clone)]
pub struct FileLog {
    /// Everything appends need; one append at a time.
    writer: Arc<Mutex<Writer>>,
    /// Byte offset of each record: `offsets[seq - 1]`.
    offsets: Arc<RwLock<Vec<u64>>>,
    /// The last durable sequence. The sender lives in the writer: when the log is
    /// dropped, followers see the channel close.
    durable: watch::Receiver<u64>,
    path: Arc<PathBuf>,
}

impl std::fmt::Debug for FileLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileLog")
            .field("path", &self.path)
            .field("last_sequence", &*self.durable.borrow())
            .finish()
    }
}

/// The append side, behind the mutex.
struct Writer {
    /// `events.log`, opened for appending.
    file: File,
    /// Length of the valid data in `file`.
    len: u64,
    last_sequence: u64,
    /// Last sequence of each subject, for [`Expectation::LastSubjectSequence`].
    last_by_subject: HashMap<String, u64>,
    /// Every `msg_id` ever stored, with its sequence: de-duplication over all history.
    by_msg_id: HashMap<String, u64>,
    offsets: Arc<RwLock<Vec<u64>>>,
    durable: watch::Sender<u64>,
    /// Set when a failed write left the file in an unknown state: every later append
    /// fails until the log is reopened (which recovers the file).
    broken: Option<String>,
    /// Holds the data directory's lock while the writer lives (even past the last
    /// `FileLog` clone, while a blocking append finishes).
    _lock: File,
}

impl FileLog {
    /// Opens (creating it if needed) the log in directory `dir`, recovering from a crash
    /// if the last append was torn.
    ///
    /// Fails with [`LogError::Io`] if the directory is in use by another `FileLog` (in
    /// this process or another), and with [`LogError::Corrupt`] if acknowledged records
    /// cannot be read back.
    ///
    /// Blocking: it reads the whole file to rebuild the indexes. Call it at start-up (or
    /// through `tokio::task::spawn_blocking`).
    pub fn open(dir: impl AsRef<Path>) -> Result<FileLog, LogError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)?;
        let lock = lock_dir(dir)?;
        let path = dir.join(LOG_FILE);
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        if created {
            sync_dir(dir)?;
        }
        let scan = recover(&mut file, &path)?;

        let (durable_tx, durable_rx) = watch::channel(scan.last_sequence);
        let offsets = Arc::new(RwLock::new(scan.offsets));
        let writer = Writer {
            file,
            len: scan.len,
            last_sequence: scan.last_sequence,
            last_by_subject: scan.last_by_subject,
            by_msg_id: scan.by_msg_id,
            offsets: offsets.clone(),
            durable: durable_tx,
            broken: None,
            _lock: lock,
        };
        tracing::debug!(path = %path.display(), last_sequence = scan.last_sequence, "opened event log");
        Ok(FileLog {
            writer: Arc::new(Mutex::new(writer)),
            offsets,
            durable: durable_rx,
            path: Arc::new(path),
        })
    }

    /// The record file, `<dir>/events.log`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl EventLog for FileLog {
    async fn append(&self, request: AppendRequest) -> Result<Appended, LogError> {
        crate::check_request(&request)?;
        let writer = self.writer.clone().lock_owned().await;
        if let Some(&sequence) = writer.by_msg_id.get(&request.msg_id) {
            return Ok(Appended {
                sequence,
                duplicate: true,
            });
        }
        match request.expect {
            Expectation::Any => {}
            Expectation::LastSubjectSequence(expected) => {
                let last = writer
                    .last_by_subject
                    .get(&request.subject)
                    .copied()
                    .unwrap_or(0);
                if last != expected {
                    return Err(LogError::Conflict {
                        subject: request.subject,
                        expected,
                    });
                }
            }
            Expectation::LastSequence(expected) => {
                if writer.last_sequence != expected {
                    return Err(LogError::Conflict {
                        subject: request.subject,
                        expected,
                    });
                }
            }
        }
        tokio::task::spawn_blocking(move || write(writer, request))
            .await
            .map_err(|err| LogError::Io(io::Error::other(format!("append task failed: {err}"))))?
    }

    fn describe(&self) -> String {
        format!("embedded event log {}", self.path.display())
    }

    async fn last_sequence(&self) -> Result<u64, LogError> {
        Ok(*self.durable.borrow())
    }

    async fn follow(&self, from: u64) -> Result<RecordStream, LogError> {
        let follower = Follower {
            path: self.path.clone(),
            offsets: self.offsets.clone(),
            durable: self.durable.clone(),
            next: from.max(1),
            reader: None,
            done: false,
        };
        Ok(Box::pin(futures::stream::unfold(
            follower,
            |mut follower| async move {
                let item = follower.next().await?;
                Some((item, follower))
            },
        )))
    }
}

/// Writes and `fsync`s one record (in a blocking task, holding the writer's lock), then
/// publishes it.
fn write(
    mut writer: OwnedMutexGuard<Writer>,
    request: AppendRequest,
) -> Result<Appended, LogError> {
    if let Some(reason) = &writer.broken {
        return Err(LogError::Io(io::Error::other(format!(
            "the event log is unusable after a failed write ({reason}); restart the process"
        ))));
    }
    let sequence = writer.last_sequence + 1;
    let frame = encode_frame(sequence, &request)?;
    let offset = writer.len;
    if let Err(err) = writer.file.write_all(&frame) {
        // Cut off whatever part of the frame reached the file, so that the next append
        // starts on a frame boundary.
        if let Err(truncate) = writer.file.set_len(offset) {
            writer.broken = Some(format!("{err}, then {truncate}"));
        }
        tracing::error!(error = %err, sequence, "event log write failed");
        return Err(err.into());
    }
    if let Err(err) = writer.file.sync_data() {
        // After a failed fsync the page cache cannot be trusted (the kernel may have
        // dropped the dirty pages): only a reopen, which re-reads the file, recovers.
        let _ = writer.file.set_len(offset);
        writer.broken = Some(err.to_string());
        tracing::error!(error = %err, sequence, "event log fsync failed");
        return Err(err.into());
    }
    writer.len = offset + frame.len() as u64;
    writer.last_sequence = sequence;
    writer.last_by_subject.insert(request.subject, sequence);
    writer.by_msg_id.insert(request.msg_id, sequence);
    writer
        .offsets
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .push(offset);
    writer.durable.send_replace(sequence);
    Ok(Appended {
        sequence,
        duplicate: false,
    })
}

/// Takes the data directory's exclusive lock.
fn lock_dir(dir: &Path) -> Result<File, LogError> {
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(LOCK_FILE))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(LogError::Io(io::Error::new(
            ErrorKind::WouldBlock,
            format!(
                "data directory {} is in use by another process",
                dir.display()
            ),
        ))),
        Err(std::fs::TryLockError::Error(err)) => Err(LogError::Io(io::Error::new(
            err.kind(),
            format!("cannot lock data directory {}: {err}", dir.display()),
        ))),
    }
}

/// Makes a new file's directory entry durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// What [`recover`] found in the file.
struct Scan {
    len: u64,
    last_sequence: u64,
    offsets: Vec<u64>,
    last_by_subject: HashMap<String, u64>,
    by_msg_id: HashMap<String, u64>,
}

/// Reads the whole file, checking every frame, truncating a torn tail, and builds the
/// in-memory indexes.
fn recover(file: &mut File, path: &Path) -> Result<Scan, LogError> {
    let file_len = file.metadata()?.len();
    file.seek(SeekFrom::Start(0))?;
    if file_len < MAGIC.len() as u64 {
        // Empty, or a crash while the magic was being written.
        let mut start = vec![0; file_len as usize];
        file.read_exact(&mut start)?;
        if !MAGIC.starts_with(&start) {
            return Err(LogError::Corrupt(format!(
                "{} is not a Gatehouse event log",
                path.display()
            )));
        }
        file.set_len(0)?;
        file.write_all(MAGIC)?;
        file.sync_all()?;
        return Ok(Scan {
            len: MAGIC.len() as u64,
            last_sequence: 0,
            offsets: Vec::new(),
            last_by_subject: HashMap::new(),
            by_msg_id: HashMap::new(),
        });
    }

    let mut reader = BufReader::with_capacity(1 << 16, &mut *file);
    let mut magic = [0; MAGIC.len()];
    reader.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(LogError::Corrupt(format!(
            "{} is not a Gatehouse event log (or another version of the format)",
            path.display()
        )));
    }

    let mut scan = Scan {
        len: MAGIC.len() as u64,
        last_sequence: 0,
        offsets: Vec::new(),
        last_by_subject: HashMap::new(),
        by_msg_id: HashMap::new(),
    };
    let mut body = Vec::new();
    // `scan.len` is the offset of the frame being read.
    let torn = loop {
        let remaining = file_len - scan.len;
        if remaining == 0 {
            break false;
        }
        if remaining < FRAME_HEADER_LEN as u64 {
            break true;
        }
        let mut header = [0; FRAME_HEADER_LEN];
        reader.read_exact(&mut header)?;
        let (body_len, crc) = parse_frame_header(&header);
        if !(MIN_BODY_LEN..=MAX_BODY_LEN).contains(&body_len)
            || (body_len as u64) > remaining - FRAME_HEADER_LEN as u64
        {
            break true;
        }
        body.resize(body_len, 0);
        reader.read_exact(&mut body)?;
        if crc32fast::hash(&body) != crc {
            break true;
        }
        let record = decode_body(&body).map_err(|err| {
            LogError::Corrupt(format!(
                "{}: record at byte {} passes its checksum but cannot be decoded: {err}",
                path.display(),
                scan.len
            ))
        })?;
        if record.sequence != scan.last_sequence + 1 {
            return Err(LogError::Corrupt(format!(
                "{}: record at byte {} has sequence {}, expected {}",
                path.display(),
                scan.len,
                record.sequence,
                scan.last_sequence + 1
            )));
        }
        scan.offsets.push(scan.len);
        scan.last_sequence = record.sequence;
        scan.last_by_subject.insert(record.subject, record.sequence);
        scan.by_msg_id.insert(record.msg_id, record.sequence);
        scan.len += (FRAME_HEADER_LEN + body_len) as u64;
    };
    drop(reader);

    if torn {
        let tail_len = file_len - scan.len;
        check_torn_tail(file, path, scan.len, tail_len)?;
        tracing::warn!(
            path = %path.display(),
            offset = scan.len,
            bytes = tail_len,
            last_sequence = scan.last_sequence,
            "event log ends with a torn (unacknowledged) record; truncating it"
        );
        file.set_len(scan.len)?;
        file.sync_all()?;
    }
    Ok(scan)
}

/// Refuses to truncate `tail_len` bytes at `offset` unless they can be one torn frame:
/// no longer than a frame, and holding no valid frame after the broken one.
fn check_torn_tail(
    file: &mut File,
    path: &Path,
    offset: u64,
    tail_len: u64,
) -> Result<(), LogError> {
    let corrupt = || {
        LogError::Corrupt(format!(
            "{}: bad record at byte {offset} followed by more data ({tail_len} bytes); \
             refusing to drop acknowledged records",
            path.display()
        ))
    };
    if tail_len > (FRAME_HEADER_LEN + MAX_BODY_LEN) as u64 {
        return Err(corrupt());
    }
    let mut tail = vec![0; tail_len as usize];
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(&mut tail)?;
    let valid_frame_at = |start: usize| {
        let Some(header) = tail.get(start..start + FRAME_HEADER_LEN) else {
            return false;
        };
        let (body_len, crc) = parse_frame_header(header.try_into().expect("8 bytes"));
        if !(MIN_BODY_LEN..=MAX_BODY_LEN).contains(&body_len) {
            return false;
        }
        let body_start = start + FRAME_HEADER_LEN;
        tail.get(body_start..body_start + body_len)
            .is_some_and(|body| crc32fast::hash(body) == crc && decode_body(body).is_ok())
    };
    if (1..tail.len()).any(valid_frame_at) {
        return Err(corrupt());
    }
    Ok(())
}

fn parse_frame_header(header: &[u8; FRAME_HEADER_LEN]) -> (usize, u32) {
    let body_len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    (body_len, crc)
}

/// The frame of one record, or `InvalidInput` if a field is too long for the format.
fn encode_frame(sequence: u64, request: &AppendRequest) -> Result<Vec<u8>, LogError> {
    fn too_long(what: &str) -> LogError {
        LogError::Io(io::Error::new(
            ErrorKind::InvalidInput,
            format!("{what} is too long for the event log"),
        ))
    }
    fn put_u16_len(buf: &mut Vec<u8>, bytes: &[u8], what: &str) -> Result<(), LogError> {
        let len = u16::try_from(bytes.len()).map_err(|_| too_long(what))?;
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(bytes);
        Ok(())
    }

    let mut frame = Vec::with_capacity(
        FRAME_HEADER_LEN
            + MIN_BODY_LEN
            + request.subject.len()
            + request.msg_id.len()
            + request.payload.len()
            + 64,
    );
    frame.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    frame.extend_from_slice(&sequence.to_le_bytes());
    put_u16_len(&mut frame, request.subject.as_bytes(), "subject")?;
    put_u16_len(&mut frame, request.msg_id.as_bytes(), "msg_id")?;
    let count = u16::try_from(request.headers.len()).map_err(|_| too_long("header list"))?;
    frame.extend_from_slice(&count.to_le_bytes());
    for (name, value) in &request.headers {
        put_u16_len(&mut frame, name.as_bytes(), "header name")?;
        let len = u32::try_from(value.len()).map_err(|_| too_long("header value"))?;
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(value.as_bytes());
    }
    frame.extend_from_slice(&request.payload);

    let body_len = frame.len() - FRAME_HEADER_LEN;
    if body_len > MAX_BODY_LEN {
        return Err(too_long("record"));
    }
    let crc = crc32fast::hash(&frame[FRAME_HEADER_LEN..]);
    frame[0..4].copy_from_slice(&(body_len as u32).to_le_bytes());
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(frame)
}

/// Decodes a body whose checksum has been verified.
fn decode_body(body: &[u8]) -> Result<Record, String> {
    struct Cursor<'a>(&'a [u8]);
    impl<'a> Cursor<'a> {
        fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
            if self.0.len() < n {
                return Err("truncated body".to_string());
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Ok(head)
        }
        fn u16(&mut self) -> Result<u16, String> {
            Ok(u16::from_le_bytes(
                self.take(2)?.try_into().expect("2 bytes"),
            ))
        }
        fn u32(&mut self) -> Result<u32, String> {
            Ok(u32::from_le_bytes(
                self.take(4)?.try_into().expect("4 bytes"),
            ))
        }
        fn u64(&mut self) -> Result<u64, String> {
            Ok(u64::from_le_bytes(
                self.take(8)?.try_into().expect("8 bytes"),
            ))
        }
        fn string(&mut self, len: usize, what: &str) -> Result<String, String> {
            String::from_utf8(self.take(len)?.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
        }
    }

    let mut cursor = Cursor(body);
    let sequence = cursor.u64()?;
    let len = cursor.u16()? as usize;
    let subject = cursor.string(len, "subject")?;
    let len = cursor.u16()? as usize;
    let msg_id = cursor.string(len, "msg_id")?;
    let count = cursor.u16()?;
    let mut headers = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let len = cursor.u16()? as usize;
        let name = cursor.string(len, "header name")?;
        let len = cursor.u32()? as usize;
        let value = cursor.string(len, "header value")?;
        headers.push((name, value));
    }
    Ok(Record {
        sequence,
        subject,
        msg_id,
        headers,
        payload: Bytes::copy_from_slice(cursor.0),
    })
}

/// The state of one [`FileLog::follow`] stream.
struct Follower {
    path: Arc<PathBuf>,
    offsets: Arc<RwLock<Vec<u64>>>,
    durable: watch::Receiver<u64>,
    /// The sequence to yield next.
    next: u64,
    /// Positioned at the frame of `next`; opened on the first read.
    reader: Option<tokio::io::BufReader<tokio::fs::File>>,
    /// Set after an error: the stream ends.
    done: bool,
}

impl Follower {
    async fn next(&mut self) -> Option<Result<Record, LogError>> {
        if self.done {
            return None;
        }
        let result = self.read_next().await;
        if result.is_err() {
            self.done = true;
        }
        Some(result)
    }

    async fn read_next(&mut self) -> Result<Record, LogError> {
        let next = self.next;
        if self.durable.wait_for(|&last| last >= next).await.is_err() {
            return Err(LogError::Unavailable(
                "the event log was closed".to_string(),
            ));
        }
        let reader = match &mut self.reader {
            Some(reader) => reader,
            None => {
                let offset = self.offsets.read().unwrap_or_else(PoisonError::into_inner)
                    [(next - 1) as usize];
                let mut file = tokio::fs::File::open(&*self.path).await?;
                file.seek(SeekFrom::Start(offset)).await?;
                self.reader
                    .insert(tokio::io::BufReader::with_capacity(1 << 16, file))
            }
        };
        let mut header = [0; FRAME_HEADER_LEN];
        reader.read_exact(&mut header).await?;
        let (body_len, crc) = parse_frame_header(&header);
        if !(MIN_BODY_LEN..=MAX_BODY_LEN).contains(&body_len) {
            return Err(LogError::Corrupt(format!(
                "record {next} has an invalid length {body_len}"
            )));
        }
        let mut body = vec![0; body_len];
        reader.read_exact(&mut body).await?;
        if crc32fast::hash(&body) != crc {
            return Err(LogError::Corrupt(format!(
                "record {next} fails its checksum"
            )));
        }
        let record = decode_body(&body)
            .map_err(|err| LogError::Corrupt(format!("record {next} cannot be decoded: {err}")))?;
        if record.sequence != next {
            return Err(LogError::Corrupt(format!(
                "expected record {next}, read record {}",
                record.sequence
            )));
        }
        self.next += 1;
        Ok(record)
    }
}

/// Property tests of the frame format, bounded so the suite stays fast: any record
/// round-trips, no byte string makes the decoder panic, and opening a file of any
/// content either recovers its valid prefix or refuses it as corrupt — never a panic,
/// never a record that was not written.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn token() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_-]{1,12}"
    }

    fn request() -> impl Strategy<Value = AppendRequest> {
        (
            token(),
            token(),
            "[a-zA-Z0-9-]{1,16}",
            proptest::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,8}", "[ -~]{0,16}"), 0..4),
            proptest::collection::vec(any::<u8>(), 0..256),
        )
            .prop_map(|(kind, id, msg_id, headers, payload)| AppendRequest {
                subject: crate::subject(&kind, &id),
                msg_id,
                headers,
                payload: Bytes::from(payload),
                expect: crate::Expectation::Any,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_record_round_trips(sequence in 1u64..u64::MAX, request in request()) {
            let frame = encode_frame(sequence, &request).unwrap();
            let (body_len, crc) = parse_frame_header(frame[..FRAME_HEADER_LEN].try_into().unwrap());
            let body = &frame[FRAME_HEADER_LEN..];
            prop_assert_eq!(body_len, body.len());
            prop_assert_eq!(crc, crc32fast::hash(body));
            let record = decode_body(body).unwrap();
            prop_assert_eq!(record.sequence, sequence);
            prop_assert_eq!(record.subject, request.subject);
            prop_assert_eq!(record.msg_id, request.msg_id);
            prop_assert_eq!(record.headers, request.headers);
            prop_assert_eq!(record.payload, request.payload);
        }

        #[test]
        fn no_body_makes_the_decoder_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_body(&bytes);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Valid frames, then anything: the log opens with exactly the valid records
        /// (a torn tail repaired), or refuses the file as corrupt.
        #[test]
        fn a_file_of_any_content_recovers_its_valid_prefix_or_is_refused(
            requests in proptest::collection::vec(request(), 0..6),
            garbage in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut bytes = MAGIC.to_vec();
            for (i, request) in requests.iter().enumerate() {
                bytes.extend(encode_frame(i as u64 + 1, request).unwrap());
            }
            bytes.extend(&garbage);
            std::fs::write(dir.path().join("events.log"), &bytes).unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            match FileLog::open(dir.path()) {
                Ok(log) => {
                    let records = runtime.block_on(crate::EventLog::read_to_end(&log, 1)).unwrap();
                    // Random bytes do not form a frame with a matching checksum: what is
                    // read is exactly what was written.
                    prop_assert_eq!(records.len(), requests.len());
                    for (record, request) in records.iter().zip(&requests) {
                        prop_assert_eq!(&record.subject, &request.subject);
                        prop_assert_eq!(&record.payload, &request.payload);
                    }
                }
                Err(LogError::Corrupt(_)) => prop_assert!(!garbage.is_empty(), "valid frames alone are never corrupt"),
                Err(other) => prop_assert!(false, "unexpected error {other}"),
            }
        }
    }
}

//! The embedded backend: one append-only file in a data directory.
//!
//! [`FileLog`] serves one process (the all-in-one and single-node setups); nodes that run
//! as separate processes share the log through NATS instead. The data directory holds:
//!
//! - `events.log`: the records, appended and `fsync`ed in groups (below);
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
//! # Group commit
//!
//! Appends go to one writer thread through a queue. The thread takes what is queued —
//! at most [`MAX_BATCH_RECORDS`] records or about [`MAX_BATCH_BYTES`] — checks each
//! record in queue order against the log *as the batch leaves it so far* (its `msg_id`
//! against every stored and batched one, its [`Expectation`] against the last sequences
//! including the batch's earlier records), writes the frames of the accepted ones with
//! one `write` and makes them durable with one `fsync`. Only then is each append
//! answered, with its own result: a refused record (conflict, too long) fails that
//! append alone, and a failed write or `fsync` fails every record of the batch (none is
//! acknowledged). Concurrent appenders thus share an `fsync` (the fewer, the longer
//! each takes), and an append alone costs what it did before: one write, one `fsync`.
//!
//! # Crash recovery
//!
//! A crash can only damage what was never acknowledged: the frames of the batch being
//! written. After a process crash they are whole or cut short (a *torn tail*); after a
//! power loss the blocks of an unfinished batch may reach the disk in any order, so an
//! unwritten block (zeros) may come before frames of the same batch that did. On
//! [`open`](FileLog::open) such a tail is truncated away (with a warning): a bad frame
//! with nothing valid after it, or — if the rest of the file fits in one batch — a bad
//! frame holding a *hole*: a run of zeros from its start to a 4 KiB block boundary, or
//! a whole zero block anywhere within the frame (a block of a large frame that was not
//! written), with whatever follows. Valid frames of the batch before the hole stay:
//! they were not acknowledged, but a log that holds an unacknowledged record is still
//! right (its writer retries with the same `msg_id`, or decides again). Any other bad frame *followed by a valid one* is not a torn write but damage
//! to acknowledged data, and `open` refuses with [`LogError::Corrupt`] rather than
//! silently dropping records; so does a jump in sequences.
//!
//! # Shared state
//!
//! - The writer state (file handle, last sequences, the `msg_id` index) is owned by the
//!   writer thread alone: no lock. Appenders reach it through a `std::sync::mpsc`
//!   channel of jobs, each with a `oneshot` for its answer, so the runtime's threads
//!   never block on disk and the batch is simply "what queued up during the last
//!   `fsync`". A caller that gives up on an append does not cancel it: the thread
//!   finishes the batch and the record is either fully durable or not written. The
//!   thread stops when the last [`FileLog`] clone is dropped (which waits for it, so the
//!   data directory's lock is free when the drop returns).
//! - The byte offset of every record is kept in a `std::sync::RwLock<Vec<u64>>` (8 bytes
//!   a record; payloads stay on disk), so a follower can start reading at any sequence.
//! - The last durable sequence, with the length of the file's durable data, is
//!   published on a [`tokio::sync::watch`] channel. Followers read records from the
//!   file with their own handle, never past that length (bytes beyond it are a batch
//!   being written, which a failed write may yet replace), then wait for it to move. A
//!   watch never lags: a slow follower simply reads more from the file when it catches
//!   up, and misses nothing.
//! - The count of `fsync`s of appended records is an `AtomicU64`
//!   ([`FileLog::append_syncs`]): how well group commit works, for tests and metrics.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, mpsc};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{oneshot, watch};

use crate::{
    AppendRequest, Appended, EventLog, Expectation, LogError, PendingAppend, Record, RecordStream,
};

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
/// Most records written with one `fsync`.
pub const MAX_BATCH_RECORDS: usize = 1024;
/// Frame bytes after which a batch takes no more records (it may exceed it by one
/// record). Also bounds how much of the file's end recovery may treat as one unfinished
/// batch.
pub const MAX_BATCH_BYTES: usize = 1 << 20;
/// The block size recovery assumes for unwritten blocks.
const BLOCK: u64 = 4096;

/// An event log in an append-only file, `<dir>/events.log`, for one process.
///
/// Every record is a length-prefixed, CRC32-checked frame; concurrent appends are
/// written and `fsync`ed together (group commit), each acknowledged once durable. On
/// open, a torn end (a crash during an append) is truncated away; damage before valid
/// records is reported as [`LogError::Corrupt`]. De-duplication by `msg_id` covers the
/// whole history. The file format and the recovery rules are documented in
/// `eventlog/src/file.rs`.
///
/// Cheap to clone (every clone is the same log); usable as `Arc<dyn EventLog>`. The data
/// directory stays locked until the last clone is dropped.
#[derive(Clone)]
pub struct FileLog {
    /// The writer thread's queue; dropping the last clone stops the thread.
    writer: Arc<WriterHandle>,
    /// Byte offset of each record: `offsets[seq - 1]`.
    offsets: Arc<RwLock<Vec<u64>>>,
    /// The end of the durable data. The sender lives in the writer: when the log is
    /// dropped, followers see the channel close.
    durable: watch::Receiver<Durable>,
    /// `fsync`s of appended records so far.
    syncs: Arc<AtomicU64>,
    path: Arc<PathBuf>,
}

impl std::fmt::Debug for FileLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileLog")
            .field("path", &self.path)
            .field("last_sequence", &self.durable.borrow().sequence)
            .finish()
    }
}

/// Where the durable data ends: its last record and the file length after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Durable {
    sequence: u64,
    len: u64,
}

/// One append waiting for the writer thread.
struct Job {
    request: AppendRequest,
    answer: oneshot::Sender<Result<Appended, LogError>>,
}

/// The queue to the writer thread, and the thread, joined when the last [`FileLog`]
/// clone goes.
struct WriterHandle {
    /// `None` only while dropping.
    queue: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has answered what it holds; waiting
        // for it means the directory's lock is released when the last clone is gone.
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The append side, owned by the writer thread.
struct Writer {
    /// `events.log`, opened for appending.
    file: File,
    /// Length of the valid data in `file`.
    len: u64,
    last_sequence: u64,
    /// The `msg_id` of the last record, for [`Expectation::LastMsgId`].
    last_msg_id: String,
    /// Last sequence of each subject, for [`Expectation::LastSubjectSequence`].
    last_by_subject: HashMap<String, u64>,
    /// Every `msg_id` ever stored, with its sequence: de-duplication over all history.
    by_msg_id: HashMap<String, u64>,
    offsets: Arc<RwLock<Vec<u64>>>,
    durable: watch::Sender<Durable>,
    syncs: Arc<AtomicU64>,
    /// Set when a failed write left the file in an unknown state: every later append
    /// fails until the log is reopened (which recovers the file).
    broken: Option<String>,
    /// Holds the data directory's lock while the writer lives.
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

        let (durable_tx, durable_rx) = watch::channel(Durable {
            sequence: scan.last_sequence,
            len: scan.len,
        });
        let offsets = Arc::new(RwLock::new(scan.offsets));
        let syncs = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            file,
            len: scan.len,
            last_sequence: scan.last_sequence,
            last_msg_id: scan.last_msg_id,
            last_by_subject: scan.last_by_subject,
            by_msg_id: scan.by_msg_id,
            offsets: offsets.clone(),
            durable: durable_tx,
            syncs: syncs.clone(),
            broken: None,
            _lock: lock,
        };
        let (queue, jobs) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("event-log-writer".into())
            .spawn(move || writer.run(jobs))?;
        tracing::debug!(path = %path.display(), last_sequence = scan.last_sequence, "opened event log");
        Ok(FileLog {
            writer: Arc::new(WriterHandle {
                queue: Some(queue),
                thread: Some(thread),
            }),
            offsets,
            durable: durable_rx,
            syncs,
            path: Arc::new(path),
        })
    }

    /// The record file, `<dir>/events.log`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many `fsync`s appended records have taken since the log was opened: fewer
    /// than the records when appends were concurrent (group commit).
    pub fn append_syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

/// The error every append gets once the writer thread is gone (it only stops when the
/// log is dropped, or if it panicked).
fn writer_gone() -> LogError {
    LogError::Unavailable("the event log's writer has stopped".to_string())
}

#[async_trait]
impl EventLog for FileLog {
    async fn submit(&self, request: AppendRequest) -> Result<PendingAppend, LogError> {
        crate::check_request(&request)?;
        let (answer, answered) = oneshot::channel();
        self.writer
            .queue
            .as_ref()
            .ok_or_else(writer_gone)?
            .send(Job { request, answer })
            .map_err(|_| writer_gone())?;
        Ok(PendingAppend::new(async move {
            answered.await.map_err(|_| writer_gone())?
        }))
    }

    fn describe(&self) -> String {
        format!("embedded event log {}", self.path.display())
    }

    async fn last_sequence(&self) -> Result<u64, LogError> {
        Ok(self.durable.borrow().sequence)
    }

    /// Always 1 (the start; `last_sequence() + 1` when empty): the file keeps every record.
    async fn first_sequence(&self) -> Result<u64, LogError> {
        Ok(1)
    }

    async fn follow(&self, from: u64) -> Result<RecordStream, LogError> {
        let follower = Follower {
            path: self.path.clone(),
            offsets: self.offsets.clone(),
            durable: self.durable.clone(),
            next: from.max(1),
            reader: None,
            readable_to: 0,
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

/// About the size of `request`'s frame, for bounding a batch.
fn frame_size(request: &AppendRequest) -> usize {
    FRAME_HEADER_LEN
        + MIN_BODY_LEN
        + request.subject.len()
        + request.msg_id.len()
        + request.payload.len()
        + request
            .headers
            .iter()
            .map(|(name, value)| 6 + name.len() + value.len())
            .sum::<usize>()
}

/// The answer of each record of a batch whose write or `fsync` failed.
fn write_failed(err: &io::Error) -> LogError {
    LogError::Io(io::Error::new(
        err.kind(),
        format!("event log write failed: {err}"),
    ))
}

/// What became of one job of a batch, before the batch is written.
enum Outcome {
    /// Accepted: written at this sequence if the batch's write and `fsync` succeed.
    Staged(u64),
    /// A retry of a record stored before (or earlier in this batch, at this sequence).
    Duplicate { sequence: u64, staged: bool },
    /// Refused on its own.
    Refused(LogError),
}

impl Writer {
    /// The writer thread: one batch per turn, until the queue closes.
    fn run(mut self, jobs: mpsc::Receiver<Job>) {
        while let Ok(first) = jobs.recv() {
            let mut bytes = frame_size(&first.request);
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH_RECORDS && bytes < MAX_BATCH_BYTES {
                match jobs.try_recv() {
                    Ok(job) => {
                        bytes += frame_size(&job.request);
                        batch.push(job);
                    }
                    Err(_) => break,
                }
            }
            self.write_batch(batch);
        }
    }

    /// Checks, writes and `fsync`s one batch, then answers each of its jobs.
    fn write_batch(&mut self, batch: Vec<Job>) {
        if let Some(reason) = &self.broken {
            let message = format!(
                "the event log is unusable after a failed write ({reason}); restart the process"
            );
            for job in batch {
                let _ = job
                    .answer
                    .send(Err(LogError::Io(io::Error::other(message.clone()))));
            }
            return;
        }
        // The log as the batch leaves it so far, on top of what is stored.
        let mut next = self.last_sequence;
        let mut batch_last_id: Option<&str> = None;
        let mut batch_subjects: HashMap<&str, u64> = HashMap::new();
        let mut batch_ids: HashMap<&str, u64> = HashMap::new();
        let mut frames = Vec::new();
        let mut offsets = Vec::new();
        let mut outcomes = Vec::with_capacity(batch.len());
        for job in &batch {
            let request = &job.request;
            if let Some(&sequence) = batch_ids.get(request.msg_id.as_str()) {
                outcomes.push(Outcome::Duplicate {
                    sequence,
                    staged: true,
                });
                continue;
            }
            if let Some(&sequence) = self.by_msg_id.get(&request.msg_id) {
                outcomes.push(Outcome::Duplicate {
                    sequence,
                    staged: false,
                });
                continue;
            }
            let holds = match &request.expect {
                Expectation::Any => true,
                Expectation::LastSubjectSequence(expected) => {
                    let last = batch_subjects
                        .get(request.subject.as_str())
                        .or_else(|| self.last_by_subject.get(&request.subject))
                        .copied()
                        .unwrap_or(0);
                    last == *expected
                }
                Expectation::LastSequence(expected) => next == *expected,
                Expectation::LastMsgId(expected) => {
                    next > 0 && batch_last_id.unwrap_or(&self.last_msg_id) == expected
                }
            };
            if !holds {
                outcomes.push(Outcome::Refused(LogError::Conflict {
                    subject: request.subject.clone(),
                    expected: request.expect.expected_sequence(),
                }));
                continue;
            }
            let frame = match encode_frame(next + 1, request) {
                Ok(frame) => frame,
                Err(err) => {
                    outcomes.push(Outcome::Refused(err));
                    continue;
                }
            };
            next += 1;
            offsets.push(self.len + frames.len() as u64);
            frames.extend_from_slice(&frame);
            batch_subjects.insert(&request.subject, next);
            batch_ids.insert(&request.msg_id, next);
            batch_last_id = Some(&request.msg_id);
            outcomes.push(Outcome::Staged(next));
        }

        let written = if frames.is_empty() {
            Ok(())
        } else {
            self.write_durably(&frames, next)
        };
        if let (Ok(()), Some(last_msg_id)) = (&written, batch_last_id) {
            let last_msg_id = last_msg_id.to_string();
            for (job, outcome) in batch.iter().zip(&outcomes) {
                if let Outcome::Staged(sequence) = outcome {
                    let request = &job.request;
                    self.last_by_subject
                        .insert(request.subject.clone(), *sequence);
                    self.by_msg_id.insert(request.msg_id.clone(), *sequence);
                }
            }
            self.len += frames.len() as u64;
            self.last_sequence = next;
            self.last_msg_id = last_msg_id;
            self.offsets
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(offsets);
            self.durable.send_replace(Durable {
                sequence: next,
                len: self.len,
            });
        }
        for (job, outcome) in batch.into_iter().zip(outcomes) {
            let (sequence, duplicate) = match outcome {
                Outcome::Refused(err) => {
                    let _ = job.answer.send(Err(err));
                    continue;
                }
                Outcome::Duplicate {
                    sequence,
                    staged: false,
                } => (sequence, true),
                Outcome::Duplicate {
                    sequence,
                    staged: true,
                } => match &written {
                    Ok(()) => (sequence, true),
                    Err(err) => {
                        let _ = job.answer.send(Err(write_failed(err)));
                        continue;
                    }
                },
                Outcome::Staged(sequence) => match &written {
                    Ok(()) => (sequence, false),
                    Err(err) => {
                        let _ = job.answer.send(Err(write_failed(err)));
                        continue;
                    }
                },
            };
            let _ = job.answer.send(Ok(Appended {
                sequence,
                duplicate,
            }));
        }
    }

    /// Appends `frames` (ending with record `last`) to the file and `fsync`s it.
    fn write_durably(&mut self, frames: &[u8], last: u64) -> io::Result<()> {
        let offset = self.len;
        if let Err(err) = self.file.write_all(frames) {
            // Cut off whatever part of the batch reached the file, so that the next
            // append starts on a frame boundary.
            if let Err(truncate) = self.file.set_len(offset) {
                self.broken = Some(format!("{err}, then {truncate}"));
            }
            tracing::error!(error = %err, last, "event log write failed");
            return Err(err);
        }
        if let Err(err) = self.file.sync_data() {
            // After a failed fsync the page cache cannot be trusted (the kernel may have
            // dropped the dirty pages): only a reopen, which re-reads the file, recovers.
            let _ = self.file.set_len(offset);
            self.broken = Some(err.to_string());
            tracing::error!(error = %err, last, "event log fsync failed");
            return Err(err);
        }
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
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
    last_msg_id: String,
    offsets: Vec<u64>,
    last_by_subject: HashMap<String, u64>,
    by_msg_id: HashMap<String, u64>,
}

impl Scan {
    /// A file with its magic and no record yet.
    fn empty() -> Scan {
        Scan {
            len: MAGIC.len() as u64,
            last_sequence: 0,
            last_msg_id: String::new(),
            offsets: Vec::new(),
            last_by_subject: HashMap::new(),
            by_msg_id: HashMap::new(),
        }
    }
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
        return Ok(Scan::empty());
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

    let mut scan = Scan::empty();
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
        scan.by_msg_id
            .insert(record.msg_id.clone(), record.sequence);
        scan.last_msg_id = record.msg_id;
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
    let one_batch = (MAX_BATCH_BYTES + FRAME_HEADER_LEN + MAX_BODY_LEN) as u64;
    if tail_len > one_batch {
        return Err(corrupt());
    }
    let mut tail = vec![0; tail_len as usize];
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(&mut tail)?;
    if unwritten_block_at(&tail, offset) {
        // A batch cut short by a power loss: whatever follows the hole is of the same
        // unacknowledged batch.
        return Ok(());
    }
    if tail_len > (FRAME_HEADER_LEN + MAX_BODY_LEN) as u64 {
        return Err(corrupt());
    }
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

/// Whether `tail`, the file from byte `offset` (a bad frame) on, holds a block of the
/// bad frame that did not reach the disk: zeros from `offset` to the end of its block
/// (or of the file), or a whole block of zeros (or zeros to the end of the file)
/// starting anywhere within the frame's extent as its header gives it, or within the
/// first block after `offset` when the header itself is unreadable. Blocks past the end
/// of the durable data that were never written read as zeros; a bad frame with no such
/// hole, followed by valid frames, is damage.
fn unwritten_block_at(tail: &[u8], offset: u64) -> bool {
    let tail_end = offset + tail.len() as u64;
    let zeros_until_boundary = |from: u64| {
        let start = (from - offset) as usize;
        let end = ((from / BLOCK + 1) * BLOCK).min(tail_end) - offset;
        start < end as usize && tail[start..end as usize].iter().all(|&b| b == 0)
    };
    if zeros_until_boundary(offset) {
        return true;
    }
    let next_block = (offset / BLOCK + 1) * BLOCK;
    let frame_end = tail
        .get(..FRAME_HEADER_LEN)
        .map(|header| parse_frame_header(header.try_into().expect("8 bytes")).0)
        .filter(|body_len| (MIN_BODY_LEN..=MAX_BODY_LEN).contains(body_len))
        .map_or(0, |body_len| offset + (FRAME_HEADER_LEN + body_len) as u64);
    let end = frame_end.max(next_block + 1).min(tail_end);
    (next_block..end)
        .step_by(BLOCK as usize)
        .any(zeros_until_boundary)
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
    durable: watch::Receiver<Durable>,
    /// The sequence to yield next.
    next: u64,
    /// Positioned at the frame of `next`; opened on the first read. Reads stop at
    /// `readable_to`: buffering past the durable data could keep bytes of a batch whose
    /// write then failed and was replaced.
    reader: Option<tokio::io::BufReader<tokio::io::Take<tokio::fs::File>>>,
    /// The file length the reader may read to: the durable length when it was last set.
    readable_to: u64,
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
        let durable_len = match self
            .durable
            .wait_for(|durable| durable.sequence >= next)
            .await
        {
            Ok(durable) => durable.len,
            Err(_) => {
                return Err(LogError::Unavailable(
                    "the event log was closed".to_string(),
                ));
            }
        };
        let reader = match &mut self.reader {
            Some(reader) => {
                let take = reader.get_mut();
                take.set_limit(take.limit() + (durable_len - self.readable_to));
                reader
            }
            None => {
                let offset = self.offsets.read().unwrap_or_else(PoisonError::into_inner)
                    [(next - 1) as usize];
                let mut file = tokio::fs::File::open(&*self.path).await?;
                file.seek(SeekFrom::Start(offset)).await?;
                let durable_part = file.take(durable_len - offset);
                self.reader
                    .insert(tokio::io::BufReader::with_capacity(1 << 16, durable_part))
            }
        };
        self.readable_to = durable_len;
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

//! Chaos on the event log: writers appending while a test kills NATS nodes, and the
//! checks that nothing acknowledged was lost.
//!
//! A [`Burst`] runs `n` writers on one [`EventLog`], each on a subject of its own
//! (`gatehouse.events.api.burst-<run>-<i>`), each append guarded by the writer's own last
//! subject sequence, as control guards an aggregate. A writer whose append fails
//! (`Unavailable` once the log's retries are spent) sends the *same* request again (same
//! message id), as a client that did not get an answer would; a `Conflict` can only mean
//! that a retry of a stored append was refused instead of de-duplicated, so it is
//! recorded and that writer stops. Every acknowledged append is recorded with the instant
//! its ack came.
//!
//! [`BurstReport::assert_stored_once`] reads the whole log back and checks that every
//! acknowledged append is there at the sequence its ack gave, and that no message id is
//! stored twice. [`BurstReport::longest_pause_after`] is the write unavailability: the
//! longest time between two consecutive acks (of any writer) after an instant.
//!
//! # Shared state
//!
//! The writers share one `Mutex<Vec<Ack>>` (appended once per ack, read at the end) and
//! an `AtomicBool` stop flag; nothing else.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use gatehouse_eventlog::{AppendRequest, EventLog, Expectation, LogError, subject};
use tokio::task::JoinHandle;

/// One acknowledged append.
#[derive(Debug, Clone)]
pub struct Ack {
    pub at: Instant,
    pub sequence: u64,
    pub msg_id: String,
    pub duplicate: bool,
}

/// Writers appending to a log until stopped.
pub struct Burst {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    acked: Arc<AtomicUsize>,
    unavailable: Arc<AtomicUsize>,
    writers: Vec<JoinHandle<Vec<String>>>,
}

/// What a [`Burst`] did.
#[derive(Debug)]
pub struct BurstReport {
    /// Every ack, in the order they came.
    pub acks: Vec<Ack>,
    /// Appends that failed with `Unavailable` (each sent again, same request).
    pub unavailable: usize,
    /// Conflicts and other errors that stopped a writer (must be empty).
    pub fatal: Vec<String>,
}

impl Burst {
    /// `writers` writers appending to `log` as fast as it acknowledges, each pausing
    /// `pause` between two appends.
    pub fn start(log: Arc<dyn EventLog>, writers: usize, pause: Duration) -> Burst {
        let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let acked = Arc::new(AtomicUsize::new(0));
        let unavailable = Arc::new(AtomicUsize::new(0));
        let writers = (0..writers)
            .map(|i| {
                let (log, stop, acks, acked) =
                    (log.clone(), stop.clone(), acks.clone(), acked.clone());
                let unavailable = unavailable.clone();
                let subject = subject("api", &format!("burst-{run}-{i}"));
                tokio::spawn(async move {
                    let mut last = 0u64;
                    let mut n = 0u64;
                    let mut fatal = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let request = AppendRequest {
                            subject: subject.clone(),
                            msg_id: format!("{subject}-{n}"),
                            headers: vec![],
                            payload: Bytes::from(format!("write {n} of {subject}")),
                            expect: Expectation::LastSubjectSequence(last),
                        };
                        loop {
                            match log.append(request.clone()).await {
                                Ok(appended) => {
                                    last = appended.sequence;
                                    acks.lock().unwrap().push(Ack {
                                        at: Instant::now(),
                                        sequence: appended.sequence,
                                        msg_id: request.msg_id.clone(),
                                        duplicate: appended.duplicate,
                                    });
                                    acked.fetch_add(1, Ordering::Relaxed);
                                    break;
                                }
                                Err(LogError::Unavailable(_)) => {
                                    unavailable.fetch_add(1, Ordering::Relaxed);
                                    if stop.load(Ordering::Relaxed) {
                                        return fatal;
                                    }
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                }
                                Err(err) => {
                                    fatal.push(format!("{}: {err}", request.msg_id));
                                    return fatal;
                                }
                            }
                        }
                        tokio::time::sleep(pause).await;
                    }
                    fatal
                })
            })
            .collect();
        Burst {
            stop,
            acks,
            acked,
            unavailable,
            writers,
        }
    }

    /// How many appends have been acknowledged so far.
    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    /// The instant of the last ack so far.
    pub fn last_ack(&self) -> Option<Instant> {
        self.acks.lock().unwrap().last().map(|a| a.at)
    }

    /// Waits until `more` appends beyond the current count are acknowledged.
    ///
    /// # Panics
    ///
    /// If they are not within `timeout` (writes did not resume).
    pub async fn wait_for_more(&self, more: usize, timeout: Duration) {
        let target = self.acked() + more;
        crate::poll::Poll::new(format!("{more} more acknowledged appends"))
            .timeout(timeout)
            .until_async(|| async { self.acked() >= target })
            .await
    }

    /// Stops the writers (each finishes the append it is in) and reports.
    pub async fn stop(self) -> BurstReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut fatal = Vec::new();
        for writer in self.writers {
            fatal.extend(writer.await.expect("a burst writer panicked"));
        }
        let acks = std::mem::take(&mut *self.acks.lock().unwrap());
        BurstReport {
            acks,
            unavailable: self.unavailable.load(Ordering::Relaxed),
            fatal,
        }
    }
}

/// The longest time without an ack after `since`: from `since` to the first ack after
/// it, and between consecutive acks after it (`acks` in the order they came).
pub fn longest_pause_after(acks: impl IntoIterator<Item = Instant>, since: Instant) -> Duration {
    let mut previous = since;
    let mut longest = Duration::ZERO;
    for at in acks.into_iter().filter(|at| *at >= since) {
        longest = longest.max(at - previous);
        previous = at;
    }
    longest
}

impl BurstReport {
    /// The longest time without an ack after `since` ([`longest_pause_after`]).
    pub fn longest_pause_after(&self, since: Instant) -> Duration {
        longest_pause_after(self.acks.iter().map(|a| a.at), since)
    }

    /// Reads `log` from the start and checks that every acknowledged append is stored
    /// at the sequence its ack gave and that no message id is stored twice; returns how
    /// many records the log holds.
    ///
    /// # Panics
    ///
    /// On a lost or doubled append, or a writer stopped by an error.
    pub async fn assert_stored_once(&self, log: &dyn EventLog) -> u64 {
        assert!(self.fatal.is_empty(), "writers failed: {:?}", self.fatal);
        let end = crate::poll::Poll::new("the log's last sequence")
            .timeout(crate::poll::CONVERGE)
            .every(Duration::from_millis(200))
            .until_async(|| async { log.last_sequence().await.map_err(|e| e.to_string()) })
            .await;
        let mut stream = crate::poll::Poll::new("a follower from the start")
            .timeout(crate::poll::CONVERGE)
            .every(Duration::from_millis(200))
            .until_async(|| async { log.follow(1).await.map_err(|e| e.to_string()) })
            .await;
        let mut by_id = std::collections::HashMap::new();
        for expected in 1..=end {
            let record = tokio::time::timeout(Duration::from_secs(30), stream.next())
                .await
                .unwrap_or_else(|_| panic!("record {expected} of {end} not delivered"))
                .unwrap_or_else(|| panic!("the log ended before {expected} of {end}"))
                .unwrap_or_else(|e| panic!("reading record {expected}: {e}"));
            assert_eq!(record.sequence, expected);
            if let Some(first) = by_id.insert(record.msg_id.clone(), record.sequence) {
                panic!(
                    "{} stored twice: at {first} and {}",
                    record.msg_id, record.sequence
                );
            }
        }
        for ack in &self.acks {
            assert_eq!(
                by_id.get(&ack.msg_id),
                Some(&ack.sequence),
                "acknowledged append {} (sequence {}) is not in the log",
                ack.msg_id,
                ack.sequence
            );
        }
        end
    }
}

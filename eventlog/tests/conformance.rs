//! The conformance suite of the event log: every case is written once, in `cases`,
//! against a [`Harness`] that opens (and reopens) a log, and runs against both backends:
//! `file::*` on a [`FileLog`] in a temporary directory, `nats::*` on a [`NatsLog`]
//! backed by a real `nats-server` (which must be on `PATH`).
//!
//! Each backend also has tests of its own at the end of its module (crash recovery for
//! the file, broker restarts and gaps for NATS).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use gatehouse_eventlog::{
    AppendRequest, Appended, EventLog, Expectation, LogError, Record, RecordStream, subject,
};
use gatehouse_testkit::poll::Poll;

/// How long a follower may take to deliver a record before the test fails.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(20);

/// Opens the log under test, and restarts its storage.
#[async_trait]
trait Harness: Send {
    /// A handle on the log under test: for NATS a new connection each time, for the file
    /// backend a clone of the one open log (opening it first if needed).
    async fn log(&mut self) -> Arc<dyn EventLog>;

    /// Restarts the storage under the log. Every handle from [`log`](Self::log) must have
    /// been dropped; the next `log` opens or connects anew.
    async fn restart(&mut self);
}

fn request(subject: &str, msg_id: &str, expect: Expectation) -> AppendRequest {
    AppendRequest {
        subject: subject.to_string(),
        msg_id: msg_id.to_string(),
        headers: Vec::new(),
        payload: Bytes::from(format!("payload of {msg_id}")),
        expect,
    }
}

async fn append(log: &dyn EventLog, request: AppendRequest) -> Appended {
    let msg_id = request.msg_id.clone();
    log.append(request)
        .await
        .unwrap_or_else(|err| panic!("append of {msg_id} failed: {err}"))
}

/// Appends, retrying while the log is unavailable (just after a broker restart, a first
/// publish can be lost and time out); the same `msg_id` makes retries safe.
async fn append_retrying(log: &dyn EventLog, request: AppendRequest) -> Appended {
    Poll::new(format!("the append of {} to succeed", request.msg_id))
        .timeout(Duration::from_secs(60))
        .every(Duration::from_millis(200))
        .until_async(|| async {
            match log.append(request.clone()).await {
                Ok(appended) => Ok(appended),
                Err(LogError::Unavailable(reason)) => {
                    eprintln!("append unavailable, retrying: {reason}");
                    Err(reason)
                }
                Err(err) => panic!("append of {} failed: {err}", request.msg_id),
            }
        })
        .await
}

async fn next_record(stream: &mut RecordStream) -> Record {
    match tokio::time::timeout(DELIVERY_TIMEOUT, stream.next()).await {
        Ok(Some(Ok(record))) => record,
        Ok(Some(Err(err))) => panic!("follow stream failed: {err}"),
        Ok(None) => panic!("follow stream ended"),
        Err(_) => panic!("no record within {DELIVERY_TIMEOUT:?}"),
    }
}

/// Asserts that nothing more is delivered for a little while.
async fn assert_quiet(stream: &mut RecordStream) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(300), stream.next()).await {
        panic!("expected no more records, got {item:?}");
    }
}

fn sequences(records: &[Record]) -> Vec<u64> {
    records.iter().map(|record| record.sequence).collect()
}

fn is_invalid_input(err: &LogError) -> bool {
    matches!(err, LogError::Io(io) if io.kind() == std::io::ErrorKind::InvalidInput)
}

/// The cases, each generic over the backend.
mod cases {
    use super::*;

    /// Five records on two subjects, read back whole and from the middle.
    pub async fn append_and_read(harness: &mut impl Harness) {
        let log = harness.log().await;
        assert_eq!(log.last_sequence().await.unwrap(), 0);
        assert!(log.read_to_end(1).await.unwrap().is_empty());

        let a = subject("api", "a");
        let b = subject("application", "b");
        let mut expected = Vec::new();
        for (i, subject) in [&a, &b, &a, &a, &b].into_iter().enumerate() {
            let msg_id = format!("m{i}");
            let request = request(subject, &msg_id, Expectation::Any);
            let appended = append(&*log, request.clone()).await;
            assert_eq!(
                appended,
                Appended {
                    sequence: i as u64 + 1,
                    duplicate: false
                }
            );
            expected.push(Record {
                sequence: appended.sequence,
                subject: request.subject,
                msg_id: request.msg_id,
                headers: request.headers,
                payload: request.payload,
            });
        }
        assert_eq!(log.last_sequence().await.unwrap(), 5);
        assert_eq!(log.read_to_end(1).await.unwrap(), expected);
        assert_eq!(
            log.read_to_end(0).await.unwrap(),
            expected,
            "0 means the start"
        );
        assert_eq!(log.read_to_end(3).await.unwrap(), expected[2..]);
        assert_eq!(log.read_to_end(5).await.unwrap(), expected[4..]);
        assert!(log.read_to_end(6).await.unwrap().is_empty());

        let mut follow = log.follow(3).await.unwrap();
        for record in &expected[2..] {
            assert_eq!(&next_record(&mut follow).await, record);
        }
        assert_quiet(&mut follow).await;
    }

    /// A follower gets records appended after it started, whether it started on the
    /// last stored record or ahead of the log.
    pub async fn follow_is_live(harness: &mut impl Harness) {
        let log = harness.log().await;
        let s = subject("api", "live");
        append(&*log, request(&s, "m1", Expectation::Any)).await;
        append(&*log, request(&s, "m2", Expectation::Any)).await;

        let mut from_start = log.follow(1).await.unwrap();
        let mut ahead = log.follow(3).await.unwrap();
        assert_eq!(next_record(&mut from_start).await.sequence, 1);
        assert_eq!(next_record(&mut from_start).await.sequence, 2);
        assert_quiet(&mut ahead).await;

        // Appended by another task (another connection for NATS) while both wait.
        let writer = harness.log().await;
        let appending = tokio::spawn({
            let s = s.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                for id in ["m3", "m4", "m5"] {
                    append(&*writer, request(&s, id, Expectation::Any)).await;
                }
            }
        });
        for (sequence, msg_id) in [(3, "m3"), (4, "m4"), (5, "m5")] {
            let record = next_record(&mut from_start).await;
            assert_eq!(
                (record.sequence, record.msg_id.as_str()),
                (sequence, msg_id)
            );
            assert_eq!(record.payload, Bytes::from(format!("payload of {msg_id}")));
            assert_eq!(next_record(&mut ahead).await, record);
        }
        appending.await.unwrap();
        assert_quiet(&mut from_start).await;
    }

    /// Optimistic concurrency on one subject.
    pub async fn subject_sequence_conflict(harness: &mut impl Harness) {
        let log = harness.log().await;
        let s = subject("api", "contended");
        let other = subject("api", "other");

        let first = append(
            &*log,
            request(&s, "m1", Expectation::LastSubjectSequence(0)),
        )
        .await;
        assert_eq!(first.sequence, 1);
        // Another subject has its own sequence: 0 still holds there.
        let unrelated = append(
            &*log,
            request(&other, "o1", Expectation::LastSubjectSequence(0)),
        )
        .await;
        assert_eq!(unrelated.sequence, 2);

        // A writer that read the aggregate before m1 is stale.
        match log
            .append(request(&s, "stale", Expectation::LastSubjectSequence(0)))
            .await
        {
            Err(LogError::Conflict { subject, expected }) => {
                assert_eq!((subject.as_str(), expected), (s.as_str(), 0));
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        // One that read it after m1 wins, even though the log has moved on elsewhere.
        let fresh = append(
            &*log,
            request(&s, "m2", Expectation::LastSubjectSequence(1)),
        )
        .await;
        assert_eq!(fresh.sequence, 3);

        // Two writers racing with the same expectation: exactly one wins.
        let (one, two) = (harness.log().await, harness.log().await);
        let (r1, r2) = tokio::join!(
            one.append(request(&s, "race-1", Expectation::LastSubjectSequence(3))),
            two.append(request(&s, "race-2", Expectation::LastSubjectSequence(3))),
        );
        let (winner, loser) = match (r1, r2) {
            (Ok(winner), Err(loser)) => (winner, loser),
            (Err(loser), Ok(winner)) => (winner, loser),
            other => panic!("expected exactly one winner, got {other:?}"),
        };
        assert_eq!(winner.sequence, 4);
        assert!(
            matches!(loser, LogError::Conflict { expected: 3, .. }),
            "{loser:?}"
        );

        let records = log.read_to_end(1).await.unwrap();
        assert_eq!(sequences(&records), [1, 2, 3, 4]);
        assert!(records[3].msg_id.starts_with("race-"));
        assert!(!records.iter().any(|r| r.msg_id == "stale"));
    }

    /// Optimistic concurrency on the whole log.
    pub async fn log_sequence_conflict(harness: &mut impl Harness) {
        let log = harness.log().await;
        let a = subject("api", "a");
        let b = subject("api", "b");

        // 0: the log is empty.
        assert_eq!(
            append(&*log, request(&a, "m1", Expectation::LastSequence(0)))
                .await
                .sequence,
            1
        );
        assert!(matches!(
            log.append(request(&b, "stale-0", Expectation::LastSequence(0)))
                .await,
            Err(LogError::Conflict { expected: 0, .. })
        ));
        // The check spans subjects: a write to `b` moves the log for a writer on `a`.
        assert_eq!(
            append(&*log, request(&b, "m2", Expectation::LastSequence(1)))
                .await
                .sequence,
            2
        );
        match log
            .append(request(&a, "stale-1", Expectation::LastSequence(1)))
            .await
        {
            Err(LogError::Conflict { subject, expected }) => {
                assert_eq!((subject.as_str(), expected), (a.as_str(), 1));
            }
            other => panic!("expected a conflict, got {other:?}"),
        }

        let (one, two) = (harness.log().await, harness.log().await);
        let (r1, r2) = tokio::join!(
            one.append(request(&a, "race-1", Expectation::LastSequence(2))),
            two.append(request(&b, "race-2", Expectation::LastSequence(2))),
        );
        assert!(
            matches!(
                (&r1, &r2),
                (
                    Ok(Appended { sequence: 3, .. }),
                    Err(LogError::Conflict { .. })
                ) | (
                    Err(LogError::Conflict { .. }),
                    Ok(Appended { sequence: 3, .. })
                )
            ),
            "expected exactly one winner, got {r1:?} and {r2:?}"
        );
        assert_eq!(log.last_sequence().await.unwrap(), 3);
    }

    /// A retried append is stored once and answered with the original's sequence, even
    /// if its expectation no longer holds (de-duplication comes first).
    pub async fn duplicate_msg_id_is_stored_once(harness: &mut impl Harness) {
        let log = harness.log().await;
        let s = subject("subscription", "dup");
        let original = request(&s, "once", Expectation::LastSubjectSequence(0));
        assert_eq!(
            append(&*log, original.clone()).await,
            Appended {
                sequence: 1,
                duplicate: false
            }
        );
        append(&*log, request(&s, "next", Expectation::Any)).await;

        assert_eq!(
            append(&*log, original.clone()).await,
            Appended {
                sequence: 1,
                duplicate: true
            }
        );
        // Through another handle (connection), with another expectation: still a duplicate.
        let other = harness.log().await;
        let retry = AppendRequest {
            expect: Expectation::LastSequence(0),
            ..original
        };
        assert_eq!(
            append(&*other, retry).await,
            Appended {
                sequence: 1,
                duplicate: true
            }
        );

        assert_eq!(log.last_sequence().await.unwrap(), 2);
        let records = log.read_to_end(1).await.unwrap();
        assert_eq!(sequences(&records), [1, 2]);
        assert_eq!(records.iter().filter(|r| r.msg_id == "once").count(), 1);
    }

    /// Headers come back as given: names, values, repeats and order.
    pub async fn headers_round_trip(harness: &mut impl Harness) {
        let log = harness.log().await;
        let headers: Vec<(String, String)> = [
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"),
            ("X-Actor", "admin@example.com"),
            ("Zeta", "first"),
            ("alpha", ""),
            ("Zeta", "second"),
            ("x-actor", "lower case is another name"),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
        let with_headers = AppendRequest {
            headers: headers.clone(),
            payload: Bytes::from_static(b"\x00\x01binary\xff"),
            ..request(&subject("api", "h"), "h1", Expectation::Any)
        };
        append(&*log, with_headers).await;
        append(&*log, request(&subject("api", "h"), "h2", Expectation::Any)).await;

        let records = log.read_to_end(1).await.unwrap();
        assert_eq!(records[0].headers, headers);
        assert_eq!(
            records[0].payload,
            Bytes::from_static(b"\x00\x01binary\xff")
        );
        assert_eq!(records[1].headers, Vec::<(String, String)>::new());
        let mut follow = log.follow(1).await.unwrap();
        assert_eq!(next_record(&mut follow).await.headers, headers);
    }

    /// Requests that break the rules are refused and leave the log unchanged.
    pub async fn invalid_requests_are_refused(harness: &mut impl Harness) {
        let log = harness.log().await;
        for bad in [
            "gatehouse.events.api",
            "gatehouse.events.api.",
            "gatehouse.events.api.a.b",
            "gatehouse.events.api.*",
            "gatehouse.events.>",
            "gatehouse.events.api.a b",
            "other.events.api.a",
            "gatehouse.eventsx.api.a",
        ] {
            match log.append(request(bad, "bad", Expectation::Any)).await {
                Err(LogError::InvalidSubject(subject)) => assert_eq!(subject, bad),
                other => panic!("{bad:?} should be an invalid subject, got {other:?}"),
            }
        }
        let good = subject("api", "ok");
        let bad_requests = [
            request(&good, "", Expectation::Any),
            request(&good, " padded ", Expectation::Any),
            AppendRequest {
                headers: vec![("Nats-Expected-Stream".into(), "X".into())],
                ..request(&good, "reserved", Expectation::Any)
            },
            AppendRequest {
                headers: vec![("bad name".into(), "x".into())],
                ..request(&good, "space", Expectation::Any)
            },
            AppendRequest {
                headers: vec![("name".into(), "two\r\nlines".into())],
                ..request(&good, "crlf", Expectation::Any)
            },
        ];
        for bad in bad_requests {
            let err = log.append(bad.clone()).await.unwrap_err();
            assert!(
                is_invalid_input(&err),
                "{bad:?} should be refused, got {err:?}"
            );
        }
        assert_eq!(log.last_sequence().await.unwrap(), 0);
    }

    /// What was acknowledged is still there after a restart, and the indexes (per
    /// subject, de-duplication) are rebuilt.
    pub async fn durable_across_restart(harness: &mut impl Harness) {
        let log = harness.log().await;
        let s = subject("api", "durable");
        let t = subject("policy", "gold");
        for (subject, id) in [(&s, "d1"), (&t, "d2"), (&s, "d3")] {
            append(
                &*log,
                AppendRequest {
                    headers: vec![("traceparent".into(), format!("trace-{id}"))],
                    ..request(subject, id, Expectation::Any)
                },
            )
            .await;
        }
        let before = log.read_to_end(1).await.unwrap();
        assert_eq!(before.len(), 3);
        drop(log);

        harness.restart().await;

        let log = harness.log().await;
        assert_eq!(log.last_sequence().await.unwrap(), 3);
        assert_eq!(log.read_to_end(1).await.unwrap(), before);
        // The retry of an acknowledged append is still recognised.
        assert_eq!(
            append_retrying(&*log, request(&t, "d2", Expectation::Any)).await,
            Appended {
                sequence: 2,
                duplicate: true
            }
        );
        // The last sequence of each subject survived.
        assert!(matches!(
            log.append(request(&s, "stale", Expectation::LastSubjectSequence(1)))
                .await,
            Err(LogError::Conflict { .. })
        ));
        assert_eq!(
            append_retrying(
                &*log,
                request(&s, "d4", Expectation::LastSubjectSequence(3))
            )
            .await,
            Appended {
                sequence: 4,
                duplicate: false
            }
        );
        assert_eq!(sequences(&log.read_to_end(1).await.unwrap()), [1, 2, 3, 4]);
    }

    /// The first retained record of a log that keeps its whole history is 1, empty or
    /// not.
    pub async fn first_sequence_of_a_whole_log(harness: &mut impl Harness) {
        let log = harness.log().await;
        assert_eq!(log.first_sequence().await.unwrap(), 1, "empty: last + 1");
        for id in ["f1", "f2", "f3"] {
            append(&*log, request(&subject("api", "f"), id, Expectation::Any)).await;
        }
        assert_eq!(log.first_sequence().await.unwrap(), 1);
        assert_eq!(log.last_sequence().await.unwrap(), 3);
    }

    /// `LastMsgId` holds only when the named record is the log's last; a chain of them
    /// can be in flight at once, and a broken link breaks every later one.
    pub async fn chained_appends(harness: &mut impl Harness) {
        let log = harness.log().await;
        let s = subject("api", "chain");
        let chained = |msg_id: &str, after: &str| {
            request(&s, msg_id, Expectation::LastMsgId(after.to_string()))
        };
        assert!(
            matches!(
                log.append(chained("c0", "none")).await,
                Err(LogError::Conflict { expected: 0, .. })
            ),
            "an empty log has no last record"
        );
        append(&*log, request(&s, "m1", Expectation::Any)).await;
        assert_eq!(append(&*log, chained("m2", "m1")).await.sequence, 2);
        assert!(
            matches!(
                log.append(chained("stale", "m1")).await,
                Err(LogError::Conflict { .. })
            ),
            "m2 came after m1"
        );

        // Three links in flight through one handle: stored in order.
        let first = log
            .submit(request(&s, "c1", Expectation::LastSequence(2)))
            .await
            .unwrap();
        let second = log.submit(chained("c2", "c1")).await.unwrap();
        let third = log.submit(chained("c3", "c2")).await.unwrap();
        let sequences = [first.await, second.await, third.await]
            .map(|appended| appended.expect("every link holds").sequence);
        assert_eq!(sequences, [3, 4, 5]);

        // A chain whose first link fails: every later link fails too.
        let broken = log
            .submit(request(&s, "b1", Expectation::LastSequence(1)))
            .await
            .unwrap();
        let after_broken = log.submit(chained("b2", "b1")).await.unwrap();
        let last_broken = log.submit(chained("b3", "b2")).await.unwrap();
        for pending in [broken, after_broken, last_broken] {
            assert!(
                matches!(pending.await, Err(LogError::Conflict { .. })),
                "a broken chain stores nothing"
            );
        }

        // Another writer's record between two links breaks the chain.
        let other = harness.log().await;
        append(
            &*other,
            request(&subject("api", "other"), "foreign", Expectation::Any),
        )
        .await;
        assert!(matches!(
            log.append(chained("c4", "c3")).await,
            Err(LogError::Conflict { .. })
        ));
        assert_eq!(
            log.read_to_end(1)
                .await
                .unwrap()
                .iter()
                .map(|r| r.msg_id.as_str())
                .collect::<Vec<_>>(),
            ["m1", "m2", "c1", "c2", "c3", "foreign"]
        );
        let empty = request(&s, "bad", Expectation::LastMsgId(String::new()));
        assert!(is_invalid_input(&log.append(empty).await.unwrap_err()));
    }

    /// Many appends in flight at once, from many tasks and pipelined through one handle:
    /// each is answered with its own result, sequences stay contiguous, one handle's
    /// records keep their order, and each expectation is checked against the records
    /// before it.
    pub async fn concurrent_appends_are_each_acknowledged(harness: &mut impl Harness) {
        let log = harness.log().await;
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move {
                    let subject = subject("subscription", &format!("s{}", i % 20));
                    // Two tasks per subject expect it empty: exactly one may win.
                    let request = request(
                        &subject,
                        &format!("t{i}"),
                        Expectation::LastSubjectSequence(0),
                    );
                    (i, log.append(request).await)
                })
            })
            .collect();
        let mut stored = std::collections::BTreeMap::new();
        let mut conflicts = 0;
        for task in tasks {
            let (i, result) = task.await.unwrap();
            match result {
                Ok(appended) => {
                    assert!(!appended.duplicate);
                    stored.insert(appended.sequence, format!("t{i}"));
                }
                Err(LogError::Conflict { expected: 0, .. }) => conflicts += 1,
                Err(other) => panic!("t{i}: {other}"),
            }
        }
        assert_eq!((stored.len(), conflicts), (20, 20));
        let records = log.read_to_end(1).await.unwrap();
        assert_eq!(sequences(&records), (1..=20).collect::<Vec<_>>());
        for record in &records {
            assert_eq!(stored[&record.sequence], record.msg_id);
        }

        // Pipelined through one handle: stored in submit order.
        let mut pending = Vec::new();
        for i in 0..30 {
            let request = request(&subject("api", "p"), &format!("p{i}"), Expectation::Any);
            pending.push(log.submit(request).await.unwrap());
        }
        let mut last = 20;
        for answer in pending {
            let sequence = answer.await.unwrap().sequence;
            assert!(sequence > last, "one handle's records keep their order");
            last = sequence;
        }
        assert_eq!(last, 50);
    }
}

/// One `#[tokio::test]` per case, on the harness built by `$harness`.
macro_rules! conformance_tests {
    ($harness:expr) => {
        conformance_tests!(@case $harness;
            append_and_read,
            follow_is_live,
            subject_sequence_conflict,
            log_sequence_conflict,
            duplicate_msg_id_is_stored_once,
            headers_round_trip,
            invalid_requests_are_refused,
            durable_across_restart,
            first_sequence_of_a_whole_log,
            chained_appends,
            concurrent_appends_are_each_acknowledged,
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
    use std::fs::OpenOptions;
    use std::io::{Seek, SeekFrom, Write};

    use gatehouse_eventlog::FileLog;
    use tempfile::TempDir;

    use super::*;

    struct FileHarness {
        dir: TempDir,
        log: Option<FileLog>,
    }

    impl FileHarness {
        fn new() -> FileHarness {
            FileHarness {
                dir: tempfile::tempdir().unwrap(),
                log: None,
            }
        }
    }

    #[async_trait]
    impl Harness for FileHarness {
        async fn log(&mut self) -> Arc<dyn EventLog> {
            if self.log.is_none() {
                self.log = Some(FileLog::open(self.dir.path()).unwrap());
            }
            Arc::new(self.log.clone().unwrap())
        }

        async fn restart(&mut self) {
            self.log = None;
        }
    }

    conformance_tests!(FileHarness::new());

    /// Appends `count` records to a new log in `dir` and closes it; returns them.
    async fn fill(dir: &std::path::Path, count: u64) -> Vec<Record> {
        let log = FileLog::open(dir).unwrap();
        for i in 1..=count {
            let appended = append(
                &log,
                AppendRequest {
                    headers: vec![("traceparent".into(), format!("t{i}"))],
                    ..request(&subject("api", "x"), &format!("m{i}"), Expectation::Any)
                },
            )
            .await;
            assert_eq!(appended.sequence, i);
        }
        log.read_to_end(1).await.unwrap()
    }

    fn append_bytes(dir: &std::path::Path, bytes: &[u8]) {
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.join("events.log"))
            .unwrap();
        file.write_all(bytes).unwrap();
        file.sync_all().unwrap();
    }

    fn log_len(dir: &std::path::Path) -> u64 {
        std::fs::metadata(dir.join("events.log")).unwrap().len()
    }

    /// Checks that a reopened log holds `records` and takes new appends after them.
    async fn assert_recovered(dir: &std::path::Path, records: &[Record], clean_len: u64) {
        let log = FileLog::open(dir).unwrap();
        assert_eq!(log_len(dir), clean_len, "the torn tail is truncated away");
        assert_eq!(log.read_to_end(1).await.unwrap(), records);
        let next = records.len() as u64 + 1;
        let appended = append(
            &log,
            request(&subject("api", "x"), "after-recovery", Expectation::Any),
        )
        .await;
        assert_eq!(appended.sequence, next);
        assert_eq!(
            log.read_to_end(next).await.unwrap()[0].msg_id,
            "after-recovery"
        );
        drop(log);
        // And the repaired file opens cleanly again.
        let log = FileLog::open(dir).unwrap();
        assert_eq!(log.last_sequence().await.unwrap(), next);
    }

    /// Concurrent appends share `fsync`s: each is acknowledged on its own, once durable,
    /// in queue order, with its own expectation checked against the batch's earlier
    /// records (a conflict fails that append alone, and so does a record too long for
    /// the format; a retry within the batch is a duplicate).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commit_shares_fsyncs_and_keeps_each_answer() {
        let dir = tempfile::tempdir().unwrap();
        let log = FileLog::open(dir.path()).unwrap();
        let s = subject("api", "grouped");
        let before = log.append_syncs();
        let mut pending = Vec::new();
        for i in 0..64 {
            let expect = match i {
                0 => Expectation::LastSubjectSequence(0),
                // Stale: record 1 is on the subject by the time this one is checked.
                1 => Expectation::LastSubjectSequence(0),
                2 => Expectation::LastSubjectSequence(1),
                _ => Expectation::Any,
            };
            let msg_id = match i {
                3 => "g0".to_string(),
                // Longer than a frame's u16 length: refused when the batch is encoded.
                5 => "g".repeat(70_000),
                _ => format!("g{i}"),
            };
            pending.push(log.submit(request(&s, &msg_id, expect)).await.unwrap());
        }
        let mut answers = Vec::new();
        for answer in pending {
            answers.push(answer.await);
        }
        let syncs = log.append_syncs() - before;
        assert!(syncs < 16, "64 appends took {syncs} fsyncs");
        assert_eq!(answers[0].as_ref().unwrap().sequence, 1);
        assert!(matches!(
            answers[1],
            Err(LogError::Conflict { expected: 0, .. })
        ));
        assert_eq!(answers[2].as_ref().unwrap().sequence, 2);
        assert_eq!(
            *answers[3].as_ref().unwrap(),
            Appended {
                sequence: 1,
                duplicate: true
            },
            "a retry within the batch"
        );
        assert!(
            is_invalid_input(answers[5].as_ref().unwrap_err()),
            "{:?}",
            answers[5]
        );
        let stored: Vec<u64> = answers[4..]
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, answer)| answer.as_ref().unwrap().sequence)
            .collect();
        assert_eq!(stored, (3..=61).collect::<Vec<_>>(), "queue order");
        drop(log);
        // All of it durable: a reopened log has the 61 records, in the same order.
        let log = FileLog::open(dir.path()).unwrap();
        let records = log.read_to_end(1).await.unwrap();
        assert_eq!(records.len(), 61);
        assert_eq!(records[1].msg_id, "g2");
        assert_eq!(records[3].msg_id, "g6");
        assert_eq!(records[60].msg_id, "g63");
    }

    /// A batch being written when the power went: its first block never reached the
    /// disk (zeros), a later one did. None of it was acknowledged: it is truncated away,
    /// valid frames after the hole and all.
    #[tokio::test]
    async fn torn_batch_after_a_power_loss_is_truncated() {
        let big = |i: u64| AppendRequest {
            payload: Bytes::from(vec![b'x' + (i % 3) as u8; 1500]),
            ..request(&subject("api", "x"), &format!("m{i}"), Expectation::Any)
        };
        let written = tempfile::tempdir().unwrap();
        {
            let log = FileLog::open(written.path()).unwrap();
            for i in 1..=8 {
                append(&log, big(i)).await;
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let records = {
            let log = FileLog::open(dir.path()).unwrap();
            for i in 1..=3 {
                append(&log, big(i)).await;
            }
            log.read_to_end(1).await.unwrap()
        };
        let clean_len = log_len(dir.path());
        // Records 4 to 8, as the batch after record 3 would write them, with the part of
        // the batch in the block where it starts lost; records 7 and 8 lie past that
        // block, whole and valid.
        let full = std::fs::read(written.path().join("events.log")).unwrap();
        let mut batch = full[clean_len as usize..].to_vec();
        let hole = (clean_len / 4096 + 1) * 4096 - clean_len;
        batch[..hole as usize].fill(0);
        let frame_len = (batch.len() / 5) as u64;
        assert!(
            batch.len() as u64 - hole >= 2 * frame_len,
            "whole frames must follow the hole"
        );
        append_bytes(dir.path(), &batch);
        assert_recovered(dir.path(), &records, clean_len).await;
    }

    /// A power loss during a batch whose first frame spans several blocks: a block in
    /// the middle of that frame never reached the disk, the frames after it did. The
    /// frame fails its checksum, the hole shows it was never written whole, and the rest
    /// of the batch goes with it.
    #[tokio::test]
    async fn torn_batch_with_a_hole_inside_a_large_frame_is_truncated() {
        let written = tempfile::tempdir().unwrap();
        let large = AppendRequest {
            payload: Bytes::from(vec![b'L'; 20_000]),
            ..request(&subject("api", "x"), "large", Expectation::Any)
        };
        let dir = tempfile::tempdir().unwrap();
        let records = fill(dir.path(), 2).await;
        let clean_len = log_len(dir.path());
        {
            let log = FileLog::open(written.path()).unwrap();
            for i in 1..=2 {
                append(
                    &log,
                    AppendRequest {
                        headers: vec![("traceparent".into(), format!("t{i}"))],
                        ..request(&subject("api", "x"), &format!("m{i}"), Expectation::Any)
                    },
                )
                .await;
            }
            append(&log, large).await;
            for i in 4..=6 {
                append(
                    &log,
                    request(&subject("api", "x"), &format!("m{i}"), Expectation::Any),
                )
                .await;
            }
        }
        let full = std::fs::read(written.path().join("events.log")).unwrap();
        assert_eq!(
            &full[..clean_len as usize],
            &std::fs::read(dir.path().join("events.log")).unwrap()[..]
        );
        let mut batch = full[clean_len as usize..].to_vec();
        // The third block of the file after the batch's start, well inside the frame.
        let hole_start = ((clean_len / 4096 + 2) * 4096 - clean_len) as usize;
        batch[hole_start..hole_start + 4096].fill(0);
        append_bytes(dir.path(), &batch);
        assert_recovered(dir.path(), &records, clean_len).await;
    }

    /// The same damage to an acknowledged frame without a hole — bytes changed, not
    /// zeros — followed by valid records is corruption, not a torn batch.
    #[tokio::test]
    async fn changed_bytes_inside_a_large_frame_before_valid_ones_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fill(dir.path(), 2).await;
        let clean_len = log_len(dir.path());
        {
            let log = FileLog::open(dir.path()).unwrap();
            let large = AppendRequest {
                payload: Bytes::from(vec![b'L'; 20_000]),
                ..request(&subject("api", "x"), "large", Expectation::Any)
            };
            append(&log, large).await;
            append(
                &log,
                request(&subject("api", "x"), "after", Expectation::Any),
            )
            .await;
        }
        let mut file = OpenOptions::new()
            .write(true)
            .open(dir.path().join("events.log"))
            .unwrap();
        file.seek(SeekFrom::Start((clean_len / 4096 + 2) * 4096))
            .unwrap();
        file.write_all(&[b'X'; 4096]).unwrap();
        drop(file);
        assert!(matches!(
            FileLog::open(dir.path()),
            Err(LogError::Corrupt(_))
        ));
    }

    #[tokio::test]
    async fn torn_tail_of_garbage_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let records = fill(dir.path(), 3).await;
        let clean_len = log_len(dir.path());
        append_bytes(dir.path(), b"\x2a\x00\x00\x00garbage");
        assert_recovered(dir.path(), &records, clean_len).await;
    }

    #[tokio::test]
    async fn torn_tail_shorter_than_a_frame_header_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let records = fill(dir.path(), 2).await;
        let clean_len = log_len(dir.path());
        append_bytes(dir.path(), b"\x10\x00");
        assert_recovered(dir.path(), &records, clean_len).await;
    }

    #[tokio::test]
    async fn torn_tail_of_a_partial_frame_is_truncated() {
        // The last frame was being written when the process died: cut a real frame
        // short by copying the start of an earlier one to the end of the file.
        let dir = tempfile::tempdir().unwrap();
        let records = fill(dir.path(), 2).await;
        let clean_len = log_len(dir.path());
        let bytes = std::fs::read(dir.path().join("events.log")).unwrap();
        let first_frame = &bytes[8..];
        append_bytes(dir.path(), &first_frame[..first_frame.len() / 2 - 3]);
        assert_recovered(dir.path(), &records, clean_len).await;
    }

    #[tokio::test]
    async fn torn_tail_with_a_bad_checksum_is_truncated() {
        // A whole last frame whose bytes did not all reach the disk.
        let dir = tempfile::tempdir().unwrap();
        let records = fill(dir.path(), 3).await;
        let clean_len = log_len(dir.path());
        {
            let log = FileLog::open(dir.path()).unwrap();
            append(
                &log,
                request(&subject("api", "x"), "unacked", Expectation::Any),
            )
            .await;
        }
        let mut file = OpenOptions::new()
            .write(true)
            .open(dir.path().join("events.log"))
            .unwrap();
        file.seek(SeekFrom::End(-2)).unwrap();
        file.write_all(b"\xde\xad").unwrap();
        drop(file);
        assert_recovered(dir.path(), &records, clean_len).await;
    }

    #[tokio::test]
    async fn corruption_before_valid_records_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let records = fill(dir.path(), 3).await;
        let clean_len = log_len(dir.path());
        // Flip one byte of the second record's payload.
        let bytes = std::fs::read(dir.path().join("events.log")).unwrap();
        let payload = b"payload of m2";
        let at = bytes
            .windows(payload.len())
            .position(|window| window == payload)
            .unwrap();
        let mut file = OpenOptions::new()
            .write(true)
            .open(dir.path().join("events.log"))
            .unwrap();
        file.seek(SeekFrom::Start(at as u64)).unwrap();
        file.write_all(b"P").unwrap();
        drop(file);

        match FileLog::open(dir.path()) {
            Err(LogError::Corrupt(reason)) => assert!(reason.contains("refusing"), "{reason}"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
        // Nothing was truncated: the records after the damage are still on disk.
        assert_eq!(log_len(dir.path()), clean_len);
        assert_eq!(records.len(), 3);
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("events.log"), b"{\"not\": \"a log\"}").unwrap();
        assert!(matches!(
            FileLog::open(dir.path()),
            Err(LogError::Corrupt(_))
        ));
    }

    #[tokio::test]
    async fn second_open_of_a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = FileLog::open(dir.path()).unwrap();
        let clone = first.clone();
        match FileLog::open(dir.path()) {
            Err(LogError::Io(err)) => {
                assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
                assert!(
                    err.to_string().contains("in use by another process"),
                    "{err}"
                );
            }
            other => panic!("expected the directory to be locked, got {other:?}"),
        }
        drop(first);
        // A clone keeps the directory locked...
        assert!(FileLog::open(dir.path()).is_err());
        drop(clone);
        // ...and the last one releases it.
        FileLog::open(dir.path()).unwrap();
    }

    #[tokio::test]
    async fn open_creates_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a").join("b");
        let log = FileLog::open(&nested).unwrap();
        append(&log, request(&subject("api", "x"), "m1", Expectation::Any)).await;
        assert!(nested.join("events.log").exists());
    }

    #[tokio::test]
    async fn follower_ends_when_the_log_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let log = FileLog::open(dir.path()).unwrap();
        let mut follow = log.follow(1).await.unwrap();
        drop(log);
        match tokio::time::timeout(DELIVERY_TIMEOUT, follow.next()).await {
            Ok(Some(Err(LogError::Unavailable(_)))) => {}
            other => panic!("expected the follower to fail, got {other:?}"),
        }
        assert!(follow.next().await.is_none());
    }
}

mod nats {
    use gatehouse_eventlog::{NatsLog, NatsLogConfig};
    use gatehouse_testkit::nats::NatsServer;

    use super::*;

    struct NatsHarness {
        server: NatsServer,
    }

    impl NatsHarness {
        fn new() -> NatsHarness {
            NatsHarness {
                server: NatsServer::start(),
            }
        }
    }

    #[async_trait]
    impl Harness for NatsHarness {
        async fn log(&mut self) -> Arc<dyn EventLog> {
            Arc::new(connect(&self.server).await)
        }

        async fn restart(&mut self) {
            self.server.restart();
        }
    }

    async fn connect(server: &NatsServer) -> NatsLog {
        NatsLog::connect(NatsLogConfig::new(server.url()))
            .await
            .unwrap()
    }

    conformance_tests!(NatsHarness::new());

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn follow_survives_a_server_restart() {
        let mut server = NatsServer::start();
        let log = connect(&server).await;
        let s = subject("api", "restart");
        append(&log, request(&s, "before-1", Expectation::Any)).await;
        append(&log, request(&s, "before-2", Expectation::Any)).await;
        let mut follow = log.follow(1).await.unwrap();
        // A second follower that has not received anything yet when the server goes.
        let mut ahead = log.follow(3).await.unwrap();
        assert_eq!(next_record(&mut follow).await.msg_id, "before-1");
        assert_eq!(next_record(&mut follow).await.msg_id, "before-2");

        server.restart();

        for id in ["after-1", "after-2"] {
            append_retrying(&log, request(&s, id, Expectation::Any)).await;
        }
        for (sequence, id) in [(3, "after-1"), (4, "after-2")] {
            let record = next_record(&mut follow).await;
            assert_eq!((record.sequence, record.msg_id.as_str()), (sequence, id));
            assert_eq!(next_record(&mut ahead).await, record);
        }
        assert_quiet(&mut follow).await;
        assert_quiet(&mut ahead).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn follow_reports_a_gap() {
        let server = NatsServer::start();
        let log = connect(&server).await;
        let s = subject("api", "gap");
        for id in ["g1", "g2", "g3"] {
            append(&log, request(&s, id, Expectation::Any)).await;
        }
        // Someone removed record 2 behind the log's back.
        let jetstream = async_nats::jetstream::new(log.client().clone());
        let stream = jetstream.get_stream(log.stream_name()).await.unwrap();
        assert!(stream.delete_message(2).await.unwrap());

        let mut follow = log.follow(1).await.unwrap();
        assert_eq!(next_record(&mut follow).await.sequence, 1);
        match tokio::time::timeout(DELIVERY_TIMEOUT, follow.next()).await {
            Ok(Some(Err(LogError::Gap { expected, got }))) => assert_eq!((expected, got), (2, 3)),
            other => panic!("expected a gap, got {other:?}"),
        }
        assert!(follow.next().await.is_none(), "the stream ends after a gap");
    }

    /// A writer may hold at most `max_in_flight` unawaited appends: one more is refused
    /// at once (not left waiting on the client's cap of unacknowledged publishes, which
    /// only those answers free); once answers are taken, appends go through again. With
    /// the default cap, 5,000 unawaited appends (the client's own cap) do not hang either.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_past_the_in_flight_cap_are_refused_at_once_not_left_waiting() {
        let server = NatsServer::start();
        let log = NatsLog::connect(NatsLogConfig {
            max_in_flight: 8,
            ..NatsLogConfig::new(server.url())
        })
        .await
        .unwrap();
        let s = subject("api", "cap");
        let mut held = Vec::new();
        for i in 0..8 {
            held.push(
                log.submit(request(&s, &format!("c{i}"), Expectation::Any))
                    .await
                    .unwrap(),
            );
        }
        let refused = tokio::time::timeout(
            Duration::from_secs(5),
            log.submit(request(&s, "c8", Expectation::Any)),
        )
        .await
        .expect("answered at once, not left waiting");
        match refused {
            Err(LogError::Unavailable(message)) => {
                assert!(
                    message.contains("--nats-max-appends-in-flight"),
                    "{message}"
                )
            }
            other => panic!("expected Unavailable, got {:?}", other.map(|_| ())),
        }
        let mut sequences = Vec::new();
        for pending in held {
            sequences.push(pending.await.unwrap().sequence);
        }
        assert_eq!(sequences, (1..=8).collect::<Vec<u64>>());
        // Answers taken (or dropped) give the places back.
        let pending = log
            .submit(request(&s, "c9", Expectation::Any))
            .await
            .unwrap();
        drop(
            log.submit(request(&s, "c10", Expectation::Any))
                .await
                .unwrap(),
        );
        assert_eq!(pending.await.unwrap().sequence, 9);

        let log = connect(&server).await;
        let many = subject("api", "many");
        let mut held = Vec::new();
        let submitted = tokio::time::timeout(Duration::from_secs(60), async {
            for i in 0..5_001 {
                match log
                    .submit(request(&many, &format!("m{i}"), Expectation::Any))
                    .await
                {
                    Ok(pending) => held.push(pending),
                    Err(LogError::Unavailable(_)) => break,
                    Err(other) => panic!("{other}"),
                }
            }
        })
        .await;
        assert!(
            submitted.is_ok(),
            "5,001 unawaited appends must not hang the writer"
        );
        assert_eq!(held.len(), gatehouse_eventlog::MAX_APPENDS_IN_FLIGHT);
        for pending in held {
            pending.await.unwrap();
        }
    }

    #[tokio::test]
    async fn connect_fails_fast_when_the_server_is_down() {
        let mut server = NatsServer::start();
        let url = server.url();
        server.stop();
        let started = std::time::Instant::now();
        match NatsLog::connect(NatsLogConfig::new(url)).await {
            Err(LogError::Unavailable(_)) => {}
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    /// Once older records are purged, the first retained sequence moves; once all are,
    /// it is the last one + 1.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn first_sequence_follows_a_purge() {
        let server = NatsServer::start();
        let log = connect(&server).await;
        for id in ["p1", "p2", "p3", "p4"] {
            append(&log, request(&subject("api", "p"), id, Expectation::Any)).await;
        }
        let jetstream = async_nats::jetstream::new(log.client().clone());
        let stream = jetstream.get_stream(log.stream_name()).await.unwrap();
        stream.purge().sequence(3).await.unwrap();
        assert_eq!(log.first_sequence().await.unwrap(), 3);
        assert_eq!(log.last_sequence().await.unwrap(), 4);
        stream.purge().await.unwrap();
        assert_eq!(log.first_sequence().await.unwrap(), 5);
    }

    #[tokio::test]
    async fn stream_is_created_with_the_configured_name() {
        let server = NatsServer::start();
        let config = NatsLogConfig {
            stream: "EVENTS_TEST".to_string(),
            ..NatsLogConfig::new(server.url())
        };
        let log = NatsLog::connect(config.clone()).await.unwrap();
        append(&log, request(&subject("api", "x"), "m1", Expectation::Any)).await;
        let jetstream = async_nats::jetstream::new(log.client().clone());
        let mut stream = jetstream.get_stream("EVENTS_TEST").await.unwrap();
        let info = stream.info().await.unwrap();
        assert_eq!(info.config.subjects, ["gatehouse.events.>"]);
        assert_eq!(info.config.duplicate_window, Duration::from_secs(120));
        assert_eq!(info.state.messages, 1);
        // Connecting again finds the existing stream.
        let again = NatsLog::connect(config).await.unwrap();
        assert_eq!(again.last_sequence().await.unwrap(), 1);
    }
}

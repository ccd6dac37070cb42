//! The distributed backend: a NATS JetStream stream with file storage.
//!
//! Every node of a distributed deployment connects a [`NatsLog`] to the same stream
//! (`GATEHOUSE` by default, subjects `gatehouse.events.>`). The broker does the hard
//! parts, atomically per stream:
//!
//! - the sequence: JetStream's stream sequence is the log's sequence;
//! - optimistic concurrency: [`Expectation`]s travel as the
//!   `Nats-Expected-Last-Subject-Sequence` / `Nats-Expected-Last-Sequence` /
//!   `Nats-Expected-Last-Msg-Id` headers (on a replicated stream a subject expectation
//!   also carries the stream's last sequence, since nats-server 2.9 lets two concurrent
//!   publishes expecting one subject sequence both in there: see
//!   [`NatsLog::publish_subject_guarded`]);
//! - idempotence: `msg_id` travels as `Nats-Msg-Id`. JetStream remembers ids for the
//!   stream's *duplicate window* (two minutes here), which covers client retries; the
//!   file backend remembers them forever.
//!
//! # Headers
//!
//! A record's headers are sent as NATS headers, so they are visible to NATS tools.
//! NATS keeps headers in a map, which loses the order between different names, so an
//! append also sends `Gatehouse-Header-Order`, the names in order separated by spaces
//! (names cannot contain spaces), and a reader rebuilds the list from it. Headers named
//! `Nats-*` (the broker's) and `Gatehouse-Header-Order` are not part of a [`Record`].
//!
//! # Following
//!
//! [`follow`](EventLog::follow) runs a task per follower that reads an ordered pull
//! consumer (an ephemeral, unacknowledged consumer the client recreates when it sees a
//! hole in its delivery) and sends [`Record`]s down a channel. The task survives broker
//! restarts: when the client reconnects (a restarted broker has lost its ephemeral
//! consumers), or the consumer fails in any other way, the task creates a new one
//! starting at the next expected sequence, with a backoff, for as long as the follower
//! is alive. A follower idle for a second asks the stream for its last sequence, and
//! recreates its consumer when records it has not received exist at two checks in a
//! row: an ephemeral consumer lives on one server, and when that server dies while the
//! client stays connected to another, nothing else says so for 30 s. It checks every
//! sequence itself: an older one (re-delivered after a recreate) is skipped, a newer one
//! than expected ends the stream with [`LogError::Gap`].
//!
//! # Pipelining
//!
//! [`submit`](EventLog::submit) publishes and returns once the client has queued the
//! message on its one connection; the broker's ack is awaited by the returned
//! [`PendingAppend`]. So a writer keeps many appends in flight (the client allows 5,000
//! unacknowledged publishes, then waits), each still answered by its own ack. A
//! connection serves its messages in order, and the stream stores them in that order;
//! if the connection drops between two of them, the first may be lost and the second
//! stored, and the first, published again (below), lands after it — which is why
//! chained appends expect the previous one's `msg_id`. A subject-guarded append on a
//! replicated stream reads the stream first, so it is published before `submit`
//! returns and is not pipelined.
//!
//! # Failover
//!
//! On a cluster of three (stream replicas 3) a node's loss must cost an admin write
//! seconds, not a failure. The client is tuned for it: it reconnects at once to another
//! server of the seed list (then every [`RECONNECT_STEP`] more, up to
//! [`MAX_RECONNECT_DELAY`]), pings every [`PING_INTERVAL`] so a silent partition is noticed
//! in seconds, and bounds every JetStream API request by [`REQUEST_TIMEOUT`]. An append
//! whose ack does not come within [`NatsLogConfig::ack_timeout`] (its server died with the
//! message in flight, the stream is electing a leader, the connection is moving) is
//! published again **with the same `Nats-Msg-Id`** ([`publish_until_acknowledged`]) for up
//! to [`NatsLogConfig::retry_for`]: JetStream de-duplicates before it checks expectations,
//! so a publish that was stored the first time is answered with its original sequence
//! (`duplicate`), and one that was lost is stored now — once either way. Reads of the
//! stream's state ([`EventLog::last_sequence`]) retry the same way. What stays: a killed
//! *stream leader* is replaced only when the followers' election timer fires (4 to 9 s in
//! nats-server 2.9), and writes wait for it; a leader stopped gracefully hands over at
//! once.
//!
//! # Shared state
//!
//! None of our own: a [`NatsLog`] is a cheap-to-clone handle on an `async_nats::Client`
//! (which multiplexes one connection and reconnects forever), its JetStream context and
//! the stream's name.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::header::{self, HeaderName, HeaderValue};
use async_nats::jetstream::{self, consumer, context::PublishErrorKind, stream};
use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};

use crate::{
    AppendRequest, Appended, EventLog, Expectation, LogError, PendingAppend, Record, RecordStream,
    SUBJECT_PREFIX,
};

/// The header that carries the order of a record's header names.
pub(crate) const HEADER_ORDER: &str = "Gatehouse-Header-Order";

/// How long JetStream remembers a `Nats-Msg-Id`.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Records buffered between a follower's task and its reader.
const FOLLOW_BUFFER: usize = 256;

/// Shortest pause between two attempts to recreate a follower's consumer.
const MIN_FOLLOW_BACKOFF: Duration = Duration::from_millis(50);

/// Longest pause between two attempts to recreate a follower's consumer.
const MAX_FOLLOW_BACKOFF: Duration = Duration::from_secs(2);

/// How long a follower waits for a record before it asks the stream whether it is
/// missing some (a consumer on a server that died).
const STALL_CHECK: Duration = Duration::from_secs(1);

/// How often an append guarded on its subject retries when only the stream moved on.
const SUBJECT_GUARD_ATTEMPTS: usize = 20;

/// The pause added per failed reconnect attempt (the first is immediate).
const RECONNECT_STEP: Duration = Duration::from_millis(100);

/// Longest pause between two reconnect attempts (a whole cluster restarting).
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// How often the client pings its server: two unanswered pings close the connection, so a
/// server cut off without a reset is left within about three intervals.
const PING_INTERVAL: Duration = Duration::from_secs(2);

/// The bound on one JetStream API request (stream info, consumer creation).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Shortest and longest pause between two publishes of one append.
const MIN_RETRY_PAUSE: Duration = Duration::from_millis(50);
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Where the NATS-backed log lives, and how this node proves who it is to NATS.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsLogConfig {
    /// Server URL, or a comma-separated seed list for a cluster
    /// (`nats://a:4222,nats://b:4222,nats://c:4222`): the client connects to any, learns
    /// the others from the cluster, and fails over between them.
    pub url: String,
    /// Name of the JetStream stream (default `GATEHOUSE`).
    pub stream: String,
    /// Number of replicas of the stream when it is created (default 1; 3 in a cluster
    /// of three). An existing stream is used as it is.
    pub replicas: usize,
    /// This node's NATS credentials (none: an anonymous connection).
    pub credentials: NatsCredentials,
    /// TLS to NATS.
    pub tls: NatsTls,
    /// The connection's name in the servers' connection lists (`connz`): which node it is.
    pub client_name: String,
    /// How long one publish of an append waits for the stream's ack before the append is
    /// published again, with the same message id (default 1 s).
    pub ack_timeout: Duration,
    /// How long an append, or a read of the stream's state, keeps trying through a lost
    /// server or a leader election before it fails with [`LogError::Unavailable`]
    /// (default 15 s).
    pub retry_for: Duration,
    /// Appends submitted on this handle and its clones whose answer has not been taken
    /// yet, at most (default and ceiling [`MAX_APPENDS_IN_FLIGHT`]): one more is refused
    /// at once with [`LogError::Unavailable`], rather than left waiting on the client's
    /// own cap of unacknowledged publishes, which only the answers of earlier appends
    /// free — a writer holding that many unawaited appends would wait forever.
    pub max_in_flight: usize,
}

/// The most appends a [`NatsLog`] keeps in flight: below async-nats's 5,000
/// unacknowledged publishes per JetStream context, so that its wait for a free ack slot
/// never happens (retries of an append hold one slot at a time).
pub const MAX_APPENDS_IN_FLIGHT: usize = 4096;

/// How a node authenticates to NATS: one of user and password, a token, an NKey seed,
/// or a `.creds` file (a JWT and its NKey seed, for operator-mode deployments).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NatsCredentials {
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// An NKey seed (`SU...`).
    pub nkey_seed: Option<String>,
    pub creds_file: Option<PathBuf>,
}

impl std::fmt::Debug for NatsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("NatsCredentials")
            .field("user", &self.user)
            .field("password", &secret(&self.password))
            .field("token", &secret(&self.token))
            .field("nkey_seed", &secret(&self.nkey_seed))
            .field("creds_file", &self.creds_file)
            .finish()
    }
}

/// TLS to NATS: the CA that signed the servers' certificates, and this node's client
/// certificate when the servers verify clients.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl NatsTls {
    fn enabled(&self) -> bool {
        self.ca.is_some() || self.cert.is_some()
    }
}

impl std::fmt::Debug for NatsLogConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsLogConfig")
            .field("url", &self.url)
            .field("stream", &self.stream)
            .field("replicas", &self.replicas)
            .field("credentials", &self.credentials)
            .field("tls", &self.tls)
            .field("client_name", &self.client_name)
            .field("ack_timeout", &self.ack_timeout)
            .field("retry_for", &self.retry_for)
            .finish()
    }
}

impl NatsLogConfig {
    /// The default stream (`GATEHOUSE`, one replica) on the server(s) at `url`.
    pub fn new(url: impl Into<String>) -> NatsLogConfig {
        NatsLogConfig {
            url: url.into(),
            ..NatsLogConfig::default()
        }
    }

    /// The servers of [`url`](Self::url): one, or each of a comma-separated seed list.
    pub fn servers(&self) -> Result<Vec<async_nats::ServerAddr>, LogError> {
        let servers: Vec<async_nats::ServerAddr> = self
            .url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| {
                u.parse().map_err(|e| {
                    LogError::Unavailable(format!("invalid NATS server URL {u:?}: {e}"))
                })
            })
            .collect::<Result<_, _>>()?;
        if servers.is_empty() {
            return Err(LogError::Unavailable("no NATS server URL given".into()));
        }
        Ok(servers)
    }

    /// The client options: name, timeouts, reconnects, credentials, TLS.
    async fn options(&self) -> Result<async_nats::ConnectOptions, LogError> {
        let mut options = async_nats::ConnectOptions::new()
            .name(&self.client_name)
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                (RECONNECT_STEP * attempts.saturating_sub(1).min(100) as u32)
                    .min(MAX_RECONNECT_DELAY)
            })
            .ping_interval(PING_INTERVAL)
            .request_timeout(Some(REQUEST_TIMEOUT));
        let c = &self.credentials;
        let given = [
            c.user.is_some() || c.password.is_some(),
            c.token.is_some(),
            c.nkey_seed.is_some(),
            c.creds_file.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(LogError::Unavailable(
                "NATS credentials: give one of user/password, token, NKey seed or .creds file"
                    .into(),
            ));
        }
        if let (Some(user), Some(password)) = (&c.user, &c.password) {
            options = options.user_and_password(user.clone(), password.clone());
        } else if c.user.is_some() || c.password.is_some() {
            return Err(LogError::Unavailable(
                "NATS credentials: a user needs a password (and a password a user)".into(),
            ));
        }
        if let Some(token) = &c.token {
            options = options.token(token.clone());
        }
        if let Some(seed) = &c.nkey_seed {
            options = options.nkey(seed.clone());
        }
        if let Some(path) = &c.creds_file {
            options = options.credentials_file(path).await.map_err(|e| {
                LogError::Unavailable(format!("NATS credentials file {}: {e}", path.display()))
            })?;
        }
        if self.tls.enabled() {
            options = options.require_tls(true);
            if let Some(ca) = &self.tls.ca {
                options = options.add_root_certificates(ca.clone());
            }
            match (&self.tls.cert, &self.tls.key) {
                (Some(cert), Some(key)) => {
                    options = options.add_client_certificate(cert.clone(), key.clone())
                }
                (None, None) => {}
                _ => {
                    return Err(LogError::Unavailable(
                        "NATS TLS: a client certificate needs its key (and a key its certificate)"
                            .into(),
                    ));
                }
            }
        }
        Ok(options)
    }
}

impl Default for NatsLogConfig {
    fn default() -> NatsLogConfig {
        NatsLogConfig {
            url: "nats://127.0.0.1:4222".to_string(),
            stream: "GATEHOUSE".to_string(),
            replicas: 1,
            credentials: NatsCredentials::default(),
            tls: NatsTls::default(),
            client_name: "gatehouse-eventlog".to_string(),
            ack_timeout: Duration::from_secs(1),
            retry_for: Duration::from_secs(15),
            max_in_flight: MAX_APPENDS_IN_FLIGHT,
        }
    }
}

/// An event log in a NATS JetStream stream (file storage, subjects
/// `gatehouse.events.>`), shared by every node of a deployment.
///
/// Sequences, expectations and de-duplication are the broker's: [`Expectation`]s travel as
/// `Nats-Expected-Last-Subject-Sequence` / `Nats-Expected-Last-Sequence`, `msg_id` as
/// `Nats-Msg-Id`, remembered for the stream's two-minute duplicate window (enough for
/// retries; the file backend remembers ids forever). Followers survive broker restarts.
/// Details in `eventlog/src/nats.rs`.
///
/// Cheap to clone (every clone shares one connection); usable as `Arc<dyn EventLog>`.
#[derive(Clone)]
pub struct NatsLog {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    stream: String,
    /// The server URL it was given, for messages.
    url: String,
    /// Counts the connection's (re)connections: followers recreate their consumer when
    /// it moves, since a broker restart loses ephemeral consumers.
    connections: watch::Receiver<u64>,
    /// How appends ride out a lost server or a leader election.
    retry: Retry,
    /// The stream has replicas (a cluster): subject expectations are guarded on the
    /// stream too ([`NatsLog::publish_subject_guarded`]).
    replicated: bool,
    /// Appends in flight on this handle and its clones (shared: they share the client's
    /// ack slots), each counted from `submit` until its answer is taken or dropped.
    in_flight: Arc<AtomicUsize>,
    /// [`NatsLogConfig::max_in_flight`].
    max_in_flight: usize,
}

/// One append's place in [`NatsLog::in_flight`], given back when dropped.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// Takes a place, unless `max` are taken.
    fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<InFlight> {
        count
            .fetch_update(AtomicOrdering::AcqRel, AtomicOrdering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| InFlight(count.clone()))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, AtomicOrdering::AcqRel);
    }
}

impl std::fmt::Debug for NatsLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsLog")
            .field("stream", &self.stream)
            .field("connection", &self.client.connection_state())
            .finish()
    }
}

impl NatsLog {
    /// Connects to NATS and creates the stream if it does not exist yet.
    ///
    /// Fails fast with [`LogError::Unavailable`] if the server cannot be reached now (no
    /// retry loop here: the caller decides); once connected, the client reconnects on
    /// its own, forever.
    pub async fn connect(config: NatsLogConfig) -> Result<NatsLog, LogError> {
        let (connections_tx, connections) = watch::channel(0u64);
        let servers = config.servers()?;
        let client = config
            .options()
            .await?
            .event_callback(move |event| {
                if matches!(event, async_nats::Event::Connected) {
                    connections_tx.send_modify(|count| *count += 1);
                }
                async move {
                    match event {
                        async_nats::Event::Connected => tracing::info!("connected to NATS"),
                        async_nats::Event::Disconnected => tracing::warn!("disconnected from NATS"),
                        other => tracing::debug!(event = %other, "NATS connection event"),
                    }
                }
            })
            .connect(servers)
            .await
            .map_err(|err| {
                LogError::Unavailable(format!("cannot connect to NATS at {}: {err}", config.url))
            })?;
        let jetstream = jetstream::new(client.clone());
        let created = jetstream
            .get_or_create_stream(stream::Config {
                name: config.stream.clone(),
                description: Some("Gatehouse event log".to_string()),
                subjects: vec![format!("{SUBJECT_PREFIX}.>")],
                storage: stream::StorageType::File,
                num_replicas: config.replicas,
                retention: stream::RetentionPolicy::Limits,
                max_messages: -1,
                max_messages_per_subject: -1,
                max_bytes: -1,
                max_message_size: -1,
                max_age: Duration::ZERO,
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            })
            .await
            .map_err(|err| {
                LogError::Unavailable(format!(
                    "cannot create or find JetStream stream {}: {err}",
                    config.stream
                ))
            })?;
        let replicated = created.cached_info().config.num_replicas > 1;
        tracing::debug!(url = %config.url, stream = %config.stream, replicated, "NATS event log ready");
        Ok(NatsLog {
            client,
            jetstream,
            stream: config.stream,
            url: config.url,
            connections,
            retry: Retry {
                ack_timeout: config.ack_timeout,
                retry_for: config.retry_for,
            },
            replicated,
            in_flight: Arc::default(),
            max_in_flight: config.max_in_flight.clamp(1, MAX_APPENDS_IN_FLIGHT),
        })
    }

    /// Publishes an append guarded on its subject's last sequence (`expected`) on a
    /// replicated stream, where nats-server 2.9 does not hold
    /// `Nats-Expected-Last-Subject-Sequence` against concurrent publishes (two writers
    /// expecting the same subject sequence may both be stored: `tests/nats_failover.rs`,
    /// `two_writers_racing_on_one_subject_never_both_win`), while it does hold the
    /// stream-wide `Nats-Expected-Last-Sequence`. So the append also expects the
    /// stream's last sequence, read just before with the subject's last sequence: when
    /// the subject has moved, it is a conflict at once; when only the stream moved (a
    /// write elsewhere), it reads both again and tries again, up to
    /// [`SUBJECT_GUARD_ATTEMPTS`] times.
    async fn publish_subject_guarded(
        &self,
        subject: &str,
        expected: u64,
        mut headers: HeaderMap,
        payload: bytes::Bytes,
    ) -> Result<jetstream::publish::PublishAck, async_nats::jetstream::context::PublishError> {
        use async_nats::jetstream::context::PublishError;
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        for _ in 0..SUBJECT_GUARD_ATTEMPTS {
            let read = self
                .retry
                .until_answered(|| async {
                    let stream = self
                        .jetstream
                        .get_stream(&self.stream)
                        .await
                        .map_err(|_| ())?;
                    let last = stream.cached_info().state.last_sequence;
                    match stream.get_last_raw_message_by_subject(subject).await {
                        Ok(message) => Ok((
                            last,
                            message.sequence,
                            message
                                .headers
                                .get(header::NATS_MESSAGE_ID)
                                .map(|id| id.as_str().to_string()),
                        )),
                        Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => {
                            Ok((last, 0, None))
                        }
                        Err(_) => Err(()),
                    }
                })
                .await;
            let Ok((stream_last, subject_last, last_id)) = read else {
                return Err(PublishError::new(PublishErrorKind::TimedOut));
            };
            let ours = headers
                .get(header::NATS_MESSAGE_ID)
                .map(|id| id.as_str().to_string());
            if subject_last != expected && last_id.is_some() && last_id == ours {
                // An earlier try of this very append was stored (its answer lost, or it
                // raced the stream's guard on a retry): the same record, once.
                return Ok(jetstream::publish::PublishAck {
                    stream: self.stream.clone(),
                    sequence: subject_last,
                    domain: String::new(),
                    duplicate: true,
                    value: None,
                });
            }
            if subject_last != expected {
                return Err(PublishError::new(PublishErrorKind::WrongLastSequence));
            }
            headers.insert(header::NATS_EXPECTED_LAST_SEQUENCE, stream_last.to_string());
            match publish_until_acknowledged(
                &self.jetstream,
                subject,
                headers.clone(),
                payload.clone(),
                self.retry,
            )
            .await
            {
                Err(err) if err.kind() == PublishErrorKind::WrongLastSequence => continue,
                answer => return answer,
            }
        }
        Err(PublishError::new(PublishErrorKind::TimedOut))
    }

    /// A plain NATS client with this configuration's servers, credentials, TLS and
    /// reconnect settings, and no stream: for a node's core-NATS traffic beside the log
    /// (the gateways' throttle exchange).
    pub async fn connect_client(config: &NatsLogConfig) -> Result<async_nats::Client, LogError> {
        let servers = config.servers()?;
        config
            .options()
            .await?
            .connect(servers)
            .await
            .map_err(|err| {
                LogError::Unavailable(format!("cannot connect to NATS at {}: {err}", config.url))
            })
    }

    /// The underlying client (to share the connection, e.g. for health checks).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream stream's name.
    pub fn stream_name(&self) -> &str {
        &self.stream
    }

    /// An ordered consumer's messages, from stream sequence `from`.
    async fn consume(&self, from: u64) -> Result<consumer::pull::Ordered, LogError> {
        consume(&self.jetstream, &self.stream, from).await
    }
}

async fn consume(
    jetstream: &jetstream::Context,
    stream: &str,
    from: u64,
) -> Result<consumer::pull::Ordered, LogError> {
    let consumer = jetstream
        .create_consumer_on_stream(
            consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                },
                ..Default::default()
            },
            stream,
        )
        .await
        .map_err(|err| {
            LogError::Unavailable(format!("cannot create a consumer on {stream}: {err}"))
        })?;
    consumer
        .messages()
        .await
        .map_err(|err| LogError::Unavailable(format!("cannot read stream {stream}: {err}")))
}

#[async_trait]
impl EventLog for NatsLog {
    /// Publishes the record and returns once the client has queued it on the connection
    /// (in call order), without waiting for the broker's ack: that is what the
    /// [`PendingAppend`] awaits. Several appends are thus in flight on one connection.
    async fn submit(&self, request: AppendRequest) -> Result<PendingAppend, LogError> {
        crate::check_request(&request)?;
        let Some(place) = InFlight::take(&self.in_flight, self.max_in_flight) else {
            return Err(LogError::Unavailable(format!(
                "{} appends are in flight on this connection (--nats-max-appends-in-flight): \
                 wait for earlier answers",
                self.max_in_flight
            )));
        };
        let headers = encode_headers(&request)?;
        let subject = request.subject;
        let payload = request.payload;
        let outcome = Outcome {
            stream: self.stream.clone(),
            subject: subject.clone(),
            expected: request.expect.expected_sequence(),
        };
        if let Expectation::LastSubjectSequence(expected) = request.expect
            && self.replicated
        {
            // The guard needs the stream's state read first (see
            // `publish_subject_guarded`): done before `submit` returns, so this
            // handle's appends stay in the order they were submitted.
            let answer = self
                .publish_subject_guarded(&subject, expected, headers, payload)
                .await;
            drop(place);
            return Ok(PendingAppend::ready(outcome.of(answer)));
        }
        // Queued on the connection now (so in submission order); the ack is awaited
        // by the pending append, which publishes again with the same message id if it
        // does not come in time (`publish_until_acknowledged`).
        let first = self
            .jetstream
            .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
            .await;
        let jetstream = self.jetstream.clone();
        let retry = self.retry;
        Ok(PendingAppend::new(async move {
            use async_nats::jetstream::context::PublishError;
            let _place = place;
            let answer = match first {
                Ok(ack) => match tokio::time::timeout(retry.ack_timeout, ack).await {
                    Ok(answer) => answer,
                    Err(_) => Err(PublishError::new(PublishErrorKind::TimedOut)),
                },
                Err(err) => Err(err),
            };
            let answer = match answer {
                Ok(ack) if !(ack.duplicate && ack.sequence == 0) => Ok(ack),
                Err(err) if is_lasting(&err) => Err(err),
                Ok(_) | Err(_) => {
                    publish_until_acknowledged(&jetstream, &subject, headers, payload, retry).await
                }
            };
            outcome.of(answer)
        }))
    }

    fn describe(&self) -> String {
        format!("NATS JetStream stream {} at {}", self.stream, self.url)
    }

    async fn last_sequence(&self) -> Result<u64, LogError> {
        let stream = self
            .retry
            .until_answered(|| self.jetstream.get_stream(&self.stream))
            .await
            .map_err(|err| {
                LogError::Unavailable(format!("cannot read stream {}: {err}", self.stream))
            })?;
        Ok(stream.cached_info().state.last_sequence)
    }

    async fn first_sequence(&self) -> Result<u64, LogError> {
        let stream = self
            .jetstream
            .get_stream(&self.stream)
            .await
            .map_err(|err| {
                LogError::Unavailable(format!("cannot read stream {}: {err}", self.stream))
            })?;
        let state = &stream.cached_info().state;
        Ok(if state.messages == 0 {
            state.last_sequence + 1
        } else {
            state.first_sequence
        })
    }

    async fn follow(&self, from: u64) -> Result<RecordStream, LogError> {
        let from = from.max(1);
        // The first consumer is created here, so that a broker that is down now is
        // reported to the caller rather than retried in the background.
        let messages = self.consume(from).await?;
        let (sender, receiver) = mpsc::channel(FOLLOW_BUFFER);
        let mut connections = self.connections.clone();
        connections.mark_unchanged();
        tokio::spawn(follow_task(
            self.jetstream.clone(),
            self.stream.clone(),
            from,
            messages,
            connections,
            sender,
        ));
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(
            receiver,
        )))
    }
}

/// How an append rides out a lost server or a leader election (see "Failover").
#[derive(Debug, Clone, Copy)]
struct Retry {
    ack_timeout: Duration,
    retry_for: Duration,
}

impl Retry {
    /// Calls `request` until it answers `Ok`, pausing between attempts, for up to
    /// `retry_for`; then returns its last error. For reads only (they change nothing).
    async fn until_answered<T, E, F, Fut>(&self, mut request: F) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let deadline = tokio::time::Instant::now() + self.retry_for;
        let mut pause = MIN_RETRY_PAUSE;
        loop {
            match request().await {
                Ok(answer) => return Ok(answer),
                Err(err) if tokio::time::Instant::now() + pause >= deadline => return Err(err),
                Err(_) => {}
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_RETRY_PAUSE);
        }
    }
}

/// Publishes one append until the stream acknowledges it, every time with the same
/// headers, so the same `Nats-Msg-Id`: the retry of a publish that was in flight when
/// its server died (or while the stream elected a leader) is stored once.
///
/// Each publish waits [`Retry::ack_timeout`] for its ack; a publish that cannot be sent,
/// an ack that does not come, "no responders" (no stream leader right now) and other
/// transient answers are retried with a growing pause, for up to [`Retry::retry_for`].
/// An ack of `duplicate` with sequence 0 means the first publish is still being
/// replicated: asked again. What is returned at once: a failed expectation (the append
/// is refused, and was not stored by an earlier attempt: JetStream answers duplicates
/// before it checks expectations), a message too large.
async fn publish_until_acknowledged(
    jetstream: &jetstream::Context,
    subject: &str,
    headers: HeaderMap,
    payload: bytes::Bytes,
    retry: Retry,
) -> Result<jetstream::publish::PublishAck, async_nats::jetstream::context::PublishError> {
    use async_nats::jetstream::context::PublishError;
    let deadline = tokio::time::Instant::now() + retry.retry_for;
    let mut pause = MIN_RETRY_PAUSE;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let answer = match jetstream
            .publish_with_headers(subject.to_string(), headers.clone(), payload.clone())
            .await
        {
            Ok(ack) => match tokio::time::timeout(retry.ack_timeout, ack).await {
                Ok(answer) => answer,
                Err(_) => Err(PublishError::new(PublishErrorKind::TimedOut)),
            },
            Err(err) => Err(err),
        };
        let err = match answer {
            Ok(ack) if ack.duplicate && ack.sequence == 0 => {
                PublishError::new(PublishErrorKind::TimedOut)
            }
            Ok(ack) => {
                if attempt > 1 {
                    tracing::info!(
                        subject,
                        attempt,
                        sequence = ack.sequence,
                        duplicate = ack.duplicate,
                        "append acknowledged after a retry"
                    );
                }
                return Ok(ack);
            }
            Err(err) => err,
        };
        if is_lasting(&err) || tokio::time::Instant::now() + pause >= deadline {
            return Err(err);
        }
        tracing::warn!(subject, attempt, error = %err, "append not acknowledged; publishing it again with the same message id");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_RETRY_PAUSE);
    }
}

/// A publish error that another publish of the same message cannot change: a failed
/// expectation, a message too large.
fn is_lasting(err: &async_nats::jetstream::context::PublishError) -> bool {
    matches!(
        err.kind(),
        PublishErrorKind::WrongLastSequence
            | PublishErrorKind::WrongLastMessageId
            | PublishErrorKind::MaxPayloadExceeded
    )
}

/// What an append's answer from JetStream means for [`EventLog`]'s caller.
struct Outcome {
    stream: String,
    subject: String,
    /// The sequence the expectation named, for [`LogError::Conflict`].
    expected: u64,
}

impl Outcome {
    fn of(
        self,
        answer: Result<
            jetstream::publish::PublishAck,
            async_nats::jetstream::context::PublishError,
        >,
    ) -> Result<Appended, LogError> {
        let Outcome {
            stream,
            subject,
            expected,
        } = self;
        let ack = answer.map_err(|err| match err.kind() {
            PublishErrorKind::WrongLastSequence | PublishErrorKind::WrongLastMessageId => {
                LogError::Conflict {
                    subject: subject.clone(),
                    expected,
                }
            }
            PublishErrorKind::StreamNotFound => LogError::Unavailable(format!(
                "no JetStream stream takes {subject} (is stream {stream} gone?)"
            )),
            _ => LogError::Unavailable(format!("append to NATS failed: {err}")),
        })?;
        if ack.stream != stream {
            return Err(LogError::Corrupt(format!(
                "{subject} was stored in stream {}, not {stream}: another stream overlaps the event subjects",
                ack.stream
            )));
        }
        Ok(Appended {
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }
}

/// Feeds one follower: reads ordered consumers, recreating them as needed, until the
/// follower is dropped or a gap is found.
async fn follow_task(
    jetstream: jetstream::Context,
    stream: String,
    from: u64,
    messages: consumer::pull::Ordered,
    mut connections: watch::Receiver<u64>,
    sender: mpsc::Sender<Result<Record, LogError>>,
) {
    // Resolves when the client has reconnected; never once the client is gone.
    async fn reconnected(connections: &mut watch::Receiver<u64>) {
        if connections.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    let mut next = from;
    let mut messages = Some(messages);
    let mut backoff = MIN_FOLLOW_BACKOFF;
    loop {
        let mut current = match messages.take() {
            Some(messages) => messages,
            None => {
                let created = tokio::select! {
                    () = sender.closed() => return,
                    created = consume(&jetstream, &stream, next) => created,
                };
                match created {
                    Ok(messages) => messages,
                    Err(err) => {
                        tracing::warn!(error = %err, next, "event log follower cannot resume yet");
                        tokio::select! {
                            () = sender.closed() => return,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).clamp(MIN_FOLLOW_BACKOFF, MAX_FOLLOW_BACKOFF);
                        continue;
                    }
                }
            }
        };
        // Records known to exist past `next` at the last idle check (see `stalled`).
        let mut behind = false;
        loop {
            let message = tokio::select! {
                () = sender.closed() => return,
                () = tokio::time::sleep(STALL_CHECK) => {
                    if stalled(&jetstream, &stream, next, &mut behind).await {
                        tracing::warn!(next, "event log follower's consumer delivers nothing while the stream has more; recreating it");
                        backoff = Duration::ZERO;
                        break;
                    }
                    continue;
                }
                () = reconnected(&mut connections) => {
                    // Do not wait for the consumer to notice (it takes up to 30 s of
                    // missed heartbeats or ~10 s of retries): the broker may have lost it.
                    tracing::info!(next, "NATS reconnected; event log follower recreates its consumer");
                    backoff = Duration::ZERO;
                    break;
                }
                message = current.next() => message,
            };
            let message = match message {
                Some(Ok(message)) => message,
                Some(Err(err)) => {
                    tracing::warn!(error = %err, next, "event log follower lost its consumer; recreating it");
                    break;
                }
                None => {
                    tracing::warn!(next, "event log follower's consumer ended; recreating it");
                    break;
                }
            };
            let record = match decode_message(&message) {
                Ok(record) => record,
                Err(err) => {
                    let _ = sender.send(Err(err)).await;
                    return;
                }
            };
            backoff = MIN_FOLLOW_BACKOFF;
            behind = false;
            if record.sequence < next {
                // Re-delivered after a consumer was recreated.
                continue;
            }
            if record.sequence > next {
                let _ = sender
                    .send(Err(LogError::Gap {
                        expected: next,
                        got: record.sequence,
                    }))
                    .await;
                return;
            }
            next += 1;
            if sender.send(Ok(record)).await.is_err() {
                return;
            }
        }
        // The broken consumer is dropped here (it expires on the server on its own).
        drop(current);
        tokio::select! {
            () = sender.closed() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).clamp(MIN_FOLLOW_BACKOFF, MAX_FOLLOW_BACKOFF);
    }
}

/// A follower's check after [`STALL_CHECK`] without a record: whether the stream holds
/// records from `next` on for the second check in a row (`behind` carries the first).
/// An ephemeral consumer lives on one server; when that server dies while the client
/// stays connected elsewhere, nothing tells the client but two missed heartbeats (30 s),
/// so the follower asks the stream instead.
async fn stalled(
    jetstream: &jetstream::Context,
    stream: &str,
    next: u64,
    behind: &mut bool,
) -> bool {
    let last = match jetstream.get_stream(stream).await {
        Ok(info) => info.cached_info().state.last_sequence,
        // The stream cannot say (a leader election): ask again at the next check.
        Err(_) => return false,
    };
    let was_behind = std::mem::replace(behind, last >= next);
    was_behind && *behind
}

/// The NATS headers of an append: control headers, then the record's own.
fn encode_headers(request: &AppendRequest) -> Result<HeaderMap, LogError> {
    fn invalid(what: &str) -> LogError {
        LogError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{what} cannot be sent as a NATS header"),
        ))
    }
    let mut headers = HeaderMap::new();
    let msg_id: HeaderValue = request.msg_id.parse().map_err(|_| invalid("msg_id"))?;
    headers.insert(header::NATS_MESSAGE_ID, msg_id);
    match &request.expect {
        Expectation::Any => {}
        Expectation::LastSubjectSequence(sequence) => headers.insert(
            header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            sequence.to_string(),
        ),
        Expectation::LastSequence(sequence) => {
            headers.insert(header::NATS_EXPECTED_LAST_SEQUENCE, sequence.to_string())
        }
        Expectation::LastMsgId(msg_id) => {
            let msg_id: HeaderValue = msg_id.parse().map_err(|_| invalid("expected msg_id"))?;
            headers.insert(header::NATS_EXPECTED_LAST_MESSAGE_ID, msg_id)
        }
    }
    if !request.headers.is_empty() {
        let mut order = String::new();
        for (name, value) in &request.headers {
            let header_name =
                HeaderName::try_from(name.as_str()).map_err(|_| invalid("header name"))?;
            let header_value: HeaderValue = value.parse().map_err(|_| invalid("header value"))?;
            headers.append(header_name, header_value);
            if !order.is_empty() {
                order.push(' ');
            }
            order.push_str(name);
        }
        headers.insert(HEADER_ORDER, order);
    }
    Ok(headers)
}

/// A delivered message as a [`Record`].
fn decode_message(message: &jetstream::Message) -> Result<Record, LogError> {
    let info = message
        .info()
        .map_err(|err| LogError::Corrupt(format!("message without JetStream metadata: {err}")))?;
    let sequence = info.stream_sequence;
    let mut msg_id = String::new();
    let mut headers = Vec::new();
    if let Some(map) = &message.headers {
        if let Some(id) = map.get_last(header::NATS_MESSAGE_ID) {
            msg_id = id.as_str().to_string();
        }
        headers = decode_headers(map);
    }
    Ok(Record {
        sequence,
        subject: message.subject.to_string(),
        msg_id,
        headers,
        payload: message.payload.clone(),
    })
}

/// A record's headers from a message's, in their original order when the message has
/// `Gatehouse-Header-Order` (else sorted by name: a message written by another tool).
fn decode_headers(map: &HeaderMap) -> Vec<(String, String)> {
    let is_own = |name: &str| {
        !(name
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case("nats-"))
            || name.eq_ignore_ascii_case(HEADER_ORDER))
    };
    let mut values: HashMap<String, std::collections::VecDeque<String>> = map
        .iter()
        .filter(|(name, _)| is_own(name.as_ref()))
        .map(|(name, values)| {
            let name: &str = name.as_ref();
            (
                name.to_string(),
                values.iter().map(|v| v.as_str().to_string()).collect(),
            )
        })
        .collect();
    let mut headers = Vec::new();
    if let Some(order) = map.get_last(HEADER_ORDER) {
        for name in order.as_str().split(' ').filter(|name| !name.is_empty()) {
            if let Some(value) = values.get_mut(name).and_then(|values| values.pop_front()) {
                headers.push((name.to_string(), value));
            }
        }
    }
    // Whatever the order header did not account for, sorted for a stable result.
    let mut rest: Vec<_> = values.into_iter().collect();
    rest.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, values) in rest {
        headers.extend(values.into_iter().map(|value| (name.clone(), value)));
    }
    headers
}

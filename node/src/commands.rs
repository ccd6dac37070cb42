//! The write path: a command decided against the current state, its events appended with
//! the guard its rules need, the call answered once they are durable and folded —
//! many commands at once, pipelined.
//!
//! # Deciding on what is in flight
//!
//! Commands run concurrently. Each is decided against the executor's **working state**:
//! the read model's state at some sequence (the *basis*) plus every event this executor
//! has submitted since and that is not yet confirmed, applied in submission order with
//! the very fold the read model uses ([`fold_event`]), so it is exactly the state the
//! log will hold if those appends succeed and nobody else writes. A command does not
//! wait for the ones before it to be durable: its events go to the log right behind
//! theirs ([`EventLog::submit`]), and the log acknowledges each on its own (the file
//! log with one `fsync` for all those queued together, NATS with its pipelined acks).
//!
//! # Guards, as narrow as the rule
//!
//! Every event carries the domain's [`Consistency`], and the executor turns it into an
//! [`Expectation`] the log checks atomically:
//!
//! - **One aggregate** (every event of the command on one subject, with
//!   [`Consistency::Aggregate`]: updating an API, a lifecycle change, blocking a
//!   subscription): `LastSubjectSequence` of that subject, with the sequence the log
//!   gave this executor's last append on it when that is known, else the state's. Others
//!   may write anywhere else meanwhile. When this executor's own last append on the
//!   subject is not acknowledged yet, the command chains on the executor's previous
//!   append instead (below), or waits for that acknowledgement.
//! - **Several aggregates** ([`Consistency::Log`]: uniqueness of an API's context and
//!   version or of a subscription's application and API, subscribing only to a published
//!   API, cascades; or events on several subjects): a **chain**. The first expects the
//!   log to end at the basis (`LastSequence`) or at this executor's previous append
//!   (`LastMsgId`), each later one expects the one before. A chain holds exactly when
//!   the log since the basis is this executor's appends and nothing else, which is what
//!   the working state assumed. A chained append therefore waits until every unchained
//!   one before it is acknowledged at the next sequence (nothing foreign came between);
//!   while one waits, new unchained appends wait behind it, so neither kind starves.
//! - A command's events after its first are always chained to the one before, so they
//!   are contiguous in the log.
//!
//! # When someone else wrote first
//!
//! A guard that fails ([`LogError::Conflict`]: another control, token-service, or a
//! chain broken by an append of ours that failed), any other failed append, or an
//! unchained append that landed after someone else's record, makes the working state
//! suspect: the executor stops submitting, lets every append in flight settle, catches
//! up with the log's end and takes the read model's state as the new basis. A command
//! whose first event was refused by its guard is then decided again, at most
//! [`MAX_ATTEMPTS`] times in all (then `ABORTED`). No rule is broken by two writers at
//! once: each stored event was decided on a state equal, in everything its guard
//! covers, to the log it was stored after.
//!
//! A refusal (or a command that changes nothing) decided on the working state may rest
//! on appends still in flight, or on a state behind another writer's; it is answered
//! only once the same command, decided on the read model caught up with the log's end
//! (read after the call came), is refused too — else the command is decided again.
//!
//! A call is answered once its own events are durable and control's (or token-service's)
//! fold includes them ("read your writes"). Each command runs in its own task, so a
//! caller that gives up (a cancelled RPC) never leaves an append half-recorded.
//!
//! # Shared state
//!
//! The [`Sequencer`] — working state, basis, the appends in flight — sits behind one
//! `tokio::sync::Mutex`, held to decide a command and submit its events (deciding and
//! folding are microseconds; submitting only queues) and to record an acknowledgement,
//! never while waiting for the log. A command that must wait (its chain needs an earlier
//! append confirmed, the working state is being rebuilt, too many appends are in flight)
//! waits on a `watch` counter bumped whenever an append settles or the state is rebuilt.
//! The working state is a `State`, whose persistent maps make the read model's state
//! cheap to take (an O(1) clone) and a decision's tentative copy cheap to make.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gatehouse_domain::{Command, Consistency, DomainError, EventMeta, PendingEvent, State, handle};
use gatehouse_eventlog::{AppendRequest, EventLog, Expectation, LogError, PendingAppend, subject};
use gatehouse_proto::Timestamp;
use prost::Message;
use tokio::sync::{Mutex, watch};

use crate::fold::{Folded, fold_event};
use crate::read_model::ReadModel;

/// How long a command waits for the read model to reach the log's end.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(10);

/// How many times a command is decided when its guard keeps failing (another writer
/// keeps winning), before the call is answered `ABORTED`.
pub const MAX_ATTEMPTS: u32 = 8;

/// Appends of one executor in flight (submitted, not yet confirmed at their sequence)
/// at most; a command past it waits for earlier ones to settle.
pub const MAX_APPENDS_IN_FLIGHT: usize = 1024;

/// Who makes a call, and the trace it belongs to: recorded on every event it causes.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    pub actor: String,
    pub traceparent: String,
    pub tracestate: String,
}

/// Why a command did not go through.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("the state did not catch up with the event log within {0:?}")]
    NotCaughtUp(Duration),
    /// The command decided an event the fold refuses (a bug in the domain): nothing was
    /// appended.
    #[error("the decided event cannot be folded: {0}")]
    Unfoldable(String),
}

/// Executes commands concurrently, pipelining their appends (see the module docs).
///
/// Commands from *other* writers (a second control on the same NATS stream,
/// token-service on the same log) are caught by the log's checks of each append's guard;
/// a command that loses such a race is decided again on fresh state, a few times, then
/// answered [`LogError::Conflict`] (gRPC `ABORTED`).
pub struct CommandExecutor {
    inner: Arc<Inner>,
}

/// What every command's task shares.
struct Inner {
    log: Arc<dyn EventLog>,
    model: Arc<ReadModel>,
    sequencer: Mutex<Sequencer>,
    /// Bumped whenever an append settles or the working state is rebuilt: what a
    /// waiting command waits on.
    changes: watch::Sender<u64>,
}

impl CommandExecutor {
    pub fn new(log: Arc<dyn EventLog>, model: Arc<ReadModel>) -> Self {
        CommandExecutor {
            inner: Arc::new(Inner {
                log,
                model,
                sequencer: Mutex::new(Sequencer::new()),
                changes: watch::channel(0).0,
            }),
        }
    }

    /// Decides `command`, appends its events and returns once they are durable and
    /// control's state includes them. Returns the last appended sequence (or the state's
    /// sequence when the command changed nothing).
    ///
    /// The command runs in a task of its own: dropping this future does not stop it
    /// half-way, it only loses the answer.
    pub async fn execute(&self, command: Command, ctx: &CallContext) -> Result<u64, CommandError> {
        use crate::metrics::{COMMANDS_APPLIED, COMMANDS_CONFLICTED, COMMANDS_REFUSED};
        use std::sync::atomic::Ordering::Relaxed;
        let inner = self.inner.clone();
        let ctx = ctx.clone();
        let result = match tokio::spawn(async move { inner.execute(command, &ctx).await }).await {
            Ok(result) => result,
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Err(_) => Err(CommandError::Log(LogError::Unavailable(
                "the command was cancelled: the process is stopping".to_string(),
            ))),
        };
        match &result {
            Ok(_) => COMMANDS_APPLIED.fetch_add(1, Relaxed),
            Err(CommandError::Domain(DomainError::VersionMismatch { .. }))
            | Err(CommandError::Log(LogError::Conflict { .. })) => {
                COMMANDS_CONFLICTED.fetch_add(1, Relaxed)
            }
            Err(CommandError::Domain(_)) => COMMANDS_REFUSED.fetch_add(1, Relaxed),
            Err(_) => 0,
        };
        result
    }
}

/// What one attempt at a command came to.
enum Attempt {
    /// The call's answer.
    Done(Result<u64, CommandError>),
    /// Decide again on fresh state; `error` is the answer if no attempt is left.
    Again(CommandError),
}

/// What deciding and submitting a command gave.
enum Submitted {
    /// Its events are on their way: each append's link and answer, in order.
    Appends(Vec<(u64, PendingAppend)>),
    /// A refusal, or no event at all, decided on the working state when the last link
    /// submitted was `watermark`.
    Nothing {
        decision: Result<(), DomainError>,
        watermark: u64,
    },
}

impl Inner {
    async fn execute(&self, command: Command, ctx: &CallContext) -> Result<u64, CommandError> {
        let mut attempt = 1;
        loop {
            let outcome = match self.submit(&command, ctx).await? {
                Submitted::Appends(appends) => self.settle_all(appends).await,
                Submitted::Nothing {
                    decision,
                    watermark,
                } => self.confirm(&command, decision, watermark).await?,
            };
            match outcome {
                Attempt::Done(result) => return result,
                Attempt::Again(error) if attempt >= MAX_ATTEMPTS => return Err(error),
                Attempt::Again(error) => {
                    attempt += 1;
                    crate::metrics::COMMAND_RETRIES
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!(attempt, error = %error, "deciding a command again");
                }
            }
        }
    }

    fn bump(&self) {
        self.changes
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    /// Decides `command` on the working state and submits its events with their guards,
    /// waiting first if the working state is being rebuilt or the guard needs an
    /// earlier append confirmed.
    async fn submit(
        &self,
        command: &Command,
        ctx: &CallContext,
    ) -> Result<Submitted, CommandError> {
        let mut changes = self.changes.subscribe();
        let mut counted_waiting = false;
        loop {
            let mut sequencer = self.sequencer.lock().await;
            changes.borrow_and_update();
            if std::mem::take(&mut counted_waiting) {
                sequencer.chains_waiting -= 1;
                if sequencer.chains_waiting == 0 {
                    self.bump();
                }
            }
            if sequencer.needs_resync {
                if sequencer.unsettled > 0 {
                    drop(sequencer);
                    let _ = changes.changed().await;
                    continue;
                }
                sequencer.resync(&*self.log, &self.model).await?;
                self.bump();
            } else {
                sequencer.refresh_if_idle(&self.model);
            }
            let events = match handle(&sequencer.working, command.clone()) {
                Ok(events) if !events.is_empty() => events,
                decided => {
                    return Ok(Submitted::Nothing {
                        decision: decided.map(drop),
                        watermark: sequencer.next_link - 1,
                    });
                }
            };
            match sequencer.guard(&events) {
                Guard::Wait { chain } => {
                    if chain {
                        sequencer.chains_waiting += 1;
                        counted_waiting = true;
                    }
                    drop(sequencer);
                    let _ = changes.changed().await;
                }
                Guard::Go(first) => {
                    return sequencer
                        .submit(&*self.log, events, first, ctx)
                        .await
                        .map(Submitted::Appends);
                }
            }
        }
    }

    /// Waits for each append's answer and records it; the call's answer once all are in.
    async fn settle_all(&self, appends: Vec<(u64, PendingAppend)>) -> Attempt {
        let mut last = 0;
        let mut stored = 0;
        let mut failure = None;
        for (link, pending) in appends {
            let answer = pending.await;
            {
                let mut sequencer = self.sequencer.lock().await;
                sequencer.settle(link, answer.as_ref().map(|appended| appended.sequence));
            }
            self.bump();
            match answer {
                Ok(appended) => {
                    last = appended.sequence;
                    stored += 1;
                }
                Err(err) => {
                    failure.get_or_insert(err);
                }
            }
        }
        match failure {
            None if self.model.wait_for(last, CATCH_UP_TIMEOUT).await => Attempt::Done(Ok(last)),
            None => Attempt::Done(Err(CommandError::NotCaughtUp(CATCH_UP_TIMEOUT))),
            // Nothing of the command was stored: decide it again.
            Some(err @ LogError::Conflict { .. }) if stored == 0 => Attempt::Again(err.into()),
            // A later event of a command whose first one was stored failed (its chain
            // was broken): the command is half done and cannot be decided again as if
            // it were not; the caller hears of the conflict.
            Some(err) => Attempt::Done(Err(err.into())),
        }
    }

    /// Answers a refusal (or a change of nothing) decided on the working state only if
    /// the read model, caught up with the log's end, decides the same; else the command
    /// is decided again, once the appends it was decided behind have settled.
    async fn confirm(
        &self,
        command: &Command,
        speculative: Result<(), DomainError>,
        watermark: u64,
    ) -> Result<Attempt, CommandError> {
        let end = self.log.last_sequence().await?;
        if !self.model.wait_for(end, CATCH_UP_TIMEOUT).await {
            return Err(CommandError::NotCaughtUp(CATCH_UP_TIMEOUT));
        }
        let (fresh, sequence) = {
            let state = self.model.read();
            (handle(&state, command.clone()), state.sequence())
        };
        match fresh {
            Err(err) => Ok(Attempt::Done(Err(err.into()))),
            Ok(events) if events.is_empty() => Ok(Attempt::Done(Ok(sequence))),
            Ok(_) => {
                // The working state was ahead (an append of ours not yet stored when the
                // end was read, or one that failed): decide again once those settled.
                let mut changes = self.changes.subscribe();
                while !self.sequencer.lock().await.settled_through(watermark) {
                    let _ = changes.changed().await;
                }
                Ok(Attempt::Again(match speculative {
                    Err(err) => err.into(),
                    Ok(()) => CommandError::Log(LogError::Conflict {
                        subject: "(the state changed while the command was decided)".into(),
                        expected: 0,
                    }),
                }))
            }
        }
    }
}

/// An append of this executor since the basis.
struct Link {
    id: u64,
    msg_id: String,
    subject: String,
    /// Its guard was a chain link (`LastSequence` of the basis or `LastMsgId` of the
    /// previous link), so it can only have been stored right after the previous one.
    chained: bool,
    /// The sequence it was stored at, or that it failed; `None` while in flight.
    outcome: Option<Result<u64, ()>>,
}

/// What a command's first event is guarded by, or why it must wait.
enum Guard {
    /// Submit, the first event with this expectation (chained or not).
    Go((Expectation, bool)),
    /// Wait for appends in flight to settle; `chain`: a chain is waiting for the
    /// unchained appends before it to be confirmed (so new unchained ones hold back).
    Wait { chain: bool },
}

/// The executor's view of the log: the working state and the appends behind it (see
/// the module docs).
struct Sequencer {
    /// The read model's state at `basis`, plus the events of `links` applied at the
    /// sequences they are presumed to get (`basis + 1`, ...).
    working: State,
    /// The log is known to be exactly `working` without `links` up to here.
    basis: u64,
    /// This executor's appends since `basis`, in submission order (ids consecutive).
    links: VecDeque<Link>,
    next_link: u64,
    /// The last link on each subject among `links`.
    by_subject: HashMap<String, u64>,
    /// Links of `links` that are not chained.
    unchained: usize,
    /// Links of `links` without an answer yet.
    unsettled: usize,
    /// Commands whose chain waits for `unchained` to drop to zero.
    chains_waiting: usize,
    /// The working state cannot be trusted: rebuild it once nothing is in flight.
    needs_resync: bool,
    /// Another writer wrote: the rebuild catches up with the log's end first.
    foreign: bool,
}

impl Sequencer {
    fn new() -> Sequencer {
        Sequencer {
            working: State::new(),
            basis: 0,
            links: VecDeque::new(),
            next_link: 1,
            by_subject: HashMap::new(),
            unchained: 0,
            unsettled: 0,
            chains_waiting: 0,
            // The first command catches up with the log's end.
            needs_resync: true,
            foreign: true,
        }
    }

    fn link(&self, id: u64) -> Option<&Link> {
        let first = self.links.front()?.id;
        self.links
            .get(usize::try_from(id.checked_sub(first)?).ok()?)
    }

    /// Every link up to `watermark` has its answer (or was let go by a rebuild).
    fn settled_through(&self, watermark: u64) -> bool {
        self.links
            .iter()
            .take_while(|link| link.id <= watermark)
            .all(|link| link.outcome.is_some())
    }

    /// Takes the read model's state as the basis, once every link has settled: after a
    /// failure, or another writer's record among ours.
    async fn resync(&mut self, log: &dyn EventLog, model: &ReadModel) -> Result<(), CommandError> {
        debug_assert_eq!(self.unsettled, 0);
        let mut end = self
            .links
            .iter()
            .filter_map(|link| link.outcome.and_then(Result::ok))
            .fold(self.basis, u64::max);
        if self.foreign {
            end = end.max(log.last_sequence().await?);
        }
        if !model.wait_for(end, CATCH_UP_TIMEOUT).await {
            return Err(CommandError::NotCaughtUp(CATCH_UP_TIMEOUT));
        }
        self.take_model_state(model);
        self.links.clear();
        self.by_subject.clear();
        self.unchained = 0;
        self.needs_resync = false;
        self.foreign = false;
        Ok(())
    }

    fn take_model_state(&mut self, model: &ReadModel) {
        self.working = model.read().clone();
        self.basis = self.working.sequence();
    }

    /// With nothing in flight, a read model that has moved past the basis (other
    /// writers' records) is a better working state.
    fn refresh_if_idle(&mut self, model: &ReadModel) {
        if self.links.is_empty() && model.applied() > self.basis {
            self.take_model_state(model);
        }
    }

    /// The guard of the first of `events` (see the module docs), or why it must wait.
    fn guard(&self, events: &[PendingEvent]) -> Guard {
        if self.links.len() >= MAX_APPENDS_IN_FLIGHT {
            return Guard::Wait { chain: false };
        }
        let first = &events[0];
        let first_subject = subject_of(first);
        let one_aggregate = events.iter().all(|event| {
            matches!(event.consistency, Consistency::Aggregate { .. })
                && event.kind == first.kind
                && event.aggregate_id == first.aggregate_id
        });
        let chain = || match self.links.back() {
            Some(last) => Expectation::LastMsgId(last.msg_id.clone()),
            None => Expectation::LastSequence(self.basis),
        };
        if !one_aggregate {
            return if self.unchained > 0 {
                Guard::Wait { chain: true }
            } else {
                Guard::Go((chain(), true))
            };
        }
        let last_sequence = match self
            .by_subject
            .get(&first_subject)
            .and_then(|&id| self.link(id))
        {
            Some(link) => match link.outcome {
                Some(Ok(sequence)) => sequence,
                // Our last append on the subject is in flight: only a chain says the
                // subject still ends with it.
                None if self.unchained == 0 => return Guard::Go((chain(), true)),
                _ => return Guard::Wait { chain: false },
            },
            None => match first.consistency {
                Consistency::Aggregate { last_sequence } => last_sequence,
                Consistency::Log { .. } => unreachable!("one_aggregate"),
            },
        };
        if self.chains_waiting > 0 {
            return Guard::Wait { chain: false };
        }
        Guard::Go((Expectation::LastSubjectSequence(last_sequence), false))
    }

    /// Applies `events` to a copy of the working state (refusing what the fold would
    /// not take), submits them — the first with `first`, each later one chained to the
    /// one before — and records their links.
    async fn submit(
        &mut self,
        log: &dyn EventLog,
        events: Vec<PendingEvent>,
        first: (Expectation, bool),
        ctx: &CallContext,
    ) -> Result<Vec<(u64, PendingAppend)>, CommandError> {
        let mut working = self.working.clone();
        let mut presumed = self.basis + self.links.len() as u64;
        let mut requests = Vec::with_capacity(events.len());
        let mut guard = Some(first);
        for event in &events {
            let event_id = uuid::Uuid::new_v4().to_string();
            let envelope = event.envelope(EventMeta {
                event_id: event_id.clone(),
                time: Some(Timestamp::from(SystemTime::now())),
                actor: ctx.actor.clone(),
                traceparent: ctx.traceparent.clone(),
                tracestate: ctx.tracestate.clone(),
            });
            let subject = subject_of(event);
            presumed += 1;
            match fold_event(&mut working, presumed, &subject, &envelope) {
                Ok(Folded::Applied) => {}
                Ok(Folded::Quarantined(reason)) => return Err(CommandError::Unfoldable(reason)),
                Err(err) => return Err(CommandError::Unfoldable(err.to_string())),
            }
            let (expect, chained) = guard.take().unwrap_or_else(|| {
                let previous: &AppendRequest = requests.last().map(|(r, _)| r).expect("a first");
                (Expectation::LastMsgId(previous.msg_id.clone()), true)
            });
            let mut headers = Vec::new();
            if !ctx.traceparent.is_empty() {
                headers.push(("traceparent".to_string(), ctx.traceparent.clone()));
            }
            if !ctx.tracestate.is_empty() {
                headers.push(("tracestate".to_string(), ctx.tracestate.clone()));
            }
            requests.push((
                AppendRequest {
                    subject,
                    msg_id: event_id,
                    headers,
                    payload: bytes::Bytes::from(envelope.encode_to_vec()),
                    expect,
                },
                chained,
            ));
        }
        let mut appends = Vec::with_capacity(requests.len());
        for (request, chained) in requests {
            let (msg_id, subject) = (request.msg_id.clone(), request.subject.clone());
            match log.submit(request).await {
                Ok(pending) => appends.push((self.push_link(msg_id, subject, chained), pending)),
                Err(err) if appends.is_empty() => return Err(err.into()),
                Err(err) => {
                    // Part of the command went out: the working state lacks it, so it
                    // is rebuilt once that part has settled; the rest fails like a
                    // broken chain.
                    self.needs_resync = true;
                    tracing::warn!(error = %err, "event log refused the rest of a command");
                    appends.push((0, PendingAppend::ready(Err(err))));
                    return Ok(appends);
                }
            }
        }
        self.working = working;
        Ok(appends)
    }

    fn push_link(&mut self, msg_id: String, subject: String, chained: bool) -> u64 {
        let id = self.next_link;
        self.next_link += 1;
        self.by_subject.insert(subject.clone(), id);
        if !chained {
            self.unchained += 1;
        }
        self.unsettled += 1;
        self.links.push_back(Link {
            id,
            msg_id,
            subject,
            chained,
            outcome: None,
        });
        id
    }

    /// Records the answer of link `id` (0: an append that was never submitted), then
    /// confirms the links that are now known to follow the basis one by one.
    fn settle(&mut self, id: u64, answer: Result<u64, &LogError>) {
        if id == 0 {
            return;
        }
        let Some(first) = self.links.front().map(|link| link.id) else {
            return;
        };
        let Some(link) = usize::try_from(id - first)
            .ok()
            .and_then(|index| self.links.get_mut(index))
        else {
            return;
        };
        if link.outcome.is_some() {
            return;
        }
        self.unsettled -= 1;
        link.outcome = Some(answer.map_err(drop));
        if let Err(err) = answer {
            self.needs_resync = true;
            self.foreign |= matches!(err, LogError::Conflict { .. });
        }
        while let Some(Some(Ok(sequence))) = self.links.front().map(|link| link.outcome) {
            if sequence != self.basis + 1 {
                // Another writer's record came before this one of ours: the working
                // state lacks it.
                self.needs_resync = true;
                self.foreign = true;
                break;
            }
            let link = self.links.pop_front().expect("a front link");
            self.basis = sequence;
            if !link.chained {
                self.unchained -= 1;
            }
            if self.by_subject.get(&link.subject) == Some(&link.id) {
                self.by_subject.remove(&link.subject);
            }
        }
    }
}

/// The log subject of `event`'s aggregate.
fn subject_of(event: &PendingEvent) -> String {
    subject(event.kind.as_str(), &event.aggregate_id)
}

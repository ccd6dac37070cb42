//! The write path under concurrency: commands of one executor are decided on the events
//! it has in flight and pipelined, and two writers at once (two controls on one NATS
//! stream; two executors on one embedded log) break no rule — no lost update, no
//! duplicate subscription, no second application of one name.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use async_trait::async_trait;
use gatehouse_domain::{Command, DomainError};
use gatehouse_eventlog::{
    AppendRequest, EventLog, FileLog, LogError, NatsLog, NatsLogConfig, PendingAppend, RecordStream,
};
use gatehouse_node::commands::{CallContext, CommandError};
use gatehouse_proto::events::{EventEnvelope, lifecycle};
use gatehouse_testkit::nats::NatsServer;
use gatehouse_testkit::poll::Poll;
use gatehouse_testkit::world::{World, api, resources};
use prost::Message;
use tokio::sync::watch;

fn ctx() -> CallContext {
    CallContext {
        actor: "test".into(),
        ..Default::default()
    }
}

fn definition(i: usize, description: &str) -> gatehouse_proto::events::ApiDefinition {
    let mut definition = api(
        &format!("Api{i}"),
        &format!("/c{i}"),
        "1.0.0",
        resources(&[("GET", "/x")]),
        &["http://127.0.0.1:9/".into()],
    );
    definition.description = description.into();
    definition
}

fn create_application(id: &str, name: &str) -> Command {
    Command::CreateApplication {
        application_id: id.into(),
        name: name.into(),
        owner: "tester".into(),
        throttling_tier: "Unlimited".into(),
        description: String::new(),
    }
}

/// Executes `command` until it is decided for good: a caller retries `ABORTED`, as a
/// script would (the executor itself decides again a few times first).
async fn decided(world: &World, command: Command) -> Result<u64, CommandError> {
    for _ in 0..50 {
        match world.exec.execute(command.clone(), &ctx()).await {
            Err(CommandError::Log(LogError::Conflict { .. })) => continue,
            other => return other,
        }
    }
    panic!("{command:?} lost 50 races in a row");
}

/// Two writers race on the same aggregates; every rule holds afterwards, and both read
/// models agree.
async fn two_writers_break_no_rule(a: Arc<dyn EventLog>, b: Arc<dyn EventLog>) {
    const APIS: usize = 4;
    const APPS: usize = 6;
    const UPDATES: usize = 5;
    let first = World::writer(a.clone()).await;
    for i in 0..APIS {
        first
            .publish_api(&format!("api{i}"), definition(i, "v0"))
            .await;
    }
    for j in 0..APPS {
        first
            .run(create_application(&format!("app{j}"), &format!("App{j}")))
            .await;
    }
    let second = World::writer(b).await;
    // Both writers warm, each having written since the other last did.
    second.run(create_application("warm", "Warm")).await;
    first.run(create_application("warmer", "Warmer")).await;
    let writers = [Arc::new(first), Arc::new(second)];

    // Each command by both writers at once, spawned side by side, started together.
    let start = watch::channel(false).0;
    let mut tasks = Vec::new();
    let mut race = |what: &'static str, command: &dyn Fn(usize) -> Command| {
        for (w, writer) in writers.iter().enumerate() {
            let writer = writer.clone();
            let command = command(w);
            let mut start = start.subscribe();
            tasks.push(tokio::spawn(async move {
                let _ = start.wait_for(|go| *go).await;
                (what, decided(&writer, command).await)
            }));
        }
    };
    for j in 0..APPS {
        for i in 0..APIS {
            // Every pair, by both writers: one subscription each.
            race("subscribe", &|w| Command::Subscribe {
                subscription_id: format!("s{w}-{j}-{i}"),
                application_id: format!("app{j}"),
                api_id: format!("api{i}"),
                tier: "Unlimited".into(),
            });
        }
    }
    for k in 0..UPDATES {
        for i in 0..APIS {
            // Updates of one aggregate by both: none may be decided on a version the
            // other already moved past.
            race("update", &|w| Command::UpdateApi {
                api_id: format!("api{i}"),
                definition: definition(i, &format!("writer {w} update {k}")),
                expected_version: None,
            });
        }
    }
    for n in 0..2 {
        // One owner's application name, twice by each.
        race("shared", &|w| {
            create_application(&format!("shared-{w}-{n}"), "Shared")
        });
    }
    start.send_replace(true);
    let mut outcomes: HashMap<(&str, &str), usize> = HashMap::new();
    for task in tasks {
        let (what, result) = task.await.unwrap();
        let outcome = match result {
            Ok(_) => "ok",
            Err(CommandError::Domain(DomainError::AlreadyExists(_))) => "exists",
            Err(other) => panic!("{what}: {other}"),
        };
        *outcomes.entry((what, outcome)).or_default() += 1;
    }
    assert_eq!(outcomes.get(&("subscribe", "ok")), Some(&(APPS * APIS)));
    assert_eq!(outcomes.get(&("subscribe", "exists")), Some(&(APPS * APIS)));
    assert_eq!(outcomes.get(&("update", "ok")), Some(&(2 * APIS * UPDATES)));
    assert_eq!(outcomes.get(&("update", "exists")), None);
    assert_eq!(outcomes.get(&("shared", "ok")), Some(&1));
    assert_eq!(outcomes.get(&("shared", "exists")), Some(&3));

    // Both folds at the log's end, in agreement.
    let end = a.last_sequence().await.unwrap();
    for writer in &writers {
        assert!(writer.model.wait_for(end, Duration::from_secs(20)).await);
    }
    let (state, other) = (
        writers[0].model.read().clone(),
        writers[1].model.read().clone(),
    );
    assert_eq!(state.config_hash(), other.config_hash());
    assert_eq!(state.subscriptions().count(), APPS * APIS);
    for j in 0..APPS {
        for i in 0..APIS {
            assert!(
                state
                    .subscription_of(&format!("app{j}"), &format!("api{i}"))
                    .is_some()
            );
        }
    }
    for i in 0..APIS {
        let api = state.api(&format!("api{i}")).unwrap();
        assert_eq!(
            api.aggregate_version,
            2 + 2 * UPDATES as u64,
            "no update lost"
        );
    }
    let shared = state.applications().filter(|a| a.name == "Shared").count();
    assert_eq!(shared, 1);

    // The log itself: each aggregate's events carry versions 1, 2, 3... (two events
    // decided on the same version would repeat one), and one creation per pair.
    let mut versions: HashMap<String, u64> = HashMap::new();
    let mut created = 0;
    for record in a.read_to_end(1).await.unwrap() {
        let envelope = EventEnvelope::decode(record.payload.as_ref()).unwrap();
        let version = versions.entry(record.subject.clone()).or_default();
        *version += 1;
        assert_eq!(
            envelope.aggregate_version, *version,
            "record {} on {}",
            record.sequence, record.subject
        );
        if record.subject.starts_with("gatehouse.events.subscription.") {
            created += 1;
        }
    }
    assert_eq!(created, APPS * APIS, "one subscription created per pair");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controls_on_one_nats_stream_break_no_rule() {
    let server = NatsServer::start();
    let connect = || async {
        Arc::new(
            NatsLog::connect(NatsLogConfig::new(server.url()))
                .await
                .unwrap(),
        ) as Arc<dyn EventLog>
    };
    two_writers_break_no_rule(connect().await, connect().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_executors_on_one_file_log_break_no_rule() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(FileLog::open(dir.path()).unwrap());
    two_writers_break_no_rule(log.clone(), log).await;
}

/// A file log whose answers are held back while `held` is set, and that refuses the
/// next `refuse` appends with a conflict without storing them (another writer winning):
/// how a test sees what is in flight, and fails appends at will.
struct GatedLog {
    inner: FileLog,
    submitted: AtomicUsize,
    refuse: AtomicUsize,
    held: watch::Sender<bool>,
}

#[async_trait]
impl EventLog for GatedLog {
    async fn submit(&self, request: AppendRequest) -> Result<PendingAppend, LogError> {
        let refused = self
            .refuse
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let answer = if refused {
            PendingAppend::ready(Err(LogError::Conflict {
                subject: request.subject.clone(),
                expected: 0,
            }))
        } else {
            self.inner.submit(request).await?
        };
        self.submitted.fetch_add(1, SeqCst);
        let mut held = self.held.subscribe();
        Ok(PendingAppend::new(async move {
            let _ = held.wait_for(|held| !held).await;
            answer.await
        }))
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn last_sequence(&self) -> Result<u64, LogError> {
        self.inner.last_sequence().await
    }

    async fn first_sequence(&self) -> Result<u64, LogError> {
        self.inner.first_sequence().await
    }

    async fn follow(&self, from: u64) -> Result<RecordStream, LogError> {
        self.inner.follow(from).await
    }
}

async fn gated() -> (tempfile::TempDir, Arc<GatedLog>, World) {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(GatedLog {
        inner: FileLog::open(dir.path()).unwrap(),
        submitted: AtomicUsize::new(0),
        refuse: AtomicUsize::new(0),
        held: watch::channel(false).0,
    });
    let world = World::writer(log.clone()).await;
    (dir, log, world)
}

async fn submitted_reaches(log: &GatedLog, count: usize) {
    Poll::new(format!("{count} appends submitted while none is answered"))
        .timeout(Duration::from_secs(20))
        .until(|| log.submitted.load(SeqCst) >= count)
}

/// Commands do not wait for the ones before them to be durable: with every answer held
/// back, forty subscriptions are all submitted, and a lifecycle change is decided on an
/// API whose creation is still in flight (chained behind it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_decided_on_what_is_in_flight_and_pipelined() {
    let (_dir, log, world) = gated().await;
    world.publish_api("api0", definition(0, "")).await;
    for j in 0..40 {
        world
            .run(create_application(&format!("app{j}"), &format!("App{j}")))
            .await;
    }
    let world = Arc::new(world);
    let before = log.submitted.load(SeqCst);
    log.held.send_replace(true);

    let mut tasks = Vec::new();
    for j in 0..40 {
        let world = world.clone();
        tasks.push(tokio::spawn(async move {
            world
                .exec
                .execute(
                    Command::Subscribe {
                        subscription_id: format!("s{j}"),
                        application_id: format!("app{j}"),
                        api_id: "api0".into(),
                        tier: "Unlimited".into(),
                    },
                    &ctx(),
                )
                .await
        }));
    }
    submitted_reaches(&log, before + 40).await;
    let create = {
        let world = world.clone();
        tokio::spawn(async move {
            world
                .exec
                .execute(
                    Command::CreateApi {
                        api_id: "api1".into(),
                        definition: definition(1, ""),
                    },
                    &ctx(),
                )
                .await
        })
    };
    submitted_reaches(&log, before + 41).await;
    let publish = {
        let world = world.clone();
        tokio::spawn(async move {
            world
                .exec
                .execute(
                    Command::ChangeLifecycle {
                        api_id: "api1".into(),
                        target: lifecycle::State::Published,
                        expected_version: None,
                    },
                    &ctx(),
                )
                .await
        })
    };
    submitted_reaches(&log, before + 42).await;
    assert!(!create.is_finished() && !publish.is_finished());

    log.held.send_replace(false);
    let mut sequences = Vec::new();
    for task in tasks {
        sequences.push(task.await.unwrap().unwrap());
    }
    let created = create.await.unwrap().unwrap();
    let published = publish.await.unwrap().unwrap();
    sequences.sort_unstable();
    let first = sequences[0];
    assert_eq!(
        sequences,
        (first..first + 40).collect::<Vec<_>>(),
        "one record each, contiguous"
    );
    assert_eq!((created, published), (first + 40, first + 41));
    let state = world.model.read();
    assert_eq!(state.subscriptions().count(), 40);
    assert_eq!(
        state.api("api1").unwrap().lifecycle(),
        lifecycle::State::Published
    );
}

/// A refusal decided on an append still in flight is not answered on the strength of
/// it: when that append fails (another writer won), the command is decided again, and
/// of two applications with one name exactly one is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_resting_on_a_failed_append_is_decided_again() {
    let (_dir, log, world) = gated().await;
    let world = Arc::new(world);
    let before = log.submitted.load(SeqCst);
    log.held.send_replace(true);
    log.refuse.store(1, SeqCst);
    let spawn = |id: &str| {
        let world = world.clone();
        let command = create_application(id, "Twice");
        tokio::spawn(async move { world.exec.execute(command, &ctx()).await })
    };
    let first = spawn("one");
    submitted_reaches(&log, before + 1).await;
    // Decided on a state holding "one": ALREADY_EXISTS — unless "one" is not stored.
    let second = spawn("two");
    // Let the second decide (it waits to confirm its refusal against the log).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !second.is_finished(),
        "the refusal waits for what it rests on"
    );
    log.held.send_replace(false);
    let results = [first.await.unwrap(), second.await.unwrap()];
    let created = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(CommandError::Domain(DomainError::AlreadyExists(_)))))
        .count();
    assert_eq!((created, refused), (1, 1), "{results:?}");
    let end = log.last_sequence().await.unwrap();
    assert!(world.model.wait_for(end, Duration::from_secs(20)).await);
    let state = world.model.read();
    assert_eq!(
        state.applications().filter(|a| a.name == "Twice").count(),
        1
    );
}

//! Start-up at scale: how long a full replay of a large log takes, and how long control
//! and token-service take to serve again after a restart, without and with a snapshot.
//!
//! ```text
//! cargo run --release --example restart -- [--nats nats://127.0.0.1:4222] [--events 1000000] \
//!     [--apis 10000] [--applications 10000] [--subscriptions 100000]
//! ```
//!
//! It writes a log of `--events` records straight through the log API (pipelined
//! `submit`s, as control's write path would append them, without deciding each): the
//! configuration first — APIs created and published, applications with production keys,
//! subscriptions — then a history of changes up to the total: subscriptions blocked and
//! unblocked, scopes granted, API definitions updated, secrets regenerated, tokens
//! revoked (events one simulated second apart, tokens expiring an hour after, so old
//! revocations are pruned as they would be). On an embedded log in a temporary
//! directory, or on a fresh stream (and snapshot buckets) of the NATS server given.
//!
//! Then it prints, beside the targets of issue 12:
//!
//! - the full replay: the log folded into a state from the start, in-process;
//! - the snapshot: written (encode + save) and restored (load + decode + the check);
//! - control and token-service in this process on their real servers, each started
//!   twice on the log: without a snapshot (a replay) and with one — the time from the
//!   start of `serve` to the first answer (control: `grpc.health.v1` over mutual TLS;
//!   token-service: `GET /oauth2/jwks` over HTTPS);
//! - a fresh gateway (empty data directory) beside control: the time until it serves the
//!   log's last sequence (control's snapshot over gRPC, then its event stream).
//!
//! Not a test: a measurement, run by hand (`uptime` beside it tells the machine's load).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_eventlog::{
    AppendRequest, EventLog, Expectation, FileLog, FileSnapshotStore, NatsLog, NatsLogConfig,
    NatsSnapshotStore, SnapshotStore, subject,
};
use gatehouse_node::pki::NodeRole;
use gatehouse_node::read_model::Follower;
use gatehouse_node::snapshot::{SnapshotArgs, restore, write_snapshot};
use gatehouse_node::{NodeContext, Shutdown};
use gatehouse_proto::Timestamp;
use gatehouse_proto::events::{
    ApiCreated, ApiLifecycleChanged, ApiUpdated, ApplicationCreated, ClientRegistered,
    ClientSecretRegenerated, EventEnvelope, OAuthClient, SubscriptionCreated,
    SubscriptionScopesGranted, SubscriptionStateChanged, TokenRevoked, event_envelope::Event,
    lifecycle, o_auth_client::KeyType, subscription_status,
};
use gatehouse_testkit::pki::TestPki;
use gatehouse_testkit::tls::HttpClient;
use gatehouse_testkit::world::{World, api, resources};
use prost::Message;

struct Options {
    nats: Option<String>,
    events: u64,
    apis: u64,
    applications: u64,
    subscriptions: u64,
}

fn options() -> Options {
    let mut options = Options {
        nats: None,
        events: 1_000_000,
        apis: 10_000,
        applications: 10_000,
        subscriptions: 100_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        let number = || value.parse::<u64>().expect("a number");
        match flag.as_str() {
            "--nats" => options.nats = Some(value.clone()),
            "--events" => options.events = number(),
            "--apis" => options.apis = number(),
            "--applications" => options.applications = number(),
            "--subscriptions" => options.subscriptions = number(),
            other => panic!("unknown flag {other}"),
        }
    }
    options
}

/// A UUID-shaped id (36 characters) for item `i` of `kind`.
fn uuid(kind: u8, i: u64) -> String {
    format!("{:08x}-{kind:04x}-4000-8000-{:012x}", i, i * 7919)
}

/// A PHC string the size of an argon2id hash (never checked here).
fn hash(i: u64) -> String {
    format!("$argon2id$v=19$m=19456,t=2,p=1${:022x}${:043x}", i, i * 31)
}

/// Writes the log: what the module docs say. Events are `seconds` apart, from `start`.
struct Seeder {
    log: Arc<dyn EventLog>,
    pending: VecDeque<gatehouse_eventlog::PendingAppend>,
    written: u64,
    start: i64,
}

impl Seeder {
    const IN_FLIGHT: usize = 8192;

    async fn append(&mut self, kind: &str, id: &str, version: u64, event: Event) {
        let time = self.start + self.written as i64;
        let event_id = format!("seed-{:012}", self.written);
        let envelope = EventEnvelope {
            event_id: event_id.clone(),
            aggregate_id: id.to_string(),
            aggregate_version: version,
            time: Some(Timestamp {
                seconds: time,
                nanos: 0,
            }),
            actor: "seed".into(),
            event: Some(event),
            ..Default::default()
        };
        let pending = self
            .log
            .submit(AppendRequest {
                subject: subject(kind, id),
                msg_id: event_id,
                headers: Vec::new(),
                payload: envelope.encode_to_vec().into(),
                expect: Expectation::Any,
            })
            .await
            .expect("cannot submit");
        self.pending.push_back(pending);
        self.written += 1;
        if self.pending.len() >= Self::IN_FLIGHT {
            self.pending.pop_front().unwrap().await.expect("append");
        }
    }

    async fn flush(&mut self) {
        while let Some(pending) = self.pending.pop_front() {
            pending.await.expect("append");
        }
    }
}

async fn seed(log: Arc<dyn EventLog>, o: &Options) {
    let already = log.last_sequence().await.unwrap();
    let mut seeder = Seeder {
        log,
        pending: VecDeque::new(),
        written: 0,
        start: gatehouse_testkit::world::now() - o.events as i64 - 60,
    };
    let urls = ["http://127.0.0.1:9".to_string()];
    let paths = [
        ("GET", "/items"),
        ("GET", "/items/{id}"),
        ("POST", "/items"),
    ];
    let definition = |i: u64, round: u64| {
        let mut d = api(
            &format!("Api{i}"),
            &format!("/api{i}"),
            "1.0.0",
            resources(&paths),
            &urls,
        );
        d.description = format!("revision {round} of API {i}");
        d
    };
    for i in 0..o.apis {
        let event = Event::ApiCreated(ApiCreated {
            definition: Some(definition(i, 0)),
            source_api_id: String::new(),
        });
        seeder.append("api", &uuid(1, i), 1, event).await;
    }
    for i in 0..o.apis {
        let event = Event::ApiLifecycleChanged(ApiLifecycleChanged {
            from: lifecycle::State::Created as i32,
            to: lifecycle::State::Published as i32,
        });
        seeder.append("api", &uuid(1, i), 2, event).await;
    }
    for i in 0..o.applications {
        let event = Event::ApplicationCreated(ApplicationCreated {
            name: format!("App{i}"),
            owner: format!("owner{}", i % 100),
            throttling_tier: "Unlimited".into(),
            description: String::new(),
        });
        seeder.append("application", &uuid(2, i), 1, event).await;
        let event = Event::ClientRegistered(ClientRegistered {
            client: Some(OAuthClient {
                client_id: uuid(4, i),
                application_id: uuid(2, i),
                key_type: KeyType::Production as i32,
                secret_hash: hash(i),
                grant_types: vec!["client_credentials".into()],
                token_lifetime_seconds: 3600,
                ..Default::default()
            }),
        });
        seeder.append("client", &uuid(4, i), 1, event).await;
    }
    let apps = o.applications.max(1);
    for i in 0..o.subscriptions {
        let event = Event::SubscriptionCreated(SubscriptionCreated {
            application_id: uuid(2, i % apps),
            api_id: uuid(1, i / apps % o.apis.max(1)),
            tier: "Unlimited".into(),
        });
        seeder.append("subscription", &uuid(3, i), 1, event).await;
    }
    let configured = seeder.written;
    // The history: one change after another until the total.
    let total = o.events.saturating_sub(already);
    let mut round = 0;
    while seeder.written < total {
        round += 1;
        let n = seeder.written;
        let version = 1 + round;
        let (kind, id, event) = match n % 10 {
            0..=2 => {
                let sub = n / 10 % o.subscriptions.max(1);
                let blocked = (n / 10 / o.subscriptions.max(1)).is_multiple_of(2);
                let (from, to) = if blocked {
                    (
                        subscription_status::State::Active,
                        subscription_status::State::Blocked,
                    )
                } else {
                    (
                        subscription_status::State::Blocked,
                        subscription_status::State::Active,
                    )
                };
                let event = Event::SubscriptionStateChanged(SubscriptionStateChanged {
                    from: from as i32,
                    to: to as i32,
                });
                ("subscription", uuid(3, sub), event)
            }
            3 | 4 => {
                let sub = n / 10 % o.subscriptions.max(1);
                let event = Event::SubscriptionScopesGranted(SubscriptionScopesGranted {
                    scopes: vec![format!("read:{}", n % 7), "write:items".into()],
                });
                ("subscription", uuid(3, sub), event)
            }
            5 | 6 => {
                let i = n / 10 % o.apis.max(1);
                let event = Event::ApiUpdated(ApiUpdated {
                    definition: Some(definition(i, round)),
                });
                ("api", uuid(1, i), event)
            }
            7 => {
                let i = n / 10 % apps;
                let event = Event::ClientSecretRegenerated(ClientSecretRegenerated {
                    secret_hash: hash(n),
                });
                ("client", uuid(4, i), event)
            }
            _ => {
                let jti = format!("jti-{n:012}");
                let event = Event::TokenRevoked(TokenRevoked {
                    expires_at: Some(Timestamp {
                        seconds: seeder.start + n as i64 + 3600,
                        nanos: 0,
                    }),
                    client_id: uuid(4, n % apps),
                });
                ("token", jti, event)
            }
        };
        seeder.append(kind, &id, version, event).await;
    }
    seeder.flush().await;
    println!(
        "  {configured} records of configuration, {} of history",
        seeder.written - configured
    );
}

fn seconds(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Peak resident memory of this process, from /proc.
fn peak_rss_mib() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or("?".into(), |kb| format!("{} MiB", kb / 1024))
}

/// Where a node of this run keeps its snapshot, and how to remove it.
#[derive(Clone)]
enum Snapshots {
    File(std::path::PathBuf),
    Nats { url: String, bucket: String },
}

impl Snapshots {
    async fn store(&self) -> Arc<dyn SnapshotStore> {
        match self {
            Snapshots::File(path) => Arc::new(FileSnapshotStore::new(path, 1 << 32)),
            Snapshots::Nats { url, bucket } => {
                let client = async_nats::connect(url).await.expect("NATS");
                Arc::new(
                    NatsSnapshotStore::open(&client, bucket, 1, 1 << 32)
                        .await
                        .unwrap(),
                )
            }
        }
    }

    async fn remove(&self) {
        match self {
            Snapshots::File(path) => {
                let _ = std::fs::remove_file(path);
            }
            Snapshots::Nats { url, bucket } => {
                let client = async_nats::connect(url).await.expect("NATS");
                let _ = async_nats::jetstream::new(client)
                    .delete_object_store(bucket)
                    .await;
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let o = options();
    let dir = tempfile::tempdir().unwrap();
    let run = std::process::id();
    let stream = format!("RESTART_{run}");
    let log: Arc<dyn EventLog> = match &o.nats {
        Some(url) => Arc::new(
            NatsLog::connect(NatsLogConfig {
                stream: stream.clone(),
                ..NatsLogConfig::new(url.clone())
            })
            .await
            .unwrap(),
        ),
        None => Arc::new(FileLog::open(dir.path().join("eventlog")).unwrap()),
    };
    println!("restart at scale on {}", log.describe());
    let key = World::on(log.clone()).await.close().await;
    drop(key);

    let started = Instant::now();
    seed(log.clone(), &o).await;
    let end = log.last_sequence().await.unwrap();
    println!(
        "log written: {end} records in {} ({:.0} records/s)",
        seconds(started.elapsed()),
        end as f64 / started.elapsed().as_secs_f64()
    );

    // The full replay, in-process.
    let started = Instant::now();
    let follower = Follower::rebuild(log.clone(), Duration::from_secs(3600))
        .await
        .unwrap();
    let replay = started.elapsed();
    let (apis, subs, clients, revoked) = {
        let state = follower.model.read();
        (
            state.apis().count(),
            state.subscriptions().count(),
            state.clients().count(),
            state.revoked_tokens().count(),
        )
    };
    println!(
        "full replay:      {} ({:.0} events/s; {apis} APIs, {subs} subscriptions, {clients} clients, {revoked} revocations)   target: 1M events <= 10 s",
        seconds(replay),
        end as f64 / replay.as_secs_f64()
    );

    // A snapshot of that state, and a state restored from it.
    let snapshots = |role: &str| match &o.nats {
        Some(url) => Snapshots::Nats {
            url: url.clone(),
            bucket: format!("restart-{run}-{role}"),
        },
        None => Snapshots::File(SnapshotArgs::file(&dir.path().join(role))),
    };
    let probe = snapshots("probe");
    let store = probe.store().await;
    let started = Instant::now();
    write_snapshot(&follower.model, store.as_ref())
        .await
        .expect("a snapshot");
    println!(
        "snapshot written: {} ({} MiB, {})",
        seconds(started.elapsed()),
        follower
            .model
            .snapshots
            .last_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
            >> 20,
        store.describe()
    );
    drop(follower);
    let started = Instant::now();
    let restored = restore(log.as_ref(), Some(store.as_ref())).await.unwrap();
    println!(
        "snapshot restored: {} (load, decode, check; origin {:?})",
        seconds(started.elapsed()),
        restored.origin
    );
    drop(restored);
    probe.remove().await;

    let pki = TestPki::in_dir(&dir.path().join("pki"));
    for node in ["control", "token-service"] {
        let store = snapshots(node);
        for with_snapshot in [false, true] {
            if !with_snapshot {
                store.remove().await;
            }
            let started = start_node(node, &o, &stream, &log, &pki, dir.path(), &store).await;
            let took = started.took;
            started.stop().await;
            println!(
                "{node:<13} {} snapshot: serving {} after its start   target: <= 2 s",
                if with_snapshot { "with a" } else { "without" },
                seconds(took)
            );
        }
    }

    // A fresh gateway (empty data directory) beside control: control's snapshot over
    // gRPC, then control's event stream.
    let control = start_node(
        "control",
        &o,
        &stream,
        &log,
        &pki,
        dir.path(),
        &snapshots("control"),
    )
    .await;
    let mut config = gatehouse_gateway::GatewayConfig::defaults();
    config.https_listen = gatehouse_testkit::free_addr();
    config.http_listen = gatehouse_testkit::free_addr();
    config.control_url = format!("https://{}", control.addr);
    config.data_dir = dir.path().join("gateway");
    config.access_log = false;
    config.node.cluster = pki.node(NodeRole::Gateway, "gateway-1");
    let end = log.last_sequence().await.unwrap();
    let started = Instant::now();
    let gateway = gatehouse_gateway::start(config, None).await.unwrap();
    loop {
        let table = gateway.gateway.table.load();
        if table.sequence >= end {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "fresh gateway:  serving sequence {end} {} after its start (control's snapshot over gRPC)   target: <= 1 s",
        seconds(started.elapsed())
    );
    gateway.shutdown().await;
    control.stop().await;
    println!("peak RSS of this process: {}", peak_rss_mib());
}

/// A node started in this process, and how long it took to answer.
struct Started {
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    shutdown: Shutdown,
    addr: std::net::SocketAddr,
    took: Duration,
}

impl Started {
    /// Stops it cleanly (which writes its snapshot).
    async fn stop(self) {
        self.shutdown.trigger();
        self.task.await.unwrap().unwrap();
    }
}

/// Starts `node` in this process on `log` and waits for its first answer.
async fn start_node(
    node: &str,
    o: &Options,
    stream: &str,
    log: &Arc<dyn EventLog>,
    pki: &TestPki,
    dir: &std::path::Path,
    snapshots: &Snapshots,
) -> Started {
    let shutdown = Shutdown::new();
    let context = NodeContext {
        shutdown: shutdown.clone(),
        tracing: false,
        log: Some(log.clone()),
    };
    let mut snapshot_args = SnapshotArgs::default();
    let mut node_log = gatehouse_node::LogArgs::default();
    if let (Some(url), Snapshots::Nats { bucket, .. }) = (&o.nats, snapshots) {
        snapshot_args.snapshot_bucket = Some(bucket.clone());
        node_log = gatehouse_node::LogArgs {
            nats_url: Some(url.clone()),
            nats_stream: stream.to_string(),
            ..node_log
        };
        node_log.nats_replicas = 1;
    }
    let started = Instant::now();
    let (task, addr) = match node {
        "control" => {
            let addr = gatehouse_testkit::free_addr();
            let mut config: gatehouse_control::ControlConfig =
                gatehouse_node::process::parse_defaults();
            config.listen = addr;
            config.data_dir = dir.join("control");
            config.snapshots = snapshot_args;
            config.node.cluster = pki.node(NodeRole::Control, "control");
            config.node.log = node_log;
            let task = tokio::spawn(gatehouse_control::serve(config, context));
            let channel = pki
                .node_tls(NodeRole::Gateway, "probe")
                .channel(&format!("https://{addr}"))
                .unwrap();
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
            loop {
                let asked = health
                    .check(tonic_health::pb::HealthCheckRequest::default())
                    .await;
                if asked.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (task, addr)
        }
        _ => {
            let https = gatehouse_testkit::free_addr();
            let mut config: gatehouse_token_service::TokenServiceConfig =
                gatehouse_node::process::parse_defaults();
            config.listen_https = https;
            config.listen_grpc = gatehouse_testkit::free_addr();
            config.data_dir = dir.join("token-service");
            config.snapshots = snapshot_args;
            config.admin.admin_client_id = Some("restart-admin".into());
            config.admin.admin_client_secret = Some("restart-admin-secret-0123456789".into());
            config.node.cluster = pki.node(NodeRole::TokenService, "token-service");
            config.node.log = node_log;
            let task = tokio::spawn(gatehouse_token_service::serve(config, context));
            let http = HttpClient::default();
            loop {
                if tokio::net::TcpStream::connect(https).await.is_ok() {
                    let jwks = http
                        .get(&format!("https://{https}/oauth2/jwks"), None)
                        .await;
                    if jwks.status == http::StatusCode::OK {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (task, https)
        }
    };
    Started {
        task,
        shutdown,
        addr,
        took: started.elapsed(),
    }
}

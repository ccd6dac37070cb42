//! How fast control takes writes through its admin API: seeds APIs, applications and
//! subscriptions with a fixed number of calls in flight and prints events per second.
//!
//! ```text
//! cargo run --release -p gatehouse-control --example seed_rate -- [--nats nats://127.0.0.1:4222] \
//!     [--apis 500] [--applications 500] [--subscriptions 5000] [--in-flight 32]
//! ```
//!
//! control runs in this process on its real gRPC server (mutual TLS under a throw-away
//! CA, admin tokens signed with a key published on the log), on an embedded log in a
//! temporary directory, or on the NATS stream given (a fresh stream name each run). Every
//! call is an ordinary admin RPC from a tonic client over TLS: `CreateApi` +
//! `ChangeLifecycle` (PUBLISHED) per API, `CreateApplication`, `Subscribe` (each
//! application to consecutive APIs). A call answered ABORTED is retried, as a seeding
//! script would. The rate is the log's growth over the wall time of each phase.
//!
//! Not a test: a measurement, run by hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use futures::StreamExt;
use gatehouse_eventlog::{EventLog, FileLog, NatsLog, NatsLogConfig};
use gatehouse_node::pki::NodeRole;
use gatehouse_node::{NodeContext, Shutdown};
use gatehouse_proto::admin::{
    ChangeLifecycleRequest, CreateApiRequest, CreateApplicationRequest, SubscribeRequest,
};
use gatehouse_proto::events::lifecycle;
use gatehouse_testkit::grpc::{AdminClient, admin_client};
use gatehouse_testkit::pki::TestPki;
use gatehouse_testkit::world::{World, admin_claims, api, now, resources};
use gatehouse_tokens::{ADMIN_AUDIENCE, ADMIN_SCOPES};
use tonic::Code;

struct Options {
    nats: Option<String>,
    apis: usize,
    applications: usize,
    subscriptions: usize,
    in_flight: usize,
}

fn options() -> Options {
    let mut options = Options {
        nats: None,
        apis: 500,
        applications: 500,
        subscriptions: 5_000,
        in_flight: 32,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        let number = || value.parse::<usize>().expect("a number");
        match flag.as_str() {
            "--nats" => options.nats = Some(value.clone()),
            "--apis" => options.apis = number(),
            "--applications" => options.applications = number(),
            "--subscriptions" => options.subscriptions = number(),
            "--in-flight" => options.in_flight = number(),
            other => panic!("unknown flag {other}"),
        }
    }
    options
}

/// Runs `calls` with `in_flight` of them at a time, retrying ABORTED ones; returns
/// their results in order.
async fn run_all<T, F, Fut>(in_flight: usize, calls: Vec<F>) -> Vec<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let retries = AtomicU64::new(0);
    let results = futures::stream::iter(calls.into_iter().map(|call| {
        let retries = &retries;
        async move {
            loop {
                match call().await {
                    Ok(value) => return value,
                    Err(status) if status.code() == Code::Aborted => {
                        retries.fetch_add(1, Relaxed);
                    }
                    Err(status) => panic!("call failed: {status:?}"),
                }
            }
        }
    }))
    .buffered(in_flight)
    .collect::<Vec<T>>()
    .await;
    let retries = retries.load(Relaxed);
    if retries > 0 {
        println!("  ({retries} calls answered ABORTED and retried)");
    }
    results
}

async fn phase<T>(log: &Arc<dyn EventLog>, name: &str, work: impl Future<Output = T>) -> T {
    let before = log.last_sequence().await.unwrap();
    let started = Instant::now();
    let result = work.await;
    let elapsed = started.elapsed();
    let events = log.last_sequence().await.unwrap() - before;
    println!(
        "{name:<14} {events:>7} events in {:>7.2} s: {:>8.0} events/s",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64()
    );
    result
}

#[tokio::main]
async fn main() {
    let options = options();
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = match &options.nats {
        Some(url) => Arc::new(
            NatsLog::connect(NatsLogConfig {
                stream: format!("SEED_{}", std::process::id()),
                ..NatsLogConfig::new(url.clone())
            })
            .await
            .unwrap(),
        ),
        None => Arc::new(FileLog::open(dir.path().join("eventlog")).unwrap()),
    };
    println!("control on {}", log.describe());
    let key = World::on(log.clone()).await.close().await;
    let token = key
        .sign(&admin_claims("seeder", ADMIN_SCOPES, ADMIN_AUDIENCE, now()))
        .unwrap();

    let pki = TestPki::in_dir(&dir.path().join("pki"));
    let addr = gatehouse_testkit::free_addr();
    let mut config: gatehouse_control::ControlConfig = gatehouse_node::process::parse_defaults();
    config.listen = addr;
    config.data_dir = dir.path().join("control");
    config.node.cluster = pki.node(NodeRole::Control, "control");
    let shutdown = Shutdown::new();
    let context = NodeContext {
        shutdown: shutdown.clone(),
        tracing: false,
        log: Some(log.clone()),
    };
    let control = tokio::spawn(gatehouse_control::serve(config, context));
    let target = pki.target(addr);
    let client: AdminClient = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Ok(channel) =
            gatehouse_node::tls::server_verified_endpoint(&target.url(), Some(&target.ca))
                .unwrap()
                .connect()
                .await
        {
            drop(channel);
            break admin_client(&target, &token).await;
        }
    };

    let n = options.in_flight;
    let started = Instant::now();
    let start_sequence = log.last_sequence().await.unwrap();
    let api_ids: Vec<String> = phase(&log, "APIs", async {
        let calls = (0..options.apis)
            .map(|i| {
                let client = client.clone();
                move || {
                    let mut client = client.clone();
                    async move {
                        let definition = api(
                            &format!("Api{i}"),
                            &format!("/seed{i}"),
                            "1.0.0",
                            resources(&[("GET", "/x")]),
                            &["http://127.0.0.1:9/".into()],
                        );
                        let created = client
                            .create_api(CreateApiRequest {
                                definition: Some(definition),
                            })
                            .await?
                            .into_inner();
                        client
                            .change_lifecycle(ChangeLifecycleRequest {
                                api_id: created.id.clone(),
                                target: lifecycle::State::Published as i32,
                                expected_version: 0,
                            })
                            .await?;
                        Ok(created.id)
                    }
                }
            })
            .collect();
        run_all(n, calls).await
    })
    .await;
    let app_ids: Vec<String> = phase(&log, "applications", async {
        let calls = (0..options.applications)
            .map(|i| {
                let client = client.clone();
                move || {
                    let mut client = client.clone();
                    async move {
                        let created = client
                            .create_application(CreateApplicationRequest {
                                name: format!("App{i}"),
                                ..Default::default()
                            })
                            .await?
                            .into_inner();
                        Ok(created.id)
                    }
                }
            })
            .collect();
        run_all(n, calls).await
    })
    .await;
    phase(&log, "subscriptions", async {
        let per_app = options.subscriptions.div_ceil(app_ids.len().max(1));
        let calls = (0..options.subscriptions)
            .map(|i| {
                let client = client.clone();
                let app = app_ids[i / per_app].clone();
                let api = api_ids[(i / per_app + i % per_app) % api_ids.len()].clone();
                move || {
                    let mut client = client.clone();
                    let (app, api) = (app.clone(), api.clone());
                    async move {
                        client
                            .subscribe(SubscribeRequest {
                                application_id: app,
                                api_id: api,
                                tier: "Unlimited".into(),
                            })
                            .await?;
                        Ok(())
                    }
                }
            })
            .collect();
        run_all(n, calls).await
    })
    .await;
    let events = log.last_sequence().await.unwrap() - start_sequence;
    let elapsed = started.elapsed();
    println!(
        "{:<14} {events:>7} events in {:>7.2} s: {:>8.0} events/s ({n} calls in flight)",
        "all",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64()
    );
    shutdown.trigger();
    let _ = control.await;
}

//! The acceptance test, with real processes: nats-server, control, token-service, three
//! gateway replicas (all `gatehouse` subcommands), and the seed's two backends
//! (client-service and order-service, served by this test on loopback ports).
//!
//! One stack, then its stages in order, each asserting its own part:
//!
//! 1. [`the_seed_flow_through_the_admin_api`]: publish the two APIs, create
//!    `MyPythonApp`, subscribe it, generate its keys, get a token from token-service;
//! 2. [`every_replica_serves_the_seed_apis`]: `/client/1.0.0/users` and
//!    `/orders/1.0.0/items` over HTTPS through each replica;
//! 3. [`control_lists_every_replica_in_sync`]: `ListGateways` shows the three, caught up,
//!    on control's configuration;
//! 4. [`each_kind_of_admin_change_reaches_every_replica`]: block, publish, a new API and
//!    subscription, retire, a revoked token;
//! 5. [`a_killed_replica_catches_up_when_restarted`];
//! 6. [`a_replica_started_without_control_and_nats_serves_its_disk_snapshot`] (and says
//!    it is stale);
//! 7. [`after_nats_and_control_return_every_replica_follows`], the running ones without
//!    a restart of their own.
//!
//! And a replica without NATS, following control's event stream across a restart of
//! control.
//!
//! Convergence is asserted; times are printed, never asserted.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use gatehouse_node::pki::NodeRole;
use gatehouse_proto::admin::{
    ChangeLifecycleRequest, CreateApiRequest, ListGatewaysRequest, SubscribeRequest,
};
use gatehouse_proto::events::{ApiDefinition, lifecycle::State as Lifecycle};
use gatehouse_testkit::backend::{echo_backend, seed_backends};
use gatehouse_testkit::grpc::{AdminClient, admin_client};
use gatehouse_testkit::nats::NatsServer;
use gatehouse_testkit::pki::TestPki;
use gatehouse_testkit::poll::Poll;
use gatehouse_testkit::ports::free_port;
use gatehouse_testkit::process::Process;
use gatehouse_testkit::tls::{HttpClient, Reply};
use gatehouse_testkit::world::{LogLocation, World, api, resources};
use http::StatusCode;
use support::{ADMIN_ID, ADMIN_SECRET, ControlPlane, Gateway, gatehouse, subscribed_application};

/// What every stage works on.
struct Stack {
    _work: tempfile::TempDir,
    nats: NatsServer,
    plane: ControlPlane,
    http: HttpClient,
    admin: AdminClient,
    admin_token: String,
    client_url: String,
    order_url: String,
    /// The replicas' data directories (and logs).
    gateways_dir: PathBuf,
    gateways: Vec<Gateway>,
}

/// What the seed's flow made.
struct Seed {
    client_api: String,
    order_api: String,
    application_id: String,
    consumer_key: String,
    consumer_secret: String,
    /// MyPythonApp's token.
    token: String,
}

impl Stack {
    /// nats-server; token-service (ES256 keys, the configured admin) and control on it;
    /// the two backends.
    async fn start() -> Stack {
        let work = tempfile::tempdir().unwrap();
        println!("process logs in {}", work.path().display());
        let nats = NatsServer::start();
        let plane = ControlPlane::start(
            work.path(),
            &nats.url(),
            &[],
            &[("GATEHOUSE_SIGNING_ALG", "ES256")],
        );
        let (client_url, order_url) = seed_backends().await;
        let http = HttpClient::default();
        let admin_token = access_token(&http, &plane, ADMIN_ID, ADMIN_SECRET).await;
        let admin = admin_client(&plane.admin_target(), &admin_token).await;
        Stack {
            gateways_dir: work.path().join("gateways"),
            _work: work,
            nats,
            plane,
            http,
            admin,
            admin_token,
            client_url,
            order_url,
            gateways: Vec::new(),
        }
    }

    /// Replica `id` (`gw-1`...) as a process on NATS, one of three sharing the limits.
    fn replica(&self, id: &str) -> Gateway {
        Gateway::start(
            &self.gateways_dir,
            &self.plane.pki,
            id,
            self.plane.admin,
            Some(&self.nats.url()),
            &[
                "--replica-count",
                "3",
                "--report-interval-ms",
                "300",
                "--access-log",
                "false",
            ],
            &[("RUST_LOG", "info,gatehouse_gateway::access=off")],
        )
    }

    /// The HTTPS base URLs of the running replicas.
    fn bases(&self) -> Vec<String> {
        self.gateways.iter().map(Gateway::https).collect()
    }

    async fn lifecycle(&mut self, api_id: &str, target: Lifecycle) {
        self.admin
            .change_lifecycle(ChangeLifecycleRequest {
                api_id: api_id.into(),
                target: target as i32,
                expected_version: 0,
            })
            .await
            .unwrap_or_else(|e| panic!("{api_id} -> {target:?}: {e}"));
    }

    async fn create_and_publish(&mut self, definition: ApiDefinition) -> String {
        let api = self
            .admin
            .create_api(CreateApiRequest {
                definition: Some(definition),
            })
            .await
            .unwrap()
            .into_inner();
        self.lifecycle(&api.id, Lifecycle::Published).await;
        api.id
    }
}

/// A time, as printed.
fn ms(took: Duration) -> String {
    format!("{:.1} ms", took.as_secs_f64() * 1000.0)
}

/// `POST <token-service>/oauth2/<endpoint>` with client credentials.
async fn oauth(
    http: &HttpClient,
    plane: &ControlPlane,
    endpoint: &str,
    id: &str,
    secret: &str,
    form: &str,
) -> Reply {
    let url = format!("https://127.0.0.1:{}/oauth2/{endpoint}", plane.https);
    http.post_form(&url, Some((id, secret)), form).await
}

async fn access_token(http: &HttpClient, plane: &ControlPlane, id: &str, secret: &str) -> String {
    let reply = oauth(
        http,
        plane,
        "token",
        id,
        secret,
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "token endpoint: {reply:?}");
    reply.json()["access_token"].as_str().unwrap().to_string()
}

fn seed_api(name: &str, context: &str, paths: &[&str], url: &str) -> ApiDefinition {
    let gets: Vec<(&str, &str)> = paths.iter().map(|p| ("GET", *p)).collect();
    let mut definition = api(name, context, "1.0.0", resources(&gets), &[url.into()]);
    if let Some(endpoints) = definition.endpoints.as_mut() {
        endpoints.timeout_ms = 10_000;
    }
    ApiDefinition {
        subscription_tiers: vec!["Gold".into(), "Unlimited".into()],
        is_default_version: true,
        ..definition
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_flow_through_three_replicas_with_real_processes() {
    let mut stack = Stack::start().await;
    let seed = the_seed_flow_through_the_admin_api(&mut stack).await;
    stack.gateways = (1..=3).map(|i| stack.replica(&format!("gw-{i}"))).collect();
    every_replica_serves_the_seed_apis(&stack, &seed).await;
    control_lists_every_replica_in_sync(&stack).await;
    each_kind_of_admin_change_reaches_every_replica(&mut stack, &seed).await;
    a_killed_replica_catches_up_when_restarted(&mut stack, &seed).await;
    a_replica_started_without_control_and_nats_serves_its_disk_snapshot(&mut stack, &seed).await;
    after_nats_and_control_return_every_replica_follows(&mut stack, &seed).await;
}

/// Stage 1: the publisher's and devportal's steps, then MyPythonApp's token.
async fn the_seed_flow_through_the_admin_api(stack: &mut Stack) -> Seed {
    let client_url = stack.client_url.clone();
    let order_url = stack.order_url.clone();
    let client_api = stack
        .create_and_publish(seed_api(
            "ClientServiceAPI",
            "/client",
            &["/users", "/users/{id}"],
            &client_url,
        ))
        .await;
    let order_api = stack
        .create_and_publish(seed_api(
            "OrderServiceAPI",
            "/orders",
            &["/orders", "/items"],
            &order_url,
        ))
        .await;
    let (app, keys) = subscribed_application(
        &mut stack.admin,
        "MyPythonApp",
        &[&client_api, &order_api],
        "Gold",
    )
    .await;
    let token = access_token(
        &stack.http,
        &stack.plane,
        &keys.consumer_key,
        &keys.consumer_secret,
    )
    .await;
    Seed {
        client_api,
        order_api,
        application_id: app.id,
        consumer_key: keys.consumer_key,
        consumer_secret: keys.consumer_secret,
        token,
    }
}

/// Stage 2: both APIs answer through every replica, from the right backend.
async fn every_replica_serves_the_seed_apis(stack: &Stack, seed: &Seed) {
    let all = stack.bases();
    stack
        .http
        .converge(
            &all,
            "/client/1.0.0/users",
            Some(&seed.token),
            StatusCode::OK,
        )
        .await;
    for base in &all {
        let users = stack
            .http
            .get(&format!("{base}/client/1.0.0/users"), Some(&seed.token))
            .await;
        assert_eq!(users.status, StatusCode::OK);
        assert_eq!(users.header("x-backend"), Some("client-service"));
        assert!(
            users.json().as_array().is_some_and(|a| !a.is_empty()),
            "{users:?}"
        );
        let items = stack
            .http
            .get(&format!("{base}/orders/1.0.0/items"), Some(&seed.token))
            .await;
        assert_eq!(items.status, StatusCode::OK, "{items:?}");
        assert_eq!(items.header("x-backend"), Some("order-service"));
    }
}

/// Stage 3: control sees every replica, at its own sequence, all with one
/// configuration.
async fn control_lists_every_replica_in_sync(stack: &Stack) {
    let admin = &stack.admin;
    Poll::new("the replicas caught up in ListGateways")
        .timeout(Duration::from_secs(60))
        .every(Duration::from_millis(100))
        .until_async(|| {
            let mut admin = admin.clone();
            async move {
                let listing = admin
                    .list_gateways(ListGatewaysRequest {})
                    .await
                    .unwrap()
                    .into_inner();
                let ours: Vec<_> = listing
                    .gateways
                    .iter()
                    .filter_map(|g| g.status.as_ref().map(|s| (g, s)))
                    .collect();
                let caught_up = ours.len() == 3
                    && ours
                        .iter()
                        .all(|(g, s)| g.alive && g.in_sync && g.lag == 0 && !s.stale)
                    && ours
                        .iter()
                        .all(|(_, s)| s.config_hash == listing.control_config_hash)
                    && ours
                        .windows(2)
                        .all(|w| w[0].1.config_hash == w[1].1.config_hash);
                if caught_up {
                    println!(
                        "ListGateways: {} replicas at sequence {}, in_sync: {:?}",
                        ours.len(),
                        listing.control_sequence,
                        ours.iter().map(|(g, _)| g.in_sync).collect::<Vec<_>>()
                    );
                    Ok(())
                } else {
                    Err(format!("{listing:?}"))
                }
            }
        })
        .await;
}

/// Stage 4: config propagation, each kind of change reaching every replica.
async fn each_kind_of_admin_change_reaches_every_replica(stack: &mut Stack, seed: &Seed) {
    let all = stack.bases();
    let token = &seed.token;
    stack.lifecycle(&seed.order_api, Lifecycle::Blocked).await;
    let took = stack
        .http
        .converge(
            &all,
            "/orders/1.0.0/items",
            Some(token),
            StatusCode::SERVICE_UNAVAILABLE,
        )
        .await;
    println!("block: {}", ms(took));
    stack.lifecycle(&seed.order_api, Lifecycle::Published).await;
    let took = stack
        .http
        .converge(&all, "/orders/1.0.0/items", Some(token), StatusCode::OK)
        .await;
    println!("publish: {}", ms(took));

    let (echo, _) = echo_backend("echo").await;
    let extra_api = stack
        .create_and_publish(seed_api("ExtraAPI", "/extra", &["/x"], &echo))
        .await;
    stack
        .http
        .converge(&all, "/extra/1.0.0/x", Some(token), StatusCode::FORBIDDEN)
        .await;
    stack
        .admin
        .subscribe(SubscribeRequest {
            application_id: seed.application_id.clone(),
            api_id: extra_api.clone(),
            tier: "Unlimited".into(),
        })
        .await
        .unwrap();
    let took = stack
        .http
        .converge(&all, "/extra/1.0.0/x", Some(token), StatusCode::OK)
        .await;
    println!("new subscription: {}", ms(took));

    stack.lifecycle(&extra_api, Lifecycle::Deprecated).await;
    stack.lifecycle(&extra_api, Lifecycle::Retired).await;
    let took = stack
        .http
        .converge(&all, "/extra/1.0.0/x", Some(token), StatusCode::NOT_FOUND)
        .await;
    println!("retire: {}", ms(took));

    let (key, secret) = (&seed.consumer_key, &seed.consumer_secret);
    let doomed = access_token(&stack.http, &stack.plane, key, secret).await;
    stack
        .http
        .converge(&all, "/client/1.0.0/users", Some(&doomed), StatusCode::OK)
        .await;
    let form = format!("token={doomed}");
    let revoked = oauth(&stack.http, &stack.plane, "revoke", key, secret, &form).await;
    assert_eq!(revoked.status, StatusCode::OK, "{revoked:?}");
    let took = stack
        .http
        .converge(
            &all,
            "/client/1.0.0/users",
            Some(&doomed),
            StatusCode::UNAUTHORIZED,
        )
        .await;
    println!("token revocation: {}", ms(took));
}

/// Stage 5: a replica killed while a change happens catches up once restarted.
async fn a_killed_replica_catches_up_when_restarted(stack: &mut Stack, seed: &Seed) {
    let all = stack.bases();
    let token = &seed.token;
    stack.gateways[0].node.kill();
    stack.lifecycle(&seed.order_api, Lifecycle::Blocked).await;
    stack
        .http
        .converge(
            &all[1..],
            "/orders/1.0.0/items",
            Some(token),
            StatusCode::SERVICE_UNAVAILABLE,
        )
        .await;
    let restarted = &mut stack.gateways[0].node;
    restarted.start();
    restarted.wait_for_output("ready on https://");
    stack
        .http
        .converge(
            &all[..1],
            "/orders/1.0.0/items",
            Some(token),
            StatusCode::SERVICE_UNAVAILABLE,
        )
        .await;
    stack.lifecycle(&seed.order_api, Lifecycle::Published).await;
    stack
        .http
        .converge(&all, "/orders/1.0.0/items", Some(token), StatusCode::OK)
        .await;
}

/// Stage 6: control and NATS down, a replica started now comes up from its disk
/// snapshot (the one gw-1 saved), serves, and says it is stale.
async fn a_replica_started_without_control_and_nats_serves_its_disk_snapshot(
    stack: &mut Stack,
    seed: &Seed,
) {
    let token = &seed.token;
    let gw1 = stack.gateways.remove(0);
    // Give gw-1's disk writer (at most one save per second) time to save the last change.
    stack
        .http
        .converge(
            &[gw1.https()],
            "/orders/1.0.0/items",
            Some(token),
            StatusCode::OK,
        )
        .await;
    wait_for_saved_sequence(&stack.gateways_dir.join("gw-1"), &gw1).await;
    drop(gw1); // killed
    stack.plane.control.kill();
    stack.nats.stop();
    let stale = stack.replica("gw-1");
    stack
        .http
        .converge(
            &[stale.https()],
            "/client/1.0.0/users",
            Some(token),
            StatusCode::OK,
        )
        .await;
    stack
        .http
        .converge(
            &[stale.https()],
            "/orders/1.0.0/items",
            Some(token),
            StatusCode::OK,
        )
        .await;
    let ready = stack
        .http
        .get(&format!("{}/readyz", stale.http()), None)
        .await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{ready:?}");
    assert_eq!(ready.json()["stale"], true, "{ready:?}");
    stack.gateways.push(stale);
}

/// Stage 7: NATS and control back, every replica follows again (the running ones
/// without a restart) and applies the next change.
async fn after_nats_and_control_return_every_replica_follows(stack: &mut Stack, seed: &Seed) {
    stack.nats.restart();
    stack.plane.control.restart();
    stack.plane.control.wait_for_output("control ready on");
    let stale = stack.gateways.last().unwrap().http();
    let http = &stack.http;
    Poll::new("the stale replica to follow again")
        .timeout(Duration::from_secs(60))
        .every(Duration::from_millis(100))
        .until_async(|| {
            let url = format!("{stale}/readyz");
            async move {
                let ready = http.get(&url, None).await;
                if ready.status == StatusCode::OK {
                    Ok(())
                } else {
                    Err(format!("{ready:?}"))
                }
            }
        })
        .await;
    let all = stack.bases();
    stack.admin = admin_client(&stack.plane.admin_target(), &stack.admin_token).await;
    stack.lifecycle(&seed.client_api, Lifecycle::Blocked).await;
    let took = stack
        .http
        .converge(
            &all,
            "/client/1.0.0/users",
            Some(&seed.token),
            StatusCode::SERVICE_UNAVAILABLE,
        )
        .await;
    println!("block after NATS restart: {}", ms(took));
}

/// Waits until the replica's disk snapshot covers what the replica serves.
async fn wait_for_saved_sequence(dir: &Path, gw: &Gateway) {
    let ready = HttpClient::default()
        .get(&format!("{}/readyz", gw.http()), None)
        .await;
    let applied = ready.json()["applied_sequence"].as_u64().unwrap();
    let disk = gatehouse_gateway::disk::DiskSnapshot::new(dir);
    Poll::new(format!("a disk snapshot at sequence {applied}"))
        .every(Duration::from_millis(50))
        .until(|| matches!(disk.load(), Ok(Some(s)) if s.sequence >= applied));
}

/// A replica without NATS follows control's `GatewaySync.WatchEvents` stream, and picks
/// it up again from the next sequence when control restarts (a broken stream is
/// followed again, not resynced).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_without_nats_follows_controls_event_stream() {
    let work = tempfile::tempdir().unwrap();
    let nats = NatsServer::start();
    let control_port = free_port();
    let mut args: Vec<String> = [
        "control".to_string(),
        "--listen".into(),
        format!("127.0.0.1:{control_port}"),
        "--data-dir".into(),
        work.path().join("control").display().to_string(),
        "--token-service-url".into(),
        format!("https://127.0.0.1:{}", free_port()),
        "--nats-url".into(),
        nats.url(),
    ]
    .into();
    let pki = TestPki::in_dir(&work.path().join("pki"));
    args.extend(pki.args(NodeRole::Control, "control"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut control = gatehouse("control", work.path(), &args, &[]);
    control.wait_for_output("control ready on");
    // The admin side writes to the same stream directly (control's admin API needs
    // token-service; this test is about the gateway's sync path).
    let world = World::on(LogLocation::nats(nats.url()).open().await).await;
    let (echo, _) = echo_backend("echo").await;
    world.one_subscribed_api(&echo).await;
    // No --nats-url (and no GATEHOUSE_NATS_URL: the test kit never passes it on).
    let gw = Gateway::start(work.path(), &pki, "gw", control_port, None, &[], &[]);
    let http = HttpClient::default();
    wait_for_sequence(&http, &gw, world.sequence()).await;
    let base = vec![gw.http()];
    let token = world.token("app", false, "");
    http.converge(&base, "/a/1.0.0/x", Some(&token), StatusCode::OK)
        .await;
    world.lifecycle("api", Lifecycle::Blocked).await;
    http.converge(
        &base,
        "/a/1.0.0/x",
        Some(&token),
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;

    control.restart();
    control.wait_for_output("control ready on");
    world.lifecycle("api", Lifecycle::Published).await;
    http.converge(&base, "/a/1.0.0/x", Some(&token), StatusCode::OK)
        .await;
    wait_for_sequence(&http, &gw, world.sequence()).await;
    assert_eq!(
        metric(&http, &gw, "gatehouse_gateway_resyncs_total").await,
        0,
        "a broken stream is followed again, not resynced"
    );
    let output = gw.node.output();
    assert!(
        !output.contains("connected to the event log on NATS"),
        "the replica never used NATS:\n{output}"
    );
    stop(gw.node);
}

/// Waits until the replica serves a table covering `sequence` (with a configuration).
async fn wait_for_sequence(http: &HttpClient, gw: &Gateway, sequence: u64) {
    let url = format!("{}/readyz", gw.http());
    Poll::new(format!("the replica to serve sequence {sequence}"))
        .every(Duration::from_millis(10))
        .until_async(|| async {
            let ready = http.get(&url, None).await.json();
            let applied = ready["applied_sequence"].as_u64().unwrap_or(0);
            if applied >= sequence && ready["status"] != "starting" {
                Ok(())
            } else {
                Err(format!("{ready}"))
            }
        })
        .await
}

/// A counter or gauge from the replica's `/metrics`.
async fn metric(http: &HttpClient, gw: &Gateway, name: &str) -> u64 {
    let text = http
        .get(&format!("{}/metrics", gw.http()), None)
        .await
        .text();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

/// Stops a replica as `shutdown` did in-process: SIGTERM, and a clean exit.
fn stop(mut node: Process) {
    let status = node.terminate();
    assert!(status.success(), "{status}\n{}", node.output());
}

//! The acceptance test, with real processes: nats-server, control, token-service, three
//! gateway replicas (the `gateway` binary), and the seed's two backends (client-service
//! and order-service, served by this test on loopback ports).
//!
//! It runs the seed's flow through the admin API (publish the two APIs, create
//! `MyPythonApp`, subscribe it, generate its keys, get a token from token-service) and
//! calls `/client/1.0.0/users` and `/orders/1.0.0/items` over HTTPS through every
//! replica; then it checks that every replica applies each kind of admin change
//! (publish, block, retire, a new subscription, a revoked token), that a replica
//! killed and restarted catches up, that a replica started while control and NATS are
//! down comes up from its disk snapshot and serves, and that after NATS restarts the
//! replicas resume following without a restart of their own.
//!
//! # Where the binaries come from
//!
//! Cargo builds this package's own `gateway` binary for its tests
//! (`CARGO_BIN_EXE_gateway`), but not other packages' binaries. The test therefore runs
//! `cargo build -p gatehouse-control -p gatehouse-token-service --bins` itself (with the
//! cargo that runs the tests, into the same target directory), then starts
//! `target/debug/control` and `target/debug/token-service`. That is a no-op when they
//! are up to date, and it can never run stale binaries left by an earlier build, which a
//! plain "look for target/debug/control" would. Running control in-process instead
//! would not be a real process, and could not be killed like one.
//!
//! Convergence is asserted; times are printed, never asserted.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use common::*;
use gatehouse_eventlog::testing::NatsServer;
use gatehouse_proto::admin::control_plane_client::ControlPlaneClient;
use gatehouse_proto::admin::{
    ChangeLifecycleRequest, CreateApiRequest, CreateApplicationRequest, GenerateKeysRequest,
    ListGatewaysRequest, SubscribeRequest,
};
use gatehouse_proto::events::{
    ApiDefinition, EndpointGroup, Endpoints, Resource, lifecycle::State as Lifecycle,
    o_auth_client::KeyType,
};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const ADMIN_ID: &str = "e2e-admin";
const ADMIN_SECRET: &str = "e2e-admin-secret-0123456789";

/// `target/debug`, where cargo put this test's own executable's siblings.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/e2e-<hash>
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// Builds control and token-service (a no-op when they are up to date).
fn build_binaries() -> PathBuf {
    let dir = target_dir();
    let target_root = dir.parent().unwrap();
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "-p",
            "gatehouse-control",
            "-p",
            "gatehouse-token-service",
            "--bins",
        ])
        .env("CARGO_TARGET_DIR", target_root)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .status()
        .expect("cannot run cargo");
    assert!(
        status.success(),
        "building control and token-service failed"
    );
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process whose output goes to a log file; killed on drop.
struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    program: PathBuf,
    args: Vec<String>,
    ready_marker: &'static str,
}

impl Proc {
    fn start(
        name: &str,
        program: &Path,
        args: Vec<String>,
        ready_marker: &'static str,
        logs: &Path,
    ) -> Proc {
        let mut proc = Proc {
            name: name.into(),
            child: None,
            log: logs.join(format!("{name}.log")),
            program: program.to_path_buf(),
            args,
            ready_marker,
        };
        proc.spawn();
        proc
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .env("RUST_LOG", "info,gatehouse_gateway::access=off")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()));
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = mpsc::channel();
        let marker = self.ready_marker;
        let log_path = self.log.clone();
        std::thread::spawn(move || {
            let mut log = std::fs::OpenOptions::new()
                .append(true)
                .open(log_path)
                .unwrap();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                use std::io::Write;
                let _ = writeln!(log, "[stdout] {line}");
                if line.contains(marker) {
                    let _ = ready_tx.send(());
                }
            }
        });
        self.child = Some(child);
        if ready_rx.recv_timeout(Duration::from_secs(120)).is_err() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            panic!(
                "{} did not print {:?} in time; its log:\n{log}",
                self.name, self.ready_marker
            );
        }
    }

    /// SIGKILL, like a crash.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Clone)]
struct Bearer(String);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.0).parse().unwrap(),
        );
        Ok(request)
    }
}

type Admin = ControlPlaneClient<InterceptedService<Channel, Bearer>>;

/// `POST <token_url>/oauth2/<endpoint>` with client credentials.
async fn oauth(
    http: &HttpClient,
    token_url: &str,
    endpoint: &str,
    id: &str,
    secret: &str,
    form: &str,
) -> Reply {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("{token_url}/oauth2/{endpoint}"))
        .header("authorization", format!("Basic {basic}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form.to_string())))
        .unwrap();
    http.send(request).await
}

async fn access_token(http: &HttpClient, token_url: &str, id: &str, secret: &str) -> String {
    let reply = oauth(
        http,
        token_url,
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
    ApiDefinition {
        name: name.into(),
        context: context.into(),
        version: "1.0.0".into(),
        resources: paths
            .iter()
            .map(|p| Resource {
                method: "GET".into(),
                path: (*p).into(),
                ..Default::default()
            })
            .collect(),
        endpoints: Some(Endpoints {
            production: Some(EndpointGroup {
                mode: 0,
                urls: vec![url.into()],
            }),
            sandbox: None,
            timeout_ms: 10_000,
        }),
        subscription_tiers: vec!["Gold".into(), "Unlimited".into()],
        is_default_version: true,
        ..Default::default()
    }
}

async fn create_and_publish(admin: &mut Admin, definition: ApiDefinition) -> String {
    let api = admin
        .create_api(CreateApiRequest {
            definition: Some(definition),
        })
        .await
        .unwrap()
        .into_inner();
    lifecycle(admin, &api.id, Lifecycle::Published).await;
    api.id
}

async fn lifecycle(admin: &mut Admin, api_id: &str, target: Lifecycle) {
    admin
        .change_lifecycle(ChangeLifecycleRequest {
            api_id: api_id.into(),
            target: target as i32,
            expected_version: 0,
        })
        .await
        .unwrap_or_else(|e| panic!("{api_id} -> {target:?}: {e}"));
}

/// Polls `path` over HTTPS on every replica until each answers `expected`; returns the
/// time from the call to the last replica serving the change.
async fn converge(
    http: &HttpClient,
    replicas: &[String],
    path: &str,
    token: &str,
    expected: StatusCode,
) -> Duration {
    let started = Instant::now();
    for base in replicas {
        loop {
            let reply = http.get(&format!("{base}{path}"), Some(token)).await;
            if reply.status == expected {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{base}{path} still answers {}, expected {expected}: {reply:?}",
                reply.status
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    started.elapsed()
}

struct Gateway {
    proc: Proc,
    https: String,
    http_port: u16,
}

fn gateway_proc(
    bin: &Path,
    id: &str,
    nats: &str,
    control_port: u16,
    data: &Path,
    logs: &Path,
) -> Gateway {
    let https_port = free_port();
    let http_port = free_port();
    let args = vec![
        "--gateway-id".into(),
        id.into(),
        "--listen-https".into(),
        format!("127.0.0.1:{https_port}"),
        "--listen-http".into(),
        format!("127.0.0.1:{http_port}"),
        "--control-url".into(),
        format!("http://127.0.0.1:{control_port}"),
        "--nats-url".into(),
        nats.into(),
        "--data-dir".into(),
        data.join(id).display().to_string(),
        "--replica-count".into(),
        "3".into(),
        "--report-interval-ms".into(),
        "300".into(),
        "--access-log".into(),
        "false".into(),
    ];
    Gateway {
        proc: Proc::start(id, bin, args, "ready on https://", logs),
        https: format!("https://127.0.0.1:{https_port}"),
        http_port,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_flow_through_three_replicas_with_real_processes() {
    let bin_dir = build_binaries();
    let gateway_bin = PathBuf::from(env!("CARGO_BIN_EXE_gateway"));
    let work = tempfile::tempdir().unwrap();
    let logs = work.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    println!("process logs in {}", logs.display());
    let mut nats = NatsServer::start();

    // token-service and control, on NATS.
    let ts_https = free_port();
    let ts_grpc = free_port();
    let token_service = Proc::start(
        "token-service",
        &bin_dir.join("token-service"),
        [
            "--listen-https",
            &format!("127.0.0.1:{ts_https}"),
            "--listen-grpc",
            &format!("127.0.0.1:{ts_grpc}"),
            "--data-dir",
            &work.path().join("token-service").display().to_string(),
            "--signing-alg",
            "ES256",
            "--admin-client-id",
            ADMIN_ID,
            "--admin-client-secret",
            ADMIN_SECRET,
            "--nats-url",
            &nats.url(),
        ]
        .map(String::from)
        .to_vec(),
        "token-service ready on",
        &logs,
    );
    let control_port = free_port();
    let mut control = Proc::start(
        "control",
        &bin_dir.join("control"),
        [
            "--listen",
            &format!("127.0.0.1:{control_port}"),
            "--data-dir",
            &work.path().join("control").display().to_string(),
            "--token-service-url",
            &format!("http://127.0.0.1:{ts_grpc}"),
            "--nats-url",
            &nats.url(),
        ]
        .map(String::from)
        .to_vec(),
        "control ready on",
        &logs,
    );

    // The backends.
    let (client_url, order_url) = seed_backends().await;

    // The seed's flow, through the admin API.
    let http = HttpClient::default();
    let token_url = format!("https://127.0.0.1:{ts_https}");
    let admin_token = access_token(&http, &token_url, ADMIN_ID, ADMIN_SECRET).await;
    let channel = Channel::from_shared(format!("http://127.0.0.1:{control_port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut admin = ControlPlaneClient::with_interceptor(channel, Bearer(admin_token.clone()));
    let client_api = create_and_publish(
        &mut admin,
        seed_api(
            "ClientServiceAPI",
            "/client",
            &["/users", "/users/{id}"],
            &client_url,
        ),
    )
    .await;
    let order_api = create_and_publish(
        &mut admin,
        seed_api(
            "OrderServiceAPI",
            "/orders",
            &["/orders", "/items"],
            &order_url,
        ),
    )
    .await;
    let app = admin
        .create_application(CreateApplicationRequest {
            name: "MyPythonApp".into(),
            owner: ADMIN_ID.into(),
            throttling_tier: "Unlimited".into(),
            description: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    for api_id in [&client_api, &order_api] {
        admin
            .subscribe(SubscribeRequest {
                application_id: app.id.clone(),
                api_id: api_id.clone(),
                tier: "Gold".into(),
            })
            .await
            .unwrap();
    }
    let keys = admin
        .generate_keys(GenerateKeysRequest {
            application_id: app.id.clone(),
            key_type: KeyType::Production as i32,
            grant_types: vec![],
            token_lifetime_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let token = access_token(&http, &token_url, &keys.consumer_key, &keys.consumer_secret).await;

    // Three replicas.
    let data = work.path().join("gateways");
    let mut gateways: Vec<Gateway> = (1..=3)
        .map(|i| {
            gateway_proc(
                &gateway_bin,
                &format!("gw-{i}"),
                &nats.url(),
                control_port,
                &data,
                &logs,
            )
        })
        .collect();
    let bases = |gws: &[Gateway]| gws.iter().map(|g| g.https.clone()).collect::<Vec<_>>();
    let all = bases(&gateways);
    converge(&http, &all, "/client/1.0.0/users", &token, StatusCode::OK).await;
    for base in &all {
        let users = http
            .get(&format!("{base}/client/1.0.0/users"), Some(&token))
            .await;
        assert_eq!(users.status, StatusCode::OK);
        assert_eq!(users.header("x-backend"), Some("client-service"));
        assert!(
            users.json().as_array().is_some_and(|a| !a.is_empty()),
            "{users:?}"
        );
        let items = http
            .get(&format!("{base}/orders/1.0.0/items"), Some(&token))
            .await;
        assert_eq!(items.status, StatusCode::OK, "{items:?}");
        assert_eq!(items.header("x-backend"), Some("order-service"));
    }

    // control sees every replica, at its own sequence, all with one configuration.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
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
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replicas not caught up in ListGateways: {listing:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Config propagation: each kind of change reaches every replica.
    let t = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    lifecycle(&mut admin, &order_api, Lifecycle::Blocked).await;
    println!(
        "block: {}",
        t(converge(
            &http,
            &all,
            "/orders/1.0.0/items",
            &token,
            StatusCode::SERVICE_UNAVAILABLE
        )
        .await)
    );
    lifecycle(&mut admin, &order_api, Lifecycle::Published).await;
    println!(
        "publish: {}",
        t(converge(&http, &all, "/orders/1.0.0/items", &token, StatusCode::OK).await)
    );
    let (echo, _) = echo_backend("echo").await;
    let extra_api =
        create_and_publish(&mut admin, seed_api("ExtraAPI", "/extra", &["/x"], &echo)).await;
    converge(&http, &all, "/extra/1.0.0/x", &token, StatusCode::FORBIDDEN).await;
    admin
        .subscribe(SubscribeRequest {
            application_id: app.id.clone(),
            api_id: extra_api.clone(),
            tier: "Unlimited".into(),
        })
        .await
        .unwrap();
    println!(
        "new subscription: {}",
        t(converge(&http, &all, "/extra/1.0.0/x", &token, StatusCode::OK).await)
    );
    lifecycle(&mut admin, &extra_api, Lifecycle::Deprecated).await;
    lifecycle(&mut admin, &extra_api, Lifecycle::Retired).await;
    println!(
        "retire: {}",
        t(converge(&http, &all, "/extra/1.0.0/x", &token, StatusCode::NOT_FOUND).await)
    );
    let doomed = access_token(&http, &token_url, &keys.consumer_key, &keys.consumer_secret).await;
    converge(&http, &all, "/client/1.0.0/users", &doomed, StatusCode::OK).await;
    let revoked = oauth(
        &http,
        &token_url,
        "revoke",
        &keys.consumer_key,
        &keys.consumer_secret,
        &format!("token={doomed}"),
    )
    .await;
    assert_eq!(revoked.status, StatusCode::OK, "{revoked:?}");
    println!(
        "token revocation: {}",
        t(converge(
            &http,
            &all,
            "/client/1.0.0/users",
            &doomed,
            StatusCode::UNAUTHORIZED
        )
        .await)
    );

    // A replica killed and restarted catches up.
    gateways[0].proc.kill();
    lifecycle(&mut admin, &order_api, Lifecycle::Blocked).await;
    converge(
        &http,
        &all[1..],
        "/orders/1.0.0/items",
        &token,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    gateways[0].proc.spawn();
    converge(
        &http,
        &all[..1],
        "/orders/1.0.0/items",
        &token,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    lifecycle(&mut admin, &order_api, Lifecycle::Published).await;
    converge(&http, &all, "/orders/1.0.0/items", &token, StatusCode::OK).await;

    // control and NATS down: a replica started now comes up from its disk snapshot (the
    // one gw-1 saved), serves, and says it is stale.
    // Give gw-1's disk writer (at most one save per second) time to save the last change.
    let gw1 = gateways.remove(0);
    converge(
        &http,
        std::slice::from_ref(&gw1.https),
        "/orders/1.0.0/items",
        &token,
        StatusCode::OK,
    )
    .await;
    wait_for_saved_sequence(&data.join("gw-1"), &gw1).await;
    drop(gw1); // killed
    control.kill();
    nats.stop();
    let stale = gateway_proc(
        &gateway_bin,
        "gw-1",
        &nats.url(),
        control_port,
        &data,
        &logs,
    );
    converge(
        &http,
        std::slice::from_ref(&stale.https),
        "/client/1.0.0/users",
        &token,
        StatusCode::OK,
    )
    .await;
    converge(
        &http,
        std::slice::from_ref(&stale.https),
        "/orders/1.0.0/items",
        &token,
        StatusCode::OK,
    )
    .await;
    let ready = http
        .get(
            &format!("http://127.0.0.1:{}/readyz", stale.http_port),
            None,
        )
        .await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{ready:?}");
    assert_eq!(ready.json()["stale"], true, "{ready:?}");

    // NATS and control back: every replica follows again (the running ones without a
    // restart) and applies the next change.
    nats.restart();
    control.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = http
            .get(
                &format!("http://127.0.0.1:{}/readyz", stale.http_port),
                None,
            )
            .await;
        if ready.status == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stale replica never followed again: {ready:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gateways.push(stale);
    let all = bases(&gateways);
    let channel = Channel::from_shared(format!("http://127.0.0.1:{control_port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut admin = ControlPlaneClient::with_interceptor(channel, Bearer(admin_token));
    lifecycle(&mut admin, &client_api, Lifecycle::Blocked).await;
    println!(
        "block after NATS restart: {}",
        t(converge(
            &http,
            &all,
            "/client/1.0.0/users",
            &token,
            StatusCode::SERVICE_UNAVAILABLE
        )
        .await)
    );
    drop(token_service);
}

/// Waits until the replica's disk snapshot covers what the replica serves.
async fn wait_for_saved_sequence(dir: &Path, gw: &Gateway) {
    let http = HttpClient::default();
    let ready = http
        .get(&format!("http://127.0.0.1:{}/readyz", gw.http_port), None)
        .await;
    let applied = ready.json()["applied_sequence"].as_u64().unwrap();
    let disk = gatehouse_gateway::disk::DiskSnapshot::new(dir);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(s)) = disk.load()
            && s.sequence >= applied
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no disk snapshot at sequence {applied}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A replica without NATS follows control's `GatewaySync.WatchEvents` stream, and picks
/// it up again from the next sequence when control restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_without_nats_follows_controls_event_stream() {
    let bin_dir = build_binaries();
    let work = tempfile::tempdir().unwrap();
    let logs = work.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let nats = NatsServer::start();
    let control_port = free_port();
    let mut control = Proc::start(
        "control",
        &bin_dir.join("control"),
        [
            "--listen",
            &format!("127.0.0.1:{control_port}"),
            "--data-dir",
            &work.path().join("control").display().to_string(),
            "--token-service-url",
            &format!("http://127.0.0.1:{}", free_port()),
            "--nats-url",
            &nats.url(),
        ]
        .map(String::from)
        .to_vec(),
        "control ready on",
        &logs,
    );
    // The admin side writes to the same stream directly (control's admin API needs
    // token-service; this test is about the gateway's sync path).
    let log: std::sync::Arc<dyn gatehouse_eventlog::EventLog> = std::sync::Arc::new(
        gatehouse_eventlog::NatsLog::connect(gatehouse_eventlog::NatsLogConfig::new(nats.url()))
            .await
            .unwrap(),
    );
    let world = World::on(log, None).await;
    let (echo, _) = echo_backend("echo").await;
    world
        .publish_api(
            "api",
            api("A", "/a", "1.0.0", resources(&[("GET", "/x")]), &[echo]),
        )
        .await;
    world.application("app", "").await;
    world.subscribe("sub", "app", "api", "Unlimited").await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.control_url = format!("http://127.0.0.1:{control_port}");
    assert!(config.log.nats_url.is_none());
    let gw = gatehouse_gateway::start(config, None).await.unwrap();
    wait_for_sequence(&gw, world.sequence()).await;
    let http = HttpClient::default();
    let base = vec![format!("http://{}", gw.http_addr)];
    let token = world.token("app", false, "");
    converge(&http, &base, "/a/1.0.0/x", &token, StatusCode::OK).await;
    world.lifecycle("api", Lifecycle::Blocked).await;
    converge(
        &http,
        &base,
        "/a/1.0.0/x",
        &token,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;

    control.restart();
    world.lifecycle("api", Lifecycle::Published).await;
    converge(&http, &base, "/a/1.0.0/x", &token, StatusCode::OK).await;
    wait_for_sequence(&gw, world.sequence()).await;
    assert_eq!(
        gw.gateway
            .metrics
            .resyncs
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "a broken stream is followed again, not resynced"
    );
    gw.shutdown().await;
}

//! Chaos on the distributed deployment, with real processes: a NATS cluster of three
//! (JetStream, stream replicas 3) on loopback, control and token-service on it, two
//! gateway replicas — `gw-direct` on the cluster's seed list, `gw-proxied` through one
//! [`TcpProxy`] per NATS node, so the test can cut it off — and admin writers.
//!
//! Each test breaks one thing while three admin writers create applications and a probe
//! calls both gateways, then heals it, and asserts:
//!
//! - **no acknowledged write lost**: every application whose `CreateApplication`
//!   answered OK is listed by control after the heal;
//! - **writes resume**: more writes are acknowledged after the failure;
//! - **every replica's config hash equals control's** after the heal (`ListGateways`);
//! - the gateways **kept serving** throughout (every probe call answered 200), where the
//!   failure is not the gateway's own;
//! - where the failure is one NATS node (any, the stream leader included), **no admin
//!   call failed**: a write in flight on the lost node is published again with the same
//!   message id and stored once.
//!
//! Times are printed (the longest pause between two acknowledged writes), never
//! asserted: `examples/chaos.rs` measures them against their targets.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gatehouse_proto::admin::{
    ChangeLifecycleRequest, CreateApiRequest, GetApiRequest, ListApplicationsRequest,
    ListGatewaysRequest, ListGatewaysResponse, UpdateApiRequest,
};
use gatehouse_proto::events::lifecycle::State as Lifecycle;
use gatehouse_testkit::backend::echo_backend;
use gatehouse_testkit::chaos::longest_pause_after;
use gatehouse_testkit::grpc::{AdminClient, admin_client};
use gatehouse_testkit::nats::NatsCluster;
use gatehouse_testkit::poll::Poll;
use gatehouse_testkit::ports::is_listening;
use gatehouse_testkit::proxy::TcpProxy;
use gatehouse_testkit::tls::HttpClient;
use gatehouse_testkit::world::{api, resources};
use http::StatusCode;
use support::{
    ADMIN_ID, ADMIN_SECRET, ControlPlane, Gateway, admin_application, subscribed_application,
};

/// How long anything may take to come back on a loaded machine.
const HEAL: Duration = Duration::from_secs(60);

/// The deployment under test.
struct Stack {
    work: tempfile::TempDir,
    cluster: NatsCluster,
    /// One per NATS node, in front of it, for `gw-proxied`.
    proxies: Vec<TcpProxy>,
    plane: ControlPlane,
    admin: AdminClient,
    admin_token: String,
    http: HttpClient,
    /// An application's token for the API the gateways serve.
    token: String,
    api_id: String,
    gateways: Vec<Gateway>,
}

/// The environment of control and token-service: the stream with three replicas.
const REPLICAS: [(&str, &str); 1] = [("GATEHOUSE_NATS_REPLICAS", "3")];

impl Stack {
    async fn start() -> Stack {
        let work = tempfile::tempdir().unwrap();
        println!("process logs in {}", work.path().display());
        let cluster = NatsCluster::start(3);
        let proxies: Vec<TcpProxy> = (0..cluster.len())
            .map(|i| TcpProxy::start(([127, 0, 0, 1], cluster.node(i).port()).into()))
            .collect();
        let plane = ControlPlane::start(
            work.path(),
            &cluster.urls(),
            &REPLICAS,
            &[REPLICAS[0], ("GATEHOUSE_SIGNING_ALG", "ES256")],
        );
        let http = HttpClient::default();
        let admin_token = token(&http, &plane, ADMIN_ID, ADMIN_SECRET).await;
        let mut admin = admin_client(&plane.admin_target(), &admin_token).await;
        let (echo, _) = echo_backend("echo").await;
        let api_id = admin
            .create_api(CreateApiRequest {
                definition: Some(api(
                    "Echo",
                    "/echo",
                    "1.0.0",
                    resources(&[("GET", "/hello")]),
                    &[echo],
                )),
            })
            .await
            .unwrap()
            .into_inner()
            .id;
        admin
            .change_lifecycle(ChangeLifecycleRequest {
                api_id: api_id.clone(),
                target: Lifecycle::Published as i32,
                expected_version: 0,
            })
            .await
            .unwrap();
        let (_, keys) = subscribed_application(&mut admin, "Prober", &[&api_id], "Unlimited").await;
        let app_token = token(&http, &plane, &keys.consumer_key, &keys.consumer_secret).await;
        let proxied: Vec<String> = proxies
            .iter()
            .map(|p| format!("nats://{}", p.addr()))
            .collect();
        let gateways = vec![
            replica(work.path(), &plane, "gw-direct", &cluster.urls()),
            replica(work.path(), &plane, "gw-proxied", &proxied.join(",")),
        ];
        let stack = Stack {
            work,
            cluster,
            proxies,
            plane,
            admin,
            admin_token,
            http,
            token: app_token,
            api_id,
            gateways,
        };
        let bases: Vec<String> = stack.gateways.iter().map(Gateway::https).collect();
        stack
            .http
            .converge(
                &bases,
                "/echo/1.0.0/hello",
                Some(&stack.token),
                StatusCode::OK,
            )
            .await;
        stack.assert_converged().await;
        stack
    }

    /// Waits until every replica is in sync with control, on control's config hash.
    async fn assert_converged(&self) {
        Poll::new("every replica in sync with control's configuration")
            .timeout(HEAL)
            .every(Duration::from_millis(200))
            .until_async(|| {
                let listing = gateways(&self.admin);
                async move {
                    let listing = listing.await?;
                    let mut ids = Vec::new();
                    for g in &listing.gateways {
                        let status = g.status.as_ref().unwrap();
                        if !g.in_sync || status.config_hash != listing.control_config_hash {
                            return Err(format!(
                                "{} at {} ({}), control at {} ({})",
                                status.gateway_id,
                                status.applied_sequence,
                                status.config_hash,
                                listing.control_sequence,
                                listing.control_config_hash
                            ));
                        }
                        ids.push(status.gateway_id.clone());
                    }
                    ids.sort();
                    if ids != ["gw-direct", "gw-proxied"] {
                        return Err(format!("listed: {ids:?}"));
                    }
                    Ok(())
                }
            })
            .await
    }

    /// Asserts that every acknowledged application is listed by control.
    async fn assert_listed(&self, acked: &[String]) {
        let listing = self
            .admin
            .clone()
            .list_applications(ListApplicationsRequest::default())
            .await
            .unwrap()
            .into_inner();
        let listed: std::collections::HashSet<&str> =
            listing.applications.iter().map(|a| a.id.as_str()).collect();
        for id in acked {
            assert!(
                listed.contains(id.as_str()),
                "acknowledged application {id} lost"
            );
        }
    }
}

/// control's `ListGateways`.
fn gateways(
    admin: &AdminClient,
) -> impl std::future::Future<Output = Result<ListGatewaysResponse, String>> + use<> {
    let mut admin = admin.clone();
    async move {
        admin
            .list_gateways(ListGatewaysRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|e| e.to_string())
    }
}

async fn token(http: &HttpClient, plane: &ControlPlane, id: &str, secret: &str) -> String {
    let url = format!("https://127.0.0.1:{}/oauth2/token", plane.https);
    let reply = http
        .post_form(&url, Some((id, secret)), "grant_type=client_credentials")
        .await;
    assert_eq!(reply.status, StatusCode::OK, "token endpoint: {reply:?}");
    reply.json()["access_token"].as_str().unwrap().to_string()
}

fn replica(dir: &Path, plane: &ControlPlane, id: &str, nats: &str) -> Gateway {
    Gateway::start(
        &dir.join("gateways"),
        &plane.pki,
        id,
        plane.admin,
        Some(nats),
        &["--report-interval-ms", "300", "--access-log", "false"],
        &[("RUST_LOG", "info,gatehouse_gateway::access=off")],
    )
}

/// Admin writers creating applications until stopped.
struct Writers {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(Instant, String)>>>,
    failed: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(admin: &AdminClient, n: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let failed: Arc<Mutex<Vec<String>>> = Arc::default();
        let tasks = (0..n)
            .map(|w| {
                let (stop, acked, failed) = (stop.clone(), acked.clone(), failed.clone());
                let mut admin = admin.clone();
                tokio::spawn(async move {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let created = admin
                            .create_application(admin_application(format!("writer-{w}-{i}")))
                            .await;
                        match created {
                            Ok(app) => acked
                                .lock()
                                .unwrap()
                                .push((Instant::now(), app.into_inner().id)),
                            Err(status) => {
                                failed
                                    .lock()
                                    .unwrap()
                                    .push(format!("writer-{w}-{i}: {status}"));
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
            })
            .collect();
        Writers {
            stop,
            acked,
            failed,
            tasks,
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until `more` writes beyond the current count are acknowledged.
    async fn wait_for_more(&self, more: usize) {
        let target = self.acked() + more;
        Poll::new(format!("{more} more acknowledged admin writes"))
            .timeout(HEAL)
            .every(Duration::from_millis(50))
            .until_async(|| async { self.acked() >= target })
            .await
    }

    /// Stops; returns the acknowledged ids, the failures, and the longest pause between
    /// two acknowledgements after `since`.
    async fn stop(self, since: Instant) -> (Vec<String>, Vec<String>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let acked = std::mem::take(&mut *self.acked.lock().unwrap());
        let longest = longest_pause_after(acked.iter().map(|(at, _)| *at), since);
        let failed = std::mem::take(&mut *self.failed.lock().unwrap());
        (
            acked.into_iter().map(|(_, id)| id).collect(),
            failed,
            longest,
        )
    }
}

/// Calls both gateways every 50 ms until stopped; counts calls and non-200 answers.
struct Probe {
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Probe {
    fn start(stack: &Stack) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicUsize::new(0));
        let failures: Arc<Mutex<Vec<String>>> = Arc::default();
        let urls: Vec<String> = stack
            .gateways
            .iter()
            .map(|g| format!("{}/echo/1.0.0/hello", g.https()))
            .collect();
        let (http, token) = (stack.http.clone(), stack.token.clone());
        let (stop2, calls2, failures2) = (stop.clone(), calls.clone(), failures.clone());
        let task = tokio::spawn(async move {
            while !stop2.load(Ordering::Relaxed) {
                for url in &urls {
                    let reply = http.get(url, Some(&token)).await;
                    calls2.fetch_add(1, Ordering::Relaxed);
                    if reply.status != StatusCode::OK {
                        failures2
                            .lock()
                            .unwrap()
                            .push(format!("{url}: {}", reply.status));
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Probe {
            stop,
            calls,
            failures,
            task,
        }
    }

    /// Stops; asserts every call was answered 200.
    async fn assert_all_served(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let failures = self.failures.lock().unwrap();
        let calls = self.calls.load(Ordering::Relaxed);
        assert!(calls > 0);
        assert!(failures.is_empty(), "of {calls} calls: {failures:?}");
        calls
    }
}

/// Writers and the probe through `chaos`, then the heal checks; `no_failed_write`: the
/// failure must cost no admin call.
async fn through(
    stack: &mut Stack,
    what: &str,
    no_failed_write: bool,
    chaos: impl FnOnce(&mut Stack) -> String,
) {
    let writers = Writers::start(&stack.admin, 3);
    let probe = Probe::start(stack);
    writers.wait_for_more(10).await;
    let at = Instant::now();
    let what = format!("{what} ({})", chaos(stack));
    writers.wait_for_more(15).await;
    let (acked, failed, pause) = writers.stop(at).await;
    let calls = probe.assert_all_served().await;
    println!(
        "{what}: {} writes acknowledged, {} failed, longest pause {:.0} ms; {calls} gateway calls served",
        acked.len(),
        failed.len(),
        pause.as_secs_f64() * 1000.0
    );
    if no_failed_write {
        assert!(failed.is_empty(), "admin writes failed: {failed:?}");
    }
    stack.assert_listed(&acked).await;
    stack.assert_converged().await;
    println!("{what}: healed {:.1} s after", at.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_nats_node_control_uses_loses_no_write_and_costs_no_call() {
    let mut stack = Stack::start().await;
    through(&mut stack, "control's NATS node killed", true, |stack| {
        let node = stack
            .cluster
            .connected_to("gatehouse-control")
            .expect("control's connection is listed by a node");
        let leader = stack.cluster.stream_leader("GATEHOUSE") == Some(node);
        stack.cluster.kill(node);
        format!("n{}, the stream leader: {leader}", node + 1)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_stream_leader_loses_no_write_and_costs_no_call() {
    let mut stack = Stack::start().await;
    through(&mut stack, "stream leader killed", true, |stack| {
        let leader = stack
            .cluster
            .stream_leader("GATEHOUSE")
            .expect("a stream leader");
        stack.cluster.kill(leader);
        format!("n{}", leader + 1)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_and_restarting_the_whole_nats_cluster_loses_no_write() {
    let mut stack = Stack::start().await;
    through(&mut stack, "whole cluster restarted", false, |stack| {
        stack.cluster.restart_all();
        "all three killed, then started".into()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_control_mid_burst_loses_no_acknowledged_write() {
    let mut stack = Stack::start().await;
    through(&mut stack, "control killed and restarted", false, |stack| {
        stack.plane.control.kill();
        stack.plane.control.restart();
        "kill -9, then started again".into()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controls_updating_one_api_lose_no_update() {
    let stack = Stack::start().await;
    let (mut second, port) = stack.plane.another_control(
        stack.work.path(),
        "control-2",
        &stack.cluster.urls(),
        &REPLICAS,
    );
    let _second = &mut second;
    let target = stack.plane.pki.target(format!("127.0.0.1:{port}"));
    let clients = [
        stack.admin.clone(),
        admin_client(&target, &stack.admin_token).await,
    ];
    let start_version = get_version(&mut clients[0].clone(), &stack.api_id).await;
    // Each control updates the API 10 times, read-modify-write on its version; a stale
    // one is refused (ABORTED) and tries again on a fresh read.
    let updates = clients.into_iter().enumerate().map(|(c, mut admin)| {
        let api_id = stack.api_id.clone();
        tokio::spawn(async move {
            let (mut won, mut refused) = (0u64, 0u64);
            while won < 10 {
                let api = admin
                    .get_api(GetApiRequest {
                        api_id: api_id.clone(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let mut definition = api.definition.unwrap();
                definition.description = format!("control {c}, update {won}");
                match admin
                    .update_api(UpdateApiRequest {
                        api_id: api_id.clone(),
                        definition: Some(definition),
                        expected_version: api.aggregate_version,
                    })
                    .await
                {
                    Ok(_) => won += 1,
                    Err(status) if status.code() == tonic::Code::Aborted => refused += 1,
                    Err(status) => panic!("control {c}: {status}"),
                }
            }
            (won, refused)
        })
    });
    let mut won = 0;
    let mut refused = 0;
    for update in updates.collect::<Vec<_>>() {
        let (w, r) = update.await.unwrap();
        won += w;
        refused += r;
    }
    println!(
        "two controls: {won} updates won, {refused} refused as stale, from version {start_version}"
    );
    // Every acknowledged update is one version: none overwrote another silently.
    let end_version = Poll::new("control to fold every update")
        .timeout(HEAL)
        .until_async(|| {
            let mut admin = stack.admin.clone();
            let api_id = stack.api_id.clone();
            async move {
                let version = get_version(&mut admin, &api_id).await;
                if version >= start_version + won {
                    Ok(version)
                } else {
                    Err(version.to_string())
                }
            }
        })
        .await;
    assert_eq!(end_version, start_version + won);
    stack.assert_converged().await;
}

async fn get_version(admin: &mut AdminClient, api_id: &str) -> u64 {
    admin
        .get_api(GetApiRequest {
            api_id: api_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .aggregate_version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_cut_off_from_nats_keeps_serving_and_converges_after_heal() {
    let stack = Stack::start().await;
    let writers = Writers::start(&stack.admin, 1);
    let probe = Probe::start(&stack);
    for proxy in &stack.proxies {
        proxy.cut();
    }
    writers.wait_for_more(5).await;
    // While cut, control lists the proxied replica out of sync, the other in sync.
    Poll::new("ListGateways to show gw-proxied out of sync and gw-direct in sync")
        .timeout(HEAL)
        .every(Duration::from_millis(200))
        .until_async(|| {
            let listing = gateways(&stack.admin);
            async move {
                let listing = listing.await?;
                let in_sync = |id: &str| {
                    listing
                        .gateways
                        .iter()
                        .find(|g| g.status.as_ref().unwrap().gateway_id == id)
                        .map(|g| g.in_sync)
                };
                match (in_sync("gw-direct"), in_sync("gw-proxied")) {
                    (Some(true), Some(false)) => Ok(()),
                    other => Err(format!("(direct, proxied) in sync: {other:?}")),
                }
            }
        })
        .await;
    let cut_at = Instant::now();
    writers.wait_for_more(5).await;
    for proxy in &stack.proxies {
        proxy.heal();
    }
    let (acked, failed, _) = writers.stop(cut_at).await;
    let calls = probe.assert_all_served().await;
    println!(
        "gateway cut off: {} writes, {} failed; {calls} gateway calls served",
        acked.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "admin writes failed: {failed:?}");
    stack.assert_listed(&acked).await;
    stack.assert_converged().await;
    // The throttle exchange of the replica cut off fell back, and is shared again.
    let metrics = format!("{}/metrics", stack.gateways[1].http());
    let http = stack.http.clone();
    Poll::new("gw-proxied's throttle exchange live again")
        .timeout(HEAL)
        .until_async(|| async {
            let text = String::from_utf8_lossy(&http.get(&metrics, None).await.body).into_owned();
            text.lines()
                .any(|l| l == "gatehouse_gateway_throttle_shared 1")
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_token_service_stops_only_new_tokens() {
    let mut stack = Stack::start().await;
    through(&mut stack, "token-service killed", true, |stack| {
        stack.plane.token_service.kill();
        "kill -9; admin tokens and app tokens already issued keep working".into()
    })
    .await;
    // No new token while it is down; back after a restart, nothing lost.
    let https = stack.plane.https;
    assert!(!is_listening(https), "the token endpoint is down");
    stack.plane.token_service.restart();
    stack
        .plane
        .token_service
        .wait_until("listening again", || is_listening(https));
    token(&stack.http, &stack.plane, ADMIN_ID, ADMIN_SECRET).await;
    stack.assert_converged().await;
}

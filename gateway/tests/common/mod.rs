//! What the gateway's integration tests share: a gateway started in-process on a
//! world's log, and waiting for it to serve a sequence. The admin side (`World`), the
//! backends and the HTTP(S) client that trusts the gateway's self-signed certificate are
//! the test kit's, re-exported here under the names the tests use.
#![allow(dead_code, unused_imports)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use gatehouse_gateway::{GatewayConfig, RunningGateway};
use gatehouse_node::pki::NodeRole;
use gatehouse_testkit::pki::TestPki;
use gatehouse_testkit::poll::Poll;

pub use gatehouse_testkit::backend::{echo_backend, seed_backends, serve};
/// How long a test waits for something that must happen (a replica catching up).
pub use gatehouse_testkit::poll::TIMEOUT as CONVERGE;
pub use gatehouse_testkit::ports::dead_url;
pub use gatehouse_testkit::tls::{HttpClient, Reply};
pub use gatehouse_testkit::world::{World, api, claims, group, now, resources};

/// A gateway in this process on the world's log, on free ports, with control
/// unreachable (it bootstraps by replaying the log).
pub async fn gateway(
    world: &World,
    dir: &std::path::Path,
    tweak: impl FnOnce(&mut GatewayConfig),
) -> RunningGateway {
    let mut config = test_config(dir);
    tweak(&mut config);
    let gw = gatehouse_gateway::start(config, Some(world.log.clone()))
        .await
        .unwrap();
    wait_for_sequence(&gw, world.sequence()).await;
    gw
}

/// The client API (`/client/1.0.0`, `GET /users`) on `backend`, as most suites
/// publish it before tuning one field.
pub fn client_api(backend: String) -> gatehouse_proto::events::ApiDefinition {
    api(
        "Client",
        "/client",
        "1.0.0",
        resources(&[("GET", "/users")]),
        &[backend],
    )
}

/// A configuration on free ports, control unreachable, no access log, replica
/// `test-gw`.
pub fn test_config(dir: &std::path::Path) -> GatewayConfig {
    let mut config = GatewayConfig::defaults();
    config.https_listen = "127.0.0.1:0".parse().unwrap();
    config.http_listen = "127.0.0.1:0".parse().unwrap();
    config.control_url = dead_url().replace("http://", "https://");
    config.data_dir = dir.to_path_buf();
    config.access_log = false;
    config.report_interval_ms = 200;
    replica(&mut config, "test-gw");
    config
}

/// Makes `config` replica `id`: the node certificate that names it, from a test CA in
/// its data directory.
pub fn replica(config: &mut GatewayConfig, id: &str) {
    config.node.cluster = TestPki::in_dir(&config.data_dir.join("pki")).node(NodeRole::Gateway, id);
    config.gateway_id = Some(id.into());
}

/// Waits until the gateway serves a table covering `sequence`.
pub async fn wait_for_sequence(gw: &RunningGateway, sequence: u64) {
    Poll::new(format!("gateway {} to serve sequence {sequence}", gw.id))
        .timeout(CONVERGE)
        .every(Duration::from_millis(10))
        .until_async(|| async {
            let applied = gw.gateway.table.load().sequence;
            if applied >= sequence && gw.gateway.sync.has_config.load(Ordering::Acquire) {
                Ok(())
            } else {
                Err(format!("stuck at sequence {applied}"))
            }
        })
        .await
}

/// The plain-HTTP base URLs (`http://<addr>`) of in-process replicas, for
/// [`HttpClient::converge`].
pub fn bases<'a>(replicas: impl IntoIterator<Item = &'a RunningGateway>) -> Vec<String> {
    replicas
        .into_iter()
        .map(|r| format!("http://{}", r.http_addr))
        .collect()
}

/// Three replicas in this process following the NATS log at `nats_url` themselves (seed
/// lists welcome), each with its own data directory, caught up with `world`.
pub async fn nats_replicas(
    world: &World,
    nats_url: &str,
) -> (Vec<RunningGateway>, Vec<tempfile::TempDir>) {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut replicas = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let mut config = test_config(dir.path());
        replica(&mut config, &format!("gw-{i}"));
        config.node.log.nats_url = Some(nats_url.to_string());
        let gw = gatehouse_gateway::start(config, None).await.unwrap();
        wait_for_sequence(&gw, world.sequence()).await;
        replicas.push(gw);
    }
    (replicas, dirs)
}

/// Config propagation (benchmarks): `changes` changes, each blocking or re-publishing
/// [`World::one_subscribed_api`]'s API, each timed from the write's return until every
/// replica at `bases` answers accordingly over HTTP (polled back to back: what a client
/// would see). Sorted.
pub async fn propagation_times(world: &World, bases: &[String], changes: usize) -> Vec<Duration> {
    use gatehouse_proto::events::lifecycle::State as Lifecycle;
    use http::StatusCode;
    let http = HttpClient::default();
    let token = world.token("app", false, "");
    let mut times = Vec::with_capacity(changes);
    for i in 0..changes {
        let (target, expected) = if i % 2 == 0 {
            (Lifecycle::Blocked, StatusCode::SERVICE_UNAVAILABLE)
        } else {
            (Lifecycle::Published, StatusCode::OK)
        };
        world.lifecycle("api", target).await;
        let took = http
            .converge_every(Duration::ZERO, bases, "/a/1.0.0/x", Some(&token), expected)
            .await;
        times.push(took);
    }
    times.sort();
    times
}

/// The `q` quantile of sorted `times`, in milliseconds.
pub fn quantile_ms(times: &[Duration], q: f64) -> f64 {
    let i = ((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1;
    times[i].as_secs_f64() * 1000.0
}

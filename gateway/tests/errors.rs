//! The gateway over real connections, running in-process on an embedded log (the admin
//! side is a command executor on the same log; control is not involved): what needs a
//! socket (backends unreachable or slow, failover and load balancing, headers and
//! bodies forwarded, the response cache over real calls, HTTP/2 by ALPN, health and
//! metrics, draining at shutdown) and one end-to-end case per family of refusals
//! (routing, API state, CORS, credentials, subscription, throttling), so the whole
//! HTTP path of each stays covered.
//!
//! Every refusal, phase by phase, is in `tests/phases.rs`, in-process, without a
//! socket.

mod common;

use std::time::Duration;

use common::*;
use gatehouse_proto::events::{
    Endpoints, Resource, endpoint_group::Mode, lifecycle::State as Lifecycle,
    throttle_policy::Level,
};
use http::{Method, StatusCode};

/// A world with `/client/1.0.0` (GET /users, GET /users/{id}, GET /admin with scope
/// `admin:read`, production endpoint the echo backend) subscribed by `app1`, and `app2`
/// with keys but no subscription.
struct Fixture {
    world: World,
    gw: gatehouse_gateway::RunningGateway,
    http: HttpClient,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn new(tweak: impl FnOnce(&mut gatehouse_proto::events::ApiDefinition)) -> Fixture {
        let world = World::new().await;
        let (echo, _) = echo_backend("echo").await;
        let mut definition = api(
            "Client",
            "/client",
            "1.0.0",
            resources(&[("GET", "/users"), ("GET", "/users/{id}")]),
            &[echo],
        );
        definition.resources.push(Resource {
            method: "GET".into(),
            path: "/admin".into(),
            scopes: vec!["admin:read".into()],
            ..Default::default()
        });
        tweak(&mut definition);
        world.publish_api("client-api", definition).await;
        world.application("app1", "").await;
        world.application("app2", "").await;
        world
            .subscribe("sub1", "app1", "client-api", "Unlimited")
            .await;
        let dir = tempfile::tempdir().unwrap();
        let gw = gateway(&world, dir.path(), |_| {}).await;
        Fixture {
            world,
            gw,
            http: HttpClient::default(),
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.gw.https_addr)
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.http.get(&self.url(path), token).await
    }

    async fn sync(&self) {
        wait_for_sequence(&self.gw, self.world.sequence()).await;
    }
}

fn assert_error(reply: &Reply, status: StatusCode, code: u64) {
    assert_eq!(reply.status, status, "{reply:?}");
    assert_eq!(reply.code(), code, "{reply:?}");
    let body = reply.json();
    assert!(
        body["message"].is_string() && body["description"].is_string(),
        "{body}"
    );
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("application/json"),
        "{reply:?}"
    );
}

#[tokio::test]
async fn a_valid_call_reaches_the_backend() {
    let f = Fixture::new(|_| {}).await;
    let reply = f
        .get(
            "/client/1.0.0/users/7?x=1",
            Some(&f.world.token("app1", false, "default")),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.header("x-backend"), Some("echo"));
    assert_eq!(reply.json()["uri"], "/users/7?x=1");
}

#[tokio::test]
async fn missing_credentials_is_401_900902() {
    let f = Fixture::new(|_| {}).await;
    let reply = f.get("/client/1.0.0/users", None).await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, 900902);
    assert_eq!(reply.json()["message"], "Missing Credentials");
    let basic = f
        .http
        .call(
            Method::GET,
            &f.url("/client/1.0.0/users"),
            None,
            &[("authorization", "Basic dXNlcjpwdw==")],
        )
        .await;
    assert_error(&basic, StatusCode::UNAUTHORIZED, 900902);
}

#[tokio::test]
async fn not_subscribed_is_403_900908() {
    let f = Fixture::new(|_| {}).await;
    let reply = f
        .get(
            "/client/1.0.0/users",
            Some(&f.world.token("app2", false, "default")),
        )
        .await;
    assert_error(&reply, StatusCode::FORBIDDEN, 900908);
}

#[tokio::test]
async fn subscription_tier_throttles_with_429_900804_and_rate_limit_headers() {
    let world_tier = "TwoPerMinute";
    let world = World::new().await;
    let (echo, _) = echo_backend("echo").await;
    world.policy(world_tier, Level::Subscription, 2, 60).await;
    let mut definition = client_api(echo);
    definition.subscription_tiers = vec![world_tier.into()];
    world.publish_api("client-api", definition).await;
    world.application("app1", "").await;
    world
        .subscribe("sub1", "app1", "client-api", world_tier)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&world, dir.path(), |_| {}).await;
    let http = HttpClient::default();
    let url = format!("https://{}/client/1.0.0/users", gw.https_addr);
    let token = world.token("app1", false, "default");
    let first = http.get(&url, Some(&token)).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(first.header("x-ratelimit-remaining"), Some("1"));
    assert!(
        first
            .header("x-ratelimit-reset")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            <= 60
    );
    assert_eq!(http.get(&url, Some(&token)).await.status, StatusCode::OK);
    let third = http.get(&url, Some(&token)).await;
    assert_error(&third, StatusCode::TOO_MANY_REQUESTS, 900804);
    assert_eq!(third.json()["message"], "Message throttled out");
    let retry_after: u64 = third.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after));
    assert_eq!(third.header("x-ratelimit-remaining"), Some("0"));
}

#[tokio::test]
async fn unreachable_backend_is_503_101503() {
    let world = World::new().await;
    world
        .publish_api(
            "dead",
            api(
                "Dead",
                "/dead",
                "1.0.0",
                resources(&[("GET", "/x")]),
                &[dead_url(), dead_url()],
            ),
        )
        .await;
    world.application("app1", "").await;
    world.subscribe("sub1", "app1", "dead", "Unlimited").await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&world, dir.path(), |_| {}).await;
    let reply = HttpClient::default()
        .get(
            &format!("https://{}/dead/1.0.0/x", gw.https_addr),
            Some(&world.token("app1", false, "")),
        )
        .await;
    assert_error(&reply, StatusCode::SERVICE_UNAVAILABLE, 101503);
}

#[tokio::test]
async fn slow_backend_is_504_101504() {
    let world = World::new().await;
    let (echo, _) = echo_backend("slow").await;
    let mut definition = api(
        "Slow",
        "/slow",
        "1.0.0",
        resources(&[("GET", "/x")]),
        &[echo],
    );
    definition.endpoints.as_mut().unwrap().timeout_ms = 200;
    world.publish_api("slow", definition).await;
    world.application("app1", "").await;
    world.subscribe("sub1", "app1", "slow", "Unlimited").await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&world, dir.path(), |_| {}).await;
    let reply = HttpClient::default()
        .get(
            &format!("https://{}/slow/1.0.0/x?sleep_ms=5000", gw.https_addr),
            Some(&world.token("app1", false, "")),
        )
        .await;
    assert_error(&reply, StatusCode::GATEWAY_TIMEOUT, 101504);
}

#[tokio::test]
async fn no_matching_resource_is_404_json_and_wrong_method_405() {
    let f = Fixture::new(|_| {}).await;
    let token = f.world.token("app1", false, "default");
    for path in [
        "/nope/1.0.0/users",
        "/client/9.9.9/users",
        "/client/1.0.0/unknown",
        "/client/1.0.0/users/1/2",
    ] {
        assert_error(&f.get(path, Some(&token)).await, StatusCode::NOT_FOUND, 404);
    }
    // Dot segments are refused before routing (tests/edges.rs has every path attack).
    assert_error(
        &f.get("/client/1.0.0/users/../admin", Some(&token)).await,
        StatusCode::BAD_REQUEST,
        400,
    );
    let reply = f
        .http
        .call(
            Method::DELETE,
            &f.url("/client/1.0.0/users/1"),
            Some(&token),
            &[],
        )
        .await;
    assert_error(&reply, StatusCode::METHOD_NOT_ALLOWED, 405);
    assert_eq!(reply.header("allow"), Some("GET"));
}

#[tokio::test]
async fn a_blocked_api_is_503_700700() {
    let f = Fixture::new(|_| {}).await;
    let token = f.world.token("app1", false, "default");
    f.world.lifecycle("client-api", Lifecycle::Blocked).await;
    f.sync().await;
    let blocked = f.get("/client/1.0.0/users", Some(&token)).await;
    assert_error(&blocked, StatusCode::SERVICE_UNAVAILABLE, 700700);
}

#[tokio::test]
async fn failover_moves_past_a_dead_endpoint_and_load_balancing_spreads_calls() {
    let world = World::new().await;
    let (a, _) = echo_backend("a").await;
    let (b, _) = echo_backend("b").await;
    let mut failover = api(
        "F",
        "/failover",
        "1.0.0",
        resources(&[("GET", "/x")]),
        &[dead_url(), a.clone()],
    );
    failover.endpoints = Some(Endpoints {
        production: group(Mode::Failover, &[dead_url(), a.clone()]),
        sandbox: None,
        timeout_ms: 0,
    });
    world.publish_api("failover", failover).await;
    world
        .publish_api(
            "lb",
            api("L", "/lb", "1.0.0", resources(&[("GET", "/x")]), &[a, b]),
        )
        .await;
    world.application("app1", "").await;
    world.subscribe("s1", "app1", "failover", "Unlimited").await;
    world.subscribe("s2", "app1", "lb", "Unlimited").await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&world, dir.path(), |_| {}).await;
    let http = HttpClient::default();
    let token = world.token("app1", false, "");
    for _ in 0..3 {
        let reply = http
            .get(
                &format!("https://{}/failover/1.0.0/x", gw.https_addr),
                Some(&token),
            )
            .await;
        assert_eq!(
            (reply.status, reply.header("x-backend")),
            (StatusCode::OK, Some("a"))
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let reply = http
            .get(
                &format!("https://{}/lb/1.0.0/x", gw.https_addr),
                Some(&token),
            )
            .await;
        seen.insert(reply.header("x-backend").unwrap().to_string());
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["a", "b"]);
}

#[tokio::test]
async fn upstream_headers_are_forwarded_and_hop_by_hop_stripped() {
    let f = Fixture::new(|_| {}).await;
    let token = f.world.token("app1", false, "default");
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let reply = f
        .http
        .call(
            Method::GET,
            &f.url("/client/1.0.0/users"),
            Some(&token),
            &[
                ("traceparent", traceparent),
                ("connection", "keep-alive, x-private"),
                ("x-private", "secret"),
                ("x-forwarded-for", "10.1.2.3"),
                ("x-custom", "kept"),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = &reply.json()["headers"];
    assert_eq!(seen["traceparent"], traceparent);
    assert_eq!(seen["x-custom"], "kept");
    assert_eq!(
        seen["x-forwarded-for"], "127.0.0.1",
        "a client's own X-Forwarded-For is dropped (see tests/edges.rs for trusted proxies)"
    );
    assert_eq!(seen["x-forwarded-proto"], "https");
    assert_eq!(seen["x-forwarded-host"], f.gw.https_addr.to_string());
    assert!(
        seen.get("x-private").is_none(),
        "named by Connection: {seen}"
    );
    assert!(
        seen.get("authorization").is_none(),
        "the token stays at the gateway: {seen}"
    );
    assert_ne!(seen["host"], f.gw.https_addr.to_string());
}

#[tokio::test]
async fn request_bodies_stream_to_the_backend() {
    let world = World::new().await;
    let (echo, _) = echo_backend("echo").await;
    world
        .publish_api(
            "api",
            api(
                "A",
                "/a",
                "1.0.0",
                resources(&[("POST", "/items")]),
                &[echo],
            ),
        )
        .await;
    world.application("app1", "").await;
    world.subscribe("s1", "app1", "api", "Unlimited").await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&world, dir.path(), |_| {}).await;
    let body = "x".repeat(300_000);
    let request = http::Request::builder()
        .method(Method::POST)
        .uri(format!("http://{}/a/1.0.0/items", gw.http_addr))
        .header(
            "authorization",
            format!("Bearer {}", world.token("app1", false, "")),
        )
        .body(http_body_util::Full::new(bytes::Bytes::from(body.clone())))
        .unwrap();
    let reply = HttpClient::default().send(request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["body"].as_str().unwrap().len(), body.len());
}

#[tokio::test]
async fn cors_preflight_is_answered_by_the_gateway() {
    let f = Fixture::new(|d| {
        d.cors = Some(gatehouse_proto::events::CorsPolicy {
            enabled: true,
            allow_origins: vec!["https://app.example".into()],
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["authorization".into()],
            allow_credentials: false,
            max_age_seconds: 600,
        })
    })
    .await;
    let preflight = f
        .http
        .call(
            Method::OPTIONS,
            &f.url("/client/1.0.0/users"),
            None,
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "GET"),
            ],
        )
        .await;
    assert_eq!(preflight.status, StatusCode::OK, "{preflight:?}");
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        preflight.header("access-control-allow-methods"),
        Some("GET, POST")
    );
    assert_eq!(preflight.header("access-control-max-age"), Some("600"));
    let refused = f
        .http
        .call(
            Method::OPTIONS,
            &f.url("/client/1.0.0/users"),
            None,
            &[
                ("origin", "https://evil.example"),
                ("access-control-request-method", "GET"),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.header("access-control-allow-origin").is_none());
    let actual = f
        .http
        .call(
            Method::GET,
            &f.url("/client/1.0.0/users"),
            Some(&f.world.token("app1", false, "")),
            &[("origin", "https://app.example")],
        )
        .await;
    assert_eq!(actual.status, StatusCode::OK);
    assert_eq!(
        actual.header("access-control-allow-origin"),
        Some("https://app.example")
    );
}

#[tokio::test]
async fn the_response_cache_answers_repeated_gets_per_caller() {
    let world = World::new().await;
    let (echo, calls) = echo_backend("echo").await;
    let mut definition = api(
        "C",
        "/cached",
        "1.0.0",
        resources(&[("GET", "/x")]),
        &[echo],
    );
    definition.cache = Some(gatehouse_proto::events::ResponseCache {
        enabled: true,
        ttl_seconds: 300,
    });
    world.publish_api("cached", definition).await;
    world.application("app1", "").await;
    world.application("app2", "").await;
    world.subscribe("s1", "app1", "cached", "Unlimited").await;
    world.subscribe("s2", "app2", "cached", "Unlimited").await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&world, dir.path(), |_| {}).await;
    let http = HttpClient::default();
    let url = format!("https://{}/cached/1.0.0/x?q=1", gw.https_addr);
    let token = world.token("app1", false, "");
    let first = http.get(&url, Some(&token)).await;
    assert_eq!(
        (first.status, first.header("x-cache")),
        (StatusCode::OK, None)
    );
    let second = http.get(&url, Some(&token)).await;
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert_eq!(second.body, first.body);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Another query, another application: not the cached answer.
    http.get(
        &format!("https://{}/cached/1.0.0/x?q=2", gw.https_addr),
        Some(&token),
    )
    .await;
    let other_app = http.get(&url, Some(&world.token("app2", false, ""))).await;
    assert_eq!(other_app.header("x-cache"), None);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    // Still authenticated on a hit.
    assert_error(
        &http.get(&url, None).await,
        StatusCode::UNAUTHORIZED,
        900902,
    );
}

#[tokio::test]
async fn https_speaks_http2_by_alpn() {
    let f = Fixture::new(|_| {}).await;
    let reply = HttpClient::new(true)
        .get(
            &f.url("/client/1.0.0/users"),
            Some(&f.world.token("app1", false, "")),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.version, http::Version::HTTP_2);
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let f = Fixture::new(|_| {}).await;
    let http_base = format!("http://{}", f.gw.http_addr);
    assert_eq!(
        f.http
            .get(&format!("{http_base}/healthz"), None)
            .await
            .status,
        StatusCode::OK
    );
    let ready = f.http.get(&format!("{http_base}/readyz"), None).await;
    assert_eq!(ready.status, StatusCode::OK, "{ready:?}");
    assert_eq!(ready.json()["stale"], false);
    assert_eq!(ready.json()["applied_sequence"], f.world.sequence());
    f.get(
        "/client/1.0.0/users",
        Some(&f.world.token("app1", false, "")),
    )
    .await;
    f.get("/client/1.0.0/users", None).await;
    let metrics = String::from_utf8(
        f.http
            .get(&format!("{http_base}/metrics"), None)
            .await
            .body
            .to_vec(),
    )
    .unwrap();
    assert!(
        metrics.contains(r#"gatehouse_gateway_requests_total{api="/client/1.0.0",status="200"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"gatehouse_gateway_requests_total{api="/client/1.0.0",status="401"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("gatehouse_gateway_request_duration_seconds_count"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "gatehouse_gateway_applied_sequence {}",
            f.world.sequence()
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let world = World::new().await;
    let (echo, calls) = echo_backend("slow").await;
    world
        .publish_api(
            "slow",
            api("S", "/slow", "1.0.0", resources(&[("GET", "/x")]), &[echo]),
        )
        .await;
    world.application("app1", "").await;
    world.subscribe("s1", "app1", "slow", "Unlimited").await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&world, dir.path(), |_| {}).await;
    let url = format!("http://{}/slow/1.0.0/x?sleep_ms=1000", gw.http_addr);
    let token = world.token("app1", false, "");
    let in_flight =
        tokio::spawn(async move { HttpClient::default().get(&url, Some(&token)).await });
    // Shut down once the backend has the call, while it is still sleeping on it.
    let deadline = tokio::time::Instant::now() + CONVERGE;
    while calls.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the call never reached the backend"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!in_flight.is_finished());
    let addr = gw.http_addr;
    gw.shutdown().await;
    let reply = in_flight.await.unwrap();
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the in-flight call completed: {reply:?}"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn production_and_sandbox_keys_reach_their_own_endpoints() {
    let world = World::new().await;
    let (prod, _) = echo_backend("production-backend").await;
    let (sandbox, _) = echo_backend("sandbox-backend").await;
    let mut definition = client_api(prod);
    definition.endpoints.as_mut().unwrap().sandbox = group(Mode::LoadBalance, &[sandbox]);
    world.publish_api("client-api", definition).await;
    world.application("app1", "").await;
    world
        .subscribe("sub1", "app1", "client-api", "Unlimited")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&world, dir.path(), |_| {}).await;
    let http = HttpClient::default();
    let url = format!("https://{}/client/1.0.0/users", gw.https_addr);
    let production = http.get(&url, Some(&world.token("app1", false, ""))).await;
    assert_eq!(production.header("x-backend"), Some("production-backend"));
    let sandboxed = http.get(&url, Some(&world.token("app1", true, ""))).await;
    assert_eq!(sandboxed.header("x-backend"), Some("sandbox-backend"));
}

//! The request phases in-process: a routing table built in memory from a domain state
//! (real commands folded by `State::apply`, no log), requests as `http::request::Parts`,
//! and a `Gateway` without listeners. Every refusal the gateway makes before it calls a
//! backend is driven here, through the whole request head and the response phases as a
//! client would see it, and phase by phase. No test here opens a socket: a call the
//! head forwards gets a stand-in answer instead of a backend's. `tests/errors.rs` keeps
//! what needs one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use futures::FutureExt;
use gatehouse_domain::{Command, State};
use gatehouse_gateway::body::GatewayBody;
use gatehouse_gateway::errors::GatewayError;
use gatehouse_gateway::limits::GatewayLimits;
use gatehouse_gateway::metrics::Metrics;
use gatehouse_gateway::proxy::{
    ConnInfo, Decision, Forward, Gateway, GatewayOptions, RequestCtx, Security, Unrouted,
};
use gatehouse_gateway::table::{Route, RoutingTable};
use gatehouse_gateway::throttle::Tier;
use gatehouse_proto::events::{
    ApiDefinition, CorsPolicy, EndpointGroup, Endpoints, OAuthClient, Resource, endpoint_group,
    lifecycle::State as Lifecycle, o_auth_client, throttle_policy::Level,
};
use gatehouse_testkit::world::{claims, custom_policy, now};
use gatehouse_tokens::{AccessClaims, KeyType, SigningKeyPair, Verifier};
use http::{HeaderMap, Method, Request, Response, StatusCode, request::Parts};
use http_body_util::BodyExt;

/// Where the fixture's production endpoint points (never called).
const PRODUCTION: &str = "http://production.invalid:8000";
/// Where a sandbox endpoint points (never called).
const SANDBOX: &str = "http://sandbox.invalid:8000";
/// A URL the domain accepts and the gateway cannot use (it compiles to no endpoint).
const UNUSABLE: &str = "http://bad^host:8000";

/// A domain state, the gateway serving the routing table built from it, and the key
/// that signs its tokens.
struct Fixture {
    state: State,
    key: SigningKeyPair,
    gateway: Gateway,
}

impl Fixture {
    /// A ready gateway whose state has only a published ES256 signing key.
    fn empty() -> Fixture {
        Fixture::empty_with(GatewayLimits::default())
    }

    /// [`Fixture::empty`], with these limits.
    fn empty_with(limits: GatewayLimits) -> Fixture {
        let gateway = Gateway::new(GatewayOptions {
            gateway_id: "phases".into(),
            metrics: Arc::new(Metrics::default()),
            verifier: Verifier::new(
                gatehouse_tokens::DEFAULT_ISSUER,
                gatehouse_tokens::API_AUDIENCE,
            )
            .with_leeway(30),
            replica_count: 1,
            access_log: false,
            trace_requests: false,
            limits,
        })
        .unwrap();
        let mut fixture = Fixture {
            state: State::new(),
            key: SigningKeyPair::generate("ES256").unwrap(),
            gateway,
        };
        fixture.run(Command::PublishSigningKey {
            key: fixture.key.to_signing_key_record(),
            retire_previous_after: None,
        });
        fixture
            .gateway
            .sync
            .has_config
            .store(true, Ordering::Release);
        fixture
    }

    /// `/client/1.0.0` (GET /users, GET /users/{id}, GET /admin with scope
    /// `admin:read`, production endpoints only) subscribed by `app1`, and `app2` with
    /// keys but no subscription: `tests/errors.rs`'s world.
    fn new(tweak: impl FnOnce(&mut ApiDefinition)) -> Fixture {
        Fixture::new_with(GatewayLimits::default(), tweak)
    }

    /// [`Fixture::new`], with these limits.
    fn new_with(limits: GatewayLimits, tweak: impl FnOnce(&mut ApiDefinition)) -> Fixture {
        let mut f = Fixture::empty_with(limits);
        let mut definition = api(&[("GET", "/users"), ("GET", "/users/{id}")]);
        definition.resources.push(Resource {
            method: "GET".into(),
            path: "/admin".into(),
            scopes: vec!["admin:read".into()],
            ..Default::default()
        });
        tweak(&mut definition);
        f.publish_api("client-api", definition);
        f.application("app1", "");
        f.application("app2", "");
        f.subscribe("sub1", "app1", "client-api", "Unlimited");
        f
    }

    /// Decides `command`, folds its events and swaps the new routing table in, as the
    /// syncer would: the current table with what the events touched recompiled.
    fn run(&mut self, command: Command) {
        self.state.record_effects();
        gatehouse_testkit::domain::run(&mut self.state, command);
        let effects = self.state.take_effects();
        let table = self
            .gateway
            .table
            .load()
            .apply(&self.state, &effects, &self.gateway.metrics);
        self.gateway.table.store(Arc::new(table));
    }

    fn publish_api(&mut self, id: &str, definition: ApiDefinition) {
        self.run(Command::CreateApi {
            api_id: id.into(),
            definition,
        });
        self.lifecycle(id, Lifecycle::Published);
    }

    fn lifecycle(&mut self, id: &str, target: Lifecycle) {
        self.run(Command::ChangeLifecycle {
            api_id: id.into(),
            target,
            expected_version: None,
        });
    }

    /// An application (tier `tier`, "" for Unlimited) with production and sandbox keys
    /// (client ids `<id>-prod`, `<id>-sandbox`).
    fn application(&mut self, id: &str, tier: &str) {
        self.run(Command::CreateApplication {
            application_id: id.into(),
            name: id.into(),
            owner: "tester".into(),
            throttling_tier: if tier.is_empty() { "Unlimited" } else { tier }.into(),
            description: String::new(),
        });
        for (suffix, key_type) in [
            ("prod", o_auth_client::KeyType::Production),
            ("sandbox", o_auth_client::KeyType::Sandbox),
        ] {
            self.run(Command::RegisterClient {
                client: OAuthClient {
                    client_id: format!("{id}-{suffix}"),
                    application_id: id.into(),
                    key_type: key_type as i32,
                    secret_hash: "$argon2id$not-a-real-hash".into(),
                    ..Default::default()
                },
            });
        }
    }

    fn subscribe(&mut self, id: &str, app: &str, api: &str, tier: &str) {
        self.run(Command::Subscribe {
            subscription_id: id.into(),
            application_id: app.into(),
            api_id: api.into(),
            tier: tier.into(),
        });
    }

    fn policy(&mut self, name: &str, level: Level, count: u64, unit_seconds: u32) {
        self.run(Command::CreatePolicy(custom_policy(
            name,
            level,
            count,
            unit_seconds,
        )));
    }

    /// A token for `app`'s production (or sandbox) keys.
    fn token(&self, app: &str, sandbox: bool, scope: &str) -> String {
        self.sign(claims(app, sandbox, scope))
    }

    fn sign(&self, claims: AccessClaims) -> String {
        self.key.sign(&claims).unwrap()
    }

    fn table(&self) -> Arc<RoutingTable> {
        self.gateway.table.load_full()
    }

    /// The route of a `GET` on `path`, through phase 3.
    fn route(&self, path: &str) -> Route {
        self.gateway
            .route_match(&self.table(), &get(path, None), path)
            .unwrap()
    }

    /// What a client gets for `parts`: the request head's answer or refusal, through
    /// the response phases. A call the head forwards gets a stand-in `200` (the
    /// backend's answer in `tests/errors.rs`), and the reply says where it went.
    fn call(&self, parts: Parts) -> Reply {
        let conn = ConnInfo {
            remote: SocketAddr::from(([127, 0, 0, 1], 50_000)),
            proto: "https",
        };
        let mut ctx = RequestCtx::new(self.table(), conn, &parts);
        let (result, forwarded) = match self.gateway.request_head(&mut ctx, &parts) {
            Ok(Decision::Answer(response)) => (Ok(response), None),
            Ok(Decision::Forward(forward)) => {
                (Ok(Response::new(GatewayBody::empty())), Some(forward))
            }
            Err(error) => (Err(error), None),
        };
        let response = self.gateway.respond(&ctx, result);
        let (head, body) = response.into_parts();
        let body = body
            .collect()
            .now_or_never()
            .expect("the gateway's own answers are in memory")
            .unwrap()
            .to_bytes();
        Reply {
            status: head.status,
            headers: head.headers,
            body,
            forwarded,
        }
    }

    fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.call(get(path, token))
    }
}

/// What a client would get.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    /// Where the head forwarded the call (`None`: the gateway answered).
    forwarded: Option<Forward>,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn code(&self) -> u64 {
        self.json()["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("no code in {self:?}"))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The call went to a backend, of the endpoint group whose first URL is `url`.
    fn assert_forwarded_to(&self, url: &str) {
        assert_eq!(self.status, StatusCode::OK, "{self:?}");
        let forward = self
            .forwarded
            .as_ref()
            .unwrap_or_else(|| panic!("answered: {self:?}"));
        assert_eq!(&*forward.peer.endpoints.targets[0].url, url);
    }
}

fn group(urls: &[&str]) -> Option<EndpointGroup> {
    Some(EndpointGroup {
        mode: endpoint_group::Mode::LoadBalance as i32,
        urls: urls.iter().map(|u| u.to_string()).collect(),
    })
}

/// `Client` at `/client/1.0.0` with these `(method, template)` resources and
/// [`PRODUCTION`] endpoints.
fn api(resources: &[(&str, &str)]) -> ApiDefinition {
    ApiDefinition {
        name: "Client".into(),
        context: "/client".into(),
        version: "1.0.0".into(),
        resources: resources
            .iter()
            .map(|(method, path)| Resource {
                method: (*method).into(),
                path: (*path).into(),
                ..Default::default()
            })
            .collect(),
        endpoints: Some(Endpoints {
            production: group(&[PRODUCTION]),
            sandbox: None,
            timeout_ms: 0,
        }),
        ..Default::default()
    }
}

/// A request head, as a connection would parse it (origin-form URI and `Host`).
fn request(method: Method, path: &str, token: Option<&str>, headers: &[(&str, &str)]) -> Parts {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "gw.example:8243");
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap().into_parts().0
}

fn get(path: &str, token: Option<&str>) -> Parts {
    request(Method::GET, path, token, &[])
}

/// A refusal in WSO2's shape.
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
    assert!(reply.forwarded.is_none(), "{reply:?}");
}

fn description(reply: &Reply) -> String {
    reply.json()["description"].as_str().unwrap().to_string()
}

#[test]
fn not_ready_is_503_101503_with_retry_after() {
    let f = Fixture::new(|_| {});
    let token = f.token("app1", false, "");
    f.gateway.sync.has_config.store(false, Ordering::Release);
    assert_eq!(f.gateway.ready(), Err(GatewayError::not_ready()));
    let reply = f.get("/client/1.0.0/users", Some(&token));
    assert_error(&reply, StatusCode::SERVICE_UNAVAILABLE, 101503);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(reply.json()["message"], "Gateway not ready");
    f.gateway.sync.has_config.store(true, Ordering::Release);
    assert_eq!(f.gateway.ready(), Ok(()));
    f.get("/client/1.0.0/users", Some(&token))
        .assert_forwarded_to(PRODUCTION);
}

#[test]
fn no_matching_resource_is_404_json_and_wrong_method_405() {
    let f = Fixture::new(|_| {});
    let token = f.token("app1", false, "default");
    for path in [
        "/nope/1.0.0/users",
        "/client/9.9.9/users",
        "/client/1.0.0/unknown",
        "/client/1.0.0/users/1/2",
    ] {
        assert_eq!(
            f.gateway
                .route_match(&f.table(), &get(path, Some(&token)), path)
                .unwrap_err(),
            Unrouted::NotFound,
            "{path}"
        );
        assert_error(&f.get(path, Some(&token)), StatusCode::NOT_FOUND, 404);
    }
    let delete = || request(Method::DELETE, "/client/1.0.0/users/1", Some(&token), &[]);
    assert_eq!(
        f.gateway
            .route_match(&f.table(), &delete(), "/client/1.0.0/users/1")
            .unwrap_err(),
        Unrouted::MethodNotAllowed {
            api: "/client/1.0.0".into(),
            allow: "GET".into()
        }
    );
    let reply = f.call(delete());
    assert_error(&reply, StatusCode::METHOD_NOT_ALLOWED, 405);
    assert_eq!(reply.header("allow"), Some("GET"));
    assert!(
        f.gateway
            .metrics
            .render()
            .contains(r#"gatehouse_gateway_requests_total{api="/client/1.0.0",status="405"} 1"#),
        "a 405 counts for the API it names"
    );
}

#[test]
fn lifecycle_states_blocked_503_retired_404_prototyped_without_auth() {
    let mut f = Fixture::new(|_| {});
    let token = f.token("app1", false, "default");
    f.lifecycle("client-api", Lifecycle::Blocked);
    let route = f.route("/client/1.0.0/users");
    assert_eq!(
        f.gateway.api_state(&route),
        Err(GatewayError::api_blocked("/client/1.0.0"))
    );
    let blocked = f.get("/client/1.0.0/users", Some(&token));
    assert_error(&blocked, StatusCode::SERVICE_UNAVAILABLE, 700700);
    f.lifecycle("client-api", Lifecycle::Published);
    assert_eq!(
        f.gateway.api_state(&f.route("/client/1.0.0/users")),
        Ok(Security::Token)
    );
    f.lifecycle("client-api", Lifecycle::Prototyped);
    assert_eq!(
        f.gateway.api_state(&f.route("/client/1.0.0/users")),
        Ok(Security::Anonymous)
    );
    // PROTOTYPED serves without a token.
    f.get("/client/1.0.0/users", None)
        .assert_forwarded_to(PRODUCTION);
    f.lifecycle("client-api", Lifecycle::Published);
    f.lifecycle("client-api", Lifecycle::Deprecated);
    // DEPRECATED still serves.
    f.get("/client/1.0.0/users", Some(&token))
        .assert_forwarded_to(PRODUCTION);
    f.lifecycle("client-api", Lifecycle::Retired);
    assert_error(
        &f.get("/client/1.0.0/users", Some(&token)),
        StatusCode::NOT_FOUND,
        404,
    );
}

#[test]
fn resources_without_auth_serve_anonymous_calls() {
    let f = Fixture::new(|d| d.resources[0].auth_disabled = true);
    assert_eq!(
        f.gateway.api_state(&f.route("/client/1.0.0/users")),
        Ok(Security::Anonymous)
    );
    f.get("/client/1.0.0/users", None)
        .assert_forwarded_to(PRODUCTION);
    assert_error(
        &f.get("/client/1.0.0/users/1", None),
        StatusCode::UNAUTHORIZED,
        900902,
    );
}

#[test]
fn cors_preflight_is_answered_by_the_gateway() {
    let f = Fixture::new(|d| {
        d.cors = Some(CorsPolicy {
            enabled: true,
            allow_origins: vec!["https://app.example".into()],
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["authorization".into()],
            allow_credentials: false,
            max_age_seconds: 600,
        })
    });
    let preflight = |origin: &str| {
        request(
            Method::OPTIONS,
            "/client/1.0.0/users",
            None,
            &[("origin", origin), ("access-control-request-method", "GET")],
        )
    };
    let allowed = f.call(preflight("https://app.example"));
    assert_eq!(allowed.status, StatusCode::OK, "{allowed:?}");
    assert!(allowed.forwarded.is_none(), "answered by the gateway");
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        allowed.header("access-control-allow-methods"),
        Some("GET, POST")
    );
    assert_eq!(
        allowed.header("access-control-allow-headers"),
        Some("authorization")
    );
    assert_eq!(allowed.header("access-control-max-age"), Some("600"));
    // A refused origin: the phase's refusal is a GatewayError like any other.
    let route = f.route("/client/1.0.0/users");
    assert_eq!(
        f.gateway
            .cors_preflight(&route, &preflight("https://evil.example"))
            .unwrap_err(),
        GatewayError::cors_origin_not_allowed()
    );
    let refused = f.call(preflight("https://evil.example"));
    assert_error(&refused, StatusCode::FORBIDDEN, 403);
    assert_eq!(refused.json()["message"], "Forbidden");
    assert_eq!(
        description(&refused),
        "CORS request from this origin is not allowed"
    );
    assert_eq!(refused.header("vary"), Some("Origin"));
    assert!(refused.header("access-control-allow-origin").is_none());
    // The actual call, from an allowed origin.
    let token = f.token("app1", false, "");
    let actual = f.call(request(
        Method::GET,
        "/client/1.0.0/users",
        Some(&token),
        &[("origin", "https://app.example")],
    ));
    actual.assert_forwarded_to(PRODUCTION);
    assert_eq!(
        actual.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(actual.header("vary"), Some("Origin"));
    // Refusals after the CORS phase still name the origin (a browser can read them).
    let unauthenticated = f.call(request(
        Method::GET,
        "/client/1.0.0/users",
        None,
        &[("origin", "https://app.example")],
    ));
    assert_error(&unauthenticated, StatusCode::UNAUTHORIZED, 900902);
    assert_eq!(
        unauthenticated.header("access-control-allow-origin"),
        Some("https://app.example")
    );
}

#[test]
fn a_preflight_to_an_api_without_cors_is_405() {
    let f = Fixture::new(|_| {});
    let reply = f.call(request(
        Method::OPTIONS,
        "/client/1.0.0/users",
        None,
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "GET"),
        ],
    ));
    assert_error(&reply, StatusCode::METHOD_NOT_ALLOWED, 405);
    assert_eq!(reply.header("allow"), Some("GET"));
    assert!(reply.header("access-control-allow-origin").is_none());
}

#[test]
fn missing_credentials_is_401_900902() {
    let f = Fixture::new(|_| {});
    let reply = f.get("/client/1.0.0/users", None);
    assert_error(&reply, StatusCode::UNAUTHORIZED, 900902);
    assert_eq!(reply.json()["message"], "Missing Credentials");
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer realm=\"gatehouse\"")
    );
    let basic = f.call(request(
        Method::GET,
        "/client/1.0.0/users",
        None,
        &[("authorization", "Basic dXNlcjpwdw==")],
    ));
    assert_error(&basic, StatusCode::UNAUTHORIZED, 900902);
    // The phase itself.
    let route = f.route("/client/1.0.0/users");
    assert_eq!(
        f.gateway
            .authenticate(
                &f.table(),
                &route,
                &get("/client/1.0.0/users", None),
                Security::Token
            )
            .unwrap_err(),
        GatewayError::missing_credentials()
    );
    assert_eq!(
        f.gateway
            .authenticate(
                &f.table(),
                &route,
                &get("/client/1.0.0/users", None),
                Security::Anonymous
            )
            .unwrap(),
        None,
        "an anonymous call needs no token"
    );
}

#[test]
fn invalid_credentials_are_401_900901() {
    let f = Fixture::new(|_| {});
    let path = "/client/1.0.0/users";
    let refused = |token: &str, reason: &str| {
        let reply = f.get(path, Some(token));
        assert_error(&reply, StatusCode::UNAUTHORIZED, 900901);
        assert_eq!(reply.json()["message"], "Invalid Credentials");
        assert!(description(&reply).contains(reason), "{reply:?}");
    };
    // Not a JWT at all.
    refused("not-a-jwt", "not a well-formed");
    // Expired (beyond the leeway).
    let mut expired = claims("app1", false, "default");
    expired.exp = now() - 3600;
    expired.iat = now() - 7200;
    expired.nbf = now() - 7200;
    refused(&f.sign(expired), "expired");
    // Another issuer.
    let mut other_issuer = claims("app1", false, "default");
    other_issuer.iss = "https://evil.example/token".into();
    refused(&f.sign(other_issuer), "another issuer");
    // An admin token (other audience).
    let mut admin = claims("app1", false, "default");
    admin.aud = gatehouse_tokens::ADMIN_AUDIENCE.into();
    refused(&f.sign(admin), "another audience");
    // Signed by a key nobody published.
    let rogue = SigningKeyPair::generate("ES256").unwrap();
    refused(
        &rogue.sign(&claims("app1", false, "default")).unwrap(),
        "unknown key",
    );
    // `alg: none` with the published kid.
    let good = f.token("app1", false, "default");
    let payload = good.split('.').nth(1).unwrap();
    let header = |alg: &str| {
        URL_SAFE_NO_PAD.encode(format!(
            r#"{{"alg":"{alg}","kid":"{}","typ":"JWT"}}"#,
            f.key.kid()
        ))
    };
    refused(&format!("{}.{payload}.", header("none")), "");
    // HS256 "signed" with the public key (algorithm confusion).
    refused(&format!("{}.{payload}.c2lnbmF0dXJl", header("HS256")), "");
    // The real token still works: none of the above was cached as valid.
    f.get(path, Some(&good)).assert_forwarded_to(PRODUCTION);
}

#[test]
fn a_revoked_token_or_client_is_refused_even_after_it_was_cached() {
    let mut f = Fixture::new(|_| {});
    let claims1 = claims("app1", false, "default");
    let token = f.sign(claims1.clone());
    let other = f.token("app1", false, "default");
    f.get("/client/1.0.0/users", Some(&token))
        .assert_forwarded_to(PRODUCTION);
    assert_eq!(
        f.gateway.auth.cache().len(),
        1,
        "the verified token is cached"
    );
    f.run(Command::RevokeToken {
        jti: claims1.jti.clone(),
        expires_at: None,
        client_id: claims1.client_id.clone(),
    });
    let reply = f.get("/client/1.0.0/users", Some(&token));
    assert_error(&reply, StatusCode::UNAUTHORIZED, 900901);
    assert!(description(&reply).contains("revoked"));
    // Another token of the same client still works, until the client is revoked.
    f.get("/client/1.0.0/users", Some(&other))
        .assert_forwarded_to(PRODUCTION);
    f.run(Command::RevokeClient {
        client_id: "app1-prod".into(),
    });
    let reply = f.get("/client/1.0.0/users", Some(&other));
    assert_error(&reply, StatusCode::UNAUTHORIZED, 900901);
    assert!(description(&reply).contains("client"), "{reply:?}");
}

#[test]
fn keys_for_an_api_without_endpoints_of_their_type_are_401_900901() {
    let f = Fixture::new(|_| {});
    let reply = f.get(
        "/client/1.0.0/users",
        Some(&f.token("app1", true, "default")),
    );
    assert_error(&reply, StatusCode::UNAUTHORIZED, 900901);
    assert!(
        description(&reply).contains("sandbox keys offered to an API without sandbox endpoints"),
        "{reply:?}"
    );
    // Production keys, where the production URL is one the gateway cannot use.
    let f = Fixture::new(|d| {
        let endpoints = d.endpoints.as_mut().unwrap();
        endpoints.production = group(&[UNUSABLE]);
        endpoints.sandbox = group(&[SANDBOX]);
    });
    let reply = f.get(
        "/client/1.0.0/users",
        Some(&f.token("app1", false, "default")),
    );
    assert_error(&reply, StatusCode::UNAUTHORIZED, 900901);
    assert!(
        description(&reply)
            .contains("production keys offered to an API without production endpoints"),
        "{reply:?}"
    );
    f.get(
        "/client/1.0.0/users",
        Some(&f.token("app1", true, "default")),
    )
    .assert_forwarded_to(SANDBOX);
}

#[test]
fn not_subscribed_is_403_900908() {
    let f = Fixture::new(|_| {});
    let reply = f.get(
        "/client/1.0.0/users",
        Some(&f.token("app2", false, "default")),
    );
    assert_error(&reply, StatusCode::FORBIDDEN, 900908);
    assert!(description(&reply).contains("/client/1.0.0"), "{reply:?}");
}

#[test]
fn blocked_subscription_is_401_900907_and_prod_only_blocks_production_keys_only() {
    let mut f = Fixture::new(|d| {
        let endpoints = d.endpoints.as_mut().unwrap();
        endpoints.sandbox = group(&[SANDBOX]);
    });
    let prod = f.token("app1", false, "default");
    let sandbox = f.token("app1", true, "default");
    f.run(Command::BlockSubscription {
        subscription_id: "sub1".into(),
        production_only: false,
    });
    assert_error(
        &f.get("/client/1.0.0/users", Some(&prod)),
        StatusCode::UNAUTHORIZED,
        900907,
    );
    assert_error(
        &f.get("/client/1.0.0/users", Some(&sandbox)),
        StatusCode::UNAUTHORIZED,
        900907,
    );
    f.run(Command::UnblockSubscription {
        subscription_id: "sub1".into(),
    });
    f.run(Command::BlockSubscription {
        subscription_id: "sub1".into(),
        production_only: true,
    });
    assert_error(
        &f.get("/client/1.0.0/users", Some(&prod)),
        StatusCode::UNAUTHORIZED,
        900907,
    );
    f.get("/client/1.0.0/users", Some(&sandbox))
        .assert_forwarded_to(SANDBOX);
}

#[test]
fn missing_scope_is_403_900910() {
    let mut f = Fixture::new(|_| {});
    let reply = f.get(
        "/client/1.0.0/admin",
        Some(&f.token("app1", false, "default")),
    );
    assert_error(&reply, StatusCode::FORBIDDEN, 900910);
    assert!(description(&reply).contains("/admin"), "{reply:?}");
    // A token that carries the scope is not enough: the scope must be granted to the
    // application on this API.
    let with_scope = f.token("app1", false, "default admin:read");
    assert_error(
        &f.get("/client/1.0.0/admin", Some(&with_scope)),
        StatusCode::FORBIDDEN,
        900910,
    );
    f.run(Command::GrantSubscriptionScopes {
        subscription_id: "sub1".into(),
        scopes: vec!["admin:read".into()],
    });
    f.get("/client/1.0.0/admin", Some(&with_scope))
        .assert_forwarded_to(PRODUCTION);
    // Another API declaring the same scope name: the grant on client-api authorises
    // nothing there.
    let mut other = api(&[("GET", "/admin")]);
    other.name = "Other".into();
    other.context = "/other".into();
    other.resources[0].scopes = vec!["admin:read".into()];
    f.publish_api("other-api", other);
    f.subscribe("sub2", "app1", "other-api", "Unlimited");
    assert_error(
        &f.get("/other/1.0.0/admin", Some(&with_scope)),
        StatusCode::FORBIDDEN,
        900910,
    );
}

#[test]
fn subscription_tier_throttles_with_429_900804_and_rate_limit_headers() {
    let tier = "TwoPerMinute";
    let mut f = Fixture::empty();
    f.policy(tier, Level::Subscription, 2, 60);
    let mut definition = api(&[("GET", "/users")]);
    definition.subscription_tiers = vec![tier.into()];
    f.publish_api("client-api", definition);
    f.application("app1", "");
    f.subscribe("sub1", "app1", "client-api", tier);
    let token = f.token("app1", false, "default");
    let first = f.get("/client/1.0.0/users", Some(&token));
    first.assert_forwarded_to(PRODUCTION);
    assert_eq!(first.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(first.header("x-ratelimit-remaining"), Some("1"));
    let reset: u64 = first.header("x-ratelimit-reset").unwrap().parse().unwrap();
    assert!(reset <= 60);
    f.get("/client/1.0.0/users", Some(&token))
        .assert_forwarded_to(PRODUCTION);
    let third = f.get("/client/1.0.0/users", Some(&token));
    assert_error(&third, StatusCode::TOO_MANY_REQUESTS, 900804);
    assert_eq!(third.json()["message"], "Message throttled out");
    assert!(description(&third).contains(tier), "{third:?}");
    let retry_after: u64 = third.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after));
    assert_eq!(third.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(third.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(
        third.header("x-ratelimit-reset"),
        third.header("retry-after")
    );
}

#[test]
fn api_tier_throttles_with_429_900800() {
    let mut f = Fixture::empty();
    f.policy("ThreePerMinute", Level::Api, 3, 60);
    let mut definition = api(&[("GET", "/users")]);
    definition.api_throttling_tier = "ThreePerMinute".into();
    f.publish_api("client-api", definition);
    f.application("app1", "");
    f.application("app2", "");
    f.subscribe("sub1", "app1", "client-api", "Unlimited");
    f.subscribe("sub2", "app2", "client-api", "Unlimited");
    // The API tier counts every caller together.
    for app in ["app1", "app2", "app1"] {
        f.get("/client/1.0.0/users", Some(&f.token(app, false, "")))
            .assert_forwarded_to(PRODUCTION);
    }
    let refused = f.get("/client/1.0.0/users", Some(&f.token("app2", false, "")));
    assert_error(&refused, StatusCode::TOO_MANY_REQUESTS, 900800);
    assert!(refused.header("retry-after").is_some());
    // The phase itself says which tier refused, and when to come back.
    let route = f.route("/client/1.0.0/users");
    let caller = f
        .gateway
        .authenticate(
            &f.table(),
            &route,
            &get("/client/1.0.0/users", Some(&f.token("app1", false, ""))),
            Security::Token,
        )
        .unwrap()
        .unwrap();
    let throttled = f
        .gateway
        .throttle(&f.table(), &route, Some(&caller))
        .unwrap_err();
    assert_eq!(throttled.tier, Tier::Api);
    assert_eq!(&*throttled.policy, "ThreePerMinute");
    assert_eq!(throttled.limit, 3);
    assert!((1..=60).contains(&throttled.retry_after));
    // Anonymous calls count for the API tier too.
    assert_eq!(
        f.gateway
            .throttle(&f.table(), &route, None)
            .unwrap_err()
            .tier,
        Tier::Api
    );
}

#[test]
fn application_and_resource_tiers_throttle_with_900803_and_900802() {
    let mut f = Fixture::empty();
    f.policy("OnePerMinute", Level::Api, 1, 60);
    let mut definition = api(&[("GET", "/users"), ("GET", "/other")]);
    definition.resources[0].throttling_tier = "OnePerMinute".into();
    f.publish_api("client-api", definition);
    f.application("app1", "");
    f.application("small", "10PerMin");
    f.subscribe("sub1", "app1", "client-api", "Unlimited");
    f.subscribe("sub2", "small", "client-api", "Unlimited");
    let token = f.token("app1", false, "");
    f.get("/client/1.0.0/users", Some(&token))
        .assert_forwarded_to(PRODUCTION);
    let resource = f.get("/client/1.0.0/users", Some(&token));
    assert_error(&resource, StatusCode::TOO_MANY_REQUESTS, 900802);
    assert!(resource.header("retry-after").is_some());
    assert_eq!(resource.header("x-ratelimit-remaining"), Some("0"));
    // Other resources are not limited.
    f.get("/client/1.0.0/other", Some(&token))
        .assert_forwarded_to(PRODUCTION);
    let small = f.token("small", false, "");
    for _ in 0..10 {
        f.get("/client/1.0.0/other", Some(&small))
            .assert_forwarded_to(PRODUCTION);
    }
    let application = f.get("/client/1.0.0/other", Some(&small));
    assert_error(&application, StatusCode::TOO_MANY_REQUESTS, 900803);
    assert!(application.header("retry-after").is_some());
    assert_eq!(application.header("x-ratelimit-limit"), Some("10"));
    assert_eq!(application.header("x-ratelimit-remaining"), Some("0"));
}

#[test]
fn no_endpoints_for_the_call_is_503_101503() {
    // The phase: sandbox keys on an API with production endpoints only.
    let f = Fixture::new(|_| {});
    let route = f.route("/client/1.0.0/users");
    let refusal = f
        .gateway
        .upstream_peer(&route, Some(KeyType::Sandbox))
        .unwrap_err();
    assert_eq!(refusal, GatewayError::backend_unreachable());
    assert_eq!(refusal.status, StatusCode::SERVICE_UNAVAILABLE);
    // The whole head: an anonymous call to a PROTOTYPED API whose one URL the gateway
    // cannot use.
    let mut f = Fixture::new(|d| {
        d.endpoints.as_mut().unwrap().production = group(&[UNUSABLE]);
    });
    f.lifecycle("client-api", Lifecycle::Prototyped);
    let reply = f.get("/client/1.0.0/users", None);
    assert_error(&reply, StatusCode::SERVICE_UNAVAILABLE, 101503);
    assert_eq!(
        description(&reply),
        "Error connecting to the back end",
        "WSO2's generic description: the reason is logged"
    );
}

#[test]
fn each_key_type_gets_its_own_endpoints_and_anonymous_calls_production() {
    let f = Fixture::new(|d| {
        d.endpoints.as_mut().unwrap().sandbox = group(&[SANDBOX]);
        d.resources[0].auth_disabled = true;
    });
    let route = f.route("/client/1.0.0/users/1");
    for (key_type, url) in [
        (KeyType::Production, PRODUCTION),
        (KeyType::Sandbox, SANDBOX),
    ] {
        let peer = f.gateway.upstream_peer(&route, Some(key_type)).unwrap();
        assert_eq!(&*peer.endpoints.targets[peer.order[0]].url, url);
    }
    f.get("/client/1.0.0/users/1", Some(&f.token("app1", true, "")))
        .assert_forwarded_to(SANDBOX);
    f.get("/client/1.0.0/users/1", Some(&f.token("app1", false, "")))
        .assert_forwarded_to(PRODUCTION);
    f.get("/client/1.0.0/users", None)
        .assert_forwarded_to(PRODUCTION);
}

#[test]
fn the_upstream_request_filter_prepares_the_headers_the_backend_gets() {
    let filtered = |limits: GatewayLimits| {
        let f = Fixture::new_with(limits, |_| {});
        let mut parts = request(
            Method::GET,
            "/client/1.0.0/users",
            Some("token"),
            &[
                ("connection", "keep-alive, x-private"),
                ("x-private", "secret"),
                ("x-forwarded-for", "10.1.2.3"),
                ("x-forwarded-proto", "http"),
                ("x-forwarded-host", "evil.example"),
                ("x-custom", "kept"),
            ],
        );
        let conn = ConnInfo {
            remote: SocketAddr::from(([192, 0, 2, 7], 40_000)),
            proto: "https",
        };
        f.gateway.upstream_request_filter(&mut parts, conn, false);
        parts.headers
    };
    // From a client: X-Forwarded-* are the connection's.
    let h = filtered(GatewayLimits::default());
    assert_eq!(h["x-forwarded-for"], "192.0.2.7");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], "gw.example:8243");
    assert_eq!(h["x-custom"], "kept");
    for gone in ["host", "authorization", "connection", "x-private"] {
        assert!(!h.contains_key(gone), "{gone}: {h:?}");
    }
    // From a trusted proxy: its chain and its view of the call.
    let limits = GatewayLimits {
        trusted_proxies: vec!["192.0.2.0/24".parse().unwrap()],
        ..Default::default()
    };
    let h = filtered(limits);
    assert_eq!(h["x-forwarded-for"], "10.1.2.3, 192.0.2.7");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "evil.example");
}

/// The opaque origin `null` is never reflected, even by an API open to any origin.
#[test]
fn the_null_origin_is_never_allowed() {
    let f = Fixture::new(|d| {
        d.cors = Some(CorsPolicy {
            enabled: true,
            allow_origins: vec!["*".into()],
            allow_methods: vec!["GET".into()],
            allow_headers: vec![],
            allow_credentials: false,
            max_age_seconds: 0,
        })
    });
    let preflight = |origin: &str| {
        request(
            Method::OPTIONS,
            "/client/1.0.0/users",
            None,
            &[("origin", origin), ("access-control-request-method", "GET")],
        )
    };
    let any = f.call(preflight("https://anywhere.example"));
    assert_eq!(any.status, StatusCode::OK, "{any:?}");
    assert_eq!(any.header("access-control-allow-origin"), Some("*"));
    for null in ["null", "NULL"] {
        let refused = f.call(preflight(null));
        assert_error(&refused, StatusCode::FORBIDDEN, 403);
        assert!(refused.header("access-control-allow-origin").is_none());
    }
    let token = f.token("app1", false, "");
    let actual = f.call(request(
        Method::GET,
        "/client/1.0.0/users",
        Some(&token),
        &[("origin", "null")],
    ));
    actual.assert_forwarded_to(PRODUCTION);
    assert!(
        actual.header("access-control-allow-origin").is_none(),
        "no CORS header for null: {actual:?}"
    );
}

/// `/client/1.0.0` with an open `/*` (authentication off) next to a scoped `/admin`:
/// the layout the path attacks aim at.
fn open_wildcard_next_to_admin(d: &mut ApiDefinition) {
    d.resources.push(Resource {
        method: "GET".into(),
        path: "/*".into(),
        auth_disabled: true,
        ..Default::default()
    });
}

/// Paths a lenient backend would read as another resource (`/admin` through `%2F`,
/// `\\`, `;`, dot segments) are refused with 400 before routing: never forwarded
/// anonymously under the open `/*`.
#[test]
fn ambiguous_paths_are_400_before_routing() {
    let f = Fixture::new(open_wildcard_next_to_admin);
    // The open resource serves anonymous calls.
    f.get("/client/1.0.0/public/x", None)
        .assert_forwarded_to(PRODUCTION);
    for path in [
        "/client/1.0.0/x%2F..%2Fadmin",
        "/client/1.0.0/x%2fadmin",
        "/client/1.0.0/x%5Cadmin",
        "/client/1.0.0/admin;jsessionid=1",
        "/client/1.0.0/x;/admin",
        "/client/1.0.0/users/../admin",
        "/client/1.0.0/users/%2e%2e/admin",
        "/client/1.0.0/./admin",
        "/client/1.0.0/admin%00",
        "/client/1.0.0/admin%zz",
    ] {
        let reply = f.get(path, None);
        assert_error(&reply, StatusCode::BAD_REQUEST, 400);
        assert_eq!(reply.json()["message"], "Bad Request", "{path}");
        assert!(
            description(&reply).starts_with("The request is not accepted: the path contains"),
            "{reply:?}"
        );
        assert!(
            f.gateway.normalize_path(&get(path, None)).is_err(),
            "{path}"
        );
    }
    assert!(
        f.gateway
            .metrics
            .render()
            .contains(r#"gatehouse_gateway_requests_total{api="",status="400"} 10"#),
        "{}",
        f.gateway.metrics.render()
    );
}

/// `//admin` and `%61dmin` are `/admin`: matched as the scoped resource (a token and
/// its scope needed), and forwarded as `/admin`, never as the open `/*`.
#[test]
fn doubled_slashes_and_encoded_letters_are_normalised_so_the_match_is_what_is_forwarded() {
    let mut f = Fixture::new(open_wildcard_next_to_admin);
    for path in [
        "/client/1.0.0//admin",
        "/client/1.0.0/%61dmin",
        "//client//1.0.0///admin",
        "/client/1.0.0/ad%6Din/",
    ] {
        let anonymous = f.get(path, None);
        assert_error(&anonymous, StatusCode::UNAUTHORIZED, 900902);
        let route = f
            .gateway
            .route_match(
                &f.table(),
                &get(path, None),
                &f.gateway.normalize_path(&get(path, None)).unwrap(),
            )
            .unwrap();
        assert_eq!(&*route.resource().template, "/admin", "{path}");
    }
    assert_error(
        &f.get("/client/1.0.0//admin", Some(&f.token("app1", false, ""))),
        StatusCode::FORBIDDEN,
        900910,
    );
    f.run(Command::GrantSubscriptionScopes {
        subscription_id: "sub1".into(),
        scopes: vec!["admin:read".into()],
    });
    let token = f.token("app1", false, "admin:read");
    let reply = f.get("/client/1.0.0//admin?x=1", Some(&token));
    reply.assert_forwarded_to(PRODUCTION);
    let forward = reply.forwarded.as_ref().unwrap();
    assert_eq!(forward.path.as_deref(), Some("/client/1.0.0/admin"));
    assert_eq!(
        forward
            .route
            .resource_path(forward.path.as_deref().unwrap()),
        "/admin",
        "the backend gets the path that was matched"
    );
    // A path already normal is forwarded as it came, without a copy.
    let plain = f.get("/client/1.0.0/admin", Some(&token));
    assert!(plain.forwarded.as_ref().unwrap().path.is_none());
}

fn post(path: &str, token: Option<&str>, headers: &[(&str, &str)]) -> Parts {
    request(Method::POST, path, token, headers)
}

/// A `Content-Length` over the limit is refused with 413 at once: before the token is
/// even looked at, and the backend is never called. The API's own limit wins over the
/// gateway's default.
#[test]
fn a_content_length_over_the_limit_is_413_before_anything_else() {
    let limits = GatewayLimits {
        max_request_body_bytes: 1000,
        ..Default::default()
    };
    let f = Fixture::new_with(limits, |d| {
        d.resources.push(Resource {
            method: "POST".into(),
            path: "/users".into(),
            ..Default::default()
        });
    });
    let token = f.token("app1", false, "");
    let length = |n: &str| [("content-length", n.to_string())];
    let call = |n: &str, token: Option<&str>| {
        let headers = length(n);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        f.call(post("/client/1.0.0/users", token, &headers))
    };
    let refused = call("1001", None);
    assert_error(&refused, StatusCode::PAYLOAD_TOO_LARGE, 413);
    assert_eq!(refused.json()["message"], "Request Entity Too Large");
    assert!(description(&refused).contains("1000 bytes"), "{refused:?}");
    assert_error(
        &call("1001", Some(&token)),
        StatusCode::PAYLOAD_TOO_LARGE,
        413,
    );
    call("1000", Some(&token)).assert_forwarded_to(PRODUCTION);
    // An API with a limit of its own.
    let f = Fixture::new(|d| {
        d.resources.push(Resource {
            method: "POST".into(),
            path: "/users".into(),
            ..Default::default()
        });
        d.max_request_body_bytes = 10;
    });
    let token = f.token("app1", false, "");
    let headers = [("content-length", "11")];
    assert_error(
        &f.call(post("/client/1.0.0/users", Some(&token), &headers)),
        StatusCode::PAYLOAD_TOO_LARGE,
        413,
    );
    let headers = [("content-length", "10")];
    f.call(post("/client/1.0.0/users", Some(&token), &headers))
        .assert_forwarded_to(PRODUCTION);
}

/// More header fields than `--max-headers` (HTTP/2 requests reach the head with any
/// number; hyper holds HTTP/1 to it already): 431.
#[test]
fn too_many_header_fields_is_431() {
    let limits = GatewayLimits {
        max_headers: 5,
        ..Default::default()
    };
    let f = Fixture::new_with(limits, |_| {});
    let token = f.token("app1", false, "");
    let names: Vec<String> = (0..5).map(|i| format!("x-h{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    let reply = f.call(request(
        Method::GET,
        "/client/1.0.0/users",
        Some(&token),
        &many,
    ));
    assert_error(&reply, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, 431);
    f.call(request(
        Method::GET,
        "/client/1.0.0/users",
        Some(&token),
        &many[..2],
    ))
    .assert_forwarded_to(PRODUCTION);
}
